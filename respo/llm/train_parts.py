"""Build what ``respo.llm.train.train`` needs (``Parts``) from a ``TrainConfig``.

Model and tokenizer (``respo.llm.models``: the tiny random Llama, SmolLM2 from its GGUF file, or
any local / hub checkpoint through transformers), optional LoRA adapters (peft), the task and its
problems, the ``LMSampler`` over an ``HFBackend``, the variant's localizer (none, uniform, the
policy itself: prompted or confidence, or the task's step judge as an oracle) and the held-out
evaluation hook (greedy and sampled pass@1 of the plain agent, no resets).

Kept apart from the loop so that tests can hand the loop fakes instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from respo.llm.config import TrainConfig
from respo.llm.train import Parts
from respo.resets import Chain, OracleLocalizer, UniformLocalizer
from respo.seeding import int_seed_for, rng_for
from respo.tasks.base import Problem


def build_task(name: str) -> Any:
    """A task that generates its own problems, by ``respo.tasks.make_task`` name.

    The trainer draws its problems from ``task.problems(n, seed=, split=)``: the step-verifiable
    ``arithmetic`` chains and ``gym:<generator>`` (reasoning-gym) tasks do; tasks scored on a
    prepared data set (``math``, ``choice``, ``code``) are rejected with a clear message until
    the trainer reads prepared files. Unknown names list the valid ones.
    """
    from respo.tasks import make_task

    try:
        task = make_task(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if not callable(getattr(task, "problems", None)):
        raise ValueError(
            f"task {name!r} has no problem generator; the trainer needs one that does "
            "(arithmetic, arithmetic-chain or gym:<generator>)"
        )
    return task


def shipped_dir(folder: str) -> Any:
    """``folder`` as a Path; a relative one is taken from the repository root (beside ``respo/``)."""
    from pathlib import Path

    p = Path(folder)
    return p if p.is_absolute() else Path(__file__).resolve().parents[2] / p


def build_model(cfg: TrainConfig) -> tuple[Any, Any]:
    """(model, tokenizer) for ``cfg.model``, with LoRA adapters when ``lora_rank > 0``."""
    import torch

    from respo.llm import models

    m = cfg.model
    if m.name == "tiny":
        tok = models.char_tokenizer()
        model = models.tiny_model(len(tok), int_seed_for(cfg.seed, "init"),
                                  hidden=m.tiny_hidden, layers=m.tiny_layers)
    elif m.name == "smollm2":
        model, tok = models.load_smollm2()
    elif m.name == "sft-warmup" or m.name.startswith("sft-warmup:"):
        # The CPU track's supervised warm-up (respo.llm.sft), trained once and cached.
        from pathlib import Path

        from transformers import AutoModelForCausalLM

        from respo.llm import sft

        path = sft.warmup_checkpoint(sft.warmup_config(m.name), Path(m.sft_cache_dir),
                                     shipped=[shipped_dir(m.sft_shipped_dir)])
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        tok = models.char_tokenizer()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(m.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(m.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if m.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the training forward needs no KV cache
    if m.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        targets: Any = "all-linear" if m.lora_targets == ("all-linear",) else list(m.lora_targets)
        model = get_peft_model(model, LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha,
                                                 target_modules=targets, lora_dropout=0.0,
                                                 task_type="CAUSAL_LM"))
    model.eval()
    return model, tok


def build_parts(cfg: TrainConfig, *, device: Any = "cpu") -> Parts:
    """Everything the loop needs for ``cfg`` (see the module docstring)."""
    from respo.llm.generation import HFBackend
    from respo.llm.sampler import LMSampler, SampleConfig

    model, tok = build_model(cfg)
    model.to(device)
    task = build_task(cfg.task)
    train_problems = task.problems(cfg.train_problems, seed=cfg.seed, split="train")
    eval_seed = cfg.seed if cfg.eval.seed is None else cfg.eval.seed
    eval_problems: list[Problem] = []
    if cfg.eval.every:
        import inspect

        # Tasks with a small question space (gym generators at easy settings) cannot keep the
        # held-out split disjoint by construction: exclude the training questions explicitly.
        kw = {"exclude": train_problems} if "exclude" in inspect.signature(task.problems).parameters else {}
        eval_problems = task.problems(cfg.eval.problems, seed=eval_seed, split=cfg.eval.split, **kw)
    s = cfg.sampling
    backend = HFBackend(model, tok, device=str(device))
    scfg = SampleConfig(max_new_tokens=s.max_response_tokens, temperature=s.temperature, top_p=s.top_p,
                        max_thought_tokens=s.max_thought_tokens, max_thoughts=s.max_thoughts,
                        delimiter=s.delimiter, prompt_variant=s.prompt_variant)
    sampler = LMSampler(backend, tok, task, cfg=scfg)
    kind = cfg.variant_row.localizer
    localizer: Any = None
    sources = [sampler.pop_stats]
    judge = None
    if task.has_step_judge:

        def judge(chain: Chain[Any]) -> int | None:
            problem = sampler.problem_of(chain.states[0])
            k = task.first_error(problem, sampler.fmt.thought_texts(chain.states[-1].response_ids))
            return None if k is None else int(k)

    if kind == "uniform":
        localizer = UniformLocalizer()
    elif kind == "oracle":
        if judge is None:
            raise ValueError(f"variant {cfg.variant!r} needs a task with a step judge; {cfg.task!r} has none")
        localizer = OracleLocalizer(judge, fallback_mode=s.fallback)
    elif kind == "self":
        from respo.llm import localize

        if s.localizer == "prompted":
            localizer = localize.PromptedSelfLocalizer.for_sampler(
                sampler, temperature=s.localize_temperature, max_new_tokens=s.localize_max_tokens,
                fallback_mode=s.fallback)
        else:
            localizer = localize.ConfidenceLocalizer(model, threshold=s.confidence_threshold,
                                                     fallback_mode=s.fallback)
        if hasattr(localizer, "pop_stats"):
            sources.append(localizer.pop_stats)
    evaluate = None
    if cfg.eval.every:
        evaluate = make_evaluator(cfg, backend, tok, task)
    return Parts(model=model, sampler=sampler, root=sampler.root, train_problems=train_problems,
                 localizer=localizer, eval_problems=eval_problems, tokenizer=tok,
                 pad_id=int(tok.pad_token_id), policy=None, evaluate=evaluate, stats_sources=sources,
                 judge=judge)


EVAL_CHUNK = 64
"""Held-out problems per batched generation call of the evaluator."""


def make_evaluator(cfg: TrainConfig, backend: Any, tok: Any, task: Any) -> Any:
    """Held-out pass@1 of the plain agent (no resets): greedy, and sampled at the rollout temperature."""
    from dataclasses import replace

    from respo.llm.sampler import LMSampler, SampleConfig

    s = cfg.sampling
    base = SampleConfig(max_new_tokens=s.max_response_tokens, temperature=s.temperature, top_p=s.top_p,
                        max_thought_tokens=s.max_thought_tokens, max_thoughts=s.max_thoughts,
                        delimiter=s.delimiter, prompt_variant=s.prompt_variant)
    samplers = {"greedy": LMSampler(backend, tok, task, cfg=replace(base, temperature=0.0))}
    if cfg.eval.sampled:
        samplers["sampled"] = LMSampler(backend, tok, task, cfg=base)

    eval_seed = cfg.seed if cfg.eval.seed is None else cfg.eval.seed

    def evaluate(policy: Any, problems: Sequence[Problem]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, smp in samplers.items():
            rewards = []
            # Batched: one backend call per chunk of problems (per-row RNG streams keep each
            # problem's sample tied to its own seed, whatever the chunking).
            for c0 in range(0, len(problems), EVAL_CHUNK):
                reqs = [((smp.root(p),), 1, rng_for(eval_seed, "eval", c0 + i))
                        for i, p in enumerate(problems[c0:c0 + EVAL_CHUNK])]
                rewards += [g[0].reward for g in smp.extend_many(policy, reqs)]
            smp.pop_stats()
            out[f"{name}_pass@1"] = float(np.mean(rewards)) if rewards else float("nan")
        out["problems"] = float(len(problems))
        return out

    return evaluate
