"""Credit assignment of the paper's published baselines, pure numpy (their buffers: ``respo.buffer``).

Every function takes one prompt's trained rewards and the buffer's ``source`` links
(``source[i]``: the chain that chain i was derived from, -1 for a chain drawn from the problem)
and returns advantages; the trainer (``respo.llm.train.chain_segments``) maps them onto tokens.

Trees (SPO-Tree, TreeRL; builder "tree"): first chain m and its branches (``source == m``) are
the leaves of one subtree whose shared node is the first chain's tokens before the branch point.
Values are Monte Carlo means over leaves: ``V(leaf) = r``, ``V(node_m) = mean of its leaves``,
``V(root) = mean of all leaves``.

- ``spo_tree_advantages``: a segment's advantage is its value minus its parent's,
  ``A(node_m) = V(node_m) - V(root)`` on the shared segment (trained once, on the first chain)
  and ``A(leaf_i) = r_i - V(node_m)`` on the tokens after the branch point.
- ``treerl_advantages``: each node gets ``(G + L) / sqrt(|leaves under it|)`` with the global
  advantage ``G = V(s) - V(root)`` and the local one ``L = V(s) - V(parent(s))``; every
  root-to-leaf path is trained as its own sequence, so the shared segment's tokens are trained
  once per leaf below them (the square root damps that repetition).

SCoRe (builder "two_attempt"): ``score_advantages`` — the second attempt's reward is shaped,
``r2 + alpha * (r2 - r1)``; the first attempt keeps ``r1``; each attempt's advantage is its
(shaped) reward minus the mean over the same attempt's group in this prompt.

Critique-GRPO (builder "critique"): ``critique_advantages`` — responses and refinements form one
group; ``A = r - mean(r)`` without division by the standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.float64]


def _check(rewards: Sequence[float] | F, source: Sequence[int]) -> tuple[F, NDArray[np.int64]]:
    r = np.asarray(rewards, dtype=np.float64)
    s = np.asarray(source, dtype=np.int64)
    if r.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"rewards and source must be 1-D of equal length, got {r.shape} and {s.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rewards must be finite, got {r.tolist()}")
    bad = [i for i, j in enumerate(s.tolist()) if j >= len(s) or j == i or (j >= 0 and s[j] != -1)]
    if bad:
        raise ValueError(f"source[{bad[0]}] = {s[bad[0]]} must be -1 or the index of a chain drawn "
                         "from the problem (two-level trees only)")
    return r, s


def tree_values(rewards: Sequence[float] | F, source: Sequence[int]) -> tuple[NDArray[np.int64], F, F, float]:
    """(subtree of each chain, V(node) of its subtree, leaves under that node, V(root)), shapes [N]."""
    r, s = _check(rewards, source)
    sub = np.where(s < 0, np.arange(len(s)), s)
    _, inv, counts = np.unique(sub, return_inverse=True, return_counts=True)
    v_node = (np.bincount(inv, weights=r) / counts)[inv]
    return sub, v_node, counts[inv].astype(np.float64), float(r.mean()) if len(r) else 0.0


def spo_tree_advantages(rewards: Sequence[float] | F, source: Sequence[int]) -> tuple[F, F]:
    """(advantage of each chain's shared segment, advantage of its own leaf segment), shapes [N].

    ``A(node) = V(node) - V(root)``, ``A(leaf_i) = r_i - V(node)`` (module docstring). The
    shared segment is trained on the first chain only (branches copy it as a masked prefix).
    """
    r, s = _check(rewards, source)
    _, v_node, _, v_root = tree_values(r, s)
    return v_node - v_root, r - v_node


def treerl_advantages(rewards: Sequence[float] | F, source: Sequence[int]) -> tuple[F, F]:
    """(per-token reward of each leaf path's shared segment, of its own leaf segment), shapes [N].

    Node s: ``((V(s) - V(root)) + (V(s) - V(parent))) / sqrt(|L(s)|)``; for the shared node the
    parent is the root, for a leaf the parent is its node and ``|L| = 1`` (module docstring).
    """
    r, s = _check(rewards, source)
    _, v_node, n_leaves, v_root = tree_values(r, s)
    node = 2.0 * (v_node - v_root) / np.sqrt(n_leaves)
    leaf = (r - v_root) + (r - v_node)
    return node, leaf


def score_advantages(rewards: Sequence[float] | F, source: Sequence[int], *, alpha: float = 10.0) -> F:
    """SCoRe's shaped returns minus the per-attempt group mean, shape [N].

    A second attempt i (``source[i] = j``) gets ``r_i + alpha * (r_i - r_j)``; a first attempt
    gets ``r_j``. Baselines: the mean over first attempts, and over second attempts.
    """
    r, s = _check(rewards, source)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    second = s >= 0
    ret = r.copy()
    ret[second] = r[second] + alpha * (r[second] - r[s[second]])
    adv = np.zeros_like(ret)
    for m in (second, ~second):
        if m.any():
            adv[m] = ret[m] - ret[m].mean()
    return adv


def critique_advantages(rewards: Sequence[float] | F, source: Sequence[int]) -> F:
    """Critique-GRPO: ``r - mean(r)`` over responses and refinements together, shape [N]."""
    r, _ = _check(rewards, source)
    return r - r.mean() if len(r) else r


STRUCTURED: tuple[str, ...] = ("spo_tree", "treerl", "score", "critique")
"""Advantage names of the baselines (``respo.variants``); the trainer maps them onto tokens."""
