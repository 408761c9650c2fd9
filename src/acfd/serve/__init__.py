"""The HTTP detection service (``acfd serve``): a FastAPI app with a demo page.

``create_app(detector_factory=..., settings=ServeSettings(...))`` builds it; see docs/SERVING.md.

* :mod:`~acfd.serve.app`: the app (middleware, routers, static files);
* :mod:`~acfd.serve.routers`: the routes; :mod:`~acfd.serve.dependencies`: their parameters and
  checks; :mod:`~acfd.serve.schemas`: the response bodies;
* :mod:`~acfd.serve.service`: one worker's state and the way from a body to the answer, with
  :mod:`~acfd.serve.budget` (decoded pixels in flight), :mod:`~acfd.serve.decode`,
  :mod:`~acfd.serve.batching` (the inference thread), :mod:`~acfd.serve.memory`;
* :mod:`~acfd.serve.server`: uvicorn's options and connection limits; :mod:`~acfd.serve.settings`.
"""

from acfd.serve.app import create_app
from acfd.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
