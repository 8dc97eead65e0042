"""Benchmark: where a CPU-track RL step spends its time, and the speed-up of the coverage setup.

Runs the same warm-up model, task and variant under several trainer settings *interleaved* (each
setting is a live ``respo.llm.trainer.train`` generator; one step of each in turn, so all of them
see the same machine load) and prints the median seconds per step, split into rollout
(generation + localization), prep (the extra no-grad forwards for old log-probs), diagnostics
(per-token gradient magnitudes) and update (forward + backward + AdamW), then the ratios against
the first setting and the committed suite's. Also times one held-out evaluation of each evaluation setting.

Settings (on ``cpu-coverage``, which the coverage suites use):

- ``before``: as the first CPU track ran (``cpu-synthetic``): 4 optimizer steps per RL step
  (mini-batches of 4 prompts, so 3 of 4 mini-batches need an extra forward for their old
  log-probs), gradient diagnostics every step, fp32 update;
- ``1-opt``: one optimizer step per RL step, no per-step diagnostics, fp32 update;
- ``bf16``: ``1-opt`` with the update's forward and backward in bf16 (``update_dtype``);
- ``rest``: ``bf16`` with the reset variants' parent search in at most two rounds of generation
  (``reset_search="rest"``; the never-needed chains are reported as speculative tokens): the
  ``cpu-coverage`` preset as the committed coverage runs used it;
- ``eager``: ``rest`` with eager attention in the bf16 update (``update_attention``; the CPU
  flash-attention backward kernel of ``sdpa`` took half the update time at these shapes);
- ``block``: ``eager`` with the generation's key/value cache growing in blocks
  (``respo.llm.generation.block_cache``, the default of ``HFBackend``; every setting above runs
  with transformers' plain ``DynamicCache``): the ``cpu-coverage`` trainer now;
- ``bf16-gen``: ``block`` with generation in bf16 too (``dtype="bfloat16"``), for comparison.

Ratios are printed against ``before`` and against ``rest``; the evaluation is timed in fp32 and
under bf16 autocast.

    .venv/bin/python experiments/bench/bench_cpu_step.py --variants grpo srpo --steps 6
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from respo.llm.config import EvalConfig
from respo.llm.train_parts import build_parts
from respo.llm.trainer import train
from respo.presets import get_preset

PARTS = ("time/rollout", "time/prep", "time/diagnostics", "time/update")


def settings(base):  # name -> config
    seq = dataclasses.replace(base.sampling, reset_search="sequential")
    fp32 = dataclasses.replace(base.model, update_dtype="same", update_attention="same")
    before = dataclasses.replace(base, minibatch_prompts=4, micro_batch_chains=32, diagnostics_every=1,
                                 model=fp32, sampling=seq)
    one = dataclasses.replace(base, diagnostics_every=0, model=fp32, sampling=seq)
    bf16 = dataclasses.replace(one, model=dataclasses.replace(base.model, update_attention="same"))
    rest = dataclasses.replace(bf16, sampling=base.sampling)
    eager = dataclasses.replace(rest, model=dataclasses.replace(rest.model, update_attention="eager"))
    allbf = dataclasses.replace(eager, model=dataclasses.replace(eager.model, dtype="bfloat16"))
    return {"before": before, "1-opt": one, "bf16": bf16, "rest": rest, "eager": eager,
            "block": eager, "bf16-gen": allbf}


PLAIN_CACHE = ("before", "1-opt", "bf16", "rest", "eager")
"""Settings timed with transformers' plain ``DynamicCache`` (``HFBackend(kv_block=0)``)."""


def live(name, cfg):
    """A running trainer for one setting."""
    parts = build_parts(cfg)
    if name in PLAIN_CACHE:
        parts.sampler.backend.kv_block = 0
    return train(cfg, parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["grpo", "srpo"])
    ap.add_argument("--task", default="arithmetic-hard:0.3")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one untimed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads, "task": args.task, "variants": {}}
    for variant in args.variants:
        base = dataclasses.replace(get_preset("cpu-coverage"), variant=variant, task=args.task,
                                   steps=args.steps + 1, eval=EvalConfig(every=0), checkpoint_every=0)
        gens = {name: live(name, cfg) for name, cfg in settings(base).items()}
        rows: dict[str, list[dict]] = {name: [] for name in gens}
        for k in range(args.steps + 1):
            for name, g in gens.items():
                m = next(g)
                if k > 0:  # the first step warms caches and allocators
                    rows[name].append(m)
        out = {}
        for name, rs in rows.items():
            med = {p: statistics.median(r.get(p, 0.0) for r in rs)
                   for p in (*PARTS, "time/step", "tokens/generated", "tokens/generated_chains",
                             "tokens/speculative")}
            out[name] = med
        ref, mid = out["before"]["time/step"], out["rest"]["time/step"]
        print(f"\n{variant} ({args.task}, {args.threads} thread(s), median of {args.steps} interleaved steps)")
        print(f"{'setting':9s} {'step s':>7s} {'rollout':>8s} {'prep':>6s} {'diag':>6s} {'update':>7s} "
              f"{'vs before':>10s} {'vs rest':>8s}")
        for name, med in out.items():
            print(f"{name:9s} {med['time/step']:7.2f} {med['time/rollout']:8.2f} {med['time/prep']:6.2f} "
                  f"{med['time/diagnostics']:6.2f} {med['time/update']:7.2f} {ref / med['time/step']:9.2f}x "
                  f"{mid / med['time/step']:7.2f}x")
        print(f"generated tokens per step: {out['rest']['tokens/generated']:.0f} "
              f"({out['rest']['tokens/generated_chains']:.0f} chains), speculative "
              f"{out['rest']['tokens/speculative']:.0f}")
        print(f"bf16 update alone: {out['1-opt']['time/update'] / out['bf16']['time/update']:.2f}x faster update; "
              f"two-round search alone: {out['bf16']['time/rollout'] / out['rest']['time/rollout']:.2f}x faster "
              f"rollout; eager attention in the bf16 update: {out['rest']['time/update'] / out['eager']['time/update']:.2f}x "
              f"faster update; block KV cache: {out['eager']['time/rollout'] / out['block']['time/rollout']:.2f}x faster "
              f"rollout; bf16 generation: {out['block']['time/rollout'] / out['bf16-gen']['time/rollout']:.2f}x "
              f"faster rollout")
        report["variants"][variant] = out

    # -- one evaluation: the first track's (256 problems, greedy + sampled) vs the coverage one, in
    # fp32 and under the bf16 autocast a bf16-generation run evaluates in -------------------------
    base = dataclasses.replace(get_preset("cpu-coverage"), variant="grpo", task=args.task)
    evals = {"before (256, greedy+sampled)": (EvalConfig(every=8, problems=256, seed=1000), None, False),
             "rest (512, sampled + coverage)": (base.eval, None, False),
             "block (512, sampled + coverage)": (base.eval, None, True),
             "bf16 (512, sampled + coverage)": (base.eval, torch.bfloat16, True)}
    times = {}
    for name, (ev, dt, block) in evals.items():
        parts = build_parts(dataclasses.replace(base, eval=ev))
        if not block:
            parts.sampler.backend.kv_block = 0
        probs = list(parts.eval_problems)[: ev.problems]
        ctx = torch.autocast("cpu", dtype=dt) if dt is not None else contextlib.nullcontext()
        with ctx:
            parts.evaluate(None, probs[:32])  # warm
            t0 = time.perf_counter()
            got = parts.evaluate(None, probs)
        times[name] = time.perf_counter() - t0
        print(f"evaluation {name}: {times[name]:.1f} s (sampled pass@1 {got['sampled_pass@1']:.3f})")
    t = {k.split(" ")[0]: v for k, v in times.items()}
    print(f"evaluation with the block cache: {t['rest'] / t['block']:.2f}x faster; in bf16 as well: "
          f"{t['rest'] / t['bf16']:.2f}x")
    report["eval_s"] = times
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
