"""Step-verifiable synthetic reasoning chains: multi-step modular arithmetic (the CPU track).

A problem is a start value and a few tagged operations, e.g. (modulus 10)::

    question:  7 a+3 b*4 c-2
    solution:  a:7+3=0
               b:0*4=0
               c:0-2=8
               =8

Each solution line repeats its tag, the value it starts from, its operation and the result, so
the gold line for every step is unique and the *first erroneous thought* of any chain is exact:
the first line that differs from the gold line (``docs/cpu-track.md``). The last line is the final
answer (``=8`` by default, or ``\\boxed{8}`` with ``answer_style="boxed"``). The alphabet is small
(digits, ``+-*=:``, the tags ``a..z``, space and newline), so a character-level model learns it.

What lives here: ``ArithmeticSpec`` (the difficulty knob: steps, modulus, operation set),
problem generation with held-out splits keyed by seed, the gold chain, chains with injected
errors (later steps continue consistently from the wrong value) for a supervised warm-up, and
``ArithmeticTask`` (reward and step judge). What does not: prompts and tokenization (``respo.llm``).

Deviations: none from the paper (which has no synthetic task); this is the CPU-track analogue.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from numpy.random import Generator

from respo.seeding import rng_for
from respo.tasks.base import Problem

TAGS = "abcdefghijklmnopqrstuvwxyz"
OPS = ("+", "-", "*")

_Q_RE = re.compile(r"^\s*(\d+)((?:\s+[a-z][+\-*]\d+)+)\s*$")
_OP_RE = re.compile(r"([a-z])([+\-*])(\d+)")
_BOXED_RE = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_EQ_RE = re.compile(r"^=\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class ArithmeticSpec:
    """The difficulty knob of the arithmetic chains."""

    min_steps: int = 3
    """Fewest operations per problem (docs/cpu-track.md: 3)."""
    max_steps: int = 6
    """Most operations per problem (docs/cpu-track.md: 6; at most 26, one tag letter each)."""
    modulus: int = 10
    """All values are taken modulo this (10 keeps every number one character)."""
    ops: tuple[str, ...] = OPS
    """Operation set, a subset of ``+``, ``-``, ``*``; operands are 1..m-1 for +/- and 2..m-1 for *."""
    answer_style: Literal["equals", "boxed"] = "equals"
    """Final line ``=8`` (compact, for a char model) or ``\\boxed{8}`` (the paper's convention)."""
    hard_op: str = ""
    """The coverage knob's "hard" operation, written as in a question (e.g. ``"*7"``); empty: every
    operation is drawn uniformly (the original stream, unchanged). A warm-up that imitates a high
    error rate only at this operation (``noisy_chain``) makes the improvable states of the task
    exactly the visited states whose next step is this operation, so their share (the theory's
    coverage p) follows ``hard_frac``."""
    hard_frac: float = 0.0
    """With ``hard_op``: probability that each step of a problem is the hard operation (the other
    steps are drawn uniformly from the remaining operations)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps <= len(TAGS):
            raise ValueError(f"need 1 <= min_steps <= max_steps <= {len(TAGS)}, got {self.min_steps}, {self.max_steps}")
        if self.modulus < 3:
            raise ValueError(f"modulus must be >= 3, got {self.modulus}")
        if not self.ops or any(o not in OPS for o in self.ops) or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be distinct members of {OPS}, got {self.ops}")
        if self.answer_style not in ("equals", "boxed"):
            raise ValueError(f"answer_style must be 'equals' or 'boxed', got {self.answer_style!r}")
        if self.hard_op:
            table = [f"{o}{v}" for o, v in self.operations()]
            if self.hard_op not in table:
                raise ValueError(f"hard_op {self.hard_op!r} is not an operation of this spec; valid: "
                                 f"{', '.join(table)}")
            if not 0.0 <= self.hard_frac <= 1.0:
                raise ValueError(f"hard_frac must be in [0, 1], got {self.hard_frac}")
        elif self.hard_frac != 0.0:
            raise ValueError(f"hard_frac={self.hard_frac} needs a hard_op (e.g. '*7')")

    def is_hard(self, op: str, operand: int) -> bool:
        """Whether ``(op, operand)`` is the hard operation (never, without ``hard_op``)."""
        return bool(self.hard_op) and f"{op}{operand}" == self.hard_op

    def operations(self) -> list[tuple[str, int]]:
        """Every (operator, operand) pair the generator may draw (26 at modulus 10)."""
        out: list[tuple[str, int]] = []
        for o in self.ops:
            lo = 2 if o == "*" else 1
            out += [(o, v) for v in range(lo, self.modulus)]
        return out


def apply_op(value: int, op: str, operand: int, modulus: int) -> int:
    """One step: ``(value op operand) mod modulus``."""
    if op == "+":
        return (value + operand) % modulus
    if op == "-":
        return (value - operand) % modulus
    if op == "*":
        return (value * operand) % modulus
    raise ValueError(f"unknown operation {op!r}")


@dataclass(frozen=True)
class Arithmetic:
    """A parsed problem: start value, tagged operations, modulus."""

    start: int
    ops: tuple[tuple[str, str, int], ...]  # (tag, operator, operand)
    modulus: int = 10
    answer_style: Literal["equals", "boxed"] = "equals"

    @property
    def question(self) -> str:
        return " ".join([str(self.start)] + [f"{t}{o}{v}" for t, o, v in self.ops])

    def values(self) -> list[int]:
        """Values after each step (length = number of steps)."""
        out, v = [], self.start
        for _, o, x in self.ops:
            v = apply_op(v, o, x, self.modulus)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def answer_line(self, value: int) -> str:
        return f"\\boxed{{{value}}}" if self.answer_style == "boxed" else f"={value}"

    def step_line(self, i: int, before: int, after: int) -> str:
        t, o, x = self.ops[i]
        return f"{t}:{before}{o}{x}={after}"

    def gold_lines(self) -> list[str]:
        """The unique gold chain: one line per step, then the answer line."""
        lines, v = [], self.start
        for i, (_, o, x) in enumerate(self.ops):
            w = apply_op(v, o, x, self.modulus)
            lines.append(self.step_line(i, v, w))
            v = w
        return lines + [self.answer_line(v)]

    def to_problem(self, pid: str) -> Problem:
        return Problem(
            id=pid,
            question=self.question,
            answer=str(self.answer),
            meta={"task": "arithmetic", "modulus": self.modulus, "answer_style": self.answer_style,
                  "n_steps": len(self.ops)},
        )

    def ops_text(self) -> list[str]:
        """Each step's operation as written in the question (``"*7"``), in order."""
        return [f"{o}{x}" for _, o, x in self.ops]


def parse_problem(problem: Problem) -> Arithmetic:
    """Recover the structured problem from its question text and meta (so JSONL round trips)."""
    m = _Q_RE.match(problem.question)
    if not m:
        raise ValueError(f"problem {problem.id!r}: not an arithmetic-chain question: {problem.question[:80]!r}")
    modulus = int(problem.meta.get("modulus", 10))
    style = problem.meta.get("answer_style", "equals")
    ops = tuple((t, o, int(v)) for t, o, v in _OP_RE.findall(m.group(2)))
    return Arithmetic(start=int(m.group(1)), ops=ops, modulus=modulus, answer_style=style)


def sample_problem(spec: ArithmeticSpec, rng: Generator) -> Arithmetic:
    """Draw one problem: a start value in 0..m-1 and ``n`` operations, uniformly from the set or,
    with ``spec.hard_op``, the hard operation with probability ``hard_frac`` per step."""
    n = int(rng.integers(spec.min_steps, spec.max_steps + 1))
    table = spec.operations()
    if spec.hard_op:  # each step is the hard operation with probability hard_frac
        hard = next(x for x in table if spec.is_hard(*x))
        easy = [x for x in table if x != hard]
        is_hard = rng.random(n) < spec.hard_frac
        pick = rng.integers(0, len(easy), size=n)
        drawn = [hard if h else easy[j] for h, j in zip(is_hard, pick, strict=True)]
    else:  # the original stream
        drawn = [table[j] for j in rng.integers(0, len(table), size=n)]
    ops = tuple((TAGS[i], o, v) for i, (o, v) in enumerate(drawn))
    return Arithmetic(start=int(rng.integers(0, spec.modulus)), ops=ops, modulus=spec.modulus,
                      answer_style=spec.answer_style)


HOLDOUT_MOD = 10
"""One question in ``HOLDOUT_MOD`` (by a stable hash) belongs to the held-out side of the space."""


def is_heldout_question(question: str) -> bool:
    """Whether a question lies on the held-out side (a fixed partition of the problem space)."""
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "little")
    return h % HOLDOUT_MOD == 0


def is_heldout_split(split: str) -> bool:
    """Split names starting with ``test``, ``heldout`` or ``eval`` draw from the held-out side."""
    return split.startswith(("test", "heldout", "eval"))


def generate_problems(spec: ArithmeticSpec, n: int, *, seed: int, split: str = "train",
                      exclude: Sequence[Problem] = ()) -> list[Problem]:
    """``n`` distinct problems from the stream keyed by ``(seed, "data", split)``.

    Held-out splits (``test*``, ``heldout*``, ``eval*``) draw only questions on the held-out side
    of a fixed hash partition of the problem space, every other split only from the rest, so no
    test question can occur in any training split, whatever the seeds and sizes. ``exclude``
    drops further questions. Ids are ``arith-<split>-<seed>-<i>``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = rng_for(seed, "data", split)
    seen = {p.question for p in exclude}
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * n + 10_000:
            raise ValueError(f"could not draw {n} distinct problems from {spec} (space too small)")
        a = sample_problem(spec, rng)
        if a.question in seen or is_heldout_question(a.question) != is_heldout_split(split):
            continue
        seen.add(a.question)
        out.append(a.to_problem(f"arith-{split}-{seed}-{len(out)}"))
    return out


def make_splits(spec: ArithmeticSpec, *, seed: int, n_train: int, n_test: int) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and held-out test problems (the test questions never appear in training)."""
    train = generate_problems(spec, n_train, seed=seed, split="train")
    test = generate_problems(spec, n_test, seed=seed, split="test", exclude=train)
    return train, test


def gold_chain(problem: Problem) -> list[str]:
    """The gold solution lines (steps then answer line), without newlines."""
    return parse_problem(problem).gold_lines()


@dataclass(frozen=True)
class CorruptedChain:
    """A chain with one injected error at 1-indexed line ``first_error`` (later lines consistent)."""

    lines: tuple[str, ...]
    first_error: int


def corrupt_chain(problem: Problem, rng: Generator, *, step: int | None = None) -> CorruptedChain:
    """A chain whose first wrong line is ``step`` (drawn uniformly over all lines if None).

    A wrong step line gets a result different from the true one; later steps then start from the
    wrong value and compute correctly from it, and the answer line repeats the last (wrong) value,
    as a model that made one slip would write. An error on the answer line writes a value that
    differs from the last step's result.
    """
    a = parse_problem(problem)
    n = len(a.ops) + 1
    k = int(rng.integers(1, n + 1)) if step is None else int(step)
    if not 1 <= k <= n:
        raise ValueError(f"step must be in 1..{n}, got {k}")
    m = a.modulus
    lines, v = [], a.start
    for i, (_, o, x) in enumerate(a.ops):
        w = apply_op(v, o, x, m)
        if i + 1 == k:
            w = (w + int(rng.integers(1, m))) % m  # any value but the true one
        lines.append(a.step_line(i, v, w))
        v = w
    if k == n:
        v = (v + int(rng.integers(1, m))) % m
    lines.append(a.answer_line(v))
    return CorruptedChain(tuple(lines), k)


@dataclass(frozen=True)
class StepNoise:
    """Per-step slip probabilities of a noisy warm-up chain (``noisy_chain``)."""

    step: float = 0.15
    """Probability that an ordinary step line is wrong."""
    hard: float | None = None
    """Probability that a step with the spec's hard operation is wrong (None: ``step``)."""
    answer: float = 0.04
    """Probability that the answer line mis-copies the last step's value."""

    def __post_init__(self) -> None:
        for k in ("step", "hard", "answer"):
            v = getattr(self, k)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"StepNoise.{k} must be in [0, 1], got {v}")

    def rate(self, hard: bool) -> float:
        """Slip probability of a step line (``hard``: the step is the hard operation)."""
        return self.hard if (hard and self.hard is not None) else self.step


def noisy_chain(problem: Problem, rng: Generator, noise: StepNoise, *, hard_op: str = "") -> CorruptedChain | None:
    """A chain in which every line slips independently: step k is wrong with probability
    ``noise.rate(op_k == hard_op)``, later steps compute correctly from the (possibly wrong) value
    before them, and the answer line mis-copies the last value with probability ``noise.answer``.

    Returns None when no line slipped (the gold chain). Unlike ``corrupt_chain`` a chain can hold
    several slips; ``first_error`` is the first of them.
    """
    a = parse_problem(problem)
    m = a.modulus
    lines, v, first = [], a.start, None
    for i, (_, o, x) in enumerate(a.ops):
        w = apply_op(v, o, x, m)
        if rng.random() < noise.rate(bool(hard_op) and f"{o}{x}" == hard_op):
            w = (w + int(rng.integers(1, m))) % m  # any value but the right one from v
            first = i + 1 if first is None else first
        lines.append(a.step_line(i, v, w))
        v = w
    if rng.random() < noise.answer:
        v = (v + int(rng.integers(1, m))) % m
        first = len(a.ops) + 1 if first is None else first
    lines.append(a.answer_line(v))
    return None if first is None else CorruptedChain(tuple(lines), first)


def warmup_examples(problems: Sequence[Problem], *, seed: int, error_frac: float = 0.15,
                    noise: StepNoise | None = None,
                    hard_op: str = "") -> list[tuple[Problem, list[str], int | None]]:
    """Supervised warm-up data: (problem, lines, first_error); ``first_error`` is None for gold.

    Default (``noise=None``): a fraction ``error_frac`` of the chains carry one injected wrong
    step (``corrupt_chain``, the wrong line uniform over the chain). With ``noise``: every line
    slips independently (``noisy_chain``), at ``noise.hard`` on steps with ``hard_op``, so a
    policy that imitates the data errs mostly where the hard operation comes.
    """
    if not 0.0 <= error_frac <= 1.0:
        raise ValueError(f"error_frac must be in [0, 1], got {error_frac}")
    rng = rng_for(seed, "data", "warmup")
    out: list[tuple[Problem, list[str], int | None]] = []
    for p in problems:
        if noise is not None:
            c = noisy_chain(p, rng, noise, hard_op=hard_op)
            out.append((p, gold_chain(p), None) if c is None else (p, list(c.lines), c.first_error))
        elif rng.random() < error_frac:
            c = corrupt_chain(p, rng)
            out.append((p, list(c.lines), c.first_error))
        else:
            out.append((p, gold_chain(p), None))
    return out


def _norm(line: str) -> str:
    return "".join(line.split())


def extract_answer(response: str) -> int | None:
    """The final answer of a response: the last ``\\boxed{n}``, else a last non-empty line ``=n``."""
    boxes = _BOXED_RE.findall(response[-10_000:])
    if boxes:
        return int(boxes[-1])
    for line in reversed(response.splitlines()):
        if line.strip():
            m = _EQ_RE.match(line.strip())
            return int(m.group(1)) if m else None
    return None


@dataclass
class ArithmeticTask:
    """Reward and exact step judge for the arithmetic chains.

    ``reward="answer"``: 1 if the final answer equals the gold value (a wrong chain still hits it
    about 1/m of the time); ``reward="chain"``: 1 only if every line equals the gold line.
    """

    spec: ArithmeticSpec = field(default_factory=ArithmeticSpec)
    reward_mode: Literal["answer", "chain"] = "answer"
    name: str = "arithmetic"
    has_step_judge: bool = True

    def __post_init__(self) -> None:
        if self.reward_mode not in ("answer", "chain"):
            raise ValueError(f"reward_mode must be 'answer' or 'chain', got {self.reward_mode!r}")

    def problems(self, n: int, *, seed: int, split: str = "train",
                 exclude: Sequence[Problem] = ()) -> list[Problem]:
        """``generate_problems`` of the task's spec (``exclude``: e.g. the training problems, for a
        validation split drawn from the same side of the hash partition)."""
        return generate_problems(self.spec, n, seed=seed, split=split, exclude=exclude)

    def reward(self, problem: Problem, response: str) -> float:
        if self.reward_mode == "chain":
            lines = [ln for ln in response.splitlines() if ln.strip()]
            return 1.0 if [_norm(x) for x in lines] == [_norm(x) for x in gold_chain(problem)] else 0.0
        got = extract_answer(response)
        return 1.0 if got is not None and got == int(problem.answer) else 0.0

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        """1-indexed first thought that differs from its gold line (whitespace ignored).

        Thoughts beyond the gold chain's length are errors. Returns None when every given thought
        equals its gold line, which includes a correct but unfinished prefix.
        """
        gold = gold_chain(problem)
        for i, t in enumerate(thoughts):
            if i >= len(gold) or _norm(t) != _norm(gold[i]):
                return i + 1
        return None

    def gold_thoughts(self, problem: Problem) -> list[str]:
        """The gold chain's thoughts (step lines, then the answer line): what a coverage
        measurement scores the policy's next-step probabilities on (``coverage``)."""
        return gold_chain(problem)

    def is_final(self, thought: str) -> bool:
        """Whether a thought is an answer line (the chain ends there)."""
        s = thought.strip()
        return bool(_BOXED_RE.search(s)) or bool(_EQ_RE.match(s))


def coverage(first_error: int | None, n_thoughts: int, gold_step_p: Sequence[float], *,
             tau: float) -> tuple[int, int, int]:
    """One sampled chain's share of the theory's coverage: (visited, improvable, first_errors).

    The chain visits the states before each of its ``n_thoughts`` thoughts. The state before
    thought k+1 lies on the gold path when thoughts 1..k are gold (k < ``first_error``); there the
    policy's probability of the gold next thought is ``gold_step_p[k]`` (teacher-forced on the gold
    chain), and the state is *improvable* when that probability is below ``1 - tau``: the best
    action beats the policy's own by more than ``tau`` in success probability of the next step
    (the tau-improvable set of the theory, measured on the step the policy can get wrong; states
    after a first error are lost whatever comes next, so none of them is improvable).
    ``first_errors`` is 1 when the chain holds a wrong thought (its first one is a visited
    improvable-or-unlucky state), else 0: the share first_errors / visited is the coarser
    "visited states whose next step is the first error".
    """
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    on_gold = n_thoughts if first_error is None else min(first_error, n_thoughts)
    improvable = sum(1 for k in range(min(on_gold, len(gold_step_p))) if gold_step_p[k] < 1.0 - tau)
    return n_thoughts, improvable, int(first_error is not None)


def alphabet(spec: ArithmeticSpec) -> str:
    """Every character the questions and gold chains of ``spec`` can contain (for a char vocab)."""
    chars = set("0123456789+-*=: \n") | set(TAGS[: spec.max_steps])
    if spec.answer_style == "boxed":
        chars |= set("\\boxed{}")
    return "".join(sorted(chars))


__all__ = [
    "Arithmetic", "ArithmeticSpec", "ArithmeticTask", "CorruptedChain", "StepNoise", "alphabet",
    "apply_op", "corrupt_chain", "coverage", "extract_answer", "generate_problems", "gold_chain",
    "make_splits", "noisy_chain", "parse_problem", "sample_problem", "warmup_examples",
]
