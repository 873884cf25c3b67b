"""Exact resume from the checkpoints that matter most in practice: the epoch-boundary one (with the default 5-minute
interval the checkpoint a killed run has is almost always that one) and the one SIGTERM leaves when it arrives on an
epoch's last step. Each interrupted run, resumed with the same command plus --resume, must end with the same step
count, the same metrics and byte-identical weights as an uninterrupted run (CPU), under an epoch budget (with a time
budget present) and under a step budget that ends mid-epoch.

The runs use a learning-rate milestone at epoch 1, so a resume that skipped or repeated an epoch's end-of-epoch work
(its scheduler step) would differ too."""
import json
import signal

import pytest

from test_reliability import _leftovers, _popen, _wait

STEPS_PER_EPOCH = 8  # 400 examples / batch 50
COMMON = ["train", "wae-mmd", "--dataset", "mnist-5k", "--set", "width=0.0625", "--set", "data.limit=400",
          "--set", "data.eval_limit=100", "--set", "pretrain_steps=0", "--batch-size", "50", "--set", "figures=false",
          "--set", "train.sample_metrics=[]", "--set", "checkpoint_every_minutes=60", "--set", "lr_milestones=[1]",
          "--set", "lr_factors=[0.3]", "--quiet"]
BUDGETS = {
    # an epoch budget, with a (non-binding) time budget whose Timer state travels in the checkpoint
    "epochs": ["--epochs", "2", "--set", "max_minutes=60"],
    # a step budget that ends in the middle of epoch 2
    "max_steps": ["--epochs", "3", "--max-steps", str(2 * STEPS_PER_EPOCH + 3)],
}
FINAL_STEPS = {"epochs": 2 * STEPS_PER_EPOCH, "max_steps": 2 * STEPS_PER_EPOCH + 3}
KEYS = ("test/recon_mse", "test/mmd_prior", "test/recon_mse_pixel", "val/recon_mse", "val/mmd_prior")


def _pair(runs, tmp):
    """Start the (args, out, kw) runs together (two CPU processes), wait for both; (rc, stderr) of each."""
    procs = [_popen([*args, "--out", str(out)], tmp, **kw) for args, out, kw in runs]
    return [(rc, err) for rc, _, err in (_wait(p, timeout=400) for p in procs)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each budget: an uninterrupted run, a run SIGKILLed right after an epoch-boundary checkpoint and resumed,
    and a run SIGTERMed on the last step of an epoch (it stops at that boundary) and resumed."""
    from wae.training.checkpoint import load_checkpoint_safely

    tmp = tmp_path_factory.mktemp("resume")
    d = {b: {k: tmp / f"{b}-{k}" for k in ("base", "killed", "termed")} for b in BUDGETS}
    state: dict = {"dirs": d}
    # kill when step 10 begins (60-minute interval: the last checkpoint is the boundary one, step 8); SIGTERM
    # inside step 7 (epoch 1 ends with the step) and inside step 15 (epoch 2 ends with it)
    kill_at = {"epochs": STEPS_PER_EPOCH + 2, "max_steps": STEPS_PER_EPOCH + 2}
    term_at = {"epochs": STEPS_PER_EPOCH - 1, "max_steps": 2 * STEPS_PER_EPOCH - 1}
    for (rc, err), b in zip(_pair([([*COMMON, *BUDGETS[b]], d[b]["base"], {}) for b in BUDGETS], tmp), BUDGETS):
        assert rc == 0, err[-2000:]
    state["interrupt"] = _pair([([*COMMON, *BUDGETS["epochs"]], d["epochs"]["killed"], {"kill_at": kill_at["epochs"]}),
                                ([*COMMON, *BUDGETS["max_steps"]], d["max_steps"]["killed"],
                                 {"kill_at": kill_at["max_steps"]})], tmp)
    state["interrupt"] += _pair([([*COMMON, *BUDGETS[b]], d[b]["termed"], {"term_at": term_at[b]}) for b in BUDGETS],
                                tmp)
    state["ckpt"] = {}
    for b in BUDGETS:
        for k in ("killed", "termed"):
            c = load_checkpoint_safely(d[b][k] / "checkpoints" / "last.ckpt")
            state["ckpt"][b, k] = {"step": c["global_step"], "callbacks": list(c.get("callbacks", {}))}
    state["resume"] = _pair([([*COMMON, *BUDGETS[b], "--resume"], d[b]["killed"], {}) for b in BUDGETS], tmp)
    state["resume"] += _pair([([*COMMON, *BUDGETS[b], "--resume"], d[b]["termed"], {}) for b in BUDGETS], tmp)
    return state


def test_interruptions_leave_an_epoch_boundary_checkpoint(runs):
    kill_rcs = [rc for rc, _ in runs["interrupt"][:2]]
    term = runs["interrupt"][2:]
    assert kill_rcs == [-signal.SIGKILL] * 2, [err[-1500:] for _, err in runs["interrupt"][:2]]
    for rc, err in term:
        assert rc == 143, err[-2000:]
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("wae:")]
        assert len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0], err[-2000:]
        assert "Traceback" not in err
    assert runs["ckpt"]["epochs", "killed"]["step"] == STEPS_PER_EPOCH
    assert runs["ckpt"]["max_steps", "killed"]["step"] == STEPS_PER_EPOCH
    # SIGTERM inside an epoch's last step: the stop waits for the epoch boundary and saves there
    assert runs["ckpt"]["epochs", "termed"]["step"] == STEPS_PER_EPOCH
    assert runs["ckpt"]["max_steps", "termed"]["step"] == 2 * STEPS_PER_EPOCH
    # the time budget's clock is in the checkpoint: a resumed run continues the budget, it does not start it anew
    assert any("Timer" in k for k in runs["ckpt"]["epochs", "killed"]["callbacks"]), runs["ckpt"]


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("how", ["killed", "termed"])
def test_resume_from_an_epoch_boundary_matches_the_uninterrupted_run_exactly(runs, budget, how):
    i = list(BUDGETS).index(budget) + (0 if how == "killed" else 2)
    rc, err = runs["resume"][i]
    assert rc == 0, err[-2000:]
    base, run = runs["dirs"][budget]["base"], runs["dirs"][budget][how]
    b = json.loads((base / "metrics.json").read_text())
    m = json.loads((run / "metrics.json").read_text())
    assert m["train/steps"] == b["train/steps"] == FINAL_STEPS[budget]
    assert m["train/epochs"] == b["train/epochs"]
    for key in KEYS:
        assert m[key] == b[key], (key, m[key], b[key])
    assert (run / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert not (run / ".lock").exists() and _leftovers(run) == []


@pytest.mark.parametrize("restarts", [1, 2])
def test_a_run_ended_mid_epoch_by_max_steps_continues_exactly_with_a_larger_budget(tmp_path, restarts):
    """The final checkpoint of a run stopped by max_steps in the middle of an epoch resumes into the rest of that
    epoch (Lightning had counted the epoch finished and started the next one, drawing other batches): 5 steps, then
    --resume to 7, gives the weights of one run to 7."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import load_file

    from wae.cli import main

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.savez(tmp_path / "d.npz", x=(rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]).astype(np.float32), y=y)
    common = ["train", "gm-wae", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--quiet", "--set", "model.width=0.05",
              "--set", "num_components=3", "--set", "latent_dim=3", "--set", "batch_size=16", "--set",
              "pretrain_steps=2", "--set", f"restarts.count={restarts}", "--set", "restarts.fraction=0.1", "--set",
              "figures=false", "--set", "checkpoint_every_minutes=0", "--set", "train.sample_metrics=[]"]
    # a throwaway fit first: a process's first CLI fit can differ from later ones in the last float digit (seen at
    # one thread, as under xdist), and the weights are compared bit for bit
    assert main([*common, "--set", "max_steps=3", "--out", str(tmp_path / "warm")]) == 0
    assert main([*common, "--set", "max_steps=7", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--set", "max_steps=5", "--out", str(tmp_path / "b")]) == 0  # mid-epoch (6 per epoch)
    assert main([*common, "--set", "max_steps=7", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert a["train/steps_kept_run"] == b["train/steps_kept_run"] == 7
    assert a["train/steps"] == b["train/steps"] == 7 + 1 * (restarts - 1)  # and the discarded start's 1 (10 %)
    wa, wb = (load_file(str(tmp_path / r / "model.safetensors")) for r in "ab")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
