"""Paper reproductions, one command each: ``wae reproduce NAME [--quick]``.

Every experiment writes figures, ``metrics.json`` and ``report.md`` (our numbers beside the paper's) into its
output directory. ``--quick`` runs a minutes-long version on a CPU (used by the tests); without it the paper's
budget.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError

__all__ = ["register_experiment", "run_experiment", "list_experiments"]


@dataclass(frozen=True)
class Experiment:
    name: str
    fn: Callable
    description: str


_EXPERIMENTS: dict[str, Experiment] = {}
_MODULES = ("gmwae", "gmvae", "stacked", "wae")


def register_experiment(name: str, description: str):
    def deco(fn):
        _EXPERIMENTS[name] = Experiment(name, fn, description)
        return fn

    return deco


def _load() -> None:
    for m in _MODULES:
        try:
            importlib.import_module(f"{__package__}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{m}":
                raise


def list_experiments() -> list[tuple[str, str]]:
    _load()
    return [(k, _EXPERIMENTS[k].description) for k in sorted(_EXPERIMENTS)]


def run_experiment(name: str, out: str | Path, quick: bool = False, seed: int = 0, sets: list[str] | None = None):
    _load()
    if name not in _EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(_EXPERIMENTS))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _EXPERIMENTS[name].fn(out, quick=quick, seed=seed, sets=sets or [])
