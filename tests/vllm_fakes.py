"""A fake vLLM engine, and vLLM's own types where vLLM is importable (the CPU test lane).

``FakeLLM`` mimics the part of ``vllm.LLM`` the backend uses: ``generate`` on token-id prompts
(``{"prompt_token_ids": [...]}``) with one sampling-params object per prompt (n, max_tokens, seed,
stop_token_ids, logprobs), ``RequestOutput.outputs[i]`` with ``index``, ``token_ids``,
``logprobs`` (one ``{token: Logprob}`` dict per token) and ``finish_reason`` ("stop" after a stop
token, which is kept, else "length"), vLLM V1's ``n > 1`` seeding (child j gets ``seed + j``), the
context cap (a prompt of ``max_model_len`` tokens or more is refused; a request ends with "length"
when prompt + output reach it), ``collective_rpc("reload_weights", kwargs={"weights_iterator"})``
and ``reset_prefix_cache()`` (False, nothing reset, when ``busy_reset``). Its "model" is a token
function of (context, request prompt length, seed), and the log-prob it reports for token t at
absolute position p is ``lp_of(p, t)``, so alignment of log-probs with ids can be checked.

``FakeParams`` refuses what vLLM 0.33's ``SamplingParams`` refuses among the fields the backend
sets (temperature outside [0, 2], greedy with n > 1, n or max_tokens < 1, top_p outside (0, 1]).

The lane. ``LANE_TYPES["fake"]`` and, when vLLM imports, ``LANE_TYPES["vllm"]`` give the same five
entry points: ``sampling_params`` and ``lora_request`` (the backend's ``VLLMTypes``),
``lora_config(max_lora_rank, max_loras)`` (vLLM's ``LoRAConfig`` validation), ``engine_args(kw)``
(vLLM's ``EngineArgs(**kw)``: unknown names raise) and ``server_sampling(body, defaults)`` (what a
vLLM server samples with for a ``/v1/completions`` body when its generation-config defaults are
``defaults``: vLLM's ``CompletionRequest(**body).to_sampling_params``). The fake ones restate
vLLM 0.33's rules, read from its source; the real ones are vLLM's code, installed on CPU machines
with ``--no-deps`` next to CPU torch (``make install``; a GPU is needed only for a live engine).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from respo.llm.vllm_backend import VLLMTypes

TokenFn = Callable[[list[int], int, int], int]


def lp_of(pos: int, tok: int) -> float:
    """The fake model's log-prob of ``tok`` at absolute position ``pos`` (prompt included)."""
    return -((tok * 31 + pos * 7) % 97) / 10.0 - 0.01


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    logprobs: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    detokenize: bool = True
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"n and max_tokens must be at least 1, got {self.n}, {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 1e-5 and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}")


@dataclass
class FakeLoRA:
    lora_name: str
    lora_int_id: int
    lora_path: str


FAKE_TYPES = VLLMTypes(sampling_params=FakeParams, lora_request=FakeLoRA)


class RecordingModel:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def load_weights(self, weights: Any) -> None:
        self.loaded = [(n, t.detach().clone()) for n, t in weights]


class FakeLLM:
    """The subset of ``vllm.LLM`` the backend touches (see the module docstring)."""

    def __init__(self, token_fn: TokenFn, *, reverse_outputs: bool = False, honor_stop: bool = True,
                 max_model_len: int = 8192, busy_reset: bool = False) -> None:
        self.token_fn = token_fn
        self.reverse_outputs = reverse_outputs
        self.honor_stop = honor_stop  # False: an engine that runs past stop ids (post-hoc cut needed)
        self.busy_reset = busy_reset
        self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.calls: list[tuple[list[list[int]], list[Any], Any]] = []
        self.resets = 0
        self.model = RecordingModel()

    def generate(self, prompts: list[dict[str, list[int]]], sampling_params: Any, *,
                 use_tqdm: bool = True, lora_request: Any = None) -> list[Any]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        cap = self.model_config.max_model_len
        for p in prompts:
            if len(p["prompt_token_ids"]) >= cap:  # vLLM's input processor refuses these
                raise ValueError(f"The decoder prompt (length {len(p['prompt_token_ids'])}) plus the "
                                 f"requested output tokens is longer than max_model_len {cap}")
        self.calls.append(([list(p["prompt_token_ids"]) for p in prompts], list(params), lora_request))
        outs = []
        for p, sp in zip(prompts, params, strict=True):
            prompt = list(p["prompt_token_ids"])
            comps = []
            for j in range(sp.n):
                seed = (sp.seed or 0) + j  # vLLM V1: child j of a seeded request gets seed + j
                ctx, finish = list(prompt), "length"
                toks: list[int] = []
                lps: list[dict[int, FakeLogprob]] = []
                while len(toks) < sp.max_tokens and len(ctx) < cap:
                    t = self.token_fn(ctx, len(prompt), seed)
                    toks.append(t)
                    lps.append({t: FakeLogprob(lp_of(len(ctx), t))})
                    ctx.append(t)
                    if self.honor_stop and t in sp.stop_token_ids:
                        finish = "stop"
                        break
                comps.append(SimpleNamespace(index=j, token_ids=toks, logprobs=lps, finish_reason=finish,
                                             stop_reason=toks[-1] if finish == "stop" else None))
            if self.reverse_outputs:
                comps = comps[::-1]
            outs.append(SimpleNamespace(prompt_token_ids=prompt, outputs=comps))
        return outs

    def collective_rpc(self, method: str, timeout: float | None = None, args: tuple[Any, ...] = (),
                       kwargs: dict[str, Any] | None = None) -> list[Any]:
        if method != "reload_weights":
            raise AttributeError(f"the fake worker has no method {method!r}")
        self.model.load_weights((kwargs or {})["weights_iterator"])
        return [None]

    def reset_prefix_cache(self) -> bool:
        if self.busy_reset:
            return False
        self.resets += 1
        return True


# -- the lane: fake rules, or vLLM's code ----------------------------------------------------------

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""vLLM 0.33's ``MaxLoRARanks`` (vllm/config/lora.py)."""

COMPLETION_DEFAULTS = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                       "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}
"""vLLM 0.33's ``CompletionRequest._DEFAULT_SAMPLING_PARAMS``: an unset field takes the server's
default (the model's generation config), then this."""

ENGINE_ARG_NAMES = frozenset((
    "model", "enable_prefix_caching", "max_model_len", "dtype", "gpu_memory_utilization", "seed",
    "enable_lora", "max_lora_rank", "max_loras", "logprobs_mode", "distributed_executor_backend",
    "tensor_parallel_size", "skip_tokenizer_init"))
"""The ``EngineArgs`` fields respo sets (all exist in vLLM 0.33)."""


def _fake_lora_config(max_lora_rank: int, max_loras: int) -> Any:
    if max_lora_rank not in MAX_LORA_RANKS:
        raise ValueError(f"max_lora_rank should be one of {MAX_LORA_RANKS}, got {max_lora_rank}")
    return SimpleNamespace(max_lora_rank=max_lora_rank, max_loras=max_loras)


def _fake_engine_args(kw: Mapping[str, Any]) -> Any:
    unknown = set(kw) - ENGINE_ARG_NAMES
    if unknown:
        raise TypeError(f"EngineArgs got unexpected keyword arguments {sorted(unknown)}")
    return SimpleNamespace(**kw)


def _fake_server_sampling(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    fields = {k: body[k] if body.get(k) is not None else defaults.get(k, d)
              for k, d in COMPLETION_DEFAULTS.items()}
    return SimpleNamespace(**fields, max_tokens=body["max_tokens"], seed=body.get("seed"), n=body.get("n", 1))


def _vllm_lane() -> SimpleNamespace | None:
    """vLLM's own classes, or None where vLLM does not import (its import is noisy: warnings off)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from vllm import SamplingParams
            from vllm.config.lora import LoRAConfig
            from vllm.engine.arg_utils import EngineArgs
            from vllm.entrypoints.openai.completion.protocol import CompletionRequest
            from vllm.lora.request import LoRARequest
    except Exception:  # ImportError, or a missing compiled dependency
        return None

    def server_sampling(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
        return CompletionRequest(**body).to_sampling_params(int(body["max_tokens"]), dict(defaults))

    return SimpleNamespace(
        sampling_params=SamplingParams, lora_request=LoRARequest,
        lora_config=lambda max_lora_rank, max_loras: LoRAConfig(max_lora_rank=max_lora_rank,
                                                                max_loras=max_loras),
        engine_args=lambda kw: EngineArgs(**kw), server_sampling=server_sampling)


LANE_TYPES: dict[str, SimpleNamespace | None] = {
    "fake": SimpleNamespace(sampling_params=FakeParams, lora_request=FakeLoRA,
                            lora_config=_fake_lora_config, engine_args=_fake_engine_args,
                            server_sampling=_fake_server_sampling),
    "vllm": _vllm_lane(),
}
