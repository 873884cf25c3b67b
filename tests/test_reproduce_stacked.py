"""StackedWAE reproductions (`wae reproduce stacked-wae-mnist|wae-deep-mnist|stacked-wae-svhn --quick`) and the
λ sweep benchmark's smoke run."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wae.errors import WAEError
from wae.experiments import list_experiments, run_experiment

ROOT = Path(__file__).resolve().parents[1]

FIGS = {
    "stacked-wae-mnist": ["fig2a_training_curves", "fig2b_samples", "fig2c_z5_grid", "fig3a_latents_per_layer",
                          "fig3b_reconstructions_per_depth"],
    "wae-deep-mnist": ["fig4a_reconstructions", "fig4b_samples", "fig4c_z5_grid", "fig4_latents_per_layer",
                       "fig4_reconstructions_per_depth", "fig4_training_curves"],
}
SVHN_FIGS = ["fig5a_samples", "fig5b_interpolations", "fig5c_latents_per_layer", "fig5d_reconstructions_per_depth"]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_stacked_experiments_are_registered():
    names = {n for n, _ in list_experiments()}
    assert {"stacked-wae-mnist", "wae-deep-mnist", "stacked-wae-svhn"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGS))
def test_quick_stacked_reproduction_writes_figures_and_report(tmp_path, name):
    out = tmp_path / name
    run_experiment(name, out, quick=True, sets=["data.eval_limit=300"])
    for f in FIGS[name]:
        assert (out / "figures" / f"{f}.png").exists(), f
    report = (out / "report.md").read_text()
    assert "Quick run" in report and "## Metrics" in report and "Paper" in report
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ["test/cost0", "test/cost4", "test/mmd", "test/objective", "test/mmd_layer1", "test/mmd_layer5",
                "test/recon_depth1", "test/recon_depth5"]:
        assert key in metrics and np.isfinite(metrics[key]), key


def test_svhn_without_data_raises_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("WAE_DATA", str(empty))
    with pytest.raises(WAEError) as e:
        run_experiment("stacked-wae-svhn", tmp_path / "svhn", quick=True)
    msg = str(e.value)
    assert "svhn" in msg and "\n" not in msg
    assert not (tmp_path / "svhn" / "run").exists()  # fails before writing a run


@pytest.mark.slow
def test_svhn_quick_figures_with_tiny_fake_files(tmp_path, monkeypatch):
    """The Fig. 5 code path on tiny random .mat files in SVHN's format (data only for the test, never shipped)."""
    sio = pytest.importorskip("scipy.io")
    d = tmp_path / "data" / "svhn"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 64)):
        sio.savemat(d / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                               "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "data"))
    out = tmp_path / "svhn"
    try:
        run_experiment("stacked-wae-svhn", out, quick=True, sets=["data.limit=64", "data.eval_limit=64"])
    except WAEError as e:  # the loader may insist on checksums of the original files
        pytest.skip(f"fake SVHN files rejected: {e}")
    for f in SVHN_FIGS:
        assert (out / "figures" / f"{f}.png").exists(), f
    assert (out / "report.md").exists() and (out / "metrics.json").exists()


def test_sweep_picks_smallest_objective():
    sweep = _load_script("stacked_sweep")
    rows = [{"lambda_rec": 0.05, "lambda_match": 1e-4, "test/objective": 3.0},
            {"lambda_rec": 0.1, "lambda_match": 1e-2, "test/objective": float("nan")},
            {"lambda_rec": 1.0, "lambda_match": 1.0, "test/objective": 1.5}]
    assert sweep.best_pair(rows)["lambda_rec"] == 1.0
    assert len(sweep.pairs(quick=False)) == 25 and len(sweep.pairs(quick=True)) == 2
    table = sweep.format_table(rows, rows[2])
    best_lines = [ln for ln in table.splitlines() if "**best**" in ln]
    assert len(best_lines) == 1 and best_lines[0].startswith("| 1 | 1 | 1.5 |")


@pytest.mark.slow
def test_sweep_quick_smoke(tmp_path, capsys):
    sweep = _load_script("stacked_sweep")
    rows, best = sweep.main(["--quick", "--out", str(tmp_path / "sweep"), "--set", "epochs=1", "--set",
                             "data.limit=256", "--set", "data.eval_limit=200", "--set", "model.width=0.03125"])
    assert len(rows) == 2 and best in rows
    assert all(np.isfinite(r["test/objective"]) for r in rows)
    assert best["test/objective"] == min(r["test/objective"] for r in rows)
    assert "best" in capsys.readouterr().out
    assert (tmp_path / "sweep" / "sweep.md").exists()
