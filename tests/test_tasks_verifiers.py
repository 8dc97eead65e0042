"""Math, multiple-choice and yes/no verifiers: equivalent forms, wrong answers, adversarial input."""

from __future__ import annotations

import time

import pytest

from respo.tasks import Problem
from respo.tasks.choice import ChoiceTask, YesNoTask
from respo.tasks.extract import last_boxed
from respo.tasks.math import MathTask, MathVerifier


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout_s=3.0)
    yield v
    v.close()


def P(answer: str, **meta) -> Problem:
    return Problem("p1", "question?", answer, meta)


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac12"), ("1/2", "\\dfrac{1}{2}"), ("\\frac{3}{4}", "0.75"),
    ("\\{1,2\\}", "\\{2,1\\}"), ("1,2", "2, 1"), ("50\\%", "0.5"), ("0.5", "50\\%"),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"), ("x^2+1", "1+x^2"), ("12", "12.0"), ("10", "\\text{10}"),
    ("5", "x=5"), ("(1,2)", "(1, 2)"), ("2\\pi", "\\pi \\cdot 2"),
]
WRONG = [("\\frac{1}{2}", "0.6"), ("3", "4"), ("\\{1,2\\}", "\\{1,3\\}"), ("x^2+1", "x^2-1"), ("12", "21")]


def test_math_equivalent_forms(verifier):
    task = MathTask(verifier)
    for gold, pred in EQUIVALENT:
        assert task.reward(P(gold), f"so the answer is \\boxed{{{pred}}}.") == 1.0, (gold, pred)


def test_math_wrong_and_missing(verifier):
    task = MathTask(verifier)
    for gold, pred in WRONG:
        assert task.reward(P(gold), f"\\boxed{{{pred}}}") == 0.0, (gold, pred)
    before = verifier.stats["no_answer"]
    assert task.reward(P("3"), "the answer is 3") == 0.0  # no box: no answer
    assert verifier.stats["no_answer"] == before + 1
    assert task.reward(P("3"), "\\boxed{4} ... wait \\boxed{3}") == 1.0  # the last box counts


# The verifier's own rules (respo.tasks.math docstring), each both ways: (gold, pred, reward).
RULES = [
    ("5", "6 = 5", 0.0), ("5", "x = 5", 1.0), ("4", "2+2 = 4", 1.0), ("5", "x = y = 5", 1.0),
    ("5", "x = y", 0.0), ("5", "5 = 6", 0.0), ("y = 2x+1", "y=2x+1", 1.0),
    ("5", "5\\%", 0.0), ("0.05", "5\\%", 1.0), ("0.5", "50\\%", 1.0), ("50\\%", "50", 1.0),
    ("\\sqrt{2}", "1.4142136", 0.0), ("\\pi", "3.1415927", 0.0), ("\\frac{1}{3}", "0.3333333", 0.0),
    ("\\frac{3}{4}", "0.75", 1.0), ("12", "12.0", 1.0), ("0.5", "0.50", 1.0), ("\\sqrt{2}", "\\sqrt 2", 1.0),
]


@pytest.mark.parametrize("gold,pred,want", RULES)
def test_math_rules_relations_percentages_decimals(verifier, gold, pred, want):
    assert MathTask(verifier).reward(P(gold), f"\\boxed{{{pred}}}") == want


def test_math_adversarial_bounded():
    verifier = MathVerifier(timeout_s=1.0)
    task = MathTask(verifier)
    cases = [
        "x" * 1_000_000 + "\\boxed{3}",           # a megabyte of text
        "\\boxed{10^{10^{10^{10}}}}",              # a tower: sympy would never finish
        "\\boxed{" + "{" * 5000 + "3" + "}" * 5000 + "}",  # deeply nested braces
        "\\boxed{" * 20000,                        # unbalanced
        "\\boxed{9^{9^{9^{9}}}}",
    ]
    for text in cases:
        verifier.start()  # a restart after a kill waits for imports, not charged to the timeout
        t = time.monotonic()
        r = task.reward(P("3"), text)
        assert time.monotonic() - t < 1.0 + 0.5, text[:40]
        assert r in (0.0, 1.0)
    assert task.reward(P("3"), cases[0]) == 1.0
    assert verifier.stats["timeouts"] >= 1
    assert task.reward(P("2"), "\\boxed{2}") == 1.0  # the caller goes on after a kill
    verifier.close()


def test_last_boxed():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} \\boxed{{2}}") == "{2}"
    assert last_boxed("\\boxed 7.") == "7."
    assert last_boxed("\\boxed{1") is None
    assert last_boxed("no box") is None
    assert last_boxed("\\fbox{5}") == "5"


CHOICES = ["ignore", "enforce", "fish", "bird", "tree"]


@pytest.mark.parametrize("text", [
    "\\boxed{B}", "\\boxed{(B)}", "\\boxed{\\text{B}}", "\\boxed{B) enforce}", "\\boxed{Option B}",
    "\\boxed{b}", "\\boxed{enforce}", "so the answer is (B).", "Answer: B", "The correct option is B",
    "**\\boxed{B}**", "\\boxed{\\textbf{B}}",
])
def test_choice_phrasings(text):
    assert ChoiceTask().reward(P("B", choices=CHOICES), text) == 1.0


@pytest.mark.parametrize("text", [
    "\\boxed{C}", "\\boxed{fish}", "the answer is (A)", "", "B", "\\boxed{a bird}", "\\boxed{Z}",
])
def test_choice_wrong(text):
    assert ChoiceTask().reward(P("B", choices=CHOICES), text) == 0.0


@pytest.mark.parametrize("text,gold,want", [
    ("\\boxed{yes}", "yes", 1.0), ("\\boxed{Yes}", "yes", 1.0), ("\\boxed{\\text{No}}", "no", 1.0),
    ("\\boxed{true}", "yes", 1.0), ("\\boxed{False}", "no", 1.0), ("the answer is no.", "no", 1.0),
    ("\\boxed{no}", "yes", 0.0), ("\\boxed{maybe}", "yes", 0.0), ("yes", "yes", 0.0),
    ("\\boxed{yes} \\boxed{no}", "yes", 0.0),
])
def test_yes_no(text, gold, want):
    assert YesNoTask().reward(P(gold), text) == want


def test_choice_adversarial_fast():
    t = time.monotonic()
    ChoiceTask().reward(P("B"), "answer is " * 100_000 + "\\boxed{" + "{" * 100_000)
    YesNoTask().reward(P("yes"), "answer: " * 100_000)
    assert time.monotonic() - t < 2.0


def test_every_catalog_task_scores_the_same_fixture():
    from respo.tasks import TASKS, Task, make_task

    p = Problem("c1", "7 a+3 b*4 c-2", "8", {"modulus": 10, "choices": ["x", "y"],
                                              "tests": [{"input": "", "output": "8"}],
                                              "heldout_tests": [{"input": "", "output": "8"}]})
    for name in [*TASKS, "gym:chain_sum"]:
        task = make_task(name)
        assert isinstance(task, Task), name
        r = task.reward(p, "a:7+3=0\nb:0*4=0\nc:0-2=8\n=8")
        assert r in (0.0, 1.0), name
    with pytest.raises(KeyError, match="valid:"):
        make_task("nope")
