"""Deployment: re-parameterisation (fuse), export, and running exported graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from acfd.deploy.fuse import fuse_model

__all__ = ["fuse_model"]


def __getattr__(name: str) -> Any:
    # on first use: running an exported graph (acfd.deploy.onnx_runner) must not load torch
    if name == "fuse_model":
        from acfd.deploy.fuse import fuse_model

        return fuse_model
    raise AttributeError(f"module 'acfd.deploy' has no attribute {name!r}")
