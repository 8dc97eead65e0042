"""Math answers checked with math-verify, in bounded time.

The reward is 1 when the last ``\\boxed{...}`` of the response is equivalent to the reference
answer (fractions and decimals, ``\\frac``, sets, percentages, symbolic forms, as math-verify
decides), else 0 (``docs/method.md`` section 5: raw verifier score, no format reward).

Time bound: sympy can run for ever on inputs such as ``10^{10^{10^{10}}}``, and math-verify's own
timeouts use ``signal.alarm`` (main thread only, and unable to interrupt long C-level arithmetic).
So the comparison runs in a separate worker process (``_mathworker``) with math-verify's
timeouts set to None; the parent waits at most ``timeout_s`` of wall-clock time, then kills and
restarts the worker and scores 0. (A call after a kill also waits for the new worker's imports,
about 1-3 s, which is not charged to ``timeout_s``.) Inputs are guarded before that: the box content is found by a
linear scan and capped at ``MAX_BOXED_LEN`` characters. Every timeout, worker error and missing
box is counted in ``MathVerifier.stats`` (design rule P9 in docs/design.md: nothing is
swallowed silently).

Rules on top of math-verify (decided deliberately, applied in the parent before it asks the
worker; each use is counted in ``stats``):

- **Relations.** A boxed relation ``a = b = ... = v`` (a top-level ``=``, when the reference has
  none) is accepted only if every side that is not a plain name (``x``, ``a_1``, ``\\theta``) is
  itself equivalent to the reference: ``x = 5`` and ``2+2 = 4`` pass for 4 resp. 5, ``6 = 5`` does
  not pass for 5 (math-verify alone scores the last right-hand side). A relation made of names
  only scores 0. ``<=``, ``>=``, ``!=`` are left to math-verify.
- **Percentages.** A predicted ``p\\%`` means ``p/100`` when the reference has no percent sign:
  ``50\\%`` passes for 0.5 and ``5\\%`` does not pass for 5 (math-verify accepts both readings).
  A reference ``p\\%`` accepts ``p\\%``, ``p/100`` and the bare ``p`` (the usual reading of "what
  percent ..."; a deviation from strictness kept on purpose).
- **Decimals.** A predicted decimal literal (``0.75``, ``12.0``) passes only for a reference that
  is a rational number of exactly that value: ``0.75`` for ``\\frac{3}{4}``, but no decimal for
  ``\\sqrt{2}``, ``\\pi`` or ``\\frac{1}{3}`` (math-verify accepts 7-8 correct digits). A decimal
  reference is compared as math-verify does.

Deviations: the paper's code scores with its own math grader inside verl; we use math-verify with
the rules above.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from respo.tasks.base import Problem
from respo.tasks.extract import last_boxed


def _norm(s: str) -> str:
    s = "".join(s.split())
    for a, b in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""), ("$", "")):
        s = s.replace(a, b)
    return s


_NAME = re.compile(r"\s*(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+)\s*")
_DECIMAL = re.compile(r"\s*[-+]?\d*\.\d+\s*")
_PERCENT = re.compile(r"\s*(.+?)\s*\\?%\s*", re.S)


def relation_sides(text: str) -> list[str]:
    """``text`` split at its top-level ``=`` signs (outside braces, brackets and parentheses);
    one element when there is none or when it holds ``<=``, ``>=`` or ``!=``."""
    if any(op in text for op in ("<=", ">=", "!=")):
        return [text]
    sides, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "=" and depth == 0:
            sides.append(text[start:i])
            start = i + 1
    return [*sides, text[start:]]


class MathVerifier:
    """Compare a predicted answer with a gold answer through a killable math-verify worker."""

    def __init__(self, *, timeout_s: float = 5.0, memory_bytes: int = 2 << 30,
                 start_timeout_s: float = 120.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.memory_bytes = memory_bytes
        self.stats: Counter[str] = Counter()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buf = b""
        atexit.register(self.close)

    def start(self) -> None:
        """Start the worker now (otherwise it starts on the first comparison)."""
        with self._lock:
            self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "respo.tasks._mathworker", str(self.memory_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            self._buf = b""
            self.stats["worker_starts"] += 1
            # Wait for the worker's imports (sympy, math-verify) outside the per-call budget.
            if self._readline(self._proc, time.monotonic() + self.start_timeout_s) is None:
                self.close()
                raise RuntimeError(f"math-verify worker did not start within {self.start_timeout_s} s")
        return self._proc

    def close(self) -> None:
        """Stop the worker (it is restarted on the next call)."""
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        if p is not None:
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def equivalent(self, gold: str, pred: str) -> bool:
        """Whether ``pred`` is equivalent to ``gold``; False (and counted) on timeout or error."""
        self.stats["calls"] += 1
        if _norm(gold) == _norm(pred):
            self.stats["exact"] += 1
            return True
        sides = relation_sides(pred)
        if len(sides) > 1 and len(relation_sides(gold)) == 1:
            self.stats["rule:relation"] += 1
            values = [side for side in sides if not _NAME.fullmatch(side)]
            return bool(values) and all(self.equivalent(gold, side) for side in values)
        pct = _PERCENT.fullmatch(pred)
        if pct is not None and "%" not in gold:
            self.stats["rule:percent"] += 1
            pred = f"\\frac{{{pct.group(1)}}}{{100}}"
        if _DECIMAL.fullmatch(pred) and not _DECIMAL.fullmatch(gold):
            self.stats["rule:decimal"] += 1
            return self._ask({"gold": gold, "pred": pred.strip(), "decimal": "exact"})
        return self._ask({"gold": gold, "pred": pred})

    def parses(self, gold: str) -> bool:
        """Whether a reference answer parses to something math-verify can compare (verifiable)."""
        return self._ask({"parse": gold})

    def _ask(self, request: dict[str, str]) -> bool:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode())
                proc.stdin.flush()
            except BrokenPipeError:
                self.stats["worker_died"] += 1
                self.close()
                return False
            line = self._readline(proc, time.monotonic() + self.timeout_s)
            if line is None:
                self.stats["timeouts"] += 1
                self.close()
                return False
        reply = json.loads(line)
        if "error" in reply:
            self.stats[f"error:{reply['error']}"] += 1
            return False
        return bool(reply["ok"])


_DEFAULT: MathVerifier | None = None


def default_verifier() -> MathVerifier:
    """A process-wide verifier (one worker), created on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MathVerifier()
    return _DEFAULT


@dataclass
class MathTask:
    """Boxed-answer math: reward 1 if the last ``\\boxed{}`` is equivalent to ``problem.answer``."""

    verifier: MathVerifier = field(default_factory=default_verifier)
    name: str = "math"
    has_step_judge: bool = False

    def reward(self, problem: Problem, response: str) -> float:
        pred = last_boxed(response)
        if pred is None or not pred.strip():
            self.verifier.stats["no_answer"] += 1
            return 0.0
        return 1.0 if self.verifier.equivalent(problem.answer, pred) else 0.0

    def first_error(self, problem: Problem, thoughts: Sequence[str]) -> int | None:
        raise NotImplementedError("math benchmarks have no ground-truth steps (has_step_judge=False)")
