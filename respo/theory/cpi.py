"""Conservative policy iteration with resets: CPI-RR, CPI-CARO, the approximate sampler, no-reset.

What lives here: the reset laws (update weights), the conservative update, one CPI step in the
exact-advantage mode and in the sample-based mode (Monte Carlo Q-rollouts from reset states,
with sample splitting), and the loop over iterations. Exact evaluation is in ``exact.py``; the
bound expressions in ``bounds.py``.

Methods (``RESET_METHODS``). Each one is a (soft) update set U, given by weights w(x) in [0, 1]
over decision states, and resets from nu = d^pi(.) w(.) / p_U with p_U = E_{d^pi}[w]:

- ``"rr"``: random reset, w = 1 (nu = d^pi, the law of a uniform step of an on-policy chain);
- ``"caro"``: credit-assignment oracle, w = 1{x in G_tau} (nu = d^pi conditioned on G_tau);
- ``"approx"``: a selector with false-discovery rate beta and recall gamma (``approx_selection``);
- ``"none"``: no reset, only the start state (w = 1 at state 0), the GRPO analogue in CPI terms.

The update (Kakade & Langford 2002): pi_new(.|x) = pi(.|x) + alpha w(x) (pi'(.|x) - pi(.|x)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.random import Generator
from numpy.typing import NDArray

from respo.theory import bounds
from respo.theory._checks import check_real
from respo.theory.exact import (
    Evaluation,
    check_tau,
    evaluate,
    greedy,
    improvable_set,
    one_hot,
    policy_advantage,
)
from respo.theory.mdp import LayeredMDP

F = NDArray[np.float64]
B = NDArray[np.bool_]

RESET_METHODS: tuple[str, ...] = ("none", "rr", "caro", "approx")
MODES: tuple[str, ...] = ("exact", "sample")


def check_unit(name: str, v: float) -> float:
    """A probability-like parameter must lie in [0, 1]."""
    if not (isinstance(v, (int, float, np.floating)) and 0.0 <= float(v) <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
    return float(v)


def approx_selection(d: F, G: B, beta: float, gamma: float) -> F:
    """Soft selection weights w [n_dec] with false-discovery rate beta and recall gamma, exactly.

    w = gamma on G_tau and w = kappa on the rest, with kappa chosen so that
    d(S \\ G) / d(S) = beta, where d(S) = E_d[w]: kappa = gamma p beta / ((1 - beta) d(not G)).
    Then recall d(S & G)/d(G) = gamma. False discoveries are spread over the non-improvable
    states in proportion to d^pi. A hard set with these masses need not exist in a finite MDP;
    the weights are the fractional selection (each state selected with probability w(x)).

    Raises ValueError if beta or gamma lies outside [0, 1] or the pair is infeasible
    (kappa > 1: not enough non-improvable mass; beta = 1 with gamma > 0).
    """
    beta = check_unit("beta", beta)
    gamma = check_unit("gamma", gamma)
    d = np.asarray(d, dtype=np.float64)
    G = np.asarray(G, dtype=bool)
    if d.shape != G.shape:
        raise ValueError(f"shape mismatch: d {d.shape} vs G {G.shape}")
    p = float(d[G].sum())
    rest = float(d[~G].sum())
    w = np.where(G, gamma, 0.0)
    if beta >= 1.0:
        if gamma > 0 and p > 0:
            raise ValueError("beta = 1 (no selected state improvable) is infeasible with gamma > 0")
        return np.where(G, 0.0, 1.0)
    if beta == 0.0 or gamma == 0.0 or p == 0.0:
        return w
    if rest <= 0.0:
        raise ValueError(f"beta={beta} infeasible: every state is improvable (no mass for false discoveries)")
    kappa = gamma * p * beta / ((1.0 - beta) * rest)
    if kappa > 1.0 + 1e-12:
        raise ValueError(
            f"(beta={beta}, gamma={gamma}) infeasible at p={p:.3g}: false discoveries would need "
            f"{kappa:.3g} > 1 of the non-improvable mass"
        )
    return np.where(G, gamma, min(kappa, 1.0))


def selection_quality(d: F, G: B, w: F) -> tuple[float, float]:
    """(beta, gamma) of soft selection weights: d(S \\ G)/d(S) and d(S & G)/d(G) (NaN if 0/0)."""
    sel = float(d @ w)
    hit = float(d[G] @ w[G])
    pG = float(d[G].sum())
    beta = (sel - hit) / sel if sel > 0 else float("nan")
    gamma = hit / pG if pG > 0 else float("nan")
    return beta, gamma


def update_weights(
    mdp: LayeredMDP, ev: Evaluation, method: str, *, tau: float, beta: float = 0.0, gamma: float = 1.0
) -> F:
    """The update set of a reset method as weights w [n_dec] in [0, 1] (see the module docstring).

    ``tau`` must lie in (0, r_max] for every method (above r_max G_tau is empty by construction).
    """
    tau = check_tau(tau, r_max=mdp.r_max)
    if method == "rr":
        return np.ones(mdp.n_dec)
    if method == "caro":
        return improvable_set(ev, tau).astype(np.float64)
    if method == "approx":
        return approx_selection(ev.d, improvable_set(ev, tau), beta, gamma)
    if method == "none":
        w = np.zeros(mdp.n_dec)
        w[0] = 1.0
        return w
    raise ValueError(f"unknown reset method {method!r}; valid: {', '.join(RESET_METHODS)}")


def _check_rows(name: str, p: NDArray[np.floating]) -> None:
    """Every row of p [n, A] is a probability distribution (finite, >= 0, sums to 1 within 1e-8)."""
    if p.size == 0:
        return
    # Fast path, a few passes at ~10^6 states: column sums (cheaper than a reduction over a short
    # axis) and min / max, which NaN and +-inf cannot pass.
    dev = p[:, 0] - 1.0
    for a in range(1, p.shape[1]):
        dev += p[:, a]
    if p.min() >= 0 and max(dev.max(), -dev.min()) <= 1e-8:
        return
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        s = int(np.argmin(finite))
        raise ValueError(f"{name} is not stochastic: row {s} = {p[s].tolist()} has a non-finite entry")
    neg = (p < 0).any(axis=1)
    if neg.any():
        s = int(np.argmax(neg))
        raise ValueError(f"{name} is not stochastic: row {s} = {p[s].tolist()} has a negative entry")
    s = int(np.argmax(np.abs(dev)))
    raise ValueError(f"{name} is not stochastic: row {s} = {p[s].tolist()} sums to {dev[s] + 1.0:.12g}")


def cpi_update(pi: F, pi_plus: F, alpha: float, w: F) -> F:
    """pi_new = pi + alpha w[:, None] (pi_plus - pi); shapes [n_dec, A], [n_dec, A], [n_dec].

    pi and pi_plus must be stochastic row by row, alpha and every w(x) must lie in [0, 1]; then
    pi_new is stochastic too. Each violation is a ValueError naming the argument and the value.
    """
    if not 0.0 <= check_real("alpha", alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    pi, pi_plus, w = np.asarray(pi), np.asarray(pi_plus), np.asarray(w)
    if pi.ndim != 2 or pi.shape != pi_plus.shape or w.shape != pi.shape[:1]:
        raise ValueError(f"shape mismatch: pi {pi.shape}, pi_plus {pi_plus.shape}, w {w.shape}")
    _check_rows("pi", pi)
    _check_rows("pi_plus", pi_plus)
    if w.size and not (w.min() >= 0.0 and w.max() <= 1.0):  # NaN fails both
        s = int(np.argmax(~((w >= 0.0) & (w <= 1.0))))
        raise ValueError(f"w (update weights) must lie in [0, 1], got w[{s}] = {float(w[s])}")
    return pi + (alpha * w)[:, None] * (pi_plus - pi)


@dataclass(frozen=True, eq=False)
class CPIStep:
    """One CPI iteration. All advantages are exact (under pi), whatever the mode.

    ``A_U`` = E_d[w A^pi(x, pi')], ``p_U`` = E_d[w], ``Abar_U`` = A_U / p_U, ``bound`` = (CU) at
    ``alpha`` with constant ``c``, ``improvement`` = eta(pi_new) - eta(pi) (exact).
    ``A_hat`` is the estimate the step size used (= Abar_U in the exact mode).
    ``n_rollouts`` counts Q-rollouts (0 in the exact mode).
    """

    pi_new: F
    pi_plus: F
    w: F
    alpha: float
    A_U: float
    p_U: float
    Abar_U: float
    A_hat: float
    eta_old: float
    eta_new: float
    bound: float
    c: float
    n_rollouts: int

    @property
    def improvement(self) -> float:
        """eta(pi_new) - eta(pi)."""
        return self.eta_new - self.eta_old


def _finish(mdp: LayeredMDP, pi: F, ev: Evaluation, pi_plus: F, w: F, alpha: float,
            A_hat: float, c: float, n_rollouts: int) -> CPIStep:
    adv = policy_advantage(ev, pi_plus)
    A_U = float(ev.d @ (w * adv))
    p_U = float(ev.d @ w)
    Abar = A_U / p_U if p_U > 0 else 0.0
    pi_new = cpi_update(pi, pi_plus, alpha, w)
    eta_new = evaluate(mdp, pi_new).eta
    bound = bounds.conservative_lower_bound(alpha, A_U, p_U, mdp.horizon, mdp.r_max, c)
    return CPIStep(pi_new, pi_plus, w, alpha, A_U, p_U, Abar, A_hat, ev.eta, eta_new, bound, c, n_rollouts)


def exact_cpi_step(
    mdp: LayeredMDP,
    pi: NDArray[np.floating],
    method: str,
    *,
    tau: float,
    beta: float = 0.0,
    gamma: float = 1.0,
    c: float = 1.0,
    alpha: float | None = None,
    ev: Evaluation | None = None,
) -> CPIStep:
    """One exact-advantage CPI step: pi' = argmax_y A^pi (exact), U from ``method``.

    The step size is the rule alpha* = Abar_U / (2 c R (H - 1)) (``bounds.optimal_step``)
    unless ``alpha`` is given. c = 1 is valid here (greedy advantages are >= 0).
    """
    pi = mdp.check_policy(pi)
    ev = evaluate(mdp, pi) if ev is None else ev
    w = update_weights(mdp, ev, method, tau=tau, beta=beta, gamma=gamma)
    pi_plus = one_hot(greedy(ev), mdp.n_actions)
    adv = policy_advantage(ev, pi_plus)
    p_U = float(ev.d @ w)
    Abar = float(ev.d @ (w * adv)) / p_U if p_U > 0 else 0.0
    a = bounds.optimal_step(Abar, mdp.horizon, mdp.r_max, c) if alpha is None else float(alpha)
    return _finish(mdp, pi, ev, pi_plus, w, a, Abar, c, 0)


def rollout_sums(rng: Generator, counts: NDArray[np.int64], Q: F, r_max: float) -> F:
    """Sum of ``counts[x]`` Q-rollout returns per (x, y): r_max * Binomial(counts[x], Q[x, y] / r_max).

    Exact in law for terminal coin-flip rewards: one rollout from (x, y) returns r_max with
    probability Q^pi(x, y) / r_max (a mixture of Bernoullis is a Bernoulli), so the sum of n
    independent rollouts is r_max times a Binomial. Shapes: counts [n], Q [n, A] -> [n, A].
    """
    q = np.clip(Q / r_max, 0.0, 1.0)
    return r_max * rng.binomial(counts[:, None], q).astype(np.float64)


def sample_cpi_step(
    mdp: LayeredMDP,
    pi: NDArray[np.floating],
    method: str,
    *,
    tau: float,
    m: int,
    rng: Generator,
    beta: float = 0.0,
    gamma: float = 1.0,
    c: float = 2.0,
    eps: float = 0.0,
    ev: Evaluation | None = None,
) -> CPIStep:
    """One sample-based CPI step with split samples (theory/theorem1.md, Theorem 1' algorithm).

    Draw 2m reset states from nu = d^pi w / p_U, in two halves D1 and D2 of m each. At every reset
    state run one Q-rollout per action (2 m |Y| Q-rollouts in all). On D1 pick pi'(x) = argmax_y
    of the summed returns at each visited state (ties broken uniformly at random; pi' = pi at
    states D1 never visited, so those contribute zero advantage). On D2 estimate its mean
    advantage A_hat = (1/m) sum_i [Qhat(x_i, pi'(x_i)) - sum_y pi(y|x_i) Qhat(x_i, y)] with fresh
    rollouts, and step with alpha = optimal_step(max(A_hat - eps, 0), c) (c = 2: pi' may have
    negative advantage somewhere). Rollouts are drawn in law (``rollout_sums``).

    Deviation from Theorem 1': pi' is deterministic on D1's states and equals pi elsewhere.
    """
    pi = mdp.check_policy(pi)
    if int(m) != m or m < 1:
        raise ValueError(f"m (reset states per half) must be an integer >= 1, got {m}")
    if check_real("eps", eps) < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    ev = evaluate(mdp, pi) if ev is None else ev
    w = update_weights(mdp, ev, method, tau=tau, beta=beta, gamma=gamma)
    A = mdp.n_actions
    n_rollouts = 2 * int(m) * A
    nu = ev.d * w
    p_U = float(nu.sum())
    if p_U <= 0:
        return _finish(mdp, pi, ev, pi.copy(), w, 0.0, 0.0, c, n_rollouts)
    nu = nu / p_U
    R = mdp.r_max
    # D1: choose pi'.
    c1 = rng.multinomial(int(m), nu)
    idx = np.flatnonzero(c1)
    S1 = rollout_sums(rng, c1[idx], ev.Q[idx], R) / R
    choice = np.argmax(S1 + 0.5 * rng.random(S1.shape), axis=1)  # sums are integers: jitter only breaks ties
    pi_plus = pi.copy()
    pi_plus[idx] = one_hot(choice, A)
    # D2: estimate A_nu(pi') on fresh rollouts.
    c2 = rng.multinomial(int(m), nu)
    idx2 = np.flatnonzero(c2)
    S2 = rollout_sums(rng, c2[idx2], ev.Q[idx2], R)
    a_hat = np.einsum("sa,sa->s", pi_plus[idx2] - pi[idx2], S2)
    A_hat = float(a_hat.sum() / m)
    alpha = bounds.optimal_step(max(A_hat - eps, 0.0), mdp.horizon, R, c)
    return _finish(mdp, pi, ev, pi_plus, w, alpha, A_hat, c, n_rollouts)


def run_cpi(
    mdp: LayeredMDP,
    pi0: NDArray[np.floating],
    method: str,
    *,
    tau: float,
    n_iters: int,
    mode: str = "exact",
    m: int = 0,
    rng: Generator | None = None,
    beta: float = 0.0,
    gamma: float = 1.0,
    c: float | None = None,
) -> dict[str, F]:
    """Run ``n_iters`` CPI iterations; returns arrays over iterations 0..n_iters.

    Keys: ``eta`` [n+1], ``samples`` [n+1] (cumulative Q-rollouts), ``alpha`` [n], ``p`` [n+1]
    (coverage of each iterate), ``improvement`` [n], ``bound`` [n]. c defaults to 1 (exact) or
    2 (sample). ``mode="sample"`` needs ``m`` and ``rng``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "sample" and (rng is None or m < 1):
        raise ValueError("sample mode needs m >= 1 and an rng")
    cc = (1.0 if mode == "exact" else 2.0) if c is None else c
    check_tau(tau, r_max=mdp.r_max)
    pi = mdp.check_policy(pi0).copy()
    eta, samples, alphas, ps, imps, bnds = [], [0.0], [], [], [], []
    for _ in range(int(n_iters)):
        ev = evaluate(mdp, pi)
        eta.append(ev.eta)
        ps.append(float(ev.d[improvable_set(ev, tau)].sum()))
        if mode == "exact":
            st = exact_cpi_step(mdp, pi, method, tau=tau, beta=beta, gamma=gamma, c=cc, ev=ev)
        else:
            assert rng is not None
            st = sample_cpi_step(mdp, pi, method, tau=tau, m=m, rng=rng, beta=beta, gamma=gamma, c=cc, ev=ev)
        pi = st.pi_new
        samples.append(samples[-1] + st.n_rollouts)
        alphas.append(st.alpha)
        imps.append(st.improvement)
        bnds.append(st.bound)
    ev = evaluate(mdp, pi)
    eta.append(ev.eta)
    ps.append(float(ev.d[improvable_set(ev, tau)].sum()))
    return {
        "eta": np.array(eta), "samples": np.array(samples), "alpha": np.array(alphas),
        "p": np.array(ps), "improvement": np.array(imps), "bound": np.array(bnds),
        "pi": pi,
    }
