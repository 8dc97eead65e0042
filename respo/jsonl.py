"""JSON and JSONL files of runs: atomic writes, appends that leave whole lines, torn-line-tolerant reads.

Torch-free, shared by the trainer (``metrics.jsonl``, ``rollouts.jsonl``, checkpoints' JSON), the
suite runner and the analysis (``respo.analysis.runs`` reads runs through ``read_jsonl``).
``metrics.jsonl`` holds one JSON object per training step, each line written with a single
``write`` on a file opened in append mode and flushed (and fsynced) at once, so a killed run
leaves whole lines only. Keys under ``time/`` are wall-clock measurements; everything else is a
function of the seed (``WALL_CLOCK_PREFIXES``) and is compared when testing resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

WALL_CLOCK_PREFIXES: tuple[str, ...] = ("time/",)
"""Metric keys that measure wall-clock time (differ between otherwise identical runs)."""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = None,
                      default: Any = None) -> None:
    """``json.dumps(obj)`` (plus a newline) to ``path`` through a unique temp file beside it and
    ``os.replace``: a reader sees the old file or the new one, never half of one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=indent, default=default) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line (NaN written as null) atomically per line, flushed and fsynced."""
    line = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=False) + "\n"
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file of JSON objects.

    Only a torn last line (a run killed mid-write) is dropped; any other line that is not a JSON
    object raises ValueError naming the file and the line (a resume must not silently lose rows).
    Blank lines are skipped.
    """
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().split(b"\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    rows = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError too
            if i == last:
                break  # torn last line
            raise ValueError(f"{p}:{i + 1}: corrupt line ({type(e).__name__}: {str(e)[:120]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{p}:{i + 1}: a row must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def truncate_after_step(path: str | Path, step: int) -> None:
    """Keep only rows with ``row["step"] <= step`` (used when resuming from checkpoint ``step``)."""
    p = Path(path)
    if not p.exists():
        return
    rows = [r for r in read_jsonl(p) if int(r.get("step", -1)) <= step]
    tmp = p.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, p)


def without_wall_clock(row: dict[str, Any]) -> dict[str, Any]:
    """The row without wall-clock keys (for comparing runs)."""
    return {k: v for k, v in row.items() if not k.startswith(WALL_CLOCK_PREFIXES)}
