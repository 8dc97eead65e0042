"""Probe SmolLM2-135M-Instruct's accuracy on easy offline tasks, to pick a real-model RL task.

For each candidate task: ``--problems`` problems, ``--samples`` sampled chains each (the trainer's
settings: temperature 0.7, top-p 0.95, newline thoughts) and one greedy chain each, all through
``LMSampler.extend_many`` (one batched backend call per ``--batch-prompts`` problems). Reports
sampled and greedy accuracy, mean response tokens, mean thoughts per chain, boxed-answer rate,
stop reasons, seconds per batch and example responses; writes everything to
``experiments/results/real_track/probe_<date>.json``. With ``--step-timing`` it also times one
training-step-equivalent of generation (4 prompts x 8 samples, one call) on the first candidate.

Run (the box is shared: ONE thread, niced)::

    nice -n 5 .venv/bin/python experiments/real_track/probe.py --candidates arith-1 basic-easy

The model is bf16 on CPU (``load_smollm2(dtype=torch.bfloat16)``, the smollm2-cpu preset's dtype).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from respo.llm.generation import HFBackend
from respo.llm.models import load_smollm2
from respo.llm.sampler import LMSampler, SampleConfig
from respo.seeding import rng_for
from respo.tasks.base import Task


def _arith(steps: int, ops: tuple[str, ...]) -> Callable[[], Task]:
    def make() -> Task:
        from respo.tasks.synthetic import ArithmeticSpec, ArithmeticTask

        spec = ArithmeticSpec(min_steps=steps, max_steps=steps, ops=ops, answer_style="boxed")
        return ArithmeticTask(spec, reward_mode="answer", name=f"arithmetic-{steps}{''.join(ops)}")

    return make


def _gym(generator: str, **config: Any) -> Callable[[], Task]:
    def make() -> Task:
        from respo.tasks.gym import GymTask

        return GymTask(generator, config=config, phrase_answers=True)

    return make


def _catalog(name: str) -> Callable[[], Task]:
    def make() -> Task:
        from respo.tasks.catalog import make_task

        return make_task(name)

    return make


ONE_DIGIT = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1)
CANDIDATES: dict[str, tuple[str, Callable[[], Task]]] = {
    "arith-1": ("arithmetic task (mod 10, tagged ops), 1 step, ops +", _arith(1, ("+",))),
    "arith-2": ("arithmetic task (mod 10, tagged ops), 2 steps, ops + -", _arith(2, ("+", "-"))),
    "basic-easy": ("basic-arithmetic-easy (gym-phrase basic_arithmetic: 2 one-digit terms, + -, "
                   "no parens/negation)", _catalog("basic-arithmetic-easy")),
    "basic-add": ("basic-arithmetic-add (gym-phrase basic_arithmetic: 2 one-digit terms, + only)",
                  _catalog("basic-arithmetic-add")),
    "basic-easy3": ("gym-phrase basic_arithmetic: 3 one-digit terms, + -, no parens/negation",
                    _gym("basic_arithmetic", min_terms=3, max_terms=3, min_digits=1, max_digits=1,
                         operators=("+", "-"), allow_parentheses=False, allow_negation=False)),
    "basic-2digit": ("gym-phrase basic_arithmetic: 2 two-digit terms, + -, no parens/negation",
                     _gym("basic_arithmetic", min_terms=2, max_terms=2, min_digits=2, max_digits=2,
                          operators=("+", "-"), allow_parentheses=False, allow_negation=False)),
    "chain-easy": ("gym-phrase chain_sum: 2 one-digit terms", _gym("chain_sum", **ONE_DIGIT)),
    "legs-easy": ("gym-phrase leg_counting: 1-2 animals, 1-3 each",
                  _gym("leg_counting", min_animals=1, max_animals=2, max_instances=3)),
}
"""Probe candidates: name -> (description, task factory). Any other name goes to ``make_task``."""


def candidate(name: str) -> tuple[str, Callable[[], Task]]:
    return CANDIDATES.get(name, (f"catalog task {name}", _catalog(name)))


def run_chains(sampler: LMSampler, problems: list[Any], n: int, *, batch: int, seed: int,
               tag: str) -> tuple[list[list[Any]], list[float]]:
    """``n`` chains per problem, ``batch`` problems per ``extend_many`` call; (chains, seconds per call)."""
    chains: list[list[Any]] = []
    secs: list[float] = []
    for lo in range(0, len(problems), batch):
        reqs = [((sampler.root(p),), n, rng_for(seed, tag, lo + i))
                for i, p in enumerate(problems[lo:lo + batch])]
        t0 = time.perf_counter()
        chains += sampler.extend_many(None, reqs)
        secs.append(time.perf_counter() - t0)
    sampler.pop_stats()
    return chains, secs


_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def last_number_right(answer: str, text: str) -> bool:
    """Diagnostic only (not a reward): the response's last number equals the gold answer."""
    nums = _NUM.findall(text.replace(",", ""))
    try:
        return bool(nums) and float(nums[-1]) == float(answer)
    except ValueError:
        return False


def summarize(groups: list[list[Any]], problems: list[Any]) -> dict[str, Any]:
    flat = [c for g in groups for c in g]
    answers = [p.answer for p, g in zip(problems, groups, strict=True) for _ in g]
    return {
        "accuracy": float(np.mean([c.reward for c in flat])),
        "last_number_right": float(np.mean([last_number_right(a, c.info["text"])
                                            for a, c in zip(answers, flat, strict=True)])),
        "problems_solved_any": float(np.mean([max(c.reward for c in g) for g in groups])),
        "mean_response_tokens": float(np.mean([c.info["n_generated"] for c in flat])),
        "mean_thoughts": float(np.mean([len(c.states) - 1 for c in flat])),
        "boxed_rate": float(np.mean([c.info["answer_found"] for c in flat])),
        "truncated_rate": float(np.mean([c.info["truncated"] for c in flat])),
        "stop_reasons": dict(Counter(c.info["stop_reason"] for c in flat)),
        "chains": len(flat),
    }


def probe(name: str, backend: HFBackend, tok: Any, args: argparse.Namespace) -> dict[str, Any]:
    desc, make = candidate(name)
    task = make()
    problems = task.problems(args.problems, seed=args.seed, split="train")
    base = SampleConfig(max_response_tokens=args.max_tokens, temperature=0.7, top_p=0.95,
                        max_thought_tokens=args.max_thought_tokens, max_thoughts=args.max_thoughts,
                        delimiter="\n", prompt_variant=args.prompt_variant)
    sampled_s = LMSampler(backend, tok, task, cfg=base)
    prompt_tokens = float(np.mean([len(sampled_s.root(p).ids) for p in problems]))
    groups, secs = run_chains(sampled_s, problems, args.samples, batch=args.batch_prompts,
                              seed=args.seed, tag=f"{name}/sampled")
    out: dict[str, Any] = {"candidate": name, "description": desc, "task": task.name,
                           "mean_prompt_tokens": prompt_tokens,
                           "sampled": summarize(groups, problems), "sampled_batch_s": secs}
    if not args.no_greedy:
        greedy_s = LMSampler(backend, tok, task, cfg=SampleConfig(**{**base.__dict__, "temperature": 0.0}))
        ggroups, gsecs = run_chains(greedy_s, problems, 1, batch=len(problems), seed=args.seed,
                                    tag=f"{name}/greedy")
        out["greedy"] = summarize(ggroups, problems)
        out["greedy_batch_s"] = gsecs
    flat = [(p, c) for p, g in zip(problems, groups, strict=True) for c in g]
    right = [x for x in flat if x[1].reward > 0][:2]
    wrong = [x for x in flat if x[1].reward == 0][:2]
    out["examples"] = [{"question": p.question, "answer": p.answer, "reward": c.reward,
                        "stop_reason": c.info["stop_reason"], "response": c.info["text"]}
                       for p, c in right + wrong]
    return out


def step_timing(name: str, backend: HFBackend, tok: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One training-step-equivalent of fresh generation: 4 prompts x 8 samples in one call."""
    task = candidate(name)[1]()
    problems = task.problems(4, seed=args.seed + 1, split="train")
    cfg = SampleConfig(max_response_tokens=args.max_tokens, temperature=0.7, top_p=0.95,
                       max_thought_tokens=args.max_thought_tokens, max_thoughts=args.max_thoughts,
                       delimiter="\n", prompt_variant=args.prompt_variant)
    smp = LMSampler(backend, tok, task, cfg=cfg)
    groups, secs = run_chains(smp, problems, 8, batch=4, seed=args.seed, tag="step")
    return {"candidate": name, "prompts": 4, "samples": 8, "seconds": secs[0], **summarize(groups, problems)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", nargs="+", default=["arith-1", "basic-easy", "chain-easy", "legs-easy"],
                    help=f"names from {sorted(CANDIDATES)} or any respo task name")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch-prompts", type=int, default=8, help="problems per extend_many call")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--max-thoughts", type=int, default=20)
    ap.add_argument("--max-thought-tokens", type=int, default=64)
    ap.add_argument("--prompt-variant", default="chat", choices=("chat", "small", "paper", "bare"))
    ap.add_argument("--instruction", default=None,
                    help="override respo.llm.prompts.CHAT_INSTRUCTION (exploration only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-greedy", action="store_true")
    ap.add_argument("--step-timing", action="store_true",
                    help="also time 4 prompts x 8 samples on the first candidate")
    ap.add_argument("--out", default=None, help="JSON path (default: results/real_track/probe_<date>.json)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.instruction is not None:
        import respo.llm.prompts as prompts

        prompts.CHAT_INSTRUCTION = args.instruction.replace("\\n", "\n")
    from respo.llm import prompts as _p

    instruction = _p.CHAT_INSTRUCTION
    t_all = time.perf_counter()
    model, tok = load_smollm2(dtype=torch.bfloat16)
    backend = HFBackend(model, tok, device="cpu")
    results = []
    for name in args.candidates:
        t0 = time.perf_counter()
        r = probe(name, backend, tok, args)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        s, g = r["sampled"], r.get("greedy", {})
        print(f"[{name}] sampled {s['accuracy']:.3f} greedy {g.get('accuracy', float('nan')):.3f} "
              f"lastnum {s['last_number_right']:.3f} tok {s['mean_response_tokens']:.0f} thoughts {s['mean_thoughts']:.1f} "
              f"boxed {s['boxed_rate']:.2f} stops {s['stop_reasons']} "
              f"s/batch {np.mean(r['sampled_batch_s']):.1f} wall {r['wall_s']:.0f}s", flush=True)
    timing = step_timing(args.candidates[0], backend, tok, args) if args.step_timing else None

    print("\n| candidate | task | sampled acc | greedy acc | last number right (diag.) | resp tok | thoughts | boxed | truncated "
          "| s/batch (sampled) | prompt tok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s, g = r["sampled"], r.get("greedy", {})
        print(f"| {r['candidate']} | {r['task']} | {s['accuracy']:.3f} | {g.get('accuracy', float('nan')):.3f} "
              f"| {s['last_number_right']:.3f} | {s['mean_response_tokens']:.0f} | {s['mean_thoughts']:.1f} | {s['boxed_rate']:.2f} "
              f"| {s['truncated_rate']:.2f} | {np.mean(r['sampled_batch_s']):.1f} | {r['mean_prompt_tokens']:.0f} |")
    for r in results:
        print(f"\n== {r['candidate']} examples ==")
        for e in r["examples"]:
            print(f"-- Q: {e['question']!r} gold {e['answer']} reward {e['reward']} ({e['stop_reason']})")
            print(e["response"])
    if timing:
        print(f"\nstep-equivalent (4 prompts x 8 samples, {timing['candidate']}): {timing['seconds']:.1f} s, "
              f"acc {timing['accuracy']:.3f}, mean tokens {timing['mean_response_tokens']:.0f}")

    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else (Path(__file__).resolve().parents[1] / "results" / "real_track"
                                           / f"probe_{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": date, "argv": sys.argv[1:], "settings": {k: v for k, v in vars(args).items()},
               "torch_threads": torch.get_num_threads(), "chat_instruction": instruction, "dtype": "bfloat16", "device": "cpu",
               "results": results, "step_timing": timing, "wall_s": time.perf_counter() - t_all}
    if out.exists():  # keep earlier runs of the same day
        old = json.loads(out.read_text())
        runs = old.get("runs", [old])
        payload = {"runs": [*runs, payload]}
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
