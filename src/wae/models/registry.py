"""Model registry in the style of timm's ``register_model``/``create_model``: names, not if/elif."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["register_model", "create_model", "get_model_entry", "list_models", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config_cls: type
    description: str
    paper: str
    default_preset: str | None


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, description: str, paper: str = "", default_preset: str | None = None):
    """Class decorator: ``@register_model("wae-mmd", WAEMMDConfig, "…")``."""

    def deco(cls):
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, cls, config_cls, description, paper, default_preset)
        return cls

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every built-in model family.
    from . import _builtin  # noqa: F401


def get_model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[ModelEntry]:
    _ensure_loaded()
    return [_MODELS[k] for k in sorted(_MODELS)]


def create_model(name: str, data_shape, config=None, **overrides):
    """Instantiate a registered model for data of per-example ``data_shape`` (e.g. (1, 28, 28) or (2,))."""
    entry = get_model_entry(name)
    if config is None:
        config = entry.config_cls()
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    if not isinstance(config, entry.config_cls):
        raise ConfigError(f"model {name!r} expects a {entry.config_cls.__name__}, got {type(config).__name__}")
    model = entry.cls(config, tuple(data_shape))
    model.registry_name = name
    return model
