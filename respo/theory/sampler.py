"""``TabularSampler``: the ``respo.resets.Sampler`` protocol over integer states of a ``LayeredMDP``.

This is the bridge between the simulator and the shared reset seam: ``respo.buffer.build_buffer``
calls ``extend`` exactly as it calls the LLM sampler. A chain's ``states`` are state ids,
``states[0] = 0`` (the start state, "the problem") and ``states[j]`` the state after j thoughts
(actions); a full chain has H thoughts and ends at a terminal state. The reward is the terminal
reward normalised to [0, 1]: a coin flip with success probability r(z) / r_max (default), or the
mean r(z) / r_max (``reward_mode="mean"``). ``Chain.info["actions"]`` holds the action of every
thought (-1 for thoughts copied from the prefix, whose actions the sampler did not draw).

Also here: ``first_improvable_judge``, the tabular step judge for ``OracleLocalizer`` and
``NoisyOracleLocalizer``: the first thought taken at a tau-improvable state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.random import Generator
from numpy.typing import NDArray

from respo.resets import Chain
from respo.theory.mdp import LayeredMDP

REWARD_MODES: tuple[str, ...] = ("bernoulli", "mean")


def _sample_rows(rng: Generator, probs: NDArray[np.float64]) -> NDArray[np.int64]:
    """One categorical draw per row of probs [n, K] by inverse CDF (one uniform per row)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    out = (u[:, None] >= cdf).sum(axis=1)
    return np.minimum(out, probs.shape[1] - 1).astype(np.int64)


class TabularSampler:
    """On-policy continuations of integer-state prefixes in a ``LayeredMDP`` (policy pi[n_dec, A])."""

    def __init__(self, mdp: LayeredMDP, *, reward_mode: str = "bernoulli") -> None:
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {reward_mode!r}; valid: {', '.join(REWARD_MODES)}")
        self.mdp = mdp
        self.reward_mode = reward_mode
        self._layer = mdp.layer_of()

    def check_prefix(self, prefix: tuple[int, ...]) -> None:
        """A prefix is a feasible path from the start state that ends at a decision state."""
        mdp = self.mdp
        if len(prefix) < 1:
            raise ValueError("prefix must hold at least the start state")
        if len(prefix) > mdp.horizon:
            raise ValueError(
                f"prefix of {len(prefix) - 1} thoughts ends at a terminal state (horizon {mdp.horizon}); "
                "nothing to extend"
            )
        s = [int(x) for x in prefix]
        if s[0] != 0:
            raise ValueError(f"prefix must start at the start state 0, got {s[0]}")
        for j, x in enumerate(s):
            if not 0 <= x < mdp.n_states or self._layer[x] != j:
                raise ValueError(f"prefix[{j}] = {x} is not a state of layer {j}")
        for j in range(len(s) - 1):
            ok = (mdp.succ[s[j]] == s[j + 1]) & (mdp.prob[s[j]] > 0)
            if not ok.any():
                raise ValueError(f"prefix step {j} -> {j + 1} ({s[j]} -> {s[j + 1]}) is not a possible transition")

    def extend(
        self, policy: NDArray[np.floating], prefix: tuple[int, ...], n: int, *, rng: Generator
    ) -> list[Chain[int]]:
        """n on-policy chains that continue ``prefix`` to the horizon (vectorised over the n chains)."""
        mdp = self.mdp
        pi = mdp.check_policy(policy)
        prefix = tuple(int(x) for x in prefix)
        self.check_prefix(prefix)
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n}")
        n = int(n)
        j0 = len(prefix) - 1
        steps = mdp.horizon - j0
        cur = np.full(n, prefix[-1], dtype=np.int64)
        states = np.empty((n, steps), dtype=np.int64)
        actions = np.empty((n, steps), dtype=np.int64)
        for t in range(steps):
            a = _sample_rows(rng, pi[cur])
            k = _sample_rows(rng, mdp.prob[cur, a])
            cur = mdp.succ[cur, a, k]
            states[:, t] = cur
            actions[:, t] = a
        mean = mdp.reward[cur - mdp.n_dec] / mdp.r_max
        if self.reward_mode == "bernoulli":
            reward = (rng.random(n) < mean).astype(np.float64)
        else:
            reward = mean
        pad = (-1,) * j0
        return [
            Chain(
                states=prefix + tuple(int(x) for x in states[i]),
                reward=float(reward[i]),
                prefix_len=j0,
                info={"actions": pad + tuple(int(x) for x in actions[i])},
            )
            for i in range(n)
        ]


def first_improvable_judge(G: NDArray[np.bool_]) -> Callable[[Chain[int]], int | None]:
    """Step judge: the 1-indexed first thought k whose state ``states[k - 1]`` is in G_tau.

    ``G`` is the improvable-set mask over decision states [n_dec]. Returns None when the chain
    never visits G (the oracle then falls back, counted by the buffer).
    """
    mask = np.asarray(G, dtype=bool)

    def judge(chain: Chain[int]) -> int | None:
        for j in range(chain.n_thoughts):
            s = chain.states[j]
            if s < mask.size and mask[s]:
                return j + 1
        return None

    return judge
