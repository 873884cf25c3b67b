"""The WAE paper's central claim, checked: WAE samples are better than the VAE's (Tolstikhin et al. §4).

    python benchmarks/wae_claim.py --seeds 0 1 2 --set model.width=0.25 --set epochs=8

Trains ``wae-mmd``, ``wae-gan`` and ``vae`` with the same networks and budget (their MNIST presets plus the
``--set`` overrides, applied to all three) on ``mnist-5k``, evaluates each run on the official MNIST test set
(``../shared/data/mnist-test``) with ``wae evaluate --n N``: exact W2 between N samples and N test images, domain
FID/KID (the cached domain classifier's test accuracy is printed with them), and reconstruction MSE. Prints a
Markdown table per seed and mean ± std per model, and writes it to ``benchmarks/results/wae-claim-<tag>.md``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("wae-mmd", "wae-gan", "vae")
KEYS = ["test/w2_samples", "test/fid_domain", "test/kid_domain", "test/recon_mse", "test/w2_latent"]


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(" ".join(cmd))
        print(r.stdout[-2000:], r.stderr[-3000:])
        sys.exit(r.returncode)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--test-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/mnist-test"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default="runs/bench/wae-claim")
    a = p.parse_args()
    rows = []
    clf_acc = None
    t_all = time.time()
    for seed in a.seeds:
        for model in a.models.split(","):
            out = Path(a.out) / f"{model}-{a.tag}-s{seed}"
            cmd = [sys.executable, "-m", "wae.cli", "train", model, "--dataset", a.dataset, "--eval-dataset",
                   "mnist:test", "--eval-data-dir", a.test_dir, "--seed", str(seed), "--out", str(out), "--quiet"]
            for s in a.set:
                cmd += ["--set", s]
            t = time.time()
            run(cmd)
            wall = time.time() - t
            run([sys.executable, "-m", "wae.cli", "evaluate", str(out), "--n", str(a.n), "--no-figures",
                 "--metrics", "w2_samples,w2_latent,fid_domain,kid_domain"])
            m = json.loads((out / "metrics.json").read_text())
            m["train_s"] = wall
            clf_acc = m.get("test/domain_classifier_acc", clf_acc)
            rows.append((model, seed, m))
            print(f"{model:8s} seed {seed}: " + "  ".join(f"{k.split('/')[-1]}={m.get(k, float('nan')):.4g}"
                                                          for k in KEYS) + f"  train {wall:.0f}s", flush=True)
    keys = KEYS + ["train_s"]
    cmdline = " ".join(["python benchmarks/wae_claim.py", "--seeds", *map(str, a.seeds),
                        *sum([["--set", s] for s in a.set], [])])
    lines = [f"`{cmdline}` (total {time.time() - t_all:.0f} s; domain classifier test accuracy "
             f"{clf_acc if clf_acc is None else round(clf_acc, 4)})", "",
             "| model | seed | " + " | ".join(k.replace("test/", "") for k in keys) + " |",
             "|---" * (len(keys) + 2) + "|"]
    for model, seed, m in rows:
        lines.append(f"| {model} | {seed} | " + " | ".join(f"{m.get(k, float('nan')):.4g}" for k in keys) + " |")
    for model in a.models.split(","):
        ms = [m for mm, _, m in rows if mm == model]
        cells = [f"{np.mean([m.get(k, np.nan) for m in ms]):.4g} ± {np.std([m.get(k, np.nan) for m in ms]):.2g}"
                 for k in keys]
        lines.append(f"| **{model}** | mean ± std | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"wae-claim-{a.tag}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
