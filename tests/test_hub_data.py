"""The registry on data in the hub's real formats and layout: LiveCodeBench's repository with its
loading script, SciKnowEval's true/false and filling rows, pinned revisions in the manifest.

``fake_hub`` serves ``huggingface_hub.hf_hub_download`` and ``datasets.load_dataset`` from the
repository snapshots in ``tests/fixtures/hub/repos`` (the real ``datasets`` runs on each snapshot
folder, so a repository holding a loading script fails the way it does on the hub). No network.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from respo.commands.prepare import PrepareConfig, run
from respo.tasks.choice import ChoiceTask
from respo.tasks.registry import LCB_RELEASE_V6, LCB_SCOPES, SOURCES, convert_rows, load_rows

HUB = Path(__file__).parent / "fixtures" / "hub"
REPOS = HUB / "repos"


class FakeHub:
    """Records hub calls and answers them from snapshot folders ``<root>/<owner>/<name>/``."""

    def __init__(self, roots: list[Path], cache: Path) -> None:
        self.roots, self.cache = roots, cache
        self.downloads: list[tuple[str, str, str | None, str | None]] = []
        self.loads: list[tuple[str, str | None, str | None, str | None]] = []
        self.infos: list[tuple[str, str | None]] = []

    def repo(self, repo_id: str) -> Path:
        for root in self.roots:
            if (root / repo_id).is_dir():
                return root / repo_id
        raise FileNotFoundError(f"fake hub has no repository {repo_id}")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    hub = FakeHub([REPOS, tmp_path / "extra"], tmp_path / "hf_cache")
    real_load = datasets.load_dataset

    def hf_hub_download(repo_id, filename, *, repo_type=None, revision=None, **kw):
        hub.downloads.append((repo_id, filename, repo_type, revision))
        path = hub.repo(repo_id) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{repo_id}@{revision} has no {filename}")
        return str(path)

    def load_dataset(path, name=None, split=None, revision=None, **kw):
        hub.loads.append((path, name, split, revision))
        return real_load(str(hub.repo(path)), name, split=split, cache_dir=str(hub.cache), **kw)

    class Api:
        def dataset_info(self, repo_id, revision=None, **kw):
            hub.infos.append((repo_id, revision))
            return type("Info", (), {"sha": "c0ffee" * 6 + "abcd"})()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return hub


def test_lcb_repository_with_loading_script_loads_from_its_files(fake_hub):
    import datasets

    # What the old route met: datasets refuses a repository that holds <name>.py, data_files or not.
    with pytest.raises(RuntimeError, match="scripts are no longer supported"):
        datasets.load_dataset("livecodebench/code_generation_lite", data_files={"test": list(LCB_RELEASE_V6)},
                              split="test")
    fake_hub.loads.clear()
    probs, rep = convert_rows("lcb_v6", load_rows("lcb_v6"))
    pin = SOURCES["lcb_v6"].revision
    assert fake_hub.downloads == [("livecodebench/code_generation_lite", f, "dataset", pin) for f in LCB_RELEASE_V6]
    assert not fake_hub.loads  # datasets never sees the repository
    assert {p.id for p in probs} == {"lcb-abc300_b", "lcb-abc001_a", "lcb-lc-add"}  # 2023 and 2025 problems
    assert rep.filtered == {"other_difficulty": 5} and rep.skipped == {"too_few_tests": 1, "undecodable_tests": 1}
    # the same rows from a local snapshot of the repository
    assert list(load_rows("lcb_v6", local=REPOS)) == list(load_rows("lcb_v6"))


def test_lcb_scope_is_one_option_away(tmp_path):
    only, _ = convert_rows("lcb_v6_only", load_rows("lcb_v6_only", local=REPOS))
    assert {p.id for p in only} == {"lcb-abc001_a", "lcb-lc-add"}  # test6.jsonl: what v6 added
    for scope, n in (("release_v6", 3), ("v6_only", 2)):
        m = run(PrepareConfig(out=tmp_path / scope, local=REPOS, only=("lcb_v6_medium",), lcb_scope=scope,
                              check_answers=False))
        assert m["files"]["lcb_v6_medium"]["rows"] == n and m["lcb_scope"] == scope
        assert set(m["sources"]) == {LCB_SCOPES[scope]}
    with pytest.raises(KeyError, match="valid: release_v6, v6_only"):
        from respo.tasks.prepare import prepare

        prepare(local=REPOS, only=("lcb_v6_medium",), lcb_scope="v7")


def test_sciknoweval_true_false_rows_from_answer(fake_hub):
    probs, rep = convert_rows("sciknoweval_biology", load_rows("sciknoweval_biology"))
    assert rep.skipped == {} and rep.kept == 4  # mcq-2, mcq-4 and both true/false rows
    assert rep.filtered == {"other_level": 1, "other_domain": 5}
    assert fake_hub.loads == [("hicai-zju/SciKnowEval", "v2", "test", SOURCES["sciknoweval_biology"].revision)]
    tf = [p for p in probs if p.meta["type"] == "true_or_false"]
    assert [p.answer for p in tf] == ["B", "A"]  # answers "No", "Yes"
    assert all(p.question.endswith("\n(A) Yes\n(B) No") and p.meta["choices"] == ["Yes", "No"] for p in tf)
    task = ChoiceTask()
    assert task.reward(tf[0], "\\boxed{No}") == 1.0 and task.reward(tf[0], "\\boxed{A}") == 0.0
    assert task.reward(tf[1], "\\boxed{Yes}") == 1.0
    # the flat local files hold the same format
    flat, frep = convert_rows("sciknoweval_biology", load_rows("sciknoweval_biology", local=HUB))
    assert frep.skipped == {} and [p.answer for p in flat if p.meta["type"] == "true_or_false"] == ["B"]


def test_sciknoweval_filling_filtered_by_design_and_bad_answers_named(fake_hub):
    probs, rep = convert_rows("sciknoweval_chemistry", load_rows("sciknoweval_chemistry"))
    assert [p.answer for p in probs] == ["B"]
    assert rep.skipped == {} and rep.filtered == {"other_type": 1, "other_level": 1, "other_domain": 7}
    row = {"question": "Is it soluble?", "answer": "Maybe", "type": "true_or_false", "domain": "Biology",
           "details": {"level": "L3"}, "answerKey": "", "choices": {"text": [], "label": []}}
    _, rep = convert_rows("sciknoweval_biology", [row, {**row, "type": "ranking"}])
    assert rep.skipped == {"bad_answer": 1, "unknown_type": 1}
    with pytest.raises(ValueError, match="sciknoweval_biology row 0: bad_answer: .*'Maybe'"):
        convert_rows("sciknoweval_biology", [row], strict=True)


def test_every_entry_pinned_or_marked_and_sourced():
    for src in SOURCES.values():
        assert src.evidence, src.name
        assert re.fullmatch(r"[0-9a-f]{40}", src.revision or ""), src.name
    assert SOURCES["sciknoweval_physics"].config == "v2"
    assert [s.name for s in SOURCES.values() if s.revision is None] == []


@pytest.fixture
def unpinned_ace(monkeypatch):
    """AceReason-Math as an entry without a pin (how a newly added source starts out)."""
    src = dataclasses.replace(SOURCES["acereason_math"], revision=None, evidence="unpinned: for the test")
    monkeypatch.setitem(SOURCES, "acereason_math", src)
    return src


def _serve(tmp_path, repo, flat):
    (tmp_path / "extra" / repo).mkdir(parents=True)
    shutil.copy(HUB / f"{flat}.jsonl", tmp_path / "extra" / repo / "train.jsonl")


def test_acereason_is_read_at_its_pin(fake_hub, tmp_path):
    _serve(tmp_path, "nvidia/AceReason-Math", "acereason_math")
    m = run(PrepareConfig(out=tmp_path / "hub", only=("acereason_math",), check_answers=False))
    ace = m["sources"]["acereason_math"]
    assert (ace["revision"], ace["pinned"]) == ("a5cc41c5ecfc1d4a6571f98ade92d7fec100b2a8", True)
    assert fake_hub.infos == [] and m["unpinned_sources"] == []
    assert [(path, rev) for path, _, _, rev in fake_hub.loads] == [("nvidia/AceReason-Math", ace["revision"])]


def test_manifest_records_revisions(fake_hub, tmp_path, unpinned_ace):
    m = run(PrepareConfig(out=tmp_path / "local", local=HUB, only=("sciknoweval_biology", "strategyqa"),
                          check_answers=False))
    for name in ("sciknoweval_biology", "strategyqa"):
        s = m["sources"][name]
        assert (s["hub_id"], s["revision"]) == (SOURCES[name].hub_id, SOURCES[name].revision)
        assert s["origin"] == str(HUB)
    # from the hub: pinned entries at their pin, the unpinned one at the commit main resolved to
    _serve(tmp_path, "nvidia/AceReason-Math", "acereason_math")
    m = run(PrepareConfig(out=tmp_path / "hub", only=("sciknoweval_biology", "acereason_math"), check_answers=False))
    bio, ace = m["sources"]["sciknoweval_biology"], m["sources"]["acereason_math"]
    assert (bio["revision"], bio["origin"]) == (SOURCES["sciknoweval_biology"].revision, "hub")
    assert fake_hub.infos == [("nvidia/AceReason-Math", "main")]
    assert ace["revision"] == "c0ffee" * 6 + "abcd"
    assert {path: rev for path, _, _, rev in fake_hub.loads}["nvidia/AceReason-Math"] == ace["revision"]
    assert json.loads((tmp_path / "hub" / "manifest.json").read_text())["sources"]["acereason_math"] == ace


def test_unpinned_source_is_flagged_in_manifest_and_warned(fake_hub, tmp_path, capsys, unpinned_ace):
    for repo, flat in (("nvidia/AceReason-Math", "acereason_math"), ("MathArena/hmmt_nov_2025", "hmmt_nov_2025")):
        _serve(tmp_path, repo, flat)
    m = run(PrepareConfig(out=tmp_path / "hub", only=("acereason_math", "hmmt_nov_2025"), check_answers=False))
    ace, hmmt = m["sources"]["acereason_math"], m["sources"]["hmmt_nov_2025"]
    # the commit main resolved to is recorded, but never passed off as a checked pin
    assert (ace["revision"], ace["pinned"]) == ("c0ffee" * 6 + "abcd", False)
    assert (hmmt["revision"], hmmt["pinned"]) == (SOURCES["hmmt_nov_2025"].revision, True)
    assert m["unpinned_sources"] == ["acereason_math"]
    out = capsys.readouterr()
    assert "WARNING: acereason_math has no pinned revision" in out.err
    assert "acereason_math: kept" in out.out and "UNPINNED" in out.out
    assert "hmmt_nov_2025" not in out.err
    # offline, from local files: the same flag (the registry has no pin to report)
    m = run(PrepareConfig(out=tmp_path / "local", local=HUB, only=("acereason_math", "strategyqa"),
                          check_answers=False))
    assert m["unpinned_sources"] == ["acereason_math"]
    assert (m["sources"]["acereason_math"]["revision"], m["sources"]["acereason_math"]["pinned"]) == (None, False)
    assert m["sources"]["strategyqa"]["pinned"] is True


def test_sciknoweval_free_text_types_are_filtered_not_skipped():
    base = {"question": "q", "answer": "free text", "domain": "Chemistry", "details": {"level": "L3"},
            "answerKey": "", "choices": {"text": [], "label": []}}
    rows = [{**base, "type": t} for t in ("filling", "open-ended-qa", "relation_extraction")]
    probs, rep = convert_rows("sciknoweval_chemistry", rows)
    assert probs == [] and rep.skipped == {} and rep.filtered == {"other_type": 3}
