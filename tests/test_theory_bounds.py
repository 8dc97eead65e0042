"""The conservative-update bound and Theorem 1's guarantees hold for every exact CPI step.

docs/theory.md, checks 2 (the conservative-update bound) and 4 (the approximate sampler's bound):
over hypothesis-drawn MDPs, policies, tau and alpha, the exact CPI-RR, CPI-CARO and
approximate-sampler steps improve eta by at least (CU-sharp) and (CU) with c = 1; a step toward
an arbitrary pi' by at least (CU) with c = 2; with the step rule, by at least rr_guarantee /
caro_guarantee / approx_guarantee. Plus the bound functions' own algebra.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from respo.theory import bounds
from respo.theory.cpi import (
    approx_selection,
    cpi_update,
    exact_cpi_step,
    sample_cpi_step,
    selection_quality,
)
from respo.theory.exact import evaluate, improvable_set, layer_mass, policy_advantage
from respo.theory.mdp import (
    LayeredMDP,
    random_layered_mdp,
    random_tree_mdp,
    reasoning_tree,
    tight_chain,
)

SETTINGS = settings(max_examples=60, deadline=None)
TOL = 1e-12


@st.composite
def problems(draw: st.DrawFn, min_H: int = 1) -> tuple[LayeredMDP, np.ndarray, float]:
    seed = draw(st.integers(0, 2**31 - 1))
    H = draw(st.integers(min_H, 6))
    A = draw(st.integers(2, 4))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["layered", "tree", "reasoning"]))
    r_max = draw(st.sampled_from([1.0, 3.0]))
    if kind == "tree" and A**H <= 5000:
        mdp = random_tree_mdp(rng, H, A, r_max=r_max)
    elif kind == "reasoning" and A**H <= 5000:
        mdp, _ = reasoning_tree(rng, H, A, q=draw(st.floats(0.05, 1.0)), r_max=r_max)
    else:
        mdp = random_layered_mdp(rng, H, draw(st.integers(1, 5)), A, draw(st.integers(1, 3)), r_max=r_max)
    conc = draw(st.sampled_from([0.1, 0.5, 2.0]))
    pi = rng.dirichlet(np.full(A, conc), size=mdp.n_dec)
    ev = evaluate(mdp, pi)
    gaps = ev.A.max(axis=1)
    # tau between 0 and the largest advantage: some states improvable, some not (when possible)
    top = float(gaps.max())
    assume(top > 1e-9)
    tau = top * draw(st.floats(0.01, 1.0))
    return mdp, pi, tau


def _check_step(mdp: LayeredMDP, pi: np.ndarray, step: object, c: float) -> None:
    ev = evaluate(mdp, pi)
    w = step.w  # type: ignore[attr-defined]
    a = w * policy_advantage(ev, step.pi_plus)  # type: ignore[attr-defined]
    kappa = float(a.max() - min(0.0, a.min()))
    u = layer_mass(mdp, ev, w)
    alpha = step.alpha  # type: ignore[attr-defined]
    imp = step.improvement  # type: ignore[attr-defined]
    sharp = bounds.conservative_lower_bound_sharp(alpha, step.A_U, u, kappa)  # type: ignore[attr-defined]
    cu = bounds.conservative_lower_bound(alpha, step.A_U, step.p_U, mdp.horizon, mdp.r_max, c)  # type: ignore[attr-defined]
    assert imp >= sharp - TOL, f"(CU-sharp) violated: {imp} < {sharp}"
    assert imp >= cu - TOL, f"(CU) violated: {imp} < {cu}"
    assert sharp >= cu - TOL, "(CU-sharp) must be at least (CU)"


@SETTINGS
@given(problems(), st.floats(0.0, 1.0), st.sampled_from(["rr", "caro", "none"]))
def test_conservative_bound_holds_for_every_exact_step(
    prob: tuple[LayeredMDP, np.ndarray, float], alpha: float, method: str
) -> None:
    mdp, pi, tau = prob
    step = exact_cpi_step(mdp, pi, method, tau=tau, alpha=alpha)
    _check_step(mdp, pi, step, c=1.0)
    # H = 1: no second-order term, the bound is an equality.
    if mdp.horizon == 1:
        assert step.improvement == pytest.approx(alpha * step.A_U, abs=1e-12)


@SETTINGS
@given(problems(), st.floats(0.0, 1.0), st.floats(0.0, 0.9), st.floats(0.0, 1.0))
def test_conservative_bound_holds_for_approx_sampler(
    prob: tuple[LayeredMDP, np.ndarray, float], alpha: float, beta: float, gamma: float
) -> None:
    mdp, pi, tau = prob
    ev = evaluate(mdp, pi)
    G = improvable_set(ev, tau)
    try:
        approx_selection(ev.d, G, beta, gamma)
    except ValueError as e:
        assume("infeasible" not in str(e))
        raise
    step = exact_cpi_step(mdp, pi, "approx", tau=tau, beta=beta, gamma=gamma, alpha=alpha)
    _check_step(mdp, pi, step, c=1.0)
    b, g = selection_quality(ev.d, G, step.w)
    p = float(ev.d[G].sum())
    if p > 1e-9 and gamma > 1e-6:
        assert g == pytest.approx(gamma, abs=1e-9)
        assert b == pytest.approx(beta, abs=1e-9)


@SETTINGS
@given(problems(), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_c2_bound_for_arbitrary_target(prob: tuple[LayeredMDP, np.ndarray, float], alpha: float, seed: int) -> None:
    """Toward an arbitrary pi' (advantages of both signs) the bound holds with c = 2."""
    mdp, pi, _ = prob
    rng = np.random.default_rng(seed)
    target = rng.dirichlet(np.full(mdp.n_actions, 0.3), size=mdp.n_dec)
    w = (rng.random(mdp.n_dec) < 0.6).astype(np.float64)
    ev = evaluate(mdp, pi)
    a = w * policy_advantage(ev, target)
    A_U, p_U = float(ev.d @ a), float(ev.d @ w)
    imp = evaluate(mdp, cpi_update(pi, target, alpha, w)).eta - ev.eta
    assert imp >= bounds.conservative_lower_bound(alpha, A_U, p_U, mdp.horizon, mdp.r_max, 2.0) - TOL
    kappa = float(a.max() - min(0.0, a.min()))
    assert imp >= bounds.conservative_lower_bound_sharp(alpha, A_U, layer_mass(mdp, ev, w), kappa) - TOL


@SETTINGS
@given(problems(min_H=2))
def test_step_rule_meets_theorem1_guarantees(prob: tuple[LayeredMDP, np.ndarray, float]) -> None:
    mdp, pi, tau = prob
    ev = evaluate(mdp, pi)
    G = improvable_set(ev, tau)
    p = float(ev.d[G].sum())
    H, R = mdp.horizon, mdp.r_max
    rr = exact_cpi_step(mdp, pi, "rr", tau=tau, ev=ev)
    caro = exact_cpi_step(mdp, pi, "caro", tau=tau, ev=ev)
    for s in (rr, caro):
        assert s.improvement >= bounds.guaranteed_improvement(s.Abar_U, s.p_U, H, R) - TOL
    assert rr.improvement >= bounds.rr_guarantee(tau, p, H, R) - TOL
    assert caro.improvement >= bounds.caro_guarantee(tau, p, H, R) - TOL
    # the approximate sampler on a few (beta, gamma) pairs
    for beta, gamma in ((0.0, 0.5), (0.3, 0.7), (0.5, 1.0)):
        try:
            ap = exact_cpi_step(mdp, pi, "approx", tau=tau, beta=beta, gamma=gamma, ev=ev)
        except ValueError as e:
            assert "infeasible" in str(e)
            continue
        assert ap.improvement >= bounds.approx_guarantee(tau, p, beta, gamma, H, R) - TOL


@settings(max_examples=25, deadline=None)
@given(problems(min_H=2), st.integers(1, 400), st.integers(0, 2**31 - 1), st.sampled_from(["rr", "caro"]))
def test_sample_step_obeys_c2_bound(prob: tuple[LayeredMDP, np.ndarray, float], m: int, seed: int, method: str) -> None:
    """Sample-based steps (estimated greedy, estimated step) satisfy (CU) with c = 2."""
    mdp, pi, tau = prob
    step = sample_cpi_step(mdp, pi, method, tau=tau, m=m, rng=np.random.default_rng(seed))
    _check_step(mdp, pi, step, c=2.0)
    assert step.n_rollouts == 2 * m * mdp.n_actions


@pytest.mark.parametrize("H", [2, 3, 5, 8])
def test_bound_slack_is_pinned_on_the_tight_instance(H: int) -> None:
    """On ``tight_chain`` the true second-order loss is exactly half the (CU) penalty with c = 1.

    Improvement = 1 - (1 - alpha)^H. So (CU) holds, (CU-sharp) is attained to O(alpha^3), and a
    bound with a penalty below half of (CU)'s (c < 1/2) fails here.
    """
    mdp = tight_chain(H)
    pi = np.tile([0.0, 1.0], (mdp.n_dec, 1))
    for alpha in (1e-3, 1e-2, 0.1):
        step = exact_cpi_step(mdp, pi, "rr", tau=0.5, alpha=alpha)
        assert step.improvement == pytest.approx(1 - (1 - alpha) ** H, abs=1e-14)
        first = alpha * H * step.A_U
        loss = first - step.improvement
        penalty = first - bounds.conservative_lower_bound(alpha, step.A_U, step.p_U, H, 1.0, 1.0)
        assert step.improvement >= first - penalty - TOL
        if alpha <= 1e-2:
            assert loss / penalty == pytest.approx(0.5, rel=0.05)
            assert first - bounds.conservative_lower_bound(alpha, step.A_U, step.p_U, H, 1.0, 0.45) < loss


def test_bound_function_algebra() -> None:
    H, R, c = 5, 2.0, 1.0
    Abar, p = 0.3, 0.2
    a_star = bounds.optimal_step(Abar, H, R, c)
    assert a_star == pytest.approx(Abar / (2 * c * R * (H - 1)))
    grid = np.linspace(0, 1, 10001)
    vals = [bounds.conservative_lower_bound(a, Abar * p, p, H, R, c) for a in grid]
    assert max(vals) <= bounds.guaranteed_improvement(Abar, p, H, R, c) + 1e-15
    assert bounds.guaranteed_improvement(Abar, p, H, R, c) == pytest.approx(H * p * Abar**2 / (4 * c * R * (H - 1)))
    tau, pp = 0.1, 0.05
    assert bounds.rr_guarantee(tau, pp, H, R) == pytest.approx(bounds.guaranteed_improvement(tau * pp, 1.0, H, R))
    assert bounds.caro_guarantee(tau, pp, H, R) == pytest.approx(bounds.guaranteed_improvement(tau, pp, H, R))
    assert bounds.approx_guarantee(tau, pp, 0.25, 0.6, H, R) == pytest.approx(
        0.75 * 0.6 * bounds.caro_guarantee(tau, pp, H, R))
    # H = 1: step 1 and improvement = A_U.
    assert bounds.optimal_step(0.2, 1, R) == 1.0
    assert bounds.guaranteed_improvement(0.2, 0.5, 1, R) == pytest.approx(0.1)
    # sample counts: RR / CARO = 1 / p^2 (up to rounding), CARO independent of p.
    r = bounds.rr_samples(tau, pp, n_actions=3) / bounds.caro_samples(tau, n_actions=3)
    assert r == pytest.approx(1 / pp**2, rel=1e-3)
    assert bounds.approx_samples(tau, 0.5, n_actions=3) == pytest.approx(4 * bounds.caro_samples(tau, n_actions=3), rel=1e-3)
    assert bounds.sample_guarantee(tau, pp, H, R) == pytest.approx(H * pp * tau**2 / (32 * R * (H - 1)))


@pytest.mark.parametrize("call", [
    lambda: bounds.conservative_lower_bound(1.5, 0.1, 0.1, 3, 1.0),
    lambda: bounds.conservative_lower_bound(0.5, 0.1, 0.1, 3, 0.0),
    lambda: bounds.optimal_step(0.1, 0, 1.0),
    lambda: bounds.optimal_step(0.1, 3, 1.0, c=0.0),
    lambda: bounds.caro_guarantee(0.1, 1.5, 3, 1.0),
    lambda: bounds.rr_samples(0.1, 0.0),
    lambda: bounds.caro_samples(0.1, delta=1.0),
    lambda: bounds.approx_samples(0.1, 1.0),
])
def test_bound_functions_reject_bad_input(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
