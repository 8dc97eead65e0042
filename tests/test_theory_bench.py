"""The simulator's speed benchmark (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "bench_theory.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_theory", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_theory"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bench_theory_full_size() -> None:
    pytest.importorskip("mdptoolbox")  # the [bench] extra (pymdptoolbox)
    res = _load().run(H=20, A=2, repeats=3, ref=True, toolbox=True)
    assert res["n_states"] >= 1e6
    assert res["max_abs_diff"] < 1e-10  # the two solvers agree
    assert res["vectorised_s"] < 2.0  # target ~1 s on one core; slack for a loaded machine
    assert res["ratio"] > 5.0
    assert res["vstar_diff"] < 1e-10  # pymdptoolbox agrees on V*(start)


def test_bench_theory_small_runs() -> None:
    """The benchmark script itself works (tiny size, default suite)."""
    res = _load().run(H=8, A=2, repeats=1, ref=True, toolbox=False)
    assert res["max_abs_diff"] < 1e-12
