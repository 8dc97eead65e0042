"""Code tasks in the LiveCodeBench style: standard-input and functional tests, run in the sandbox.

``problem.meta`` holds the tests as lists of ``{"input": str, "output": str, "testtype":
"stdin" | "functional"}`` under ``"tests"`` (the reward tests) and ``"heldout_tests"``, plus
``"fn_name"`` for functional problems (a method of ``class Solution`` or a top-level function;
arguments are the input's JSON lines). The reward is the fraction of the chosen tests passed
(``docs/method.md`` section 5); the paper's LiveCodeBench figure is the share of *held-out* tests
passed, so evaluate with ``CodeTask(tests_key="heldout_tests")``.

The program is the last fenced code block of the response (```` ```python ```` preferred). All
tests of one response run in one sandboxed process (``respo.tasks.sandbox``), each in a fresh
namespace with its own time limit; the program never sees expected outputs, and sees no host file
but the interpreter and its standard library (no site-packages: e.g. no numpy). Output comparison
(stdin tests) ignores trailing whitespace per line and trailing blank lines, and accepts tokens
that are numerically equal (as LiveCodeBench's checker does).

Deviation: LiveCodeBench runs each stdin test with its own timeout in a fresh process; we run
them sequentially in one process (a fresh namespace each) for speed.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from respo.tasks.base import Problem
from respo.tasks.sandbox import Limits, run_python

_HARNESS = (Path(__file__).parent / "_harness.py").read_text()
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def extract_code(response: str) -> str | None:
    """The last fenced code block, preferring blocks tagged python/py/python3; None if none."""
    blocks = _FENCE.findall(response[-200_000:])
    if not blocks:
        return None
    py = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3")]
    return str((py or [b for _, b in blocks])[-1])


def _tokens_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if len(a) > 4000 or len(b) > 4000:  # numbers that long are compared as text only
        return False
    try:
        x, y = Decimal(a), Decimal(b)
        return x.is_finite() and y.is_finite() and x == y
    except (InvalidOperation, ValueError, OverflowError):
        return False


def stdout_matches(got: str, expected: str) -> bool:
    """LiveCodeBench-style comparison: per line, trailing space ignored; numerically equal tokens."""
    g = [ln.rstrip() for ln in got.strip().splitlines()]
    e = [ln.rstrip() for ln in expected.strip().splitlines()]
    if g == e:
        return True
    if len(g) != len(e):
        return False
    for x, y in zip(g, e, strict=True):
        tx, ty = x.split(), y.split()
        if len(tx) != len(ty) or not all(_tokens_equal(a, b) for a, b in zip(tx, ty, strict=True)):
            return False
    return True


def _num_equal(a: int | float, b: int | float) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b  # exact, however large
    try:
        fa, fb = float(a), float(b)
    except OverflowError:  # an int beyond the float range never equals a float answer
        return False
    if not (math.isfinite(fa) and math.isfinite(fb)):
        return fa == fb
    return abs(fa - fb) <= 1e-9 * max(1.0, abs(fb))


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _num_equal(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def functional_matches(got: str, expected: str) -> bool:
    """JSON values equal (numbers within 1e-9 relative); anything that does not parse or compare
    (a nesting too deep, an integer too long, a number out of range) is a mismatch."""
    try:
        return _json_equal(json.loads(got), json.loads(expected))
    except (ValueError, TypeError, RecursionError, OverflowError, MemoryError):
        return False


@dataclass(frozen=True)
class TestOutcome:
    passed: int
    total: int
    statuses: tuple[str, ...]
    timed_out: bool


def run_tests(code: str, tests: Sequence[Mapping[str, Any]], *, fn_name: str | None = None,
              limits: Limits | None = None, test_timeout_s: float = 4.0, audit_hook: bool = True) -> TestOutcome:
    """Run ``code`` on ``tests`` in one sandboxed process; count the tests passed."""
    limits = limits or Limits()
    if not tests:
        raise ValueError("no tests to run")
    modes = {t.get("testtype", "stdin") for t in tests}
    if len(modes) != 1 or not modes <= {"stdin", "functional"}:
        raise ValueError(f"tests must all be 'stdin' or all 'functional', got {sorted(modes)}")
    mode = modes.pop()
    if mode == "functional" and not fn_name:
        raise ValueError("functional tests need fn_name")
    job = {"mode": mode, "fn_name": fn_name, "test_timeout_s": test_timeout_s, "audit_hook": audit_hook,
           "output_cap": 1 << 20}
    # Run the harness by a relative open: the folder's absolute path lies under /tmp, which the
    # mount namespace hides (the cwd still points at the real folder).
    boot = "exec(compile(open('harness.py').read(), 'harness.py', 'exec'))"
    res = run_python(["-c", boot], files={
        "harness.py": _HARNESS, "solution.py": code, "job.json": json.dumps(job),
        "inputs.json": json.dumps([str(t["input"]) for t in tests]),
    }, limits=limits, collect=["results.jsonl"])
    statuses = ["missing"] * len(tests)
    outs: list[str | None] = [None] * len(tests)
    for line in res.files.get("results.jsonl", b"").decode("utf-8", "replace").splitlines():
        try:  # the program may have written anything here: 1e999, deep nesting, huge ints, ...
            row = json.loads(line)
            i, status, out = row["i"], row.get("status"), row.get("out", "")
            if type(i) is not int or not isinstance(status, str) or not isinstance(out, str):
                raise TypeError("malformed result row")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError, MemoryError):
            continue  # a line the program corrupted counts as a missing result
        if 0 <= i < len(tests) and statuses[i] == "missing":
            statuses[i], outs[i] = status, out
    cmp = stdout_matches if mode == "stdin" else functional_matches
    passed = 0
    for k, (t, st, out) in enumerate(zip(tests, statuses, outs, strict=True)):
        if st == "ok" and out is not None and cmp(out, str(t["output"])):
            passed += 1
        elif st == "ok":
            statuses[k] = "wrong"
    return TestOutcome(passed, len(tests), tuple(statuses), res.timed_out)


@dataclass
class CodeTask:
    """Reward: fraction of ``problem.meta[tests_key]`` passed by the response's last code block."""

    tests_key: str = "tests"
    limits: Limits = field(default_factory=Limits)
    test_timeout_s: float = 4.0
    audit_hook: bool = True
    name: str = "code"
    has_step_judge: bool = False
    stats: Counter[str] = field(default_factory=Counter)

    def reward(self, problem: Problem, response: str) -> float:
        code = extract_code(response)
        if code is None:
            self.stats["no_code"] += 1
            return 0.0
        tests = problem.meta.get(self.tests_key)
        if not tests:
            raise ValueError(f"problem {problem.id!r} has no {self.tests_key!r}")
        out = run_tests(code, tests, fn_name=problem.meta.get("fn_name"), limits=self.limits,
                        test_timeout_s=self.test_timeout_s, audit_hook=self.audit_hook)
        self.stats["runs"] += 1
        self.stats["timeouts"] += int(out.timed_out)
        return out.passed / out.total

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        raise NotImplementedError("code tasks have no ground-truth steps")
