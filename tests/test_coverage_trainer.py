"""The trainer with the coverage testbed's settings: the arithmetic-hard task, the coverage
measurement in the evaluator, the bf16 update with eager attention, one optimizer step per RL
step; exact resume."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from llm_fixtures import full_and_killed_metrics

from respo.llm.config import EvalConfig
from respo.llm.trainer import train


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _cfg(variant: str = "srpo", **kw):
    from respo.commands.train import load_presets

    base = load_presets().get_preset("tiny-smoke")
    sampling = dataclasses.replace(base.sampling, max_response_tokens=40, max_thought_tokens=10)
    return dataclasses.replace(
        base, variant=variant, task="arithmetic-hard:0.3", steps=3, prompts_per_step=2,
        minibatch_prompts=2, sampling=sampling,
        model=dataclasses.replace(base.model, update_dtype="bfloat16", update_attention="eager"),
        eval=EvalConfig(every=1, problems=6, seed=1000, at_start=True, greedy=False), **kw)


@pytest.mark.parametrize("variant", ["srpo", "oracle"])
def test_killed_coverage_run_resumes_exactly(tmp_path, variant):
    a, b = full_and_killed_metrics(_cfg(variant), tmp_path)
    assert len(a) == 3 and a == b
    # The coverage measurement is there, before training and after every step, as shares.
    assert 0.0 <= a[0]["eval0/cov_improvable"] <= 1.0 and 0.0 <= a[0]["eval0/cov_first_error"] <= 1.0
    assert all("eval/cov_improvable" in r and "eval/greedy_pass@1" not in r for r in a)


def test_gold_step_probs_are_teacher_forced_line_probabilities():
    from respo.llm.train_parts import build_parts, gold_step_probs

    cfg = _cfg("grpo")
    parts = build_parts(cfg)
    task, smp = parts.sampler.task, parts.sampler
    probs = list(parts.eval_problems)[:3]
    got = gold_step_probs(parts.model, parts.tokenizer, smp, task, probs, temperature=1.0)
    tok = parts.tokenizer
    for p, line_p in zip(probs, got, strict=True):
        ids = list(smp.root(p).ids)
        lines = task.gold_thoughts(p)
        assert len(line_p) == len(lines)
        for line, lp in zip(lines, line_p, strict=True):
            new = tok.encode(line, add_special_tokens=False) + list(smp.fmt.delimiter.canonical)
            total = 0.0
            for t in new:  # one token at a time, no batching or padding
                with torch.no_grad():
                    logits = parts.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
                total += float(torch.log_softmax(logits, -1)[t])
                ids.append(int(t))
            assert math.isclose(lp, math.exp(total), rel_tol=1e-4, abs_tol=1e-7)


def _one_step_spied(probe, **model_kw):
    """One GRPO step with ``model_kw`` on the model config; ``probe(parts)`` is recorded at every
    forward of the model. Returns (metrics row, records, parts)."""
    from respo.llm.train_parts import build_parts

    base = _cfg("grpo", seed=3)
    cfg = dataclasses.replace(base, steps=1, eval=EvalConfig(), model=dataclasses.replace(base.model, **model_kw))
    parts = build_parts(cfg)
    seen = []
    orig = parts.model.forward

    def spy(*a, **kw):
        seen.append(probe(parts))
        return orig(*a, **kw)

    parts.model.forward = spy
    (row,) = list(train(cfg, parts))
    return row, seen, parts


def _same_rollouts_nearly_same_loss(a_row, b_row):
    assert a_row["tokens/generated"] == b_row["tokens/generated"]
    a, b = a_row["loss/loss"], b_row["loss/loss"]
    assert abs(a - b) <= 0.05 * abs(a) + 1e-3


def test_bf16_update_changes_the_update_little_and_keeps_generation_in_fp32():
    def autocast(_parts):
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    rows = {}
    for dt in ("same", "bfloat16"):
        rows[dt], calls, _ = _one_step_spied(autocast, update_dtype=dt)
        assert int(rows[dt]["gen/calls"]) > 0
        if dt == "same":
            assert set(calls) == {None}
        else:  # generation forwards first (no autocast), the update's forwards in bf16
            assert None in calls and torch.bfloat16 in calls
    _same_rollouts_nearly_same_loss(rows["same"], rows["bfloat16"])


def test_coverage_suites_are_paired_seed_major_and_tuned_on_validation():
    from respo.commands.train import load_presets

    presets = load_presets()
    runs = presets.suite_runs("coverage")
    arms, settings = presets.ARMS, presets.COVERAGE_SETTINGS
    assert len(runs) == 5 * len(arms) * len(presets.COVERAGE_SUITES["coverage"].settings)
    # Seed-major: a partial suite holds complete paired comparisons.
    assert [r.cfg.seed for r in runs] == sorted(r.cfg.seed for r in runs)
    for r in runs:
        assert r.cfg.task == f"arithmetic-hard:{settings[r.setting]:g}"
        assert r.cfg.eval.split == "test" and r.cfg.eval.seed == 1000 and r.cfg.eval.problems >= 512
        assert r.name == f"{r.setting}-{r.arm}-s{r.cfg.seed}"
        if r.arm == "grpo-tok":
            assert r.cfg.variant == "grpo" and r.cfg.prompts_per_step > 16
        else:
            assert r.cfg.variant == arms[r.arm]["variant"] and r.cfg.prompts_per_step == 16
    # Every arm of one (setting, seed) trains with the same seed and evaluation set.
    assert len({(r.setting, r.cfg.seed, r.cfg.eval) for r in runs}) == len({(r.setting, r.cfg.seed) for r in runs}) == 15
    tune = presets.suite_runs("coverage-val")
    assert tune and all(r.cfg.eval.split == "val" and r.tag == "tune" for r in tune)
    assert {r.cfg.optim.lr for r in tune} >= {1e-4, 3e-4}
    with pytest.raises(ValueError, match="unknown suite"):
        presets.suite_runs("coverage-typo")
    quick = presets.suite_runs("coverage-quick")
    assert {(r.setting, r.arm) for r in quick if r.setting == "p50"} == {("p50", "grpo")}
    assert {r.arm for r in quick if r.setting == "p03"} == {"grpo", "rrpo", "srpo", "oracle"}


def test_update_attention_switches_the_update_only_and_changes_it_little():
    """``model.update_attention="eager"``: the update's forwards run with eager attention, the
    generation forwards with the model's own (sdpa); the rollouts are the same and the loss
    nearly so; the setting is restored after every forward."""
    def impl(parts):
        return parts.model.config._attn_implementation, torch.is_grad_enabled()

    rows = {}
    for attn in ("same", "eager"):
        rows[attn], seen, parts = _one_step_spied(impl, update_attention=attn)
        assert {i for i, grad in seen if grad} == ({"sdpa"} if attn == "same" else {"eager"})
        assert parts.model.config._attn_implementation == "sdpa"
        assert seen[0][0] == "sdpa"  # the first forward is generation
    _same_rollouts_nearly_same_loss(rows["same"], rows["eager"])


def test_bad_update_attention_is_named():
    from respo.llm.config import ModelConfig

    with pytest.raises(ValueError, match="model.update_attention"):
        ModelConfig(update_attention="flash")
