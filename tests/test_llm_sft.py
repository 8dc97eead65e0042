"""Supervised warm-up (respo.llm.sft): rendering = what the sampler sees, loss, cache, evaluation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from respo.llm import sft
from respo.llm.generation import Generation
from respo.llm.models import char_tokenizer
from respo.llm.sampler import LMSampler, SampleConfig
from respo.llm.thoughts import split_thoughts
from respo.seeding import rng_for
from respo.tasks.synthetic import ArithmeticTask, generate_problems, gold_chain, warmup_examples

TINY = sft.SFTConfig(hidden=32, layers=1, heads=2, intermediate=64, steps=2, batch_size=4, warmup_steps=0)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


class ScriptedBackend:
    """Returns the given ids as the one continuation (stands in for the model in the sampler)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids

    def generate(self, prompts, *, n, **kw):
        return [Generation(self.ids, np.zeros(len(self.ids), np.float32), True, "answer")] * (n * len(prompts))

    def continue_group(self, prefix, n, **kw):
        return self.generate([prefix], n=n)


def test_rendering_matches_the_sampler(tok):
    cfg = sft.SFTConfig()
    task = ArithmeticTask(cfg.spec)
    problems = generate_problems(cfg.spec, 12, seed=3, split="t")
    data = warmup_examples(problems, seed=1, error_frac=0.5)
    examples = sft.sft_examples(data, tok, delimiter=cfg.delimiter, prompt_variant=cfg.prompt_variant)
    scfg = SampleConfig(delimiter=cfg.delimiter, prompt_variant=cfg.prompt_variant, max_response_tokens=256)
    assert any(e.first_error is not None for e in examples) and any(e.first_error is None for e in examples)
    for (p, lines, first_error), ex in zip(data, examples, strict=True):
        solution = ex.ids[ex.prompt_len:]
        sampler = LMSampler(ScriptedBackend(solution), tok, task, cfg=scfg)
        root = sampler.root(p)
        np.testing.assert_array_equal(root.ids, ex.ids[: ex.prompt_len])
        chain = sampler.extend(None, (root,), 1, rng=rng_for(0, "eval"))[0]
        np.testing.assert_array_equal(chain.states[-1].ids, ex.ids)  # token-exact round trip
        thoughts = sampler.fmt.thought_texts(solution)
        assert thoughts == [line + "\n" for line in lines]
        assert len(chain.states) == 1 + len(lines)
        # the sampler stops right after the answer line: only the last thought is final
        spans = split_thoughts(solution, sampler.fmt.delimiter)
        assert [sampler.fmt.is_final(solution[s:e]) for s, e in spans] == [False] * (len(lines) - 1) + [True]
        assert task.first_error(p, thoughts) == first_error
        assert chain.reward == (1.0 if lines[-1] == gold_chain(p)[-1] else 0.0)
        if first_error is None:
            assert chain.reward == 1.0
        # loss mask: exactly the solution tokens
        assert ex.loss_mask.sum() == len(solution) and not ex.loss_mask[: ex.prompt_len].any()
        assert tok.eos_token_id not in ex.ids.tolist()


def test_shared_prefix_gives_the_full_forward_loss(tok):
    cfg = dataclasses.replace(TINY, prompt_variant="small")  # a long shared instruction prefix
    examples = sft.training_data(cfg, tok, 6)
    model = sft.build_model(cfg, tok)
    assert sft.shared_prefix_len(examples) > 50
    with torch.no_grad():
        a, n_a = sft.sft_loss(model, examples, tok.pad_token_id, share_prefix=True)
        b, n_b = sft.sft_loss(model, examples, tok.pad_token_id, share_prefix=False)
    assert n_a == n_b == sum(int(e.loss_mask.sum()) for e in examples)
    assert torch.allclose(a, b, atol=1e-5)


def test_a_few_steps_reduce_the_loss():
    cfg = dataclasses.replace(TINY, steps=12, batch_size=8, lr=1e-2)
    rows = []
    model, hist = sft.train_sft(cfg, progress=rows.append)
    assert rows == hist and [r["step"] for r in hist] == list(range(1, 13))
    assert np.mean([r["loss"] for r in hist[-3:]]) < np.mean([r["loss"] for r in hist[:3]]) - 0.5
    assert not model.training


def test_lr_schedule():
    f = [sft.lr_multiplier(i, warmup=2, total=10, min_frac=0.1) for i in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0 and f[-1] > 0.1 and f == sorted(f[:2]) + sorted(f[2:], reverse=True)


def test_cache_reuses_a_finished_checkpoint_and_ignores_tmp(tmp_path, monkeypatch, tok):
    path = sft.checkpoint_path(TINY, tmp_path)
    junk = tmp_path / (path.name + ".tmp-killed")  # a writer killed half-way
    junk.mkdir()
    (junk / "config.json").write_text("{")
    got = sft.warmup_checkpoint(TINY, tmp_path, evaluate=lambda m, t: {"x": 1.0}, snapshot_steps=(1,))
    assert got == path and sft.is_complete(path)
    info = json.loads((path / "sft.json").read_text())
    assert info["metrics"] == {"x": 1.0} and len(info["history"]) == 2
    assert sft.SFTConfig.from_dict(info["config"]) == TINY
    # the snapshot after step 1 is cached as the same run stopped early
    snap = sft.checkpoint_path(dataclasses.replace(TINY, steps=1, schedule_steps=2), tmp_path)
    assert sft.is_complete(snap)
    direct, _ = sft.train_sft(dataclasses.replace(TINY, steps=1, schedule_steps=2))
    snap_model, _, _ = sft.load_warmup(snap)
    for a, b in zip(direct.state_dict().values(), snap_model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)

    def boom(*a, **k):
        raise AssertionError("retrained a cached checkpoint")

    monkeypatch.setattr(sft, "train_sft", boom)
    assert sft.warmup_checkpoint(TINY, tmp_path) == path
    model, tok2, _ = sft.load_warmup(path)
    text = "Q: 1 a+2\nSolution:\na:1+2=3\n\\boxed{3}\n"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"] and len(tok2) == len(tok)
    assert tok2.eos_token_id == tok.eos_token_id and tok2.pad_token_id == tok.pad_token_id
    assert tok2.chat_template == tok.chat_template  # the prompted localizer needs it
    with pytest.raises(FileNotFoundError):
        sft.load_warmup(junk)


def test_evaluate_policy_keys(tok):
    model = sft.build_model(TINY, tok)
    problems = generate_problems(TINY.spec, 3, seed=9, split="eval")
    limits = dataclasses.replace(sft.WARMUP_EVAL, max_response_tokens=24, max_thought_tokens=12)
    out = sft.evaluate_policy(model, tok, problems, ArithmeticTask(TINY.spec), n_samples=2, seed=0,
                              sampling=limits)
    for k in ("greedy_pass@1", "sampled_pass@1", "greedy_chain_acc", "sampled_chain_acc", "step_error",
              "first_error", "hazard", "answer_found", "truncated"):
        assert k in out
    assert out["chains"] == 6 and 0.0 <= out["sampled_pass@1"] <= 1.0
    assert abs(sum(out["first_error"].values()) - 1.0) < 1e-9
