"""``acfd annotate``: the question-and-answer web app of the assembling pipeline (acfd.annotate.app)."""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: FastAPI loads only when the app is made
    if name == "create_app":
        from acfd.annotate.app import create_app

        return create_app
    raise AttributeError(f"module 'acfd.annotate' has no attribute {name!r}")
