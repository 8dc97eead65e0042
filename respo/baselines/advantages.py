"""Credit assignment of the paper's published baselines, pure numpy (their buffers:
``respo.baselines.builders``).

Every function takes one prompt's trained rewards and the buffer's ``source`` links
(``source[i]``: the chain that chain i was derived from, -1 for a chain drawn from the problem)
and returns advantages. The ``*_tokens`` functions place them on each chain's tokens
(``respo.advantages.Segments``); they are the entries of ``respo.advantages.TOKEN_ADVANTAGES``,
which the trainer looks up by the objective's advantage name.

Trees (SPO-Tree, TreeRL; builder "tree"): first chain m and its branches (``source == m``) are
the leaves of one subtree whose shared node is the first chain's tokens before the branch point.
Values are Monte Carlo means over leaves: ``V(leaf) = r``, ``V(node_m) = mean of its leaves``,
``V(root) = mean of all leaves``. (Tree words: the node above a leaf is its subtree's shared
node, the node above that is the root. None of them is a *parent* in the glossary's sense,
``respo.resets``: trees never reset, and every leaf is trained.)

- ``spo_tree_advantages``: a segment's advantage is its value minus the value of the node above
  it, ``A(node_m) = V(node_m) - V(root)`` on the shared segment (trained once, on the first
  chain) and ``A(leaf_i) = r_i - V(node_m)`` on the tokens after the branch point.
- ``treerl_advantages``: each node gets ``(G + L) / sqrt(|leaves under it|)`` with the global
  advantage ``G = V(s) - V(root)`` and the local one ``L = V(s) - V(node above s)``; every
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
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # respo.advantages imports this module for its registry
    from respo.advantages import BaselineOptions, Segments

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

    Node s: ``((V(s) - V(root)) + (V(s) - V(above s))) / sqrt(|L(s)|)``; above the shared node is
    the root, above a leaf is its subtree's shared node, and ``|L| = 1`` for a leaf (module
    docstring).
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


# -- on tokens: the entries of respo.advantages.TOKEN_ADVANTAGES ----------------------------------
#
# Shared arguments, one entry per trained chain of one prompt's buffer: ``rewards``; ``source``
# (the buffer's links); ``starts[i]``, the index of chain i's first trained token in its ids (the
# end of its copied prefix state); ``prompt_lens[i]``, its prompt's length in tokens; ``opts``, the
# run's baseline settings (``respo.llm.config.BaselineConfig``).


def _one_value(starts: Sequence[int], adv: F) -> list[Segments]:
    """One advantage per chain, on every token from its trained start."""
    return [[(st, float(a))] for st, a in zip(starts, adv, strict=True)]


def _tree_segments(node: F, leaf: F, source: Sequence[int], starts: Sequence[int],
                   prompt_lens: Sequence[int], *, whole_path: bool, drop_zero: bool) -> list[Segments]:
    """A tree's node and leaf advantages on tokens.

    A first chain's own leaf segment starts at its branch token (where its branches start); its
    shared segment runs from the prompt to there. A branch trains from its own start (its leaf
    segment) and, with ``whole_path`` (TreeRL), also the shared segment it copied, from the
    prompt. ``drop_zero`` (SPO): a segment whose advantage is exactly 0 is not trained (value
    None: neither in the loss nor in its normaliser).
    """

    def value(a: float) -> float | None:
        return None if drop_zero and a == 0.0 else float(a)

    cut = {j: starts[i] for i, j in enumerate(source) if j >= 0}  # first chain -> its branch token
    out: list[Segments] = []
    for i in range(len(starts)):
        prompt = prompt_lens[i]
        b = cut.get(i, prompt) if source[i] < 0 else starts[i]
        first = prompt if (source[i] < 0 or whole_path) else b
        segs = [(first, value(node[i]))] if first < b else []
        out.append(segs + [(b, value(leaf[i]))])
    return out


def spo_tree_tokens(rewards: Sequence[float] | F, source: Sequence[int], starts: Sequence[int],
                    prompt_lens: Sequence[int], opts: BaselineOptions) -> list[Segments]:
    """SPO-Tree on tokens: the shared segment on the first chain only (node advantage before the
    branch token, leaf advantage after it), a branch from its branch token; zero-advantage
    segments dropped."""
    node, leaf = spo_tree_advantages(rewards, source)
    return _tree_segments(node, leaf, source, starts, prompt_lens, whole_path=False, drop_zero=True)


def treerl_tokens(rewards: Sequence[float] | F, source: Sequence[int], starts: Sequence[int],
                  prompt_lens: Sequence[int], opts: BaselineOptions) -> list[Segments]:
    """TreeRL on tokens: every leaf path from its prompt, the shared segment with the node's
    value, then the leaf's."""
    node, leaf = treerl_advantages(rewards, source)
    return _tree_segments(node, leaf, source, starts, prompt_lens, whole_path=True, drop_zero=False)


def score_tokens(rewards: Sequence[float] | F, source: Sequence[int], starts: Sequence[int],
                 prompt_lens: Sequence[int], opts: BaselineOptions) -> list[Segments]:
    """SCoRe on tokens: one shaped advantage per attempt (``opts.score_alpha``)."""
    return _one_value(starts, score_advantages(rewards, source, alpha=opts.score_alpha))


def critique_tokens(rewards: Sequence[float] | F, source: Sequence[int], starts: Sequence[int],
                    prompt_lens: Sequence[int], opts: BaselineOptions) -> list[Segments]:
    """Critique-GRPO on tokens: one mean-centred advantage per response or refinement."""
    return _one_value(starts, critique_advantages(rewards, source))
