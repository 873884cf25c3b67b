"""Evaluation metrics (pure NumPy / SciPy / torch; no plotting, no training engine).

* :mod:`wae.evaluation.clustering` — clustering accuracies (GM-WAE paper, Makhzani, Hungarian, majority),
  NMI, ARI, active components.
* :mod:`wae.evaluation.distances` — exact empirical W2, Fréchet distance / FID, KID, precision / recall.

scikit-learn is imported lazily (only by :func:`nmi` / :func:`ari`).
"""
from __future__ import annotations

from .clustering import (
    active_components,
    ari,
    class_cluster_matrix,
    clustering_metrics,
    contingency,
    hungarian_accuracy,
    majority_accuracy,
    makhzani_accuracy,
    nmi,
    paper_accuracy,
)
from .distances import exact_w2, fid_from_features, frechet_distance, kid, pairwise_sq_dists, precision_recall

__all__ = [
    # clustering
    "active_components",
    "ari",
    "class_cluster_matrix",
    "clustering_metrics",
    "contingency",
    "hungarian_accuracy",
    "majority_accuracy",
    "makhzani_accuracy",
    "nmi",
    "paper_accuracy",
    # distances
    "exact_w2",
    "fid_from_features",
    "frechet_distance",
    "precision_recall",
    "kid",
    "pairwise_sq_dists",
]
