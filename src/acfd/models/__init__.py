"""ACFD networks: blocks, backbones, necks, heads and the registry of named variants."""

from acfd.models.detector import ACFD
from acfd.models.registry import create_model, get_model_config, list_models, load_model

__all__ = ["ACFD", "create_model", "get_model_config", "list_models", "load_model"]
