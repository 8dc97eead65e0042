"""Scoring of evaluation results: pass@k, seed aggregation, tables.

The chains themselves come from the one evaluator (``respo.llm.evaluator``: the trainer's sampler,
prompt and stop rules; no resets at test time, ``docs/method.md`` section 6), called by
``respo eval run`` (``respo.commands.evaluate``); each problem's rewards are an ``ItemResult``.

- ``pass_at_k``: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``,
  computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` in log space (finite for n = 10^4).
  The paper reports greedy pass@1 (temperature 0, one sample), which is the mean reward.
- ``summarize`` / ``table_*``: mean and standard deviation over seeds per (model, method,
  benchmark); the average over benchmarks is taken per seed first, then over seeds; tables in the
  paper's layout (rows benchmarks, columns models x methods) as Markdown, CSV and LaTeX.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ItemResult:
    """One problem's n scored responses."""

    problem_id: str
    rewards: tuple[float, ...]
    responses: tuple[str, ...] = field(repr=False, default=())

    def successes(self, threshold: float = 1.0) -> int:
        return sum(r >= threshold for r in self.rewards)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` successes among ``n`` samples: ``1 - C(n-c, k) / C(n, k)``.

    Product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, summed in log space with ``log1p``
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"). Requires 1 <= k <= n.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(-np.expm1(np.sum(np.log1p(-k / i))))


def benchmark_scores(items: Sequence[ItemResult], *, ks: Sequence[int] = (1,), threshold: float = 1.0) -> dict[str, float]:
    """Per-benchmark figures: ``mean_reward`` (share of tests passed for code; pass@1 for 0/1
    rewards) and ``pass@k`` for each k <= n (success = reward >= ``threshold``)."""
    if not items:
        raise ValueError("no items to score")
    n = len(items[0].rewards)
    if any(len(it.rewards) != n for it in items):
        raise ValueError("every item needs the same number of samples")
    out = {"mean_reward": float(np.mean([np.mean(it.rewards) for it in items])), "n_items": float(len(items)),
           "n_samples": float(n)}
    for k in ks:
        if k > n:
            raise ValueError(f"pass@{k} needs at least {k} samples per item, got {n}")
        out[f"pass@{k}"] = float(np.mean([pass_at_k(n, it.successes(threshold), k) for it in items]))
    return out


# ---------------------------------------------------------------------------------------------
# Seeds, averages and tables


@dataclass(frozen=True)
class Record:
    """One score: a model x method x seed x benchmark cell (in percent or fraction, as given)."""

    model: str
    method: str
    seed: int
    benchmark: str
    score: float


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n_seeds: int


AVERAGE = "Average"


def summarize(records: Iterable[Record], *, ddof: int = 1) -> dict[tuple[str, str, str], Cell]:
    """Mean and std over seeds for each (model, method, benchmark), plus an ``Average`` row.

    ``ddof=1`` (sample std over seeds; the paper says "mean and std over 3 seeds" without the
    convention). The average is over benchmarks within each seed, then over seeds; a seed that
    lacks one of its (model, method)'s benchmarks raises. A repeated cell raises too.
    """
    by: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        cell = by[(r.model, r.method)][r.seed]
        if r.benchmark in cell:
            raise ValueError(f"duplicate record for {r.model}/{r.method}/seed {r.seed}/{r.benchmark}")
        if not math.isfinite(r.score):
            raise ValueError(f"non-finite score for {r.model}/{r.method}/seed {r.seed}/{r.benchmark}")
        cell[r.benchmark] = r.score
    out: dict[tuple[str, str, str], Cell] = {}

    def stat(xs: list[float]) -> Cell:
        a = np.asarray(xs, dtype=np.float64)
        std = float(a.std(ddof=ddof)) if len(a) > ddof else float("nan")
        return Cell(float(a.mean()), std, len(a))

    for (model, method), seeds in by.items():
        benches = sorted(set().union(*(s.keys() for s in seeds.values())))
        for seed, cell in seeds.items():
            missing = [b for b in benches if b not in cell]
            if missing:
                raise ValueError(f"{model}/{method}/seed {seed} lacks benchmarks {missing}")
        for b in benches:
            out[(model, method, b)] = stat([seeds[s][b] for s in sorted(seeds)])
        out[(model, method, AVERAGE)] = stat([float(np.mean([seeds[s][b] for b in benches])) for s in sorted(seeds)])
    return out


def _layout(cells: dict[tuple[str, str, str], Cell], benchmarks: Sequence[str] | None,
            models: Sequence[str] | None, methods: Sequence[str] | None) -> tuple[list[str], list[tuple[str, str]]]:
    keys = list(cells)
    ms = list(models) if models else list(dict.fromkeys(k[0] for k in keys))
    me = list(methods) if methods else list(dict.fromkeys(k[1] for k in keys))
    bs = list(benchmarks) if benchmarks else [b for b in dict.fromkeys(k[2] for k in keys) if b != AVERAGE]
    rows = bs + [AVERAGE]
    cols = [(m, x) for m in ms for x in me if any((m, x, b) in cells for b in rows)]
    return rows, cols


def _fmt(c: Cell | None, digits: int, pm: str) -> str:
    if c is None:
        return "-"
    if c.n_seeds < 2 or math.isnan(c.std):
        return f"{c.mean:.{digits}f}"
    return f"{c.mean:.{digits}f}{pm}{c.std:.{digits}f}"


def _best(cells: dict[tuple[str, str, str], Cell], row: str, cols: list[tuple[str, str]]) -> set[tuple[str, str]]:
    best: set[tuple[str, str]] = set()
    for m in dict.fromkeys(c[0] for c in cols):
        vals = {c: cells[(c[0], c[1], row)].mean for c in cols if c[0] == m and (c[0], c[1], row) in cells}
        if len(vals) > 1:
            top = max(vals.values())
            best |= {c for c, v in vals.items() if v == top}
    return best


def table_markdown(cells: dict[tuple[str, str, str], Cell], *, benchmarks: Sequence[str] | None = None,
                   models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                   digits: int = 1) -> str:
    """Markdown table: rows benchmarks (+ Average), columns ``model / method``; best per model in bold."""
    rows, cols = _layout(cells, benchmarks, models, methods)
    lines = ["| benchmark | " + " | ".join(f"{m} / {x}" for m, x in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in rows:
        best = _best(cells, r, cols)
        vals = []
        for c in cols:
            s = _fmt(cells.get((c[0], c[1], r)), digits, " ± ")
            vals.append(f"**{s}**" if c in best else s)
        lines.append(f"| {r} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def table_csv(cells: dict[tuple[str, str, str], Cell]) -> str:
    """Long-format CSV: model, method, benchmark, mean, std, n_seeds."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "method", "benchmark", "mean", "std", "n_seeds"])
    for (m, x, b), c in cells.items():
        w.writerow([m, x, b, repr(c.mean), repr(c.std), c.n_seeds])
    return buf.getvalue()


def _tex(s: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#")):
        s = s.replace(a, b)
    return s


def table_latex(cells: dict[tuple[str, str, str], Cell], *, benchmarks: Sequence[str] | None = None,
                models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                digits: int = 1, caption: str = "") -> str:
    """LaTeX tabular (booktabs): a model header spanning its methods, best per model in bold."""
    rows, cols = _layout(cells, benchmarks, models, methods)
    groups = list(dict.fromkeys(c[0] for c in cols))
    out = ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule"]
    out.append(" & " + " & ".join(f"\\multicolumn{{{sum(c[0] == g for c in cols)}}}{{c}}{{{_tex(g)}}}" for g in groups) + " \\\\")
    out.append("Benchmark & " + " & ".join(_tex(c[1]) for c in cols) + " \\\\")
    out.append("\\midrule")
    for r in rows:
        if r == AVERAGE:
            out.append("\\midrule")
        best = _best(cells, r, cols)
        vals = []
        for c in cols:
            s = _fmt(cells.get((c[0], c[1], r)), digits, " $\\pm$ ")
            vals.append(f"\\textbf{{{s}}}" if c in best else s)
        out.append(f"{_tex(r)} & " + " & ".join(vals) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        out.append(f"\\caption{{{_tex(caption)}}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def records_from_rows(rows: Iterable[dict[str, Any]], *, metric: str = "mean_reward", scale: float = 100.0) -> list[Record]:
    """Records from result rows (``respo eval`` JSONL: model, method, seed, benchmark, metrics)."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(Record(str(row["model"]), str(row["method"]), int(row["seed"]), str(row["benchmark"]),
                              scale * float(row["metrics"][metric])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"result row {i}: {e!r}") from None
    return out
