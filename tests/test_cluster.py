"""`wae cluster`: npz, image folder and CSV in; assignments.csv, the model, report.html and metrics.json out; the K
sweep; bad input ends in one line and exit code 2 with nothing written; the page renders in headless Chromium."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wae.cli import main
from wae.estimator import GMWAEClustering
from wae.evaluation.baselines import UMAP_MISSING

FAST = ["--max-steps", "40", "--quiet", "--device", "cpu"]
MODEL_FILES = {"model.safetensors", "model.yaml", "config.yaml", "estimator.yaml", "estimator.safetensors"}


def images(n_per=20, side=8, seed=0):
    """Three kinds of images (horizontal bar, vertical bar, diagonal) with noise, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    proto = np.zeros((3, side, side))
    proto[0, side // 2 - 1: side // 2 + 1, 1:-1] = 1
    proto[1, 1:-1, side // 2 - 1: side // 2 + 1] = 1
    proto[2] = np.eye(side) + np.eye(side, k=1)
    y = np.repeat(np.arange(3), n_per)
    x = np.clip(proto[y] * 0.9 + 0.1 * rng.random((len(y), side, side)), 0, 1)
    return x.astype(np.float32), y


def blobs(n_per=20, d=4, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(3, d)) * 5
    y = np.repeat(np.arange(3), n_per)
    return c[y] + rng.normal(size=(len(y), d)), y


def read_assignments(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def check_output(out, n, k, labels: bool):
    names = {p.name for p in out.iterdir()}
    assert {"assignments.csv", "report.html", "metrics.json", "figures"} | MODEL_FILES <= names, names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporaries left
    header, rows = read_assignments(out / "assignments.csv")
    assert header[:3] == ["id", "cluster", "confidence"] and header[3:3 + k] == [f"p_{j}" for j in range(k)]
    assert (header[-1] == "label") == labels and len(rows) == n
    probs = np.array([[float(v) for v in r[3:3 + k]] for r in rows])
    cluster = np.array([int(r[1]) for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and np.array_equal(probs.argmax(1), cluster)
    assert np.allclose([float(r[2]) for r in rows], probs.max(1), atol=1e-5)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "http://" not in page and "https://" not in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clusters"] == k and sum(metrics[f"size/{j}"] for j in range(k)) == n
    return header, rows, cluster, metrics


def test_cluster_npz_images(tmp_path, capsys):
    x, y = images()
    np.savez(tmp_path / "d.npz", x=(x * 255).astype(np.uint8), y=y)
    out = tmp_path / "R"
    assert main(["cluster", f"npz:{tmp_path / 'd.npz'}", "--k", "3", "--out", str(out), *FAST]) == 0
    header, rows, cluster, metrics = check_output(out, 60, 3, labels=True)
    assert [r[0] for r in rows] == [str(i) for i in range(60)]
    assert {"acc_hungarian", "nmi", "ari", "kmeans_acc_hungarian", "kmeans_seconds"} <= set(metrics)
    assert (out / "figures" / "cluster_gallery.png").exists() and (out / "figures" / "cluster_heatmap.png").exists()
    page = (out / "report.html").read_text()
    assert "Agreement with the labels" in page and "closest to the mode" in page
    if "umap_gmm_acc_hungarian" in metrics:  # umap-learn installed: the practitioner's baseline beside k-means
        assert 0 <= metrics["umap_gmm_acc_hungarian"] <= 1 and metrics["umap_gmm_seconds"] > 0
        assert "UMAP (10-d) → Gaussian mixture, same data and K</td><td class=num>" in page
    est = GMWAEClustering.load(out)  # the saved model reproduces the assignments
    assert np.array_equal(est.predict(x[:, None]), cluster)
    import wae

    assert wae.load(out).num_components == 3


def test_cluster_folder_of_pngs(tmp_path):
    from PIL import Image

    x, y = images(n_per=8, side=12)
    root = tmp_path / "pics"
    for i, (im, c) in enumerate(zip(x, y)):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((im * 255).astype(np.uint8)).save(root / f"class{c}" / f"im{i:02d}.png")
    out = tmp_path / "R"
    assert main(["cluster", str(root), "--k", "3", "--out", str(out), *FAST]) == 0  # a bare directory: folder:
    _, rows, _, metrics = check_output(out, 24, 3, labels=True)
    assert rows[0][0] == "class0/im00.png" and rows[-1][0] == "class2/im23.png"  # ids are the files
    assert [int(r[-1]) for r in rows] == sorted(y.tolist())


def test_cluster_csv_and_tsv(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # umap-learn missing: one line in the report, no crash
    v, y = blobs()
    p = tmp_path / "t.csv"
    with open(p, "w") as f:
        f.write("a,b,c,d,label\n")
        for row, lab in zip(v, y):
            f.write(",".join(f"{t:.5f}" for t in row) + f",{'xyz'[lab]}\n")
    out = tmp_path / "R"
    assert main(["cluster", f"csv:{p}", "--k", "3", "--out", str(out), *FAST]) == 0
    _, rows, _, metrics = check_output(out, 60, 3, labels=True)
    assert (out / "figures" / "cluster_profiles.png").exists()
    assert metrics["acc_hungarian"] > 0.6  # three well-separated blobs; chance 1/3
    assert metrics["umap_gmm_note"] == UMAP_MISSING and not any(k.startswith("umap_gmm_acc") for k in metrics)
    assert (out / "report.html").read_text().count("umap-learn is not installed") == 1
    # the label-free choice among the starts (cluster-vector: 3 starts of 30 % of 40 steps, kept by confidence)
    starts = metrics["starts"]
    assert (starts["count"], starts["steps"], starts["select"]) == (3, 12, "confidence") and len(starts["values"]) == 3
    assert starts["kept"] == int(np.argmin(starts["values"])) and "mean max_k q(k|x)" in starts["why"]
    assert "3 candidate starts of 12 steps each, chosen without labels" in (out / "report.html").read_text()
    assert GMWAEClustering.load(out).starts_ == starts
    tsv = tmp_path / "t.tsv"
    np.savetxt(tsv, v, delimiter="\t")
    assert main(["cluster", str(tsv), "--k", "3", "--out", str(tmp_path / "R2"), *FAST]) == 0
    check_output(tmp_path / "R2", 60, 3, labels=False)


def test_cluster_sweep_chooses_k_and_shows_it(tmp_path):
    v, _ = blobs(n_per=15)
    np.savez(tmp_path / "v.npz", x=v)
    out = tmp_path / "R"
    args = ["cluster", f"npz:{tmp_path / 'v.npz'}", "--k-range", "2:4", "--out", str(out), *FAST, "--max-steps", "150"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sweep = metrics["sweep"]
    assert [r["k"] for r in sweep] == [2, 3, 4]
    assert metrics["clusters"] == max(sweep, key=lambda r: r["silhouette"])["k"] == 3  # three blobs
    assert all({"silhouette", "score", "confidence", "used"} <= set(r) for r in sweep)
    page = (out / "report.html").read_text()
    assert "Choosing K" in page and (out / "figures" / "k_sweep.png").exists()


def test_rerun_replaces_and_a_failed_run_keeps_the_old_output(tmp_path, capsys):
    v, _ = blobs(n_per=10)
    np.savez(tmp_path / "v.npz", x=v)
    out = tmp_path / "R"
    assert main(["cluster", f"npz:{tmp_path / 'v.npz'}", "--k", "2", "--out", str(out), *FAST]) == 0
    before = (out / "assignments.csv").read_text()
    assert main(["cluster", f"npz:{tmp_path / 'v.npz'}", "--k", "99", "--out", str(out), *FAST]) == 2
    assert (out / "assignments.csv").read_text() == before
    assert main(["cluster", f"npz:{tmp_path / 'v.npz'}", "--k", "3", "--out", str(out), *FAST]) == 0
    check_output(out, 30, 3, labels=False)


def _bad_inputs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x=rng.random((30, 3, 3)))
    np.savez(tmp_path / "nan.npz", x=np.where(rng.random((30, 4)) < 0.05, np.nan, 1.0))
    np.savez(tmp_path / "few.npz", x=rng.random((5, 4)))
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(ragged / "a.png")
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(ragged / "b.png")
    mixed = tmp_path / "mixed"
    (mixed / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "cls" / "b.png")
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,red\n")
    (tmp_path / "rows.csv").write_text("1,2\n3,4,5\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    return [
        ([f"npz:{tmp_path / 'tiny.npz'}", "--k", "2"], "too small"),
        ([f"npz:{tmp_path / 'nan.npz'}", "--k", "2"], "NaN"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k", "10"], "fewer than the 10 clusters"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k-range", "2:12"], "the sweep needs"),
        ([f"folder:{ragged}", "--k", "2"], "different sizes"),
        ([f"folder:{mixed}", "--k", "2"], "both at the top level"),
        ([f"csv:{tmp_path / 'text.csv'}", "--k", "2"], "'red' is not a number"),
        ([f"csv:{tmp_path / 'rows.csv'}", "--k", "2"], "fields"),
        ([str(tmp_path / "missing.csv"), "--k", "2"], "not found"),
        (["no-such-dataset", "--k", "2"], "unknown data set"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k", "0"], "argument --k: must be an integer from 1"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k-range", "5:2"], "--k-range"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k-range", "1:3"], "2 ≤ LO"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k", "2", "--set", "model.nope=1"], "unknown key"),
        ([f"npz:{tmp_path / 'few.npz'}", "--k", "2", "--size", "8"], "--size applies"),
    ]


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    for args, match in _bad_inputs(tmp_path):
        out = tmp_path / "R"
        try:
            code = main(["cluster", *args, "--out", str(out), *FAST])
        except SystemExit as e:  # argparse's own refusals (one line, exit 2)
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert match in err and "Traceback" not in err and err.count("\n") == 1, (args, err)
        assert not out.exists(), args
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".R.")], args
    v, _ = blobs(n_per=10)
    np.savez(tmp_path / "v.npz", x=v)
    assert main(["cluster", f"npz:{tmp_path / 'v.npz'}", "--k", "2", "--out", str(tmp_path / "foreign"), *FAST]) == 2
    assert "not written by `wae cluster`" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "foreign").iterdir()] == ["keep.txt"]


def test_report_renders_in_headless_chromium(tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium chromium-driver)")
    from PIL import Image

    x, y = images()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "R"
    assert main(["cluster", f"npz:{tmp_path / 'd.npz'}", "--k", "3", "--out", str(out), *FAST]) == 0
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,1600", (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    arr = np.asarray(Image.open(shot).convert("RGB"))
    assert arr.shape[:2] == (1600, 1200)
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50, "blank page?"
