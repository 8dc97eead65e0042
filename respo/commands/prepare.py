"""``respo prepare``: write the paper's data splits as JSONL files plus a manifest.

Reads each dataset from the hub at its pinned revision (a connected machine) or, with
``--local DIR``, from files named ``<dataset>.jsonl`` / ``.json`` / ``.parquet`` in the hub's row
format or repository snapshots ``DIR/<owner>/<name>/`` (see ``respo.tasks.registry``). Writes ``<out>/<split>.jsonl`` for ``olympiads_train``, ``oly``,
``lcb_v6_medium`` and the other benchmarks, and ``<out>/manifest.json`` with each file's sha256
and row count and, per source, the hub id, the revision the rows came from, whether that revision
is the registry's checked pin (``pinned``; ``unpinned_sources`` lists the others, also warned
about on stderr), where they were read, and the rows kept, filtered and skipped (by reason, first
rows named).
The same inputs and seed give byte-identical files. Skipped rows are printed, never hidden;
``--strict`` stops at the first bad row instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass(frozen=True)
class PrepareConfig:
    """Prepare the paper's splits (olympiads 400/100, LiveCodeBench v6 medium, ten benchmarks)."""

    out: Path = Path("data/prepared")
    """Output folder for the JSONL files and manifest.json."""
    local: Path | None = None
    """Folder with local copies in the hub's formats (<dataset>.jsonl) or repository snapshots
    (<owner>/<name>/, e.g. from huggingface-cli download); None loads from the hub at pinned revisions."""
    lcb_scope: Literal["release_v6", "v6_only"] = "release_v6"
    """LiveCodeBench v6: all of release_v6 (the authors' code) or only the problems v6 added."""
    seed: int = 42
    """Shuffle and sampling seed (the paper: 42)."""
    only: tuple[str, ...] = ()
    """Restrict to these outputs (e.g. olympiads_train oly); empty means all."""
    n_train: int = 400
    """Olympiad training problems (the paper: 400)."""
    n_test: int = 100
    """Olympiad held-out problems, the OLY benchmark (the paper: 100)."""
    cap: int = 500
    """Most items per benchmark (the paper: 500; MATH level 5 is sampled to 500)."""
    strict: bool = False
    """Stop at the first bad row (naming it) instead of skipping and counting."""
    check_answers: bool = True
    """Keep only math answers that math-verify parses (the paper: verifiable boxed answers only)."""


def run(cfg: PrepareConfig) -> dict[str, object]:
    """Prepare, write the files, return the manifest."""
    from respo.tasks.prepare import dumps_jsonl, prepare, sha256

    verifiable = None
    verifier = None
    if cfg.check_answers:
        from respo.tasks.math import MathVerifier

        verifier = MathVerifier()
        verifiable = verifier.parses
    try:
        outputs, reports = prepare(local=cfg.local, seed=cfg.seed, only=cfg.only or None, n_train=cfg.n_train,
                                   n_test=cfg.n_test, item_cap=cfg.cap, strict=cfg.strict, verifiable=verifiable,
                                   lcb_scope=cfg.lcb_scope)
    finally:
        if verifier is not None:
            if verifier.stats["timeouts"]:
                print(f"[prepare] math-verify timeouts while checking answers: {verifier.stats['timeouts']}",
                      file=sys.stderr)
            verifier.close()
    cfg.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, problems in sorted(outputs.items()):
        data = dumps_jsonl(problems)
        (cfg.out / f"{name}.jsonl").write_bytes(data)
        files[name] = {"rows": len(problems), "sha256": sha256(data)}
    unpinned = sorted(k for k, v in reports.items() if not v.pinned)
    manifest: dict[str, object] = {
        "seed": cfg.seed, "source": str(cfg.local) if cfg.local else "hub", "n_train": cfg.n_train,
        "n_test": cfg.n_test, "cap": cfg.cap, "lcb_scope": cfg.lcb_scope, "files": files,
        "sources": {k: v.as_dict() for k, v in sorted(reports.items())},
        "unpinned_sources": unpinned,
    }
    (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for r in reports.values():
        print(f"[prepare] {r.summary()}")
    for name in unpinned:
        print(f"[prepare] WARNING: {name} has no pinned revision (none found offline); its rows came from "
              f"{reports[name].revision or 'an unrecorded revision'}; check and pin it in respo/tasks/registry.py",
              file=sys.stderr)
    for name, f in files.items():
        print(f"[prepare] wrote {cfg.out / (name + '.jsonl')}: {f['rows']} rows")
    return manifest


def main(argv: list[str]) -> int:
    cfg = tyro.cli(PrepareConfig, args=argv, prog="respo prepare", description=__doc__)
    run(cfg)
    return 0
