"""Exact identities of the tabular simulator (docs/theory.md, check 1) and its input validation.

Bellman consistency, visitation, the performance-difference lemma to 1e-10, the derivative of
eta along the CPI mixture, vectorised vs per-state reference loops, and bad-input errors.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respo.seeding import rng_for
from respo.theory import bounds
from respo.theory.cpi import approx_selection, cpi_update, exact_cpi_step, sample_cpi_step
from respo.theory.exact import (
    coverage,
    evaluate,
    greedy,
    improvable_set,
    one_hot,
    pdl_rhs,
    terminal_probs,
)
from respo.theory.mdp import (
    LayeredMDP,
    coverage_chain,
    coverage_chain_policy,
    random_layered_mdp,
    random_tree_mdp,
    reasoning_tree,
)

SETTINGS = settings(max_examples=40, deadline=None)


def random_policy(rng: np.random.Generator, mdp: LayeredMDP, conc: float = 1.0) -> np.ndarray:
    return rng.dirichlet(np.full(mdp.n_actions, conc), size=mdp.n_dec)


@st.composite
def mdp_and_policies(draw: st.DrawFn) -> tuple[LayeredMDP, np.ndarray, np.ndarray]:
    seed = draw(st.integers(0, 2**31 - 1))
    H = draw(st.integers(1, 5))
    width = draw(st.integers(1, 6))
    A = draw(st.integers(1, 6))
    K = draw(st.integers(1, 3))
    tree = draw(st.booleans())
    rng = np.random.default_rng(seed)
    if tree and A ** H <= 4000:
        mdp = random_tree_mdp(rng, H, A, r_max=draw(st.sampled_from([1.0, 2.5])))
    else:
        mdp = random_layered_mdp(rng, H, width, A, K, r_max=draw(st.sampled_from([1.0, 2.5])))
    conc = draw(st.sampled_from([0.2, 1.0, 5.0]))
    return mdp, random_policy(rng, mdp, conc), random_policy(rng, mdp, conc)


def reference_evaluate(mdp: LayeredMDP, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-state Python loops: V, Q, reach (the straightforward solver)."""
    V = np.zeros(mdp.n_states)
    Q = np.zeros((mdp.n_dec, mdp.n_actions))
    for z in range(mdp.n_dec, mdp.n_states):
        V[z] = mdp.reward[z - mdp.n_dec]
    for s in range(mdp.n_dec - 1, -1, -1):
        for a in range(mdp.n_actions):
            Q[s, a] = sum(mdp.prob[s, a, k] * V[mdp.succ[s, a, k]] for k in range(mdp.succ.shape[2]))
        V[s] = sum(pi[s, a] * Q[s, a] for a in range(mdp.n_actions))
    reach = np.zeros(mdp.n_states)
    reach[0] = 1.0
    for s in range(mdp.n_dec):
        for a in range(mdp.n_actions):
            for k in range(mdp.succ.shape[2]):
                reach[mdp.succ[s, a, k]] += reach[s] * pi[s, a] * mdp.prob[s, a, k]
    return V, Q, reach


@SETTINGS
@given(mdp_and_policies())
def test_bellman_and_visitation(args: tuple[LayeredMDP, np.ndarray, np.ndarray]) -> None:
    mdp, pi, _ = args
    ev = evaluate(mdp, pi)
    # Bellman: V(x) = sum_y pi(y|x) Q(x, y), Q(x, y) = E[V(x')]; A(x, pi) = 0.
    np.testing.assert_allclose(ev.V[: mdp.n_dec], np.einsum("sa,sa->s", pi, ev.Q), atol=1e-12)
    np.testing.assert_allclose(ev.Q, np.einsum("sak,sak->sa", mdp.prob, ev.V[mdp.succ]), atol=1e-12)
    np.testing.assert_allclose(np.einsum("sa,sa->s", pi, ev.A), 0.0, atol=1e-12)
    assert np.all(ev.V >= -1e-12) and np.all(ev.V <= mdp.r_max + 1e-12)
    # Visitation: every layer sums to 1, d sums to 1, eta = E[terminal reward].
    for h in range(mdp.horizon):
        assert ev.reach[mdp.layer_slice(h)].sum() == pytest.approx(1.0, abs=1e-12)
    assert ev.d.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(ev.d >= 0)
    assert terminal_probs(mdp, pi) @ mdp.reward == pytest.approx(ev.eta, abs=1e-12)
    # The greedy policy is elementwise at least as good (policy improvement).
    ev_g = evaluate(mdp, one_hot(greedy(ev), mdp.n_actions))
    assert np.all(ev_g.V >= ev.V - 1e-12)
    # Matches the per-state reference loops.
    V, Q, reach = reference_evaluate(mdp, pi)
    np.testing.assert_allclose(ev.V, V, atol=1e-12)
    np.testing.assert_allclose(ev.Q, Q, atol=1e-12)
    np.testing.assert_allclose(ev.reach, reach[: mdp.n_dec], atol=1e-12)


@SETTINGS
@given(mdp_and_policies())
def test_performance_difference_lemma(args: tuple[LayeredMDP, np.ndarray, np.ndarray]) -> None:
    mdp, pi, pi_new = args
    ev = evaluate(mdp, pi)
    lhs = evaluate(mdp, pi_new).eta - ev.eta
    assert abs(lhs - pdl_rhs(mdp, ev, pi_new)) <= 1e-10


@SETTINGS
@given(mdp_and_policies(), st.floats(0.0, 1.0))
def test_cpi_derivative_matches_pdl(args: tuple[LayeredMDP, np.ndarray, np.ndarray], frac: float) -> None:
    """d/dalpha eta(mixture) at 0 = H * E_d[w A^pi(x, pi')] (finite difference)."""
    mdp, pi, pi_plus = args
    ev = evaluate(mdp, pi)
    w = (np.arange(mdp.n_dec) % 2 == 0) * frac + (np.arange(mdp.n_dec) % 2 == 1) * 1.0
    h = 1e-6
    fd = (evaluate(mdp, cpi_update(pi, pi_plus, h, w)).eta - ev.eta) / h
    first = mdp.horizon * float(ev.d @ (w * np.einsum("sa,sa->s", pi_plus, ev.A)))
    assert fd == pytest.approx(first, abs=1e-4 * mdp.r_max * mdp.horizon)


def test_pinned_values_coverage_chain() -> None:
    """Textbook values by hand for the coverage chain (H = 3, fork at step 1)."""
    q, eps, pr = 0.2, 0.4, 0.3
    mdp = coverage_chain(3, q)
    pi = coverage_chain_policy(mdp, eps=eps, p_recover=pr)
    ev = evaluate(mdp, pi)
    # From the fork: ok -> 0.5; wrong at step 2 recovers with pr -> 0.5 pr; dead -> 0.
    v_fork = (1 - eps) * 0.5 + eps / 2 * 0.5 * pr
    assert ev.V[mdp.offsets[1] + 1] == pytest.approx(v_fork, abs=1e-14)
    assert ev.eta == pytest.approx((1 - q) * 0.5 + q * v_fork, abs=1e-14)
    # Advantage of the correct action at the fork.
    assert ev.A[mdp.offsets[1] + 1, 0] == pytest.approx(0.5 - v_fork, abs=1e-14)
    # p is proportional to q.
    tau = 0.05
    p1 = coverage(ev, tau)
    ev2 = evaluate(coverage_chain(3, q / 10), pi)
    assert coverage(ev2, tau) == pytest.approx(p1 / 10, rel=1e-12)


def test_reasoning_tree_statuses() -> None:
    mdp, status = reasoning_tree(rng_for(0, "mdp"), 5, 3, q=0.5)
    assert status[0] == 0
    z = status[mdp.n_dec:]
    assert set(np.unique(z)) <= {0, 1, 2}
    assert np.all(mdp.reward[z == 2] == 0)
    assert mdp.n_states == sum(3**h for h in range(6))


def test_tree_numbering_and_size() -> None:
    mdp = random_tree_mdp(np.random.default_rng(0), 3, 2)
    assert mdp.layer_sizes == (1, 2, 4, 8)
    assert mdp.succ[0, :, 0].tolist() == [1, 2]
    assert mdp.succ[2, :, 0].tolist() == [5, 6]


# -- bad input ------------------------------------------------------------------------------------


def _small() -> LayeredMDP:
    return random_layered_mdp(np.random.default_rng(1), 2, 3, 2, 2)


def test_bad_transitions_raise() -> None:
    m = _small()
    prob = m.prob.copy()
    prob[1, 0, 0] += 0.1
    with pytest.raises(ValueError, match="not stochastic"):
        LayeredMDP(m.layer_sizes, m.succ, prob, m.reward, m.horizon)
    prob = m.prob.copy()
    prob[1, 0] = [1.5, -0.5]
    with pytest.raises(ValueError, match="not stochastic"):
        LayeredMDP(m.layer_sizes, m.succ, prob, m.reward, m.horizon)
    succ = m.succ.copy()
    succ[0, 0, 0] = m.n_states - 1  # skips a layer
    with pytest.raises(ValueError, match="layered"):
        LayeredMDP(m.layer_sizes, succ, m.prob, m.reward, m.horizon)


def test_shape_mismatches_raise() -> None:
    m = _small()
    with pytest.raises(ValueError, match="shape mismatch"):
        LayeredMDP(m.layer_sizes, m.succ, m.prob[:, :, :1], m.reward, m.horizon)
    with pytest.raises(ValueError, match="shape mismatch"):
        LayeredMDP(m.layer_sizes, m.succ, m.prob, m.reward[:-1], m.horizon)
    with pytest.raises(ValueError, match="shape mismatch"):
        LayeredMDP(m.layer_sizes, m.succ[:-1], m.prob[:-1], m.reward, m.horizon)
    with pytest.raises(ValueError, match="shape mismatch"):
        evaluate(m, np.full((m.n_dec, 3), 1 / 3))
    with pytest.raises(ValueError, match="not stochastic"):
        evaluate(m, np.full((m.n_dec, 2), 0.7))
    with pytest.raises(ValueError, match="shape mismatch"):
        approx_selection(np.ones(3) / 3, np.array([True, False]), 0.1, 0.5)


def test_horizon_that_does_not_fit_raises() -> None:
    m = _small()
    with pytest.raises(ValueError, match="horizon 3 does not fit"):
        LayeredMDP(m.layer_sizes, m.succ, m.prob, m.reward, 3)
    with pytest.raises(ValueError, match="horizon"):
        LayeredMDP(m.layer_sizes, m.succ, m.prob, m.reward, 0)
    with pytest.raises(ValueError, match="fork"):
        coverage_chain(3, 0.5, fork=3)
    with pytest.raises(ValueError, match="horizon H"):
        coverage_chain(1, 0.5)
    with pytest.raises(ValueError, match="horizon H >= 2"):
        bounds.rr_guarantee(0.1, 0.5, 1, 1.0)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan")])
def test_bad_tau_raises(tau: float) -> None:
    m = _small()
    pi = m.uniform_policy()
    ev = evaluate(m, pi)
    with pytest.raises(ValueError, match="tau"):
        improvable_set(ev, tau)
    with pytest.raises(ValueError, match="tau"):
        exact_cpi_step(m, pi, "caro", tau=tau)
    with pytest.raises(ValueError, match="tau"):
        bounds.caro_guarantee(tau, 0.5, 3, 1.0)


@pytest.mark.parametrize("beta,gamma", [(-0.1, 0.5), (1.2, 0.5), (0.2, -0.01), (0.2, 1.5)])
def test_beta_gamma_outside_unit_raise(beta: float, gamma: float) -> None:
    mdp = coverage_chain(4, 0.5)
    pi = coverage_chain_policy(mdp)
    with pytest.raises(ValueError, match="beta|gamma"):
        exact_cpi_step(mdp, pi, "approx", tau=0.1, beta=beta, gamma=gamma)
    with pytest.raises(ValueError, match="beta|gamma"):
        bounds.approx_guarantee(0.1, 0.2, beta, gamma, 4, 1.0)


def test_unknown_method_and_bad_m_raise() -> None:
    mdp = coverage_chain(4, 0.5)
    pi = coverage_chain_policy(mdp)
    with pytest.raises(ValueError, match="unknown reset method"):
        exact_cpi_step(mdp, pi, "oracle", tau=0.1)
    with pytest.raises(ValueError, match="m "):
        sample_cpi_step(mdp, pi, "rr", tau=0.1, m=0, rng=np.random.default_rng(0))


def test_mdp_arrays_are_frozen() -> None:
    m = _small()
    with pytest.raises(ValueError):
        m.prob[0, 0, 0] = 0.3


def test_import_theory_pulls_in_no_torch() -> None:
    code = (
        "import sys, respo.theory, respo.theory.mdp, respo.theory.exact, respo.theory.cpi, "
        "respo.theory.bounds, respo.theory.sampler, respo.theory.softmax, respo.theory.studies\n"
        "bad = [m for m in ('torch', 'transformers', 'respo.llm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
