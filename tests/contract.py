"""The reset contract suite: what every ``respo.resets.Sampler`` must satisfy.

Run for the tabular sampler (``tests/test_contract_tabular.py``) and the LLM sampler
(``tests/test_contract_llm.py``) with the same checks, so the buffer code can trust both.
Call ``check_sampler_contract`` from a test with a sampler, a policy and a root state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from respo.buffer import Rngs, build_buffer
from respo.resets import Chain, UniformLocalizer
from respo.variants import VARIANTS


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def _same_states(x: tuple[Any, ...], y: tuple[Any, ...]) -> bool:
    return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y, strict=True))


def check_sampler_contract(sampler: Any, policy: Any, root: Any, *, n: int = 5, seed: int = 0) -> None:
    """Assert the Sampler contract on fresh chains and on continuations of their prefixes."""
    rng = np.random.default_rng(seed)
    chains = sampler.extend(policy, (root,), n, rng=rng)
    assert len(chains) == n, "extend must return exactly n chains"
    for c in chains:
        assert isinstance(c, Chain)
        assert _same(c.states[0], root), "a fresh chain starts at the root state"
        assert c.prefix_len == 0
        assert 0.0 <= c.reward <= 1.0
        assert c.n_thoughts >= 1, "a chain has at least one thought"

    # Determinism: the same rng state gives the same chains.
    again = sampler.extend(policy, (root,), n, rng=np.random.default_rng(seed))
    for a, b in zip(chains, again, strict=True):
        assert _same_states(a.states, b.states) and a.reward == b.reward

    # Every prefix states[:j] of a chain is a valid prefix; continuations keep it exactly.
    for c in chains:
        for j in (1, max(1, c.n_thoughts // 2), c.n_thoughts):
            prefix = c.states[:j]
            conts = sampler.extend(policy, prefix, 3, rng=np.random.default_rng(seed + j))
            assert len(conts) == 3
            for s in conts:
                assert _same_states(s.states[:j], prefix), "a continuation must keep the prefix"
                assert s.prefix_len == j - 1, "prefix_len counts the copied thoughts"
                assert s.n_thoughts >= j, "a continuation adds at least one thought"
                assert 0.0 <= s.reward <= 1.0

    # The shared buffer builder accepts the sampler for every reset split.
    loc = UniformLocalizer()
    for name in ("grpo", "rrpo", "rrpo-2x4", "rrpo-1x8"):
        v = VARIANTS[name]
        buf = build_buffer(sampler, loc if v.split.resets else None, policy, root,
                           split=v.split, rngs=Rngs.keyed(seed, 0, 0))
        assert len(buf.chains) == v.split.budget, f"{name}: trained budget must be {v.split.budget}"
        assert all(not any(p is c for c in buf.chains) for p in buf.parents), "parents are never trained"
