"""``respo main``: the README's main job, an embedded default that runs offline on a CPU.

Two stages, each printing its wall time:

1. ``respo figures``: every notebook under ``notebooks/`` into ``paper_figures/``: the theory
   figures (computed from scratch) and the CPU-track figures and tables (read from the committed
   run results under ``experiments/results/cpu_track/full``).
2. ``respo cpu-track --suite coverage-quick --jobs 2 --threads 1``: GRPO, RRPO, SRPO
   (confidence self-localizer) and the oracle reset on the coverage testbed's setting with the
   rarest improvable states (p03), and GRPO alone on p50 (where its learning curve rises most),
   3 paired seeds x 24 steps, two runs at a time, starting from the
   shipped warm-up model ``sft-warmup-hard`` (trained first if it is missing). Runs, figures and
   the results table go to ``runs/cpu_track/coverage-quick/``; the table is printed. Interrupted?
   Run the same command again: finished runs are skipped, the others resume from checkpoints.

``--suite smoke`` replaces stage 2 by a seconds-long plumbing check on a random tiny model.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="respo main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("small", "full"), default="full",
                        help="theory figure size: small is a seconds-long smoke version")
    parser.add_argument("--out", default=None, help="figure folder (default: the repo's paper_figures/)")
    parser.add_argument("--suite", default="coverage-quick",
                        help="CPU-track suite of stage 2 (coverage-quick, coverage, quick, smoke, full)")
    parser.add_argument("--runs-dir", default="runs/cpu_track", help="where stage 2 writes its runs")
    parser.add_argument("--skip-figures", action="store_true", help="skip stage 1")
    parser.add_argument("--skip-training", action="store_true", help="skip stage 2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process of stage 2")
    parser.add_argument("--jobs", type=int, default=2, help="stage 2: runs trained at once")
    parser.add_argument("--tags", nargs="*", default=None,
                        help="stage 2: keep only these comparisons (main, split, pairing, clip)")
    args = parser.parse_args(argv)

    from respo.commands import cpu_track, figures

    t_all = time.perf_counter()
    if not args.skip_figures:
        t0 = time.perf_counter()
        fig_args = ["--size", args.size]
        if args.out:
            fig_args += ["--out", args.out]
        rc = figures.main(fig_args)
        print(f"[respo main] stage 1, figures: {time.perf_counter() - t0:.1f} s (exit {rc})", flush=True)
        if rc:
            return rc
    if not args.skip_training:
        t0 = time.perf_counter()
        argv = ["--suite", args.suite, "--runs-dir", args.runs_dir, "--threads", str(args.threads),
                "--jobs", str(args.jobs)]
        if args.tags:
            argv += ["--tags", *args.tags]
        rc = cpu_track.main(argv)
        print(f"[respo main] stage 2, cpu-track suite {args.suite!r}: {time.perf_counter() - t0:.1f} s "
              f"(exit {rc})", flush=True)
        if rc:
            return rc
    print(f"[respo main] done in {time.perf_counter() - t_all:.1f} s")
    return 0
