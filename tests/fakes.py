"""Small fakes of the seam for tests: a scripted chain sampler over integer states."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from respo.resets import Chain


class CoinSampler:
    """Chains of ``n_thoughts`` integer states; each chain succeeds with probability ``p_success``.

    States encode the path: state = parent_state * 10 + action + 1 (actions 0..8), so prefixes are
    exact. ``reward_fn(states) -> float`` overrides the coin when given. Counts every call.
    """

    def __init__(self, p_success: float = 0.5, n_thoughts: int = 4,
                 reward_fn: Callable[[tuple[int, ...]], float] | None = None) -> None:
        self.p_success = p_success
        self.n_thoughts = n_thoughts
        self.reward_fn = reward_fn
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def extend(self, policy, prefix, n, *, rng):
        self.calls.append((tuple(prefix), n))
        out = []
        for _ in range(n):
            states = list(prefix)
            while len(states) < self.n_thoughts + 1:
                states.append(states[-1] * 10 + int(rng.integers(9)) + 1)
            st = tuple(states)
            r = self.reward_fn(st) if self.reward_fn else float(rng.random() < self.p_success)
            out.append(Chain(st, r, prefix_len=len(prefix) - 1))
        return out


class ScriptedSampler:
    """Fresh chains take rewards from a script (then ``default``); suffix chains get ``suffix_reward``."""

    def __init__(self, fresh_rewards, *, default: float = 1.0, suffix_reward: float = 0.5,
                 n_thoughts: int = 3) -> None:
        self.script = list(fresh_rewards)
        self.default = default
        self.suffix_reward = suffix_reward
        self.n_thoughts = n_thoughts
        self.fresh_drawn = 0

    def extend(self, policy, prefix, n, *, rng):
        out = []
        for _ in range(n):
            if len(prefix) == 1:
                r = self.script[self.fresh_drawn] if self.fresh_drawn < len(self.script) else self.default
                self.fresh_drawn += 1
            else:
                r = self.suffix_reward
            states = tuple(prefix) + tuple(1000 * self.fresh_drawn + j for j in range(len(prefix), self.n_thoughts + 1))
            out.append(Chain(states, r, prefix_len=len(prefix) - 1))
        return out


def first_thought_judge(chain) -> int:
    """A judge that always says the first error is thought 2 (or 1 for one-thought chains)."""
    return min(2, chain.n_thoughts)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
