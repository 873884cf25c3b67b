"""The figures of ``wae cluster``'s page: per cluster its decoded mode, the members closest to it, the least
confident members and samples drawn from it (a gallery for images, heat maps for vectors); the cluster sizes; the
criterion of the K sweep."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .figures import image_grid, plt, save_figure

__all__ = ["GALLERY", "gallery_figure", "gallery_parts", "profile_figure", "sizes_figure", "sweep_figure"]

GALLERY = 8
"""Members (and samples) shown per cluster and kind."""


def gallery_parts(model, xm: torch.Tensor, probs: np.ndarray, k: int, g: torch.Generator):
    """(mode (1, …), closest members, least confident members, samples) of cluster k of a mixture model (model-space
    tensors; ``xm``: the model's input of the examples whose q(k|x) are ``probs``)."""
    assign = probs.argmax(1)
    idx = np.flatnonzero(assign == k)
    with torch.no_grad():
        centre = model.component_mode(k)  # the refitted mean with component_refit: where the samples are drawn
        mode = model.decode(centre)
        samples = model.sample_component(k, GALLERY, generator=g)
        if idx.size:
            mu, _ = model.q_continuous(xm[idx])
            d = (mu[:, k] - centre[0]).pow(2).sum(-1).numpy()
            closest = idx[np.argsort(d, kind="stable")[:GALLERY]]
            unsure = idx[np.argsort(probs[idx, k], kind="stable")[:GALLERY]]
        else:
            closest = unsure = idx
    return mode, xm[closest], xm[unsure], samples


def gallery_figure(model, xm: torch.Tensor, probs: np.ndarray, path: Path, seed: int = 0) -> Path:
    """Images: one row per cluster — its decoded mode, the 8 members closest to the mode (in code space), a gap,
    the 8 least confident members, a gap, 8 samples drawn from the cluster."""
    K = probs.shape[1]
    sizes = np.bincount(probs.argmax(1), minlength=K)
    g = torch.Generator().manual_seed(seed)
    shape = tuple(xm.shape[1:])
    blank = torch.ones(1, *shape)
    cols = 1 + GALLERY + 1 + GALLERY + 1 + GALLERY
    rows = []
    model.eval()
    for k in range(K):
        mode, closest, unsure, samples = gallery_parts(model, xm, probs, k, g)

        def pad(t):
            return torch.cat([t.float(), blank.expand(GALLERY - t.shape[0], *shape)]) if t.shape[0] < GALLERY else t

        rows += [mode.float(), pad(closest), blank, pad(unsure), blank, samples.float()]
    grid = torch.cat(rows)
    up = max(1, math.ceil(28 / max(shape[1:])))  # small images drawn at 28 px at least (nearest neighbour)
    if up > 1:
        grid = grid.repeat_interleave(up, 2).repeat_interleave(up, 3)
    arr = image_grid(grid, cols)
    h, w = arr.shape[:2]
    fig = plt.figure(figsize=(w / 60 + 1.0, h / 60 + 0.8))
    ax = fig.add_axes([0.08, 0.02, 0.9, 0.86])
    ax.imshow(arr.squeeze(-1) if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    tile = w / cols
    heads = {0.5: "mode", 1 + GALLERY / 2: "closest to the mode", 2 + 1.5 * GALLERY: "least confident",
             3 + 2.5 * GALLERY: "drawn from cluster k"}
    ax.set_xticks([tile * c for c in heads], list(heads.values()), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([h / K * (k + 0.5) for k in range(K)], [f"{k} ({sizes[k]})" for k in range(K)], fontsize=8)
    ax.tick_params(length=0)
    ax.set_title("cluster k (size)", fontsize=9, loc="left", x=-0.08)
    return save_figure(fig, path)


def profile_figure(model, xm: torch.Tensor, probs: np.ndarray, path: Path, seed: int = 0) -> Path:
    """Vectors: per cluster three heat maps (rows: vectors, columns: features, in the model's scaled units) — the
    decoded mode above the members closest to it, the least confident members, samples drawn from the cluster."""
    K = probs.shape[1]
    sizes = np.bincount(probs.argmax(1), minlength=K)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    parts = [gallery_parts(model, xm, probs, k, g) for k in range(K)]
    lim = float(np.quantile(np.abs(xm.numpy()), 0.98)) or 1.0
    signed = bool(xm.min() < 0)  # standardised features: a diverging map around 0; intensities: a sequential one
    style = {"aspect": "auto", "interpolation": "nearest", "cmap": "RdBu_r" if signed else "viridis",
             "vmin": -lim if signed else 0.0, "vmax": lim}
    fig, axes = plt.subplots(K, 3, figsize=(9, 0.55 * K + 1.0), squeeze=False)
    for k, (mode, closest, unsure, samples) in enumerate(parts):
        for j, rows in enumerate((torch.cat([mode, closest]), unsure, samples)):
            ax = axes[k, j]
            ax.imshow(rows.numpy() if rows.shape[0] else np.zeros((1, xm.shape[1])), **style)
            if j == 0:
                ax.axhline(0.5, color="white", lw=1.5)  # the mode above, the members below
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{k} ({sizes[k]})", rotation=0, ha="right", va="center", fontsize=7)
            if k == 0:
                ax.set_title(("mode (top row) and members closest to it", "least confident members",
                              "samples drawn from k")[j], fontsize=8)
    fig.suptitle("cluster k (size): each row a vector, each column a feature (scaled units)", fontsize=9)
    return save_figure(fig, path)


def sizes_figure(sizes: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(sizes) + 1), 2.6))
    ax.bar(range(len(sizes)), sizes, color="#3b6fb6")
    ax.set_xlabel("cluster k")
    ax.set_ylabel("examples")
    ax.set_xticks(range(len(sizes)))
    ax.tick_params(labelsize=7)
    ax.set_title("cluster sizes (examples assigned to k)", fontsize=9)
    return save_figure(fig, path)


def sweep_figure(sweep: list[dict], chosen: int, path: Path) -> Path:
    ks = [r["k"] for r in sweep]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(ks, [r["silhouette"] for r in sweep], "o-", color="#3b6fb6")
    ax.axvline(chosen, color="#c0392b", ls="--", lw=1)
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel("held-out silhouette (higher is better)")
    ax.set_xticks(ks)
    ax.set_title(f"model selection: silhouette of the held-out 20 % (chosen K = {chosen})", fontsize=9)
    return save_figure(fig, path)
