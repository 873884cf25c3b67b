"""GM-WAE paper reproductions (Gaujac, Feige & Barber): gm-wae-mnist, gm-wae-elbo-collapse, vae-from-wae.

``--set exp.from=RUN`` (gm-wae-mnist, vae-from-wae): use the trained gm-wae in run directory RUN instead of training
one (its metrics.json is reported as the GM-WAE numbers; the GM-VAE of vae-from-wae gets the same networks).
"""
from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..data.source import apply_batched
from ..errors import ConfigError
from ..evaluation.clustering import active_components, class_cluster_matrix
from ..files import write_json
from ..models.gmwae import GMVAEFoilConfig
from ..plots import figures as F
from ..training.callbacks import StepProbe
from ..training.run import load_data_for
from .common import (
    base_config,
    default_mnist,
    embed_2d,
    finish_report,
    load_trained,
    no_leftovers,
    split_sets,
    train_run,
)
from .registry import EXPERIMENTS, register_experiment

PAPER = {"test/acc_paper": 0.76}


def _gm_cfg(model: str, quick: bool, seed: int, sets: list[str]):
    data, eval_data, eval_dir = default_mnist(quick)
    over = [f"data.dataset={data}", f"seed={seed}"]
    if eval_data:
        over += [f"data.eval_dataset={eval_data}", f"data.eval_data_dir={eval_dir}"]
    if quick:
        over += ["model.width=0.125", "model.discrete_width=0.5", "epochs=2", "pretrain_steps=30", "batch_size=32",
                 "data.limit=640", "data.eval_limit=500", "checkpoint_every_minutes=0"]
    return base_config(model, f"{model}-mnist", over + list(sets))


def _component_figures(model, fig_dir: Path, eval_ds) -> None:
    x = eval_ds.x
    K = model.prior.num_components
    shape = x.shape[1:]
    with torch.no_grad():
        torch.manual_seed(0)
        # Fig. 2b: samples per k, column k = component k
        per = torch.stack([model.sample_component(k, 10) for k in range(K)], 1)
        F.save_image_grid(per.reshape(-1, *shape), fig_dir / "fig2b_samples_per_component.png", nrow=K,
                          title="Fig. 2b: samples, column k = component k", col_labels=[str(k) for k in range(K)])
        # Fig. 2c: σ₀/2
        per = torch.stack([model.sample_component(k, 10, std_scale=0.5) for k in range(K)], 1)
        F.save_image_grid(per.reshape(-1, *shape), fig_dir / "fig2c_samples_half_std.png", nrow=K,
                          title="Fig. 2c: samples with σ₀/2 (close to the modes)", col_labels=[str(k) for k in range(K)])
        # Fig. 2a: reconstructions
        xs = x[:50]
        rec = model.reconstruct(xs)
        rows = []
        for r in range(5):
            rows += [xs[r * 10:(r + 1) * 10], rec[r * 10:(r + 1) * 10]]
        F.save_image_grid(torch.cat(rows), fig_dir / "fig2a_reconstructions.png", nrow=10,
                          title="Fig. 2a: test data (odd rows), reconstructions (even rows)")
        # Fig. 3a: interpolations between test pairs
        za, zb = model.encode(x[50:58]), model.encode(x[58:66])
        t = torch.linspace(0, 1, 10).view(1, -1, 1)
        zi = (za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t).reshape(-1, za.shape[-1])
        dec = model.decode(zi).view(8, 10, *shape)
        grid = torch.cat([x[50:58].unsqueeze(1), dec, x[58:66].unsqueeze(1)], 1).reshape(-1, *shape)
        F.save_image_grid(grid, fig_dir / "fig3a_interpolations.png", nrow=12,
                          title="Fig. 3a: interpolations between test digits (ends: data)")
        # Fig. 3b: from μ⁰_2 to the other modes
        mu = model.prior.means
        src = 2 if K > 2 else 0
        others = [k for k in range(K) if k != src]
        zi = torch.stack([mu[src] * (1 - s) + mu[k] * s for k in others for s in torch.linspace(0, 1, 10)])
        F.save_image_grid(model.decode(zi), fig_dir / "fig3b_mode_interpolations.png", nrow=10,
                          title=f"Fig. 3b: from prior mode μ⁰_{src} (left) to each other mode (right)",
                          row_labels=[f"→{k}" for k in others])


def _heatmap_and_umap(model, fig_dir: Path, eval_ds, notes: list[str]) -> None:

    x, y = eval_ds.x, eval_ds.y
    probs = apply_batched(model.cluster_probs, x, 500).numpy()
    M = class_cluster_matrix(probs, y.numpy(), int(y.max()) + 1)
    F.heatmap(M, fig_dir / "fig5a_qD_heatmap.png", "component k", "digit class ℓ",
              "Fig. 5a: row ℓ = mean q_D(k|x) over test digits of class ℓ")
    with torch.no_grad():
        torch.manual_seed(0)
        n = min(1000, len(x))
        zq = model.sample_posterior(x[:n]).numpy()
        zp, kp = model.prior.sample_with_components((1000,))
    emb, method = embed_2d(np.concatenate([zq, zp.numpy()]))
    if method != "umap":
        notes.append("Fig. 5b uses PCA: install the `umap` extra (`pip install -e .[umap]`) for UMAP as in the paper.")
    F.scatter_2d([(emb[n:], None, "prior samples"), (emb[:n], y[:n].numpy(), "encoded test digits")],
                 fig_dir / "fig5b_latent_embedding.png",
                 f"Fig. 5b: {method.upper()} of z ~ Σ_k q_C q_D (coloured by digit) and prior samples (black)")


def _from_option(sets) -> tuple[str | None, list[str]]:
    """(the ``exp.from`` run directory or None, the config overrides); any other ``exp.`` option is an error."""
    exp, rest = split_sets(sets)
    src = exp.pop("from", None)
    no_leftovers(exp, "exp.from")
    return src, rest


def _trained_gm_wae(src: str | None, cfg, out: Path):
    """(metrics, model, eval set) of the trained gm-wae run ``src``; without one, train one per ``cfg``."""
    if not src:
        return train_run(cfg, out)

    model, metrics = load_trained(src, ("gm-wae",))
    _, eval_ds = load_data_for(cfg).held_out  # the evaluation data of this reproduction
    if tuple(eval_ds.x.shape[1:]) != tuple(model.data_shape):
        raise ConfigError(f"{src} was trained on {tuple(model.data_shape)} data, this reproduction evaluates on "
                          f"{cfg.data.dataset} {tuple(eval_ds.x.shape[1:])}")
    return metrics, model, eval_ds


@register_experiment("gm-wae-mnist", "GM-WAE on MNIST: Figs. 2, 3, 5 and the §3.2 accuracy (paper: 76%)")
def gm_wae_mnist(out: Path, quick: bool = False, seed: int = 0, sets=()):
    src, rest = _from_option(sets)
    cfg = _gm_cfg("gm-wae", quick, seed, rest)
    metrics, model, eval_ds = _trained_gm_wae(src, cfg, out / "run")
    notes_from = [f"GM-WAE: the trained run {src} (exp.from), not retrained."] if src else []
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    notes: list[str] = list(notes_from)
    _component_figures(model, fig_dir, eval_ds)
    _heatmap_and_umap(model, fig_dir, eval_ds, notes)
    write_json(out / "metrics.json", metrics)
    finish_report(out, "GM-WAE on MNIST (Gaujac, Feige & Barber, §3)", cfg, metrics, PAPER, notes, quick)
    return metrics


def _collapse_probe(eval_ds):

    x = eval_ds.x[:500]

    def fn(model, step):
        probs = model.cluster_probs(x)
        return {"active": active_components(probs.argmax(1).numpy(), probs.shape[1]),
                "qmean": probs.mean(0).numpy()}

    return fn


def _snapshot_probe(eval_ds, steps):

    x, y = eval_ds.x[:500], eval_ds.y[:500]

    def fn(model, step):
        if step not in steps:
            return None
        probs = model.cluster_probs(x)
        return {"heatmap": class_cluster_matrix(probs.numpy(), y.numpy(), int(y.max()) + 1),
                "recon": torch.cat([x[:10], model.reconstruct(x[:10])])}

    return fn


def _plot_series(records, path: Path, title: str, ylabel: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([s for s, _ in records], [v for _, v in records], marker=".")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    F.save_figure(fig, path)


@register_experiment("gm-wae-elbo-collapse", "GM-WAE's networks trained with the ELBO (the paper's GM-VAE) collapse "
                     "(Fig. 1: steps 35 and ~1000)")
def gm_wae_elbo_collapse(out: Path, quick: bool = False, seed: int = 0, sets=()):

    cfg = _gm_cfg("gm-wae-elbo", quick, seed, list(sets))
    early, late = (35, 60) if quick else (35, 1000)
    cfg.train.max_steps = late
    cfg.train.epochs = 10_000
    cfg.train.log_every = 1

    _, eval_ds = load_data_for(cfg).held_out
    snap = StepProbe(_snapshot_probe(eval_ds, {early, late}), steps=[early, late])
    act = StepProbe(_collapse_probe(eval_ds), every=5 if quick else 20)
    metrics, model, eval_ds = train_run(cfg, out / "run", callbacks=[snap, act])
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for step, rec in snap.records:
        if rec is None:
            continue
        tag = "a-c" if step == early else "d-f"
        F.heatmap(rec["heatmap"], fig_dir / f"fig1_step{step}_qD_heatmap.png", "component k", "digit class ℓ",
                  f"Fig. 1 ({tag}): mean q_D(k|x) per class after {step} steps")
        F.save_image_grid(rec["recon"], fig_dir / f"fig1_step{step}_reconstructions.png", nrow=10,
                          title=f"Fig. 1 ({tag}): data (top) and reconstructions after {step} steps")
    F.training_curves(out / "run", fig_dir / "fig1_loss_terms.png", title="Fig. 1a/d: GM-VAE loss terms")
    _plot_series([(s, r["active"]) for s, r in act.records], fig_dir / "active_components.png",
                 "active components (argmax for ≥ 1% of test points) over training", "active k")
    metrics["collapse/active_components_over_training"] = [[s, r["active"]] for s, r in act.records]
    write_json(out / "metrics.json", metrics)
    notes = ["The paper reports that q_D shuts off several components within the first tens of steps and never "
             "revives them; compare `active_components.png` and the two heatmaps."]
    finish_report(out, "GM-VAE collapse (Gaujac, Feige & Barber, §2.1, Fig. 1)", cfg, metrics, {}, notes, quick)
    return metrics


EXPERIMENTS.rename("gm-vae-collapse", "gm-wae-elbo-collapse")


@register_experiment("vae-from-wae", "GM-VAE initialised from a trained GM-WAE deteriorates (Fig. 4)")
def vae_from_wae(out: Path, quick: bool = False, seed: int = 0, sets=()):
    from_run, rest = _from_option(sets)
    wae_cfg = _gm_cfg("gm-wae", quick, seed, rest)
    wmetrics, wmodel, eval_ds = _trained_gm_wae(from_run, wae_cfg, out / "gm-wae-run")
    vcfg = _gm_cfg("gm-wae-elbo", quick, seed, rest)
    if from_run:  # the ELBO run continues the given GM-WAE: same networks
        vcfg.model_config = GMVAEFoilConfig(**{f.name: copy.deepcopy(getattr(wmodel.config, f.name))
                                               for f in fields(wmodel.config)})
    vcfg.train.pretrain_steps = 0
    vcfg.train.max_steps = 40 if quick else 400
    vcfg.train.epochs = 10_000
    vcfg.train.log_every = 1
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    x = eval_ds.x[:20]
    with torch.no_grad():
        rec0 = wmodel.reconstruct(x)
    F.save_image_grid(torch.cat([x, rec0]), fig_dir / "fig4a_reconstructions_at_init.png", nrow=10,
                      title="Fig. 4a: GM-VAE initialised with the trained GM-WAE (rows 3-4: reconstructions)")
    vmetrics, vmodel, _ = train_run(vcfg, out / "gm-wae-elbo-run", init_state=copy.deepcopy(wmodel.state_dict()))
    with torch.no_grad():
        rec1 = vmodel.reconstruct(x)
    F.save_image_grid(torch.cat([x, rec1]), fig_dir / "fig4b_reconstructions_after.png", nrow=10,
                      title=f"Fig. 4b: after {vcfg.train.max_steps} ELBO steps")
    F.training_curves(out / "gm-wae-elbo-run", fig_dir / "fig4c_learning_curves.png", title="Fig. 4c: ELBO terms")
    metrics = {"gm-wae/test/recon_mse": wmetrics["test/recon_mse"],
               "gm-wae-elbo/test/recon_mse": vmetrics["test/recon_mse"],
               "gm-wae/test/acc_paper": wmetrics.get("test/acc_paper"),
               "gm-wae-elbo/test/acc_paper": vmetrics.get("test/acc_paper"),
               "gm-wae-elbo/test/active_components": vmetrics.get("test/active_components")}
    write_json(out / "metrics.json", metrics)
    notes = ["The paper: reconstructions deteriorate after a few hundred ELBO steps because the continuous KL term "
             "dominates the objective (Fig. 4c)."]
    if from_run:
        notes.append(f"GM-WAE: the trained run {from_run} (exp.from), not retrained.")
    finish_report(out, "GM-VAE initialised from GM-WAE (Gaujac, Feige & Barber, Fig. 4)", vcfg, metrics, {}, notes, quick)
    return metrics
