"""Argument checks shared by the simulator modules; every failure names the argument and its value.

A wrong type (a string, None, a bool, a float where an integer count is needed) is a TypeError;
a value of the right type outside its range (NaN, infinity, a probability above 1) a ValueError.
Python and numpy numbers are accepted alike; bool is rejected everywhere (True is not a count).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

# Sums over d^pi (coverage, p_U, per-layer masses) may overshoot [0, 1] by float rounding.
PROB_SLACK = 1e-9


def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def check_real(name: str, v: Any) -> float:
    """A finite real number, returned as float."""
    v = _scalar(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r} ({type(v).__name__})")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return x


def check_prob(name: str, v: Any, *, slack: float = PROB_SLACK) -> float:
    """A finite real number in [0, 1] (up to ``slack`` of rounding), returned as float."""
    x = check_real(name, v)
    if not -slack <= x <= 1.0 + slack:
        raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
    return x


def check_integer(name: str, v: Any, *, minimum: int | None = None) -> int:
    """A Python or numpy integer (not bool, not a float, even an integral one), returned as int."""
    v = _scalar(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)
