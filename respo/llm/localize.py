"""LLM localizers (``respo.resets.Localizer[TokenState, backend]``): where did a failed chain go wrong?

- ``PromptedSelfLocalizer`` (SRPO, ``docs/method.md`` section 4): the policy itself, with its chat
  template, reads its failed chain rendered as ``Step i: <text>`` (delimiters removed; no ground
  truth shown) and names the first erroneous step, ending with ``\\boxed{N}``. Sampling at
  temperature 0.3, up to 4096 new tokens, no stop strings (EOS only). Parse rules
  (``parse_localization``): the last ``\\boxed{integer}``; 0 means "no error" -> fallback; else the
  last "Step N" mention; else fallback; a number outside 1..n -> fallback.
- ``ConfidenceLocalizer`` (CPU track, ``docs/cpu-track.md``): one teacher-forced forward pass; the reset
  step is the first thought holding a response token whose probability under the policy is below
  ``threshold``; none below -> fallback.

Both offer ``locate_many(policy, [(parent, rng), ...])`` (``respo.buffer.BatchLocalizer``): the
prompted localizer runs ONE batched generation over all parents' prompts (one seed draw from
each request's rng, per-row random streams as in ``LMSampler.extend_many``, so the replies equal
one-by-one ``locate``'s; same parse and fallback rules and counters), the confidence localizer one right-padded teacher-forced forward (split into chunks of
at most ``max_batch_tokens`` padded tokens). ``localize/batches`` counts the backend / model calls.

Deviation from the authors' code (design rule P9, docs/design.md): there every failure (unparseable, 0, exception) silently
becomes step 1. Here only *parse* failures fall back, per ``fallback_mode`` (default "step1",
their behaviour), always with ``fell_back=True`` and a reason, and they are counted
(``pop_stats``). Exceptions from the backend or model propagate. Localization tokens are
generated but never trained; they are counted in ``localize/tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.random import Generator
from numpy.typing import NDArray

from respo.llm.generation import GenerationBackend, GroupBackend
from respo.llm.prompts import localization_messages
from respo.llm.sampler import resolve_backend
from respo.llm.thoughts import strip_delimiter
from respo.llm.types import TokenState
from respo.resets import Chain, LocateResult, check_fallback_mode, fallback
from respo.tasks.base import Problem

_BOXED_ALL = re.compile(r"\\boxed\{")
_INT = re.compile(r"^\s*(?:step\s*)?(-?\d+)\s*\.?\s*$", re.IGNORECASE)
_STEP = re.compile(r"\bstep\s*#?\s*(\d+)", re.IGNORECASE)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every closed ``\\boxed{...}`` in order of their opening (nested braces balanced)."""
    out: list[str] = []
    for m in _BOXED_ALL.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end(): i - 1])
    return out


def parse_localization(
    text: str, n_thoughts: int, *, step_mentions: bool = True
) -> tuple[int | None, str]:
    """The step named by a localization reply, or (None, reason) when it must fall back.

    Rules (``docs/method.md`` section 4): the last ``\\boxed{integer}`` (``\\boxed{Step 3}`` counts as
    3); 0 -> (None, "answered 0 (no error)"); otherwise the last "Step N" mention (only if
    ``step_mentions``); otherwise (None, "unparseable"). Any number outside 1..n_thoughts ->
    (None, "out of range ..."). Caveat (seen with SmolLM2-135M): a model that echoes the
    solution as "Step 1: ... Step n: ..." and never boxes makes the "Step N" rule answer the
    LAST step; ``step_mentions=False`` accepts boxed answers only.
    """
    ints = [int(m.group(1)) for c in _boxed_contents(text) if (m := _INT.match(c))]
    if ints:
        k, how = ints[-1], "boxed"
    else:
        mentions = _STEP.findall(text) if step_mentions else []
        if not mentions:
            return None, "unparseable"
        k, how = int(mentions[-1]), "step mention"
    if k == 0 and how == "boxed":
        return None, "answered 0 (no error)"
    if not 1 <= k <= n_thoughts:
        return None, f"out of range: {how} {k} not in 1..{n_thoughts}"
    return k, f"parsed {how}"


def thought_ids(failed: Chain[TokenState]) -> list[NDArray[np.int64]]:
    """Token ids of each thought of a chain (``states[j].ids`` minus ``states[j-1].ids``)."""
    st = failed.states
    return [st[j].ids[len(st[j - 1]):] for j in range(1, len(st))]


class PromptedSelfLocalizer:
    """SRPO's self-localization by the policy (see the module docstring).

    ``policy`` in ``locate`` is None (use ``self.backend``) or a GenerationBackend. ``problem_of``
    maps a chain's root state to its Problem (``LMSampler.problem_of``).
    """

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: Any,
        problem_of: Callable[[TokenState], Problem],
        *,
        delimiter: str = "</thought>",
        temperature: float = 0.3,
        top_p: float = 1.0,
        max_new_tokens: int = 4096,
        fallback_mode: str = "step1",
        step_mentions: bool = True,
    ) -> None:
        check_fallback_mode(fallback_mode)
        self.step_mentions = step_mentions
        self.backend = backend
        self.tokenizer = tokenizer
        self.problem_of = problem_of
        self.delimiter = delimiter
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.fallback_mode = fallback_mode
        self.last: dict[str, Any] = {}
        self._stats = dict.fromkeys(("localize/tokens", "localize/calls", "localize/fallbacks",
                                     "localize/truncated", "localize/batches"), 0.0)

    @classmethod
    def for_sampler(cls, sampler: Any, **kw: Any) -> PromptedSelfLocalizer:
        """A localizer sharing ``sampler``'s backend, tokenizer, problems and delimiter."""
        kw.setdefault("delimiter", sampler.cfg.delimiter)
        return cls(sampler.backend, sampler.tokenizer, sampler.problem_of, **kw)

    def _decode(self, ids: Any) -> str:
        return str(self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))

    def prompt_ids(self, failed: Chain[TokenState]) -> NDArray[np.int64]:
        """Chat-templated localization prompt of ``failed`` as token ids."""
        problem = self.problem_of(failed.states[0])
        steps = [strip_delimiter(self._decode(t), self.delimiter) for t in thought_ids(failed)]
        text = self.tokenizer.apply_chat_template(
            localization_messages(problem.question, steps), add_generation_prompt=True,
            tokenize=False)
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"],
                          dtype=np.int64)

    def locate(self, policy: object, failed: Chain[TokenState], *, rng: Generator) -> LocateResult:
        return self.locate_many(policy, [(failed, rng)])[0]

    def locate_many(
        self, policy: object, requests: Sequence[tuple[Chain[TokenState], Generator]]
    ) -> list[LocateResult]:
        """``[locate(policy, parent, rng) for ...]`` with one batched generation for all parents."""
        reqs = list(requests)
        if not reqs:
            return []
        if any(c.n_thoughts < 1 for c, _ in reqs):
            raise ValueError("cannot localize in a chain with no thoughts")
        backend = resolve_backend(policy, self.backend)
        prompts = [self.prompt_ids(c) for c, _ in reqs]
        seeds = [int(r.integers(0, 2**63 - 1)) for _, r in reqs]
        kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                  top_p=self.top_p)
        if isinstance(backend, GroupBackend):
            gens = [g for grp in backend.generate_groups(prompts, [1] * len(prompts), seed=seeds, **kw)
                    for g in grp]
            self._stats["localize/batches"] += 1
        else:  # one call per parent
            gens = [backend.continue_group(p, 1, seed=s, **kw)[0] for p, s in zip(prompts, seeds, strict=True)]
            self._stats["localize/batches"] += len(prompts)
        if len(gens) != len(reqs):
            raise RuntimeError(f"backend returned {len(gens)} generations for {len(reqs)} prompts")
        return [self._finish(c, g, r) for (c, r), g in zip(reqs, gens, strict=True)]

    def _finish(self, failed: Chain[TokenState], g: Any, rng: Generator) -> LocateResult:
        n = failed.n_thoughts
        reply = self._decode(g.ids)
        step, reason = parse_localization(reply, n, step_mentions=self.step_mentions)
        self._stats["localize/tokens"] += len(g.ids)
        self._stats["localize/calls"] += 1
        self._stats["localize/truncated"] += float(not g.finished)
        if step is None:
            self._stats["localize/fallbacks"] += 1
            res = fallback(self.fallback_mode, n, rng, reason)
        else:
            res = LocateResult(step, False, reason)
        self.last = {"text": reply, "tokens": len(g.ids), "step": res.step, "reason": reason}
        return res

    def pop_stats(self) -> dict[str, float]:
        """Counters since the last call (then reset): tokens, calls, fallbacks, truncated."""
        out = dict(self._stats)
        for key in self._stats:
            self._stats[key] = 0.0
        return out


@torch.no_grad()
def token_probs(model: Any, ids: NDArray[np.int64], *, temperature: float = 1.0) -> NDArray[np.float64]:
    """p(ids[t] | ids[:t]) under ``model`` for t = 1..T-1, shape [T-1] (one teacher-forced pass)."""
    param = next(model.parameters())
    x = torch.tensor(np.asarray(ids, dtype=np.int64), device=param.device)[None]
    logits = model(input_ids=x).logits[0, :-1].float() / temperature
    lp = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None]).squeeze(-1)
    return lp.exp().double().cpu().numpy()


def token_probs_many(model: Any, seqs: Sequence[NDArray[np.int64]], *, temperature: float = 1.0,
                     max_batch_tokens: int = 8192) -> list[NDArray[np.float64]]:
    """``token_probs`` of each sequence, from right-padded batched forwards.

    Sequences are sorted by length and cut into chunks of at most ``max_batch_tokens`` padded
    tokens (at least one sequence per chunk), which bounds the [B, T, V] logits. Right padding
    with an attention mask leaves every real position's causal context unchanged.
    """
    return _padded_token_probs(model, seqs, temperature, max_batch_tokens)[0]


@torch.no_grad()
def _padded_token_probs(model: Any, seqs: Sequence[NDArray[np.int64]], temperature: float,
                        max_batch_tokens: int) -> tuple[list[NDArray[np.float64]], int]:
    """(``token_probs_many``'s answer, number of forward passes it took)."""
    param = next(model.parameters())
    arrs = [np.asarray(x, dtype=np.int64) for x in seqs]
    if any(a.ndim != 1 or len(a) < 2 for a in arrs):
        raise ValueError("each sequence needs >= 2 tokens")
    order = sorted(range(len(arrs)), key=lambda i: -len(arrs[i]))
    out: list[NDArray[np.float64] | None] = [None] * len(arrs)
    j = forwards = 0
    while j < len(order):
        forwards += 1
        width = len(arrs[order[j]])
        rows = max(1, max_batch_tokens // width)
        chunk = order[j: j + rows]
        j += len(chunk)
        x = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, i in enumerate(chunk):
            x[b, : len(arrs[i])] = torch.tensor(arrs[i], dtype=torch.long)
            mask[b, : len(arrs[i])] = 1
        x, mask = x.to(param.device), mask.to(param.device)
        pos = torch.arange(width, device=param.device).expand(len(chunk), width)
        logits = model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, :-1].float()
        lp = torch.log_softmax(logits / temperature, -1).gather(-1, x[:, 1:, None]).squeeze(-1)
        p = lp.exp().double().cpu().numpy()
        for b, i in enumerate(chunk):
            out[i] = p[b, : len(arrs[i]) - 1]
    return [o for o in out if o is not None], forwards


class ConfidenceLocalizer:
    """Reset at the first thought holding a token the policy found unlikely (see module docstring).

    Probabilities are at temperature 1 unless ``temperature`` says otherwise. All response tokens
    are examined (copied prefix thoughts too). ``policy`` in ``locate`` may be None (use
    ``self.model``) or a torch module (used instead).
    """

    def __init__(self, model: Any, *, threshold: float, fallback_mode: str = "step1",
                 temperature: float = 1.0, max_batch_tokens: int = 8192) -> None:
        check_fallback_mode(fallback_mode)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        self.model = model
        self.threshold = threshold
        self.fallback_mode = fallback_mode
        self.temperature = temperature
        self.max_batch_tokens = max_batch_tokens
        self._stats = dict.fromkeys(("localize/calls", "localize/fallbacks", "localize/batches"),
                                    0.0)

    def _model(self, policy: object) -> Any:
        model = self.model if policy is None else policy
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"policy must be None or a torch module, got {type(policy).__name__}")
        return model

    def locate(self, policy: object, failed: Chain[TokenState], *, rng: Generator) -> LocateResult:
        if failed.n_thoughts < 1:
            raise ValueError("cannot localize in a chain with no thoughts")
        model = self._model(policy)
        self._stats["localize/batches"] += 1
        p = token_probs(model, failed.states[-1].ids, temperature=self.temperature)
        return self._finish(failed, p, rng)

    def locate_many(
        self, policy: object, requests: Sequence[tuple[Chain[TokenState], Generator]]
    ) -> list[LocateResult]:
        """``[locate(policy, parent, rng) for ...]`` from padded batched forwards."""
        reqs = list(requests)
        if not reqs:
            return []
        if any(c.n_thoughts < 1 for c, _ in reqs):
            raise ValueError("cannot localize in a chain with no thoughts")
        model = self._model(policy)
        probs, forwards = _padded_token_probs(model, [c.states[-1].ids for c, _ in reqs],
                                              self.temperature, self.max_batch_tokens)
        self._stats["localize/batches"] += forwards
        return [self._finish(c, p, r) for (c, r), p in zip(reqs, probs, strict=True)]

    def _finish(self, failed: Chain[TokenState], p: NDArray[np.float64], rng: Generator) -> LocateResult:
        n = failed.n_thoughts
        self._stats["localize/calls"] += 1
        st = failed.states
        start = st[0].prompt_len
        if start == 0:
            raise ValueError("chain has an empty prompt: the first token has no probability")
        low = np.flatnonzero(p[start - 1:] < self.threshold)  # p[t - 1] scores ids[t]
        if low.size == 0:
            self._stats["localize/fallbacks"] += 1
            return fallback(self.fallback_mode, n, rng, f"no token below p={self.threshold}")
        t = int(low[0]) + start  # index in ids of the first unlikely response token
        bounds = np.array([len(s) for s in st])
        k = int(np.searchsorted(bounds, t, side="right"))
        return LocateResult(k, False, f"token {t} has p={p[t - 1]:.3g} < {self.threshold}")

    def pop_stats(self) -> dict[str, float]:
        """Counters since the last call (then reset): calls, fallbacks."""
        out = dict(self._stats)
        for key in self._stats:
            self._stats[key] = 0.0
        return out
