"""The prepared benchmark scripts run to their end (tiny sizes, on the CPU)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_benchmark_script_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, MPLBACKEND="Agg")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "gpu_throughput.md").read_text()
    for name in ("wae-mmd", "gm-wae exact", "gm-wae sparse"):
        for prec in ("fp32", "bf16"):
            assert f"| {name} | 8 | {prec} |" in table and f"| {name} | 16 | {prec} |" in table
    assert "failed" not in table
    assert "gm-wae-paper: train/steps=3" in r.stdout and "gpu.sh: done" in r.stdout
