"""GMVAE reproductions (Dilokthanakul et al.): `wae reproduce gmvae-* --quick` writes its figures and report."""
import json

import pytest

from wae.errors import ConfigError, WAEError
from wae.experiments import list_experiments, run_experiment

FIGS = {
    "gmvae-arcs": ["fig2a_data", "fig2b_gmvae_density", "fig2c_gmm_density", "fig2d_latent_no_constraint",
                   "fig2e_latent_constraint_before", "fig2f_latent_constraint_after", "fig3_z_prior_term"],
    "gmvae-mnist": ["fig4_accuracy_per_epoch", "fig5a_samples_per_component_w0", "fig5b_traverse_w"],
}


def test_gmvae_experiments_are_registered():
    names = {n for n, _ in list_experiments()}
    assert {"gmvae-arcs", "gmvae-mnist", "gmvae-svhn"} <= names


def _check_outputs(out, figs):
    for f in figs:
        assert (out / "figures" / f"{f}.png").exists(), f
    report = (out / "report.md").read_text()
    assert "Quick run" in report and "## Metrics" in report
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_gmvae_arcs_quick(tmp_path):
    out = tmp_path / "arcs"
    run_experiment("gmvae-arcs", out, quick=True, sets=["data.eval_limit=500"])
    metrics = _check_outputs(out, FIGS["gmvae-arcs"])
    for tag in ("constraint", "no_constraint"):
        assert 0.0 <= metrics[f"{tag}/acc_hungarian"] <= 1.0
        assert 0.0 <= metrics[f"{tag}/acc_makhzani"] <= 1.0
        assert metrics[f"{tag}/active_components"] >= 1
    assert metrics["constraint/lambda"] > 0
    assert "gmm/acc_hungarian" in metrics


@pytest.mark.slow
def test_gmvae_mnist_quick(tmp_path):
    out = tmp_path / "mnist"
    run_experiment("gmvae-mnist", out, quick=True, sets=["data.eval_limit=200"])
    metrics = _check_outputs(out, FIGS["gmvae-mnist"])
    assert 0.0 <= metrics["table1/K10_M1/best"] <= 100.0
    report = (out / "report.md").read_text()
    assert "## Table 1" in report and "87.31" in report  # the paper's best K=10, M=1 run beside ours


def test_gmvae_svhn_without_data_is_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("WAE_DATA", str(empty))
    with pytest.raises(WAEError, match="gmvae-svhn needs the SVHN data set") as exc:
        run_experiment("gmvae-svhn", tmp_path / "svhn", quick=True)
    assert "svhn" in str(exc.value).lower() and "\n" not in str(exc.value)
    assert not (tmp_path / "svhn" / "report.md").exists()


def test_unknown_experiment_option_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="exp.bogus"):
        run_experiment("gmvae-mnist", tmp_path / "m", quick=True, sets=["exp.bogus=1"])
