"""The reset contract suite (tests/contract.py) on the tabular sampler."""

from __future__ import annotations

import numpy as np
import pytest
from contract import check_sampler_contract

from respo.seeding import rng_for
from respo.theory.mdp import (
    coverage_chain,
    coverage_chain_policy,
    random_layered_mdp,
    reasoning_tree,
)
from respo.theory.sampler import TabularSampler


@pytest.mark.parametrize("kind", ["tree", "layered", "chain"])
@pytest.mark.parametrize("reward_mode", ["bernoulli", "mean"])
def test_tabular_sampler_contract(kind: str, reward_mode: str) -> None:
    if kind == "tree":
        mdp, _ = reasoning_tree(rng_for(0, "mdp"), 5, 3, q=0.4)
        pi = mdp.uniform_policy()
    elif kind == "layered":
        rng = np.random.default_rng(3)
        mdp = random_layered_mdp(rng, 4, 3, 2, 2)
        pi = rng.dirichlet(np.ones(2), size=mdp.n_dec)
    else:
        mdp = coverage_chain(5, 0.5)
        pi = coverage_chain_policy(mdp)
    check_sampler_contract(TabularSampler(mdp, reward_mode=reward_mode), pi, 0)
