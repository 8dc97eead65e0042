"""Worker for tests/test_trl_integration.py: SRPO through TRL's GRPOTrainer on two CPU processes.

Run as ``torchrun --nproc_per_node 2 tests/trl_dp_worker.py OUT``. Two runs on the tiny model:

- "good": 2 prompts per process (16 rows each), one training step; every process records the
  prompts its rollout hook built buffers for and how many rows each got;
- "bad": 4 rows per process (8 in all, which TRL itself accepts): ``reset_grpo_config`` must
  refuse it ("bad_config"), and so must the hook when the config was built by hand ("bad_hook").

Process 0 writes ``OUT/result.json``: {"good": {rank: [[problem id, rows], ...]},
"bad_config": {rank: error}, "bad_hook": {rank: error}}.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from llm_fixtures import tiny_lm, tiny_tokenizer  # noqa: E402
from test_trl_integration import SAMPLE, AnyCharTask  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from respo.integrations.trl import ResetConfig, ResetRollout, reset_grpo_config, trl_dataset  # noqa: E402
from respo.tasks.base import Problem  # noqa: E402

PROBLEMS = [Problem(id=f"q{i}", question=f"What is {i} + 2?", answer="aeiou") for i in range(4)]


def run(out: Path, rows_per_process: int, *, checked: bool) -> tuple[list[list[object]], str]:
    """Train one step; ``checked``: build the config with ``reset_grpo_config`` (else by hand,
    so that only the hook can refuse it). Returns (problem ids and rows seen, error text)."""
    cfg = ResetConfig(variant="srpo", sample=SAMPLE, confidence_threshold=0.008)
    rollout = ResetRollout(AnyCharTask(), PROBLEMS, cfg)
    seen: list[list[object]] = []

    def hook(prompts: list[str], trainer: object) -> dict[str, object]:
        res = rollout(prompts, trainer)
        seen.extend([b.chains[0].info["problem_id"], len(b.chains)] for b in rollout.last_buffers)
        return res

    kw = dict(output_dir=str(out / f"run{rows_per_process}"), per_device_train_batch_size=rows_per_process,
              max_steps=1, learning_rate=1e-3, report_to="none", use_cpu=True, bf16=False,
              save_strategy="no", gradient_checkpointing=None, activation_checkpointing=False,
              shuffle_dataset=False)
    try:
        if checked:
            args = reset_grpo_config(rollout, **kw)
        else:
            args = GRPOConfig(num_generations=8, scale_rewards="none", loss_type="grpo", **kw)
        trainer = GRPOTrainer(model=copy.deepcopy(tiny_lm(0)), reward_funcs=[rollout.reward_func],
                              args=args, train_dataset=trl_dataset(PROBLEMS),
                              processing_class=tiny_tokenizer(), rollout_func=hook)
        trainer.train()
    except ValueError as e:
        return seen, str(e)
    return seen, ""


def main(out: str) -> None:
    torch.set_num_threads(1)
    good, err = run(Path(out), 16, checked=True)
    if err:
        raise RuntimeError(f"the good layout failed: {err}")
    _, bad_config = run(Path(out), 4, checked=True)
    _, bad_hook = run(Path(out), 4, checked=False)
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"good": good, "bad_config": bad_config, "bad_hook": bad_hook})
    if dist.get_rank() == 0:
        res = {k: {str(r): g[k] for r, g in enumerate(gathered)}  # type: ignore[index]
               for k in ("good", "bad_config", "bad_hook")}
        Path(out, "result.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
