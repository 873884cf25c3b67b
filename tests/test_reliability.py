"""Reliability: SIGKILL and --resume, planted pickles, atomic writes, NaN handling, run locks, unwritable output."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import gloo_on_loopback
from wae.errors import WAEError

RUN = ["train", "wae-mmd", "--dataset", "mnist-5k", "--set", "width=0.0625", "--set", "data.limit=400",
       "--set", "data.eval_limit=100", "--set", "pretrain_steps=0", "--batch-size", "50", "--epochs", "2",
       "--set", "figures=false", "--set", "checkpoint_every_minutes=0.0001", "--quiet"]
STEPS_PER_EPOCH, EPOCHS = 8, 2  # 400 examples / batch 50

# Runs the CLI; with WAE_TEST_KILL_AT_STEP=K the process SIGKILLs itself when training step K begins,
# with WAE_TEST_TERM_AT_STEP=T it sends itself SIGTERM (as a scheduler or `timeout` would) inside step T, with
# WAE_TEST_INT_AT_STEP=I SIGINT (Ctrl+C) inside step I.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from wae.training import module
    K = int(os.environ.get("WAE_TEST_KILL_AT_STEP", "-1"))
    T = int(os.environ.get("WAE_TEST_TERM_AT_STEP", "-1"))
    I = int(os.environ.get("WAE_TEST_INT_AT_STEP", "-1"))
    if I >= 0:  # a shell starts background jobs with SIGINT ignored: restore Python's Ctrl+C behaviour
        signal.signal(signal.SIGINT, signal.default_int_handler)
    orig = module.LitAutoEncoder.training_step
    def step(self, idx, batch_idx):
        if self.global_step == K:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.global_step == T and os.environ.get("LOCAL_RANK", "0") == "0":  # DDP: rank 0 only, as `kill PID`
            os.kill(os.getpid(), signal.SIGTERM)
        if self.global_step == I:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, idx, batch_idx)
    module.LitAutoEncoder.training_step = step
    if os.environ.get("WAE_TEST_TERM_IN_EVAL"):
        from wae.evaluation import runner
        orig_eval = runner.evaluate_run
        def evaluate_run(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return orig_eval(*args, **kwargs)
        runner.evaluate_run = evaluate_run
    from wae.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _env(tmp):
    return {**os.environ, "PYTHONWARNINGS": "ignore", "WAE_DATA": str(Path(tmp) / "no-data")}


def _popen(args, tmp, kill_at=None, term_at=None, int_at=None):
    env = _env(tmp)
    if kill_at is not None:
        env["WAE_TEST_KILL_AT_STEP"] = str(kill_at)
    if term_at is not None:
        env["WAE_TEST_TERM_AT_STEP"] = str(term_at)
    if int_at is not None:
        env["WAE_TEST_INT_AT_STEP"] = str(int_at)
    script = Path(tmp) / "wae_killer.py"  # a file, not `-c`: Lightning's DDP launcher re-runs sys.argv per rank
    script.write_text(KILLER)
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp)


def _wait(p, timeout=240):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _leftovers(d: Path):
    return sorted(str(p) for p in d.rglob("*.tmp"))


@pytest.fixture(scope="module")
def kill_resume(tmp_path_factory):
    """An uninterrupted run and, in parallel, the same run SIGKILLed mid-epoch at a random step, then resumed."""
    tmp = tmp_path_factory.mktemp("kill")
    k = random.randint(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH - 1)  # mid-epoch in epoch 1
    base, killed = tmp / "base", tmp / "killed"
    pb = _popen([*RUN, "--out", str(base)], tmp)
    pk = _popen([*RUN, "--out", str(killed)], tmp, kill_at=k)
    rk, _, errk = _wait(pk)
    state = {"k": k, "kill_rc": rk, "kill_err": errk, "tmp_after_kill": _leftovers(killed),
             "lock_after_kill": (killed / ".lock").exists()}
    ck = killed / "checkpoints" / "last.ckpt"
    if ck.exists():
        from wae.training.checkpoint import load_checkpoint_safely

        c = load_checkpoint_safely(ck)
        state["ckpt_step"], state["ckpt_epoch"] = c["global_step"], c["epoch"]
    rr, _, errr = _wait(_popen([*RUN, "--out", str(killed), "--resume"], tmp))
    state.update(resume_rc=rr, resume_err=errr, killed=killed)
    rb, _, errb = _wait(pb)
    assert rb == 0, errb[-2000:]
    state["base"] = base
    return state


def test_sigkill_mid_epoch_loses_at_most_one_interval_and_resume_finishes(kill_resume):
    s = kill_resume
    k = s["k"]
    assert s["kill_rc"] == -signal.SIGKILL, s["kill_err"][-2000:]
    assert s["tmp_after_kill"] == []
    assert s["lock_after_kill"]  # a stale lock of a dead pid ...
    # the checkpoint written after step k-1 holds k optimiser steps: nothing but the interrupted step is lost
    assert s["ckpt_step"] == k, s
    assert s["ckpt_epoch"] == k // STEPS_PER_EPOCH
    assert s["resume_rc"] == 0, s["resume_err"][-2000:]
    killed = s["killed"]
    assert not (killed / ".lock").exists()  # ... taken over by the resumed run and released
    assert _leftovers(killed) == []
    m = json.loads((killed / "metrics.json").read_text())
    b = json.loads((s["base"] / "metrics.json").read_text())
    assert m["train/steps"] == b["train/steps"] == EPOCHS * STEPS_PER_EPOCH
    assert m["train/epochs"] == EPOCHS
    for key in ("test/recon_mse", "test/mmd_prior"):
        assert m[key] == pytest.approx(b[key], rel=0.1), (key, k)  # within noise


def test_resumed_run_matches_uninterrupted_run_exactly(kill_resume):
    m = json.loads((kill_resume["killed"] / "metrics.json").read_text())
    b = json.loads((kill_resume["base"] / "metrics.json").read_text())
    for key in ("test/recon_mse", "test/mmd_prior", "test/recon_mse_pixel"):
        assert m[key] == b[key], (key, kill_resume["k"])


def test_resumed_run_has_byte_identical_weights(kill_resume):
    assert (kill_resume["killed"] / "model.safetensors").read_bytes() == \
        (kill_resume["base"] / "model.safetensors").read_bytes(), kill_resume["k"]


def test_sigterm_saves_the_step_exits_143_with_a_message_and_resume_matches_exactly(kill_resume, tmp_path):
    """SIGTERM mid-epoch: the step in progress finishes, a checkpoint of it is written, one line says so, exit 143;
    --resume then ends exactly where the uninterrupted run ends (nothing lost, nothing trained twice)."""
    from wae.training.checkpoint import load_checkpoint_safely

    t = STEPS_PER_EPOCH + 3  # mid-epoch in epoch 1
    # a 60-minute period: only the epoch-end checkpoint (step 8) would exist without the SIGTERM save
    run = [a if a != "checkpoint_every_minutes=0.0001" else "checkpoint_every_minutes=60" for a in RUN]
    out = tmp_path / "termed"
    rc, _, err = _wait(_popen([*run, "--out", str(out)], tmp_path, term_at=t))
    assert rc == 143, err[-2000:]
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0], err[-2000:]
    assert "Traceback" not in err
    c = load_checkpoint_safely(out / "checkpoints" / "last.ckpt")
    assert c["global_step"] == t + 1  # the step that was running when the signal came is kept
    assert not (out / ".lock").exists() and _leftovers(out) == []
    rr, _, errr = _wait(_popen([*run, "--out", str(out), "--resume"], tmp_path))
    assert rr == 0, errr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    b = json.loads((kill_resume["base"] / "metrics.json").read_text())
    assert m["train/steps"] == b["train/steps"]
    for key in ("test/recon_mse", "test/mmd_prior", "test/recon_mse_pixel"):
        assert m[key] == b[key], key


def test_sigterm_during_the_final_evaluation_ends_in_one_line_and_resume_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("WAE_TEST_TERM_IN_EVAL", "1")
    out = tmp_path / "ev"
    rc, _, err = _wait(_popen([*RUN, "--out", str(out)], tmp_path))
    assert rc == 143, err[-2000:]
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
    assert len(lines) == 1 and "during the final evaluation" in lines[0] and "--resume" in lines[0], err[-2000:]
    assert "Traceback" not in err and not (out / "metrics.json").exists()
    assert not (out / ".lock").exists() and _leftovers(out) == []
    monkeypatch.delenv("WAE_TEST_TERM_IN_EVAL")
    rr, _, errr = _wait(_popen([*RUN, "--out", str(out), "--resume"], tmp_path))
    assert rr == 0, errr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["train/steps"] == EPOCHS * STEPS_PER_EPOCH


def test_sigterm_under_ddp_stops_every_rank_together_saves_and_resumes(tmp_path, monkeypatch):
    """Two CPU processes (gloo), SIGTERM to rank 0 only. Lightning's own handler runs a collective inside the signal
    handler and hung both ranks here; ours stops them at the same step boundary: one line, exit 143, the finished
    step saved, no process left behind, and --resume completes the run."""
    gloo_on_loopback(monkeypatch)
    ddp = [*RUN, "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--set", "checkpoint_every_minutes=60"]
    steps_per_epoch = STEPS_PER_EPOCH // 2  # each rank takes half of every epoch's batches
    t = steps_per_epoch + 1  # mid-epoch in epoch 1
    out = tmp_path / "ddp"
    p = _popen([*ddp, "--out", str(out)], tmp_path, term_at=t)
    rc, _, err = _wait(p)
    assert rc == 143, err[-2000:]
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0], err[-2000:]
    assert "Traceback" not in err
    from wae.training.checkpoint import load_checkpoint_safely

    assert load_checkpoint_safely(out / "checkpoints" / "last.ckpt")["global_step"] == t + 1
    assert not (out / ".lock").exists() and _leftovers(out) == []
    time.sleep(1)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps, "a rank was left running"
    rr, _, errr = _wait(_popen([*ddp, "--out", str(out), "--resume"], tmp_path))
    assert rr == 0, errr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["train/steps"] == EPOCHS * steps_per_epoch


def test_resume_with_fewer_epochs_than_done_is_refused_in_one_line_and_keeps_the_run(kill_resume):
    base = kill_resume["base"]  # a finished 2-epoch run
    before = {f: (base / f).read_bytes() for f in ("config.yaml", "metrics.json", "checkpoints/last.ckpt")}
    run = [a if a != "2" else "1" for a in RUN]  # --epochs 1
    rc, _, err = _wait(_popen([*run, "--out", str(base), "--resume"], base.parent))
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
    assert len(lines) == 1 and "trained 2 epochs" in lines[0] and "train.epochs=1" in lines[0], err[-2000:]
    assert {f: (base / f).read_bytes() for f in before} == before
    assert not (base / ".lock").exists()


def test_ctrl_c_exits_130_with_one_line_naming_the_checkpoint_kept(tmp_path):
    """Ctrl+C can land inside an optimiser step: nothing half-updated is saved, the last whole checkpoint is named."""
    out = tmp_path / "int"
    rc, _, err = _wait(_popen([*RUN, "--out", str(out)], tmp_path, int_at=5))
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
    assert len(lines) == 1 and "interrupted at step 5" in lines[0] and "of step 5" in lines[0], err[-2000:]
    assert not (out / ".lock").exists() and _leftovers(out) == []


def test_sigkill_during_checkpoint_write_keeps_a_valid_checkpoint(tmp_path):
    """Kill from outside, preferably while a checkpoint's temporary file exists; then --resume."""
    out = tmp_path / "run"
    ckdir = out / "checkpoints"
    p = _popen([*RUN, "--out", str(out)], tmp_path)
    deadline = time.monotonic() + 120
    saw_tmp = False
    while p.poll() is None and time.monotonic() < deadline:
        if ckdir.is_dir() and (ckdir / "last.ckpt").exists():
            if list(ckdir.glob("*.tmp")):
                saw_tmp = True
                break
            if time.monotonic() > deadline - 105:  # give up waiting for a write in progress after ~15 s
                break
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    _wait(p)
    from wae.training.checkpoint import load_checkpoint_safely

    assert "global_step" in load_checkpoint_safely(ckdir / "last.ckpt")  # complete, loadable
    # a temporary file may be left by the kill (swept by the next run: test_periodic_checkpoint_sweeps_...);
    # resuming after a kill is covered by the kill_resume fixture
    assert all(Path(t).name.startswith(".last.ckpt.") for t in _leftovers(out)), saw_tmp


# --- planted pickle ------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Payload(marker)}, path)


def test_planted_pickle_in_checkpoint_is_refused_by_load_checkpoint_safely(tmp_path):
    from wae.training.checkpoint import AtomicCheckpointIO, load_checkpoint_safely

    marker = tmp_path / "PWNED"
    ck = tmp_path / "last.ckpt"
    _plant(ck, marker)
    for load in (load_checkpoint_safely, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(WAEError) as e:
            load(ck)
        assert "refusing to load checkpoint" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    # a plain pickle (not a torch zip) too
    ck2 = tmp_path / "plain.ckpt"
    ck2.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(WAEError):
        load_checkpoint_safely(ck2)
    assert not marker.exists()


def test_planted_pickle_as_last_ckpt_resume_exits_2_and_runs_nothing(tmp_path, capsys, monkeypatch):
    from wae.cli import main

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    _plant(out / "checkpoints" / "last.ckpt", marker)
    args = list(RUN)
    args[args.index("--epochs") + 1] = "1"
    rc = main([*args, "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and "refusing to load checkpoint" in err, err
    assert not (out / ".lock").exists()


def _saved_model(tmp_path):
    from wae.config import RunConfig
    from wae.io import save_model
    from wae.models.registry import create_model

    cfg = RunConfig.from_dict({"model": {"name": "wae-mmd", "width": 0.0625}})
    model = create_model("wae-mmd", (1, 28, 28), cfg.model_config)
    d = tmp_path / "m"
    save_model(model, d, cfg)
    return d


@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "pickle", "empty", "huge_header"])
def test_load_of_corrupt_safetensors_is_a_wae_error(tmp_path, corrupt):
    import wae

    d = _saved_model(tmp_path)
    f = d / "model.safetensors"
    marker = tmp_path / "PWNED"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(2000),
                   "pickle": pickle.dumps(_Payload(marker)), "empty": b"",
                   "huge_header": (2 ** 62).to_bytes(8, "little") + b"{}"}[corrupt])
    with pytest.raises(WAEError) as e:
        wae.load(d)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_load_of_safetensors_with_wrong_shapes_is_a_wae_error(tmp_path):
    from safetensors.torch import load_file, save_file

    import wae

    d = _saved_model(tmp_path)
    f = d / "model.safetensors"
    state = load_file(str(f))
    save_file({k: torch.zeros(v.numel() + 1) for k, v in state.items()}, str(f))
    with pytest.raises(WAEError):
        wae.load(d)


# --- atomic writes ---------------------------------------------------------------------------------------------


def test_atomic_write_with_crash_mid_write_keeps_old_file(tmp_path):
    from wae.io import atomic_write_with

    f = tmp_path / "metrics.json"
    f.write_text("old")

    def writer(tmp):
        with open(tmp, "w") as fh:
            fh.write("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_with(f, writer)
    assert f.read_text() == "old"
    assert list(tmp_path.iterdir()) == [f]


def test_checkpoint_save_crash_mid_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    from wae.training import checkpoint as ck

    io = ck.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def crashing_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        with open(f, "r+b") as fh:  # a partial file, then the crash
            fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_sigkill_inside_atomic_write_leaves_old_file(tmp_path):
    f = tmp_path / "last.ckpt"
    f.write_bytes(b"old")
    code = (f"import os, signal\nfrom wae.io import atomic_write_with\n"
            f"def w(tmp):\n    open(tmp, 'wb').write(b'partial')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write_with({str(f)!r}, w)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert f.read_bytes() == b"old"


def test_periodic_checkpoint_sweeps_stale_temp_files(tmp_path):
    from types import SimpleNamespace

    from wae.training.checkpoint import PeriodicCheckpoint

    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "other.tmp").write_bytes(b"not ours")
    PeriodicCheckpoint(tmp_path).setup(SimpleNamespace(is_global_zero=True), None, "fit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tmp"]


# --- numerical faults ----------------------------------------------------------------------------------------


def _poison(monkeypatch, at_step):
    from wae.training import module

    orig = module.LitAutoEncoder._batch
    calls = []

    def batch(self, idx, raw=None):
        x = orig(self, idx, raw)
        calls.append(1)
        return x * float("nan") if len(calls) == at_step + 1 else x  # the (at_step+1)-th batch, once

    monkeypatch.setattr(module.LitAutoEncoder, "_batch", batch)


def _nan_run(tmp_path, monkeypatch, *extra):
    from wae.cli import main

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    args = list(RUN)
    args[args.index("--epochs") + 1] = "1"
    out = tmp_path / "run"
    return main([*args, "--out", str(out), *extra]), out


def test_nan_loss_exits_3_naming_step_and_term_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, at_step=5)
    rc, out = _nan_run(tmp_path, monkeypatch)
    err = capsys.readouterr().err.strip()
    assert rc == 3, err
    assert len(err.splitlines()) == 1
    assert "non-finite loss at step 5" in err and "recon" in err, err
    from wae.training.checkpoint import load_checkpoint_safely

    c = load_checkpoint_safely(out / "checkpoints" / "last.ckpt")
    assert 1 <= c["global_step"] <= 5
    assert all(torch.isfinite(v).all() for v in c["state_dict"].values() if v.is_floating_point())
    assert not (out / ".lock").exists() and not (out / "model.safetensors").exists()


def test_nan_loss_with_on_nan_skip_continues(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, at_step=5)
    rc, out = _nan_run(tmp_path, monkeypatch, "--set", "on_nan=skip")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "batch skipped" in cap.out + cap.err
    m = json.loads((out / "metrics.json").read_text())
    assert m["train/steps"] in (STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH)  # ran to the end of the epoch


def test_nan_loss_with_on_nan_skip_keeps_the_model_finite(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, at_step=5)
    rc, out = _nan_run(tmp_path, monkeypatch, "--set", "on_nan=skip")
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["test/recon_mse"] is not None and m["test/recon_mse"] > 0


def test_huge_lr_diverges_to_exit_3(tmp_path, capsys, monkeypatch):
    rc, out = _nan_run(tmp_path, monkeypatch, "--set", "lr=1e30")
    err = capsys.readouterr().err.strip()
    assert rc == 3, err
    assert "non-finite" in err and "step" in err and len(err.splitlines()) == 1


# --- concurrent runs and output directories ------------------------------------------------------------------


def test_second_run_into_a_locked_directory_exits_2(tmp_path, capsys, monkeypatch):
    from wae.cli import main

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(str(os.getpid()))  # a live process holds it
    rc = main([*RUN, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "in use" in err and len(err.splitlines()) == 1, err
    assert (out / ".lock").read_text() == str(os.getpid())  # the holder's lock is left alone
    assert not (out / "checkpoints").exists()


def test_stale_lock_is_taken_over(tmp_path):
    from wae.training.rundir import RunLock

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (tmp_path / ".lock").write_text(str(p.pid))  # dead pid
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        with pytest.raises(WAEError, match="in use"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text("garbage")  # unreadable content counts as stale
    with RunLock(tmp_path):
        pass


@pytest.mark.parametrize("how", ["parent_is_file", "chmod"])
def test_unwritable_output_dir_exits_2(tmp_path, capsys, monkeypatch, how):
    from wae.cli import main

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    if how == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "run"
    rc = main([*RUN, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "cannot write to output directory" in err, err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_is_found_by_the_fused_check(bad):
    from wae.config import TrainConfig
    from wae.errors import TrainingError
    from wae.models import create_model
    from wae.training.module import LitAutoEncoder

    model = create_model("wae-mmd", (1, 28, 28), width=0.0625)
    lit = LitAutoEncoder(model, TrainConfig())
    params = dict(model.named_parameters())
    for p in params.values():
        p.grad = torch.zeros_like(p)
    lit.on_before_optimizer_step(None)  # all finite: nothing happens
    name = list(params)[3]
    params[name].grad.view(-1)[5] = bad
    with pytest.raises(TrainingError, match=name.replace(".", r"\.")):
        lit.on_before_optimizer_step(None)
    skip = LitAutoEncoder(model, TrainConfig(on_nan="skip"))
    skip.print = lambda *a, **k: None
    skip.on_before_optimizer_step(None)
    assert all(p.grad is None for p in model.parameters())  # the update is dropped


def test_non_finite_loss_term_is_named_by_the_fused_check():
    from wae.config import TrainConfig
    from wae.errors import TrainingError
    from wae.models import create_model
    from wae.training.module import LitAutoEncoder

    lit = LitAutoEncoder(create_model("wae-mmd", (1, 28, 28), width=0.0625), TrainConfig())
    assert lit._check({"loss": torch.tensor(1.0), "mmd": torch.tensor(0.1), "_aux": torch.tensor(float("nan"))})
    with pytest.raises(TrainingError, match="in term\\(s\\) mmd"):
        lit._check({"loss": torch.tensor(1.0), "mmd": torch.tensor(float("inf"))})


# --- run directories: validated before the first write, never clobbered (issue 26) ---------------------------------

TINY_RUN = ["train", "wae-mmd", "--dataset", "mnist-5k", "--set", "width=0.0625", "--set", "data.limit=100",
            "--set", "data.eval_limit=50", "--set", "pretrain_steps=0", "--batch-size", "50", "--epochs", "1",
            "--set", "figures=false", "--set", "train.sample_metrics=[]", "--quiet"]


def _main(argv, capsys):
    """(exit code, stdout, stderr) of the CLI run in this process; argparse's own exits count as exit codes."""
    from wae.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wae: error:") and "Traceback" not in err, err[-2000:]
    return lines[0]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny wae-mmd run (figures=false), trained in this process; tests work on copies of it."""
    import pytest as _pytest

    mp = _pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("finished")
    mp.setenv("WAE_DATA", str(tmp / "no-data"))
    from wae.cli import main

    out = tmp / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*TINY_RUN, "--out", str(out)])
    mp.undo()
    assert rc == 0
    return {"dir": out, "stdout": buf.getvalue(), "umask": _current_umask()}


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _copy(finished, tmp_path) -> Path:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(finished["dir"], d)
    return d


def test_figures_false_run_does_not_claim_to_write_figures(finished):
    last = finished["stdout"].strip().splitlines()[-1]
    assert last.startswith("wrote ") and "metrics.json" in last and "figures" not in last, finished["stdout"]
    assert not (finished["dir"] / "figures").exists()


def test_run_outputs_get_the_process_umask(finished):
    mode = 0o666 & ~finished["umask"]
    for f in ("config.yaml", "model.safetensors", "model.yaml", "metrics.json", "checkpoints/last.ckpt"):
        assert (finished["dir"] / f).stat().st_mode & 0o777 == mode, f


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_uses_the_umask_not_0600(tmp_path, mask):
    from wae.files import atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def _tiny_images_npz(path: Path, shape) -> Path:
    import numpy as np

    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (120, *shape), dtype=np.uint8))
    return path


def test_failed_run_into_a_finished_run_leaves_it_untouched(finished, tmp_path, capsys, monkeypatch):
    """A run into a finished run directory is refused before anything is written; with --overwrite, a run whose data
    or model fails its checks still writes nothing (the finished run stays usable)."""
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    before = _snapshot(d)
    bad = _tiny_images_npz(tmp_path / "bad.npz", (5, 5))
    base = ["train", "vae", "--dataset", f"npz:{bad}", "--set", "data.limit=100", "--quiet", "--out", str(d)]
    rc, _, err = _main(base, capsys)
    line = _one_error_line(err)
    assert rc == 2 and "finished run" in line and "--overwrite" in line, line
    rc, _, err = _main([*base, "--overwrite"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "too small" in line, line
    assert _snapshot(d) == before
    import wae

    assert wae.load(d).registry_name == "wae-mmd"


def test_another_model_into_a_run_directory_needs_overwrite_and_then_replaces_it_whole(finished, tmp_path, capsys,
                                                                                          monkeypatch):
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    # mark the old run's outputs, to see that none of them survives beside the new run's
    m = json.loads((d / "metrics.json").read_text())
    (d / "metrics.json").write_text(json.dumps({**m, "old/sentinel": 1}))
    (d / "logs" / "version_7").mkdir(parents=True)
    (d / "logs" / "version_7" / "metrics.csv").write_text("old\n")
    args = [a if a != "wae-mmd" else "vae" for a in TINY_RUN] + ["--out", str(d)]
    before = _snapshot(d)
    rc, _, err = _main(args, capsys)
    assert rc == 2 and "--overwrite" in _one_error_line(err)
    assert _snapshot(d) == before
    rc, out, err = _main([*args, "--overwrite"], capsys)
    assert rc == 0, err
    new = json.loads((d / "metrics.json").read_text())
    assert new["model"] == "vae" and "old/sentinel" not in new
    assert [p.name for p in (d / "logs").iterdir()] == ["version_0"]
    import wae

    assert wae.load(d).registry_name == "vae"
    from wae.presets import load_run_config

    assert load_run_config(d / "config.yaml").model == "vae"


def test_a_run_with_a_checkpoint_is_not_restarted_without_resume_or_overwrite(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    (d / "model.safetensors").unlink()  # killed before the end: config and checkpoint only
    before = _snapshot(d)
    rc, _, err = _main([*TINY_RUN, "--out", str(d)], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "checkpoint" in line and "--overwrite" in line, line
    assert _snapshot(d) == before
    rc, _, err = _main([*TINY_RUN, "--out", str(d), "--resume", "--overwrite"], capsys)
    assert rc == 2 and "pass one" in _one_error_line(err)


def test_resume_refuses_a_changed_setting_with_the_diff_and_keeps_the_config(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    before = _snapshot(d)
    rc, _, err = _main([*TINY_RUN, "--out", str(d), "--resume", "--set", "lr=0.01", "--set", "seed=3"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "train.lr 0.001 → 0.01" in line and "train.seed 0 → 3" in line, line
    # a hand-edited key of config.yaml is not silently dropped either: the same refusal names it
    text = (d / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.002")
    (d / "config.yaml").write_text(text)
    rc, _, err = _main([*TINY_RUN, "--out", str(d), "--resume"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "train.lr 0.002 → 0.001" in line, line
    assert (d / "config.yaml").read_text() == text
    assert {k: v for k, v in _snapshot(d).items() if k != "config.yaml"} == \
        {k: v for k, v in before.items() if k != "config.yaml"}


def test_resume_applies_a_safe_change_and_says_so(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    args = [a if a != "1" else "2" for a in TINY_RUN]  # --epochs 2: one more epoch
    rc, out, err = _main([*args, "--out", str(d), "--resume", "--set", "data.eval_limit=40"], capsys)
    assert rc == 0, err
    notes = [ln for ln in out.splitlines() if ln.startswith("--resume: applying")]
    assert len(notes) == 1 and "train.epochs 1 → 2" in notes[0] and "data.eval_limit 50 → 40" in notes[0], out
    from wae.presets import load_run_config

    cfg = load_run_config(d / "config.yaml")
    assert cfg.train.epochs == 2 and cfg.data.eval_limit == 40
    assert json.loads((d / "metrics.json").read_text())["train/steps"] == 2 * 2  # 100 examples / batch 50


def test_config_of_an_old_run_is_taken_as_it_is(finished, tmp_path, capsys):
    """`wae train --config OLD_RUN/config.yaml` gets the preset of the model the file names (not the main model's),
    for wae-mmd and for models whose keys the main model does not have."""
    from wae.presets import load_run_config, resolve_config

    from wae.models import list_models

    files = {"wae-mmd": finished["dir"] / "config.yaml"}
    for name in [e.name for e in list_models() if e.name != "wae-mmd"]:
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(resolve_config(name).to_yaml())
    for name, f in files.items():
        rc, out, err = _main(["train", "--config", str(f), "--dry-run"], capsys)
        assert rc == 0, (name, err)
        from wae.config import RunConfig

        assert RunConfig.from_yaml(out).to_dict() == load_run_config(f).to_dict(), name


def test_config_with_a_section_that_is_not_a_mapping_is_one_line(tmp_path, capsys):
    for text in ("model: {name: wae-mmd}\ntrain: [1, 2]\n", "model: 5\n", "data: abc\n"):
        f = tmp_path / "c.yaml"
        f.write_text(text)
        rc, _, err = _main(["train", "--config", str(f), "--set", "lr=0.1", "--dry-run"], capsys)
        assert rc == 2 and "mapping" in _one_error_line(err), (text, err)


def test_lock_of_an_unrelated_live_process_says_how_to_clear_it(tmp_path):
    from wae.training.rundir import RunLock

    p = subprocess.Popen(["sleep", "60"])
    try:
        cmdline = Path(f"/proc/{p.pid}/cmdline")
        deadline = time.monotonic() + 10
        while cmdline.exists() and b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has started `sleep`
        (tmp_path / ".lock").write_text(str(p.pid))
        with pytest.raises(WAEError) as e:
            RunLock(tmp_path).__enter__()
        msg = str(e.value)
        assert "\n" not in msg and "in use" in msg and f"delete {tmp_path / '.lock'}" in msg, msg
        if Path(f"/proc/{p.pid}/cmdline").exists():
            assert "not a wae run" in msg and "sleep" in msg, msg
    finally:
        p.kill()
        p.wait()
    assert (tmp_path / ".lock").read_text() == str(p.pid)  # left for the user to judge


def test_nan_at_the_first_step_does_not_claim_a_checkpoint(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, at_step=0)
    rc, out = _nan_run(tmp_path, monkeypatch)
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1, err
    assert "non-finite loss at step 0" in err and "no checkpoint" in err and "is kept" not in err, err
    assert not (out / "checkpoints" / "last.ckpt").exists()


# --- exported weights and outputs: never silent garbage (issue 26) -----------------------------------------------


def _nan_weights(d: Path, name: str | None = None) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    key = name or next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(d / "model.safetensors"))


def test_non_finite_exported_weights_are_refused_by_load_sample_and_encode(finished, tmp_path, capsys, monkeypatch):
    import wae

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    d = _copy(finished, tmp_path)
    _nan_weights(d)
    with pytest.raises(WAEError, match="non-finite"):
        wae.load(d)
    for argv in (["sample", str(d), "--n", "8", "--out", str(tmp_path / "s.npz")],
                 ["sample", str(d), "--n", "8", "--out", str(tmp_path / "s.png")],
                 ["encode", str(d), "--out", str(tmp_path / "z.npz")]):
        rc, _, err = _main(argv, capsys)
        assert rc == 2 and "non-finite" in _one_error_line(err), (argv, err)
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "z.npz").exists()


def test_gm_wae_with_non_finite_weights_samples_to_one_line(tmp_path, capsys):
    from wae.config import RunConfig
    from wae.models.registry import create_model
    from wae.serialization import save_model

    cfg = RunConfig.from_dict({"model": {"name": "gm-wae", "width": 0.0625}})
    save_model(create_model("gm-wae", (1, 28, 28), cfg.model_config), tmp_path / "gm", cfg)
    _nan_weights(tmp_path / "gm")
    for extra in ([], ["--component", "1"]):
        rc, _, err = _main(["sample", str(tmp_path / "gm"), "--out", str(tmp_path / "s.png"), *extra], capsys)
        assert rc == 2 and "non-finite" in _one_error_line(err), err


def test_samples_that_overflow_are_refused_not_written(finished, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    d = _copy(finished, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    key = [k for k in state if k.startswith("decoder") and k.endswith("weight")][0]
    state[key] = state[key] * 1e38  # finite weights whose outputs overflow
    save_file(state, str(d / "model.safetensors"))
    rc, _, err = _main(["sample", str(d), "--n", "8", "--std-scale", "1e30", "--out", str(tmp_path / "s.npz")],
                       capsys)
    assert rc == 2 and "non-finite samples" in _one_error_line(err), err
    assert not (tmp_path / "s.npz").exists()


def test_sample_out_must_be_png_or_npz(finished, tmp_path, capsys):
    for name in ("x.jpg", "x.jpeg", "x", "x.PNG.txt"):
        rc, _, err = _main(["sample", str(finished["dir"]), "--out", str(tmp_path / name)], capsys)
        assert rc == 2 and ".png" in _one_error_line(err), (name, err)
        assert not (tmp_path / name).exists()
    rc, _, err = _main(["reconstruct", str(finished["dir"]), "--out", str(tmp_path / "r.jpg")], capsys)
    assert rc == 2 and ".png" in _one_error_line(err)


BAD_NUMBERS = [
    ["sample", "{run}", "--std-scale", "nan"], ["sample", "{run}", "--std-scale", "inf"],
    ["sample", "{run}", "--std-scale", "-1"], ["sample", "{run}", "--std-scale", "0"],
    ["sample", "{run}", "--n", "0"], ["sample", "{run}", "--n", "1e3"], ["sample", "{run}", "--seed", "-1"],
    ["sample", "{run}", "--seed", str(2 ** 70)], ["sample", "{run}", "--component", "-2"],
    ["sample", "{run}", "--n", "9" * 5000],
    ["reconstruct", "{run}", "--n", "0"], ["reconstruct", "{run}", "--depth", "-1"],
    ["encode", "{run}", "--limit", "0"], ["encode", "{run}", "--batch-size", "0"], ["encode", "{run}", "--depth", "0"],
    ["evaluate", "{run}", "--n", "1"], ["evaluate", "{run}", "--eval-limit", "0"],
    ["evaluate", "{run}", "--inception-n", "1"], ["reproduce", "wae-mnist", "--seed", "-1"],
    ["train", "--epochs", "0"], ["train", "--max-steps", "0"], ["train", "--max-steps", "-2"],
    ["train", "--seed", "-1"], ["train", "--seed", str(2 ** 64)], ["train", "--lr", "nan"], ["train", "--lr", "0"],
    ["train", "--batch-size", "1"], ["train", "--num-nodes", "0"],
    ["train", "--set", "seed=-1"], ["train", "--set", f"seed={2 ** 70}"], ["train", "--set", "data.val_fraction=-5"],
    ["train", "--set", "model.width=0"], ["train", "--set", "model.width=-0.5"], ["train", "--set", "width=.nan"],
    ["train", "--set", "data.limit=0"], ["train", "--set", "data.eval_limit=0"], ["train", "--set", "epochs=0"],
    ["train", "--set", "max_steps=0"], ["train", "--set", "max_minutes=0"], ["train", "--set", "max_minutes=-1"],
    ["train", "--set", "checkpoint_every_minutes=-1"], ["train", "--set", "log_every=0"],
    ["train", "--set", "epochs=" + "9" * 5000],
    ["cluster", "mnist-5k", "--k", "0"], ["cluster", "mnist-5k", "--k", "ten"], ["cluster", "mnist-5k", "--k", "2.5"],
    ["cluster", "mnist-5k", "--max-steps", "0"], ["cluster", "mnist-5k", "--max-minutes", "inf"],
    ["cluster", "mnist-5k", "--max-minutes", "-1"], ["cluster", "mnist-5k", "--seed", "-1"],
]


@pytest.mark.parametrize("argv", BAD_NUMBERS, ids=lambda a: " ".join(x[:20] for x in a[:4]))
def test_every_cli_number_is_checked_in_one_line(argv, finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    argv = [a.replace("{run}", str(finished["dir"])) for a in argv]
    if argv[0] in ("sample", "reconstruct", "encode"):
        argv += ["--out", str(tmp_path / ("o.npz" if argv[0] == "encode" else "o.png"))]
    if argv[0] == "cluster":
        argv += ["--out", str(tmp_path / "never")]
    if argv[0] == "train":  # a tiny run on data at hand, so only the bad number can stop it (later --set win)
        argv = ["train", "wae-mmd", "--dataset", "mnist-5k", "--set", "data.limit=100", "--set", "width=0.0625",
                "--set", "pretrain_steps=0", "--set", "figures=false", "--quiet", *argv[1:], "--out",
                str(tmp_path / "never")]
    rc, _, err = _main(argv, capsys)
    line = _one_error_line(err)
    assert rc == 2 and len(line) < 400, (argv[:4], line)
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob("o.*"))


# --- inputs the networks cannot take, labels that are ids (issue 26) ---------------------------------------------


@pytest.mark.parametrize("kind", ["npz-5x5", "npz-4x4x3", "folder-4x4-rgb"])
def test_images_smaller_than_the_network_are_one_line(kind, tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    if kind == "npz-5x5":
        data = f"npz:{_tiny_images_npz(tmp_path / 'x.npz', (5, 5))}"
    elif kind == "npz-4x4x3":
        data = f"npz:{_tiny_images_npz(tmp_path / 'x.npz', (4, 4, 3))}"
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        for i in range(60):
            (tmp_path / "imgs").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
        data = f"folder:{tmp_path / 'imgs'}"
    # (gm-wae's own networks take 4×4 images: it is refused for 5×5 and for the 4×4×3 array, which is read as
    # 4 channels of 4×3)
    for model in ("wae-mmd", "vae") + (("gm-wae",) if kind.startswith("npz") else ()):
        out = tmp_path / f"run-{model}"
        rc, _, err = _main(["train", model, "--dataset", data, "--batch-size", "20", "--quiet", "--out", str(out)],
                           capsys)
        line = _one_error_line(err)
        assert rc == 2 and ("too small" in line or "divisible" in line), (model, line)
        assert not out.exists()  # nothing written, not even the directory


def test_labels_with_huge_values_are_renumbered_and_the_run_ends_with_metrics(tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    rng = np.random.default_rng(0)
    y = rng.choice(np.array([7, 10 ** 12, 3 * 10 ** 15, 2 ** 62]), 200)
    yt = rng.choice(np.array([7, 10 ** 12, 3 * 10 ** 15]), 60)
    np.savez(tmp_path / "ids.npz", x=rng.normal(size=(200, 6)).astype(np.float32), y=y,
             x_test=rng.normal(size=(60, 6)).astype(np.float32), y_test=yt)
    from wae.data import load_dataset

    tr, te = load_dataset(f"npz:{tmp_path / 'ids.npz'}"), load_dataset(f"npz:{tmp_path / 'ids.npz'}:test")
    assert tr.num_classes == te.num_classes == 4 and int(tr.y.max()) <= 3
    # the same id gets the same class in both splits
    assert (te.y.numpy() == np.searchsorted(np.unique(y), yt)).all()
    out = tmp_path / "run"
    rc, _, err = _main(["train", "gm-wae", "--dataset", f"npz:{tmp_path / 'ids.npz'}", "--batch-size", "50",
                        "--epochs", "1", "--set", "width=0.0625", "--set", "figures=false", "--set", "pretrain_steps=0",
                        "--quiet", "--out", str(out)], capsys)
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert "test/acc_hungarian" in m


@pytest.mark.parametrize("at_step", [0, 5])
def test_out_of_memory_exits_3_naming_what_is_left(tmp_path, capsys, monkeypatch, at_step):
    from wae.training import module

    orig = module.LitAutoEncoder.training_step

    def step(self, idx, batch_idx):
        if self.global_step == at_step:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return orig(self, idx, batch_idx)

    monkeypatch.setattr(module.LitAutoEncoder, "training_step", step)
    rc, out = _nan_run(tmp_path, monkeypatch)
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1 and "out of memory" in err, err
    if at_step == 0:
        assert "nothing to resume" in err and "is kept" not in err, err
    else:
        assert f"checkpoint (step {at_step}) is kept" in err, err
        assert not (out / ".lock").exists()


def test_resume_with_its_time_budget_spent_trains_no_further_step(tmp_path, capsys, monkeypatch):
    """The time already trained travels in the checkpoint: a resume whose max_minutes is already used up stops
    before its first step (Lightning's Timer would only look after one)."""
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "run"
    rc, _, err = _main([*TINY_RUN, "--set", "max_minutes=60", "--out", str(out)], capsys)
    assert rc == 0, err
    args = [a if a != "1" else "3" for a in TINY_RUN]  # --epochs 3: two more epochs, but ...
    rc, outp, err = _main([*args, "--set", "max_minutes=0.000001", "--out", str(out), "--resume"],
                          capsys)  # ... 60 µs, less than any two steps take (60 ms was not, on a fast machine)
    assert rc == 0, err
    assert "train.max_minutes 60.0 → 1e-06" in outp, outp
    assert json.loads((out / "metrics.json").read_text())["train/steps"] == 2  # one epoch of 100 / 50
