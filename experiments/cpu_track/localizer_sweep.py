"""Calibrate SRPO's confidence self-localizer on the warm-up model against the true first error.

Samples chains of the CPU track's warm-up policy on *training* problems (never the held-out set),
keeps the failed ones, and for each threshold runs ``ConfidenceLocalizer`` (one teacher-forced
forward per chain; the reset is the first thought holding a token of probability below the
threshold). Reports, per threshold, beta (false-discovery rate), gamma (recall), the share at or
before the true error, the fallback rate and the theory's improvement factor (1 - beta) * gamma,
next to the uniform (RRPO) localizer's expected values.

    python experiments/cpu_track/localizer_sweep.py --problems 256 --thresholds 0.1 0.2 0.3 0.5 0.7

Writes ``experiments/results/cpu_track/localizer_sweep.json``.
"""

from __future__ import annotations

# -- config --------------------------------------------------------------------------------------
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from respo.commands.train import load_presets
from respo.llm.localize import ConfidenceLocalizer
from respo.llm.train_parts import build_parts
from respo.resets import localizer_quality
from respo.seeding import rng_for

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--problems", type=int, default=256, help="training problems to sample")
ap.add_argument("--samples", type=int, default=4, help="chains per problem")
ap.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", default="experiments/results/cpu_track/localizer_sweep.json")
args = ap.parse_args()
torch.set_num_threads(args.threads)

cfg = dataclasses.replace(load_presets().get_preset("cpu-synthetic"), variant="srpo",
                          train_problems=args.problems, seed=args.seed)
cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, every=0))
parts = build_parts(cfg)
sampler, model, judge = parts.sampler, parts.model, parts.judge
assert judge is not None

# -- sample ----------------------------------------------------------------------------------------
t0 = time.time()
chains = []
for c0 in range(0, args.problems, 64):
    reqs = [((parts.root(p),), args.samples, rng_for(args.seed, "sweep", c0 + i))
            for i, p in enumerate(parts.train_problems[c0:c0 + 64])]
    for group in sampler.extend_many(None, reqs):
        chains += group
failed = [c for c in chains if c.reward < 1.0]
truth = [judge(c) for c in failed]
print(f"{len(chains)} chains, pass rate {np.mean([c.reward for c in chains]):.3f}, "
      f"{len(failed)} failed, {sum(t is not None for t in truth)} with a known first error "
      f"({time.time() - t0:.0f} s)")
known = [(c, t) for c, t in zip(failed, truth, strict=True) if t is not None]

# -- sweep -----------------------------------------------------------------------------------------
rows = []
n = np.array([c.n_thoughts for c, _ in known])
t_arr = np.array([t for _, t in known])
uniform_gamma = float(np.mean(1.0 / n))
rows.append({"localizer": "uniform (RRPO, expected)", "threshold": None, "beta": 1 - uniform_gamma,
             "gamma": uniform_gamma, "at_or_before": float(np.mean(t_arr / n)), "fallback": 0.0,
             "factor": uniform_gamma * uniform_gamma})
for th in args.thresholds:
    loc = ConfidenceLocalizer(model, threshold=th, fallback_mode="step1")
    res = loc.locate_many(None, [(c, rng_for(args.seed, "loc", i)) for i, (c, _) in enumerate(known)])
    q = localizer_quality([r.step for r in res], [t for _, t in known])
    rows.append({"localizer": "confidence", "threshold": th, "beta": q["beta"], "gamma": q["gamma"],
                 "at_or_before": q["at_or_before"], "fallback": float(np.mean([r.fell_back for r in res])),
                 "factor": (1 - q["beta"]) * q["gamma"]})

print(f"{'localizer':<26} {'thr':>5} {'beta':>6} {'gamma':>6} {'<=true':>7} {'fallbk':>7} {'(1-b)g':>7}")
for r in rows:
    th = "" if r["threshold"] is None else f"{r['threshold']:.2f}"
    print(f"{r['localizer']:<26} {th:>5} {r['beta']:6.3f} {r['gamma']:6.3f} {r['at_or_before']:7.3f} "
          f"{r['fallback']:7.3f} {r['factor']:7.3f}")
out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"args": vars(args), "chains": len(chains), "failed": len(failed),
                           "known_first_error": len(known), "rows": rows}, indent=1) + "\n")
print(f"wrote {out}")
