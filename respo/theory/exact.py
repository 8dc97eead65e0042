"""Exact policy evaluation on a ``LayeredMDP``: V, Q, A, visitation d^pi, G_tau and p_pi.

Pure float64 functions, vectorised by layer (one gather for backward induction and one
``bincount`` for the forward pass per layer). Nothing here samples.

Definitions (theory/definitions.md; the same in every test):

- V^pi(x) = E_pi[terminal reward | x], Q^pi(x, y) = E[V^pi(x') | x, y], A^pi = Q^pi - V^pi.
- reach_h(x) = Pr_pi(x_h = x) for x in layer h; each layer sums to 1.
- d^pi(x) = (1/H) sum_h Pr_pi(x_h = x): pick a step h uniformly, then x_h ~ pi. This is the law of
  a random reset. Over the decision states d^pi sums to 1.
- G_tau(pi) = {x : max_y A^pi(x, y) >= tau}  (the tau-improvable set, tau > 0).
- p_pi = d^pi(G_tau(pi)), its coverage.
- eta(pi) = V^pi(start state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from respo.theory.mdp import LayeredMDP

F = NDArray[np.float64]
B = NDArray[np.bool_]
I = NDArray[np.int64]  # noqa: E741


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Exact quantities of one policy. Shapes: V [n_states], Q/A [n_dec, A], reach/d [n_dec]."""

    V: F
    Q: F
    A: F
    reach: F
    d: F

    @property
    def eta(self) -> float:
        """eta(pi) = V^pi(start)."""
        return float(self.V[0])


def q_from_v(mdp: LayeredMDP, V: F, sl: slice | None = None) -> F:
    """Q(x, y) = sum_k prob[x, y, k] V[succ[x, y, k]] for the decision states in ``sl``."""
    sl = slice(0, mdp.n_dec) if sl is None else sl
    succ = mdp.succ[sl]
    if succ.shape[2] == 1:
        return V[succ[:, :, 0]] * mdp.prob[sl][:, :, 0]
    return np.einsum("sak,sak->sa", mdp.prob[sl], V[succ])


def values(mdp: LayeredMDP, pi: NDArray[np.floating]) -> tuple[F, F]:
    """Backward induction: V [n_states] (terminal part = mean rewards) and Q [n_dec, A]."""
    return _values(mdp, mdp.check_policy(pi))


def _values(mdp: LayeredMDP, pi: F) -> tuple[F, F]:
    V = np.empty(mdp.n_states)
    V[mdp.n_dec:] = mdp.reward
    Q = np.empty((mdp.n_dec, mdp.n_actions))
    for h in range(mdp.horizon - 1, -1, -1):
        sl = mdp.layer_slice(h)
        Qh = q_from_v(mdp, V, sl)
        Q[sl] = Qh
        V[sl] = np.einsum("sa,sa->s", pi[sl], Qh)
    return V, Q


def reach_probs(mdp: LayeredMDP, pi: NDArray[np.floating]) -> F:
    """Forward pass: Pr_pi(x_h = x) for every decision state x (layer h), shape [n_dec]."""
    return _reach(mdp, mdp.check_policy(pi))


def _reach(mdp: LayeredMDP, pi: F) -> F:
    off = mdp.offsets
    reach = np.empty(mdp.n_dec)
    reach[0] = 1.0
    for h in range(mdp.horizon - 1):
        sl = mdp.layer_slice(h)
        w = reach[sl, None, None] * pi[sl, :, None] * mdp.prob[sl]
        nxt = np.bincount((mdp.succ[sl] - off[h + 1]).ravel(), weights=w.ravel(),
                          minlength=mdp.layer_sizes[h + 1])
        reach[off[h + 1]:off[h + 2]] = nxt
    return reach


def terminal_probs(mdp: LayeredMDP, pi: NDArray[np.floating], reach: F | None = None) -> F:
    """Pr_pi(x_H = z) for every terminal state z, shape [n_term]."""
    pi = mdp.check_policy(pi)
    reach = reach_probs(mdp, pi) if reach is None else reach
    H = mdp.horizon
    sl = mdp.layer_slice(H - 1)
    w = reach[sl, None, None] * pi[sl, :, None] * mdp.prob[sl]
    out: F = np.bincount((mdp.succ[sl] - mdp.offsets[H]).ravel(), weights=w.ravel(),
                         minlength=mdp.layer_sizes[H]).astype(np.float64)
    return out


def evaluate(mdp: LayeredMDP, pi: NDArray[np.floating]) -> Evaluation:
    """V, Q, A = Q - V, reach probabilities and d^pi = reach / H for policy pi [n_dec, A]."""
    pi = mdp.check_policy(pi)
    V, Q = _values(mdp, pi)
    A = Q - V[: mdp.n_dec, None]
    reach = _reach(mdp, pi)
    return Evaluation(V=V, Q=Q, A=A, reach=reach, d=reach / mdp.horizon)


def check_tau(tau: float, *, r_max: float | None = None) -> float:
    """tau must be a finite number > 0, and at most ``r_max`` when given.

    No advantage exceeds the reward bound, so a threshold above r_max makes G_tau empty for every
    policy (a CARO step that never moves).
    """
    if not (isinstance(tau, (int, float, np.floating)) and np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a number > 0, got {tau!r}")
    if r_max is not None and tau > r_max:
        raise ValueError(
            f"tau must be <= r_max = {r_max}, got {tau!r}: no advantage exceeds r_max, so no state "
            "would be tau-improvable"
        )
    return float(tau)


def improvable_set(ev: Evaluation, tau: float) -> B:
    """G_tau = {x : max_y A^pi(x, y) >= tau}, a mask over decision states [n_dec]."""
    tau = check_tau(tau)
    return ev.A.max(axis=1) >= tau


def coverage(ev: Evaluation, tau: float) -> float:
    """p_pi = d^pi(G_tau(pi)) = (1/H) sum_h Pr_pi(x_h in G_tau)."""
    return float(ev.d[improvable_set(ev, tau)].sum())


def greedy(ev: Evaluation) -> I:
    """pi'(x) = argmax_y A^pi(x, y) (lowest index on ties), int [n_dec]."""
    return np.argmax(ev.A, axis=1).astype(np.int64)


def one_hot(actions: I, n_actions: int) -> F:
    """Deterministic policy as a distribution, [n_dec, A]."""
    out = np.zeros((actions.size, n_actions))
    out[np.arange(actions.size), actions] = 1.0
    return out


def policy_advantage(ev: Evaluation, pi_plus: NDArray[np.floating]) -> F:
    """A^pi(x, pi_plus) = sum_y pi_plus(y|x) A^pi(x, y), shape [n_dec]."""
    return np.einsum("sa,sa->s", pi_plus, ev.A)


def pdl_rhs(mdp: LayeredMDP, ev_old: Evaluation, pi_new: NDArray[np.floating]) -> float:
    """Performance-difference lemma, right side: sum_h E_{x_h ~ pi_new} E_{y ~ pi_new} A^pi(x_h, y).

    Equals eta(pi_new) - eta(pi) exactly (Kakade & Langford 2002).
    """
    pi_new = mdp.check_policy(pi_new)
    reach_new = reach_probs(mdp, pi_new)
    return float(reach_new @ policy_advantage(ev_old, pi_new))


def layer_mass(mdp: LayeredMDP, ev: Evaluation, w: F) -> F:
    """u_t = E_pi[w(x_t)] for t = 1..H (soft membership of the update set per step), shape [H]."""
    return np.array([float(ev.reach[mdp.layer_slice(h)] @ w[mdp.layer_slice(h)]) for h in range(mdp.horizon)])
