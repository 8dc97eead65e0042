"""The task interface the trainer and the evaluator consume.

A ``Problem`` is data (question, reference answer, metadata). A ``Task`` scores a response with
``reward(problem, response) -> float in [0, 1]`` and, for tasks that know their ground-truth
steps, judges a chain of thoughts with ``first_error(problem, thoughts) -> int | None`` (the
1-indexed first erroneous thought): the credit-assignment oracle on the LLM side. Rewards get no
hidden keyword arguments (anti-pattern 8): a reward sees the problem and the response text only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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
