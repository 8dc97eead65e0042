"""Numbers for the CPU-track figures and tables, computed from parsed runs (``respo.analysis.runs``).

Pure functions of the loaded runs: no file I/O, no plotting. Conventions:

* Seeds are the unit of replication. A curve's band is the standard error of the mean over
  seeds, ``std(ddof=1) / sqrt(n)``; a final number's interval is the two-sided 95% Student-t
  interval over seeds, ``t_{0.975, n-1} * SE``. Both are NaN with a single seed.
* Held-out pass@1 curves are plotted against the number of updates done: the evaluation logged on
  training step ``s`` (after that step's update) sits at ``x = s + 1`` and the start-of-training
  evaluation ``eval0/*`` at ``x = 0``. With this axis a run of ``steps`` steps ends at
  ``x = steps`` and GRPO's "sooner" factor against itself is exactly 1.
* A rollout counts as a pass when its reward is at least ``success`` (1.0: all tests / right
  answer), as in the trainer's ``g1/pass_rate`` and ``g2/pass_rate``.
* Reset step ``k`` is 1-indexed; the normalized position is ``(k - 1) / n_thoughts``; the
  deviation is ``k - truth`` (negative = reset before the first error); a kept prefix is clean
  when ``truth >= k`` and erroneous when ``truth < k``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from respo.analysis.runs import Run, Suite
from respo.resets import localizer_quality

__all__ = [
    "METHOD_ORDER", "EVAL_METRICS", "Curve", "Table", "mean_se", "t_interval", "eval_curve",
    "metric_curve", "method_curves", "final_values", "final_summary", "crossing_step",
    "sooner_factor", "reset_positions", "position_histogram", "deviation_bins",
    "deviation_distribution", "correction_by_deviation", "clean_vs_erroneous",
    "localization_quality", "predicted_factor", "beta_gamma_curve", "grad_step_summary",
    "main_table", "split_table", "pairing_table", "clip_table", "localization_table",
    "paper_comparison", "all_tables", "markdown_table", "json_ready", "order_methods",
]

METHOD_ORDER: tuple[str, ...] = ("grpo", "rrpo", "srpo", "oracle", "spo-tree", "treerl", "score",
                                 "critique-grpo", "srpo-2x4", "srpo-1x8", "rrpo-2x4", "rrpo-1x8")
"""Display order of the variants (unknown variants follow, alphabetically)."""

EVAL_METRICS: tuple[str, ...] = ("greedy_pass@1", "sampled_pass@1")

NAN = math.nan


def order_methods(names: Iterable[str]) -> list[str]:
    """``names`` sorted by ``METHOD_ORDER``, unknown ones last in alphabetical order."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(set(names), key=lambda m: (rank.get(m, len(rank)), m))


# --------------------------------------------------------------------------------------------
# Statistics over seeds
# --------------------------------------------------------------------------------------------


def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[np.isfinite(a)]


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof 1) and count of the finite values.

    NaN mean with no value; NaN SE with fewer than two."""
    a = _finite(values)
    n = len(a)
    if n == 0:
        return NAN, NAN, 0
    mean = float(a.mean())
    se = float(a.std(ddof=1) / math.sqrt(n)) if n >= 2 else NAN
    return mean, se, n


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the two-sided Student-t interval at ``level``, and count.

    half-width = t_{(1 + level) / 2, n - 1} * SE; NaN with fewer than two finite values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    from scipy import stats  # imported here: scipy.stats takes about a second to import

    mean, se, n = mean_se(values)
    if n < 2:
        return mean, NAN, n
    return mean, float(stats.t.ppf(0.5 + level / 2.0, n - 1) * se), n


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A per-x mean over seeds: ``n[i]`` runs contributed at ``x[i]``; ``se`` is NaN where n < 2."""

    x: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    n: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.x) == 0

    def to_dict(self) -> dict[str, list[Any]]:
        return {"x": [float(v) for v in self.x], "mean": [float(v) for v in self.mean],
                "se": [float(v) for v in self.se], "n": [int(v) for v in self.n]}


def _combine(per_run: Sequence[tuple[np.ndarray, np.ndarray]]) -> Curve:
    """Mean and SE over runs at every x that at least one run has."""
    by_x: dict[float, list[float]] = {}
    for xs, ys in per_run:
        for x, y in zip(xs, ys, strict=True):
            if math.isfinite(float(y)):
                by_x.setdefault(float(x), []).append(float(y))
    xs_sorted = sorted(by_x)
    stats_ = [mean_se(by_x[x]) for x in xs_sorted]
    return Curve(x=np.asarray(xs_sorted, dtype=float),
                 mean=np.asarray([s[0] for s in stats_], dtype=float),
                 se=np.asarray([s[1] for s in stats_], dtype=float),
                 n=np.asarray([s[2] for s in stats_], dtype=int))


def _eval_points(run: Run, metric: str) -> tuple[np.ndarray, np.ndarray]:
    s, v = run.series(f"eval/{metric}")
    x = list(s + 1)
    y = list(v)
    v0 = run.first(f"eval0/{metric}")
    if math.isfinite(v0):
        x.insert(0, 0)
        y.insert(0, v0)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def eval_curve(runs: Sequence[Run], metric: str = "greedy_pass@1") -> Curve:
    """Held-out ``metric`` against updates done (``eval0`` at x = 0, ``eval`` of step s at s + 1),
    mean and SE over ``runs``."""
    return _combine([_eval_points(r, metric) for r in runs])


def _windowed(xs: np.ndarray, ys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    if window == 1:
        return xs, ys
    w = xs // window
    ws = np.unique(w)
    return ws * window, np.asarray([ys[w == k].mean() for k in ws], dtype=float)


def metric_curve(runs: Sequence[Run], key: str, window: int = 1) -> Curve:
    """A per-step metric of ``metrics.jsonl`` (x = training step), mean and SE over ``runs``;
    steps where a run logged null/NaN are left out for that run. With ``window > 1`` each run's
    values are first averaged over steps ``w*window .. (w+1)*window - 1`` (plotted at
    x = w*window)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return _combine([_windowed(*r.series(key), window) for r in runs])


def method_curves(groups: Mapping[str, Sequence[Run]],
                  metric: str = "greedy_pass@1") -> dict[str, Curve]:
    """``{variant: eval_curve}`` for every group with at least one evaluation."""
    out = {}
    for m in order_methods(groups):
        c = eval_curve(groups[m], metric)
        if not c.empty:
            out[m] = c
    return out


def final_values(runs: Sequence[Run], metric: str = "greedy_pass@1") -> list[float]:
    """Each run's last held-out ``eval/<metric>`` (runs without one are left out)."""
    out = []
    for r in runs:
        _, v = r.series(f"eval/{metric}")
        if len(v):
            out.append(float(v[-1]))
    return out


def final_summary(runs: Sequence[Run], metric: str = "greedy_pass@1",
                  level: float = 0.95) -> dict[str, float]:
    """Final ``metric`` over seeds: mean, SE, half-width of the t-interval (``ci``), n."""
    vals = final_values(runs, metric)
    mean, se, n = mean_se(vals)
    _, ci, _ = t_interval(vals, level)
    return {"mean": mean, "se": se, "ci": ci, "n": n}


def crossing_step(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The first x at which the piecewise-linear curve (x, y) reaches ``target`` (y >= target),
    linearly interpolated between the last point below and the first point at or above it.
    NaN when the curve never reaches it."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    hits = np.nonzero(y >= target)[0]
    if not math.isfinite(target) or len(hits) == 0:
        return NAN
    i = int(hits[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def sooner_factor(baseline: Curve, method: Curve) -> dict[str, Any]:
    """How many times sooner ``method`` reaches the baseline's final mean level.

    factor = (baseline's last x, i.e. its number of updates) / (first x where the method's mean
    curve reaches the baseline's final mean, linearly interpolated). ``status`` is ``"reached"``,
    ``"never"`` (factor NaN) or ``"at_start"`` (already at that level before training: factor
    infinite, NaN in the returned dict), or ``"no_data"``.
    """
    if baseline.empty or method.empty:
        return {"factor": NAN, "status": "no_data", "target": NAN, "baseline_steps": NAN,
                "cross_step": NAN}
    target = float(baseline.mean[-1])
    steps = float(baseline.x[-1])
    cross = crossing_step(method.x, method.mean, target)
    if not math.isfinite(cross):
        status, factor = "never", NAN
    elif cross <= 0.0:
        status, factor = "at_start", NAN
    else:
        status, factor = "reached", steps / cross
    return {"factor": factor, "status": status, "target": target, "baseline_steps": steps,
            "cross_step": cross}


# --------------------------------------------------------------------------------------------
# Localization (from rollouts.jsonl)
# --------------------------------------------------------------------------------------------


def _resets(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [r for run in runs for _, r in run.resets()]


def reset_positions(runs: Sequence[Run], *, include_fallbacks: bool = True) -> np.ndarray:
    """Normalized reset positions (k - 1) / n_thoughts of every reset with a step."""
    return np.asarray([(r["step"] - 1) / r["n_thoughts"] for r in _resets(runs)
                       if r["step"] is not None and (include_fallbacks or not r.get("fell_back"))],
                      dtype=float)


def position_histogram(runs: Sequence[Run], bins: int = 10, *,
                       include_fallbacks: bool = True) -> dict[str, Any]:
    """Histogram of normalized reset positions on ``bins`` equal bins of [0, 1].

    ``share`` sums to 1 (NaN shares when there is no reset); ``fallback_share`` is the share of
    resets whose localizer fell back."""
    pos = reset_positions(runs, include_fallbacks=include_fallbacks)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(pos, bins=edges)
    n = int(counts.sum())
    rs = [r for r in _resets(runs) if r["step"] is not None]
    fb = sum(1 for r in rs if r.get("fell_back"))
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist(),
            "share": (counts / n).tolist() if n else [NAN] * bins, "n": n,
            "mean": float(pos.mean()) if len(pos) else NAN,
            "fallback_share": fb / len(rs) if rs else NAN}


def deviation_bins(max_dev: int = 3) -> list[tuple[str, int, int]]:
    """The deviation bins ``(label, lo, hi)``: ``<=-max_dev``, each integer in between, ``>=+max_dev``."""
    if max_dev < 1:
        raise ValueError(f"max_dev must be >= 1, got {max_dev}")
    big = 10**9
    out = [(f"≤-{max_dev}", -big, -max_dev)]
    out += [(f"{d:+d}" if d else "0", d, d) for d in range(-max_dev + 1, max_dev)]
    out.append((f"≥+{max_dev}", max_dev, big))
    return out


def _judged(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [r for r in _resets(runs) if r["step"] is not None and r["truth"] is not None]


def _bin_of(dev: int, bins: list[tuple[str, int, int]]) -> int:
    for i, (_, lo, hi) in enumerate(bins):
        if lo <= dev <= hi:
            return i
    raise AssertionError(dev)  # bins cover all integers


def deviation_distribution(runs: Sequence[Run], max_dev: int = 3) -> list[dict[str, Any]]:
    """Share of localizations by deviation k - truth (resets with a step and a known truth)."""
    bins = deviation_bins(max_dev)
    counts = [0] * len(bins)
    for r in _judged(runs):
        counts[_bin_of(r["step"] - r["truth"], bins)] += 1
    n = sum(counts)
    return [{"label": lab, "lo": lo, "hi": hi, "count": c, "share": c / n if n else NAN}
            for (lab, lo, hi), c in zip(bins, counts, strict=True)]


def _group_stats(groups: Sequence[Sequence[float]], success: float) -> dict[str, float]:
    """Pass statistics of suffix groups: pooled per-suffix pass rate, its SE over groups
    (clustered: std of the per-group rates / sqrt(groups)), and the share of groups with at least
    one pass (pass@k-style, k = group size)."""
    groups = [g for g in groups if len(g)]
    if not groups:
        return {"groups": 0, "suffixes": 0, "passes": 0, "pass_rate": NAN, "se": NAN,
                "group_pass": NAN}
    rates = [float(np.mean([x >= success for x in g])) for g in groups]
    passes = sum(int(x >= success) for g in groups for x in g)
    suffixes = sum(len(g) for g in groups)
    _, se, _ = mean_se(rates)
    return {"groups": len(groups), "suffixes": suffixes, "passes": passes,
            "pass_rate": passes / suffixes, "se": se,
            "group_pass": float(np.mean([any(x >= success for x in g) for g in groups]))}


def correction_by_deviation(runs: Sequence[Run], max_dev: int = 3,
                            success: float = 1.0) -> list[dict[str, Any]]:
    """Correction rate (suffix-group pass rate) by deviation bin; see ``_group_stats``."""
    bins = deviation_bins(max_dev)
    per_bin: list[list[list[float]]] = [[] for _ in bins]
    for r in _judged(runs):
        per_bin[_bin_of(r["step"] - r["truth"], bins)].append(r["suffix"])
    return [{"label": lab, "lo": lo, "hi": hi, **_group_stats(g, success)}
            for (lab, lo, hi), g in zip(bins, per_bin, strict=True)]


def clean_vs_erroneous(runs: Sequence[Run], success: float = 1.0) -> dict[str, dict[str, float]]:
    """Suffix-group pass statistics when the kept prefix is clean (truth >= k) vs erroneous
    (truth < k); the pooled ``pass_rate`` equals the trainer's ``g2/pass_clean|erroneous``."""
    clean: list[list[float]] = []
    err: list[list[float]] = []
    for r in _judged(runs):
        (clean if r["truth"] >= r["step"] else err).append(r["suffix"])
    return {"clean": _group_stats(clean, success), "erroneous": _group_stats(err, success)}


def predicted_factor(beta: float, gamma: float) -> float:
    """The theory's factor (1 - beta) * gamma: the approximate sampler's guaranteed improvement
    relative to the oracle (CPI-CARO), Corollary 1 (``respo.theory.bounds.approx_guarantee``)."""
    return (1.0 - beta) * gamma


def localization_quality(runs: Sequence[Run]) -> dict[str, float]:
    """Pooled beta (false-discovery rate), gamma (recall), at-or-before share, the predicted factor
    (1 - beta) gamma, and counts, over all resets of ``runs`` with a known truth
    (``respo.resets.localizer_quality``; a reset without a step counts as no answer)."""
    rs = _resets(runs)
    q = localizer_quality([r["step"] for r in rs], [r["truth"] for r in rs])
    with_step = [r for r in rs if r["step"] is not None]
    return {"beta": q["beta"], "gamma": q["gamma"], "at_or_before": q["at_or_before"],
            "predicted": predicted_factor(q["beta"], q["gamma"]),
            "n_judged": int(q["n_chains"]), "n_answered": int(q["n_answered"]), "n_resets": len(rs),
            "fallback_share": (sum(1 for r in with_step if r.get("fell_back")) / len(with_step)
                               if with_step else NAN)}


def _loc_from_metrics(run: Run, window: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    sb, b = run.series("loc/beta")
    sg, g = run.series("loc/gamma")
    common = sorted(set(sb.tolist()) & set(sg.tolist()))
    s = np.asarray(common, dtype=int)
    p = np.asarray([(1 - b[sb == k][0]) * g[sg == k][0] for k in common], dtype=float)
    return {"beta": _windowed(sb, b, window), "gamma": _windowed(sg, g, window),
            "predicted": _windowed(s, p, window)}


def beta_gamma_curve(runs: Sequence[Run], window: int = 1) -> dict[str, Curve]:
    """beta, gamma and the predicted factor (1 - beta) gamma per window of ``window`` steps.

    From ``rollouts.jsonl`` when the run has it: all resets of steps ``w*window .. (w+1)*window-1``
    are pooled (``localizer_quality``) into one value per run at x = w*window, then mean and SE
    are taken over runs. A run without rollouts falls back to ``loc/beta`` and ``loc/gamma`` of
    ``metrics.jsonl`` (mean over the window's steps)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    per: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"beta": [], "gamma": [], "predicted": []}
    for run in runs:
        if run.rollouts is None:
            for k, v in _loc_from_metrics(run, window).items():
                per[k].append(v)
            continue
        by_w: dict[int, list[dict[str, Any]]] = {}
        for step, r in run.resets():
            by_w.setdefault(step // window, []).append(r)
        xs, b, g = [], [], []
        for w in sorted(by_w):
            q = localizer_quality([r["step"] for r in by_w[w]], [r["truth"] for r in by_w[w]])
            xs.append(w * window)
            b.append(q["beta"])
            g.append(q["gamma"])
        x = np.asarray(xs, dtype=float)
        ba, ga = np.asarray(b, dtype=float), np.asarray(g, dtype=float)
        per["beta"].append((x, ba))
        per["gamma"].append((x, ga))
        per["predicted"].append((x, (1.0 - ba) * ga))
    return {k: _combine(v) for k, v in per.items()}


# --------------------------------------------------------------------------------------------
# Gradient diagnostics (grads/step_*.json)
# --------------------------------------------------------------------------------------------


def grad_step_summary(grads: Mapping[str, Any]) -> dict[str, float]:
    """Mean per-thought gradient magnitude of the suffix rows and of the fresh rows of one
    ``grads/step_*.json`` (a thought-level average: each trained thought counts once), and their
    ratio. The trainer's ``grad/suffix_fresh_ratio`` is the token-level analogue."""
    vals: dict[str, list[float]] = {"suffix": [], "fresh": []}
    for row in grads["rows"]:
        vals[row["role"]].extend(float(v) for v in row["thought_grad"] if v is not None)
    s = float(np.mean(vals["suffix"])) if vals["suffix"] else NAN
    f = float(np.mean(vals["fresh"])) if vals["fresh"] else NAN
    return {"suffix_thought_mean": s, "fresh_thought_mean": f,
            "ratio": s / f if math.isfinite(s) and math.isfinite(f) and f > 0 else NAN}


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

Column = tuple[str, "str | tuple[str, str]"]
"""(header, key) or (header, (mean key, half-width key)) rendered as 'mean ± hw'."""


@dataclass
class Table:
    """A table as a list of row dicts, its columns for rendering, and what is missing."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[Column]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return bool(self.rows)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.rows:
            lines.append(markdown_table(self.rows, self.columns))
            if self.missing:
                lines += ["", "Missing runs: " + ", ".join(self.missing) + "."]
        else:
            lines.append(f"Not available: the suite has no runs for this table (missing: "
                         f"{', '.join(self.missing) or 'all'}).")
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "rows": self.rows,
                "missing": self.missing, "notes": self.notes}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                   digits: int = 3) -> str:
    """Render rows as a GitHub markdown table. A column key that is a pair (mean, hw) renders
    ``mean ± hw``; NaN renders ``nan``, a missing value ``—``."""
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for row in rows:
        cells = []
        for _, key in columns:
            if isinstance(key, tuple):
                m, hw = row.get(key[0]), row.get(key[1])
                cells.append(_fmt(m, digits) if m is None else f"{_fmt(m, digits)} ± {_fmt(hw, digits)}")
            else:
                cells.append(_fmt(row.get(key), digits))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def _score_row(runs: Sequence[Run], metrics: Sequence[str] = EVAL_METRICS) -> dict[str, Any]:
    row: dict[str, Any] = {"n": len(runs), "seeds": [r.seed for r in runs]}
    for m in metrics:
        short = m.split("_")[0]
        s = final_summary(runs, m)
        row[f"{short}"] = s["mean"]
        row[f"{short}_ci"] = s["ci"]
        row[f"{short}_n"] = s["n"]
    return row


def _objective(runs: Sequence[Run]) -> str:
    objs = {"/".join(str(r.objective.get(k, "?")) for k in ("loss", "agg", "advantage")) for r in runs}
    return ", ".join(sorted(objs)) if objs else "?"


_CI_NOTE = ("Intervals: two-sided 95% Student-t over seeds (t * SE); nan where a row has a single "
            "seed (no interval can be computed).")

_SCORE_COLS: list[Column] = [("n seeds", "n"), ("final greedy pass@1 (95% CI)", ("greedy", "greedy_ci")),
                             ("final sampled pass@1 (95% CI)", ("sampled", "sampled_ci"))]


def _row_name(r: Mapping[str, Any]) -> str:
    extra = [str(r[k]) for k in ("split", "pairing", "clip") if k in r]
    return f"{r['method']} ({', '.join(extra)})" if extra else str(r["method"])


def _ci_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    single = [_row_name(r) for r in rows if r.get("n", 0) == 1]
    note = [_CI_NOTE]
    if single:
        note.append("Single seed (CI = nan): " + ", ".join(str(s) for s in single) + ".")
    return note


def deviation_notes(methods: Iterable[str]) -> list[str]:
    """One note per published baseline among ``methods``: where it departs from its own paper
    (``respo.variants.Variant.deviations``)."""
    from respo.variants import VARIANTS

    out = []
    for m in methods:
        v = VARIANTS.get(m)
        if v is not None and v.deviations:
            out.append(f"{m} deviations: " + "; ".join(v.deviations) + ".")
    return out


def main_table(suite: Suite) -> Table:
    """Main results: per variant of tag ``main``, final greedy and sampled pass@1 (mean ± 95% CI,
    n seeds), start-of-training pass@1 (``eval0``), the greedy "sooner" factor against GRPO and
    the generated tokens per run."""
    groups = suite.groups("main")
    expected = ["grpo", "rrpo", "srpo", "oracle"]
    grpo_curve = eval_curve(groups["grpo"]) if "grpo" in groups else None
    rows = []
    for m in order_methods(groups):
        runs = groups[m]
        row = {"method": m, **_score_row(runs), "objective": _objective(runs)}
        for metric in EVAL_METRICS:
            short = metric.split("_")[0]
            row[f"{short}0"] = mean_se([r.first(f"eval0/{metric}") for r in runs])[0]
        if grpo_curve is not None:
            sf = sooner_factor(grpo_curve, eval_curve(runs))
            row["sooner"] = sf["factor"]
            row["sooner_status"] = sf["status"]
        else:
            row["sooner"], row["sooner_status"] = NAN, "no_grpo"
        row["gen_tokens"] = mean_se([r.total("tokens/generated") for r in runs])[0]
        row["trained_tokens"] = mean_se([r.total("tokens/trained") for r in runs])[0]
        row["loc_tokens"] = mean_se([r.total("tokens/localization") for r in runs])[0]
        rows.append(row)
    cols: list[Column] = [("method", "method"), *_SCORE_COLS,
                          ("start greedy", "greedy0"), ("start sampled", "sampled0"),
                          ("× sooner than GRPO (greedy)", "sooner"), ("status", "sooner_status"),
                          ("generated tokens / run", "gen_tokens"), ("trained tokens / run", "trained_tokens"),
                          ("localization tokens / run", "loc_tokens"), ("loss/agg/advantage", "objective")]
    notes = _ci_notes(rows) + [
        "× sooner = GRPO's number of updates / first update count at which the method's mean greedy "
        "curve reaches GRPO's final mean (linear interpolation); 'never' when it does not.",
        "Tokens: generated = sampled by the policy for training rollouts (discarded ones included); "
        "trained = tokens that received gradient (TreeRL trains a shared segment once per leaf, so "
        "it can exceed generated); localization = SRPO's prompted localizer's own generations."]
    notes += deviation_notes([r["method"] for r in rows])
    return Table("main", "Main results (tag main)", rows, cols,
                 missing=[m for m in expected if m not in groups], notes=notes)


def split_table(suite: Suite) -> Table:
    """Sampling splits under one budget: the ``split`` runs plus the ``main`` srpo/rrpo as 1x4."""
    split = suite.groups("split")
    main = suite.groups("main")
    rows: list[dict[str, Any]] = []
    missing = []
    for base in ("srpo", "rrpo"):
        for sp in ("1x4", "2x4", "1x8"):
            runs = main.get(base) if sp == "1x4" else split.get(f"{base}-{sp}")
            name = f"{base}-{sp}" if sp != "1x4" else f"{base} (main, 1x4)"
            if not runs:
                missing.append(name)
                continue
            rows.append({"method": base, "split": sp, **_score_row(runs)})
    if not split:
        rows = []
    return Table("split", "Sampling split (budget of 8 rollouts; tag split + main 1x4)", rows,
                 [("method", "method"), ("split", "split"), *_SCORE_COLS],
                 missing=missing, notes=_ci_notes(rows) if rows else [])


def _vs_main_table(suite: Suite, tag: str, title: str, label_key: str,
                   labels: tuple[str, str]) -> Table:
    other = suite.groups(tag)
    main = suite.groups("main")
    rows: list[dict[str, Any]] = []
    missing = []
    for m in order_methods(other):
        if m in main:
            rows.append({"method": m, label_key: labels[0], **_score_row(main[m]),
                         "objective": _objective(main[m])})
        else:
            missing.append(f"{m} (main)")
        rows.append({"method": m, label_key: labels[1], **_score_row(other[m]),
                     "objective": _objective(other[m])})
    if not other:
        missing.append(f"every run tagged {tag!r}")
    cols: list[Column] = [("method", "method"), (label_key, label_key), *_SCORE_COLS,
                          ("loss/agg/advantage", "objective")]
    return Table(tag, title, rows, cols, missing=missing, notes=_ci_notes(rows) if rows else [])


def pairing_table(suite: Suite) -> Table:
    """Loss pairing: each variant of tag ``pairing`` (matched) next to its ``main`` run (paper)."""
    return _vs_main_table(suite, "pairing", "Loss pairing: paper vs matched", "pairing",
                          ("paper", "matched"))


def clip_table(suite: Suite) -> Table:
    """Clipped surrogate: each variant of tag ``clip`` (clip on) next to its ``main`` run (off)."""
    return _vs_main_table(suite, "clip", "Clipped surrogate on vs off (reset methods)", "clip",
                          ("off", "on"))


def localization_table(suite: Suite, tag: str = "main") -> Table:
    """Localizer quality of the reset methods of ``tag``: pooled beta, gamma, at-or-before share,
    predicted (1 - beta) gamma, clean/erroneous suffix pass rates, and the observed gain (final
    minus start greedy pass@1) relative to the oracle's."""
    groups = suite.groups(tag)
    rows = []
    gains = {}
    for m, runs in groups.items():
        start = mean_se([r.first("eval0/greedy_pass@1") for r in runs])[0]
        gains[m] = final_summary(runs)["mean"] - start
    for m in order_methods(groups):
        runs = groups[m]
        q = localization_quality(runs)
        if q["n_resets"] == 0:
            continue
        ce = clean_vs_erroneous(runs)
        og = gains.get("oracle", NAN)
        rows.append({"method": m, "n": len(runs), **q,
                     "pass_clean": ce["clean"]["pass_rate"],
                     "pass_erroneous": ce["erroneous"]["pass_rate"],
                     "group_pass_clean": ce["clean"]["group_pass"],
                     "group_pass_erroneous": ce["erroneous"]["group_pass"],
                     "gain": gains[m],
                     # a ratio of two losses (or of anything to a loss) is not a share of the
                     # oracle's improvement: only defined when the oracle actually improved
                     "gain_vs_oracle": gains[m] / og if math.isfinite(og) and og > 0 else NAN})
    cols: list[Column] = [("method", "method"), ("n seeds", "n"), ("resets", "n_resets"),
                          ("judged", "n_judged"), ("fallback share", "fallback_share"),
                          ("β", "beta"), ("γ", "gamma"), ("at or before truth", "at_or_before"),
                          ("(1-β)γ predicted", "predicted"), ("suffix pass clean", "pass_clean"),
                          ("suffix pass erroneous", "pass_erroneous"),
                          ("≥1-of-group clean", "group_pass_clean"),
                          ("≥1-of-group erroneous", "group_pass_erroneous"),
                          ("observed gain (greedy)", "gain"),
                          ("gain / oracle gain (observed)", "gain_vs_oracle")]
    notes = ["β, γ pooled over all steps and seeds against the task's ground-truth first error. "
             "(1-β)γ is the theory's improvement factor relative to the oracle reset (Corollary 1); "
             "'gain / oracle gain' is the observed (final - start) greedy pass@1 relative to the "
             "oracle's, a rough empirical analogue; nan when the oracle's gain is not positive (a ratio "
             "of losses says nothing about localization)."]
    return Table("localization", f"Localization quality (tag {tag})", rows, cols,
                 missing=[] if rows else ["reset runs with rollouts.jsonl"], notes=notes)


def paper_comparison(suite: Suite, method: str = "srpo") -> Table:
    """The paper's headline analysis numbers (OLMo-3-7B on LiveCodeBench, docs/method.md section 7)
    next to this suite's values for ``method`` (tag ``main``). Different model and task: a
    comparison of direction and rough size only."""
    groups = suite.groups("main")
    runs = groups.get(method, [])
    ours: dict[str, float] = {}
    if runs:
        if "grpo" in groups:
            ours["sooner"] = sooner_factor(eval_curve(groups["grpo"]), eval_curve(runs))["factor"]
        q = localization_quality(runs)
        ours["at_or_before"] = q["at_or_before"]
        ce = clean_vs_erroneous(runs)
        ours["clean"] = ce["clean"]["group_pass"]
        ours["erroneous"] = ce["erroneous"]["group_pass"]
        ratios = [v for r in runs for v in r.series("grad/suffix_fresh_ratio")[1]]
        ours["grad_ratio"] = mean_se(ratios)[0]
    items = [
        ("sooner", f"× sooner to GRPO's final level ({method}, greedy)", 2.7),
        ("at_or_before", "share of localizations at or before the first error", 0.5),
        ("clean", "suffix-group pass (≥1 of group) from a clean prefix", 0.287),
        ("erroneous", "suffix-group pass (≥1 of group) from an erroneous prefix", 0.163),
        ("grad_ratio", "suffix / fresh mean per-token |grad| (mean over diagnostics steps)", 2.5),
    ]
    rows = [{"quantity": label, "paper": paper, "this suite": ours.get(key, NAN)}
            for key, label, paper in items]
    return Table("paper", f"Paper (OLMo-3-7B, LiveCodeBench) vs this suite ({method})",
                 rows if runs else [], [("quantity", "quantity"), ("paper", "paper"),
                                        ("this suite", "this suite")],
                 missing=[] if runs else [f"{method} (main)"],
                 notes=["The paper's numbers come from a 7B model on code; ours from a tiny model on "
                        "the CPU-track task. Compare direction, not size."])


def all_tables(suite: Suite) -> list[Table]:
    """Main, split, pairing, clip, localization and paper-comparison tables of a suite."""
    return [main_table(suite), split_table(suite), pairing_table(suite), clip_table(suite),
            localization_table(suite), paper_comparison(suite)]


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy types made plain and non-finite floats replaced by None (JSON null),
    ready for ``respo.commands.figures.write_json``."""
    if isinstance(obj, Curve):
        return json_ready(obj.to_dict())
    if isinstance(obj, Table):
        return json_ready(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_ready(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"cannot make {type(obj).__name__} JSON-ready: {obj!r}")
