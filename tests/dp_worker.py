"""Worker for tests/test_llm_dp.py: train a few steps on the fake sampler, save parameters.

Run as ``python tests/dp_worker.py OUT STEPS VARIANT...`` (one process) or under
``torchrun --nproc_per_node 2`` (data parallel over gloo through accelerate). The global batch is
the same in both cases; process 0 writes ``OUT/<variant>.pt`` (parameters and metric rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from llm_fixtures import tiny_lm  # noqa: E402
from llm_train_fakes import fake_parts  # noqa: E402

from respo.llm.config import OptimConfig, TrainConfig  # noqa: E402
from respo.llm.trainer import make_accelerator, train  # noqa: E402


def main(out: str, steps: int, variants: list[str]) -> None:
    acc = None
    for variant in variants:
        cfg = TrainConfig(variant=variant, steps=steps, prompts_per_step=4, minibatch_prompts=2,
                          micro_batch_chains=3, optim=OptimConfig(lr=1e-3))
        acc = acc or make_accelerator()
        parts = fake_parts(tiny_lm(0), cfg.variant_row.localizer)
        rows = list(train(cfg, parts, accelerator=acc))
        if acc.is_main_process:
            Path(out).mkdir(parents=True, exist_ok=True)
            torch.save({"params": {k: v.detach().clone() for k, v in parts.model.state_dict().items()},
                        "rows": rows, "world": acc.num_processes}, Path(out) / f"{variant}.pt")
        acc.wait_for_everyone()
    if acc is not None:
        acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
