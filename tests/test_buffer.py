"""The shared buffer builder: budget, parents never trained, every fallback returned and counted."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import CoinSampler, ScriptedSampler, first_thought_judge
from hypothesis import given, settings
from hypothesis import strategies as st

from respo.buffer import Rngs, buffer_metrics, build_buffer
from respo.resets import LocateResult, NoisyOracleLocalizer, OracleLocalizer, UniformLocalizer
from respo.variants import VARIANTS, Split


def rngs(seed=0):
    return Rngs.keyed(seed, 0, 0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(n for n, v in VARIANTS.items() if v.builder == "reset")), st.floats(0, 1),
       st.integers(0, 10_000))
def test_budget_groups_and_parents(name, p, seed):
    v = VARIANTS[name]
    s = CoinSampler(p_success=p, n_thoughts=4)
    loc = None if v.localizer == "none" else (
        OracleLocalizer(first_thought_judge) if v.localizer == "oracle" else UniformLocalizer())
    b = build_buffer(s, loc, None, 0, split=v.split, rngs=rngs(seed))
    assert len(b.chains) == v.split.budget == 8
    assert len(b.group) == len(b.role) == 8
    assert all(not any(p_ is c for c in b.chains) for p_ in b.parents)
    assert b.stats.fresh_attempts == len(b.generated) - b.role.count("suffix")
    if b.stats.no_failure or not v.split.resets:
        assert set(b.group.tolist()) == {0} and b.role == ["fresh"] * 8
        assert b.parents == []
    else:
        assert len(b.parents) == v.split.parents
        assert all(c.reward < 1.0 for c in b.parents)
        assert b.stats.fresh_attempts <= v.split.max_fresh
        for j, gid in enumerate(b.suffix_group_of):
            members = [c for c, g in zip(b.chains, b.group, strict=True) if g == gid]
            k = b.locates[j].step
            assert len(members) == v.split.suffix
            for c in members:
                assert c.states[:k] == b.parents[j].states[:k]
                assert c.prefix_len == k - 1
        assert b.role.count("fresh") == v.split.fresh


def test_grpo_draws_eight_fresh_in_one_call():
    s = CoinSampler()
    b = build_buffer(s, None, None, 0, split=VARIANTS["grpo"].split, rngs=rngs())
    assert s.calls == [((0,), 8)]
    assert b.stats.fresh_attempts == 8 and b.stats.discarded == 0


def test_1x4_first_failure_is_parent_and_g1_fills_in_order():
    s = ScriptedSampler([1, 0, 1, 0, 1, 1, 1])
    b = build_buffer(s, UniformLocalizer(), None, 0, split=VARIANTS["rrpo"].split, rngs=rngs())
    # Round 1 asks for 5: rewards 1,0,1,0,1 -> parent = 2nd, G1 = 1,1,0,1 (4 full): done.
    assert b.stats.fresh_attempts == 5
    assert b.parents[0].reward == 0.0
    assert [c.reward for c in b.chains[:4]] == [1, 1, 0, 1]
    assert b.role == ["fresh"] * 4 + ["suffix"] * 4
    assert b.group.tolist() == [0] * 4 + [1] * 4


def test_no_failure_falls_back_to_one_fresh_group_and_counts():
    s = ScriptedSampler([], default=1.0)
    b = build_buffer(s, UniformLocalizer(), None, 0, split=VARIANTS["srpo"].split, rngs=rngs())
    assert b.stats.no_failure
    assert b.stats.fresh_attempts == 12  # searched the paper's 12 attempts
    assert b.stats.discarded == 4
    assert len(b.chains) == 8 and b.group.tolist() == [0] * 8
    m = buffer_metrics([b])
    assert m["buffer/no_failure_frac"] == 1.0 and np.isnan(m["reset/position_frac"])


def test_2x4_needs_two_failures_else_falls_back():
    s = ScriptedSampler([0], default=1.0)  # only one failure in 12
    b = build_buffer(s, UniformLocalizer(), None, 0, split=VARIANTS["srpo-2x4"].split, rngs=rngs())
    assert b.stats.no_failure and len(b.chains) == 8 and b.parents == []
    s2 = ScriptedSampler([1, 0, 1, 0])
    b2 = build_buffer(s2, UniformLocalizer(), None, 0, split=VARIANTS["srpo-2x4"].split, rngs=rngs())
    assert len(b2.parents) == 2 and b2.group.tolist() == [1] * 4 + [2] * 4
    assert b2.stats.discarded == 2  # the two successes are not trained in 2x4


class _Skip:
    def locate(self, policy, failed, *, rng):
        return LocateResult(None, True, "test")


class _Step1Fallback:
    def locate(self, policy, failed, *, rng):
        return LocateResult(1, True, "unparseable")


def test_skip_fallback_replaces_suffix_group_with_fresh():
    s = ScriptedSampler([0, 1, 1, 1, 1])
    b = build_buffer(s, _Skip(), None, 0, split=VARIANTS["srpo"].split, rngs=rngs())
    assert b.stats.skipped_resets == 1 and b.stats.locate_fallbacks == 1
    assert b.role == ["fresh"] * 8 and set(b.group.tolist()) == {0}
    assert b.suffix_group_of == [-1] and b.stats.topped_up == 4
    m = buffer_metrics([b])
    assert m["reset/fallback_frac"] == 1.0 and m["reset/skipped"] == 1.0


def test_step1_fallback_resets_to_bare_problem_and_is_counted():
    s = ScriptedSampler([0, 1, 1, 1, 1])
    b = build_buffer(s, _Step1Fallback(), None, 0, split=VARIANTS["srpo"].split, rngs=rngs())
    assert b.stats.locate_fallbacks == 1
    assert all(c.prefix_len == 0 and c.states[0] == 0 for c in b.chains[4:])
    assert buffer_metrics([b])["reset/position_frac"] == 0.0


def test_localizer_out_of_range_raises():
    class Bad:
        def locate(self, policy, failed, *, rng):
            return LocateResult(99)

    with pytest.raises(ValueError, match="outside 1..3"):
        build_buffer(ScriptedSampler([0]), Bad(), None, 0, split=VARIANTS["rrpo"].split, rngs=rngs())


def test_short_sampler_output_raises():
    class Short:
        def extend(self, policy, prefix, n, *, rng):
            return []

    with pytest.raises(RuntimeError, match="returned 0 chains, asked for 8"):
        build_buffer(Short(), None, None, 0, split=Split.all_fresh(8), rngs=rngs())


def test_common_random_numbers_across_variants():
    # GRPO and RRPO see the same first fresh chains under the same keys (paired comparison).
    g = build_buffer(CoinSampler(), None, None, 0, split=VARIANTS["grpo"].split, rngs=rngs(3))
    r = build_buffer(CoinSampler(), UniformLocalizer(), None, 0, split=VARIANTS["rrpo"].split, rngs=rngs(3))
    assert g.generated[0].states == r.generated[0].states


def test_noisy_oracle_in_buffer_counts_abstentions():
    loc = NoisyOracleLocalizer(first_thought_judge, beta=0.0, gamma=0.0, fallback_mode="skip")
    b = build_buffer(ScriptedSampler([0]), loc, None, 0, split=VARIANTS["srpo"].split, rngs=rngs())
    assert b.stats.skipped_resets == 1 and b.stats.locate_fallbacks == 1


class _Batching(CoinSampler):
    """A CoinSampler that also serves batched requests, recording each batch's size."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.batches: list[int] = []

    def extend_many(self, policy, requests):
        self.batches.append(len(requests))
        return [self.extend(policy, p, n, rng=r) for p, n, r in requests]


class _BatchLoc(UniformLocalizer):
    def __init__(self):
        self.batches: list[int] = []

    def locate_many(self, policy, requests):
        self.batches.append(len(requests))
        return [self.locate(policy, c, rng=r) for c, r in requests]


@pytest.mark.parametrize("name", ["grpo", "rrpo", "srpo-2x4", "rrpo-1x8"])
def test_lockstep_equals_serial_and_batches_rounds(name):
    from respo.buffer import build_buffers

    v = VARIANTS[name]
    loc = UniformLocalizer() if v.split.resets else None
    roots = list(range(1, 7))
    serial = [build_buffer(CoinSampler(p_success=0.6), loc, None, r, split=v.split,
                           rngs=Rngs.keyed(5, 0, j)) for j, r in enumerate(roots)]
    bs, bl = _Batching(p_success=0.6), _BatchLoc()
    lock = build_buffers(bs, bl if loc else None, None, roots, split=v.split,
                         rngs=[Rngs.keyed(5, 0, j) for j in range(len(roots))])
    for a, b in zip(serial, lock, strict=True):
        assert [c.states for c in a.chains] == [c.states for c in b.chains]
        assert a.group.tolist() == b.group.tolist() and a.stats == b.stats
        assert [x.step for x in a.locates] == [x.step for x in b.locates]
    # The first round serves every prompt in one call; there are far fewer calls than requests.
    assert bs.batches[0] == len(roots)
    n_requests = sum(len(b.generated) > 0 for b in lock)
    assert len(bs.batches) <= 3 + 2 * v.split.parents + v.split.max_fresh or n_requests == 0
    if loc is not None and any(b.parents for b in lock):
        assert max(bl.batches) > 1


def test_build_buffers_checks_lengths():
    from respo.buffer import build_buffers

    with pytest.raises(ValueError, match="2 roots but 1"):
        build_buffers(CoinSampler(), None, None, [0, 1], split=Split.all_fresh(8), rngs=[rngs()])
