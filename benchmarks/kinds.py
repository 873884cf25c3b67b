"""The kinds of benchmark rows ``benchmarks/run.py`` runs: ``KINDS[name]`` says, for one (row, seed), the command to
run (``None``: run in process by ``collect``) and how to read its metrics afterwards.

* ``quality``: ``wae train MODEL --dataset DATA --seed S`` (``split: val`` adds ``data.evaluate_test=false``: the
  test set is not read), optionally then ``wae evaluate RUN …``; the run's ``metrics.json`` and its held-out curve.
* ``reproduce``: ``wae reproduce NAME --seed S [--quick]``; its ``metrics.json``.
* ``cluster``: ``wae cluster DATA --k K --seed S``; its ``metrics.json`` (the model, k-means and UMAP → GMM on the
  same inputs).
* ``digits``: :class:`wae.GMWAEClustering` on scikit-learn's 8×8 digits as images or vectors; ``split`` val (fit
  part → validation part), test (development part → held-out test part) or all (fit and score all 1,797), beside
  k-means and UMAP → GMM on the same split.
* ``stacked``: a StackedWAE or its ``wae-deep`` ablation, trained and scored on samples (W2, domain FID, precision,
  recall, top-layer MMD).
* ``sampling``: per-cluster samples of trained runs (GM-WAE's own components, or WAE + a GMM fitted to its codes),
  or UMAP → GMM on their test digits.
* ``throughput``: one training step's milliseconds (``benchmarks/throughput.py``).
* ``large``: ``benchmarks/large_collection.py`` (a large collection streamed from disk).
* ``command``: any shell command under ``/usr/bin/time -v``: peak RSS, wall and CPU seconds.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEST_DIR = str(ROOT.parent / "shared" / "data" / "mnist-test")
WAE = [sys.executable, "-m", "wae.cli"]


@dataclass(frozen=True)
class Kind:
    keys: tuple[str, ...]                               # row keys beyond run.COMMON
    command: Callable[[dict, int, Path], list | None]   # (row, seed, run dir) → argv, or None: in process
    collect: Callable[[dict, int, Path], dict]          # (row, seed, run dir) → metrics of that seed
    metric: Callable[[dict], str | None]                # the key that names the worst seed


def numeric(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sets(row: dict) -> list[str]:
    return [a for s in row.get("set") or [] for a in ("--set", s)]


def check(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")


# ---- quality: wae train over seeds --------------------------------------------------------------------------------

def quality_command(row, seed, run):
    cmd = [*WAE, "train", row["model"], "--dataset", row.get("data", "mnist-5k"), "--seed", str(seed), "--out",
           str(run), "--quiet", "--overwrite", *(["--preset", row["preset"]] if row.get("preset") else []), *sets(row)]
    if row.get("split", "test") == "val":
        cmd += ["--set", "data.evaluate_test=false"]
    return cmd + [str(a) for a in row.get("train_args") or []]


def curve(run: Path, split: str, metric: str) -> dict[str, str]:
    """step → held-out ``metric`` (active components), from the run's metrics.csv."""
    logs = sorted(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    vals = {}
    for log in logs:
        with open(log, newline="") as f:
            for r in csv.DictReader(f):
                if r.get(f"{split}/{metric}"):
                    vals[r["step"]] = (f"{float(r[f'{split}/{metric}']):.3f} "
                                       f"({int(float(r.get(f'{split}/active_components') or 0))})")
    return vals


def quality_collect(row, seed, run):
    if row.get("evaluate"):
        check([*WAE, "evaluate", str(run), *[str(a) for a in row["evaluate"]]])
    m = numeric(json.loads((run / "metrics.json").read_text()))
    split = row.get("split", "test")
    c = curve(run, split, quality_metric(row).split("/", 1)[-1])
    return {**m, **({"curve": c} if c else {})}


def quality_metric(row):
    split = row.get("split", "test")
    return row.get("metric") or f"{split}/{'acc_makhzani' if row['model'] == 'gmvae' else 'acc_hungarian'}"


# ---- reproduce, cluster, command: other CLI commands ---------------------------------------------------------------

def reproduce_command(row, seed, run):
    return [*WAE, "reproduce", row["experiment"], "--seed", str(seed), "--out", str(run), "--quiet",
            *(["--quick"] if row.get("quick") else []), *sets(row)]


def metrics_json(row, seed, run):
    return {k: v for k, v in numeric(json.loads((run / "metrics.json").read_text())).items()
            if not k.startswith(("size/", "confidence/"))}


def cluster_command(row, seed, run):
    cmd = [*WAE, "cluster", row["data"], "--seed", str(seed), "--out", str(run), "--quiet", *sets(row)]
    for key, flag in (("k", "--k"), ("preset", "--preset"), ("max_steps", "--max-steps"),
                      ("max_minutes", "--max-minutes")):
        if row.get(key) is not None:
            cmd += [flag, str(row[key])]
    return cmd


def shell_command(row, seed, run):
    env = " ".join(f"{k}={v}" for k, v in (row.get("env") or {}).items())
    inner = (f"export {env}; " if env else "") + row["command"].format(run=run, seed=seed)
    return ["bash", "-c", f"mkdir -p {shlex.quote(str(run))} && exec /usr/bin/time -v -o "
            f"{shlex.quote(str(run / 'time.txt'))} bash -c {shlex.quote(inner)}"]


def shell_collect(row, seed, run):
    """Peak RSS (MiB), wall seconds, CPU seconds (user + sys) and the CPU share from ``time -v``."""
    t = (run / "time.txt").read_text()

    def grab(label):
        return re.search(rf"{re.escape(label)}: (.+)", t).group(1).strip()

    wall = 0.0
    for part in grab("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    return {"peak_rss_mib": int(grab("Maximum resident set size (kbytes)")) / 1024, "time_wall_s": wall,
            "cpu_s": float(grab("User time (seconds)")) + float(grab("System time (seconds)")),
            "cpu_share": float(grab("Percent of CPU this job got").rstrip("%"))}


# ---- digits: GMWAEClustering on scikit-learn's digits --------------------------------------------------------------

TUNING_SEEDS = {100, 101, 102, 103, 104}


def digit_splits(seed: int = 0):
    """(X_fit, y_fit, X_val, y_val, X_test, y_test): 64 % / 16 % / 20 % of the digits (split once, seed 0)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(X))
    n_test = round(0.2 * len(X))
    test, dev = perm[:n_test], perm[n_test:]
    n_val = round(0.2 * len(dev))
    val, fit = dev[:n_val], dev[n_val:]
    return X[fit], y[fit], X[val], y[val], X[test], y[test]


def digits_collect(row, seed, run):
    """One fit: validation (fit part → validation part), test (development part → test part) or all (all 1,797
    digits, scored on the fit's own ``labels_``); k-means (10 clusters, same data and seed) and UMAP → GMM (on the
    scored digits as the estimator scales them) beside it."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    from sklearn.metrics import silhouette_score

    from wae import GMWAEClustering
    from wae.evaluation.baselines import umap_gmm_scores
    from wae.evaluation.clustering import ari, hungarian_accuracy, nmi

    split = row.get("split", "val")
    if split != "val" and seed in TUNING_SEEDS:
        raise SystemExit(f"{row['name']}: seeds 100–104 are the tuning seeds; report on others")
    Xf, yf, Xv, yv, Xt, yt = digit_splits()
    if split == "all":
        X_train, y_eval = load_digits(return_X_y=True)
        X_eval = X_train
    elif split == "test":
        X_train, X_eval, y_eval = np.concatenate([Xf, Xv]), Xt, yt
    else:
        X_train, X_eval, y_eval = Xf, Xv, yv

    def shaped(X):
        return X.reshape(-1, 8, 8) if row["digits"] == "images" else X

    t0 = time.time()
    k = int(row.get("k", 10))
    est = GMWAEClustering(k, random_state=seed, overrides=row.get("set") or None, max_steps=row.get("max_steps"),
                          max_minutes=row.get("max_minutes"), scaling=row.get("scaling", "auto")).fit(shaped(X_train))
    wall = time.time() - t0
    pred = est.labels_ if split == "all" else est.predict(shaped(X_eval))
    km = KMeans(k, n_init=10, random_state=seed).fit(X_train).predict(X_eval)
    xm = est._model_x(shaped(X_eval))
    um = umap_gmm_scores(xm, y_eval, k, seed=seed)
    flat = np.asarray(xm).reshape(len(xm), -1)
    sil = silhouette_score(flat, pred) if len(np.unique(pred)) > 1 else math.nan  # `wae cluster`'s K criterion
    return {"acc": hungarian_accuracy(pred, y_eval)[0], "nmi": nmi(pred, y_eval), "ari": ari(pred, y_eval),
            "used": len(np.unique(pred)), "steps": est.n_iter_, "wall": wall,
            "km_acc": hungarian_accuracy(km, y_eval)[0], "score": est.score(shaped(X_eval)),
            "um_acc": um.get("umap_gmm_acc_hungarian", math.nan), "um_nmi": um.get("umap_gmm_nmi", math.nan),
            "um_wall": um.get("umap_gmm_seconds", math.nan), "silhouette": sil}


# ---- stacked: StackedWAE against its ablation, scored on samples --------------------------------------------------

def generative_noise(model, n: int = 2000) -> float:
    """Mean std of p(z_1 | z_2) over the mean std of z_1 across ancestral samples (0: samples are a deterministic
    function of the top latent; Eq. 10's squared cost drives the generative covariances there)."""
    import torch

    model.eval()
    with torch.no_grad():
        chain = model.prior_chain(n)
        _, logvar = model.p_params(2, chain[1])
        return float((0.5 * logvar).exp().mean() / chain[0].std(0).mean())


def top_mmd_draws(model, eval_ds, n: int = 2000, draws: int = 5) -> tuple[float, float]:
    """MMD between one encoded top latent per test image and as many N(0, I) draws (the model's IMQ kernel) on
    ``draws`` disjoint subsets of n test images: mean and std (``test/mmd`` averages far noisier batches of 100)."""
    import torch

    from wae.divergences import mmd

    model.eval()
    vals = []
    with torch.no_grad(), torch.random.fork_rng():
        for d in range(min(draws, len(eval_ds.x) // n)):
            torch.manual_seed(d)
            z = model.encode_chain(eval_ds.x[d * n:(d + 1) * n])[0][-1]
            vals.append(float(mmd(z, model.prior.sample((len(z),)), model.kernel)))
    return float(np.mean(vals)), float(np.std(vals))


def classifier_confidence(model, train_ds, n: int) -> float:
    """Mean top-class probability the domain classifier gives to n samples (sharpness / legibility of digits)."""
    import torch

    from wae.evaluation.classifier import get_domain_classifier

    clf, _ = get_domain_classifier(getattr(train_ds, "name", None), train_ds)
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.cat([model.sample(min(500, n - i)) for i in range(0, n, 500)])
    return float(clf.predict_proba(x).max(1).values.mean())


def stacked_collect(row, seed, run):
    from wae.evaluation.sample_quality import sample_quality_metrics, w2_samples
    from wae.experiments.common import base_config
    from wae.training.run import load_data_for, train

    model, n = row["model"], int(row.get("n", 2000))
    over = [f"data.dataset={row.get('data', 'mnist-5k')}", "data.eval_dataset=mnist:test",
            f"data.eval_data_dir={row.get('test_dir', TEST_DIR)}", f"seed={seed}", "checkpoint_every_minutes=0",
            "train.figures=false", *row.get("set", [])]
    cfg = base_config(model, row.get("preset") or f"{model}-mnist", over)
    cfg.train.progress = False
    if row.get("reuse") and (run / "metrics.json").exists() and (run / "model.safetensors").exists():
        from wae.io import load_model

        metrics, m = json.loads((run / "metrics.json").read_text()), load_model(run)
        wall = float((run / "wall_s.txt").read_text()) if (run / "wall_s.txt").exists() else math.nan
    else:
        t = time.time()
        metrics, m = train(cfg, run, quiet=True, return_model=True)
        wall = time.time() - t
        (run / "wall_s.txt").write_text(f"{wall:.1f}\n")
    data = load_data_for(cfg)
    train_ds, eval_ds = data.train, data.held_out[1]
    out = {"train_s": wall, **{k: v for k, v in numeric(metrics).items() if k.startswith("test/")}}
    out["test/w2_samples"] = w2_samples(m, eval_ds, n=n)
    out["gen_noise_z1"] = generative_noise(m, n)
    out["top_mmd_draws"], out["top_mmd_draws_sd"] = top_mmd_draws(m, eval_ds)
    out.update(sample_quality_metrics(m, eval_ds, train_ds, n=n, metrics=["fid_domain", "pr_domain"]))
    # the estimate's own spread: FID with other sample draws and other held-out subsets (seeds 1, 2)
    fids = [out["test/fid_domain"]] + [sample_quality_metrics(m, eval_ds, train_ds, n=n, metrics=["fid_domain"],
                                                              seed=s)["test/fid_domain"] for s in (1, 2)]
    out["fid_draws"], out["fid_draws_sd"] = float(np.mean(fids)), float(np.std(fids))
    out["confidence"] = classifier_confidence(m, train_ds, n)
    return numeric(out)


# ---- sampling: per-cluster samples of trained runs ------------------------------------------------------------------

def sampling_collect(row, seed, run_dir, n: int = 2000, per: int = 200):
    """For the trained run ``row['runs'].format(seed=seed)``, on its test split, with its data set's domain
    classifier: clustering of the test digits (GM-WAE: q(k|x); ``sampler: gmm``: a GMM fitted to the training
    codes, p(k | code); ``sampler: umap_gmm``: UMAP → GMM on the test digits' pixels), per-component sample purity
    and classes drawn (``per`` samples per component), and domain FID, precision and recall of n samples."""
    import torch

    import wae
    from wae.data import load_dataset
    from wae.evaluation.baselines import umap_gmm_scores
    from wae.evaluation.classifier import get_domain_classifier
    from wae.evaluation.clustering import hungarian_accuracy, nmi
    from wae.evaluation.distances import fid_from_features, precision_recall
    from wae.presets import load_run_config
    from wae.samplers import GaussianMixtureSampler, draw, encode_all
    from wae.training.run import load_data_for

    run = Path(row["runs"].format(seed=seed))
    sampler, components = row.get("sampler", "prior"), int(row.get("components", 10))
    cfg = load_run_config(run / "config.yaml")
    data = load_data_for(cfg, need_test=True)  # the test split, also for runs tuned without it
    test = data.test
    if sampler == "umap_gmm":
        return numeric(umap_gmm_scores(test.x, test.y, components, seed=seed))
    model = wae.load(run)
    clf, _ = get_domain_classifier(cfg.data.dataset, load_dataset(cfg.data.dataset, "train"))
    state = {}
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if sampler == "gmm":
            state["gmm"] = gmm = GaussianMixtureSampler.fit(encode_all(model, data.train.x), components, seed=0)
            probs = torch.cat([gmm.predict_proba(encode_all(model, test.x[i:i + 1000]))
                               for i in range(0, len(test), 1000)])
            K = components
        else:
            probs = torch.cat([model.cluster_probs(test.x[i:i + 1000]) for i in range(0, len(test), 1000)])
            K = model.num_components
        assign, y = probs.argmax(1).numpy(), test.y.numpy()
        out = {"acc_hungarian": hungarian_accuracy(assign, y)[0], "nmi": nmi(assign, y)}
        purity, majority = [], []
        for k in range(K):
            pred = torch.as_tensor(clf.predict_proba(draw(sampler, model, per, component=k, generator=g, **state)))
            counts = torch.bincount(pred.argmax(1), minlength=10)
            purity.append(float(counts.max()) / per)
            majority.append(int(counts.argmax()))
        out["purity"], out["classes_drawn"] = float(np.mean(purity)), len(set(majority))
        samples = torch.cat([draw(sampler, model, 500, generator=g, **state) for _ in range(n // 500)])
        real = test.x[torch.randperm(len(test), generator=g)[:n]]
        fs, fr = clf.features(samples), clf.features(real)
        out["fid_domain"] = fid_from_features(fs, fr)
        out["precision"], out["recall"] = precision_recall(fr, fs, k=3)
    return numeric(out)


# ---- throughput and the large collection: benchmarks/throughput.py, benchmarks/large_collection.py ----------------

def throughput_collect(row, seed, run):
    import throughput

    import torch

    torch.manual_seed(seed)
    mode, width, batch = row.get("mode", "step"), float(row.get("width", 0.25)), int(row.get("batch", 100))
    repeats = int(row.get("repeats", 10))
    if mode == "step":
        return throughput.step_times(row["model"], batch, width, repeats)
    if mode == "gm_vs_wae":
        return throughput.gm_vs_wae(batch, width, repeats)
    if mode == "pythae":
        return throughput.pythae_comparison(batch, width, repeats) or {}
    if mode == "pythae_trainer":
        return throughput.pythae_trainer_comparison(batch, width, int(row.get("epochs", 3))) or {}
    if mode == "loop_overhead":
        return throughput.loop_overhead(width, batch)
    raise SystemExit(f"{row['name']}: throughput mode {mode!r} is not one of step, gm_vs_wae, pythae, "
                     "pythae_trainer, loop_overhead")


def large_command(row, seed, run):
    args = [sys.executable, str(HERE / "large_collection.py"), "--out", str(run), "--json", str(run / "row.json")]
    for key in ("file", "n", "steps", "warmup", "batch_size", "encode_n", "width", "devices", "accelerator"):
        if row.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(row[key])]
    env = [f"{k}={v}" for k, v in (row.get("env") or {}).items()]
    return ["env", *env, *args] if env else args


def large_collect(row, seed, run):
    return numeric(json.loads((run / "row.json").read_text()))


def _none(row, seed, run):
    return None


def _fixed(key: str | None):
    return lambda row: row.get("metric") or key


KINDS: dict[str, Kind] = {
    "quality": Kind(("train_args", "evaluate"), quality_command, quality_collect, quality_metric),
    "reproduce": Kind(("experiment", "quick"), reproduce_command, metrics_json, _fixed(None)),
    "cluster": Kind(("k", "max_steps", "max_minutes"), cluster_command, metrics_json, _fixed("acc_hungarian")),
    "digits": Kind(("digits", "k", "max_steps", "max_minutes", "scaling"), _none, digits_collect, _fixed("acc")),
    "stacked": Kind(("n", "test_dir", "reuse"), _none, stacked_collect, _fixed(None)),
    "sampling": Kind(("runs", "sampler", "components"), _none, sampling_collect, _fixed("acc_hungarian")),
    "throughput": Kind(("mode", "width", "batch", "repeats", "epochs"), _none, throughput_collect, _fixed(None)),
    "large": Kind(("file", "n", "steps", "warmup", "batch_size", "encode_n", "width", "devices", "accelerator",
                   "env"), large_command, large_collect, _fixed(None)),
    "command": Kind(("command", "env"), shell_command, shell_collect, _fixed(None)),
}
