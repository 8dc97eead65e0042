"""The step-verifiable arithmetic chains: gold chains, injected errors, reward, step judge."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respo.seeding import rng_for
from respo.tasks import Problem, Task
from respo.tasks.synthetic import (
    ArithmeticSpec,
    ArithmeticTask,
    alphabet,
    corrupt_chain,
    gold_chain,
    make_splits,
    parse_problem,
    warmup_examples,
)

SPEC = ArithmeticSpec()


def test_example_format():
    p = Problem("x", "7 a+3 b*4 c-2", "8", {"modulus": 10})
    assert gold_chain(p) == ["a:7+3=0", "b:0*4=0", "c:0-2=8", "=8"]
    t = ArithmeticTask()
    assert isinstance(t, Task)
    assert t.reward(p, "a:7+3=0\nb:0*4=0\nc:0-2=8\n=8\n") == 1.0
    assert t.reward(p, "a:7+3=1\nb:1*4=4\nc:4-2=2\n=8") == 1.0  # answer reward ignores the chain
    assert ArithmeticTask(reward_mode="chain").reward(p, "a:7+3=1\nb:1*4=4\nc:4-2=2\n=8") == 0.0
    assert ArithmeticTask(reward_mode="chain").reward(p, "a:7+3=0\nb:0*4=0\nc:0-2=8\n=8") == 1.0
    assert t.reward(p, "a:7+3=0\n=7") == 0.0
    assert t.reward(p, "") == 0.0
    assert t.first_error(p, ["a:7+3=0", "b:0*4=1", "c:1-2=9", "=9"]) == 2
    assert t.first_error(p, gold_chain(p)) is None
    assert t.first_error(p, ["a:7+3=0"]) is None  # a correct unfinished prefix
    assert t.first_error(p, gold_chain(p) + ["=8"]) == 5  # extra thoughts are errors
    assert t.first_error(p, [" a:7 +3=0 \n"]) is None  # whitespace ignored


def test_boxed_style():
    spec = ArithmeticSpec(answer_style="boxed")
    p = make_splits(spec, seed=3, n_train=1, n_test=0)[0][0]
    g = gold_chain(p)
    assert g[-1] == f"\\boxed{{{p.answer}}}"
    assert ArithmeticTask(spec).reward(p, "\n".join(g)) == 1.0
    assert set("".join(g) + p.question) <= set(alphabet(spec))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 8), modulus=st.integers(3, 13),
       ops=st.sampled_from([("+",), ("-", "*"), ("+", "-", "*")]))
def test_injected_error_is_the_first_error(seed, steps, modulus, ops):
    spec = ArithmeticSpec(min_steps=1, max_steps=steps, modulus=modulus, ops=ops)
    task = ArithmeticTask(spec)
    train, _ = make_splits(spec, seed=seed, n_train=1, n_test=0)
    p = train[0]
    a = parse_problem(p)
    assert 1 <= len(a.ops) <= steps
    assert task.first_error(p, gold_chain(p)) is None
    assert task.reward(p, "\n".join(gold_chain(p))) == 1.0
    rng = rng_for(seed, "test")
    for k in range(1, len(a.ops) + 2):
        c = corrupt_chain(p, rng, step=k)
        assert c.first_error == k
        assert task.first_error(p, list(c.lines)) == k
        assert ArithmeticTask(spec, reward_mode="chain").reward(p, "\n".join(c.lines)) == 0.0
        # later step lines are consistent with the wrong value: each starts where the last ended
        for prev, cur in zip(c.lines[:-2], c.lines[1:-1], strict=True):
            assert prev.split("=")[-1] == cur.split(":")[1][0 : len(prev.split("=")[-1])]


def test_splits_deterministic_disjoint_and_json_round_trip():
    tr1, te1 = make_splits(SPEC, seed=5, n_train=300, n_test=100)
    tr2, te2 = make_splits(SPEC, seed=5, n_train=300, n_test=100)
    assert tr1 == tr2 and te1 == te2
    assert not {p.question for p in tr1} & {p.question for p in te1}
    assert len({p.question for p in tr1}) == 300
    tr3, te3 = make_splits(SPEC, seed=6, n_train=300, n_test=100)
    # held-out questions never occur in training, across seeds too (hash partition of the space)
    assert not {p.question for p in tr1} & {p.question for p in te3}
    assert not {p.question for p in tr3} & {p.question for p in te1}
    assert [p.question for p in tr3] != [p.question for p in tr1]
    p = te1[0]
    q = Problem(**json.loads(json.dumps({"id": p.id, "question": p.question, "answer": p.answer,
                                          "meta": dict(p.meta)})))
    assert gold_chain(q) == gold_chain(p)
    lens = {len(parse_problem(p).ops) for p in tr1}
    assert lens == {3, 4, 5, 6}
    assert len(SPEC.operations()) == 26


def test_warmup_mix():
    tr, _ = make_splits(SPEC, seed=0, n_train=400, n_test=0)
    ex = warmup_examples(tr, seed=0, error_frac=0.15)
    frac = sum(e[2] is not None for e in ex) / len(ex)
    assert 0.09 < frac < 0.21
    task = ArithmeticTask()
    for p, lines, k in ex:
        assert task.first_error(p, lines) == k


def test_bad_spec_and_question():
    with pytest.raises(ValueError):
        ArithmeticSpec(min_steps=4, max_steps=3)
    with pytest.raises(ValueError):
        ArithmeticSpec(ops=("/",))
    with pytest.raises(ValueError, match="bad-1"):
        gold_chain(Problem("bad-1", "what is 2+2?", "4"))
