"""One GRPO step of respo vs one step of TRL's GRPOTrainer, and SRPO / GRPO step-time ratios.

Same model (a random tiny Llama over the char tokenizer, or the cached SFT warm-up model), same
prompts (arithmetic task, "small" completion prompt), 8 completions per prompt, the same
completion-token limit, fp32, temperature 1, one optimizer step over the whole batch. Each side
runs ``--repeats`` timed steps after one warm-up step; medians are printed.

    .venv/bin/python experiments/bench/bench_vs_trl.py                 # respo vs TRL, GRPO
    .venv/bin/python experiments/bench/bench_vs_trl.py --no-trl --variants grpo srpo:confidence srpo:prompted

Goals (issue 3): respo <= 0.5x TRL per GRPO step; SRPO step <= 1.3x GRPO step.
Deviations: TRL stops at EOS or the token limit; respo also stops at a completed ``\\boxed{}``
thought. With a random model neither stops early, so both generate the full limit.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import torch  # noqa: E402
from presets import get_preset  # noqa: E402

from respo.llm.config import TrainConfig  # noqa: E402
from respo.llm.train import train  # noqa: E402
from respo.llm.train_parts import build_parts, build_task  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--prompts", type=int, default=4)
ap.add_argument("--completion-tokens", type=int, default=32)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--model", default="tiny", help="tiny | sft-warmup[:K] (TRL runs on the same weights)")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
ap.add_argument("--no-trl", action="store_true")
ap.add_argument("--variants", nargs="*", default=["grpo"],
                help="respo variants to time, e.g. grpo srpo:confidence srpo:prompted")
args = ap.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

# -- config -------------------------------------------------------------------------------------
base = get_preset("tiny-smoke")
BASE = dataclasses.replace(
    base, steps=1 + args.repeats, prompts_per_step=args.prompts, minibatch_prompts=args.prompts,
    micro_batch_chains=8 * args.prompts, train_problems=64,
    model=dataclasses.replace(base.model, name=args.model, tiny_hidden=args.hidden, tiny_layers=args.layers),
    sampling=dataclasses.replace(base.sampling, temperature=1.0, top_p=1.0,
                                 max_response_tokens=args.completion_tokens,
                                 max_thought_tokens=args.completion_tokens, max_thoughts=64,
                                 localize_max_tokens=args.completion_tokens),
)


def respo_times(variant: str) -> dict[str, float]:
    name, _, loc = variant.partition(":")
    cfg = dataclasses.replace(BASE, variant=name)
    if loc:
        cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, localizer=loc))
    parts = build_parts(cfg)
    rows = list(train(cfg, parts))[1:]  # drop the warm-up step
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith(("time/", "tokens/"))}
    return med


def trl_time(cfg: TrainConfig) -> dict[str, float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    parts = build_parts(cfg)  # same weights and tokenizer as respo's run
    model, tok = copy.deepcopy(parts.model), parts.tokenizer
    task = build_task(cfg.task)
    probs = list(parts.train_problems)
    by_prompt = {parts.sampler.fmt.decode(parts.sampler.root(p).ids): p for p in probs}
    ds = Dataset.from_list([{"prompt": text} for text in by_prompt])

    def reward(prompts, completions, **_):
        return [task.reward(by_prompt[p], c) for p, c in zip(prompts, completions, strict=True)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    gcfg = GRPOConfig(
        output_dir=str(REPO / "runs" / "bench_trl"), per_device_train_batch_size=8 * args.prompts,
        num_generations=8, max_completion_length=args.completion_tokens, temperature=1.0, top_p=1.0,
        learning_rate=cfg.optim.lr, beta=0.0, num_iterations=1, gradient_accumulation_steps=1,
        max_steps=1 + args.repeats, use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=1, bf16=False, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=gcfg, train_dataset=ds,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    return {"time/step": statistics.median(times[1:])}


# -- run ----------------------------------------------------------------------------------------
results = {v: respo_times(v) for v in args.variants}
for v, r in results.items():
    print(f"respo {v:18s} step {r['time/step']:.3f}s  rollout {r['time/rollout']:.3f}  "
          f"prep {r['time/prep']:.3f}  update {r['time/update']:.3f}  "
          f"generated {r['tokens/generated']:.0f} tok  trained {r['tokens/trained']:.0f}  "
          f"localization {r['tokens/localization']:.0f}")
if "grpo" in results:
    g = results["grpo"]["time/step"]
    for v, r in results.items():
        if v != "grpo":
            print(f"{v} / grpo step time: {r['time/step'] / g:.2f}x")
    if not args.no_trl:
        t = trl_time(dataclasses.replace(BASE, variant="grpo"))["time/step"]
        print(f"TRL GRPOTrainer step {t:.3f}s   respo/TRL = {g / t:.2f}x")
