"""reasoning-gym adapters: extraction before scoring, binary reward, held-out splits by seed."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

from respo.tasks import Task  # noqa: E402
from respo.tasks.gym import GENERATORS, GymTask, extract_gym_answer  # noqa: E402


@pytest.mark.parametrize("gen", GENERATORS)
def test_generator_round_trip(gen):
    task = GymTask(gen)
    assert isinstance(task, Task)
    train, test = task.make_splits(seed=0, n_train=20, n_test=10)
    assert len(train) == 20 and len(test) == 10
    assert not {p.question for p in train} & {p.question for p in test}
    again, _ = GymTask(gen).make_splits(seed=0, n_train=20, n_test=0)
    assert [p.question for p in again] == [p.question for p in train]
    other, _ = GymTask(gen).make_splits(seed=1, n_train=20, n_test=0)
    assert [p.question for p in other] != [p.question for p in train]
    p = test[0]
    assert task.reward(p, f"so \\boxed{{{p.answer}}}") == 1.0
    assert task.reward(p, f"<answer>{p.answer}</answer>") == 1.0
    assert task.reward(p, p.answer) == 0.0  # no extractable answer
    assert task.reward(p, "\\boxed{987654321}") == 0.0


def test_binary_drops_format_credit():
    task = GymTask("gsm_symbolic", binary=False)
    p = task.problems(1, seed=0)[0]
    partial = task.reward(p, "\\boxed{987654321}")
    assert 0.0 < partial < 1.0  # reasoning-gym's own partial credit for a number
    assert GymTask("gsm_symbolic").reward(p, "\\boxed{987654321}") == 0.0


def test_extract():
    assert extract_gym_answer("x \\boxed{3} <answer>4</answer>") == "3"
    assert extract_gym_answer("<answer> 4 </answer>") == "4"
    assert extract_gym_answer("4") is None


def test_phrase_answers_only_when_asked():
    from respo.tasks import make_task
    from respo.tasks.gym import extract_gym_answer

    assert extract_gym_answer("so the answer is 12.") is None
    assert extract_gym_answer("the answer is 3, no wait, The answer is: -1,204.", phrase=True) == "-1204"
    assert extract_gym_answer("\\boxed{7} and the answer is 9", phrase=True) == "7"
    strict, loose = make_task("gym:basic_arithmetic"), make_task("gym-phrase:basic_arithmetic")
    p = strict.problems(1, seed=0)[0]
    text = f"Working it out.\nThe answer is {p.answer}."
    assert strict.reward(p, text) == 0.0 and loose.reward(p, text) == 1.0
    assert loose.name == "gym-phrase:basic_arithmetic"
    assert loose.reward(p, "The answer is 123456789.") == 0.0 or p.answer == "123456789"
