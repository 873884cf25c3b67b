"""Evaluate a trained model on held-out data, write metrics.json, the run's figures and its report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..io import write_json

__all__ = ["evaluate_model", "evaluate_run", "make_figures", "batched"]


def batched(fn, x: torch.Tensor, batch_size: int = 500):
    """Apply ``fn`` to chunks of x (no grad) and concatenate the results."""
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(fn(x[i: i + batch_size]))
    return torch.cat(outs, 0)


@torch.no_grad()
def evaluate_model(model, eval_ds, seed: int = 0, mmd_points: int | None = None, batch_size: int = 500,
                   iwae_points: int = 200) -> dict:
    """Test metrics of a model on a data set (keys prefixed ``test/``).

    The IWAE bound (VAE-type models) is averaged over the first ``iwae_points`` test points (recorded as
    ``test/iwae_points``): with 100 importance samples each, the whole MNIST test set would
    cost a million decodes, ten minutes and more on a CPU at the paper's width.
    """
    from ..divergences import mmd

    model.eval()
    torch.manual_seed(seed)
    x = eval_ds.x
    out: dict[str, float] = {}
    rec = batched(model.reconstruct, x, batch_size)
    err = (rec - x).pow(2).flatten(1).sum(1)
    out["test/recon_mse"] = float(err.mean())
    out["test/recon_mse_pixel"] = float(err.mean() / x[0].numel())
    # Aggregated posterior vs prior (mixture-aware weights and groups).
    k = model.prior.num_components
    n_mmd = mmd_points or (500 if k > 1 and getattr(model, "has_discrete_latent", False) else 2000)
    xs = x[:n_mmd]
    z, w, g = model.posterior_samples(xs)
    z = z.detach()
    if k > 1:
        zp, wp, gp = model.prior.sample_stratified(max(2, math.ceil(z.shape[0] / k)))
    else:
        zp, wp, gp = model.prior.sample((z.shape[0],)), None, None
    out["test/mmd_prior"] = float(mmd(z, zp, model.kernel, w, wp, g, gp))
    # Model-specific batch metrics (ELBO, IWAE bound, per-layer terms …), averaged over the test set.
    sums: dict[str, float] = {}
    count = 0
    # importance-weighted bounds cost iw_samples decodes per point: only a subset of the test set
    xm = x[:iwae_points] if getattr(model.config, "iw_samples", 0) > 1 else x
    for i in range(0, xm.shape[0], batch_size):
        xb = xm[i: i + batch_size]
        m = model.eval_metrics(xb)
        for key, v in m.items():
            sums[key] = sums.get(key, 0.0) + float(v) * xb.shape[0]
        count += xb.shape[0]
    out.update({f"test/{key}": v / count for key, v in sums.items()})
    if any("iwae" in s for s in sums):
        out["test/iwae_points"] = count
    # Clustering metrics for models with a discrete latent.
    probs = model.cluster_probs(x[:2]) if getattr(model, "has_discrete_latent", False) else None
    if probs is not None and eval_ds.y is not None:
        from .clustering import clustering_metrics

        probs = batched(model.cluster_probs, x, batch_size)
        out.update(clustering_metrics(probs.numpy(), eval_ds.y.numpy(), prefix="test/"))
    return out


def make_figures(model, run_dir: Path, eval_ds, seed: int = 0) -> list[Path]:
    """The figures every run gets: reconstructions, samples, interpolations, curves (+ per-component views)."""
    from ..plots import figures as F

    fig_dir = Path(run_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.manual_seed(seed)
    paths: list[Path] = []
    x = eval_ds.x
    with torch.no_grad():
        if model.is_image:
            xs = x[:40]
            rec = model.reconstruct(xs)
            rows = []
            for r in range(4):  # odd rows data, even rows reconstructions
                rows += [xs[r * 10:(r + 1) * 10], rec[r * 10:(r + 1) * 10]]
            paths.append(F.save_image_grid(torch.cat(rows), fig_dir / "reconstructions.png", nrow=10,
                                           title="test data (odd rows) and reconstructions (even rows)"))
            paths.append(F.save_image_grid(model.sample(100), fig_dir / "samples.png", nrow=10,
                                           title="random samples"))
            za, zb = model.encode(x[40:48]), model.encode(x[48:56])
            t = torch.linspace(0, 1, 10)
            zi = (za.unsqueeze(1) * (1 - t).view(1, -1, 1) + zb.unsqueeze(1) * t.view(1, -1, 1)).reshape(-1, za.shape[-1])
            dec = model.decode(zi).view(8, 10, *x.shape[1:])
            grid = torch.cat([x[40:48].unsqueeze(1), dec, x[48:56].unsqueeze(1)], 1).reshape(-1, *x.shape[1:])
            paths.append(F.save_image_grid(grid, fig_dir / "interpolations.png", nrow=12,
                                           title="latent interpolations between test pairs (ends: data)"))
            K = getattr(model, "num_components", model.prior.num_components)
            if K > 1:
                per = torch.stack([model.sample_component(k, 8) for k in range(K)], 1)  # (8, K, ...)
                paths.append(F.save_image_grid(per.reshape(-1, *x.shape[1:]), fig_dir / "samples_per_component.png",
                                               nrow=K, title="samples per mixture component (column k)",
                                               col_labels=[str(k) for k in range(K)]))
        else:
            s = model.sample(min(2000, len(x))).numpy()
            data = x[:2000].numpy()
            if data.shape[1] >= 2:
                lab = eval_ds.y[:2000].numpy() if eval_ds.y is not None else None
                paths.append(F.scatter_2d([(data[:, :2], lab, "data"), (s[:, :2], None, "samples")],
                                          fig_dir / "samples.png", "data (coloured) and model samples (black)"))
        if getattr(model, "has_discrete_latent", False) and eval_ds.y is not None:
            from .clustering import class_cluster_matrix

            probs = batched(model.cluster_probs, x, 500).numpy()
            C = int(eval_ds.y.max()) + 1
            M = class_cluster_matrix(probs, eval_ds.y.numpy(), C)
            paths.append(F.heatmap(M, fig_dir / "cluster_heatmap.png", "component k", "class ℓ",
                                   "mean q(k|x) over test points of class ℓ"))
    curve = F.training_curves(run_dir, fig_dir / "training_curves.png")
    if curve:
        paths.append(curve)
    return paths


def default_sample_metrics() -> list[str]:
    """Sample-quality metrics ``wae evaluate`` computes by default: all of them, Inception FID whenever the ``fid``
    extra is installed (on a CPU on at most ``INCEPTION_CPU_N`` images per side, see
    :func:`~wae.evaluation.sample_quality.sample_quality_metrics`)."""
    from .sample_quality import inception_available

    names = ["w2_samples", "w2_latent", "fid_domain", "kid_domain", "component_purity"]
    if inception_available():
        names.append("fid_inception")
    return names


def _applicable(model, eval_ds, names: list[str]) -> list[str]:
    out = list(names)
    if getattr(model, "num_components", model.prior.num_components) <= 1 and "component_purity" in out:
        out.remove("component_purity")
    if (eval_ds.y is None or len(eval_ds.shape) != 3):
        out = [m for m in out if m not in ("fid_domain", "kid_domain", "component_purity", "fid_inception")]
    return out


def evaluate_run(model, run_dir, train_ds, eval_ds, cfg, extra: dict | None = None, figures: bool = True,
                 sample_metrics: list[str] | None = None, n: int = 2000, inception_n: int | None = None) -> dict:
    """Metrics (+ figures and report) for a finished run; merges into an existing metrics.json."""
    run_dir = Path(run_dir)
    metrics: dict = {}
    mpath = run_dir / "metrics.json"
    if mpath.exists():
        try:
            metrics = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {}
    metrics.update({k: v for k, v in (extra or {}).items() if v is not None})
    metrics.update(evaluate_model(model, eval_ds, seed=cfg.train.seed))
    if sample_metrics:
        from .sample_quality import sample_quality_metrics

        if cfg.data.limit:  # the domain classifier always learns from the whole training split
            from ..data import load_dataset

            train_ds = load_dataset(cfg.data.dataset, cfg.data.split, data_dir=cfg.data.data_dir)
        metrics.update(sample_quality_metrics(model, eval_ds, train_ds, n=n, metrics=_applicable(model, eval_ds,
                                                                                                 sample_metrics),
                                              seed=cfg.train.seed, inception_n=inception_n))
    metrics["model"] = cfg.model
    metrics["dataset"] = cfg.data.dataset
    metrics["eval_dataset"] = cfg.data.eval_dataset or f"{cfg.data.dataset}:test"
    metrics["eval_examples"] = len(eval_ds)
    write_json(mpath, metrics)
    if figures:
        make_figures(model, run_dir, eval_ds, seed=cfg.train.seed)
        from ..reports import write_run_report

        write_run_report(run_dir, cfg, metrics)
    return metrics
