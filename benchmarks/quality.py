"""Quality bars of the issues: train a model for several seeds on mnist-5k, evaluate on the official MNIST test set.

    python benchmarks/quality.py gm-wae --seeds 0 1 2 --set epochs=30 [--set width=0.25 ...]
    python benchmarks/quality.py gmvae  --seeds 0 1 2 --set epochs=30

Prints a Markdown table (one row per seed, then mean ± std) of the clustering and reconstruction metrics and the
wall time, and writes it to ``benchmarks/results/<model>-<tag>.md``; seeds of the same model and tag finished by
earlier invocations (their run directories under ``--out``) are included, so the file always covers them all. Needs ../shared/data/mnist-test (or pass
--test-dir).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KEYS = ["test/acc_paper", "test/acc_makhzani", "test/acc_hungarian", "test/nmi", "test/ari", "test/active_components",
        "test/elbo", "test/recon_mse", "test/mmd_prior"]


def trajectory(run_dirs: list[Path], seeds: list[int]) -> list[str]:
    """A Markdown table step → val/acc_paper / val/acc_makhzani (active components) per seed, from each run's
    metrics.csv."""
    import csv

    per_seed: dict[int, dict[int, str]] = {}
    for seed, run in zip(seeds, run_dirs):
        logs = sorted(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
        vals: dict[int, str] = {}
        for log in logs:
            with open(log, newline="") as f:
                for r in csv.DictReader(f):
                    if r.get("val/acc_paper"):
                        vals[int(r["step"])] = (f"{float(r['val/acc_paper']):.3f} / "
                                                f"{float(r.get('val/acc_makhzani') or 'nan'):.3f} "
                                                f"({int(float(r.get('val/active_components') or 0))})")
        if vals:
            per_seed[seed] = vals
    if not per_seed:
        return []
    steps = sorted({s for v in per_seed.values() for s in v})
    out = ["| step | " + " | ".join(f"seed {s}" for s in per_seed) + " |", "|---" * (len(per_seed) + 1) + "|"]
    for st in steps:
        out.append(f"| {st} | " + " | ".join(v.get(st, "–") for v in per_seed.values()) + " |")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--test-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/mnist-test"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--reuse", action="store_true",
                   help="seeds whose run directory already holds metrics.json are read, not retrained (so seeds can "
                        "be trained by parallel invocations and tabulated together)")
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        out = Path(a.out) / f"{a.model}-{a.tag}-s{seed}"
        cmd = [sys.executable, "-m", "wae.cli", "train", a.model, "--dataset", a.dataset, "--eval-dataset", "mnist:test",
               "--eval-data-dir", a.test_dir, "--seed", str(seed), "--out", str(out), "--quiet"]
        for s in a.set:
            cmd += ["--set", s]
        if a.reuse and (out / "metrics.json").exists() and (out / "wall_s.txt").exists():
            m = json.loads((out / "metrics.json").read_text())
            m["wall_s"] = float((out / "wall_s.txt").read_text())
        else:
            t = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:])
                sys.exit(r.returncode)
            m = json.loads((out / "metrics.json").read_text())
            m["wall_s"] = time.time() - t
            (out / "wall_s.txt").write_text(f"{m['wall_s']:.1f}\n")
        rows.append((seed, m))
        print(f"seed {seed}: " + "  ".join(f"{k.split('/')[-1]}={m.get(k, float('nan')):.4g}" for k in KEYS), flush=True)
    # The results file covers every finished seed of this model and tag, not only this invocation's: a later
    # single-seed run adds its row instead of replacing the table.
    for run in sorted(Path(a.out).glob(f"{a.model}-{a.tag}-s*")):
        tail = run.name[len(f"{a.model}-{a.tag}-s"):]
        if tail.isdigit() and int(tail) not in a.seeds and (run / "metrics.json").exists() \
                and (run / "wall_s.txt").exists():
            m = json.loads((run / "metrics.json").read_text())
            m["wall_s"] = float((run / "wall_s.txt").read_text())
            rows.append((int(tail), m))
            print(f"seed {tail}: finished earlier ({run}), added to the table", flush=True)
    rows.sort(key=lambda r: r[0])
    a.seeds = [seed for seed, _ in rows]
    keys = [k for k in KEYS if k in rows[0][1]] + ["wall_s"]
    lines = [f"`{' '.join(['python benchmarks/quality.py', a.model, '--seeds', *map(str, a.seeds), *sum([['--set', s] for s in a.set], [])])}`", "",
             "| seed | " + " | ".join(k.replace("test/", "") for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for seed, m in rows:
        lines.append(f"| {seed} | " + " | ".join(f"{m.get(k, float('nan')):.4g}" for k in keys) + " |")
    mean = [np.mean([m.get(k, np.nan) for _, m in rows]) for k in keys]
    std = [np.std([m.get(k, np.nan) for _, m in rows]) for k in keys]
    lines.append("| mean ± std | " + " | ".join(f"{u:.4g} ± {s:.2g}" for u, s in zip(mean, std)) + " |")
    traj = trajectory([Path(a.out) / f"{a.model}-{a.tag}-s{seed}" for seed, _ in rows], [seed for seed, _ in rows])
    if traj:
        lines += ["", "Held-out accuracy during training (`--set eval_every_epochs=E`: the first 2,000 evaluation "
                  "images; acc_paper / acc_makhzani (active components)):", "", *traj]
    text = "\n".join(lines)
    print(text)
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"{a.model}-{a.tag}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
