"""The trainer's analysis outputs: rollouts.jsonl records, loc/* metrics, gradient diagnostics.

Format: ``experiments/notes/run-format.md``. The gradient magnitudes are checked against the
closed form of the REINFORCE loss, the localization metrics against hand counts.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from llm_fixtures import tiny_lm
from llm_train_fakes import fake_parts

from respo import losses
from respo.buffer import Buffer
from respo.jsonl import read_jsonl
from respo.llm.config import TrainConfig
from respo.llm.trainer import (
    _collate,
    localization_metrics,
    rollout_records,
    thought_grads,
    token_grad_magnitudes,
    train,
    trained_start,
)
from respo.llm.types import TokenState
from respo.resets import Chain, LocateResult
from respo.tasks.base import Problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chain(n: int, reward: float, prefix: int = 0) -> Chain[int]:
    return Chain(tuple(range(n + 1)), reward, prefix)


def _buffer() -> Buffer[int]:
    # 4 fresh chains (group 0), two failed parents: parent A reset at 2 (truth 2), parent B at 3
    # (truth 1: its kept prefix holds the error). Suffix groups 1 and 2.
    fresh = [_chain(4, 1.0), _chain(4, 0.0), _chain(5, 0.0), _chain(3, 1.0)]
    sa = [_chain(4, r, 1) for r in (1.0, 1.0, 0.0, 1.0)]
    sb = [_chain(5, r, 2) for r in (0.0, 0.0, 1.0, 0.0)]
    return Buffer(chains=fresh + sa + sb, group=np.array([0] * 4 + [1] * 4 + [2] * 4),
                  role=["fresh"] * 4 + ["suffix"] * 8, parents=[fresh[1], fresh[2]],
                  locates=[LocateResult(2), LocateResult(3, fell_back=True, reason="x")],
                  suffix_group_of=[1, 2])


def test_rollout_records_and_localization_metrics_match_hand_counts():
    buf = _buffer()
    truths = {4: 2, 5: 1}  # judge by number of thoughts of the parent
    recs = rollout_records([buf], [Problem("p0", "q", "a")], lambda c: truths[c.n_thoughts])
    assert json.loads(json.dumps(recs)) == recs  # JSON-ready
    (rec,) = recs
    assert rec["problem"] == "p0" and rec["fresh"] == [1.0, 0.0, 0.0, 1.0]
    assert rec["resets"] == [
        {"n_thoughts": 4, "step": 2, "fell_back": False, "truth": 2, "suffix": [1.0, 1.0, 0.0, 1.0]},
        {"n_thoughts": 5, "step": 3, "fell_back": True, "truth": 1, "suffix": [0.0, 0.0, 1.0, 0.0]},
    ]
    m = localization_metrics(recs)
    assert m["loc/beta"] == 0.5 and m["loc/gamma"] == 0.5 and m["loc/n"] == 2
    assert m["loc/at_or_before"] == 0.5
    assert m["g2/pass_clean"] == 0.75 and m["g2/pass_erroneous"] == 0.25
    assert m["g2/count_clean"] == 4 and m["g2/count_erroneous"] == 4


def test_records_without_a_judge_have_no_truth_and_nan_quality():
    recs = rollout_records([_buffer()], [Problem("p0", "q", "a")], None)
    assert all(r["truth"] is None for r in recs[0]["resets"])
    m = localization_metrics(recs)
    assert math.isnan(m["loc/beta"]) and math.isnan(m["g2/pass_clean"])


def _token_chain(prompt: int, thoughts: list[int], prefix: int, reward: float) -> Chain[TokenState]:
    ids = np.arange(1, prompt + sum(thoughts) + 1) % 7 + 1
    ends = np.cumsum([prompt] + thoughts)
    states = tuple(TokenState(ids[:e], prompt) for e in ends)
    return Chain(states, reward, prefix)


def test_token_grad_magnitudes_match_the_reinforce_closed_form():
    """d/dz of -A/(n_i N) * log softmax(z)[y] is -A/(n_i N) (e_y - p): norm |A|/(n_i N) ||e_y - p||."""
    torch.manual_seed(0)
    model = tiny_lm(0)
    chains = [_token_chain(3, [2, 3, 2], 0, 1.0), _token_chain(3, [2, 4], 1, 0.0)]
    adv = [0.7, -1.3]
    m = _collate(chains, [[(trained_start(c), a)] for c, a in zip(chains, adv, strict=True)], 0,
                 torch.device("cpu"))
    norm = torch.tensor(float(len(chains)))
    g = token_grad_magnitudes(model, m, losses.get_loss("reinforce"), agg="seq-mean-token-mean",
                              norm=norm, temperature=1.0, dtype=None, keep=False, clip_eps=0.2, clip_c=3.0)
    with torch.no_grad():
        logits = model(input_ids=m.ids, attention_mask=m.attn).logits[:, m.first:-1].float()
    p = torch.softmax(logits, -1)
    y = m.ids[:, m.first + 1:]
    e = torch.nn.functional.one_hot(y, p.shape[-1]).float()
    n_i = m.mask.sum(1, keepdim=True).float()
    want = (torch.tensor(adv).abs()[:, None] / (n_i * norm)) * (e - p).norm(dim=-1) * m.mask
    torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-8)
    assert (g[~m.mask] == 0).all() and (g[m.mask] > 0).all()

    # Per-thought means: the copied thought of chain 1 is None, the others average their tokens.
    tg = thought_grads(chains[1], g[1], m.first)
    assert tg[0] is None
    a = len(chains[1].states[1].ids) - 1 - m.first
    b = len(chains[1].states[2].ids) - 1 - m.first
    assert tg[1] == pytest.approx(float(g[1, a:b].mean()))
    tg0 = thought_grads(chains[0], g[0], m.first)
    assert all(x is not None for x in tg0) and len(tg0) == 3


def test_run_writes_rollouts_grads_and_resumes_them(tmp_path):
    cfg = TrainConfig(variant="srpo", steps=3, prompts_per_step=2, minibatch_prompts=1,
                      micro_batch_chains=4, diagnostics_every=2, checkpoint_every=1,
                      keep_checkpoints=3)
    parts = fake_parts(tiny_lm(0), "self", p_success=0.5)
    parts.judge = lambda c: min(2, c.n_thoughts)
    rows = list(train(cfg, parts, run_dir=tmp_path))
    assert {"loc/beta", "loc/gamma", "g2/pass_clean"} <= set(rows[0])
    # diagnostics on steps 0 and 2 only
    assert "grad/suffix_fresh_ratio" in rows[0] and "grad/suffix_fresh_ratio" not in rows[1]
    assert rows[0]["grad/suffix_token_mean"] > 0 or rows[0]["g2/count_clean"] + rows[0]["g2/count_erroneous"] == 0
    heat = json.loads((tmp_path / "grads" / "step_000000.json").read_text())
    assert heat["step"] == 0 and {r["role"] for r in heat["rows"]} <= {"fresh", "suffix"}
    for r in heat["rows"]:
        assert sum(x is None for x in r["thought_grad"]) == r["prefix_thoughts"]
    assert sorted(p.name for p in (tmp_path / "grads").iterdir()) == ["step_000000.json", "step_000002.json"]
    rec = read_jsonl(tmp_path / "rollouts.jsonl")
    assert [r["step"] for r in rec] == [0, 1, 2] and len(rec[0]["prompts"]) == 2

    # Kill after step 1 (simulated: drop the last checkpoint), resume: the files match a clean run.
    import shutil

    from respo.llm.checkpoint import latest_checkpoint

    last = latest_checkpoint(tmp_path)
    shutil.rmtree(last)
    (last.parent / "LATEST").write_text("step-000001\n")
    assert latest_checkpoint(tmp_path).name == "step-000001"
    parts2 = fake_parts(tiny_lm(0), "self", p_success=0.5)
    parts2.judge = parts.judge
    list(train(cfg, parts2, run_dir=tmp_path, resume=True))
    rec2 = read_jsonl(tmp_path / "rollouts.jsonl")
    assert [r["step"] for r in rec2] == [0, 1, 2]
    assert rec2 == rec


def test_eval_at_start_is_logged_on_the_first_line():
    cfg = TrainConfig(variant="grpo", steps=2, prompts_per_step=2, minibatch_prompts=1, micro_batch_chains=4,
                      eval=dataclasses.replace(TrainConfig().eval, every=2, at_start=True, problems=3))
    parts = fake_parts(tiny_lm(0), "none")
    calls = []

    def evaluate(policy, probs):
        calls.append(len(probs))
        return {"greedy_pass@1": 0.25 * len(calls)}

    parts.evaluate, parts.eval_problems = evaluate, parts.train_problems
    rows = list(train(cfg, parts))
    assert rows[0]["eval0/greedy_pass@1"] == 0.25 and "eval/greedy_pass@1" not in rows[0]
    assert rows[1]["eval/greedy_pass@1"] == 0.5 and "eval0/greedy_pass@1" not in rows[1]
    assert calls == [3, 3]


def test_negative_diagnostics_every_is_refused():
    with pytest.raises(ValueError, match="diagnostics_every"):
        TrainConfig(diagnostics_every=-1)
