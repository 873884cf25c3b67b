"""Model registry in the style of timm's ``register_model``/``create_model``: names, not if/elif.

Importing :mod:`wae.models` registers every built-in model (its ``__init__`` imports each family's module).
"""
from __future__ import annotations

from dataclasses import dataclass, is_dataclass, replace

from ..config import MODEL_CONFIGS
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["register_model", "create_model", "get_model_entry", "list_models", "ModelEntry", "MODELS"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config_cls: type
    description: str
    paper: str
    default_preset: str | None


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, config_cls: type, description: str, paper: str = "", default_preset: str | None = None,
                   old_names: tuple[str, ...] = ()):
    """Class decorator: ``@register_model("wae-mmd", WAEMMDConfig, "…")``. ``old_names``: names it had before, refused
    with a "renamed to" hint when asked for, mapped to ``name`` when read from a run directory or an export."""

    def deco(cls):
        MODELS.add(name, ModelEntry(name, cls, config_cls, description, paper, default_preset))
        MODEL_CONFIGS.add(name, config_cls)
        for old in old_names:
            MODELS.rename(old, name)
            MODEL_CONFIGS.rename(old, name)
        return cls

    return deco


def get_model_entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def list_models() -> list[ModelEntry]:
    return [MODELS.get(k) for k in MODELS.names()]


def create_model(name: str, data_shape, config=None, **overrides):
    """Instantiate a registered model for data of per-example ``data_shape`` (e.g. (1, 28, 28) or (2,)). A
    mapping given for a nested group updates it: ``create_model("gm-wae", shape, consistency={"weight": 3.0})``."""
    entry = get_model_entry(name)
    if config is None:
        config = entry.config_cls()
    if overrides:
        overrides = {k: replace(getattr(config, k), **v) if isinstance(v, dict) and is_dataclass(getattr(config, k, None))
                     else v for k, v in overrides.items()}
        config = replace(config, **overrides)
    if not isinstance(config, entry.config_cls):
        raise ConfigError(f"model {name!r} expects a {entry.config_cls.__name__}, got {type(config).__name__}")
    model = entry.cls(config, tuple(data_shape))
    model.registry_name = name
    return model
