"""``respo main``: the README's main job, an embedded default that runs offline on a CPU.

Today it regenerates the theory figures (the notebooks under ``notebooks/theory_*.ipynb``) into
``paper_figures/``. Later stages (the synthetic-track comparison of GRPO/RRPO/SRPO) are added here
as they land; each stage prints its wall time.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="respo main", description=__doc__)
    parser.add_argument("--size", choices=("small", "full"), default="full",
                        help="figure size: small is a seconds-long smoke version")
    parser.add_argument("--out", default=None, help="output folder (default: the repo's paper_figures/)")
    args = parser.parse_args(argv)

    from respo.commands import figures

    t0 = time.perf_counter()
    fig_args = ["--size", args.size]
    if args.out:
        fig_args += ["--out", args.out]
    rc = figures.main(fig_args)
    print(f"[respo main] theory figures: {time.perf_counter() - t0:.1f} s (exit {rc})")
    return rc
