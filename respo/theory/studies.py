"""Experiment functions behind the theory figures: pure, seeded, sized by explicit arguments.

Each function returns a dict of numpy arrays (and floats), does no I/O and makes no plots; the
notebooks in ``notebooks/`` call them and draw. Default sizes are "full" (a minute or two on
one core at most); tests and smoke runs pass smaller sizes.

- ``improvement_vs_p``: exact CPI-RR vs CPI-CARO per-iteration improvement over a coverage
  sweep (>= 2 decades), with the step rule, the bound lines and fitted log-log slopes.
- ``samples_vs_p``: Q-rollouts needed for a fixed accuracy (defined in its docstring), sample mode.
- ``beta_gamma_grid``: the approximate sampler's exact improvement and bound over (beta, gamma).
- ``learning_curves``: eta over iterations and over Q-rollouts for none / rr / caro / approx.
- ``bridge_curves``: the softmax-policy bridge (shared buffer/advantage code), grpo / rrpo /
  srpo-noisy / oracle, mean and standard error over seeds.
- ``fit_loglog_slope``: least-squares slope of log y on log x with a t confidence interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from respo.seeding import rng_for
from respo.theory import bounds
from respo.theory.cpi import exact_cpi_step, run_cpi, sample_cpi_step
from respo.theory.exact import coverage, evaluate, improvable_set
from respo.theory.mdp import coverage_chain, coverage_chain_policy, reasoning_tree

F = NDArray[np.float64]


def fit_loglog_slope(x: NDArray[np.floating], y: NDArray[np.floating], *, level: float = 0.95) -> tuple[float, float, float]:
    """Slope of log(y) on log(x) (scipy.stats.linregress) and its two-sided t interval.

    Returns (slope, ci_low, ci_high) with ci = slope -/+ t_{(1+level)/2, n-2} * stderr. Needs
    >= 3 points with x, y > 0 (with 2 points the interval is undefined: raises ValueError).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"shape mismatch: x {x.shape} vs y {y.shape} (need equal 1-D)")
    if x.size < 3:
        raise ValueError(f"need at least 3 points for a slope with a confidence interval, got {x.size}")
    if np.any(x <= 0) or np.any(y <= 0) or not np.all(np.isfinite(x * y)):
        raise ValueError("log-log fit needs finite x > 0 and y > 0")
    res = stats.linregress(np.log(x), np.log(y))
    t = stats.t.ppf(0.5 + level / 2.0, x.size - 2)
    half = float(t * res.stderr)
    return float(res.slope), float(res.slope) - half, float(res.slope) + half


def _q_grid(p_decades: float, n_points: int, q_max: float) -> F:
    if p_decades < 2:
        raise ValueError(f"the sweep must span at least two decades, got p_decades={p_decades}")
    if n_points < 3:
        raise ValueError(f"n_points must be >= 3, got {n_points}")
    return q_max * np.logspace(-p_decades, 0.0, n_points)


def improvement_vs_p(
    *,
    H: int = 6,
    tau: float = 0.1,
    p_decades: float = 3.0,
    n_points: int = 13,
    q_max: float = 1.0,
    eps: float = 0.4,
    p_recover: float = 0.3,
    easy_gap: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Exact per-iteration improvement of CPI-RR and CPI-CARO against the coverage p_pi.

    Family: ``coverage_chain(H, q)`` with the initial policy ``coverage_chain_policy(eps,
    p_recover)``; q runs over ``n_points`` log-spaced values in [q_max 10^-p_decades, q_max], so
    p = d^pi(G_tau) spans the same decades (p is exactly proportional to q in this family). One
    exact-advantage step per q, step rule alpha* = Abar_U / (2 R (H - 1)) (c = 1).

    Returns arrays over the sweep: ``q``, ``p``, ``rr_improvement``, ``caro_improvement``,
    ``rr_alpha``, ``caro_alpha``, ``rr_bound`` / ``caro_bound`` (the conservative bound at the
    step taken), ``rr_guarantee`` / ``caro_guarantee`` (H tau^2 p^2 / (4R(H-1)) and
    H tau^2 p / (4R(H-1))), and the fitted slopes ``rr_slope`` / ``caro_slope`` as
    (slope, ci_low, ci_high). ``seed`` is accepted for a uniform signature (the family is
    deterministic). ``easy_gap`` > 0 adds sub-threshold advantage off G_tau (see
    ``coverage_chain``): then RR's improvement stops falling like p^2 and RR overtakes CARO at
    small p: CARO is not always the better method (docs/theory.md, "Caveats").
    """
    del seed
    qs = _q_grid(p_decades, n_points, q_max)
    keys = ("p", "rr_improvement", "caro_improvement", "rr_alpha", "caro_alpha",
            "rr_bound", "caro_bound", "rr_guarantee", "caro_guarantee")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for q in qs:
        mdp = coverage_chain(H, float(q), easy_gap=easy_gap)
        pi = coverage_chain_policy(mdp, eps=eps, p_recover=p_recover)
        ev = evaluate(mdp, pi)
        p = coverage(ev, tau)
        if p <= 0:
            raise ValueError(f"no tau-improvable state at q={q:.3g}; lower tau (={tau})")
        rr = exact_cpi_step(mdp, pi, "rr", tau=tau, ev=ev)
        caro = exact_cpi_step(mdp, pi, "caro", tau=tau, ev=ev)
        out["p"].append(p)
        out["rr_improvement"].append(rr.improvement)
        out["caro_improvement"].append(caro.improvement)
        out["rr_alpha"].append(rr.alpha)
        out["caro_alpha"].append(caro.alpha)
        out["rr_bound"].append(rr.bound)
        out["caro_bound"].append(caro.bound)
        out["rr_guarantee"].append(bounds.rr_guarantee(tau, p, H, mdp.r_max))
        out["caro_guarantee"].append(bounds.caro_guarantee(tau, p, H, mdp.r_max))
    res: dict[str, Any] = {k: np.array(v) for k, v in out.items()}
    res["q"] = qs
    res["rr_slope"] = fit_loglog_slope(res["p"], res["rr_improvement"])
    res["caro_slope"] = fit_loglog_slope(res["p"], res["caro_improvement"])
    res["tau"] = tau
    res["H"] = H
    return res


def _bisect_grid(grid: F, ok: Any) -> float:
    """Smallest grid value g with ok(g) True, assuming ok is monotone in g; NaN if none."""
    lo, hi = 0, len(grid) - 1
    if not ok(grid[hi]):
        return float("nan")
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(grid[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(grid[lo])


def samples_vs_p(
    *,
    H: int = 6,
    tau: float = 0.1,
    p_decades: float = 2.0,
    n_points: int = 5,
    q_max: float = 1.0,
    eps: float = 0.4,
    p_recover: float = 0.3,
    accuracy: float = 0.5,
    confidence: float = 0.8,
    n_rep: int = 200,
    m_min: int = 4,
    m_max: int = 2**32,
    grid_factor: float = 2**0.25,
    methods: tuple[str, ...] = ("rr", "caro"),
    seed: int = 0,
) -> dict[str, Any]:
    """Q-rollouts per CPI iteration needed for a fixed accuracy, against the coverage p_pi.

    "Fixed accuracy" (the definition every test and figure uses): one sample-based CPI step
    (``cpi.sample_cpi_step``: split halves of m reset states, one Q-rollout per action per state,
    c = 2, eps = 0) is *accurate* if its exact improvement Delta_hat satisfies
    |Delta_hat - Delta_ref| <= accuracy * Delta_ref, where Delta_ref is the improvement of the
    exact-advantage step of the same method with the same rule (exact greedy pi', exact
    Abar_U, c = 2). N(p) is the smallest n = 2 m |Y| on the geometric grid m = m_min *
    grid_factor^k (<= m_max) at which at least ``confidence`` of ``n_rep`` independent steps are
    accurate (found by bisection, assuming the success rate grows with m). NaN if not reached.

    Family: ``coverage_chain`` as in ``improvement_vs_p`` (non-improvable states are coin flips,
    so RR's slope should be about -2; CARO's about 0). Returns ``q``, ``p``, ``{method}_samples``
    [n_points], ``{method}_slope`` (slope, ci_low, ci_high) when all points are finite, and
    ``{method}_ref`` (Delta_ref per point).
    """
    if not 0 < accuracy < 1 or not 0 < confidence < 1:
        raise ValueError(f"accuracy and confidence must lie in (0, 1), got {accuracy}, {confidence}")
    qs = _q_grid(p_decades, n_points, q_max)
    n_grid = int(np.floor(np.log(m_max / m_min) / np.log(grid_factor))) + 1
    grid = np.unique(np.round(m_min * grid_factor ** np.arange(n_grid)).astype(np.int64)).astype(np.float64)
    res: dict[str, Any] = {"q": qs, "p": np.zeros(len(qs))}
    for meth in methods:
        res[f"{meth}_samples"] = np.full(len(qs), np.nan)
        res[f"{meth}_ref"] = np.zeros(len(qs))
    for i, q in enumerate(qs):
        mdp = coverage_chain(H, float(q))
        pi = coverage_chain_policy(mdp, eps=eps, p_recover=p_recover)
        ev = evaluate(mdp, pi)
        res["p"][i] = coverage(ev, tau)
        for meth in methods:
            ref = exact_cpi_step(mdp, pi, meth, tau=tau, c=2.0, ev=ev).improvement
            res[f"{meth}_ref"][i] = ref
            if ref <= 0:
                continue

            def ok(m: float, meth: str = meth, ref: float = ref, i: int = i,
                   mdp: Any = mdp, pi: F = pi, ev: Any = ev) -> bool:
                rng = rng_for(seed, "eval", meth, i, int(m))
                hits = 0
                for _ in range(n_rep):
                    st = sample_cpi_step(mdp, pi, meth, tau=tau, m=int(m), rng=rng, c=2.0, ev=ev)
                    hits += abs(st.improvement - ref) <= accuracy * ref
                return hits >= confidence * n_rep

            m_star = _bisect_grid(grid, ok)
            res[f"{meth}_samples"][i] = 2.0 * m_star * mdp.n_actions
    for meth in methods:
        y = res[f"{meth}_samples"]
        if np.all(np.isfinite(y)):
            res[f"{meth}_slope"] = fit_loglog_slope(res["p"], y)
    res["tau"] = tau
    res["H"] = H
    return res


def _family(family: str, *, H: int, n_actions: int, q: float, seed: int,
            eps: float = 0.4, p_recover: float = 0.3) -> tuple[Any, F]:
    if family == "chain":
        mdp = coverage_chain(H, q)
        return mdp, coverage_chain_policy(mdp, eps=eps, p_recover=p_recover)
    if family == "tree":
        mdp, _ = reasoning_tree(rng_for(seed, "mdp"), H, n_actions, q=q)
        return mdp, mdp.uniform_policy()
    raise ValueError(f"unknown family {family!r}; valid: chain, tree")


def beta_gamma_grid(
    *,
    family: str = "chain",
    H: int = 6,
    n_actions: int = 3,
    q: float = 0.5,
    tau: float = 0.1,
    betas: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8),
    gammas: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Exact approximate-sampler step over a (beta, gamma) grid, with its bound and guarantee.

    At each grid point the selection weights have false-discovery rate beta and recall gamma
    exactly (``cpi.approx_selection``); the step uses the rule on U = S (c = 1). Returns
    [len(betas), len(gammas)] arrays ``improvement``, ``bound`` (conservative bound at the step),
    ``guarantee`` ((1 - beta) gamma H tau^2 p / (4R(H-1))), ``beta_measured``,
    ``gamma_measured`` (NaN where the pair is infeasible), and ``caro_improvement``, ``p``.
    """
    mdp, pi = _family(family, H=H, n_actions=n_actions, q=q, seed=seed)
    ev = evaluate(mdp, pi)
    G = improvable_set(ev, tau)
    p = float(ev.d[G].sum())
    shape = (len(betas), len(gammas))
    imp, bnd, gua, bm, gm = (np.full(shape, np.nan) for _ in range(5))
    from respo.theory.cpi import selection_quality
    for i, b in enumerate(betas):
        for j, g in enumerate(gammas):
            try:
                st = exact_cpi_step(mdp, pi, "approx", tau=tau, beta=b, gamma=g, ev=ev)
            except ValueError as e:
                if "infeasible" in str(e):
                    continue
                raise
            imp[i, j] = st.improvement
            bnd[i, j] = st.bound
            gua[i, j] = bounds.approx_guarantee(tau, p, b, g, H, mdp.r_max)
            bm[i, j], gm[i, j] = selection_quality(ev.d, G, st.w)
    caro = exact_cpi_step(mdp, pi, "caro", tau=tau, ev=ev).improvement
    return {"betas": np.array(betas), "gammas": np.array(gammas), "improvement": imp, "bound": bnd,
            "guarantee": gua, "beta_measured": bm, "gamma_measured": gm,
            "caro_improvement": caro, "p": p, "tau": tau, "H": H}


LEARNING_METHODS: tuple[str, ...] = ("none", "rr", "caro", "approx")


def learning_curves(
    *,
    family: str = "tree",
    H: int = 6,
    n_actions: int = 3,
    q: float = 0.3,
    tau: float = 0.05,
    n_iters: int = 40,
    m: int = 2000,
    n_seeds: int = 4,
    beta: float = 0.3,
    gamma: float = 0.7,
    seed: int = 0,
) -> dict[str, Any]:
    """eta over CPI iterations and over Q-rollouts, for no-reset, RR, CARO and the approximate sampler.

    Exact mode (c = 1, exact advantages) and sample mode (``sample_cpi_step`` with m reset states
    per half, c = 2), the latter over ``n_seeds`` seeds. Returns, for each method in
    ``methods``: ``exact_eta[k]`` [n_iters+1], ``sample_eta_mean[k]``, ``sample_eta_se[k]``
    [n_iters+1] and ``sample_rollouts[k]`` (cumulative Q-rollouts) [n_iters+1]; also
    ``exact_p[k]`` (coverage of each iterate).
    """
    mdp, pi0 = _family(family, H=H, n_actions=n_actions, q=q, seed=seed)
    k = len(LEARNING_METHODS)
    ex_eta = np.zeros((k, n_iters + 1))
    ex_p = np.zeros((k, n_iters + 1))
    s_mean = np.zeros((k, n_iters + 1))
    s_se = np.zeros((k, n_iters + 1))
    s_roll = np.zeros((k, n_iters + 1))
    for i, meth in enumerate(LEARNING_METHODS):
        r = run_cpi(mdp, pi0, meth, tau=tau, n_iters=n_iters, beta=beta, gamma=gamma)
        ex_eta[i], ex_p[i] = r["eta"], r["p"]
        runs = [run_cpi(mdp, pi0, meth, tau=tau, n_iters=n_iters, mode="sample", m=m,
                        rng=rng_for(seed, "train", meth, s), beta=beta, gamma=gamma)
                for s in range(n_seeds)]
        etas = np.array([x["eta"] for x in runs])
        s_mean[i] = etas.mean(0)
        s_se[i] = etas.std(0, ddof=1) / np.sqrt(n_seeds) if n_seeds > 1 else 0.0
        s_roll[i] = runs[0]["samples"]
    return {"methods": LEARNING_METHODS, "iters": np.arange(n_iters + 1), "exact_eta": ex_eta,
            "exact_p": ex_p, "sample_eta_mean": s_mean, "sample_eta_se": s_se,
            "sample_rollouts": s_roll, "tau": tau, "m": m}


BRIDGE_VARIANTS: tuple[str, ...] = ("grpo", "rrpo", "srpo", "oracle")


def bridge_curves(
    *,
    family: str = "tree",
    H: int = 6,
    n_actions: int = 3,
    q: float = 0.3,
    tau: float = 0.05,
    n_iters: int = 40,
    n_prompts: int = 8,
    lr: float = 2.0,
    n_seeds: int = 4,
    beta: float = 0.2,
    gamma: float = 0.6,
    pairing: str = "matched",
    seed: int = 0,
) -> dict[str, Any]:
    """Softmax-policy bridge curves (``softmax.train_softmax``) for grpo / rrpo / srpo-noisy / oracle.

    One ``reasoning_tree`` MDP (keyed by ``seed``; ``family="chain"``: ``coverage_chain(H, q)``
    with its initial policy as logits), a uniform initial policy, ``n_seeds``
    training seeds (common random numbers across variants). srpo uses a
    ``NoisyOracleLocalizer(beta, gamma)``. Returns [4, n_iters+1] arrays ``eta_mean``,
    ``eta_se``, ``samples_mean`` (cumulative chains generated), ``p_mean``, in the order of
    ``variants``.
    """
    from respo.theory.softmax import train_softmax

    mdp, pi0 = _family(family, H=H, n_actions=n_actions, q=q, seed=seed)
    theta0 = np.log(np.maximum(pi0, 1e-12))
    k = len(BRIDGE_VARIANTS)
    out = {key: np.zeros((k, n_iters + 1)) for key in ("eta_mean", "eta_se", "samples_mean", "p_mean")}
    for i, v in enumerate(BRIDGE_VARIANTS):
        runs = [train_softmax(mdp, v, tau=tau, n_iters=n_iters, n_prompts=n_prompts, lr=lr,
                              seed=seed * 1000 + s, beta=beta, gamma=gamma, pairing=pairing,
                              theta0=theta0)
                for s in range(n_seeds)]
        etas = np.array([r["eta"] for r in runs])
        out["eta_mean"][i] = etas.mean(0)
        out["eta_se"][i] = etas.std(0, ddof=1) / np.sqrt(n_seeds) if n_seeds > 1 else 0.0
        out["samples_mean"][i] = np.mean([r["samples"] for r in runs], axis=0)
        out["p_mean"][i] = np.mean([r["p"] for r in runs], axis=0)
    res: dict[str, Any] = dict(out)
    res.update(variants=BRIDGE_VARIANTS, iters=np.arange(n_iters + 1), tau=tau, beta=beta, gamma=gamma,
               family=family)
    return res
