"""Registry, loaders and `respo prepare` on hand-written fixtures in the hub's formats (no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import zlib
from pathlib import Path

import pytest

from respo.commands.prepare import PrepareConfig, run
from respo.tasks import Problem
from respo.tasks.code import CodeTask
from respo.tasks.prepare import cap, read_problems, split_tests
from respo.tasks.registry import (
    BENCHMARKS,
    SOURCES,
    BadRow,
    convert_rows,
    decode_private_tests,
    load_rows,
    source,
)
from respo.tasks.sandbox import Limits

HUB = Path(__file__).parent / "fixtures" / "hub"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    outs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"prep{i}")
        manifest = run(PrepareConfig(out=out, local=HUB, n_train=6, n_test=3))
        outs.append((out, manifest))
    return outs


def test_prepare_is_deterministic(prepared):
    (a, ma), (b, mb) = prepared
    assert _digests(a) == _digests(b)
    assert ma == mb
    names = {"olympiads_train", "oly", "lcb_v6_medium", *BENCHMARKS} - {"oly"} | {"oly"}
    assert {p.stem for p in a.glob("*.jsonl")} == names
    for name, f in ma["files"].items():
        assert hashlib.sha256((a / f"{name}.jsonl").read_bytes()).hexdigest() == f["sha256"]


def test_prepare_seed_changes_split(tmp_path, prepared):
    (a, _), _ = prepared
    run(PrepareConfig(out=tmp_path, local=HUB, n_train=6, n_test=3, seed=7, only=("olympiads_train", "oly")))
    assert (tmp_path / "olympiads_train.jsonl").read_bytes() != (a / "olympiads_train.jsonl").read_bytes()


def test_olympiad_split_contents(prepared):
    (a, manifest), _ = prepared
    train, test = read_problems(a / "olympiads_train.jsonl"), read_problems(a / "oly.jsonl")
    assert len(train) == 6 and len(test) == 3
    assert not {p.id for p in train} & {p.id for p in test}
    rep = manifest["sources"]["numina_olympiads"]
    assert rep["filtered"] == {"other_source": 1}
    # the proof-only row, the empty-box row, the empty question and the int question, all counted
    assert rep["skipped"]["no_boxed_answer"] == 2
    assert rep["skipped"]["empty_problem"] == 1 and rep["skipped"]["wrong_type"] == 1
    assert rep["skipped"]["unverifiable_answer"] == 1
    assert all(isinstance(p.answer, str) and p.answer for p in train + test)


def test_unverifiable_answer_skipped_and_counted(tmp_path):
    # ten usable rows + one with a text answer: asking for all 11 must fail loudly
    with pytest.raises(ValueError, match="only 10 verifiable"):
        run(PrepareConfig(out=tmp_path, local=HUB, n_train=8, n_test=3, only=("olympiads_train",)))
    m = run(PrepareConfig(out=tmp_path, local=HUB, n_train=7, n_test=3, only=("olympiads_train",)))
    assert m["sources"]["numina_olympiads"]["skipped"]["unverifiable_answer"] == 1


def test_lcb_tests_split_half_and_half(prepared):
    (a, manifest), _ = prepared
    probs = {p.id: p for p in read_problems(a / "lcb_v6_medium.jsonl")}
    assert set(probs) == {"lcb-abc001_a", "lcb-lc-add"}
    p = probs["lcb-abc001_a"]
    assert len(p.meta["tests"]) == 2 and len(p.meta["heldout_tests"]) == 2
    got = sorted(t["input"] for t in p.meta["tests"] + p.meta["heldout_tests"])
    assert got == sorted(["3\n", "5\n", "0\n", "-4\n"])
    f = probs["lcb-lc-add"]
    assert f.meta["fn_name"] == "add" and len(f.meta["tests"]) == 1 and len(f.meta["heldout_tests"]) == 2
    assert manifest["sources"]["lcb_v6"]["skipped"] == {"too_few_tests": 1, "undecodable_tests": 1}
    fast = Limits(cpu_s=2, wall_s=5.0)
    stdin_sol = "```python\nprint(2 * int(input()))\n```"
    fn_sol = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```"
    for key in ("tests", "heldout_tests"):
        assert CodeTask(tests_key=key, limits=fast).reward(p, stdin_sol) == 1.0
        assert CodeTask(tests_key=key, limits=fast).reward(f, fn_sol) == 1.0


def test_split_tests_deterministic_partition():
    tests = [{"input": str(i), "output": str(i)} for i in range(7)]
    p = Problem("x", "q", "", {"tests": tests})
    a, b = split_tests(p, seed=1), split_tests(p, seed=1)
    assert a.meta == b.meta
    assert len(a.meta["tests"]) == 3 and len(a.meta["heldout_tests"]) == 4
    assert sorted(t["input"] for t in a.meta["tests"] + a.meta["heldout_tests"]) == [str(i) for i in range(7)]
    with pytest.raises(ValueError, match="'y'"):
        split_tests(Problem("y", "q", "", {"tests": tests[:1]}), seed=1)


def test_cap_is_seeded_sample_in_order():
    ps = [Problem(f"p{i}", "q", "a") for i in range(1000)]
    c1, c2 = cap(ps, 500, seed=42, name="m"), cap(ps, 500, seed=42, name="m")
    assert c1 == c2 and len(c1) == 500 and len({p.id for p in c1}) == 500
    assert [int(p.id[1:]) for p in c1] == sorted(int(p.id[1:]) for p in c1)
    assert cap(ps[:10], 500) == ps[:10]


def test_bad_rows_strict_names_the_row():
    with pytest.raises(ValueError, match="acereason_math row 3: missing_field: answer"):
        convert_rows("acereason_math", load_rows("acereason_math", local=HUB), strict=True)
    probs, rep = convert_rows("strategyqa", load_rows("strategyqa", local=HUB))
    assert [p.answer for p in probs] == ["yes", "no", "yes"]
    assert rep.skipped == {"wrong_type": 1} and "strategyqa row 2" in rep.examples[0]
    _, rep = convert_rows("commonsenseqa", [{"id": "z", "question": "", "choices": {"text": ["a"]}, "answerKey": "A"},
                                            "not a row"])
    assert rep.skipped == {"empty_question": 1, "wrong_type": 1}


def test_choice_rows_are_relettered_and_scored():
    probs, _ = convert_rows("commonsenseqa", load_rows("commonsenseqa", local=HUB))
    p = probs[0]
    assert p.question.endswith("(E) library") and "(B) river" in p.question and p.answer == "B"
    from respo.tasks.choice import ChoiceTask
    assert ChoiceTask().reward(p, "\\boxed{river}") == 1.0


def test_local_formats(tmp_path):
    rows = list(load_rows("hmmt_nov_2025", local=HUB))
    (tmp_path / "hmmt_nov_2025.json").write_text(json.dumps(rows))
    assert list(load_rows("hmmt_nov_2025", local=tmp_path)) == rows
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "h.parquet")
    assert list(load_rows("hmmt_nov_2025", local=tmp_path / "h.parquet")) == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n[1]\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        list(load_rows("hmmt_nov_2025", local=tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError):
        list(load_rows("strategyqa", local=tmp_path))


def test_registry_names_and_unknown():
    assert len(SOURCES) == 12
    assert set(BENCHMARKS) - {"oly"} <= set(SOURCES)
    with pytest.raises(KeyError, match="valid:"):
        source("gsm8k")


def test_private_tests_decoding_refuses_code():
    tests = [{"input": "1", "output": "2", "testtype": "stdin"}]
    good = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()
    assert decode_private_tests(good) == tests

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(BadRow, match="undecodable_tests"):
        decode_private_tests(evil)


def test_hub_path_calls_load_dataset_by_name_at_the_pin(monkeypatch):
    import datasets

    calls = []

    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split, kw))
        return [{"problem_idx": 1, "problem": "p", "answer": "1"}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert list(load_rows("hmmt_nov_2025")) == [{"problem_idx": 1, "problem": "p", "answer": "1"}]
    assert calls == [("MathArena/hmmt_nov_2025", None, "train", {"revision": SOURCES["hmmt_nov_2025"].revision})]
