"""Slow, obviously-correct reference implementations (loops), used only by tests.

Design rule P10 (docs/design.md): the library ships one implementation of each function; the
slow loop versions that the vectorized code is tested against exist only here.
"""

from __future__ import annotations

import math


def zscore_loop(rewards, groups, *, ddof=0, eps=0.0, zero_std_tol=1e-8, singleton="zero"):
    """Per-group z-score with explicit loops over groups and members."""
    out = [0.0] * len(rewards)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        vals = [rewards[i] for i in idx]
        m = sum(vals) / len(vals)
        if len(vals) - ddof > 0:
            var = sum((v - m) ** 2 for v in vals) / (len(vals) - ddof)
        else:
            var = 0.0
        sd = math.sqrt(var)
        if singleton == "unit_std" and len(vals) == 1:
            sd = 1.0
        for i in idx:
            out[i] = 0.0 if sd < zero_std_tol else (rewards[i] - m) / (sd + eps)
    return out
