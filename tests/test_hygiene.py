"""Dependency and randomness rules, enforced: design rules P7 and P15 of docs/design.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "respo"
CORE = ["respo.resets", "respo.buffer", "respo.advantages", "respo.variants", "respo.seeding",
        "respo.baselines", "respo.baselines.builders", "respo.baselines.advantages"]


def _imported_heavy(modules: list[str]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(','.join(m for m in ('torch', 'transformers', 'respo.llm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_core_imports_no_torch():
    assert _imported_heavy(CORE) == []


def test_theory_imports_no_torch_or_llm():
    if not (PKG / "theory" / "__init__.py").exists():
        pytest.skip("respo.theory not present")
    assert _imported_heavy(["respo.theory"] + [
        f"respo.theory.{p.stem}" for p in (PKG / "theory").glob("*.py") if p.stem != "__init__"
    ]) == []


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_theory_and_llm_never_import_each_other():
    for path in (PKG / "theory").rglob("*.py"):
        assert not any(n.startswith("respo.llm") for n in _imports(path)), path
    for path in (PKG / "llm").rglob("*.py"):
        assert not any(n.startswith("respo.theory") for n in _imports(path)), path


def test_only_llm_and_losses_import_transformers():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(("llm/", "commands/")) or rel in ("losses.py", "eval.py"):
            continue
        assert not any(n.split(".")[0] == "transformers" for n in _imports(path)), rel


GLOBAL_RNG = {
    ("np", "random"): {"seed", "rand", "randn", "randint", "random", "choice", "shuffle",
                       "permutation", "normal", "uniform", "binomial", "poisson"},
}


def test_no_global_randomness_in_package():
    bad = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                # np.random.<fn>(...) / numpy.random.<fn>
                v = node.value
                if (isinstance(v, ast.Attribute) and v.attr == "random" and isinstance(v.value, ast.Name)
                        and v.value.id in ("np", "numpy") and node.attr in GLOBAL_RNG[("np", "random")]):
                    bad.append(f"{path.name}:{node.lineno} np.random.{node.attr}")
                if isinstance(v, ast.Name) and v.id == "torch" and node.attr in ("manual_seed", "seed"):
                    bad.append(f"{path.name}:{node.lineno} torch.{node.attr}")
                if isinstance(v, ast.Name) and v.id == "random" and node.attr in (
                        "seed", "random", "randint", "choice", "shuffle", "sample", "uniform"):
                    bad.append(f"{path.name}:{node.lineno} random.{node.attr}")
    assert bad == [], bad


def test_cli_usage_and_unknown_command():
    exe = [sys.executable, "-m", "respo.cli"]
    out = subprocess.run(exe + ["--help"], capture_output=True, text=True, check=True)
    assert "usage: respo" in out.stdout and "train" in out.stdout
    bad = subprocess.run(exe + ["trian"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid: main" in bad.stderr


def test_every_subcommand_has_help():
    from respo.cli import COMMANDS

    for name in COMMANDS:
        out = subprocess.run([sys.executable, "-m", "respo.cli", name, "--help"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (name, out.stderr[-1000:])


def test_theory_command_prints_the_rates():
    import json

    out = subprocess.run([sys.executable, "-m", "respo.cli", "theory", "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    slopes = {k: v["slope"][0] for k, v in json.loads(out.stdout).items()}
    assert abs(slopes["improvement per iteration, CPI-RR"] - 2) < 0.1
    assert abs(slopes["improvement per iteration, CPI-CARO"] - 1) < 0.1
    assert abs(slopes["Q-rollouts for fixed accuracy, CPI-RR"] + 2) < 0.5
    assert abs(slopes["Q-rollouts for fixed accuracy, CPI-CARO"]) < 0.5
