"""experiments/cpu_track/localizer_sft.py: the localization-training data builder.

The targets must name the judge's first wrong thought in the index convention of the trainer's
localizer (``thought_ids`` / ``parse_localization``), and the prompts must be exactly what the
unmodified ``PromptedSelfLocalizer.prompt_ids`` builds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from respo.llm.localize import PromptedSelfLocalizer, parse_localization, thought_ids
from respo.llm.models import char_tokenizer
from respo.llm.sampler import LMSampler
from respo.seeding import rng_for
from respo.tasks.synthetic import corrupt_chain, generate_problems, gold_chain

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "cpu_track" / "localizer_sft.py"
_spec = importlib.util.spec_from_file_location("localizer_sft", _PATH)
assert _spec is not None and _spec.loader is not None
lsft = importlib.util.module_from_spec(_spec)
sys.modules["localizer_sft"] = lsft
_spec.loader.exec_module(lsft)


@pytest.fixture(scope="module")
def parts():
    tok = char_tokenizer()
    task = lsft.arithmetic_task()
    sampler = LMSampler(None, tok, task, cfg=lsft.ROLLOUT)  # no generation: chains from lines
    loc = PromptedSelfLocalizer(None, tok, sampler.problem_of, delimiter="\n")
    problems = generate_problems(task.spec, 40, seed=3, split="locsft")
    return tok, task, sampler, loc, problems


@pytest.mark.parametrize("style", lsft.REPLY_STYLES)
def test_reply_parses_back_to_the_first_error(parts, style):
    _, _, _, _, problems = parts
    for p in problems[:10]:
        n = len(gold_chain(p))
        for k in range(1, n + 2):  # k = n + 1: an extra line beyond the gold chain
            text = lsft.reply_text(p, k, style)
            assert text.endswith(f"\\boxed{{{k}}}")
            assert parse_localization(text, n + 1) == (k, "parsed boxed")
    p = problems[0]
    gold = gold_chain(p)
    assert lsft.reply_text(p, 2, "resolve") == f"Step 1: {gold[0]}\nStep 2: {gold[1]}\n\\boxed{{2}}"
    with pytest.raises(ValueError):
        lsft.reply_text(p, 0, "resolve")
    with pytest.raises(ValueError, match="unknown reply style"):
        lsft.reply_text(p, 1, "essay")


def test_synthetic_targets_match_the_injected_error_and_the_localizer_prompt(parts):
    tok, task, sampler, loc, problems = parts
    known = lsft.synthetic_failures(sampler, problems, seed=5)
    assert len(known) >= 30  # a few slips cancel out and are dropped (reward 1)
    rng = rng_for(5, "locsft", "corrupt")
    injected = {p.id: corrupt_chain(p, rng) for p in problems}
    for style in lsft.REPLY_STYLES:
        for chain, k in known:
            problem = sampler.problem_of(chain.states[0])
            c = injected[problem.id]
            assert k == c.first_error and chain.reward == 0.0
            # thought j of the chain is line j (what the localizer renders as "Step j")
            texts = [tok.decode(t.tolist()) for t in thought_ids(chain)]
            assert texts == [line + "\n" for line in c.lines]
            assert lsft.first_error(sampler, chain) == k
            ex = lsft.localization_example(loc, chain, k, style, source="synthetic")
            prompt = loc.prompt_ids(chain)
            assert ex.prompt_len == len(prompt) and np.array_equal(ex.ids[: len(prompt)], prompt)
            reply = ex.ids[ex.prompt_len:]
            assert int(reply[-1]) == tok.eos_token_id  # trained to stop
            text = tok.decode(reply.tolist(), skip_special_tokens=True)
            assert parse_localization(text, chain.n_thoughts) == (k, "parsed boxed")
            assert ex.first_error == k and ex.problem_id.endswith(f"n={chain.n_thoughts}")
            assert ex.loss_mask.sum() == len(reply)
    rendered = tok.decode(loc.prompt_ids(known[0][0]).tolist())
    assert f"Step {known[0][1]}: {injected[sampler.problem_of(known[0][0].states[0]).id].lines[known[0][1] - 1]}" in rendered


def test_onpolicy_failures_carry_the_judged_first_error(parts):
    from llm_fixtures import tiny_lm

    tok, task, _, _, problems = parts
    sampler = lsft.make_sampler(tiny_lm(0), tok, task)  # a random model: every chain fails
    known, stats = lsft.sample_failures(sampler, problems[:3], 2, seed=0, tag="t")
    assert stats["chains"] == 6 and stats["known_first_error"] == len(known) >= 1
    for chain, k in known:
        assert chain.reward < 1.0 and 1 <= k <= chain.n_thoughts
        problem = sampler.problem_of(chain.states[0])
        texts = [tok.decode(t.tolist()) for t in thought_ids(chain)]
        assert task.first_error(problem, texts) == k


def test_bucket_batches_share_the_instruction_prefix(parts):
    from respo.llm.sft import shared_prefix_len

    tok, _, sampler, loc, problems = parts
    known = lsft.synthetic_failures(sampler, problems, seed=5)
    exs = [lsft.localization_example(loc, c, k, "boxed") for c, k in known]
    batches = lsft.bucket_batches(exs, 4, np.random.default_rng(0))
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in exs)
    for b in batches:
        assert len({e.problem_id.rpartition("n=")[2] for e in b}) == 1
        if len(b) > 1:  # the shared prefix reaches past the instruction (which names n)
            P = shared_prefix_len(b)
            text = tok.decode(b[0].ids[:P].tolist())
            assert "Problem:\n" in text, text[-80:]
