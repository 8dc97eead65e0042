"""Numbers of the coverage comparison (issue 12): methods x coverage settings x paired seeds.

A coverage suite (``respo cpu-track --suite coverage``) trains every *arm* (grpo, rrpo, srpo,
oracle, treerl and ``grpo-tok``, GRPO given more prompts per step so that its generated tokens
match SRPO's) at several *settings* of the task's hard-operation frequency, with the same seeds
in every arm and setting (common random numbers: seed ``s`` of all arms of one setting is one
paired unit). ``suite.json`` lists each run with its ``setting``, ``arm`` and ``task``.

This module reads such a suite and computes, per (setting, arm), everything the
``cpu_coverage`` notebook draws and tabulates. Pure functions of the loaded runs (numpy, scipy):
no plotting, no writing. Conventions:

* Held-out **sampled pass@1** (``eval/sampled_pass@1``) is the score. An evaluation logged on
  training step ``s`` (after that step's update) sits at update ``u = s + 1``; the evaluation
  before training (``eval0/*`` on the step-0 line) at ``u = 0``.
* Unfinished runs are welcome: a curve uses at each update only the runs that have logged that
  evaluation, and states that count ``n``. A run's *final* value is its evaluation at its
  configured last update (``config.json`` ``steps``); a run that has not reached it has no final
  value and no AUC and is left out of those (and of the paired differences), again with ``n``.
* Cost axes: the cumulative *trained rollouts* at update ``u`` is the sum of
  ``tokens/trained_chains`` over steps ``0 .. u-1``; the cumulative *generated tokens* the sum of
  ``tokens/generated + tokens/localization`` (a line without ``tokens/localization`` counts 0
  localizer tokens, e.g. GRPO's). Curves on these axes are aligned by update index: the point
  of update ``u`` is drawn at the mean cost over the contributing runs (``x_min``/``x_max`` give
  the spread), with the same pass@1 mean and interval as on the update axis.
* Intervals are two-sided 95% Student-t over seeds, ``t_{0.975, n-1} * sd / sqrt(n)``; with one
  value the interval is NaN (``None`` in JSON).
* Area under the curve (AUC): the trapezoid rule over a run's evaluation points from update 0 to
  its last update, divided by that span, so it is a mean pass@1 over training in [0, 1].
* Paired difference A - B (same setting): per seed present in both with a finite value, then the
  t-interval of those differences.
* Measured coverage ``p`` of a setting: ``eval0/cov_improvable`` (share of visited states whose
  next step is improvable; also ``eval0/cov_first_error``). eval0 is the warm-up policy before
  any update, the same policy in every arm, so the values are first averaged over the arms of a
  seed and the interval is taken over seeds. The measurement's own sampling error over the
  held-out states is not in ``metrics.jsonl``; with a fixed evaluation seed every seed measures
  the same number and the interval has width 0.
* Edge of an arm over GRPO: the paired final difference (absolute), and relative to GRPO's own
  gain (final - start): ``R = mean(d) / mean(g)`` over the seeds with both, ``d_s`` the paired
  final difference and ``g_s`` GRPO's gain on seed ``s``. Its interval is the **delta method**:
  ``SE(R) = sd(d_s - R g_s) / (|mean(g)| sqrt(n))``, half-width ``t_{0.975, n-1} * SE(R)``
  (first order; unreliable when GRPO's gain interval contains 0, which ``gain_excludes_zero``
  reports).
* "N x sooner": on one axis, GRPO's final level is the mean of its curve at its final update;
  factor = GRPO's final x / the first x at which the other arm's mean curve reaches that level
  (linear interpolation, ``respo.analysis.report.crossing_step``). Only defined when the arm's
  curve reaches the level within its run after update 0; otherwise ``None`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from respo.analysis.report import Column, crossing_step, json_ready, markdown_table
from respo.analysis.runs import Run, RunFormatError, load_run, read_json, resolve_dir

__all__ = [
    "ARM_ORDER", "PAIRS", "EDGE_ARMS", "AXES", "METRIC", "CoverageRun", "CoverageSuite",
    "Estimate", "load_coverage_suite", "estimate", "eval_points", "cumulative_cost", "curve",
    "final_value", "start_value", "auc_value", "arm_summary", "paired_difference",
    "measured_p", "grpo_gain", "relative_edge", "sooner", "analyse_setting", "analyse",
    "tables_markdown", "replication_markdown", "REPLICATION_FILE", "order_arms", "seed_key", "total_cost", "TARGET_HALF_WIDTH",
]

ARM_ORDER: tuple[str, ...] = ("grpo", "grpo-tok", "rrpo", "srpo", "oracle", "treerl")
"""Display order of the arms (unknown arms follow, alphabetically)."""

PAIRS: tuple[tuple[str, str], ...] = (("srpo", "grpo"), ("srpo", "rrpo"), ("oracle", "grpo"),
                                      ("oracle", "rrpo"), ("srpo", "grpo-tok"))
"""The paired differences A - B reported for every setting (oracle - RRPO is the theory's own
comparison: resets at improvable states against uniform resets)."""

EDGE_ARMS: tuple[str, ...] = ("srpo", "oracle")
"""Arms whose final edge over GRPO is set against the measured p."""

AXES: dict[str, str] = {
    "updates": "updates done (0 = before training)",
    "generated_tokens": "cumulative generated tokens (incl. localization)",
    "trained_rollouts": "cumulative trained rollouts",
}
"""Curve x axes: key -> axis label."""

METRIC = "sampled_pass@1"
LEVEL = 0.95
TARGET_HALF_WIDTH = 0.04
"""Issue 12's precision target: the 95% half-width of each paired final difference."""
NAN = math.nan

_COST_KEYS: dict[str, tuple[str, ...]] = {
    "generated_tokens": ("tokens/generated", "tokens/localization"),
    "trained_rollouts": ("tokens/trained_chains",),
}
_OPTIONAL_ZERO = frozenset({"tokens/localization"})
"""Cost keys that count 0 on a line that lacks them."""


def seed_key(seed: Any) -> tuple[int, float, str]:
    """Sort key of a seed: numbers in numeric order, then anything else by its text."""
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, float(seed), "")
    return (1, 0.0, str(seed))


def order_arms(names: Iterable[str]) -> list[str]:
    """``names`` sorted by ``ARM_ORDER``, unknown ones last in alphabetical order."""
    rank = {m: i for i, m in enumerate(ARM_ORDER)}
    return sorted(set(names), key=lambda m: (rank.get(m, len(rank)), m))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoverageRun:
    """One run of a coverage suite with its place in the design."""

    run: Run
    setting: str
    arm: str
    seed: Any
    task: str | None

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def final_update(self) -> int:
        """The configured number of updates (``config.json`` ``steps``)."""
        steps = self.run.steps
        if steps is None:
            raise RunFormatError(f"{self.run.path / 'config.json'}: missing the integer field 'steps'")
        return steps


@dataclass
class CoverageSuite:
    """A coverage suite folder: ``suite.json`` and the runs it lists, by setting and arm."""

    name: str
    path: Path
    runs: list[CoverageRun]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Listed runs not loaded yet: (name, reason)."""
    description: str = ""
    warmup: dict[str, Any] | None = None
    settings: list[str] = field(default_factory=list)
    """Settings in the order of their first appearance in ``suite.json``."""

    def arms(self, setting: str) -> list[str]:
        return order_arms(r.arm for r in self.runs if r.setting == setting)

    def group(self, setting: str, arm: str) -> list[CoverageRun]:
        """The runs of one (setting, arm), sorted by seed."""
        return sorted((r for r in self.runs if r.setting == setting and r.arm == arm),
                      key=lambda r: seed_key(r.seed))

    def task(self, setting: str) -> str | None:
        tasks = {r.task for r in self.runs if r.setting == setting and r.task}
        return tasks.pop() if len(tasks) == 1 else None

    def incomplete(self) -> list[CoverageRun]:
        """Loaded runs that have not logged their last configured step."""
        return [r for r in self.runs if not r.run.complete]


def _entry_str(spath: Path, i: int, e: Mapping[str, Any], key: str) -> str:
    v = e.get(key)
    if not isinstance(v, str) or not v:
        raise RunFormatError(f"{spath}: runs[{i}] ({e.get('name')!r}): missing the string field {key!r}")
    return v


def load_coverage_suite(path: str | Path, *, tag: str | None = None) -> CoverageSuite:
    """Parse a coverage suite folder. Every ``suite.json`` entry needs ``name``, ``variant``,
    ``seed``, ``tag`` and ``setting``; ``arm`` defaults to the variant, ``task`` to none.

    ``tag`` keeps only the entries of that tag. Runs whose folder or ``metrics.jsonl`` does not
    exist yet, or whose ``metrics.jsonl`` is empty, are skipped (``CoverageSuite.skipped``);
    malformed files raise ``RunFormatError``. Two runs with the same (setting, arm, seed), or a
    ``config.json`` whose variant disagrees with ``suite.json``, raise too.
    """
    path = resolve_dir(path)
    spath = path / "suite.json"
    data = read_json(spath)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunFormatError(f"{spath}: expected an object with a 'runs' list")
    runs: list[CoverageRun] = []
    skipped: list[tuple[str, str]] = []
    settings: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    listed: set[str] = set()
    for i, e in enumerate(data["runs"]):
        if not isinstance(e, dict):
            raise RunFormatError(f"{spath}: runs[{i}]: must be an object")
        name = _entry_str(spath, i, e, "name")
        if Path(name).name != name or name in (".", ".."):
            raise RunFormatError(f"{spath}: runs[{i}]: 'name' must be a folder name, got {name!r}")
        variant = _entry_str(spath, i, e, "variant")
        if tag is not None and _entry_str(spath, i, e, "tag") != tag:
            continue
        setting = _entry_str(spath, i, e, "setting")
        arm = e.get("arm", variant)
        if not isinstance(arm, str) or not arm:
            raise RunFormatError(f"{spath}: runs[{i}] ({name!r}): 'arm' must be a non-empty string")
        seed = e.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, (int, str)):
            raise RunFormatError(f"{spath}: runs[{i}] ({name!r}): 'seed' must be an integer or a "
                                 f"string, got {seed!r}")
        if name in listed:
            continue  # listed twice (e.g. under two tags): one run
        listed.add(name)
        ident = (setting, arm, str(seed))
        if ident in seen:
            raise RunFormatError(f"{spath}: runs {seen[ident]!r} and {name!r} are both setting "
                                 f"{setting!r}, arm {arm!r}, seed {seed!r}")
        seen[ident] = name
        if setting not in settings:
            settings.append(setting)
        folder = path / name
        if not folder.is_dir():
            skipped.append((name, "run folder not found"))
            continue
        if not (folder / "metrics.jsonl").is_file():
            skipped.append((name, "no metrics.jsonl yet"))
            continue
        run = load_run(folder, rollouts=False, name=name, tags=(str(e.get("tag")),))
        if run.variant != variant:
            raise RunFormatError(f"{folder / 'config.json'}: variant {run.variant!r} but {spath} "
                                 f"says {variant!r}")
        if not run.metrics:
            skipped.append((name, "metrics.jsonl is empty"))
            continue
        task = e.get("task") if isinstance(e.get("task"), str) else None
        runs.append(CoverageRun(run=run, setting=setting, arm=arm, seed=seed, task=task))
    suite_name = str(data["suite"]) if isinstance(data.get("suite"), str) else path.name
    desc = str(data["description"]) if isinstance(data.get("description"), str) else ""
    warmup = None
    if (path / "warmup.json").exists():
        warmup = read_json(path / "warmup.json")
        if not isinstance(warmup, dict):
            raise RunFormatError(f"{path / 'warmup.json'}: expected a JSON object")
    return CoverageSuite(name=suite_name, path=path, runs=runs, skipped=skipped, description=desc,
                         warmup=warmup, settings=settings)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its two-sided t-interval: ``mean ± half_width`` from ``n``
    finite values (half-width NaN with fewer than two)."""

    mean: float
    half_width: float
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "half_width": self.half_width,
                "n": self.n}


def _t(n: int, level: float = LEVEL) -> float:
    from scipy import stats  # imported here: scipy.stats takes about a second to import

    return float(stats.t.ppf(0.5 + level / 2.0, n - 1))


def estimate(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """Mean and t-interval half-width of the finite ``values``."""
    a = np.asarray([float(v) for v in values], dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    if n == 0:
        return Estimate(NAN, NAN, 0)
    if n == 1:
        return Estimate(float(a[0]), NAN, 1)
    return Estimate(float(a.mean()), _t(n, level) * float(a.std(ddof=1)) / math.sqrt(n), n)


# --------------------------------------------------------------------------------------------
# Per-run numbers
# --------------------------------------------------------------------------------------------


def eval_points(run: Run, metric: str = METRIC) -> dict[int, float]:
    """``{update: value}`` of the held-out ``metric``: ``eval0`` at 0, ``eval`` of step s at s+1."""
    out: dict[int, float] = {}
    v0 = run.first(f"eval0/{metric}")
    if math.isfinite(v0):
        out[0] = v0
    steps, vals = run.series(f"eval/{metric}")
    for s, v in zip(steps, vals, strict=True):
        out[int(s) + 1] = float(v)
    return out


def cumulative_cost(run: Run, axis: str) -> dict[int, float]:
    """``{update u: cost of steps 0 .. u-1}`` on a cost axis (``generated_tokens`` or
    ``trained_rollouts``), for every ``u`` up to the first step that lacks a required key."""
    if axis not in _COST_KEYS:
        raise ValueError(f"unknown cost axis {axis!r}; valid: {', '.join(_COST_KEYS)}")
    keys = _COST_KEYS[axis]
    out = {0: 0.0}
    total, expect = 0.0, 0
    for row in run.metrics:
        if int(row["step"]) != expect:
            break  # a gap in the steps: later costs are unknown
        add = 0.0
        for k in keys:
            if k not in row and k in _OPTIONAL_ZERO:
                continue
            v = float(row[k]) if isinstance(row.get(k), (int, float)) else NAN
            if not math.isfinite(v):
                return out
            add += v
        total += add
        expect += 1
        out[expect] = total
    return out


def start_value(run: Run, metric: str = METRIC) -> float:
    """The evaluation before training (``eval0``), NaN when not logged."""
    return eval_points(run, metric).get(0, NAN)


def final_value(cr: CoverageRun, metric: str = METRIC) -> float:
    """The evaluation at the run's configured last update; NaN when not reached yet."""
    return eval_points(cr.run, metric).get(cr.final_update, NAN)


def auc_value(cr: CoverageRun, metric: str = METRIC) -> float:
    """Trapezoid area under the run's curve over updates 0 .. last, divided by the span; NaN
    when the run lacks the evaluation before training or at its last update."""
    pts = eval_points(cr.run, metric)
    last = cr.final_update
    if 0 not in pts or last not in pts or last <= 0:
        return NAN
    xs = np.asarray(sorted(u for u in pts if u <= last), dtype=float)
    ys = np.asarray([pts[int(u)] for u in xs], dtype=float)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / last)


def total_cost(cr: CoverageRun, axis: str) -> float:
    """A finished run's whole cost on a cost axis; NaN when it has not logged every step."""
    c = cumulative_cost(cr.run, axis)
    return c.get(cr.final_update, NAN)


# --------------------------------------------------------------------------------------------
# Curves and summaries of one (setting, arm)
# --------------------------------------------------------------------------------------------


def curve(runs: Sequence[CoverageRun], axis: str = "updates", metric: str = METRIC,
          level: float = LEVEL) -> dict[str, list[Any]]:
    """The mean curve over seeds on one axis (``AXES``), one point per update at which at least
    one run has an evaluation (and, on a cost axis, a known cost).

    Returns lists ``update``, ``x`` (mean cost over the contributing runs; the update itself on
    the update axis), ``x_min``, ``x_max``, ``mean``, ``lo``, ``hi`` (t-interval) and ``n``."""
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid: {', '.join(AXES)}")
    ys: dict[int, list[float]] = {}
    xs: dict[int, list[float]] = {}
    for cr in runs:
        pts = eval_points(cr.run, metric)
        cost = None if axis == "updates" else cumulative_cost(cr.run, axis)
        for u, v in pts.items():
            if cost is not None and u not in cost:
                continue
            ys.setdefault(u, []).append(v)
            xs.setdefault(u, []).append(float(u) if cost is None else cost[u])
    out: dict[str, list[Any]] = {k: [] for k in ("update", "x", "x_min", "x_max", "mean", "lo", "hi", "n")}
    for u in sorted(ys):
        e = estimate(ys[u], level)
        out["update"].append(u)
        out["x"].append(float(np.mean(xs[u])))
        out["x_min"].append(float(np.min(xs[u])))
        out["x_max"].append(float(np.max(xs[u])))
        out["mean"].append(e.mean)
        out["lo"].append(e.lo)
        out["hi"].append(e.hi)
        out["n"].append(e.n)
    return out


def arm_summary(runs: Sequence[CoverageRun], metric: str = METRIC,
                level: float = LEVEL) -> dict[str, Any]:
    """Start, final, AUC and gain (final - start) of one (setting, arm), each an ``Estimate``
    dict over seeds, with the total generated tokens and trained rollouts per finished run and
    the final ``eval/cov_improvable``."""
    starts = [start_value(r.run, metric) for r in runs]
    finals = [final_value(r, metric) for r in runs]
    return {
        "seeds": [r.seed for r in runs],
        "complete": [r.name for r in runs if r.run.complete],
        "start": estimate(starts, level).to_dict(),
        "final": estimate(finals, level).to_dict(),
        "auc": estimate([auc_value(r, metric) for r in runs], level).to_dict(),
        "gain": estimate([f - s for f, s in zip(finals, starts, strict=True)], level).to_dict(),
        "generated_tokens": estimate([total_cost(r, "generated_tokens") for r in runs], level).to_dict(),
        "trained_rollouts": estimate([total_cost(r, "trained_rollouts") for r in runs], level).to_dict(),
        "cov_improvable_final": estimate([final_value(r, "cov_improvable") for r in runs], level).to_dict(),
    }


def _by_seed(runs: Sequence[CoverageRun], value: Any) -> dict[Any, float]:
    out = {}
    for r in runs:
        v = float(value(r))
        if math.isfinite(v):
            out[r.seed] = v
    return out


def paired_difference(a: Sequence[CoverageRun], b: Sequence[CoverageRun], stat: str = "final",
                      metric: str = METRIC, level: float = LEVEL) -> dict[str, Any]:
    """Per-seed ``stat`` (``final`` or ``auc``) of A minus B over the seeds that both have, with
    the ``Estimate`` fields, the ``seeds`` used and the per-seed ``values``."""
    fn = {"final": final_value, "auc": auc_value}.get(stat)
    if fn is None:
        raise ValueError(f"unknown statistic {stat!r}; valid: final, auc")
    va = _by_seed(a, lambda r: fn(r, metric))
    vb = _by_seed(b, lambda r: fn(r, metric))
    common = sorted(set(va) & set(vb), key=seed_key)
    diffs = [va[s] - vb[s] for s in common]
    return {**estimate(diffs, level).to_dict(), "seeds": common, "values": diffs}


def grpo_gain(grpo: Sequence[CoverageRun], metric: str = METRIC,
              level: float = LEVEL) -> dict[str, Any]:
    """GRPO's own gain, final - start per seed, as an ``Estimate`` dict with ``seeds``/``values``."""
    g = _by_seed(grpo, lambda r: final_value(r, metric) - start_value(r.run, metric))
    keys = sorted(g, key=seed_key)
    return {**estimate([g[s] for s in keys], level).to_dict(), "seeds": keys,
            "values": [g[s] for s in keys]}


def relative_edge(diffs: Mapping[Any, float], gains: Mapping[Any, float],
                  level: float = LEVEL) -> dict[str, Any]:
    """``mean(d) / mean(g)`` over the seeds in both mappings (seed -> paired final difference,
    seed -> GRPO's gain), with its delta-method t-interval (see the module docstring).

    ``mean``/``lo``/``hi``/``half_width`` are NaN and ``reason`` says why when the ratio or its
    interval is undefined (no common seed, GRPO's mean gain 0, a single seed)."""
    common = sorted(set(diffs) & set(gains), key=seed_key)
    d = np.asarray([diffs[s] for s in common], dtype=float)
    g = np.asarray([gains[s] for s in common], dtype=float)
    n = len(common)
    out: dict[str, Any] = {"mean": NAN, "lo": NAN, "hi": NAN, "half_width": NAN, "n": n,
                           "seeds": common, "method": "delta", "reason": ""}
    if n == 0:
        out["reason"] = "no seed with both the paired difference and GRPO's gain"
        return out
    gbar = float(g.mean())
    if gbar == 0.0:
        out["reason"] = "GRPO's mean gain is 0: no relative edge"
        return out
    ratio = float(d.mean()) / gbar
    out["mean"] = ratio
    if n < 2:
        out["reason"] = "one seed: no interval"
        return out
    se = float(np.std(d - ratio * g, ddof=1)) / (abs(gbar) * math.sqrt(n))
    hw = _t(n, level) * se
    out.update(half_width=hw, lo=ratio - hw, hi=ratio + hw)
    return out


def sooner(base: Mapping[str, Sequence[Any]], other: Mapping[str, Sequence[Any]],
           base_final_update: int) -> dict[str, Any]:
    """"N x sooner" of ``other`` against GRPO (``base``) on one axis, from two ``curve`` dicts:
    GRPO's final level = its mean at ``base_final_update``; factor = GRPO's x there / the first
    x where the other mean curve reaches it. ``factor`` is None with a ``reason`` otherwise."""
    out: dict[str, Any] = {"factor": None, "reason": "", "target": None, "baseline_x": None,
                           "cross_x": None}
    if base_final_update not in base["update"]:
        out["reason"] = "GRPO has no evaluation at its last update yet"
        return out
    i = list(base["update"]).index(base_final_update)
    target, base_x = float(base["mean"][i]), float(base["x"][i])
    out.update(target=target, baseline_x=base_x)
    if not other["update"]:
        out["reason"] = "no evaluation of this arm yet"
        return out
    cross = crossing_step(np.asarray(other["x"], dtype=float), np.asarray(other["mean"], dtype=float),
                          target)
    if not math.isfinite(cross):
        out["reason"] = "never reaches GRPO's final level within its run"
    elif cross <= 0.0:
        out["reason"] = "at GRPO's final level before training"
    else:
        out.update(factor=base_x / cross, cross_x=cross, reason="reached")
    return out


def measured_p(runs: Sequence[CoverageRun], key: str = "cov_improvable",
               level: float = LEVEL) -> dict[str, Any]:
    """``eval0/<key>`` of one setting: averaged over the arms of each seed, then the t-interval
    over seeds (``n`` = seeds; ``n_runs`` = runs that logged it)."""
    per_seed: dict[Any, list[float]] = {}
    for r in runs:
        v = r.run.first(f"eval0/{key}")
        if math.isfinite(v):
            per_seed.setdefault(r.seed, []).append(v)
    vals = [float(np.mean(per_seed[s])) for s in sorted(per_seed, key=seed_key)]
    return {**estimate(vals, level).to_dict(), "n_runs": sum(len(v) for v in per_seed.values())}


# --------------------------------------------------------------------------------------------
# A whole setting, a whole suite
# --------------------------------------------------------------------------------------------


def analyse_setting(suite: CoverageSuite, setting: str, *, metric: str = METRIC,
                    pairs: Sequence[tuple[str, str]] = PAIRS, edge_arms: Sequence[str] = EDGE_ARMS,
                    level: float = LEVEL) -> dict[str, Any]:
    """Every number of one setting (the ``settings.<name>`` object of ``cpu_results_coverage.json``)."""
    every = [r for r in suite.runs if r.setting == setting]
    groups = {a: suite.group(setting, a) for a in suite.arms(setting)}
    arms: dict[str, Any] = {}
    for a, runs in groups.items():
        arms[a] = {"variant": runs[0].run.variant, **arm_summary(runs, metric, level),
                   "curves": {ax: curve(runs, ax, metric, level) for ax in AXES}}
    if "grpo" in groups:
        last = max(r.final_update for r in groups["grpo"])
        for a in arms:
            if a != "grpo":
                arms[a]["sooner_vs_grpo"] = {ax: sooner(arms["grpo"]["curves"][ax], arms[a]["curves"][ax], last)
                                             for ax in AXES}
    paired = {f"{a}-{b}": {"a": a, "b": b,
                           "final": paired_difference(groups[a], groups[b], "final", metric, level),
                           "auc": paired_difference(groups[a], groups[b], "auc", metric, level)}
              for a, b in pairs if a in groups and b in groups}
    out: dict[str, Any] = {
        "task": suite.task(setting), "arms": arms, "paired": paired,
        "p": {k: measured_p(every, k, level) for k in ("cov_improvable", "cov_first_error")},
        "grpo_gain": None, "edge": {},
    }
    if "grpo" in groups:
        gain = grpo_gain(groups["grpo"], metric, level)
        out["grpo_gain"] = gain
        gains = dict(zip(gain["seeds"], gain["values"], strict=True))
        for a in edge_arms:
            if a not in groups:
                continue
            ab = paired_difference(groups[a], groups["grpo"], "final", metric, level)
            diffs = dict(zip(ab["seeds"], ab["values"], strict=True))
            out["edge"][a] = {"absolute": ab, "relative": relative_edge(diffs, gains, level),
                              "gain_excludes_zero": bool(gain["n"] >= 2 and gain["lo"] > 0)}
    return out


def analyse(suite: CoverageSuite, *, metric: str = METRIC, level: float = LEVEL) -> dict[str, Any]:
    """The content of ``cpu_results_coverage.json`` (JSON-ready: NaN became null)."""
    res = {
        "suite": suite.name, "description": suite.description, "metric": metric, "level": level,
        "conventions": {
            "update": "evaluation logged on training step s sits at update s + 1; eval0 at 0",
            "interval": "two-sided Student-t over seeds: mean ± t(0.5 + level/2, n-1) sd/sqrt(n)",
            "final": "the evaluation at the run's configured last update (unfinished runs have none)",
            "auc": "trapezoid over updates 0..last, divided by the span",
            "paired": "A - B per seed (same setting), t-interval over the common seeds",
            "relative_edge": "mean paired final difference / mean GRPO gain over common seeds; "
                             "delta-method interval sd(d - R g) / (|mean g| sqrt n) * t",
            "p": "eval0 coverage averaged over the arms of a seed, t-interval over seeds",
            "cost_axes": "points aligned by update; x = mean cumulative cost of the runs there",
        },
        "settings_order": list(suite.settings),
        "runs": [{"name": r.name, "setting": r.setting, "arm": r.arm, "variant": r.run.variant,
                  "seed": r.seed, "steps": r.final_update, "updates_done": r.run.last_step + 1,
                  "complete": r.run.complete} for r in suite.runs],
        "skipped": [{"name": n, "reason": why} for n, why in suite.skipped],
        "settings": {st: analyse_setting(suite, st, metric=metric, level=level)
                     for st in suite.settings if any(r.setting == st for r in suite.runs)},
    }
    return json_ready(res)


# --------------------------------------------------------------------------------------------
# Tables (from the ``analyse`` result, so they show exactly the JSON's numbers)
# --------------------------------------------------------------------------------------------


def _flat(prefix: str, est: Mapping[str, Any] | None) -> dict[str, Any]:
    est = est or {}
    return {prefix: est.get("mean"), f"{prefix}_hw": est.get("half_width"),
            f"{prefix}_n": est.get("n")}


def _setting_tables(name: str, st: Mapping[str, Any]) -> list[str]:
    rows = []
    for arm, a in st["arms"].items():
        rows.append({"arm": arm, "variant": a["variant"], "n": len(a["seeds"]),
                     **_flat("start", a["start"]), **_flat("final", a["final"]),
                     **_flat("auc", a["auc"]), **_flat("gen", a["generated_tokens"]),
                     **_flat("roll", a["trained_rollouts"]),
                     "sooner": (a.get("sooner_vs_grpo") or {}).get("updates", {}).get("factor"),
                     "sooner_tok": (a.get("sooner_vs_grpo") or {}).get("generated_tokens", {}).get("factor")})
    main_cols: list[Column] = [
        ("arm", "arm"), ("variant", "variant"), ("runs", "n"), ("start (95% CI)", ("start", "start_hw")),
        ("n", "start_n"), ("final (95% CI)", ("final", "final_hw")), ("n", "final_n"),
        ("AUC (95% CI)", ("auc", "auc_hw")), ("n", "auc_n"),
        ("generated tokens / run", ("gen", "gen_hw")), ("trained rollouts / run", ("roll", "roll_hw")),
        ("x sooner (updates)", "sooner"), ("x sooner (tokens)", "sooner_tok")]
    prow = []
    for key, pr in st["paired"].items():
        for stat in ("final", "auc"):
            d = pr[stat]
            hw = d.get("half_width")
            prow.append({"pair": key.replace("-", " - ", 1), "stat": stat, "mean": d.get("mean"),
                         "hw": hw, "lo": d.get("lo"), "hi": d.get("hi"), "n": d.get("n"),
                         "ok": None if hw is None or stat != "final" else bool(hw <= TARGET_HALF_WIDTH)})
    pair_cols: list[Column] = [("A - B", "pair"), ("statistic", "stat"), ("mean ± half-width", ("mean", "hw")),
                               ("95% CI low", "lo"), ("95% CI high", "hi"), ("n seeds", "n"),
                               ("half-width", "hw"), (f"final half-width <= {TARGET_HALF_WIDTH}", "ok")]
    title = f"Setting {name}" + (f" (task {st['task']})" if st.get("task") else "")
    out = [f"### {title}", "", "Held-out sampled pass@1 per arm (start = before training).", "",
           markdown_table(rows, main_cols), ""]
    if prow:
        out += ["Paired differences over seeds (same seed, same setting):", "",
                markdown_table(prow, pair_cols), ""]
    return out


def tables_markdown(result: Mapping[str, Any], *, source: str | None = None) -> str:
    """The ``cpu_coverage_tables.md`` text: per setting the main and paired-difference tables,
    then the coverage p table with GRPO's gain and the edges, from an ``analyse`` result.
    ``source`` (a line naming where the runs came from) goes under the title."""
    lines = [f"# CPU-track coverage results: suite {result['suite']}", ""]
    if source:
        lines += [source, ""]
    if result.get("description"):
        lines += [str(result["description"]), ""]
    undone = [r["name"] for r in result["runs"] if not r["complete"]]
    if undone:
        lines += ["Unfinished runs (only their logged evaluations count; no final or AUC): "
                  + ", ".join(undone) + ".", ""]
    if result["skipped"]:
        lines += ["Listed but not loaded: " + ", ".join(f"{s['name']} ({s['reason']})"
                                                      for s in result["skipped"]) + ".", ""]
    for name, st in result["settings"].items():
        lines += _setting_tables(name, st)
    prow = []
    for name, st in result["settings"].items():
        row: dict[str, Any] = {"setting": name, "task": st.get("task"),
                               **_flat("p", st["p"]["cov_improvable"]),
                               **_flat("fe", st["p"]["cov_first_error"]),
                               **_flat("gain", st.get("grpo_gain"))}
        for arm in EDGE_ARMS:
            e = st["edge"].get(arm) or {}
            row.update(_flat(f"{arm}_abs", e.get("absolute")))
            row.update(_flat(f"{arm}_rel", e.get("relative")))
        prow.append(row)
    p_cols: list[Column] = [("setting", "setting"), ("task", "task"),
                            ("p = cov_improvable (95% CI)", ("p", "p_hw")), ("n seeds", "p_n"),
                            ("cov_first_error (95% CI)", ("fe", "fe_hw")),
                            ("GRPO gain (95% CI)", ("gain", "gain_hw"))]
    for arm in EDGE_ARMS:
        p_cols += [(f"{arm} - GRPO final", (f"{arm}_abs", f"{arm}_abs_hw")),
                   (f"{arm} edge / GRPO gain", (f"{arm}_rel", f"{arm}_rel_hw"))]
    lines += ["### Measured coverage p and the edge over GRPO", "", markdown_table(prow, p_cols), "",
              "Intervals: two-sided 95% Student-t over seeds; '—' or nan where fewer than two seeds. "
              "p: eval0 coverage of the warm-up policy (averaged over the arms of a seed). "
              "Relative edge: mean paired final difference / mean GRPO gain, delta-method interval "
              "(unreliable when GRPO's gain interval contains 0). x sooner: GRPO's final x / the "
              "first x where the arm's mean curve reaches GRPO's final mean, only where it does "
              "within the run ('—' otherwise; the reasons are in the JSON).", ""]
    return "\n".join(lines)


REPLICATION_FILE = "cpu_coverage_replication.md"
"""Where the ``cpu_coverage`` notebook writes ``replication_markdown``'s table."""


def replication_markdown(reference: Mapping[str, Any], replication: Mapping[str, Any], *,
                         labels: tuple[str, str] = ("reference", "replication"),
                         source: str | None = None) -> str:
    """The same suite run twice (e.g. before and after a trainer change that is not
    bit-identical): per setting, each arm's start and final and each paired difference (final
    and AUC) side by side, from two ``analyse`` results. Settings, arms and pairs present in only
    one of them are left out."""
    ra, rb = labels
    lines = [f"# CPU-track coverage suite {reference['suite']}: {ra} and {rb}", ""]
    if source:
        lines += [source, ""]
    for name, sa in reference["settings"].items():
        sb = replication["settings"].get(name)
        if sb is None:
            continue
        rows = []
        for arm, a in sa["arms"].items():
            b = sb["arms"].get(arm)
            if b is None:
                continue
            rows.append({"what": arm, **_flat("a_start", a["start"]), **_flat("b_start", b["start"]),
                         **_flat("a", a["final"]), **_flat("b", b["final"])})
        prow = []
        for key, pa in sa["paired"].items():
            pb = sb["paired"].get(key)
            if pb is None:
                continue
            for stat in ("final", "auc"):
                prow.append({"what": key.replace("-", " - ", 1), "stat": stat,
                             **_flat("a", pa[stat]), **_flat("b", pb[stat])})
        cols: list[Column] = [("arm", "what"), (f"start, {ra}", ("a_start", "a_start_hw")),
                              (f"start, {rb}", ("b_start", "b_start_hw")),
                              (f"final, {ra}", ("a", "a_hw")), ("n", "a_n"),
                              (f"final, {rb}", ("b", "b_hw")), ("n", "b_n")]
        pcols: list[Column] = [("A - B", "what"), ("statistic", "stat"), (ra, ("a", "a_hw")), ("n", "a_n"),
                               (rb, ("b", "b_hw")), ("n", "b_n")]
        title = f"### Setting {name}" + (f" (task {sa['task']})" if sa.get("task") else "")
        lines += [title, "", "Held-out sampled pass@1 per arm (95% CI over seeds):", "",
                  markdown_table(rows, cols), "", "Paired differences over seeds:", "",
                  markdown_table(prow, pcols), ""]
    lines += ["Intervals: two-sided 95% Student-t over each run's own seeds.", ""]
    return "\n".join(lines)
