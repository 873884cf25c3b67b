"""Models: one module per paper family, each registered by name (``wae.models.create_model``).

Importing this package imports every module of it (registration runs then, once; an error in a model module is
raised, never swallowed): adding a model is adding one file here (see the README's Development section).
"""
import importlib
import pkgutil

from .base import AutoEncoderModel, Objective
from .registry import MODELS, create_model, get_model_entry, list_models, register_model

__all__ = ["AutoEncoderModel", "Objective", "MODELS", "create_model", "get_model_entry", "list_models",
           "register_model", "FAMILIES"]

FAMILIES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_") and m.name not in ("base", "registry")))
"""The model modules (one per paper family), all imported here."""
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
