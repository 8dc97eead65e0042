"""Reproduce the paper's data splits from hub rows (or local copies in the hub's formats).

``docs/method.md`` section 6:

- **olympiads**: NuminaMath-CoT rows with source ``olympiads`` and a verifiable boxed answer
  (the last ``\\boxed{}`` of the solution parses with math-verify); shuffled with seed 42 (the
  permutation ``rng_for(42).permutation(n)``, which equals ``datasets.Dataset.shuffle(seed=42)``),
  then the first 400 train and the next 100 test (the OLY benchmark).
- **LiveCodeBench v6 medium**: the medium problems of ``release_v6`` (all six release files, as
  the authors' code loads it; ``lcb_scope="v6_only"`` reads only the problems v6 added); each
  problem's tests are shuffled (keyed by seed and problem id) and split 50/50 into reward tests
  (``tests``) and held-out tests (``heldout_tests``); with an odd count the held-out half gets
  the extra test. Problems with fewer than 2 tests are skipped (counted).
- **MATH level 5**: 500 sampled; every other benchmark at most 500 items (a seeded sample
  without replacement when larger, kept in the source order).

Deviation/uncertainty: the paper does not say whether the olympiad filter ran before or after
the shuffle, nor how odd test counts were split; we filter after the shuffle (so the split
does not depend on rows never used) and give the extra test to the held-out half.

Pure functions here; ``respo.commands.prepare`` does the file I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from respo.seeding import rng_for
from respo.tasks.base import Problem, input_lines
from respo.tasks.registry import (
    BENCHMARKS,
    LCB_SCOPES,
    LoadReport,
    convert_rows,
    hub_revision,
    load_rows,
    snapshot_dir,
)

PAPER_SEED = 42
CAP = 500


def olympiad_splits(problems: Sequence[Problem], *, seed: int = PAPER_SEED, n_train: int = 400,
                    n_test: int = 100, verifiable: Callable[[str], bool] | None = None,
                    report: LoadReport | None = None) -> tuple[list[Problem], list[Problem]]:
    """Shuffle with ``seed``, keep verifiable answers in that order, take train then test."""
    order = rng_for(seed).permutation(len(problems))
    picked: list[Problem] = []
    for i in order:
        p = problems[int(i)]
        if verifiable is not None and not verifiable(p.answer):
            if report is not None:
                report.skipped["unverifiable_answer"] += 1
                if len(report.examples) < 10:
                    report.examples.append(f"{p.id}: unverifiable answer {p.answer[:40]!r}")
            continue
        picked.append(p)
        if len(picked) == n_train + n_test:
            break
    if len(picked) < n_train + n_test:
        raise ValueError(f"only {len(picked)} verifiable olympiad problems, need {n_train + n_test}")
    return picked[:n_train], picked[n_train:]


def split_tests(problem: Problem, *, seed: int = PAPER_SEED) -> Problem:
    """Shuffle a code problem's tests (keyed by seed and id) and split them 50/50.

    ``meta["tests"]`` becomes the reward half (floor(n/2)) and ``meta["heldout_tests"]`` the rest.
    """
    tests = list(problem.meta["tests"])
    if len(tests) < 2:
        raise ValueError(f"problem {problem.id!r}: need at least 2 tests to split, got {len(tests)}")
    perm = rng_for(seed, "data", problem.id).permutation(len(tests))
    shuffled = [tests[int(i)] for i in perm]
    half = len(tests) // 2
    return replace(problem, meta={**problem.meta, "tests": shuffled[:half], "heldout_tests": shuffled[half:]})


def cap(problems: Sequence[Problem], n: int = CAP, *, seed: int = PAPER_SEED, name: str = "") -> list[Problem]:
    """At most ``n`` items: a seeded sample without replacement (keyed by ``name``), source order kept."""
    if len(problems) <= n:
        return list(problems)
    idx = sorted(int(i) for i in rng_for(seed, "data", name or "cap").choice(len(problems), size=n, replace=False))
    return [problems[i] for i in idx]


def problem_row(p: Problem) -> dict[str, Any]:
    """The JSONL row of a prepared problem: ``id``, ``question``, ``answer`` and the meta fields."""
    clash = {"id", "question", "answer"} & set(p.meta)
    if clash:
        raise ValueError(f"problem {p.id!r}: meta keys {sorted(clash)} clash with the row fields")
    return {"id": p.id, "question": p.question, "answer": p.answer, **dict(p.meta)}


def dumps_jsonl(problems: Iterable[Problem]) -> bytes:
    """Deterministic JSONL bytes (sorted keys, UTF-8, one row per line)."""
    return "".join(json.dumps(problem_row(p), sort_keys=True, ensure_ascii=False) + "\n" for p in problems).encode()


def read_problems(path: str | Path) -> list[Problem]:
    """Prepared problems back from a JSONL file written by ``dumps_jsonl``."""
    out = []
    for lineno, line in input_lines(path):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
            out.append(Problem(str(row.pop("id")), row.pop("question"), row.pop("answer"), row))
        except KeyError as e:
            raise ValueError(f"{path}:{lineno}: missing field {e.args[0]!r}") from None
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(*, local: str | Path | None, seed: int = PAPER_SEED, only: Sequence[str] | None = None,
            n_train: int = 400, n_test: int = 100, item_cap: int = CAP, strict: bool = False,
            verifiable: Callable[[str], bool] | None = None,
            lcb_scope: str = "release_v6") -> tuple[dict[str, list[Problem]], dict[str, LoadReport]]:
    """All prepared splits by output name, and a load report per source.

    Outputs: ``olympiads_train``, ``oly`` (test), ``lcb_v6_medium`` and the other nine
    benchmarks by their ``BENCHMARKS`` name. ``only`` restricts to some output names.
    ``lcb_scope`` (a ``LCB_SCOPES`` key) picks the LiveCodeBench source. Each report records the
    commit its rows came from (hub) or the registry's pin and the file read (local).
    """
    if lcb_scope not in LCB_SCOPES:
        raise KeyError(f"unknown lcb_scope {lcb_scope!r}; valid: {', '.join(LCB_SCOPES)}")
    want = set(only) if only else {"olympiads_train", "lcb_v6_medium", *BENCHMARKS}
    outputs: dict[str, list[Problem]] = {}
    reports: dict[str, LoadReport] = {}

    def load(name: str) -> list[Problem]:
        revision = hub_revision(name) if local is None else None
        problems, report = convert_rows(name, load_rows(name, local=local, revision=revision), strict=strict)
        if local is None:
            report.revision, report.origin = revision, "hub"
        else:
            report.origin = str(snapshot_dir(name, local) or local) if Path(local).is_dir() else str(local)
        reports[name] = report
        return problems

    if want & {"olympiads_train", "oly"}:
        probs = load("numina_olympiads")
        train, test = olympiad_splits(probs, seed=seed, n_train=n_train, n_test=n_test,
                                      verifiable=verifiable, report=reports["numina_olympiads"])
        if "olympiads_train" in want:
            outputs["olympiads_train"] = train
        if "oly" in want:
            outputs["oly"] = test
    if "lcb_v6_medium" in want:
        outputs["lcb_v6_medium"] = cap([split_tests(p, seed=seed) for p in load(LCB_SCOPES[lcb_scope])], item_cap,
                                       seed=seed, name="lcb_v6_medium")
    for name in BENCHMARKS:
        if name == "oly" or name not in want:
            continue
        probs = load(name)
        if name in ("acereason_math", "hmmt_nov_2025", "math_l5") and verifiable is not None:
            kept = [p for p in probs if verifiable(p.answer)]
            if len(kept) < len(probs):
                reports[name].skipped["unverifiable_answer"] += len(probs) - len(kept)
            probs = kept
        outputs[name] = cap(probs, item_cap, seed=seed, name=name)
    unknown = want - set(outputs)
    if unknown:
        raise KeyError(f"unknown outputs {sorted(unknown)}; valid: olympiads_train, lcb_v6_medium, {', '.join(BENCHMARKS)}")
    return outputs, reports
