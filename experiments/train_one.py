"""Train one variant top to bottom: config -> build -> loop -> save (the script form of `respo train`).

    .venv/bin/python experiments/train_one.py --smoke                    # tiny-smoke preset, 2 steps
    .venv/bin/python experiments/train_one.py --preset cpu-synthetic --variant grpo --seed 0

Everything here is also reachable as `respo train --preset NAME [overrides]`; this file shows the
whole path in one screen. Outputs: runs/<name>/{config.json, metrics.jsonl, checkpoints/}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from respo.presets import PRESETS, get_preset

# -- config -------------------------------------------------------------------------------------
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--preset", default="tiny-smoke", help=f"one of: {', '.join(PRESETS)}")
ap.add_argument("--smoke", action="store_true", help="tiny-smoke preset, 2 steps, in a temp run dir")
ap.add_argument("--variant", help="override the preset's variant (grpo, rrpo, srpo, ...)")
ap.add_argument("--seed", type=int, help="override the seed")
ap.add_argument("--steps", type=int, help="override the number of steps")
ap.add_argument("--runs-dir", default="runs")
ap.add_argument("--resume", action="store_true")
args = ap.parse_args()

cfg = get_preset("tiny-smoke" if args.smoke else args.preset)
overrides = {k: v for k, v in (("variant", args.variant), ("seed", args.seed), ("steps", args.steps))
             if v is not None}
cfg = dataclasses.replace(cfg, **overrides)
runs_dir = Path(args.runs_dir)
if args.smoke:
    import tempfile

    runs_dir = Path(tempfile.mkdtemp(prefix="respo-smoke-"))
run_dir = runs_dir / cfg.name
print(f"run {cfg.name}: variant {cfg.variant}, objective {cfg.objective}, -> {run_dir}")

# -- build --------------------------------------------------------------------------------------
from transformers.utils import logging as hf_logging  # noqa: E402

from respo.llm.train_parts import build_parts  # noqa: E402
from respo.llm.trainer import make_accelerator, train  # noqa: E402

hf_logging.disable_progress_bar()
acc = make_accelerator()
parts = build_parts(cfg, device=acc.device)

# -- loop (the loop writes metrics.jsonl and checkpoints into run_dir) --------------------------
t0 = time.perf_counter()
for row in train(cfg, parts, run_dir=run_dir, resume=args.resume, accelerator=acc):
    if acc.is_main_process:
        print(f"step {row['step']:3d}  reward {row['reward/trained_mean']:.3f}  "
              f"g2 pass {row['g2/pass_rate']:.3f}  loss {row['loss/loss']:+.4f}  "
              f"resets {row['reset/count']:.0f} (fallback {row['reset/fallback_frac']:.2f})  "
              f"{row['time/step']:.1f}s")

# -- save (the last checkpoint is already written; say where) -----------------------------------
if acc.is_main_process:
    print(f"done in {time.perf_counter() - t0:.1f}s: {run_dir}/metrics.jsonl, {run_dir}/checkpoints/")
