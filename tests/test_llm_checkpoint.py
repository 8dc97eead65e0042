"""Checkpoints: atomic layout, plain-transformers/peft loading, and exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
from llm_fixtures import full_and_killed_metrics, tiny_lm
from llm_train_fakes import fake_parts

from respo.jsonl import read_jsonl, without_wall_clock
from respo.llm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from respo.llm.config import TrainConfig
from respo.llm.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _cfg(variant: str, **kw) -> TrainConfig:
    base = dict(variant=variant, steps=3, prompts_per_step=2, minibatch_prompts=1,
                micro_batch_chains=8, optim=TrainConfig().optim.__class__(lr=1e-3, schedule="cosine",
                                                                          warmup_steps=2))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("variant", ["srpo", "grpo"])
def test_killed_and_resumed_run_logs_the_same_metrics(tmp_path, variant):
    cfg = _cfg(variant)
    kind = cfg.variant_row.localizer
    full = list(train(cfg, fake_parts(tiny_lm(0), kind), run_dir=tmp_path / "full"))
    assert len(full) == 3

    # "Kill" after step 1: stop consuming the generator (its checkpoint of step 1 is on disk).
    gen = train(cfg, fake_parts(tiny_lm(0), kind), run_dir=tmp_path / "cut")
    for r in gen:
        if r["step"] == 1:
            break
    gen.close()
    assert latest_checkpoint(tmp_path / "cut").name == "step-000001"
    # A fresh process would rebuild the model from the config: a fresh copy of the same init.
    resumed = list(train(cfg, fake_parts(tiny_lm(0), kind), run_dir=tmp_path / "cut", resume=True))
    assert [r["step"] for r in resumed] == [2]

    a = [without_wall_clock(r) for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    b = [without_wall_clock(r) for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert a == b


def test_checkpoint_time_reaches_the_next_metrics_line(tmp_path):
    cfg = _cfg("srpo", checkpoint_every=2)  # checkpoints after steps 1 and 2 (the last)
    list(train(cfg, fake_parts(tiny_lm(0), cfg.variant_row.localizer), run_dir=tmp_path))
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert ["time/prev_checkpoint" in r for r in lines] == [False, False, True]
    assert lines[2]["time/prev_checkpoint"] > 0
    assert all("time/checkpoint" not in r for r in lines)


def test_resume_drops_metric_lines_written_after_the_checkpoint(tmp_path):
    cfg = _cfg("rrpo", steps=3, checkpoint_every=2, keep_checkpoints=2)
    list(train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path / "full"))
    gen = train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path / "cut")
    for r in gen:
        if r["step"] == 2:
            break
    gen.close()
    # Make it as if killed after logging step 2 but before its checkpoint: point LATEST at step 1.
    ck = tmp_path / "cut" / "checkpoints"
    assert (ck / "step-000001").exists()
    (ck / "LATEST").write_text("step-000001\n")
    list(train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path / "cut", resume=True))
    a = [without_wall_clock(r) for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    b = [without_wall_clock(r) for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert a == b


def test_resume_refuses_a_different_config(tmp_path):
    cfg = _cfg("rrpo", steps=1)
    list(train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path))
    with pytest.raises(ValueError, match="config differs.*seed"):
        next(iter(train(_cfg("rrpo", steps=2, seed=7), fake_parts(tiny_lm(0), "uniform"),
                        run_dir=tmp_path, resume=True)))


def test_resume_reads_a_config_json_of_the_old_layout(tmp_path):
    """A run started before the vLLM settings moved into ``sampling.vllm`` (flat ``vllm_*`` keys, no
    ``overflow``) resumes: its config.json is read in the current layout."""
    import json

    from respo.llm.config import OLD_VLLM_KEYS

    list(train(_cfg("rrpo", steps=1), fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path))
    path = tmp_path / "config.json"
    d = json.loads(path.read_text())
    s = d["sampling"]
    s.pop("overflow")
    s.update({old: s["vllm"][new] for old, new in OLD_VLLM_KEYS.items()})
    del s["vllm"]
    path.write_text(json.dumps(d))
    rows = list(train(_cfg("rrpo", steps=2), fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path, resume=True))
    assert [r["step"] for r in rows] == [1]
    assert "vllm" in json.loads(path.read_text())["sampling"]  # rewritten in the current layout


def test_every_committed_run_config_resumes_and_a_nested_change_is_still_refused(tmp_path):
    """The committed runs' config.json files predate fields added inside sections (for example
    ``model.update_attention``): each resumes against the config it loads as, and changing a
    nested field is still refused by its section's name."""
    import dataclasses
    import json
    import shutil
    from pathlib import Path

    from respo.llm.config import config_from_dict, config_to_dict
    from respo.llm.trainer import _write_config

    root = Path(__file__).resolve().parents[1] / "experiments" / "results"
    paths = sorted(p for p in root.rglob("config.json") if "model" in json.loads(p.read_text()))
    assert len(paths) > 100
    for i, p in enumerate(paths):
        run = tmp_path / str(i)
        run.mkdir()
        shutil.copy(p, run / "config.json")
        _write_config(run, config_to_dict(config_from_dict(json.loads(p.read_text()))), resume=True)
    old = config_from_dict(json.loads(paths[0].read_text()))
    changed = dataclasses.replace(old, model=dataclasses.replace(
        old.model, update_attention="eager" if old.model.update_attention != "eager" else "sdpa"))
    shutil.copy(paths[0], tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"config differs from config.json in \['model'\]"):
        _write_config(tmp_path, config_to_dict(changed), resume=True)


def test_checkpoint_is_atomic_and_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = copy.deepcopy(tiny_lm(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    for step in range(3):
        path = save_checkpoint(tmp_path, step=step, model=model, optimizer=opt, scheduler=None,
                               config={"x": 1}, data_position=2 * (step + 1), keep=2)
    assert latest_checkpoint(tmp_path) == path
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["LATEST", "step-000001", "step-000002"]  # no temp folders left, 2 kept
    loaded = AutoModelForCausalLM.from_pretrained(str(path / "model"))
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    other = copy.deepcopy(tiny_lm(1))
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    state = load_checkpoint(path, model=other, optimizer=opt2)
    assert state["step"] == 2 and state["data_position"] == 6
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


PEFT_WARNING = "ignore:.*is_gradient_checkpointing.*:FutureWarning"  # peft 0.21 on transformers 5


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_lora_checkpoint_is_a_peft_adapter(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = copy.deepcopy(tiny_lm(0))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            task_type="CAUSAL_LM", init_lora_weights=False))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    path = save_checkpoint(tmp_path, step=0, model=model, optimizer=opt, scheduler=None,
                           config={}, data_position=0)
    assert (path / "model" / "adapter_config.json").exists()
    x = torch.tensor([[5, 6, 7, 8]])
    again = PeftModel.from_pretrained(copy.deepcopy(tiny_lm(0)), str(path / "model"))
    torch.testing.assert_close(again(input_ids=x).logits, model(input_ids=x).logits)


def test_resume_is_exact_with_the_real_sampler(tmp_path):
    """The same check through LMSampler + HFBackend + the confidence localizer (tiny-smoke)."""
    import dataclasses

    from respo.commands.train import load_presets
    presets = load_presets()
    base = presets.get_preset("tiny-smoke")
    cfg = dataclasses.replace(base, steps=3, prompts_per_step=1, sampling=dataclasses.replace(
        base.sampling, max_response_tokens=24, max_thought_tokens=8))
    a, b = full_and_killed_metrics(cfg, tmp_path)
    assert len(a) == 3 and a == b


def test_tensorboard_sink_writes_event_files(tmp_path):
    """``respo train --tensorboard`` writes TensorBoard event files beside metrics.jsonl."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "respo.cli", "train", "--preset", "tiny-smoke", "--steps", "1",
         "--runs-dir", str(tmp_path), "--name", "tb", "--tensorboard", "--no-progress", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "tb" / "metrics.jsonl").read_text().count("\n") == 1
