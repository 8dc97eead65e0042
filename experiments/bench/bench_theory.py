"""Speed of the tabular simulator: exact evaluation + one exact CPI iteration on a >= 10^6-state tree.

Times, on one core, the vectorised ``respo.theory`` path (V, Q, A, visitation d^pi, G_tau, p_pi,
then one exact CPI-CARO iteration: greedy pi', update weights, step rule, mixture update) against
a straightforward reference solver with per-state Python loops on the *same* MDP, checks that
both give the same numbers, and prints the times and their ratio. Also times pymdptoolbox's
``FiniteHorizon`` (optimal values only) on the same MDP, next to our V* backward induction.

    .venv/bin/python experiments/bench/bench_theory.py            # H = 20, A = 2: 2.1e6 states
    .venv/bin/python experiments/bench/bench_theory.py --H 14     # quick
"""

from __future__ import annotations

import argparse
import os
import time

# One core: keep BLAS/OpenMP single-threaded (set before numpy is imported).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from respo.seeding import rng_for  # noqa: E402
from respo.theory import bounds  # noqa: E402
from respo.theory.cpi import cpi_update, update_weights  # noqa: E402
from respo.theory.exact import (  # noqa: E402
    evaluate,
    greedy,
    improvable_set,
    one_hot,
    policy_advantage,
    q_from_v,
)
from respo.theory.mdp import LayeredMDP, random_tree_mdp  # noqa: E402


def vectorised(mdp: LayeredMDP, pi: np.ndarray, tau: float) -> dict[str, object]:
    """Exact evaluation + one exact CPI-CARO iteration, the library path."""
    ev = evaluate(mdp, pi)
    G = improvable_set(ev, tau)
    p = float(ev.d[G].sum())
    w = update_weights(mdp, ev, "caro", tau=tau)
    pi_plus = one_hot(greedy(ev), mdp.n_actions)
    A_U = float(ev.d @ (w * policy_advantage(ev, pi_plus)))
    p_U = float(ev.d @ w)
    alpha = bounds.optimal_step(A_U / p_U if p_U > 0 else 0.0, mdp.horizon, mdp.r_max)
    pi_new = cpi_update(pi, pi_plus, alpha, w)
    return {"V": ev.V, "A": ev.A, "d": ev.d, "p": p, "alpha": alpha, "pi_new": pi_new, "eta": ev.eta}


def reference(mdp: LayeredMDP, pi: np.ndarray, tau: float) -> dict[str, object]:
    """The same computation with per-state Python loops (no vectorisation)."""
    n_dec, n_states, A, H = mdp.n_dec, mdp.n_states, mdp.n_actions, mdp.horizon
    succ = mdp.succ.tolist()
    prob = mdp.prob.tolist()
    pil = pi.tolist()
    K = mdp.succ.shape[2]
    V = [0.0] * n_states
    for z in range(n_dec, n_states):
        V[z] = float(mdp.reward[z - n_dec])
    Q = [[0.0] * A for _ in range(n_dec)]
    for s in range(n_dec - 1, -1, -1):  # breadth-first ids: children have larger ids
        row = Q[s]
        v = 0.0
        for a in range(A):
            q = 0.0
            for k in range(K):
                q += prob[s][a][k] * V[succ[s][a][k]]
            row[a] = q
            v += pil[s][a] * q
        V[s] = v
    reach = [0.0] * n_states
    reach[0] = 1.0
    for s in range(n_dec):
        r = reach[s]
        for a in range(A):
            for k in range(K):
                reach[succ[s][a][k]] += r * pil[s][a] * prob[s][a][k]
    Adv = [[Q[s][a] - V[s] for a in range(A)] for s in range(n_dec)]
    d = [reach[s] / H for s in range(n_dec)]
    p = 0.0
    A_U = 0.0
    best = [0] * n_dec
    inG = [False] * n_dec
    for s in range(n_dec):
        b = max(range(A), key=lambda a, s=s: Adv[s][a])
        best[s] = b
        if Adv[s][b] >= tau:
            inG[s] = True
            p += d[s]
            A_U += d[s] * Adv[s][b]
    alpha = bounds.optimal_step(A_U / p if p > 0 else 0.0, H, mdp.r_max)
    pi_new = [list(row) for row in pil]
    for s in range(n_dec):
        if inG[s]:
            for a in range(A):
                pi_new[s][a] = (1 - alpha) * pil[s][a] + alpha * (1.0 if a == best[s] else 0.0)
    return {"V": np.array(V), "A": np.array(Adv), "d": np.array(d), "p": p, "alpha": alpha,
            "pi_new": np.array(pi_new), "eta": V[0]}


def optimal_values(mdp: LayeredMDP) -> np.ndarray:
    """V* by vectorised backward induction (for the pymdptoolbox comparison)."""
    V = np.empty(mdp.n_states)
    V[mdp.n_dec:] = mdp.reward
    for h in range(mdp.horizon - 1, -1, -1):
        sl = mdp.layer_slice(h)
        V[sl] = q_from_v(mdp, V, sl).max(axis=1)
    return V


def mdptoolbox_reference(mdp: LayeredMDP) -> tuple[float, float]:
    """pymdptoolbox's FiniteHorizon (optimal values V*, N = H stages) on the same tree.

    The tree becomes a stationary MDP over all states (terminal states self-loop, the reward is
    paid on entering a leaf), with sparse P[a]. pymdptoolbox's input check builds a dense S x S
    array (32 TiB here), so it is switched off. Returns (seconds for construction + run, V*(start)).
    Note: a different computation from ours (V*, not V^pi + d^pi + a CPI step), each stage sweeping
    all S states.
    """
    import warnings

    import scipy.sparse as sp
    from mdptoolbox import mdp as tb

    S, A, n_dec = mdp.n_states, mdp.n_actions, mdp.n_dec
    if mdp.succ.shape[2] != 1:
        raise ValueError("the pymdptoolbox comparison is written for trees (K = 1)")
    child = np.empty((S, A), dtype=np.int64)
    child[:n_dec] = mdp.succ[:, :, 0]
    child[n_dec:] = np.arange(n_dec, S)[:, None]
    P = [sp.csr_matrix((np.ones(S), (np.arange(S), child[:, a])), shape=(S, S)) for a in range(A)]
    R = np.zeros((S, A))
    leaf = child >= n_dec
    leaf[n_dec:] = False
    R[leaf] = mdp.reward[child[leaf] - n_dec]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb._util.check = lambda P, R: None  # dense S x S check: impossible at this size
        fh = tb.FiniteHorizon(P, R, 1.0, N=mdp.horizon)
        fh.run()
    return time.perf_counter() - t0, float(fh.V[0, 0])


def run(H: int = 20, A: int = 2, tau: float = 0.05, repeats: int = 3, ref: bool = True,
        toolbox: bool = True, seed: int = 0) -> dict[str, float]:
    """Build the tree, time both paths, compare outputs; returns the timings (seconds)."""
    t0 = time.perf_counter()
    mdp = random_tree_mdp(rng_for(seed, "mdp"), H, A)
    pi = rng_for(seed, "init").dirichlet(np.ones(A), size=mdp.n_dec)
    t_build = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = vectorised(mdp, pi, tau)
        times.append(time.perf_counter() - t0)
    t_vec = min(times)
    t0 = time.perf_counter()
    ev_new = evaluate(mdp, out["pi_new"])  # type: ignore[arg-type]
    t_next = time.perf_counter() - t0
    res = {"n_states": float(mdp.n_states), "n_dec": float(mdp.n_dec), "build_s": t_build,
           "vectorised_s": t_vec, "eval_new_s": t_next, "p": float(out["p"]),  # type: ignore[arg-type]
           "improvement": ev_new.eta - float(out["eta"])}  # type: ignore[arg-type]
    print(f"tree MDP: H={H}, A={A}, {mdp.n_states:,} states ({mdp.n_dec:,} decision), built in {t_build:.2f} s")
    print(f"vectorised: evaluation + G_tau + p + one exact CPI-CARO iteration: {t_vec:.3f} s "
          f"(best of {repeats}); evaluating the new policy: {t_next:.3f} s")
    print(f"  p_pi = {res['p']:.4g}, alpha = {out['alpha']:.4g}, improvement = {res['improvement']:.4g}")
    if ref:
        t0 = time.perf_counter()
        r = reference(mdp, pi, tau)
        t_ref = time.perf_counter() - t0
        diff = max(float(np.max(np.abs(np.asarray(out[k]) - np.asarray(r[k]))))
                   for k in ("V", "A", "d", "pi_new"))
        diff = max(diff, abs(float(out["p"]) - float(r["p"])), abs(float(out["alpha"]) - float(r["alpha"])))  # type: ignore[arg-type]
        res.update(reference_s=t_ref, ratio=t_ref / t_vec, max_abs_diff=diff)
        print(f"reference (per-state Python loops), same MDP: {t_ref:.2f} s")
        print(f"ratio reference / vectorised: {t_ref / t_vec:.1f}x; max |difference| of outputs: {diff:.2e}")
    if toolbox:
        t0 = time.perf_counter()
        v_ours = optimal_values(mdp)[0]
        t_ours = time.perf_counter() - t0
        t_tb, v_tb = mdptoolbox_reference(mdp)
        res.update(mdptoolbox_s=t_tb, vstar_vectorised_s=t_ours, vstar_diff=abs(v_tb - v_ours))
        print(f"pymdptoolbox FiniteHorizon (V*, N = H stages over all states), same MDP: {t_tb:.2f} s; "
              f"our V* backward induction: {t_ours:.3f} s; ratio {t_tb / t_ours:.1f}x; "
              f"|V*(start) difference| = {abs(v_tb - v_ours):.1e}")
        print(f"ratio pymdptoolbox V* / our full evaluation + CPI iteration: {t_tb / t_vec:.1f}x")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--H", type=int, default=20)
    ap.add_argument("--A", type=int, default=2)
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ref", action="store_true", help="skip the reference loops")
    ap.add_argument("--no-toolbox", action="store_true", help="skip the pymdptoolbox comparison")
    a = ap.parse_args()
    run(a.H, a.A, a.tau, a.repeats, not a.no_ref, not a.no_toolbox)


if __name__ == "__main__":
    main()
