"""The paper's training sets and ten benchmarks: where they live and how a row becomes a Problem.

Each ``Source`` names a hub dataset (id, config, split), the task that scores it, and a
``convert(row, index) -> Problem`` that raises ``BadRow`` for a row it cannot use (missing or
unverifiable answer, wrong types, empty question). ``load_rows`` reads rows from the hub
(``datasets.load_dataset``, on a connected machine) or from local files in the hub's formats
(JSONL, JSON list, Parquet); ``convert_rows`` turns them into Problems and returns a ``LoadReport``
that counts every skipped row by reason and names the first few (P9: never silent), or raises
on the first bad row with ``strict=True``.

Hub ids and field names are our best knowledge (the paper lists benchmark names only). Marked
**uncertain** below are those whose id, split or fields we could not confirm offline:

- ``numina_olympiads``: ``AI-MO/NuminaMath-CoT`` train, fields ``source``, ``problem``,
  ``solution`` (answer = last ``\\boxed{}`` of the solution). Confident.
- ``lcb_v6``: ``livecodebench/code_generation_lite``, the files ``test.jsonl`` .. ``test6.jsonl``
  (``release_v6``; current ``datasets`` no longer runs the repository's loading script, so the
  JSONL files are named directly; file names **uncertain**), split ``test``;
  fields ``question_id``, ``question_title``, ``question_content``, ``starter_code``,
  ``difficulty``, ``public_test_cases`` (JSON), ``private_test_cases`` (base64 of zlib of a
  pickled JSON string), ``metadata`` (JSON with ``func_name``). **Uncertain**: whether the paper's
  "v6" means all of ``release_v6`` or only the problems added in v6 (then keep ``test6.jsonl``).
- ``acereason_math``: ``nvidia/AceReason-Math`` train, ``problem``, ``answer``. **Uncertain**
  which 500 items the paper evaluated on (we take a seeded sample).
- ``commonsenseqa``: ``tau/commonsense_qa`` validation (the test split has no labels),
  ``question``, ``choices.label``/``choices.text``, ``answerKey``. Confident.
- ``sciknoweval_{chemistry,physics,biology,materials}``: ``hicai-zju/SciKnowEval`` test;
  fields ``question``, ``choices.text``/``choices.label``, ``answerKey``, ``domain``
  (``Chemistry``, ``Physics``, ``Biology``, ``Material``), ``details.level`` (``L3``), ``type``
  (multiple-choice types ``mcq-*``, and ``true_or_false``). **Uncertain**: split and field names.
- ``hmmt_nov_2025``: ``MathArena/hmmt_nov_2025`` train, ``problem``, ``answer``. **Uncertain**.
- ``math_l5``: ``DigitalLearningGmbH/MATH-lighteval`` test, ``problem``, ``level``,
  ``solution`` (answer = last box). **Uncertain** which MATH mirror the paper used.
- ``strategyqa``: ``ChilleD/StrategyQA`` test, ``question``, ``answer`` (bool). **Uncertain**.
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
    """One dataset: hub location, the task kind that scores it, and its row converter."""

    name: str
    hub_id: str
    split: str
    kind: str  # "math" | "choice" | "yesno" | "code"
    convert: Converter
    config: str | None = None
    load_kwargs: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    local_name: str = ""
    """File stem shared with other sources of the same hub dataset (e.g. ``sciknoweval``)."""


@dataclass
class LoadReport:
    """What a conversion kept and skipped (by reason, with the first few rows named)."""

    source: str
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
        if not self.skipped:
            return f"{self.source}: kept {self.kept}, filtered ({filt}), skipped 0"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return (f"{self.source}: kept {self.kept}, filtered ({filt}), skipped {self.n_skipped} ({reasons}); "
                f"e.g. {self.examples[:3]}")

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "skipped": dict(self.skipped), "filtered": dict(self.filtered),
                "examples": list(self.examples)}


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


def _sciknoweval(domain: str, short: str) -> Converter:
    def convert(row: Row, index: int) -> Problem:
        if str(row.get("domain", "")).lower() != domain.lower():
            raise BadRow("other_domain", str(row.get("domain")))
        details = row.get("details") or {}
        level = details.get("level") if isinstance(details, dict) else None
        if level != "L3":
            raise BadRow("other_level", str(level))
        q = _str(row, "question")
        kind = str(row.get("type", ""))
        if kind == "true_or_false" or kind.startswith("mcq"):
            labels, texts = _choices(row)
            return _mc_problem(f"sciknoweval-{short}-{index}", q, labels, texts, row.get("answerKey"),
                               type=kind)
        raise BadRow("unverifiable_type", kind)

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


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("numina_olympiads", "AI-MO/NuminaMath-CoT", "train", "math", convert_numina,
           description="NuminaMath-CoT, source 'olympiads' (train 400 / OLY test 100)"),
    Source("lcb_v6", "livecodebench/code_generation_lite", "test", "code", convert_lcb,
           load_kwargs=(("data_files", {"test": ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl",
                                                 "test5.jsonl", "test6.jsonl"]}),),
           description="LiveCodeBench v6, medium difficulty"),
    Source("acereason_math", "nvidia/AceReason-Math", "train", "math", convert_acereason),
    Source("commonsenseqa", "tau/commonsense_qa", "validation", "choice", convert_csqa),
    *[Source(f"sciknoweval_{d.lower()}", "hicai-zju/SciKnowEval", "test", "choice", _sciknoweval(dom, d.lower()),
             local_name="sciknoweval")
      for d, dom in (("Chemistry", "Chemistry"), ("Physics", "Physics"), ("Biology", "Biology"),
                     ("Materials", "Material"))],
    Source("hmmt_nov_2025", "MathArena/hmmt_nov_2025", "train", "math", convert_hmmt),
    Source("math_l5", "DigitalLearningGmbH/MATH-lighteval", "test", "math", convert_math_l5),
    Source("strategyqa", "ChilleD/StrategyQA", "test", "yesno", convert_strategyqa),
]}
"""Every dataset by name; an unknown name raises listing these (``source``)."""

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


def load_rows(name: str, *, local: str | Path | None = None) -> Iterator[Row]:
    """Rows of dataset ``name``: from ``local`` (a file, or a folder holding ``<name>.*``) or the hub."""
    src = source(name)
    if local is not None:
        p = Path(local)
        if p.is_dir():
            stems = [name] + ([src.local_name] if src.local_name else [])
            found = [p / f"{s}{ext}" for s in stems for ext in (".jsonl", ".json", ".parquet")
                     if (p / f"{s}{ext}").exists()]
            if not found:
                raise FileNotFoundError(f"no {' or '.join(stems)} (.jsonl/.json/.parquet) in {p}")
            p = found[0]
        yield from read_local(p)
        return
    import datasets  # only on a connected machine

    ds = datasets.load_dataset(src.hub_id, src.config, split=src.split, **dict(src.load_kwargs))
    yield from ds


def convert_rows(name: str, rows: Iterable[Row], *, strict: bool = False,
                 convert: Converter | None = None) -> tuple[list[Problem], LoadReport]:
    """Problems from rows; bad rows are counted by reason (or raise, naming the row, if ``strict``).

    Reasons starting with ``other_`` (another source, difficulty, level, domain) are selections,
    not defects: counted in ``report.filtered`` and never raised.
    """
    conv = convert or source(name).convert
    report = LoadReport(name)
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
