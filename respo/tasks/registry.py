"""The paper's training sets and ten benchmarks: where they live and how a row becomes a Problem.

Each ``Source`` names a hub dataset (id, pinned ``revision``, config, split), the task that scores
it, a ``convert(row, index) -> Problem`` that raises ``BadRow`` for a row it cannot use (missing
or unverifiable answer, wrong types, empty question), and ``evidence``: the public material its
id, revision and row format were checked against. ``load_rows`` reads rows from the hub at the
pinned revision, from local files in the hub's row formats (JSONL, JSON list, Parquet) or from a
local repository snapshot (``<dir>/<owner>/<name>/``, as ``huggingface-cli download --local-dir``
writes it). ``convert_rows`` turns rows into Problems and returns a ``LoadReport`` that counts
every skipped row by reason and names the first few (design rule P9 in docs/design.md: never
silent), or raises on the first bad row with ``strict=True``.

The paper lists benchmark names only; the ids, splits and selections follow the authors' public
code (``Ankur-Samanta/SRPO``, ``training/scripts/prepare_datasets.py``) where it shows them. Two
choices are ours and one option away:

- LiveCodeBench "v6" is all of ``release_v6`` (the files ``test.jsonl`` .. ``test6.jsonl``, 1,055
  problems, May 2023 - Apr 2025), as the authors' code loads it (``version_tag="release_v6"``, no
  date window); ``lcb_v6_only`` (``test6.jsonl``, the 175 problems v6 added) is the other
  reading, chosen with ``respo prepare --lcb-scope v6_only``. The repository still holds its
  loading script, which current ``datasets`` refuses and older versions run, so the JSONL files
  are downloaded (``huggingface_hub.hf_hub_download``) and read directly.
- SciKnowEval L3 keeps multiple-choice and true/false rows (true/false become the choices Yes / No,
  gold from ``answer``); Chemistry's free-text ``filling`` rows are filtered out by design (no
  choice to verify; the authors' code keeps them under a substring match).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from respo.tasks.base import Problem, check_input_file, input_lines
from respo.tasks.extract import last_boxed


class BadRow(ValueError):
    """A row that cannot become a Problem; ``reason`` is a short category for the report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


Row = dict[str, Any]
Converter = Callable[[Row, int], Problem]


@dataclass(frozen=True)
class Source:
    """One dataset: hub location and revision, the task kind that scores it, and its row converter."""

    name: str
    hub_id: str
    split: str
    kind: str  # "math" | "choice" | "yesno" | "code"
    convert: Converter
    revision: str | None
    """Pinned hub commit (40 hex digits); None where no public record of one was found offline
    (``evidence`` says so), and then the commit of ``main`` at load time is recorded instead."""
    config: str | None = None
    data_files: tuple[str, ...] = ()
    """Files read straight from the repository (bypassing ``datasets`` and any loading script the
    repository holds); empty: ``datasets.load_dataset(hub_id, config, split=split)``."""
    evidence: str = ""
    """The public material the id, revision and row format were checked against."""
    description: str = ""
    local_name: str = ""
    """File stem shared with other sources of the same hub dataset (e.g. ``sciknoweval``)."""


@dataclass
class LoadReport:
    """What a conversion kept and skipped (by reason, with the first few rows named)."""

    source: str
    hub_id: str = ""
    revision: str | None = None
    """The commit the rows came from (hub), or the registry's pin (local files)."""
    origin: str = ""
    """``hub``, or the local file / snapshot folder read."""
    pinned: bool = True
    """Whether ``revision`` is the registry's pin (checked against public evidence); False for a
    source with no pin found offline, whose rows come from whatever ``main`` held at load time."""
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Defective rows by reason (missing/unverifiable answer, wrong type, empty question...)."""
    filtered: Counter[str] = field(default_factory=Counter)
    """Rows outside the selection by reason (other source, difficulty, level, domain)."""
    examples: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        filt = ", ".join(f"{k}={v}" for k, v in sorted(self.filtered.items())) or "none"
        pin = "" if self.pinned else f" [UNPINNED: read at {self.revision or 'no fixed revision'}, not a checked pin]"
        if not self.skipped:
            return f"{self.source}: kept {self.kept}, filtered ({filt}), skipped 0{pin}"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return (f"{self.source}: kept {self.kept}, filtered ({filt}), skipped {self.n_skipped} ({reasons}); "
                f"e.g. {self.examples[:3]}{pin}")

    def as_dict(self) -> dict[str, Any]:
        return {"hub_id": self.hub_id, "revision": self.revision, "pinned": self.pinned, "origin": self.origin,
                "kept": self.kept,
                "skipped": dict(self.skipped), "filtered": dict(self.filtered), "examples": list(self.examples)}


# ---------------------------------------------------------------------------------------------
# Field helpers


def _str(row: Row, key: str, *, nonempty: bool = True) -> str:
    if key not in row or row[key] is None:
        raise BadRow("missing_field", key)
    v = row[key]
    if not isinstance(v, str):
        raise BadRow("wrong_type", f"{key} is {type(v).__name__}")
    if nonempty and not v.strip():
        raise BadRow("empty_" + key)
    return v


def _boxed_answer(solution: str) -> str:
    ans = last_boxed(solution)
    if ans is None or not ans.strip():
        raise BadRow("no_boxed_answer")
    return ans.strip()


def _math_answer(row: Row, key: str) -> str:
    v = row.get(key)
    if isinstance(v, bool) or v is None:
        raise BadRow("missing_field" if v is None else "wrong_type", key)
    if isinstance(v, (int, float)):
        return str(v)
    if not isinstance(v, str) or not v.strip():
        raise BadRow("empty_answer" if isinstance(v, str) else "wrong_type", key)
    return v.strip()


def _rid(row: Row, keys: Iterable[str], index: int, prefix: str) -> str:
    for k in keys:
        if row.get(k) not in (None, ""):
            return f"{prefix}-{row[k]}"
    return f"{prefix}-{index}"


def _choices(row: Row) -> tuple[list[str], list[str]]:
    ch = row.get("choices")
    if not isinstance(ch, dict) or not isinstance(ch.get("text"), list) or not ch["text"]:
        raise BadRow("missing_field", "choices.text")
    texts = [str(t) for t in ch["text"]]
    labels = ch.get("label") or [chr(ord("A") + i) for i in range(len(texts))]
    if len(labels) != len(texts):
        raise BadRow("wrong_type", "choices.label and choices.text differ in length")
    return [str(x).strip().upper() for x in labels], texts


def _mc_question(question: str, labels: list[str], texts: list[str]) -> str:
    return question.strip() + "\n" + "\n".join(f"({lab}) {t}" for lab, t in zip(labels, texts, strict=True))


def _mc_problem(pid: str, question: str, labels: list[str], texts: list[str], key: Any, **meta: Any) -> Problem:
    if not isinstance(key, str) or key.strip().upper() not in labels:
        raise BadRow("bad_answer_key", repr(key))
    # Re-letter as A, B, C... so the verifier's letters match the question shown.
    letters = [chr(ord("A") + i) for i in range(len(texts))]
    gold = letters[labels.index(key.strip().upper())]
    return Problem(pid, _mc_question(question, letters, texts), gold, {"choices": texts, **meta})


# ---------------------------------------------------------------------------------------------
# Converters


def looks_like_prose(answer: str) -> bool:
    """Whether a boxed answer is words rather than a value (e.g. ``\\text{the claim holds}``).

    math-verify parses such text as a product of symbols, so it would pass a parse check; three or
    more words of three or more letters (outside LaTeX commands) mark it unverifiable.
    """
    import re

    words = re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", " ", answer))
    return len(words) >= 3


def convert_numina(row: Row, index: int) -> Problem:
    if row.get("source") != "olympiads":
        raise BadRow("other_source", str(row.get("source")))
    q = _str(row, "problem")
    ans = _boxed_answer(_str(row, "solution"))
    if len(ans) > 200 or looks_like_prose(ans):
        raise BadRow("unverifiable_answer", ans[:40])
    return Problem(f"olympiads-{index}", q, ans, {"source": "olympiads"})


MAX_TESTS_BYTES = 64 << 20
"""Largest decompressed private-test blob of one LiveCodeBench row (larger: ``tests_too_large``)."""


def decode_private_tests(value: Any) -> list[Row]:
    """LiveCodeBench private tests: a JSON list, or base64(zlib(pickle(json string))), at most
    ``MAX_TESTS_BYTES`` decompressed."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise BadRow("wrong_type", "private_test_cases")
    if not value.strip():
        return []
    try:
        out = json.loads(value)
        if isinstance(out, list):
            return out
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        packed = base64.b64decode(value)
    except ValueError as e:
        raise BadRow("undecodable_tests", type(e).__name__) from None
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, MAX_TESTS_BYTES)
    except zlib.error as e:
        raise BadRow("undecodable_tests", type(e).__name__) from None
    if inflate.unconsumed_tail:  # a compression bomb (the audit's: 1.4 MB -> 2.1 GB)
        raise BadRow("tests_too_large", f"over {MAX_TESTS_BYTES} bytes decompressed")
    try:
        text = _SafeUnpickler(io.BytesIO(raw)).load()
        out = json.loads(text) if isinstance(text, (str, bytes)) else text
    except Exception as e:  # any decoding failure is a bad row, reported by reason
        raise BadRow("undecodable_tests", type(e).__name__) from None
    if not isinstance(out, list):
        raise BadRow("undecodable_tests", "not a list")
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _tests(value: Any, what: str) -> list[Row]:
    tests = json.loads(value) if isinstance(value, str) and value.strip() else (value or [])
    if not isinstance(tests, list):
        raise BadRow("wrong_type", what)
    out = []
    for t in tests:
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise BadRow("bad_test", what)
        out.append({"input": str(t["input"]), "output": str(t["output"]),
                    "testtype": str(t.get("testtype", "stdin"))})
    return out


def convert_lcb(row: Row, index: int, *, difficulty: str = "medium") -> Problem:
    if row.get("difficulty") != difficulty:
        raise BadRow("other_difficulty", str(row.get("difficulty")))
    q = _str(row, "question_content")
    tests = _tests(row.get("public_test_cases"), "public_test_cases") + decode_private_tests(row.get("private_test_cases", ""))
    tests = _tests(tests, "private_test_cases")
    if len(tests) < 2:
        raise BadRow("too_few_tests", str(len(tests)))
    meta_raw = row.get("metadata") or "{}"
    try:
        meta = json.loads(meta_raw) if isinstance(meta_raw, str) else dict(meta_raw)
    except (json.JSONDecodeError, TypeError, ValueError):
        raise BadRow("wrong_type", "metadata") from None
    types = {t["testtype"] for t in tests}
    if len(types) != 1:
        raise BadRow("mixed_test_types", str(sorted(types)))
    fn = meta.get("func_name")
    if types == {"functional"} and not fn:
        raise BadRow("missing_field", "metadata.func_name")
    starter = row.get("starter_code") or ""
    question = q.strip()
    if starter.strip():
        question += "\n\nStarter code:\n```python\n" + starter.rstrip() + "\n```"
    return Problem(_rid(row, ["question_id"], index, "lcb"), question, "",
                   {"tests": tests, "fn_name": fn, "starter_code": starter,
                    "platform": row.get("platform"), "contest_date": row.get("contest_date")})


def convert_acereason(row: Row, index: int) -> Problem:
    return Problem(f"acereason-{index}", _str(row, "problem"), _math_answer(row, "answer"))


def convert_csqa(row: Row, index: int) -> Problem:
    labels, texts = _choices(row)
    return _mc_problem(_rid(row, ["id"], index, "csqa"), _str(row, "question"), labels, texts, row.get("answerKey"))


SCIKNOWEVAL_FREE_TEXT = ("filling", "open-ended-qa", "relation_extraction")
"""SciKnowEval row types with a free-text answer: no choice to verify, filtered out by design.
V2 has six types: these three, ``mcq-4-choices``, ``mcq-2-choices`` and ``true_or_false``
(``relation_extraction`` rows are L2 in V2, so the level filter drops them first)."""


def _yes_no_key(row: Row) -> str:
    """The letter of a true/false row's gold among the choices (A) Yes (B) No, from ``answer``."""
    a = row.get("answer")
    if a is None:
        raise BadRow("missing_field", "answer")
    if not isinstance(a, str) or a.strip().lower() not in ("yes", "no"):
        raise BadRow("bad_answer", f"true_or_false answer {a!r} is not Yes/No")
    return "A" if a.strip().lower() == "yes" else "B"


def _sciknoweval(domain: str, short: str) -> Converter:
    def convert(row: Row, index: int) -> Problem:
        if str(row.get("domain", "")).lower() != domain.lower():
            raise BadRow("other_domain", str(row.get("domain")))
        details = row.get("details") or {}
        level = details.get("level") if isinstance(details, dict) else None
        if level != "L3":
            raise BadRow("other_level", str(level))
        kind = str(row.get("type", ""))
        if kind in SCIKNOWEVAL_FREE_TEXT:
            raise BadRow("other_type", kind)
        q = _str(row, "question")
        pid = f"sciknoweval-{short}-{index}"
        if kind.startswith("mcq"):
            labels, texts = _choices(row)
            return _mc_problem(pid, q, labels, texts, row.get("answerKey"), type=kind)
        if kind == "true_or_false":
            # The dataset gives these no choices and an empty answerKey; the gold is answer "Yes"/"No".
            return _mc_problem(pid, q, ["A", "B"], ["Yes", "No"], _yes_no_key(row), type=kind)
        raise BadRow("unknown_type", kind)

    return convert


def convert_hmmt(row: Row, index: int) -> Problem:
    return Problem(_rid(row, ["problem_idx"], index, "hmmt"), _str(row, "problem"), _math_answer(row, "answer"))


def convert_math_l5(row: Row, index: int) -> Problem:
    if row.get("level") != "Level 5":
        raise BadRow("other_level", str(row.get("level")))
    q = _str(row, "problem")
    return Problem(f"math-{index}", q, _boxed_answer(_str(row, "solution")), {"type": row.get("type")})


def convert_strategyqa(row: Row, index: int) -> Problem:
    a = row.get("answer")
    if isinstance(a, str) and a.strip().lower() in ("true", "false", "yes", "no"):
        a = a.strip().lower() in ("true", "yes")
    if not isinstance(a, bool):
        raise BadRow("missing_field" if a is None else "wrong_type", "answer")
    return Problem(_rid(row, ["qid"], index, "strategyqa"), _str(row, "question"), "yes" if a else "no")


LCB_RELEASE_V6 = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")
"""LiveCodeBench ``release_v6``: the six release files, each adding the problems of one release."""

_SRPO = "authors' code Ankur-Samanta/SRPO training/scripts/prepare_datasets.py"
_LCB_EVIDENCE = (
    "revision 0fe84c39 pinned by several public projects that read test.jsonl .. test6.jsonl at it "
    "(one expects 1,055 rows there: release_v6, and lists each file's size and LFS sha256); fields and "
    "private-test encoding (base64, zlib, pickle, JSON) as the " + _SRPO + " and lasgroup/SDPO's "
    "loader decode them; scope: the authors' code loads version_tag='release_v6' (medium, no date "
    "window); the repository keeps code_generation_lite.py, so the files are read directly")
_SKE_EVIDENCE = (
    "dataset card declares one config v2 (split test, data/v2/sciknoweval_test_v2.jsonl); revision "
    "92ef969a pinned as 'SciKnowEval V2' by several public projects, one a loader (NVIDIA-NeMo/Gym "
    "benchmarks/sciknoweval) that reads that file at it, expects 28,392 rows, and takes the gold of "
    "mcq rows from answerKey and of true_or_false rows from answer (Yes/No), as the " + _SRPO + " "
    "loads config v2 and does; row format (choices.text/label, answerKey, answer, type, domain, "
    "details.level) as in the GitHub repository HICAI-ZJU/SciKnowEval raw_data (V2); the hub file "
    "itself was not read offline")

SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("numina_olympiads", "AI-MO/NuminaMath-CoT", "train", "math", convert_numina,
           "9d8d210c9f6a36c8f3cd84045668c9b7800ef517",
           evidence="revision pinned as main by public projects; fields source/problem/solution and the "
                    "'olympiads' filter as in the " + _SRPO,
           description="NuminaMath-CoT, source 'olympiads' (train 400 / OLY test 100)"),
    Source("lcb_v6", "livecodebench/code_generation_lite", "test", "code", convert_lcb,
           "0fe84c3912ea0c4d4a78037083943e8f0c4dd505", data_files=LCB_RELEASE_V6, evidence=_LCB_EVIDENCE,
           description="LiveCodeBench release_v6 (all six files, as the authors' code loads it), medium"),
    Source("lcb_v6_only", "livecodebench/code_generation_lite", "test", "code", convert_lcb,
           "0fe84c3912ea0c4d4a78037083943e8f0c4dd505", data_files=LCB_RELEASE_V6[-1:], evidence=_LCB_EVIDENCE,
           description="LiveCodeBench, only the problems release_v6 added (test6.jsonl), medium"),
    Source("acereason_math", "nvidia/AceReason-Math", "train", "math", convert_acereason,
           "a5cc41c5ecfc1d4a6571f98ade92d7fec100b2a8",
           evidence="revision pinned by the mAceReason-Math release (apple/ml-macereason-math README and "
                    "public loaders built on it), which loads split train at this commit and patches rows by "
                    "their index, so its English data exists only for the rows of this commit; fields "
                    "problem/answer, split train as on the dataset card and in public loaders"),
    Source("commonsenseqa", "tau/commonsense_qa", "validation", "choice", convert_csqa,
           "94630fe30dad47192a8546eb75f094926d47e155",
           evidence="revision pinned by several public projects; validation split (test has no labels), "
                    "question, choices.label/text, answerKey as on the dataset card"),
    *[Source(f"sciknoweval_{d.lower()}", "hicai-zju/SciKnowEval", "test", "choice", _sciknoweval(dom, d.lower()),
             "92ef969ad0a8bd6e195e0ac18af2c46e307e0cc2", config="v2", evidence=_SKE_EVIDENCE,
             local_name="sciknoweval")
      for d, dom in (("Chemistry", "Chemistry"), ("Physics", "Physics"), ("Biology", "Biology"),
                     ("Materials", "Material"))],
    Source("hmmt_nov_2025", "MathArena/hmmt_nov_2025", "train", "math", convert_hmmt,
           "118dbfb45c4c9467c672268ed55166642897aa46",
           evidence="revision pinned by several public evaluation projects (30 problems); split train, fields "
                    "problem/answer as in the authors' training/scripts/prepare_new_evals.py"),
    Source("math_l5", "DigitalLearningGmbH/MATH-lighteval", "test", "math", convert_math_l5,
           "0530c78699ea5e8eb5530600900e1f328b48acad",
           evidence="revision pinned by several public projects and evaluation catalogs; fields "
                    "problem/level/solution/type. The "
                    "authors' training/scripts/prepare_math_level5.py reads another mirror of the same MATH "
                    "test problems, EleutherAI/hendrycks_math (per subject), which this entry does not use"),
    Source("strategyqa", "ChilleD/StrategyQA", "test", "yesno", convert_strategyqa,
           "705562638fe1d8ca6bb98c66fc8f94d45fda8c83",
           evidence="revision pinned by several public projects; test split, question, answer (bool) as in "
                    "the authors' training/scripts/prepare_reasoning_evals.py (ChilleD first)"),
]}
"""Every dataset by name; an unknown name raises listing these (``source``)."""

LCB_SCOPES = {"release_v6": "lcb_v6", "v6_only": "lcb_v6_only"}
"""What "LiveCodeBench v6" reads, by scope name: the source behind ``lcb_v6_medium``."""

BENCHMARKS = ("oly", "acereason_math", "commonsenseqa", "sciknoweval_chemistry", "sciknoweval_physics",
              "sciknoweval_biology", "sciknoweval_materials", "hmmt_nov_2025", "math_l5", "strategyqa")
"""The paper's ten benchmarks (``oly`` is the 100-item held-out split of ``numina_olympiads``)."""


def source(name: str) -> Source:
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")
    return SOURCES[name]


def read_local(path: str | Path) -> Iterator[Row]:
    """Rows of a local file in a hub format: ``.jsonl``, ``.json`` (a list) or ``.parquet``."""
    p = Path(path)
    if p.suffix in (".jsonl", ".json", ".parquet"):
        check_input_file(p)
    if p.suffix == ".jsonl":
        for lineno, line in input_lines(p):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{p}:{lineno}: a row must be a JSON object")
            yield row
    elif p.suffix == ".json":
        try:
            data = json.loads(p.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{p}: not a UTF-8 JSON file ({type(e).__name__}: {str(e)[:120]})") from None
        if not isinstance(data, list):
            raise ValueError(f"{p}: expected a JSON list of rows")
        if not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{p}: every row of the JSON list must be an object")
        yield from data
    elif p.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{p}: not a readable parquet file ({str(e)[:160]})") from None
        yield from table.to_pylist()
    else:
        raise ValueError(f"{p}: unsupported file type (use .jsonl, .json or .parquet)")


def snapshot_dir(name: str, local: str | Path) -> Path | None:
    """The repository snapshot of dataset ``name`` under ``local`` (``<local>/<owner>/<name>/``), if any."""
    p = Path(local) / source(name).hub_id
    return p if p.is_dir() else None


def hub_revision(name: str) -> str:
    """The commit to load ``name`` from: its pin, or (unpinned) the commit ``main`` points to now."""
    src = source(name)
    if src.revision is not None:
        return src.revision
    import huggingface_hub  # only on a connected machine

    return huggingface_hub.HfApi().dataset_info(src.hub_id, revision="main").sha


def load_rows(name: str, *, local: str | Path | None = None, revision: str | None = None) -> Iterator[Row]:
    """Rows of dataset ``name`` from the hub at ``revision`` (default: its pin) or from ``local``.

    ``local`` is a file, a folder holding ``<name>.*`` (or ``<local_name>.*``), or a folder holding
    repository snapshots ``<owner>/<name>/`` read the way the hub is. Sources with ``data_files``
    read those files and nothing else of the repository (never its loading script).
    """
    src = source(name)
    snap = snapshot_dir(name, local) if local is not None and Path(local).is_dir() else None
    if snap is not None:
        if src.data_files:
            for f in src.data_files:
                if not (snap / f).is_file():
                    raise FileNotFoundError(f"{name}: snapshot {snap} has no {f}")
                yield from read_local(snap / f)
            return
        import datasets

        yield from datasets.load_dataset(str(snap), src.config, split=src.split)
        return
    if local is not None:
        p = Path(local)
        if p.is_dir():
            stems = [name] + ([src.local_name] if src.local_name else [])
            found = [p / f"{s}{ext}" for s in stems for ext in (".jsonl", ".json", ".parquet")
                     if (p / f"{s}{ext}").exists()]
            if not found:
                raise FileNotFoundError(f"no {' or '.join(stems)} (.jsonl/.json/.parquet) and no snapshot "
                                        f"{src.hub_id}/ in {p}")
            p = found[0]
        yield from read_local(p)
        return
    rev = revision or src.revision
    if src.data_files:
        import huggingface_hub  # only on a connected machine

        for f in src.data_files:
            yield from read_local(huggingface_hub.hf_hub_download(src.hub_id, f, repo_type="dataset", revision=rev))
        return
    import datasets  # only on a connected machine

    yield from datasets.load_dataset(src.hub_id, src.config, split=src.split, revision=rev)


def convert_rows(name: str, rows: Iterable[Row], *, strict: bool = False,
                 convert: Converter | None = None) -> tuple[list[Problem], LoadReport]:
    """Problems from rows; bad rows are counted by reason (or raise, naming the row, if ``strict``).

    Reasons starting with ``other_`` (another source, difficulty, level, domain, type) are selections,
    not defects: counted in ``report.filtered`` and never raised.
    """
    src = source(name)
    conv = convert or src.convert
    report = LoadReport(name, hub_id=src.hub_id, revision=src.revision, pinned=src.revision is not None)
    out: list[Problem] = []
    for i, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise BadRow("wrong_type", "row is not an object")
            p = conv(row, i)
        except BadRow as e:
            if e.reason.startswith("other_"):
                report.filtered[e.reason] += 1
                continue
            report.skipped[e.reason] += 1
            where = f"{name} row {i}"
            if strict:
                raise ValueError(f"{where}: {e}") from None
            if len(report.examples) < 10:
                report.examples.append(f"{where}: {e}")
            continue
        except ValueError as e:  # Problem's own checks (empty id/question, non-string answer)
            report.skipped["invalid_problem"] += 1
            if strict:
                raise ValueError(f"{name} row {i}: {e}") from None
            if len(report.examples) < 10:
                report.examples.append(f"{name} row {i}: {e}")
            continue
        out.append(p)
    report.kept = len(out)
    return out, report
