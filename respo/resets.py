"""The reset seam: chains, localizers and the sampler protocol, shared by both worlds.

This module is numpy-only. The tabular CPI simulator (`respo.theory`) and the LLM trainer
(`respo.llm`) both implement `Sampler` and use the localizers defined here; `respo.buffer`,
`respo.advantages` and `respo.variants` only ever see these protocols.

Glossary (one vocabulary for code, metrics and docs):

- *thought*: one reasoning step (an action). In the LLM world, the tokens up to and including
  the delimiter (``</thought>`` by default, a newline for small models).
- *state*: problem + the first j thoughts. ``Chain.states[j]``; ``states[0]`` is the problem.
- *chain*: one sampled trajectory, ``states[0..n]`` for n thoughts, and its verifier reward in
  [0, 1].
- *parent*: a failed chain (reward < 1) chosen to reset into, the chain a reset starts from. It
  is never trained on. This is the word's only meaning in respo's code, metrics and docs.
- *reset step k*: 1-indexed thought of the parent judged (or drawn) to be the first erroneous
  one. The *reset state* is ``states[k - 1]`` (thoughts 1..k-1 kept); k = 1 resets to the bare
  problem.
- *prefix*: ``states[:k]`` of the parent, copied into each suffix; its thoughts get no gradient.
- *suffix*: a continuation sampled from the reset state.
- *G1* is the fresh group, *G2* a suffix group; a *split* says how the 8-rollout budget is divided.

"Reset" means only this (re-entering a visited state), never an environment reset.

The published baselines (``respo.baselines``) never reset, so they have no parents. Their words:

- *first chain*: a chain drawn from the problem that a tree cuts once at its *branch point* and
  continues (its *branches*); first chains are trained, and branch points are reported under the
  ``reset/*`` metric names (``respo.buffer.Buffer.localized``).
- *source*: the chain a derived chain (a branch, SCoRe's second attempt) was drawn from
  (``Buffer.source``).
- In a tree's value formulas, the node *above* a node (SPO and TreeRL call it the parent node).
- ``Split.parents`` is a count kept under its serialized name: parents for the reset splits, and
  for the baselines the first chains cut (trees), the first attempts retried (SCoRe) or the
  refinements kept (Critique-GRPO).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
from numpy.random import Generator

S = TypeVar("S")
Pol = TypeVar("Pol", contravariant=True)

FallbackMode = Literal["step1", "uniform", "skip"]
FALLBACK_MODES: tuple[str, ...] = ("step1", "uniform", "skip")


@dataclass(frozen=True)
class Chain(Generic[S]):
    """One trajectory: ``states[j]`` is the problem plus thoughts 1..j, and its reward.

    Shapes: ``len(states) == n_thoughts + 1``. ``prefix_len`` thoughts (``states[1..prefix_len]``)
    were copied from a parent and receive no gradient. ``info`` carries world-specific extras
    (token counts, truncation flags); the seam never reads it.
    """

    states: tuple[S, ...]
    reward: float
    prefix_len: int = 0
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.states) < 1:
            raise ValueError("Chain.states must hold at least the problem state (states[0])")
        r = float(self.reward)
        if not np.isfinite(r) or r < 0.0 or r > 1.0:
            raise ValueError(f"Chain.reward must be a number in [0, 1], got {self.reward!r}")
        if not 0 <= self.prefix_len <= self.n_thoughts:
            raise ValueError(
                f"Chain.prefix_len={self.prefix_len} outside [0, n_thoughts={self.n_thoughts}]"
            )

    @property
    def n_thoughts(self) -> int:
        """Number of thoughts (actions) in the chain."""
        return len(self.states) - 1

    @property
    def n_trained(self) -> int:
        """Thoughts that receive gradient: those after the copied prefix."""
        return self.n_thoughts - self.prefix_len


@dataclass(frozen=True)
class LocateResult:
    """A localizer's answer for one failed chain.

    ``step`` is the 1-indexed reset step k (reset state = ``states[k - 1]``), or None when the
    localizer fell back with mode ``"skip"`` (no reset group for this parent). ``fell_back`` is
    True whenever the localizer could not decide and a fallback rule chose instead (design rule P9
    in docs/design.md: never hidden). ``reason`` says why, for logs.
    """

    step: int | None
    fell_back: bool = False
    reason: str = ""


class Sampler(Protocol[S, Pol]):
    """Draws on-policy continuations of a prefix.

    ``extend(policy, prefix, n, rng)`` returns n chains. Contract (tested for both worlds by
    ``tests/contract.py``): each chain's ``states[:len(prefix)] == prefix``; ``prefix_len ==
    len(prefix) - 1``; rewards lie in [0, 1]; the same rng state gives the same chains; any
    ``chain.states[:j]`` (j >= 1) is itself a valid prefix.
    """

    def extend(
        self, policy: Pol, prefix: tuple[S, ...], n: int, *, rng: Generator
    ) -> list[Chain[S]]: ...


class Localizer(Protocol[S, Pol]):
    """Picks the reset step of a failed chain (``LocateResult``)."""

    def locate(self, policy: Pol, failed: Chain[S], *, rng: Generator) -> LocateResult: ...


def check_fallback_mode(mode: str) -> None:
    """Raise a ValueError listing the valid fallback modes if ``mode`` is not one."""
    if mode not in FALLBACK_MODES:
        raise ValueError(f"unknown fallback mode {mode!r}; valid: {', '.join(FALLBACK_MODES)}")


def fallback(mode: str, n_thoughts: int, rng: Generator, reason: str) -> LocateResult:
    """Resolve a localizer that could not decide, following ``mode``; always ``fell_back=True``.

    ``"step1"`` is the paper's code (reset to the bare problem), ``"uniform"`` draws like RRPO,
    ``"skip"`` drops the reset group for this parent (the buffer then trains fresh chains).
    """
    check_fallback_mode(mode)
    if mode == "step1":
        return LocateResult(1, True, reason)
    if mode == "uniform":
        return LocateResult(int(rng.integers(1, n_thoughts + 1)), True, reason)
    return LocateResult(None, True, reason)


def _check_failed(failed: Chain[Any]) -> None:
    if failed.n_thoughts < 1:
        raise ValueError("cannot localize in a chain with no thoughts")


class UniformLocalizer:
    """RRPO / CPI-RR: the reset step is uniform on 1..n (n = thoughts of the parent).

    The same object serves the tabular simulator and the LLM trainer.
    """

    def locate(self, policy: object, failed: Chain[Any], *, rng: Generator) -> LocateResult:
        _check_failed(failed)
        return LocateResult(int(rng.integers(1, failed.n_thoughts + 1)))


StepJudge = Callable[[Chain[Any]], "int | None"]
"""Ground truth for a chain: the 1-indexed first erroneous thought, or None if there is none."""


class OracleLocalizer:
    """Credit-assignment oracle: resets at the judged first erroneous step.

    ``judge(chain)`` returns the 1-indexed first wrong thought (a task's step judge on the LLM
    side; the first tau-improvable state of the chain on the tabular side). When it returns None
    the oracle found nothing to reset to and falls back per ``fallback_mode`` (counted).
    """

    def __init__(self, judge: StepJudge, *, fallback_mode: str = "skip") -> None:
        check_fallback_mode(fallback_mode)
        self.judge = judge
        self.fallback_mode = fallback_mode

    def locate(self, policy: object, failed: Chain[Any], *, rng: Generator) -> LocateResult:
        _check_failed(failed)
        k = self.judge(failed)
        if k is None:
            return fallback(self.fallback_mode, failed.n_thoughts, rng, "judge found no error")
        if not 1 <= k <= failed.n_thoughts:
            raise ValueError(f"judge returned step {k} outside 1..{failed.n_thoughts}")
        return LocateResult(int(k))


class NoisyOracleLocalizer:
    """An imperfect localizer with a chosen false-discovery rate beta and recall gamma.

    Per failed chain with a judged first error k*: with probability ``gamma`` it answers k*; with
    probability ``gamma * beta / (1 - beta)`` it answers a uniformly drawn wrong step (a false
    discovery); otherwise it abstains and falls back (counted). Among its answers the share of
    wrong ones is then beta, and the share of chains whose error it finds is gamma.

    A localizer that gives one answer per chain can only reach gamma <= 1 - beta (it answers at
    most every chain); larger gamma raises. Chains with a single thought have no wrong step to
    pick, so a false discovery there abstains as well. The tabular simulator's set-level
    approximate sampler (arbitrary beta, gamma) lives in ``respo.theory``.
    """

    def __init__(
        self, judge: StepJudge, *, beta: float, gamma: float, fallback_mode: str = "skip"
    ) -> None:
        check_fallback_mode(fallback_mode)
        for name, v in (("beta", beta), ("gamma", gamma)):
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        if beta >= 1.0 and gamma > 0.0:
            raise ValueError("beta = 1 (every answer wrong) requires gamma = 0")
        if beta < 1.0 and gamma > 1.0 - beta + 1e-12:
            raise ValueError(
                f"a one-answer localizer needs gamma <= 1 - beta; got beta={beta}, gamma={gamma}"
            )
        self.judge = judge
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.fallback_mode = fallback_mode

    @property
    def p_wrong(self) -> float:
        """Probability of answering a wrong step."""
        return 0.0 if self.beta >= 1.0 else self.gamma * self.beta / (1.0 - self.beta)

    def locate(self, policy: object, failed: Chain[Any], *, rng: Generator) -> LocateResult:
        _check_failed(failed)
        n = failed.n_thoughts
        k = self.judge(failed)
        u = float(rng.random())
        if k is not None and not 1 <= k <= n:
            raise ValueError(f"judge returned step {k} outside 1..{n}")
        if k is not None and u < self.gamma:
            return LocateResult(int(k))
        if u < self.gamma + self.p_wrong:
            wrong = [j for j in range(1, n + 1) if j != k]
            if wrong:
                return LocateResult(int(wrong[int(rng.integers(len(wrong)))]))
        return fallback(self.fallback_mode, n, rng, "noisy oracle abstained")


def localizer_quality(located: Sequence[int | None], truth: Sequence[int | None]) -> dict[str, float]:
    """False-discovery rate beta and recall gamma of localizations against a ground truth.

    ``located[i]`` is the answered step (None = fell back / abstained) and ``truth[i]`` the judged
    first error of chain i (None = no error known; such chains are left out). beta = wrong answers
    / answers; gamma = correct answers / chains; ``at_or_before`` = share of answers at or before
    the true step. Returns NaN where a denominator is zero.
    """
    if len(located) != len(truth):
        raise ValueError(f"located has {len(located)} items but truth has {len(truth)}")
    pairs = [(a, t) for a, t in zip(located, truth, strict=True) if t is not None]
    answered = [(a, t) for a, t in pairs if a is not None]
    n_ans = len(answered)
    correct = sum(1 for a, t in answered if a == t)
    early = sum(1 for a, t in answered if a <= t)
    nan = float("nan")
    return {
        "beta": (n_ans - correct) / n_ans if n_ans else nan,
        "gamma": correct / len(pairs) if pairs else nan,
        "at_or_before": early / n_ans if n_ans else nan,
        "n_chains": float(len(pairs)),
        "n_answered": float(n_ans),
    }


def normalized_position(step: int, n_thoughts: int) -> float:
    """Reset position as a share of the chain: (k - 1) / n, in [0, 1)."""
    if n_thoughts < 1 or not 1 <= step <= n_thoughts:
        raise ValueError(f"step {step} outside 1..{n_thoughts}")
    return (step - 1) / n_thoughts
