"""Thoughts at the token level: split a response into steps, cut back to complete steps, find answers.

A *thought* is the tokens up to and including a delimiter token sequence (``docs/method.md`` section
2: ``</thought>`` in the paper, a newline for small models). Splitting is done on token ids,
never by re-tokenizing text, so concatenating the spans reproduces the ids exactly and a reset
can continue from the exact ids of a prefix.

Rule (shared by ``split_thoughts`` and the generation loop, so both agree): scanning left to
right, a thought ends at the first position where the thought's ids so far end with one of the
delimiter's token sequences (``Delimiter.alternatives``). A trailing remainder without a
delimiter is returned as a last (incomplete) span by ``split_thoughts`` and dropped by
``truncate_to_complete``.

Final-answer detection works on decoded thought *text* through a swappable ``AnswerDetector``
(``boxed_answer`` by default: the content of the last ``\\boxed{...}``, nested braces allowed;
``prefixed_answer("Answer:")`` for tasks that answer as "Answer: 7").

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

AnswerDetector = Callable[[str], "str | None"]
"""Maps a thought's (or response's) text to the final answer it states, or None."""


@dataclass(frozen=True)
class Delimiter:
    """The end-of-thought marker: its text and the token-id sequences that count as it.

    ``alternatives[0]`` is the canonical encoding (what a forced thought end appends). Build with
    ``Delimiter.from_tokenizer``; for a BPE vocabulary this also admits every *single* token whose
    decoded text ends with the delimiter text (e.g. ``".\\n"`` or ``"\\n\\n"`` for a newline
    delimiter), because models rarely emit the canonical split. Deviation: other multi-token
    spellings (e.g. ``" </"`` + ``"thought>"``) are not recognised; the ids stay exact either way.
    """

    text: str
    alternatives: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.alternatives or any(len(a) == 0 for a in self.alternatives):
            raise ValueError(f"delimiter {self.text!r} needs non-empty token sequences")

    @property
    def canonical(self) -> tuple[int, ...]:
        return self.alternatives[0]

    @property
    def max_len(self) -> int:
        return max(len(a) for a in self.alternatives)

    @classmethod
    def of_ids(cls, ids: Sequence[int], text: str = "") -> Delimiter:
        """A delimiter given by one token sequence."""
        return cls(text, (tuple(int(i) for i in ids),))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, text: str, *, scan_vocab: bool = True) -> Delimiter:
        """Canonical encoding of ``text`` plus single vocab tokens whose text ends with it."""
        if not text:
            raise ValueError("delimiter text must be non-empty")
        canonical = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
        alts: dict[tuple[int, ...], None] = {canonical: None}
        if scan_vocab:
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            for tid in range(len(tokenizer)):
                if tid in special:
                    continue
                piece = tokenizer.decode([tid])
                if piece.endswith(text):
                    alts.setdefault((tid,), None)
        return cls(text, tuple(alts))

    def ends_thought(self, ids: Sequence[int] | NDArray[np.int64], start: int, end: int) -> bool:
        """True when ``ids[start:end]`` (the current thought) ends with an alternative."""
        n = end - start
        for alt in self.alternatives:
            k = len(alt)
            if k <= n and all(int(ids[end - k + i]) == alt[i] for i in range(k)):
                return True
        return False


def _as_delimiter(delimiter: Delimiter | Sequence[int]) -> Delimiter:
    return delimiter if isinstance(delimiter, Delimiter) else Delimiter.of_ids(delimiter)


def split_thoughts(
    ids: Sequence[int] | NDArray[np.int64], delimiter: Delimiter | Sequence[int]
) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of the thoughts in ``ids`` (end exclusive, delimiter kept).

    Spans are contiguous and cover ``ids`` exactly: ``concat(ids[s:e]) == ids``. The last span
    has no delimiter when the ids do not end with one (an incomplete or EOS-ended thought).
    Empty ``ids`` give no spans. Shapes: ids [T] -> K spans.
    """
    d = _as_delimiter(delimiter)
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(ids)
    for pos in range(1, n + 1):
        if d.ends_thought(ids, start, pos):
            spans.append((start, pos))
            start = pos
    if start < n:
        spans.append((start, n))
    return spans


def complete_length(ids: Sequence[int] | NDArray[np.int64], delimiter: Delimiter | Sequence[int]) -> int:
    """Length of the longest prefix of ``ids`` made of complete (delimited) thoughts."""
    spans = split_thoughts(ids, delimiter)
    d = _as_delimiter(delimiter)
    if spans and d.ends_thought(ids, spans[-1][0], spans[-1][1]):
        return spans[-1][1]
    return spans[-2][1] if len(spans) >= 2 else 0


def truncate_to_complete(
    ids: Sequence[int] | NDArray[np.int64], delimiter: Delimiter | Sequence[int]
) -> NDArray[np.int64]:
    """``ids`` cut back to the end of its last complete thought (may be empty).

    ``docs/method.md`` section 2: a response that runs out of budget is cut back to its last complete
    thought.
    """
    arr = np.asarray(ids, dtype=np.int64)
    return arr[: complete_length(arr, delimiter)]


def extract_boxed(text: str) -> str | None:
    """Content of the LAST ``\\boxed{...}`` in ``text`` (nested braces balanced), else None.

    An unclosed last ``\\boxed{`` is skipped in favour of the previous closed one.
    """
    key = "\\boxed{"
    pos = text.rfind(key)
    while pos != -1:
        i = pos + len(key)
        depth = 1
        j = i
        while j < len(text):
            ch = text[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j]
            j += 1
        pos = text.rfind(key, 0, pos)
    return None


def boxed_answer(text: str) -> str | None:
    """The default ``AnswerDetector``: ``extract_boxed``."""
    return extract_boxed(text)


def prefixed_answer(prefix: str = "Answer:") -> AnswerDetector:
    """An ``AnswerDetector`` for "Answer: 7" formats: the rest of the last line holding ``prefix``.

    Returns None when the prefix is absent or followed by nothing on its line.
    """

    def detect(text: str) -> str | None:
        pos = text.rfind(prefix)
        if pos == -1:
            return None
        rest = text[pos + len(prefix) :].split("\n", 1)[0].strip()
        return rest or None

    return detect


def strip_delimiter(text: str, delimiter_text: str) -> str:
    """Thought text without its trailing delimiter and surrounding whitespace (for rendering)."""
    t = text
    if delimiter_text and t.endswith(delimiter_text):
        t = t[: -len(delimiter_text)]
    return t.strip()


@dataclass(frozen=True)
class ThoughtFormat:
    """How thoughts are delimited and how a final answer is recognised, with the decoder.

    ``is_final(thought_ids)`` decodes a thought and asks ``detector`` for an answer: the
    generation loop stops a row when a completed thought is final (``docs/method.md``: the chain ends
    when a thought contains the final answer).
    """

    delimiter: Delimiter
    decode: Callable[[Any], str]
    """Token ids (a sequence or 1-D array) -> text."""
    detector: AnswerDetector = boxed_answer

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Any, delimiter_text: str = "</thought>", *,
        detector: AnswerDetector = boxed_answer, scan_vocab: bool = True,
    ) -> ThoughtFormat:
        """Delimiter from ``tokenizer`` and decoding with special tokens skipped."""

        def decode(ids: Any) -> str:
            return str(tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))

        return cls(Delimiter.from_tokenizer(tokenizer, delimiter_text, scan_vocab=scan_vocab),
                   decode, detector)

    def is_final(self, thought_ids: Sequence[int] | NDArray[np.int64]) -> bool:
        return self.detector(self.decode(thought_ids)) is not None

    def thought_texts(self, ids: Sequence[int] | NDArray[np.int64]) -> list[str]:
        """Decoded text of each thought span of ``ids`` (delimiters kept)."""
        return [self.decode(ids[s:e]) for s, e in split_thoughts(ids, self.delimiter)]
