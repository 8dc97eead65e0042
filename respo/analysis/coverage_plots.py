"""Matplotlib figures of the coverage comparison (``notebooks/cpu_coverage.ipynb``).

Both functions draw from the result of ``respo.analysis.coverage.analyse`` (the content of
``cpu_results_coverage.json``), so a figure shows exactly the numbers the JSON holds. They build
and return a ``matplotlib.figure.Figure`` without pyplot's global state; save it with
``respo.commands.figures.save_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter

from respo.analysis.coverage import AXES, EDGE_ARMS
from respo.analysis.plots import method_color, method_label

__all__ = ["arm_color", "arm_label", "plot_coverage_curves", "plot_coverage_edge"]

_ROWS: tuple[str, ...] = ("updates", "generated_tokens", "trained_rollouts")


def arm_color(arm: str) -> str:
    """The variant's colour; the token-matched GRPO arm is drawn darker than GRPO."""
    return "0.1" if arm == "grpo-tok" else method_color(arm)


def arm_label(arm: str) -> str:
    return "GRPO, token-matched" if arm == "grpo-tok" else method_label(arm)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _arr(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([_num(v) for v in values], dtype=float)


def _curve_panel(ax: Axes, st: Mapping[str, Any], axis: str) -> None:
    for arm, a in st["arms"].items():
        c = a["curves"][axis]
        if not c["update"]:
            continue
        x, mean, lo, hi = _arr(c["x"]), _arr(c["mean"]), _arr(c["lo"]), _arr(c["hi"])
        col = arm_color(arm)
        ls = "--" if arm in ("grpo-tok", "treerl") else "-"
        ax.plot(x, mean, color=col, ls=ls, marker="o", ms=3,
                label=f"{arm_label(arm)} (n={c['n'][-1]})")
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(x, np.where(ok, lo, mean), np.where(ok, hi, mean), where=ok, color=col,
                            alpha=0.15, lw=0)
    ax.grid(alpha=0.3)


def plot_coverage_curves(result: Mapping[str, Any], *, suptitle: str | None = None) -> Figure:
    """Held-out sampled pass@1 per arm, mean with its 95% t-band over seeds: one column per
    setting, rows against updates, cumulative generated tokens and cumulative trained rollouts."""
    settings = list(result["settings"])
    ncol = max(1, len(settings))
    fig = Figure(figsize=(4.6 * ncol, 3.4 * len(_ROWS)), layout="constrained")
    axes = np.asarray(fig.subplots(len(_ROWS), ncol, squeeze=False))
    if not settings:
        axes[0, 0].text(0.5, 0.5, "no runs loaded", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    for j, name in enumerate(settings):
        st = result["settings"][name]
        p = st["p"]["cov_improvable"]["mean"]
        head = f"{name}" + (f", measured p = {p:.3g}" if p is not None else "")
        for i, axis in enumerate(_ROWS):
            ax = axes[i, j]
            _curve_panel(ax, st, axis)
            ax.set_xlabel(AXES[axis])
            if j == 0:
                ax.set_ylabel("held-out sampled pass@1")
            if i == 0:
                ax.set_title(head, fontsize=10)
            if axis != "updates":
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        if st["arms"]:
            axes[0, j].legend(fontsize=7, loc="best")
    fig.suptitle((suptitle + "\n" if suptitle else "")
                 + "mean and 95% t-interval over paired seeds (n = seeds at the last point)",
                 fontsize=11)
    return fig


def _edge_points(result: Mapping[str, Any], arm: str, kind: str) -> list[tuple[float, float, float, float, float]]:
    pts = []
    for st in result["settings"].values():
        p = st["p"]["cov_improvable"]
        e = (st["edge"].get(arm) or {}).get(kind)
        if e is None or p["mean"] is None or e["mean"] is None or p["mean"] <= 0:
            continue
        pts.append((_num(p["mean"]), _num(p["lo"]), _num(p["hi"]), _num(e["mean"]), _num(e["half_width"])))
    return sorted(pts)


def plot_coverage_edge(result: Mapping[str, Any], *, arms: Sequence[str] = EDGE_ARMS,
                       suptitle: str | None = None) -> Figure:
    """The final edge over GRPO (paired per seed) against the measured coverage p (log x), with
    95% intervals on both: absolute (left) and relative to GRPO's own gain (right). An arrow
    marks the theory's predicted direction: the edge of targeted resets grows as p shrinks."""
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    titles = {"absolute": "final sampled pass@1: arm - GRPO (paired)",
              "relative": "edge / GRPO's own gain (final - start)"}
    for ax, kind in zip(axes, ("absolute", "relative"), strict=True):
        drawn = False
        for k, arm in enumerate(arms):
            pts = _edge_points(result, arm, kind)
            if not pts:
                continue
            drawn = True
            a = np.asarray(pts, dtype=float)
            # a small multiplicative offset keeps the two arms' error bars apart at the same p
            x = a[:, 0] * (1.0 + 0.04 * (k - (len(arms) - 1) / 2))
            xerr = np.vstack([a[:, 0] - a[:, 1], a[:, 2] - a[:, 0]])
            xerr = np.where(np.isfinite(xerr), xerr, 0.0)
            yerr = np.where(np.isfinite(a[:, 4]), a[:, 4], 0.0)
            ax.errorbar(x, a[:, 3], yerr=yerr, xerr=xerr, color=arm_color(arm), marker="o",
                        ms=5, capsize=3, lw=1.2, label=arm_label(arm))
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15, y=0.1)
        ax.set_xlabel("measured coverage p (eval0 cov_improvable, log scale)")
        ax.set_ylabel("edge" if kind == "absolute" else "edge / GRPO gain")
        ax.set_title(titles[kind], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if not drawn:
            ax.text(0.5, 0.5, "no setting with both GRPO and the arm finished", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9, color="0.4")
        else:
            ax.legend(fontsize=8, loc="lower right")
        # the predicted direction, in a strip above the data: up and to the left
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0, y1 + 0.28 * (y1 - y0))
        ax.annotate("", xy=(0.6, 0.97), xytext=(0.97, 0.87), xycoords="axes fraction",
                    arrowprops={"arrowstyle": "->", "color": "C3", "lw": 1.5})
        ax.text(0.97, 0.80, "theory: the edge grows as p shrinks", transform=ax.transAxes,
                color="C3", fontsize=8, ha="right", va="bottom")
    fig.suptitle((suptitle + "\n" if suptitle else "")
                 + "95% t-intervals over paired seeds (relative: delta method)", fontsize=11)
    return fig
