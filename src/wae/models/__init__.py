"""Models: one module per paper family, all registered by name (``wae.models.create_model``)."""
from .base import AutoEncoderModel
from .registry import create_model, get_model_entry, list_models, register_model

__all__ = ["AutoEncoderModel", "create_model", "get_model_entry", "list_models", "register_model"]
