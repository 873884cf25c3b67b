"""Imports every built-in model module so that their ``@register_model`` decorators run."""
import importlib

for _mod in ("wae", "gmwae", "gmvae", "stacked"):
    try:
        importlib.import_module(f"{__package__}.{_mod}")
    except ModuleNotFoundError as e:  # a model family not written yet must not break the others
        if e.name != f"{__package__}.{_mod}":
            raise
