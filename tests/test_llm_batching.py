"""Batched generation across prompts: ``HFBackend.generate_groups``, ``LMSampler.extend_many``,
``locate_many`` of both LLM localizers, and ``build_buffers`` with the real tiny stack.

Random streams are per row, so batched and one-by-one sampling give the same chains (the tests
compare exactly; the tiny model's batched logits differ from unbatched ones by ~1e-7, far from
flipping an inverse-CDF draw)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llm_fixtures import TOY_PROBLEM, tiny_backend, tiny_sampler, tiny_tokenizer

from respo.buffer import BatchLocalizer, BatchSampler, Rngs, build_buffer, build_buffers
from respo.llm.generation import GenerationBackend, GroupBackend, StopRule
from respo.llm.localize import (
    ConfidenceLocalizer,
    PromptedSelfLocalizer,
    token_probs,
    token_probs_many,
)
from respo.resets import UniformLocalizer
from respo.tasks.base import Problem
from respo.variants import VARIANTS

OTHER = [Problem(id="toy-1", question="Compute 12 * 7 + 3, carefully?", answer="q"),
         Problem(id="toy-2", question="2?", answer="z"),
         Problem(id="toy-3", question="What is the sum of 5 and 9 and 11?", answer="k")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

class Counting:
    """A GroupBackend proxy that counts backend calls (any of the three methods)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def generate(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.inner.generate(*a, **kw)

    def continue_group(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.inner.continue_group(*a, **kw)

    def generate_groups(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.inner.generate_groups(*a, **kw)


def _ids(text: str) -> np.ndarray:
    return np.asarray(tiny_tokenizer().encode(text, add_special_tokens=False), dtype=np.int64)


def _requests(sampler: Any, root: Any, seed: int = 0) -> list[tuple[tuple[Any, ...], int, Any]]:
    """Ragged requests: two roots of different lengths and reset prefixes of 1..3 thoughts."""
    roots = [root] + [sampler.root(p) for p in OTHER[:2]]
    base = sampler.extend(None, (roots[1],), 1, rng=np.random.default_rng(99))[0]
    pre = [base.states[: j] for j in range(2, min(base.n_thoughts, 3) + 1)]
    prefixes = [(roots[0],), *pre, (roots[2],)]
    return [(p, 1 + i % 3, np.random.default_rng([seed, i])) for i, p in enumerate(prefixes)]


def _same_chain(a: Any, b: Any) -> bool:
    return (len(a.states) == len(b.states) and all(x == y for x, y in zip(a.states, b.states, strict=True))
            and a.reward == b.reward and a.prefix_len == b.prefix_len)


def test_protocols() -> None:
    sampler, _ = tiny_sampler()
    assert isinstance(sampler.backend, GroupBackend) and isinstance(sampler.backend, GenerationBackend)
    assert isinstance(sampler, BatchSampler)
    assert isinstance(PromptedSelfLocalizer.for_sampler(sampler), BatchLocalizer)
    assert isinstance(ConfidenceLocalizer(sampler.backend.model, threshold=0.1), BatchLocalizer)


def test_generate_groups_greedy_equals_one_by_one_with_per_prompt_limits() -> None:
    be = tiny_backend()
    fmt = sampler_fmt()
    prompts = [_ids("Q: 2+3?\n"), _ids("Q: what is 12 times 7, plus 3?\nstep one\n"), _ids("Q?")]
    counts, limits = [1, 3, 2], [5, 9, 7]
    stops = [StopRule(fmt, max_thought_tokens=4, max_thoughts=1), None,
             StopRule(fmt, max_thought_tokens=4, max_thoughts=3)]
    groups = be.generate_groups(prompts, counts, max_new_tokens=limits, temperature=0.0, top_p=1.0,
                                seed=3, stop=stops)
    assert [len(g) for g in groups] == counts
    for p, c, m, st, grp in zip(prompts, counts, limits, stops, groups, strict=True):
        one = be.continue_group(p, c, max_new_tokens=m, temperature=0.0, top_p=1.0, seed=0, stop=st)
        for x, y in zip(grp, one, strict=True):
            assert x.ids.tolist() == y.ids.tolist() and x.stop_reason == y.stop_reason
            assert x.n_forced == y.n_forced and x.finished == y.finished
            np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-4)
            assert len(x.ids) <= m
    # sampled: same seed -> same output; generate() is generate_groups with equal counts
    kw: dict[str, Any] = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, seed=4)
    a = be.generate_groups(prompts, [2, 2, 2], **kw)
    b = be.generate(prompts, n=2, **kw)
    assert [g.ids.tolist() for grp in a for g in grp] == [g.ids.tolist() for g in b]
    with pytest.raises(ValueError):
        be.generate_groups(prompts, [1, 0, 1], **kw)
    with pytest.raises(ValueError):
        be.generate_groups(prompts, [1, 1], **kw)
    with pytest.raises(ValueError):
        be.generate_groups(prompts, [1, 1, 1], max_new_tokens=[3, 3], temperature=1.0, top_p=1.0,
                           seed=0)


def sampler_fmt() -> Any:
    from respo.llm.thoughts import ThoughtFormat

    return ThoughtFormat.for_tokenizer(tiny_tokenizer(), "\n")


def test_extend_many_contract_counters_and_determinism() -> None:
    sampler, root = tiny_sampler()
    reqs = _requests(sampler, root)
    sampler.pop_stats()
    counting = Counting(sampler.backend)
    sampler.backend = counting
    outs = sampler.extend_many(None, reqs)
    assert counting.calls == 1, "one backend call for all requests"
    stats = sampler.pop_stats()
    ref_keys = set(sampler.extend(None, (root,), 1, rng=np.random.default_rng(0))[0].info)
    assert [len(o) for o in outs] == [n for _, n, _ in reqs]
    for (prefix, _n, _), chains in zip(reqs, outs, strict=True):
        j = len(prefix)
        for c in chains:
            assert all(x == y for x, y in zip(c.states[:j], prefix, strict=True)), "prefix kept"
            assert c.prefix_len == j - 1 and c.n_thoughts >= j
            assert 0.0 <= c.reward <= 1.0 and set(c.info) == ref_keys
            assert c.info["problem_id"] == sampler.problem_of(prefix[0]).id
            full = c.states[-1].ids
            assert np.array_equal(full[: len(prefix[-1])], prefix[-1].ids), "token-exact prefix"
            assert len(full) - c.states[0].prompt_len <= sampler.cfg.max_response_tokens
            assert c.n_thoughts <= sampler.cfg.max_thoughts
    flat = [c for o in outs for c in o]
    assert stats["gen/calls"] == 1 and stats["gen/chains"] == len(flat)
    assert stats["gen/tokens"] == sum(c.info["n_generated"] for c in flat)
    assert stats["gen/truncated"] == sum(c.info["truncated"] for c in flat)
    # each request's rng is consumed exactly once, as by extend
    for _, _, r in reqs:
        assert r.bit_generator.state == _advanced(r).bit_generator.state
    again = sampler.extend_many(None, _requests(sampler, root))
    assert all(_same_chain(a, b) for x, y in zip(outs, again, strict=True) for a, b in zip(x, y, strict=True))
    other = sampler.extend_many(None, _requests(sampler, root, seed=1))
    assert not all(_same_chain(a, b) for x, y in zip(outs, other, strict=True)
                   for a, b in zip(x, y, strict=True))


def _advanced(r: Any) -> Any:
    """A copy of ``r``'s initial state advanced by one integer draw (what extend consumes)."""
    seed_seq = r.bit_generator.seed_seq
    fresh = np.random.default_rng(seed_seq)
    fresh.integers(0, 2**63 - 1)
    return fresh


def test_extend_many_greedy_equals_extend_one_by_one() -> None:
    sampler, root = tiny_sampler(temperature=0.0)
    reqs = _requests(sampler, root)
    batched = sampler.extend_many(None, reqs)
    serial = [sampler.extend(None, p, n, rng=np.random.default_rng(5)) for p, n, _ in reqs]
    for x, y in zip(batched, serial, strict=True):
        for a, b in zip(x, y, strict=True):
            assert _same_chain(a, b) and a.info["text"] == b.info["text"]
            assert a.info["stop_reason"] == b.info["stop_reason"]
            np.testing.assert_allclose(a.info["logprobs"], b.info["logprobs"], atol=1e-4)


def test_sampled_extend_many_equals_extend_one_by_one_and_rows_are_nested() -> None:
    """Per-row random streams: batching changes no sample, and the first m rows of a request
    do not depend on how many rows it asked for (common random numbers across variants)."""
    sampler, root = tiny_sampler(temperature=1.0)
    batched = sampler.extend_many(None, _requests(sampler, root))
    serial = [sampler.extend(None, p, n, rng=r) for p, n, r in _requests(sampler, root)]
    for x, y in zip(batched, serial, strict=True):
        for a, b in zip(x, y, strict=True):
            assert _same_chain(a, b)
            np.testing.assert_allclose(a.info["logprobs"], b.info["logprobs"], atol=1e-4)
    texts = {c.info["text"] for o in batched for c in o}
    assert len(texts) > 3, "sampled rows differ"
    five = sampler.extend(None, (root,), 5, rng=np.random.default_rng(11))
    eight = sampler.extend(None, (root,), 8, rng=np.random.default_rng(11))
    assert all(_same_chain(a, b) for a, b in zip(five, eight[:5], strict=True))


def test_sample_next_inverse_cdf_matches_distribution() -> None:
    import torch

    from respo.llm.generation import sample_next

    logits = torch.tensor([[0.0, 1.0, 2.0, -30.0]]).repeat(4000, 1)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tok, _ = sample_next(logits, temperature=1.0, top_p=1.0, generator=None, uniforms=u)
    freq = np.bincount(tok.numpy(), minlength=4) / 4000
    np.testing.assert_allclose(freq, torch.softmax(logits[0], -1).numpy(), atol=0.03)
    tok, _ = sample_next(logits, temperature=1.0, top_p=0.5, generator=None, uniforms=u)
    assert set(tok.tolist()) == {2}, "top-p keeps only the nucleus"
    tok, _ = sample_next(logits[:1], temperature=1.0, top_p=1.0, generator=None,
                         uniforms=torch.zeros(1, dtype=torch.float64))
    assert tok.item() == 0


def test_extend_many_without_group_backend_falls_back_per_request() -> None:
    sampler, root = tiny_sampler(temperature=0.0)

    class Plain:  # only the two basic methods
        def __init__(self, inner: Any) -> None:
            self.inner, self.calls = inner, 0

        def generate(self, *a: Any, **kw: Any) -> Any:
            self.calls += 1
            return self.inner.generate(*a, **kw)

        def continue_group(self, *a: Any, **kw: Any) -> Any:
            self.calls += 1
            return self.inner.continue_group(*a, **kw)

    plain = Plain(sampler.backend)
    assert isinstance(plain, GenerationBackend) and not isinstance(plain, GroupBackend)
    reqs = _requests(sampler, root)
    want = sampler.extend_many(None, reqs)
    got = sampler.extend_many(plain, _requests(sampler, root))
    assert plain.calls == len(reqs)
    assert all(_same_chain(a, b) for x, y in zip(want, got, strict=True) for a, b in zip(x, y, strict=True))


def _parents(sampler: Any, root: Any, k: int = 4) -> list[Any]:
    roots = [root] + [sampler.root(p) for p in OTHER]
    return [sampler.extend(None, (r,), 1, rng=np.random.default_rng(i))[0] for i, r in enumerate(roots[:k])]


@pytest.mark.parametrize("mode,temp", [("step1", 0.0), ("uniform", 0.0), ("uniform", 0.3)])
def test_prompted_locate_many_equals_locate(mode: str, temp: float) -> None:
    sampler, root = tiny_sampler()
    parents = _parents(sampler, root)
    loc = PromptedSelfLocalizer.for_sampler(sampler, temperature=temp, max_new_tokens=10,
                                            fallback_mode=mode)
    counting = Counting(loc.backend)
    loc.backend = counting
    many = loc.locate_many(None, [(p, np.random.default_rng([7, i])) for i, p in enumerate(parents)])
    s_many = loc.pop_stats()
    assert counting.calls == 1 and s_many["localize/batches"] == 1
    one = [loc.locate(None, p, rng=np.random.default_rng([7, i])) for i, p in enumerate(parents)]
    s_one = loc.pop_stats()
    assert many == one and len({r.step for r in many}) >= 1
    assert s_one["localize/batches"] == len(parents) and counting.calls == 1 + len(parents)
    for key in ("localize/calls", "localize/tokens", "localize/fallbacks", "localize/truncated"):
        assert s_many[key] == s_one[key], key
    assert s_many["localize/calls"] == len(parents)


def test_confidence_locate_many_equals_locate_and_chunks() -> None:
    sampler, root = tiny_sampler()
    parents = _parents(sampler, root)
    model = sampler.backend.model
    # a threshold near the median token probability: some parents answer, the rest fall back
    probs = np.concatenate([token_probs(model, p.states[-1].ids)[p.states[0].prompt_len - 1:]
                            for p in parents])
    for thr, mode in ((float(np.quantile(probs, 0.2)), "uniform"), (1e-9, "uniform")):
        loc = ConfidenceLocalizer(model, threshold=thr, fallback_mode=mode, max_batch_tokens=80)
        many = loc.locate_many(None, [(p, np.random.default_rng([3, i])) for i, p in enumerate(parents)])
        s_many = loc.pop_stats()
        one = [loc.locate(None, p, rng=np.random.default_rng([3, i])) for i, p in enumerate(parents)]
        s_one = loc.pop_stats()
        assert [(r.step, r.fell_back) for r in many] == [(r.step, r.fell_back) for r in one]
        assert s_many["localize/calls"] == s_one["localize/calls"] == len(parents)
        assert s_many["localize/fallbacks"] == s_one["localize/fallbacks"]
        widest = max(len(p.states[-1]) for p in parents)
        assert 1 < s_many["localize/batches"] <= len(parents) and widest > 40
    seqs = [p.states[-1].ids for p in parents]
    for a, b in zip(token_probs_many(model, seqs), [token_probs(model, s) for s in seqs], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant,kind", [("grpo", None), ("rrpo", "uniform"), ("srpo", "prompted"),
                                          ("srpo", "confidence")])
def test_build_buffers_batches_backend_calls(variant: str, kind: str | None) -> None:
    sampler, root = tiny_sampler(max_new_tokens=16)
    roots = [root] + [sampler.root(p) for p in OTHER]
    counting = Counting(sampler.backend)
    sampler.backend = counting
    if kind == "uniform":
        loc: Any = UniformLocalizer()
    elif kind == "prompted":
        loc = PromptedSelfLocalizer.for_sampler(sampler, max_new_tokens=6)
    elif kind == "confidence":
        loc = ConfidenceLocalizer(counting.inner.model, threshold=0.02)
    else:
        loc = None
    split = VARIANTS[variant].split
    rngs = [Rngs.keyed(0, 0, j) for j in range(len(roots))]
    bufs = build_buffers(sampler, loc, None, roots, split=split, rngs=rngs)
    batched = counting.calls
    counting.calls = 0
    serial_bufs = [build_buffer(sampler, loc, None, r, split=split, rngs=Rngs.keyed(0, 0, j))
                   for j, r in enumerate(roots)]
    serial = counting.calls
    for b in bufs + serial_bufs:
        assert len(b.chains) == split.budget, "every buffer keeps its budget"
        assert all(not any(p is c for c in b.chains) for p in b.parents)
    for x, y in zip(bufs, serial_bufs, strict=True):  # batching changes no sample
        assert all(_same_chain(a, b) for a, b in zip(x.chains, y.chains, strict=True))
        assert x.group.tolist() == y.group.tolist() and x.role == y.role
        assert [(r.step, r.fell_back) for r in x.locates] == [(r.step, r.fell_back) for r in y.locates]
    if variant == "grpo":
        assert batched == 1 and serial == len(roots)
    else:
        assert batched < serial, (batched, serial)
        assert sum(len(b.parents) for b in bufs) > 0, "the toy task fails: resets happen"
    # determinism of the whole lock-step run
    again = build_buffers(sampler, loc, None, roots, split=split,
                          rngs=[Rngs.keyed(0, 0, j) for j in range(len(roots))])
    for x, y in zip(bufs, again, strict=True):
        assert all(_same_chain(a, b) for a, b in zip(x.chains, y.chains, strict=True))
    assert root.prompt_ids.tolist() == sampler.prompt_ids(TOY_PROBLEM).tolist()
