"""Group-relative advantages: invariants (hypothesis), reference equivalence, pinned numerics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import zscore_loop

from respo.advantages import ADVANTAGES, center_by_group, get_advantage, zscore_by_group

rewards_groups = st.integers(1, 24).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(rewards_groups)
def test_group_means_are_zero_and_match_reference(rg):
    r, g = np.array(rg[0]), np.array(rg[1])
    a = zscore_by_group(r, g)
    for gid in np.unique(g):
        assert abs(a[g == gid].mean()) < 1e-9
    np.testing.assert_allclose(a, zscore_loop(list(r), list(g)), atol=1e-12)
    for ddof, eps, single in ((1, 1e-6, "unit_std"), (0, 1e-4, "zero")):
        np.testing.assert_allclose(
            zscore_by_group(r, g, ddof=ddof, eps=eps, singleton=single),
            zscore_loop(list(r), list(g), ddof=ddof, eps=eps, singleton=single),
            atol=1e-12,
        )


@settings(max_examples=100, deadline=None)
@given(rewards_groups, st.floats(0.1, 10), st.floats(-5, 5))
def test_affine_invariance(rg, a, b):
    r, g = np.array(rg[0]), np.array(rg[1])
    base = zscore_by_group(r, g)
    moved = zscore_by_group(a * r + b, g)
    # Groups whose spread is far above the zero-std tolerance are exactly invariant.
    for gid in np.unique(g):
        m = g == gid
        if r[m].std() > 1e-6:
            np.testing.assert_allclose(moved[m], base[m], atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(rewards_groups, st.randoms(use_true_random=False))
def test_permutation_equivariance_and_group_independence(rg, rnd):
    r, g = np.array(rg[0]), np.array(rg[1])
    perm = np.array(rnd.sample(range(len(r)), len(r)))
    np.testing.assert_allclose(zscore_by_group(r[perm], g[perm]), zscore_by_group(r, g)[perm], atol=1e-12)
    # Changing one group's rewards leaves the others untouched.
    r2 = r.copy()
    r2[g == g[0]] = 1.0 - r2[g == g[0]]
    other = g != g[0]
    np.testing.assert_array_equal(zscore_by_group(r2, g)[other], zscore_by_group(r, g)[other])


def test_paper_numerics_pinned():
    # docs/method.md section 5: population std, no epsilon, exactly 0 when std < 1e-8.
    r = np.array([1.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    a = ADVANTAGES["zscore"](r, g)
    sd = np.sqrt(np.mean((r[:4] - 0.25) ** 2))  # ddof 0
    np.testing.assert_allclose(a[:4], (r[:4] - 0.25) / sd)
    assert np.all(a[4:] == 0.0)
    assert a[0] == pytest.approx(np.sqrt(3.0))  # 0.75 / 0.4330
    # Tiny spread below the tolerance -> exactly zero, not a huge number.
    assert np.all(zscore_by_group(np.array([0.5, 0.5 + 1e-10]), np.array([0, 0])) == 0.0)


def test_verl_numerics_pinned():
    r = np.array([1.0, 0.0, 0.0, 0.0, 0.7])
    g = np.array([0, 0, 0, 0, 1])
    a = ADVANTAGES["zscore_verl"](r, g)
    sd = np.std(r[:4], ddof=1)
    np.testing.assert_allclose(a[:4], (r[:4] - 0.25) / (sd + 1e-6))
    assert a[4] == 0.0  # singleton group: std 1, r - mean = 0


def test_registry_one_signature_and_errors():
    r = np.array([0.0, 1.0, 1.0, 0.0, 0.5])
    g = np.array([0, 0, 1, 1, 2])
    for name, fn in ADVANTAGES.items():
        out = fn(r, g)
        assert out.shape == r.shape and np.all(np.isfinite(out)), name
    np.testing.assert_allclose(center_by_group(r, g), [-0.5, 0.5, 0.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="valid: zscore"):
        get_advantage("nope")
    with pytest.raises(ValueError, match="equal length"):
        zscore_by_group(np.zeros(3), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"reward\[1\]"):
        zscore_by_group(np.array([0.0, np.nan]), np.array([0, 0]))
    with pytest.raises(ValueError, match="integers"):
        zscore_by_group(np.zeros(2), np.zeros(2))


def test_every_variant_advantage_is_in_exactly_one_registry():
    from respo.advantages import TOKEN_ADVANTAGES
    from respo.variants import VARIANTS

    assert set(TOKEN_ADVANTAGES) == {v.advantage for v in VARIANTS.values() if v.baseline}
    assert not set(TOKEN_ADVANTAGES) & set(ADVANTAGES)
    for v in VARIANTS.values():
        assert (v.advantage in TOKEN_ADVANTAGES) == v.baseline, v.name
        assert (v.advantage in TOKEN_ADVANTAGES) != (v.advantage in ADVANTAGES), v.name
