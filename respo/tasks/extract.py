"""Answer extraction from free text: the last ``\\boxed{...}``, choice letters, yes/no.

Every function here runs in time linear in the input and never recurses, so adversarial outputs
(a megabyte of text, deeply nested braces) are cheap. Nothing here evaluates an expression:
``respo.tasks.math`` does that, in a worker process with a wall-clock limit.
"""

from __future__ import annotations

import re

MAX_BOXED_LEN = 1_000
"""Longest boxed content we accept; longer content is treated as no answer."""

_BOX_CMDS = ("\\boxed", "\\fbox")


def last_boxed(text: str, *, max_len: int = MAX_BOXED_LEN) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, else None.

    Also accepts ``\\boxed 5`` (a single token without braces). Returns None if the last box is
    unbalanced or its content is longer than ``max_len`` characters.
    """
    start = -1
    cmd_len = 0
    for cmd in _BOX_CMDS:
        i = text.rfind(cmd)
        if i > start:
            start, cmd_len = i, len(cmd)
    if start < 0:
        return None
    j = start + cmd_len
    n = len(text)
    while j < n and text[j] == " ":
        j += 1
    if j >= n:
        return None
    if text[j] != "{":
        m = re.match(r"[^\s$}]+", text[j : j + max_len + 1])
        return m.group(0) if m and len(m.group(0)) <= max_len else None
    depth = 0
    for k in range(j, min(n, j + max_len + 2)):
        c = text[k]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return None


def strip_wrappers(s: str) -> str:
    """Remove ``\\text{..}``, ``\\textbf{..}``, ``\\mathrm{..}``, markdown emphasis, brackets, dots."""
    s = s.strip()
    for _ in range(3):
        m = re.fullmatch(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox)\s*\{(.*)\}", s, flags=re.S)
        if not m:
            break
        s = m.group(1).strip()
    s = s.strip("*_` ").strip()
    s = re.sub(r"^[\(\[]\s*(.*?)\s*[\)\]]$", r"\1", s)
    return s.rstrip(".").strip()


_LETTER_PATTERNS = [
    # "answer is (B)", "Answer: B", "the correct option is B."
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\s*([A-Z])\s*[\)\]]?(?![A-Za-z])", re.I),
]


def choice_letter(text: str, letters: str) -> str | None:
    """The chosen letter among ``letters`` (upper case), from the last box, else a phrasing.

    Box content such as ``B``, ``(B)``, ``\\text{B}``, ``B) fish`` or ``Option B`` gives ``B``.
    Without a box, the last "answer is (B)" / "Answer: B" phrase in the final 2,000 characters.
    """
    box = last_boxed(text)
    if box is not None:
        s = strip_wrappers(box)
        m = re.fullmatch(r"(?:option|choice)?\s*[\(\[]?([A-Za-z])[\)\]\.:]?(?:\s.*)?", s, flags=re.I | re.S)
        if m and m.group(1).upper() in letters:
            # A lone lower-case word like "a bird" is not a letter choice; accept lower case only
            # when it stands alone.
            if m.group(1).isupper() or len(s) <= 3:
                return m.group(1).upper()
        return None
    tail = text[-2_000:]
    found = None
    for pat in _LETTER_PATTERNS:
        for m in pat.finditer(tail):
            if m.group(1).upper() in letters:
                found = m.group(1).upper()
    return found


_YES = {"yes", "true", "y"}
_NO = {"no", "false", "n"}


def yes_no(text: str) -> bool | None:
    """True for yes/true, False for no/false: from the last box, else the last "answer is yes/no"."""
    box = last_boxed(text)
    if box is not None:
        s = strip_wrappers(box).lower()
        if s in _YES:
            return True
        if s in _NO:
            return False
        return None
    tail = text[-2_000:].lower()
    ms = list(re.finditer(r"answer\s*(?:is|:)\s*\**\s*(yes|no|true|false)\b", tail))
    if ms:
        return ms[-1].group(1) in _YES
    return None
