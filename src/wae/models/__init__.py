"""Models: one module per paper family, each registered by name (``wae.models.create_model``).

Importing this package registers the built-in families (static imports below, no lookup-time imports).
"""
from . import gmvae, gmwae, stacked, wae  # noqa: F401  (registration)
from .base import AutoEncoderModel, Objective
from .registry import MODELS, create_model, get_model_entry, list_models, register_model

__all__ = ["AutoEncoderModel", "Objective", "MODELS", "create_model", "get_model_entry", "list_models",
           "register_model"]
