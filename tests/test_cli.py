"""The command line through subprocesses: a short run end to end, sampling, evaluation, and user errors."""
import gzip
import json
import os
import struct
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

SCRATCH = tempfile.mkdtemp(prefix="wae-cli-test-")
TINY = ["--set", "width=0.125", "--set", "data.limit=300", "--set", "data.eval_limit=200", "--set", "pretrain_steps=5",
        "--quiet"]


def wae(*args, cwd=None, timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WAE_DATA": str(Path(SCRATCH) / "no-data"),
           "WAE_CACHE": str(Path(SCRATCH) / "cache")}
    return subprocess.run([sys.executable, "-m", "wae.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def test_help_lists_commands():
    r = wae("--help")
    assert r.returncode == 0
    for c in ("train", "sample", "evaluate", "datasets", "reproduce"):
        assert c in r.stdout


def test_presets_lists_every_preset_with_what_it_is():
    from wae.config import list_presets, preset_summary

    r = wae("presets")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == list_presets()
    for name, ln in zip(list_presets(), lines):
        assert preset_summary(name), f"preset {name} has no first comment line saying what it is"
        assert preset_summary(name)[:40] in ln and len(ln) <= 120


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "R"
    r = wae("train", "wae-mmd", "--dataset", "mnist-5k", "--epochs", "1", "--batch-size", "50", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_train_writes_the_run_directory(run_dir):
    for f in ("config.yaml", "model.safetensors", "model.yaml", "metrics.json", "report.md",
              "figures/reconstructions.png", "figures/samples.png", "figures/interpolations.png",
              "figures/training_curves.png", "checkpoints/last.ckpt"):
        assert (run_dir / f).exists(), f
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test/recon_mse"] > 0 and "test/mmd_prior" in m
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / ".lock").exists()


def test_sample_and_evaluate(run_dir, tmp_path):
    png = tmp_path / "s.png"
    r = wae("sample", str(run_dir), "--n", "16", "--out", str(png))
    assert r.returncode == 0, r.stderr
    from PIL import Image

    w, h = Image.open(png).size
    assert abs(w - h) < 0.15 * w  # a 4×4 grid is square
    before = (run_dir / "metrics.json").stat().st_mtime_ns
    r = wae("evaluate", str(run_dir), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert (run_dir / "metrics.json").stat().st_mtime_ns > before
    assert "test/recon_mse" in r.stdout


def test_sample_to_npz_is_the_array_and_deterministic_per_seed(run_dir, tmp_path):
    import numpy as np

    out = []
    for i, seed in enumerate((3, 3, 4)):
        f = tmp_path / f"s{i}.npz"
        r = wae("sample", str(run_dir), "--n", "1203", "--seed", str(seed), "--out", str(f))  # two chunks of 1000
        assert r.returncode == 0, r.stderr
        out.append(np.load(f)["x"])
    assert out[0].shape == (1203, 1, 28, 28) and out[0].dtype == np.float32
    assert 0.0 <= out[0].min() and out[0].max() <= 1.0
    assert np.array_equal(out[0], out[1]) and not np.array_equal(out[0], out[2])
    assert len({out[0][i].tobytes() for i in range(0, 1203, 100)}) == 13  # distinct draws across the chunks


def test_sample_and_reconstruct_sizes_and_output_paths_are_one_line_errors(run_dir, tmp_path):
    assert ".npz" in _one_line_error(wae("sample", str(run_dir), "--n", "10001", "--out", str(tmp_path / "a.png")))
    assert "--n" in _one_line_error(wae("reconstruct", str(run_dir), "--n", "0", "--out", str(tmp_path / "b.png")))
    f = tmp_path / "file"
    f.write_text("")
    line = _one_line_error(wae("sample", str(run_dir), "--n", "4", "--out", str(f / "s.png")))  # parent is a file
    assert str(f) in line


def _one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_unknown_model(tmp_path):
    assert "unknown model" in _one_line_error(wae("train", "nope", "--out", str(tmp_path / "x"), cwd=tmp_path))


def test_missing_data_dir_offline(tmp_path):
    line = _one_line_error(wae("train", "wae-mmd", "--dataset", "mnist", "--data-dir", "/nonexistent",
                               "--out", str(tmp_path / "x"), *TINY, cwd=tmp_path, timeout=120))
    assert "mnist" in line


def test_truncated_idx_file(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    imgs = struct.pack(">HBBIII", 0, 8, 3, 100, 28, 28) + bytes(28 * 28 * 10)  # promises 100 images, has 10
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(imgs))
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">HBBI", 0, 8, 1, 100) + bytes(100)))
    line = _one_line_error(wae("train", "wae-mmd", "--dataset", "mnist", "--data-dir", str(d), "--out",
                               str(tmp_path / "x"), *TINY, cwd=tmp_path, timeout=120))
    assert "truncated" in line.lower() or "corrupt" in line.lower()


def test_bad_set_value(tmp_path):
    assert "lr" in _one_line_error(wae("train", "wae-mmd", "--set", "lr=abc", "--out", str(tmp_path / "x"), cwd=tmp_path))
    assert "unknown" in _one_line_error(wae("train", "wae-mmd", "--set", "nokey=1", "--out", str(tmp_path / "x"),
                                            cwd=tmp_path))


def test_bad_flag_is_one_line(tmp_path):
    _one_line_error(wae("train", "--epochs", "many"))


def test_sample_missing_run_dir(tmp_path):
    _one_line_error(wae("sample", str(tmp_path / "none"), "--out", str(tmp_path / "s.png")))


def test_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    _one_line_error(wae("train", "wae-mmd", "--out", str(ro / "x"), *TINY))


def test_dry_run_prints_resolved_yaml():
    r = wae("train", "gm-wae", "--dry-run", "--set", "lam=20")
    assert r.returncode == 0 and "lam: 20.0" in r.stdout and "name: gm-wae" in r.stdout


def test_gm_wae_run_has_clustering_metrics_and_component_sampling(gm_run, tmp_path):
    out = gm_run
    m = json.loads((out / "metrics.json").read_text())
    for k in ("test/acc_paper", "test/acc_makhzani", "test/acc_hungarian", "test/nmi", "test/ari",
              "test/active_components", "test/recon_mse", "test/mmd_prior"):
        assert k in m, k
    assert (out / "figures" / "samples_per_component.png").exists()
    assert (out / "figures" / "cluster_heatmap.png").exists()
    r = wae("sample", str(out), "--component", "3", "--n", "16", "--out", str(tmp_path / "k3.png"))
    assert r.returncode == 0 and (tmp_path / "k3.png").exists()
    assert "component 12 out of range" in _one_line_error(
        wae("sample", str(out), "--component", "12", "--out", str(tmp_path / "k.png")))


@pytest.fixture(scope="module")
def gm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gm") / "G"
    r = wae("train", "gm-wae", "--dataset", "mnist-5k", "--epochs", "1", "--batch-size", "32", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_encode_writes_the_models_codes_and_clusters(gm_run, tmp_path):
    import numpy as np
    import torch

    from wae.data import load_dataset
    from wae.evaluation.clustering import hungarian_accuracy
    from wae.io import load

    r = wae("encode", str(gm_run), "--out", str(tmp_path / "c.npz"))
    assert r.returncode == 0, r.stderr[-2000:]
    d = np.load(tmp_path / "c.npz")
    # the reference: the same model and the run's test data, encoded here directly
    model = load(gm_run)
    ds = load_dataset("mnist-5k", "test").subset(200, seed=0)
    with torch.no_grad():
        z_ref, p_ref = model.encode(ds.x).numpy(), model.cluster_probs(ds.x).numpy()
    np.testing.assert_allclose(d["z"], z_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d["probs"], p_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d["probs"].sum(1), 1.0, atol=1e-5)
    assert np.array_equal(d["cluster"], p_ref.argmax(1))
    assert np.array_equal(d["label"], ds.y.numpy())
    acc = hungarian_accuracy(d["cluster"], d["label"])[0]
    assert f"Hungarian accuracy {acc:.4f}" in r.stdout and "200 codes of dimension 10" in r.stdout
    # CSV: one row per example, the same numbers as the arrays
    r = wae("encode", str(gm_run), "--out", str(tmp_path / "c.csv"), "--dataset", "mnist-5k", "--limit", "30")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["cluster", "label", "p0"] and len(rows) == 31
    table = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    train = load_dataset("mnist-5k", "train")
    with torch.no_grad():
        p_train = model.cluster_probs(train.x[:30]).numpy()
    assert np.array_equal(table[:, 0], p_train.argmax(1)) and np.array_equal(table[:, 1], train.y[:30].numpy())
    np.testing.assert_allclose(table[:, 2:12], p_train, rtol=1e-4, atol=1e-6)


def wae_here(capsys, *args):
    """`wae ARGS` run in this process (its imports paid once, not per call), as a CompletedProcess like wae()'s."""
    from wae.cli import main

    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's own exits
        rc = e.code
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(["wae", *args], rc, cap.out, cap.err)


def test_encode_errors_are_one_line(gm_run, tmp_path, capsys):
    def encode(*args):
        return _one_line_error(wae_here(capsys, "encode", str(gm_run), *args))

    assert ".npz, .csv or .parquet" in encode("--out", str(tmp_path / "c.txt"))
    assert "shape (2,)" in encode("--dataset", "arcs", "--out", str(tmp_path / "c.npz"))
    assert "no latent hierarchy" in encode("--depth", "2", "--out", str(tmp_path / "c.npz"))
    assert "not found" in encode("--dataset", f"npz:{tmp_path}/none.npz", "--out", str(tmp_path / "c.npz"))
    assert not (tmp_path / "c.npz").exists()


def test_version_comes_from_the_package(capsys, monkeypatch):
    import wae
    from wae import cli

    monkeypatch.setattr(cli, "__version__", "9.9.9-test")
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "wae 9.9.9-test"  # not a literal in cli.py
    assert wae.__version__ in (Path(__file__).parents[1] / "pyproject.toml").read_text()
