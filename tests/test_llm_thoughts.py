"""Token-level thoughts: split/join identity, truncation to complete thoughts, answer extraction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respo.llm.thoughts import (
    Delimiter,
    ThoughtFormat,
    boxed_answer,
    complete_length,
    extract_boxed,
    prefixed_answer,
    split_thoughts,
    strip_delimiter,
    truncate_to_complete,
)

DELIMS = [Delimiter.of_ids([7]), Delimiter.of_ids([7, 8]), Delimiter("d", ((7, 8), (9,), (5, 7)))]
id_lists = st.lists(st.integers(0, 10), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ids=id_lists, which=st.integers(0, len(DELIMS) - 1))
def test_split_join_identity_and_each_thought_ends_once(ids: list[int], which: int) -> None:
    d = DELIMS[which]
    spans = split_thoughts(ids, d)
    joined = [t for s, e in spans for t in ids[s:e]]
    assert joined == ids
    assert all(e > s for s, e in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    for s, e in spans[:-1]:  # every span but the last ends with the delimiter ...
        assert d.ends_thought(ids, s, e)
        # ... and nowhere earlier (first-match rule shared with the generation loop)
        assert not any(d.ends_thought(ids, s, p) for p in range(s + 1, e))


@settings(max_examples=200, deadline=None)
@given(ids=id_lists, which=st.integers(0, len(DELIMS) - 1))
def test_truncation_keeps_only_complete_thoughts(ids: list[int], which: int) -> None:
    d = DELIMS[which]
    cut = truncate_to_complete(ids, d)
    assert cut.tolist() == ids[: len(cut)]
    spans = split_thoughts(cut, d)
    assert all(d.ends_thought(cut, s, e) for s, e in spans)
    # nothing complete was dropped: the remainder holds no complete thought
    rest = ids[len(cut):]
    assert all(not d.ends_thought(rest, s, e) for s, e in split_thoughts(rest, d))
    assert complete_length(ids, d) == len(cut)


def test_split_examples() -> None:
    d = Delimiter.of_ids([7, 8])
    assert split_thoughts([1, 7, 8, 2, 7, 7, 8, 3], d) == [(0, 3), (3, 7), (7, 8)]
    assert split_thoughts([], d) == []
    assert truncate_to_complete([1, 7, 8, 2, 7], d).tolist() == [1, 7, 8]
    assert truncate_to_complete([1, 2], d).tolist() == []
    assert split_thoughts(np.array([7, 8, 7, 8]), [7, 8]) == [(0, 2), (2, 4)]


def test_delimiter_from_tokenizer_real_vocab() -> None:
    from llm_fixtures import tiny_tokenizer

    tok = tiny_tokenizer()
    d = Delimiter.from_tokenizer(tok, "</thought>")
    assert d.canonical == (tok.convert_tokens_to_ids("</thought>"),)
    ids = tok.encode("a</thought>b\\boxed{1}</thought>c", add_special_tokens=False)
    fmt = ThoughtFormat.for_tokenizer(tok, "</thought>")
    assert fmt.thought_texts(ids) == ["a</thought>", "b\\boxed{1}</thought>", "c"]
    spans = split_thoughts(ids, d)
    assert [fmt.is_final(ids[s:e]) for s, e in spans] == [False, True, False]
    with pytest.raises(ValueError):
        Delimiter.from_tokenizer(tok, "")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("\\boxed{7}", "7"),
        ("a \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{{a}{b{c}}} tail", "{a}{b{c}}"),
        ("\\boxed{3} and \\boxed{unclosed", "3"),
        ("no box", None),
        ("\\boxed{}", ""),
        ("\\boxed{x} \\boxed{y", "x"),
    ],
)
def test_extract_boxed(text: str, want: str | None) -> None:
    assert extract_boxed(text) == want
    assert boxed_answer(text) == want


def test_prefixed_answer_and_strip() -> None:
    det = prefixed_answer("Answer:")
    assert det("blah\nAnswer: 7\nmore") == "7"
    assert det("Answer: 1\nAnswer: 2") == "2"
    assert det("Answer:   ") is None
    assert det("nothing") is None
    assert strip_delimiter("  x = 2 </thought>", "</thought>") == "x = 2"
    assert strip_delimiter("x\n", "\n") == "x"
