"""Supervised warm-up of the CPU synthetic track: a tiny character LM learns the arithmetic chains.

The RL phase needs a starting policy that is *imperfect and improvable*: it must solve the task
often enough for rewards to vary within a group, and fail often enough for resets to matter. This
module trains one from scratch (``docs/cpu-track.md``): a ~1M-parameter Llama (hidden 128, 4 layers,
4 heads, intermediate 512, tied embeddings) over ``respo.llm.models.char_tokenizer``, on
``respo.tasks.synthetic`` chains of which ``error_frac`` (15%) carry one injected wrong step
with the later steps consistent with it, so the model also learns to make (and carry) slips.

What lives here:

- ``SFTConfig``: every knob of the warm-up, hashed into the cache key (``SFTConfig.key``).
- ``sft_examples``: prompt + solution token ids, rendered EXACTLY as ``LMSampler`` sees them:
  the prompt is ``LMSampler.prompt_ids`` (``completion_prompt(question, delimiter="\\n",
  variant="small")`` through the tokenizer with its default specials: no BOS for the char
  tokenizer), the solution is each line's ids followed by the canonical delimiter ids (the
  newline token). The last line is ``\\boxed{v}`` (``answer_style="boxed"``, the setting of the
  RL trainer's ``arithmetic`` task), which the sampler's default ``boxed_answer`` detector
  recognises, so generation stops with ``stop_reason="answer"`` right after its newline; no EOS
  is appended (the sampler never samples past a final thought). The loss mask covers the
  solution tokens only (delimiters included).
- ``sft_loss``: token-mean cross entropy on the solution tokens; the prompt prefix shared by the
  whole batch (the fixed instruction text) is run once and its KV cache repeated over the batch,
  which gives the same logits as a full forward pass (a test checks it) at about half the cost.
- ``train_sft(cfg)``: AdamW, linear warm-up then cosine decay over ``schedule_steps``; returns the
  model and the per-step history. No I/O, no argv (design rule P11, docs/design.md).
- ``evaluate_policy``: greedy and sampled pass@1 of the plain agent, sampled by the one
  evaluator (``respo.llm.evaluator``: ``LMSampler`` over ``HFBackend``, as the trainer's in-loop
  evaluation and ``respo eval run``), plus the per-step error rate and the distribution of the
  first wrong step of sampled chains (``task.first_error``).
- ``warmup_checkpoint(cfg, cache_dir)``: train once, save (``save_pretrained`` model and
  tokenizer + ``sft.json``) atomically under ``cache_dir/sft-<key>``, reuse afterwards. The
  folder loads with plain transformers, so the RL trainer can take it as ``--model.name <dir>``.

Deviations: none from the paper, which starts from an instruction-tuned model; this warm-up is
the CPU-track substitute for that model (``docs/cpu-track.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

# Every respo.llm module is imported here, at import time, not lazily inside functions: a long
# run must not pick up a half-edited sibling module in the middle of training.
from respo.llm.evaluator import Evaluator
from respo.llm.generation import HFBackend
from respo.llm.models import char_tokenizer, tiny_model
from respo.llm.prompts import PromptVariant, completion_prompt
from respo.llm.sampler import SampleConfig
from respo.llm.thoughts import ThoughtFormat
from respo.seeding import int_seed_for
from respo.tasks.base import Problem
from respo.tasks.synthetic import OPS, ArithmeticSpec, StepNoise, generate_problems, warmup_examples

FORMAT_VERSION = 1
"""Bumped whenever the rendering, the training loop or the saved layout changes (part of the key)."""

INFO_FILE = "sft.json"
"""Metadata file of a cached warm-up checkpoint (config, history, metrics)."""


@dataclass(frozen=True)
class SFTConfig:
    """The supervised warm-up run (defaults: the measured starting point of ``docs/cpu-track.md``)."""

    hidden: int = 128
    """Hidden size of the Llama (docs/cpu-track.md: 128)."""
    layers: int = 4
    """Transformer layers (docs/cpu-track.md: 4)."""
    heads: int = 4
    """Attention heads (docs/cpu-track.md: 4)."""
    intermediate: int = 512
    """MLP width (docs/cpu-track.md: 512); with tied embeddings and the 105-id character vocabulary
    1,063,168 parameters in all."""
    steps: int = 500
    """Optimizer steps actually taken. With the bare prompt the transition comes at ~250-400
    steps (held-out greedy pass@1 0.24 / 0.48 / 0.91 after 250 / 300 / 400 steps of this 500-step
    schedule, ``experiments/LOG.md``); the RL track starts from the 400-step snapshot."""
    schedule_steps: int | None = None
    """Length of the cosine schedule (None = ``steps``). Setting it above ``steps`` describes a
    run stopped early: the model after ``steps`` steps of a longer schedule (snapshots)."""
    batch_size: int = 128
    """Examples per optimizer step (docs/cpu-track.md: 128). Each example is a fresh problem."""
    lr: float = 3e-3
    """Peak AdamW learning rate (docs/cpu-track.md: 3e-3)."""
    warmup_steps: int = 20
    """Linear learning-rate warm-up steps before the cosine decay."""
    min_lr_frac: float = 0.0
    """Final learning rate as a fraction of ``lr`` at the end of the cosine."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    error_frac: float = 0.15
    """Fraction of training chains with one injected wrong step, later steps consistent with it
    (docs/cpu-track.md: 15%); makes the warmed-up policy imperfect in the way resets can fix."""
    seed: int = 0
    """Root seed: model init ``int_seed_for(seed, "init")``, problems ``(seed, "data", "sft")``,
    corruptions ``(seed, "data", "warmup")``."""
    min_steps: int = 3
    """Fewest operations per problem (``ArithmeticSpec.min_steps``)."""
    max_steps: int = 6
    """Most operations per problem (``ArithmeticSpec.max_steps``)."""
    modulus: int = 10
    """Values modulo this (``ArithmeticSpec.modulus``)."""
    ops: tuple[str, ...] = OPS
    """Operation set (``ArithmeticSpec.ops``)."""
    answer_style: Literal["equals", "boxed"] = "boxed"
    """Final line ``\\boxed{v}`` (detected by the sampler's default ``boxed_answer``, as in the RL
    trainer's ``arithmetic`` task) or ``=v`` (needs another answer detector in the sampler)."""
    delimiter: str = "\n"
    """Thought delimiter the sampler will use (``SamplingConfig.delimiter``)."""
    prompt_variant: PromptVariant = "bare"
    """Completion prompt wording the sampler will use (``SamplingConfig.prompt_variant``). ``bare``
    (just ``Q: <question>``): with the ``small`` instruction prompt the model had not reached the
    transition after 600 steps (greedy pass@1 0.17), with ``bare`` it had by 300."""
    noise_step: float | None = None
    """None: ``error_frac`` of the chains carry one injected error (the original warm-up). A
    number: every step line slips independently with this probability (``StepNoise.step``), and
    ``error_frac`` is unused."""
    noise_hard: float | None = None
    """Per-step slip probability at the hard operation (``StepNoise.hard``; None: ``noise_step``)."""
    noise_answer: float = 0.0
    """Probability that the answer line mis-copies the last value (``StepNoise.answer``)."""
    hard_op: str = ""
    """The task's hard operation (``ArithmeticSpec.hard_op``; empty: none)."""
    hard_frac: float = 0.0
    """Per-step frequency of the hard operation in the warm-up's problems (``ArithmeticSpec.hard_frac``)."""

    def __post_init__(self) -> None:
        for k in ("hidden", "layers", "heads", "intermediate", "steps", "batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.schedule_steps is not None and self.schedule_steps < self.steps:
            raise ValueError(f"schedule_steps={self.schedule_steps} must be >= steps={self.steps}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_frac <= 1.0:
            raise ValueError("need warmup_steps >= 0 and 0 <= min_lr_frac <= 1")
        _ = self.spec  # validates the task fields

    @property
    def spec(self) -> ArithmeticSpec:
        """The task spec of the training problems."""
        return ArithmeticSpec(min_steps=self.min_steps, max_steps=self.max_steps, modulus=self.modulus,
                              ops=tuple(self.ops), answer_style=self.answer_style,
                              hard_op=self.hard_op, hard_frac=self.hard_frac)

    @property
    def noise(self) -> StepNoise | None:
        """The per-step slip model (None: one injected error in ``error_frac`` of the chains)."""
        if self.noise_step is None:
            return None
        return StepNoise(step=self.noise_step, hard=self.noise_hard, answer=self.noise_answer)

    @property
    def total_schedule(self) -> int:
        """Cosine length in steps (``schedule_steps`` or ``steps``)."""
        return self.schedule_steps if self.schedule_steps is not None else self.steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return out

    def key(self) -> str:
        """Cache key: hash of every field (``schedule_steps`` resolved) and ``FORMAT_VERSION``."""
        d = self.to_dict()
        d["schedule_steps"] = self.total_schedule
        # Fields added after a warm-up was shipped stay out of the key at their defaults, so the
        # shipped model keeps its key (and is found).
        for k in _LATER_FIELDS:
            if d[k] == _FIELD_DEFAULTS[k]:
                del d[k]
        blob = json.dumps({"v": FORMAT_VERSION, "cfg": d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SFTConfig:
        """Inverse of ``to_dict``."""
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


_LATER_FIELDS = ("noise_step", "noise_hard", "noise_answer", "hard_op", "hard_frac")
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SFTConfig)}


# -- rendering -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SFTExample:
    """One training sequence: ``ids`` = prompt ids + solution ids; loss on ``ids[prompt_len:]``."""

    ids: np.ndarray
    prompt_len: int
    first_error: int | None = None
    problem_id: str = ""

    @property
    def loss_mask(self) -> np.ndarray:
        """Bool [T]: True on solution tokens (the trained ones)."""
        return np.arange(len(self.ids)) >= self.prompt_len


def prompt_ids(tokenizer: Any, question: str, *, delimiter: str = "\n",
               variant: PromptVariant = "small") -> np.ndarray:
    """The prompt ids ``LMSampler.prompt_ids`` builds (a test checks they agree)."""
    text = completion_prompt(question, delimiter=delimiter, variant=variant)
    return np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)


def delimiter_ids(tokenizer: Any, delimiter: str) -> list[int]:
    """Canonical token ids of the delimiter (``Delimiter.from_tokenizer(...).canonical``)."""
    return [int(i) for i in tokenizer.encode(delimiter, add_special_tokens=False)]


def sft_examples(
    data: Sequence[tuple[Problem, Sequence[str], int | None]],
    tokenizer: Any,
    *,
    delimiter: str = "\n",
    prompt_variant: PromptVariant = "small",
) -> list[SFTExample]:
    """Render ``(problem, lines, first_error)`` triples (``warmup_examples``) as token ids.

    ids = prompt ids ++ for each line: ids(line) ++ ids(delimiter). Lines must not contain the
    delimiter text (each line is one thought).
    """
    delim = delimiter_ids(tokenizer, delimiter)
    out = []
    for problem, lines, first_error in data:
        p = prompt_ids(tokenizer, problem.question, delimiter=delimiter, variant=prompt_variant)
        sol: list[int] = []
        for line in lines:
            if delimiter in line:
                raise ValueError(f"line {line!r} of {problem.id!r} contains the delimiter")
            sol += [int(i) for i in tokenizer.encode(line, add_special_tokens=False)] + delim
        ids = np.concatenate([p, np.asarray(sol, dtype=np.int64)])
        out.append(SFTExample(ids, len(p), first_error, problem.id))
    return out


def training_data(cfg: SFTConfig, tokenizer: Any, n: int) -> list[SFTExample]:
    """The first ``n`` training examples of ``cfg`` (a prefix-stable stream: distinct problems
    keyed by ``(seed, "data", "sft")``, corruptions by ``(seed, "data", "warmup")``)."""
    problems = generate_problems(cfg.spec, n, seed=cfg.seed, split="sft")
    data = warmup_examples(problems, seed=cfg.seed, error_frac=cfg.error_frac, noise=cfg.noise,
                           hard_op=cfg.hard_op)
    return sft_examples(data, tokenizer, delimiter=cfg.delimiter, prompt_variant=cfg.prompt_variant)


# -- model and loss ------------------------------------------------------------------------------
def build_model(cfg: SFTConfig, tokenizer: Any) -> Any:
    """The untrained policy: ``tiny_model`` with ``cfg``'s sizes, init seed ``(seed, "init")``."""
    return tiny_model(len(tokenizer), int_seed_for(cfg.seed, "init"), hidden=cfg.hidden,
                      layers=cfg.layers, heads=cfg.heads, intermediate=cfg.intermediate,
                      eos_token_id=int(tokenizer.eos_token_id), pad_token_id=int(tokenizer.pad_token_id))


def _cache_kw(model: Any) -> str:
    # transformers >= 5.2x renamed ``past_key_values`` to ``cache`` (as in HFBackend).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def shared_prefix_len(examples: Sequence[SFTExample]) -> int:
    """Length of the id prefix common to all examples, kept below every ``prompt_len``.

    The cap keeps the token that predicts the first solution token out of the shared part.
    """
    first = examples[0].ids
    n = min(e.prompt_len for e in examples) - 1
    for e in examples[1:]:
        m = min(n, len(e.ids))
        diff = np.flatnonzero(first[:m] != e.ids[:m])
        n = int(diff[0]) if len(diff) else m
    return max(n, 0)


def sft_logits(model: Any, examples: Sequence[SFTExample], pad_id: int,
               *, share_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Logits after the shared prefix: (logits [B, R, V], targets [B, R], mask [B, R], P).

    Position ``P + r`` of example b predicts ``targets[b, r] = ids[P + r + 1]``; ``mask`` is
    True where that target is a solution token. The shared prefix (length P) is run once with
    batch 1 and its KV cache repeated B times; rows are right-padded (no attention mask needed:
    padding only follows real tokens).
    """
    P = shared_prefix_len(examples) if share_prefix else 0
    B = len(examples)
    R = max(len(e.ids) for e in examples) - P
    inp = torch.full((B, R), pad_id, dtype=torch.long)
    tgt = torch.full((B, R), pad_id, dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.bool)
    for b, e in enumerate(examples):
        ids = torch.as_tensor(e.ids, dtype=torch.long)
        n = len(ids) - P
        inp[b, :n] = ids[P:]
        tgt[b, : n - 1] = ids[P + 1:]
        mask[b, : n - 1] = torch.as_tensor(e.loss_mask[P + 1:])
    kw: dict[str, Any] = {}
    if P > 0:
        prefix = torch.as_tensor(examples[0].ids[:P], dtype=torch.long)[None]
        out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        cache.batch_repeat_interleave(B)
        kw[_cache_kw(model)] = cache
    pos = (torch.arange(R) + P)[None].expand(B, R)
    logits = model(input_ids=inp, position_ids=pos, use_cache=P > 0, **kw).logits
    return logits, tgt, mask, P


def sft_loss(model: Any, examples: Sequence[SFTExample], pad_id: int,
             *, share_prefix: bool = True) -> tuple[torch.Tensor, int]:
    """Token-mean cross entropy over the solution tokens of the batch; (loss, n_tokens).

    ``L = -(1 / N) sum_{b, t in solution(b)} log p(ids_b[t] | ids_b[:t])``.
    """
    logits, tgt, mask, _ = sft_logits(model, examples, pad_id, share_prefix=share_prefix)
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), reduction="none")
    n = int(mask.sum())
    return (nll * mask.flatten()).sum() / max(n, 1), n


def lr_multiplier(step: int, *, warmup: int, total: int, min_frac: float) -> float:
    """LR factor at 0-indexed optimizer step ``step``: linear warm-up, then cosine to ``min_frac``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    frac = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_frac + (1.0 - min_frac) * 0.5 * (1.0 + math.cos(math.pi * frac))


def make_optimizer(model: Any, *, lr: float, betas: Sequence[float], weight_decay: float,
                   warmup: int, total: int, min_frac: float) -> tuple[Any, Any]:
    """AdamW with weight decay on matrices only (not norms/biases) and the ``lr_multiplier``
    schedule (linear warm-up, cosine to ``min_frac``) as a per-step ``LambdaLR``."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(betas[0], betas[1]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: lr_multiplier(i, warmup=warmup, total=total, min_frac=min_frac))
    return opt, sched


def train_sft(
    cfg: SFTConfig,
    *,
    progress: Callable[[dict[str, float]], None] | None = None,
    snapshot_steps: Sequence[int] = (),
    on_snapshot: Callable[[int, Any], None] | None = None,
    tokenizer: Any = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train the warm-up policy; return (model in eval mode, per-step history).

    History rows: ``step`` (1-indexed), ``loss`` (solution-token mean), ``lr``, ``grad_norm``,
    ``tokens``. ``progress(row)`` is called after every step; ``on_snapshot(step, model)`` after
    the steps in ``snapshot_steps`` (the live model: copy it to keep it). Deterministic given
    ``cfg`` and the torch thread count; there is no dropout.
    """
    tok = tokenizer if tokenizer is not None else char_tokenizer()
    model = build_model(cfg, tok)
    data = training_data(cfg, tok, cfg.steps * cfg.batch_size)
    opt, sched = make_optimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                warmup=cfg.warmup_steps, total=cfg.total_schedule,
                                min_frac=cfg.min_lr_frac)
    pad = int(tok.pad_token_id)
    history: list[dict[str, float]] = []
    model.train()
    for step in range(cfg.steps):
        batch = data[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        lr = opt.param_groups[0]["lr"]
        loss, n = sft_loss(model, batch, pad)
        loss.backward()  # type: ignore[no-untyped-call]
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        row = {"step": float(step + 1), "loss": float(loss.detach()), "lr": float(lr),
               "grad_norm": float(gnorm), "tokens": float(n)}
        history.append(row)
        if progress is not None:
            progress(row)
        if on_snapshot is not None and step + 1 in snapshot_steps and step + 1 < cfg.steps:
            model.eval()
            on_snapshot(step + 1, model)
            model.train()
    model.eval()
    return model, history


# -- evaluation ----------------------------------------------------------------------------------
WARMUP_EVAL = SampleConfig(temperature=1.0, top_p=1.0, delimiter="\n", prompt_variant="small",
                           max_thought_tokens=32, max_response_tokens=192)
"""The sampling of ``evaluate_policy``'s sampled chains (its greedy chains: the same at temperature
0): T = 1 without nucleus (docs/cpu-track.md), and limits far tighter than the RL defaults that
still never bind (a trained model finishes in about 60 tokens; the longest gold line has 10;
``truncated`` reports it if they do). Pass the prompt and delimiter the model was trained with."""

EVAL_BATCH_PROMPTS = 128
"""Prompts per batched generation call of ``evaluate_policy``."""


def chain_stats(pairs: Sequence[tuple[Problem, Any]], task: Any, tokenizer: Any,
                *, delimiter: str = "\n") -> dict[str, Any]:
    """pass@1, full-chain accuracy, per-step error rate and first-error distribution of chains.

    - ``pass@1``: mean task reward (the RL reward).
    - ``chain_acc``: no wrong line (``task.first_error`` is None) and a final answer was stated,
      i.e. the whole gold chain (for the arithmetic task).
    - ``step_error``: errors / judged lines, a line being judged when all lines before it are
      gold (the MLE of a constant per-line slip probability p; cf. accuracy ~ E[(1-p)^n]).
    - ``first_error``: {"1": frac, ..., "none": frac} over chains (1-indexed line of the first
      wrong line; "none" = no wrong line, which includes unfinished correct prefixes).
    - ``hazard``: {"k": P(line k wrong | lines < k gold)}.
    """
    fmt = ThoughtFormat.for_tokenizer(tokenizer, delimiter)
    rewards, complete, errs, judged = [], [], 0, 0
    first: dict[str, int] = {}
    reach: dict[int, int] = {}
    wrong: dict[int, int] = {}
    found, trunc, lines = [], [], []
    for p, c in pairs:
        thoughts = fmt.thought_texts(c.states[-1].response_ids)
        fe = task.first_error(p, thoughts)
        rewards.append(float(c.reward))
        complete.append(float(fe is None and bool(c.info["answer_found"])))
        seen = fe if fe is not None else len(thoughts)
        judged += seen
        errs += int(fe is not None)
        for k in range(1, seen + 1):
            reach[k] = reach.get(k, 0) + 1
        if fe is not None:
            wrong[fe] = wrong.get(fe, 0) + 1
        key = str(fe) if fe is not None else "none"
        first[key] = first.get(key, 0) + 1
        found.append(float(c.info["answer_found"]))
        trunc.append(float(c.info["truncated"]))
        lines.append(float(len(thoughts)))
    m = max(len(pairs), 1)
    order = sorted((k for k in first if k != "none"), key=int) + (["none"] if "none" in first else [])
    return {
        "pass@1": float(np.mean(rewards)) if rewards else float("nan"),
        "chain_acc": float(np.mean(complete)) if complete else float("nan"),
        "step_error": errs / judged if judged else float("nan"),
        "first_error": {k: first[k] / m for k in order},
        "hazard": {str(k): wrong.get(k, 0) / reach[k] for k in sorted(reach)},
        "answer_found": float(np.mean(found)) if found else float("nan"),
        "truncated": float(np.mean(trunc)) if trunc else float("nan"),
        "mean_lines": float(np.mean(lines)) if lines else float("nan"),
        "chains": float(len(pairs)),
    }


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    task: Any,
    *,
    n_samples: int,
    seed: int,
    sampling: SampleConfig = WARMUP_EVAL,
    batch_prompts: int = EVAL_BATCH_PROMPTS,
) -> dict[str, Any]:
    """Greedy pass@1 (one chain per problem, temperature 0) and sampled statistics.

    Sampled: ``n_samples`` chains per problem with ``sampling`` (default ``WARMUP_EVAL``: T = 1, no
    nucleus, as in docs/cpu-track.md), with pass@1, full-chain accuracy, per-step error rate and the
    first-error distribution (``chain_stats``). Keys: ``greedy_pass@1``, ``greedy_chain_acc``,
    ``greedy_step_error``, ``sampled_pass@1``, ``sampled_chain_acc``, ``step_error``,
    ``first_error``, ``hazard``, ... plus the settings. The model is put in eval mode.
    """
    model.eval()
    # the one evaluator (problem i seeded by rng_for(seed, "eval", i)), as the trainer's in-loop one
    ev = Evaluator(HFBackend(model, tokenizer, device="cpu"), tokenizer, task, sampling, seed=seed,
                   chunk=batch_prompts)

    def stats(mode: str, n: int) -> dict[str, Any]:
        groups = ev.chains(mode, problems, n=n)
        pairs = [(p, c) for p, g in zip(problems, groups, strict=True) for c in g]
        return chain_stats(pairs, task, tokenizer, delimiter=sampling.delimiter)

    greedy, sampled = stats("greedy", 1), stats("sampled", n_samples)
    out: dict[str, Any] = {
        "greedy_pass@1": greedy["pass@1"], "greedy_chain_acc": greedy["chain_acc"],
        "greedy_step_error": greedy["step_error"],
        "sampled_pass@1": sampled["pass@1"], "sampled_chain_acc": sampled["chain_acc"],
    }
    out.update({k: v for k, v in sampled.items() if k not in ("pass@1", "chain_acc")})
    out.update({"temperature": sampling.temperature, "top_p": sampling.top_p, "n_samples": n_samples,
                "problems": len(problems), "seed": seed})
    return out


# -- cache ---------------------------------------------------------------------------------------
def checkpoint_path(cfg: SFTConfig, cache_dir: str | Path) -> Path:
    """``cache_dir/sft-<key>`` (exists only once complete)."""
    return Path(cache_dir) / f"sft-{cfg.key()}"


def save_warmup(path: str | Path, model: Any, tokenizer: Any, cfg: SFTConfig,
                info: dict[str, Any]) -> Path:
    """Write model + tokenizer + ``sft.json`` into a temp folder and rename it to ``path``.

    If another writer finished ``path`` first, its copy is kept and ours is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        meta = {"format": FORMAT_VERSION, "key": cfg.key(), "config": cfg.to_dict(), **info}
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.replace(tmp, path)
        except OSError:
            if not is_complete(path):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


RECIPES: dict[str, SFTConfig] = {
    "sft-warmup": SFTConfig(),
    "sft-warmup-hard": SFTConfig(steps=600, noise_step=0.01, noise_hard=0.5, noise_answer=0.01,
                                 hard_op="*7", hard_frac=0.25),
}
"""Named warm-ups (the model names ``NAME`` and ``NAME:K`` of ``ModelConfig.name``).

- ``sft-warmup``: the first CPU track's warm-up: 15% of the chains carry one injected error.
- ``sft-warmup-hard``: the coverage testbed's warm-up. Every line slips independently: ordinary
  steps and the answer line 1% of the time, the hard operation ``*7`` half of the time; ``*7`` is
  a quarter of the steps. The policy that imitates this data errs mostly at ``*7``, so on a task
  whose problems draw ``*7`` with frequency f (``arithmetic-hard:<f>``) the improvable states are
  about a share f of the visited states.
"""


def is_warmup_name(name: str) -> bool:
    """Whether a model name stands for a warm-up recipe (``RECIPES``), e.g. ``sft-warmup-hard:600``."""
    return name.partition(":")[0] in RECIPES


def warmup_config(name: str = "sft-warmup") -> SFTConfig:
    """The ``SFTConfig`` a model name stands for: a ``RECIPES`` key, or ``<key>:K`` = the same run
    stopped after K steps of its schedule (a snapshot)."""
    base = name.partition(":")[0]
    if base not in RECIPES:
        raise ValueError(f"{name!r} is not a warm-up model name; valid: "
                         f"{', '.join(f'{k} or {k}:K' for k in RECIPES)}")
    cfg = RECIPES[base]
    steps = name.partition(":")[2]
    if steps:
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"{name!r}: K in sft-warmup:K must be a positive step count")
        cfg = dataclasses.replace(cfg, steps=int(steps), schedule_steps=cfg.total_schedule)
    return cfg


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a finished warm-up checkpoint (renamed into place, ``sft.json`` present)."""
    return (Path(path) / INFO_FILE).is_file()


def warmup_checkpoint(
    cfg: SFTConfig,
    cache_dir: str | Path,
    *,
    progress: Callable[[dict[str, float]], None] | None = None,
    evaluate: Callable[[Any, Any], dict[str, Any]] | None = None,
    snapshot_steps: Sequence[int] = (),
    shipped: Sequence[str | Path] = (),
) -> Path:
    """Path of the cached warm-up checkpoint of ``cfg``; trains and saves it when missing.

    ``shipped``: folders searched first for a finished ``sft-<key>`` of the same config (the
    repository ships the CPU track's default warm-up under ``experiments/results/cpu_track/warmup``
    so the main job need not retrain it; the key covers every config field and the format
    version, so a changed config never picks up a stale model).

    ``evaluate(model, tokenizer) -> metrics`` (optional) is stored under ``metrics`` in
    ``sft.json``. ``snapshot_steps``: also cache the models after those steps, each under the
    config ``replace(cfg, steps=k, schedule_steps=cfg.total_schedule)`` (the same training,
    stopped early), if not cached yet. Leftover ``*.tmp-*`` folders of killed runs are ignored.
    """
    for folder in shipped:
        candidate = checkpoint_path(cfg, folder)
        if is_complete(candidate):
            return candidate
    path = checkpoint_path(cfg, cache_dir)
    if is_complete(path):
        return path
    tok = char_tokenizer()

    def snap(step: int, model: Any) -> None:
        scfg = dataclasses.replace(cfg, steps=step, schedule_steps=cfg.total_schedule)
        spath = checkpoint_path(scfg, cache_dir)
        if is_complete(spath):
            return
        m = copy.deepcopy(model)
        metrics = evaluate(m, tok) if evaluate is not None else {}
        save_warmup(spath, m, tok, scfg, {"history": hist[:step], "metrics": metrics})

    hist: list[dict[str, float]] = []

    def prog(row: dict[str, float]) -> None:
        hist.append(row)
        if progress is not None:
            progress(row)

    model, history = train_sft(cfg, progress=prog, snapshot_steps=snapshot_steps, on_snapshot=snap,
                               tokenizer=tok)
    metrics = evaluate(model, tok) if evaluate is not None else {}
    return save_warmup(path, model, tok, cfg, {"history": history, "metrics": metrics})


def load_warmup(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, ``sft.json`` contents) of a cached checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a finished warm-up checkpoint (no {INFO_FILE})")
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    return model, tok, json.loads((path / INFO_FILE).read_text())


__all__ = [
    "EVAL_BATCH_PROMPTS", "SFTConfig", "WARMUP_EVAL", "SFTExample", "build_model", "chain_stats", "checkpoint_path", "evaluate_policy",
    "is_complete", "load_warmup", "warmup_config", "lr_multiplier", "prompt_ids", "save_warmup", "sft_examples",
    "sft_logits", "sft_loss", "shared_prefix_len", "train_sft", "training_data", "warmup_checkpoint",
]
