"""Run reports: ``report.md`` (and later HTML) with the config, metrics and figures of a run."""
from __future__ import annotations

from pathlib import Path

from .io import atomic_write_text

__all__ = ["write_run_report", "metrics_table"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metrics_table(metrics: dict, paper: dict | None = None) -> str:
    paper = paper or {}
    rows = ["| metric | ours | paper |", "|---|---|---|"]
    for k in sorted(metrics):
        rows.append(f"| `{k}` | {_fmt(metrics[k])} | {_fmt(paper[k]) if k in paper else ''} |")
    return "\n".join(rows)


def write_run_report(run_dir: str | Path, cfg, metrics: dict, paper: dict | None = None, title: str | None = None,
                     notes: str = "") -> Path:
    run_dir = Path(run_dir)
    figs = sorted((run_dir / "figures").glob("*.png"))
    lines = [f"# {title or f'{cfg.model} on {cfg.data.dataset}'}", ""]
    if notes:
        lines += [notes, ""]
    lines += ["## Metrics", "", metrics_table(metrics, paper), "", "## Figures", ""]
    for f in figs:
        lines += [f"### {f.stem.replace('_', ' ')}", "", f"![{f.stem}](figures/{f.name})", ""]
    lines += ["## Config", "", "```yaml", cfg.to_yaml().rstrip(), "```", ""]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))
