"""acfd: find cartoon, anime and comic faces (ACFD: Asymmetric Cartoon Face Detector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Detector", "create_model", "list_models", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from acfd.models.registry import create_model, list_models
    from acfd.predict.detector import Detector


def __getattr__(name: str) -> Any:
    # Imported on first use: `import acfd` and the command line's start-up stay fast (no torch).
    if name == "Detector":
        from acfd.predict.detector import Detector

        return Detector
    if name in ("create_model", "list_models"):
        from acfd.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'acfd' has no attribute {name!r}")
