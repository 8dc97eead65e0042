"""The one evaluator: the plain thought-by-thought agent (no resets) run with the trainer's sampler.

The trainer's in-loop evaluation (``respo.llm.train_parts.make_evaluator``), the warm-up's
(``respo.llm.sft.evaluate_policy``) and ``respo eval run`` (``respo.commands.evaluate``) all go
through ``sample_chains``: every problem's root is rendered by ``LMSampler.root`` (the prompt the
policy is trained on, every prompt variant), its chains are sampled by ``LMSampler.extend_many``
(the trainer's stop rules: delimiter, ``max_thought_tokens``, ``max_thoughts``, response budget,
stop at the first thought with a final answer) and scored with the task's reward of the response
text, as rollouts are. The same model, problems, ``SampleConfig`` and seed therefore give the
same numbers in all three places (``tests/test_evaluator.py`` checks it).

Seeds: problem ``i`` of the list draws its chains from ``rng_for(seed, "eval", i)``; the
backends' random streams are per row, so the chunking (``chunk`` problems per backend call)
changes speed, not samples (up to float noise in batched logits).

- ``sample_chains``: ``n`` chains per problem.
- ``Evaluator``: the trainer's hook ``evaluate(policy, problems) -> metrics``: greedy and / or
  sampled pass@1 and, on the arithmetic chains with a transformers backend, the theory's coverage
  measured on the sampled chains (``gold_step_probs``, ``respo.tasks.synthetic.coverage``).
- ``settings_of_folder``: the prompt and thought settings a model, warm-up, run or checkpoint
  folder records (what ``respo eval run`` uses when no flag says otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from respo.llm.config import upgrade_config_dict
from respo.llm.sampler import LMSampler, SampleConfig
from respo.resets import Chain
from respo.seeding import rng_for
from respo.tasks.base import Problem

EVAL_CHUNK = 256
"""Held-out problems per batched generation call (the trainer's evaluation)."""


def sample_chains(sampler: LMSampler, problems: Sequence[Problem], *, seed: int, n: int = 1,
                  policy: Any = None, chunk: int = EVAL_CHUNK) -> list[list[Chain[Any]]]:
    """``n`` chains of the plain agent per problem (one list per problem, in order).

    One ``extend_many`` call per ``chunk`` problems; problem ``i`` draws from
    ``rng_for(seed, "eval", i)``. ``policy``: None (the sampler's backend) or a backend.
    """
    if n < 1 or chunk < 1:
        raise ValueError(f"need n >= 1 and chunk >= 1, got n={n}, chunk={chunk}")
    out: list[list[Chain[Any]]] = []
    for c0 in range(0, len(problems), chunk):
        reqs = [((sampler.root(p),), n, rng_for(seed, "eval", c0 + i))
                for i, p in enumerate(problems[c0:c0 + chunk])]
        out += sampler.extend_many(policy, reqs)
    return out


def gold_step_probs(model: Any, tok: Any, sampler: Any, task: Any, problems: Sequence[Problem], *,
                    temperature: float = 1.0, chunk: int = 128) -> list[list[float]]:
    """Per problem, the policy's probability of each gold thought given the gold thoughts before
    it (teacher forcing on ``task.gold_thoughts``; a thought's tokens are its text and the
    canonical delimiter, as the sampler renders it), at the sampling ``temperature``."""
    import torch

    delim = [int(i) for i in sampler.fmt.delimiter.canonical]
    seqs, spans = [], []
    for p in problems:
        ids = [int(i) for i in sampler.root(p).ids]
        sp = []
        for line in task.gold_thoughts(p):
            a = len(ids)
            ids += [int(i) for i in tok.encode(line, add_special_tokens=False)] + delim
            sp.append((a, len(ids)))
        seqs.append(ids)
        spans.append(sp)
    out: list[list[float]] = []
    t = temperature if temperature > 0 else 1.0
    pad = int(tok.pad_token_id)
    with torch.no_grad():
        for c0 in range(0, len(seqs), chunk):
            batch = seqs[c0:c0 + chunk]
            width = max(len(x) for x in batch)
            padded = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for i, x in enumerate(batch):
                padded[i, :len(x)] = torch.tensor(x)
                attn[i, :len(x)] = 1
            logp = torch.log_softmax(model(input_ids=padded, attention_mask=attn).logits.float() / t, -1)
            tok_lp = logp[:, :-1].gather(-1, padded[:, 1:, None]).squeeze(-1)  # [B, W-1]: token k+1
            for i, sp in enumerate(spans[c0:c0 + chunk]):
                out.append([float(tok_lp[i, a - 1:b - 1].sum().exp()) for a, b in sp])
    return out


class Evaluator:
    """Held-out pass@1 of the plain agent (no resets): ``greedy`` (temperature 0) and ``sampled``
    (at ``cfg``'s temperature and top-p), each one chain per problem.

    ``evaluate(policy, problems)`` returns ``greedy_pass@1`` / ``sampled_pass@1`` and
    ``problems``. With ``coverage_tau`` set, a task with a step judge and gold thoughts (the
    arithmetic chains) and a backend that holds the model (transformers), the sampled chains also
    measure the theory's coverage on the evaluation distribution (``respo.tasks.synthetic.coverage``):
    ``cov_improvable`` = improvable visited states / visited states, ``cov_first_error`` = chains
    with a wrong thought / visited states, ``step_error`` = wrong thoughts / thoughts judged on the
    gold path.
    """

    def __init__(self, backend: Any, tokenizer: Any, task: Any, cfg: SampleConfig, *, seed: int,
                 greedy: bool = True, sampled: bool = True, coverage_tau: float | None = None,
                 chunk: int = EVAL_CHUNK) -> None:
        self.backend, self.tokenizer, self.task, self.cfg = backend, tokenizer, task, cfg
        self.seed, self.chunk, self.coverage_tau = seed, chunk, coverage_tau
        self.samplers: dict[str, LMSampler] = {}
        if greedy:
            self.samplers["greedy"] = LMSampler(backend, tokenizer, task, cfg=replace(cfg, temperature=0.0))
        if sampled:
            self.samplers["sampled"] = LMSampler(backend, tokenizer, task, cfg=cfg)
        if not self.samplers:
            raise ValueError("evaluation needs greedy or sampled")
        self.measure = (coverage_tau is not None and sampled
                        and getattr(task, "has_step_judge", False)
                        and callable(getattr(task, "gold_thoughts", None))
                        and getattr(backend, "model", None) is not None)

    def chains(self, mode: str, problems: Sequence[Problem], *, n: int = 1,
               policy: Any = None) -> list[list[Chain[Any]]]:
        """``n`` chains per problem with the ``greedy`` or ``sampled`` sampler."""
        smp = self.samplers[mode]
        out = sample_chains(smp, problems, seed=self.seed, n=n, policy=policy, chunk=self.chunk)
        smp.pop_stats()  # evaluation tokens are not the step's generation counters
        return out

    def __call__(self, policy: Any, problems: Sequence[Problem]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.samplers:
            got = [g[0] for g in self.chains(name, problems, policy=policy)]
            rewards = [c.reward for c in got]
            out[f"{name}_pass@1"] = float(np.mean(rewards)) if rewards else float("nan")
            if name == "sampled" and self.measure and problems:
                out.update(self._coverage(problems, got))
        out["problems"] = float(len(problems))
        return out

    def _coverage(self, problems: Sequence[Problem], chains: Sequence[Chain[Any]]) -> dict[str, float]:
        from respo.tasks.synthetic import coverage

        smp, task = self.samplers["sampled"], self.task
        assert self.coverage_tau is not None
        gold_p = gold_step_probs(self.backend.model, self.tokenizer, smp, task, problems,
                                 temperature=self.cfg.temperature)
        tot = np.zeros(4)
        for prob, c, gp in zip(problems, chains, gold_p, strict=True):
            thoughts = smp.fmt.thought_texts(c.states[-1].response_ids)
            fe = task.first_error(prob, thoughts)
            visited, improvable, wrong = coverage(fe, len(thoughts), gp, tau=self.coverage_tau)
            judged = len(thoughts) if fe is None else fe
            tot += (visited, improvable, wrong, judged)
        return {"cov_improvable": float(tot[1] / max(tot[0], 1)),
                "cov_first_error": float(tot[2] / max(tot[0], 1)),
                "step_error": float(tot[2] / max(tot[3], 1))}


# -- what a folder records --------------------------------------------------------------------------
SETTINGS = tuple(f.name for f in fields(SampleConfig) if f.name not in ("temperature", "top_p"))
"""The prompt and thought settings a folder can record: the ``SampleConfig`` fields but the
temperature and top-p (a run's are its rollouts'; an evaluation chooses its own)."""


@dataclass(frozen=True)
class Recorded:
    """The model folder to load and the settings a folder records (``settings_of_folder``)."""

    model: str
    """The transformers model folder to load (a run folder resolves to its latest checkpoint's)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Recorded values of ``SETTINGS`` (only those the folder records)."""
    source: str = ""
    """The file they were read from (empty: none)."""


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _run_settings(conf: dict[str, Any]) -> dict[str, Any] | None:
    """The settings of a run's ``config.json`` (a ``TrainConfig``), None when it is not one."""
    if not isinstance(conf.get("sampling"), dict):
        return None
    s = upgrade_config_dict(conf)["sampling"]  # an older run's config.json in the current layout
    return {k: s[k] for k in SETTINGS if k in s}


def settings_of_folder(name: str) -> Recorded:
    """What ``name`` records, if it is a folder that records its settings:

    - a warm-up folder (``respo.llm.sft``: ``sft.json``): its training ``prompt_variant`` and
      ``delimiter`` (the chains it learned);
    - a run folder (``config.json`` of a ``TrainConfig`` beside ``checkpoints/``): its sampling
      settings; the model is its latest checkpoint's ``model/`` folder;
    - a checkpoint folder (``step-NNNNNN/`` with ``model/`` and the run's ``config.json``), or the
      ``model/`` folder inside one: the run's sampling settings.

    Anything else (a hub id, a plain model folder) records nothing: ``Recorded(name)``.
    """
    p = Path(name).expanduser()
    if not p.is_dir():
        return Recorded(name)
    info = p / "sft.json"
    if info.is_file():
        d = _json_object(info)
        conf = d.get("config") if d else None
        if isinstance(conf, dict):
            return Recorded(name, {k: conf[k] for k in ("prompt_variant", "delimiter") if k in conf}, str(info))
    conf_file = p / "config.json"
    own = _json_object(conf_file) if conf_file.is_file() else None
    run = _run_settings(own) if own else None
    if run is not None:
        if (p / "model").is_dir():  # a checkpoint folder
            return Recorded(str(p / "model"), run, str(conf_file))
        if (p / "checkpoints").is_dir():  # a run folder
            from respo.llm.checkpoint import latest_checkpoint

            ckpt = latest_checkpoint(p)
            if ckpt is None:
                raise FileNotFoundError(f"--model {name}: a run folder with no checkpoint "
                                        f"(no {p / 'checkpoints' / 'LATEST'})")
            return Recorded(str(ckpt / "model"), run, str(conf_file))
        raise FileNotFoundError(f"--model {name}: a run folder (its config.json is a training config) "
                                "with no checkpoints/ folder")
    parent_conf = p.parent / "config.json"
    if p.name == "model" and parent_conf.is_file():  # the model folder inside a checkpoint
        d = _json_object(parent_conf)
        run = _run_settings(d) if d else None
        if run is not None:
            return Recorded(name, run, str(parent_conf))
    return Recorded(name)


__all__ = ["EVAL_CHUNK", "Evaluator", "Recorded", "SETTINGS", "gold_step_probs", "sample_chains",
           "settings_of_folder"]
