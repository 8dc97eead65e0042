"""A dedicated localization-training phase for the CPU track's prompted self-localizer (SRPO).

SRPO's prompted localizer (``respo.llm.localize.PromptedSelfLocalizer``) shows the policy its
failed chain in a chat-templated prompt (a long English instruction, then ``Step i: <line>``) and
parses the last ``\\boxed{N}`` of the reply; a parse failure falls back to step 1. The CPU track's
~1M-parameter character model was never trained on that prompt, so out of the box it always falls
back. This script continues the shipped 400-step warm-up (``respo.llm.sft``) with supervised
localization examples mixed into ordinary solution-chain examples, then measures the result.

Data (training side only: problems of ``split="train"`` / ``"locsft"``, never the held-out
``eval`` split that the evaluation draws with generator seed 1000; the hash partition of
``respo.tasks.synthetic`` keeps the two sides disjoint whatever the seeds):

- on-policy failures: chains the warm-up model samples at the RL rollout setting of the
  ``cpu-synthetic`` preset (T = 1, bare prompt, newline delimiter, 10 thoughts x 16 tokens, 128
  response tokens), kept when they fail (reward < 1) and the step judge names a first wrong line;
- synthetic failures: gold chains with one injected error (``corrupt_chain``), kept when they fail.

Each failed chain becomes ``prompt ++ reply ++ <|end|>`` where the prompt is EXACTLY
``PromptedSelfLocalizer.prompt_ids(chain)`` (the unmodified trainer localizer; ~750 tokens, of
which ~610 are the fixed instruction, shared across a batch of same-length chains and run once by
``sft_loss``'s shared-prefix path) and the reply ends with ``\\boxed{k}``, k the true first wrong
thought (1-based, the index ``thought_ids`` / the trainer's judge use). Reply styles (``--reply``):

- ``resolve`` (default): re-derive the gold lines in the prompt's own format, one per line, and
  stop at the first one that disagrees with the shown step, then box its number::

      Step 1: a:7+3=0
      Step 2: b:0*4=0
      Step 3: c:0-2=8
      \\boxed{3}

  (the model already computes gold lines; deciding "stop" compares its line with the shown one).
- ``boxed``: just ``\\boxed{k}`` (the decision in a single token).

The loss is on the reply tokens (and the closing ``<|end|>``, so generation stops) only. Each
optimizer step takes ``--loc-batch`` localization examples (one thought-count bucket, so the
instruction prefix is shared) and ``--solve-batch`` solution chains (the warm-up's own data
recipe, 15% injected errors, fresh problems) and minimises ``loss_loc + --solve-weight *
loss_solve``; AdamW, linear warm-up then cosine (``respo.llm.sft.lr_multiplier``).

Measurement (before and after): held-out failed chains sampled from the WARM-UP model at the
rollout setting on held-out problems (``split="eval"``, seed 1000, as the trainer's evaluation),
one fixed set for every localizer: the prompted localizer (T = 0.3 as in SRPO, ``--loc-max-new-
tokens`` new tokens, step-1 fallback) and the confidence localizer (threshold 0.5) of each model;
beta (false-discovery rate), gamma (recall at the true first error), at-or-before share and
fallback rate, with fallbacks counted as answers at step 1 as the trainer resets there (as in
``localizer_sweep.py``; the answered-only beta is also stored). Plus held-out greedy and sampled
(T = 1) pass@1 with ``respo.llm.sft.evaluate_policy`` exactly as ``warmup.py`` measures it.

    python experiments/cpu_track/localizer_sft.py --steps 300
    python experiments/cpu_track/localizer_sft.py --steps 2 --train-problems 32 --eval-problems 16 \\
        --loc-eval-problems 16 --name smoke          # plumbing check, about a minute

Writes ``<out>/<name>/model`` (a checkpoint folder loadable with ``respo.llm.sft.load_warmup`` or
plain transformers, like the warm-up) and ``<out>/<name>/results.json`` (atomic writes), and
prints a table. ``<out>`` defaults to ``runs/cpu_track/localizer_sft``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from respo.jsonl import write_json_atomic
from respo.llm.generation import HFBackend
from respo.llm.localize import ConfidenceLocalizer, PromptedSelfLocalizer
from respo.llm.sampler import LMSampler, SampleConfig
from respo.llm.sft import (
    WARMUP_EVAL,
    SFTConfig,
    SFTExample,
    evaluate_policy,
    load_warmup,
    make_optimizer,
    save_warmup,
    sft_examples,
    sft_loss,
)
from respo.llm.types import TokenState
from respo.resets import Chain, localizer_quality
from respo.seeding import rng_for
from respo.tasks.base import Problem
from respo.tasks.synthetic import (
    ArithmeticSpec,
    ArithmeticTask,
    corrupt_chain,
    generate_problems,
    gold_chain,
    warmup_examples,
)

WARMUP = "experiments/results/cpu_track/warmup/sft-725a97604225e143"
"""The shipped warm-up: 400 of 500 steps of ``SFTConfig()`` (the ``sft-warmup:400`` model)."""

ROLLOUT = SampleConfig(max_response_tokens=128, temperature=1.0, top_p=1.0, max_thought_tokens=16,
                       max_thoughts=10, delimiter="\n", prompt_variant="bare")
"""The ``cpu-synthetic`` preset's rollout sampling (``respo/presets/__init__.py``, copied here so
this script does not import a preset file that may be edited while it runs)."""

REPLY_STYLES = ("resolve", "boxed")


# -- data ----------------------------------------------------------------------------------------
def arithmetic_task() -> ArithmeticTask:
    """The RL trainer's ``arithmetic`` task (answer reward, boxed answer line)."""
    return ArithmeticTask(ArithmeticSpec(answer_style="boxed"), reward_mode="answer")


def make_sampler(model: Any, tok: Any, task: Any, cfg: SampleConfig = ROLLOUT) -> LMSampler:
    """An ``LMSampler`` over ``HFBackend(model)`` with the rollout settings (CPU)."""
    return LMSampler(HFBackend(model, tok, device="cpu"), tok, task, cfg=cfg)


def first_error(sampler: LMSampler, chain: Chain[TokenState]) -> int | None:
    """The step judge of the trainer (``train_parts.build_parts``'s ``judge``): the 1-based first
    wrong thought of ``chain`` by ``task.first_error`` over the sampler's thought split."""
    problem = sampler.problem_of(chain.states[0])
    k = sampler.task.first_error(problem, sampler.fmt.thought_texts(chain.states[-1].response_ids))
    return None if k is None else int(k)


def chain_from_lines(sampler: LMSampler, problem: Problem, lines: Sequence[str]) -> Chain[TokenState]:
    """The chain the sampler would have built had the model written ``lines`` (one thought per
    line, each followed by the delimiter's canonical ids), scored with the task's reward."""
    root = sampler.root(problem)
    delim = list(sampler.fmt.delimiter.canonical)
    ids = list(root.ids)
    states = [root]
    for line in lines:
        ids += [int(i) for i in sampler.tokenizer.encode(line, add_special_tokens=False)] + delim
        states.append(TokenState(np.asarray(ids, dtype=np.int64), root.prompt_len))
    text = sampler.fmt.decode(states[-1].response_ids)
    return Chain(tuple(states), float(sampler.task.reward(problem, text)))


def reply_text(problem: Problem, k: int, style: str = "resolve") -> str:
    """The target localization reply for a chain whose first wrong thought is ``k`` (1-based).

    ``boxed``: ``\\boxed{k}``. ``resolve``: the gold lines 1..min(k, len(gold)) as ``Step i:
    <line>`` (the first disagreement with the shown chain is line k), then ``\\boxed{k}``.
    """
    if k < 1:
        raise ValueError(f"first error must be >= 1, got {k}")
    if style == "boxed":
        return f"\\boxed{{{k}}}"
    if style == "resolve":
        gold = gold_chain(problem)
        lines = [f"Step {i}: {gold[i - 1]}" for i in range(1, min(k, len(gold)) + 1)]
        return "\n".join([*lines, f"\\boxed{{{k}}}"])
    raise ValueError(f"unknown reply style {style!r}; valid: {', '.join(REPLY_STYLES)}")


def localization_example(loc: PromptedSelfLocalizer, chain: Chain[TokenState], k: int,
                         style: str = "resolve", *, source: str = "") -> SFTExample:
    """``loc.prompt_ids(chain) ++ ids(reply) ++ <|end|>``, loss on the reply and the end token.

    ``problem_id`` records ``source`` (``onpolicy``/``synthetic``) and the thought count.
    """
    tok = loc.tokenizer
    problem = loc.problem_of(chain.states[0])
    prompt = loc.prompt_ids(chain)
    reply = [int(i) for i in tok.encode(reply_text(problem, k, style), add_special_tokens=False)]
    ids = np.concatenate([prompt, np.asarray(reply + [int(tok.eos_token_id)], dtype=np.int64)])
    return SFTExample(ids, len(prompt), k, f"{source}:{problem.id}:n={chain.n_thoughts}")


def sample_failures(sampler: LMSampler, problems: Sequence[Problem], samples: int, *, seed: int,
                    tag: str, chunk: int = 64, desc: str = "sample") -> tuple[list[tuple[Chain[TokenState], int]], dict[str, float]]:
    """Failed chains (reward < 1) with a known first error, sampled ``samples`` per problem with
    ``sampler`` (batched as in ``localizer_sweep.py``); plus counts."""
    chains: list[Chain[TokenState]] = []
    for c0 in tqdm(range(0, len(problems), chunk), desc=desc, leave=False):
        reqs = [((sampler.root(p),), samples, rng_for(seed, tag, c0 + i))
                for i, p in enumerate(problems[c0:c0 + chunk])]
        for group in sampler.extend_many(None, reqs):
            chains += group
    failed = [c for c in chains if c.reward < 1.0]
    known = [(c, k) for c in failed if (k := first_error(sampler, c)) is not None]
    stats = {"chains": float(len(chains)), "pass_rate": float(np.mean([c.reward for c in chains])) if chains else float("nan"),
             "failed": float(len(failed)), "known_first_error": float(len(known))}
    return known, stats


def synthetic_failures(sampler: LMSampler, problems: Sequence[Problem], *,
                       seed: int) -> list[tuple[Chain[TokenState], int]]:
    """One injected-error chain per problem (``corrupt_chain``, the error step uniform over the
    lines), kept when it fails; the judged first error equals the injected step (checked)."""
    rng = rng_for(seed, "locsft", "corrupt")
    out = []
    for p in problems:
        c = corrupt_chain(p, rng)
        chain = chain_from_lines(sampler, p, c.lines)
        if chain.reward >= 1.0:
            continue  # the slip cancelled out (e.g. a later *5): not a failed chain
        k = first_error(sampler, chain)
        if k != c.first_error:
            raise AssertionError(f"{p.id}: judge says {k}, injected {c.first_error}")
        out.append((chain, k))
    return out


def bucket_batches(examples: Sequence[SFTExample], size: int, rng: np.random.Generator) -> list[list[SFTExample]]:
    """One shuffled epoch of batches, each from a single thought-count bucket (so the whole
    instruction up to ``Problem:`` is a shared prefix, run once per batch by ``sft_loss``)."""
    buckets: dict[str, list[SFTExample]] = {}
    for e in examples:
        buckets.setdefault(e.problem_id.rpartition("n=")[2], []).append(e)
    batches = []
    for group in buckets.values():
        order = rng.permutation(len(group))
        batches += [[group[i] for i in order[j:j + size]] for j in range(0, len(group), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# -- measurement ---------------------------------------------------------------------------------
def localizer_rows(model: Any, tok: Any, sampler: LMSampler, known: Sequence[tuple[Chain[TokenState], int]],
                   *, label: str, seed: int, max_new_tokens: int, chunk: int = 32,
                   keep_replies: int = 12) -> list[dict[str, Any]]:
    """Prompted (T = 0.3) and confidence (threshold 0.5) localizers of ``model`` on ``known``."""
    truth = [k for _, k in known]
    rows = []
    ploc = PromptedSelfLocalizer(HFBackend(model, tok, device="cpu"), tok, sampler.problem_of,
                                 delimiter=sampler.cfg.delimiter, temperature=0.3,
                                 max_new_tokens=max_new_tokens, fallback_mode="step1")
    t0 = time.time()
    res, replies = [], []
    for c0 in tqdm(range(0, len(known), chunk), desc=f"prompted {label}", leave=False):
        part = known[c0:c0 + chunk]
        res += ploc.locate_many(None, [(c, rng_for(seed, "loc-eval", c0 + i)) for i, (c, _) in enumerate(part)])
        if len(replies) < keep_replies:
            replies.append({"truth": part[-1][1], "n": part[-1][0].n_thoughts, **ploc.last})
    stats = ploc.pop_stats()
    rows.append(_row(f"prompted ({label})", res, truth, time.time() - t0,
                     {"mean_reply_tokens": stats["localize/tokens"] / max(stats["localize/calls"], 1),
                      "truncated": stats["localize/truncated"] / max(stats["localize/calls"], 1),
                      "fallback_reasons": _reasons(res), "replies": replies}))
    t0 = time.time()
    cloc = ConfidenceLocalizer(model, threshold=0.5, fallback_mode="step1")
    res = cloc.locate_many(None, [(c, rng_for(seed, "conf-eval", i)) for i, (c, _) in enumerate(known)])
    rows.append(_row(f"confidence 0.5 ({label})", res, truth, time.time() - t0, {}))
    return rows


def _reasons(res: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in res:
        if r.fell_back:
            key = r.reason.split(":")[0]
            out[key] = out.get(key, 0) + 1
    return out


def _row(name: str, res: Sequence[Any], truth: Sequence[int], wall: float, extra: dict[str, Any]) -> dict[str, Any]:
    used = localizer_quality([r.step for r in res], list(truth))  # fallback = reset at step 1
    answered = localizer_quality([None if r.fell_back else r.step for r in res], list(truth))
    return {"localizer": name, "beta": used["beta"], "gamma": used["gamma"],
            "at_or_before": used["at_or_before"], "fallback": float(np.mean([r.fell_back for r in res])),
            "factor": (1 - used["beta"]) * used["gamma"], "beta_answered": answered["beta"],
            "at_or_before_answered": answered["at_or_before"], "n_chains": used["n_chains"],
            "wall_s": wall, **extra}


def pass_at_1(model: Any, tok: Any, held_out: Sequence[Problem], task: Any, *, samples: int) -> dict[str, Any]:
    """Held-out greedy and sampled (T = 1) pass@1 as ``warmup.py`` measures them."""
    t0 = time.time()
    m = evaluate_policy(model, tok, held_out, task, n_samples=samples, seed=1000,
                        sampling=dataclasses.replace(WARMUP_EVAL, prompt_variant="bare"))
    keep = ("greedy_pass@1", "greedy_chain_acc", "sampled_pass@1", "sampled_chain_acc", "step_error",
            "first_error", "problems", "n_samples")
    return {**{k: m[k] for k in keep}, "wall_s": time.time() - t0}


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", default=WARMUP, help="warm-up checkpoint folder to continue from")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps (the budget)")
    ap.add_argument("--reply", choices=REPLY_STYLES, default="resolve", help="target reply style")
    ap.add_argument("--loc-batch", type=int, default=24, help="localization examples per step")
    ap.add_argument("--solve-batch", type=int, default=32, help="solution chains per step")
    ap.add_argument("--solve-weight", type=float, default=1.0, help="weight of the solution loss")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    ap.add_argument("--warmup-steps", type=int, default=10, help="linear LR warm-up steps")
    ap.add_argument("--min-lr-frac", type=float, default=0.1, help="final LR / peak LR")
    ap.add_argument("--train-problems", type=int, default=1536,
                    help="training problems sampled for on-policy failures")
    ap.add_argument("--train-samples", type=int, default=4, help="chains per training problem")
    ap.add_argument("--synthetic", type=int, default=6000, help="injected-error problems (synthetic pool)")
    ap.add_argument("--eval-problems", type=int, default=256, help="held-out problems for pass@1")
    ap.add_argument("--eval-samples", type=int, default=2, help="sampled chains per problem for pass@1")
    ap.add_argument("--loc-eval-problems", type=int, default=256,
                    help="held-out problems whose sampled failures measure the localizers")
    ap.add_argument("--loc-eval-samples", type=int, default=4, help="chains per held-out problem")
    ap.add_argument("--loc-max-new-tokens", type=int, default=160,
                    help="prompted localizer's reply budget at evaluation (trainer default 4096)")
    ap.add_argument("--eval-seed", type=int, default=1000, help="generator seed of held-out problems")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and batch order")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="runs/cpu_track/localizer_sft", help="parent of the run folder")
    ap.add_argument("--name", default=None, help="run folder name (default: derived from the flags)")
    ap.add_argument("--skip-before", action="store_true", help="skip the warm-up's measurements")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.loc_batch < 1 or args.solve_batch < 0:
        ap.error("need --steps >= 1, --loc-batch >= 1, --solve-batch >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tag = hashlib.sha256(json.dumps({k: v for k, v in vars(args).items() if k not in ("out", "name", "threads")},
                                    sort_keys=True).encode()).hexdigest()[:8]
    name = args.name or f"{args.reply}-s{args.steps}-{tag}"
    run_dir = Path(args.out) / name
    if (run_dir / "results.json").exists() or (run_dir / "model").exists():
        print(f"{run_dir} already holds a run; pick another --name", file=sys.stderr)
        return 2
    model, tok, meta = load_warmup(args.warmup)
    wcfg = SFTConfig.from_dict(meta["config"])
    task = arithmetic_task()
    timings: dict[str, float] = {}

    # -- held-out failed chains of the warm-up model (one fixed set for every localizer) ------
    t0 = time.time()
    eval_sampler = make_sampler(model, tok, task)
    held_loc = generate_problems(task.spec, args.loc_eval_problems, seed=args.eval_seed, split="eval")
    held_known, held_stats = sample_failures(eval_sampler, held_loc, args.loc_eval_samples,
                                             seed=args.eval_seed, tag="locsft-eval", desc="held-out chains")
    held_out = generate_problems(task.spec, args.eval_problems, seed=args.eval_seed, split="eval")
    timings["sample_heldout_s"] = time.time() - t0
    tqdm.write(f"held-out: {held_stats}")

    # -- training data ----------------------------------------------------------------------
    t0 = time.time()
    sampler = make_sampler(model, tok, task)
    loc = PromptedSelfLocalizer(sampler.backend, tok, sampler.problem_of, delimiter="\n",
                                temperature=0.3, max_new_tokens=args.loc_max_new_tokens)
    train_p = task.problems(args.train_problems, seed=args.seed, split="train")
    onp, onp_stats = sample_failures(sampler, train_p, args.train_samples, seed=args.seed,
                                     tag="locsft-train", desc="training chains")
    synth_p = generate_problems(task.spec, args.synthetic, seed=args.seed, split="locsft")
    syn = synthetic_failures(sampler, synth_p, seed=args.seed)
    loc_ex = ([localization_example(loc, c, k, args.reply, source="onpolicy") for c, k in onp]
              + [localization_example(loc, c, k, args.reply, source="synthetic") for c, k in syn])
    held_q = {p.question for p in held_loc} | {p.question for p in held_out}
    leak = sum(p.question in held_q for p in [*train_p, *synth_p])
    assert leak == 0, f"{leak} training questions are held-out questions"
    n_solve = args.steps * args.solve_batch
    solve_p = generate_problems(wcfg.spec, n_solve, seed=args.seed, split="locsft-solve")
    solve_ex = sft_examples(warmup_examples(solve_p, seed=args.seed, error_frac=wcfg.error_frac), tok,
                            delimiter=wcfg.delimiter, prompt_variant=wcfg.prompt_variant)
    lens = np.array([len(e.ids) for e in loc_ex])
    reply_lens = np.array([len(e.ids) - e.prompt_len for e in loc_ex])
    data_stats = {"onpolicy": onp_stats, "onpolicy_examples": len(onp), "synthetic_examples": len(syn),
                  "synthetic_problems": args.synthetic, "solve_examples": len(solve_ex),
                  "loc_prompt_tokens_mean": float(np.mean(lens - reply_lens)),
                  "loc_prompt_tokens_max": int(np.max(lens - reply_lens)),
                  "loc_reply_tokens_mean": float(np.mean(reply_lens)),
                  "first_error_hist_onpolicy": np.bincount([k for _, k in onp]).tolist(),
                  "first_error_hist_synthetic": np.bincount([k for _, k in syn]).tolist(),
                  "heldout_questions_in_training": leak}
    timings["build_data_s"] = time.time() - t0
    tqdm.write(f"data: {json.dumps({k: v for k, v in data_stats.items()})}")

    # -- before -------------------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    before: dict[str, Any] = {}
    if not args.skip_before:
        t0 = time.time()
        before = pass_at_1(model, tok, held_out, task, samples=args.eval_samples)
        rows += localizer_rows(model, tok, eval_sampler, held_known, label="warm-up", seed=args.eval_seed,
                               max_new_tokens=args.loc_max_new_tokens)
        timings["measure_before_s"] = time.time() - t0
        tqdm.write(f"before: greedy {before['greedy_pass@1']:.3f} sampled {before['sampled_pass@1']:.3f}")

    # -- train --------------------------------------------------------------------------------
    t0 = time.time()
    model.train()
    opt, sched = make_optimizer(model, lr=args.lr, betas=wcfg.betas, weight_decay=wcfg.weight_decay,
                                warmup=args.warmup_steps, total=args.steps, min_frac=args.min_lr_frac)
    pad = int(tok.pad_token_id)
    rng = rng_for(args.seed, "locsft", "batches")
    queue: list[list[SFTExample]] = []
    history: list[dict[str, float]] = []
    bar = tqdm(total=args.steps, desc="localizer sft")
    for step in range(args.steps):
        if not queue:
            queue = bucket_batches(loc_ex, args.loc_batch, rng)
        lbatch = queue.pop()
        lr = opt.param_groups[0]["lr"]
        loss_l, n_l = sft_loss(model, lbatch, pad)
        loss = loss_l
        loss_s = torch.zeros(())
        if args.solve_batch:
            loss_s, _ = sft_loss(model, solve_ex[step * args.solve_batch:(step + 1) * args.solve_batch], pad)
            loss = loss + args.solve_weight * loss_s
        loss.backward()  # type: ignore[no-untyped-call]
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), wcfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        row = {"step": step + 1, "loss_loc": float(loss_l.detach()), "loss_solve": float(loss_s.detach()),
               "lr": lr, "grad_norm": float(gnorm), "loc_tokens": n_l, "wall_s": time.time() - t0}
        history.append(row)
        bar.update(1)
        bar.set_postfix(loc=f"{row['loss_loc']:.3f}", solve=f"{row['loss_solve']:.3f}", lr=f"{lr:.1e}")
    bar.close()
    model.eval()
    timings["train_s"] = time.time() - t0
    timings["train_s_per_step"] = timings["train_s"] / args.steps

    # -- after --------------------------------------------------------------------------------
    t0 = time.time()
    after = pass_at_1(model, tok, held_out, task, samples=args.eval_samples)
    rows += localizer_rows(model, tok, eval_sampler, held_known, label="trained", seed=args.eval_seed,
                           max_new_tokens=args.loc_max_new_tokens)
    timings["measure_after_s"] = time.time() - t0
    truth = np.array([k for _, k in held_known])
    n = np.array([c.n_thoughts for c, _ in held_known])
    ug = float(np.mean(1.0 / n)) if len(n) else float("nan")
    rows.append({"localizer": "uniform (RRPO, expected)", "beta": 1 - ug, "gamma": ug,
                 "at_or_before": float(np.mean(truth / n)) if len(n) else float("nan"), "fallback": 0.0,
                 "factor": ug * ug, "n_chains": float(len(n))})
    timings["total_s"] = time.time() - t_start

    # -- save ---------------------------------------------------------------------------------
    info = {"key": f"locsft-{tag}", "localizer_sft": {"args": vars(args), "base": str(args.warmup),
                                                    "base_key": meta.get("key")},
            "history": history, "metrics": {"before": before, "after": after}}
    ckpt = save_warmup(run_dir / "model", model, tok, wcfg, info)
    results = {"args": vars(args), "checkpoint": str(ckpt), "heldout_chains": held_stats, "data": data_stats,
               "pass@1": {"before": before, "after": after}, "localizers": rows, "timings": timings,
               "final_loss": {k: float(np.mean([h[k] for h in history[-10:]])) for k in ("loss_loc", "loss_solve")}}
    write_json_atomic(run_dir / "results.json", results, indent=1, default=float)

    # -- report -------------------------------------------------------------------------------
    print(f"\nheld-out failed chains with a known first error: {len(held_known)} "
          f"(of {held_stats['chains']:.0f} sampled from the warm-up, seed {args.eval_seed})")
    print("(beta, gamma, <=true: a fallback counts as a reset at step 1, as the trainer does; "
          "*_ans: answered (non-fallback) localizations only)")
    print(f"{'localizer':<28} {'beta':>6} {'gamma':>6} {'<=true':>7} {'fallbk':>7} {'(1-b)g':>7} "
          f"{'beta_ans':>8} {'<=t_ans':>8}")
    nan = float("nan")
    for r in rows:
        print(f"{r['localizer']:<28} {r['beta']:6.3f} {r['gamma']:6.3f} {r['at_or_before']:7.3f} "
              f"{r['fallback']:7.3f} {r['factor']:7.3f} {r.get('beta_answered', nan):8.3f} "
              f"{r.get('at_or_before_answered', nan):8.3f}")
    print(f"{'pass@1 (held-out)':<28} {'greedy':>8} {'sampled':>8}")
    for label, m in (("warm-up", before), ("trained", after)):
        if m:
            print(f"{label:<28} {m['greedy_pass@1']:8.3f} {m['sampled_pass@1']:8.3f}")
    print(f"timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    print(f"checkpoint: {ckpt}\nresults: {run_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
