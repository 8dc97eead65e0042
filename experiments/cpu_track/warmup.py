"""Supervised warm-up of the CPU synthetic track: train (or load) the starting policy for RL.

Trains the ~1M-parameter character Llama of ``docs/cpu-track.md`` on arithmetic chains with 15%
injected errors (``respo.llm.sft``), caches it under ``<cache-dir>/sft-<key>`` (reused when
present) and evaluates it on held-out problems from another generator seed: greedy pass@1,
sampled pass@1 at T = 1 (the probe's figure in ``docs/cpu-track.md``) and at the RL rollout setting (T = 0.7, top-p
0.95), per-line error rate and first-error distribution. Prints the metrics and writes them to
``<out>/warmup-<key>.json``.

    python experiments/cpu_track/warmup.py --steps 600 --snapshots 400 450 500
    python experiments/cpu_track/warmup.py --recipe sft-warmup-hard --snapshots 400 500   # coverage testbed

The RL trainer loads the printed folder with ``--model.name <path>`` (plain transformers folder).
"""

from __future__ import annotations

# -- config --------------------------------------------------------------------------------------
import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from respo.llm.sft import (
    RECIPES,
    WARMUP_EVAL,
    checkpoint_path,
    evaluate_policy,
    load_warmup,
    warmup_checkpoint,
)
from respo.tasks.synthetic import ArithmeticTask, generate_problems

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--recipe", default="sft-warmup", choices=sorted(RECIPES),
                help="named warm-up (respo.llm.sft.RECIPES); the flags below override its fields")
ap.add_argument("--steps", type=int, default=None, help="SFT optimizer steps")
ap.add_argument("--schedule-steps", type=int, default=None, help="cosine length (default: --steps)")
ap.add_argument("--batch-size", type=int, default=None)
ap.add_argument("--lr", type=float, default=None)
ap.add_argument("--error-frac", type=float, default=None)
ap.add_argument("--prompt-variant", default=None, choices=("paper", "small", "bare"))
ap.add_argument("--seed", type=int, default=None, help="SFT seed (init, data)")
ap.add_argument("--hidden", type=int, default=None)
ap.add_argument("--layers", type=int, default=None)
ap.add_argument("--snapshots", type=int, nargs="*", default=[],
                help="also cache (and evaluate) the model after these steps of the same run")
ap.add_argument("--eval-problems", type=int, default=512, help="held-out problems")
ap.add_argument("--eval-seed", type=int, default=1000, help="generator seed of the held-out problems")
ap.add_argument("--eval-samples", type=int, default=2, help="sampled chains per problem")
ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
ap.add_argument("--cache-dir", default="runs/cpu_track/sft-cache")
ap.add_argument("--out", default="runs/cpu_track")
args = ap.parse_args()

torch.set_num_threads(args.threads)
over = {k: getattr(args, k) for k in ("steps", "schedule_steps", "batch_size", "lr", "error_frac",
                                       "prompt_variant", "seed", "hidden", "layers")
        if getattr(args, k) is not None}
cfg = dataclasses.replace(RECIPES[args.recipe], **over)
task = ArithmeticTask(cfg.spec, reward_mode="answer")  # the RL trainer's "arithmetic" task
held_out = generate_problems(cfg.spec, args.eval_problems, seed=args.eval_seed, split="eval")
print(f"config key {cfg.key()}: {json.dumps(cfg.to_dict())}")


# -- evaluation ----------------------------------------------------------------------------------
limits = dataclasses.replace(WARMUP_EVAL, prompt_variant=cfg.prompt_variant, delimiter=cfg.delimiter)  # as trained


def evaluate(model, tok) -> dict:
    t0 = time.time()
    out = {
        "T1": evaluate_policy(model, tok, held_out, task, n_samples=args.eval_samples, seed=args.eval_seed,
                              sampling=limits),
        "T0.7": evaluate_policy(model, tok, held_out, task, n_samples=args.eval_samples, seed=args.eval_seed,
                                sampling=dataclasses.replace(limits, temperature=0.7, top_p=0.95)),
    }
    out["eval_wall_s"] = time.time() - t0
    s = out["T1"]
    tqdm.write(f"  eval: greedy {s['greedy_pass@1']:.3f}  sampled T=1 {s['sampled_pass@1']:.3f}  "
               f"T=0.7 {out['T0.7']['sampled_pass@1']:.3f}  step error T=1 {s['step_error']:.3f}  "
               f"({out['eval_wall_s']:.0f} s)")
    return out


# -- train or load -------------------------------------------------------------------------------
path = checkpoint_path(cfg, args.cache_dir)
cached = (path / "sft.json").is_file()
bar = tqdm(total=cfg.steps, desc="sft", disable=cached)
t0 = time.time()


def progress(row: dict) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}")


path = warmup_checkpoint(cfg, args.cache_dir, progress=progress, evaluate=evaluate,
                         snapshot_steps=args.snapshots)
bar.close()
wall = time.time() - t0
model, tok, info = load_warmup(path)

# -- report --------------------------------------------------------------------------------------
overlap = 0
if not cached:
    from respo.tasks.synthetic import generate_problems as gp

    train_q = {p.question for p in gp(cfg.spec, cfg.steps * cfg.batch_size, seed=cfg.seed, split="sft")}
    overlap = sum(p.question in train_q for p in held_out)
report = {"path": str(path), "cached": cached, "wall_s": wall, "params": sum(p.numel() for p in model.parameters()),
          "held_out_in_train": overlap, "final_loss": info["history"][-1]["loss"], "metrics": info["metrics"],
          "snapshots": {}}
for k in args.snapshots:
    sp = checkpoint_path(dataclasses.replace(cfg, steps=k, schedule_steps=cfg.total_schedule), args.cache_dir)
    if (sp / "sft.json").is_file():
        sinfo = json.loads((sp / "sft.json").read_text())
        report["snapshots"][str(k)] = {"path": str(sp), "metrics": sinfo["metrics"],
                                       "loss": sinfo["history"][-1]["loss"]}
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / f"warmup-{cfg.key()}.json").write_text(json.dumps(report, indent=1))
print(json.dumps({k: v for k, v in report.items() if k != "snapshots"}, indent=1))
for k, v in report["snapshots"].items():
    m = v["metrics"]["T1"]
    print(f"snapshot {k}: greedy {m['greedy_pass@1']:.3f} sampled T=1 {m['sampled_pass@1']:.3f} "
          f"T=0.7 {v['metrics']['T0.7']['sampled_pass@1']:.3f} -> {v['path']}")
print(f"checkpoint: {path}  (wall {wall:.0f} s)")
