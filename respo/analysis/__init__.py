"""Analysis of CPU-track training runs: load run and suite folders (``runs``), compute the
paper's numbers and tables (``report``), draw its figures (``plots``).

Light on purpose: numpy, scipy and matplotlib only (no torch, no ``respo.llm``). ``plots`` is not
imported here so that loading and reporting never pull in matplotlib.
"""

from respo.analysis.runs import Run, RunFormatError, Suite, load_grads, load_run, load_suite

__all__ = ["Run", "RunFormatError", "Suite", "load_grads", "load_run", "load_suite"]
