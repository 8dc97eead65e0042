"""The shared Sampler contract (tests/contract.py) for the LLM sampler on a tiny random model."""

from __future__ import annotations

import pytest
from contract import check_sampler_contract
from llm_fixtures import tiny_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_lm_sampler_contract() -> None:
    sampler, root = tiny_sampler()
    check_sampler_contract(sampler, None, root, n=4, seed=0)


def test_lm_sampler_contract_stop_overflow_and_thought_delimiter() -> None:
    from llm_fixtures import TOY_PROBLEM, ToyTask, tiny_backend, tiny_tokenizer

    from respo.llm.sampler import LMSampler, SampleConfig

    cfg = SampleConfig(max_response_tokens=20, max_thought_tokens=5, max_thoughts=4, temperature=1.0,
                       top_p=0.9, delimiter="</thought>", overflow="stop")
    sampler = LMSampler(tiny_backend(1), tiny_tokenizer(), ToyTask(), cfg=cfg)
    check_sampler_contract(sampler, None, sampler.root(TOY_PROBLEM), n=3, seed=1)


def test_lm_sampler_states_info_and_budget() -> None:
    import numpy as np
    import pytest
    from llm_fixtures import TOY_PROBLEM, tiny_tokenizer

    from respo.llm.thoughts import split_thoughts
    from respo.tasks.base import Problem

    sampler, root = tiny_sampler(max_new_tokens=30, max_thought_tokens=6)
    assert sampler.problem_of(root) is TOY_PROBLEM
    assert tiny_tokenizer().decode(root.ids).endswith("Solution:\n")
    chains = sampler.extend(None, (root,), 4, rng=np.random.default_rng(3))
    for c in chains:
        full = c.states[-1]
        assert sampler.problem_of(full) is TOY_PROBLEM
        for a, b in zip(c.states, c.states[1:], strict=False):  # states grow by one thought each
            assert len(b) > len(a) and np.array_equal(b.ids[: len(a)], a.ids)
        resp = full.response_ids
        assert [e for _, e in split_thoughts(resp, sampler.fmt.delimiter)] == [
            len(s) - root.prompt_len for s in c.states[1:]]
        assert c.info["text"] == sampler.fmt.decode(resp)
        assert c.info["n_kept"] == len(resp) <= c.info["n_generated"] <= 30
        assert c.info["logprobs"].shape == (len(resp),)
        assert c.info["truncated"] == (c.info["stop_reason"] in ("length", "thought_limit"))
        assert c.reward == float(TOY_PROBLEM.answer in c.info["text"])
    stats = sampler.pop_stats()
    assert stats["gen/chains"] == 4 and stats["gen/tokens"] == sum(c.info["n_generated"] for c in chains)
    assert sampler.pop_stats()["gen/chains"] == 0

    # a suffix gets what the prefix left of the response budget, and trains only its own tokens
    c = max(chains, key=lambda c: c.n_thoughts)
    k = c.n_thoughts
    used = len(c.states[k - 1]) - root.prompt_len
    suffixes = sampler.extend(None, c.states[:k], 3, rng=np.random.default_rng(4))
    for s in suffixes:
        assert s.prefix_len == k - 1
        assert len(s.states[-1]) - len(s.states[s.prefix_len]) == s.info["n_kept"]
        assert s.info["n_generated"] <= 30 - used
        assert s.info["text"].startswith(sampler.fmt.decode(c.states[k - 1].response_ids))

    with pytest.raises(TypeError):
        sampler.extend(object(), (root,), 1, rng=np.random.default_rng(0))
    with pytest.raises(KeyError):
        sampler.problem_of(type(root)(root.ids[:-1], root.prompt_len - 1))
    clash = Problem(id="other", question=TOY_PROBLEM.question, answer="different")
    with pytest.raises(ValueError, match="same prompt"):
        sampler.root(clash)
    same = Problem(id="dup", question=TOY_PROBLEM.question, answer=TOY_PROBLEM.answer)
    assert sampler.root(same) == root


def test_token_state_semantics() -> None:
    import numpy as np
    import pytest

    from respo.llm.types import TokenState

    a = TokenState(np.array([1, 2, 3]), 2)
    b = TokenState(np.array([1, 2, 3], dtype=np.int32), 2)
    assert a == b and hash(a) == hash(b) and a.ids.dtype == np.int64
    assert a != TokenState(np.array([1, 2, 3]), 1) and a != TokenState(np.array([1, 2]), 2)
    assert not a.ids.flags.writeable
    assert a.prompt_ids.tolist() == [1, 2] and a.response_ids.tolist() == [3] and len(a) == 3
    with pytest.raises(ValueError):
        TokenState(np.array([[1]]), 0)
    with pytest.raises(ValueError):
        TokenState(np.array([1]), 2)


@pytest.mark.parametrize("kind", ["prompted", "confidence"])
def test_srpo_buffer_with_llm_localizers(kind: str) -> None:
    from respo.buffer import Rngs, build_buffer
    from respo.llm.localize import ConfidenceLocalizer, PromptedSelfLocalizer
    from respo.variants import VARIANTS

    sampler, root = tiny_sampler()
    loc = (PromptedSelfLocalizer.for_sampler(sampler, max_new_tokens=8) if kind == "prompted"
           else ConfidenceLocalizer(sampler.backend.model, threshold=0.02))
    split = VARIANTS["srpo"].split
    buf = build_buffer(sampler, loc, None, root, split=split, rngs=Rngs.keyed(0, 0, 0))
    assert len(buf.chains) == split.budget
    stats = loc.pop_stats()
    assert len(buf.locates) == 1, "the toy task fails often: a parent must be found"
    assert stats["localize/calls"] == len(buf.locates)
    assert stats["localize/fallbacks"] == sum(r.fell_back for r in buf.locates)
    for j, r in enumerate(buf.locates):
        g = buf.suffix_group_of[j]
        if g >= 0:
            assert r.step is not None
            for c, gid in zip(buf.chains, buf.group.tolist(), strict=True):
                if gid == g:
                    assert c.prefix_len == r.step - 1
                    assert c.states[: r.step] == buf.parents[j].states[: r.step]
