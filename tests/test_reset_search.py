"""The parent search in at most two rounds (``search="rest"``): the same buffer, fewer rounds."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import ScriptedSampler, first_thought_judge

from respo.buffer import Rngs, build_buffer
from respo.resets import OracleLocalizer
from respo.variants import VARIANTS


class CountingSampler(ScriptedSampler):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fresh_calls: list[int] = []

    def extend(self, policy, prefix, n, *, rng):
        if len(prefix) == 1:
            self.fresh_calls.append(n)
        return super().extend(policy, prefix, n, rng=rng)


def _build(script, variant, search):
    s = CountingSampler(script)
    # Resets at thought 2, so a suffix request never looks like a fresh one to the fake.
    b = build_buffer(s, OracleLocalizer(first_thought_judge), None, 0, split=VARIANTS[variant].split,
                     rngs=Rngs.keyed(0, 0, 0), search=search)
    return s, b


SCRIPTS = [
    [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1],   # the failure comes at attempt 8
    [1, 1, 1, 1, 1, 0],                      # at attempt 6
    [1, 0, 1, 0, 1],                         # in round 1
    [1] * 12,                                # never: fallback to 8 fresh
    [0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1],
]


@pytest.mark.parametrize("variant", ["rrpo", "srpo-2x4", "rrpo-1x8"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_rest_search_builds_the_same_buffer_in_at_most_two_rounds(script, variant):
    seq_s, seq = _build(script, variant, "sequential")
    rest_s, rest = _build(script, variant, "rest")
    # Same trained chains (same draws, same order), same parents, same counts. (The fake names a
    # suffix chain's new states by its draw count, which the speculative draws move on: compare
    # suffixes by their copied prefix and reward.)
    def key(c, role):
        return c.states if role == "fresh" else (c.states[: c.prefix_len + 1], c.reward)

    assert [key(c, r) for c, r in zip(rest.chains, rest.role, strict=True)] == \
        [key(c, r) for c, r in zip(seq.chains, seq.role, strict=True)]
    assert [c.reward for c in rest.chains] == [c.reward for c in seq.chains]
    assert rest.role == seq.role and np.array_equal(rest.group, seq.group)
    assert [p.states for p in rest.parents] == [p.states for p in seq.parents]
    assert rest.stats == seq.stats
    n = seq.stats.fresh_attempts  # the search's chains come first in ``generated``
    assert [c.states for c in rest.generated[:n]] == [c.states for c in seq.generated[:n]]
    assert [c.reward for c in rest.generated] == [c.reward for c in seq.generated]
    assert seq.speculative == []
    # At most two search rounds (plus a possible top-up), and nothing was drawn twice.
    assert len(rest_s.fresh_calls) <= len(seq_s.fresh_calls)
    split = VARIANTS[variant].split
    assert len(rest_s.fresh_calls) <= 2 + int(rest.stats.topped_up > 0)
    drawn = sum(rest_s.fresh_calls)
    assert drawn == rest.stats.fresh_attempts + len(rest.speculative)
    assert drawn <= split.max_fresh or rest.stats.topped_up > 0


def test_rest_search_counts_the_never_needed_chains():
    # Failure at attempt 6: round 1 draws 5 (all pass), round 2 draws the remaining 7 at once;
    # attempt 6 completes the buffer, attempts 7..12 were never needed.
    s, b = _build([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], "rrpo", "rest")
    assert s.fresh_calls == [5, 7]
    assert b.stats.fresh_attempts == 6 and len(b.speculative) == 6
    assert all(c not in b.generated for c in b.speculative)
    seq_s, _ = _build([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], "rrpo", "sequential")
    assert seq_s.fresh_calls == [5, 1]


def test_bad_search_mode_is_named():
    with pytest.raises(ValueError, match="search must be"):
        _build([0], "rrpo", "greedy")
