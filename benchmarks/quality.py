"""Clustering quality over seeds: train a model on mnist-5k, score it on the validation split or the test set.

    python benchmarks/quality.py gm-wae --tune  --seeds 0 1 2 --tag T [--preset P] [--set k=v ...]   # choose settings
    python benchmarks/quality.py gm-wae --final --seeds 10 11 12 --tag T [--preset P] [--set k=v ...] # report them

The protocol (README, "Reproductions"): settings are chosen on the **validation split** — 500 of the 5,000 training
digits, carved at random with a fixed seed and never trained on (``data.val_fraction``); their labels are read to
compare settings — with ``--tune``, which sets ``data.evaluate_test=false`` so that the test set is never read. The
test set (the official MNIST test set, 10,000 digits, the ``test`` split of ``mnist-5k``) is read once per setting,
with ``--final``, on seeds that were not used for tuning.

Each seed trains ``wae train MODEL --dataset mnist-5k --seed S`` into ``--out/MODEL-TAG-sS``; ``--parallel 2`` runs
two seeds at a time, each pinned to one core (``taskset``, one thread). The table (one row per seed, then mean ±
sample std (ddof = 1) and the worst seed) goes to stdout and to ``benchmarks/results/MODEL-TAG.md``. Seeds of the same
model and tag finished earlier are merged into the table only when their ``config.yaml`` equals this one's apart from
the seed (otherwise the script stops and names the keys that differ).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import wae.models  # noqa: F401  (registers the model configs RunConfig reads)
from wae.config import RunConfig

KEYS = ["acc_hungarian", "acc_paper", "acc_makhzani", "nmi", "ari", "active_components", "component_purity",
        "classes_covered", "recon_mse", "mmd_prior", "kmeans_acc_hungarian", "kmeans_nmi", "umap_gmm_acc_hungarian",
        "umap_gmm_nmi", "umap_gmm_seconds", "elbo"]


def summary(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std with ddof = 1 (nan for one value), minimum)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), float(a.min())


def comparable(cfg: dict) -> dict:
    """A run's config without what may differ between the seeds of one setting; fields added to the configs after
    the run was made read as their defaults (what loading the run gives them)."""
    c = RunConfig.from_dict(json.loads(json.dumps(cfg))).to_dict()
    c.get("train", {}).pop("seed", None)
    c.get("train", {}).pop("progress", None)
    return c


def diff_keys(a: dict, b: dict, where: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{where}{k}.")
        elif va != vb:
            out.append(f"{where}{k}: {va!r} vs {vb!r}")
    return out


def trajectory(runs: list[tuple[int, Path]], split: str = "val", metric: str = "acc_hungarian") -> list[str]:
    """step → held-out ``metric`` (active components) per seed, from each run's metrics.csv."""
    import csv

    per_seed: dict[int, dict[int, str]] = {}
    for seed, run in runs:
        logs = sorted(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
        vals: dict[int, str] = {}
        for log in logs:
            with open(log, newline="") as f:
                for r in csv.DictReader(f):
                    if r.get(f"{split}/{metric}"):
                        vals[int(r["step"])] = (f"{float(r[f'{split}/{metric}']):.3f} "
                                                f"({int(float(r.get(f'{split}/active_components') or 0))})")
        if vals:
            per_seed[seed] = vals
    if not per_seed:
        return []
    steps = sorted({s for v in per_seed.values() for s in v})
    out = ["| step | " + " | ".join(f"seed {s}" for s in per_seed) + " |", "|---" * (len(per_seed) + 1) + "|"]
    for st in steps:
        out.append(f"| {st} | " + " | ".join(v.get(st, "–") for v in per_seed.values()) + " |")
    return out


def launch(cmd: list[str], core: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if core is not None:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tune", action="store_true", help="score on the validation split; never read the test set")
    mode.add_argument("--final", action="store_true", help="score on the test set (seeds not used for tuning)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--preset")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--parallel", type=int, default=1, help="seeds trained at once, one core and one thread each")
    p.add_argument("--metric", help="accuracy that names the worst seed and fills the curves (default: acc_makhzani "
                   "for gmvae, as the paper's Table 1 and over-clustering K > 10 need; acc_hungarian otherwise)")
    p.add_argument("--reuse", action="store_true", help="read seeds whose run directory already holds metrics.json")
    a = p.parse_args()
    split = "val" if a.tune else "test"
    sets = list(a.set) + (["data.evaluate_test=false"] if a.tune else [])
    tag = f"{a.tag}-{'val' if a.tune else 'test'}"
    base = Path(a.out)

    def run_dir(seed: int) -> Path:
        return base / f"{a.model}-{tag}-s{seed}"

    def command(seed: int) -> list[str]:
        cmd = [sys.executable, "-m", "wae.cli", "train", a.model, "--dataset", a.dataset, "--seed", str(seed),
               "--out", str(run_dir(seed)), "--quiet", "--overwrite"]
        if a.preset:
            cmd += ["--preset", a.preset]
        for s in sets:
            cmd += ["--set", s]
        return cmd

    todo = [s for s in a.seeds if not (a.reuse and (run_dir(s) / "metrics.json").exists())]
    running: list[tuple[int, subprocess.Popen, float, int | None]] = []
    cores = list(range(a.parallel)) if a.parallel > 1 else [None]
    while todo or running:
        while todo and len(running) < len(cores):
            free = [c for c in cores if c not in [r[3] for r in running]][0]
            seed = todo.pop(0)
            running.append((seed, launch(command(seed), free), time.time(), free))
        seed, proc, t0, core = running[0]
        out, err = proc.communicate()
        running.pop(0)
        if proc.returncode != 0:
            print(err[-3000:], file=sys.stderr)
            sys.exit(proc.returncode)
        (run_dir(seed) / "wall_s.txt").write_text(f"{time.time() - t0:.1f}\n")
        print(f"seed {seed}: done in {time.time() - t0:.0f} s", flush=True)

    # every finished seed of this model and tag, checked to share this setting
    ref = comparable(yaml.safe_load((run_dir(a.seeds[0]) / "config.yaml").read_text()))
    rows = []
    for run in sorted(base.glob(f"{a.model}-{tag}-s*")):
        tail = run.name[len(f"{a.model}-{tag}-s"):]
        if not tail.isdigit() or not (run / "metrics.json").exists():
            continue
        cfg = comparable(yaml.safe_load((run / "config.yaml").read_text()))
        if cfg != ref:
            sys.exit(f"{run} was trained with another setting; rename it or pick another --tag:\n  "
                     + "\n  ".join(diff_keys(ref, cfg)))
        m = json.loads((run / "metrics.json").read_text())
        wall = run / "wall_s.txt"
        m["wall_s"] = float(wall.read_text()) if wall.exists() else float("nan")
        rows.append((int(tail), run, m))
    rows.sort(key=lambda r: r[0])
    keys = [k for k in KEYS if any(f"{split}/{k}" in m for _, _, m in rows)]
    cols = [f"{split}/{k}" for k in keys] + ["train/steps", "wall_s"]
    what = ("**validation split** (500 of the 5,000 training digits, never trained on; the test set was not read)"
            if a.tune else "**test set** (the official MNIST test set, 10,000 digits)")
    cmdline = " ".join(["python benchmarks/quality.py", a.model, "--tune" if a.tune else "--final", "--seeds",
                        *map(str, [r[0] for r in rows]), "--tag", a.tag, *(["--preset", a.preset] if a.preset else []),
                        *sum([["--set", s] for s in a.set], [])])
    lines = [f"`{cmdline}`", "", f"Scored on the {what}.", "",
             "| seed | " + " | ".join(c.split("/", 1)[-1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for seed, _, m in rows:
        lines.append(f"| {seed} | " + " | ".join(f"{m.get(c, float('nan')):.4g}" for c in cols) + " |")
    stats = [summary([m.get(c, np.nan) for _, _, m in rows]) for c in cols]
    lines.append("| mean ± std (ddof 1) | " + " | ".join(f"{u:.4g} ± {s:.2g}" for u, s, _ in stats) + " |")
    metric = a.metric or ("acc_makhzani" if a.model == "gmvae" else "acc_hungarian")
    acc = f"{split}/{metric}"
    worst = min(rows, key=lambda r: r[2].get(acc, np.inf))  # the whole row of the seed with the lowest accuracy
    lines.append(f"| worst seed ({worst[0]}, by {metric}) | "
                 + " | ".join(f"{worst[2].get(c, float('nan')):.4g}" for c in cols) + " |")
    traj = trajectory([(seed, run) for seed, run, _ in rows], metric=metric)
    if traj:
        lines += ["", f"Validation {metric} during training (active components):", "", *traj]
    text = "\n".join(lines)
    print(text)
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"{a.model}-{tag}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
