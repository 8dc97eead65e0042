"""vLLM generation backend: the ``GenerationBackend`` / ``GroupBackend`` protocols over a vLLM engine.

``VLLMBackend`` answers the same three calls as ``HFBackend`` (``generate``, ``continue_group``,
``generate_groups``; see ``respo.llm.generation``) with a vLLM ``LLM`` engine (or anything with
its ``generate`` signature, e.g. ``ServerEngine`` for a separate ``vllm serve`` process, or a fake
in the tests). Token ids go in as ``{"prompt_token_ids": [...]}`` (vLLM's ``TokensPrompt``, a
TypedDict) and token ids plus the sampled token's log-prob come back, so a reset continues from
the *exact* ids of its prefix. The engine is built with ``enable_prefix_caching=True``: the n
continuations of a reset prefix, and every later round of a row (below), reuse the prefix's KV
blocks instead of recomputing them. vLLM is an optional extra (``pip install 'respo[vllm]'``),
imported only when an engine or its types are built.

Sampling. Each output row is one vLLM request with ``SamplingParams(n=1, temperature, top_p,
max_tokens, seed, logprobs=0, stop_token_ids=eos_ids, ignore_eos=True, detokenize=False)``;
``logprobs=0`` returns the log-prob of the sampled token only. Row j of prompt i is seeded with
``int_seed_for(prompt_seed_i, "generation", j)`` (the key ``HFBackend`` uses), so a row's sample
depends only on its prompt, prompt seed and index (the ``GroupBackend`` contract), whatever else
shares the call. vLLM V1 expands ``n > 1`` into n such child requests anyway (child j seeded
``seed + j``), so one request per row costs the same; ``fanout="native"`` sends one request with
``n=counts[i]`` and ``seed=prompt_seed`` instead (then row j's stream is vLLM's ``seed + j``).
Seeds are reduced modulo 2**62 so that vLLM's ``seed + j`` stays inside int64. Every field that
shapes the distribution is sent (``NEUTRAL_SAMPLING``: top_k, min_p and the three penalties at
their neutral values), because a vLLM server fills unset ones from the model's
``generation_config.json``. vLLM refuses temperatures above 2 and greedy requests with n > 1, and
raises temperatures below 0.01: the backend refuses (0, 0.01) and (2, inf) itself and sends greedy
rows as n=1 requests in both fan-outs. Context cap: a row stops with ``"length"`` when prompt plus
ids reach the engine's ``max_model_len`` (read from the engine), exactly as at
``max_new_tokens``, so no request asks for more room than is left (vLLM refuses a prompt that
fills the context); a prompt with no room left is an error.

Thought-aware stopping. vLLM cannot run respo's ``StopRule`` inside its sampling loop (the
answer rule decodes a finished thought and calls a Python detector), so the rule is enforced in
*rounds*, on token ids:

1. EOS: enforced by the engine AND post hoc. ``stop_token_ids`` = the backend's ``eos_ids`` with
   ``ignore_eos=True``, so the engine stops exactly on respo's EOS set; the scan below stops at
   the first EOS too (kept as the last token, ``stop_reason="eos"``).
2. Final answer, 3. ``max_thoughts``, 5. ``max_new_tokens``: post hoc. The engine samples up to
   the row's remaining budget; the returned ids are scanned token by token with exactly
   ``HFBackend``'s rule and cut at the first stop event. Sampling is autoregressive, so the kept
   tokens have the same distribution as if the engine had stopped there; the tokens after the
   cut are discarded (wasted compute, counted in ``pop_stats()["vllm/discarded_tokens"]``).
   ``max_tokens_per_round`` bounds that waste at the cost of more rounds.
4. ``max_thought_tokens``: with ``overflow="stop"`` post hoc (cut, ``"thought_limit"``). With
   ``overflow="force"`` the scan cuts the row where ``HFBackend`` would start forcing, appends
   the canonical delimiter ids itself, and the row goes to a NEW ROUND: a fresh request whose
   prompt is the prompt plus every id so far (a token-exact continuation; the prefix cache makes
   its prefill cheap), seeded ``int_seed_for(row_seed, "round", r)``. Rounds repeat until every
   row stops; each round adds at least one token per live row, and a row can need a new round
   only after a forced thought end (or a ``max_tokens_per_round`` cut).

Deviations from ``HFBackend`` (and from the paper's code, which calls vLLM once per thought with
the delimiter as a stop string):

- Log-probs: a *forced* delimiter token has log-prob NaN (vLLM scores sampled tokens only;
  ``Generation.n_forced`` counts them). A sampled token's log-prob is whatever the engine's
  ``logprobs_mode`` gives: ``make_engine`` asks for ``"processed_logprobs"`` (after temperature
  and top-p, so it includes the nucleus renormalisation, which ``HFBackend`` does not); vLLM
  before 0.10.2 returns raw ``log_softmax(logits)``. The trainer recomputes every log-prob it
  trains with, so these are diagnostics only.
- Randomness: vLLM's sampler, not respo's inverse-CDF draw, so the same seed gives different
  chains than ``HFBackend`` (same distribution). vLLM's seeded sampling is reproducible on one
  machine and engine configuration, not across versions or batch compositions in general.
- Greedy rows (``temperature=0``) are vLLM greedy; ties may break differently from ``argmax``.

Weights. The engine holds its own copy of the policy, so the trainer must call
``sync_weights(model)`` after each update (before the next rollout):

- LoRA path (``adapter_dir`` set; recommended for the paper's LoRA-64 runs): the peft adapter is
  saved to ``adapter_dir/vNNNNNN`` and later requests carry ``LoRARequest("respo-vN", N, path)``;
  a new id per version means vLLM never serves a stale cached adapter. The engine must be built
  with ``enable_lora=True, max_lora_rank>=rank`` (``make_engine(lora_rank=...)``). Works with
  tensor parallelism and with a separate server (it loads the adapter from the shared path).
- Full-weight path (no ``adapter_dir``): ``hf_weights(model)`` streams the model's weights
  under transformers names, LoRA deltas merged in (W + s B A, computed per tensor, the model is
  not modified), into the engine through vLLM's public
  ``collective_rpc("reload_weights", kwargs={"weights_iterator": ...})``
  (``load_weights_into_engine``), which needs an in-process engine with one GPU worker
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``tensor_parallel_size=1``); otherwise it raises.

Both paths then reset the engine's prefix cache: cached KV blocks were computed with the old
weights. vLLM's ``reset_prefix_cache()`` returns False, resetting nothing, while blocks are held:
the full-weight path then raises; the LoRA path counts it (``vllm/cache_reset_failures``), since
blocks are keyed by the adapter id, which changes every version. Under FSDP pass ``state_dict=``
gathered on the process that owns the engine (``accelerator.get_state_dict(model)``).

Engines (``engine_kwargs``/``make_engine``): LoRA slots are rounded up to a rank vLLM accepts
(``LORA_RANKS``); under torchrun each process's engine uses vLLM's ``external_launcher`` (its own
GPU, ``LOCAL_RANK``). Tested range: ``vllm>=0.16,<0.34`` (pyproject's extra).

Shapes: prompts [T_i] int64 -> Generation ids [T] int64, logprobs [T] float32 (NaN where forced).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from respo.llm.generation import (
    Generation,
    GroupsBackendBase,
    RowState,
    StopRule,
    advance_row,
    group_args,
)
from respo.seeding import int_seed_for

INSTALL_HINT = ("vLLM is not installed: install the optional extra with `pip install 'respo[vllm]'` "
                "(a CUDA machine is needed), or pass an engine object to VLLMBackend")

SEED_MOD = 2**62
"""vLLM seeds are taken modulo this, so that vLLM's ``seed + child_index`` fits in int64."""

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0
"""vLLM's ``SamplingParams`` refuses temperatures above 2 and raises those in (0, 0.01) to 0.01."""

NEUTRAL_SAMPLING: dict[str, float] = dict(top_k=0, min_p=0.0, repetition_penalty=1.0,
                                          presence_penalty=0.0, frequency_penalty=0.0)
"""Sampling fields sent explicitly with their neutral values: temperature and top-p only."""


@dataclass(frozen=True)
class VLLMTypes:
    """The two vLLM constructors the backend calls: ``SamplingParams(**kw)`` and
    ``LoRARequest(name, int_id, path)``. ``vllm_types()`` imports vLLM's; ``server_types()`` gives
    JSON-ready stand-ins for ``ServerEngine``; tests inject fakes."""

    sampling_params: Callable[..., Any]
    lora_request: Callable[[str, int, str], Any]


def vllm_types() -> VLLMTypes:
    """vLLM's own ``SamplingParams`` and ``LoRARequest`` (ImportError naming the extra if absent)."""
    try:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return VLLMTypes(SamplingParams, LoRARequest)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""``max_lora_rank`` values vLLM's ``LoRAConfig`` accepts (0.16 to 0.33); any other value fails at
engine start, so ``engine_kwargs`` rounds a rank up to the next one of these."""


def lora_slot_rank(rank: int) -> int:
    """The smallest allowed ``max_lora_rank`` that holds adapters of rank ``rank``."""
    for slot in LORA_RANKS:
        if rank <= slot:
            return slot
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


def engine_kwargs(
    model: str,
    *,
    lora_rank: int = 0,
    max_model_len: int = 8192,
    dtype: str = "bfloat16",
    gpu_memory_utilization: float = 0.45,
    seed: int = 0,
    logprobs_mode: str | None = "processed_logprobs",
    **extra: Any,
) -> dict[str, Any]:
    """The keyword arguments ``make_engine`` passes to ``vllm.LLM`` (no vLLM import).

    Prefix caching on; a LoRA slot of ``lora_slot_rank(lora_rank)`` when ``lora_rank > 0``.
    Under torchrun (``WORLD_SIZE`` > 1) every process builds its own engine: vLLM's default
    executor would put each one on ``cuda:0``, so ``distributed_executor_backend`` is
    ``"external_launcher"``, which places the engine on ``LOCAL_RANK``'s GPU and runs it
    in-process; the processes sample different prompts, so tensor parallelism is refused there.
    """
    kw: dict[str, Any] = dict(model=model, enable_prefix_caching=True, max_model_len=max_model_len,
                              dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed)
    if lora_rank > 0:
        kw.update(enable_lora=True, max_lora_rank=lora_slot_rank(lora_rank), max_loras=1)
    if logprobs_mode is not None:
        kw["logprobs_mode"] = logprobs_mode
    kw.update(extra)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if int(kw.get("tensor_parallel_size", 1)) > 1:
            raise ValueError("under torchrun (WORLD_SIZE > 1) each process has its own engine on its "
                             "own GPU: tensor_parallel_size must be 1, got "
                             f"{kw['tensor_parallel_size']}")
        kw.setdefault("distributed_executor_backend", "external_launcher")
    return kw


def engine_max_model_len(engine: Any) -> int:
    """The context length of an engine: ``LLM.model_config.max_model_len`` or ``.max_model_len``."""
    config = getattr(engine, "model_config", None)
    n = getattr(config, "max_model_len", None) if config is not None else None
    n = getattr(engine, "max_model_len", None) if n is None else n
    if n is None:
        raise ValueError(f"cannot read max_model_len from {type(engine).__name__}: pass "
                         "VLLMBackend(..., max_model_len=...)")
    return int(n)


def make_engine(model: str, **kwargs: Any) -> Any:
    """A colocated vLLM ``LLM`` engine built with ``engine_kwargs(model, **kwargs)``.

    Defaults follow the paper's setup (model length 8192, bf16); ``gpu_memory_utilization`` leaves
    room for the trainer on the same GPU. Extra keyword arguments go to ``vllm.LLM`` unchanged.
    """
    kw = engine_kwargs(model, **kwargs)
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    if kw.get("distributed_executor_backend") == "external_launcher":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vLLM's external launcher needs it
    return vllm.LLM(**kw)


# -- weights --------------------------------------------------------------------------------------


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _lora_scaling(model: Any) -> float:
    """``lora_alpha / r`` (or ``/ sqrt(r)`` with rsLoRA) of the model's single default adapter."""
    cfgs = model.peft_config
    if list(cfgs) != ["default"]:
        raise ValueError(f"expected one peft adapter called 'default', got {list(cfgs)}")
    c = cfgs["default"]
    if getattr(c, "rank_pattern", None) or getattr(c, "alpha_pattern", None):
        raise ValueError("per-module LoRA ranks / alphas are not supported by hf_weights")
    if getattr(c, "use_dora", False) or getattr(c, "fan_in_fan_out", False):
        raise ValueError("DoRA and fan_in_fan_out adapters are not supported by hf_weights")
    return float(c.lora_alpha) / (math.sqrt(c.r) if getattr(c, "use_rslora", False) else float(c.r))


def hf_weights(model: Any, *, state_dict: Mapping[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """The model's weights under transformers names, LoRA merged in, one tensor at a time.

    For a peft model: ``base_model.model.`` is stripped, ``.base_layer`` is dropped, adapter
    tensors are folded in as ``W + s * B @ A`` (s = alpha / r) and not emitted. The model is not
    modified (no ``merge_adapter``), and tensors are produced lazily, so a consumer that streams
    (vLLM's ``load_weights``) holds one merged tensor at a time. ``state_dict`` replaces
    ``model.state_dict()`` (e.g. a full state dict gathered from FSDP shards).
    """
    state = dict(model.state_dict() if state_dict is None else state_dict)
    if not _is_peft(model):
        yield from state.items()
        return
    import torch

    scale = _lora_scaling(model)
    prefix = "base_model.model."
    with torch.no_grad():
        for name, value in state.items():
            if ".lora_" in name:
                continue
            clean = name[len(prefix):] if name.startswith(prefix) else name
            if ".base_layer." not in name:
                yield clean, value
                continue
            module = name.rsplit(".base_layer.", 1)[0]
            clean = clean.replace(".base_layer.", ".")
            a = state.get(f"{module}.lora_A.default.weight")
            b = state.get(f"{module}.lora_B.default.weight")
            if name.endswith(".weight") and a is not None and b is not None:
                delta = (b.float() @ a.float()) * scale
                yield clean, (value.float() + delta.to(value.device)).to(value.dtype)
            else:
                yield clean, value


def load_weights_into_engine(engine: Any, weights: Any) -> None:
    """Load ``(name, tensor)`` pairs (transformers names) into the engine's model in place.

    Through vLLM's public ``collective_rpc("reload_weights", kwargs={"weights_iterator": ...})``
    (vLLM >= 0.16): the worker maps transformers names onto its fused layers (q/k/v into
    ``qkv_proj``) and resets its LoRA, encoder and multimodal state. The iterator is consumed by
    the worker itself, so the engine must run in-process with one worker
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``tensor_parallel_size=1``; the external launcher
    under torchrun is in-process too).
    """
    rpc = getattr(engine, "collective_rpc", None)
    if not callable(rpc):
        raise RuntimeError(f"{type(engine).__name__} has no collective_rpc: full-weight sync needs an "
                           "in-process vllm.LLM; sync LoRA adapters instead (adapter_dir=...)")
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0":
        raise RuntimeError(
            "full-weight sync streams tensors to the engine's worker in this process, which needs an "
            "in-process engine: set VLLM_ENABLE_V1_MULTIPROCESSING=0 before building it (and "
            "tensor_parallel_size=1), or sync LoRA adapters instead: VLLMBackend(..., "
            "adapter_dir=...) with make_engine(lora_rank=...)")
    rpc("reload_weights", kwargs={"weights_iterator": weights})


def save_adapter(model: Any, folder: Path, *, state_dict: Mapping[str, Any] | None = None) -> Path:
    """Save the peft adapter of ``model`` to ``folder`` (written to a temp folder, then renamed)."""
    if not _is_peft(model):
        raise TypeError("LoRA sync needs a peft model (ModelConfig.lora_rank > 0); got "
                        f"{type(model).__name__}: leave adapter_dir unset for full-weight sync")
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    kw: dict[str, Any] = {} if state_dict is None else {"state_dict": dict(state_dict)}
    # save_embedding_layers=False: "auto" may look the base model up on the hub.
    model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False, **kw)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


# -- reading the engine's outputs (rows stop by ``generation.advance_row``) ---------------------


def _token_logprobs(comp: Any, toks: list[int]) -> list[float]:
    """The sampled tokens' log-probs from a vLLM ``CompletionOutput`` (``logprobs=0``)."""
    entries = getattr(comp, "logprobs", None)
    if entries is None or len(entries) < len(toks):
        raise ValueError("the engine returned no (or too few) log-probs: SamplingParams(logprobs=0) "
                         "must be honoured")
    out = []
    for t, (tok, entry) in enumerate(zip(toks, entries, strict=False)):
        try:
            v = entry[tok]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"log-probs at position {t} do not include the sampled token {tok}") from None
        out.append(float(getattr(v, "logprob", v)))
    return out


# -- the backend ----------------------------------------------------------------------------------


class VLLMBackend(GroupsBackendBase):
    """``GroupBackend`` over a vLLM engine (see the module docstring for rules and deviations).

    ``engine``: a vLLM ``LLM`` (or ``ServerEngine``, or a test fake); None builds one with
    ``make_engine(model, **engine_kwargs)``. ``types``: the ``SamplingParams`` / ``LoRARequest``
    constructors (default: vLLM's, imported here). ``eos_ids``: the stop ids (default: the
    tokenizer's EOS). ``adapter_dir``: enables the LoRA sync path.
    """

    def __init__(
        self,
        engine: Any = None,
        *,
        model: str | None = None,
        tokenizer: Any = None,
        eos_ids: Sequence[int] | None = None,
        types: VLLMTypes | None = None,
        fanout: Literal["rows", "native"] = "rows",
        max_tokens_per_round: int | None = None,
        adapter_dir: str | Path | None = None,
        max_model_len: int | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if fanout not in ("rows", "native"):
            raise ValueError(f"fanout must be 'rows' or 'native', got {fanout!r}")
        if max_tokens_per_round is not None and max_tokens_per_round < 1:
            raise ValueError(f"max_tokens_per_round must be >= 1, got {max_tokens_per_round}")
        if engine is None:
            if model is None:
                raise ValueError("pass an engine, or a model name to build one")
            engine = make_engine(model, **dict(engine_kwargs or {}))
        self.types = types if types is not None else vllm_types()
        self.engine = engine
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_ids = [] if eos is None else [int(e) for e in np.atleast_1d(eos)]
        if not eos_ids:
            raise ValueError("no EOS token id: pass eos_ids or a tokenizer with eos_token_id")
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.fanout = fanout
        self.max_tokens_per_round = max_tokens_per_round
        self.adapter_dir = None if adapter_dir is None else Path(adapter_dir)
        self.max_model_len = int(max_model_len) if max_model_len is not None else engine_max_model_len(engine)
        """Context length of the engine (prompt + generated ids): rows stop there with "length"."""
        self.lora: Any = None
        """The ``LoRARequest`` every request carries (set by ``sync_weights`` on the LoRA path)."""
        self.version = 0
        """How many times ``sync_weights`` ran."""
        self._stats = dict.fromkeys(("vllm/calls", "vllm/rounds", "vllm/requests",
                                     "vllm/engine_tokens", "vllm/discarded_tokens",
                                     "vllm/foreign_stops", "vllm/syncs",
                                     "vllm/cache_reset_failures"), 0.0)

    # -- protocol ------------------------------------------------------------------------------

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
        """``counts[i]`` samples of ``prompts[i]`` for every i, in as few engine calls as the stop
        rules allow (one, unless a thought end is forced or ``max_tokens_per_round`` cuts)."""
        prompts, counts, limits, stops = group_args(prompts, counts, max_new_tokens, stop)
        seeds = ([int_seed_for(int(seed), "prompt", i) for i in range(len(prompts))]
                 if isinstance(seed, (int, np.integer)) else [int(s) for s in seed])
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if not (temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE) or not 0 < top_p <= 1:
            raise ValueError(f"need temperature 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] "
                             f"(vLLM refuses > {MAX_TEMPERATURE} and raises smaller ones to "
                             f"{MIN_TEMPERATURE}), and 0 < top_p <= 1; got {temperature}, {top_p}")
        room = [self.max_model_len - len(p) for p in prompts]
        for i, r in enumerate(room):
            if r < 1:
                raise ValueError(f"prompt {i} has {len(prompts[i])} tokens: no room left in the engine's "
                                 f"max_model_len={self.max_model_len}")
        limits = [min(lim, r) for lim, r in zip(limits, room, strict=True)]  # a row ends at the context cap

        rows = [RowState(i, int_seed_for(seeds[i], "generation", j))
                for i, c in enumerate(counts) for j in range(c)]
        by_owner: list[list[int]] = [[] for _ in prompts]
        for r, row in enumerate(rows):
            by_owner[row.owner].append(r)
        self._stats["vllm/calls"] += 1
        active = list(range(len(rows)))
        rnd = 0
        while active:
            if rnd > max(limits):  # every round adds >= 1 token per live row
                raise RuntimeError("vLLM backend made no progress (engine returned no tokens)")
            requests: list[dict[str, list[int]]] = []
            params: list[Any] = []
            targets: list[list[int]] = []
            if rnd == 0 and self.fanout == "native" and temperature > 0:  # vLLM: greedy needs n=1
                for i, members in enumerate(by_owner):
                    requests.append({"prompt_token_ids": prompts[i].tolist()})
                    params.append(self._params(len(members), temperature, top_p,
                                               self._round_tokens(limits[i]), seeds[i]))
                    targets.append(members)
            else:
                for r in active:
                    row = rows[r]
                    i = row.owner
                    row_seed = row.seed if rnd == 0 else int_seed_for(row.seed, "round", rnd)
                    requests.append({"prompt_token_ids": prompts[i].tolist() + row.ids})
                    params.append(self._params(1, temperature, top_p,
                                               self._round_tokens(limits[i] - len(row.ids)), row_seed))
                    targets.append([r])
            outs = list(self.engine.generate(requests, params, use_tqdm=False, lora_request=self.lora))
            self._stats["vllm/rounds"] += 1
            self._stats["vllm/requests"] += len(requests)
            if len(outs) != len(requests):
                raise RuntimeError(f"engine answered {len(outs)} of {len(requests)} requests")
            for out, members in zip(outs, targets, strict=True):
                comps = sorted(out.outputs, key=lambda c: int(getattr(c, "index", 0)))
                if len(comps) != len(members):
                    raise RuntimeError(f"engine returned {len(comps)} outputs for n={len(members)}")
                for r, comp in zip(members, comps, strict=True):
                    row = rows[r]
                    row.rounds += 1
                    self._consume(row, comp, stops[row.owner], limits[row.owner])
            active = [r for r in active if not rows[r].done]
            rnd += 1
        result: list[list[Generation]] = [[] for _ in prompts]
        for row in rows:
            result[row.owner].append(Generation(np.asarray(row.ids, dtype=np.int64),
                                                np.asarray(row.logprobs, dtype=np.float32),
                                                row.finished, row.reason, row.n_forced))
        return result

    def _round_tokens(self, budget: int) -> int:
        cap = self.max_tokens_per_round
        return budget if cap is None else min(budget, cap)

    def _params(self, n: int, temperature: float, top_p: float, max_tokens: int, seed: int) -> Any:
        # Every field that shapes the distribution is explicit (NEUTRAL_SAMPLING): a vLLM server
        # fills unset ones from the model's generation_config.json (e.g. top_k=20).
        return self.types.sampling_params(
            n=n, temperature=float(temperature), top_p=float(top_p), max_tokens=int(max_tokens),
            seed=int(seed) % SEED_MOD, logprobs=0, stop_token_ids=sorted(self.eos_ids),
            ignore_eos=True, detokenize=False, **NEUTRAL_SAMPLING)

    def _consume(self, row: RowState, comp: Any, stop: StopRule | None, limit: int) -> None:
        """Scan one returned completion into ``row``: cut at the first stop event or forced end."""
        toks = [int(t) for t in comp.token_ids]
        lps = _token_logprobs(comp, toks)
        self._stats["vllm/engine_tokens"] += len(toks)
        used = 0
        interrupted = False
        for tok, lp in zip(toks, lps, strict=True):
            used += 1
            advance_row(row, tok, lp, False, stop, limit, self.eos_ids)
            if row.pending and not row.done:  # force the delimiter; later sampled ids are void
                while row.pending and not row.done:
                    advance_row(row, row.pending.pop(0), math.nan, True, stop, limit, self.eos_ids)
                row.pending = []
                interrupted = True
            if row.done or interrupted:
                break
        self._stats["vllm/discarded_tokens"] += len(toks) - used
        if row.done or interrupted:
            return
        reason = getattr(comp, "finish_reason", None)
        if reason == "stop":  # the engine stopped on a token outside eos_ids: count it, end the row
            self._stats["vllm/foreign_stops"] += 1
            row.stop("eos", True)
        elif reason != "length":
            raise RuntimeError(f"vLLM ended a request with finish_reason={reason!r}")
        elif not toks:
            raise RuntimeError("vLLM returned no tokens for a request with max_tokens >= 1")

    # -- weights -------------------------------------------------------------------------------
    def sync_weights(self, model: Any, *, state_dict: Mapping[str, Any] | None = None) -> None:
        """Make the engine generate with ``model``'s current weights (module docstring: Weights)."""
        self.version += 1
        if self.adapter_dir is not None:
            self.adapter_dir.mkdir(parents=True, exist_ok=True)
            folder = save_adapter(model, self.adapter_dir / f"v{self.version:06d}", state_dict=state_dict)
            self.lora = self.types.lora_request(f"respo-v{self.version}", self.version, str(folder))
            for old in self.adapter_dir.glob("v*"):
                if old.is_dir() and old != folder:
                    shutil.rmtree(old)
        else:
            load_weights_into_engine(self.engine, hf_weights(model, state_dict=state_dict))
        if not self.engine.reset_prefix_cache():  # False: blocks still held, nothing was reset
            if self.adapter_dir is None:
                raise RuntimeError("the engine refused to reset its prefix cache (blocks still held by "
                                   "running requests): later rollouts would reuse KV blocks computed "
                                   "with the old weights")
            # A new adapter id per version: old blocks are keyed by the old id and never match.
            self._stats["vllm/cache_reset_failures"] += 1
        self._stats["vllm/syncs"] += 1

    def pop_stats(self) -> dict[str, float]:
        """Engine counters since the last call (then reset to zero)."""
        out = dict(self._stats)
        for k in self._stats:
            self._stats[k] = 0.0
        return out


# -- a separate vLLM server as the engine ----------------------------------------------------------


@dataclass(frozen=True)
class ServerLoRA:
    """``LoRARequest`` stand-in for ``ServerEngine`` (the adapter is loaded by name from a path)."""

    lora_name: str
    lora_int_id: int
    lora_path: str


def server_types() -> VLLMTypes:
    """JSON-ready constructors for ``ServerEngine`` (no vLLM import on the trainer's side)."""
    return VLLMTypes(sampling_params=dict, lora_request=ServerLoRA)


@dataclass(frozen=True)
class _Logprob:
    logprob: float


@dataclass(frozen=True)
class _Completion:
    index: int
    token_ids: list[int]
    logprobs: list[dict[int, _Logprob]]
    finish_reason: str | None


@dataclass(frozen=True)
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Completion]


def _http(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """POST ``body`` as JSON (GET when None). A JSON answer comes back parsed; any other 2xx body
    (vLLM's ``/v1/load_lora_adapter`` answers plain text) as ``{"text": body}``."""
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (a configured server URL)
        text = resp.read().decode()
        kind = resp.headers.get_content_type()
    if kind == "application/json":
        return json.loads(text) if text.strip() else {}
    return {"text": text}


class ServerEngine:
    """A separate ``vllm serve`` process as the engine, through its OpenAI-compatible API.

    ``generate`` mirrors ``LLM.generate`` for what ``VLLMBackend`` uses: each request goes to
    ``/v1/completions`` with the prompt as token ids and ``return_tokens_as_token_ids`` (tokens
    come back as ``"token_id:N"``), several requests at once. Pair it with ``server_types()``.
    A LoRA request loads its adapter once through ``/v1/load_lora_adapter`` (the server needs
    ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, and the adapter folder on a
    filesystem it can read); ``reset_prefix_cache`` calls ``/reset_prefix_cache`` (exposed by
    servers started with ``VLLM_SERVER_DEV_MODE=1``) and returns its ``success`` flag.
    ``max_model_len`` is read from ``/v1/models`` unless given. The server's own sampling
    defaults (``--generation-config auto`` fills unset fields from the model's
    ``generation_config.json``) never apply: ``VLLMBackend`` sends every field. Full-weight sync is
    not available here. Checked against a fake transport (``post``: ``(url, body or None for a
    GET, timeout)``) and vLLM's own request classes, not a live server.
    """

    def __init__(self, base_url: str, model: str, *, post: Callable[..., dict[str, Any]] | None = None,
                 timeout: float = 3600.0, max_concurrency: int = 64,
                 max_model_len: int | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._post = post if post is not None else _http
        self._loaded: set[str] = set()
        self.max_model_len = max_model_len if max_model_len is not None else self._served_length()

    def _call(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        return self._post(f"{self.base_url}{path}", body, self.timeout)

    def _served_length(self) -> int:
        for card in self._call("/v1/models", None).get("data", []):
            if card.get("id") == self.model and card.get("max_model_len") is not None:
                return int(card["max_model_len"])
        raise ValueError(f"the server at {self.base_url} lists no model {self.model!r} with a "
                         "max_model_len in /v1/models: pass ServerEngine(..., max_model_len=...)")

    def generate(self, prompts: Sequence[Mapping[str, Any]], sampling_params: Any, *,
                 use_tqdm: bool = False, lora_request: Any = None) -> list[_RequestOutput]:
        params = (list(sampling_params) if isinstance(sampling_params, (list, tuple))
                  else [sampling_params] * len(prompts))
        name = self.model
        if lora_request is not None:
            name = lora_request.lora_name
            if name not in self._loaded:
                self._call("/v1/load_lora_adapter", {"lora_name": name, "lora_path": lora_request.lora_path})
                self._loaded.add(name)

        def one(prompt: Mapping[str, Any], p: Mapping[str, Any]) -> _RequestOutput:
            ids = [int(t) for t in prompt["prompt_token_ids"]]
            body = {"model": name, "prompt": ids, "return_tokens_as_token_ids": True,
                    **{k: v for k, v in p.items() if k != "detokenize"}}
            resp = self._call("/v1/completions", body)
            comps = []
            for ch in sorted(resp["choices"], key=lambda c: int(c.get("index", 0))):
                lp = ch.get("logprobs") or {}
                toks = [int(str(t).split(":", 1)[1]) for t in lp.get("tokens", [])]
                vals = lp.get("token_logprobs", [])
                comps.append(_Completion(int(ch.get("index", 0)), toks,
                                         [{t: _Logprob(float(v))} for t, v in zip(toks, vals, strict=True)],
                                         ch.get("finish_reason")))
            return _RequestOutput(ids, comps)

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(prompts)))) as pool:
            return list(pool.map(one, prompts, params))

    def reset_prefix_cache(self) -> bool:
        return bool(self._call("/reset_prefix_cache", {}).get("success", False))
