"""The figure notebooks and the ``respo figures`` runner.

Every theory notebook is executed at ``SIZE = "small"`` into a temporary folder (never into
``paper_figures/``). The tests check that the expected PNG/PDF/JSON files appear, are not trivial,
and that the plotted numbers (slopes and the like) are finite. The runner's own behaviour
(parameter injection, atomic moves, a failing notebook leaving the output folder alone) is
checked on tiny synthetic notebooks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from respo.commands import figures

# notebook stem -> (figure stems, JSON files with the plotted numbers)
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "theory_rates": (("theory_rates",), ("theory_rates_slopes.json",)),
    "theory_approx": (("theory_approx",), ("theory_approx.json",)),
    "theory_curves": (("theory_curves",), ("theory_curves.json",)),
    "theory_bridge": (("theory_bridge",), ("theory_bridge.json",)),
    "theory_caveats": (("theory_caveats",), ("theory_caveats.json",)),
}


def _numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


def _tiny_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# tiny"),
        nbformat.v4.new_code_cell('SIZE = "full"\nOUT_DIR = "paper_figures"'),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return path


def test_inject_parameters_rewrites_only_the_first_code_cell() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("SIZE = 'not code'"),
                nbformat.v4.new_code_cell('# parameters\nSIZE = "full"\nOUT_DIR = "paper_figures"\nSEED = 0'),
                nbformat.v4.new_code_cell('SIZE = "full"')]
    figures.inject_parameters(nb, size="small", out_dir="/tmp/x y")
    assert nb.cells[1].source == '# parameters\nSIZE = "small"\nOUT_DIR = "/tmp/x y"\nSEED = 0'
    assert nb.cells[2].source == 'SIZE = "full"'
    assert nb.cells[0].source == "SIZE = 'not code'"


def test_inject_parameters_requires_both_names() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('SIZE = "full"')]
    with pytest.raises(ValueError, match="OUT_DIR"):
        figures.inject_parameters(nb, size="small", out_dir="x")


def test_select_by_stem_short_name_and_unknown() -> None:
    paths = [Path("a/theory_rates.ipynb"), Path("a/theory_curves.ipynb")]
    assert figures.select(paths, ["rates"]) == [paths[0]]
    assert figures.select(paths, ["theory_curves", "theory_rates.ipynb"]) == paths
    assert figures.select(paths, []) == paths
    with pytest.raises(SystemExit, match="valid: theory_rates, theory_curves"):
        figures.select(paths, ["nope"])


def test_output_dir_is_relative_to_repo_root(tmp_path: Path) -> None:
    assert figures.output_dir(tmp_path / "o") == tmp_path / "o"
    assert figures.repo_root() / "respo" == Path(figures.__file__).resolve().parent.parent


def test_write_json_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\$\.a\[1\]"):
        figures.write_json({"a": [1.0, float("nan")]}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_runner_moves_files_and_a_failure_leaves_out_untouched(tmp_path: Path) -> None:
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    good = _tiny_notebook(nbdir / "good.ipynb",
                          "from pathlib import Path\n"
                          "Path(OUT_DIR, 'good.txt').write_text(SIZE)")
    bad = _tiny_notebook(nbdir / "bad.ipynb",
                         "from pathlib import Path\n"
                         "Path(OUT_DIR, 'bad.txt').write_text('half')\n"
                         "raise RuntimeError('boom')")
    out = tmp_path / "out"
    moved = figures.run_notebook(good, size="small", out=out, timeout_s=120)
    assert moved == [out / "good.txt"] and (out / "good.txt").read_text() == "small"
    with pytest.raises(Exception, match="boom"):
        figures.run_notebook(bad, size="small", out=out, timeout_s=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb", "out"]  # temp folders removed
    assert sorted(p.name for p in out.iterdir()) == ["good.txt"]
    # the notebook on disk keeps its defaults
    assert 'SIZE = "full"' in nbformat.read(good, as_version=4).cells[1].source


def test_every_theory_notebook_is_listed_and_has_parameters() -> None:
    found = {p.stem for p in figures.list_notebooks() if p.stem.startswith("theory_")}
    assert found == set(EXPECTED)
    for p in figures.list_notebooks():
        if p.stem in EXPECTED:
            assert figures.has_parameters(p), p.name
            nb = nbformat.read(p, as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
                f"{p.name}: commit notebooks without outputs")


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_notebook_small_writes_its_figures(stem: str, tmp_path: Path) -> None:
    path = figures.notebooks_dir() / f"{stem}.ipynb"
    out = tmp_path / "figs"
    figures.run_notebook(path, size="small", out=out, timeout_s=300)
    fig_stems, json_files = EXPECTED[stem]
    for fs in fig_stems:
        png, pdf = out / f"{fs}.png", out / f"{fs}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000, "PNG looks empty"
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert pdf.stat().st_size > 5_000, "PDF looks empty"
    for jf in json_files:
        data = json.loads((out / jf).read_text())
        nums = _numbers(data)
        assert nums, f"{jf} holds no numbers"
        assert all(math.isfinite(x) for x in nums)
    CLAIMS.get(stem, lambda _out: None)(out)


def _rates_claims(out: Path) -> None:
    d = json.loads((out / "theory_rates_slopes.json").read_text())
    imp = d["improvement_vs_p"]
    assert imp["bound_holds"]
    assert abs(imp["rr"]["slope"] - 2) < 0.2 and abs(imp["caro"]["slope"] - 1) < 0.2
    for m in ("rr", "caro"):
        assert math.isfinite(d["samples_vs_p"][m]["slope"])


def _approx_claims(out: Path) -> None:
    d = json.loads((out / "theory_approx.json").read_text())
    for fam in d["families"].values():
        assert fam["bound_holds"] and fam["min_improvement_over_guarantee"] >= 1.0


def _caveats_claims(out: Path) -> None:
    d = json.loads((out / "theory_caveats.json").read_text())
    # caveat 2: with a fixed step both slopes are about 1 (the p^2 needs the step rule)
    assert abs(d["fixed_step"]["rr"]["slope"] - 1) < 0.2
    assert abs(d["fixed_step"]["caro"]["slope"] - 1) < 0.2
    # Theorem 1's guarantees hold on every reasoning tree of the q sweep
    assert d["tree_sweep"]["guarantees_hold"]
    # caveat 5: at a high oracle threshold RR's step beats CARO's on the reasoning tree
    assert d["threshold_sweep"]["taus_where_rr_beats_caro"]


CLAIMS = {"theory_rates": _rates_claims, "theory_approx": _approx_claims,
          "theory_caveats": _caveats_claims}


def test_cli_runs_selected_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    _tiny_notebook(nbdir / "theory_one.ipynb", "open(OUT_DIR + '/one.txt', 'w').write(SIZE)")
    _tiny_notebook(nbdir / "theory_two.ipynb", "open(OUT_DIR + '/two.txt', 'w').write(SIZE)")
    monkeypatch.setattr(figures, "notebooks_dir", lambda: nbdir)
    out = tmp_path / "out"
    rc = figures.main(["--size", "small", "--out", str(out), "--only", "two"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "theory_two.ipynb" in text and "theory_one" not in text and "1/1 notebooks ok" in text
    assert [p.name for p in out.iterdir()] == ["two.txt"]
    assert (out / "two.txt").read_text() == "small"
