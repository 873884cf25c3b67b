"""Plot helpers shared by runs and reproductions."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write_bytes  # noqa: E402

__all__ = ["MAX_GRID", "image_grid", "save_image_grid", "save_reconstructions", "save_figure", "training_curves", "read_logs", "heatmap", "scatter_2d"]


def image_grid(images: torch.Tensor, nrow: int, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile N×C×H×W images in [0, 1] into an H'×W'×C array, ``nrow`` images per row."""
    x = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    return grid.permute(1, 2, 0).numpy()


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int, title: str | None = None, scale: float = 0.45,
                    row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> Path:
    arr = image_grid(images, nrow)
    h, w = arr.shape[:2]
    fig = plt.figure(figsize=(max(2.0, w / 28 * scale), max(2.0, h / 28 * scale) + (0.4 if title else 0)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(arr.squeeze(-1) if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if col_labels is not None:
        cw = w / nrow
        ax.set_xticks([cw * (i + 0.5) for i in range(len(col_labels))], list(col_labels), fontsize=7)
        ax.xaxis.tick_top()
    if row_labels is not None:
        rh = h / len(row_labels)
        ax.set_yticks([rh * (i + 0.5) for i in range(len(row_labels))], list(row_labels), fontsize=7)
    if title:
        ax.set_title(title, fontsize=9, pad=14 if col_labels is not None else 4)
    return save_figure(fig, path)


def read_logs(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All ``train/*`` series from every CSV log version of a run (resumed runs have several): name → (steps, values)."""
    series: dict[str, dict[int, float]] = {}
    for f in sorted(Path(run_dir, "logs").glob("version_*/metrics.csv")):
        try:
            with open(f, newline="") as fh:
                for row in csv.DictReader(fh):
                    step = row.get("step")
                    if step in (None, ""):
                        continue
                    for k, v in row.items():
                        if k in ("step", "epoch") or v in (None, ""):
                            continue
                        try:
                            series.setdefault(k, {})[int(float(step))] = float(v)
                        except ValueError:
                            continue
        except OSError:
            continue
    return {k: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)])) for k, d in series.items()}


def training_curves(run_dir: str | Path, path: str | Path, title: str = "training curves",
                    hlines: dict[str, float] | None = None) -> Path | None:
    logs = read_logs(run_dir)
    names = [k for k in logs if k.startswith("train/")] + [k for k in logs if k.startswith("val/")
                                                             and k.split("/")[-1] in ("recon_mse", "acc_paper",
                                                                                      "acc_makhzani", "active_components")]
    if not names:
        return None
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.6 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, names):
        s, v = logs[name]
        ax.plot(s, v, lw=0.8)
        if len(v) > 20:
            k = max(1, len(v) // 30)
            ax.plot(s[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), lw=1.5)
        if hlines and name in hlines:
            ax.axhline(hlines[name], color="r", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        vmin, vmax = np.nanmin(v), np.nanmax(v)
        if vmin > 0 and vmax / max(vmin, 1e-12) > 100:
            ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def heatmap(matrix: np.ndarray, path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, aspect="auto")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def scatter_2d(points: Sequence[tuple[np.ndarray, np.ndarray | None, str]], path: str | Path, title: str,
               size: float = 3.0) -> Path:
    """Scatter several (xy, colour-labels or None, legend-name) sets in one 2-D plot."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for xy, c, name in points:
        xy = np.asarray(xy)
        if c is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.35, label=name, color="k")
        else:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c=c, cmap="tab10", alpha=0.8, label=name)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    if len(points) > 1:
        ax.legend(fontsize=7, markerscale=3)
    return save_figure(fig, path)


MAX_GRID = 10_000
"""Images in one PNG grid (``wae sample``, ``wae reconstruct``); more samples go to an .npz file."""


def save_reconstructions(model, x: torch.Tensor, path: str | Path, depth: int | None = None,
                         what: str = "the model") -> Path:
    """A grid of ``x`` and its reconstructions (``depth``: through that latent layer, hierarchical models), rows of
    8 originals above their 8 reconstructions; nothing written when they are not finite."""
    from ..errors import WAEError

    with torch.no_grad():
        rec = model.reconstruct_from(x, depth) if depth is not None else model.reconstruct(x)
    if not bool(torch.isfinite(rec).all()):
        raise WAEError(f"{what} produced non-finite reconstructions (NaN or infinity); nothing written")
    rows = []
    for r in range(0, len(x), 8):
        rows += [x[r:r + 8], rec[r:r + 8]]
    return save_image_grid(torch.cat(rows), path, nrow=8)
