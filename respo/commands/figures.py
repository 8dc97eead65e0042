"""``respo figures``: execute the figure notebooks and move their outputs into ``paper_figures/``.

Every notebook in ``notebooks/`` whose first code cell sets ``SIZE`` and ``OUT_DIR`` takes part.
The runner rewrites those two values in memory. The notebook file on disk keeps its defaults
(``SIZE = "full"``, ``OUT_DIR = "paper_figures"``) and never stores outputs. A notebook that reads
training runs also sets ``RUNS_DIR`` in that cell; ``--runs DIR`` rewrites it the same way
(notebooks without a ``RUNS_DIR`` line are left alone). A notebook whose input is absent raises
``SkipNotebook``: the runner reports it as skipped, not failed, and writes nothing. Each notebook writes
into a fresh temporary folder next to the output folder. Its files are moved into place with
``os.replace`` only after the whole notebook succeeds, so a crash or a failing cell leaves the
previous figures untouched and never leaves half-written ones.

The module also holds the small I/O helpers the notebooks call (``output_dir``, ``save_figure``,
``write_json``). The library itself does no I/O, so this is where they live.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

Size = Literal["small", "full"]

_PARAM_RE = {
    "SIZE": re.compile(r"^SIZE\s*=.*$", re.MULTILINE),
    "OUT_DIR": re.compile(r"^OUT_DIR\s*=.*$", re.MULTILINE),
}
_RUNS_RE = re.compile(r"^RUNS_DIR\s*=.*$", re.MULTILINE)
"""The optional third parameter: a folder of training runs (a suite), rewritten by ``--runs``."""


class SkipNotebook(Exception):
    """Raised by a notebook whose input does not exist (e.g. no ``suite.json`` in ``RUNS_DIR``).

    ``run_notebook`` re-raises it in the calling process with the notebook's message; ``main``
    counts the notebook as skipped, not failed. Nothing is written.
    """


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The repository root: the parent of the ``respo`` package directory."""
    return Path(__file__).resolve().parent.parent.parent


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder."""
    return repo_root() / "notebooks"


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """All ``*.ipynb`` files in ``folder`` (default: the repository's notebooks), sorted."""
    folder = notebooks_dir() if folder is None else folder
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


# --------------------------------------------------------------------------------------------
# Helpers called from the notebooks
# --------------------------------------------------------------------------------------------


def output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Resolve a notebook's ``OUT_DIR`` and create it.

    A relative path is taken relative to the repository root, not to the kernel's working
    directory. So ``OUT_DIR = "paper_figures"`` means the same folder whether the notebook runs
    under ``respo figures`` or interactively from ``notebooks/``.
    """
    path = Path(out_dir)
    if not path.is_absolute():
        path = repo_root() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Any, out: Path, stem: str, *, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``out/stem.png`` and ``out/stem.pdf`` and return both paths.

    Date and software metadata are dropped, so that regenerating the same figure gives the same
    PDF bytes and the committed files only change when the plotted numbers change.
    """
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight",
                metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    return paths


def _check_finite(obj: Any, where: str = "$") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite number at {where}: {obj!r}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def write_json(obj: Any, path: Path, *, allow_none: bool = True) -> Path:
    """Write plotted numbers as indented JSON. Non-finite floats raise instead of becoming NaN.

    A missing value must be ``None`` (JSON ``null``) and say so, never a silent NaN.
    ``allow_none=False`` rejects ``None`` too.
    """
    _check_finite(obj)
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    if not allow_none and "null" in text:
        raise ValueError(f"{path.name}: null values are not allowed here")
    path.write_text(text + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Running notebooks
# --------------------------------------------------------------------------------------------


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    def repl(_m: re.Match[str]) -> str:
        return text

    return repl


def inject_parameters(nb: Any, *, size: str, out_dir: str, runs_dir: str | None = None) -> None:
    """Rewrite ``SIZE`` and ``OUT_DIR`` in the notebook's first code cell, in memory, and
    ``RUNS_DIR`` too when ``runs_dir`` is given and the cell assigns it.

    Raises ``ValueError`` when the first code cell does not assign both ``SIZE`` and ``OUT_DIR``.
    Nothing is guessed.
    """
    cells = [c for c in nb.cells if c.cell_type == "code"]
    if not cells:
        raise ValueError("notebook has no code cell")
    src = cells[0].source
    values = {"SIZE": size, "OUT_DIR": out_dir}
    for name, rx in _PARAM_RE.items():
        if not rx.search(src):
            raise ValueError(f"first code cell does not assign {name}")
        # a replacement *function* keeps backslashes in the value (Windows paths) literal
        line = f"{name} = {json.dumps(values[name])}"
        src = rx.sub(_constant(line), src, count=1)
    if runs_dir is not None and _RUNS_RE.search(src):
        src = _RUNS_RE.sub(_constant(f"RUNS_DIR = {json.dumps(runs_dir)}"), src, count=1)
    cells[0].source = src


def has_parameters(path: Path) -> bool:
    """Whether the notebook's first code cell assigns both ``SIZE`` and ``OUT_DIR``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    return bool(cells) and all(rx.search(cells[0].source) for rx in _PARAM_RE.values())


def run_notebook(path: Path, *, size: Size, out: Path, timeout_s: int = 3600,
                 kernel_name: str = "python3", runs: Path | None = None) -> list[Path]:
    """Execute one notebook and move its output files into ``out``. Returns the moved paths.

    The notebook writes into a temporary folder on the same filesystem as ``out``. Only after
    every cell has succeeded are its files moved with ``os.replace``, each move atomic. On any
    error the temporary folder is deleted and the exception propagates; a notebook that raised
    ``SkipNotebook`` raises ``SkipNotebook`` here, with nothing moved. ``runs`` (made absolute)
    replaces the notebook's ``RUNS_DIR`` when it has one.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-{path.stem}-", dir=out.parent))
    try:
        inject_parameters(nb, size=size, out_dir=str(tmp),
                          runs_dir=None if runs is None else str(Path(runs).resolve()))
        client = NotebookClient(nb, timeout=timeout_s, kernel_name=kernel_name,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError as exc:
            if exc.ename == SkipNotebook.__name__:
                raise SkipNotebook(exc.evalue) from None
            raise
        produced = sorted(p for p in tmp.rglob("*") if p.is_file())
        if not produced:
            raise RuntimeError(f"{path.name} ran but wrote no files into OUT_DIR")
        moved = []
        for src in produced:
            dst = out / src.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            moved.append(dst)
        return moved
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def select(notebooks: Sequence[Path], only: Sequence[str]) -> list[Path]:
    """Keep the notebooks named in ``only``. A name matches the file stem (``theory_rates``),
    the stem without the ``theory_`` prefix (``rates``), or the file name. An unknown name is an
    error that lists the valid names."""
    if not only:
        return list(notebooks)
    by_name: dict[str, Path] = {}
    for p in notebooks:
        by_name[p.stem] = by_name[p.name] = p
        if p.stem.startswith("theory_"):
            by_name[p.stem.removeprefix("theory_")] = p
    unknown = [n for n in only if n not in by_name]
    if unknown:
        valid = ", ".join(p.stem for p in notebooks)
        raise SystemExit(f"respo figures: unknown notebook(s) {unknown}; valid: {valid}")
    chosen = {by_name[n] for n in only}
    return [p for p in notebooks if p in chosen]


@dataclass(frozen=True)
class FiguresConfig:
    """Execute the figure notebooks (notebooks/*.ipynb) and write their figures and numbers."""

    size: Size = "full"
    """Problem sizes: "full" gives the committed paper figures (minutes), "small" a quick check of seconds."""

    out: Path | None = None
    """Output folder; default: the repository's paper_figures/."""

    only: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Run only this notebook (stem such as theory_rates, or just rates); repeatable."""

    timeout_s: int = 3600
    """Time limit per notebook cell, in seconds."""

    runs: Path | None = None
    """Folder of training runs (a suite with suite.json) for notebooks that set RUNS_DIR; default: each notebook's own RUNS_DIR."""


def main(argv: list[str]) -> int:
    cfg = tyro.cli(FiguresConfig, args=argv, prog="respo figures")
    out = (cfg.out if cfg.out is not None else repo_root() / "paper_figures").resolve()
    candidates = [p for p in list_notebooks() if has_parameters(p)]
    notebooks = select(candidates, cfg.only)
    if not notebooks:
        print(f"respo figures: no notebooks with a SIZE/OUT_DIR cell in {notebooks_dir()}",
              file=sys.stderr)
        return 1
    failures = skipped = 0
    t_all = time.perf_counter()
    for i, path in enumerate(notebooks, 1):
        t0 = time.perf_counter()
        print(f"[figures {i}/{len(notebooks)}] {path.name} (size={cfg.size}) ...", flush=True)
        try:
            moved = run_notebook(path, size=cfg.size, out=out, timeout_s=cfg.timeout_s, runs=cfg.runs)
        except SkipNotebook as exc:
            skipped += 1
            print(f"[figures {i}/{len(notebooks)}] {path.name} skipped: {exc}", flush=True)
            continue
        except Exception as exc:  # report and continue with the other notebooks; exit code says it
            failures += 1
            print(f"[figures {i}/{len(notebooks)}] {path.name} FAILED after "
                  f"{time.perf_counter() - t0:.1f} s: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            continue
        names = ", ".join(p.name for p in moved)
        print(f"[figures {i}/{len(notebooks)}] {path.name} done in {time.perf_counter() - t0:.1f} s"
              f" -> {out}: {names}", flush=True)
    skip_note = f" ({skipped} skipped)" if skipped else ""
    print(f"[figures] {len(notebooks) - failures}/{len(notebooks)} notebooks ok{skip_note}, "
          f"{time.perf_counter() - t_all:.1f} s total", flush=True)
    return 1 if failures else 0
