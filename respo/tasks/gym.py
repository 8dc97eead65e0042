"""Adapters for reasoning-gym generators (offline procedural tasks for CPU runs).

``GymTask("chain_sum")`` draws problems from a reasoning-gym generator and scores responses
with the generator's own ``score_answer`` after extracting the answer: the last
``\\boxed{...}``, else an ``<answer>...</answer>`` tag; no answer scores 0.

Splits: ``problems(n, seed=, split=)`` seeds the generator with ``int_seed_for(seed, "data",
split)``, so another split name gives a held-out set; ``make_splits`` also drops test questions
that occur in training.

Deviation: some generators give partial credit for a wrongly answered but well-formed reply
(``gsm_symbolic`` returns 0.01 for any number), a format reward the paper does not use; with
``binary=True`` (the default) the reward is 1 only for a full score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from respo.seeding import int_seed_for
from respo.tasks.base import Problem
from respo.tasks.extract import last_boxed

GENERATORS = ("gsm_symbolic", "basic_arithmetic", "chain_sum", "leg_counting")
"""Generators this adapter is tested with (any reasoning-gym name works)."""


_PHRASE_RE = re.compile(r"answer is\s*:?\s*\$?(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def extract_gym_answer(response: str, *, phrase: bool = False) -> str | None:
    """The last ``\\boxed{}``, else the last ``<answer>`` tag's content, else None.

    With ``phrase=True`` a final "the answer is N" (N a number) also counts, after the two
    above: small instruct models (SmolLM2-135M) answer that way and never box (experiments/LOG.md).
    """
    box = last_boxed(response)
    if box is not None:
        return box.strip()
    from reasoning_gym.utils import extract_answer

    got = extract_answer(response[-20_000:])
    if isinstance(got, str):
        return got.strip()
    if phrase:
        hits = _PHRASE_RE.findall(response[-20_000:])
        if hits:
            return hits[-1].replace(",", "")
    return None


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


@dataclass
class GymTask:
    """A reasoning-gym generator as a ``Task``."""

    generator: str
    config: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``reasoning_gym.create_dataset`` (difficulty knobs)."""
    binary: bool = True
    """Reward 1 only for a full score (no partial format credit)."""
    phrase_answers: bool = False
    """Also accept a final "the answer is N" when there is no boxed or tagged answer (task
    names ``gym-phrase:<generator>``); a deviation from the paper's boxed-only answers."""
    name: str = ""
    has_step_judge: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{'gym-phrase' if self.phrase_answers else 'gym'}:{self.generator}"
        self._scorer: Any = None

    def _dataset(self, size: int, seed: int) -> Any:
        import reasoning_gym

        return reasoning_gym.create_dataset(self.generator, size=size, seed=seed, **dict(self.config))

    def problems(self, n: int, *, seed: int, split: str = "train", exclude: Sequence[Problem] = ()) -> list[Problem]:
        """``n`` problems from the generator seeded by (seed, split); ``exclude`` questions are dropped."""
        if n == 0:
            return []
        # Oversample: easy generator settings have small question spaces (121 distinct questions
        # for two-term one-digit additions), where a draw of n + a little yields duplicates.
        ds = self._dataset(4 * (n + len(exclude)) + 64, int_seed_for(seed, "data", split) % (2**31))
        seen = {p.question for p in exclude}
        out: list[Problem] = []
        for i in range(len(ds)):
            e = ds[i]
            if e["question"] in seen:
                continue
            seen.add(e["question"])
            out.append(Problem(f"{self.generator}-{split}-{seed}-{i}", e["question"], str(e["answer"]),
                               {"gym": self.generator, "gym_metadata": _jsonable(e.get("metadata", {}))}))
            if len(out) == n:
                return out
        raise ValueError(f"{self.generator}: only {len(out)} distinct problems, need {n}")

    def make_splits(self, *, seed: int, n_train: int, n_test: int) -> tuple[list[Problem], list[Problem]]:
        train = self.problems(n_train, seed=seed, split="train")
        return train, self.problems(n_test, seed=seed, split="test", exclude=train)

    def reward(self, problem: Problem, response: str) -> float:
        ans = extract_gym_answer(response, phrase=self.phrase_answers)
        if ans is None:
            return 0.0
        if self._scorer is None:
            self._scorer = self._dataset(1, 0)
        entry = {"question": problem.question, "answer": problem.answer,
                 "metadata": dict(problem.meta.get("gym_metadata", {}))}
        score = float(self._scorer.score_answer(ans, entry))
        if self.binary:
            return 1.0 if score >= 1.0 else 0.0
        return min(1.0, max(0.0, score))

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        raise NotImplementedError(f"{self.name} has no ground-truth steps")
