"""Tree branch points for the SPO-Tree and TreeRL baselines (``respo.baselines.builders``,
builder "tree").

A ``Cutter`` answers "where does this chain branch?" with a ``CutResult`` whose ``prefix`` the
branches continue. Branches may start inside a thought, so the prefix is the chain's complete
thoughts up to the branch token followed, when the branch token is not a thought boundary, by one
``TokenState`` holding the partial thought (``cut_prefix``). Token ids before the branch position
are shared by the first chain and its branches; the token at the position is re-sampled.

- ``SegmentCutter`` (SPO-Tree): the branch position is a fixed number of response tokens into the
  chain (``segment_tokens``; the authors' setting is about 600 tokens, scaled down on the CPU
  track). A chain that ends within its first segment cannot be branched inside it: the cut falls
  back to the bare problem (its branches are then fresh chains), flagged ``fell_back``.
- ``EntropyCutter`` (TreeRL's EPTree): the branch position is the response token with the highest
  uncertainty under the current policy, measured as the token's negative log-probability
  ``-log pi(y_t | x, y_<t)`` (``measure="nll"``, EPTree's choice) or the entropy of the whole
  next-token distribution (``measure="entropy"``), from one teacher-forced forward pass. The last
  response token is excluded (nothing of the chain would be left to re-sample after it), as are
  the tokens from the point where the decoded response first contains "answer" or "conclusion"
  (TreeRL's code excludes them; ``STOP_WORDS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from numpy.random import Generator
from numpy.typing import NDArray

from respo.baselines.builders import CutResult
from respo.llm.types import TokenState
from respo.resets import Chain


def cut_prefix(chain: Chain[TokenState], pos: int) -> tuple[TokenState, ...]:
    """The prefix of ``chain`` that ends just before token ``pos`` of its ids.

    ``pos`` must lie in ``[prompt_len, len(ids) - 1]``: at least the prompt is kept and at least
    one token of the chain is re-sampled. Complete thoughts ending at or before ``pos`` are kept
    as they are; a partial thought becomes one extra ``TokenState``.
    """
    ids = chain.states[-1].ids
    start = chain.states[0].prompt_len
    if not start <= pos <= len(ids) - 1:
        raise ValueError(f"branch position {pos} outside [{start}, {len(ids) - 1}] "
                         f"(prompt {start} tokens, chain {len(ids)} tokens)")
    bounds = [len(s.ids) for s in chain.states]
    k = int(np.searchsorted(bounds, pos, side="right"))  # states[:k] end at or before pos
    prefix = tuple(chain.states[:k])
    if bounds[k - 1] < pos:
        prefix = prefix + (TokenState(ids[:pos], start),)
    return prefix


def branch_thought(chain: Chain[TokenState], pos: int) -> int:
    """The thought (1-indexed) that holds token ``pos`` of the chain's ids: the thought a branch at
    ``pos`` re-samples (from its start, or from inside it)."""
    bounds = [len(s.ids) for s in chain.states]
    return int(np.searchsorted(bounds, pos, side="right"))


class SegmentCutter:
    """SPO-Tree's cut: ``segment_tokens`` response tokens into the chain (module docstring)."""

    def __init__(self, segment_tokens: int) -> None:
        if segment_tokens < 1:
            raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
        self.segment_tokens = segment_tokens

    def cut(self, policy: object, chain: Chain[TokenState], *, rng: Generator) -> CutResult[TokenState]:
        ids = chain.states[-1].ids
        pos = chain.states[0].prompt_len + self.segment_tokens
        if pos > len(ids) - 1:
            return CutResult(chain.states[:1], None, True,
                             f"chain of {len(ids) - chain.states[0].prompt_len} response tokens "
                             f"ends within its first segment of {self.segment_tokens}")
        return CutResult(cut_prefix(chain, pos), pos, False, f"segment of {self.segment_tokens} tokens",
                         step=branch_thought(chain, pos))


@torch.no_grad()
def token_uncertainty(model: Any, ids: NDArray[np.int64], *, measure: Literal["nll", "entropy"] = "nll",
                      temperature: float = 1.0) -> NDArray[np.float64]:
    """Uncertainty of each token ``ids[t]`` (t = 1..T-1) given ``ids[:t]``, shape [T-1].

    ``"nll"``: ``-log p(ids[t])``; ``"entropy"``: the entropy of the whole next-token distribution
    at that position. Probabilities at ``temperature``.
    """
    if measure not in ("nll", "entropy"):
        raise ValueError(f"measure must be 'nll' or 'entropy', got {measure!r}")
    param = next(model.parameters())
    x = torch.tensor(np.asarray(ids, dtype=np.int64), device=param.device)[None]
    logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float() / temperature, -1)
    if measure == "nll":
        u = -logp.gather(-1, x[0, 1:, None]).squeeze(-1)
    else:
        u = -(logp.exp() * logp).sum(-1)
    return u.double().cpu().numpy()


STOP_WORDS: tuple[str, ...] = ("answer", "conclusion")
"""EPTree never branches at or after the point where the response names its answer (TreeRL's
code masks the tokens from the first one whose text holds one of these words)."""


class EntropyCutter:
    """TreeRL's EPTree branch point: the most uncertain response token (module docstring).

    ``policy`` in ``cut`` may be None (use ``self.model``) or a torch module (used instead).
    """

    def __init__(self, model: Any, *, measure: Literal["nll", "entropy"] = "nll",
                 temperature: float = 1.0, tokenizer: Any = None,
                 stop_words: Sequence[str] = STOP_WORDS) -> None:
        if measure not in ("nll", "entropy"):
            raise ValueError(f"measure must be 'nll' or 'entropy', got {measure!r}")
        self.model = model
        self.measure = measure
        self.temperature = temperature
        self.tokenizer = tokenizer
        self.stop_words = tuple(w.lower() for w in stop_words)
        self._stats = dict.fromkeys(("branch/calls", "branch/fallbacks"), 0.0)

    def cut(self, policy: object, chain: Chain[TokenState], *, rng: Generator) -> CutResult[TokenState]:
        model = self.model if policy is None else policy
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"policy must be None or a torch module, got {type(policy).__name__}")
        self._stats["branch/calls"] += 1
        ids = chain.states[-1].ids
        start = chain.states[0].prompt_len
        if start < 1:
            raise ValueError("chain has an empty prompt: its first token has no probability")
        if len(ids) - start < 2:
            self._stats["branch/fallbacks"] += 1
            return CutResult(chain.states[:1], None, True, "fewer than 2 response tokens")
        u = token_uncertainty(model, ids, measure=self.measure, temperature=self.temperature)
        # u[t - 1] scores ids[t]; candidates t = start .. len - 2 (the last token is excluded),
        # and none from the token where the response first names its answer / conclusion.
        end = min(len(ids) - 1, self._answer_start(ids, start))
        if end <= start:
            self._stats["branch/fallbacks"] += 1
            return CutResult(chain.states[:1], None, True, "the response names its answer at once")
        cand = u[start - 1: end - 1]
        pos = int(np.argmax(cand)) + start
        return CutResult(cut_prefix(chain, pos), pos, False,
                         f"token {pos} has the highest {self.measure} {u[pos - 1]:.3g}",
                         step=branch_thought(chain, pos))

    def _answer_start(self, ids: NDArray[np.int64], start: int) -> int:
        """Index of the first response token by which the decoded text contains a stop word
        (len(ids) when none does, or without a tokenizer)."""
        if self.tokenizer is None or not self.stop_words:
            return len(ids)
        pieces = self.tokenizer.batch_decode([[int(i)] for i in ids[start:]])
        text = ""
        for k, piece in enumerate(pieces):
            text += piece.lower()
            if any(w in text for w in self.stop_words):
                return start + k
        return len(ids)

    def pop_stats(self) -> dict[str, float]:
        """Counters since the last call (then reset)."""
        out = dict(self._stats)
        for key in self._stats:
            self._stats[key] = 0.0
        return out
