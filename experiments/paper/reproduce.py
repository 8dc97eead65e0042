"""Reproduce the paper's tables and LiveCodeBench curves at paper scale (GPU machines).

    python experiments/paper/reproduce.py --dry-run all                 # print every command
    python experiments/paper/reproduce.py prepare train eval --models olmo3-7b
    python experiments/paper/reproduce.py tables                        # tables from the results

Stages, run in this order whatever order they are named in (``all`` = every stage):

- ``prepare``: ``respo prepare`` writes the paper's splits to ``--data`` (from the hub, or from
  ``--local DIR``).
- ``train``: every run of ``paper_runs(model, task)`` (variants x seeds 42, 0, 420) through
  ``experiments/launch/single_node.sh`` with the model's GPU count. A run whose
  ``metrics.jsonl`` reaches its last step and whose final checkpoint exists is skipped; a started
  one is resumed (``--resume``), so the stage can be rerun after an interruption.
- ``eval``: ``respo eval run`` on the final checkpoint of every math run (the ten benchmarks,
  greedy pass@1, at most 500 items each), plus each base model (method ``base``, seed 42). Rows
  go to ``<results>/eval_main.jsonl``; benchmarks already there for a (model, method, seed) are
  not evaluated again.
- ``curves``: ``respo eval run`` on every step's checkpoint of the LiveCodeBench runs of grpo,
  rrpo and srpo (share of held-out tests passed), labelled ``<model>@step<k>``, and on the final
  checkpoint of the split variants; the base model is step 0.
- ``tables``: ``<out>/table_main.md``, ``table_splits.md`` and ``lcb_curves.{md,csv,png}``: our
  mean +- std over seeds beside the numbers published in the paper (``docs/method.md`` section 7), each table
  stating the loss pairing its methods were trained with.

Commands are printed shell-quoted before they run (``--dry-run`` prints them and runs nothing;
notes start with ``#``). They run from the repository root, and relative paths given here are
taken from it. Needs ``PAPER_PRESETS`` merged into ``respo.presets.PRESETS`` to
train (checked before the first run).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from respo.jsonl import read_jsonl  # noqa: E402
from respo.presets.paper import (  # noqa: E402
    MAIN_VARIANTS,
    MODELS,
    PAPER_SAMPLING,
    SEEDS,
    SPLIT_VARIANTS,
    TABLE_VARIANTS,
    TASKS,
    TEN_BENCHMARKS,
    VARIANTS,
    PaperRun,
    paper_runs,
)

LAUNCH = ROOT / "experiments" / "launch" / "single_node.sh"
STAGES = ("prepare", "train", "eval", "curves", "tables")

PAIRING_NOTE = {
    "paper": "paper pairing: GRPO with the clipped token-mean surrogate (eps 0.2, dual clip 3), "
             "RRPO/SRPO with unclipped REINFORCE, sequence-mean of token-means",
    "matched": "matched pairing: every method with unclipped REINFORCE, sequence-mean of token-means",
}

# -- published numbers (docs/method.md section 7; targets to compare with, not to tune to) ----------

PUBLISHED_AVERAGE = {
    "olmo3-7b": "site: SRPO 47.3, TreeRL 37.8; secondary (unverified): GRPO 41.5, RRPO 41.9, SRPO 45.8",
    "qwen2.5-14b": "site: SRPO 43.2, TreeRL 37.0; secondary (unverified): GRPO 42.8, RRPO 44.3, SRPO 46.3",
}
PUBLISHED_BENCHMARK = {  # partial SRPO row, "probably OLMo" in docs/method.md section 7; HMMT is OLMo's
    ("olmo3-7b", "oly"): "SRPO 26.1 (partial row, model uncertain)",
    ("olmo3-7b", "commonsenseqa"): "SRPO 80.6 (partial row, model uncertain)",
    ("olmo3-7b", "hmmt_nov_2025"): "SRPO 15.6 +- 4.2, GRPO 11.1 +- 5.7",
    ("olmo3-7b", "math_l5"): "SRPO 67.5 (partial row, model uncertain)",
    ("olmo3-7b", "sciknoweval_materials"): "SRPO 55.9 (partial row, model uncertain)",
}
PUBLISHED_SPLITS = "1x4 (srpo / rrpo) best on most tasks; no per-split numbers in docs/method.md"
PUBLISHED_LCB = {  # OLMo-3-7B, share of held-out tests passed (%), read off the paper's curves
    "start": 7.5, "grpo": 23.1, "rrpo": 24.5, "srpo": 29.8, "step": 11,
}


# -- commands -----------------------------------------------------------------------------------------


def respo(python: str, *args: str) -> list[str]:
    return [python, "-m", "respo.cli", *args]


def last_step(run_dir: Path) -> int | None:
    """The last step logged in ``run_dir/metrics.jsonl`` (None when nothing was logged)."""
    steps = [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    return int(max(steps)) if steps else None


def checkpoint_model(runs_dir: Path, run: PaperRun, step: int) -> Path:
    """``<runs>/<name>/checkpoints/step-NNNNNN/model`` (0-based training step)."""
    return runs_dir / run.name / "checkpoints" / f"step-{step:06d}" / "model"


def run_state(runs_dir: Path, run: PaperRun) -> str:
    """``finished``, ``started`` or ``new``."""
    last = last_step(runs_dir / run.name)
    if last is None:
        return "started" if (runs_dir / run.name / "config.json").exists() else "new"
    final = checkpoint_model(runs_dir, run, run.cfg.steps - 1)
    return "finished" if last >= run.cfg.steps - 1 and final.exists() else "started"


def train_command(run: PaperRun, runs_dir: Path, *, resume: bool, data: Path | None = None) -> list[str]:
    """``single_node.sh`` for one run; ``data`` (the ``respo prepare`` folder), when it is not the
    presets' ``DATA_DIR`` under the repository root, sets ``--data-file``."""
    from respo.presets.paper import DATA_DIR

    cmd = ["bash", str(LAUNCH.relative_to(ROOT)), run.preset, str(run.gpus), *run.train_args()[2:],
           "--runs-dir", str(runs_dir)]
    if data is not None and (ROOT / data).resolve() != (ROOT / DATA_DIR).resolve():
        cmd += ["--data-file", str(data / f"{TASKS[run.task].train_data}.jsonl")]
    return cmd + (["--resume"] if resume else [])


def eval_command(python: str, *, model: str, benchmarks: Sequence[str], data: Path, out: Path, label: str,
                 method: str, seed: int, device: str) -> list[str]:
    """``respo eval run``: the plain thought-by-thought agent, greedy pass@1, paper prompt and limits."""
    s = PAPER_SAMPLING
    return respo(python, "eval", "run", "--model", model, "--benchmarks", *benchmarks, "--data", str(data),
                 "--out", str(out), "--label-model", label, "--method", method, "--seed", str(seed),
                 "--temperature", "0.0", "--n", "1", "--limit", "500",
                 "--delimiter", s.delimiter, "--prompt-variant", s.prompt_variant,
                 "--max-thoughts", str(s.max_thoughts), "--max-thought-tokens", str(s.max_thought_tokens),
                 "--max-response-tokens", str(s.max_response_tokens),
                 "--device", device)


def done_benchmarks(path: Path) -> dict[tuple[str, str, int], set[str]]:
    """Benchmarks already in a results file, per (model label, method, seed)."""
    out: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for row in read_jsonl(path):
        out[(str(row["model"]), str(row["method"]), int(row["seed"]))].add(str(row["benchmark"]))
    return out


class Runner:
    """Prints each command; runs it unless dry."""

    def __init__(self, *, dry: bool, python: str) -> None:
        self.dry = dry
        self.python = python

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def __call__(self, cmd: list[str]) -> None:
        print(shlex.join(cmd), flush=True)
        if not self.dry:
            env = dict(os.environ, PYTHON=self.python)
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)


# -- stages -------------------------------------------------------------------------------------------


def selected_runs(args: argparse.Namespace, tasks: Sequence[str] | None = None) -> list[PaperRun]:
    runs: list[PaperRun] = []
    for m in args.models:
        for t in tasks or args.tasks:
            if t in args.tasks:
                runs += paper_runs(m, t, variants=tuple(args.variants), seeds=tuple(args.seeds),
                                   pairing=args.pairing)
    return runs


def stage_prepare(args: argparse.Namespace, run: Runner) -> None:
    cmd = respo(args.python, "prepare", "--out", str(args.data), "--seed", "42")
    if args.local is not None:
        cmd += ["--local", str(args.local)]
    run(cmd)


def stage_train(args: argparse.Namespace, run: Runner) -> None:
    runs = selected_runs(args)
    from respo.commands.train import load_presets

    missing = sorted({r.preset for r in runs} - set(load_presets().PRESETS))
    if missing:
        msg = (f"{len(missing)} paper presets are not in respo/presets/__init__.py (PRESETS) (e.g. {missing[0]}): "
               "merge respo/presets/paper.py::PAPER_PRESETS into PRESETS")
        if not run.dry:
            raise SystemExit(f"reproduce: {msg}")
        run.note(msg)
    for r in runs:
        state = run_state(args.runs_dir, r)
        if state == "finished":
            run.note(f"skip {r.name}: finished")
            continue
        run(train_command(r, args.runs_dir, resume=state == "started", data=args.data))


def stage_eval(args: argparse.Namespace, run: Runner) -> None:
    out = args.results / "eval_main.jsonl"
    done = done_benchmarks(out)
    for m in args.models:
        label = MODELS[m].label
        todo = [b for b in TEN_BENCHMARKS if b not in done[(label, "base", 42)]]
        if todo:
            run(eval_command(args.python, model=MODELS[m].hub_id, benchmarks=todo, data=args.data, out=out,
                             label=label, method="base", seed=42, device=args.device))
    for r in selected_runs(args, tasks=("math",)):
        label = MODELS[r.model].label
        todo = [b for b in TEN_BENCHMARKS if b not in done[(label, r.method, r.seed)]]
        if not todo:
            run.note(f"skip eval of {r.name}: all benchmarks in {out}")
            continue
        ckpt = checkpoint_model(args.runs_dir, r, r.cfg.steps - 1)
        if not run.dry and not ckpt.exists():
            raise SystemExit(f"reproduce: {ckpt} not found: train {r.name} first")
        run(eval_command(args.python, model=str(ckpt), benchmarks=todo, data=args.data, out=out, label=label,
                         method=r.method, seed=r.seed, device=args.device))


def stage_curves(args: argparse.Namespace, run: Runner) -> None:
    if "lcb" not in args.tasks:
        return
    out = args.results / "lcb_curves.jsonl"
    done = done_benchmarks(out)
    bench = TASKS["lcb"].eval_benchmarks
    for m in args.models:
        label = f"{MODELS[m].label}@step0"
        if not done[(label, "base", 42)]:
            run(eval_command(args.python, model=MODELS[m].hub_id, benchmarks=bench, data=args.data, out=out,
                             label=label, method="base", seed=42, device=args.device))
    for r in selected_runs(args, tasks=("lcb",)):
        # every step for the main comparison (the curves); the final step for the split variants
        steps = range(r.cfg.steps) if r.variant in MAIN_VARIANTS else [r.cfg.steps - 1]
        for step in steps:
            label = f"{MODELS[r.model].label}@step{step + 1}"
            if done[(label, r.method, r.seed)]:
                continue
            ckpt = checkpoint_model(args.runs_dir, r, step)
            if not run.dry and not ckpt.exists():
                raise SystemExit(f"reproduce: {ckpt} not found: train {r.name} (keeping every checkpoint) first")
            run(eval_command(args.python, model=str(ckpt), benchmarks=bench, data=args.data, out=out,
                             label=label, method=r.method, seed=r.seed, device=args.device))


# -- tables -------------------------------------------------------------------------------------------


def _fmt(cell: Any) -> str:
    if cell is None:
        return "-"
    if cell.n_seeds < 2 or math.isnan(cell.std):
        return f"{cell.mean:.1f}"
    return f"{cell.mean:.1f} ± {cell.std:.1f}"


def _pairing_of(methods: Sequence[str]) -> str:
    kinds = {"matched" if x.endswith("-matched") else "paper" for x in methods if x != "base"}
    if not kinds:
        return "no trained methods"
    return " / ".join(PAIRING_NOTE[k] for k in sorted(kinds))


def main_table(rows: list[dict[str, Any]], *, methods: Sequence[str], title: str,
               published_benchmark: dict[tuple[str, str], str], published_average: dict[str, str],
               published_column: str = "published (docs/method.md §7)") -> str:
    """Markdown: per model, benchmarks x methods (mean ± std over seeds) beside published numbers."""
    from respo.eval import AVERAGE, records_from_rows, summarize

    cells = summarize(records_from_rows(rows, metric="mean_reward", scale=100.0), ddof=1)
    out = [f"# {title}", ""]
    for key, m in MODELS.items():
        present = [x for x in methods if any(c[0] == m.label and c[1] == x for c in cells)]
        out += [f"## {m.label}", ""]
        if not present:
            out += ["(no results yet)", ""]
            continue
        seeds = sorted({int(r["seed"]) for r in rows if r["model"] == m.label and r["method"] != "base"})
        out += [f"Loss pairing: {_pairing_of(present)}.",
                f"Greedy pass@1 (%), mean ± sample std over seeds {seeds}; base: seed 42 only.", ""]
        out.append("| benchmark | " + " | ".join(present) + f" | {published_column} |")
        out.append("|---|" + "---:|" * len(present) + "---|")
        for b in [*TEN_BENCHMARKS, AVERAGE]:
            pub = published_average.get(key, "") if b == AVERAGE else published_benchmark.get((key, b), "")
            vals = [_fmt(cells.get((m.label, x, b))) for x in present]
            out.append(f"| {b} | " + " | ".join(vals) + f" | {pub} |")
        out.append("")
    return "\n".join(out)


def lcb_curves(rows: list[dict[str, Any]]) -> tuple[str, str, dict[tuple[str, str], list[tuple[int, float, float]]]]:
    """(Markdown, CSV, series): held-out tests passed (%) per step, mean and SE over seeds."""
    import numpy as np

    by: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    base: dict[str, float] = {}
    for r in rows:
        label, _, step_text = str(r["model"]).rpartition("@step")
        score = 100.0 * float(r["metrics"]["mean_reward"])
        if r["method"] == "base":
            base[label] = score
        else:
            by[(label, str(r["method"]), int(step_text))].append(score)
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for (label, method, k), xs in sorted(by.items()):
        a = np.asarray(xs)
        se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
        series[(label, method)].append((k, float(a.mean()), se))
    for (label, _method), pts in series.items():
        if label in base:
            pts.insert(0, (0, base[label], float("nan")))
    csv = ["model,method,step,mean,se"] + [f"{lab},{me},{s},{mu:.4f},{se:.4f}"
                                           for (lab, me), pts in series.items() for s, mu, se in pts]
    md = ["# LiveCodeBench v6 medium: held-out tests passed (%) per training step", "",
          f"Loss pairing: {_pairing_of([me for _, me in series])}.",
          f"Published (OLMo-3-7B, docs/method.md §7): all start near {PUBLISHED_LCB['start']}%; at step "
          f"{PUBLISHED_LCB['step']} SRPO {PUBLISHED_LCB['srpo']}%, RRPO {PUBLISHED_LCB['rrpo']}%, "
          f"GRPO {PUBLISHED_LCB['grpo']}%.", "",
          "| model | method | " + " | ".join(f"step {s}" for s in range(12)) + " |",
          "|---|---|" + "---:|" * 12]
    for (lab, me), pts in series.items():
        vals = {s: f"{mu:.1f}" for s, mu, _ in pts}
        md.append(f"| {lab} | {me} | " + " | ".join(vals.get(s, "-") for s in range(12)) + " |")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n", dict(series)


def plot_curves(series: dict[tuple[str, str], list[tuple[int, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({lab for lab, _ in series})
    fig, axes = plt.subplots(1, max(len(labels), 1), figsize=(5 * max(len(labels), 1), 3.5), squeeze=False)
    for ax, lab in zip(axes[0], labels, strict=False):
        for (l2, me), pts in sorted(series.items()):
            if l2 != lab:
                continue
            s = [p[0] for p in pts]
            mu = [p[1] for p in pts]
            se = [0.0 if math.isnan(p[2]) else p[2] for p in pts]
            line = ax.plot(s, mu, marker="o", ms=3, label=me)[0]
            ax.fill_between(s, [a - b for a, b in zip(mu, se, strict=True)],
                            [a + b for a, b in zip(mu, se, strict=True)], color=line.get_color(), alpha=0.2)
            if lab.startswith("OLMo") and me in PUBLISHED_LCB:
                ax.scatter([PUBLISHED_LCB["step"]], [PUBLISHED_LCB[me]], marker="*", s=90,
                           color=line.get_color(), edgecolor="k", zorder=5)
        ax.set_title(f"{lab} (stars: published)" if lab.startswith("OLMo") else lab)
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out tests passed (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def stage_tables(args: argparse.Namespace, run: Runner) -> None:
    main_rows = read_jsonl(args.results / "eval_main.jsonl")
    curve_rows = read_jsonl(args.results / "lcb_curves.jsonl")
    out = args.out
    suffix = "" if args.pairing == "paper" else "-matched"
    methods = ["base", *[v + suffix for v in TABLE_VARIANTS]]
    splits = [v + suffix for v in SPLIT_VARIANTS]
    targets = [out / "table_main.md", out / "table_splits.md", out / "lcb_curves.md"]
    for t in targets:
        run.note(f"write {t}")
    if run.dry:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "table_main.md").write_text(main_table(
        main_rows, methods=methods, title="Main results: ten benchmarks",
        published_benchmark=PUBLISHED_BENCHMARK, published_average=PUBLISHED_AVERAGE))
    (out / "table_splits.md").write_text(main_table(
        main_rows, methods=splits, title="Sampling splits (same 8-rollout budget)",
        published_benchmark={}, published_average={k: PUBLISHED_SPLITS for k in MODELS}))
    md, csv, series = lcb_curves(curve_rows)
    (out / "lcb_curves.md").write_text(md)
    (out / "lcb_curves.csv").write_text(csv)
    if series:
        plot_curves(series, out / "lcb_curves.png")


# -- entry ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+", choices=[*STAGES, "all"], help="what to do (in pipeline order)")
    ap.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--pairing", default="paper", choices=["paper", "matched"],
                    help="loss pairing of the trained runs (flagged in every table)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/paper"))
    ap.add_argument("--data", type=Path, default=Path("data/prepared"))
    ap.add_argument("--local", type=Path, default=None, help="local dataset copies for respo prepare")
    ap.add_argument("--results", type=Path, default=Path("results/paper"))
    ap.add_argument("--out", type=Path, default=Path("paper_figures/paper"))
    ap.add_argument("--device", default="cuda", help="device of respo eval run")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the launched commands")
    args = ap.parse_args(argv)
    # Commands run from the repository root (single_node.sh changes to it), so relative paths
    # are taken from there too, whatever the current directory.
    for key in ("runs_dir", "data", "local", "results", "out"):
        p = getattr(args, key)
        if p is not None and not p.is_absolute():
            setattr(args, key, ROOT / p)
    if "all" in args.stages:
        args.stages = list(STAGES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Runner(dry=args.dry_run, python=args.python)
    for stage in STAGES:
        if stage in args.stages:
            run.note(f"stage {stage}")
            globals()[f"stage_{stage}"](args, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
