"""``respo train``: train a variant from a named preset with command-line overrides.

    respo train --preset tiny-smoke                      # 2 steps on a tiny random model
    respo train --preset cpu-synthetic --variant grpo    # any TrainConfig field can be overridden
    respo train --preset cpu-synthetic --resume          # continue runs/<name>/ from its checkpoint
    torchrun --nproc_per_node 2 -m respo.cli train --preset tiny-smoke   # data parallel (CPU: gloo)

Writes ``<runs-dir>/<name>/``: ``config.json``, ``metrics.jsonl`` (one line per step), and
``checkpoints/``. This module is the only place that parses argv, shows a progress bar and
talks to TensorBoard / wandb; the loop itself is ``respo.llm.trainer.train``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import tyro

from respo.llm.config import TrainConfig, decode_escapes


def load_presets() -> ModuleType:
    """The preset table, ``respo.presets`` (``PRESETS``, ``get_preset``, the CPU-track suites).

    A function, not a module-level import, so that tests can swap the table.
    """
    import respo.presets

    return respo.presets


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train GRPO / RRPO / SRPO (Self-Reset Policy Optimization). Start from --preset NAME."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    resume: bool = False
    """Continue ``<runs-dir>/<name>/`` from its latest checkpoint (same config required)."""
    runs_dir: Path = Path("runs")
    """Folder that holds one subfolder per run."""
    tensorboard: bool = False
    """Also log scalars to TensorBoard (needs the tensorboard package)."""
    wandb_project: str | None = None
    """Also log to this Weights & Biases project (needs wandb)."""
    progress: bool = True
    """Show a progress bar."""
    threads: int = 0
    """torch CPU threads per process (0 = torch's default). On a busy CPU, 1 avoids OpenMP
    oversubscription (measured 20x faster for tiny models; experiments/LOG.md)."""


def _split_preset(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, preset, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--preset":
            if i + 1 >= len(argv):
                raise SystemExit("respo train: --preset needs a name")
            preset, i = argv[i + 1], i + 2
            continue
        if a.startswith("--preset="):
            preset = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return preset, rest


def parse(argv: list[str]) -> TrainArgs:
    """Parse ``[--preset NAME] [overrides]`` into ``TrainArgs``."""
    presets = load_presets()
    preset, rest = _split_preset(argv)
    base = presets.get_preset(preset) if preset is not None else TrainConfig()
    listing = "\n".join(f"  {k}: {d}" for k, (d, _) in presets.PRESETS.items())
    desc = (f"{TrainArgs.__doc__}\n\nPresets (--preset NAME):\n{listing}\n\n"
            f"Showing defaults of preset {preset!r}." if preset else
            f"{TrainArgs.__doc__}\n\nPresets (--preset NAME):\n{listing}")
    args = tyro.cli(TrainArgs, default=TrainArgs(config=base), args=rest, prog="respo train",
                    description=desc)
    s = args.config.sampling  # a shell passes --sampling.delimiter '\n' as a backslash and an n
    sampling = dataclasses.replace(s, delimiter=decode_escapes(s.delimiter))
    return dataclasses.replace(args, config=dataclasses.replace(args.config, sampling=sampling))


def main(argv: list[str]) -> int:
    """Entry point of ``respo train``; returns the exit status."""
    try:
        args = parse(argv)
    except ValueError as e:  # unknown preset / variant / loss names list the valid ones
        print(f"respo train: {e}", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import NonFiniteLossError, make_accelerator, train

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # "Writing model shards" bars
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    cfg = args.config
    run_dir = args.runs_dir / cfg.name
    acc = make_accelerator()
    parts = build_parts(cfg, device=acc.device)
    sinks: list[Any] = []
    if acc.is_main_process and args.tensorboard:
        from respo.llm.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    wandb_run = None
    if acc.is_main_process and args.wandb_project:
        import wandb

        wandb_run = wandb.init(project=args.wandb_project, name=cfg.name,
                               config=dataclasses.asdict(cfg), dir=str(run_dir))
    bar = None
    if acc.is_main_process and args.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc=f"{cfg.name} [{cfg.variant}]", unit="step")
    try:
        for row in train(cfg, parts, run_dir=run_dir, resume=args.resume, accelerator=acc):
            if bar is not None:
                if bar.n == 0 and row["step"] > 0:
                    bar.update(row["step"])
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward/trained_mean']:.3f}",
                                loss=f"{row['loss/loss']:.4f}", s=f"{row['time/step']:.1f}")
            for s in sinks:
                s.log(row, row["step"])
            if wandb_run is not None:
                wandb_run.log({k: v for k, v in row.items() if isinstance(v, (int, float))},
                              step=row["step"])
    except NonFiniteLossError as e:
        print(f"\nrespo train: stopped: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
        for s in sinks:
            s.close()
        if wandb_run is not None:
            wandb_run.finish()
    if acc.is_main_process:
        print(f"respo train: done, outputs in {run_dir}")
    return 0
