"""Tasks by name: one registry, one signature (``() -> Task``), and ``make_task`` for lookups.

``gym:<generator>`` (``gym-phrase:<generator>``: also accepting "the answer is N") names a
reasoning-gym generator (any name reasoning-gym knows); every other
name must be a key of ``TASKS``; an unknown name raises listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable

from respo.tasks.base import Task

TaskFactory = Callable[[], Task]


def _math() -> Task:
    from respo.tasks.math import MathTask

    return MathTask()


def _choice() -> Task:
    from respo.tasks.choice import ChoiceTask

    return ChoiceTask()


def _yesno() -> Task:
    from respo.tasks.choice import YesNoTask

    return YesNoTask()


def _code() -> Task:
    from respo.tasks.code import CodeTask

    return CodeTask(tests_key="tests")


def _code_heldout() -> Task:
    from respo.tasks.code import CodeTask

    return CodeTask(tests_key="heldout_tests", name="code-heldout")


def _arithmetic() -> Task:
    from respo.tasks.synthetic import ArithmeticSpec, ArithmeticTask

    return ArithmeticTask(ArithmeticSpec(answer_style="boxed"), reward_mode="answer")


def _arithmetic_chain() -> Task:
    from respo.tasks.synthetic import ArithmeticSpec, ArithmeticTask

    return ArithmeticTask(ArithmeticSpec(answer_style="boxed"), reward_mode="chain", name="arithmetic-chain")


EASY_BASIC_ARITHMETIC = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                         "operators": ("+", "-"), "allow_parentheses": False, "allow_negation": False}
"""reasoning-gym ``basic_arithmetic`` settings of ``basic-arithmetic-easy``: "Calculate 6 - 8.".
Its "one-digit" operands are 0..10 (``randint(0, 10)``): 242 distinct questions (121 for ``+``
only), and ``GymTask.problems`` finds only about 50-90 distinct ones per call."""


def _basic_arithmetic_easy() -> Task:
    from respo.tasks.gym import GymTask

    return GymTask("basic_arithmetic", config=EASY_BASIC_ARITHMETIC, phrase_answers=True,
                   name="basic-arithmetic-easy")


def _basic_arithmetic_add() -> Task:
    from respo.tasks.gym import GymTask

    return GymTask("basic_arithmetic", config={**EASY_BASIC_ARITHMETIC, "operators": ("+",)},
                   phrase_answers=True, name="basic-arithmetic-add")


TASKS: dict[str, TaskFactory] = {
    "math": _math,
    "choice": _choice,
    "yesno": _yesno,
    "code": _code,
    "code-heldout": _code_heldout,
    "arithmetic": _arithmetic,
    "arithmetic-chain": _arithmetic_chain,
    "basic-arithmetic-easy": _basic_arithmetic_easy,
    "basic-arithmetic-add": _basic_arithmetic_add,
}
"""Training rewards use ``code`` (reward tests); evaluation uses ``code-heldout`` (docs/method.md).
The arithmetic tasks end with ``\\boxed{n}``, as the trainer's (``respo.llm.train_parts``).
``basic-arithmetic-easy`` / ``basic-arithmetic-add`` are ``gym-phrase:basic_arithmetic`` with two
one-digit terms and ``+``/``-`` (resp. ``+`` only), no parentheses or negation: the easiest
settings, where SmolLM2-135M-Instruct with the ``chat`` prompt has a low but nonzero sampled
accuracy (``experiments/real_track/probe.py``)."""


HARD_OP = "*7"
"""The hard operation of ``arithmetic-hard:<f>`` (the warm-up ``sft-warmup-hard`` errs there)."""


def arithmetic_hard(frac: float) -> Task:
    """``arithmetic-hard:<frac>``: the arithmetic chains (boxed answers, answer reward) whose steps
    are the hard operation ``*7`` with probability ``frac`` each: the coverage knob of the CPU
    track (``respo.tasks.synthetic.ArithmeticSpec.hard_op``)."""
    from respo.tasks.synthetic import ArithmeticSpec, ArithmeticTask

    return ArithmeticTask(ArithmeticSpec(answer_style="boxed", hard_op=HARD_OP, hard_frac=frac),
                          reward_mode="answer", name=f"arithmetic-hard:{frac:g}")


def make_task(name: str) -> Task:
    """The task called ``name`` (a ``TASKS`` key, ``gym:<generator>``, ``gym-phrase:<generator>``
    or ``arithmetic-hard:<frac>``)."""
    if name.startswith("arithmetic-hard:"):
        raw = name.partition(":")[2]
        try:
            frac = float(raw)
        except ValueError:
            raise KeyError(f"task {name!r}: the hard-operation frequency {raw!r} is not a number "
                           "(e.g. arithmetic-hard:0.1)") from None
        if not 0.0 <= frac <= 1.0:
            raise KeyError(f"task {name!r}: the hard-operation frequency must be in [0, 1]")
        return arithmetic_hard(frac)
    if name.startswith("gym:"):
        from respo.tasks.gym import GymTask

        return GymTask(name[4:])
    if name.startswith("gym-phrase:"):
        from respo.tasks.gym import GymTask

        return GymTask(name[len("gym-phrase:"):], phrase_answers=True)
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(TASKS)}, gym:<generator>, "
                       "gym-phrase:<generator>, arithmetic-hard:<frac>")
    return TASKS[name]()
