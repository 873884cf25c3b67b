"""``wae cluster DATA --k K --out R``: cluster your own data with :class:`~wae.estimator.GMWAEClustering`.

DATA is ``npz:FILE`` (key ``x``, optional ``y``), ``npy:FILE``, ``folder:DIR`` (images; class sub-folders give
labels), ``csv:FILE`` (a CSV/TSV table of numbers, see :mod:`wae.data.tabular`), a path to such a file or directory,
or a data set name (``wae datasets``). Data too large to hold in memory stay on disk and are read in batches
(:mod:`wae.data.source`). R receives, all at once (written into a temporary directory beside R and renamed, so a
failure leaves R as it was):

* ``assignments.csv`` (``--format parquet``: ``assignments.parquet``), written in chunks as the data are assigned —
  one row per example: ``id`` (the row number, or the file path for a folder), ``cluster``, ``confidence``
  (max_k q(k|x)), ``p_0`` … ``p_{K−1}`` (q(k|x)), and ``label`` when the data have labels;
* the model — ``model.safetensors`` + ``model.yaml`` (``wae.load(R)``, ``wae sample R --component k``),
  ``config.yaml``, ``estimator.yaml`` + ``estimator.safetensors`` (``GMWAEClustering.load(R)``);
* ``report.html`` (self-contained) and ``figures/``: per cluster the decoded mode, the real members closest to the
  mode, the least confident members and samples drawn from the cluster; the cluster sizes; with labels, accuracy
  (Hungarian), NMI and ARI beside k-means and UMAP → Gaussian mixture on the same inputs as the model (its scaled
  data; seconds each; :mod:`wae.evaluation.baselines`) and the class × cluster heat map; after a sweep, the criterion
  against K;
* ``metrics.json`` — the numbers of the page.

Memory: beyond the data (none of it when streamed) and the model, a pass keeps 8 bytes per example (its cluster).
Sizes, confidences, label agreement and the class × cluster map cover every example; the figures and their members
use at most :data:`SAMPLE` examples (a random sample beyond), and so do, for streamed data, the k-means baseline and
the sweep's held-out part; the page says what was sampled.

Without ``--k``, K is chosen by a sweep over ``--k-range``: for each K the estimator is fitted on 80 % of the data
and the other 20 % are assigned; the K whose held-out assignments have the highest silhouette (Rousseeuw 1987;
Euclidean, in the model's scaled input space — a criterion of the partition alone, comparable across K, no labels)
is then fitted on all the data (so a sweep costs one fit per K, plus one). The page also shows, per K, the held-out
``score`` (the opposite of the GM-WAE objective; not comparable across K) and the mean confidence. On sklearn's
digits (validation part, K = 6…14) the silhouette peaked at the true K = 10 where the held-out score did not
(benchmarks/README.md).

Bad input — images under 4 pixels a side, NaN or infinite values, a folder of images of different sizes (without
``--size``) or with images both at the top level and in class folders, a CSV with text columns, fewer examples than
clusters — ends in one line (:class:`~wae.errors.WAEError`; exit code 2) before anything is written.

This module runs the sweep and the passes; the data are read by :mod:`wae.data.user`, the figures drawn by
:mod:`wae.plots.clusters` and the page written by :func:`wae.reports.write_cluster_report`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Dataset
from .data.user import load_cluster_data
from .errors import DataError, WAEError
from .estimator import GMWAEClustering
from .evaluation.baselines import kmeans_baseline, umap_gmm_scores
from .evaluation.clustering import ari, hungarian_accuracy, nmi
from .files import TABLE_FORMATS, TableWriter, parquet_available, write_json
from .plots import heatmap
from .plots.clusters import gallery_figure, profile_figure, sizes_figure, sweep_figure
from .presets import cluster_preset
from .reports import write_cluster_report

__all__ = ["ClusterResult", "run_cluster", "load_cluster_data", "parse_k_range", "sweep_criterion"]

SWEEP_VAL_FRACTION = 0.2


@dataclass
class ClusterResult:
    """What ``wae cluster`` computed (and wrote into ``out``): ``assign`` of every example, ``probs`` (q(k|x)) of the
    examples the figures use (all of them up to :data:`SAMPLE`)."""

    out: Path
    k: int
    assign: np.ndarray
    probs: np.ndarray
    metrics: dict
    sweep: list[dict] = field(default_factory=list)


# --- the sweep ---------------------------------------------------------------------------------------------------


def parse_k_range(text: str) -> list[int]:
    """``"LO:HI"`` or ``"LO:HI:STEP"`` → the Ks of the sweep (inclusive), each ≥ 2 (a silhouette needs two
    clusters)."""
    try:
        parts = [int(v) for v in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or parts[0] < 2 or parts[1] < parts[0] or (len(parts) == 3 and parts[2] < 1):
        raise WAEError(f"--k-range must be LO:HI or LO:HI:STEP with 2 ≤ LO ≤ HI, got {text!r}")
    ks = list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))
    if len(ks) < 2:
        raise WAEError(f"--k-range {text!r} holds one K; pass --k {ks[0]} instead")
    return ks


def sweep_criterion(est: GMWAEClustering, x_val: np.ndarray, seed: int = 0) -> dict:
    """Label-free numbers of a fitted estimator on held-out data: ``silhouette`` of its assignments (Euclidean, in the
    model's scaled input space, on at most 2,000 points; −1 when fewer than two clusters are used; what the sweep
    maximises), ``score`` (:meth:`GMWAEClustering.score`), ``confidence`` (mean max_k q(k|x)) and ``used``
    (clusters that receive held-out examples)."""
    from sklearn.metrics import silhouette_score

    probs = est.predict_proba(x_val)
    assign = probs.argmax(1)
    used = int(len(np.unique(assign)))
    feats = est._model_x(x_val).flatten(1).numpy()
    sil = float(silhouette_score(feats, assign, sample_size=min(2000, len(assign)), random_state=seed)) \
        if 1 < used < len(assign) else -1.0
    return {"silhouette": sil, "score": float(est.score(x_val)), "confidence": float(probs.max(1).mean()),
            "used": used}


def _split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = max(2, int(round(fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


# --- the command -------------------------------------------------------------------------------------------------


def _prepare_out(out: Path) -> Path:
    """Refuse an ``out`` that is a file or a non-empty directory not written by ``wae cluster``; return a fresh
    temporary directory beside it (same file system, so the final rename is atomic)."""
    if out.exists() and not out.is_dir():
        raise WAEError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not any((out / f"assignments.{f}").exists() for f in TABLE_FORMATS):
        raise WAEError(f"--out {out} exists and was not written by `wae cluster`; pick another directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise become R's mode
        return tmp
    except OSError as e:
        raise WAEError(f"cannot write to {out.parent}: {e.strerror or e}") from None


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` into place as ``out`` (replacing an earlier ``wae cluster`` output)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


SAMPLE = 20_000
"""Examples the figures, the report's members and (for data streamed from disk) the k-means baseline and the
sweep's held-out part use: all of them up to this many, else a random sample of this many."""


@dataclass
class _Pass:
    """What one streaming pass over the data keeps: per-cluster counts and confidence sums, the assignments (8 bytes
    per example), the class × cluster sums of q(k|x), and q(k|x) of the sampled examples."""

    sizes: np.ndarray
    conf_sum: np.ndarray
    assign: np.ndarray
    class_sums: np.ndarray | None
    sample_idx: np.ndarray
    sample_probs: np.ndarray


def _stream_assignments(est: GMWAEClustering, X, n: int, k: int, ids: list[str] | None, y: np.ndarray | None,
                        path: Path, fmt: str, sample_idx: np.ndarray) -> _Pass:
    """Write ``path`` (CSV or Parquet) chunk by chunk from :meth:`GMWAEClustering.proba_chunks` — one row per
    example: ``id``, ``cluster``, ``confidence``, ``p_0`` … ``p_{K−1}``, ``label`` — keeping only :class:`_Pass`."""
    header = ["id", "cluster", "confidence", *(f"p_{j}" for j in range(k))] + (["label"] if y is not None else [])
    sizes, conf_sum = np.zeros(k, dtype=np.int64), np.zeros(k)
    assign = np.empty(n, dtype=np.int64)
    class_sums = np.zeros((int(y.max()) + 1, k)) if y is not None else None
    sample_probs = np.empty((len(sample_idx), k))
    i = 0
    with TableWriter(path, header, fmt, lineterminator="\r\n") as w:
        for p in est.proba_chunks(X):
            j = i + len(p)
            a, c = p.argmax(1), p.max(1)
            cols = [ids[i:j] if ids is not None else np.arange(i, j).astype(str), a, c, *p.T]
            if y is not None:
                cols.append(y[i:j])
                np.add.at(class_sums, y[i:j], p)
            w.write(cols)
            assign[i:j] = a
            sizes += np.bincount(a, minlength=k)
            conf_sum += np.bincount(a, weights=c, minlength=k)
            lo, hi = np.searchsorted(sample_idx, [i, j])
            sample_probs[lo:hi] = p[sample_idx[lo:hi] - i]
            i = j
    return _Pass(sizes, conf_sum, assign, class_sums, sample_idx, sample_probs)


def _sample_idx(n: int, seed: int) -> np.ndarray:
    """All examples up to :data:`SAMPLE`, else a random sample of that many (sorted)."""
    if n <= SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, SAMPLE, replace=False))


def _rows(ds: Dataset, x: np.ndarray | None, idx: np.ndarray):
    """Examples ``idx`` as the estimator takes them: an array (in memory) or a view of the streamed data set."""
    return x[idx] if x is not None else ds._take(torch.from_numpy(idx))


def run_cluster(data: str, out: str | Path, k: int | None = None, k_range: str = "2:12", data_dir: str | None = None,
                size: str | None = None, max_steps: int | None = None, max_minutes: float | None = None,
                seed: int = 0, preset: str | None = None, sets: list[str] | None = None, device: str = "auto",
                quiet: bool = False, fmt: str = "csv") -> ClusterResult:
    """The whole of ``wae cluster`` (see the module doc). Everything is validated before anything is written."""
    out = Path(out)
    say = (lambda *a: None) if quiet else print
    if k is not None and k < 1:
        raise WAEError(f"--k must be >= 1, got {k}")
    ks = [k] if k is not None else parse_k_range(k_range)
    if max_steps is not None and max_steps < 1:
        raise WAEError(f"--max-steps must be >= 1, got {max_steps}")
    if max_minutes is not None and not (max_minutes > 0 and math.isfinite(max_minutes)):
        raise WAEError(f"--max-minutes must be a finite number > 0, got {max_minutes}")
    if fmt not in TABLE_FORMATS:
        raise WAEError(f"--format must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and not parquet_available():
        raise WAEError("--format parquet needs pyarrow (pip install pyarrow); or use --format csv")
    ds, ids, name = load_cluster_data(data, data_dir, size)
    n = len(ds)
    need = max(ks) if k is not None else math.ceil(max(ks) / (1 - SWEEP_VAL_FRACTION))
    if n < max(2, need):
        raise DataError(f"{name} has {n} example{'s' if n != 1 else ''}, fewer than "
                        + (f"the {k} clusters asked for" if k is not None else
                           f"the sweep needs for K up to {max(ks)} (at least {need})"))
    streamed = ds.streamed
    x = None if streamed else ds.x.numpy()  # streamed data: the estimator reads the data set in batches
    X = ds if streamed else x
    layout = "nchw" if ds.is_image else "auto"

    def make(kk: int, s: int) -> GMWAEClustering:
        return GMWAEClustering(kk, preset=preset, max_steps=max_steps, max_minutes=max_minutes, layout=layout,
                               overrides=list(sets or []) or None, random_state=s, device=device, verbose=not quiet)

    make(ks[0], seed).run_config(tuple(ds.shape), n, seed)  # refuse a bad --preset / --set before any training
    tmp = _prepare_out(out)
    try:
        sweep: list[dict] = []
        if k is None:
            fit_idx, val_idx = _split(n, SWEEP_VAL_FRACTION, seed)
            if streamed and len(val_idx) > SAMPLE:  # the held-out part is scored on a bounded sample
                val_idx = np.sort(np.random.default_rng(seed).choice(val_idx, SAMPLE, replace=False))
            for kk in ks:
                t0 = time.time()
                est = make(kk, seed).fit(_rows(ds, x, fit_idx))
                row = {"k": kk, **sweep_criterion(est, _rows(ds, x, val_idx), seed), "steps": est.n_iter_,
                       "seconds": time.time() - t0}
                sweep.append(row)
                say(f"sweep K={kk}: held-out silhouette {row['silhouette']:.4f}, score {row['score']:.4g}, "
                    f"confidence {row['confidence']:.3f}, {row['used']} clusters used ({row['seconds']:.0f} s)")
            k = max(sweep, key=lambda r: r["silhouette"])["k"]
            say(f"chosen K={k} (highest held-out silhouette)")
        t0 = time.time()
        est = make(k, seed)
        est = est._fit_dataset(ds, labels=False) if streamed else est.fit(x)
        wall = time.time() - t0
        for note in est.input_notes_:
            say(f"note: {note}")
        y = ds.y.numpy() if ds.y is not None else None
        t1 = time.time()
        sample_idx = _sample_idx(n, seed)
        res = _stream_assignments(est, X, n, k, ids, y, tmp / f"assignments.{fmt}", fmt, sample_idx)
        assign_seconds = time.time() - t1
        est.labels_ = res.assign
        sizes = res.sizes
        mean_conf = float(res.conf_sum.sum() / n)
        metrics: dict = {"data": name, "examples": n, "clusters": k, "steps": est.n_iter_,
                         "steps_kept_run": est.n_iter_kept_, "clock_stopped": est.clock_stopped_, "fit_seconds": wall,
                         "assign_seconds": assign_seconds, "mean_confidence": mean_conf,
                         "clusters_used": int((sizes > 0).sum())}
        metrics.update({f"size/{j}": int(sizes[j]) for j in range(k)})
        metrics.update({f"confidence/{j}": float(res.conf_sum[j] / sizes[j]) for j in range(k) if sizes[j]})
        sampled = len(sample_idx) < n
        if sampled:
            metrics["sample_examples"] = len(sample_idx)
        sample = _rows(ds, x, sample_idx) if sampled else X
        xm = est._model_x(sample)  # the model's input (the estimator's scaling applied) of the examples drawn
        if y is not None:
            metrics.update({"acc_hungarian": float(hungarian_accuracy(res.assign, y)[0]),
                            "nmi": float(nmi(res.assign, y)), "ari": float(ari(res.assign, y))})
            # the baselines on the model's input: all of it in memory, the sample of data streamed from disk
            xb, yb = (est._model_x(x), y) if not streamed else (xm, y[sample_idx])
            metrics.update(kmeans_baseline(xb, xb, yb, k, seed=seed, prefix=""))
            say("baseline: UMAP → Gaussian mixture on the same data …")
            metrics.update(umap_gmm_scores(xb, yb, k, seed=seed))
        if sweep:
            metrics["sweep"] = sweep
        if est.starts_:
            metrics["starts"] = est.starts_
        if est.teacher_:
            metrics["teacher"] = est.teacher_
        # everything below is written into tmp, then renamed to out in one step
        est.save(tmp)
        fig_dir = tmp / "figures"
        fig_dir.mkdir()
        figs: dict[str, Path] = {}
        probs = res.sample_probs
        if ds.is_image:
            figs["cluster_gallery"] = gallery_figure(est.model_, xm, probs, fig_dir / "cluster_gallery.png", seed)
        else:
            figs["cluster_profiles"] = profile_figure(est.model_, xm, probs, fig_dir / "cluster_profiles.png", seed)
        figs["cluster_sizes"] = sizes_figure(sizes, fig_dir / "cluster_sizes.png")
        if y is not None:
            counts = np.bincount(y, minlength=len(res.class_sums)).astype(np.float64)
            M = res.class_sums / np.maximum(counts, 1.0)[:, None]
            figs["cluster_heatmap"] = heatmap(M, fig_dir / "cluster_heatmap.png", "cluster k", "class ℓ",
                                                "mean q(k|x) over the examples of class ℓ")
        if sweep:
            figs["k_sweep"] = sweep_figure(sweep, k, fig_dir / "k_sweep.png")
        write_json(tmp / "metrics.json", {key: v for key, v in metrics.items()})
        facts = [("data", f"{name} — {n} examples of shape {tuple(ds.shape)}" + (", with labels" if y is not None
                                                                               else ", no labels")
                  + (" — read from disk in batches (too large to hold in memory)" if streamed else "")),
                 ("clusters", f"K = {k}" + (" (chosen by the sweep below)" if sweep else "")),
                 ("model", f"gm-wae, preset {preset or cluster_preset(tuple(ds.shape))}; {est.n_iter_} optimiser "
                           f"steps ({est.n_iter_kept_} in the kept run, the rest in discarded starts) in {wall:.0f} s"
                           + (" — stopped by the clock (--max-minutes): not reproducible" if est.clock_stopped_
                              else "")),
                 ("mean confidence", f"{mean_conf:.3f} (mean over examples of max_k q(k|x))")]
        if est.starts_:
            s = est.starts_
            facts.append(("starts", f"{s['count']} candidate starts of {s['steps']} steps each, chosen without labels "
                                    f"(restarts.select={s['select']}): kept {s['why']}"))
        if est.teacher_:
            facts.append(("teacher", f"{est.teacher_} (chosen without labels; its shares are the prior's weights, its "
                                     "clusters the pseudo-label targets)"))
        facts += [("input", note) for note in est.input_notes_]
        facts += [("sample", note) for note in _sample_notes(est, n, len(sample_idx), streamed, y is not None,
                                                              bool(sweep))]
        write_cluster_report(tmp, f"wae cluster: {name}", facts, metrics, sizes, figs, sweep, k, est.run_config_.to_yaml())
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}/assignments.{fmt}, {out}/report.html and the model ({k} clusters, sizes "
        f"{', '.join(map(str, sizes.tolist()))})" + (f"; accuracy {metrics['acc_hungarian']:.3f}, NMI "
                                                      f"{metrics['nmi']:.3f}" if "acc_hungarian" in metrics else ""))
    return ClusterResult(out, k, res.assign, res.sample_probs, metrics, sweep)


def _sample_notes(est: GMWAEClustering, n: int, m: int, streamed: bool, labels: bool, swept: bool) -> list[str]:
    """What ran on a bounded sample rather than on all ``n`` examples, in words (nothing when all were used)."""
    from .training.run import ENSEMBLE_SAMPLE, REFIT_SAMPLE

    out = []
    if m < n:
        out.append(f"the figures and the members shown per cluster come from a random sample of {m:,} of the {n:,} "
                   f"examples" + ("; so do the k-means and UMAP baselines" if streamed and labels else ""))
    if streamed:
        cfg = est.run_config_
        if getattr(cfg.model_config, "component_refit", False) and n > REFIT_SAMPLE:
            out.append(f"the components were refitted to the codes of a random sample of {REFIT_SAMPLE:,} examples")
        if cfg.train.restarts.count > 1 and cfg.train.restarts.select == "ensemble" and n > ENSEMBLE_SAMPLE:
            out.append(f"the starts' consensus was taken on a random sample of {ENSEMBLE_SAMPLE:,} examples")
        if swept and round(SWEEP_VAL_FRACTION * n) > SAMPLE:
            out.append(f"the sweep scored each K on a random sample of {SAMPLE:,} held-out examples")
    return out


def cluster_command(a) -> int:
    """``wae cluster`` from parsed arguments (see :func:`wae.cli._build_parser`)."""
    run_cluster(a.data, a.out, k=a.k, k_range=a.k_range, data_dir=a.data_dir, size=a.size, max_steps=a.max_steps,
                max_minutes=a.max_minutes, seed=a.seed, preset=a.preset, sets=a.set, device=a.device, quiet=a.quiet,
                fmt=a.format)
    return 0
