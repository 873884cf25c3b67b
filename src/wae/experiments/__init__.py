"""Paper reproductions, one command each: ``wae reproduce NAME [--quick]``.

Every experiment writes figures, ``metrics.json`` and ``report.md`` (our numbers beside the paper's) into its
output directory. ``--quick`` runs a minutes-long version on a CPU (used by the tests); without it the paper's
budget.
"""
from . import gmvae, gmwae, stacked, wae  # noqa: F401  (registration of the reproductions)
from .registry import EXPERIMENTS, list_experiments, register_experiment, run_experiment

__all__ = ["register_experiment", "run_experiment", "list_experiments", "EXPERIMENTS"]
