"""Multiple-choice and yes/no tasks (CommonsenseQA, SciKnowEval, StrategyQA).

Multiple choice: ``problem.answer`` is the gold letter; ``problem.meta["choices"]`` (optional)
lists the option texts in letter order, so a boxed option *text* also counts. Yes/no:
``problem.answer`` is ``"yes"`` or ``"no"``. Rewards are 0/1 (``docs/method.md`` section 5).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from respo.tasks.base import Problem
from respo.tasks.extract import choice_letter, last_boxed, strip_wrappers, yes_no


def _letters(problem: Problem) -> str:
    choices = problem.meta.get("choices")
    n = len(choices) if choices else 10
    return string.ascii_uppercase[:n]


def chosen_letter(problem: Problem, response: str) -> str | None:
    """The letter a response picks: a letter phrasing, or a boxed text equal to one option's text."""
    letters = _letters(problem)
    got = choice_letter(response, letters)
    if got is None:
        box = last_boxed(response)
        choices = problem.meta.get("choices")
        if box is not None and choices:
            s = strip_wrappers(box).casefold()
            for letter, text in zip(letters, choices, strict=False):
                if s == str(text).strip().casefold():
                    return letter
    return got


@dataclass
class ChoiceTask:
    """Reward 1 if the chosen letter equals ``problem.answer`` (one letter, case-insensitive)."""

    name: str = "choice"
    has_step_judge: bool = False

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if chosen_letter(problem, response) == problem.answer.strip().upper() else 0.0

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        raise NotImplementedError("multiple-choice tasks have no ground-truth steps")


@dataclass
class YesNoTask:
    """Reward 1 if the response's yes/no equals ``problem.answer`` (``yes``/``no``, or true/false)."""

    name: str = "yesno"
    has_step_judge: bool = False

    def reward(self, problem: Problem, response: str) -> float:
        gold = problem.answer.strip().lower() in ("yes", "true")
        got = yes_no(response)
        return 1.0 if got is not None and got == gold else 0.0

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        raise NotImplementedError("yes/no tasks have no ground-truth steps")
