"""Paper-scale presets: OLMo-3-7B-Instruct and Qwen2.5-14B-Instruct, every variant, math and code.

``PAPER_PRESETS`` maps ``paper-<model>-<task>-<variant>`` to ``(description, TrainConfig)``, in
the format of ``respo.presets.PRESETS`` (into which it is merged), with the values of
the paper (``docs/method.md`` section 6):

- LoRA rank 64, alpha 64, on all linear layers (``ModelConfig.lora_*``); bf16 autocast and
  gradient checkpointing;
- AdamW, lr 5e-5, weight decay 0.01, grad clip 1.0, constant schedule;
- 32 prompts per step x 8 trained rollouts, mini-batches of 8 prompts (4 optimizer steps per
  step), one epoch over each step's batch;
- rollouts at temperature 0.7, top-p 0.95; thoughts end with ``</thought>``, at most 20 thoughts
  of at most 256 tokens and a 5120-token response (20 x 256; docs/method.md section 2), the paper's
  completion prompt; SRPO localizes with the prompted policy at temperature 0.3, up to 4096
  tokens, falling back to step 1 (the authors' behaviour, counted in the metrics);
- math: NuminaMath-CoT "olympiads", 400 training problems, 24 steps (2 epochs); code:
  LiveCodeBench v6 medium (reward tests; held-out tests score evaluation), 11 steps;
- the loss pairing of the paper (GRPO: clipped token-mean, eps 0.2, dual clip 3; resets:
  unclipped REINFORCE, sequence-mean of token-means); ``paper_runs(..., pairing="matched")``
  gives the matched-loss ablation.

``ModelConfig.name`` is the hub id; nothing here downloads anything (tests only build configs).
``MODELS[...].gpus`` is the paper's GPU count per run (2 for OLMo, 4 for Qwen); prompts per step
and per mini-batch divide by it, as the trainer requires. Seeds: 42, 0, 420.

Training data: each preset reads the prepared file of its task (``TrainConfig.data_file`` =
``data/prepared/olympiads_train.jsonl`` or ``data/prepared/lcb_v6_medium.jsonl``, written by
``respo prepare --out data/prepared``; the path is relative to the working directory, the
repository root under the launch scripts; ``--data-file PATH`` overrides it). Rollouts use the
transformers backend by default; ``--sampling.backend vllm`` (with the ``SamplingConfig.vllm``
settings) generates with a colocated vLLM engine that receives the weights after every step.

Deviations and gaps (see also the issue-6 report): respo's problem stream runs
on across epoch boundaries (24 x 32 = 768 draws from 400 problems = 1.92 epochs), where verl
drops the last partial batch of each epoch. LiveCodeBench curves come from evaluating every
step's checkpoint (``keep_checkpoints = steps``), not from in-loop evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from respo.llm.config import EvalConfig, ModelConfig, OptimConfig, SamplingConfig, TrainConfig


@dataclass(frozen=True)
class PaperModel:
    """A model of the paper's setup."""

    hub_id: str
    label: str
    """Name in the tables (``respo eval run --label-model``)."""
    gpus: int
    """GPUs (processes) per training run in the paper."""
    micro_batch_chains: int
    """Chains per forward/backward (a memory knob; not measured yet on the target GPUs)."""


@dataclass(frozen=True)
class PaperTask:
    """A training task of the paper's setup."""

    task: str
    """``respo.tasks`` name of the training reward (``math``; ``code`` = the reward tests)."""
    train_data: str
    """Prepared file (``respo prepare`` output name) holding the training problems."""
    train_problems: int
    steps: int
    eval_benchmarks: tuple[str, ...]
    """Benchmarks evaluated after training (``respo eval run --benchmarks``)."""
    description: str


MODELS: dict[str, PaperModel] = {
    "olmo3-7b": PaperModel("allenai/Olmo-3-7B-Instruct", "OLMo-3-7B-Instruct", gpus=2, micro_batch_chains=4),
    "qwen2.5-14b": PaperModel("Qwen/Qwen2.5-14B-Instruct", "Qwen2.5-14B-Instruct", gpus=4,
                              micro_batch_chains=2),
}

TEN_BENCHMARKS = ("oly", "acereason_math", "commonsenseqa", "sciknoweval_chemistry", "sciknoweval_physics",
                  "sciknoweval_biology", "sciknoweval_materials", "hmmt_nov_2025", "math_l5", "strategyqa")
"""The paper's ten benchmarks (``respo.tasks.registry.BENCHMARKS``; docs/method.md section 6)."""

TASKS: dict[str, PaperTask] = {
    "math": PaperTask("math", "olympiads_train", 400, 24, TEN_BENCHMARKS,
                      "NuminaMath-CoT olympiads (400 train / 100 held out, seed 42), 24 steps = 2 epochs"),
    "lcb": PaperTask("code", "lcb_v6_medium", 500, 11, ("lcb_v6_medium",),
                     "LiveCodeBench v6 medium (reward tests; held-out tests for evaluation), 11 steps; "
                     "docs/method.md gives no problem count: up to the 500-item cap of respo prepare"),
}

BASELINE_VARIANTS = ("spo-tree", "treerl", "score", "critique-grpo")
"""The published baselines of the paper's main table (``respo.variants``; SPO-Tree with 600-token
segments and branching 2 x 4, TreeRL with 2 chains x 1 entropy branch point x 3 continuations,
SCoRe 4 + 4 attempts, Critique-GRPO 7 responses + 1 refinement: 8 trained rollouts each)."""
VARIANTS = ("grpo", "rrpo", "srpo", "srpo-2x4", "srpo-1x8", "rrpo-2x4", "rrpo-1x8", *BASELINE_VARIANTS)
"""Every method and sampling split of the paper (main comparison + sampling-split table)."""
MAIN_VARIANTS = ("grpo", "rrpo", "srpo")
"""Methods with per-step LiveCodeBench curves (the paper's figure)."""
TABLE_VARIANTS = (*MAIN_VARIANTS, *BASELINE_VARIANTS)
"""Rows of the main table."""
SPLIT_VARIANTS = ("srpo", "srpo-2x4", "srpo-1x8", "rrpo", "rrpo-2x4", "rrpo-1x8")
"""Rows of the sampling-split table (1x4 is the default split of rrpo / srpo)."""
SEEDS = (42, 0, 420)
DATA_DIR = "data/prepared"
"""Where ``respo prepare`` writes the splits (``respo prepare --out``), relative to the working
directory; the presets' ``data_file`` is ``<DATA_DIR>/<PaperTask.train_data>.jsonl``."""

PAPER_SAMPLING = SamplingConfig(
    temperature=0.7, top_p=0.95, delimiter="</thought>", max_thoughts=20, max_thought_tokens=256,
    max_response_tokens=5120, prompt_variant="paper", localizer="prompted", localize_temperature=0.3,
    localize_max_tokens=4096, fallback="step1", scale_logits_by_temperature=True,
)
PAPER_OPTIM = OptimConfig(lr=5e-5, weight_decay=0.01, grad_clip=1.0, schedule="constant", warmup_steps=0)


def preset_name(model: str, task: str, variant: str) -> str:
    """``paper-<model>-<task>-<variant>``."""
    return f"paper-{model}-{task}-{variant}"


def data_file(task: str, data_dir: str = DATA_DIR) -> str:
    """The prepared training file of a ``TASKS`` key: ``<data_dir>/<train_data>.jsonl``."""
    return f"{data_dir.rstrip('/')}/{TASKS[task].train_data}.jsonl"


def paper_config(model: str, task: str, variant: str) -> TrainConfig:
    """The paper's configuration of one (model, task, variant), seed 42, paper loss pairing."""
    m, t = MODELS[model], TASKS[task]
    return TrainConfig(
        name=preset_name(model, task, variant), variant=variant, pairing="paper",
        clip_eps=0.2, clip_c=3.0, kl_coef=0.0, task=t.task, data_file=data_file(task),
        train_problems=t.train_problems, seed=42,
        steps=t.steps, prompts_per_step=32, minibatch_prompts=8, epochs=1,
        micro_batch_chains=m.micro_batch_chains, checkpoint_every=1,
        # math keeps the last checkpoint (evaluated after training); code keeps every step's
        # checkpoint for the LiveCodeBench curves
        keep_checkpoints=t.steps if task == "lcb" else 1,
        log_rollouts=True, diagnostics_every=0,
        model=ModelConfig(name=m.hub_id, dtype="bfloat16", gradient_checkpointing=True, lora_rank=64,
                          lora_alpha=64, lora_targets=("all-linear",)),
        sampling=PAPER_SAMPLING, optim=PAPER_OPTIM, eval=EvalConfig(every=0),
    )


def _description(model: str, task: str, variant: str) -> str:
    m, t = MODELS[model], TASKS[task]
    return (f"Paper scale: {m.label} ({m.gpus} GPUs), {variant}, {t.description}; LoRA 64/64 all-linear, "
            "AdamW 5e-5 wd 0.01 clip 1.0, 32 prompts x 8 rollouts, mini-batch 8, T 0.7 top-p 0.95, "
            "</thought> thoughts (20 x 256 tokens), localization T 0.3, bf16, paper loss pairing.")


PAPER_PRESETS: dict[str, tuple[str, TrainConfig]] = {
    preset_name(m, t, v): (_description(m, t, v), paper_config(m, t, v))
    for m in MODELS for t in TASKS for v in VARIANTS
}


@dataclass(frozen=True)
class PaperRun:
    """One training run of the reproduction: a preset, a seed and a loss pairing."""

    name: str
    """Run folder name (``runs/<...>/<name>``)."""
    preset: str
    model: str
    task: str
    variant: str
    seed: int
    pairing: str
    gpus: int
    cfg: TrainConfig

    @property
    def method(self) -> str:
        """Method label in the tables: the variant, tagged when the matched pairing was used."""
        return self.variant if self.pairing == "paper" else f"{self.variant}-matched"

    def train_args(self) -> list[str]:
        """``respo train`` arguments that rebuild ``cfg`` from the preset."""
        args = ["--preset", self.preset, "--name", self.name, "--seed", str(self.seed)]
        if self.pairing != "paper":
            args += ["--pairing", self.pairing]
        return args


def paper_runs(model: str, task: str, *, variants: tuple[str, ...] = VARIANTS,
               seeds: tuple[int, ...] = SEEDS, pairing: str = "paper") -> list[PaperRun]:
    """Every (variant, seed) run of one model and task, seed-major within each variant."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    runs = []
    for v in variants:
        preset = preset_name(model, task, v)
        for s in seeds:
            name = f"{preset}-s{s}" + ("" if pairing == "paper" else f"-{pairing}")
            cfg = dataclasses.replace(PAPER_PRESETS[preset][1], name=name, seed=s, pairing=pairing)
            runs.append(PaperRun(name, preset, model, task, v, s, pairing, MODELS[model].gpus, cfg))
    return runs
