"""Restarts: several candidate starts, the one with the lowest training objective kept (no labels read)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wae.cli import main
from wae.config import RunConfig
from wae.data import Dataset
from wae.data.splits import RunData
from wae.errors import ConfigError


def _cfg(restarts=1, fraction=0.3, select="tail", **train):
    d = {"model": {"name": "gm-wae", "latent_dim": 3, "num_components": 3, "width": 0.05},
         "data": {"dataset": "npz:unused"},
         "train": {"batch_size": 16, "pretrain_steps": 2, "max_steps": 6, "epochs": 50,
                   "restarts": {"count": restarts, "fraction": fraction, "select": select}, **train}}
    return RunConfig.from_dict(d)


def _data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 6, generator=g) + 3 * torch.eye(6)[y]
    return RunData(Dataset("blobs", x, y), None, None)


def test_the_kept_start_is_the_candidate_with_the_lowest_objective():
    from wae.training.restarts import _LossTracker, restart_seed, select_start
    from wae.training.run import fit_in_memory

    cfg = _cfg(restarts=3, fraction=4 / 6)
    state, losses, _ = select_start(cfg, _data())[:3]
    assert len(losses) == 3 and all(np.isfinite(losses))
    # each candidate replayed alone: same objective values, and the kept state is the argmin's
    replay = []
    for i in range(3):
        c = _cfg(restarts=1, max_steps=4, seed=restart_seed(0, i))
        tr = _LossTracker()
        model, steps = fit_in_memory(c, _data(), callbacks=[tr], refit=False)
        tail = tr.losses[-1:]
        replay.append((sum(tail) / len(tail), model.state_dict()))
        assert steps.total == steps.kept == 4 and steps.pretrain == 2 and not steps.clock_stopped
    assert [r[0] for r in replay] == pytest.approx(losses, rel=1e-6)
    best = int(np.argmin(losses))
    for k, v in replay[best][1].items():
        assert torch.equal(v, state[k]), k
    assert restart_seed(5, 0) == 5 and len({restart_seed(5, i) for i in range(10)}) == 10


def test_a_run_with_restarts_counts_every_optimiser_step_and_records_the_objectives(tmp_path):
    """``train/steps`` is every optimiser step (the discarded start's 3 too: 7 + 3), ``train/steps_kept_run`` the kept
    run's (its start's 3 and 4 after them: max_steps), ``train/pretrain_steps`` both starts' pre-training."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.savez(tmp_path / "d.npz", x=(rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]).astype(np.float32), y=y)
    run = tmp_path / "run"
    assert main(["train", "gm-wae", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", str(run), "--quiet",
                 "--set", "model.width=0.05", "--set", "num_components=3", "--set", "latent_dim=3",
                 "--set", "batch_size=16", "--set", "pretrain_steps=2", "--set", "max_steps=7",
                 "--set", "restarts.count=2", "--set", "restarts.fraction=0.43", "--set", "figures=false",
                 "--set", "checkpoint_every_minutes=0"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["train/steps"] == 10 and m["train/steps_kept_run"] == 7 and m["train/pretrain_steps"] == 4
    assert m["train/clock_stopped"] is False and "train_note" not in m and len(m["train/restart_losses"]) == 2


def test_restart_settings_are_checked():
    with pytest.raises(ConfigError, match="needs a train.max_steps"):
        _cfg(restarts=2, max_steps=-1).validate()  # no max_steps to take a fraction of
    with pytest.raises(ConfigError, match="shorter than train.max_steps"):
        _cfg(restarts=2, max_steps=1).validate()  # a start of >= 1 step leaves nothing after it
    with pytest.raises(ConfigError, match="restarts.fraction"):
        _cfg(restarts=2, fraction=1.0).validate()
    with pytest.raises(ConfigError, match="shorter than train.max_steps"):
        _cfg(restarts=2, fraction=0.95).validate()  # round(0.95 × 6) = 6 steps: nothing after the start
    with pytest.raises(ConfigError, match="restarts.count"):
        _cfg(restarts=0).validate()
    for removed in ("best", "fixed", "consensus"):
        with pytest.raises(ConfigError, match="restarts.select"):
            _cfg(restarts=2, select=removed).validate()


def test_candidate_steps_default_to_a_fraction_of_the_budget():
    assert _cfg(restarts=3, max_steps=3000).train.candidate_steps == 900  # restarts.fraction 0.3
    assert _cfg(restarts=3, max_steps=150).train.candidate_steps == 45  # a shorter --max-steps shortens the starts
    assert _cfg(restarts=3, max_steps=2).train.candidate_steps == 1  # at least one step
    _cfg(restarts=3, max_steps=150).validate()


def _replayed_candidates(n: int = 3, steps: int = 4) -> list:
    """Candidate starts 0..n-1 of seed 0 trained alone, as ``select_start`` trains them."""
    from wae.training.restarts import restart_seed
    from wae.training.run import fit_in_memory

    return [fit_in_memory(_cfg(restarts=1, max_steps=steps, seed=restart_seed(0, i)), _data(), refit=False)[0]
            for i in range(n)]


def _assert_same_state(model, state: dict) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_a_resumed_run_still_counts_its_kept_starts_steps_and_ends_where_an_uninterrupted_one_does(tmp_path):
    """The kept start's steps and the candidates' time travel in the checkpoint: stopping a restarted run at step 5
    and resuming it to 7 trains the same 7 steps as one run to 7 (not 7 more). Starts of 10 % of the budget: one
    step for 5 and for 7. Batches of 54 of the 108 training examples: the trainer's 4 steps after the kept start's
    one end on an epoch boundary, where resume is exact."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.savez(tmp_path / "d.npz", x=(rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]).astype(np.float32), y=y)
    common = ["train", "gm-wae", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--quiet", "--set", "model.width=0.05",
              "--set", "num_components=3", "--set", "latent_dim=3", "--set", "batch_size=54", "--set",
              "pretrain_steps=2", "--set", "restarts.count=2", "--set", "restarts.fraction=0.1", "--set",
              "figures=false", "--set", "checkpoint_every_minutes=0", "--set", "train.sample_metrics=[]"]
    # a throwaway fit first: a process's first fit can differ from later ones in the last float digit (seen at one
    # thread, as under xdist), and Adam turns that into visible differences in the biases before batch norm
    assert main([*common, "--set", "max_steps=3", "--out", str(tmp_path / "warm")]) == 0
    assert main([*common, "--set", "max_steps=7", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--set", "max_steps=5", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train/steps_kept_run"] == 5
    assert main([*common, "--set", "max_steps=7", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert b["train/steps_kept_run"] == a["train/steps_kept_run"] == 7
    assert b["train/steps"] == a["train/steps"] == 8 and b["train/pretrain_steps"] == a["train/pretrain_steps"] == 4
    assert b["train/restart_losses"] == pytest.approx(a["train/restart_losses"])
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / r / "model.safetensors")) for r in "ab")
    assert wa.keys() == wb.keys()
    for k in wa:  # the same steps trained: the same weights (a resume that forgot the kept start's step trains 1 more)
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k
    held_out = [k for k in a if k.startswith(("val/", "train/recon")) and isinstance(a[k], float)
                and not k.endswith("_seconds")]  # wall times differ between any two runs
    assert held_out
    for k in held_out:
        assert b[k] == pytest.approx(a[k], rel=1e-5), k


def test_restart_select_confidence_keeps_the_most_decisive_candidate_and_needs_clusters():
    from wae.training.restarts import mean_confidence, select_start

    cfg = _cfg(restarts=3, fraction=4 / 6, select="confidence")
    state, values, _ = select_start(cfg, _data())[:3]
    confs = []
    models = _replayed_candidates()
    for model in models:
        x = _data().train.x
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:2000]
        model.eval()
        with torch.no_grad():  # by hand: mean of max_k q(k|x)
            confs.append(float(model.cluster_probs(x[idx]).max(dim=1).values.mean()))
        assert mean_confidence(model, x, seed=0) == pytest.approx(confs[-1], rel=1e-6)
    assert values == pytest.approx([-c for c in confs], rel=1e-6)
    _assert_same_state(models[int(np.argmax(confs))], state)
    wae_cfg = RunConfig.from_dict({"model": {"name": "wae-mmd", "latent_dim": 3, "width": 0.05},
                                   "data": {"dataset": "npz:unused"},
                                   "train": {"batch_size": 16, "max_steps": 6, "epochs": 50,
                                             "restarts": {"count": 2, "fraction": 2 / 6, "select": "confidence"}}})
    with pytest.raises(ConfigError, match="needs a model with clusters"):
        select_start(wae_cfg, _data())


def test_every_restart_select_name_the_config_accepts_has_a_rule():
    from wae.config import RESTART_SELECT
    from wae.training.restarts import RESTART_CRITERIA

    assert set(RESTART_CRITERIA) == set(RESTART_SELECT)


# --- progress during the starts, quiet means quiet, the clock (issue 34, items 4 and 5) ------------------------------


def test_start_progress_lines_come_at_the_start_and_then_at_most_every_interval():
    """A fake clock: one line when the start begins (before its pre-training), then one at the first step ending
    ``every`` seconds or more after the last line, one at the end; each says which start, its step, the time."""
    from types import SimpleNamespace

    from wae.training.restarts import StartProgress

    now, lines = [100.0], []
    p = StartProgress("start 2 of 3", 50, t0=95.0, every=20.0, clock=lambda: now[0],
                      out=lambda s, flush=False: lines.append((now[0], s)))
    trainer = SimpleNamespace(global_step=0)
    p.on_fit_start(trainer, None)
    for step in range(1, 51):  # 3 s a step
        now[0] += 3.0
        trainer.global_step = step
        p.on_train_batch_end(trainer, None, None, None, step - 1)
    p.on_fit_end(trainer, None)
    assert lines[0] == (100.0, "start 2 of 3: training 50 steps (0:05 elapsed)")
    assert lines[1] == (121.0, "start 2 of 3: step 7/50 (0:26 elapsed)")  # the first step ending ≥ 20 s later
    assert lines[-1] == (250.0, "start 2 of 3: done, 50 steps (2:35 elapsed)")
    times = [t for t, _ in lines]
    assert all(20.0 <= b - a < 23.0 for a, b in zip(times[:-2], times[1:-1]))  # every 20-23 s (steps of 3 s)


def _npz(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.savez(tmp_path / "d.npz", x=(rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]).astype(np.float32), y=y)
    return ["train", "gm-wae", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--set", "model.width=0.05",
            "--set", "num_components=3", "--set", "latent_dim=3", "--set", "batch_size=16", "--set", "pretrain_steps=2",
            "--set", "max_steps=7", "--set", "restarts.count=2", "--set", "restarts.fraction=0.43", "--set",
            "figures=false",
            "--set", "checkpoint_every_minutes=0", "--set", "train.sample_metrics=[]"]


def test_wae_train_shows_the_starts_progress_and_quiet_hides_it(tmp_path, capfd):
    args = _npz(tmp_path)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capfd.readouterr().out
    for text in ("2 candidate starts of 3 steps each", "start 1 of 2: training 3 steps",
                 "start 2 of 2: training 3 steps", "start 2 of 2: done, 3 steps", "kept start",
                 "evaluating on the val split (12 examples)"):  # and the final evaluation's phases
        assert text in out, out
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    out = capfd.readouterr().out
    assert not any(t in out for t in ("candidate starts", "start 1 of", "kept start", "evaluating on")), out


def test_estimator_verbose_false_prints_nothing_and_verbose_shows_the_starts(capfd):
    from wae.estimator import GMWAEClustering

    X = _data().train.x.numpy().astype(np.float64)  # vectors: preset cluster-vector, three starts
    GMWAEClustering(3, max_steps=10, random_state=0, device="cpu", verbose=False).fit(X)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    est = GMWAEClustering(3, max_steps=10, random_state=0, device="cpu", verbose=True).fit(X)
    out = capfd.readouterr().out
    assert "start 1 of 3: training 3 steps" in out and "start 3 of 3: done" in out and "kept start" in out, out
    # every optimiser step counted: three starts of 3 steps, the kept one continued to max_steps
    assert (est.n_iter_, est.n_iter_kept_, est.clock_stopped_) == (10 + 2 * 3, 10, False)


def test_a_clock_stopped_fit_says_so_and_is_counted(tmp_path):
    from wae.estimator import GMWAEClustering
    from wae.training.run import fit_in_memory

    model, count = fit_in_memory(_cfg(restarts=1, max_steps=100_000, max_minutes=1e-5), _data(), refit=False)
    assert count.clock_stopped and count.kept == count.total < 100_000
    assert "not reproducible" in count.note(_cfg(max_minutes=1e-5).train)
    model, count = fit_in_memory(_cfg(restarts=1, max_steps=6), _data(), refit=False)
    assert not count.clock_stopped and count.note(_cfg().train) is None
    X = _data().train.x.numpy().astype(np.float64)
    with pytest.warns(UserWarning, match="not reproducible"):
        est = GMWAEClustering(3, max_steps=100_000, max_minutes=1e-5, random_state=0, device="cpu",
                              overrides=["train.restarts.count=1"]).fit(X)  # one start: the kept run is the whole clock
    assert est.clock_stopped_ and est.n_iter_kept_ < 100_000
    run = tmp_path / "run"
    assert main([*_npz(tmp_path), "--out", str(run), "--quiet", "--set", "max_steps=100000",
                 "--set", "train.max_minutes=1e-5"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["train/clock_stopped"] is True and "not reproducible" in m["train_note"]
    assert m["train/steps_kept_run"] < 100_000


def test_the_candidate_starts_share_the_clock_so_a_slow_machine_keeps_the_budget():
    import time

    from wae.training.run import fit_in_memory

    # the share: each start's steps over all steps trained (count 3, fraction 0.3: 3/16 of the clock each)
    assert _cfg(restarts=3, max_minutes=9.5).train.candidate_minutes == pytest.approx(9.5 * 3 / 16)
    assert _cfg(restarts=1, max_minutes=9.5).train.candidate_minutes is None
    assert _cfg(restarts=3).train.candidate_minutes is None
    # steps no machine finishes in 3 s: the starts stop at their shares, the kept run at the rest of the clock
    cfg = _cfg(restarts=3, max_steps=10_000_000, max_minutes=0.05)
    t0 = time.monotonic()
    model, count = fit_in_memory(cfg, _data(), refit=False)
    wall = time.monotonic() - t0
    assert wall < 3.0 + 2.0, wall  # the budget and the set-up of four trainers; the starts alone used to take days
    assert count.clock_stopped and count.starts_cut and count.kept < 10_000_000
    assert "not reproducible" in count.note(cfg.train)
    # a budget the steps fit in: no candidate cut, the note silent
    model, count = fit_in_memory(_cfg(restarts=3, max_steps=10, max_minutes=10.0), _data(), refit=False)
    assert not count.clock_stopped and not count.starts_cut and count.note(_cfg().train) is None


def test_a_long_evaluation_phase_says_again_what_it_is_doing():
    """The evaluation's heartbeat: a phase running past ``every`` seconds without a line is repeated with its time;
    a quick one is not; None says nothing and starts no thread."""
    import threading
    import time

    from wae.evaluation.runner import heartbeat

    lines = []
    with heartbeat(lines.append, every=0.2) as say:
        say("UMAP → Gaussian mixture baseline on the test split (10 examples)")
        time.sleep(0.75)
        say("figures and report")
    assert lines[0].startswith("UMAP") and lines[-1] == "figures and report"
    beats = lines[1:-1]
    assert 2 <= len(beats) <= 4 and all(b.startswith("  … UMAP → Gaussian mixture baseline on the test split: 0:00")
                                        for b in beats), lines
    n_threads = threading.active_count()
    with heartbeat(None) as say:
        say("nothing")
        assert threading.active_count() == n_threads
