"""respo's resets inside Hugging Face TRL's ``GRPOTrainer`` (the ``rollout_func`` hook).

What lives here:

- ``ResetRollout(task, problems, ResetConfig(...))``: a ``rollout_func`` for every reset variant
  of ``respo.variants`` (grpo, rrpo, srpo and its splits, oracle on tasks with a step judge). Per
  generation batch it builds one ``respo.buffer.Buffer`` per dataset prompt with respo's own
  ``LMSampler`` and localizer (``build_buffers``, all prompts in lock-step), computes respo's
  group advantages, and returns one TRL row per trained chain. ``ResetRollout.reward_func`` is
  the one reward function to give the trainer: it hands those advantages to TRL.
- ``reset_grpo_config(rollout, **kw)`` builds a ``GRPOConfig`` that makes TRL's loss respo's;
  ``check_grpo_config(args, rollout)`` refuses settings that would not (clear messages).
- ``trl_dataset(problems)``: a ``datasets.Dataset`` with one ``prompt`` per problem.

The mapping (TRL >= 1.0, tested on 1.16):

- ``num_generations`` = the variant's budget (8). TRL repeats each dataset prompt that many
  times in one contiguous block; the hook returns the prompt's buffer as that block (G1 first,
  then each suffix group).
- A row's prompt is the chain's copied prefix state (question + prefix thoughts, token ids as
  generated) and its completion the tokens after it. TRL scores completion positions only, so a
  suffix chain's prefix gets no loss term: respo's prefix mask.
- Advantages: respo's (``resolve_objective``: paper numerics, G1 and each G2 normalised
  separately) are given as the reward, with ``scale_rewards="none"`` and ``beta=0``; TRL then
  only subtracts the mean over the 8 rows, which is 0 because every respo group is centred.
  ``num_iterations=1`` keeps the ratio at 1, so TRL's ``loss_type="grpo"`` is respo's unclipped
  REINFORCE with seq-mean-token-mean and ``"dapo"`` its token mean.
- Rows of one prompt must stay on one process: the per-process generation batch must be a
  multiple of ``num_generations`` (TRL itself only checks the global batch).

Generation runs through the trainer's own (unwrapped) model with ``HFBackend``, or, when TRL
runs a colocated vLLM engine, through that engine with respo's ``VLLMBackend`` (TRL syncs the
weights before calling the hook). The localization tokens (prompted localizer) and the
confidence forward pass are never trained. respo's metrics (``buffer_metrics``, generation and
localizer counters) are logged through TRL's ``log_metric`` as ``respo/...``, and the raw task
rewards beside the advantages (``respo/reward_mean`` and a ``respo_reward`` column in TRL's
completions table); TRL's own ``reward`` metrics then describe advantages.

Known limits: TRL counts a row without EOS (a chain stopped at its answer thought or cut by a
limit) as clipped in ``completions/clipped_ratio``; vLLM server mode is refused; the published
baselines (trees, SCoRe, Critique-GRPO) need per-token advantages or follow-up prompts and are
refused; FSDP-sharded models cannot generate in the hook.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from respo.advantages import get_advantage
from respo.buffer import Buffer, Rngs, buffer_metrics, build_buffers
from respo.llm.sampler import LMSampler, SampleConfig
from respo.resets import Chain, OracleLocalizer, UniformLocalizer, check_fallback_mode
from respo.tasks.base import Problem, Task
from respo.variants import Objective, Variant, get_variant, resolve_objective

TESTED_TRL = ("1.16", "1.17")
"""TRL versions this adapter was tested with: ``>= TESTED_TRL[0], < TESTED_TRL[1]``."""
MIN_TRL = "1.0"
"""Below this the hook ran with vLLM only and (before 0.26) had another signature."""

TRL_LOSS_TYPE: dict[tuple[str, str], str] = {
    ("reinforce", "seq-mean-token-mean"): "grpo",
    ("reinforce", "token-mean"): "dapo",
    ("ppo_clip", "seq-mean-token-mean"): "grpo",
    ("ppo_clip", "token-mean"): "dapo",
}
"""TRL ``loss_type`` giving respo's (loss, agg) at ratio 1 (one update per generation batch:
clipping is then inactive, so ``ppo_clip`` and ``reinforce`` have the same gradient)."""

REWARD_NAME = "respo_advantage"
"""``__name__`` of ``ResetRollout.reward_func`` (TRL logs ``rewards/respo_advantage/...``)."""


def check_trl_version(version: str | None = None) -> str:
    """TRL's version (``version`` or the installed one); ValueError below ``MIN_TRL``, a
    UserWarning outside the tested range ``TESTED_TRL``."""
    from packaging.version import Version

    if version is None:
        import trl

        version = str(trl.__version__)
    v = Version(version)
    if v < Version(MIN_TRL):
        raise ValueError(f"TRL {version} is not supported: respo.integrations.trl needs TRL >= {MIN_TRL} "
                         "(earlier releases call rollout_func only with vLLM); tested "
                         f">={TESTED_TRL[0]},<{TESTED_TRL[1]} (pip install 'respo[trl]')")
    if not Version(TESTED_TRL[0]) <= v < Version(TESTED_TRL[1]):
        warnings.warn(f"TRL {version} is outside the tested range >={TESTED_TRL[0]},<{TESTED_TRL[1]} "
                      "of respo.integrations.trl; the rollout hook is experimental in TRL",
                      UserWarning, stacklevel=2)
    return version


@dataclass(frozen=True)
class ResetConfig:
    """What the rollout hook samples and how it localizes (defaults: respo's SmolLM2 settings)."""

    variant: str = "srpo"
    """A reset variant of ``respo.variants.VARIANTS`` (grpo, rrpo, srpo, srpo-2x4, srpo-1x8,
    rrpo-2x4, rrpo-1x8, oracle)."""
    localizer: str = "confidence"
    """For the "self" variants (SRPO): ``confidence`` (one teacher-forced forward pass; the first
    thought holding a token below ``confidence_threshold``) or ``prompted`` (the policy names its
    first wrong step; one batched generation with the current policy)."""
    confidence_threshold: float = 0.5
    localize_temperature: float = 0.3
    localize_max_tokens: int = 512
    fallback: str = "step1"
    """What an undecided localization does: ``step1``, ``uniform`` or ``skip`` (``respo.resets``)."""
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(
        max_response_tokens=256, delimiter="\n", prompt_variant="chat", max_thought_tokens=64))
    """Rollout sampling (respo's ``SampleConfig``: token budget, thoughts, delimiter, prompt)."""
    pairing: str = "paper"
    """``paper`` (GRPO with token-mean, resets with seq-mean-token-mean) or ``matched``."""
    success: float = 1.0
    """A chain with reward below this is a failed parent."""
    seed: int = 0
    """Rollout streams are ``Rngs.keyed(seed, trainer step, problem index)``."""

    def __post_init__(self) -> None:
        if self.localizer not in ("confidence", "prompted"):
            raise ValueError(f"localizer must be 'confidence' or 'prompted', got {self.localizer!r}")
        check_fallback_mode(self.fallback)


def _variant_and_objective(cfg: ResetConfig, task: Task) -> tuple[Variant, Objective, str]:
    variant = get_variant(cfg.variant)
    if variant.baseline:
        raise ValueError(f"variant {variant.name!r} is a published baseline (builder "
                         f"{variant.builder!r}); respo.integrations.trl supports the reset variants "
                         "(grpo, rrpo, srpo and their splits, oracle): train baselines with respo's "
                         "own trainer")
    if variant.localizer == "oracle" and not task.has_step_judge:
        raise ValueError(f"variant 'oracle' needs a task with a step judge; task {task.name!r} has none")
    obj = resolve_objective(variant, cfg.pairing)
    loss_type = TRL_LOSS_TYPE.get((obj.loss, obj.agg))
    if loss_type is None:
        raise ValueError(f"objective loss={obj.loss!r}, agg={obj.agg!r} has no TRL loss_type; "
                         f"supported: {sorted(TRL_LOSS_TYPE)}")
    return variant, obj, loss_type


def _question_of(prompt: Any) -> str:
    """The question text of a TRL prompt: a string, or a conversation ending in a user message."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        content = prompt[-1].get("content")
        if isinstance(content, str):
            return content
    raise TypeError(f"a prompt must be the question string (see trl_dataset) or a conversation whose "
                    f"last message has string content, got {type(prompt).__name__}")


class ResetRollout:
    """TRL ``rollout_func`` building respo's reset buffers (see the module docstring).

    ``problems`` are the training problems; the dataset's prompts must be their questions
    (``trl_dataset(problems)``), which is how the hook finds a prompt's answer for the task's
    reward. After each call, ``last_buffers`` holds the buffers it trained (for inspection).
    """

    def __init__(self, task: Task, problems: Sequence[Problem], cfg: ResetConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else ResetConfig()
        self.task = task
        self.variant, self.objective, self.loss_type = _variant_and_objective(self.cfg, task)
        self.split = self.variant.split
        self._index: dict[str, tuple[int, Problem]] = {}
        for i, p in enumerate(problems):
            old = self._index.get(p.question)
            if old is not None and (old[1].answer != p.answer):
                raise ValueError(f"problems {old[1].id!r} and {p.id!r} have the same question but "
                                 "different answers: the hook could not tell them apart")
            self._index.setdefault(p.question, (i, p))
        if not self._index:
            raise ValueError("ResetRollout needs at least one problem")
        self._parts: tuple[Any, LMSampler, Any] | None = None
        self._pending: dict[str, float] = {}
        self._checked = False
        self.last_buffers: list[Buffer[Any]] = []
        self.reward_func = self._make_reward_func()

    @property
    def num_generations(self) -> int:
        """TRL's ``num_generations``: the variant's budget of trained rollouts per prompt."""
        return self.split.budget

    # -- parts --------------------------------------------------------------------------------
    def _build_parts(self, trainer: Any) -> tuple[Any, LMSampler, Any]:
        """(model, sampler, localizer) over the trainer's own model and tokenizer."""
        from respo.llm.generation import HFBackend, eos_ids_of

        model = trainer.accelerator.unwrap_model(trainer.model)
        tok = trainer.processing_class
        backend: Any
        if getattr(trainer, "use_vllm", False):
            from respo.llm.vllm_backend import VLLMBackend

            eos = eos_ids_of(getattr(model, "generation_config", None), tok)
            backend = VLLMBackend(trainer.vllm_generation.llm, tokenizer=tok, eos_ids=eos)
        else:
            backend = HFBackend(model, tok, device=trainer.accelerator.device)
        sampler = LMSampler(backend, tok, self.task, cfg=self.cfg.sample)
        kind = self.variant.localizer
        localizer: Any = None
        if kind == "uniform":
            localizer = UniformLocalizer()
        elif kind == "oracle":
            def judge(chain: Chain[Any]) -> int | None:
                problem = sampler.problem_of(chain.states[0])
                k = self.task.first_error(problem, sampler.fmt.thought_texts(chain.states[-1].response_ids))
                return None if k is None else int(k)

            localizer = OracleLocalizer(judge, fallback_mode=self.cfg.fallback)
        elif kind == "self":
            from respo.llm import localize

            if self.cfg.localizer == "prompted":
                localizer = localize.PromptedSelfLocalizer.for_sampler(
                    sampler, temperature=self.cfg.localize_temperature,
                    max_new_tokens=self.cfg.localize_max_tokens, fallback_mode=self.cfg.fallback)
            else:
                localizer = localize.ConfidenceLocalizer(model, threshold=self.cfg.confidence_threshold,
                                                         fallback_mode=self.cfg.fallback)
        return model, sampler, localizer

    # -- the hook -----------------------------------------------------------------------------
    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """TRL's ``rollout_func(prompts, trainer)``: one row per trained chain, prompt-major."""
        if not self._checked:
            check_trl_version()
            check_grpo_config(trainer.args, self, num_processes=trainer.accelerator.num_processes)
            check_reward_funcs(trainer, self)
            self._checked = True
        training = bool(trainer.model.training)
        g = trainer.num_generations if training else trainer.num_generations_eval
        if g != self.num_generations:
            raise ValueError(f"num_generations{'' if training else '_eval'}={g} but variant "
                             f"{self.variant.name!r} trains {self.num_generations} rollouts per prompt")
        if len(prompts) % g:
            raise ValueError(f"this process got {len(prompts)} prompt rows, not a multiple of "
                             f"num_generations={g}: a prompt's groups would be split across processes "
                             "(make the per-process generation batch a multiple of num_generations)")
        firsts = prompts[::g]
        for b, p in enumerate(firsts):
            if any(q != p for q in prompts[b * g:(b + 1) * g]):
                raise ValueError(f"prompt rows {b * g}..{(b + 1) * g - 1} are not one prompt repeated "
                                 f"{g} times: TRL's prompt layout changed or the batch was reordered")
        found = []
        for p in firsts:
            q = _question_of(p)
            if q not in self._index:
                raise KeyError(f"prompt {q[:80]!r} is not the question of any problem given to "
                               "ResetRollout (build the dataset with trl_dataset(problems))")
            found.append(self._index[q])
        if self._parts is None:
            self._parts = self._build_parts(trainer)
        model, sampler, localizer = self._parts
        step = int(trainer.state.global_step)
        was_training = model.training
        model.eval()  # no dropout and no gradient checkpointing while sampling and localizing
        try:
            roots = [sampler.root(prob) for _, prob in found]
            buffers = build_buffers(sampler, localizer, None, roots, split=self.split,
                                    rngs=[Rngs.keyed(self.cfg.seed, step, i) for i, _ in found],
                                    success=self.cfg.success)
        finally:
            model.train(was_training)
        out = self.rows(buffers)
        self._collect_metrics(buffers, sampler, localizer)
        self.last_buffers = buffers
        return out

    def rows(self, buffers: Sequence[Buffer[Any]]) -> dict[str, list[Any]]:
        """TRL rows of the buffers: prompt = copied prefix state, completion = trained tokens."""
        adv_fn = get_advantage(self.objective.advantage)
        out: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs",
                                                     REWARD_NAME, "respo_reward", "respo_group")}
        for buf in buffers:
            if len(buf.chains) != self.num_generations:
                raise RuntimeError(f"buffer has {len(buf.chains)} chains, expected {self.num_generations}")
            adv = adv_fn(buf.rewards, buf.group)
            for c, a, grp in zip(buf.chains, adv, buf.group.tolist(), strict=True):
                ids = c.states[-1].ids
                start = len(c.states[c.prefix_len].ids)
                out["prompt_ids"].append([int(t) for t in ids[:start]])
                out["completion_ids"].append([int(t) for t in ids[start:]])
                lp = c.info.get("logprobs")
                out["logprobs"].append([float(x) for x in lp] if lp is not None
                                       and len(lp) == len(ids) - start else None)
                out[REWARD_NAME].append(float(a))
                out["respo_reward"].append(float(c.reward))
                out["respo_group"].append(int(grp))
        if any(lp is None for lp in out["logprobs"]):
            out["logprobs"] = None  # type: ignore[assignment]  # TRL accepts no log-probs at all
        return out

    def _collect_metrics(self, buffers: list[Buffer[Any]], sampler: LMSampler, localizer: Any) -> None:
        m = {f"respo/{k}": v for k, v in buffer_metrics(buffers).items()}
        m.update({f"respo/{k}": v for k, v in sampler.pop_stats().items()})
        if hasattr(localizer, "pop_stats"):
            m.update({f"respo/{k}": v for k, v in localizer.pop_stats().items()})
        m["respo/locate_fallbacks"] = float(sum(b.stats.locate_fallbacks for b in buffers))
        m["respo/topped_up"] = float(sum(b.stats.topped_up for b in buffers))
        self._pending = {k: float(v) for k, v in m.items() if not math.isnan(float(v))}

    def _make_reward_func(self) -> Any:
        rollout = self

        def respo_advantage(prompts: list[Any], completions: list[Any], **kw: Any) -> list[float]:
            """respo's advantages as TRL rewards; logs the raw rewards and respo's metrics."""
            adv = kw.get(REWARD_NAME)
            if adv is None or len(adv) != len(prompts):
                raise ValueError(f"reward function {REWARD_NAME!r} works only with ResetRollout as "
                                 "the trainer's rollout_func (no advantages came with the batch)")
            raw = kw.get("respo_reward") or []
            log_metric, log_extra = kw.get("log_metric"), kw.get("log_extra")
            if log_metric is not None:
                for name, value in rollout._pending.items():
                    log_metric(name, value)
                if raw:
                    log_metric("respo/reward_mean", float(np.mean(raw)))
            if log_extra is not None and raw:
                log_extra("respo_reward", [float(r) for r in raw])
            rollout._pending = {}
            return [float(a) for a in adv]

        respo_advantage.__name__ = REWARD_NAME
        return respo_advantage


# -- configuration ------------------------------------------------------------------------------
def _grpo_settings(rollout: ResetRollout) -> dict[str, Any]:
    s = rollout.cfg.sample
    return {
        "num_generations": rollout.num_generations,
        "scale_rewards": "none",
        "beta": 0.0,
        "loss_type": rollout.loss_type,
        "num_iterations": 1,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "mask_truncated_completions": False,
        "top_entropy_quantile": 1.0,
        "multi_objective_aggregation": "sum_then_normalize",
        "max_completion_length": s.max_response_tokens,
    }


def reset_grpo_config(rollout: ResetRollout, **kw: Any) -> Any:
    """A ``trl.GRPOConfig`` whose loss is respo's for ``rollout`` (other fields from ``kw``).

    Sets num_generations (the budget), scale_rewards="none", beta=0, the matching loss_type,
    num_iterations=1, the rollout's temperature and top-p, mask_truncated_completions=False and
    max_completion_length = the response budget; a ``kw`` that contradicts them is refused by
    ``check_grpo_config``, as is a batch layout that would split a prompt across processes.
    """
    from trl import GRPOConfig

    check_trl_version()
    fields = GRPOConfig.__dataclass_fields__
    if "activation_checkpointing" in fields and "gradient_checkpointing" not in kw:
        # transformers >= 5.2x renamed the field; TRL still sets the old one (default True),
        # which warns. Keep TRL's default under the new name.
        kw = {"gradient_checkpointing": None, "activation_checkpointing": True, **kw}
    args = GRPOConfig(**{**_grpo_settings(rollout), **kw})
    check_grpo_config(args, rollout)
    return args


def check_grpo_config(args: Any, rollout: ResetRollout, *, num_processes: int | None = None) -> None:
    """ValueError naming each ``GRPOConfig`` field that would make TRL's update differ from respo's."""
    want = _grpo_settings(rollout)
    why = {
        "num_generations": f"variant {rollout.variant.name!r} trains {rollout.num_generations} rollouts per prompt",
        "scale_rewards": "respo's advantages are already normalised per group (G1 and G2 separately)",
        "beta": "respo's objectives have no KL term",
        "loss_type": f"respo's {rollout.objective.loss}/{rollout.objective.agg} is TRL's {rollout.loss_type!r}",
        "num_iterations": "one update per rollout batch keeps the ratio at 1 (respo's on-policy step)",
        "temperature": "TRL scales the training logits by it; it must be the rollout's sampling temperature",
        "top_p": "must be the rollout's sampling top-p",
        "mask_truncated_completions": "respo's chains may stop at an answer thought without EOS",
        "top_entropy_quantile": "an entropy mask would drop trained tokens",
        "multi_objective_aggregation": "the advantages must reach TRL unnormalised",
    }
    bad = []
    for key, reason in why.items():
        have = getattr(args, key, None)
        if isinstance(want[key], float) and isinstance(have, int | float):
            ok = math.isclose(float(have), want[key], rel_tol=0, abs_tol=1e-12)
        else:
            ok = have == want[key]
        if not ok:
            bad.append(f"{key}={have!r} (need {want[key]!r}: {reason})")
    if getattr(args, "use_vllm", False):
        if getattr(args, "vllm_mode", None) != "colocate":
            bad.append(f"vllm_mode={args.vllm_mode!r} (only 'colocate' is supported: the hook samples "
                       "through the trainer's own vLLM engine; server mode is not supported yet)")
        if getattr(args, "vllm_enable_sleep_mode", False):
            bad.append("vllm_enable_sleep_mode=True (the hook needs the engine awake)")
    n_proc = num_processes if num_processes is not None else int(getattr(args, "world_size", 1))
    gen = getattr(args, "generation_batch_size", None)
    if gen is not None and n_proc > 0:
        if gen % n_proc or (gen // n_proc) % rollout.num_generations:
            bad.append(f"generation_batch_size={gen} over {n_proc} process(es) gives {gen / n_proc:g} "
                       f"rows per process, not a multiple of num_generations={rollout.num_generations}: "
                       "each prompt's groups must stay on one process (make per_device_train_batch_size "
                       "* steps_per_generation a multiple of num_generations)")
    if bad:
        raise ValueError(f"GRPOConfig does not match respo's {rollout.variant.name!r} update:\n  - "
                         + "\n  - ".join(bad))


def check_reward_funcs(trainer: Any, rollout: ResetRollout) -> None:
    """The trainer must use ``rollout.reward_func`` alone, with weight 1."""
    funcs = list(getattr(trainer, "reward_funcs", []))
    weights = [float(w) for w in getattr(trainer, "reward_weights", [1.0])]
    if len(funcs) != 1 or funcs[0] is not rollout.reward_func or weights != [1.0]:
        names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
        raise ValueError(f"GRPOTrainer must get reward_funcs=[rollout.reward_func] (weight 1) with "
                         f"ResetRollout; got {names} with weights {weights}: the task reward is "
                         "scored inside the hook (ResetRollout(task, ...)) and other reward "
                         "functions would be added to respo's advantages")


def trl_dataset(problems: Sequence[Problem]) -> Any:
    """A ``datasets.Dataset`` with one row per problem: ``prompt`` (its question) and ``problem_id``."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.question, "problem_id": p.id} for p in problems])
