"""Training on prepared data files and through the vLLM backend (issue 6, "paper scale"), on CPU.

- ``TrainConfig.data_file``: a tiny made-up math file and code file (``respo prepare``'s row
  format) train the ``tiny-smoke`` model for two steps; every reward comes from the task's
  verifier (math-verify worker, sandboxed code tests), and bad files fail naming file and line.
- The paper presets point at the prepared files; with the file swapped for a temporary one and
  the model for the tiny one, they build.
- ``SamplingConfig.backend="vllm"``: ``build_parts`` builds a ``VLLMBackend`` (here over the fake
  engine of ``test_vllm_backend``); the loop pushes the weights to it once per step, after the
  updates and before the next rollouts; without vLLM installed the error names the extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from vllm_fakes import FAKE_TYPES, FakeLLM  # noqa: E402

from respo.llm.config import TrainConfig, VLLMConfig  # noqa: E402
from respo.presets import paper as pp  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MATH_ROWS = [
    {"id": "right", "question": "What is 3+4?", "answer": "7", "source": "made-up"},
    {"id": "wrong", "question": "What is 4+4?", "answer": "8", "source": "made-up"},
]
ECHO_TESTS = [{"input": "5\n", "output": "5\n", "testtype": "stdin"},
              {"input": "9\n", "output": "9\n", "testtype": "stdin"}]
CODE_ROWS = [
    {"id": "echo", "question": "Print the input number.", "answer": "", "tests": ECHO_TESTS,
     "heldout_tests": ECHO_TESTS[:1]},
    {"id": "double", "question": "Print twice the input number.", "answer": "",
     "tests": [{"input": "5\n", "output": "10\n", "testtype": "stdin"},
               {"input": "9\n", "output": "18\n", "testtype": "stdin"}],
     "heldout_tests": [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]},
]


def tiny_cfg(**kw: Any) -> TrainConfig:
    """The ``tiny-smoke`` preset, shrunk: 2 steps of 2 prompts, short responses."""
    from respo.commands.train import load_presets

    base = load_presets().get_preset("tiny-smoke")
    sampling = dataclasses.replace(base.sampling, **{"max_response_tokens": 24, "max_thought_tokens": 12,
                                                     **kw.pop("sampling", {})})
    kw = {"steps": 2, "prompts_per_step": 2, "minibatch_prompts": 1, "train_problems": 2, **kw}
    return dataclasses.replace(base, sampling=sampling, **kw)


# -- training from prepared files (HF backend) --------------------------------------------------------


def test_math_training_from_a_prepared_file(tmp_path: Path) -> None:
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    data = _write_jsonl(tmp_path / "olympiads_train.jsonl", MATH_ROWS)
    cfg = tiny_cfg(task="math", data_file=str(data))
    parts = build_parts(cfg)
    assert [p.id for p in parts.train_problems] == ["right", "wrong"]
    assert parts.train_problems[0].meta == {"source": "made-up"}
    task = parts.sampler.task  # type: ignore[attr-defined]
    assert task.name == "math"
    before = dict(task.verifier.stats)
    rows = list(train(cfg, parts, run_dir=tmp_path / "run"))
    lines = _read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == len(lines) == 2 and [r["step"] for r in lines] == [0, 1]
    # every generated chain was scored by the math verifier (the random model writes no box)
    seen = {k: task.verifier.stats[k] - before.get(k, 0) for k in ("no_answer", "calls")}
    assert seen["no_answer"] + seen["calls"] == sum(r["tokens/generated_chains"] for r in lines) > 0
    assert all(r["reward/fresh_generated_mean"] == 0.0 for r in lines)
    recs = _read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert {p["problem"] for rec in recs for p in rec["prompts"]} == {"right", "wrong"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_file"] == str(data)


def test_code_training_from_a_prepared_file(tmp_path: Path) -> None:
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    data = _write_jsonl(tmp_path / "lcb_v6_medium.jsonl", CODE_ROWS)
    cfg = tiny_cfg(task="code", data_file=str(data), steps=1)
    parts = build_parts(cfg)
    task = parts.sampler.task  # type: ignore[attr-defined]
    assert (task.name, task.tests_key) == ("code", "tests")
    assert parts.train_problems[1].meta["tests"][0]["output"] == "10\n"
    rows = list(train(cfg, parts, run_dir=tmp_path / "run"))
    assert len(rows) == 1 and len(_read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1
    assert task.stats["no_code"] + task.stats["runs"] == rows[0]["tokens/generated_chains"] > 0


def test_bad_data_files_name_the_file_and_line(tmp_path: Path) -> None:
    from respo.llm.train_parts import build_parts

    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl.*respo prepare"):
        build_parts(tiny_cfg(task="math", data_file=str(missing)))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(MATH_ROWS[0]) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON"):
        build_parts(tiny_cfg(task="math", data_file=str(bad_json)))
    no_answer = _write_jsonl(tmp_path / "noanswer.jsonl", [{"question": "What is 1+1?"}])
    with pytest.raises(ValueError, match=r"noanswer\.jsonl:1: .*'question' and 'answer'"):
        build_parts(tiny_cfg(task="math", data_file=str(no_answer)))
    empty_answer = _write_jsonl(tmp_path / "empty.jsonl", [MATH_ROWS[0], {**MATH_ROWS[1], "answer": " "}])
    with pytest.raises(ValueError, match=r"empty\.jsonl:2 \(problem 'wrong'\): empty answer"):
        build_parts(tiny_cfg(task="math", data_file=str(empty_answer)))
    no_tests = _write_jsonl(tmp_path / "notests.jsonl", [CODE_ROWS[0], {**CODE_ROWS[1], "tests": []}])
    with pytest.raises(ValueError, match=r"notests\.jsonl:2 \(problem 'double'\): .*'tests'"):
        build_parts(tiny_cfg(task="code", data_file=str(no_tests)))
    bad_test = _write_jsonl(tmp_path / "badtest.jsonl", [{**CODE_ROWS[0], "tests": [{"input": "1"}]}])
    with pytest.raises(ValueError, match=r"badtest\.jsonl:1 .*test 0"):
        build_parts(tiny_cfg(task="code", data_file=str(bad_test)))
    ok = _write_jsonl(tmp_path / "ok.jsonl", MATH_ROWS)
    with pytest.raises(ValueError, match="eval.every"):
        build_parts(tiny_cfg(task="math", data_file=str(ok), eval=dataclasses.replace(TrainConfig().eval, every=1)))
    with pytest.raises(ValueError, match="data_file"):
        build_parts(tiny_cfg(task="math"))
    with pytest.raises(ValueError, match="data_file"):
        tiny_cfg(data_file="  ")


# -- the paper presets ----------------------------------------------------------------------------


@pytest.mark.parametrize("task,rows", [("math", MATH_ROWS), ("lcb", CODE_ROWS)])
def test_paper_preset_with_a_tmp_data_file_builds(tmp_path: Path, task: str, rows: list[dict[str, Any]]) -> None:
    from respo.commands.train import load_presets
    from respo.llm.config import config_from_dict, config_to_dict
    from respo.llm.train_parts import build_parts

    name = pp.preset_name("olmo3-7b", task, "srpo")
    preset = load_presets().get_preset(name)
    assert preset.data_file == f"data/prepared/{pp.TASKS[task].train_data}.jsonl"
    data = _write_jsonl(tmp_path / f"{pp.TASKS[task].train_data}.jsonl", rows)
    cfg = dataclasses.replace(preset, data_file=str(data),
                              model=dataclasses.replace(preset.model, name="tiny", tiny_hidden=32, lora_rank=4,
                                                        lora_alpha=8))
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    with warnings.catch_warnings(record=True) as caught:  # peft: a transformers FutureWarning
        warnings.simplefilter("always")
        parts = build_parts(cfg)
    assert any("fewer than train_problems" in str(w.message) for w in caught)
    assert [p.id for p in parts.train_problems] == [r["id"] for r in rows]
    assert parts.localizer is not None and hasattr(parts.model, "peft_config")
    assert parts.sampler.task.name == pp.TASKS[task].task  # type: ignore[attr-defined]


# -- the vLLM backend in the loop (fake engine) ---------------------------------------------------------


def scripted_engine(tok: Any, text: str) -> FakeLLM:
    """A fake engine whose every request writes ``text`` (in ``tok``'s ids), then repeats it."""
    script = list(tok.encode(text, add_special_tokens=False))

    def fn(ctx: list[int], prompt_len: int, seed: int) -> int:
        return script[(len(ctx) - prompt_len) % len(script)]

    return FakeLLM(fn)


def _use_fake_vllm(monkeypatch: pytest.MonkeyPatch, engine: FakeLLM, seen: list[dict[str, Any]]) -> None:
    from respo.llm import vllm_backend

    def make_engine(model: str, **kw: Any) -> FakeLLM:
        seen.append({"model": model, **kw})
        return engine

    monkeypatch.setattr(vllm_backend, "make_engine", make_engine)
    monkeypatch.setattr(vllm_backend, "vllm_types", lambda: FAKE_TYPES)
    # build_parts sets it (full-weight sync needs an in-process engine); undone after the test
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "unset")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")


def test_vllm_backend_rewards_from_the_verifier_and_weights_synced_each_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from respo.llm.models import char_tokenizer
    from respo.llm.train_parts import build_model, build_parts
    from respo.llm.trainer import train
    from respo.llm.vllm_backend import VLLMBackend

    engine = scripted_engine(char_tokenizer(), "\\boxed{7}\n")
    made: list[dict[str, Any]] = []
    _use_fake_vllm(monkeypatch, engine, made)
    syncs: list[tuple[int, dict[str, torch.Tensor]]] = []  # (engine calls so far, weights loaded)

    def load_weights(weights: Any) -> None:
        syncs.append((len(engine.calls), {n: t.detach().clone() for n, t in weights}))

    engine.model.load_weights = load_weights  # type: ignore[method-assign]
    data = _write_jsonl(tmp_path / "olympiads_train.jsonl", MATH_ROWS)
    cfg = tiny_cfg(task="math", data_file=str(data), variant="grpo", keep_checkpoints=2,
                   sampling={"backend": "vllm", "vllm": VLLMConfig(gpu_memory_utilization=0.3,
                                                                   enable_prefix_caching=False)})
    parts = build_parts(cfg)
    assert isinstance(parts.sampler.backend, VLLMBackend)  # type: ignore[attr-defined]
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert made == [{"model": "tiny", "lora_rank": 0, "max_model_len": 8192, "dtype": "bfloat16",
                     "gpu_memory_utilization": 0.3, "seed": cfg.seed, "enable_prefix_caching": False,
                     "tensor_parallel_size": 1}]
    initial = {k: v.clone() for k, v in build_model(cfg)[0].state_dict().items()}
    rows = list(train(cfg, parts, run_dir=tmp_path / "run"))

    # rewards come from math-verify on the engine's text: "\boxed{7}" is right for 7, wrong for 8
    for rec in _read_jsonl(tmp_path / "run" / "rollouts.jsonl"):
        for p in rec["prompts"]:
            assert p["fresh"] == [1.0 if p["problem"] == "right" else 0.0] * 8
    assert all(r["reward/fresh_generated_mean"] == 0.5 for r in rows)
    assert all(r["vllm/requests"] > 0 and "time/sync" in r for r in rows)

    # one sync per step, after that step's rollouts and updates, before the next step's rollouts
    assert len(syncs) == cfg.steps and engine.resets == cfg.steps
    calls_at = [c for c, _ in syncs]
    assert 0 < calls_at[0] < calls_at[1] == len(engine.calls)
    for step, (_, loaded) in enumerate(syncs):
        saved = load_file(str(tmp_path / "run" / "checkpoints" / f"step-{step:06d}" / "model" /
                              "model.safetensors"))
        assert set(saved) <= set(loaded) and saved
        for k, v in saved.items():
            assert torch.equal(loaded[k], v), f"sync {step} sent {k} as of the end of step {step}"
    assert any(not torch.equal(syncs[0][1][k], initial[k]) for k in initial), "the update happened first"
    final = parts.model.state_dict()
    assert all(torch.equal(syncs[-1][1][k], final[k]) for k in final)


def test_resume_pushes_the_checkpoint_weights_before_the_first_rollout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from respo.llm.models import char_tokenizer
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    data = _write_jsonl(tmp_path / "olympiads_train.jsonl", MATH_ROWS)
    cfg = tiny_cfg(task="math", data_file=str(data), variant="grpo", steps=1,
                   sampling={"backend": "vllm"})
    engine = scripted_engine(char_tokenizer(), "\\boxed{7}\n")
    _use_fake_vllm(monkeypatch, engine, [])
    list(train(cfg, build_parts(cfg), run_dir=tmp_path / "run"))
    after_one = {k: v.clone() for k, v in dict(engine.model.loaded).items()}

    engine2 = scripted_engine(char_tokenizer(), "\\boxed{7}\n")
    _use_fake_vllm(monkeypatch, engine2, [])
    syncs: list[tuple[int, dict[str, torch.Tensor]]] = []

    def load_weights(weights: Any) -> None:
        syncs.append((len(engine2.calls), {n: t.detach().clone() for n, t in weights}))

    engine2.model.load_weights = load_weights  # type: ignore[method-assign]
    list(train(dataclasses.replace(cfg, steps=2), build_parts(cfg), run_dir=tmp_path / "run", resume=True))
    assert [c for c, _ in syncs][0] == 0, "the resumed weights reach the engine before any generation"
    assert len(syncs) == 2 and syncs[1][0] == len(engine2.calls) > 0
    assert all(torch.equal(syncs[0][1][k], v) for k, v in after_one.items())
    assert len(_read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 2


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_names_the_extra() -> None:
    from respo.llm.train_parts import build_parts

    with pytest.raises(ImportError, match=r"pip install 'respo\[vllm\]'"):
        build_parts(tiny_cfg(sampling={"backend": "vllm"}))


def test_vllm_options_are_validated() -> None:
    from respo.llm.config import ModelConfig, SamplingConfig

    with pytest.raises(ValueError, match="backend"):
        SamplingConfig(backend="sglang")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMConfig(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        VLLMConfig(tensor_parallel_size=0)
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(sampling=SamplingConfig(backend="vllm", vllm=VLLMConfig(adapter_dir="adapters")))
    cfg = TrainConfig(model=ModelConfig(lora_rank=8),
                      sampling=SamplingConfig(backend="vllm", vllm=VLLMConfig(adapter_dir="adapters")))
    assert cfg.sampling.vllm.adapter_dir == "adapters"
    for name in ("smollm2", "sft-warmup:400"):  # built by respo: vLLM cannot load them by name
        with pytest.raises(ValueError, match="vLLM"):
            TrainConfig(model=ModelConfig(name=name), sampling=SamplingConfig(backend="vllm"))


def test_each_process_syncs_adapters_into_its_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from respo.llm.train_parts import process_adapter_dir

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_adapter_dir("ad") == Path("ad") and process_adapter_dir(None) is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    seen = set()
    for rank in range(4):
        monkeypatch.setenv("RANK", str(rank))
        seen.add(process_adapter_dir("ad"))
    assert seen == {Path("ad") / f"rank{r}" for r in range(4)}


def test_code_rewards_come_from_the_sandboxed_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that always writes an echo program: full reward on the echo problem, none on 'double'."""
    from respo.llm.models import char_tokenizer
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    _use_fake_vllm(monkeypatch, scripted_engine(char_tokenizer(), "```python\nprint(input())\n```\n"), [])
    data = _write_jsonl(tmp_path / "lcb_v6_medium.jsonl", CODE_ROWS)
    cfg = tiny_cfg(task="code", data_file=str(data), variant="grpo", steps=1,
                   sampling={"backend": "vllm", "max_response_tokens": 40, "max_thought_tokens": 24})
    parts = build_parts(cfg)
    list(train(cfg, parts, run_dir=tmp_path / "run"))
    (rec,) = _read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    fresh = {p["problem"]: p["fresh"] for p in rec["prompts"]}
    assert fresh == {"echo": [1.0] * 8, "double": [0.0] * 8}
    assert parts.sampler.task.stats["runs"] == 16  # type: ignore[attr-defined]


# -- respo eval run --backend vllm (fake engine) ------------------------------------------------------


def test_eval_run_through_the_vllm_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from respo.commands.evaluate import RunConfig, run
    from respo.llm.models import char_tokenizer

    tok = char_tokenizer()
    tok.save_pretrained(str(tmp_path / "model"))
    engine = scripted_engine(tok, "\\boxed{7}</thought>")
    made: list[dict[str, Any]] = []
    _use_fake_vllm(monkeypatch, engine, made)
    data = tmp_path / "data"
    data.mkdir()
    _write_jsonl(data / "oly.jsonl", MATH_ROWS)
    cfg = RunConfig(model=str(tmp_path / "model"), benchmarks=("oly",), data=data, out=tmp_path / "eval.jsonl",
                    backend="vllm", vllm=VLLMConfig(gpu_memory_utilization=0.5), max_response_tokens=32,
                    save_responses=True)
    (row,) = run(cfg)
    assert made == [{"model": str(tmp_path / "model"), "max_model_len": 8192, "seed": 42,
                     "gpu_memory_utilization": 0.5, "enable_prefix_caching": True, "tensor_parallel_size": 1}]
    assert row["metrics"]["mean_reward"] == 0.5 and len(engine.calls) == 1
    (resp,) = [r for r in _read_jsonl(tmp_path / "eval.responses.jsonl") if r["id"] == "right"]
    assert resp["responses"] == ["\\boxed{7}</thought>"] and resp["rewards"] == [1.0]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_eval_run_vllm_without_vllm_names_the_extra(tmp_path: Path) -> None:
    from respo.commands.evaluate import RunConfig, run

    with pytest.raises(ImportError, match=r"pip install 'respo\[vllm\]'"):
        run(RunConfig(model=str(tmp_path), benchmarks=("arithmetic",), out=tmp_path / "e.jsonl", backend="vllm"))


# -- FSDP: the optimizer is built over the wrapped model's parameters ----------------------------------


class _StopAtOptimizer(Exception):
    pass


@pytest.mark.parametrize("dist_type", ["FSDP", "MULTI_CPU"])
def test_optimizer_is_created_after_fsdp_wraps_the_model(monkeypatch: pytest.MonkeyPatch, dist_type: str) -> None:
    from types import SimpleNamespace

    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    cfg = tiny_cfg(minibatch_prompts=2, variant="grpo")
    parts = build_parts(cfg)
    prepared: list[torch.nn.Module] = []

    class Flat(torch.nn.Module):  # stands in for FSDP: new (flattened) parameter objects
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.flat = torch.nn.Parameter(torch.cat([p.detach().flatten() for p in inner.parameters()]))

    def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
        prepared.append(Flat(model))
        return prepared[-1]

    seen: dict[str, Any] = {}

    def adamw(params: Any, **kw: Any) -> Any:
        seen["params"], seen["prepared_before"] = list(params), len(prepared)
        raise _StopAtOptimizer

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    acc = SimpleNamespace(process_index=0, num_processes=2, device=torch.device("cpu"), is_main_process=True,
                          distributed_type=dist_type, prepare_model=prepare_model,
                          wait_for_everyone=lambda: None)
    with pytest.raises(_StopAtOptimizer):
        next(train(cfg, parts, accelerator=acc))
    if dist_type == "FSDP":
        assert seen["prepared_before"] == 1 and seen["params"] == [prepared[0].flat]
    else:  # DDP keeps the original order: the optimizer holds the model's own parameters
        assert seen["prepared_before"] == 0
        assert [id(p) for p in seen["params"]] == [id(p) for p in parts.model.parameters()]
