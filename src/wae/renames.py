"""Settings removed or renamed in issue 35, and how configs written before it read (layer 0: no wae import but the
errors and the value formatting).

A config written by hand that sets a removed key to anything but its neutral value, or uses an old flat key, is
refused in one line naming where the setting went; a stored run's config (``config.yaml``, an export's
``model.yaml``) is moved over by :func:`migrate`, so runs trained before still load.
"""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .typed import short as _short

__all__ = ["ANY", "REMOVED", "RENAMED", "drop_removed", "migrate"]

ANY = object()
"""In :data:`REMOVED`: every value of the key reads (it set how a run was executed or shown, not what it trained)."""

REMOVED: dict[str, Any] = {
    "model.joint_mmd": 0.0, "model.moment_weight": 0.0, "model.consistency_sharpen": 1.0,
    "model.consistency_threshold": 0.0, "model.consistency_neighbours": 0, "model.revive_threshold": 0.0,
    "model.revive_every": 100, "model.revive_noise": 0.1, "model.kernel": "imq", "model.kernel_scales": [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], "model.head_hidden": 16, "model.head_batch_norm": False,
    "model.logvar_init": 0.0, "model.kernel_base": "1", "model.samples_per_component": 1, "model.k_top": 1,
    "model.k_rest_mass": 0.0, "model.objective": "wae", "model.likelihood": "bernoulli", "model.obs_var": 1.0,
    "data.val_size": None, "data.val_seed": 0, "data.workers": ANY, "train.augment_shift": 0,
    "train.weight_decay": 0.0, "train.critic_betas": [0.5, 0.999], "train.pretrain_lr": 0.001, "train.eps": 1e-8,
    "train.restart_steps": 0, "train.sync_batchnorm": False, "train.channels_last": ANY, "train.deterministic": ANY,
    "train.progress": ANY}
"""Settings removed in issue 35 (options that lost on validation, or that nothing used) → the value that behaves as
the code does now (a model config's class attribute of that name, e.g. ``objective``, takes precedence). A config of
an earlier run that holds one with that value (every run that did not use it) still reads, the key dropped; another
value is refused, naming the key. Keys a model's config still has are not affected (``model.kernel`` of WAE-MMD)."""

RENAMED: dict[str, str] = {
    **{f"model.consistency_{k}": f"model.consistency.{k}"
       for k in ("weight", "rotate", "shift", "scale", "noise", "dropout", "resample")},
    "train.restarts": "train.restarts.count", "train.restart_fraction": "train.restarts.fraction",
    "train.restart_select": "train.restarts.select",
    **{f"train.{k}": f"train.hardware.{k}"
       for k in ("accelerator", "devices", "strategy", "num_nodes", "precision", "compile")},
    "data.split": "data.dataset (as NAME:SPLIT, e.g. svhn:train+extra)",
    "train.critic_lr": "model.critic_lr (models with a critic)"}
"""Flat keys of configs before issue 35 → where the setting lives now. A config written by hand that uses one is
refused with this name; a stored run's config is moved over by :func:`migrate`."""


def _removed_neutral(cls, name: str, key: str):
    return getattr(cls, name) if cls is not None and hasattr(cls, name) else REMOVED[key]


def drop_removed(d: dict, names: set[str], where: str, cls=None) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{where}.{k}" if where else str(k)
        if k in names or key not in REMOVED:
            out[k] = v
            continue
        neutral = _removed_neutral(cls, k, key)
        if neutral is not ANY and v != neutral and not (isinstance(v, (list, tuple)) and list(v) == neutral):
            raise ConfigError(f"{key} was removed (it lost on validation or went unused; benchmarks/README.md): this "
                              f"config sets it to {_short(v)}, which this version cannot train")
    return out


def migrate(d: dict, model_fields: set[str] = frozenset()) -> dict:
    """A stored run's config (``config.yaml``, or ``{"model": model.yaml's model_config}``) from before issue 35 with
    its flat keys moved to where :data:`RENAMED` says (``train.critic_lr`` to the model when it has a critic, else
    dropped; ``data.split`` into ``data.dataset``); a config in today's layout is returned as it is."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for old, new in RENAMED.items():
        sec, name = old.split(".", 1)
        sub = d.get(sec)
        if not isinstance(sub, dict) or name not in sub or isinstance(sub[name], dict):
            continue
        v = sub.pop(name)
        if old == "data.split":
            ds = str(sub.get("dataset", "mnist-5k"))
            if v not in (None, "train") and ":" not in ds.split("/")[-1]:
                sub["dataset"] = f"{ds}:{v}"
        elif old == "train.critic_lr":
            if "critic_lr" in model_fields and isinstance(d.get("model"), dict):
                d["model"].setdefault("critic_lr", v)
        else:  # every other new key is section.group.leaf
            _, group, leaf = new.split(".")
            if not isinstance(sub.get(group), dict):
                sub[group] = {}
            sub[group][leaf] = v
    return d
