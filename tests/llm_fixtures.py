"""Shared tiny LLM fixtures (no downloads): a character tokenizer and a random tiny Llama.

Importable by any test (``from tests.llm_fixtures import ...`` or ``from llm_fixtures import``)
and usable as pytest fixtures via ``pytest_plugins`` or by calling the cached builders directly:

- ``tiny_tokenizer()``: ``respo.llm.models.char_tokenizer()`` (printable ASCII + ``</thought>``
  as one token; EOS ``<|end|>`` = 3, pad = 0; a chat template).
- ``tiny_lm(seed=0)``: ``respo.llm.models.tiny_model(vocab, seed)`` (hidden 64, 2 layers, fp32,
  eval mode). Cached per seed: tests that train must ``copy.deepcopy`` it first.
- ``tiny_backend(seed=0)``: an ``HFBackend`` over a *fresh copy* of the tiny model on CPU.
- ``ToyTask``: a trivial task; reward 1.0 iff the response contains the problem's answer string.
- ``tiny_sampler(...)``: an ``LMSampler`` with newline delimiters and small limits, plus a root.
- ``torch_threads(n)``: a context manager setting torch's intra-op threads (restored after).
  Tiny models run ~10x faster with ONE thread on this shared 2-core machine (measured 0.11 s vs
  1.0-1.3 s per 4-chain extend under load), so the LLM test modules use it in an autouse fixture.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from respo.tasks.base import Problem


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.cache
def tiny_tokenizer() -> Any:
    from respo.llm.models import char_tokenizer

    return char_tokenizer()


@functools.cache
def tiny_lm(seed: int = 0, hidden: int = 64, layers: int = 2) -> Any:
    from respo.llm.models import tiny_model

    return tiny_model(len(tiny_tokenizer()), seed, hidden=hidden, layers=layers)


def tiny_backend(seed: int = 0) -> Any:
    from respo.llm.generation import HFBackend

    return HFBackend(copy.deepcopy(tiny_lm(seed)), tiny_tokenizer(), device="cpu")


class ToyTask:
    """Reward 1.0 iff ``problem.answer`` occurs in the response text (no step judge)."""

    name = "toy"
    has_step_judge = False

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if problem.answer in response else 0.0

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        return None


TOY_PROBLEM = Problem(id="toy-0", question="What is 1 + 1?", answer="e")


def tiny_sampler(
    *,
    seed: int = 0,
    max_new_tokens: int = 24,
    max_thought_tokens: int = 6,
    max_thoughts: int = 20,
    delimiter: str = "\n",
    temperature: float = 1.0,
) -> tuple[Any, Any]:
    """(LMSampler over the tiny model with small limits, root TokenState of ``TOY_PROBLEM``)."""
    from respo.llm.sampler import LMSampler, SampleConfig

    cfg = SampleConfig(
        max_response_tokens=max_new_tokens,
        max_thought_tokens=max_thought_tokens,
        max_thoughts=max_thoughts,
        temperature=temperature,
        top_p=1.0,
        delimiter=delimiter,
        prompt_variant="small",
    )
    sampler = LMSampler(tiny_backend(seed), tiny_tokenizer(), ToyTask(), cfg=cfg)
    return sampler, sampler.root(TOY_PROBLEM)


@pytest.fixture
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def lm() -> Any:
    return copy.deepcopy(tiny_lm(0))


def full_and_killed_metrics(cfg: Any, tmp_path: Any) -> tuple[list[dict], list[dict]]:
    """Metrics of one uninterrupted run of ``cfg`` and of one killed after its first step and
    resumed (the real parts, ``build_parts``), without wall-clock keys: equal for an exact resume."""
    from respo.jsonl import read_jsonl, without_wall_clock
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    list(train(cfg, build_parts(cfg), run_dir=tmp_path / "full"))
    gen = train(cfg, build_parts(cfg), run_dir=tmp_path / "cut")
    next(gen)
    gen.close()
    list(train(cfg, build_parts(cfg), run_dir=tmp_path / "cut", resume=True))
    return ([without_wall_clock(r) for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")],
            [without_wall_clock(r) for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")])
