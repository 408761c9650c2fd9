"""Deployment: re-parameterisation (fuse) and export."""
from acfd.deploy.fuse import fuse_model

__all__ = ["fuse_model"]
