"""``respo.analysis`` and ``notebooks/cpu_track.ipynb`` on small fake suites.

The suites are written by hand in the on-disk format of ``experiments/notes/run-format.md`` and
every checked number is worked out in the comments next to the data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest

from respo.analysis import load_grads, load_run, load_suite, report
from respo.analysis.runs import RunFormatError, Suite, pick_grads
from respo.commands import figures

# --------------------------------------------------------------------------------------------
# Fake suite
# --------------------------------------------------------------------------------------------
#
# Every run has 4 steps (0..3), evaluation on steps 1 and 3 (x = 2 and 4 updates done) and the
# start-of-training evaluation eval0 on step 0 (x = 0).
#
#   grpo   seed 0: greedy 0.1 -> 0.2 -> 0.3      seed 1: 0.1 -> 0.3 -> 0.5
#          mean: 0.1, 0.25, 0.4 at x = 0, 2, 4; final 0.3, 0.5: mean 0.4, SE 0.1,
#          95% t half-width t(0.975, 1) * 0.1 = 12.7062 * 0.1
#   srpo   seed 0: 0.1 -> 0.4 -> 0.6             seed 1: 0.1 -> 0.6 -> 0.6
#          mean 0.1, 0.5, 0.6: reaches GRPO's 0.4 at x = 0 + (0.4 - 0.1) / (0.5 - 0.1) * 2 = 1.5
#          -> 4 / 1.5 = 2.667x sooner
#   rrpo   seed 0: 0.1 -> 0.2 -> 0.3             seed 1: 0.1 -> 0.2 -> 0.35   never reaches 0.4
#   oracle seed 0 only: 0.1 -> 0.5 -> 0.7        (1 seed: CI nan)
GREEDY = {
    ("grpo", 0): (0.1, 0.2, 0.3), ("grpo", 1): (0.1, 0.3, 0.5),
    ("srpo", 0): (0.1, 0.4, 0.6), ("srpo", 1): (0.1, 0.6, 0.6),
    ("rrpo", 0): (0.1, 0.2, 0.3), ("rrpo", 1): (0.1, 0.2, 0.35),
    ("oracle", 0): (0.1, 0.5, 0.7),
}


def R(n: int, k: int | None, truth: int | None, suffix: list[float], fell_back: bool = False) -> dict[str, Any]:
    return {"n_thoughts": n, "step": k, "fell_back": fell_back, "truth": truth, "suffix": suffix}


# SRPO resets (rollouts.jsonl), by (seed, step):
#   A  n 4,  k 1, truth 2, suffix 1000  position 0     dev -1 clean      (k <= truth, k != truth)
#   B  n 8,  k 4, truth 4, suffix 1100  position .375  dev  0 clean      (correct)
#   C  n 4,  k 4, truth 1, suffix 0000  position .75   dev +3 erroneous
#   D  n 8,  k 2, truth -, suffix 1111  position .125  not judged
#   E  n 2,  k -, truth 1, suffix -     skipped group: counts in gamma's denominator only
#   F  n 6,  k 6, truth 2, suffix 1010  position .833  dev +4 erroneous, fell back
# judged (k and truth known): A B C F. Deviation shares (max_dev 3): -1: 1/4, 0: 1/4, >=+3: 2/4.
# correction: -1: 1/4; 0: 2/4; >=+3: pooled 2/8, SE std([0, .5]) / sqrt 2 = .25, >=1 pass 1/2.
# clean A B: pooled 3/8, SE std([.25, .5]) / sqrt 2 = .125, >=1 pass 1.
# erroneous C F: pooled 2/8, >=1 pass 1/2.
# beta = wrong answers / answers = 3/4 (A C F wrong); gamma = correct / judged chains = 1/5
# (A B C E F have a truth); at or before = 2/4 (A, B); predicted (1 - .75) * .2 = .05.
# per step: seed 0 step 0 (A B C): beta 2/3, gamma 1/3; seed 0 step 1 (D E): beta nan, gamma 0;
#           seed 1 step 0 (F): beta 1, gamma 0.
SRPO_RESETS = {
    (0, 0): [R(4, 1, 2, [1.0, 0.0, 0.0, 0.0]), R(8, 4, 4, [1.0, 1.0, 0.0, 0.0]),
             R(4, 4, 1, [0.0, 0.0, 0.0, 0.0])],
    (0, 1): [R(8, 2, None, [1.0, 1.0, 1.0, 1.0]), R(2, None, 1, [])],
    (1, 0): [R(6, 6, 2, [1.0, 0.0, 1.0, 0.0], fell_back=True)],
}

STEPS = 4


def _eval_lines(greedy: tuple[float, float, float]) -> dict[int, dict[str, float]]:
    g0, g1, g2 = greedy
    return {0: {"eval0/greedy_pass@1": g0, "eval0/sampled_pass@1": g0 / 2},
            1: {"eval/greedy_pass@1": g1, "eval/sampled_pass@1": g1 / 2, "eval/problems": 8},
            3: {"eval/greedy_pass@1": g2, "eval/sampled_pass@1": g2 / 2, "eval/problems": 8}}


def write_run(folder: Path, variant: str, seed: int, greedy: tuple[float, float, float], *,
              resets: dict[int, list[dict[str, Any]]] | None = None, grads: bool = False,
              rollouts: bool = True, pairing: str = "paper", loss: str = "reinforce") -> Path:
    folder.mkdir(parents=True)
    cfg = {"name": folder.name, "variant": variant, "pairing": pairing, "seed": seed, "steps": STEPS,
           "clip_eps": 0.2, "prompts_per_step": 2, "task": "arithmetic",
           "derived": {"objective": {"loss": loss, "agg": "seq-mean-token-mean",
                                     "advantage": "zscore", "pairing": pairing}},
           "sampling": {"localizer": "prompted"}}
    (folder / "config.json").write_text(json.dumps(cfg))
    ev = _eval_lines(greedy)
    resets = resets or {}
    lines, rolls = [], []
    for s in range(STEPS):
        m: dict[str, Any] = {"step": s, "variant": variant, "g1/pass_rate": 0.5 + 0.1 * s,
                             "tokens/generated": 100.0, "tokens/trained": 60.0,
                             "reward/fresh_generated_mean": 0.5}
        if variant != "grpo":
            m.update({"g2/pass_rate": 0.25 * (s % 3), "g2/count": 8.0,
                      "loc/beta": 0.5, "loc/gamma": 0.25 if s % 2 else None})
            if s % 2 == 0:
                m.update({"grad/suffix_token_mean": 0.3, "grad/fresh_token_mean": 0.1,
                          "grad/suffix_fresh_ratio": 3.0 + s + seed})
        m.update(ev.get(s, {}))
        lines.append(json.dumps(m))
        fresh = [1.0, 0.0, 1.0, 1.0] if variant != "grpo" else [1.0, 0.0] * 4
        rolls.append(json.dumps({"step": s, "prompts": [
            {"problem": f"p{s}", "fresh": fresh, "resets": resets.get(s, [])}]}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if rollouts:
        (folder / "rollouts.jsonl").write_text("\n".join(rolls) + "\n")
    if grads:
        (folder / "grads").mkdir()
        # suffix thoughts .4 .2 .6, fresh .1 .1 .2: thought-mean ratio .4 / (.4 / 3) = 3
        rows = [
            {"role": "fresh", "group": 0, "reward": 1.0, "advantage": 1.0, "prefix_thoughts": 0,
             "thought_grad": [0.1, 0.1]},
            {"role": "fresh", "group": 0, "reward": 0.0, "advantage": -1.0, "prefix_thoughts": 0,
             "thought_grad": [0.2]},
            {"role": "suffix", "group": 1, "reward": 1.0, "advantage": 1.0, "prefix_thoughts": 1,
             "thought_grad": [None, 0.4, 0.2]},
            {"role": "suffix", "group": 1, "reward": 0.0, "advantage": -1.0, "prefix_thoughts": 1,
             "thought_grad": [None, 0.6]},
        ]
        (folder / "grads" / "step_000000.json").write_text(
            json.dumps({"step": 0, "problem": "p0", "rows": rows[:2]}))  # fresh only
        # step 1: both groups, but every reward equal (advantages 0: an empty heatmap)
        still = [{**r, "advantage": 0.0, "reward": 1.0} for r in rows]
        (folder / "grads" / "step_000001.json").write_text(
            json.dumps({"step": 1, "problem": "p1", "rows": still}))
        (folder / "grads" / "step_000002.json").write_text(
            json.dumps({"step": 2, "problem": "p2", "rows": rows}))
    return folder


def make_suite(root: Path, *, full: bool = True) -> Path:
    """The fake suite. ``full``: main (oracle with one seed), split (srpo-2x4 two seeds,
    rrpo-1x8 one seed), clip (srpo, one seed); no pairing runs. Else: main tag only, one seed
    per method, no rollouts and no grads."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []

    def add(name: str, variant: str, seed: int, tag: str, **kw: Any) -> None:
        write_run(root / name, variant, seed, kw.pop("greedy"), **kw)
        entries.append({"name": name, "variant": variant, "seed": seed, "tag": tag})

    for (variant, seed), greedy in GREEDY.items():
        if not full and seed != 0:
            continue
        resets = {}
        if variant == "srpo":
            resets = {s: rs for (sd, s), rs in SRPO_RESETS.items() if sd == seed}
        elif variant in ("rrpo", "oracle"):
            resets = {0: [R(4, 2, 2, [1.0, 1.0, 0.0, 0.0])], 2: [R(4, 3, 1, [0.0, 0.0, 0.0, 1.0])]}
        add(f"{variant}-s{seed}", variant, seed, "main", greedy=greedy, resets=resets,
            grads=full and variant == "srpo" and seed == 0, rollouts=full)
    if full:
        for seed in (0, 1):
            add(f"srpo-2x4-s{seed}", "srpo-2x4", seed, "split", greedy=(0.1, 0.3, 0.5 + 0.1 * seed))
        add("rrpo-1x8-s0", "rrpo-1x8", 0, "split", greedy=(0.1, 0.2, 0.4))
        add("srpo-clip-s0", "srpo", 0, "clip", greedy=(0.1, 0.2, 0.45), pairing="matched",
            loss="ppo_clip")
    (root / "suite.json").write_text(json.dumps({"suite": root.name, "description": "A fake suite.",
                                                 "runs": entries}))
    if full:
        (root / "warmup.json").write_text(json.dumps(
            {"path": "/x/sft", "metrics": {"greedy_pass@1": 0.12, "nested": {"a": 1}}}))
    return root


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_suite(tmp_path_factory.mktemp("suites") / "fake")


@pytest.fixture(scope="module")
def suite(suite_dir: Path) -> Suite:
    return load_suite(suite_dir)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

T_975_1 = 12.706204736174707  # Student t quantile 0.975, 1 degree of freedom
T_975_2 = 4.302652729749464  # 2 degrees of freedom


def test_mean_se_and_t_interval_by_hand() -> None:
    assert report.mean_se([0.3, 0.5]) == pytest.approx((0.4, 0.1, 2))
    m, hw, n = report.t_interval([0.3, 0.5])
    assert (m, n) == (pytest.approx(0.4), 2) and hw == pytest.approx(T_975_1 * 0.1)
    # 1, 2, 3: sd 1, SE 1/sqrt(3)
    m, hw, n = report.t_interval([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and hw == pytest.approx(T_975_2 / math.sqrt(3))
    m, hw, n = report.t_interval([0.7])
    assert (m, n) == (0.7, 1) and math.isnan(hw)
    assert math.isnan(report.mean_se([])[0]) and report.mean_se([])[2] == 0
    with pytest.raises(ValueError, match="level"):
        report.t_interval([1.0, 2.0], level=1.0)


def test_eval_curve_mean_and_se_over_seeds(suite: Suite) -> None:
    c = report.eval_curve(suite.groups("main")["grpo"])
    np.testing.assert_allclose(c.x, [0, 2, 4])
    np.testing.assert_allclose(c.mean, [0.1, 0.25, 0.4])
    # SE at x=2: std(.2, .3; ddof 1) / sqrt(2) = .05; at x=0 both seeds are .1
    np.testing.assert_allclose(c.se, [0.0, 0.05, 0.1], atol=1e-12)
    assert c.n.tolist() == [2, 2, 2]
    one = report.eval_curve(suite.groups("main")["oracle"])
    assert np.isnan(one.se).all() and one.n.tolist() == [1, 1, 1]
    sampled = report.eval_curve(suite.groups("main")["grpo"], "sampled_pass@1")
    np.testing.assert_allclose(sampled.mean, [0.05, 0.125, 0.2])


def test_final_summary_ci(suite: Suite) -> None:
    g = suite.groups("main")
    s = report.final_summary(g["grpo"])
    assert s["mean"] == pytest.approx(0.4) and s["se"] == pytest.approx(0.1)
    assert s["ci"] == pytest.approx(T_975_1 * 0.1) and s["n"] == 2
    s = report.final_summary(g["oracle"], "sampled_pass@1")
    assert s["mean"] == pytest.approx(0.35) and s["n"] == 1 and math.isnan(s["ci"])


def test_crossing_step_and_sooner_factor(suite: Suite) -> None:
    x = np.array([0.0, 2.0, 4.0])
    assert report.crossing_step(x, np.array([0.1, 0.5, 0.6]), 0.4) == pytest.approx(1.5)
    assert report.crossing_step(x, np.array([0.1, 0.4, 0.6]), 0.4) == pytest.approx(2.0)
    assert math.isnan(report.crossing_step(x, np.array([0.1, 0.2, 0.3]), 0.4))
    g = suite.groups("main")
    base = report.eval_curve(g["grpo"])
    sf = report.sooner_factor(base, report.eval_curve(g["srpo"]))
    assert sf["status"] == "reached" and sf["cross_step"] == pytest.approx(1.5)
    assert sf["factor"] == pytest.approx(4 / 1.5) and sf["target"] == pytest.approx(0.4)
    assert report.sooner_factor(base, base)["factor"] == pytest.approx(1.0)
    never = report.sooner_factor(base, report.eval_curve(g["rrpo"]))
    assert never["status"] == "never" and math.isnan(never["factor"])
    high = report.Curve(np.array([0.0, 2.0]), np.array([0.5, 0.6]), np.full(2, np.nan), np.ones(2, int))
    assert report.sooner_factor(base, high)["status"] == "at_start"
    empty = report.Curve(np.array([]), np.array([]), np.array([]), np.array([], int))
    assert report.sooner_factor(base, empty)["status"] == "no_data"


# --------------------------------------------------------------------------------------------
# Localization
# --------------------------------------------------------------------------------------------


def test_reset_positions_and_histogram(suite: Suite) -> None:
    srpo = suite.groups("main")["srpo"]
    np.testing.assert_allclose(sorted(report.reset_positions(srpo)), [0, 0.125, 0.375, 0.75, 5 / 6])
    assert len(report.reset_positions(srpo, include_fallbacks=False)) == 4
    h = report.position_histogram(srpo, bins=10)
    assert h["counts"] == [1, 1, 0, 1, 0, 0, 0, 1, 1, 0] and h["n"] == 5
    assert sum(h["share"]) == pytest.approx(1.0) and h["fallback_share"] == pytest.approx(0.2)
    assert h["mean"] == pytest.approx((0 + 0.125 + 0.375 + 0.75 + 5 / 6) / 5)


def test_deviation_bins_and_distribution(suite: Suite) -> None:
    labels = [b[0] for b in report.deviation_bins(3)]
    assert labels == ["≤-3", "-2", "-1", "0", "+1", "+2", "≥+3"]
    dist = report.deviation_distribution(suite.groups("main")["srpo"], 3)
    assert [d["count"] for d in dist] == [0, 0, 1, 1, 0, 0, 2]
    assert [d["share"] for d in dist] == pytest.approx([0, 0, 0.25, 0.25, 0, 0, 0.5])
    # with max_dev 4 the +3 and +4 resets fall into different bins
    dist4 = report.deviation_distribution(suite.groups("main")["srpo"], 4)
    assert {d["label"]: d["count"] for d in dist4 if d["count"]} == {"-1": 1, "0": 1, "+3": 1, "≥+4": 1}


def test_correction_rate_by_deviation(suite: Suite) -> None:
    corr = {d["label"]: d for d in report.correction_by_deviation(suite.groups("main")["srpo"], 3)}
    assert corr["-1"]["pass_rate"] == pytest.approx(0.25) and corr["-1"]["groups"] == 1
    assert math.isnan(corr["-1"]["se"])
    assert corr["0"]["pass_rate"] == pytest.approx(0.5)
    big = corr["≥+3"]
    assert (big["groups"], big["suffixes"], big["passes"]) == (2, 8, 2)
    assert big["pass_rate"] == pytest.approx(0.25) and big["se"] == pytest.approx(0.25)
    assert big["group_pass"] == pytest.approx(0.5)
    assert corr["+1"]["groups"] == 0 and math.isnan(corr["+1"]["pass_rate"])


def test_clean_vs_erroneous_split(suite: Suite) -> None:
    ce = report.clean_vs_erroneous(suite.groups("main")["srpo"])
    assert ce["clean"]["pass_rate"] == pytest.approx(3 / 8) and ce["clean"]["groups"] == 2
    assert ce["clean"]["se"] == pytest.approx(0.125) and ce["clean"]["group_pass"] == 1.0
    assert ce["erroneous"]["pass_rate"] == pytest.approx(2 / 8)
    assert ce["erroneous"]["group_pass"] == pytest.approx(0.5)
    # a success threshold below 1 counts partial rewards: none here, so nothing changes
    assert report.clean_vs_erroneous(suite.groups("main")["srpo"], success=0.5) == ce


def test_beta_gamma_pooled_and_per_step(suite: Suite) -> None:
    srpo = suite.groups("main")["srpo"]
    q = report.localization_quality(srpo)
    assert q["beta"] == pytest.approx(0.75) and q["gamma"] == pytest.approx(0.2)
    assert q["at_or_before"] == pytest.approx(0.5) and q["predicted"] == pytest.approx(0.05)
    assert (q["n_judged"], q["n_answered"], q["n_resets"]) == (5, 4, 6)
    assert report.predicted_factor(0.2, 0.6) == pytest.approx(0.48)
    bg = report.beta_gamma_curve(srpo)
    np.testing.assert_allclose(bg["beta"].x, [0])  # step 1 has no answered reset: beta undefined
    np.testing.assert_allclose(bg["beta"].mean, [(2 / 3 + 1) / 2])
    np.testing.assert_allclose(bg["beta"].se, [np.std([2 / 3, 1], ddof=1) / np.sqrt(2)])
    np.testing.assert_allclose(bg["gamma"].x, [0, 1])
    np.testing.assert_allclose(bg["gamma"].mean, [1 / 6, 0.0])
    np.testing.assert_allclose(bg["predicted"].mean, [(1 / 3 * 1 / 3 + 0) / 2])
    # window 2 pools steps 0 and 1 of seed 0: A B C D E -> beta 2/3, gamma 1/4
    bg2 = report.beta_gamma_curve(srpo, window=2)
    np.testing.assert_allclose(bg2["gamma"].mean, [(1 / 4 + 0) / 2])


def test_metric_curves_window_and_metrics_fallback(tmp_path: Path) -> None:
    s = load_suite(make_suite(tmp_path / "one", full=False))
    srpo = s.groups("main")["srpo"]
    assert srpo[0].rollouts is None
    # g2/pass_rate = .25 * (step % 3): 0, .25, .5, 0
    c = report.metric_curve(srpo, "g2/pass_rate")
    np.testing.assert_allclose(c.mean, [0, 0.25, 0.5, 0])
    c2 = report.metric_curve(srpo, "g2/pass_rate", window=2)
    np.testing.assert_allclose(c2.x, [0, 2])
    np.testing.assert_allclose(c2.mean, [0.125, 0.25])
    # no rollouts: loc/beta .5 on every step, loc/gamma .25 on odd steps (null on even ones)
    bg = report.beta_gamma_curve(srpo)
    np.testing.assert_allclose(bg["beta"].mean, [0.5] * 4)
    np.testing.assert_allclose(bg["gamma"].x, [1, 3])
    np.testing.assert_allclose(bg["predicted"].mean, [0.125, 0.125])


def test_grad_summary_and_pick(suite: Suite) -> None:
    picked = pick_grads(suite.groups("main"))
    assert picked is not None
    run, data = picked
    # step 0 has no suffix rows, step 1 has both groups but zero advantages: step 2 is drawn
    assert run.name == "srpo-s0" and data["step"] == 2
    summ = report.grad_step_summary(data)
    assert summ["suffix_thought_mean"] == pytest.approx(0.4)
    assert summ["fresh_thought_mean"] == pytest.approx(0.4 / 3)
    assert summ["ratio"] == pytest.approx(3.0)
    assert pick_grads({"grpo": suite.groups("main")["grpo"]}) is None


def test_heatmap_sample_prefers_a_reset_after_the_first_thought() -> None:
    from respo.analysis.runs import _informative

    def rows(prefix: int, adv: float) -> dict[str, Any]:
        return {"rows": [{"role": "fresh", "advantage": 1.0, "prefix_thoughts": 0},
                         {"role": "suffix", "advantage": adv, "prefix_thoughts": prefix}]}

    # a reset at thought 1 copies nothing: its "suffix" group is another fresh group
    assert _informative(rows(0, 1.0)) == 2 < _informative(rows(2, 1.0)) == 3
    assert _informative(rows(2, 0.0)) == 1
    assert _informative({"rows": [{"role": "fresh", "advantage": 1.0}]}) == 0


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def test_main_table_rows_and_markdown(suite: Suite) -> None:
    t = report.main_table(suite)
    rows = {r["method"]: r for r in t.rows}
    assert list(rows) == ["grpo", "rrpo", "srpo", "oracle"] and t.missing == []
    assert rows["grpo"]["greedy"] == pytest.approx(0.4)
    assert rows["grpo"]["greedy_ci"] == pytest.approx(T_975_1 * 0.1)
    assert rows["srpo"]["sooner"] == pytest.approx(4 / 1.5)
    assert rows["rrpo"]["sooner_status"] == "never" and math.isnan(rows["rrpo"]["sooner"])
    assert rows["oracle"]["n"] == 1 and math.isnan(rows["oracle"]["greedy_ci"])
    assert rows["srpo"]["greedy0"] == pytest.approx(0.1) and rows["srpo"]["sampled0"] == pytest.approx(0.05)
    assert rows["grpo"]["gen_tokens"] == pytest.approx(400)
    assert rows["grpo"]["trained_tokens"] == pytest.approx(240)
    assert not [n for n in t.notes if "deviations" in n]  # no baseline in this suite
    md = t.to_markdown()
    assert "| oracle | 1 | 0.700 ± nan |" in md and "Single seed (CI = nan): oracle." in md
    assert "| grpo | 2 | 0.400 ± 1.271 |" in md


def test_each_published_baseline_lists_its_deviations_under_the_table() -> None:
    from respo.variants import VARIANTS

    notes = report.deviation_notes(["grpo", "treerl", "srpo", "critique-grpo"])
    assert [n.split(" deviations:")[0] for n in notes] == ["treerl", "critique-grpo"]
    assert all(d in notes[0] for d in VARIANTS["treerl"].deviations)


def test_split_pairing_clip_tables(suite: Suite) -> None:
    split = report.split_table(suite)
    assert [(r["method"], r["split"], r["n"]) for r in split.rows] == [
        ("srpo", "1x4", 2), ("srpo", "2x4", 2), ("rrpo", "1x4", 2), ("rrpo", "1x8", 1)]
    assert split.missing == ["srpo-1x8", "rrpo-2x4"]
    assert split.rows[1]["greedy"] == pytest.approx(0.55)
    assert "Missing runs: srpo-1x8, rrpo-2x4." in split.to_markdown()
    pairing = report.pairing_table(suite)
    assert not pairing.present and "Not available" in pairing.to_markdown()
    assert "pairing" in pairing.to_markdown()
    clip = report.clip_table(suite)
    assert [(r["method"], r["clip"], r["n"]) for r in clip.rows] == [("srpo", "off", 2), ("srpo", "on", 1)]
    assert clip.rows[1]["objective"].startswith("ppo_clip/")
    assert "Single seed (CI = nan): srpo (on)." in clip.to_markdown()
    loc = {r["method"]: r for r in report.localization_table(suite).rows}
    assert set(loc) == {"rrpo", "srpo", "oracle"}
    assert loc["srpo"]["beta"] == pytest.approx(0.75)
    # gains: srpo (.6 - .1) / oracle (.7 - .1)
    assert loc["srpo"]["gain_vs_oracle"] == pytest.approx(0.5 / 0.6)


def test_gain_share_is_undefined_when_the_oracle_did_not_improve(tmp_path: Path) -> None:
    root = tmp_path / "down"
    root.mkdir()
    resets = {0: [R(4, 2, 2, [1.0, 1.0, 0.0, 0.0])]}
    entries = []
    for variant, greedy in (("srpo", (0.5, 0.45, 0.4)), ("oracle", (0.5, 0.4, 0.3))):
        write_run(root / f"{variant}-s0", variant, 0, greedy, resets=resets)
        entries.append({"name": f"{variant}-s0", "variant": variant, "seed": 0, "tag": "main"})
    (root / "suite.json").write_text(json.dumps({"suite": "down", "runs": entries}))
    loc = {r["method"]: r for r in report.localization_table(load_suite(root)).rows}
    assert loc["srpo"]["gain"] == pytest.approx(-0.1)
    assert loc["oracle"]["gain"] == pytest.approx(-0.2)
    # -0.1 / -0.2 = 0.5 would read as "half the oracle's improvement": it must not be reported
    assert math.isnan(loc["srpo"]["gain_vs_oracle"]) and math.isnan(loc["oracle"]["gain_vs_oracle"])


def test_tables_of_an_empty_tag_and_json_ready(tmp_path: Path) -> None:
    s = load_suite(make_suite(tmp_path / "one", full=False))
    assert not report.split_table(s).present and not report.clip_table(s).present
    main = report.main_table(s)
    assert all(r["n"] == 1 and math.isnan(r["greedy_ci"]) for r in main.rows)
    assert not report.localization_table(s).present  # no rollouts: no reset records
    data = report.json_ready({"t": main, "c": report.eval_curve(s.runs), "x": np.float64("nan"),
                              "i": np.int64(3), "a": np.arange(2), "p": tmp_path})
    out = figures.write_json(data, tmp_path / "x.json")
    back = json.loads(out.read_text())
    assert back["x"] is None and back["i"] == 3 and back["a"] == [0, 1]
    assert back["t"]["rows"][0]["greedy_ci"] is None
    assert report.markdown_table([{"a": None, "b": float("inf"), "c": 1234.0, "d": "x|y"}],
                                 [("A", "a"), ("B", "b"), ("C", "c"), ("D", "d")]).splitlines()[2] \
        == "| — | inf | 1234 | x\\|y |"


# --------------------------------------------------------------------------------------------
# Loading and malformed input
# --------------------------------------------------------------------------------------------


def test_suite_loads_tags_and_merges_duplicate_entries(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_run(root / "a", "srpo", 0, (0.1, 0.2, 0.3))
    (root / "suite.json").write_text(json.dumps({"suite": "s", "runs": [
        {"name": "a", "variant": "srpo", "seed": 0, "tag": "main"},
        {"name": "a", "variant": "srpo", "seed": 0, "tag": "pairing"}]}))
    s = load_suite(root)
    assert s.name == "s" and len(s.runs) == 1 and s.runs[0].tags == ("main", "pairing")
    assert s.runs[0].complete and s.runs[0].last_step == STEPS - 1
    assert s.incomplete() == []


def test_missing_runs_error_or_skip(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_run(root / "a", "srpo", 0, (0.1, 0.2, 0.3))
    (root / "empty").mkdir()
    (root / "empty" / "config.json").write_text(json.dumps({"variant": "grpo"}))
    (root / "empty" / "metrics.jsonl").write_text("")
    (root / "suite.json").write_text(json.dumps({"suite": "s", "runs": [
        {"name": "a", "variant": "srpo", "seed": 0, "tag": "main"},
        {"name": "gone", "variant": "grpo", "seed": 0, "tag": "main"},
        {"name": "empty", "variant": "grpo", "seed": 1, "tag": "main"}]}))
    with pytest.raises(RunFormatError, match=r"suite\.json: lists run 'gone'"):
        load_suite(root)
    s = load_suite(root, missing="skip")
    assert [r.name for r in s.runs] == ["a"]
    assert s.skipped == [("gone", "run folder not found"), ("empty", "metrics.jsonl is empty")]


def _corrupt(run: Path, what: str) -> str:
    """Break one file of ``run``; returns the file name the error must mention."""
    if what == "metrics-json":
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines[1] = '{"step": 1, oops'
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return "metrics.jsonl:2"
    if what == "metrics-order":
        lines = (run / "metrics.jsonl").read_text().splitlines()
        (run / "metrics.jsonl").write_text("\n".join([lines[1], lines[0]]) + "\n")
        return "metrics.jsonl"
    if what == "metrics-number":
        with (run / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": 9, "eval/greedy_pass@1": "high"}) + "\n")
        return "metrics.jsonl"
    if what == "config":
        (run / "config.json").write_text(json.dumps({"seed": 0}))
        return "config.json"
    if what == "config-json":
        (run / "config.json").write_text("{")
        return "config.json"
    if what == "config-variant":
        cfg = json.loads((run / "config.json").read_text())
        cfg["variant"] = "rrpo"
        (run / "config.json").write_text(json.dumps(cfg))
        return "config.json"
    if what == "rollouts-step":
        (run / "rollouts.jsonl").write_text(json.dumps({"step": 0, "prompts": [
            {"fresh": [1.0], "resets": [R(3, 5, 1, [0.0])]}]}) + "\n")
        return "rollouts.jsonl"
    if what == "rollouts-prompts":
        (run / "rollouts.jsonl").write_text(json.dumps({"step": 0, "prompts": {}}) + "\n")
        return "rollouts.jsonl"
    if what == "rollouts-list":
        (run / "rollouts.jsonl").write_text("[1, 2]\n")
        return "rollouts.jsonl:1"
    if what == "no-metrics":
        (run / "metrics.jsonl").unlink()
        return "metrics.jsonl"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["metrics-json", "metrics-order", "metrics-number", "config",
                                  "config-json", "config-variant", "rollouts-step",
                                  "rollouts-prompts", "rollouts-list", "no-metrics"])
def test_malformed_run_files_name_the_file(tmp_path: Path, what: str) -> None:
    root = tmp_path / "s"
    run = write_run(root / "a", "srpo", 0, (0.1, 0.2, 0.3))
    (root / "suite.json").write_text(json.dumps({"suite": "s", "runs": [
        {"name": "a", "variant": "srpo", "seed": 0, "tag": "main"}]}))
    needle = _corrupt(run, what)
    with pytest.raises(RunFormatError) as info:
        s = load_suite(root)
        report.final_summary(s.runs)  # reads the metric values
    assert str(run) in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("body,needle", [
    ("not json", "not valid JSON"),
    (json.dumps({"runs": {}}), "'runs' list"),
    (json.dumps({"runs": [{"name": "a", "variant": "srpo", "seed": 0}]}), "'tag'"),
    (json.dumps({"runs": [{"name": "../a", "variant": "srpo", "seed": 0, "tag": "main"}]}), "folder name"),
    (json.dumps({"runs": [{"name": "a", "variant": "srpo", "seed": 0, "tag": "main"},
                          {"name": "a", "variant": "rrpo", "seed": 0, "tag": "split"}]}), "listed twice"),
    (json.dumps({"runs": [{"name": "a", "variant": "srpo", "seed": 0, "tag": "main"},
                          {"name": "b", "variant": "srpo", "seed": 0, "tag": "main"}]}), "are both"),
])
def test_malformed_suite_json_names_the_file(tmp_path: Path, body: str, needle: str) -> None:
    (tmp_path / "suite.json").write_text(body)
    with pytest.raises(RunFormatError, match="suite.json") as info:
        load_suite(tmp_path)
    assert needle in str(info.value)
    with pytest.raises(RunFormatError, match=r"suite\.json: file not found"):
        load_suite(tmp_path / "nowhere")


def test_malformed_grads_and_interrupted_last_line(tmp_path: Path) -> None:
    bad = tmp_path / "step_000001.json"
    bad.write_text(json.dumps({"rows": [{"role": "parent", "thought_grad": []}]}))
    with pytest.raises(RunFormatError, match=r"step_000001\.json: row 0: 'role'"):
        load_grads(bad)
    bad.write_text(json.dumps({"rows": [{"role": "fresh", "thought_grad": ["x"]}]}))
    with pytest.raises(RunFormatError, match=r"step_000001\.json: row 0: 'thought_grad'"):
        load_grads(bad)
    run = write_run(tmp_path / "r", "grpo", 0, (0.1, 0.2, 0.3))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "eval/gre')  # a write cut short: dropped, like the trainer does
    assert load_run(run).last_step == STEPS - 1


# --------------------------------------------------------------------------------------------
# The notebook
# --------------------------------------------------------------------------------------------

NOTEBOOK = figures.notebooks_dir() / "cpu_track.ipynb"
FIGS = ("cpu_curves", "cpu_localization", "cpu_grad_heatmap", "cpu_grad_ratio", "cpu_beta_gamma")


def test_notebook_parameters_and_runs_dir_injection() -> None:
    assert figures.has_parameters(NOTEBOOK)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert 'SIZE = "full"' in first.source and 'OUT_DIR = "paper_figures"' in first.source
    assert 'RUNS_DIR = "experiments/results/cpu_track/full"' in first.source
    figures.inject_parameters(nb, size="small", out_dir="/o", runs_dir="/r s")
    assert 'RUNS_DIR = "/r s"' in first.source and 'SIZE = "small"' in first.source
    # notebooks without RUNS_DIR are untouched by --runs
    other = nbformat.v4.new_notebook()
    other.cells = [nbformat.v4.new_code_cell('SIZE = "full"\nOUT_DIR = "x"')]
    figures.inject_parameters(other, size="small", out_dir="/o", runs_dir="/r")
    assert other.cells[0].source == 'SIZE = "small"\nOUT_DIR = "/o"'
    assert figures.select(figures.list_notebooks(), ["cpu_track"]) == [NOTEBOOK]


def _quick_save(fig: Any, out: Path, stem: str, *, dpi: int = 150) -> list[Path]:
    """``save_figure`` stand-in: draws the whole figure (a small PNG), skips the slow PDF."""
    fig.savefig(out / f"{stem}.png", dpi=30)
    (out / f"{stem}.pdf").write_bytes(b"%PDF- stand-in")
    return [out / f"{stem}.png", out / f"{stem}.pdf"]


def _exec_notebook(params: dict[str, str]) -> None:
    """Run the notebook's code cells in this process, where warnings are errors (the runner
    test below covers the real kernel and the real ``save_figure``)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    figures.inject_parameters(nb, size=params["SIZE"], out_dir=params["OUT_DIR"],
                              runs_dir=params["RUNS_DIR"])
    ns: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, str(NOTEBOOK), "exec"), ns)  # noqa: S102
            if "save_figure" in ns:
                ns["save_figure"] = _quick_save


def test_notebook_in_process_on_one_seed_suite_without_rollouts(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = make_suite(tmp_path / "one", full=False)
    out = tmp_path / "out"
    _exec_notebook({"SIZE": "small", "OUT_DIR": str(out), "RUNS_DIR": str(runs)})
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{s}.{e}" for s in FIGS for e in ("png", "pdf")]
                           + ["cpu_results.json", "cpu_tables.md"])
    md = (out / "cpu_tables.md").read_text()
    assert "0.300 ± nan" in md and "Single seed (CI = nan)" in md
    assert "Not available" in md and "every run tagged 'pairing'" in md
    assert "srpo-2x4" in md  # the split table names the runs it misses
    res = json.loads((out / "cpu_results.json").read_text())
    assert res["gradient_heatmap"] is None and res["tables"]["main"]["rows"][0]["greedy_ci"] is None
    assert "one seed only" in capsys.readouterr().out


def test_notebook_via_runner_writes_figures_and_tables(suite_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figs"
    rc = figures.main(["--only", "cpu_track", "--runs", str(suite_dir), "--out", str(out),
                       "--size", "small", "--timeout-s", "120"])
    assert rc == 0, capsys.readouterr()
    for stem in FIGS:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert (out / f"{stem}.png").stat().st_size > 10_000
    res = json.loads((out / "cpu_results.json").read_text())
    assert res["suite"] == "fake" and len(res["runs"]) == 11
    assert res["sooner_vs_grpo_greedy"]["srpo"]["factor"] == pytest.approx(4 / 1.5)
    assert res["sooner_vs_grpo_greedy"]["rrpo"]["status"] == "never"
    assert res["localization"]["srpo"]["quality"]["beta"] == pytest.approx(0.75)
    assert res["gradient_heatmap"]["ratio"] == pytest.approx(3.0)
    assert res["curves"]["greedy_pass@1"]["grpo"]["mean"] == pytest.approx([0.1, 0.25, 0.4])
    md = (out / "cpu_tables.md").read_text()
    for title in ("Main results", "Sampling split", "Loss pairing", "Clipped surrogate", "Localization"):
        assert title in md
    assert "Missing runs: srpo-1x8, rrpo-2x4." in md and "| srpo | on | 1 |" in md
    assert "A fake suite." in md and "Warm-up checkpoint: `/x/sft` (greedy_pass@1 0.12)." in md
    assert res["warmup"]["metrics"]["nested"] == {"a": 1}


def test_notebook_skips_without_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figs"
    rc = figures.main(["--only", "cpu_track", "--runs", str(tmp_path / "no-suite"),
                       "--out", str(out), "--timeout-s", "120"])
    text = capsys.readouterr().out
    assert rc == 0 and "cpu_track.ipynb skipped: no suite.json in" in text and "1 skipped" in text
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs"]  # temporary folder removed


def test_analysis_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nimport respo.analysis, respo.analysis.report, respo.analysis.plots\n"
            "print(','.join(m for m in ('torch', 'transformers', 'respo.llm', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
