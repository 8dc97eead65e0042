"""The ``respo`` command: a thin dispatcher to subcommands, imported lazily.

Each subcommand lives in its own module with a ``main(argv: list[str]) -> int`` function and
parses its own arguments (tyro over frozen dataclasses), so ``respo theory --help`` never imports
torch. The library itself does no argv parsing; only these entry modules do.

Errors due to the input (a bad value, file, folder or checkpoint; a run folder in use; a missing
optional package) end the command with one line, ``respo <command>: <message>``, on stderr and
exit status 2; the messages name the file, line or field. Set ``RESPO_TRACEBACK=1`` to see the
traceback too. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "main": ("respo.commands.main_job", "The README's main job: regenerate figures and run the default comparison"),
    "figures": ("respo.commands.figures", "Execute the notebooks that write paper_figures/"),
    "theory": ("respo.commands.theory", "Tabular CPI simulator: sweeps and bound checks"),
    "cpu-track": ("respo.commands.cpu_track", "Run a CPU-track suite (grpo/rrpo/srpo/oracle) and its figures"),
    "train": ("respo.commands.train", "Train a variant (grpo, rrpo, srpo, ...) on a task"),
    "eval": ("respo.commands.evaluate", "Evaluate a model: greedy pass@1, pass@k, tables"),
    "prepare": ("respo.commands.prepare", "Prepare the paper's data splits from the hub or local files"),
}


def _usage() -> str:
    width = max(len(k) for k in COMMANDS)
    lines = ["usage: respo <command> [options]", "", "commands:"]
    lines += [f"  {k:<{width}}  {doc}" for k, (_, doc) in COMMANDS.items()]
    lines += ["", "respo <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``respo`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"respo: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except INPUT_ERRORS as e:
        if os.environ.get("RESPO_TRACEBACK"):
            raise
        print(f"respo {name}: {error_message(e)}", file=sys.stderr)
        return 2


INPUT_ERRORS = (ValueError, KeyError, OSError, ImportError)
"""Exceptions caused by the input, reported as one line (config and checkpoint errors are
ValueErrors, a run folder in use an OSError; ImportError: an optional package is missing)."""


def error_message(e: BaseException) -> str:
    """One line for ``e``: its message (a KeyError's without the quotes), or its type."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


if __name__ == "__main__":
    raise SystemExit(main())
