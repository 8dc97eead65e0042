"""Bad input to the command line and the configs: one clear line, never a traceback (issue 16).

Every case runs ``respo.cli.main`` (the console script) and checks exit status 2 and a single
``respo <command>: <message>`` line naming the file, line or field (40 cases, counted in
experiments/LOG.md).
"""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from respo.cli import main
from respo.llm.config import EvalConfig, ModelConfig, OptimConfig, SamplingConfig, TrainConfig

NAN, INF = float("nan"), float("inf")
CONFIGS = [  # (constructor, field, bad value, text the error names)
    (OptimConfig, "lr", -1e-5, "optim.lr"), (OptimConfig, "lr", NAN, "optim.lr"), (OptimConfig, "lr", INF, "optim.lr"),
    (OptimConfig, "grad_clip", -1.0, "optim.grad_clip"), (OptimConfig, "grad_clip", NAN, "optim.grad_clip"),
    (OptimConfig, "warmup_steps", -2, "optim.warmup_steps"), (OptimConfig, "weight_decay", INF, "optim.weight_decay"),
    (SamplingConfig, "temperature", INF, "sampling.temperature"), (SamplingConfig, "temperature", NAN, "temperature"),
    (SamplingConfig, "top_p", 1.5, "sampling.top_p"), (SamplingConfig, "max_thoughts", 0, "sampling.max_thoughts"),
    (TrainConfig, "clip_eps", NAN, "clip_eps"), (TrainConfig, "clip_eps", -0.2, "clip_eps"),
    (TrainConfig, "clip_c", 0.5, "clip_c"), (TrainConfig, "checkpoint_every", -1, "checkpoint_every"),
    (TrainConfig, "keep_checkpoints", -1, "keep_checkpoints"), (TrainConfig, "train_problems", 0, "train_problems"),
    (TrainConfig, "name", "../escape", "name must be a plain folder name"),
    (TrainConfig, "name", "a/b", "name must be a plain folder name"), (TrainConfig, "name", "..", "plain folder"),
    (EvalConfig, "every", -1, "eval.every"), (ModelConfig, "tiny_layers", 0, "model.tiny_layers"),
]


@pytest.mark.parametrize("make,field,value,named", CONFIGS)
def test_every_numeric_field_is_validated(make, field, value, named):
    with pytest.raises(ValueError, match=named):
        make(**{field: value})


def test_valid_edges_are_accepted():
    OptimConfig(grad_clip=0.0, warmup_steps=0)
    TrainConfig(clip_c=None, checkpoint_every=0, keep_checkpoints=0, name="run..1")


def _run(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _one_line(rc, err, command, *needles):
    assert rc == 2, (rc, err)
    assert "Traceback" not in "\n".join(err), err
    last = err[-1]
    assert last.startswith(f"respo {command}: "), err
    for n in needles:
        assert n in last, (n, last)


TRAIN = ["--preset", "tiny-smoke", "--steps", "1", "--no-progress", "--sampling.max-response-tokens", "16"]


def _data_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "empty.jsonl").write_bytes(b"")
    (d / "latin1.jsonl").write_bytes(b'{"question": "1+1?", "answer": "2"}\n{"question": "caf\xe9", "answer": "1"}\n')
    (d / "broken.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": \n')
    (d / "typed.jsonl").write_text('{"question": 5, "answer": "2"}\n')
    (d / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (d / "folder.jsonl").mkdir()
    return d


@pytest.mark.parametrize("name,needle", [
    ("empty.jsonl", "empty file"), ("latin1.jsonl", "latin1.jsonl:2: not UTF-8"),
    ("broken.jsonl", "broken.jsonl:2: not valid JSON"), ("typed.jsonl", "typed.jsonl:1"),
    ("deep.jsonl", "deep.jsonl:1: not valid JSON"), ("folder.jsonl", "folder.jsonl"),
    ("missing.jsonl", "missing.jsonl"),
])
def test_bad_data_files_get_one_line(tmp_path, capsys, name, needle):
    d = _data_files(tmp_path)
    rc, err = _run(capsys, "train", *TRAIN, "--task", "math", "--data-file", str(d / name),
                   "--runs-dir", str(tmp_path / "runs"))
    _one_line(rc, err, "train", needle)


def test_a_run_name_with_dotdot_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc, err = _run(capsys, "train", *TRAIN, "--name", "../escape", "--runs-dir", str(runs))
    _one_line(rc, err, "train", "name must be a plain folder name", "../escape")
    assert not (tmp_path / "escape").exists()


def test_a_second_train_on_a_locked_run_folder_is_refused(tmp_path, capsys):
    import fcntl
    import os

    run = tmp_path / "runs" / "tiny-smoke"
    run.mkdir(parents=True)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `respo train` holds it (pid 4242 written)
    os.pwrite(fd, b"4242\n", 0)
    try:
        for extra in ([], ["--resume"]):
            rc, err = _run(capsys, "train", *TRAIN, "--runs-dir", str(tmp_path / "runs"), *extra)
            _one_line(rc, err, "train", f"{run} is in use by another run (pid 4242)")
    finally:
        os.close(fd)
    assert not (run / "metrics.jsonl").exists()


def test_a_broken_model_folder_for_eval_is_named(tmp_path, capsys):
    m = tmp_path / "model"
    m.mkdir()
    rc, err = _run(capsys, "eval", "run", "--model", str(m), "--benchmarks", "arithmetic")
    _one_line(rc, err, "eval", "not a model folder (no config.json)")
    (m / "config.json").write_text("{not json")
    rc, err = _run(capsys, "eval", "run", "--model", str(m), "--benchmarks", "arithmetic")
    _one_line(rc, err, "eval", "config.json: not a valid model config")
    rc, err = _run(capsys, "eval", "run", "--model", str(tmp_path / "nope" / "x"), "--benchmarks", "arithmetic")
    _one_line(rc, err, "eval", "no such model folder")


def test_bad_results_files_for_eval_table_are_named(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"a": 1}\n\xff\n')
    rc, err = _run(capsys, "eval", "table", "--results", str(f), "--out", str(tmp_path / "t"))
    _one_line(rc, err, "eval", "r.jsonl:2: not UTF-8")
    rc, err = _run(capsys, "eval", "table", "--results", str(tmp_path), "--out", str(tmp_path / "t"))
    _one_line(rc, err, "eval", "is a folder")


def test_bad_prepare_inputs_are_named(tmp_path, capsys):
    local = tmp_path / "local"
    local.mkdir()
    (local / "numina_olympiads.jsonl").write_bytes(b'{"problem": "x"}\n\xc3\x28\n')
    rc, err = _run(capsys, "prepare", "--local", str(local), "--only", "oly", "--out", str(tmp_path / "out"),
                   "--no-check-answers")
    _one_line(rc, err, "prepare", "numina_olympiads.jsonl:2: not UTF-8")
    (local / "numina_olympiads.jsonl").write_bytes(b"")
    rc, err = _run(capsys, "prepare", "--local", str(local), "--only", "oly", "--out", str(tmp_path / "out"),
                   "--no-check-answers")
    _one_line(rc, err, "prepare", "empty file")


def test_a_compressed_bomb_in_private_tests_is_refused():
    from respo.tasks.registry import MAX_TESTS_BYTES, BadRow, decode_private_tests

    z = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    packed = b"".join(z.compress(chunk) for _ in range((MAX_TESTS_BYTES >> 20) * 4)) + z.flush()
    assert len(packed) < (1 << 20)  # under 1 MB on disk, 256 MB inflated
    with pytest.raises(BadRow) as e:
        decode_private_tests(base64.b64encode(packed).decode())
    assert e.value.reason == "tests_too_large"
    ok = base64.b64encode(zlib.compress(__import__("pickle").dumps(json.dumps([{"input": "1", "output": "2"}]))))
    assert decode_private_tests(ok.decode()) == [{"input": "1", "output": "2"}]

