"""One GRPO step of respo vs one step of TRL's GRPOTrainer, and SRPO / GRPO step-time ratios.

Same model (a random tiny Llama over the char tokenizer, or the cached SFT warm-up model), same
prompts (arithmetic task, "small" completion prompt), 8 completions per prompt, the same
completion-token limit, fp32, temperature 1, one optimizer step over the whole batch. Each side
runs ``--repeats`` timed steps after one warm-up step; medians are printed.

    .venv/bin/python experiments/bench/bench_vs_trl.py                 # respo vs TRL, GRPO
    .venv/bin/python experiments/bench/bench_vs_trl.py --no-trl --variants grpo srpo:confidence srpo:prompted
    .venv/bin/python experiments/bench/bench_vs_trl.py --serial ...     # also time the per-request path

respo runs through the trainer (``respo.llm.trainer.train``), whose rollout is ``build_buffers``: all
prompts of a step in lock-step, each round served by ONE ``LMSampler.extend_many`` (one
``HFBackend.generate_groups``) and ONE ``locate_many``. ``--serial`` also times each variant with
the batching hidden (the sampler and localizer answer one request per backend call, as before
batched generation came in: ``experiments/LOG.md``, "Batched generation across a step's prompts"). Printed per step: backend calls (``gen/calls``: sampling calls;
``localize/batches``: localizer generations / forwards).

Goals (issue 3): respo <= 0.5x TRL per GRPO step; SRPO step <= 1.3x GRPO step.
Fairness: TRL's GRPOConfig turns gradient checkpointing ON by default, respo's config has it off;
by default TRL runs with it off too (``--trl-gradient-checkpointing on`` restores TRL's default;
the earlier numbers in ``experiments/LOG.md``, "LLM training side", had it on).
Deviations: TRL stops at EOS or the token limit; respo also stops at a completed ``\\boxed{}``
thought. With a random model neither stops early, so both generate the full limit.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from respo.llm.config import TrainConfig  # noqa: E402
from respo.llm.train_parts import build_parts, build_task  # noqa: E402
from respo.llm.trainer import train  # noqa: E402
from respo.presets import get_preset  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--prompts", type=int, default=4)
ap.add_argument("--completion-tokens", type=int, default=32)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--model", default="tiny", help="tiny | sft-warmup[:K] (TRL runs on the same weights)")
ap.add_argument("--repeats", type=int, default=3, help="timed steps per run (after one warm-up)")
ap.add_argument("--rounds", type=int, default=1,
                help="run every configuration this many times, interleaved; ratios are taken "
                     "within a round, then the median over rounds (robust to load drift)")
ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
ap.add_argument("--no-trl", action="store_true")
ap.add_argument("--trl-gradient-checkpointing", choices=["match", "on"], default="match",
                help="TRL's GRPOConfig defaults to gradient checkpointing (an extra forward in the "
                     "backward); 'match' turns it off like respo's config, 'on' keeps TRL's default")
ap.add_argument("--serial", action="store_true", help="also time each variant without batching")
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


class _OneByOne:
    """Hides ``extend_many`` / ``locate_many``: ``build_buffers`` then serves one request per call."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name in ("extend_many", "locate_many"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def respo_times(variant: str, serial: bool = False) -> dict[str, float]:
    name, _, loc = variant.partition(":")
    cfg = dataclasses.replace(BASE, variant=name)
    if loc:
        cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, localizer=loc))
    parts = build_parts(cfg)
    if serial:
        parts = dataclasses.replace(
            parts, sampler=_OneByOne(parts.sampler),
            localizer=None if parts.localizer is None else _OneByOne(parts.localizer))
    rows = list(train(cfg, parts))[1:]  # drop the warm-up step
    keep = ("time/", "tokens/", "gen/calls", "localize/batches", "localize/calls")
    return {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith(keep)}


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
        gradient_checkpointing=(cfg.model.gradient_checkpointing
                                if args.trl_gradient_checkpointing == "match" else True),
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=gcfg, train_dataset=ds,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    return {"time/step": statistics.median(times[1:])}


# -- run ----------------------------------------------------------------------------------------
runs = [(v, False) for v in args.variants] + ([(v, True) for v in args.variants] if args.serial else [])
names = [v + (" serial" if ser else "") for v, ser in runs]
per_round: list[dict[str, dict[str, float]]] = []
for rnd in range(args.rounds):
    res = {name: respo_times(v, ser) for name, (v, ser) in zip(names, runs, strict=True)}
    if "grpo" in res and not args.no_trl:
        res["TRL"] = trl_time(dataclasses.replace(BASE, variant="grpo"))
    per_round.append(res)
    print(f"round {rnd}: " + "  ".join(f"{k} {r['time/step']:.3f}s" for k, r in res.items()), flush=True)


def med(name: str, key: str) -> float:
    return statistics.median(r[name].get(key, 0.0) for r in per_round)


def ratio(a: str, b: str) -> str:
    xs = [r[a]["time/step"] / r[b]["time/step"] for r in per_round]
    return f"{statistics.median(xs):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in xs)})"


print(f"\nmedians over {args.rounds} round(s) of the per-run medians of {args.repeats} timed steps:")
for v in names:
    print(f"respo {v:25s} step {med(v, 'time/step'):.3f}s  rollout {med(v, 'time/rollout'):.3f}  "
          f"prep {med(v, 'time/prep'):.3f}  update {med(v, 'time/update'):.3f}  "
          f"generated {med(v, 'tokens/generated'):.0f} tok  trained {med(v, 'tokens/trained'):.0f}  "
          f"localization {med(v, 'tokens/localization'):.0f}  sampling calls {med(v, 'gen/calls'):.0f}  "
          f"localizer calls {med(v, 'localize/batches'):.0f} (for {med(v, 'localize/calls'):.0f} parents)")
for suffix in ("", " serial"):
    if "grpo" + suffix in names:
        for v in names:
            if v != "grpo" + suffix and v.endswith(" serial") == bool(suffix):
                print(f"{v} / grpo{suffix} step time: {ratio(v, 'grpo' + suffix)}")
if "TRL" in per_round[0]:
    print(f"TRL GRPOTrainer step {med('TRL', 'time/step'):.3f}s   respo grpo / TRL = {ratio('grpo', 'TRL')}")
    if "grpo serial" in names:
        print(f"respo grpo serial / TRL = {ratio('grpo serial', 'TRL')}")
