"""The paper's published baselines beside the reset seam: SPO-Tree, TreeRL, SCoRe, Critique-GRPO.

- ``respo.baselines.builders``: their buffers (tree, two-attempt, critique), run by the same
  lock-step driver as the reset builder (``respo.buffer.build_buffers`` with ``builder=``), and
  the three requests those builders make beyond the seam's own (``Cut``, ``Followup``,
  ``Reroot``) with the tree's ``Cutter`` protocol and ``CutResult``;
- ``respo.baselines.advantages``: their credit assignment, pure numpy, per chain and on tokens;
  the token-level functions are registered in ``respo.advantages.TOKEN_ADVANTAGES``.

Their rows in the variant table, with their deviations from each method's own paper, are in
``respo.variants``. Nothing here imports torch.
"""

from respo.baselines.advantages import (
    critique_advantages,
    critique_tokens,
    score_advantages,
    score_tokens,
    spo_tree_advantages,
    spo_tree_tokens,
    tree_values,
    treerl_advantages,
    treerl_tokens,
)
from respo.baselines.builders import Cut, CutResult, Cutter, Followup, Reroot, fill_baseline

__all__ = [
    "Cut",
    "CutResult",
    "Cutter",
    "Followup",
    "Reroot",
    "critique_advantages",
    "critique_tokens",
    "fill_baseline",
    "score_advantages",
    "score_tokens",
    "spo_tree_advantages",
    "spo_tree_tokens",
    "tree_values",
    "treerl_advantages",
    "treerl_tokens",
]
