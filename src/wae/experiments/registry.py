"""The registry of paper reproductions (``wae reproduce NAME``).

Every experiment writes figures, ``metrics.json`` and ``report.md`` (our numbers beside the paper's) into its
output directory. ``--quick`` runs a minutes-long version on a CPU (used by the tests); without it the paper's
budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry

__all__ = ["register_experiment", "run_experiment", "list_experiments", "EXPERIMENTS"]


@dataclass(frozen=True)
class Experiment:
    name: str
    fn: Callable
    description: str


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register_experiment(name: str, description: str):
    def deco(fn):
        EXPERIMENTS.add(name, Experiment(name, fn, description))
        return fn

    return deco


def list_experiments() -> list[tuple[str, str]]:
    return [(k, EXPERIMENTS.get(k).description) for k in EXPERIMENTS.names()]


def run_experiment(name: str, out: str | Path, quick: bool = False, seed: int = 0, sets: list[str] | None = None,
                   quiet: bool = True):
    """Run experiment ``name`` into ``out``; ``quiet=False`` shows each training run's progress."""
    from .common import progress

    exp = EXPERIMENTS.get(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with progress(not quiet):
        return exp.fn(out, quick=quick, seed=seed, sets=sets or [])
