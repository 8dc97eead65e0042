"""The LLM training loop: one generator serves every variant (GRPO, RRPO, SRPO and ablations).

``train(cfg, parts, run_dir=...)`` yields one metrics dict per training step. It reads like the
steps it takes, each a named phase below it in this file:

1. ``collect_rollouts``: ``prompts_per_step`` problems at the run's data position
   (``respo.llm.data``; a process of a data-parallel run keeps its shard), then ``build_buffers``
   (all prompts in lock-step) with ``Rngs.keyed(cfg.seed, step, j)`` (j = the prompt's index in
   the step), so every variant and every process layout draws the same random numbers;
2. ``build_minibatches``: advantages per group with the objective's advantage function
   (``respo.advantages``) and right-padded tensors; the trained-token mask starts at each chain's
   prefix state, so tokens copied from a parent (or a tree branch's first chain) get exactly zero
   gradient (``respo.losses.suffix_mask``);
3. ``prepare_old_logprobs``: old (and, with a KL term, reference) log-probs from a no-grad forward
   before any update (the first mini-batch, trained before any update, reuses its own forward,
   detached);
4. ``gradient_diagnostics`` (every ``diagnostics_every`` steps): per-token gradient magnitudes at
   the pre-update weights;
5. ``update``: ``epochs`` passes over mini-batches of ``minibatch_prompts`` prompts, each one
   optimizer step (AdamW, gradient clipping, LR schedule), accumulating gradients over
   micro-batches with the mini-batch's global token / sequence counts as the aggregation norm,
   so micro-batching and data parallelism leave the loss unchanged; then a generation engine with
   its own copy of the weights (``VLLMBackend``) gets the new weights (``sync_weights``), before
   evaluation and the next step's rollouts;
6. ``step_metrics`` (loss, rewards, reset and fallback counts, G1/G2, token counts), ``evaluate``
   when due, timings;
7. ``write_step``: a JSONL line and, when due, a checkpoint in ``run_dir``; then ``yield``.

What differs between one process, DDP and FSDP (reductions, gathering, gradient sync, clipping,
weight pushes, checkpoints) lives in ``Distributed``; the phases call it and never branch on the
process count. A non-finite loss or gradient norm raises ``NonFiniteLossError`` before the
optimizer step, so the weights and the last checkpoint stay good.

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
from respo.jsonl import append_jsonl, truncate_after_step, write_json_atomic
from respo.llm.checkpoint import (
    hold_run_lock,
    latest_checkpoint,
    load_checkpoint,
    load_checkpoint_distributed,
    save_checkpoint,
    save_checkpoint_distributed,
)
from respo.llm.config import TrainConfig, config_to_dict, upgrade_config_dict
from respo.llm.data import shard, step_indices
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


class Distributed:
    """What the loop does differently in one process, under DDP and under FSDP, in one place.

    ``model`` is the plain model (the sampler's, the checkpoints' and, but under FSDP, the no-grad
    forwards'); ``wrapped`` is what the update trains through: the model itself in one process,
    FSDP's wrapper once ``shard_parameters`` ran, DDP's once ``replicate`` ran. The reductions and
    ``gather`` are the identity in one process, so the loop's phases never branch on the process
    count.
    """

    def __init__(self, acc: Any, model: torch.nn.Module) -> None:
        self.acc = acc
        self.rank: int = acc.process_index
        self.world: int = acc.num_processes
        self.device: torch.device = acc.device
        self.is_main: bool = acc.is_main_process
        self.fsdp = self.world > 1 and is_fsdp(acc)
        self.model = model
        self.wrapped: Any = model

    def shard_parameters(self) -> None:
        """FSDP: wrap the model, which shards (replaces) its parameters; so this runs before the
        optimizer is built over them, and before anything reads a checkpoint into them."""
        if self.fsdp:
            self.wrapped = self.acc.prepare_model(self.model)

    def replicate(self) -> None:
        """DDP: wrap the model (after a resume restored the plain model)."""
        if self.world > 1 and not self.fsdp:
            self.wrapped = self.acc.prepare_model(self.model)

    @property
    def forward_model(self) -> Any:
        """The model of no-grad forwards: under FSDP the sharded parameters only work through
        the wrapper; otherwise the plain model."""
        return self.wrapped if self.fsdp else self.model

    def shard(self, indices: Sequence[int]) -> list[int]:
        """Positions into ``indices`` that this process owns (``respo.llm.data.shard``)."""
        return shard(indices, self.rank, self.world)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return _all_reduce(t, "sum") if self.world > 1 else t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return _all_reduce(t, "max") if self.world > 1 else t

    def all(self, flag: torch.Tensor) -> torch.Tensor:
        """Whether the boolean ``flag`` holds on every process."""
        return _all_reduce(flag.float(), "min") > 0 if self.world > 1 else flag

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's ``items``, concatenated in process order."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(items))

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

    def no_sync(self, accumulate: bool) -> contextlib.AbstractContextManager[Any]:
        """With ``accumulate``, the backward keeps its gradients local (no all-reduce): every
        micro-batch of a mini-batch but the last."""
        if accumulate and self.world > 1:
            return self.acc.no_sync(self.wrapped)  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def clip_grad_norm(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the gradients to ``max_norm`` (over all shards); their norm before clipping."""
        if self.fsdp and hasattr(self.wrapped, "clip_grad_norm_"):  # FSDP1: the norm over all shards
            return self.wrapped.clip_grad_norm_(max_norm)  # type: ignore[no-any-return]
        gn = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(gn, "full_tensor"):  # FSDP2 / DTensor parameters
            gn = gn.full_tensor()
        return gn

    def push_weights(self, sync: Callable[..., None]) -> None:
        """Hand the current weights to a generation engine's ``sync_weights`` (``VLLMBackend``).

        Under FSDP each process holds a shard, so the full state dict is gathered first (a collective
        on every process) and passed as ``state_dict``. Every process gets all of it, because each
        colocated engine is fed by its own process (accelerate's ``get_state_dict`` would hand the
        weights to process 0 only, leaving the other engines on stale weights).
        """
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            sync(self.model, state_dict=get_model_state_dict(self.wrapped, options=opts))
        else:
            sync(self.model)

    def load(self, ckpt: Path, *, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
        """Restore a checkpoint (the trainer state it saved); under FSDP a collective in which
        every process reads the files and keeps its shard."""
        if self.fsdp:
            return load_checkpoint_distributed(ckpt, acc=self.acc, wrapped=self.wrapped, model=self.model,
                                               optimizer=optimizer, scheduler=scheduler)
        return load_checkpoint(ckpt, model=self.model, optimizer=optimizer, scheduler=scheduler)

    def save(self, run_path: Path, *, step: int, optimizer: torch.optim.Optimizer, scheduler: Any,
             **state: Any) -> None:
        """Write the step's checkpoint (under FSDP a collective: every process gathers, the main
        one writes; otherwise the main process writes), then wait for every process."""
        if self.fsdp:
            save_checkpoint_distributed(run_path, acc=self.acc, wrapped=self.wrapped, model=self.model,
                                        optimizer=optimizer, scheduler=scheduler, step=step, **state)
        elif self.is_main:
            save_checkpoint(run_path, step=step, model=self.model, optimizer=optimizer,
                            scheduler=scheduler, **state)
        self.barrier()


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

    def result(self, *, n_optimizer_steps: int, dist: Distributed) -> dict[str, torch.Tensor]:
        keys = sorted(self.sums)
        vec = dist.sum(torch.stack([self.sums[k] for k in keys] + [self.tokens]))
        mkeys = sorted(self.maxes)
        mvec = dist.max(torch.stack([self.maxes[k] for k in mkeys])) if mkeys else None
        tokens = vec[-1].clamp_min(1.0)
        out = {}
        for k, v in zip(keys, vec[:-1], strict=True):
            additive = k in self.ADDITIVE
            out[f"loss/{k}"] = v / (dist.world * max(n_optimizer_steps, 1)) if additive else v / tokens
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


def _with_defaults(d: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``d`` with every key it lacks taken from ``defaults``, in nested sections too."""
    return {**defaults, **{k: _with_defaults(v, defaults[k]) if isinstance(v, dict)
                           and isinstance(defaults.get(k), dict) else v for k, v in d.items()}}


def _write_config(run_path: Path, cfg_dict: dict[str, Any], *, resume: bool) -> None:
    import json

    run_path.mkdir(parents=True, exist_ok=True)
    path = run_path / "config.json"
    if resume and path.exists():
        # An older run: read in the current layout; a field added after it started (absent from
        # its config.json, at the top or inside a section) counts as its default.
        defaults = json.loads(json.dumps(config_to_dict(TrainConfig())))
        old = _with_defaults(upgrade_config_dict(json.loads(path.read_text())), defaults)
        new = json.loads(json.dumps(cfg_dict))
        diff = sorted(k for k in set(old) | set(new) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"cannot resume {run_path}: config differs from config.json in {diff}")
    write_json_atomic(path, cfg_dict, indent=2)


# -- the trained model and its optimizer ---------------------------------------------------------


@dataclass
class _Learner:
    """The trained model, its optimizer and schedule, and the settings of its forwards.

    ``logp`` is the no-grad forward (old and reference log-probs, diagnostics) or, with
    ``train=True``, the forward the update backpropagates through (DDP's or FSDP's wrapper).
    """

    cfg: TrainConfig
    dist: Distributed
    ref_model: torch.nn.Module | None  # a frozen copy for the KL term (None: PEFT's base model)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: Callable[..., Any]
    prob_mask: float  # SPO's probability mask (0: none)
    temperature: float  # the log-probs' temperature (1 unless the sampler scales logits)
    gen_dtype: torch.dtype | None  # autocast of generation and evaluation
    dtype: torch.dtype | None  # autocast of the update's forwards and backward
    attn: str | None  # the update's attention implementation (``attention_implementation``)
    keep: bool  # the model takes ``logits_to_keep``
    keep_ref: bool  # the same for ``ref_model``

    @property
    def model(self) -> torch.nn.Module:
        return self.dist.model

    def generation(self) -> contextlib.AbstractContextManager[Any]:
        """The generation precision (evaluation measures the sampling policy)."""
        if self.gen_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.gen_dtype)

    def logp(self, m: _Micro, *, train: bool = False) -> torch.Tensor:
        model = self.dist.wrapped if train else self.dist.forward_model
        return _logp(model, m, self.temperature, self.dtype, self.keep, self.attn)

    def ref_logp(self, m: _Micro) -> torch.Tensor:
        if self.ref_model is not None:
            return _logp(self.ref_model, m, self.temperature, self.dtype, self.keep_ref, self.attn)
        peft_model: Any = self.model
        with peft_model.disable_adapter():
            return self.logp(m)


def _learner(cfg: TrainConfig, parts: Parts, acc: Any) -> _Learner:
    """Check that the settings fit the parts and the process count, then build the learner."""
    variant, obj = cfg.variant_row, cfg.objective
    loss_fn: Callable[..., Any] = get_loss(obj.loss)
    if obj.loss == "critique":
        loss_fn = functools.partial(loss_fn, gamma=cfg.baseline.critique_gamma)
    if obj.advantage not in TOKEN_ADVANTAGES:
        get_advantage(obj.advantage)  # fail early on an unknown name
    elif not variant.baseline:
        raise ValueError(f"advantage {obj.advantage!r} belongs to the baselines, not to {variant.name!r}")
    world = acc.num_processes
    if cfg.prompts_per_step % world or cfg.minibatch_prompts % world:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} and minibatch_prompts={cfg.minibatch_prompts} "
            f"must be multiples of the number of processes ({world})"
        )
    if (variant.localizer == "none") != (parts.localizer is None):
        raise ValueError(f"variant {variant.name!r} needs localizer kind {variant.localizer!r}")
    gen_dtype = autocast_dtype(cfg, acc.device)
    model = parts.model.to(acc.device)
    model.eval()
    _check_no_dropout(model)
    dist = Distributed(acc, model)
    ref_model = None  # copied before FSDP shards the parameters
    if cfg.kl_coef > 0 and not hasattr(model, "disable_adapter"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    dist.shard_parameters()  # FSDP: the optimizer must see the sharded parameters
    params = [p for p in dist.wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.schedule, cfg.optim.warmup_steps, cfg.total_optimizer_steps))
    return _Learner(
        cfg=cfg, dist=dist, ref_model=ref_model, params=params, optimizer=optimizer,
        scheduler=scheduler, loss_fn=loss_fn,
        prob_mask=cfg.baseline.spo_prob_mask if obj.advantage == "spo_tree" else 0.0,
        temperature=cfg.sampling.temperature if cfg.sampling.scale_logits_by_temperature else 1.0,
        gen_dtype=gen_dtype,
        # The update's forwards and backward may run in bf16 while generation keeps its dtype.
        dtype=torch.bfloat16 if cfg.model.update_dtype == "bfloat16" else gen_dtype,
        attn=cfg.model.update_attention, keep=accepts_logits_to_keep(model),
        keep_ref=ref_model is not None and accepts_logits_to_keep(ref_model))


def _open_run(run_path: Path | None, cfg_dict: dict[str, Any], learner: _Learner, *,
              resume: bool) -> int:
    """Write (or, on resume, check) ``config.json`` and restore the latest checkpoint, dropping
    the lines logged after it; the first step to run."""
    dist = learner.dist
    if run_path is None:
        return 0
    if dist.is_main:
        _write_config(run_path, cfg_dict, resume=resume)
    if not resume:
        if dist.is_main and (run_path / "metrics.jsonl").exists():
            raise FileExistsError(f"{run_path / 'metrics.jsonl'} exists: pass resume=True or use a new run dir")
        return 0
    start_step = 0
    ckpt = latest_checkpoint(run_path)
    if ckpt is not None:
        state = dist.load(ckpt, optimizer=learner.optimizer, scheduler=learner.scheduler)
        start_step = int(state["step"]) + 1
    if dist.is_main:  # all of them if there is no checkpoint
        truncate_after_step(run_path / "metrics.jsonl", start_step - 1)
        truncate_after_step(run_path / "rollouts.jsonl", start_step - 1)
    return start_step


# -- the phases of a step -----------------------------------------------------------------------


@dataclass
class _Rollouts:
    """One step's rollouts on this process."""

    problems: list[Problem]
    buffers: list[Buffer[Any]]
    counters: dict[str, float]  # ``Parts.stats_sources`` over the step, this process's share


def collect_rollouts(parts: Parts, learner: _Learner, step: int) -> _Rollouts:
    """This process's prompts of the step, their buffers (all prompts in lock-step, so a batching
    sampler serves each round at once) and the samplers' counters."""
    cfg = learner.cfg
    idx = step_indices(len(parts.train_problems), step, cfg.prompts_per_step, seed=cfg.seed)
    mine = learner.dist.shard(idx)  # positions j in the step owned by this process
    for src in parts.stats_sources:  # counters start at zero for this step
        src()
    probs = [parts.train_problems[idx[j]] for j in mine]
    with torch.no_grad(), learner.generation():
        buffers: list[Buffer[Any]] = build_buffers(
            parts.sampler, parts.localizer, parts.policy, [parts.root(p) for p in probs],
            split=cfg.variant_row.split, rngs=[Rngs.keyed(cfg.seed, step, j) for j in mine],
            builder=cfg.variant_row.builder, search=cfg.sampling.reset_search)
    for prob, buf in zip(probs, buffers, strict=True):
        for i, c in enumerate(buf.generated):
            check_reward(c.reward, where=f"step {step}, problem {prob.id!r}, chain {i}")
    counters: dict[str, float] = {}
    for src in parts.stats_sources:
        for k, v in src().items():
            counters[k] = counters.get(k, 0.0) + float(v)
    return _Rollouts(probs, buffers, counters)


@dataclass
class _Batches:
    """One step's training tensors on this process."""

    advantages: list[list[float]]  # per buffer, one number per chain (its last segment's), for records
    minibatches: list[list[_Micro]]  # per mini-batch, its micro-batches
    rows: list[list[list[tuple[int, int]]]]  # (buffer index, chain index) of each micro-batch row


def build_minibatches(cfg: TrainConfig, parts: Parts, dist: Distributed,
                      buffers: Sequence[Buffer[Any]]) -> _Batches:
    """Advantages per group (or per token, for the tree baselines) and right-padded micro-batches
    of ``micro_batch_chains`` chains, ``minibatch_prompts / world`` prompts per mini-batch."""
    segs = [chain_segments(b, cfg.objective.advantage, cfg) for b in buffers]
    advs = [[float(sg[-1][1] or 0.0) for sg in bs] for bs in segs]
    per_mb, per_micro = cfg.minibatch_prompts // dist.world, cfg.micro_batch_chains
    minibatches: list[list[_Micro]] = []
    rows: list[list[list[tuple[int, int]]]] = []
    for m0 in range(0, len(buffers), per_mb):
        where = [(bi, ci) for bi in range(m0, min(m0 + per_mb, len(buffers)))
                 for ci in range(len(buffers[bi].chains))]
        chains = [buffers[bi].chains[ci] for bi, ci in where]
        seg = [sg for bs in segs[m0:m0 + per_mb] for sg in bs]
        off = [bool(buffers[bi].offpolicy[ci]) if buffers[bi].offpolicy else False for bi, ci in where]
        cuts = range(0, len(chains), per_micro)
        minibatches.append([_collate(chains[k:k + per_micro], seg[k:k + per_micro], parts.pad_id,
                                     dist.device, off[k:k + per_micro]) for k in cuts])
        rows.append([where[k:k + per_micro] for k in cuts])
    n_micro = torch.tensor([len(mb) for mb in minibatches], device=dist.device)
    if not torch.equal(dist.max(n_micro), n_micro):
        raise RuntimeError("processes hold different numbers of micro-batches (unequal budgets)")
    return _Batches(advs, minibatches, rows)


def prepare_old_logprobs(learner: _Learner, minibatches: Sequence[Sequence[_Micro]]) -> None:
    """Old (and, with a KL term, reference) log-probs from a no-grad forward before any update.

    The first mini-batch is trained before any update of the step, so its old log-probs are its
    own training forward, detached (the same function: no dropout); SPO's probability mask needs
    them now, and drops the tokens the policy is already confident about.
    """
    with torch.no_grad():
        for mi, mb in enumerate(minibatches):
            for m in mb:
                if mi > 0 or learner.prob_mask > 0:
                    m.old_logp = learner.logp(m)
                if learner.prob_mask > 0:
                    assert m.old_logp is not None
                    m.mask = m.mask & (m.old_logp.exp() < learner.prob_mask)
                if learner.cfg.kl_coef > 0:
                    m.ref_logp = learner.ref_logp(m)


def _minibatch_norm(mb: Sequence[_Micro], agg: str, dist: Distributed) -> torch.Tensor:
    """The loss's aggregation norm of a mini-batch over all processes, as one process would see
    it: its trained tokens (``token-mean``; at least 1, so a mini-batch with no trained token,
    e.g. SPO's dropped zero-advantage segments, gives a zero loss, not 0 / 0) or its sequences."""
    if agg == "token-mean":
        return dist.sum(torch.stack([m.mask.sum() for m in mb]).sum().float()).clamp_min(1.0)
    return dist.sum(torch.tensor(float(sum(m.ids.shape[0] for m in mb)), device=dist.device))


def _heatmap_prompt(buffers: Sequence[Buffer[Any]], advs: Sequence[Sequence[float]]) -> int:
    """The first prompt whose fresh and suffix groups both move (nonzero advantages), else the
    first with both groups, else the first."""

    def moves(i: int, fresh: bool) -> bool:
        return any((r == "fresh") == fresh and a != 0 for r, a in zip(buffers[i].role, advs[i], strict=True))

    both = [i for i, b in enumerate(buffers) if "fresh" in b.role and set(b.role) - {"fresh"}]
    moving = [i for i in both if moves(i, True) and moves(i, False)]
    return (moving or both or [0])[0]


def gradient_diagnostics(learner: _Learner, step: int, ro: _Rollouts,
                         batches: _Batches) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-token gradient magnitudes at the pre-update weights: the ``grad/*`` metrics (suffix
    against fresh chains) and one prompt's per-thought heatmap (``grads/step_N.json``)."""
    t0 = time.perf_counter()
    cfg, dist, buffers = learner.cfg, learner.dist, ro.buffers
    sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # suffix sum, n, fresh sum, n
    grads: dict[tuple[int, int], list[float | None]] = {}
    for mb, mrows in zip(batches.minibatches, batches.rows, strict=True):
        norm = _minibatch_norm(mb, cfg.objective.agg, dist)
        for m, where in zip(mb, mrows, strict=True):
            g = token_grad_magnitudes(dist.forward_model, m, learner.loss_fn, agg=cfg.objective.agg,
                                      norm=norm, temperature=learner.temperature, dtype=learner.dtype,
                                      keep=learner.keep, clip_eps=cfg.clip_eps, clip_c=cfg.clip_c,
                                      attn=learner.attn).double()
            for row, (bi, ci) in enumerate(where):
                k = 2 if buffers[bi].role[ci] == "fresh" else 0  # suffix-like: every derived chain
                sums[k] += g[row].sum()
                sums[k + 1] += m.mask[row].sum()
                grads[(bi, ci)] = thought_grads(buffers[bi].chains[ci], g[row], m.first)
    sums = dist.sum(sums)
    s_mean = float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")
    f_mean = float(sums[2] / sums[3]) if sums[3] > 0 else float("nan")
    bi = _heatmap_prompt(buffers, batches.advantages)
    b = buffers[bi]
    heat = {"step": step, "problem": str(ro.problems[bi].id), "rows": [
        {"role": b.role[ci], "group": int(b.group[ci]), "reward": float(c.reward),
         "advantage": float(batches.advantages[bi][ci]), "prefix_thoughts": int(c.prefix_len),
         "thought_grad": grads[(bi, ci)]}
        for ci, c in enumerate(b.chains)]}
    return {"grad/suffix_token_mean": s_mean, "grad/fresh_token_mean": f_mean,
            "grad/suffix_fresh_ratio": s_mean / f_mean if f_mean > 0 else float("nan"),
            "time/diagnostics": time.perf_counter() - t0}, heat


def update(learner: _Learner, minibatches: Sequence[Sequence[_Micro]], *, step: int,
           run_path: Path | None) -> dict[str, torch.Tensor]:
    """``epochs`` passes over the mini-batches, one optimizer step each; the ``loss/*`` metrics.

    Gradients accumulate over a mini-batch's micro-batches, whose losses carry the mini-batch's
    global norm divided by the process count (DDP averages gradients over processes), so
    micro-batching and data parallelism leave the loss unchanged. A non-finite loss or gradient
    norm on any process raises ``NonFiniteLossError`` before the optimizer step.
    """
    cfg, dist, agg = learner.cfg, learner.dist, learner.cfg.objective.agg
    stats = _StatAccumulator()
    grad_norms: list[torch.Tensor] = []
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
    # transformers runs gradient checkpointing only in train mode; with no dropout (checked at
    # start) train and eval mode compute the same function.
    learner.model.train(cfg.model.gradient_checkpointing)
    for epoch in range(cfg.epochs):
        for mi, mb in enumerate(minibatches):
            norm = _minibatch_norm(mb, agg, dist) / dist.world
            finite = torch.ones((), dtype=torch.bool, device=dist.device)
            for ki, m in enumerate(mb):
                with dist.no_sync(ki < len(mb) - 1):  # all-reduce the gradients once, at the last
                    logp = learner.logp(m, train=True)
                    if m.old_logp is None:  # first mini-batch, before any update
                        m.old_logp = logp.detach()
                    loss, st = learner.loss_fn(logp, m.old_logp, m.adv, m.mask, agg=agg,
                                               clip_eps=cfg.clip_eps, clip_c=cfg.clip_c, norm=norm,
                                               **m.loss_kw)
                    if cfg.kl_coef > 0:
                        assert m.ref_logp is not None
                        kl = kl_k3(logp, m.ref_logp)
                        loss = loss + cfg.kl_coef * agg_loss(kl, m.mask, agg, norm=norm)
                        st["kl_ref"] = masked_mean(kl.detach(), m.mask)
                    finite &= torch.isfinite(loss.detach())
                    dist.backward(loss)
                st["loss"] = loss.detach()
                st["entropy_proxy"] = masked_mean(-logp.detach(), m.mask)
                stats.add(st, m.mask.sum())
            gn = dist.clip_grad_norm(learner.params, max_norm)
            if not dist.all(finite & torch.isfinite(gn)):
                learner.optimizer.zero_grad(set_to_none=True)
                last = latest_checkpoint(run_path) if run_path is not None else None
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at step {step}, epoch {epoch}, mini-batch {mi} "
                    f"(variant {cfg.variant}, loss {cfg.objective.loss}); the optimizer step was not "
                    f"taken. Last good checkpoint: {last if last is not None else 'none'}"
                )
            grad_norms.append(gn.detach())
            learner.optimizer.step()
            learner.scheduler.step()
            learner.optimizer.zero_grad(set_to_none=True)
    learner.model.eval()
    out = stats.result(n_optimizer_steps=len(grad_norms), dist=dist)
    # Gradients are identical on every process after the all-reduce, and so is their norm.
    out["loss/grad_norm"] = torch.stack(grad_norms).mean()
    return out


def step_metrics(parts: Parts, learner: _Learner, step: int, ro: _Rollouts,
                 batches: _Batches, loss_stats: dict[str, torch.Tensor],
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The step's numbers over all processes (loss, rewards, resets and fallbacks, G1/G2, token
    counts, the samplers' counters, localization quality) and its rollout records."""
    cfg, dist, buffers = learner.cfg, learner.dist, ro.buffers
    counts = dist.sum(torch.tensor([
        sum(len(b.chains) for b in buffers),
        sum(int(m.mask.sum()) for mb in batches.minibatches for m in mb),
        sum(n_new_tokens(c) for b in buffers for c in b.generated),
        sum(len(b.generated) for b in buffers),
        sum(n_new_tokens(c) for b in buffers for c in b.speculative),
        sum(len(b.speculative) for b in buffers),
        *ro.counters.values(),
    ], dtype=torch.float64, device=dist.device))
    popped = {k: float(v) for k, v in zip(ro.counters, counts[6:].tolist(), strict=True)}
    skeletons = [_skeleton(b) for b in buffers]
    fresh_gen = [c.reward for b in buffers for c in b.generated if c.prefix_len == 0]
    records = rollout_records(buffers, ro.problems, parts.judge)
    skeletons, fresh_gen, records = dist.gather(skeletons), dist.gather(fresh_gen), dist.gather(records)
    rows = [(c.reward, r) for b in skeletons for c, r in zip(b.chains, b.role, strict=True)]
    g2 = [r for r, role in rows if role == "suffix"]
    derived = [r for r, role in rows if role not in ("fresh", "suffix")]  # baselines' chains
    g1 = [r for r, role in rows if role == "fresh"]
    obj = cfg.objective
    metrics: dict[str, Any] = {
        "step": step,
        "variant": cfg.variant,
        "pairing": obj.pairing,
        "loss_name": obj.loss,
        "agg": obj.agg,
        "data/position": (step + 1) * cfg.prompts_per_step,
        "lr": float(learner.scheduler.get_last_lr()[0]),
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
    return metrics, records


def evaluate(learner: _Learner, parts: Parts, prefix: str) -> dict[str, float]:
    """Held-out metrics ``<prefix>/*`` in the generation precision, on the main process (the
    others wait; their dict is empty)."""
    out: dict[str, float] = {}
    if learner.dist.is_main:
        assert parts.evaluate is not None
        with learner.generation():
            ev = parts.evaluate(parts.policy, list(parts.eval_problems)[: learner.cfg.eval.problems])
        out = {f"{prefix}/{k}": float(v) for k, v in ev.items()}
    learner.dist.barrier()
    return out


def write_step(run_path: Path | None, cfg_dict: dict[str, Any], parts: Parts, learner: _Learner,
               step: int, metrics: dict[str, Any], records: list[dict[str, Any]],
               heat: dict[str, Any] | None) -> float | None:
    """The step's files: the heatmap, rollouts and metrics lines, then the checkpoint when one is
    due (resume drops lines after it); the checkpoint's seconds (None: none written)."""
    cfg, dist = learner.cfg, learner.dist
    if run_path is None:
        return None
    if dist.is_main:
        if heat is not None:
            write_json_atomic(run_path / "grads" / f"step_{step:06d}.json", heat)
        if cfg.log_rollouts:
            append_jsonl(run_path / "rollouts.jsonl", {"step": step, "prompts": records})
        append_jsonl(run_path / "metrics.jsonl", metrics)
    every = cfg.checkpoint_every
    if not (step + 1 == cfg.steps or (every > 0 and (step + 1) % every == 0)):
        return None
    t0 = time.perf_counter()
    dist.save(run_path, step=step, optimizer=learner.optimizer, scheduler=learner.scheduler,
              config=cfg_dict, data_position=(step + 1) * cfg.prompts_per_step,
              tokenizer=parts.tokenizer, keep=cfg.keep_checkpoints)
    return time.perf_counter() - t0


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
    learner = _learner(cfg, parts, accelerator if accelerator is not None else make_accelerator())
    dist = learner.dist
    run_path = Path(run_dir) if run_dir is not None else None
    # Locked for this generator's life (refuses a second process on the folder; issue 16).
    _run_lock = hold_run_lock(run_path) if run_path is not None and dist.is_main else None
    cfg_dict = config_to_dict(cfg)
    start_step = _open_run(run_path, cfg_dict, learner, resume=resume)
    dist.barrier()
    dist.replicate()  # DDP wraps the model once a resume restored it
    # A backend that holds its own copy of the weights (vLLM) gets the trained ones after updates.
    sync_weights = getattr(getattr(parts.sampler, "backend", None), "sync_weights", None)
    if sync_weights is not None and start_step > 0:  # the engine still holds the initial weights
        dist.push_weights(sync_weights)
    eval0: dict[str, float] = {}
    if parts.evaluate is not None and cfg.eval.at_start and start_step == 0:
        eval0 = evaluate(learner, parts, "eval0")
    checkpoint_s: float | None = None  # the previous step's, written after its metrics line

    for step in range(start_step, cfg.steps):
        t_step = time.perf_counter()
        ro = collect_rollouts(parts, learner, step)
        t_rollout = time.perf_counter() - t_step

        t0 = time.perf_counter()
        batches = build_minibatches(cfg, parts, dist, ro.buffers)
        prepare_old_logprobs(learner, batches.minibatches)
        t_prep = time.perf_counter() - t0

        diag: dict[str, float] = {}
        heat: dict[str, Any] | None = None
        if cfg.diagnostics_every > 0 and step % cfg.diagnostics_every == 0:
            diag, heat = gradient_diagnostics(learner, step, ro, batches)  # pre-update weights

        t0 = time.perf_counter()
        loss_stats = update(learner, batches.minibatches, step=step, run_path=run_path)
        t_update = time.perf_counter() - t0
        timings: dict[str, float] = {}
        if sync_weights is not None:  # after every update of the step, before evaluation
            t0 = time.perf_counter()
            dist.push_weights(sync_weights)
            timings["time/sync"] = time.perf_counter() - t0

        stats, records = step_metrics(parts, learner, step, ro, batches, loss_stats)
        evals: dict[str, float] = {}
        if parts.evaluate is not None and cfg.eval.every > 0 and (
                (step + 1) % cfg.eval.every == 0 or step + 1 == cfg.steps):
            t0 = time.perf_counter()
            evals = evaluate(learner, parts, "eval")
            evals["time/eval"] = time.perf_counter() - t0
        timings.update({"time/rollout": t_rollout, "time/prep": t_prep, "time/update": t_update,
                        "time/step": time.perf_counter() - t_step})
        if checkpoint_s is not None:  # the line is written before this step's checkpoint
            timings["time/prev_checkpoint"] = checkpoint_s
        metrics = {**stats, **diag, **(eval0 if step == 0 else {}), **evals, **timings}

        checkpoint_s = write_step(run_path, cfg_dict, parts, learner, step, metrics, records, heat)
        yield metrics
