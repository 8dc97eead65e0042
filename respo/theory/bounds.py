"""The bound expressions of the finite-horizon CPI analysis, as plain functions of scalars.

Derivation (theory/conservative_update.md, Lemma 2; re-derived here): for the conservative
update pi_new = pi + alpha * w(x) (pi' - pi) on a (soft) update set U with weights w in [0, 1],

    eta(pi_new) - eta(pi) = alpha * sum_h E_{x_h ~ pi_new}[w(x_h) A^pi(x_h, pi')]      (PDL)

and pi_new agrees with pi until the first step t where it uses pi' (probability <= alpha w(x_t)).
Coupling the two chains, each term E_{pi_new}[f(x_h)] differs from E_pi[f(x_h)] by at most
c R Pr(diverged before h) with f = w A^pi(., pi') in [0, R] (c = 1: exact greedy pi', nonnegative
advantages) or in [-R, R] (c = 2: any pi'). Summing the union bounds over h gives

    eta(pi_new) - eta(pi) >= alpha H A_U - alpha^2 c R H (H - 1) p_U                      (CU)

with A_U = E_{d^pi}[w(x) A^pi(x, pi')] and p_U = E_{d^pi}[w(x)]. Maximising over alpha:
alpha* = Abar_U / (2 c R (H - 1)), Abar_U = A_U / p_U, and the guaranteed improvement
H p_U Abar_U^2 / (4 c R (H - 1)). With G = G_tau: RR (U = all, Abar >= tau p) gets
H tau^2 p^2 / (4 R (H - 1)); CARO (U = G, Abar >= tau) gets H tau^2 p / (4 R (H - 1)); a selector
with false-discovery rate beta and recall gamma gets (1 - beta) gamma times CARO's.

The sample counts follow theory/theorem1.md, Theorem 1' (Hoeffding + union bound with sample
splitting): m >= 128 R^2 log(4 |Pi| / delta) / tau_nu^2 reset states per half, 2 m |Y| Q-rollouts.
"""

from __future__ import annotations

import math

from respo.theory._checks import check_integer, check_prob, check_real


def _check_HR(H: int, R: float, *, need_gap: bool = False) -> None:
    check_integer("horizon H", H, minimum=1)
    if need_gap and H < 2:
        raise ValueError(f"the closed-form guarantee needs horizon H >= 2 (H - 1 in the denominator), got {H}")
    _check_R(R)


def _check_R(R: float) -> None:
    if not check_real("R (reward bound)", R) > 0:
        raise ValueError(f"R (reward bound) must be > 0, got {R}")


def _check_c(c: float) -> None:
    if not check_real("c", c) > 0:
        raise ValueError(f"c must be > 0 (1 for exact greedy, 2 in general), got {c}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= check_real("alpha", alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def _check_tau_p(tau: float, p: float, R: float | None = None, *, name: str = "tau") -> None:
    """tau > 0 (and <= R when R is given: no advantage exceeds R, so G_tau would be empty); p in [0, 1]."""
    if not check_real(name, tau) > 0:
        raise ValueError(f"{name} must be > 0, got {tau}")
    if R is not None:
        _check_R(R)
        if tau > R:
            raise ValueError(
                f"{name} must be <= R (reward bound) = {R}, got {tau}: no advantage exceeds R"
            )
    check_prob("p (coverage)", p)


def _check_unit(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {v!r}")


def conservative_lower_bound(alpha: float, A_U: float, p_U: float, H: int, R: float, c: float = 1.0) -> float:
    """(CU): alpha H A_U - alpha^2 c R H (H - 1) p_U, a lower bound on eta(pi_new) - eta(pi).

    Source: theory/conservative_update.md Lemma 2 (coupling + performance-difference lemma).
    c = 1 needs A^pi(x, pi') >= 0 on U (exact greedy pi'); c = 2 holds for any pi'.
    """
    _check_HR(H, R)
    _check_c(c)
    _check_alpha(alpha)
    check_real("A_U", A_U)
    check_prob("p_U", p_U)
    return alpha * H * A_U - alpha**2 * c * R * H * (H - 1) * p_U


def conservative_lower_bound_sharp(alpha: float, A_U: float, u: list[float] | tuple[float, ...], kappa: float) -> float:
    """(CU-sharp): alpha H A_U - alpha^2 kappa sum_{t=1}^{H-1} (H - t) u_t, with H = len(u).

    u_t = Pr_pi(x_t in U) (soft: E_pi[w(x_t)]) for t = 1..H, kappa >= a(x) - a(x') for states x, x'
    of one step, a = w A^pi(., pi'); kappa = max a - min(0, min a) works (CU-range).
    Source: theory/conservative_update.md, Lemma 2, step 4 before the last relaxation.
    """
    _check_alpha(alpha)
    check_real("A_U", A_U)
    if check_real("kappa", kappa) < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    H = len(u)
    if H < 1:
        raise ValueError("u must hold one entry per step (H >= 1)")
    for t, ut in enumerate(u):
        check_prob(f"u[{t}]", ut)
    weights = [H - t for t in range(1, H)]
    return alpha * H * A_U - alpha**2 * kappa * sum(w * ut for w, ut in zip(weights, u[:-1], strict=True))


def optimal_step(Abar_U: float, H: int, R: float, c: float = 1.0) -> float:
    """The step-size rule alpha* = Abar_U / (2 c R (H - 1)), clipped to [0, 1].

    Maximises (CU) over alpha. H = 1 has no second-order term, so alpha* = 1 there (if
    Abar_U > 0). Abar_U <= 0 gives 0 (no step).
    """
    _check_HR(H, R)
    _check_c(c)
    if check_real("Abar_U", Abar_U) <= 0:
        return 0.0
    if H == 1:
        return 1.0
    return float(min(1.0, Abar_U / (2.0 * c * R * (H - 1))))


def guaranteed_improvement(Abar_U: float, p_U: float, H: int, R: float, c: float = 1.0) -> float:
    """(CU) at alpha = optimal_step: H p_U Abar_U^2 / (4 c R (H - 1)) when alpha* < 1.

    Evaluated as the bound at the clipped step, so it is also right for H = 1 (p_U Abar_U).
    """
    check_prob("p_U", p_U)
    alpha = optimal_step(Abar_U, H, R, c)
    return conservative_lower_bound(alpha, Abar_U * p_U, p_U, H, R, c)


def rr_guarantee(tau: float, p: float, H: int, R: float) -> float:
    """CPI-RR (Theorem 1): H tau^2 p^2 / (4 R (H - 1)); U = all states, Abar >= tau p, c = 1."""
    _check_HR(H, R, need_gap=True)
    _check_tau_p(tau, p, R)
    return H * tau**2 * p**2 / (4.0 * R * (H - 1))


def caro_guarantee(tau: float, p: float, H: int, R: float) -> float:
    """CPI-CARO (Theorem 1): H tau^2 p / (4 R (H - 1)); U = G_tau, Abar >= tau, c = 1."""
    _check_HR(H, R, need_gap=True)
    _check_tau_p(tau, p, R)
    return H * tau**2 * p / (4.0 * R * (H - 1))


def approx_guarantee(tau: float, p: float, beta: float, gamma: float, H: int, R: float) -> float:
    """Approximate sampler (Corollary 1): (1 - beta) gamma H tau^2 p / (4 R (H - 1)).

    beta = d(S \\ G) / d(S) (false-discovery rate), gamma = d(S & G) / d(G) (recall).
    Source: theory/approximate_sampler.md; Abar_S >= tau (1 - beta), d(S) = gamma p / (1 - beta).
    """
    _check_unit("beta", beta)
    _check_unit("gamma", gamma)
    return (1.0 - beta) * gamma * caro_guarantee(tau, p, H, R)


def sample_guarantee(tau_nu: float, p_U: float, H: int, R: float) -> float:
    """Theorem 1' (sample-based, c = 2, eps = tau_nu / 8): H p_U tau_nu^2 / (32 R (H - 1))."""
    _check_HR(H, R, need_gap=True)
    _check_tau_p(tau_nu, 0.0, R, name="tau_nu")
    check_prob("p_U", p_U)
    return H * p_U * tau_nu**2 / (32.0 * R * (H - 1))


def _samples(tau_nu: float, R: float, n_actions: int, log_n_policies: float, delta: float,
             *, name: str = "tau") -> int:
    _check_tau_p(tau_nu, 0.0, R, name=name)
    if check_integer("n_actions", n_actions) < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    if not 0.0 < check_real("delta", delta) < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if check_real("log_n_policies", log_n_policies) < 0:
        raise ValueError(f"log_n_policies must be >= 0, got {log_n_policies}")
    m = math.ceil(128.0 * R**2 * (math.log(4.0 / delta) + log_n_policies) / tau_nu**2)
    return 2 * m * int(n_actions)


def rr_samples(tau: float, p: float, R: float = 1.0, *, n_actions: int = 2,
               log_n_policies: float = 0.0, delta: float = 0.1) -> int:
    """Q-rollouts for one CPI-RR iteration (Theorem 1'): 2 |Y| ceil(128 R^2 log(4|Pi|/delta) / (tau p)^2).

    ``log_n_policies`` = log |Pi| (tabular: |U| log |Y|). Order 1 / (tau^2 p^2).
    """
    _check_tau_p(tau, p, R)
    if p <= 0:
        raise ValueError(f"p must be > 0 for a finite RR sample count, got {p}")
    return _samples(tau * p, R, n_actions, log_n_policies, delta, name="tau p")


def caro_samples(tau: float, R: float = 1.0, *, n_actions: int = 2,
                 log_n_policies: float = 0.0, delta: float = 0.1) -> int:
    """Q-rollouts for one CPI-CARO iteration (Theorem 1'): 2 |Y| ceil(128 R^2 log(4|Pi|/delta) / tau^2).

    Independent of p: the oracle's reset law keeps the mean advantage at >= tau. Finding the
    reset states (about 1/p on-policy trajectories each) is not counted (``theory/theorem1.md``, assumption (A3)).
    """
    _check_tau_p(tau, 1.0, R)
    return _samples(tau, R, n_actions, log_n_policies, delta)


def approx_samples(tau: float, beta: float, R: float = 1.0, *, n_actions: int = 2,
                   log_n_policies: float = 0.0, delta: float = 0.1) -> int:
    """Q-rollouts for the approximate sampler: CARO's count with tau_nu = (1 - beta) tau."""
    _check_unit("beta", beta)
    if beta >= 1.0:
        raise ValueError("beta = 1: the selected set holds no improvable mass; no finite count")
    _check_tau_p(tau, 1.0, R)
    return _samples((1.0 - beta) * tau, R, n_actions, log_n_policies, delta)
