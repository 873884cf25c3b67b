"""StackedWAE paper reproductions (Gaujac, Feige & Barber, "Learning deep-latent hierarchies by stacking
Wasserstein autoencoders", §3): stacked-wae-mnist (Figs. 2, 3), wae-deep-mnist (Fig. 4, the Eq. 7 ablation),
stacked-wae-svhn (Fig. 5).

Figure layout follows the paper: Fig. 3b / 5d have the data in the bottom row and the reconstruction from
encoding depth i in the i-th row from the bottom; Fig. 4a alternates data rows and reconstruction rows.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..files import write_json
from ..plots import figures as F
from ..training.run import load_data_for
from .common import base_config, default_mnist, embed_2d, finish_report, train_run
from .registry import register_experiment

__all__ = ["stacked_wae_mnist", "wae_deep_mnist", "stacked_wae_svhn", "z_grid", "depth_reconstructions",
           "top_interpolations"]

QUICK_MNIST = ["model.width=0.0625", "epochs=3", "batch_size=64", "data.limit=640", "data.eval_limit=500",
               "checkpoint_every_minutes=0", "train.log_every=2", "train.figures=false"]
QUICK_SVHN = ["model.width=0.0625", "epochs=1", "batch_size=32", "data.dataset=svhn:train", "data.limit=320",
              "data.eval_limit=200", "checkpoint_every_minutes=0", "train.log_every=2", "train.figures=false"]

NOTES_MNIST = [
    "Paper (§3.1, Fig. 2b/2c): StackedWAE generates compelling samples and learns a smooth manifold in the 2-D "
    "deepest latent Z5 (decodes of a grid over ±2 standard deviations).",
    "Paper (Fig. 2c, 3a): StackedWAE uses all of its latent layers, capturing most of the covariance structure in "
    "the deepest layer, with structured (digit-separated) manifolds in every stochastic layer.",
    "Paper (Fig. 3b): each additional encoding layer moves slightly farther from copying the input (information is "
    "lost going up to lower-dimensional layers); compare the `test/recon_depth{i}` metrics, increasing with i.",
    "The paper reports no numbers for MNIST; the metrics below are ours (per-layer `test/mmd_layer{i}` is the MMD "
    "between encoded layer i and the implicit prior p(z_i) sampled ancestrally; `test/mmd` the top-layer MMD to "
    "N(0, I); `test/objective` Eq. 10 with the run's λ products).",
]
NOTES_ABLATION = [
    "Paper (§3.1 ablation, Fig. 4): the same networks trained with the plain WAE objective (Eq. 7) give relatively "
    "accurate reconstructions (4a, through z_1) but poor samples (4b, compare with Fig. 2b) and no smooth "
    "structure in the deepest latent (4c, compare with Fig. 2c): Eq. 7 does not depend on q(z_2..z_N|z_1).",
    "Fig. 4a reconstructs through z_1 (the term Eq. 7 trains); `fig4_reconstructions_per_depth` shows all depths.",
]
NOTES_SVHN = [
    "Paper (§3.2, Fig. 5): samples (5a); interpolations in the deepest latent are smooth, though the reconstructions "
    "(2nd and 2nd-to-last columns of 5b) may not match the anchors (1st and last columns) because the deepest "
    "layer is small; latent embeddings show SVHN structure, likely the background colour (5c); deeper encoding "
    "layers give lower-fidelity reconstructions (5d).",
]


# --- configs -------------------------------------------------------------------------------------------------------


def _mnist_cfg(model: str, quick: bool, seed: int, sets: list[str]):
    data, eval_data, eval_dir = default_mnist(quick)
    over = [f"data.dataset={data}", f"seed={seed}"]
    if eval_data:
        over += [f"data.eval_dataset={eval_data}", f"data.eval_data_dir={eval_dir}"]
    if quick:
        over += QUICK_MNIST
    return base_config(model, f"{model}-mnist", over + list(sets))


def _svhn_cfg(quick: bool, seed: int, sets: list[str]):
    over = [f"seed={seed}"] + (QUICK_SVHN if quick else [])
    return base_config("stacked-wae", "stacked-wae-svhn", over + list(sets))


# --- figure helpers (shared by the three experiments) ----------------------------------------------------------------


def z_grid(model, n: int = 15, span: float = 2.0) -> torch.Tensor:
    """Decodes of an n×n grid over ±``span`` prior standard deviations in the first two top-latent dimensions
    (others 0); row r varies dimension 2 from +span (top) to −span, column c dimension 1 from −span to +span."""
    d = model.dims[-1]
    std = float(model.prior.std)
    t = torch.linspace(-span, span, n) * std
    z = torch.zeros(n * n, d)
    z[:, 0] = t.repeat(n)
    if d > 1:
        z[:, 1] = t.flip(0).repeat_interleave(n)
    with torch.no_grad():
        return model.decode(z)


def depth_reconstructions(model, x: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Rows (top to bottom): reconstruction from encoding depth N … 1, then the data (Fig. 3b / 5d)."""
    N = model.num_layers
    with torch.no_grad():
        rows = [model.reconstruct_from(x, i) for i in range(N, 0, -1)] + [x]
    return torch.cat(rows), [f"z{i}" for i in range(N, 0, -1)] + ["data"]


def top_interpolations(model, xa: torch.Tensor, xb: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Per pair: data a, decodes of the linear path between the top codes (ends = reconstructions), data b."""
    with torch.no_grad():
        za, zb = model.encode(xa), model.encode(xb)
        t = torch.linspace(0, 1, steps).view(1, -1, 1)
        zi = (za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t).reshape(-1, za.shape[-1])
        dec = model.decode(zi).view(xa.shape[0], steps, *xa.shape[1:])
    return torch.cat([xa.unsqueeze(1), dec, xb.unsqueeze(1)], 1).reshape(-1, *xa.shape[1:])


def latent_panels(model, x: torch.Tensor, y: torch.Tensor | None, path: Path, title: str) -> list[str]:
    """One scatter panel per layer of the encoded (means) test set, coloured by label; raw for 2-D layers, else
    :func:`embed_2d`. Returns the embedding method used per layer."""
    import matplotlib.pyplot as plt

    with torch.no_grad():
        zs = [z.numpy() for z in model.encode_layers(x)]
    N = len(zs)
    ncol = min(N, 3)
    nrow = math.ceil(N / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.4 * nrow), squeeze=False)
    methods = []
    c = None if y is None else np.asarray(y)
    for i, (ax, z) in enumerate(zip(axes.flat, zs)):
        emb, method = embed_2d(z)
        methods.append(method)
        sc = ax.scatter(emb[:, 0], emb[:, 1], s=2, c=c, cmap="tab10" if c is not None else None, alpha=0.8)
        ax.set_title(f"Z{i + 1} (d={z.shape[1]}, {method})", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[N:]:
        ax.axis("off")
    if c is not None:
        fig.colorbar(sc, ax=list(axes.flat), shrink=0.6, ticks=range(int(c.max()) + 1))
    fig.suptitle(title, fontsize=10)
    F.save_figure(fig, path)
    return methods


def loss_terms_figure(run_dir: Path, model, path: Path, title: str) -> Path | None:
    """Fig. 2a: every term of Eq. 10 over training (log scale): unweighted (left) and weighted by Π λ_i (right)."""
    import matplotlib.pyplot as plt

    logs = F.read_logs(run_dir)
    N = model.num_layers
    names = [f"cost{n}" for n in range(N)] + ["mmd"]
    if model.config.objective != "stacked":
        names = ["cost0", "mmd_z1"]
    have = [k for k in names if f"train/{k}" in logs]
    if not have:
        return None
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    w = model.weights
    for k in have:
        s, v = logs[f"train/{k}"]
        a0.plot(s, np.abs(v) + 1e-12, lw=1, label=k)
        if model.config.objective == "stacked":
            wk = w[-1] if k == "mmd" else w[int(k[4:])]
            a1.plot(s, wk * np.abs(v) + 1e-12, lw=1, label=f"{wk:.3g}·{k}")
    if "train/loss" in logs:
        s, v = logs["train/loss"]
        a1.plot(s, np.abs(v) + 1e-12, lw=1.6, color="k", label="total (Eq. 10)")
    for ax, t in ((a0, "unweighted terms"), (a1, "weighted terms and total")):
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=8)
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return F.save_figure(fig, path)


def _samples(model, n: int = 100) -> torch.Tensor:
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        return model.sample(n, generator=g)


def _prep(out: Path) -> Path:
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    return fig_dir


def _embed_note(methods: list[str], notes: list[str], fig: str) -> None:
    if "pca" in methods:
        notes.append(f"{fig} uses PCA for layers above 2-D: install umap-learn for UMAP as in the paper.")


def _finish(out: Path, title: str, cfg, metrics: dict, notes: list[str], quick: bool) -> dict:
    write_json(out / "metrics.json", metrics)
    finish_report(out, title, cfg, metrics, {}, notes, quick)
    return metrics


# --- experiments -----------------------------------------------------------------------------------------------------


@register_experiment("stacked-wae-mnist", "StackedWAE on MNIST, 5 layers (Figs. 2 and 3 of Gaujac et al.)")
def stacked_wae_mnist(out: Path, quick: bool = False, seed: int = 0, sets=()):
    cfg = _mnist_cfg("stacked-wae", quick, seed, list(sets))
    metrics, model, eval_ds = train_run(cfg, out / "run")
    model.eval()
    fig_dir = _prep(out)
    notes = list(NOTES_MNIST)
    x, y = eval_ds.x, eval_ds.y
    loss_terms_figure(out / "run", model, fig_dir / "fig2a_training_curves.png",
                      "Fig. 2a: every term of Eq. 10 over training")
    F.save_image_grid(_samples(model), fig_dir / "fig2b_samples.png", nrow=10, title="Fig. 2b: model samples")
    F.save_image_grid(z_grid(model), fig_dir / "fig2c_z5_grid.png", nrow=15,
                      title="Fig. 2c: decodes of a grid in Z5 over ±2 standard deviations")
    n = min(len(x), 500 if quick else 2000)
    methods = latent_panels(model, x[:n], None if y is None else y[:n], fig_dir / "fig3a_latents_per_layer.png",
                            "Fig. 3a: encoded test digits in every latent layer")
    _embed_note(methods, notes, "Fig. 3a")
    grid, labels = depth_reconstructions(model, x[:10])
    F.save_image_grid(grid, fig_dir / "fig3b_reconstructions_per_depth.png", nrow=10, row_labels=labels,
                      title="Fig. 3b: bottom row data; row z_i reconstructs from encoding depth i")
    return _finish(out, "StackedWAE on MNIST (Gaujac et al., §3.1, Figs. 2-3)", cfg, metrics, notes, quick)


@register_experiment("wae-deep-mnist", "The §3.1 ablation: the same hierarchy trained with the WAE objective (Fig. 4)")
def wae_deep_mnist(out: Path, quick: bool = False, seed: int = 0, sets=()):
    cfg = _mnist_cfg("wae-deep", quick, seed, list(sets))
    metrics, model, eval_ds = train_run(cfg, out / "run")
    model.eval()
    fig_dir = _prep(out)
    notes = list(NOTES_ABLATION)
    x, y = eval_ds.x, eval_ds.y
    xs = x[:50]
    with torch.no_grad():
        rec = model.reconstruct_from(xs, 1)
    rows = []
    for r in range(5):
        rows += [xs[r * 10:(r + 1) * 10], rec[r * 10:(r + 1) * 10]]
    F.save_image_grid(torch.cat(rows), fig_dir / "fig4a_reconstructions.png", nrow=10,
                      title="Fig. 4a: test data (odd rows), reconstructions through z1 (even rows)")
    F.save_image_grid(_samples(model), fig_dir / "fig4b_samples.png", nrow=10,
                      title="Fig. 4b: model samples (compare Fig. 2b)")
    F.save_image_grid(z_grid(model), fig_dir / "fig4c_z5_grid.png", nrow=15,
                      title="Fig. 4c: decodes of a grid in Z5 over ±2 standard deviations (compare Fig. 2c)")
    n = min(len(x), 500 if quick else 2000)
    methods = latent_panels(model, x[:n], None if y is None else y[:n], fig_dir / "fig4_latents_per_layer.png",
                            "WAE ablation: encoded test digits in every latent layer (compare Fig. 3a)")
    _embed_note(methods, notes, "fig4_latents_per_layer")
    grid, labels = depth_reconstructions(model, x[:10])
    F.save_image_grid(grid, fig_dir / "fig4_reconstructions_per_depth.png", nrow=10, row_labels=labels,
                      title="WAE ablation: reconstructions per encoding depth (compare Fig. 3b)")
    loss_terms_figure(out / "run", model, fig_dir / "fig4_training_curves.png", "WAE ablation: Eq. 7 terms")
    return _finish(out, "WAE ablation of StackedWAE on MNIST (Gaujac et al., §3.1, Fig. 4)", cfg, metrics, notes,
                   quick)


@register_experiment("stacked-wae-svhn", "StackedWAE on SVHN, 6 ResNet layers (Fig. 5 of Gaujac et al.)")
def stacked_wae_svhn(out: Path, quick: bool = False, seed: int = 0, sets=()):

    cfg = _svhn_cfg(quick, seed, list(sets))
    load_data_for(cfg)  # fail fast, before any run directory is written: a missing SVHN raises a one-line WAEError
    metrics, model, eval_ds = train_run(cfg, out / "run")
    model.eval()
    fig_dir = _prep(out)
    notes = list(NOTES_SVHN)
    x, y = eval_ds.x, eval_ds.y
    F.save_image_grid(_samples(model), fig_dir / "fig5a_samples.png", nrow=10, scale=0.6,
                      title="Fig. 5a: model samples")
    k = min(8, len(x) // 2)
    F.save_image_grid(top_interpolations(model, x[:k], x[k:2 * k]), fig_dir / "fig5b_interpolations.png",
                      nrow=10, scale=0.6,
                      title="Fig. 5b: interpolations in the deepest latent; first and last columns are data")
    n = min(len(x), 500 if quick else 2000)
    methods = latent_panels(model, x[:n], None if y is None else y[:n], fig_dir / "fig5c_latents_per_layer.png",
                            "Fig. 5c: encoded test digits in every latent layer")
    _embed_note(methods, notes, "Fig. 5c")
    grid, labels = depth_reconstructions(model, x[:10])
    F.save_image_grid(grid, fig_dir / "fig5d_reconstructions_per_depth.png", nrow=10, scale=0.6, row_labels=labels,
                      title="Fig. 5d: bottom row data; row z_i reconstructs from encoding depth i")
    loss_terms_figure(out / "run", model, fig_dir / "svhn_training_curves.png", "SVHN: every term of Eq. 10")
    return _finish(out, "StackedWAE on SVHN (Gaujac et al., §3.2, Fig. 5)", cfg, metrics, notes, quick)
