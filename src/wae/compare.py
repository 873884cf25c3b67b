"""``wae compare DIR1 DIR2 ...``: the metrics of several runs side by side, as a Markdown table.

Runs are columns (header: the directory's name and the model), metrics are rows (the union of the runs' numeric
metrics: ``test/`` first, then ``train/``, then the rest, each group sorted). Numbers are shown to 4 significant
digits, a metric a run lacks as "–", and where it is known whether lower or higher is better the best value of a
row is in bold.
"""
from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

import yaml

from .errors import WAEError
from .files import atomic_write_text

__all__ = ["compare_runs", "load_run_summary", "metric_direction", "format_number"]

MISSING = "–"

# Judged on the metric's name without its ``test/`` or ``train/`` prefix.
_LOWER = ("recon_mse*", "recon_nll*", "nll_*", "mmd_prior*", "w2_*", "fid_*", "kid_*")
_HIGHER = ("acc_*", "*_acc", "*_accuracy", "nmi", "ari", "elbo", "iwae_bound", "component_purity",
           "precision_*", "recall_*")
_NO_DIRECTION = ("*_std", "*_n", "*_points")  # spreads and sample counts are not scores


def metric_direction(key: str) -> str | None:
    """``"min"`` when lower is better, ``"max"`` when higher is better, None when unknown."""
    name = key.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatchcase(name, p) for p in _NO_DIRECTION):
        return None
    if any(fnmatch.fnmatchcase(name, p) for p in _LOWER):
        return "min"
    if any(fnmatch.fnmatchcase(name, p) for p in _HIGHER):
        return "max"
    return None


def format_number(v) -> str:
    """4 significant digits for floats, integers as they are, "–" for a missing value."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v.is_integer() and abs(v) < 1e4:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_run_summary(run_dir: str | Path) -> dict:
    """``{"dir", "name", "model", "dataset", "metrics"}`` of one run directory; WAEError when metrics.json is bad."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise WAEError(f"{run_dir} is not a directory (expected a run directory with metrics.json)")
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise WAEError(f"{run_dir}: metrics.json is missing (is it a finished, evaluated run?)")
    try:
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WAEError(f"{run_dir}: metrics.json is corrupt ({type(e).__name__})") from None
    if not isinstance(metrics, dict):
        raise WAEError(f"{run_dir}: metrics.json is corrupt (not a JSON object)")
    model, dataset = metrics.get("model"), metrics.get("dataset")
    cpath = run_dir / "config.yaml"
    if cpath.is_file():  # only for the labels: a bad config.yaml falls back on metrics.json's fields
        try:
            cfg = yaml.safe_load(cpath.read_text(encoding="utf-8"))
            if isinstance(cfg, dict):
                m, d = cfg.get("model"), cfg.get("data")
                if isinstance(m, dict) and m.get("name"):
                    model = m["name"]
                elif isinstance(m, str):
                    model = m
                if isinstance(d, dict) and d.get("dataset"):
                    dataset = d["dataset"]
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            pass
    numeric = {k: v for k, v in metrics.items() if isinstance(k, str) and (_is_number(v) or v is None)}
    return {"dir": run_dir, "name": run_dir.resolve().name or str(run_dir), "model": model, "dataset": dataset,
            "metrics": numeric}


def _sort_key(k: str):
    group = 0 if k.startswith("test/") else 1 if k.startswith("train/") else 2
    return group, k


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _labels(runs: list[dict]) -> list[str]:
    names = [r["name"] for r in runs]
    out = []
    for r, n in zip(runs, names):
        if names.count(n) > 1:  # same directory name twice: show the parent too
            p = r["dir"].resolve()
            n = f"{p.parent.name}/{p.name}"
        out.append(n)
    return out


def compare_runs(dirs, out: str | Path | None = None, keys=None) -> str:
    """The Markdown table comparing the runs in ``dirs``; written atomically to ``out`` when given.

    ``keys``: metric names or glob patterns (``"test/*"``) to keep; all numeric metrics by default.
    """
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise WAEError("compare needs at least one run directory")
    runs = [load_run_summary(d) for d in dirs]
    all_keys = sorted({k for r in runs for k in r["metrics"]}, key=_sort_key)
    if keys:
        pats = [keys] if isinstance(keys, str) else list(keys)
        all_keys = [k for k in all_keys if any(k == p or fnmatch.fnmatchcase(k, p) for p in pats)]
    header = ["metric"] + [f"{lab} ({r['model'] or '?'})" for lab, r in zip(_labels(runs), runs)]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|---|" + "---:|" * len(runs)]
    lines.append("| " + " | ".join(["dataset"] + [_cell(r["dataset"] or MISSING) for r in runs]) + " |")
    for k in all_keys:
        vals = [r["metrics"].get(k) for r in runs]
        cells = [format_number(v) for v in vals]
        direction = metric_direction(k)
        finite = [v for v in vals if _is_number(v) and math.isfinite(v)]
        if direction and len(finite) >= 2 and min(finite) != max(finite):
            best = min(finite) if direction == "min" else max(finite)
            cells = [f"**{c}**" if _is_number(v) and v == best else c for c, v in zip(cells, vals)]
        arrow = {"min": " ↓", "max": " ↑"}.get(direction, "")
        lines.append("| " + " | ".join([f"`{_cell(k)}`{arrow}"] + [_cell(c) for c in cells]) + " |")
    table = "\n".join(lines) + "\n"
    if out is not None:
        atomic_write_text(out, table)
    return table
