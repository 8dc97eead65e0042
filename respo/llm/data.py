"""Which problems a training step sees, and loading problem files (no randomness of its own).

The order of training problems is a pure function of (seed, position): epoch e is the
permutation ``rng_for(seed, "data", e).permutation(n)``, and step s takes global positions
``s * prompts_per_step ... (s + 1) * prompts_per_step - 1``. So the data position of a run is
``step * prompts_per_step`` (saved in checkpoints), a resumed run sees exactly the batches an
uninterrupted one would, and every variant trained with the same seed sees the same prompts.

Processes of a data-parallel run take the prompts ``j`` with ``j % world == rank`` (``shard``),
so each process holds an equal share of every mini-batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from respo.seeding import rng_for
from respo.tasks.base import Problem, input_lines


def epoch_order(n: int, epoch: int, *, seed: int) -> np.ndarray:
    """Permutation of ``range(n)`` used in epoch ``epoch`` (keyed by seed and epoch)."""
    return rng_for(seed, "data", epoch).permutation(n)


def step_indices(n: int, step: int, per_step: int, *, seed: int) -> list[int]:
    """Problem indices of training step ``step``: global positions step*per_step onwards."""
    if n < 1:
        raise ValueError("no training problems")
    out: list[int] = []
    orders: dict[int, np.ndarray] = {}
    for pos in range(step * per_step, (step + 1) * per_step):
        e, i = divmod(pos, n)
        if e not in orders:
            orders[e] = epoch_order(n, e, seed=seed)
        out.append(int(orders[e][i]))
    return out


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """Positions ``j`` (into ``indices``) owned by ``rank``: those with ``j % world == rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    return [j for j in range(len(indices)) if j % world == rank]


def load_problems_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a JSON-lines file with ``question`` and ``answer`` (and optional ``id``).

    A row that is not an object, lacks a field or has a non-string question/answer raises a
    ValueError naming the file and the line number; so do a missing, empty, oversized or
    non-UTF-8 file and a folder (``respo.tasks.base.input_lines``).
    """
    out: list[Problem] = []
    p = Path(path)
    for lineno, line in input_lines(p):  # checks the file (size, type) and decodes UTF-8
        where = f"{p}:{lineno}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{where}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise ValueError(f"{where}: a row must be an object with 'question' and 'answer'")
        answer = row["answer"]
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        try:
            out.append(Problem(id=str(row.get("id", f"{p.stem}-{lineno}")),
                               question=row["question"], answer=answer,
                               meta={k: v for k, v in row.items() if k not in ("id", "question", "answer")}))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return out
