"""The task interface the trainer and the evaluator consume.

A ``Problem`` is data (question, reference answer, metadata). A ``Task`` scores a response with
``reward(problem, response) -> float in [0, 1]`` and, for tasks that know their ground-truth
steps, judges a chain of thoughts with ``first_error(problem, thoughts) -> int | None`` (the
1-indexed first erroneous thought): the credit-assignment oracle on the LLM side. Rewards get no
hidden keyword arguments (docs/design.md, "Things we avoid"): a reward sees the problem and the response text only.
``check_input_file`` / ``input_lines`` read untrusted input files (data files, ``respo prepare``
inputs) with size limits and errors that name the file and line.
``GuardedTask`` wraps a task for the trainer and the evaluator: a failure while scoring one
response scores it 0 and is counted (``reward/failures``), and the run goes on.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

MAX_INPUT_BYTES = 2 << 30
"""Largest input file read (data files, prepared benchmarks, ``respo prepare`` inputs)."""
MAX_LINE_BYTES = 64 << 20
"""Largest line of a JSON-lines input file."""


@dataclass(frozen=True)
class Problem:
    """One item: ``question`` shown to the model, ``answer`` the reference, ``meta`` extras."""

    id: str
    question: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"problem id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"problem {self.id!r}: empty or non-string question")
        if not isinstance(self.answer, str):
            raise ValueError(f"problem {self.id!r}: answer must be a string, got {type(self.answer).__name__}")


@runtime_checkable
class Task(Protocol):
    """A verifiable task. ``has_step_judge`` says whether ``first_error`` is meaningful.

    ``name`` and ``has_step_judge`` are read-only here, so frozen dataclasses satisfy the protocol.
    """

    @property
    def name(self) -> str: ...

    @property
    def has_step_judge(self) -> bool: ...

    def reward(self, problem: Problem, response: str) -> float: ...

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None: ...


def check_reward(value: object, *, where: str) -> float:
    """Return ``value`` as a float in [0, 1] or raise a ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: reward must be a number in [0, 1], got {value!r}")
    v = float(value)
    if math.isnan(v) or v < 0.0 or v > 1.0:
        raise ValueError(f"{where}: reward must be a number in [0, 1], got {value!r}")
    return v


class GuardedTask:
    """``task`` whose ``reward`` never raises for one bad response: it scores 0 and is counted.

    Any ``Exception`` from the wrapped reward (a crash in a verifier or the code harness on a
    hostile output, or a value ``check_reward`` refuses) becomes reward 0. ``failures`` counts them
    by exception type over the object's life; ``pop_stats`` returns the count since its last call
    as ``{"reward/failures": n}`` (a trainer statistics source). The first ``report`` failures of
    each type are printed to stderr with the problem id. Every other attribute is the task's.
    """

    def __init__(self, task: Any, *, report: int = 3) -> None:
        self.task = task
        self.failures: Counter[str] = Counter()
        self.report = report
        self._since_pop = 0

    def __getattr__(self, name: str) -> Any:
        if name == "task":  # not set yet (copy / unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.task, name)

    def reward(self, problem: Problem, response: str) -> float:
        where = f"task {getattr(self.task, 'name', '?')!r}, problem {problem.id!r}"
        try:
            return check_reward(self.task.reward(problem, response), where=where)
        except Exception as e:  # noqa: BLE001 - one response must never end the run
            kind = type(e).__name__
            self.failures[kind] += 1
            self._since_pop += 1
            if self.failures[kind] <= self.report:
                print(f"[reward] {where}: scoring failed ({kind}: {str(e)[:200]}); scored 0", file=sys.stderr)
            return 0.0

    def pop_stats(self) -> dict[str, float]:
        """Scoring failures since the last call (then reset to zero)."""
        n, self._since_pop = self._since_pop, 0
        return {"reward/failures": float(n)}


def guarded(task: Any) -> GuardedTask:
    """``task`` wrapped in ``GuardedTask`` (unchanged if it already is one)."""
    return task if isinstance(task, GuardedTask) else GuardedTask(task)


def check_input_file(path: str | Path, *, max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """``path`` if it is a non-empty regular file of at most ``max_bytes``; else an error naming it."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, expected a file")
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{p}: empty file")
    if size > max_bytes:
        raise ValueError(f"{p}: {size} bytes, more than the {max_bytes}-byte limit for an input file")
    return p


def input_lines(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a checked input file's non-blank lines, decoded as UTF-8; a
    line that is not UTF-8 or longer than ``max_line_bytes`` raises ValueError naming file:line."""
    p = check_input_file(path)
    with p.open("rb") as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes:
                raise ValueError(f"{p}:{lineno}: line longer than the {max_line_bytes}-byte limit")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{p}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if text.strip():
                yield lineno, text
