"""``respo cpu-track``: run a suite of CPU-track training runs, then its figures and tables.

    respo cpu-track --suite quick                  # the main job's comparison (3 seeds, short)
    respo cpu-track --suite full                   # every table of the CPU reproduction
    respo cpu-track --suite full --tags main --seeds 0 1 2 3 4 --steps 40
    respo cpu-track --suite full --export experiments/results/cpu_track/full   # commit-ready copy

A suite (``respo/presets/__init__.py``: ``SUITES``, ``suite_runs``) is a list of ``TrainConfig`` runs
that share the supervised warm-up model (``sft-warmup``, trained once and cached) and the held-out
set. Runs go to ``<runs-dir>/<suite>/<run>/`` (``experiments/notes/run-format.md``). The runner is
resumable at two levels: a finished run (its last metrics line and final checkpoint on disk) is
skipped, an interrupted one continues from its latest checkpoint, so killing and restarting the
command loses at most the steps since the last checkpoint. ``suite.json`` lists the runs.

Then the ``cpu_track`` notebook turns the suite into figures and tables (``--figures-out``; by
default ``<runs-dir>/<suite>/figures``) and the main results table is printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import tyro

from respo.analysis.runs import display_path
from respo.jsonl import read_jsonl, write_json_atomic


@dataclasses.dataclass(frozen=True)
class Args:
    """Run a CPU-track suite (GRPO / RRPO / SRPO / oracle reset) and make its figures."""

    suite: str = "quick"
    """Suite name (respo.presets SUITES): quick or full."""
    runs_dir: Path = Path("runs/cpu_track")
    """Runs go to <runs-dir>/<suite>/<run>/."""
    seeds: Annotated[tuple[int, ...], tyro.conf.arg(metavar="SEED ...")] = ()
    """Override the suite's seeds (applies to every comparison)."""
    steps: int = 0
    """Override the suite's training steps per run (0 = the suite's)."""
    tags: tuple[str, ...] = ()
    """Keep only these comparisons: main, split, pairing, clip (default: the suite's)."""
    threads: int = 2
    """torch CPU threads (per process with ``--jobs`` > 1)."""
    jobs: int = 1
    """Runs trained at once, each in its own process (2 processes of 1 thread use this 2-core
    machine better than one process of 2 threads). With jobs > 1 each finished run prints one line."""
    figures: bool = True
    """Run the cpu_track notebook on the suite afterwards."""
    figures_out: Path | None = None
    """Where the figures and tables go (default <runs-dir>/<suite>/figures)."""
    export: Path | None = None
    """Also copy the suite without checkpoints (config, metrics, rollouts, grads) to this folder."""
    progress: bool = True
    """Show progress bars."""


def run_finished(run_dir: Path, steps: int) -> bool:
    """Whether ``run_dir`` holds a run that completed ``steps`` steps (metrics and checkpoint)."""
    from respo.llm.checkpoint import CheckpointError, latest_checkpoint

    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows or int(rows[-1].get("step", -1)) != steps - 1:
        return False
    try:
        ckpt = latest_checkpoint(run_dir)
    except (FileNotFoundError, CheckpointError):  # a pointer to a missing or broken checkpoint
        return False
    return ckpt is not None


def merge_listed(path: Path, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``listed`` after the runs an earlier ``suite.json`` at ``path`` lists and ``listed`` does not.

    A run of some of a suite's comparisons (``--tags``, ``--seeds``) adds its runs to the folder's
    list instead of hiding the runs already there from the figures.
    """
    if not path.exists():
        return listed
    try:
        old = json.loads(path.read_text()).get("runs", [])
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable suite.json ({e}); move it away to start anew") from e
    names = {r["name"] for r in listed}
    return [r for r in old if r.get("name") not in names] + listed


def run_one(cfg: Any, run_dir: Path, *, progress: bool, position: str) -> dict[str, Any]:
    """Train (or finish, or skip) one run; returns its last metrics line."""
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train

    if run_finished(run_dir, cfg.steps):
        print(f"{position} {cfg.name}: finished earlier, skipped", flush=True)
        return read_jsonl(run_dir / "metrics.jsonl")[-1]
    resume = (run_dir / "config.json").exists()
    parts = build_parts(cfg)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc=f"{position} {cfg.name}", unit="step", leave=True)
    last: dict[str, Any] = {}
    try:
        for row in train(cfg, parts, run_dir=run_dir, resume=resume):
            last = row
            if bar is not None:
                if bar.n == 0 and row["step"] > 0:
                    bar.update(row["step"])
                bar.update(1)
                post = {"reward": f"{row['reward/fresh_generated_mean']:.2f}"}
                if "eval/greedy_pass@1" in row:
                    post["greedy"] = f"{row['eval/greedy_pass@1']:.3f}"
                bar.set_postfix(post)
    finally:
        if bar is not None:
            bar.close()
    return last


def _worker(cfg: Any, run_dir: str, threads: int, position: str) -> tuple[str, float]:
    """One run in a worker process (``run_parallel``): its own torch thread count, no bar."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run_one(cfg, Path(run_dir), progress=False, position=position)
    return cfg.name, time.perf_counter() - t0


def run_parallel(runs: list[Any], suite_dir: Path, *, jobs: int, threads: int) -> None:
    """Train ``runs`` in ``jobs`` worker processes (spawned, one per run, so each starts clean). A failed run
    stops the suite with its error once the runs in flight have finished; finished runs stay
    finished, so the command can be run again."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    # A fresh process per run (Python >= 3.11): memory does not pile up over a long suite.
    kw: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), **kw) as pool:
        futs = {pool.submit(_worker, r.cfg, str(suite_dir / r.name), threads, f"[{i}/{len(runs)}]"): r
                for i, r in enumerate(runs, start=1)}
        bar = tqdm(total=len(runs), desc=f"runs ({jobs} processes)", unit="run")
        try:
            for fut in as_completed(futs):
                r = futs[fut]
                name, wall = fut.result()
                bar.update(1)
                tqdm.write(f"[cpu-track] {name} ({r.tag}): {wall:.0f} s")
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        finally:
            bar.close()


def export_suite(src: Path, dst: Path) -> None:
    """Copy a suite folder without checkpoints (what ``experiments/results/`` commits)."""
    tmp = dst.with_name(dst.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoints", "figures", "tensorboard", "*.tmp"))
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def main(argv: list[str]) -> int:
    args = tyro.cli(Args, args=argv, prog="respo cpu-track", description=__doc__)
    from respo.commands.train import load_presets

    presets = load_presets()
    try:
        runs = presets.suite_runs(args.suite, seeds=args.seeds or None, steps=args.steps or None,
                                  tags=args.tags or None)
    except ValueError as e:
        print(f"respo cpu-track: {e}", file=sys.stderr)
        return 2
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.set_num_threads(args.threads)
    suite_dir = args.runs_dir / args.suite
    suite_dir.mkdir(parents=True, exist_ok=True)
    listed = [{"name": r.name, "variant": r.cfg.variant, "seed": r.cfg.seed, "tag": r.tag,
               **({"setting": r.setting, "arm": r.arm, "task": r.cfg.task} if r.setting else {})}
              for r in runs]
    descr = (presets.COVERAGE_SUITES[args.suite] if args.suite in presets.COVERAGE_SUITES
             else presets.SUITES[args.suite]).description
    write_json_atomic(suite_dir / "suite.json", {
        "suite": args.suite, "description": descr,
        "runs": merge_listed(suite_dir / "suite.json", listed)}, indent=1)

    # The shared warm-up model, trained once (cached) before the first run needs it.
    t0 = time.perf_counter()
    warm = _warmup(runs[0].cfg, progress=args.progress)
    write_json_atomic(suite_dir / "warmup.json", warm, indent=1)
    print(f"[cpu-track] warm-up model: {warm['path']} ({time.perf_counter() - t0:.0f} s)", flush=True)

    t_runs = time.perf_counter()
    if args.jobs <= 1:
        for i, r in enumerate(runs, start=1):
            t1 = time.perf_counter()
            run_one(r.cfg, suite_dir / r.name, progress=args.progress, position=f"[{i}/{len(runs)}]")
            print(f"[cpu-track] {r.name} ({r.tag}): {time.perf_counter() - t1:.0f} s", flush=True)
    else:
        run_parallel(runs, suite_dir, jobs=args.jobs, threads=args.threads)
    print(f"[cpu-track] {len(runs)} runs: {time.perf_counter() - t_runs:.0f} s", flush=True)

    if args.export is not None:
        export_suite(suite_dir, args.export)
        print(f"[cpu-track] exported to {args.export}")
    if args.figures:
        from respo.commands import figures

        out = args.figures_out or (suite_dir / "figures")
        coverage = args.suite in presets.COVERAGE_SUITES
        notebook, table_name = ("cpu_coverage", "cpu_coverage_tables.md") if coverage else ("cpu_track", "cpu_tables.md")
        rc = figures.main(["--only", notebook, "--runs", str(suite_dir), "--out", str(out)])
        if rc:
            return rc
        table = out / table_name
        if table.exists():
            print(table.read_text())
        print(f"[cpu-track] figures and tables in {out}")
    return 0


def _warmup(cfg: Any, *, progress: bool) -> dict[str, Any]:
    """Train or load the suite's warm-up model (``cfg.model.name`` must be ``sft-warmup[:K]``)."""
    from respo.llm import sft
    from respo.llm.train_parts import shipped_dir

    name = cfg.model.name
    if not sft.is_warmup_name(name):
        return {"path": name, "config": None, "metrics": None}
    scfg = sft.warmup_config(name)
    bar = None
    shipped = [shipped_dir(cfg.model.sft_shipped_dir)]
    if progress and not any(sft.is_complete(sft.checkpoint_path(scfg, d))
                            for d in [*shipped, Path(cfg.model.sft_cache_dir)]):
        from tqdm import tqdm

        bar = tqdm(total=scfg.steps, desc="sft warm-up", unit="step")

    def prog(row: dict[str, float]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")

    try:
        path = sft.warmup_checkpoint(scfg, Path(cfg.model.sft_cache_dir), progress=prog, shipped=shipped)
    finally:
        if bar is not None:
            bar.close()
    info = json.loads((path / sft.INFO_FILE).read_text())
    # relative to the repository when shipped there, so a suite's warmup.json reads the same in any clone
    return {"path": display_path(path), "key": scfg.key(), "config": scfg.to_dict(),
            "final_loss": info["history"][-1]["loss"] if info.get("history") else None,
            "metrics": info.get("metrics") or None}
