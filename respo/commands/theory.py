"""``respo theory``: the Theorem 1 rates as fitted slopes, printed (no figures, no notebook).

Runs ``respo.theory.studies.improvement_vs_p`` (exact CPI steps with the conservative step
rule) and ``samples_vs_p`` (Q-rollouts needed for a fixed accuracy) on the coverage chain and
prints the log-log slopes vs p_pi with 95% intervals, beside the theorem's predictions
(improvement: RR 2, CARO 1; samples: RR -2, CARO 0). ``respo figures`` draws the same sweeps.
"""

from __future__ import annotations

import argparse
import json
import time

SIZES = {
    "small": {"imp": {"p_decades": 2.0, "n_points": 5}, "smp": {"p_decades": 2.0, "n_points": 4, "n_rep": 60}},
    "full": {"imp": {"p_decades": 3.0, "n_points": 13}, "smp": {"p_decades": 3.0, "n_points": 7, "n_rep": 200,
                                                               "m_max": 2**40}},
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="respo theory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(SIZES), default="small",
                        help="small: seconds; full: the sweep of paper_figures/theory_rates (about 10 s)")
    parser.add_argument("--seed", type=int, default=0, help="root seed of the Monte Carlo sweep")
    parser.add_argument("--json", action="store_true", help="print the slopes as one JSON object")
    args = parser.parse_args(argv)

    from respo.theory.studies import improvement_vs_p, samples_vs_p

    t0 = time.perf_counter()
    size = SIZES[args.size]
    imp = improvement_vs_p(**size["imp"])
    smp = samples_vs_p(**size["smp"], seed=args.seed)
    rows = [
        ("improvement per iteration, CPI-RR", imp["rr_slope"], 2.0),
        ("improvement per iteration, CPI-CARO", imp["caro_slope"], 1.0),
        ("Q-rollouts for fixed accuracy, CPI-RR", smp.get("rr_slope"), -2.0),
        ("Q-rollouts for fixed accuracy, CPI-CARO", smp.get("caro_slope"), 0.0),
    ]
    p = imp["p"]
    if args.json:
        print(json.dumps({name: {"slope": s and list(map(float, s)), "theorem": th} for name, s, th in rows}))
        return 0
    print(f"coverage chain H={int(imp['H'])}, tau={float(imp['tau'])}, p_pi from {p.min():.2g} to {p.max():.2g}")
    for name, s, th in rows:
        got = "not reached in the sample budget" if s is None else f"{s[0]:+.3f} [{s[1]:+.3f}, {s[2]:+.3f}]"
        print(f"  {name:<42} slope {got}   (theorem {th:+.0f})")
    print(f"[respo theory] {time.perf_counter() - t0:.1f} s")
    return 0
