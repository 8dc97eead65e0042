"""Every document the repository cites is in the repository (docs/README.md lists the docs).

The check reads the text files of the repository (``git ls-files``, tracked and untracked but
not ignored; the committed run data under ``experiments/results/`` and binary files are skipped)
and reports ``file:line`` for:

(a) a ``*.md`` name that is not a file of the repository, read as a path from the repository
    root or from the citing file's folder (so ``docs/method.md`` resolves anywhere, a bare name
    resolves only beside the file that cites it, and relative links in ``docs/`` and ``theory/``
    work as links do). Two exceptions, each checked: names of files the code writes
    (``GENERATED``) and files of other public repositories cited together with that repository
    (``EXTERNAL``);
(b) a path into the design folder outside the repository;
(c) a design-rule tag (P followed by a number) that ``docs/design.md`` does not define, or a
    numbered anti-pattern (``docs/design.md`` keeps no numbered list of them);
(d) a section of ``docs/method.md`` or a check of ``docs/theory.md`` cited by a number that page
    does not have.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MD = ".md"  # written apart so that this file's own examples are not citations

TEXT_SUFFIXES = {".py", MD, ".ipynb", ".toml", ".txt", ".yaml", ".yml", ".sh", ".sbatch", ".cfg",
                 ".ini", ".jinja"}
TEXT_NAMES = {"Makefile", ".gitignore", "run"}
SKIP_PREFIXES = ("experiments/results/", "build/", "dist/")
"""Committed run data, and build output (copies of the package) when it is not ignored."""
WALK_ROOTS = ("respo", "tests", "notebooks", "experiments", "theory", "docs", "paper_figures",
              "constraints", ".ci")
WALK_FILES = ("README" + MD, "pyproject.toml", "Makefile", ".gitignore")

GENERATED = {
    "cpu_tables" + MD: "respo/commands/cpu_track.py",
    "cpu_coverage_tables" + MD: "respo/commands/cpu_track.py",
    "cpu_coverage_replication" + MD: "respo/analysis/coverage.py",
    "table_main" + MD: "experiments/paper/reproduce.py",
    "table_splits" + MD: "experiments/paper/reproduce.py",
    "lcb_curves" + MD: "experiments/paper/reproduce.py",
}
"""Files that code writes (into run or output folders), cited by name -> the module writing it."""

EXTERNAL = {
    "COMPARE_spo_tree_vs_grpocredit_voi_qwen" + MD: "suesie/SPO",
    "RUN_spo_tree_qwen1b_MATH_seed42" + MD: "suesie/SPO",
}
"""Files of other public repositories -> that repository, which the citing line must name."""

MD_RE = re.compile(r"[\w./-]*[\w-]\.md(?![\w-])")
URL_RE = re.compile(r"[a-z]+://\S+")
DESIGN_DIR_RE = re.compile(r"shared[/\\]+design")
TAG_RE = re.compile(r"(?<![\w+/=-])P(\d{1,3})(?![\w+/=-])")
ANTI_RE = re.compile(r"anti-patterns?\s*#?\s*\d+", re.IGNORECASE)
NUMS = r"(\d+(?:\s*(?:,|and|-|–|to)\s*\d+)*)"
AFTER_METHOD_RE = re.compile(r"[`'\"]*\)?,?\s*(?:sections?|§)\s*" + NUMS)
AFTER_THEORY_RE = re.compile(r"[`'\"]*\)?,?\s*checks?\s+" + NUMS)


# -- what the docs define ---------------------------------------------------------------------------


def _doc(name: str) -> str:
    """The text of ``docs/<name>.md``; empty when missing (then every citation of it fails)."""
    path = ROOT / "docs" / (name + MD)
    return path.read_text() if path.is_file() else ""


def defined_tags() -> set[int]:
    text = _doc("design")
    return {int(m.group(1)) for m in re.finditer(r"(?m)^\s*[-*]\s+\*\*P(\d+)\.", text)}


def method_sections() -> set[int]:
    text = _doc("method")
    return {int(m.group(1)) for m in re.finditer(r"(?m)^## (\d+)\.", text)}


def theory_checks() -> set[int]:
    text = _doc("theory")
    part = text.split("\n## Checks\n", 1)[-1].split("\n## ", 1)[0]
    return {int(m.group(1)) for m in re.finditer(r"(?m)^(\d+)\. ", part)}


def _numbers(spec: str) -> set[int]:
    out: set[int] = set()
    for piece in re.split(r"\s*(?:,|and)\s*", spec):
        ends = [int(x) for x in re.split(r"\s*(?:-|–|to)\s*", piece) if x]
        out.update(range(ends[0], ends[-1] + 1) if ends else ())
    return out


# -- which files, and their text ----------------------------------------------------------------------


def _listed() -> list[str] | None:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def repo_files() -> list[str]:
    """Every file of the repository (relative posix paths)."""
    listed = _listed()
    if listed is not None:
        return listed
    files = [f for f in WALK_FILES if (ROOT / f).is_file()]
    for top in WALK_ROOTS:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".ipynb_checkpoints")]
            files += [(Path(dirpath) / n).relative_to(ROOT).as_posix() for n in filenames]
    return files


def text_files(files: list[str]) -> list[str]:
    return sorted(f for f in files if not f.startswith(SKIP_PREFIXES)
                  and (Path(f).suffix in TEXT_SUFFIXES or Path(f).name in TEXT_NAMES))


def units(rel: str) -> Iterator[tuple[str, int, str]]:
    """(label, first line number, text) pieces of one file; a notebook gives its cells' sources and
    text outputs (never image data), labelled by cell."""
    data = (ROOT / rel).read_bytes()
    if b"\0" in data:
        return
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    if not rel.endswith(".ipynb"):
        yield rel, 1, text
        return
    for i, cell in enumerate(json.loads(text)["cells"]):
        yield f"{rel} (cell {i})", 1, "".join(cell.get("source", ""))
        for out in cell.get("outputs", []):
            pieces = [out.get("text", "")] + [out.get("data", {}).get(k, "")
                                               for k in ("text/plain", "text/markdown")]
            body = "".join("".join(p) if isinstance(p, list) else p for p in pieces)
            if body:
                yield f"{rel} (cell {i} output)", 1, body


# -- the checks ---------------------------------------------------------------------------------------


def _resolve(name: str, rel: str, known: set[str]) -> str | None:
    """The repository path ``name`` points to from file ``rel``, or None."""
    bare = name.lstrip("/")
    for base in ("", os.path.dirname(rel)):
        p = os.path.normpath(os.path.join(base, bare)).replace(os.sep, "/")
        if not p.startswith("../") and p in known:
            return p
    return None


def problems_in(rel: str, text: str, *, known: set[str], tags: set[int], sections: set[int],
                checks: set[int], label: str | None = None, first_line: int = 1) -> list[str]:
    """Every broken reference in ``text`` (the contents of repository file ``rel``)."""
    label = label or rel
    out: list[str] = []

    def where(pos: int) -> str:
        return f"{label}:{first_line + text.count(chr(10), 0, pos)}"

    urls = [m.span() for m in URL_RE.finditer(text)]
    for m in MD_RE.finditer(text):
        if any(a <= m.start() < b for a, b in urls):
            continue
        name = m.group(0)
        base = os.path.basename(name)
        end = text.find("\n", m.end())
        line = text[text.rfind("\n", 0, m.start()) + 1:end if end >= 0 else len(text)]
        target = _resolve(name, rel, known)
        if target is None:
            if base in GENERATED or (base in EXTERNAL and EXTERNAL[base] in line):
                continue
            out.append(f"{where(m.start())}: {name!r} is not a file of the repository")
            continue
        after = text[m.end():m.end() + 80]
        if target == "docs/method" + MD and (s := AFTER_METHOD_RE.match(after)):
            missing = sorted(_numbers(s.group(1)) - sections)
            if missing:
                out.append(f"{where(m.start())}: {target} has no section {missing}")
        if target == "docs/theory" + MD and (c := AFTER_THEORY_RE.match(after)):
            missing = sorted(_numbers(c.group(1)) - checks)
            if missing:
                out.append(f"{where(m.start())}: {target} has no check {missing}")
    for m in DESIGN_DIR_RE.finditer(text):
        out.append(f"{where(m.start())}: path into a design folder outside the repository")
    for m in TAG_RE.finditer(text):
        if int(m.group(1)) not in tags:
            out.append(f"{where(m.start())}: tag {m.group(0)} is not defined in docs/design{MD}")
    for m in ANTI_RE.finditer(text):
        out.append(f"{where(m.start())}: {m.group(0)!r}: docs/design{MD} has no numbered anti-patterns")
    return out


def repository_problems() -> list[str]:
    files = repo_files()
    known = set(files)
    ctx = dict(known=known, tags=defined_tags(), sections=method_sections(), checks=theory_checks())
    out: list[str] = []
    for rel in text_files(files):
        for label, first, text in units(rel):
            found = problems_in(rel, text, label=label, first_line=first, **ctx)
            out += sorted(found, key=lambda msg: int(msg[len(label) + 1:].split(":", 1)[0]))
    return out


# -- tests --------------------------------------------------------------------------------------------


def test_every_cited_document_is_in_the_repository() -> None:
    bad = repository_problems()
    assert not bad, f"{len(bad)} broken references:\n" + "\n".join(bad)


def test_the_docs_define_what_is_cited() -> None:
    tags = defined_tags()
    assert tags and tags == set(range(1, max(tags) + 1)), sorted(tags)
    assert method_sections() == set(range(1, 9))
    assert theory_checks() == set(range(1, 7))
    theory = _doc("theory")
    assert "\n## Caveats\n" in theory and "CARO is not always better" in theory


def test_exceptions_are_real() -> None:
    """A GENERATED name is written by the module named; an EXTERNAL name is cited with its repo."""
    for name, module in GENERATED.items():
        assert re.search(rf"[\"']{re.escape(name)}[\"']", (ROOT / module).read_text()), (name, module)
    files = text_files(repo_files())
    for name, repo in EXTERNAL.items():
        lines = [ln for f in files for _, _, t in units(f) for ln in t.splitlines() if name in ln]
        assert lines and all(repo in ln for ln in lines), (name, repo)


@pytest.mark.parametrize(("rel", "text", "n_bad"), [
    ("respo/x.py", "see ``method" + MD + "`` section 2", 1),
    ("respo/x.py", "see ``docs/method" + MD + "`` section 2", 0),
    ("respo/x.py", "see docs/method" + MD + ", sections 2 and 9", 1),
    ("respo/x.py", "see ``docs/method" + MD + "`` section\n3", 0),
    ("respo/x.py", "docs/theory" + MD + ", checks 3-6", 0),
    ("respo/x.py", "docs/theory" + MD + " check 7", 1),
    ("docs/x" + MD, "[m](method" + MD + "#3-one-training-step)", 0),
    ("docs/x" + MD, "[t](../theory/theorem1" + MD + ")", 0),
    ("theory/x" + MD, "[t](theorem1" + MD + ")", 0),
    ("respo/x.py", "theorem1" + MD + " (A3)", 1),
    ("respo/x.py", "respo.theory" + ".mdp and respo/theory" + ".mdp", 0),
    ("respo/x.py", "writes ``cpu_tables" + MD + "`` and lcb_curves.{md,csv}", 0),
    ("respo/x.py", "https://example.org/a/b/notes" + MD, 0),
    ("respo/x.py", "COMPARE_spo_tree_vs_grpocredit_voi_qwen" + MD, 1),
    ("respo/x.py", "../shared" + "/design/x.txt", 1),
    ("respo/x.py", "never silent (" + "P" + "9) and (" + "P" + "99)", 1),
    ("respo/x.py", "see anti-" + "pattern 16", 1),
    ("respo/x.py", "base64 xP9a+P12/", 0),
])
def test_the_checker_flags_what_it_should(rel: str, text: str, n_bad: int) -> None:
    known = {"docs/method" + MD, "docs/theory" + MD, "theory/theorem1" + MD, "docs/x" + MD,
             "theory/x" + MD}
    got = problems_in(rel, text, known=known, tags=set(range(1, 16)), sections=set(range(1, 9)),
                      checks=set(range(1, 7)))
    assert len(got) == n_bad, got
