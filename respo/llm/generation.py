"""Generation backends: token ids in, token ids and sampling log-probs out.

``GenerationBackend`` is deliberately narrow (a vLLM backend fits the same two methods):

- ``generate(prompts, n=..., ...)``: n samples per prompt, returned prompt-major
  (``out[i * n + j]`` is sample j of prompt i).
- ``continue_group(prefix, n, ...)``: n continuations of ONE token-exact prefix (a reset state);
  the prefix is prefilled once and its KV cache is expanded to the n rows.

``GroupBackend`` adds ``generate_groups(prompts, counts, ...)``: ``counts[i]`` samples of prompt
i, with a per-prompt ``max_new_tokens`` and ``StopRule``, returned as one list per prompt. It is
what lets ``LMSampler.extend_many`` serve every prompt of a training step (fresh draws, suffix
groups from different reset prefixes) in ONE batched call (``experiments/LOG.md``, "Batched
generation across a step's prompts"). A backend without it still works: the sampler then calls
``continue_group`` once per request.

``HFBackend`` implements them with a hand-written batched sampling loop over a transformers
``DynamicCache`` whose layers grow in blocks of positions (``block_cache``): left padding +
attention mask + explicit position ids for ragged prompts, one prefill per distinct prompt (expanded n times with ``batch_repeat_interleave``), temperature and
top-p sampling by inverse CDF from per-row uniforms (no global RNG: design rule P7,
docs/design.md), finished rows pruned from the batch (``batch_select_indices``).

Random streams are per ROW, never per call: prompt i of a call has a seed (``seed[i]`` when a
sequence is given; ``int_seed_for(seed, "prompt", i)`` for one int; ``continue_group`` uses
``seed`` itself), and its j-th sample draws its uniforms from a torch generator seeded with
``int_seed_for(prompt_seed, "generation", j)``. So a row's sample depends only on its prompt,
prompt seed and index, not on which other prompts share the batch (up to float noise in the
batched logits): batching many requests in one call gives the same chains as one call per
request, and the first m samples of a prompt are the same whether n = m or n > m were asked
(common random numbers across variants). It runs on CPU (fp32) and CUDA (bf16, pass ``dtype``); logits are
cast to fp32 before
sampling.

Stopping (``StopRule``, ``docs/method.md`` section 2), checked per row after every token:

1. an EOS token (kept as the last generated token) -> ``stop_reason="eos"``, finished;
2. a thought completes (the delimiter rule of ``respo.llm.thoughts``) and contains a final answer
   -> ``"answer"``, finished;
3. ``max_thoughts`` thoughts completed -> ``"max_thoughts"``, finished;
4. a thought reaches ``max_thought_tokens`` without a delimiter: with ``overflow="force"`` (the
   default) the canonical delimiter tokens are *forced* as the next tokens so that the thought
   ends at exactly ``max_thought_tokens`` tokens (the forced tokens are not sampled; their
   log-probs under the model are still recorded and ``Generation.n_forced`` counts them); with
   ``overflow="stop"`` the row stops (``"thought_limit"``, not finished) and the caller cuts it
   back to its last complete thought;
5. ``max_new_tokens`` generated -> ``"length"``, not finished (the caller truncates).

Deviation from the paper's code, which makes one engine call per thought with the delimiter as a
stop string and ``max_tokens=256``: sampling the whole response in one call and splitting on
token ids gives the same distribution (``docs/method.md`` section 2); what happens after a 256-token
thought in their code is not documented, so rule 4 is our choice and is configurable.

Log-probs are ``log_softmax(logits / temperature)`` of the emitted token, before top-p filtering
(``log_softmax(logits)`` for greedy, temperature 0). Shapes: prompts [T_i] int64 -> Generation
ids [T] int64, logprobs [T] float32.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray

from respo.llm.thoughts import ThoughtFormat
from respo.seeding import int_seed_for

StopReason = Literal["eos", "answer", "max_thoughts", "length", "thought_limit"]


@dataclass(frozen=True, eq=False)
class Generation:
    """One sampled continuation: generated ids only (not the prompt) and their log-probs.

    ``finished`` is True when the row ended on its own (EOS, final answer, ``max_thoughts``) and
    False when a limit cut it (``max_new_tokens``, or a thought overflow with ``overflow="stop"``).
    """

    ids: NDArray[np.int64]
    logprobs: NDArray[np.float32]
    finished: bool
    stop_reason: str = ""
    n_forced: int = 0


@dataclass(frozen=True)
class StopRule:
    """Thought-aware stopping (see the module docstring). ``fmt=None``: EOS and length only."""

    fmt: ThoughtFormat | None = None
    max_thought_tokens: int | None = 256
    """At most this many tokens per thought, delimiter included (``docs/method.md``: 256)."""
    max_thoughts: int | None = 20
    """Stop after this many completed thoughts (``docs/method.md``: 20)."""
    overflow: Literal["force", "stop"] = "force"
    """What a thought reaching ``max_thought_tokens`` does: force the delimiter, or stop the row."""

    def __post_init__(self) -> None:
        if self.overflow not in ("force", "stop"):
            raise ValueError(f"overflow must be 'force' or 'stop', got {self.overflow!r}")
        if self.max_thoughts is not None and self.max_thoughts < 1:
            raise ValueError(f"max_thoughts must be >= 1, got {self.max_thoughts}")
        if self.fmt is not None and self.max_thought_tokens is not None:
            if self.overflow == "force" and self.max_thought_tokens <= len(self.fmt.delimiter.canonical):
                raise ValueError("max_thought_tokens must exceed the delimiter's token length")


@runtime_checkable
class GenerationBackend(Protocol):
    """Token ids in, token ids and sampling log-probs out (HF now; vLLM fits the same shape)."""

    def generate(
        self,
        prompts: Sequence[NDArray[np.int64]],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: StopRule | None = None,
    ) -> list[Generation]: ...

    def continue_group(
        self,
        prefix: NDArray[np.int64],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: StopRule | None = None,
    ) -> list[Generation]: ...


@runtime_checkable
class GroupBackend(GenerationBackend, Protocol):
    """A GenerationBackend that also samples ragged groups of many prompts in one call.

    ``generate_groups(prompts, counts, ...)`` returns ``out[i]``: ``counts[i]`` generations of
    ``prompts[i]``. ``max_new_tokens`` and ``stop`` are one value for all prompts or one per
    prompt (a reset suffix has less budget and fewer thoughts left than a fresh chain);
    ``seed`` is one int or one seed per prompt; a sample's random stream must depend only on its
    prompt's seed and its index within the prompt (see the module docstring).
    Kept separate from ``GenerationBackend`` so that backends with only the two basic methods
    (e.g. a replay backend) stay valid.
    """

    def generate_groups(
        self,
        prompts: Sequence[NDArray[np.int64]],
        counts: Sequence[int],
        *,
        max_new_tokens: int | Sequence[int],
        temperature: float,
        top_p: float,
        seed: int | Sequence[int],
        stop: StopRule | None | Sequence[StopRule | None] = None,
    ) -> list[list[Generation]]: ...


def sample_next(
    logits: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row; return (tokens [B], log-softmax [B, V] they were scored with).

    ``temperature == 0`` is greedy. Otherwise sample from ``softmax(logits / T)`` restricted to
    the smallest set of tokens whose probability reaches ``top_p`` (nucleus; at least one token):
    by inverse CDF of ``uniforms`` [B] in [0, 1) when given (row b's token is the first whose
    cumulative probability exceeds ``uniforms[b]`` times the kept mass), else by
    ``torch.multinomial`` with ``generator``.
    """
    logits = logits.float()
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if temperature == 0:
        return logits.argmax(-1), torch.log_softmax(logits, -1)
    logp = torch.log_softmax(logits / temperature, -1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    if uniforms is not None:
        cdf = probs.double().cumsum(-1)
        target = uniforms.to(cdf.device, torch.float64)[:, None] * cdf[:, -1:]
        tok = (cdf <= target).sum(-1).clamp(max=probs.shape[-1] - 1)
        return tok, logp
    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tok, logp


class RowState:
    """Bookkeeping of one output row while it is generated (python ints), shared by the
    transformers loop here and the vLLM backend's rounds (``owner``: the prompt the row belongs
    to; ``seed``: its sampling seed; ``rounds``: engine calls it took; unused by the loop here)."""

    __slots__ = ("owner", "seed", "ids", "logprobs", "thought_start", "thoughts", "pending",
                 "n_forced", "done", "finished", "reason", "rounds")

    def __init__(self, owner: int = -1, seed: int = 0) -> None:
        self.owner = owner
        self.seed = seed
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.thought_start = 0
        self.thoughts = 0
        self.pending: list[int] = []
        self.n_forced = 0
        self.done = False
        self.finished = False
        self.reason = ""
        self.rounds = 0

    def stop(self, reason: str, finished: bool) -> None:
        self.done, self.reason, self.finished = True, reason, finished


def group_args(prompts: Sequence[Any], counts: Sequence[int], max_new_tokens: Any,
               stop: Any) -> tuple[list[NDArray[np.int64]], list[int], list[int],
                                   list[StopRule | None]]:
    """``generate_groups``' arguments checked and made per prompt: id arrays, counts, token
    limits and stop rules (a single limit or rule applies to every prompt)."""
    prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
    if not prompts or any(p.ndim != 1 or len(p) == 0 for p in prompts):
        raise ValueError("prompts must be non-empty 1-D id arrays")
    counts = [int(c) for c in counts]
    if len(counts) != len(prompts) or any(c < 1 for c in counts):
        raise ValueError(f"need one count >= 1 per prompt, got {counts} for {len(prompts)} prompts")
    limits = ([int(max_new_tokens)] * len(prompts) if isinstance(max_new_tokens, (int, np.integer))
              else [int(m) for m in max_new_tokens])
    if len(limits) != len(prompts) or any(m < 1 for m in limits):
        raise ValueError(f"need max_new_tokens >= 1 per prompt, got {max_new_tokens}")
    stops: list[StopRule | None] = (list(stop) if isinstance(stop, (list, tuple))
                                    else [stop] * len(prompts))  # type: ignore[list-item]
    if len(stops) != len(prompts):
        raise ValueError(f"{len(stops)} stop rules for {len(prompts)} prompts")
    return prompts, counts, limits, stops


def advance_row(row: Any, tok: int, lp: float, forced: bool, stop: StopRule | None,
                limit: int, eos_ids: frozenset[int]) -> None:
    """Append one sampled (or ``forced`` delimiter) token to ``row`` and apply the stop rules in
    order: EOS, the end of a final-answer thought, ``max_thoughts``, the per-thought cap (stop or
    force the delimiter), the ``limit`` on new tokens. ``row``: a ``RowState`` (``VLLMBackend``
    scans engine output with the same rules)."""
    row.ids.append(tok)
    row.logprobs.append(lp)
    row.n_forced += int(forced)
    if not forced and tok in eos_ids:
        row.stop("eos", True)
        return
    if stop is not None and stop.fmt is not None:
        d = stop.fmt.delimiter
        end = len(row.ids)
        if not row.pending and d.ends_thought(row.ids, row.thought_start, end):
            row.thoughts += 1
            final = stop.fmt.is_final(row.ids[row.thought_start:end])
            row.thought_start = end
            if final:
                row.stop("answer", True)
                return
            if stop.max_thoughts is not None and row.thoughts >= stop.max_thoughts:
                row.stop("max_thoughts", True)
                return
        elif stop.max_thought_tokens is not None and not row.pending:
            room = stop.max_thought_tokens - (end - row.thought_start)
            if stop.overflow == "stop" and room <= 0:
                row.stop("thought_limit", False)
                return
            if stop.overflow == "force" and room <= len(d.canonical):
                row.pending = list(d.canonical)
    if len(row.ids) >= limit:
        row.stop("length", False)


def eos_ids_of(generation_config: Any, tokenizer: Any) -> list[int]:
    """Stop ids of generation: the tokenizer's EOS id and the EOS ids of the model's
    ``generation_config`` (None: none); what ``HFBackend`` uses when given none, and what
    ``VLLMBackend`` is given by the trainer and ``respo eval run``."""
    found: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        found.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(generation_config, "eos_token_id", None)
    if gen_eos is not None:
        found.update(int(e) for e in np.atleast_1d(gen_eos))
    return sorted(found)


class GroupsBackendBase:
    """``continue_group`` and ``generate`` in terms of the subclass's ``generate_groups`` (shared
    by ``HFBackend`` and ``VLLMBackend``, so the three calls agree by construction)."""

    def generate_groups(self, prompts: Sequence[NDArray[np.int64]], counts: Sequence[int], *,
                        max_new_tokens: int, temperature: float, top_p: float,
                        seed: int | Sequence[int],
                        stop: StopRule | None = None) -> list[list[Generation]]:
        raise NotImplementedError

    def continue_group(
        self,
        prefix: NDArray[np.int64],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: StopRule | None = None,
    ) -> list[Generation]:
        """n continuations of one token-exact prefix (``HFBackend`` prefills it once if ``share_prefix``)."""
        if n < 1:
            raise ValueError(f"need n >= 1, got {n}")
        return self.generate_groups([prefix], [n], max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, seed=[seed], stop=stop)[0]

    def generate(
        self,
        prompts: Sequence[NDArray[np.int64]],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: StopRule | None = None,
    ) -> list[Generation]:
        """n samples per prompt, prompt-major (``out[i * n + j]``); module docstring: the stop rules."""
        if n < 1:
            raise ValueError(f"need n >= 1, got {n}")
        groups = self.generate_groups(prompts, [n] * len(prompts), max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p, seed=seed, stop=stop)
        return [g for group in groups for g in group]


KV_BLOCK = 64
"""Positions by which ``HFBackend``'s key/value cache grows when it is full."""


def block_cache(config: Any, block: int = KV_BLOCK) -> Any:
    """A transformers ``DynamicCache`` whose layers grow by ``block`` positions at a time.

    transformers' ``DynamicLayer`` concatenates every new position onto its keys and values, so a
    decoding step copies the whole cache: at the CPU track's evaluation batch (512 rows, about 70
    positions) those copies were 58% of a step. Here each layer writes into a buffer with room to
    spare and hands attention views of the filled part; it copies only when the buffer is full
    (about once per ``block`` steps). The attention kernels see the same numbers, so outputs are
    unchanged. ``block=0``, a transformers without per-layer caches, or other layer kinds
    (sliding windows): the plain cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if block == 0:
        return cache
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # transformers < 4.56: no per-layer cache objects
        return cache
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return cache
    layer_class = _block_layer_class()
    cache.layers = [layer_class(block) for _ in layers]
    return cache


@functools.cache
def _block_layer_class() -> Any:  # made on first use: transformers is imported lazily
    from transformers.cache_utils import DynamicLayer

    class BlockLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        """``DynamicLayer`` over a buffer [batch, heads, capacity, head_dim] filled to ``length``."""

        def __init__(self, block: int) -> None:
            super().__init__()
            self.block = block
            self.length = 0
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            shape = (*key_states.shape[:2], key_states.shape[2] + self.block, key_states.shape[3])
            self._k = key_states.new_empty(shape)
            self._v = value_states.new_empty((*shape[:3], value_states.shape[3]))
            self.is_initialized = True

        def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
            assert self._k is not None and self._v is not None
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
            return self.keys, self.values

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            assert self._k is not None and self._v is not None
            n = key_states.shape[2]
            if self.length + n > self._k.shape[2]:  # full: larger buffers, the filled part copied
                self._k, self._v = self._grown(self._k, n), self._grown(self._v, n)
            self._k[:, :, self.length:self.length + n] = key_states
            self._v[:, :, self.length:self.length + n] = value_states
            self.length += n
            return self._views()

        def _grown(self, buf: torch.Tensor, n: int) -> torch.Tensor:
            out = buf.new_empty((*buf.shape[:2], self.length + n + self.block, buf.shape[3]))
            out[:, :, : self.length] = buf[:, :, : self.length]
            return out

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number of positions to remove")
            if self.is_initialized and tokens_to_remove < 0:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()

        def reset(self) -> None:
            self._k = self._v = self.keys = self.values = None
            self.length = 0
            self.is_initialized = False

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self._k is not None and self._v is not None:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self._k is not None and self._v is not None:
                self._k, self._v = self._k[indices], self._v[indices]
                self._views()

        def reorder_cache(self, beam_idx: torch.Tensor) -> None:
            self.batch_select_indices(beam_idx.to(self.device))

    return BlockLayer


class HFBackend(GroupsBackendBase):
    """Batched KV-cache sampling with a transformers causal LM (see the module docstring).

    ``share_prefix=False`` prefills every row separately (n copies of each prompt): the
    recomputation baseline of the prefix-sharing benchmark; outputs are the same up to float noise.
    The key/value cache grows by ``kv_block`` positions at a time (``block_cache``); ``kv_block=0``
    uses transformers' plain ``DynamicCache`` (same outputs, slower at large batches).
    The model is used as is (in place updates by the trainer are seen by the next call).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        share_prefix: bool = True,
        eos_ids: Sequence[int] | None = None,
        kv_block: int = KV_BLOCK,
    ) -> None:
        self.device = torch.device(device)
        if kv_block < 0:
            raise ValueError(f"kv_block must be >= 0 (0: the plain DynamicCache), got {kv_block}")
        self.kv_block = kv_block
        # dtype=None keeps the model's dtype: the backend shares the trainer's model, so it must
        # not cast it behind the trainer's back. Pass torch.bfloat16 on CUDA for speed.
        self.model = model.to(device=self.device) if dtype is None else model.to(
            device=self.device, dtype=dtype)
        self.tokenizer = tokenizer
        self.share_prefix = share_prefix
        if eos_ids is None:
            eos_ids = eos_ids_of(getattr(model, "generation_config", None), tokenizer)
        if not eos_ids:
            raise ValueError("no EOS token id: pass eos_ids")
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids)
        # transformers >= 5.2x renamed ``past_key_values`` to ``cache``; support both spellings.
        # A PEFT wrapper forwards **kwargs, so read the signature of the wrapped model.
        inner = self.model
        for _ in range(4):  # PeftModel -> LoraModel/base model; bounded, in case it returns itself
            unwrap = getattr(inner, "get_base_model", None)
            if unwrap is None or unwrap() is inner:
                break
            inner = unwrap()
        params = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _forward(self, cache: Any, **kw: Any) -> tuple[torch.Tensor, Any]:
        out = self.model(**kw, use_cache=True, **{self._cache_kw: cache})
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = out.past_key_values
        return out.logits[:, -1, :].float(), new_cache

    @torch.no_grad()
    def generate_groups(
        self,
        prompts: Sequence[NDArray[np.int64]],
        counts: Sequence[int],
        *,
        max_new_tokens: int | Sequence[int],
        temperature: float,
        top_p: float,
        seed: int | Sequence[int],
        stop: StopRule | None | Sequence[StopRule | None] = None,
    ) -> list[list[Generation]]:
        """``counts[i]`` samples of ``prompts[i]`` for every i, in one batched loop.

        One prefill per prompt (``share_prefix``), its KV rows expanded to ``counts[i]`` rows;
        ``max_new_tokens``, ``stop`` and ``seed`` apply per prompt when given as sequences
        (random streams: see the module docstring).
        """
        prompts, counts, limits, stops = group_args(prompts, counts, max_new_tokens, stop)
        if isinstance(seed, (int, np.integer)):
            seeds = [int_seed_for(int(seed), "prompt", i) for i in range(len(prompts))]
        else:
            seeds = [int(x) for x in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")

        owner = [i for i, c in enumerate(counts) for _ in range(c)]  # prompt of each output row
        unif: torch.Tensor | None = None  # [rows, max steps]: row r's uniform for step t
        if temperature > 0:
            unif = torch.zeros((len(owner), max(limits)), dtype=torch.float64)
            nth = [0] * len(prompts)
            for r, i in enumerate(owner):
                g = torch.Generator().manual_seed(int_seed_for(seeds[i], "generation", nth[i]))
                unif[r, : limits[i]] = torch.rand(limits[i], generator=g, dtype=torch.float64)
                nth[i] += 1
            unif = unif.to(self.device)
        rows_in = prompts if self.share_prefix else [prompts[i] for i in owner]
        width = max(len(p) for p in rows_in)
        inp = torch.full((len(rows_in), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows_in), width), dtype=torch.long)
        for i, p in enumerate(rows_in):  # left padding
            inp[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        inp, mask = inp.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)

        cache = block_cache(self.model.config, self.kv_block)
        logits, cache = self._forward(cache, input_ids=inp, attention_mask=mask,
                                      position_ids=pos, logits_to_keep=1)
        if self.share_prefix and len(owner) > len(prompts):  # one prefill per prompt, KV expanded
            if len(set(counts)) == 1:
                cache.batch_repeat_interleave(counts[0])
                mask = mask.repeat_interleave(counts[0], dim=0)
                logits = logits.repeat_interleave(counts[0], dim=0)
            else:
                idx = torch.tensor(owner, dtype=torch.long, device=self.device)
                cache.batch_select_indices(idx)
                mask, logits = mask[idx], logits[idx]
        next_pos = mask.sum(-1)

        rows = [RowState() for _ in owner]
        active = list(range(len(rows)))  # output row index of each batch row
        for t in range(max(limits)):
            tok_t, logp_t = sample_next(logits, temperature=temperature, top_p=top_p,
                                        generator=None,
                                        uniforms=None if unif is None else unif[:, t])
            toks = tok_t.tolist()
            forced_rows = [b for b, r in enumerate(active) if rows[r].pending]
            for b in forced_rows:
                toks[b] = rows[active[b]].pending.pop(0)
            tok_t = torch.tensor(toks, dtype=torch.long, device=self.device)
            lps = logp_t.gather(-1, tok_t[:, None]).squeeze(-1).tolist()
            forced_set = set(forced_rows)
            for b, r in enumerate(active):
                self._advance(rows[r], toks[b], lps[b], b in forced_set, stops[owner[r]],
                              limits[owner[r]])
            keep = [b for b, r in enumerate(active) if not rows[r].done]
            if not keep:
                break
            if len(keep) < len(active):  # prune finished rows from the batch
                idx = torch.tensor(keep, dtype=torch.long, device=self.device)
                cache.batch_select_indices(idx)
                mask, next_pos, tok_t = mask[idx], next_pos[idx], tok_t[idx]
                if unif is not None:
                    unif = unif[idx]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            logits, cache = self._forward(cache, input_ids=tok_t[:, None], attention_mask=mask,
                                          position_ids=next_pos[:, None])
            next_pos = next_pos + 1
        out: list[list[Generation]] = [[] for _ in prompts]
        for i, row in zip(owner, rows, strict=True):
            out[i].append(Generation(np.asarray(row.ids, dtype=np.int64),
                                     np.asarray(row.logprobs, dtype=np.float32),
                                     row.finished, row.reason, row.n_forced))
        return out

    def _advance(self, row: RowState, tok: int, lp: float, forced: bool, stop: StopRule | None,
                 max_new_tokens: int) -> None:
        advance_row(row, tok, lp, forced, stop, max_new_tokens, self.eos_ids)
