"""Fakes for the training-loop tests: a scripted token sampler and localizers over TokenState.

``TokenCoinSampler`` draws thoughts of random token ids (not from the model: the loop's log-probs
come from its own forward pass, so on-policy sampling is not needed to test the loop) and a
reward from the same rng, so every buffer path (fresh group, parent + suffixes, no failure,
localizer fallback, skip) is reachable by choosing ``p_success`` and the localizer.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from respo.llm.types import TokenState
from respo.resets import Chain, LocateResult, fallback
from respo.tasks.base import Problem


class TokenCoinSampler:
    """Chains of ``n_thoughts`` thoughts, each 2..4 random token ids in [lo, hi); reward = coin."""

    def __init__(self, p_success: float = 0.5, n_thoughts: int = 3, lo: int = 10, hi: int = 60) -> None:
        self.p_success, self.n_thoughts, self.lo, self.hi = p_success, n_thoughts, lo, hi

    def root(self, problem: Problem) -> TokenState:
        ids = np.array([self.lo + (ord(ch) % (self.hi - self.lo)) for ch in problem.question], dtype=np.int64)
        return TokenState(ids, len(ids))

    def extend(self, policy: Any, prefix: tuple[TokenState, ...], n: int, *, rng: np.random.Generator):
        out = []
        for _ in range(n):
            states = list(prefix)
            while len(states) < self.n_thoughts + 1:
                k = int(rng.integers(2, 5))
                new = rng.integers(self.lo, self.hi, size=k).astype(np.int64)
                states.append(TokenState(np.concatenate([states[-1].ids, new]), prefix[0].prompt_len))
            r = float(rng.random() < self.p_success)
            out.append(Chain(tuple(states), r, prefix_len=len(prefix) - 1,
                             info={"n_generated": len(states[-1].ids) - len(prefix[-1].ids)}))
        return out


    def followup_root(self, chain: Chain[Any], kind: str) -> TokenState:
        """A second-turn prompt: the chain's ids, then a marker token (3 = retry, 4 = critique)."""
        ids = np.concatenate([chain.states[-1].ids, [3 if kind == "retry" else 4]]).astype(np.int64)
        return TokenState(ids, len(ids))

    def reroot(self, chain: Chain[Any], root: TokenState) -> Chain[Any]:
        p0 = chain.states[0].prompt_len
        states = (root,) + tuple(TokenState(np.concatenate([root.ids, s.ids[p0:]]), root.prompt_len)
                                 for s in chain.states[1:])
        return Chain(states, chain.reward, 0, info=dict(chain.info))


class FixedLocalizer:
    """Answers ``step`` (clamped to the chain), or falls back per ``mode`` when ``step`` is None."""

    def __init__(self, step: int | None = 2, mode: str = "step1") -> None:
        self.step, self.mode = step, mode
        self.tokens = 0

    def pop_stats(self) -> dict[str, float]:
        out, self.tokens = {"localize/tokens": float(self.tokens)}, 0
        return out

    def locate(self, policy: Any, failed: Chain[Any], *, rng: np.random.Generator) -> LocateResult:
        self.tokens += 5  # pretend each localization generated 5 tokens
        if self.step is None:
            return fallback(self.mode, failed.n_thoughts, rng, "fake localizer cannot decide")
        return LocateResult(min(self.step, failed.n_thoughts))


def problems(n: int = 8) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"question {i} " + "x" * (i % 3), answer=str(i)) for i in range(n)]


def fake_parts(model: Any, variant_localizer: str, *, p_success: float = 0.5,
               localizer: Any = None, n_problems: int = 8) -> Any:
    """``Parts`` for a variant's localizer kind over the fake sampler and a copy of ``model``."""
    from respo.llm.branching import EntropyCutter, SegmentCutter
    from respo.llm.trainer import Parts
    from respo.resets import OracleLocalizer, UniformLocalizer

    sampler = TokenCoinSampler(p_success=p_success)
    if localizer is None:
        localizer = {
            "none": None,
            "uniform": UniformLocalizer(),
            "self": FixedLocalizer(2),
            "oracle": OracleLocalizer(lambda c: min(2, c.n_thoughts)),
            "segment": SegmentCutter(3),
            "entropy": EntropyCutter(model),
        }[variant_localizer]
    return Parts(
        model=copy.deepcopy(model), sampler=sampler, root=sampler.root,
        train_problems=problems(n_problems), localizer=localizer, pad_id=0,
        stats_sources=[localizer.pop_stats] if hasattr(localizer, "pop_stats") else [],
    )
