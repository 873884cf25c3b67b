"""Run comparison (``compare_runs``) and the self-contained HTML report (``report.html``)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wae.compare import compare_runs, format_number, metric_direction
from wae.errors import WAEError
from wae.reports import figure_caption, write_html_report, write_run_report


def _run_dir(root: Path, name: str, model: str, dataset: str, metrics: dict) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.yaml").write_text(f"model:\n  name: {model}\n  latent_dim: 8\ndata:\n  dataset: {dataset}\n")
    return d


def _row(table: str, key: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].strip("`").split("`")[0] == key:
            return cells[1:]
    raise AssertionError(f"no row {key!r} in\n{table}")


def _png(path: Path, seed: int, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.cumsum(rng.normal(size=100)), label="a")
    ax.imshow(rng.random((8, 8)), extent=(0, 100, -5, 5), aspect="auto", alpha=0.5)
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


@pytest.fixture
def two_runs(tmp_path):
    a = _run_dir(tmp_path, "run_a", "gm-wae", "mnist-5k", {
        "model": "gm-wae", "dataset": "mnist-5k",
        "test/recon_mse": 37.38887405395508, "test/acc_hungarian": 0.506, "test/nmi": 0.4587811427066143,
        "test/kid_domain_std": 0.01, "train/steps": 305, "train/wall_seconds": 421.46772861480713,
        "test/only_a": 1.5})
    b = _run_dir(tmp_path, "run_b", "wae", "mnist", {
        "test/recon_mse": 30.12345, "test/acc_hungarian": 0.61, "test/nmi": 0.4, "test/kid_domain_std": 0.02,
        "train/steps": 300, "train/wall_seconds": 100.0, "test/fid_domain": None})
    return a, b


# ------------------------------------------------------------------------------------------------------ compare


def test_compare_runs_table(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "sub" / "cmp.md"
    table = compare_runs([a, b], out=out)
    assert out.read_text() == table
    lines = table.splitlines()
    assert lines[0] == "| metric | run_a (gm-wae) | run_b (wae) |"
    assert _row(table, "dataset") == ["mnist-5k", "mnist"]
    # numbers to 4 significant digits; the better value in bold where the direction is known
    assert _row(table, "test/recon_mse") == ["37.39", "**30.12**"]
    assert _row(table, "test/acc_hungarian") == ["0.506", "**0.61**"]
    assert _row(table, "test/nmi") == ["**0.4588**", "0.4"]
    assert _row(table, "train/wall_seconds") == ["421.5", "100"]  # no direction: nothing bold
    assert _row(table, "train/steps") == ["305", "300"]
    assert _row(table, "test/kid_domain_std") == ["0.01", "0.02"]
    assert _row(table, "test/only_a") == ["1.5", "–"]  # missing in one run
    assert _row(table, "test/fid_domain") == ["–", "–"]  # null (non-finite) in metrics.json
    assert "model" not in [ln.split("|")[1].strip() for ln in lines[2:]]  # strings are labels, not metric rows
    # rows: test/ first (sorted), then train/
    keys = [ln.split("|")[1].strip().split("`")[1] for ln in lines[3:]]
    assert keys == sorted(k for k in keys if k.startswith("test/")) + ["train/steps", "train/wall_seconds"]


def test_compare_runs_keys_and_ties(two_runs, tmp_path):
    a, b = two_runs
    c = _run_dir(tmp_path, "run_c", "wae", "mnist", {"test/recon_mse": 30.12345})
    table = compare_runs([a, b, c], keys=["test/recon_*"])
    assert _row(table, "test/recon_mse") == ["37.39", "**30.12**", "**30.12**"]
    assert "acc_hungarian" not in table and "train/" not in table


def test_compare_runs_errors(two_runs, tmp_path):
    a, b = two_runs
    (b / "metrics.json").write_text("{not json")
    with pytest.raises(WAEError, match="run_b.*metrics.json is corrupt") as e:
        compare_runs([a, b])
    assert "\n" not in str(e.value)
    (b / "metrics.json").unlink()
    with pytest.raises(WAEError, match="run_b.*metrics.json is missing"):
        compare_runs([a, b])
    with pytest.raises(WAEError, match="not a directory"):
        compare_runs([a, tmp_path / "nope"])
    (b / "metrics.json").write_text("[1, 2]")
    with pytest.raises(WAEError, match="corrupt"):
        compare_runs([a, b])
    with pytest.raises(WAEError):
        compare_runs([])


def test_compare_runs_labels_fall_back_on_metrics(tmp_path):
    d = tmp_path / "x" / "run"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"model": "gmvae", "dataset": "toy", "test/elbo": -90.0}))
    (d / "config.yaml").write_text("{{ corrupt")
    e = tmp_path / "y" / "run"
    e.mkdir(parents=True)
    (e / "metrics.json").write_text(json.dumps({"test/elbo": -95.5, "train/pipe|key": 1}))
    table = compare_runs([d, e])
    assert table.splitlines()[0] == "| metric | x/run (gmvae) | y/run (?) |"
    assert _row(table, "dataset") == ["toy", "–"]
    assert _row(table, "test/elbo") == ["**-90**", "-95.5"]
    assert "pipe\\|key" in table


def test_metric_direction_and_format():
    assert metric_direction("test/recon_mse") == "min"
    assert metric_direction("test/w2_latent") == "min"
    assert metric_direction("test/fid_inception") == "min"
    assert metric_direction("test/kid_domain") == "min"
    assert metric_direction("test/kid_domain_std") is None
    assert metric_direction("test/fid_inception_n") is None  # a sample count, not a score
    assert metric_direction("test/iwae_points") is None
    assert metric_direction("test/acc_hungarian") == "max"
    assert metric_direction("test/iwae_bound") == "max"
    assert metric_direction("test/ari") == "max"
    assert metric_direction("train/wall_seconds") is None
    assert format_number(0.000123456) == "0.0001235"
    assert format_number(123456.7) == "1.235e+05"
    assert format_number(7) == "7" and format_number(None) == "–"


# ---------------------------------------------------------------------------------------------------- HTML report


def _fake_report(tmp_path) -> tuple[Path, list[Path]]:
    figs = [_png(tmp_path / "figures" / "training_curves.png", 0, "training curves"),
            _png(tmp_path / "figures" / "samples_per_component.png", 1, "samples"),
            _png(tmp_path / "figures" / "reconstructions.png", 2, "reconstructions")]
    path = write_html_report(tmp_path, "GM-WAE <on> MNIST", {"test/recon_mse": 37.4, "test/nmi": 0.46,
                                                             "dataset": "mnist-5k", "test/bad": None},
                             {"test/nmi": 0.8}, "model:\n  name: gm-wae\n  note: a<b & c\n",
                             ["first note", "evil <script>alert('x')</script> note"], figs)
    return path, figs


def test_html_report_is_self_contained(tmp_path):
    path, figs = _fake_report(tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    assert text.count("data:image/png;base64,") == len(figs)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "GM-WAE &lt;on&gt; MNIST" in text and "a&lt;b &amp; c" in text
    assert text.index("Training curves") < text.index("Samples per component")
    for cap in ("Samples per component", "Reconstructions"):
        assert f"<figcaption>{cap}</figcaption>" in text
    # ours beside the paper's
    assert re.search(r"test/nmi</code></td><td class=num>0\.46</td><td class=num>0\.8</td>", text)


def test_write_run_report_writes_html(tmp_path):
    from wae.config import RunConfig

    _png(tmp_path / "figures" / "training_curves.png", 0, "curves")
    _png(tmp_path / "figures" / "samples.png", 1, "samples")
    cfg = RunConfig()
    md = write_run_report(tmp_path, cfg, {"test/recon_mse": 1.23456}, paper={"test/recon_mse": 2.0},
                          notes="<b>bold?</b>")
    assert md.name == "report.md" and md.exists()
    text = (tmp_path / "report.html").read_text()
    assert text.count("data:image/png;base64,") == 2
    assert "&lt;b&gt;bold?&lt;/b&gt;" in text
    assert f"<h1>{cfg.model} on {cfg.data.dataset}</h1>" in text
    assert "latent_dim" in text  # the config


def test_clustering_report_opens_with_held_out_numbers_beside_paper_and_kmeans_then_the_clusters(tmp_path):
    from wae.config import RunConfig

    for name in ("training_curves", "samples", "cluster_heatmap", "cluster_gallery"):
        _png(tmp_path / "figures" / f"{name}.png", len(name), name)
    metrics = {"eval_split": "test", "eval_dataset": "mnist-5k:test", "eval_examples": 10000,
               "eval_note": "the official MNIST test set", "model": "gm-wae",
               "test/acc_hungarian": 0.912, "test/acc_paper": 0.91, "test/nmi": 0.85, "test/active_components": 10.0,
               "test/kmeans_acc_hungarian": 0.54, "test/kmeans_nmi": 0.5, "test/kmeans_seconds": 1.2,
               "test/umap_gmm_acc_hungarian": 0.81, "test/umap_gmm_nmi": 0.83, "test/umap_gmm_seconds": 41.3,
               "train/wall_seconds": 570.4, "test/recon_mse": 20.0}
    write_run_report(tmp_path, RunConfig(), metrics)
    md = (tmp_path / "report.md").read_text()
    head = md[md.index("## Clustering on held-out data"): md.index("## Metrics")]
    assert "| this run on mnist-5k:test (10000 examples — the official MNIST test set) | 0.912 | 0.91 |" in head
    assert "| k-means on raw pixels, same split, scored the same ways | 0.54 | – | 0.5 | – | 1 |" in head  # … NMI, clusters used, seconds
    assert "| UMAP (10-d) → Gaussian mixture on raw pixels, fitted on this split's pixels (no labels) | 0.81 | – | " \
           "0.83 | – | 41 |" in head
    row = next(r for r in head.splitlines() if r.startswith("| this run"))
    assert row.endswith("| 0.85 | 10 | 570 |")  # this run's row ends with its training seconds
    html = (tmp_path / "report.html").read_text()
    assert "<td class=num>0.81</td>" in html and "<td class=num>41</td>" in html
    # without umap-learn: the note is the row's one line, no numbers
    del metrics["test/umap_gmm_acc_hungarian"], metrics["test/umap_gmm_nmi"], metrics["test/umap_gmm_seconds"]
    metrics["test/umap_gmm_note"] = "UMAP → GMM baseline not computed: umap-learn is not installed"
    write_run_report(tmp_path, RunConfig(), metrics)
    md = (tmp_path / "report.md").read_text()
    head = md[md.index("## Clustering on held-out data"): md.index("## Metrics")]
    assert head.count("umap-learn is not installed") == 1 and "| 0.81 |" not in head
    assert "GM-WAE paper" in head and "| 0.76 |" in head
    assert head.index("cluster_gallery") < head.index("cluster_heatmap")
    html = (tmp_path / "report.html").read_text()
    assert html.index("Clustering on held-out data") < html.index("<h2>Metrics")
    assert html.count("data:image/png;base64,") == 4  # every figure once: the two clustering ones moved up
    # a run without clustering metrics has no such section
    write_run_report(tmp_path, RunConfig(), {"test/recon_mse": 1.0})
    assert "Clustering on held-out data" not in (tmp_path / "report.md").read_text()


def test_figure_caption():
    assert figure_caption("figures/samples_per_component.png") == "Samples per component"
    assert figure_caption(Path("cluster-heatmap.png")) == "Cluster heatmap"


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium chromium-driver)")
    from PIL import Image

    path, _ = _fake_report(tmp_path / "run")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,1600", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    im = Image.open(shot).convert("RGB")
    assert im.size == (1200, 1600)
    arr = np.asarray(im)
    colours = np.unique(arr.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: blank page?"
    assert not (arr >= 250).all(), "all white"
    # the embedded figures were drawn: a good share of the page is neither background nor white
    assert (arr.std(axis=2) > 20).mean() > 0.005, "no coloured pixels: figures missing?"
