"""``LMSampler``: the LLM implementation of ``respo.resets.Sampler[TokenState, backend]``.

``extend(policy, prefix, n, rng)`` continues ``prefix[-1].ids`` token-exactly n times with a
``GenerationBackend`` (one prefill shared by the n rows), splits each continuation into thoughts
at delimiter tokens (``respo.llm.thoughts``), scores the whole response text with the task's
``reward(problem, text)`` (validated by ``check_reward``), and returns chains whose states are the
prefix followed by one state per new thought, with ``prefix_len = len(prefix) - 1``.

``extend_many(policy, [(prefix, n, rng), ...])`` serves many requests (different prefixes and
n; e.g. every prompt of a training step, ``respo.buffer.build_buffers``) with ONE
``GroupBackend.generate_groups`` call under the same per-chain contract. Each request's rng is
consumed exactly as by ``extend`` (one integer draw), and that draw is the request's prompt seed
in the call; the backend's random streams are per row (``respo.llm.generation``), so
``extend_many(requests)`` gives the same chains as ``[extend(r) for r in requests]`` (up to
float noise in batched logits): batching changes speed, not samples.

How the sampler knows the problem of a state: ``root(problem)`` renders the completion prompt,
tokenizes it and registers the problem under the prompt's id bytes; ``problem_of(state)`` looks
it up from any state of a chain (the prompt ids are always its first ``prompt_len`` tokens).

Limits (``respo.llm.config.SampleConfig``, the one declaration of the sampling limits, re-exported
here; ``docs/method.md`` section 2): the response budget ``max_response_tokens`` counts the copied prefix
thoughts too (a suffix gets what the prefix left), as does ``max_thoughts``. A row cut by a limit
is cut back to its last complete thought; if no thought completed, the partial text is kept as a
single incomplete thought (so a chain always has >= 1 thought; ``info["truncated"]`` is True).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.random import Generator

from respo.llm.config import SampleConfig as SampleConfig  # the one declaration, re-exported
from respo.llm.generation import Generation, GenerationBackend, GroupBackend, StopRule
from respo.llm.prompts import (
    end_of_turn_id,
    followup_message,
    followup_prompt_ids,
    prompt_token_ids,
)
from respo.llm.thoughts import (
    AnswerDetector,
    ThoughtFormat,
    boxed_answer,
    complete_length,
    split_thoughts,
)
from respo.llm.types import TokenState
from respo.resets import Chain
from respo.tasks.base import Problem, Task, check_reward

PAPER_SAMPLE = SampleConfig()
"""``SampleConfig``'s defaults: the paper's sampling (``LMSampler``'s default)."""


def resolve_backend(policy: object, default: GenerationBackend) -> GenerationBackend:
    """``policy`` if it is a GenerationBackend, ``default`` if it is None; else TypeError."""
    if policy is None:
        return default
    if isinstance(policy, GenerationBackend):
        return policy
    raise TypeError(
        f"policy must be None or a GenerationBackend, got {type(policy).__name__}; "
        "the backend holds the model, so pass the backend (or None)"
    )


class LMSampler:
    """Token-exact on-policy continuations of thought prefixes (see the module docstring)."""

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: Any,
        task: Task,
        *,
        cfg: SampleConfig = PAPER_SAMPLE,
        detector: AnswerDetector = boxed_answer,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.task = task
        self.cfg = cfg
        if cfg.prompt_variant == "chat":  # the chain must end at the model's end of turn
            eot = end_of_turn_id(tokenizer)
            eos = getattr(backend, "eos_ids", None)
            if eot is not None and eos is not None and eot not in eos:
                raise ValueError(f"prompt variant 'chat': the chat template's end-of-turn token "
                                 f"{eot} is not an EOS id of the backend ({sorted(eos)}); "
                                 "pass eos_ids to the backend")
        self.fmt = ThoughtFormat.for_tokenizer(tokenizer, cfg.delimiter, detector=detector)
        self.stop = StopRule(self.fmt, max_thought_tokens=cfg.max_thought_tokens,
                             max_thoughts=cfg.max_thoughts, overflow=cfg.overflow)
        self._problems: dict[bytes, Problem] = {}
        self._stats = dict.fromkeys(("gen/tokens", "gen/chains", "gen/truncated",
                                     "gen/forced_tokens", "gen/calls"), 0.0)

    # -- problems --------------------------------------------------------------------------
    def prompt_ids(self, problem: Problem) -> np.ndarray:
        """Token ids of the prompt of ``problem``: the completion prompt (tokenizer's default
        specials) or, for ``prompt_variant="chat"``, the chat template up to the assistant turn."""
        return prompt_token_ids(self.tokenizer, problem.question, delimiter=self.cfg.delimiter,
                                variant=self.cfg.prompt_variant)

    def register(self, problem: Problem, prompt_ids: np.ndarray) -> TokenState:
        """Bind ``problem`` to ``prompt_ids`` and return the root state."""
        root = TokenState(np.asarray(prompt_ids, dtype=np.int64), len(prompt_ids))
        key = root.ids.tobytes()
        old = self._problems.get(key)
        if old is not None and (old.answer != problem.answer or old.meta != problem.meta):
            raise ValueError(f"problems {old.id!r} and {problem.id!r} render to the same prompt "
                             "but differ in answer or meta")
        self._problems.setdefault(key, problem)
        return root

    def root(self, problem: Problem) -> TokenState:
        """The root state (rendered prompt) of ``problem``, registered for ``problem_of``."""
        return self.register(problem, self.prompt_ids(problem))

    def problem_of(self, state: TokenState) -> Problem:
        """The problem whose prompt starts ``state``; KeyError if it was never registered."""
        try:
            return self._problems[state.prompt_ids.tobytes()]
        except KeyError:
            raise KeyError("state's prompt was never registered: build roots with "
                           "LMSampler.root(problem)") from None

    # -- follow-up prompts (SCoRe, Critique-GRPO) ------------------------------------------------
    def followup_root(self, chain: Chain[TokenState], kind: str) -> TokenState:
        """Root state of a second turn that shows ``chain``'s response (``respo.buffer``).

        ``kind="retry"``: SCoRe's self-correction instruction (``RETRY_INSTRUCTION``);
        ``"critique"``: Critique-GRPO's ground-truth critique (``critique_text``: right or wrong,
        reward >= 1 counting as right, and the problem's answer) and refinement request. With
        the ``bare`` prompt (the CPU track's character model) the retry has no text and the
        critique is two words ("wrong 7"). The root is registered under the chain's problem.
        """
        problem = self.problem_of(chain.states[0])
        message = followup_message(kind, answer=problem.answer, correct=chain.reward >= 1.0,
                                   variant=self.cfg.prompt_variant)
        text = self.fmt.decode(chain.states[-1].response_ids)
        ids = followup_prompt_ids(self.tokenizer, problem.question, text, message,
                                  delimiter=self.cfg.delimiter, variant=self.cfg.prompt_variant)
        return self.register(problem, ids)

    def reroot(self, chain: Chain[TokenState], root: TokenState) -> Chain[TokenState]:
        """``chain``'s response (all of it, prefix thoughts included) re-based on ``root``.

        Critique-GRPO trains a refinement as an answer to the bare problem: the token ids after
        ``chain``'s prompt are kept exactly, the prompt is replaced by ``root``'s (which must be
        registered to the same problem). The reward is unchanged (it scores the response text).
        """
        if self.problem_of(root).id != self.problem_of(chain.states[0]).id:
            raise ValueError("reroot: the new root belongs to another problem")
        p0 = chain.states[0].prompt_len
        states = (root,) + tuple(
            TokenState(np.concatenate([root.ids, s.ids[p0:]]), root.prompt_len)
            for s in chain.states[1:])
        info = dict(chain.info, rerooted_from_prompt_len=int(p0))
        return Chain(states, chain.reward, prefix_len=0, info=info)

    # -- sampling --------------------------------------------------------------------------
    def _prepare(self, prefix: tuple[TokenState, ...], n: int) -> tuple[Problem, int, StopRule]:
        """Validate one request; return (problem, token budget left, stop rule for the rest)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prefix or not all(isinstance(s, TokenState) for s in prefix):
            raise TypeError("prefix must be a non-empty tuple of TokenState")
        last = prefix[-1]
        if not np.array_equal(last.ids[: len(prefix[0])], prefix[0].ids):
            raise ValueError("prefix states do not extend their root")
        problem = self.problem_of(last)
        k = len(prefix) - 1  # complete thoughts in the prefix ...
        if k and not self.fmt.delimiter.ends_thought(last.ids, len(prefix[-2].ids), len(last.ids)):
            k -= 1  # ... but a partial last one (a token-level branch point) is completed by the rest
        budget = self.cfg.max_response_tokens - (len(last) - last.prompt_len)
        if budget < 1 or k >= self.cfg.max_thoughts:
            raise ValueError(f"prefix of {k} complete thoughts / {len(last) - last.prompt_len} tokens "
                             "leaves no room under max_thoughts / max_response_tokens")
        return problem, budget, replace(self.stop, max_thoughts=self.cfg.max_thoughts - k)

    def extend(
        self, policy: object, prefix: tuple[TokenState, ...], n: int, *, rng: Generator
    ) -> list[Chain[TokenState]]:
        """n continuations of ``prefix`` as chains (Sampler protocol; see module docstring)."""
        problem, budget, stop = self._prepare(prefix, n)
        backend = resolve_backend(policy, self.backend)
        seed = int(rng.integers(0, 2**63 - 1))
        gens = backend.continue_group(prefix[-1].ids, n, max_new_tokens=budget,
                                      temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                      seed=seed, stop=stop)
        self._stats["gen/calls"] += 1
        if len(gens) != n:
            raise RuntimeError(f"backend returned {len(gens)} generations, asked for {n}")
        return [self._chain(prefix, g, problem) for g in gens]

    def extend_many(
        self, policy: object, requests: Sequence[tuple[tuple[TokenState, ...], int, Generator]]
    ) -> list[list[Chain[TokenState]]]:
        """``[extend(policy, prefix, n, rng) for ...]`` in one backend call (``BatchSampler``).

        Falls back to one ``extend`` per request when the backend has no ``generate_groups``.
        """
        reqs = list(requests)
        if not reqs:
            return []
        backend = resolve_backend(policy, self.backend)
        if len(reqs) == 1 or not isinstance(backend, GroupBackend):
            return [self.extend(policy, p, n, rng=r) for p, n, r in reqs]
        preps = [self._prepare(p, n) for p, n, _ in reqs]
        seeds = [int(r.integers(0, 2**63 - 1)) for _, _, r in reqs]
        groups = backend.generate_groups(
            [p[-1].ids for p, _, _ in reqs], [n for _, n, _ in reqs],
            max_new_tokens=[b for _, b, _ in preps], temperature=self.cfg.temperature,
            top_p=self.cfg.top_p, seed=seeds, stop=[st for _, _, st in preps])
        self._stats["gen/calls"] += 1
        if len(groups) != len(reqs) or any(len(g) != n for g, (_, n, _) in zip(groups, reqs, strict=False)):
            raise RuntimeError("backend's generate_groups answered the wrong number of generations")
        return [[self._chain(p, g, prob) for g in gens]
                for (p, _, _), (prob, _, _), gens in zip(reqs, preps, groups, strict=True)]

    def _chain(self, prefix: tuple[TokenState, ...], g: Generation,
               problem: Problem) -> Chain[TokenState]:
        last = prefix[-1]
        delim = self.fmt.delimiter
        keep = len(g.ids)
        if not g.finished:
            keep = complete_length(g.ids, delim) or len(g.ids)
        kept = g.ids[:keep]
        full = np.concatenate([last.ids, kept])
        full.flags.writeable = False
        base = len(last)
        new_states = tuple(TokenState(full[: base + e], last.prompt_len)
                           for _, e in split_thoughts(kept, delim))
        text = self.fmt.decode(full[last.prompt_len:])
        reward = check_reward(self.task.reward(problem, text),
                              where=f"task {self.task.name!r}, problem {problem.id!r}")
        info = {
            "text": text,
            "truncated": not g.finished,
            "n_generated": len(g.ids),
            "n_kept": int(keep),
            "answer_found": self.fmt.detector(text) is not None,
            "stop_reason": g.stop_reason,
            "n_forced": g.n_forced,
            "logprobs": g.logprobs[:keep],
            "problem_id": problem.id,
        }
        self._stats["gen/tokens"] += len(g.ids)
        self._stats["gen/chains"] += 1
        self._stats["gen/truncated"] += float(not g.finished)
        self._stats["gen/forced_tokens"] += g.n_forced
        return Chain(prefix + new_states, reward, prefix_len=len(prefix) - 1, info=info)

    def pop_stats(self) -> dict[str, float]:
        """Generation counters since the last call (then reset to zero)."""
        out = dict(self._stats)
        for key in self._stats:
            self._stats[key] = 0.0
        return out
