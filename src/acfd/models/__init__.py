"""ACFD networks: blocks, backbones, necks, heads and the registry of named variants."""

from acfd.models.detector import ACFD
from acfd.models.registry import create_model, get_model_config, list_models

__all__ = ["ACFD", "create_model", "get_model_config", "list_models"]
