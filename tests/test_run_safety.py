"""A run folder's safety: one process at a time, metrics lines that cannot be lost silently,
durable checkpoints without leftovers, and clear errors for corrupt checkpoints (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from llm_fixtures import tiny_lm
from llm_train_fakes import fake_parts

from respo.jsonl import read_jsonl, truncate_after_step
from respo.llm.checkpoint import (
    CheckpointError,
    RunLockedError,
    hold_run_lock,
    latest_checkpoint,
    load_checkpoint,
)
from respo.llm.config import TrainConfig
from respo.llm.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(variant="grpo", steps=2, prompts_per_step=2, minibatch_prompts=1, micro_batch_chains=8)
    base.update(kw)
    return TrainConfig(**base)


def _holder(run_dir) -> subprocess.Popen:
    """Another process that holds the run folder's lock (``flock`` on ``.lock``, as
    ``hold_run_lock`` takes it; no torch import, so it starts fast) until its stdin closes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys\n"
            f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nos.pwrite(fd, b'%d\\n' % os.getpid(), 0)\n"
            "print('locked', flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"locked"
    return p


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_process_on_a_run_folder_is_refused(tmp_path, resume):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with pytest.raises(RunLockedError, match=rf"{run} is in use by another run \(pid {holder.pid}\)"):
            next(iter(train(_cfg(), fake_parts(tiny_lm(0), "none"), run_dir=run, resume=resume)))
        assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()
    finally:
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    rows = list(train(_cfg(), fake_parts(tiny_lm(0), "none"), run_dir=run))  # free again
    assert [r["step"] for r in rows] == [0, 1]


def test_the_lock_lasts_the_run_and_ends_with_it(tmp_path):
    gen = train(_cfg(), fake_parts(tiny_lm(0), "none"), run_dir=tmp_path)
    next(gen)
    with pytest.raises(RunLockedError):
        hold_run_lock(tmp_path)  # mid-run (another open file description: refused)
    list(gen)
    hold_run_lock(tmp_path).close()  # the finished run released it


def test_a_corrupt_middle_line_of_metrics_is_an_error_naming_file_and_line(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 0}\n{"step": 1\n{"step": 2}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: corrupt line"):
        read_jsonl(f)
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        truncate_after_step(f, 3)
    f.write_text('{"step": 0}\n[1]\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: a row must be a JSON object"):
        read_jsonl(f)
    f.write_text('{"step": 0}\n\n{"step": 1}\n{"step": 2, "lo')  # torn last line: dropped
    assert [r["step"] for r in read_jsonl(f)] == [0, 1]
    f.write_bytes(b'{"step": 0}\n\xff\xfe\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_jsonl(f)


def test_orphaned_temp_checkpoints_are_removed_and_writes_are_fsynced(tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    orphan = ck / ".tmp-step-000003-abcd"
    (orphan / "model").mkdir(parents=True)
    (orphan / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    list(train(_cfg(steps=1), fake_parts(tiny_lm(0), "none"), run_dir=tmp_path))
    assert sorted(p.name for p in ck.iterdir()) == ["LATEST", "step-000001"[:-1] + "0"]
    assert any(s.endswith("model.safetensors") and ".tmp-step-000000" in s for s in synced)
    assert any(s.endswith(".LATEST.tmp") for s in synced)


def _broken_run(tmp_path):
    list(train(_cfg(steps=1), fake_parts(tiny_lm(0), "none"), run_dir=tmp_path))
    return latest_checkpoint(tmp_path)


def test_corrupt_checkpoints_given_to_resume_get_clear_errors(tmp_path):
    ck = _broken_run(tmp_path)
    weights = ck / "model" / "model.safetensors"
    state = ck / "trainer_state.pt"
    good_w, good_s = weights.read_bytes(), state.read_bytes()

    def resume():
        return next(iter(train(_cfg(steps=2), fake_parts(tiny_lm(0), "none"), run_dir=tmp_path, resume=True)))

    weights.write_bytes(good_w[: len(good_w) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable weights"):
        resume()
    weights.write_bytes(good_w)
    state.write_bytes(good_s[: len(good_s) // 3])
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt: unreadable trainer state"):
        resume()
    torch.save({"step": "x"}, state)
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt: trainer state must be a dict with keys"):
        resume()
    state.write_bytes(good_s)
    from safetensors.torch import load_file, save_file

    w = load_file(str(weights))
    k = next(iter(w))
    save_file({**w, k: torch.zeros(3, 3)}, str(weights))
    with pytest.raises(CheckpointError, match=r"do not fit the model"):
        load_checkpoint(ck, model=tiny_lm(0))
    weights.write_bytes(good_w)
    (ck.parent / "LATEST").write_bytes(b"../../../etc\n")
    with pytest.raises(CheckpointError, match=r"LATEST: holds '\.\./\.\./\.\./etc', not a checkpoint name"):
        resume()
    (ck.parent / "LATEST").write_bytes(b"\x00\xff garbage")
    with pytest.raises(CheckpointError, match=r"LATEST: unreadable checkpoint pointer"):
        resume()
    (ck.parent / "LATEST").write_text("step-000009\n")
    with pytest.raises(CheckpointError, match=r"not a complete checkpoint"):
        resume()
