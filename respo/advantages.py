"""Group-relative advantages: pure numpy, the numerics as explicit keyword arguments.

Design rule P5 (docs/design.md): numerical conventions are part of the specification.

Frameworks disagree on the details, and the differences matter at group size 4:

- the paper's reset code: population std (ddof 0), no epsilon, advantage 0 when std < 1e-8
  (``docs/method.md`` section 5) -> ``ADVANTAGES["zscore"]``, the default for RRPO/SRPO;
- verl's GRPO (the paper's GRPO baseline): Bessel std (ddof 1), ``(r - mean) / (std + 1e-6)``,
  a singleton group gets std 1 -> ``ADVANTAGES["zscore_verl"]``;
- no scaling at all (Dr. GRPO style mean-centring) -> ``ADVANTAGES["center"]``.

One scalar per chain; the trainer broadcasts it to the chain's trained tokens.

The published baselines assign credit on tokens (a tree's shared segment and its leaves) from
their buffers' ``source`` links: ``TOKEN_ADVANTAGES`` (their functions live in
``respo.baselines.advantages``). The two registries share the advantage names of
``respo.variants``; the trainer looks a name up in ``TOKEN_ADVANTAGES`` first, then in
``ADVANTAGES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from respo.baselines.advantages import critique_tokens, score_tokens, spo_tree_tokens, treerl_tokens

F = NDArray[np.float64]
Int = NDArray[np.int64]

SingletonRule = Literal["zero", "unit_std"]


def _check(reward: NDArray[np.floating], group: NDArray[np.integer]) -> tuple[F, Int]:
    r = np.asarray(reward, dtype=np.float64)
    g = np.asarray(group)
    if r.ndim != 1 or g.ndim != 1 or r.shape != g.shape:
        raise ValueError(f"reward and group must be 1-D of equal length, got {r.shape} and {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"group ids must be integers, got dtype {g.dtype}")
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise ValueError(f"reward[{bad[0]}] = {r[bad[0]]} is not finite")
    return r, g.astype(np.int64)


def group_stats(reward: F, group: Int, *, ddof: int = 0) -> tuple[F, F, Int]:
    """Per-chain group mean, group std (with ``ddof``) and group size, vectorised.

    Shapes: reward[N], group[N] -> three arrays of shape [N]. A group of size <= ddof gets std 0.
    """
    r, g = _check(reward, group)
    _, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    mean = sums / counts
    dev2 = np.bincount(inv, weights=(r - mean[inv]) ** 2)
    denom = counts - ddof
    var = np.where(denom > 0, dev2 / np.maximum(denom, 1), 0.0)
    return mean[inv], np.sqrt(var)[inv], counts[inv].astype(np.int64)


def zscore_by_group(
    reward: NDArray[np.floating],
    group: NDArray[np.integer],
    *,
    ddof: int = 0,
    eps: float = 0.0,
    zero_std_tol: float = 1e-8,
    singleton: SingletonRule = "zero",
) -> F:
    """Advantage A_i = (r_i - mean_g) / (std_g + eps), computed within each group g separately.

    Defaults are the paper's reset code (``docs/method.md`` section 5): ``ddof=0`` (population std),
    ``eps=0``, and every advantage of a group whose std < ``zero_std_tol`` (1e-8) is exactly 0.
    ``singleton="unit_std"`` reproduces verl (a size-1 group has std 1, so A = 0 anyway since
    r - mean = 0); ``"zero"`` gives 0. Shapes: reward[N], group[N] -> A[N].
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    if eps < 0 or zero_std_tol < 0:
        raise ValueError(f"eps and zero_std_tol must be >= 0, got {eps}, {zero_std_tol}")
    if singleton not in ("zero", "unit_std"):
        raise ValueError(f"singleton must be 'zero' or 'unit_std', got {singleton!r}")
    r, g = _check(reward, group)
    mean, std, size = group_stats(r, g, ddof=ddof)
    if singleton == "unit_std":
        std = np.where(size == 1, 1.0, std)
    centred = r - mean
    flat = std < zero_std_tol
    return np.where(flat, 0.0, centred / np.where(flat, 1.0, std + eps))


def center_by_group(reward: NDArray[np.floating], group: NDArray[np.integer]) -> F:
    """A_i = r_i - mean_g: group-mean baseline, no scaling (Dr. GRPO style)."""
    r, g = _check(reward, group)
    mean, _, _ = group_stats(r, g)
    return r - mean


AdvantageFn = Callable[[NDArray[np.floating], NDArray[np.integer]], F]


def _zscore_paper(reward: NDArray[np.floating], group: NDArray[np.integer]) -> F:
    return zscore_by_group(reward, group)


def _zscore_verl(reward: NDArray[np.floating], group: NDArray[np.integer]) -> F:
    return zscore_by_group(reward, group, ddof=1, eps=1e-6, zero_std_tol=0.0, singleton="unit_std")


ADVANTAGES: dict[str, AdvantageFn] = {
    "zscore": _zscore_paper,
    "zscore_verl": _zscore_verl,
    "center": center_by_group,
}
"""Advantage registry: ``(reward[N], group[N]) -> advantage[N]``. See the module docstring."""


def get_advantage(name: str) -> AdvantageFn:
    """Look up an advantage function by name; unknown names list the valid ones."""
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise ValueError(f"unknown advantage {name!r}; valid: {', '.join(ADVANTAGES)}") from None


Segments = list[tuple[int, float | None]]
"""A chain's advantages on its tokens: ``[(pos_0, a_0), (pos_1, a_1), ...]`` with ascending
positions; tokens ``pos_k <= t < pos_{k+1}`` (indices into the chain's ids) get ``a_k``, tokens
before ``pos_0`` and tokens of a segment whose value is None are not trained. GRPO / RRPO / SRPO:
one segment from the trained start."""


class BaselineOptions(Protocol):
    """The run's baseline settings a token-level advantage may read
    (``respo.llm.config.BaselineConfig`` is one)."""

    @property
    def score_alpha(self) -> float: ...


TokenAdvantageFn = Callable[[F, Sequence[int], Sequence[int], Sequence[int], BaselineOptions], list[Segments]]
"""``(rewards[N], source[N], starts[N], prompt_lens[N], opts) -> Segments per chain`` for one
prompt's buffer: ``source`` its links, ``starts[i]`` chain i's first trained token, ``prompt_lens[i]``
its prompt length (``respo.baselines.advantages``)."""

TOKEN_ADVANTAGES: dict[str, TokenAdvantageFn] = {
    "spo_tree": spo_tree_tokens,
    "treerl": treerl_tokens,
    "score": score_tokens,
    "critique": critique_tokens,
}
"""Token-level advantage registry of the published baselines (their buffers carry ``source``)."""
