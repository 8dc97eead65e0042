"""The ``chat`` prompt variant: chat-template prompt ids, clear errors, and end-of-turn chain ends."""

from __future__ import annotations

import copy
import typing
from typing import Any

import numpy as np
import pytest
import torch
from llm_fixtures import ToyTask, tiny_lm

from respo.llm.generation import Generation, HFBackend
from respo.llm.models import char_tokenizer
from respo.llm.prompts import (
    chat_messages,
    completion_prompt,
    end_of_turn_id,
    prompt_text,
    prompt_token_ids,
)
from respo.llm.sampler import LMSampler, SampleConfig
from respo.tasks.base import Problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a ChatML-like template over the char tokenizer's specials: "<|end|>" closes every message
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
EOT = 3  # "<|end|>", the char tokenizer's EOS
PROBLEM = Problem(id="p0", question="What is 2 + 2?", answer="4")
CHAT = SampleConfig(max_response_tokens=60, max_thought_tokens=12, max_thoughts=10, temperature=1.0,
                    top_p=1.0, delimiter="\n", prompt_variant="chat")


def chat_tokenizer() -> Any:
    tok = char_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


class BoxedTask(ToyTask):
    """Reward 1 iff the last ``\\boxed{}`` holds the answer."""

    name = "boxed-toy"

    def reward(self, problem: Problem, response: str) -> float:
        from respo.llm.thoughts import extract_boxed

        return 1.0 if extract_boxed(response) == problem.answer else 0.0


class ScriptedBackend:
    """Returns the same scripted generation for every row (a GenerationBackend)."""

    def __init__(self, ids: list[int], *, eos_ids: tuple[int, ...] = (EOT,)) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.eos_ids = frozenset(eos_ids)

    def _gen(self) -> Generation:
        done = int(self.ids[-1]) in self.eos_ids
        return Generation(self.ids.copy(), np.zeros(len(self.ids), np.float32), done,
                          "eos" if done else "length")

    def generate(self, prompts: Any, *, n: int, **kw: Any) -> list[Generation]:
        return [self._gen() for _ in range(len(prompts) * n)]

    def continue_group(self, prefix: Any, n: int, **kw: Any) -> list[Generation]:
        return [self._gen() for _ in range(n)]


def _ids(result: Any) -> list[int]:
    return list(result["input_ids"] if hasattr(result, "keys") else result)


def test_chat_prompt_ids_equal_apply_chat_template() -> None:
    tok = chat_tokenizer()
    sampler = LMSampler(ScriptedBackend([EOT]), tok, ToyTask(), cfg=CHAT)
    ids = sampler.prompt_ids(PROBLEM)
    want = _ids(tok.apply_chat_template(chat_messages(PROBLEM.question), add_generation_prompt=True,
                                        tokenize=True))
    assert ids.dtype == np.int64 and ids.tolist() == want
    assert np.array_equal(sampler.root(PROBLEM).ids, ids)
    text = prompt_text(tok, PROBLEM.question, delimiter="\n", variant="chat")
    assert text.startswith("<|user|>\nWhat is 2 + 2?\n\n") and "\\boxed{N}" in text
    assert text.endswith("<|end|>\n<|assistant|>\n")  # ends where the assistant turn starts
    assert tok.decode(ids.tolist(), skip_special_tokens=False) == text


def test_other_variants_unchanged_and_literals_list_chat() -> None:
    from respo.llm.config import SamplingConfig
    from respo.llm.prompts import PromptVariant

    tok = chat_tokenizer()
    for v in ("paper", "small", "bare"):
        text = completion_prompt(PROBLEM.question, delimiter="\n", variant=v)
        assert prompt_token_ids(tok, PROBLEM.question, delimiter="\n", variant=v).tolist() == \
            tok(text)["input_ids"]
    assert "chat" in typing.get_args(PromptVariant)
    hints = typing.get_type_hints(SamplingConfig)
    assert "chat" in typing.get_args(hints["prompt_variant"])


def test_chat_needs_a_chat_template() -> None:
    tok = char_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        LMSampler(ScriptedBackend([EOT]), tok, ToyTask(), cfg=CHAT)
    with pytest.raises(ValueError, match="chat template"):
        prompt_token_ids(tok, "q", variant="chat")
    with pytest.raises(ValueError, match="chat"):
        completion_prompt("q", variant="chat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown prompt variant"):
        completion_prompt("q", variant="nope")  # type: ignore[arg-type]


def test_end_of_turn_must_be_a_backend_eos() -> None:
    tok = chat_tokenizer()
    assert end_of_turn_id(tok) == EOT
    assert EOT in HFBackend(copy.deepcopy(tiny_lm(0)), tok).eos_ids  # found by default
    with pytest.raises(ValueError, match="end-of-turn"):
        LMSampler(ScriptedBackend([EOT], eos_ids=(0,)), tok, ToyTask(), cfg=CHAT)
    # completion variants do not care
    LMSampler(ScriptedBackend([EOT], eos_ids=(0,)), tok, ToyTask(),
              cfg=SampleConfig(delimiter="\n", prompt_variant="small"))


def test_end_of_turn_after_boxed_answer_ends_the_chain() -> None:
    tok = chat_tokenizer()
    body = tok.encode("2 + 2 = 4\nSo \\boxed{4}", add_special_tokens=False)
    sampler = LMSampler(ScriptedBackend([*body, EOT]), tok, BoxedTask(), cfg=CHAT)
    root = sampler.root(PROBLEM)
    [chain] = sampler.extend(None, (root,), 1, rng=np.random.default_rng(0))
    assert chain.reward == 1.0
    assert chain.info["text"] == "2 + 2 = 4\nSo \\boxed{4}"  # end-of-turn not in the text
    assert chain.info["stop_reason"] == "eos" and not chain.info["truncated"]
    assert chain.info["answer_found"]
    assert len(chain.states) == 3  # root + 2 thoughts; the last one holds the end-of-turn token
    assert int(chain.states[-1].ids[-1]) == EOT
    assert np.array_equal(chain.states[-1].ids, np.concatenate([root.ids, body, [EOT]]))


def _eos_biased_model(bias: float) -> Any:
    model = copy.deepcopy(tiny_lm(0))
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[EOT] = bias
    model.lm_head = head
    return model


def test_sampled_end_of_turn_ends_every_chain_it_appears_in() -> None:
    tok = chat_tokenizer()
    backend = HFBackend(_eos_biased_model(6.0), tok)
    sampler = LMSampler(backend, tok, ToyTask(), cfg=CHAT)
    root = sampler.root(PROBLEM)
    [chains] = sampler.extend_many(None, [((root,), 8, np.random.default_rng(1))])
    ended = 0
    for c in chains:
        resp = c.states[-1].response_ids
        eos_at = [i for i, t in enumerate(resp.tolist()) if t == EOT]
        assert eos_at in ([], [len(resp) - 1])  # only ever the last token
        if eos_at:
            ended += 1
            assert c.info["stop_reason"] == "eos" and not c.info["truncated"]
            assert "<|end|>" not in c.info["text"]
    assert ended >= 1
    greedy = LMSampler(HFBackend(_eos_biased_model(100.0), tok), tok, ToyTask(),
                       cfg=SampleConfig(**{**CHAT.__dict__, "temperature": 0.0}))
    [c] = greedy.extend(None, (greedy.root(PROBLEM),), 1, rng=np.random.default_rng(0))
    assert c.states[-1].response_ids.tolist() == [EOT] and c.info["text"] == ""
    assert c.info["stop_reason"] == "eos" and len(c.states) == 2


@pytest.mark.parametrize("name, ops", [("basic-arithmetic-easy", {"+", "-"}),
                                       ("basic-arithmetic-add", {"+"})])
def test_easy_basic_arithmetic_catalog_entries(name: str, ops: set[str]) -> None:
    import re

    from respo.tasks import make_task
    from respo.tasks.gym import GymTask

    task = make_task(name)
    assert isinstance(task, GymTask) and task.name == name and task.phrase_answers
    problems = task.problems(40, seed=0, split="train")
    assert len({p.question for p in problems}) == 40
    seen: set[str] = set()
    for p in problems:
        m = re.fullmatch(r"Calculate (\d+) ([+-]) (\d+)\.", p.question)
        assert m is not None, p.question
        seen.add(m.group(2))
        a, b = int(m.group(1)), int(m.group(3))
        assert 0 <= a <= 10 and 0 <= b <= 10  # reasoning-gym's "one digit" draws 0..10
        assert int(p.answer) == (a + b if m.group(2) == "+" else a - b)
    assert seen == ops
    p = problems[0]
    assert task.reward(p, f"step\nThe answer is {p.answer}.") == 1.0
    assert task.reward(p, f"The answer is \\boxed{{{p.answer}}}") == 1.0
    assert task.reward(p, f"= {p.answer}") == 0.0  # a bare equation is not an answer
    assert task.reward(p, f"The answer is {int(p.answer) + 1}.") == 0.0
