"""``respo.analysis.coverage`` and ``notebooks/cpu_coverage.ipynb`` on a small fake coverage suite.

The suite is written by hand in the on-disk format of ``experiments/notes/run-format.md`` (with
the coverage suite's ``setting``/``arm``/``task`` fields in ``suite.json``). Expected numbers are
worked out by hand below or recomputed here from the tables with plain numpy and
``scipy.stats.t``, independently of the module's code paths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from scipy import stats

from respo.analysis import coverage as cov
from respo.analysis.runs import RunFormatError, resolve_dir
from respo.commands import figures

# --------------------------------------------------------------------------------------------
# Fake suite: 2 settings x arms x 3 seeds, 4 steps, evaluations on steps 1 and 3 (updates 2, 4)
# and before training (update 0). Values are sampled pass@1 at updates (0, 2, 4).
# --------------------------------------------------------------------------------------------

STEPS = 4
PASS: dict[tuple[str, str], dict[int, tuple[float, ...]]] = {
    ("p03", "grpo"): {0: (0.30, 0.36, 0.42), 1: (0.31, 0.37, 0.45), 2: (0.32, 0.38, 0.42)},
    ("p03", "srpo"): {0: (0.30, 0.44, 0.48), 1: (0.31, 0.46, 0.52), 2: (0.32, 0.45, 0.50)},
    ("p03", "oracle"): {0: (0.30, 0.46, 0.52), 1: (0.31, 0.47, 0.55), 2: (0.32, 0.48, 0.53)},
    ("p03", "rrpo"): {0: (0.30, 0.34, 0.40), 1: (0.31, 0.35, 0.41), 2: (0.32, 0.36, 0.42)},
    ("p03", "grpo-tok"): {0: (0.30, 0.38, 0.44), 1: (0.31, 0.39, 0.46), 2: (0.32, 0.40, 0.45)},
    ("p03", "treerl"): {0: (0.30, 0.40, 0.47)},  # one seed: no interval
    ("p30", "grpo"): {0: (0.40, 0.50, 0.58), 1: (0.41, 0.52, 0.60), 2: (0.42, 0.50, 0.59)},
    ("p30", "srpo"): {0: (0.40, 0.51, 0.60), 1: (0.41, 0.53, 0.61), 2: (0.42, 0.52)},  # s2 unfinished
    ("p30", "oracle"): {0: (0.40, 0.52, 0.61), 1: (0.41, 0.54, 0.62)},  # s2 listed, no folder
    ("p30", "rrpo"): {0: (0.40, 0.49, 0.57), 1: (0.41, 0.51, 0.60), 2: (0.42, 0.50, 0.58)},
    ("p30", "grpo-tok"): {0: (0.40, 0.51, 0.59), 1: (0.41, 0.52, 0.61), 2: (0.42, 0.51, 0.60)},
}
TASKS = {"p03": "arithmetic-hard:0.03", "p30": "arithmetic-hard:0.3"}
# eval0 coverage of the warm-up policy, per (setting, seed): the same in every arm
COV0 = {("p03", 0): 0.020, ("p03", 1): 0.022, ("p03", 2): 0.027,
        ("p30", 0): 0.20, ("p30", 1): 0.23, ("p30", 2): 0.21}
# per-step costs: generated tokens (+ seed * 10), localizer tokens, trained rollouts
GEN = {"grpo": 1000, "grpo-tok": 1250, "rrpo": 1100, "srpo": 1200, "oracle": 1150, "treerl": 1300}
LOC = {"srpo": 50}
CHAINS = {"grpo": 128, "grpo-tok": 160, "rrpo": 144, "srpo": 144, "oracle": 144, "treerl": 150}
VARIANT = {"grpo-tok": "grpo"}


def _write_run(folder: Path, setting: str, arm: str, seed: int, vals: tuple[float, ...]) -> None:
    folder.mkdir(parents=True)
    cfg = {"variant": VARIANT.get(arm, arm), "seed": seed, "steps": STEPS, "task": TASKS[setting]}
    (folder / "config.json").write_text(json.dumps(cfg))
    n_steps = 2 * (len(vals) - 1)  # an unfinished run has logged fewer steps
    lines = []
    for step in range(n_steps):
        row: dict[str, Any] = {"step": step, "tokens/generated": GEN[arm] + 10 * seed,
                               "tokens/trained_chains": CHAINS[arm], "time/step": 1.0}
        if arm in LOC:
            row["tokens/localization"] = LOC[arm]
        if step == 0:
            row.update({"eval0/sampled_pass@1": vals[0], "eval0/cov_improvable": COV0[setting, seed],
                        "eval0/cov_first_error": 2 * COV0[setting, seed]})
        if step % 2 == 1:
            row.update({"eval/sampled_pass@1": vals[(step + 1) // 2], "eval/cov_improvable": 0.01,
                        "eval/cov_first_error": 0.02, "eval/step_error": 0.05})
        lines.append(json.dumps(row))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def make_suite(root: Path) -> Path:
    entries = []
    for seed in range(3):
        for setting in ("p03", "p30"):
            for arm in ("grpo", "rrpo", "srpo", "oracle", "treerl", "grpo-tok"):
                if (setting, arm) not in PASS or (seed not in PASS[setting, arm]
                                                  and (setting, arm) != ("p30", "oracle")):
                    continue
                name = f"{setting}-{arm}-s{seed}"
                entries.append({"name": name, "variant": VARIANT.get(arm, arm), "seed": seed,
                                "tag": "main", "setting": setting, "arm": arm, "task": TASKS[setting]})
                if seed in PASS[setting, arm]:
                    _write_run(root / name, setting, arm, seed, PASS[setting, arm][seed])
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.json").write_text(json.dumps({"suite": "fake-coverage", "description": "A fake.",
                                                 "runs": entries}))
    return root


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_suite(tmp_path_factory.mktemp("cov") / "coverage")


@pytest.fixture(scope="module")
def result(suite_dir: Path) -> dict[str, Any]:
    return cov.analyse(cov.load_coverage_suite(suite_dir))


def _t_ci(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def _col(setting: str, arm: str, idx: int) -> list[float]:
    return [v[idx] for v in PASS[setting, arm].values() if len(v) > idx]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_tolerates_missing_and_unfinished_runs(suite_dir: Path) -> None:
    suite = cov.load_coverage_suite(suite_dir)
    assert suite.settings == ["p03", "p30"]
    assert suite.arms("p03") == ["grpo", "grpo-tok", "rrpo", "srpo", "oracle", "treerl"]
    assert suite.skipped == [("p30-oracle-s2", "run folder not found")]
    assert [r.name for r in suite.incomplete()] == ["p30-srpo-s2"]
    assert suite.task("p30") == "arithmetic-hard:0.3"
    tok = suite.group("p03", "grpo-tok")
    assert [r.seed for r in tok] == [0, 1, 2] and {r.run.variant for r in tok} == {"grpo"}


def test_load_rejects_duplicate_cells_and_missing_setting(tmp_path: Path) -> None:
    root = make_suite(tmp_path / "s")
    data = json.loads((root / "suite.json").read_text())
    dup = dict(data["runs"][0], name="copy")
    (root / "suite.json").write_text(json.dumps({"runs": [*data["runs"], dup]}))
    with pytest.raises(RunFormatError, match="'p03-grpo-s0' and 'copy' are both setting 'p03', arm 'grpo'"):
        cov.load_coverage_suite(root)
    bad = [{k: v for k, v in data["runs"][0].items() if k != "setting"}]
    (root / "suite.json").write_text(json.dumps({"runs": bad}))
    with pytest.raises(RunFormatError, match=r"runs\[0\] \('p03-grpo-s0'\): missing the string field 'setting'"):
        cov.load_coverage_suite(root)


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def test_curve_counts_and_intervals_with_an_unfinished_run(result: dict[str, Any]) -> None:
    c = result["settings"]["p30"]["arms"]["srpo"]["curves"]["updates"]
    assert c["update"] == [0, 2, 4] and c["n"] == [3, 3, 2]  # seed 2 stopped after update 2
    m, hw = _t_ci([0.60, 0.61])
    assert c["mean"][2] == pytest.approx(m) and c["hi"][2] - c["mean"][2] == pytest.approx(hw)
    assert c["hi"][2] == pytest.approx(0.605 + 12.7062047 * 0.005)  # t(0.975, 1) * sd / sqrt 2
    g = result["settings"]["p03"]["arms"]["grpo"]["curves"]["updates"]
    assert g["mean"] == pytest.approx([0.31, 0.37, 0.43]) and g["n"] == [3, 3, 3]
    one = result["settings"]["p03"]["arms"]["treerl"]["curves"]["updates"]
    assert one["n"] == [1, 1, 1] and one["lo"] == [None, None, None]


def test_cost_axes_include_localization_tokens(result: dict[str, Any]) -> None:
    s = result["settings"]["p03"]["arms"]["srpo"]
    tok = s["curves"]["generated_tokens"]
    # update u: u steps of (1200 + 10 seed + 50 localizer tokens); mean seed 1
    assert tok["x"] == pytest.approx([0.0, 2 * 1260, 4 * 1260])
    assert tok["x_min"] == pytest.approx([0.0, 2 * 1250, 4 * 1250])
    assert tok["x_max"] == pytest.approx([0.0, 2 * 1270, 4 * 1270])
    assert s["curves"]["trained_rollouts"]["x"] == pytest.approx([0, 288, 576])
    assert s["generated_tokens"]["mean"] == pytest.approx(4 * 1260)
    assert s["generated_tokens"]["half_width"] == pytest.approx(_t_ci([5000, 5040, 5080])[1])
    # GRPO logs no localizer tokens: they count 0
    assert result["settings"]["p03"]["arms"]["grpo"]["generated_tokens"]["mean"] == pytest.approx(4 * 1010)
    # the unfinished run has no total: n 2
    assert result["settings"]["p30"]["arms"]["srpo"]["generated_tokens"]["n"] == 2


def test_final_and_auc_by_hand(result: dict[str, Any]) -> None:
    a = result["settings"]["p03"]["arms"]["srpo"]
    m, hw = _t_ci([0.48, 0.52, 0.50])
    assert a["final"]["mean"] == pytest.approx(m) and a["final"]["half_width"] == pytest.approx(hw)
    # AUC of (0.30, 0.44, 0.48) at updates 0, 2, 4: (2 * 0.37 + 2 * 0.46) / 4 = 0.415
    aucs = [(2 * (v0 + v2) / 2 + 2 * (v2 + v4) / 2) / 4 for v0, v2, v4 in PASS["p03", "srpo"].values()]
    assert aucs[0] == pytest.approx(0.415)
    m, hw = _t_ci(aucs)
    assert a["auc"]["mean"] == pytest.approx(m) and a["auc"]["half_width"] == pytest.approx(hw)
    assert a["auc"]["n"] == 3 and a["start"]["mean"] == pytest.approx(0.31)
    # unfinished run: no final, no AUC
    s30 = result["settings"]["p30"]["arms"]["srpo"]
    assert s30["final"]["n"] == 2 and s30["auc"]["n"] == 2 and s30["start"]["n"] == 3


def test_paired_differences_by_hand(result: dict[str, Any]) -> None:
    p03 = result["settings"]["p03"]["paired"]
    assert set(p03) == {"srpo-grpo", "srpo-rrpo", "oracle-grpo", "oracle-rrpo", "srpo-grpo-tok"}
    d = [a - b for a, b in zip(_col("p03", "srpo", 2), _col("p03", "grpo", 2), strict=True)]
    assert d == pytest.approx([0.06, 0.07, 0.08])
    m, hw = _t_ci(d)  # 0.07 ± t(0.975, 2) * 0.01 / sqrt 3 = 0.07 ± 0.02484
    assert hw == pytest.approx(4.302653 * 0.01 / math.sqrt(3))
    sg = p03["srpo-grpo"]["final"]
    assert sg["mean"] == pytest.approx(m) and sg["half_width"] == pytest.approx(hw)
    assert sg["lo"] == pytest.approx(m - hw) and sg["n"] == 3 and sg["seeds"] == [0, 1, 2]
    # pairing matters: the unpaired interval of the same means would be far wider
    unpaired = math.hypot(_t_ci(_col("p03", "srpo", 2))[1], _t_ci(_col("p03", "grpo", 2))[1])
    assert hw < unpaired
    # AUC differences, per seed
    auc = lambda v: (v[0] + 2 * v[1] + v[2]) / 4  # noqa: E731  trapezoid over 0, 2, 4 / 4
    da = [auc(a) - auc(b) for a, b in zip(PASS["p03", "oracle"].values(), PASS["p03", "grpo"].values(),
                                          strict=True)]
    m, hw = _t_ci(da)
    og = p03["oracle-grpo"]["auc"]
    assert og["mean"] == pytest.approx(m) and og["half_width"] == pytest.approx(hw)
    # p30: SRPO seed 2 unfinished, the oracle's seed 2 missing -> 2 pairs each
    p30 = result["settings"]["p30"]["paired"]
    assert p30["srpo-grpo"]["final"]["n"] == 2 and p30["srpo-grpo"]["final"]["seeds"] == [0, 1]
    assert p30["srpo-grpo"]["final"]["mean"] == pytest.approx(np.mean([0.02, 0.01]))
    assert p30["srpo-grpo"]["auc"]["n"] == 2 and p30["oracle-grpo"]["final"]["n"] == 2
    assert p30["srpo-grpo-tok"]["final"]["values"] == pytest.approx([0.01, 0.0])


def test_measured_p_per_setting(result: dict[str, Any]) -> None:
    p = result["settings"]["p03"]["p"]["cov_improvable"]
    m, hw = _t_ci([0.020, 0.022, 0.027])  # one value per seed (the arms agree)
    assert p["mean"] == pytest.approx(m) and p["half_width"] == pytest.approx(hw)
    assert p["n"] == 3 and p["n_runs"] == 16
    fe = result["settings"]["p30"]["p"]["cov_first_error"]
    assert fe["mean"] == pytest.approx(2 * np.mean([0.20, 0.23, 0.21])) and fe["n"] == 3
    assert fe["n_runs"] == 14  # 5 arms x 3 seeds, the oracle's seed 2 missing


def test_measured_p_averages_the_arms_of_a_seed_first(tmp_path: Path) -> None:
    root = make_suite(tmp_path / "s")
    met = root / "p03-srpo-s0" / "metrics.jsonl"
    rows = [json.loads(line) for line in met.read_text().splitlines()]
    rows[0]["eval0/cov_improvable"] = 0.020 + 0.012  # one of 6 arms of seed 0 differs
    met.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = cov.analyse(cov.load_coverage_suite(root))["settings"]["p03"]["p"]["cov_improvable"]
    assert p["mean"] == pytest.approx(np.mean([0.020 + 0.012 / 6, 0.022, 0.027])) and p["n"] == 3


def test_grpo_gain_and_relative_edge_by_hand(result: dict[str, Any]) -> None:
    st = result["settings"]["p03"]
    g = [f - s for f, s in zip(_col("p03", "grpo", 2), _col("p03", "grpo", 0), strict=True)]
    assert g == pytest.approx([0.12, 0.14, 0.10])
    m, hw = _t_ci(g)
    assert st["grpo_gain"]["mean"] == pytest.approx(m) and st["grpo_gain"]["half_width"] == pytest.approx(hw)
    d = np.asarray([0.06, 0.07, 0.08])
    r = d.mean() / np.mean(g)  # 0.07 / 0.12
    se = np.std(d - r * np.asarray(g), ddof=1) / (np.mean(g) * math.sqrt(3))
    rel = st["edge"]["srpo"]["relative"]
    assert rel["mean"] == pytest.approx(0.07 / 0.12)
    assert rel["half_width"] == pytest.approx(stats.t.ppf(0.975, 2) * se)
    assert rel["method"] == "delta" and rel["n"] == 3 and rel["seeds"] == [0, 1, 2]
    assert st["edge"]["srpo"]["absolute"]["mean"] == pytest.approx(0.07)
    assert st["edge"]["srpo"]["gain_excludes_zero"] is True
    assert st["edge"]["oracle"]["relative"]["mean"] == pytest.approx(np.mean([0.10, 0.10, 0.11]) / 0.12)


def test_relative_edge_degenerate_cases() -> None:
    assert cov.relative_edge({"0": 0.1}, {"1": 0.1})["reason"].startswith("no seed")
    zero = cov.relative_edge({"0": 0.1, "1": 0.2}, {"0": 0.1, "1": -0.1})
    assert math.isnan(zero["mean"]) and "mean gain is 0" in zero["reason"]
    one = cov.relative_edge({"0": 0.1}, {"0": 0.2})
    assert one["mean"] == pytest.approx(0.5) and math.isnan(one["half_width"])


def test_sooner_only_where_grpo_final_level_is_reached(result: dict[str, Any]) -> None:
    arms = result["settings"]["p03"]["arms"]
    # GRPO's final mean 0.43; SRPO's mean curve 0.31, 0.45, 0.50 reaches it at
    # 0 + (0.43 - 0.31) / (0.45 - 0.31) * 2 = 1.714 updates -> 4 / 1.714 = 2.333x
    s = arms["srpo"]["sooner_vs_grpo"]["updates"]
    assert s["factor"] == pytest.approx(4 / (0.12 / 0.14 * 2)) and s["reason"] == "reached"
    # TreeRL (one seed) reaches 0.43 between updates 2 (0.40) and 4 (0.47): 2 + 3/7 * 2
    assert arms["treerl"]["sooner_vs_grpo"]["updates"]["factor"] == pytest.approx(4 / (2 + 6 / 7))
    r = arms["rrpo"]["sooner_vs_grpo"]["updates"]
    assert r["factor"] is None and r["reason"] == "never reaches GRPO's final level within its run"
    # on the token axis GRPO's final x is its mean total tokens, 4 * 1010
    t = arms["srpo"]["sooner_vs_grpo"]["generated_tokens"]
    assert t["baseline_x"] == pytest.approx(4040) and t["factor"] == pytest.approx(4040 / (0.12 / 0.14 * 2520))
    assert "sooner_vs_grpo" not in arms["grpo"]


def test_tables_markdown(result: dict[str, Any]) -> None:
    md = cov.tables_markdown(result)
    assert "### Setting p03 (task arithmetic-hard:0.03)" in md
    assert "| srpo - grpo | final | 0.070 ± 0.025 |" in md
    assert "Unfinished runs" in md and "p30-srpo-s2" in md and "p30-oracle-s2 (run folder not found)" in md
    assert "### Measured coverage p and the edge over GRPO" in md
    assert "| treerl | treerl | 1 | 0.300 ± — |" in md


def test_replication_markdown_sets_two_runs_of_a_suite_side_by_side(result: dict[str, Any]) -> None:
    import copy

    other = copy.deepcopy(result)
    other["settings"]["p03"]["paired"]["srpo-grpo"]["final"].update(mean=-0.5, half_width=0.125, n=2)
    del other["settings"]["p30"]  # a setting the replication lacks is left out
    md = cov.replication_markdown(result, other, labels=("old", "new"))
    assert "### Setting p03 (task arithmetic-hard:0.03)" in md and "### Setting p30" not in md
    assert "| srpo - grpo | final | 0.070 ± 0.025 | 3 | -0.500 ± 0.125 | 2 |" in md
    assert "| final, old |" in md and "| final, new |" in md


def test_a_suite_just_started_gives_curves_but_no_finals(tmp_path: Path) -> None:
    """Every run has logged only step 0 (eval0, no evaluation after an update yet)."""
    import io

    from respo.analysis import coverage_plots

    root = make_suite(tmp_path / "s")
    for met in root.glob("*/metrics.jsonl"):
        met.write_text(met.read_text().splitlines()[0] + "\n")
    res = cov.analyse(cov.load_coverage_suite(root))
    st = res["settings"]["p03"]
    assert st["arms"]["srpo"]["curves"]["updates"]["n"] == [3]
    assert st["arms"]["srpo"]["final"] == {"mean": None, "lo": None, "hi": None, "half_width": None, "n": 0}
    assert st["paired"]["srpo-grpo"]["final"]["n"] == 0
    assert st["edge"]["srpo"]["relative"]["reason"].startswith("no seed")
    assert st["arms"]["srpo"]["sooner_vs_grpo"]["updates"]["reason"] == "GRPO has no evaluation at its last update yet"
    assert st["p"]["cov_improvable"]["n"] == 3  # p is known from the first line
    assert "| srpo - grpo | final | — |" in cov.tables_markdown(res)
    for fig in (coverage_plots.plot_coverage_curves(res), coverage_plots.plot_coverage_edge(res)):
        fig.savefig(io.BytesIO(), format="png", dpi=30)


# --------------------------------------------------------------------------------------------
# The notebook
# --------------------------------------------------------------------------------------------

NOTEBOOK = figures.notebooks_dir() / "cpu_coverage.ipynb"
OUTPUTS = ("cpu_coverage_curves.png", "cpu_coverage_curves.pdf", "cpu_coverage_edge.png",
           "cpu_coverage_edge.pdf", "cpu_coverage_tables.md", "cpu_results_coverage.json")


def test_notebook_is_discovered_with_parameters() -> None:
    assert NOTEBOOK in figures.list_notebooks() and figures.has_parameters(NOTEBOOK)
    assert figures.select(figures.list_notebooks(), ["cpu_coverage"]) == [NOTEBOOK]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    first = next(c for c in nb.cells if c.cell_type == "code").source
    assert 'SIZE = "full"' in first and 'OUT_DIR = "paper_figures"' in first
    assert 'RUNS_DIR = "experiments/results/cpu_track/coverage"' in first


def test_notebook_via_runner_writes_figures_tables_and_json(suite_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figs"
    rc = figures.main(["--only", "cpu_coverage", "--runs", str(suite_dir), "--out", str(out),
                       "--size", "small", "--timeout-s", "120"])
    assert rc == 0, capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    for stem in ("cpu_coverage_curves", "cpu_coverage_edge"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    res = json.loads((out / "cpu_results_coverage.json").read_text())
    assert res["suite"] == "fake-coverage" and res["settings_order"] == ["p03", "p30"]
    c = res["settings"]["p30"]["arms"]["srpo"]["curves"]
    assert set(c) == set(cov.AXES) and c["updates"]["n"] == [3, 3, 2]
    assert res["settings"]["p03"]["paired"]["srpo-grpo"]["final"]["mean"] == pytest.approx(0.07)
    assert "### Setting p30" in (out / "cpu_coverage_tables.md").read_text()


def test_notebook_skips_without_suite_as_make_run_calls_it(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``make run``'s figures stage runs every notebook with its default RUNS_DIR: until the
    coverage suite is committed there the notebook is skipped, not failed, and writes nothing.
    Once it is committed, a folder without suite.json stands in for it."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict[str, Any] = {}
    exec(compile(next(c for c in nb.cells if c.cell_type == "code").source, str(NOTEBOOK), "exec"), ns)  # noqa: S102
    committed = resolve_dir(ns["RUNS_DIR"]).joinpath("suite.json").is_file()
    out = tmp_path / "figs"
    argv = ["--only", "cpu_coverage", "--out", str(out)]
    rc = figures.main(argv + (["--runs", str(tmp_path / "none")] if committed else []))
    text = capsys.readouterr().out
    assert rc == 0 and "cpu_coverage.ipynb skipped: no suite.json in" in text and "1 skipped" in text
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs"]  # the temporary folder is gone
