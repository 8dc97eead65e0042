"""Options no preset sets: each one reaches the code it configures (a changed value changes what
that code does), so none of them is a dead switch."""

from __future__ import annotations

import dataclasses
import math

import pytest
from llm_fixtures import tiny_lm
from llm_train_fakes import fake_parts

from respo.llm.config import BaselineConfig, TrainConfig
from respo.llm.trainer import train
from respo.variants import VARIANTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_step(variant: str, **kw) -> dict:
    cfg = TrainConfig(variant=variant, steps=1, prompts_per_step=2, minibatch_prompts=2,
                      micro_batch_chains=16, **kw)
    return next(iter(train(cfg, fake_parts(tiny_lm(0), cfg.variant_row.localizer))))


@pytest.mark.parametrize("variant,field,values", [
    ("score", "score_alpha", (0.0, 10.0)),
    ("critique-grpo", "critique_gamma", (0.01, 10.0)),
])
def test_baseline_coefficients_change_the_loss(variant, field, values):
    a, b = (_one_step(variant, baseline=BaselineConfig(**{field: v})) for v in values)
    assert a["tokens/generated"] == b["tokens/generated"]  # same rollouts (seeded) ...
    assert math.isfinite(a["loss/loss"]) and a["loss/loss"] != b["loss/loss"]  # ... other credit


def test_matched_advantage_is_the_advantage_of_the_matched_pairing():
    for adv in ("zscore", "center"):
        cfg = TrainConfig(variant="srpo", pairing="matched", matched_advantage=adv)
        assert cfg.objective.advantage == adv
    a, b = (_one_step("srpo", pairing="matched", matched_advantage=adv) for adv in ("zscore", "center"))
    assert a["loss/loss"] != b["loss/loss"]


def test_branch_measure_reaches_treerls_cutter():
    from respo.commands.train import load_presets
    from respo.llm.train_parts import build_parts

    base = load_presets().get_preset("tiny-smoke")
    assert VARIANTS["treerl"].localizer != "none"
    for measure in ("nll", "entropy"):
        cfg = dataclasses.replace(base, variant="treerl", baseline=BaselineConfig(branch_measure=measure))
        assert build_parts(cfg).localizer.measure == measure


def test_coverage_tau_sets_the_margin_of_the_coverage_measure():
    """A state is improvable when the gold next thought has probability below 1 - tau, so a larger
    margin counts fewer of the visited states; the chains themselves are the same."""
    from test_golden_runs import golden_config

    from respo.llm.train_parts import build_parts

    def coverage_eval(tau: float) -> dict:
        cfg = golden_config("grpo")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, problems=64, coverage_tau=tau))
        parts = build_parts(cfg)
        return parts.evaluate(None, list(parts.eval_problems)[:64])

    lo, hi = coverage_eval(0.01), coverage_eval(0.5)
    assert lo["sampled_pass@1"] == hi["sampled_pass@1"]
    assert lo["cov_improvable"] > hi["cov_improvable"]
