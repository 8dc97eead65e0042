"""The LLM training loop: one generator serves every variant (GRPO, RRPO, SRPO and ablations).

``train(cfg, parts, run_dir=...)`` yields one metrics dict per training step. Per step:

1. take ``prompts_per_step`` problems at the run's data position (``respo.llm.data``); a
   process of a data-parallel run keeps its shard;
2. ``build_buffers`` (all prompts in lock-step) with ``Rngs.keyed(cfg.seed, step, j)`` (j = the prompt's index in
   the step), so every variant and every process layout draws the same random numbers;
3. advantages per group with the objective's advantage function (``respo.advantages``);
4. right-padded tensors; the trained-token mask starts at each chain's prefix state, so tokens
   copied from a parent (or a tree branch's first chain) get exactly zero gradient
   (``respo.losses.suffix_mask``);
5. old (and, with a KL term, reference) log-probs from a no-grad forward before any update
   (the first mini-batch, trained before any update, reuses its own forward, detached);
6. ``epochs`` passes over mini-batches of ``minibatch_prompts`` prompts, each one optimizer step
   (AdamW, gradient clipping, LR schedule), accumulating gradients over micro-batches with the
   mini-batch's global token / sequence counts as the aggregation norm, so micro-batching and
   data parallelism leave the loss unchanged; then a generation engine with its own copy of the
   weights (``VLLMBackend``) gets the new weights (``sync_weights``), before evaluation and the
   next step's rollouts;
7. metrics (loss, rewards, reset and fallback counts, G1/G2, token counts, timings), a JSONL line
   and a checkpoint in ``run_dir``, then ``yield``.

A non-finite loss or gradient norm raises ``NonFiniteLossError`` before the optimizer step, so
the weights and the last checkpoint stay good.

What does not live here: argv, progress bars, wandb (``respo.commands.train``), the loss math
(``respo.losses``), the buffer logic (``respo.buffer``), generation (``respo.llm.sampler``).

Deviations: the loop requires a dropout-free model (checked at start; the paper's models have
none), so the no-grad and the training forwards compute the same function and the first
mini-batch can reuse its own forward as the old log-probs. The model is in eval mode except
during updates with gradient checkpointing (which transformers only runs in train mode).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from respo.advantages import TOKEN_ADVANTAGES, Segments, get_advantage
from respo.buffer import Buffer, Rngs, buffer_metrics, build_buffers
from respo.llm.checkpoint import (
    hold_run_lock,
    latest_checkpoint,
    load_checkpoint,
    load_checkpoint_distributed,
    save_checkpoint,
    save_checkpoint_distributed,
)
from respo.llm.config import TrainConfig, config_to_dict
from respo.llm.data import shard, step_indices
from respo.llm.metrics import append_jsonl, truncate_after_step, write_json_atomic
from respo.losses import agg_loss, get_loss, kl_k3, masked_mean, suffix_mask, token_logprobs
from respo.resets import Chain, Localizer, Sampler, localizer_quality
from respo.tasks.base import Problem, check_reward


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the optimizer step was not taken."""


@dataclass
class Parts:
    """What a run trains and samples with (built from a config by ``build_parts``, or by tests).

    ``sampler`` implements ``respo.resets.Sampler`` over ``TokenState`` chains and ``root(problem)``
    gives a problem's root state; ``localizer`` is None for GRPO. ``policy`` is what the sampler
    and localizer receive as their policy argument (None for ``LMSampler``: it samples with its
    backend, which holds ``model``, so updates are seen at once; a backend with its own copy of
    the weights, i.e. with a ``sync_weights(model)`` method such as ``VLLMBackend``, is handed
    the model after every step's updates, and once after a resume). ``evaluate``
    (optional) maps (policy, problems) to a dict of held-out metrics. ``pad_id`` pads batches.
    """

    model: torch.nn.Module
    sampler: Sampler[Any, Any]
    root: Callable[[Problem], Any]
    train_problems: Sequence[Problem]
    localizer: Localizer[Any, Any] | None = None
    eval_problems: Sequence[Problem] = ()
    tokenizer: Any = None
    pad_id: int = 0
    policy: Any = None
    evaluate: Callable[[Any, Sequence[Problem]], dict[str, float]] | None = None
    stats_sources: Sequence[Callable[[], dict[str, float]]] = ()
    """Counters read (and reset) once per step, e.g. ``LMSampler.pop_stats`` (``gen/tokens``)
    and a localizer's ``pop_stats`` (``localize/tokens``: SRPO's localization overhead); summed
    over processes and reported as they are."""
    judge: Callable[[Chain[Any]], int | None] | None = None
    """The task's ground-truth first erroneous thought of a chain (tasks with a step judge), used
    for the localization metrics (``loc/*``, ``rollouts.jsonl``); never for training, except by the
    oracle variant, whose localizer holds its own copy."""


# -- small helpers ------------------------------------------------------------------------------


def make_accelerator() -> Any:
    """An ``accelerate.Accelerator``: CPU (gloo under torchrun) or one CUDA device per process."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def is_fsdp(acc: Any) -> bool:
    """Whether ``acc`` (an ``accelerate.Accelerator``) shards the model with FSDP."""
    dt = getattr(acc, "distributed_type", None)
    return str(getattr(dt, "value", dt)) == "FSDP"


def push_weights(sync: Callable[..., None], model: Any, wrapped: Any, acc: Any, *, fsdp: bool) -> None:
    """Hand the current weights to a generation engine's ``sync_weights`` (``VLLMBackend``).

    Under FSDP each process holds a shard, so the full state dict is gathered first (a collective
    on every process) and passed as ``state_dict``. Every process gets all of it, because each
    colocated engine is fed by its own process (accelerate's ``get_state_dict`` would hand the
    weights to process 0 only, leaving the other engines on stale weights).
    """
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sync(model, state_dict=get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True)))
    else:
        sync(model)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (``dtype="auto"`` or ``"bfloat16"``), fp32 on CPU unless asked."""
    if cfg.model.dtype == "float32":
        return None
    if cfg.model.dtype == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" else None


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak LR at optimizer step ``i`` (linear warmup, then the schedule)."""

    def f(i: int) -> float:
        if warmup > 0 and i < warmup:
            return (i + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min((i - warmup) / max(total - warmup, 1), 1.0)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        if schedule == "linear":
            return 1.0 - frac
        raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, linear")

    return f


def trained_start(chain: Chain[Any]) -> int:
    """Index of the first trained token of a chain: the end of its copied prefix state."""
    return len(chain.states[chain.prefix_len].ids)


def n_new_tokens(chain: Chain[Any]) -> int:
    """Tokens the sampler generated for this chain (not the copied prefix)."""
    n = chain.info.get("n_generated") if chain.info else None
    return int(n) if n is not None else len(chain.states[-1].ids) - trained_start(chain)


def _skeleton(buf: Buffer[Any]) -> Buffer[Any]:
    """The buffer with token ids dropped (what ``buffer_metrics`` needs), cheap to gather."""

    def light(c: Chain[Any]) -> Chain[Any]:
        return Chain(tuple(range(c.n_thoughts + 1)), c.reward, c.prefix_len)

    return Buffer(
        chains=[light(c) for c in buf.chains], group=buf.group.copy(), role=list(buf.role),
        parents=[light(c) for c in buf.parents], locates=list(buf.locates),
        suffix_group_of=list(buf.suffix_group_of), generated=[], stats=copy.copy(buf.stats),
        branch_points=list(buf.branch_points),
    )


def chain_segments(buf: Buffer[Any], advantage: str, cfg: TrainConfig) -> list[Segments]:
    """Per-token advantage segments of every trained chain of one prompt's buffer.

    Group-relative advantages (``respo.advantages.ADVANTAGES``) give one value from each chain's
    trained start. The baselines' token-level advantages (``respo.advantages.TOKEN_ADVANTAGES``,
    from ``respo.baselines.advantages``) place node and leaf values on a tree's segments (SPO-Tree,
    TreeRL) or give one value per chain (SCoRe, Critique-GRPO).
    """
    rewards = buf.rewards
    starts = [trained_start(c) for c in buf.chains]
    on_tokens = TOKEN_ADVANTAGES.get(advantage)
    if on_tokens is None:
        adv = get_advantage(advantage)(rewards, buf.group)
        return [[(st, float(a))] for st, a in zip(starts, adv, strict=True)]
    if len(buf.source) != len(buf.chains):
        raise ValueError(f"advantage {advantage!r} needs a baseline buffer (with source links)")
    prompt_lens = [c.states[0].prompt_len for c in buf.chains]
    return on_tokens(rewards, buf.source, starts, prompt_lens, cfg.baseline)


@dataclass
class _Micro:
    ids: torch.Tensor  # [n, L] right-padded
    attn: torch.Tensor  # [n, L]
    first: int  # first target position k0 = min trained start - 1 (earlier ones are never trained)
    mask: torch.Tensor  # [n, L-1-k0] trained targets among positions k0..L-2
    adv: torch.Tensor  # [n] (one per chain) or [n, L-1-k0] (per token: tree baselines)
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    offpolicy: torch.Tensor | None = None  # [n] bool, Critique-GRPO's refinements

    @property
    def loss_kw(self) -> dict[str, Any]:
        """Extra keyword arguments of the loss (only the critique loss takes ``offpolicy``)."""
        return {} if self.offpolicy is None else {"offpolicy": self.offpolicy}


def _collate(chains: Sequence[Chain[Any]], segs: Sequence[Segments], pad_id: int, device: torch.device,
             offpolicy: Sequence[bool] | None = None) -> _Micro:
    seqs = [np.asarray(c.states[-1].ids, dtype=np.int64) for c in chains]
    lens = torch.tensor([len(s) for s in seqs])
    width = int(lens.max())
    padded = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    ids = torch.from_numpy(padded)
    attn = (torch.arange(width)[None, :] < lens[:, None]).long()
    # Target position k predicts token k + 1: trained targets are tokens start..len-1.
    start = torch.tensor([sg[0][0] for sg in segs])
    if (start < 1).any():
        raise ValueError("a chain's trained tokens must follow at least one prompt token")
    resp = torch.arange(width - 1)[None, :] < (lens - 1)[:, None]
    mask = suffix_mask(resp, start - 1)
    # Positions before the earliest trained target (the shared prompt, copied prefixes) need no
    # logits: the forward computes logits from position k0 on only (``logits_to_keep``).
    k0 = int(start.min()) - 1
    if all(len(sg) == 1 and sg[0][1] is not None for sg in segs):
        adv = torch.tensor([sg[0][1] for sg in segs], dtype=torch.float32)
    else:  # per token: target position t predicts token t + 1
        full = torch.zeros((len(segs), width - 1), dtype=torch.float32)
        for i, sg in enumerate(segs):
            for pos, a in sg:
                full[i, max(pos - 1, 0):] = 0.0 if a is None else a
                if a is None:  # an untrained segment, up to the next one
                    nxt = [p for p, _ in sg if p > pos]
                    mask[i, max(pos - 1, 0): (min(nxt) - 1 if nxt else None)] = False
        adv = full[:, k0:]
    off = None
    if offpolicy is not None and any(offpolicy):
        off = torch.tensor(list(offpolicy), dtype=torch.bool, device=device)
    return _Micro(ids.to(device), attn.to(device), k0, mask[:, k0:].to(device), adv.to(device),
                  offpolicy=off)


class _StatAccumulator:
    """Loss statistics over one step, independent of micro-batching and process count.

    ``loss``/``pg_loss`` are additive (micro-batch losses carry the mini-batch norm): summed per
    optimizer step, averaged over optimizer steps. ``*_max`` keys take the maximum. All others
    are per-token means, weighted by the micro-batch's trained tokens.
    """

    ADDITIVE = ("loss", "pg_loss")

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.maxes: dict[str, torch.Tensor] = {}
        self.tokens = torch.zeros((), dtype=torch.float64)

    def add(self, st: dict[str, torch.Tensor], n_tokens: torch.Tensor) -> None:
        w = n_tokens.detach().double().cpu()
        self.tokens = self.tokens + w
        for k, v in st.items():
            v = v.detach().double().cpu()
            if k.endswith("_max"):
                self.maxes[k] = torch.maximum(self.maxes[k], v) if k in self.maxes else v
            elif k in self.ADDITIVE:
                self.sums[k] = self.sums.get(k, torch.zeros((), dtype=torch.float64)) + v
            else:
                self.sums[k] = self.sums.get(k, torch.zeros((), dtype=torch.float64)) + v * w

    def result(self, *, n_optimizer_steps: int, world: int) -> dict[str, torch.Tensor]:
        keys = sorted(self.sums)
        vec = torch.stack([self.sums[k] for k in keys] + [self.tokens])
        mkeys = sorted(self.maxes)
        mvec = torch.stack([self.maxes[k] for k in mkeys]) if mkeys else None
        if world > 1:
            vec = _all_reduce(vec, "sum")
            mvec = _all_reduce(mvec, "max") if mvec is not None else None
        tokens = vec[-1].clamp_min(1.0)
        out = {}
        for k, v in zip(keys, vec[:-1], strict=True):
            out[f"loss/{k}"] = v / (world * max(n_optimizer_steps, 1)) if k in self.ADDITIVE else v / tokens
        if mvec is not None:
            out.update({f"loss/{k}": v for k, v in zip(mkeys, mvec, strict=True)})
        return out


def _check_no_dropout(model: torch.nn.Module) -> None:
    """The loop assumes a dropout-free model (old log-probs = a detached training forward)."""
    bad = [n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Dropout) and mod.p > 0]
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        v = getattr(cfg, key, 0.0) if cfg is not None else 0.0
        if isinstance(v, (int, float)) and v > 0:
            bad.append(f"config.{key}={v}")
    if bad:
        raise ValueError(f"the training loop assumes no dropout; found {bad[:5]} (set them to 0)")


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    """All-reduce across processes (sum / min / max) on a copy; identity without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t
    out = t.clone()
    dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                             "max": dist.ReduceOp.MAX}[op])
    return out


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the (unwrapped) model's forward takes ``logits_to_keep`` (transformers >= 4.50)."""
    import inspect

    inner = model
    while hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _hf_config(model: Any) -> Any:
    """The transformers config of ``model`` through DDP / FSDP1 (``.module``) and PEFT wrappers."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "config") and hasattr(inner.config, "_attn_implementation"):
            return inner.config
        inner = getattr(inner, "module", None)
        if inner is None:
            break
    return None


@contextlib.contextmanager
def attention_implementation(model: Any, impl: str | None) -> Iterator[None]:
    """Run the block with transformers' attention ``impl`` (``eager``, ``sdpa``); None or
    ``same``: unchanged. The layers read the shared config at every forward, so this switches the
    wrapped and the unwrapped model alike; the previous value is restored on exit."""
    conf = _hf_config(model) if impl not in (None, "same") else None
    if conf is None:
        yield
        return
    old = conf._attn_implementation
    conf._attn_implementation = impl
    try:
        yield
    finally:
        conf._attn_implementation = old


def _logits(model: Any, m: _Micro, dtype: torch.dtype | None, keep: bool = False,
            attn: str | None = None) -> torch.Tensor:
    """Logits of target positions t = k0 .. L-2, shape [n, L-1-k0, V] (``attn``: the attention
    implementation to use, ``attention_implementation``)."""
    ctx = torch.autocast(m.ids.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    width = m.ids.shape[1]
    with ctx, attention_implementation(model, attn):
        if keep:  # logits of positions k0 .. L-1 only
            logits = model(input_ids=m.ids, attention_mask=m.attn, logits_to_keep=width - m.first).logits
        else:
            logits = model(input_ids=m.ids, attention_mask=m.attn).logits[:, m.first:]
    return logits[:, :-1]


def _logp(model: Any, m: _Micro, temperature: float, dtype: torch.dtype | None,
          keep: bool = False, attn: str | None = None) -> torch.Tensor:
    """log pi(token_{t+1} | tokens_<=t) for target positions t = k0 .. L-2, shape [n, L-1-k0]."""
    return token_logprobs(_logits(model, m, dtype, keep, attn), m.ids[:, m.first + 1:],
                          temperature=temperature)


def token_grad_magnitudes(model: Any, m: _Micro, loss_fn: Callable[..., Any], *, agg: str,
                          norm: torch.Tensor, temperature: float, dtype: torch.dtype | None,
                          keep: bool, clip_eps: float, clip_c: float | None,
                          attn: str | None = None) -> torch.Tensor:
    """Per-token gradient magnitude ``|| d loss / d logits_t ||_2`` at the current weights, [n, T].

    The loss is the run's own (``loss_fn`` with its aggregation and mini-batch ``norm``), with the
    old log-probs of ``m`` (the current ones when unset: ratio 1). Only the logits are leaves, so
    no parameter gradient is formed; untrained positions are 0. This is the "mean per-token
    |grad|" of the paper's gradient-concentration figure, measured where the loss enters the model.
    """
    with torch.no_grad():
        z = _logits(model, m, dtype, keep, attn).float()
    z.requires_grad_(True)
    with torch.enable_grad():
        logp = token_logprobs(z, m.ids[:, m.first + 1:], temperature=temperature)
        old = m.old_logp if m.old_logp is not None else logp.detach()
        loss, _ = loss_fn(logp, old, m.adv, m.mask, agg=agg, clip_eps=clip_eps, clip_c=clip_c, norm=norm,
                          **m.loss_kw)
        (g,) = torch.autograd.grad(loss, z)
    return g.norm(dim=-1) * m.mask


# -- rollout records and localization metrics (experiments/notes/run-format.md) -----------------


def rollout_records(buffers: Sequence[Buffer[Any]], problems: Sequence[Problem],
                    judge: Callable[[Chain[Any]], int | None] | None) -> list[dict[str, Any]]:
    """One JSON-ready record per prompt: fresh rewards and, per localized parent, the reset step,
    the fallback flag, the ground-truth first error (``judge``; None without one) and the rewards
    of its suffix group. For the tree baselines the ``resets`` entries are the first chains'
    branch points (``Buffer.localized``), with empty suffix lists."""
    out: list[dict[str, Any]] = []
    for prob, b in zip(problems, buffers, strict=True):
        groups = b.group.tolist()
        fresh = [float(c.reward) for c, r in zip(b.chains, b.role, strict=True) if r == "fresh"]
        resets = []
        for j, (picked, lr) in enumerate(b.localized()):  # a parent, or a tree's first chain
            g = b.suffix_group_of[j] if j < len(b.suffix_group_of) else -1
            suffix = [float(c.reward) for c, gg, r in zip(b.chains, groups, b.role, strict=True)
                      if g >= 0 and gg == g and r == "suffix"]
            truth = judge(picked) if judge is not None else None
            resets.append({"n_thoughts": picked.n_thoughts, "step": lr.step, "fell_back": bool(lr.fell_back),
                           "truth": None if truth is None else int(truth), "suffix": suffix})
        out.append({"problem": str(prob.id), "fresh": fresh, "resets": resets})
    return out


def localization_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``loc/*`` and ``g2/pass_clean|erroneous`` of one step's records.

    beta (false-discovery rate) and gamma (recall) compare the reset step actually used (a
    fallback's step included: it is where the suffix group was sampled) with the ground-truth first
    error, over parents whose truth is known (``respo.resets.localizer_quality``). A kept prefix
    (thoughts 1..k-1) is clean when truth >= k, erroneous when truth < k.
    """
    rs = [r for rec in records for r in rec["resets"]]
    q = localizer_quality([r["step"] for r in rs], [r["truth"] for r in rs])
    clean = [x for r in rs if r["truth"] is not None and r["step"] is not None and r["truth"] >= r["step"]
             for x in r["suffix"]]
    err = [x for r in rs if r["truth"] is not None and r["step"] is not None and r["truth"] < r["step"]
           for x in r["suffix"]]
    nan = float("nan")
    return {
        "loc/beta": q["beta"], "loc/gamma": q["gamma"], "loc/at_or_before": q["at_or_before"],
        "loc/n": q["n_chains"],
        "g2/pass_clean": float(np.mean([x >= 1.0 for x in clean])) if clean else nan,
        "g2/pass_erroneous": float(np.mean([x >= 1.0 for x in err])) if err else nan,
        "g2/count_clean": float(len(clean)), "g2/count_erroneous": float(len(err)),
    }


def thought_grads(chain: Chain[Any], g: torch.Tensor, first: int) -> list[float | None]:
    """Mean per-token gradient magnitude of each thought of ``chain`` (None for copied thoughts).

    ``g`` is the chain's row of ``token_grad_magnitudes`` (column c = target position first + c,
    which predicts token first + c + 1).
    """
    out: list[float | None] = []
    for t in range(1, chain.n_thoughts + 1):
        if t <= chain.prefix_len:
            out.append(None)
            continue
        a, b = len(chain.states[t - 1].ids) - 1 - first, len(chain.states[t].ids) - 1 - first
        seg = g[max(a, 0):max(b, 0)]
        out.append(float(seg.mean()) if seg.numel() else None)
    return out


RESUME_MAY_CHANGE = ("name", "steps", "eval", "checkpoint_every", "keep_checkpoints", "derived",
                     "diagnostics_every", "log_rollouts")
"""Config fields a resumed run may change (everything else must match the saved config.json)."""


def _write_config(run_path: Path, cfg_dict: dict[str, Any], *, resume: bool) -> None:
    import json
    import os

    run_path.mkdir(parents=True, exist_ok=True)
    path = run_path / "config.json"
    if resume and path.exists():
        old = json.loads(path.read_text())
        defaults = json.loads(json.dumps(config_to_dict(TrainConfig())))
        # A field added after the run started (absent from its config.json) matches its default.
        diff = sorted(k for k in set(old) | set(cfg_dict)
                      if k not in RESUME_MAY_CHANGE
                      and old.get(k, defaults.get(k)) != json.loads(json.dumps(cfg_dict.get(k))))
        if diff:
            raise ValueError(f"cannot resume {run_path}: config differs from config.json in {diff}")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cfg_dict, indent=2) + "\n")
    os.replace(tmp, path)


# -- the loop -----------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    parts: Parts,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    accelerator: Any = None,
) -> Iterator[dict[str, Any]]:
    """Train ``parts.model`` with ``cfg``; yield one metrics dict per step (see module docstring).

    With ``run_dir``, writes ``metrics.jsonl`` (one line per step) and checkpoints there;
    ``resume=True`` continues from the latest checkpoint, dropping metric lines written after
    it, so the resumed run logs what an uninterrupted run logs.
    """
    acc = accelerator if accelerator is not None else make_accelerator()
    rank, world, device = acc.process_index, acc.num_processes, acc.device
    main = acc.is_main_process
    variant, obj = cfg.variant_row, cfg.objective
    split = variant.split
    loss_fn = get_loss(obj.loss)
    if obj.loss == "critique":
        loss_fn = functools.partial(loss_fn, gamma=cfg.baseline.critique_gamma)
    prob_mask = cfg.baseline.spo_prob_mask if obj.advantage == "spo_tree" else 0.0
    if obj.advantage not in TOKEN_ADVANTAGES:
        get_advantage(obj.advantage)  # fail early on an unknown name
    elif not variant.baseline:
        raise ValueError(f"advantage {obj.advantage!r} belongs to the baselines, not to {variant.name!r}")
    if cfg.prompts_per_step % world or cfg.minibatch_prompts % world:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} and minibatch_prompts={cfg.minibatch_prompts} "
            f"must be multiples of the number of processes ({world})"
        )
    if (variant.localizer == "none") != (parts.localizer is None):
        raise ValueError(f"variant {variant.name!r} needs localizer kind {variant.localizer!r}")
    temperature = cfg.sampling.temperature if cfg.sampling.scale_logits_by_temperature else 1.0
    gen_dtype = autocast_dtype(cfg, device)
    # The update's forwards and backward may run in bf16 while generation keeps its dtype.
    ac_dtype = torch.bfloat16 if cfg.model.update_dtype == "bfloat16" else gen_dtype
    upd_attn = cfg.model.update_attention

    model = parts.model.to(device)
    model.eval()
    _check_no_dropout(model)
    policy = parts.policy  # what the sampler / localizer receive (LMSampler: None = its backend)
    # A backend that holds its own copy of the weights (vLLM) gets the trained ones after updates.
    sync_weights = getattr(getattr(parts.sampler, "backend", None), "sync_weights", None)
    fsdp = world > 1 and is_fsdp(acc)
    ref_model = None  # copied before FSDP shards the parameters
    if cfg.kl_coef > 0 and not hasattr(model, "disable_adapter"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    wrapped = model
    if fsdp:
        # FSDP shards (replaces) the parameters when it wraps the model, so the optimizer must be
        # built over the wrapped model's parameters; DDP and one process keep their order below.
        wrapped = acc.prepare_model(model)
        params = [p for p in wrapped.parameters() if p.requires_grad]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    # No-grad forwards: under FSDP the sharded parameters only work through the wrapper.
    fwd = wrapped if fsdp else model
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.schedule, cfg.optim.warmup_steps, cfg.total_optimizer_steps))
    keep = accepts_logits_to_keep(model)
    keep_ref = ref_model is not None and accepts_logits_to_keep(ref_model)

    start_step = 0
    run_path = Path(run_dir) if run_dir is not None else None
    # Locked for this generator's life (refuses a second process on the folder; issue 16).
    _run_lock = hold_run_lock(run_path) if run_path is not None and main else None
    cfg_dict = config_to_dict(cfg)
    if run_path is not None and main:
        _write_config(run_path, cfg_dict, resume=resume)
    if run_path is not None and resume:
        ckpt = latest_checkpoint(run_path)
        if ckpt is not None:
            if fsdp:  # a collective: every process reads the files and keeps its shard
                state = load_checkpoint_distributed(ckpt, acc=acc, wrapped=wrapped, model=model,
                                                    optimizer=optimizer, scheduler=scheduler)
            else:
                state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
            start_step = int(state["step"]) + 1
        if main:  # drop lines logged after the checkpoint (all of them if there is none)
            truncate_after_step(run_path / "metrics.jsonl", start_step - 1)
            truncate_after_step(run_path / "rollouts.jsonl", start_step - 1)
    elif run_path is not None and main and (run_path / "metrics.jsonl").exists():
        raise FileExistsError(f"{run_path / 'metrics.jsonl'} exists: pass resume=True or use a new run dir")
    acc.wait_for_everyone()
    if world > 1 and not fsdp:
        wrapped = acc.prepare_model(model)
    if sync_weights is not None and start_step > 0:  # the engine still holds the initial weights
        push_weights(sync_weights, model, wrapped, acc, fsdp=fsdp)

    mb_local = cfg.minibatch_prompts // world
    n_train = len(parts.train_problems)
    eval0: dict[str, float] = {}
    def gen_ctx() -> Any:  # the generation precision; evaluation measures the sampling policy
        return torch.autocast(device.type, dtype=gen_dtype) if gen_dtype is not None else contextlib.nullcontext()

    if parts.evaluate is not None and cfg.eval.at_start and start_step == 0 and cfg.steps > 0:
        if main:
            with gen_ctx():
                ev = parts.evaluate(policy, list(parts.eval_problems)[: cfg.eval.problems])
            eval0 = {f"eval0/{k}": float(v) for k, v in ev.items()}
        acc.wait_for_everyone()
    prev_checkpoint_s: float | None = None  # written after the previous step's metrics line
    for step in range(start_step, cfg.steps):
        t_step = time.perf_counter()
        idx = step_indices(n_train, step, cfg.prompts_per_step, seed=cfg.seed)
        mine = shard(idx, rank, world)  # positions j in the step owned by this process

        # -- rollouts ------------------------------------------------------------------------
        t0 = time.perf_counter()
        for src in parts.stats_sources:  # counters start at zero for this step
            src()
        probs = [parts.train_problems[idx[j]] for j in mine]
        with torch.no_grad(), gen_ctx():
            # All prompts of the step in lock-step: a batching sampler serves each round at once.
            buffers: list[Buffer[Any]] = build_buffers(
                parts.sampler, parts.localizer, policy, [parts.root(p) for p in probs],
                split=split, rngs=[Rngs.keyed(cfg.seed, step, j) for j in mine],
                builder=variant.builder, search=cfg.sampling.reset_search)
        for prob, buf in zip(probs, buffers, strict=True):
            for i, c in enumerate(buf.generated):
                check_reward(c.reward, where=f"step {step}, problem {prob.id!r}, chain {i}")
        popped: dict[str, float] = {}
        for src in parts.stats_sources:
            for k, v in src().items():
                popped[k] = popped.get(k, 0.0) + float(v)
        t_rollout = time.perf_counter() - t0

        # -- advantages and tensors ----------------------------------------------------------
        t0 = time.perf_counter()
        segs = [chain_segments(b, obj.advantage, cfg) for b in buffers]
        advs = [[float(sg[-1][1] or 0.0) for sg in bs] for bs in segs]  # one number per chain, for records
        minibatches: list[list[_Micro]] = []
        micro_chains: list[list[list[tuple[int, int]]]] = []  # (buffer index, chain index) per row
        for m0 in range(0, len(buffers), mb_local):
            where = [(bi, ci) for bi in range(m0, min(m0 + mb_local, len(buffers)))
                     for ci in range(len(buffers[bi].chains))]
            chains = [buffers[bi].chains[ci] for bi, ci in where]
            seg = [sg for bs in segs[m0:m0 + mb_local] for sg in bs]
            off = [bool(buffers[bi].offpolicy[ci]) if buffers[bi].offpolicy else False for bi, ci in where]
            micros = [
                _collate(chains[k:k + cfg.micro_batch_chains], seg[k:k + cfg.micro_batch_chains],
                         parts.pad_id, device, off[k:k + cfg.micro_batch_chains])
                for k in range(0, len(chains), cfg.micro_batch_chains)
            ]
            minibatches.append(micros)
            micro_chains.append([where[k:k + cfg.micro_batch_chains]
                                 for k in range(0, len(chains), cfg.micro_batch_chains)])
        n_micro = torch.tensor([len(mb) for mb in minibatches], device=device)
        if world > 1 and not torch.equal(_all_reduce(n_micro, "max"), n_micro):
            raise RuntimeError("processes hold different numbers of micro-batches (unequal budgets)")
        with torch.no_grad():
            for mi, mb in enumerate(minibatches):
                for m in mb:
                    # The first mini-batch is trained before any update of this step, so its old
                    # log-probs are its own forward, detached (the same function: no dropout).
                    if mi > 0 or prob_mask > 0:
                        m.old_logp = _logp(fwd, m, temperature, ac_dtype, keep, upd_attn)
                    if prob_mask > 0:  # SPO's probability mask: confident tokens are not trained
                        m.mask = m.mask & (m.old_logp.exp() < prob_mask)
                    if cfg.kl_coef > 0:
                        if ref_model is not None:
                            m.ref_logp = _logp(ref_model, m, temperature, ac_dtype, keep_ref, upd_attn)
                        else:
                            peft_model: Any = model
                            with peft_model.disable_adapter():
                                m.ref_logp = _logp(fwd, m, temperature, ac_dtype, keep, upd_attn)
        t_prep = time.perf_counter() - t0

        # -- gradient diagnostics (pre-update weights) -------------------------------------------
        diag: dict[str, float] = {}
        heat: dict[str, Any] | None = None
        if cfg.diagnostics_every > 0 and step % cfg.diagnostics_every == 0:
            t0 = time.perf_counter()
            sums = torch.zeros(4, dtype=torch.float64, device=device)  # suffix sum, n, fresh sum, n
            rows: dict[tuple[int, int], list[float | None]] = {}
            for mb, mwhere in zip(minibatches, micro_chains, strict=True):
                n_tok = torch.stack([m.mask.sum() for m in mb]).sum().float()
                n_seq = torch.tensor(float(sum(m.ids.shape[0] for m in mb)), device=device)
                if world > 1:  # the mini-batch's global counts, as one process would see them
                    n_tok, n_seq = _all_reduce(n_tok, "sum"), _all_reduce(n_seq, "sum")
                norm = n_tok.clamp_min(1.0) if obj.agg == "token-mean" else n_seq
                for m, where in zip(mb, mwhere, strict=True):
                    g = token_grad_magnitudes(fwd, m, loss_fn, agg=obj.agg, norm=norm,
                                              temperature=temperature, dtype=ac_dtype, keep=keep,
                                              clip_eps=cfg.clip_eps, clip_c=cfg.clip_c,
                                              attn=upd_attn).double()
                    for row, (bi, ci) in enumerate(where):
                        role = buffers[bi].role[ci]
                        k = 2 if role == "fresh" else 0  # suffix-like: every derived chain
                        sums[k] += g[row].sum()
                        sums[k + 1] += m.mask[row].sum()
                        rows[(bi, ci)] = thought_grads(buffers[bi].chains[ci], g[row], m.first)
            sums = _all_reduce(sums, "sum")
            s_mean = float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")
            f_mean = float(sums[2] / sums[3]) if sums[3] > 0 else float("nan")
            diag = {"grad/suffix_token_mean": s_mean, "grad/fresh_token_mean": f_mean,
                    "grad/suffix_fresh_ratio": s_mean / f_mean if f_mean > 0 else float("nan")}
            # Draw the first prompt whose fresh and suffix groups both move (nonzero advantages),
            # else the first with both groups, else the first.
            def _moves(i: int, fresh: bool) -> bool:
                return any((r == "fresh") == fresh and a != 0
                           for r, a in zip(buffers[i].role, advs[i], strict=True))

            both = [i for i, b in enumerate(buffers) if "fresh" in b.role and set(b.role) - {"fresh"}]
            moving = [i for i in both if _moves(i, True) and _moves(i, False)]
            bi = (moving or both or [0])[0]
            if buffers:
                b = buffers[bi]
                heat = {"step": step, "problem": str(probs[bi].id), "rows": [
                    {"role": b.role[ci], "group": int(b.group[ci]), "reward": float(c.reward),
                     "advantage": float(advs[bi][ci]), "prefix_thoughts": int(c.prefix_len),
                     "thought_grad": rows[(bi, ci)]}
                    for ci, c in enumerate(b.chains)]}
            diag["time/diagnostics"] = time.perf_counter() - t0

        # -- updates -------------------------------------------------------------------------
        t0 = time.perf_counter()
        stats = _StatAccumulator()
        grad_norms: list[torch.Tensor] = []
        # transformers runs gradient checkpointing only in train mode; with no dropout (checked
        # above) train and eval mode compute the same function.
        model.train(cfg.model.gradient_checkpointing)
        for epoch in range(cfg.epochs):
            for mi, mb in enumerate(minibatches):
                n_tok = torch.stack([m.mask.sum() for m in mb]).sum().float()
                n_seq = torch.tensor(float(sum(m.ids.shape[0] for m in mb)), device=device)
                if world > 1:
                    n_tok, n_seq = _all_reduce(n_tok, "sum"), _all_reduce(n_seq, "sum")
                # Gradients are averaged over processes, so each process divides by global / world.
                # A mini-batch with no trained token (SPO drops zero-advantage segments) gives a
                # zero loss, not 0 / 0.
                norm = (n_tok.clamp_min(1.0) if obj.agg == "token-mean" else n_seq) / world
                finite = torch.ones((), dtype=torch.bool, device=device)
                for ki, m in enumerate(mb):
                    sync = ki == len(mb) - 1
                    ctx = acc.no_sync(wrapped) if (world > 1 and not sync) else contextlib.nullcontext()
                    with ctx:
                        logp = _logp(wrapped, m, temperature, ac_dtype, keep, upd_attn)
                        if m.old_logp is None:  # first mini-batch, before any update
                            m.old_logp = logp.detach()
                        loss, st = loss_fn(logp, m.old_logp, m.adv, m.mask, agg=obj.agg,
                                           clip_eps=cfg.clip_eps, clip_c=cfg.clip_c, norm=norm,
                                           **m.loss_kw)
                        if cfg.kl_coef > 0:
                            assert m.ref_logp is not None
                            kl = kl_k3(logp, m.ref_logp)
                            loss = loss + cfg.kl_coef * agg_loss(kl, m.mask, obj.agg, norm=norm)
                            st["kl_ref"] = masked_mean(kl.detach(), m.mask)
                        finite &= torch.isfinite(loss.detach())
                        acc.backward(loss)
                    st["loss"] = loss.detach()
                    st["entropy_proxy"] = masked_mean(-logp.detach(), m.mask)
                    stats.add(st, m.mask.sum())
                max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
                if fsdp and hasattr(wrapped, "clip_grad_norm_"):  # FSDP1: the norm over all shards
                    gn = wrapped.clip_grad_norm_(max_norm)
                else:
                    gn = torch.nn.utils.clip_grad_norm_(params, max_norm)
                    if hasattr(gn, "full_tensor"):  # FSDP2 / DTensor parameters
                        gn = gn.full_tensor()
                finite &= torch.isfinite(gn)
                if world > 1:
                    finite = _all_reduce(finite.float(), "min") > 0
                if not bool(finite):
                    optimizer.zero_grad(set_to_none=True)
                    last = latest_checkpoint(run_path) if run_path is not None else None
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step}, epoch {epoch}, mini-batch {mi} "
                        f"(variant {cfg.variant}, loss {obj.loss}); the optimizer step was not taken. "
                        f"Last good checkpoint: {last if last is not None else 'none'}"
                    )
                grad_norms.append(gn.detach())
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        t_update = time.perf_counter() - t0
        t_sync = None
        if sync_weights is not None:  # after every update of the step, before evaluation
            t0 = time.perf_counter()
            push_weights(sync_weights, model, wrapped, acc, fsdp=fsdp)
            t_sync = time.perf_counter() - t0

        # -- metrics -------------------------------------------------------------------------
        loss_stats = stats.result(n_optimizer_steps=len(grad_norms), world=world)
        # Gradients are identical on every process after the all-reduce, and so is their norm.
        loss_stats["loss/grad_norm"] = torch.stack(grad_norms).mean()
        local_counts = torch.tensor([
            sum(len(b.chains) for b in buffers),
            sum(int(m.mask.sum()) for mb in minibatches for m in mb),
            sum(n_new_tokens(c) for b in buffers for c in b.generated),
            sum(len(b.generated) for b in buffers),
            sum(n_new_tokens(c) for b in buffers for c in b.speculative),
            sum(len(b.speculative) for b in buffers),
            *popped.values(),
        ], dtype=torch.float64, device=device)
        counts = _all_reduce(local_counts, "sum")
        popped = {k: float(v) for k, v in zip(popped, counts[6:].tolist(), strict=True)}
        skeletons = [_skeleton(b) for b in buffers]
        fresh_gen = [c.reward for b in buffers for c in b.generated if c.prefix_len == 0]
        records = rollout_records(buffers, probs, parts.judge)
        if world > 1:
            from accelerate.utils import gather_object

            skeletons = gather_object(skeletons)
            fresh_gen = gather_object(fresh_gen)
            records = gather_object(records)
        rows = [(c.reward, r) for b in skeletons for c, r in zip(b.chains, b.role, strict=True)]
        g2 = [r for r, role in rows if role == "suffix"]
        derived = [r for r, role in rows if role not in ("fresh", "suffix")]  # baselines' chains
        g1 = [r for r, role in rows if role == "fresh"]
        metrics: dict[str, Any] = {
            "step": step,
            "variant": cfg.variant,
            "pairing": obj.pairing,
            "loss_name": obj.loss,
            "agg": obj.agg,
            "data/position": (step + 1) * cfg.prompts_per_step,
            "lr": float(scheduler.get_last_lr()[0]),
        }
        metrics.update({k: float(v) for k, v in loss_stats.items()})
        metrics.update(buffer_metrics(skeletons))
        metrics.update({
            "reward/trained_mean": float(np.mean([r for r, _ in rows])) if rows else float("nan"),
            "reward/fresh_generated_mean": float(np.mean(fresh_gen)) if fresh_gen else float("nan"),
            "g1/pass_rate": float(np.mean([r >= 1.0 for r in g1])) if g1 else float("nan"),
            "g2/pass_rate": float(np.mean([r >= 1.0 for r in g2])) if g2 else float("nan"),
            "g1/count": float(len(g1)),
            "g2/count": float(len(g2)),
            "derived/pass_rate": float(np.mean([r >= 1.0 for r in derived])) if derived else float("nan"),
            "derived/count": float(len(derived)),
            "buffer/locate_fallbacks": float(sum(b.stats.locate_fallbacks for b in skeletons)),
            "buffer/topped_up": float(sum(b.stats.topped_up for b in skeletons)),
            "tokens/trained_chains": float(counts[0]),
            "tokens/trained": float(counts[1]),
            "tokens/generated": float(counts[2]),
            "tokens/generated_chains": float(counts[3]),
            "tokens/localization": popped.pop("localize/tokens", 0.0),
        })
        # one name per number: the sampler's totals are tokens/generated + tokens/speculative (and
        # the same for chains); the localizer's fallbacks are counted in buffer/locate_fallbacks
        for dup in ("gen/tokens", "gen/chains", "localize/fallbacks"):
            popped.pop(dup, None)
        if cfg.sampling.reset_search != "sequential":
            metrics["tokens/speculative"] = float(counts[4])
            metrics["tokens/speculative_chains"] = float(counts[5])
        metrics.update(popped)
        if parts.judge is not None:
            metrics.update(localization_metrics(records))
        metrics.update(diag)
        if step == 0:
            metrics.update(eval0)
        if parts.evaluate is not None and cfg.eval.every > 0 and (
                (step + 1) % cfg.eval.every == 0 or step + 1 == cfg.steps):
            t0 = time.perf_counter()
            if main:
                with gen_ctx():
                    ev = parts.evaluate(policy, list(parts.eval_problems)[: cfg.eval.problems])
                metrics.update({f"eval/{k}": float(v) for k, v in ev.items()})
            acc.wait_for_everyone()
            metrics["time/eval"] = time.perf_counter() - t0
        if t_sync is not None:
            metrics["time/sync"] = t_sync
        metrics.update({"time/rollout": t_rollout, "time/prep": t_prep, "time/update": t_update,
                        "time/step": time.perf_counter() - t_step})
        if prev_checkpoint_s is not None:  # the line is written before this step's checkpoint
            metrics["time/prev_checkpoint"], prev_checkpoint_s = prev_checkpoint_s, None

        # -- write: the metrics line first, then the checkpoint (resume drops lines after it) ---
        if run_path is not None:
            if main:
                if heat is not None:
                    write_json_atomic(run_path / "grads" / f"step_{step:06d}.json", heat)
                if cfg.log_rollouts:
                    append_jsonl(run_path / "rollouts.jsonl", {"step": step, "prompts": records})
                append_jsonl(run_path / "metrics.jsonl", metrics)
            last_step = step + 1 == cfg.steps
            every = cfg.checkpoint_every
            if last_step or (every > 0 and (step + 1) % every == 0):
                t0 = time.perf_counter()
                if fsdp:  # a collective: every process gathers, the main one writes
                    save_checkpoint_distributed(run_path, acc=acc, wrapped=wrapped, model=model,
                                                optimizer=optimizer, scheduler=scheduler, step=step,
                                                config=cfg_dict,
                                                data_position=(step + 1) * cfg.prompts_per_step,
                                                tokenizer=parts.tokenizer, keep=cfg.keep_checkpoints)
                elif main:
                    save_checkpoint(run_path, step=step, model=model, optimizer=optimizer,
                                    scheduler=scheduler, config=cfg_dict,
                                    data_position=(step + 1) * cfg.prompts_per_step,
                                    tokenizer=parts.tokenizer, keep=cfg.keep_checkpoints)
                acc.wait_for_everyone()
                prev_checkpoint_s = time.perf_counter() - t0
        yield metrics
