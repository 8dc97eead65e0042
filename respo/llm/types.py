"""Token-level states of the LLM world: ``TokenState`` (prompt + thoughts so far, as token ids).

A chain of the LLM trainer is a ``respo.resets.Chain[TokenState]``: ``states[j].ids`` is the
prompt followed by thoughts 1..j *exactly as generated* (token ids, never re-tokenized text), and
``states[-1].ids`` is the full sequence. The trained tokens of a chain run from
``len(states[chain.prefix_len].ids)`` to the end. No torch here: states are numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class TokenState:
    """Prompt + thoughts so far as int64 token ids (1-D; may be a read-only view of a longer row).

    ``prompt_len`` is the number of prompt tokens at the start of ``ids``. Equality compares the
    ids (``np.array_equal``) and ``prompt_len``; the hash is that of the id bytes, so equal states
    hash equally.
    """

    ids: NDArray[np.int64]
    prompt_len: int

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.ndim != 1:
            raise ValueError(f"TokenState.ids must be 1-D, got shape {ids.shape}")
        if ids.dtype != np.int64:
            ids = ids.astype(np.int64)
        if ids.flags.writeable:
            ids = ids.view()
            ids.flags.writeable = False
        object.__setattr__(self, "ids", ids)
        if not 0 <= int(self.prompt_len) <= len(ids):
            raise ValueError(f"prompt_len={self.prompt_len} outside [0, {len(ids)}]")
        object.__setattr__(self, "prompt_len", int(self.prompt_len))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def prompt_ids(self) -> NDArray[np.int64]:
        """The prompt tokens, shape [prompt_len]."""
        return self.ids[: self.prompt_len]

    @property
    def response_ids(self) -> NDArray[np.int64]:
        """The thought tokens after the prompt, shape [len - prompt_len]."""
        return self.ids[self.prompt_len :]

    def key(self) -> bytes:
        """The id bytes (with the prompt length), usable as a dict key."""
        return self.prompt_len.to_bytes(8, "little") + self.ids.tobytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenState):
            return NotImplemented
        return self.prompt_len == other.prompt_len and bool(np.array_equal(self.ids, other.ids))

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"TokenState(len={len(self)}, prompt_len={self.prompt_len})"
