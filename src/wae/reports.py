"""Run reports: ``report.md`` and a self-contained ``report.html`` with the config, metrics and figures of a run."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from .files import atomic_write_text

__all__ = ["write_run_report", "write_html_report", "write_html_page", "write_cluster_report", "html_table",
           "html_figure", "metrics_table", "figure_caption", "paper_clustering",
           "GMVAE_TABLE1"]


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


GMVAE_TABLE1: dict[tuple[int, int], tuple[float, float, float]] = {
    (10, 1): (87.31, 77.78, 5.75),
    (10, 10): (88.54, 82.31, 3.75),
    (16, 1): (89.01, 85.09, 1.99),
    (16, 10): (96.92, 87.82, 5.33),
    (30, 1): (95.84, 92.77, 1.60),
    (30, 10): (93.22, 89.27, 2.50),
}
"""Table 1 of the GMVAE paper (MNIST; each cluster labelled by its most confident test digit, §4.2; percent):
(K, M) → (best run, mean, std)."""


def paper_clustering(model: str, K: int | None = None, M: int = 1) -> tuple[str, dict] | None:
    """(caption, {metric: value}) of the clustering number the model's paper reports for the same K (and M), beside
    which a run's own are shown; an empty dict when the paper has no row for this K; None for other models. Without
    K (unknown), the paper's K = 10 row, its K in the caption."""
    if model == "gm-wae":
        if K in (None, 10):
            return "GM-WAE paper (Gaujac et al. §3.2, K = 10, 60k MNIST digits)", {"acc_paper": 0.76}
        return f"GM-WAE paper: K = 10 only, no number for K = {K}", {}
    if model == "gmvae":
        key = (10, 1) if K is None else (int(K), int(M))
        if key in GMVAE_TABLE1:
            return (f"GMVAE paper (Dilokthanakul et al. Table 1, K = {key[0]}, M = {key[1]}, mean)",
                    {"acc_makhzani": GMVAE_TABLE1[key][1] / 100})
        return f"GMVAE paper: no Table 1 row for K = {K}, M = {M} (K 10/16/30, M 1/10)", {}
    return None

HEADLINE_FIGURES = ("cluster_gallery", "cluster_heatmap")
"""Figures shown first in a clustering run's report (per-cluster samples beside real members, class × cluster)."""

_HEAD_COLS = [("acc_hungarian", "accuracy (Hungarian: one-to-one map from this split)"),
              ("acc_paper", "accuracy (GM-WAE paper's greedy map from this split)"),
              ("acc_makhzani", ("accuracy (GMVAE paper's: each cluster labelled by its most confident point of this "
                               "split)")),
              ("acc_makhzani_valmap", ("accuracy (Makhzani et al.'s: each cluster labelled by its most confident "
                                      "validation point)")),
              ("nmi", "NMI"), ("active_components", "clusters used"),
              ("component_purity", "purity of each cluster's samples (classifier of the training split)"),
              ("sample_cluster_agreement", "samples of k in the class of the data assigned to k"),
              ("classes_covered", "classes drawn")]


def _baseline_row(metrics: dict, split: str, name: str, label: str, cols: list) -> list[str] | None:
    """The headline row of baseline ``name`` (``kmeans``, ``umap_gmm``): its scores and seconds; None when it has
    neither scores nor a note (a note without scores — e.g. umap-learn missing — is the row's one line)."""
    pre = f"{split}/{name}_"
    note = metrics.get(pre + "note")
    if pre + "acc_hungarian" not in metrics:
        return [f"{label}: {note}", *("–" for _ in cols), "–"] if note else None
    cells = [_fmt(metrics[pre + k]) if metrics.get(pre + k) is not None else "–" for k, _ in cols]
    secs = metrics.get(pre + "seconds")
    return [label + (f" ({note})" if note else ""), *cells, f"{secs:.0f}" if secs is not None else "–"]


def clustering_headline(metrics: dict, model: str | None = None, K: int | None = None,
                        M: int = 1) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the table a clustering run's report opens with: this run (K clusters, M samples for GMVAE)
    on its held-out split, k-means with the same K and UMAP → GMM on the same split (each with the seconds it took),
    and the paper's number for the same K; None for runs without clustering metrics. The column captions say which
    data label the clusters."""
    split = metrics.get("eval_split", "test")
    if f"{split}/acc_hungarian" not in metrics:
        return None
    cols = [(k, name) for k, name in _HEAD_COLS if f"{split}/{k}" in metrics]
    where = metrics.get("eval_dataset", split)
    note = f" — {metrics['eval_note']}" if metrics.get("eval_note") else ""
    note += f" — {metrics['sample_note']}" if metrics.get("sample_note") else ""
    header = ["", *(name for _, name in cols), "seconds"]
    wall = metrics.get("train/wall_seconds")
    rows = [[f"this run on {where} ({metrics.get('eval_examples', '?')} examples{note})",
             *(_fmt(metrics[f"{split}/{k}"]) for k, _ in cols), f"{wall:.0f}" if wall is not None else "–"]]
    for name, label in (("kmeans", (f"k-means on raw pixels{f' with K = {K}' if K else ''}, same split, scored the "
                                   "same ways")),
                        ("umap_gmm", ("UMAP (10-d) → Gaussian mixture on raw pixels, fitted on this split's "
                                     "pixels (no labels)"))):
        row = _baseline_row(metrics, split, name, label, cols)
        if row:
            rows.append(row)
    paper = paper_clustering(model or metrics.get("model", ""), K, M)
    if paper:
        rows.append([paper[0], *(_fmt(paper[1][k]) if k in paper[1] else "–" for k, _ in cols), "–"])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def _headline_first(figs: list[Path]) -> list[Path]:
    first = [f for name in HEADLINE_FIGURES for f in figs if f.stem == name]
    return first + [f for f in figs if f not in first]


def write_run_report(run_dir: str | Path, cfg, metrics: dict, paper: dict | None = None, title: str | None = None,
                     notes: str = "") -> Path:
    run_dir = Path(run_dir)
    figs = _headline_first(sorted((run_dir / "figures").glob("*.png")))
    lines = [f"# {title or f'{cfg.model} on {cfg.data.dataset}'}", ""]
    if notes:
        lines += [notes, ""]
    head = clustering_headline(metrics, cfg.model, getattr(cfg.model_config, "num_components", None),
                               getattr(cfg.model_config, "mc_samples", 1))
    if head:
        lines += ["## Clustering on held-out data", "", _md_table(*head), ""]
        for f in figs:
            if f.stem in HEADLINE_FIGURES:
                lines += [f"![{f.stem}](figures/{f.name})", ""]
    lines += ["## Metrics", "", metrics_table(metrics, paper), "", "## Figures", ""]
    for f in figs:
        lines += [f"### {f.stem.replace('_', ' ')}", "", f"![{f.stem}](figures/{f.name})", ""]
    config_yaml = cfg.to_yaml()
    lines += ["## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    path = atomic_write_text(run_dir / "report.md", "\n".join(lines))
    write_html_report(run_dir, title or f"{cfg.model} on {cfg.data.dataset}", metrics, paper, config_yaml,
                      [notes] if notes else [], figs, headline=head)
    return path


# ---------------------------------------------------------------------------------------------------- HTML report

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1000px; margin: 24px auto; padding: 28px 36px 40px; background: #fff;
       border: 1px solid #d8dee4; border-radius: 8px; }
h1 { font-size: 1.7em; margin: 0 0 .6em; padding-bottom: .3em; border-bottom: 2px solid #3b6fb6; }
h2 { font-size: 1.3em; margin: 1.8em 0 .6em; padding-bottom: .2em; border-bottom: 1px solid #d8dee4; }
ul.notes { padding-left: 1.3em; } ul.notes li { margin: .25em 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .95em; }
th, td { border: 1px solid #c9d1d9; padding: 5px 12px; }
th { background: #eef2f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
tbody tr:nth-child(even) { background: #f8f9fb; }
tbody tr.chosen { background: #fff4d6; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 12px 14px; overflow-x: auto;
      font-size: .85em; line-height: 1.4; }
figure { margin: 1.2em 0 1.8em; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; border-radius: 4px; background: #fff; }
figcaption { margin-top: .4em; color: #57606a; font-size: .95em; }
.missing { color: #8c959f; }
p.info { color: #57606a; margin: -.2em 0 1em; }
footer { margin-top: 2.5em; color: #8c959f; font-size: .85em; }
"""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}


def figure_caption(path: str | Path) -> str:
    """``samples_per_component.png`` -> ``Samples per component``."""
    words = Path(path).stem.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else Path(path).name


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _html_value(v) -> str:
    if v is None:
        return "<span class=missing>–</span>"
    if isinstance(v, float) and not math.isfinite(v):
        return _esc(v)
    if isinstance(v, (dict, list, tuple)):
        text = json.dumps(v, default=str)
        return _esc(text if len(text) <= 200 else text[:197] + "...")
    return _esc(_fmt(v))


def _metrics_html(metrics: dict, paper: dict | None) -> str:
    paper = paper or {}
    keys = sorted(metrics, key=lambda k: (0 if str(k).startswith("test/") else 1 if str(k).startswith("train/")
                                          else 2, str(k)))
    keys += sorted((k for k in paper if k not in metrics), key=str)  # the paper's numbers we have no value for
    head = "<tr><th>metric</th><th>ours</th>" + ("<th>paper</th>" if paper else "") + "</tr>"
    rows = []
    for k in keys:
        cells = f"<td><code>{_esc(k)}</code></td><td class=num>{_html_value(metrics.get(k))}</td>"
        if paper:
            cells += f"<td class=num>{_html_value(paper[k]) if k in paper else ''}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def html_figure(path: Path, caption: str | None = None) -> str:
    """A figure embedded as a data URI, with ``caption`` (default: from the file name)."""
    cap = _esc(caption if caption is not None else figure_caption(path))
    try:
        data = path.read_bytes()
    except OSError:
        return f"<figure><p class=missing>{_esc(path.name)} could not be read</p><figcaption>{cap}</figcaption></figure>"
    mime = _MIME.get(path.suffix.lower(), "image/png")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<figure><img src="{uri}" alt="{cap}" loading="eager"><figcaption>{cap}</figcaption></figure>'


def html_table(header: list[str], rows: list[list], chosen_row: int | None = None) -> str:
    """A table: the first column as text, the others as numbers (right-aligned; floats to 4 significant digits);
    row ``chosen_row`` highlighted. Every cell is HTML-escaped."""
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"
    body = [f"<tr{' class=chosen' if i == chosen_row else ''}><td>{_esc(_fmt(r[0]))}</td>"
            + "".join(f"<td class=num>{_esc(_fmt(c))}</td>" for c in r[1:]) + "</tr>" for i, r in enumerate(rows)]
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def write_html_page(out_dir: str | Path, title: str, body: list[str], footer: str = "Generated by wae.") -> Path:
    """Write ``out_dir/report.html``: one self-contained page (inline CSS, images as data URIs, nothing fetched from
    elsewhere) with ``title`` and the HTML fragments ``body`` (escaped by whoever made them). Returns the path."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             # Nothing may be loaded from anywhere but this file (images are data: URIs).
             ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
              "style-src 'unsafe-inline'\">"),
             f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{_esc(title)}</h1>", *body, f"<footer>{_esc(footer)}</footer>", "</main>", "</body>", "</html>", ""]
    return atomic_write_text(Path(out_dir) / "report.html", "\n".join(parts))


def write_html_report(out_dir: str | Path, title: str, metrics: dict, paper: dict | None, config_yaml: str | None,
                      notes: list[str] | None, figures: list[Path] | None,
                      headline: tuple[list[str], list[list[str]]] | None = None) -> Path:
    """Write ``out_dir/report.html``: one self-contained page (figures embedded as data URIs, inline CSS, nothing
    fetched from elsewhere) with the title, notes, metrics (beside the paper's where given), training curves, the
    other figures and the config. All text is HTML-escaped. Returns the path written."""
    out_dir = Path(out_dir)
    figures = [Path(f) for f in (figures or [])]
    curves = [f for f in figures if f.stem == "training_curves"]
    others = [f for f in figures if f.stem != "training_curves"]
    parts = []
    notes = [n for n in (notes or []) if str(n).strip()]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if headline:  # a clustering run opens with its held-out numbers beside the paper's and k-means', then its clusters
        parts += ["<h2>Clustering on held-out data</h2>", html_table(*headline)]
        lead = [f for f in others if f.stem in HEADLINE_FIGURES]
        parts += [html_figure(f) for f in lead]
        others = [f for f in others if f not in lead]
    metrics = dict(metrics or {})
    info = {k: metrics.pop(k) for k in list(metrics) if isinstance(metrics[k], str) and k not in (paper or {})}
    if info:  # dataset, model, ...: a line under the title rather than rows of the metrics table
        parts.append('<p class="info">' + " · ".join(f"<b>{_esc(k.replace('_', ' '))}</b>: {_esc(v)}"
                                                     for k, v in sorted(info.items())) + "</p>")
    parts += ["<h2>Metrics" + (" (ours beside the paper's)" if paper else "") + "</h2>",
              _metrics_html(metrics, paper)]
    if curves:
        parts += ["<h2>Training curves</h2>", *(html_figure(f) for f in curves)]
    if others:
        parts += ["<h2>Figures</h2>", *(html_figure(f) for f in others)]
    if config_yaml:
        parts += ["<h2>Config</h2>", f"<pre>{_esc(config_yaml.rstrip())}</pre>"]
    return write_html_page(out_dir, title, parts)


def write_cluster_report(out: Path, title: str, facts: list[tuple[str, str]], metrics: dict, sizes: np.ndarray,
                         figures: dict[str, Path], sweep: list[dict], chosen: int, config_yaml: str) -> Path:
    """``out/report.html`` of ``wae cluster``: the facts, the agreement with the labels beside the baselines, the K
    sweep, the clusters and their figures, the settings."""
    parts = ['<ul class="notes">' + "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in facts) + "</ul>"]
    if "acc_hungarian" in metrics:
        rows = [["GM-WAE (this run)", metrics["acc_hungarian"], metrics["nmi"], metrics["ari"],
                 round(metrics["fit_seconds"])]]
        for name, label in (("kmeans", "k-means, same data and K"),
                            ("umap_gmm", "UMAP (10-d) → Gaussian mixture, same data and K")):
            note = metrics.get(f"{name}_note")
            if f"{name}_acc_hungarian" in metrics:
                rows.append([label + (f" ({note})" if note else ""), *(metrics.get(f"{name}_{m}", "–") for m in
                                                                       ("acc_hungarian", "nmi", "ari")),
                             round(metrics[f"{name}_seconds"])])
            elif note:
                rows.append([f"{label}: {note}", "–", "–", "–", "–"])
        parts += ["<h2>Agreement with the labels</h2>",
                  ("<p>The labels were not used to fit: they only score the clusters. Accuracy matches clusters to "
                   "classes one-to-one (Hungarian). The baselines cluster the same inputs the model sees.</p>"),
                  html_table(["", "accuracy (Hungarian)", "NMI", "ARI", "seconds"], rows)]
        if "cluster_heatmap" in figures:
            parts.append(html_figure(figures["cluster_heatmap"],
                                     "class × cluster: mean q(k|x) over the examples of each class"))
    if sweep:
        rows = [[r["k"], r["silhouette"], r["score"], r["confidence"], r["used"]] for r in sweep]
        chosen_i = next(i for i, r in enumerate(sweep) if r["k"] == chosen)
        parts += ["<h2>Choosing K</h2>",
                  (f"<p>Each K was fitted on 80 % of the data; the other 20 % were assigned, and K was chosen by the "
                   f"silhouette of those assignments (how much closer each point is to its own cluster than to the "
                   f"next, −1…1, higher is better; no labels used). Chosen: K = {chosen} (highlighted), then fitted on "
                   f"all the data. Also shown: the held-out score (the opposite of the GM-WAE objective; not "
                   f"comparable across K, whose prior, latent size and cost scale differ) and the mean confidence "
                   f"max_k q(k|x).</p>"),
                  html_table(["K", "held-out silhouette", "held-out score", "mean confidence", "clusters used"], rows,
                             chosen_i)]
        if "k_sweep" in figures:
            parts.append(html_figure(figures["k_sweep"], "held-out silhouette against K"))
    parts += ["<h2>Clusters</h2>",
              html_table(["cluster", "size", "share", "mean confidence"],
                         [[k, int(sizes[k]), f"{sizes[k] / max(1, sizes.sum()):.1%}", metrics.get(f"confidence/{k}", "–")]
                          for k in range(len(sizes))])]
    for key, cap in (("cluster_gallery", ("per cluster: decoded mode · real members closest to the mode · least "
                                         "confident members · samples drawn from the cluster")),
                     ("cluster_profiles", ("per cluster: decoded mode and the members closest to it · least confident "
                                          "members · samples drawn from the cluster")),
                     ("cluster_sizes", "cluster sizes")):
        if key in figures:
            parts.append(html_figure(figures[key], cap))
    parts += ["<h2>Settings</h2>", f"<pre>{_esc(config_yaml.rstrip())}</pre>"]
    return write_html_page(out, title, parts, footer="Generated by wae cluster.")
