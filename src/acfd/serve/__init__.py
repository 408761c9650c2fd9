"""The HTTP detection service (``acfd serve``): a FastAPI app with a demo page.

``create_app(detector_factory=..., settings=ServeSettings(...))`` builds it; see docs/SERVING.md.
"""

from acfd.serve.app import create_app
from acfd.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
