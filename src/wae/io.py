"""Compatibility facade: ``wae.io`` re-exports the atomic writes of :mod:`wae.files` and the model export/import of
:mod:`wae.serialization` (library modules import those two directly)."""
from .files import atomic_write_bytes, atomic_write_text, atomic_write_with, write_json
from .serialization import load, load_model, save_model

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "write_json", "save_model", "load_model",
           "load"]
