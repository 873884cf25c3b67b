"""Evaluation metrics (pure NumPy / SciPy / torch; no plotting, no training engine).

* :mod:`wae.evaluation.clustering` — clustering accuracies (GM-WAE paper, Makhzani, Hungarian, majority),
  NMI, ARI, active components.
* :mod:`wae.evaluation.baselines` — the k-means and UMAP → Gaussian mixture baselines of every clustering result.
* :mod:`wae.evaluation.distances` — exact empirical W2, Fréchet distance / FID, KID, precision / recall.

scikit-learn is imported lazily (only by :func:`nmi` / :func:`ari`).
"""
from __future__ import annotations

from .baselines import baseline_scores, kmeans_baseline, umap_gmm_baseline, umap_gmm_scores
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
    # baselines
    "baseline_scores",
    "kmeans_baseline",
    "umap_gmm_baseline",
    "umap_gmm_scores",
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
