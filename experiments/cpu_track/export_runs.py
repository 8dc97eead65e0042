"""Copy finished CPU-track runs into the committed results folder, without their checkpoints.

    python experiments/cpu_track/export_runs.py runs/cpu_track/coverage \
        experiments/results/cpu_track/coverage [--note "..."] [--no-rollouts]

A run is finished when its ``metrics.jsonl`` holds one line per step of its ``config.json``;
unfinished runs are listed and left out. ``config.json``, ``metrics.jsonl`` and ``rollouts.jsonl``
are copied (checkpoints stay behind: they are megabytes each and a finished run never resumes;
``--no-rollouts`` leaves ``rollouts.jsonl`` behind too, about half a run's bytes, for a suite
kept only for its tables).
The destination's ``suite.json`` gains the entries of the copied runs (entries already there are
kept, an entry of the same name is replaced), and ``--note`` replaces its note.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "metrics.jsonl", "rollouts.jsonl")


def finished(run: Path) -> bool:
    try:
        steps = int(json.loads((run / "config.json").read_text())["steps"])
        lines = [x for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, KeyError, ValueError):
        return False
    return len(lines) == steps


def export(src: Path, dst: Path, note: str | None = None, *,
           files: tuple[str, ...] = FILES) -> tuple[list[str], list[str]]:
    """Copy the finished runs of ``src`` (their ``files``) to ``dst``; returns (copied, left out)
    run names."""
    suite_src = src / "suite.json"
    if not suite_src.is_file():
        raise FileNotFoundError(f"{suite_src} not found: is {src} a cpu-track suite folder?")
    new = json.loads(suite_src.read_text())
    dst.mkdir(parents=True, exist_ok=True)
    suite_dst = dst / "suite.json"
    old = json.loads(suite_dst.read_text()) if suite_dst.is_file() else {**new, "runs": []}
    if old.get("suite") != new.get("suite"):
        raise ValueError(f"suite mismatch: {suite_src} is {new.get('suite')!r}, "
                         f"{suite_dst} is {old.get('suite')!r}")
    entries = {e["name"]: e for e in old["runs"]}
    copied, skipped = [], []
    for e in new["runs"]:
        run = src / e["name"]
        if not finished(run):
            skipped.append(e["name"])
            continue
        (dst / e["name"]).mkdir(exist_ok=True)
        for f in files:
            if (run / f).is_file():
                shutil.copy2(run / f, dst / e["name"] / f)
        entries[e["name"]] = e
        copied.append(e["name"])
    if (src / "warmup.json").is_file() and not (dst / "warmup.json").is_file():
        shutil.copy2(src / "warmup.json", dst / "warmup.json")
    old["runs"] = list(entries.values())
    if note is not None:
        old["note"] = note
    suite_dst.write_text(json.dumps(old, indent=1) + "\n")
    return copied, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--note", default=None)
    ap.add_argument("--no-rollouts", action="store_true", help="leave rollouts.jsonl behind")
    a = ap.parse_args(argv)
    files = tuple(f for f in FILES if not (a.no_rollouts and f == "rollouts.jsonl"))
    copied, skipped = export(a.src, a.dst, a.note, files=files)
    print(f"copied {len(copied)} finished runs to {a.dst}; {len(skipped)} unfinished left out"
          + (f": {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
