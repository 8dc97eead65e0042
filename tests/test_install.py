"""A non-editable install is a complete product: ``respo train --preset`` needs no source checkout.

The package is built from this checkout and installed (not editable, no dependencies) into a
fresh target folder; ``respo train --preset tiny-smoke`` then runs from an unrelated working
directory with that copy first on the path, so a preset that still lived outside the package (or
any file read relative to the checkout) makes the run fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_trains_a_preset_from_another_folder(tmp_path: Path) -> None:
    site, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(ROOT)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PIP_NO_CACHE_DIR": "1"}, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    assert not (site / "respo" / "__editable__").exists()
    assert (site / "respo" / "presets" / "__init__.py").is_file(), "presets are part of the package"

    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import respo, sys; print(respo.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert Path(where.stdout.strip()).resolve().is_relative_to(site.resolve()), where.stdout

    run = subprocess.run(
        [sys.executable, "-c", "import sys; from respo.cli import main; sys.exit(main())",
         "train", "--preset", "tiny-smoke", "--runs-dir", "runs", "--no-progress"],
        capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    metrics = [json.loads(line) for line in
               (work / "runs" / "tiny-smoke" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]
    assert json.loads((work / "runs" / "tiny-smoke" / "config.json").read_text())["variant"] == "srpo"
