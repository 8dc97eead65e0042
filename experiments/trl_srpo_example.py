"""SRPO in a plain TRL script: ``GRPOTrainer`` with respo's resets as its rollout hook.

    .venv/bin/python experiments/trl_srpo_example.py --model tiny --steps 2      # seconds, CPU
    .venv/bin/python experiments/trl_srpo_example.py --model smollm2 --steps 4   # SmolLM2-135M

Everything after the model is the user code the README shows: problems of a respo task, a
``ResetRollout`` (variant and localizer), the matching ``GRPOConfig`` and TRL's trainer. Swap
``variant="srpo"`` for "rrpo", "grpo", "srpo-1x8", ... to run the other reset variants.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL marks rollout_func experimental

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--out", default="runs/trl_srpo_example")
a = ap.parse_args()

if a.model == "smollm2":
    from respo.llm.models import load_smollm2

    model, tokenizer = load_smollm2()
    prompt_variant = "chat"
else:  # a random tiny Llama over a character tokenizer: shows the plumbing, learns nothing
    from respo.llm.models import char_tokenizer, tiny_model

    tokenizer = char_tokenizer()
    model = tiny_model(len(tokenizer), 0)
    prompt_variant = "bare"

# -- the user code --------------------------------------------------------------------------
from trl import GRPOTrainer  # noqa: E402

from respo.integrations.trl import ResetConfig, ResetRollout, reset_grpo_config, trl_dataset  # noqa: E402
from respo.llm.sampler import SampleConfig  # noqa: E402
from respo.tasks.catalog import make_task  # noqa: E402

task = make_task("arithmetic")
problems = task.problems(64, seed=0, split="train")
rollout = ResetRollout(task, problems, ResetConfig(
    variant="srpo", localizer="confidence",
    sample=SampleConfig(max_response_tokens=64, delimiter="\n", prompt_variant=prompt_variant)))
args = reset_grpo_config(rollout, output_dir=a.out, max_steps=a.steps, learning_rate=1e-6,
                         per_device_train_batch_size=16, logging_steps=1, report_to="none",
                         bf16=False, use_cpu=True, save_strategy="no")
trainer = GRPOTrainer(model=model, processing_class=tokenizer, args=args,
                      train_dataset=trl_dataset(problems), reward_funcs=[rollout.reward_func],
                      rollout_func=rollout)
trainer.train()
