"""``respo cpu-track``: suites, the resumable runner, export, the shipped warm-up lookup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from respo.commands import cpu_track
from respo.commands.train import load_presets
from respo.jsonl import read_jsonl
from respo.llm import sft
from respo.llm.checkpoint import latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

presets = load_presets()


def test_suites_name_their_runs_and_reject_bad_names():
    names = [r.name for r in presets.suite_runs("full")]
    assert names[:4] == ["grpo-s0", "rrpo-s0", "srpo-s0", "oracle-s0"]
    assert len([n for n in names if n.endswith(("-s0", "-s1", "-s2"))]) == len(names)
    assert {"srpo-2x4-s0", "srpo-1x8-s0", "srpo-matched-s0", "srpo-clip-s0"} <= set(names)
    clip = next(r for r in presets.suite_runs("full") if r.name == "srpo-clip-s0")
    assert clip.cfg.objective.loss == "ppo_clip" and clip.cfg.objective.agg == "token-mean"
    main = next(r for r in presets.suite_runs("full") if r.name == "srpo-s0")
    assert main.cfg.objective.loss == "reinforce" and main.tag == "main"
    # every run of a suite is scored on the same held-out problems
    assert {r.cfg.eval.seed for r in presets.suite_runs("quick")} == {1000}
    assert [r.name for r in presets.suite_runs("real")] == [
        "grpo-s42", "rrpo-s42", "srpo-s42", "spo-tree-s42", "treerl-s42", "score-s42", "critique-grpo-s42"]
    # the baselines are rows of the main table, on the main comparison's seeds
    full = {r.name: r for r in presets.suite_runs("full")}
    for v in presets.BASELINE_VARIANTS:
        assert {full[f"{v}-s{s}"].tag for s in (0, 1, 2)} == {"main"}
        assert full[f"{v}-s0"].cfg.baseline.segment_tokens == presets.SUITES["full"].segment_tokens
    assert full["grpo-s0"].cfg.baseline == presets.get_preset("cpu-synthetic").baseline
    two = presets.suite_runs("quick", seeds=(5, 6), steps=3)
    assert [r.cfg.seed for r in two] == [5] * 4 + [6] * 4 and {r.cfg.steps for r in two} == {3}
    with pytest.raises(ValueError, match="unknown suite 'nope'; valid: quick, full, real, smoke"):
        presets.suite_runs("nope")
    with pytest.raises(ValueError, match="unknown suite tags"):
        presets.suite_runs("full", tags=("main", "extra"))


def test_cli_rejects_an_unknown_suite(capsys):
    assert cpu_track.main(["--suite", "nope", "--no-figures"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_smoke_suite_runs_skips_finished_runs_resumes_and_exports(tmp_path, capsys):
    argv = ["--suite", "smoke", "--tags", "main", "--runs-dir", str(tmp_path), "--no-figures",
            "--no-progress", "--threads", "1"]
    assert cpu_track.main(argv) == 0
    suite = tmp_path / "smoke"
    listing = json.loads((suite / "suite.json").read_text())
    assert [r["name"] for r in listing["runs"]] == ["grpo-s0", "rrpo-s0", "srpo-s0", "oracle-s0"]
    for r in listing["runs"]:
        rows = read_jsonl(suite / r["name"] / "metrics.jsonl")
        assert [x["step"] for x in rows] == [0, 1]
        assert "eval0/greedy_pass@1" in rows[0] and "eval/greedy_pass@1" in rows[1]
        assert len(read_jsonl(suite / r["name"] / "rollouts.jsonl")) == 2
    srpo = read_jsonl(suite / "srpo-s0" / "metrics.jsonl")

    # A second call skips every finished run.
    capsys.readouterr()
    assert cpu_track.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4

    # An interrupted run (killed after logging step 0, before any checkpoint: the smoke suite
    # keeps only the last one) restarts and logs the same lines.
    run = suite / "srpo-s0"
    assert latest_checkpoint(run) is not None
    shutil.rmtree(run / "checkpoints")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    assert not cpu_track.run_finished(run, 2)
    assert cpu_track.main(argv) == 0
    again = read_jsonl(run / "metrics.jsonl")
    drop = ("time/",)
    assert [{k: v for k, v in r.items() if not k.startswith(drop)} for r in again] == \
           [{k: v for k, v in r.items() if not k.startswith(drop)} for r in srpo]

    out = tmp_path / "export"
    cpu_track.export_suite(suite, out)
    assert (out / "suite.json").exists() and (out / "srpo-s0" / "rollouts.jsonl").exists()
    assert not list(out.rglob("checkpoints"))


def test_warmup_names_and_shipped_lookup(tmp_path):
    assert sft.warmup_config("sft-warmup") == sft.SFTConfig()
    snap = sft.warmup_config("sft-warmup:40")
    assert snap.steps == 40 and snap.total_schedule == sft.SFTConfig().steps
    for bad in ("sft-warmup:x", "sft-warmup:0", "tiny"):
        with pytest.raises(ValueError, match="sft-warmup"):
            sft.warmup_config(bad)
    # A finished copy in a shipped folder is used as is (no training); other configs are not.
    cfg = sft.SFTConfig(steps=3)
    shipped = tmp_path / "shipped"
    (sft.checkpoint_path(cfg, shipped)).mkdir(parents=True)
    (sft.checkpoint_path(cfg, shipped) / sft.INFO_FILE).write_text("{}")
    assert sft.warmup_checkpoint(cfg, tmp_path / "cache", shipped=[shipped]) == sft.checkpoint_path(cfg, shipped)
    assert not sft.is_complete(sft.checkpoint_path(sft.SFTConfig(steps=4), shipped))


def test_the_shipped_warmup_is_recorded_relative_to_the_repository():
    from respo.commands.cpu_track import _warmup
    from respo.presets import get_preset

    warm = _warmup(get_preset("cpu-coverage"), progress=False)
    assert warm["path"] == f"experiments/results/cpu_track/warmup/sft-{warm['key']}"
    for suite in sorted(Path(__file__).resolve().parents[1].glob("experiments/results/cpu_track/*/warmup.json")):
        path = json.loads(suite.read_text())["path"]
        assert not Path(path).is_absolute(), suite  # committed suites read the same in every clone


def test_main_job_stage_two_runs_a_suite_and_writes_its_table(tmp_path, capsys):
    from respo.commands import main_job

    rc = main_job.main(["--skip-figures", "--suite", "smoke", "--tags", "main", "--runs-dir", str(tmp_path),
                        "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[respo main] stage 2, cpu-track suite 'smoke'" in out and "### Main results" in out
    figs = tmp_path / "smoke" / "figures"
    for name in ("cpu_curves.png", "cpu_localization.png", "cpu_grad_heatmap.png", "cpu_tables.md",
                 "cpu_results.json"):
        assert (figs / name).is_file(), name
    res = json.loads((figs / "cpu_results.json").read_text())
    assert res  # the notebook wrote its numbers


def test_a_partial_suite_run_adds_to_suite_json_instead_of_replacing_it(tmp_path):
    path = tmp_path / "suite.json"
    assert cpu_track.merge_listed(path, [{"name": "a"}]) == [{"name": "a"}]
    path.write_text(json.dumps({"runs": [{"name": "a", "tag": "old"}, {"name": "b"}]}))
    merged = cpu_track.merge_listed(path, [{"name": "a", "tag": "new"}, {"name": "c"}])
    assert merged == [{"name": "b"}, {"name": "a", "tag": "new"}, {"name": "c"}]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="suite.json"):
        cpu_track.merge_listed(path, [])
