"""Appendix B.1's grid search for StackedWAE on MNIST: train one model per (λ_rec, λ_match) of the 25 pairs
{0.01, 0.05, 0.1, 0.5, 1} ⊗ {1e-4, 1e-3, 1e-2, 1e-1, 1} and pick the smallest Eq. 10 on the test set.

    python benchmarks/stacked_sweep.py --set epochs=20 --set model.width=0.25          # all 25 pairs
    python benchmarks/stacked_sweep.py --quick                                         # 2-pair smoke run
    python benchmarks/stacked_sweep.py --pairs 0.05,1e-4 1,1 --set epochs=5

Each pair trains ``stacked-wae`` (preset ``stacked-wae-mnist`` + ``--set`` overrides, passed through) with
:func:`wae.training.run.train` into ``<out>/rec<λ_rec>-match<λ_match>``, evaluated on the official MNIST test set
when ../shared/data/mnist-test exists. The score is ``test/objective`` (Eq. 10 weighted with the pair's own λ
products, from :meth:`StackedWAE.eval_metrics`), the paper's criterion. Because the weights differ between pairs
this criterion favours small λ mechanically; the table also shows ``objective@ref``, the same test terms weighted
with the paper's winner (0.05, 1e-4), and the top-layer MMD, for a like-for-like look. Prints a Markdown table,
writes it to ``<out>/sweep.md`` and the rows to ``<out>/sweep.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REF = (0.05, 1e-4)
QUICK_PAIRS = [(0.05, 1e-4), (1.0, 1.0)]
QUICK_SETS = ["model.width=0.0625", "epochs=1", "batch_size=64", "data.limit=640", "data.eval_limit=500"]
ALWAYS_SETS = ["checkpoint_every_minutes=0", "train.figures=false"]


def pairs(quick: bool = False) -> list[tuple[float, float]]:
    from wae.models.stacked import sweep_grid

    return list(QUICK_PAIRS) if quick else sweep_grid()


def objective_at(metrics: dict, lambda_rec: float, lambda_match: float, dims: list[int],
                 schedule: str = "mnist") -> float:
    """Eq. 10 from the unweighted test terms ``test/cost{n}``, ``test/mmd`` under the weights of another pair."""
    from wae.models.stacked import layer_weights

    w = layer_weights(lambda_rec, lambda_match, len(dims), dims, schedule)
    return float(sum(w[n] * metrics[f"test/cost{n}"] for n in range(len(dims))) + w[-1] * metrics["test/mmd"])


def run_pair(lambda_rec: float, lambda_match: float, out: Path, sets: list[str], seed: int = 0) -> dict:
    """Train one pair; returns its row (λs, test metrics, wall time)."""
    from wae.experiments.common import base_config, default_mnist
    from wae.training.run import train

    data, eval_data, eval_dir = default_mnist(quick=True)
    over = [f"data.dataset={data}", f"seed={seed}"]
    if eval_data:
        over += [f"data.eval_dataset={eval_data}", f"data.eval_data_dir={eval_dir}"]
    over += ALWAYS_SETS + list(sets) + [f"model.lambda_rec={lambda_rec}", f"model.lambda_match={lambda_match}"]
    cfg = base_config("stacked-wae", "stacked-wae-mnist", over)
    cfg.train.progress = False
    t = time.time()
    metrics = train(cfg, out / f"rec{lambda_rec:g}-match{lambda_match:g}", quiet=True)
    dims = list(cfg.model_config.latent_dims)
    row = {"lambda_rec": lambda_rec, "lambda_match": lambda_match, "wall_s": time.time() - t}
    row.update({k: v for k, v in metrics.items() if k.startswith("test/") and isinstance(v, (int, float))})
    row["objective@ref"] = objective_at(metrics, *REF, dims, cfg.model_config.weight_schedule)
    return row


def best_pair(rows: list[dict], key: str = "test/objective") -> dict:
    """The row with the smallest finite ``key`` (NaN/inf rows, e.g. diverged runs, are ignored)."""
    ok = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not ok:
        raise SystemExit(f"no pair has a finite {key}")
    return min(ok, key=lambda r: r[key])


def format_table(rows: list[dict], best: dict | None = None) -> str:
    cols = [("λ_rec", "lambda_rec"), ("λ_match", "lambda_match"), ("Eq. 10 (test)", "test/objective"),
            ("objective@ref", "objective@ref"), ("cost0", "test/cost0"), ("top MMD", "test/mmd"),
            ("recon z5", "test/recon_depth5"), ("wall s", "wall_s")]
    lines = ["| " + " | ".join(c for c, _ in cols) + " | |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [f"{r.get(k, float('nan')):.4g}" for _, k in cols]
        lines.append("| " + " | ".join(cells) + f" | {'**best**' if r is best else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 pairs, tiny networks, 1 epoch (smoke run)")
    p.add_argument("--pairs", nargs="+", default=None, help="λ_rec,λ_match pairs instead of the 25 of B.1")
    p.add_argument("--set", action="append", default=[], help="config override, passed to every run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/sweep/stacked-wae-mnist")
    a = p.parse_args(argv)
    grid = [tuple(float(v) for v in s.split(",")) for s in a.pairs] if a.pairs else pairs(a.quick)
    sets = (QUICK_SETS if a.quick else []) + a.set
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.time()
    for i, (r, m) in enumerate(grid):
        row = run_pair(r, m, out, sets, a.seed)
        rows.append(row)
        print(f"[{i + 1}/{len(grid)}] λ_rec={r:g} λ_match={m:g}: Eq.10={row['test/objective']:.4g} "
              f"@ref={row['objective@ref']:.4g} ({row['wall_s']:.0f}s)", flush=True)
    best = best_pair(rows)
    cmd = " ".join(["python benchmarks/stacked_sweep.py", *(argv if argv is not None else sys.argv[1:])])
    text = (f"`{cmd}` ({time.time() - t0:.0f} s)\n\n{format_table(rows, best)}\n\n"
            f"best (smallest Eq. 10 on the test set): λ_rec={best['lambda_rec']:g}, λ_match={best['lambda_match']:g} "
            f"(paper: 0.05, 1e-4)")
    print(text)
    (out / "sweep.md").write_text(text + "\n")
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    return rows, best


if __name__ == "__main__":
    main()
