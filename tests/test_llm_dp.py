"""Data parallel: two CPU processes (torchrun + accelerate, gloo) match one process.

Both runs train the same global batch (4 prompts per step, mini-batches of 2 prompts, so each
process holds 1 prompt of every mini-batch) from the same init and seeds. Rollouts are keyed by
(seed, step, prompt index in the step), so both layouts sample the same chains; the loss norms
are the mini-batch's global token / sequence counts, so the averaged gradients are the
single-process gradients. What differs is float rounding (padding widths, reduction order).
Tolerance: parameters within 1e-5 absolute after 2 steps (4 AdamW steps at lr 1e-3; measured
about 2e-6), metrics within 1e-5 relative.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from procs import run_checked

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dp_worker.py"
VARIANTS = ["grpo", "srpo"]  # token-mean (global token count) and seq-mean-token-mean


_run = run_checked


def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the python executable")
    _run([sys.executable, str(WORKER), str(tmp_path / "one"), "2", *VARIANTS])
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER),
          str(tmp_path / "two"), "2", *VARIANTS])
    for v in VARIANTS:
        one = torch.load(tmp_path / "one" / f"{v}.pt", weights_only=False)
        two = torch.load(tmp_path / "two" / f"{v}.pt", weights_only=False)
        assert (one["world"], two["world"]) == (1, 2)
        for k, p in one["params"].items():
            torch.testing.assert_close(two["params"][k], p, atol=1e-5, rtol=0, msg=f"{v} {k}")
        for r1, r2 in zip(one["rows"], two["rows"], strict=True):
            for k, a in r1.items():
                if k.startswith("time/"):
                    continue
                b = r2[k]
                if isinstance(a, float):
                    assert b == pytest.approx(a, rel=1e-5, abs=1e-7, nan_ok=True), (v, k)
                else:
                    assert a == b, (v, k)
