"""Every import in the scripts under ``experiments/`` resolves: a respo name exists in its module,
another module is installed (optional heavy ones only where the script guards them). The scripts
are not run by the default tests, so a module or name that moved would otherwise surface only
when a user runs one (as happened when the presets moved into the package)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "experiments").rglob("*.py") if "results" not in p.parts)
OPTIONAL = {"vllm"}
"""Absent from the CPU install; the scripts that use them say so when it is missing."""


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside a ``try`` that catches ImportError (or any exception)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or "Error" in ast.unparse(h.type) or "Exception" in ast.unparse(h.type)
                for h in node.handlers):
            for sub in node.body:
                for n in ast.walk(sub):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        lines.add(n.lineno)
    return lines


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded = _guarded(tree)
    siblings = {p.stem for p in path.parent.glob("*.py")}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [(node.module, [a.name for a in node.names])]
        else:
            continue
        for mod, names in mods:
            top = mod.split(".")[0]
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"
            if top == "respo":
                try:
                    m = importlib.import_module(mod)
                except ImportError as e:
                    out.append(f"{where}: {mod} does not import ({e})")
                    continue
                for name in names:
                    if not hasattr(m, name) and importlib.util.find_spec(f"{mod}.{name}") is None:
                        out.append(f"{where}: {mod} has no {name}")
            elif top in siblings or top == "__future__":
                continue
            elif importlib.util.find_spec(top) is None and not (top in OPTIONAL or node.lineno in guarded):
                out.append(f"{where}: module {top} is not installed")
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_script_imports_resolve(path: Path) -> None:
    assert problems(path) == []


def test_the_check_finds_a_moved_module_and_a_missing_name(tmp_path: Path) -> None:
    bad = tmp_path / "_import_check_probe.py"
    bad.write_text("from presets import get_preset\nfrom respo.presets import no_such_name\n")
    found = problems(bad)
    assert any("module presets is not installed" in f for f in found)
    assert any("respo.presets has no no_such_name" in f for f in found)
