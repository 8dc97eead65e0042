"""Losses and aggregation (respo/losses.py): hand computations and gradient identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from respo.advantages import get_advantage
from respo.losses import (
    AGG_MODES,
    LOSSES,
    agg_loss,
    get_loss,
    kl_k3,
    ppo_clip_loss,
    reinforce_loss,
    suffix_mask,
    token_logprobs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _fixture(seed: int = 0, n: int = 4, t: int = 6):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(n, t, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logp.detach() + 0.05 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 0.25, -1.5], dtype=torch.float64)[:n]
    lengths = torch.tensor([6, 3, 5, 1])[:n]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, adv, mask


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("agg", AGG_MODES)
def test_every_loss_runs_on_the_same_fixture(name, agg):
    logp, old, adv, mask = _fixture()
    loss, stats = LOSSES[name](logp, old, adv, mask, agg=agg, clip_eps=0.2, clip_c=3.0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logp.grad is not None and torch.isfinite(logp.grad).all()
    for k, v in stats.items():
        assert isinstance(v, torch.Tensor) and not v.requires_grad, k
        assert v.ndim == 0, k


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="reinforce.*ppo_clip"):
        get_loss("nope")
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(torch.zeros(1, 1), torch.ones(1, 1), "mean")


def test_token_mean_is_sum_over_count():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert agg_loss(v, m, "token-mean") == pytest.approx((1 + 2 + 4) / 3)
    assert agg_loss(v, m, "seq-mean-token-mean") == pytest.approx(((1 + 2) / 2 + 4) / 2)
    assert agg_loss(v, m, "seq-mean-token-sum") == pytest.approx((3 + 4) / 2)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_padding_columns_change_nothing(agg, name):
    logp, old, adv, mask = _fixture()
    loss, _ = LOSSES[name](logp, old, adv, mask, agg=agg, clip_eps=0.2, clip_c=3.0)
    pad = 3
    logp2 = torch.cat([logp.detach(), torch.full((4, pad), -7.0, dtype=torch.float64)], 1)
    logp2.requires_grad_(True)
    old2 = torch.cat([old, torch.full((4, pad), 2.0, dtype=torch.float64)], 1)
    mask2 = torch.cat([mask, torch.zeros(4, pad, dtype=torch.bool)], 1)
    loss2, _ = LOSSES[name](logp2, old2, adv, mask2, agg=agg, clip_eps=0.2, clip_c=3.0)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-12)
    loss.backward()
    loss2.backward()
    torch.testing.assert_close(logp2.grad[:, :-pad], logp.grad)
    assert (logp2.grad[:, -pad:] == 0).all()


@pytest.mark.parametrize("agg", AGG_MODES)
def test_ppo_gradient_equals_reinforce_on_policy(agg):
    logp, _, adv, mask = _fixture()
    old = logp.detach().clone()
    l1, _ = ppo_clip_loss(logp, old, adv, mask, agg=agg, clip_eps=0.2, clip_c=3.0)
    (g1,) = torch.autograd.grad(l1, logp)
    l2, _ = reinforce_loss(logp, old, adv, mask, agg=agg, clip_eps=0.2, clip_c=3.0)
    (g2,) = torch.autograd.grad(l2, logp)
    torch.testing.assert_close(g1, g2)


def test_clipped_positive_advantage_above_ratio_gets_zero_gradient():
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    old = torch.full((2, 3), -0.5, dtype=torch.float64)  # ratio e^0.5 > 1.2
    adv = torch.tensor([1.0, 2.0], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, stats = ppo_clip_loss(logp, old, adv, mask, agg="token-mean", clip_eps=0.2, clip_c=3.0)
    loss.backward()
    assert (logp.grad == 0).all()
    assert stats["clipfrac"].item() == 1.0
    # Negative advantage with a huge ratio: the dual clip bounds the loss at -A c, zero gradient too.
    logp.grad = None
    old = torch.full((2, 3), -3.0, dtype=torch.float64)  # ratio e^3 > c = 3
    loss, _ = ppo_clip_loss(logp, old, -adv, mask, agg="token-mean", clip_eps=0.2, clip_c=3.0)
    loss.backward()
    assert (logp.grad == 0).all()
    assert loss.item() == pytest.approx(3.0 * 1.5)
    logp.grad = None
    loss, _ = ppo_clip_loss(logp, old, -adv, mask, agg="token-mean", clip_eps=0.2, clip_c=None)
    loss.backward()
    assert (logp.grad != 0).all()  # without the dual clip the unbounded branch stays active


def test_suffix_mask_and_zero_gradient_on_prefix_tokens():
    resp = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    start = torch.tensor([3, 2, 0])
    m = suffix_mask(resp, start)
    expected = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(m, expected)
    logp = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logp.requires_grad_(True)
    for name, fn in LOSSES.items():
        for agg in AGG_MODES:
            loss, _ = fn(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64),
                         m, agg=agg, clip_eps=0.2, clip_c=3.0)
            (g,) = torch.autograd.grad(loss, logp)
            assert (g[~m] == 0).all(), (name, agg)
            assert (g[m] != 0).all(), (name, agg)


def test_group_advantages_and_loss_match_hand_computation():
    # Two groups (G1: rewards 1, 0, 0, 1; G2: 1, 0, 0, 0) with the paper's population z-score.
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    adv = get_advantage("zscore")(rewards, group)
    s2 = np.sqrt(3.0 / 16.0)  # population std of (1, 0, 0, 0)
    np.testing.assert_allclose(adv, [1, -1, -1, 1, 0.75 / s2, -0.25 / s2, -0.25 / s2, -0.25 / s2])
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-1.0, 0.0], [-3.0, -1.0],
                         [-2.0, 0.0], [-1.0, -1.0], [-0.5, 0.0], [-4.0, -2.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1], [1, 0], [1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    loss, _ = reinforce_loss(logp, logp, torch.tensor(adv), mask, agg="seq-mean-token-mean",
                             clip_eps=0.2, clip_c=None)
    per_row_mean = [-1.5, -0.5, -1.0, -2.0, -2.0, -1.0, -0.5, -3.0]
    hand = -np.mean([a * m for a, m in zip(adv, per_row_mean, strict=True)])
    assert loss.item() == pytest.approx(hand, rel=1e-12)


def test_norm_splits_a_batch_exactly():
    logp, old, adv, mask = _fixture()
    for agg in AGG_MODES:
        full, _ = ppo_clip_loss(logp, old, adv, mask, agg=agg, clip_eps=0.2, clip_c=3.0)
        norm = mask.sum() if agg == "token-mean" else 4
        parts = [ppo_clip_loss(logp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], agg=agg,
                               clip_eps=0.2, clip_c=3.0, norm=norm)[0] for i in (0, 2)]
        assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), rel=1e-12)


def test_kl_k3_is_nonnegative_and_zero_on_equal():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert (kl_k3(a, b) >= 0).all()
    assert torch.equal(kl_k3(a, a), torch.zeros(5, 7))


def test_token_logprobs_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    tgt = torch.randint(0, 11, (2, 5), generator=g)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tgt[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, tgt, temperature=0.7), ref)
