"""Worker process for ``respo.tasks.math``: reads JSON requests on stdin, answers on stdout.

Request: ``{"gold": str, "pred": str}`` (or ``{"parse": str}``: does a reference parse?; with
``"decimal": "exact"`` the decimal ``pred`` must equal a rational ``gold`` exactly); answer:
``{"ok": bool}`` or ``{"error": str}``.
math-verify's own signal-based timeouts are disabled (``None``); the parent bounds the wall
clock and kills this process when a comparison runs too long (e.g. ``10^{10^{10^{10}}}``).
Its address space is capped so a runaway computation cannot take the machine's memory.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from functools import lru_cache
from typing import Any


def _main() -> None:
    mem = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if mem > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    logging.disable(logging.CRITICAL)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str) -> list[Any]:
        parsed: list[Any] = parse(f"${gold}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                                  parsing_timeout=None)
        return parsed

    def parse_pred(pred: str) -> list[Any]:
        parsed: list[Any] = parse(f"\\boxed{{{pred}}}", extraction_config=[LatexExtractionConfig()],
                                  parsing_timeout=None)
        return parsed

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if "parse" in req:  # is this reference answer usable (does it parse)?
                # A bare string is math-verify's fallback for text it could not parse.
                parsed = parse_gold(req["parse"])
                out.write(json.dumps({"ok": any(not isinstance(x, str) for x in parsed)}) + "\n")
                out.flush()
                continue
            g = parse_gold(req["gold"])
            if req.get("decimal") == "exact":  # a decimal answer counts only for a rational reference
                import sympy

                value = sympy.Rational(req["pred"])
                exact = [sympy.simplify(x) for x in g if isinstance(x, sympy.Basic) and x.is_number]
                ok = any(x.is_Rational and x == value for x in exact)
                out.write(json.dumps({"ok": bool(ok)}) + "\n")
                out.flush()
                continue
            p = parse_pred(req["pred"])
            ok = bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))
            out.write(json.dumps({"ok": ok}) + "\n")
        except MemoryError:
            out.write(json.dumps({"error": "memory"}) + "\n")
        except Exception as e:  # reported to the parent, which counts it
            out.write(json.dumps({"error": type(e).__name__}) + "\n")
        out.flush()


if __name__ == "__main__":
    _main()
