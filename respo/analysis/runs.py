"""Read the run and suite folders that ``respo.llm.trainer`` writes.

The format is described in ``experiments/notes/run-format.md``. This module only reads: it parses
``config.json``, ``metrics.jsonl``, ``rollouts.jsonl``, ``grads/step_*.json`` and ``suite.json``,
checks the fields the analysis relies on, and raises ``RunFormatError`` naming the file (and the
line, for JSONL) when something does not fit. It needs numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np

from respo.jsonl import read_jsonl as read_lines

__all__ = [
    "RunFormatError", "Run", "Suite", "SuiteEntry", "load_run", "load_suite", "load_grads",
    "read_json", "read_jsonl", "resolve_dir", "has_suite", "to_float", "pick_grads",
]

_GRAD_RE = re.compile(r"^step_(\d+)\.json$")


class RunFormatError(ValueError):
    """A run or suite file is missing or does not match the documented format.

    The message always starts with the offending file's path.
    """


# --------------------------------------------------------------------------------------------
# Low-level readers
# --------------------------------------------------------------------------------------------


def resolve_dir(path: str | Path) -> Path:
    """An absolute path; a relative one is taken relative to the repository root (the folder
    that holds the ``respo`` package), like the notebooks' ``OUT_DIR``."""
    p = Path(path)
    if p.is_absolute():
        return p
    return Path(__file__).resolve().parent.parent.parent / p


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (so tables written on one
    machine read the same on another), else as given."""
    root = Path(__file__).resolve().parent.parent.parent
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(root))
    except ValueError:
        return str(p)


def has_suite(path: str | Path) -> bool:
    """Whether ``path`` (resolved with ``resolve_dir``) holds a ``suite.json``."""
    return (resolve_dir(path) / "suite.json").is_file()


def read_json(path: Path) -> Any:
    """Parse one JSON file; a missing or malformed file raises ``RunFormatError`` naming it."""
    if not path.is_file():
        raise RunFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL file into a list of objects with the trainer's own reader
    (``respo.jsonl.read_jsonl``: blank lines ignored, a torn last line dropped), raising
    ``RunFormatError`` with the file and line for anything else, and for a missing file."""
    if not path.is_file():
        raise RunFormatError(f"{path}: file not found")
    try:
        return read_lines(path)
    except ValueError as e:
        raise RunFormatError(str(e)) from None


def to_float(v: Any) -> float:
    """A logged number as a float: ``None`` (the trainer writes NaN as null) becomes NaN and the
    strings ``"inf"``/``"-inf"``/``"nan"`` their floats. Anything else raises ``TypeError``."""
    if v is None:
        return math.nan
    if isinstance(v, bool):
        raise TypeError(f"expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v in ("inf", "-inf", "nan", "Infinity", "-Infinity", "NaN"):
        return float(v.replace("Infinity", "inf").replace("NaN", "nan"))
    raise TypeError(f"expected a number, got {v!r}")


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None


# --------------------------------------------------------------------------------------------
# Validation of the documented records
# --------------------------------------------------------------------------------------------


def _check_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every record has an integer ``step``, strictly increasing."""
    last = -1
    for i, row in enumerate(rows, 1):
        step = row.get("step")
        if not _is_int(step):
            raise RunFormatError(f"{path}: record {i}: 'step' must be an integer, got {step!r}")
        if step <= last:
            raise RunFormatError(f"{path}: record {i}: step {step} does not follow step {last}")
        last = step


def _check_reset(path: Path, where: str, r: Any) -> None:
    if not isinstance(r, dict):
        raise RunFormatError(f"{path}: {where}: a reset must be an object")
    n = r.get("n_thoughts")
    if not _is_int(n) or n < 1:
        raise RunFormatError(f"{path}: {where}: 'n_thoughts' must be an integer >= 1, got {n!r}")
    k = r.get("step")
    if k is not None and (not _is_int(k) or not 1 <= k <= n):
        raise RunFormatError(f"{path}: {where}: reset 'step' must be null or an integer in 1..{n}, "
                             f"got {k!r}")
    t = r.get("truth")
    if t is not None and (not _is_int(t) or t < 1):
        raise RunFormatError(f"{path}: {where}: 'truth' must be null or an integer >= 1, got {t!r}")
    suffix = r.get("suffix")
    if not isinstance(suffix, list) or not all(_is_num(x) and x is not None for x in suffix):
        raise RunFormatError(f"{path}: {where}: 'suffix' must be a list of numbers, got {suffix!r}")
    if "fell_back" in r and not isinstance(r["fell_back"], bool):
        raise RunFormatError(f"{path}: {where}: 'fell_back' must be true or false")


def _check_rollouts(path: Path, rows: list[dict[str, Any]]) -> None:
    _check_metrics(path, rows)  # the same step order
    for i, row in enumerate(rows, 1):
        step = row["step"]
        prompts = row.get("prompts")
        if not isinstance(prompts, list):
            raise RunFormatError(f"{path}: record {i} (step {step}): 'prompts' must be a list")
        for j, p in enumerate(prompts):
            where = f"record {i} (step {step}) prompt {j}"
            if not isinstance(p, dict):
                raise RunFormatError(f"{path}: {where}: must be an object")
            fresh = p.get("fresh")
            if not isinstance(fresh, list) or not all(_is_num(x) and x is not None for x in fresh):
                raise RunFormatError(f"{path}: {where}: 'fresh' must be a list of numbers")
            resets = p.get("resets")
            if not isinstance(resets, list):
                raise RunFormatError(f"{path}: {where}: 'resets' must be a list")
            for m, r in enumerate(resets):
                _check_reset(path, f"{where} reset {m}", r)


def load_grads(path: str | Path) -> dict[str, Any]:
    """Read and check one ``grads/step_<NNNNNN>.json`` (per-thought gradient magnitudes)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise RunFormatError(f"{path}: expected an object with a 'rows' list")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise RunFormatError(f"{path}: row {i}: must be an object")
        if row.get("role") not in ("fresh", "suffix"):
            raise RunFormatError(f"{path}: row {i}: 'role' must be 'fresh' or 'suffix', "
                                 f"got {row.get('role')!r}")
        tg = row.get("thought_grad")
        if not isinstance(tg, list) or not all(_is_num(x) for x in tg):
            raise RunFormatError(f"{path}: row {i}: 'thought_grad' must be a list of numbers or nulls")
        for key in ("reward", "advantage"):
            if key in row and not _is_num(row[key]):
                raise RunFormatError(f"{path}: row {i}: '{key}' must be a number")
        pt = row.get("prefix_thoughts", 0)
        if not _is_int(pt) or pt < 0:
            raise RunFormatError(f"{path}: row {i}: 'prefix_thoughts' must be an integer >= 0")
    return data


# --------------------------------------------------------------------------------------------
# Runs and suites
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training run folder, parsed. ``tags`` are the suite tables it belongs to."""

    name: str
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    rollouts: list[dict[str, Any]] | None
    tags: tuple[str, ...] = ()

    @property
    def variant(self) -> str:
        return str(self.config["variant"])

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def pairing(self) -> str:
        return str(self.config.get("pairing", "paper"))

    @property
    def steps(self) -> int | None:
        s = self.config.get("steps")
        return int(s) if _is_int(s) else None

    @property
    def objective(self) -> dict[str, Any]:
        """``derived.objective`` (loss, agg, advantage actually used); empty when absent."""
        obj = (self.config.get("derived") or {}).get("objective")
        return dict(obj) if isinstance(obj, dict) else {}

    @property
    def last_step(self) -> int:
        """The last logged training step (-1 when none)."""
        return int(self.metrics[-1]["step"]) if self.metrics else -1

    @property
    def complete(self) -> bool:
        """Whether the run logged its last configured step."""
        return self.steps is not None and self.last_step == self.steps - 1

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one metric over the lines that carry a finite value."""
        xs: list[int] = []
        ys: list[float] = []
        for row in self.metrics:
            if key not in row:
                continue
            try:
                v = to_float(row[key])
            except TypeError as exc:
                raise RunFormatError(f"{self.path / 'metrics.jsonl'}: step {row['step']}: "
                                     f"'{key}': {exc}") from None
            if math.isfinite(v):
                xs.append(int(row["step"]))
                ys.append(v)
        return np.asarray(xs, dtype=int), np.asarray(ys, dtype=float)

    def first(self, key: str) -> float:
        """The value of ``key`` on the first metrics line that has it (NaN when none)."""
        s, v = self.series(key)
        return float(v[0]) if len(v) else math.nan

    def total(self, key: str) -> float:
        """Sum of ``key`` over all lines (NaN when no line has it)."""
        _, v = self.series(key)
        return float(v.sum()) if len(v) else math.nan

    def resets(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every localized parent of the run as ``(training step, reset record)``."""
        for row in self.rollouts or ():
            for p in row["prompts"]:
                for r in p["resets"]:
                    yield int(row["step"]), r

    def grad_files(self) -> dict[int, Path]:
        """``{step: path}`` of the ``grads/step_*.json`` files, in step order."""
        folder = self.path / "grads"
        if not folder.is_dir():
            return {}
        found = {}
        for p in folder.iterdir():
            m = _GRAD_RE.match(p.name)
            if m and p.is_file():
                found[int(m.group(1))] = p
        return dict(sorted(found.items()))

    def label(self) -> str:
        return f"{self.name} ({self.variant}, seed {self.seed})"


def load_run(path: str | Path, *, rollouts: bool = True, name: str | None = None,
             tags: Sequence[str] = ()) -> Run:
    """Parse one run folder. ``rollouts.jsonl`` is optional (``Run.rollouts`` is None without
    it, or when ``rollouts=False``); ``config.json`` and ``metrics.jsonl`` are required."""
    path = Path(path)
    if not path.is_dir():
        raise RunFormatError(f"{path}: run folder not found")
    cfg_path = path / "config.json"
    config = read_json(cfg_path)
    if not isinstance(config, dict):
        raise RunFormatError(f"{cfg_path}: expected a JSON object")
    if not isinstance(config.get("variant"), str):
        raise RunFormatError(f"{cfg_path}: missing the string field 'variant'")
    met_path = path / "metrics.jsonl"
    metrics = read_jsonl(met_path)
    _check_metrics(met_path, metrics)
    rolls = None
    roll_path = path / "rollouts.jsonl"
    if rollouts and roll_path.exists():
        rolls = read_jsonl(roll_path)
        _check_rollouts(roll_path, rolls)
    return Run(name=name or path.name, path=path, config=config, metrics=metrics,
               rollouts=rolls, tags=tuple(tags))


@dataclass(frozen=True)
class SuiteEntry:
    """One line of ``suite.json``'s ``runs`` list (tags merged when a run is listed twice)."""

    name: str
    variant: str
    seed: Any
    tags: tuple[str, ...]


@dataclass
class Suite:
    """A suite folder: ``suite.json`` and the runs it lists."""

    name: str
    path: Path
    runs: list[Run]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Runs listed in ``suite.json`` but not loaded (``missing="skip"``): (name, reason)."""
    description: str = ""
    """``suite.json``'s optional ``description``."""
    warmup: dict[str, Any] | None = None
    """``warmup.json`` (the SFT warm-up checkpoint used), when the suite has one."""

    def select(self, tag: str | None = None, variant: str | None = None) -> list[Run]:
        """Runs with this tag and/or variant, sorted by (variant, seed)."""
        out = [r for r in self.runs
               if (tag is None or tag in r.tags) and (variant is None or r.variant == variant)]
        return sorted(out, key=lambda r: (r.variant, str(r.seed)))

    def groups(self, tag: str) -> dict[str, list[Run]]:
        """``{variant: runs}`` of one tag, each list sorted by seed."""
        out: dict[str, list[Run]] = {}
        for r in self.select(tag):
            out.setdefault(r.variant, []).append(r)
        return out

    @property
    def tags(self) -> list[str]:
        return sorted({t for r in self.runs for t in r.tags})

    def incomplete(self) -> list[Run]:
        """Loaded runs that have not logged their last configured step."""
        return [r for r in self.runs if not r.complete]


def _suite_entries(path: Path, data: Any) -> list[SuiteEntry]:
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunFormatError(f"{path}: expected an object with a 'runs' list")
    merged: dict[str, SuiteEntry] = {}
    for i, e in enumerate(data["runs"]):
        if not isinstance(e, dict):
            raise RunFormatError(f"{path}: runs[{i}]: must be an object")
        for key in ("name", "variant", "tag"):
            if not isinstance(e.get(key), str) or not e.get(key):
                raise RunFormatError(f"{path}: runs[{i}]: missing the string field '{key}'")
        if "seed" not in e:
            raise RunFormatError(f"{path}: runs[{i}]: missing the field 'seed'")
        name = e["name"]
        if Path(name).name != name or name in (".", ".."):
            raise RunFormatError(f"{path}: runs[{i}]: 'name' must be a folder name, got {name!r}")
        if name in merged:
            old = merged[name]
            if (old.variant, old.seed) != (e["variant"], e["seed"]):
                raise RunFormatError(f"{path}: run {name!r} is listed twice with different "
                                     "variant or seed")
            tags = old.tags if e["tag"] in old.tags else (*old.tags, e["tag"])
            merged[name] = SuiteEntry(name, old.variant, old.seed, tags)
        else:
            merged[name] = SuiteEntry(name, e["variant"], e["seed"], (e["tag"],))
    seen: dict[tuple[str, str, str], str] = {}
    for e in merged.values():
        for t in e.tags:
            ident = (t, e.variant, json.dumps(e.seed))
            if ident in seen:
                raise RunFormatError(f"{path}: runs {seen[ident]!r} and {e.name!r} are both "
                                     f"tag {t!r}, variant {e.variant!r}, seed {e.seed!r}")
            seen[ident] = e.name
    return list(merged.values())


def load_suite(path: str | Path, *, rollouts: bool = True,
               missing: Literal["error", "skip"] = "error") -> Suite:
    """Parse a suite folder: ``suite.json`` and every run it lists.

    ``missing="skip"`` tolerates listed runs whose folder or ``metrics.jsonl`` does not exist
    yet, or whose ``metrics.jsonl`` is still empty (recorded in ``Suite.skipped``); malformed
    files always raise. A run's ``config.json`` must agree with ``suite.json`` on the variant.
    """
    path = resolve_dir(path)
    spath = path / "suite.json"
    data = read_json(spath)
    entries = _suite_entries(spath, data)
    runs: list[Run] = []
    skipped: list[tuple[str, str]] = []
    for e in entries:
        folder = path / e.name
        if missing == "skip":
            if not folder.is_dir():
                skipped.append((e.name, "run folder not found"))
                continue
            if not (folder / "metrics.jsonl").is_file():
                skipped.append((e.name, "no metrics.jsonl yet"))
                continue
        elif not folder.is_dir():
            raise RunFormatError(f"{spath}: lists run {e.name!r} but {folder} does not exist")
        run = load_run(folder, rollouts=rollouts, name=e.name, tags=e.tags)
        if run.variant != e.variant:
            raise RunFormatError(f"{folder / 'config.json'}: variant {run.variant!r} but "
                                 f"{spath} says {e.variant!r}")
        if missing == "skip" and not run.metrics:
            skipped.append((e.name, "metrics.jsonl is empty"))
            continue
        runs.append(run)
    name = data.get("suite") if isinstance(data.get("suite"), str) else path.name
    desc = data.get("description") if isinstance(data.get("description"), str) else ""
    warmup = None
    if (path / "warmup.json").exists():
        warmup = read_json(path / "warmup.json")
        if not isinstance(warmup, dict):
            raise RunFormatError(f"{path / 'warmup.json'}: expected a JSON object")
    return Suite(name=name, path=path, runs=runs, skipped=skipped, description=desc, warmup=warmup)


def _informative(data: dict[str, Any]) -> int:
    """How much a heatmap sample shows: 3 = both groups have a nonzero advantage (mixed rewards in
    each) and the suffix group shares a copied prefix of at least one thought, 2 = both moving
    (but the reset is at the first thought: the suffix group is another fresh group), 1 = both a
    suffix and a fresh group, 0 = otherwise."""
    roles = {r["role"] for r in data["rows"]}
    if roles != {"fresh", "suffix"}:
        return 0
    moving = {r["role"] for r in data["rows"] if abs(float(r.get("advantage", 0.0))) > 0}
    if moving != {"fresh", "suffix"}:
        return 1
    prefixed = any(r["role"] == "suffix" and int(r.get("prefix_thoughts") or 0) > 0
                   for r in data["rows"])
    return 3 if prefixed else 2


def pick_grads(groups: dict[str, list[Run]],
               prefer: Sequence[str] = ("srpo", "rrpo", "oracle")) -> tuple[Run, dict[str, Any]] | None:
    """The gradient file to draw: the first run (by ``prefer`` order, then seed) with a
    ``grads/step_*.json``, and in it the earliest step whose suffix and fresh groups both carry
    a nonzero advantage (all-equal rewards give zero gradients: nothing to see) and whose suffix
    group continues a nonempty prefix, then the same without the prefix, else the earliest with
    both groups, else its earliest step. ``None`` when no preferred run has one."""
    for m in prefer:
        for run in groups.get(m, []):
            files = run.grad_files()
            if not files:
                continue
            best: tuple[int, dict[str, Any]] | None = None
            for path in files.values():
                data = load_grads(path)
                score = _informative(data)
                if best is None or score > best[0]:
                    best = (score, data)
                if score == 3:
                    break
            assert best is not None
            return run, best[1]
    return None
