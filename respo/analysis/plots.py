"""Matplotlib figures of the CPU track (analogues of the paper's figures 3 to 6).

Every function builds and returns a ``matplotlib.figure.Figure`` without touching pyplot's global
state (no figure manager, nothing left open); save it with ``respo.commands.figures.save_figure``.
Inputs are parsed runs grouped by variant (``Suite.groups(tag)``) or one parsed
``grads/step_*.json``; the numbers come from ``respo.analysis.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from respo.analysis import report
from respo.analysis.report import Curve
from respo.analysis.runs import Run

__all__ = ["METHOD_COLORS", "METHOD_LABELS", "method_color", "method_label",
           "plot_validation_curves", "plot_localization", "plot_grad_heatmap", "plot_grad_ratio",
           "plot_beta_gamma"]

Groups = Mapping[str, Sequence[Run]]

METHOD_COLORS: dict[str, str] = {
    "grpo": "0.45", "rrpo": "C0", "srpo": "C2", "oracle": "C1",
    "srpo-2x4": "C4", "srpo-1x8": "C5", "rrpo-2x4": "C9", "rrpo-1x8": "C6",
    "spo-tree": "C3", "treerl": "C8", "score": "C6", "critique-grpo": "C9",
}
METHOD_LABELS: dict[str, str] = {
    "grpo": "GRPO", "rrpo": "RRPO (uniform reset)", "srpo": "SRPO (self-localized reset)",
    "oracle": "oracle reset", "spo-tree": "SPO-Tree", "treerl": "TreeRL", "score": "SCoRe",
    "critique-grpo": "Critique-GRPO",
}
BASELINES: tuple[str, ...] = ("spo-tree", "treerl", "score", "critique-grpo")
"""The paper's published baselines (drawn dashed)."""
PAPER_GRAD_RATIO = 2.5
"""The paper's suffix/fresh per-token gradient ratio in one update (docs/method.md section 7)."""


def method_color(m: str) -> str:
    """The plotting colour of a variant (GRPO grey, RRPO blue, SRPO green, oracle orange)."""
    return METHOD_COLORS.get(m, "C7")


def method_label(m: str, n: int | None = None) -> str:
    """A readable variant name, with ``(n=..)`` seeds when ``n`` is given."""
    lab = METHOD_LABELS.get(m, m.upper() if "-" not in m else m)
    return lab if n is None else f"{lab} (n={n})"


def _legend(ax: Axes, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _no_data(ax: Axes, msg: str) -> None:
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.4", wrap=True)


def _band(ax: Axes, c: Curve, color: str, label: str, **kw: Any) -> None:
    """Mean line with a ±1 SE band where at least two seeds contributed."""
    ax.plot(c.x, c.mean, color=color, label=label, marker="o" if len(c.x) <= 30 else None,
            ms=3, **kw)
    ok = np.isfinite(c.se)
    if ok.any():
        se = np.where(ok, c.se, 0.0)
        ax.fill_between(c.x, c.mean - se, c.mean + se, where=ok, color=color, alpha=0.2, lw=0,
                        interpolate=False)


def _n_seeds(groups: Groups, methods: Sequence[str]) -> str:
    return ", ".join(f"{m} {len(groups[m])}" for m in methods if m in groups)


# --------------------------------------------------------------------------------------------
# Figure 3: validation curves with the "N x sooner" bracket
# --------------------------------------------------------------------------------------------


def _bracket(ax: Axes, base: Curve, c: Curve, m: str, level: int) -> str:
    sf = report.sooner_factor(base, c)
    name = method_label(m).split(" (")[0]
    if sf["status"] == "reached":
        y = sf["target"]
        x0, x1 = sf["cross_step"], sf["baseline_steps"]
        col = method_color(m)
        ax.annotate("", xy=(x0, y), xytext=(x1, y),
                    arrowprops={"arrowstyle": "|-|", "color": col, "lw": 1.2,
                                "shrinkA": 0, "shrinkB": 0, "mutation_scale": 4})
        ax.text((x0 + x1) / 2, y, f"{name}: {sf['factor']:.1f}× sooner", color=col, ha="center",
                va="bottom" if level % 2 == 0 else "top", fontsize=8)
        return f"{name} reaches GRPO's final level at update {x0:.1f} ({sf['factor']:.2f}× sooner)"
    if sf["status"] == "never":
        return f"{name} never reaches GRPO's final level ({sf['target']:.3f})"
    if sf["status"] == "at_start":
        return f"{name} is at GRPO's final level before training"
    return f"{name}: no data for the bracket"


def plot_validation_curves(groups: Groups, *,
                           metrics: Sequence[str] = ("greedy_pass@1", "sampled_pass@1"),
                           bracket: Sequence[str] = ("srpo",), suptitle: str | None = None) -> Figure:
    """Held-out pass@1 against updates done, one panel per metric: mean ± 1 SE over seeds per
    variant, GRPO's final level as a dotted line and, for each variant in ``bracket``, the
    "reaches GRPO's final level N× sooner" bracket (greedy panel only)."""
    fig = Figure(figsize=(6.2 * len(metrics), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    methods = report.order_methods(groups)
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
        curves = report.method_curves(groups, metric)
        if not curves:
            _no_data(ax, f"no eval/{metric} logged")
        for m, c in curves.items():  # the published baselines dashed
            _band(ax, c, method_color(m), method_label(m, len(groups[m])),
                  ls="--" if m in BASELINES else "-")
        notes = []
        if "grpo" in curves:
            base = curves["grpo"]
            ax.axhline(base.mean[-1], color=method_color("grpo"), ls=":", lw=1,
                       label="GRPO final level")
            if i == 0:
                for j, m in enumerate(b for b in bracket if b in curves and b != "grpo"):
                    notes.append(_bracket(ax, base, curves[m], m, j))
        ax.set_xlabel("updates done (0 = before training)")
        ax.set_ylabel(f"held-out {metric.replace('_', ' ')}")
        ax.set_title(f"{metric.split('_')[0]} pass@1, mean ± 1 SE over seeds\n"
                     f"(seeds: {_n_seeds(groups, methods)})", fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8, loc="best")
        if notes:
            ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize=7,
                    va="bottom", ha="left", color="0.25")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 5: the four localization panels
# --------------------------------------------------------------------------------------------


def plot_localization(groups: Groups, *, methods: Sequence[str] = ("srpo", "rrpo"), bins: int = 10,
                      max_dev: int = 3, success: float = 1.0,
                      suptitle: str | None = None) -> Figure:
    """(a) normalized reset position histogram, (b) share of localizations by deviation
    k - truth, (c) correction rate (suffix pass rate, ± SE over suffix groups) by deviation,
    (d) suffix pass rate from clean vs erroneous prefixes (bars: per suffix; diamonds: share of
    groups with at least one pass). Pooled over steps and seeds of each variant."""
    fig = Figure(figsize=(20, 4.6), layout="constrained")
    ax_a, ax_b, ax_c, ax_d = fig.subplots(1, 4)
    present = [m for m in methods if m in groups and any(True for r in groups[m] for _ in r.resets())]
    k = max(len(present), 1)
    # (a)
    width = 1.0 / bins
    for i, m in enumerate(present):
        h = report.position_histogram(groups[m], bins)
        if h["n"] == 0:
            continue
        left = np.asarray(h["edges"][:-1])
        ax_a.bar(left + width * (i + 0.5) / k, h["share"], width=width / k * 0.95,
                 color=method_color(m), align="center",
                 label=f"{method_label(m)}\n{h['n']} resets, {len(groups[m])} seeds, "
                       f"fallback {h['fallback_share']:.0%}")
    ax_a.set_xlim(0, 1)
    ax_a.set_xlabel("normalized reset position (k - 1) / n_thoughts")
    ax_a.set_ylabel("share of resets")
    ax_a.set_title("(a) where the reset lands", fontsize=10)
    # (b) and (c)
    dev_bins = report.deviation_bins(max_dev)
    xs = np.arange(len(dev_bins))
    bw = 0.8 / k
    any_judged = False
    for i, m in enumerate(present):
        off = -0.4 + bw * (i + 0.5)
        dist = report.deviation_distribution(groups[m], max_dev)
        n = sum(d["count"] for d in dist)
        if n == 0:
            continue
        any_judged = True
        ax_b.bar(xs + off, [d["share"] for d in dist], width=bw * 0.95, color=method_color(m),
                 label=f"{method_label(m)} ({n} judged)")
        corr = report.correction_by_deviation(groups[m], max_dev, success)
        ok = [j for j, d in enumerate(corr) if math.isfinite(d["pass_rate"])]
        if ok:
            ys = np.asarray([corr[j]["pass_rate"] for j in ok])
            err = np.asarray([corr[j]["se"] if math.isfinite(corr[j]["se"]) else 0.0 for j in ok])
            ax_c.bar(xs[ok] + off, ys, width=bw * 0.95, color=method_color(m),
                     yerr=err, capsize=2, error_kw={"lw": 0.8}, label=method_label(m))
            for j, y in zip(ok, ys, strict=True):
                ax_c.text(xs[j] + off, y + 0.01, str(corr[j]["groups"]), ha="center",
                          va="bottom", fontsize=6, color="0.3")
    for ax in (ax_b, ax_c):
        ax.set_xticks(xs, [d[0] for d in dev_bins])
        ax.set_xlim(-0.6, len(dev_bins) - 0.4)
        ax.set_xlabel("deviation k - first error (negative = early)")
    ax_b.set_ylabel("share of localizations")
    ax_b.set_title("(b) deviation from the true first error", fontsize=10)
    ax_c.set_ylabel(f"suffix pass rate (reward ≥ {success:g})")
    ax_c.set_title("(c) correction rate by deviation (± SE; numbers = groups)", fontsize=10)
    if not any_judged:
        for ax in (ax_b, ax_c):
            _no_data(ax, "no reset with a known first error")
    # (d)
    for i, m in enumerate(present):
        ce = report.clean_vs_erroneous(groups[m], success)
        for j, part in enumerate(("clean", "erroneous")):
            st = ce[part]
            x = i + (j - 0.5) * 0.38
            if not math.isfinite(st["pass_rate"]):
                ax_d.text(x, 0.01, "none", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            ax_d.bar(x, st["pass_rate"], width=0.36, color=method_color(m),
                     alpha=1.0 if part == "clean" else 0.45, hatch=None if part == "clean" else "//",
                     edgecolor="0.2", lw=0.5,
                     yerr=st["se"] if math.isfinite(st["se"]) else None, capsize=2)
            ax_d.plot(x, st["group_pass"], marker="D", color="k", ms=4, ls="none")
            top = st["pass_rate"] + (st["se"] if math.isfinite(st["se"]) else 0.0)
            ax_d.text(x, top + 0.01, f"{st['pass_rate']:.2f}\n({st['groups']} gr.)",
                      ha="center", va="bottom", fontsize=6.5)
    if present:
        ax_d.set_xticks(range(len(present)), [method_label(m).split(" (")[0] for m in present])
        ax_d.legend(handles=[Patch(facecolor="0.5", edgecolor="0.2", label="clean prefix (truth ≥ k)"),
                             Patch(facecolor="0.5", alpha=0.45, hatch="//", edgecolor="0.2",
                                   label="erroneous prefix (truth < k)"),
                             ax_d.plot([], [], marker="D", color="k", ls="none",
                                       label="≥1 pass in the group")[0]], fontsize=7.5)
    else:
        for ax in (ax_a, ax_d):
            _no_data(ax, "no resets logged (rollouts.jsonl)")
    ax_d.set_ylabel("suffix-group pass rate")
    ax_d.set_title("(d) suffix pass rate: clean vs erroneous prefix", fontsize=10)
    ax_d.set_ylim(0, 1.1)
    for ax in (ax_a, ax_b, ax_c):
        _legend(ax, fontsize=7.5)
    for ax in (ax_a, ax_b, ax_c, ax_d):
        ax.grid(alpha=0.3, axis="y")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 4: per-thought gradient heatmap
# --------------------------------------------------------------------------------------------


def plot_grad_heatmap(grads: Mapping[str, Any], *, title: str | None = None,
                      cmap: str = "viridis") -> Figure:
    """One update's per-thought gradient magnitudes: rows = rollouts (suffix groups first, their
    copied prefix thoughts as grey boxes, then the fresh group), boxes = thoughts coloured by the
    mean per-token |d loss / d logits|."""
    rows = [r for r in grads["rows"] if r["role"] == "suffix"]
    rows.sort(key=lambda r: r.get("group", 0))
    rows += [r for r in grads["rows"] if r["role"] == "fresh"]
    n_cols = max((len(r["thought_grad"]) for r in rows), default=1)
    fig = Figure(figsize=(max(6.0, 1.0 + 0.45 * n_cols + 2.6), 1.2 + 0.38 * max(len(rows), 1)),
                 layout="constrained")
    ax = fig.subplots()
    vals = [float(v) for r in rows for v in r["thought_grad"] if v is not None]
    vmax = max(vals) if vals else 1.0
    norm = Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    labels = []
    for i, r in enumerate(rows):
        for j, v in enumerate(r["thought_grad"]):
            masked = v is None
            ax.add_patch(Rectangle((j + 0.05, i + 0.1), 0.9, 0.8,
                                   facecolor="0.82" if masked else sm.cmap(norm(float(v))),
                                   edgecolor="0.55" if masked else "none",
                                   hatch="///" if masked else None, lw=0.5))
        rew = r.get("reward")
        adv = r.get("advantage")
        parts = [f"{r['role']} g{r.get('group', '?')}"]
        if rew is not None:
            parts.append(f"r={float(rew):.2g}")
        if adv is not None:
            parts.append(f"A={float(adv):+.2f}")
        labels.append("  ".join(parts))
    n_suffix = sum(1 for r in rows if r["role"] == "suffix")
    if 0 < n_suffix < len(rows):
        ax.axhline(n_suffix + 0.05, color="k", lw=1.2)
    ax.set_xlim(0, n_cols)
    ax.set_ylim(max(len(rows), 1), 0)
    ax.set_yticks(np.arange(len(rows)) + 0.5, labels, fontsize=7.5)
    ax.set_xticks(np.arange(n_cols) + 0.5, [str(j + 1) for j in range(n_cols)], fontsize=7.5)
    ax.set_xlabel("thought index")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    head = title or f"Per-thought gradient magnitude, step {grads.get('step', '?')}"
    if not rows:
        _no_data(ax, "no gradient rows to draw")
        ax.set_xticks([])
        ax.set_xlabel("")
        ax.set_title(head, fontsize=10)
        return fig
    fig.colorbar(sm, ax=ax, label="mean per-token |∂L/∂logits|", shrink=0.9)
    ax.legend(handles=[Patch(facecolor="0.82", edgecolor="0.55", hatch="///",
                             label="copied prefix (masked, no gradient)")],
              loc="upper left", bbox_to_anchor=(0.0, -0.12 if len(rows) > 6 else -0.25),
              fontsize=7.5, frameon=False)
    summ = report.grad_step_summary(grads)
    ratio = (f"suffix/fresh thought-mean ratio {summ['ratio']:.2f}"
             if math.isfinite(summ["ratio"]) else "suffix/fresh ratio n/a")
    ax.set_title(f"{head}\nproblem {grads.get('problem', '?')}; {ratio}", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 6: gradient ratio and self-correction rate per step
# --------------------------------------------------------------------------------------------


def plot_grad_ratio(groups: Groups, *, methods: Sequence[str] = ("srpo", "rrpo", "oracle"),
                    window: int = 1, suptitle: str | None = None) -> Figure:
    """Left: ``grad/suffix_fresh_ratio`` per diagnostics step (mean ± 1 SE over seeds), with 1 and
    the paper's ≈2.5 marked. Right: self-correction rate ``g2/pass_rate`` (solid) next to the
    fresh-group pass rate ``g1/pass_rate`` (dashed) per step."""
    fig = Figure(figsize=(13, 4.4), layout="constrained")
    ax_r, ax_p = fig.subplots(1, 2)
    present = [m for m in methods if m in groups]
    drawn_r = drawn_p = False
    for m in present:
        c = report.metric_curve(groups[m], "grad/suffix_fresh_ratio", window)
        if not c.empty:
            drawn_r = True
            _band(ax_r, c, method_color(m), method_label(m, len(groups[m])))
        c2 = report.metric_curve(groups[m], "g2/pass_rate", window)
        if not c2.empty:
            drawn_p = True
            _band(ax_p, c2, method_color(m), f"{method_label(m, len(groups[m]))}: G2 (suffix)")
        c1 = report.metric_curve(groups[m], "g1/pass_rate", window)
        if not c1.empty:
            ax_p.plot(c1.x, c1.mean, color=method_color(m), ls="--", lw=1, alpha=0.8,
                      label=f"{method_label(m).split(' (')[0]}: G1 (fresh)")
    if drawn_r:
        ax_r.axhline(1.0, color="0.4", lw=0.8)
        ax_r.axhline(PAPER_GRAD_RATIO, color="0.4", lw=0.8, ls=":", label="paper: about 2.5×")
    else:
        _no_data(ax_r, "no grad/suffix_fresh_ratio logged")
    if not drawn_p:
        _no_data(ax_p, "no g2/pass_rate logged")
    win = "" if window == 1 else f" (mean over windows of {window} steps)"
    ax_r.set_title(f"Gradient signal: suffix / fresh mean per-token |grad|{win}\n"
                   f"mean ± 1 SE over seeds", fontsize=10)
    ax_r.set_xlabel("training step")
    ax_r.set_ylabel("suffix / fresh ratio")
    ax_p.set_title(f"Self-correction rate (G2 pass rate) vs fresh pass rate{win}", fontsize=10)
    ax_p.set_xlabel("training step")
    ax_p.set_ylabel("pass rate of trained rollouts")
    for ax in (ax_r, ax_p):
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7.5)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --------------------------------------------------------------------------------------------
# beta, gamma and the predicted factor
# --------------------------------------------------------------------------------------------


def plot_beta_gamma(groups: Groups, *, methods: Sequence[str] = ("srpo", "rrpo", "oracle"),
                    window: int = 1, suptitle: str | None = None) -> Figure:
    """beta (false-discovery rate), gamma (recall) and the theory's (1 - beta) gamma per step
    window, mean ± 1 SE over seeds, one panel each."""
    fig = Figure(figsize=(17, 4.3), layout="constrained")
    axes = fig.subplots(1, 3)
    present = [m for m in methods if m in groups]
    names = {"beta": "β: false-discovery rate", "gamma": "γ: recall (k = true first error)",
             "predicted": "(1-β)γ: predicted improvement factor vs oracle"}
    drawn = False
    for m in present:
        bg = report.beta_gamma_curve(groups[m], window)
        for ax, key in zip(axes, ("beta", "gamma", "predicted"), strict=True):
            if not bg[key].empty:
                drawn = True
                _band(ax, bg[key], method_color(m), method_label(m, len(groups[m])))
    win = "per step" if window == 1 else f"pooled over windows of {window} steps"
    for ax, key in zip(axes, ("beta", "gamma", "predicted"), strict=True):
        ax.set_title(f"{names[key]}\n{win}, mean ± 1 SE over seeds", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if not drawn:
            _no_data(ax, "no localization with a known first error")
        _legend(ax, fontsize=7.5)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
