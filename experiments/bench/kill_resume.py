"""SIGKILL ``respo train`` at random moments, resume it, and compare with an uninterrupted run.

    python experiments/bench/kill_resume.py --trials 6 --out /tmp/kill-resume

Per trial: start ``respo train --preset tiny-smoke`` (``--steps``, a checkpoint every step) in a
fresh runs folder, SIGKILL it after a uniformly random delay, then run the same command with
``--resume`` to the end. A trial is an exact resume when ``metrics.jsonl`` equals the
reference run's line by line (wall-clock keys dropped), no temporary checkpoint folder is left,
and ``LATEST`` names a complete checkpoint. Prints one line per trial and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from respo.jsonl import read_jsonl, without_wall_clock
from respo.llm.checkpoint import latest_checkpoint


def command(runs: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "respo.cli", "train", "--preset", "tiny-smoke", "--steps", str(steps),
            "--checkpoint-every", "1", "--no-progress", "--threads", "1", "--runs-dir", str(runs), *extra]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kill-resume"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    subprocess.run(command(args.out / "ref", args.steps), check=True, env=env, capture_output=True)
    full_s = time.monotonic() - t0
    ref = [without_wall_clock(r) for r in read_jsonl(args.out / "ref" / "tiny-smoke" / "metrics.jsonl")]
    exact = 0
    for k in range(args.trials):
        runs = args.out / f"trial{k}"
        delay = rng.uniform(0.3, 1.0) * full_s
        p = subprocess.Popen(command(runs, args.steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        run = runs / "tiny-smoke"
        before = len(read_jsonl(run / "metrics.jsonl")) if (run / "metrics.jsonl").exists() else 0
        tmp_after_kill = len(list((run / "checkpoints").glob(".tmp-step-*"))) if run.exists() else 0
        r = subprocess.run(command(runs, args.steps, "--resume"), env=env, capture_output=True, text=True)
        got = [without_wall_clock(x) for x in read_jsonl(run / "metrics.jsonl")] if r.returncode == 0 else []
        left = list((run / "checkpoints").glob(".tmp-step-*"))
        ok = r.returncode == 0 and got == ref and not left and latest_checkpoint(run) is not None
        exact += ok
        print(json.dumps({"trial": k, "kill_after_s": round(delay, 2), "lines_at_kill": before,
                          "tmp_folders_at_kill": tmp_after_kill, "tmp_folders_after_resume": len(left),
                          "resume_rc": r.returncode, "exact": ok}), flush=True)
    print(f"kills tried: {args.trials}, exact resumes: {exact} (reference run {full_s:.1f} s)")
    return 0 if exact == args.trials else 1


if __name__ == "__main__":
    raise SystemExit(main())
