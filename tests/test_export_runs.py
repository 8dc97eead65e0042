"""experiments/cpu_track/export_runs.py: finished runs are copied without checkpoints, unfinished
runs are left out, and suite.json entries are merged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("export_runs", ROOT / "experiments/cpu_track/export_runs.py")
assert _spec is not None and _spec.loader is not None
export_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_runs)


def _run(folder: Path, name: str, steps: int, lines: int) -> dict:
    (folder / name / "checkpoints").mkdir(parents=True)
    (folder / name / "config.json").write_text(json.dumps({"steps": steps}))
    (folder / name / "metrics.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in range(lines)))
    (folder / name / "checkpoints" / "big.bin").write_bytes(b"x")
    return {"name": name, "seed": int(name[-1])}


def test_export_copies_finished_runs_and_merges_the_suite(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    (dst / "suite.json").write_text(json.dumps({"suite": "s", "runs": [{"name": "a-s0", "seed": 0}],
                                                "note": "old"}))
    runs = [_run(src, "a-s1", 3, 3), _run(src, "a-s2", 3, 2)]
    (src / "suite.json").write_text(json.dumps({"suite": "s", "runs": runs, "note": "new"}))
    copied, skipped = export_runs.export(src, dst, note="seeds 0-1")
    assert (copied, skipped) == (["a-s1"], ["a-s2"])
    assert (dst / "a-s1" / "metrics.jsonl").is_file() and not (dst / "a-s1" / "checkpoints").exists()
    assert not (dst / "a-s2").exists()
    suite = json.loads((dst / "suite.json").read_text())
    assert [e["name"] for e in suite["runs"]] == ["a-s0", "a-s1"] and suite["note"] == "seeds 0-1"


def test_no_rollouts_leaves_the_rollout_records_behind(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    runs = [_run(src, "a-s1", 2, 2)]
    (src / "a-s1" / "rollouts.jsonl").write_text("{}\n")
    (src / "suite.json").write_text(json.dumps({"suite": "s", "runs": runs}))
    assert export_runs.main([str(src), str(dst), "--no-rollouts"]) == 0
    assert (dst / "a-s1" / "metrics.jsonl").is_file() and (dst / "a-s1" / "config.json").is_file()
    assert not (dst / "a-s1" / "rollouts.jsonl").exists()
    export_runs.main([str(src), str(tmp_path / "all")])
    assert (tmp_path / "all" / "a-s1" / "rollouts.jsonl").is_file()
