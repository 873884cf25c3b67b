"""`wae reproduce ... --quick` writes every figure it promises and a report (short CPU runs)."""
import json

import pytest

from wae.experiments import list_experiments, run_experiment

FIGS = {
    "gm-wae-mnist": ["fig2a_reconstructions", "fig2b_samples_per_component", "fig2c_samples_half_std",
                     "fig3a_interpolations", "fig3b_mode_interpolations", "fig5a_qD_heatmap", "fig5b_latent_embedding"],
    "gm-wae-elbo-collapse": ["fig1_step35_qD_heatmap", "fig1_step35_reconstructions", "fig1_step60_qD_heatmap",
                        "fig1_step60_reconstructions", "fig1_loss_terms", "active_components"],
    "vae-from-wae": ["fig4a_reconstructions_at_init", "fig4b_reconstructions_after", "fig4c_learning_curves"],
    "wae-mnist": [f"{m}_{f}" for m in ("wae-mmd", "wae-gan", "vae") for f in ("reconstructions", "samples",
                                                                              "interpolations")],
}


def test_experiments_are_registered():
    names = {n for n, _ in list_experiments()}
    assert set(FIGS) <= names


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """name → the output directory of `wae reproduce NAME --quick` (data.eval_limit=300), run once in this module."""
    done = {}

    def run(name):
        if name not in done:
            done[name] = tmp_path_factory.mktemp("quick") / name
            run_experiment(name, done[name], quick=True, sets=["data.eval_limit=300"])
        return done[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGS))
def test_quick_reproduction_writes_figures_and_report(quick, name):
    out = quick(name)
    for f in FIGS[name]:
        assert (out / "figures" / f"{f}.png").exists(), f
    report = (out / "report.md").read_text()
    assert "Quick run" in report and "## Metrics" in report
    assert (out / "report.html").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics


def test_wae_celeba_without_data_is_one_clear_error(tmp_path, monkeypatch):
    from wae.errors import WAEError

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WAEError) as e:
        run_experiment("wae-celeba", tmp_path / "out", quick=True)
    assert "celeba" in str(e.value).lower() and "\n" not in str(e.value)


def test_unknown_experiment_is_a_config_error(tmp_path):
    from wae.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown experiment"):
        run_experiment("nope", tmp_path)


@pytest.mark.slow
def test_vae_from_wae_reuses_a_trained_gm_wae(quick, tmp_path):
    """exp.from=RUN: the GM-VAE starts from that run's networks; no GM-WAE is trained again."""
    src = quick("gm-wae-mnist") / "run"  # the quick reproduction's run, only read here
    out = tmp_path / "v"
    m = run_experiment("vae-from-wae", out, quick=True, sets=["data.eval_limit=300", f"exp.from={src}"])
    assert not (out / "gm-wae-run").exists()
    assert m["gm-wae/test/acc_paper"] == json.loads((src / "metrics.json").read_text())["test/acc_paper"]
    for f in FIGS["vae-from-wae"]:
        assert (out / "figures" / f"{f}.png").exists(), f
    assert "exp.from" in (out / "report.md").read_text()


def test_exp_from_errors(tmp_path):
    from wae.errors import ConfigError, WAEError

    with pytest.raises(WAEError, match="not a run directory"):
        run_experiment("vae-from-wae", tmp_path / "v", quick=True, sets=[f"exp.from={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="unknown experiment option"):
        run_experiment("gm-wae-mnist", tmp_path / "g", quick=True, sets=["exp.nope=1"])


@pytest.mark.parametrize("quiet", [False, True])
def test_wae_reproduce_shows_each_run_s_progress_and_quiet_hides_it(tmp_path, capsys, monkeypatch, quiet):
    """`wae reproduce` trains with `wae train`'s progress (lines and bar) unless --quiet; the library call is quiet."""
    from wae.cli import main
    from wae.experiments import common

    seen = []

    class Stop(Exception):
        pass

    def fake_train(cfg, out, quiet, **kw):
        seen.append(quiet)
        raise Stop

    monkeypatch.setattr(common, "train", fake_train)
    with pytest.raises(Stop):
        main(["reproduce", "gm-wae-mnist", "--quick", "--out", str(tmp_path / "r"), *(["--quiet"] if quiet else [])])
    out = capsys.readouterr().out
    assert seen == [quiet]
    assert ("training gm-wae →" in out) is not quiet, out
    with pytest.raises(Stop):
        run_experiment("gm-wae-mnist", tmp_path / "lib", quick=True)
    assert seen[-1] is True and capsys.readouterr().out == ""
