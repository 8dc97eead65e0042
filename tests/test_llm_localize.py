"""LLM localizers: parse rules, every fallback path (counted), the confidence localizer."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from llm_fixtures import TOY_PROBLEM, tiny_sampler, tiny_tokenizer

from respo.llm.generation import Generation, StopRule
from respo.llm.localize import (
    ConfidenceLocalizer,
    PromptedSelfLocalizer,
    parse_localization,
    token_probs,
)
from respo.llm.types import TokenState
from respo.resets import Chain, Localizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.mark.parametrize(
    ("text", "n", "step", "reason"),
    [
        ("The first error is in step 2. \\boxed{2}", 5, 2, "parsed boxed"),
        ("\\boxed{1} no wait \\boxed{4}", 5, 4, "parsed boxed"),
        ("\\boxed{3} then \\boxed{N}", 5, 3, "parsed boxed"),
        ("\\boxed{Step 3}", 5, 3, "parsed boxed"),
        ("\\boxed{ 2 }", 5, 2, "parsed boxed"),
        ("\\boxed{\\boxed{3}}", 5, 3, "parsed boxed"),
        ("Step 1 is fine, Step 3 is wrong.", 5, 3, "parsed step mention"),
        ("step 2 looks off; \\boxed{two}", 5, 2, "parsed step mention"),
        ("STEP #4", 5, 4, "parsed step mention"),
        ("\\boxed{0}", 5, None, "answered 0 (no error)"),
        ("Step 2 is wrong \\boxed{0}", 5, None, "answered 0 (no error)"),
        ("\\boxed{7}", 5, None, "out of range: boxed 7 not in 1..5"),
        ("\\boxed{-1}", 5, None, "out of range: boxed -1 not in 1..5"),
        ("Step 9 is wrong", 5, None, "out of range: step mention 9 not in 1..5"),
        ("Step 0", 5, None, "out of range: step mention 0 not in 1..5"),
        ("I cannot tell.", 5, None, "unparseable"),
        ("", 3, None, "unparseable"),
        ("\\boxed{2", 3, None, "unparseable"),
        ("steps 2", 3, None, "unparseable"),
    ],
)
def test_parse_rules(text: str, n: int, step: int | None, reason: str) -> None:
    assert parse_localization(text, n) == (step, reason)
    boxed_only = parse_localization(text, n, step_mentions=False)
    if reason.endswith("step mention") or "step mention" in reason:
        assert boxed_only == (None, "unparseable")
    else:
        assert boxed_only == (step, reason)


class ScriptedBackend:
    """A GenerationBackend that replies with fixed texts (or raises), recording its prompts."""

    def __init__(self, replies: Sequence[str | Exception]) -> None:
        self.replies = list(replies)
        self.prompts: list[np.ndarray] = []

    def generate(self, prompts: Sequence[np.ndarray], *, n: int, max_new_tokens: int,
                 temperature: float, top_p: float, seed: int,
                 stop: StopRule | None = None) -> list[Generation]:
        self.prompts.extend(prompts)
        r = self.replies.pop(0)
        if isinstance(r, Exception):
            raise r
        ids = np.asarray(tiny_tokenizer().encode(r, add_special_tokens=False), dtype=np.int64)
        return [Generation(ids, np.zeros(len(ids), np.float32), True, "eos")]

    def continue_group(self, prefix: np.ndarray, n: int, **kw: object) -> list[Generation]:
        return self.generate([prefix], n=n, **kw)  # type: ignore[arg-type]


@functools.cache
def _failed_chain(n_thoughts: int = 4) -> tuple[Chain[TokenState], Any]:
    """A sampled chain with >= n_thoughts thoughts and its sampler (cached: read-only use)."""
    sampler, root = tiny_sampler(max_new_tokens=40, max_thought_tokens=6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        for c in sampler.extend(None, (root,), 4, rng=rng):
            if c.n_thoughts >= n_thoughts:
                return c, sampler
    raise AssertionError("no long enough chain")


def test_prompted_localizer_paths_and_counters() -> None:
    chain, sampler = _failed_chain()
    n = chain.n_thoughts
    replies: list[str | Exception] = ["\\boxed{2}", "Step 3 is the culprit", "\\boxed{0}",
                                      "no idea", f"\\boxed{{{n + 1}}}", RuntimeError("engine died")]
    be = ScriptedBackend(replies)
    loc = PromptedSelfLocalizer.for_sampler(sampler, max_new_tokens=16)
    loc.backend = be
    typed: Localizer[TokenState, object] = loc  # structural conformance (mypy)
    assert callable(typed.locate)
    rng = np.random.default_rng(0)
    got = [loc.locate(None, chain, rng=rng) for _ in range(5)]
    assert [(r.step, r.fell_back) for r in got] == [(2, False), (3, False), (1, True), (1, True),
                                                    (1, True)]
    assert got[2].reason == "answered 0 (no error)" and got[3].reason == "unparseable"
    assert got[4].reason.startswith("out of range")
    with pytest.raises(RuntimeError, match="engine died"):  # exceptions are not fallbacks
        loc.locate(None, chain, rng=rng)
    stats = loc.pop_stats()
    assert stats["localize/calls"] == 5 and stats["localize/fallbacks"] == 3
    assert stats["localize/tokens"] == sum(len(r) for r in replies[:5] if isinstance(r, str))
    assert loc.pop_stats()["localize/calls"] == 0
    # the prompt is the chat template with "Step i:" lines and no delimiters, no answer shown
    text = tiny_tokenizer().decode(be.prompts[0])
    assert text.startswith("<|user|>") and text.endswith("<|assistant|>")
    assert "Step 1:" in text and f"Step {n}:" in text and f"Step {n + 1}:" not in text
    assert TOY_PROBLEM.question in text


@pytest.mark.parametrize("mode", ["uniform", "skip"])
def test_prompted_localizer_fallback_modes(mode: str) -> None:
    chain, sampler = _failed_chain()
    loc = PromptedSelfLocalizer.for_sampler(sampler, fallback_mode=mode)
    loc.backend = ScriptedBackend(["hmm"] * 20)
    res = [loc.locate(None, chain, rng=np.random.default_rng(i)) for i in range(20)]
    assert all(r.fell_back and r.reason == "unparseable" for r in res)
    if mode == "skip":
        assert all(r.step is None for r in res)
    else:
        assert {r.step for r in res} <= set(range(1, chain.n_thoughts + 1))
        assert len({r.step for r in res}) > 1
    with pytest.raises(ValueError):
        PromptedSelfLocalizer.for_sampler(sampler, fallback_mode="ignore")


def test_prompted_localizer_real_tiny_model() -> None:
    chain, sampler = _failed_chain()
    loc = PromptedSelfLocalizer.for_sampler(sampler, max_new_tokens=8)
    r = loc.locate(None, chain, rng=np.random.default_rng(0))
    assert r.step is not None and 1 <= r.step <= chain.n_thoughts
    s = loc.pop_stats()
    assert s["localize/calls"] == 1 and 1 <= s["localize/tokens"] <= 8
    assert s["localize/fallbacks"] == float(r.fell_back)
    with pytest.raises(TypeError):
        loc.locate(object(), chain, rng=np.random.default_rng(0))


class CountingLM(torch.nn.Module):
    """Hand-built policy: after token i it predicts i + 1 (mod V) with probability ~0.999."""

    def __init__(self, vocab: int = 20) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        nxt = (input_ids + 1) % self.vocab
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.dummy
        logits.scatter_(-1, nxt[..., None], 10.0)
        return SimpleNamespace(logits=logits)


def _chain(thoughts: list[list[int]], prompt: list[int]) -> Chain[TokenState]:
    full = np.asarray(prompt + [t for th in thoughts for t in th], dtype=np.int64)
    ends = np.cumsum([len(prompt)] + [len(t) for t in thoughts])
    return Chain(tuple(TokenState(full[:e], len(prompt)) for e in ends), 0.0)


def test_confidence_localizer_hand_built() -> None:
    loc = ConfidenceLocalizer(CountingLM(), threshold=0.5)
    rng = np.random.default_rng(0)
    prompt = [0, 1, 2]
    # token 9 follows 7: the only unlikely token, in thought 3
    c = _chain([[3, 4], [5, 6], [7, 9, 10], [11]], prompt)
    assert loc.locate(None, c, rng=rng).step == 3
    # the first response token breaks the pattern -> thought 1
    assert loc.locate(None, _chain([[5, 6], [7]], prompt), rng=rng).step == 1
    # first token of the last thought
    r = loc.locate(None, _chain([[3, 4], [6]], prompt), rng=rng)
    assert r.step == 2 and not r.fell_back
    # two unlikely tokens: the first one decides
    assert loc.locate(None, _chain([[3], [5, 6], [8]], prompt), rng=rng).step == 2
    # nothing below the threshold -> counted fallback
    clean = _chain([[3, 4], [5, 6]], prompt)
    r = loc.locate(None, clean, rng=rng)
    assert r.fell_back and r.step == 1 and "no token below" in r.reason
    assert loc.pop_stats() == {"localize/calls": 5.0, "localize/fallbacks": 1.0, "localize/batches": 5.0}
    skip = ConfidenceLocalizer(CountingLM(), threshold=0.5, fallback_mode="skip")
    assert skip.locate(None, clean, rng=rng).step is None
    with pytest.raises(ValueError):
        ConfidenceLocalizer(CountingLM(), threshold=0.0)


def test_token_probs_matches_tiny_model() -> None:
    chain, sampler = _failed_chain()
    ids = chain.states[-1].ids
    p = token_probs(sampler.backend.model, ids)
    assert p.shape == (len(ids) - 1,) and np.all((p > 0) & (p <= 1))
    loc = ConfidenceLocalizer(sampler.backend.model, threshold=1.0)  # every token is "unlikely"
    assert loc.locate(None, chain, rng=np.random.default_rng(0)).step == 1
