"""Policy-gradient losses and token aggregation: pure torch functions, one registry.

Design rules P3 (pure functions) and P4 (one signature per registry), docs/design.md.

What lives here: ``LOSSES`` (``reinforce``, ``ppo_clip``), ``agg_loss`` (how per-token values
become one scalar), ``suffix_mask`` (which tokens of a chain are trained), ``kl_k3`` (a
low-variance KL estimate to a reference policy) and ``masked_mean``. What must not: config
objects, ``.item()``, distributed code, files, randomness. Statistics come back as a dict of
detached tensors; the training loop syncs them once per step.

Shape letters: ``N`` chains (rows), ``T`` token positions. ``mask[N, T]`` is 1 on trained tokens
and 0 on the prompt, the copied prefix of a suffix chain and padding.

Which objective a variant uses is decided by ``respo.variants.resolve_objective`` (the "paper"
pairing: GRPO with the clipped token-mean loss, RRPO/SRPO with unclipped REINFORCE and
seq-mean-token-mean; the "matched" pairing: one loss for every method).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
"""Token aggregation modes understood by ``agg_loss``."""

Stats = dict[str, Tensor]


def check_agg(agg: str) -> None:
    """Raise a ValueError listing the valid modes if ``agg`` is not one."""
    if agg not in AGG_MODES:
        raise ValueError(f"unknown agg mode {agg!r}; valid: {', '.join(AGG_MODES)}")


def suffix_mask(response_mask: Tensor, suffix_start: Tensor) -> Tensor:
    """Mask of trained tokens: ``response_mask[i, t]`` and ``t >= suffix_start[i]``.

    Shapes: response_mask[N, T] (bool or 0/1), suffix_start[N] (int) -> bool[N, T]. One arange
    compare, no Python loop over rows (the paper's code builds it row by row with ``.item()``).
    Tokens of a copied prefix lie before ``suffix_start`` and so get exactly zero gradient.
    """
    t = torch.arange(response_mask.shape[-1], device=response_mask.device)
    return response_mask.bool() & (t[None, :] >= suffix_start.to(response_mask.device)[:, None])


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def agg_loss(values: Tensor, mask: Tensor, agg: str, *, norm: Tensor | float | None = None) -> Tensor:
    """Aggregate per-token values[N, T] over mask[N, T] into one scalar.

    - ``"token-mean"``: sum_{i,t} m v / norm, norm = total trained tokens (default ``mask.sum()``);
      every token weighs the same, so long chains weigh more (verl's GRPO default, the paper's
      GRPO baseline).
    - ``"seq-mean-token-mean"``: sum_i (sum_t m v / n_i) / norm, n_i = trained tokens of row i,
      norm = number of rows (default N); every chain weighs the same (the paper's RRPO/SRPO loss,
      ``docs/method.md`` section 5).
    - ``"seq-mean-token-sum"``: sum_i sum_t m v / norm, norm = rows (default N).

    ``norm`` lets a caller that splits a mini-batch into micro-batches (or across processes)
    pass the mini-batch's global count so that the summed micro-batch losses equal the loss of
    the whole mini-batch. A row with no trained token contributes 0. Padding columns (mask 0)
    change nothing in any mode.
    """
    check_agg(agg)
    m = mask.to(values.dtype)
    masked = values * m
    if agg == "token-mean":
        denom = m.sum() if norm is None else norm
        total = masked.sum()
    else:
        per_row = masked.sum(dim=-1)
        if agg == "seq-mean-token-mean":
            per_row = per_row / m.sum(dim=-1).clamp_min(1.0)
        denom = values.shape[0] if norm is None else norm
        total = per_row.sum()
    if isinstance(denom, Tensor):
        return total / denom.to(total.dtype).clamp_min(1.0)
    return total / max(float(denom), 1.0)


class LossFn(Protocol):
    """Signature shared by every ``LOSSES`` entry (design rule P4, docs/design.md).

    ``logp[N, T]``: log-probs of the taken tokens under the current policy (with grad);
    ``old_logp[N, T]``: the same under the policy that sampled (no grad); ``adv[N]``: one advantage
    per chain, broadcast to its tokens, or ``adv[N, T]``: one per token (the tree baselines);
    ``mask[N, T]``: trained tokens. Returns (loss, stats).
    """

    def __call__(
        self,
        logp: Tensor,
        old_logp: Tensor,
        adv: Tensor,
        mask: Tensor,
        *,
        agg: str,
        clip_eps: float,
        clip_c: float | None,
        norm: Tensor | float | None = None,
    ) -> tuple[Tensor, Stats]: ...


def per_token(adv: Tensor, like: Tensor) -> Tensor:
    """``adv`` as [N, T] in ``like``'s dtype: a per-chain [N] advantage is broadcast over tokens."""
    if adv.dim() == 1:
        return adv[:, None].to(like.dtype)
    if adv.shape != like.shape:
        raise ValueError(f"per-token advantages {tuple(adv.shape)} do not match log-probs {tuple(like.shape)}")
    return adv.to(like.dtype)


def _ratio_stats(logp: Tensor, old_logp: Tensor, mask: Tensor) -> tuple[Tensor, Stats]:
    # Clamp like verl before exp so a stale token cannot overflow the ratio.
    log_ratio = torch.clamp(logp - old_logp, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    m = mask.bool()
    d = ratio.detach()
    stats = {
        "ratio_mean": masked_mean(d, mask),
        "ratio_max": torch.where(m, d, torch.zeros_like(d)).max() if m.any() else d.new_zeros(()),
        # k3 estimate of KL(new || old) on the sampled tokens (>= 0): how off-policy the step is.
        "approx_kl": masked_mean(torch.expm1(-log_ratio.detach()) + log_ratio.detach(), mask),
    }
    return ratio, stats


def reinforce_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    agg: str,
    clip_eps: float,
    clip_c: float | None,
    norm: Tensor | float | None = None,
) -> tuple[Tensor, Stats]:
    """Plain REINFORCE: per-token value ``-A_i * log pi(y_t)``, aggregated by ``agg``.

    The paper's RRPO/SRPO loss (``docs/method.md`` section 5): no ratio, no clipping, no KL, no
    entropy term; with ``agg="seq-mean-token-mean"`` it is
    ``L = -mean_i(A_i * mean_{t in trained(i)} log pi(y_t))``. ``old_logp``, ``clip_eps`` and
    ``clip_c`` are accepted for the shared signature and only used for statistics.
    """
    _, stats = _ratio_stats(logp.detach(), old_logp, mask)
    values = -per_token(adv, logp) * logp
    loss = agg_loss(values, mask, agg, norm=norm)
    stats["clipfrac"] = logp.new_zeros(())
    stats["pg_loss"] = loss.detach()
    return loss, stats


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    agg: str,
    clip_eps: float,
    clip_c: float | None,
    norm: Tensor | float | None = None,
) -> tuple[Tensor, Stats]:
    """PPO clipped surrogate with optional dual clip, per token, aggregated by ``agg``.

    ``r_t = exp(logp - old_logp)``; ``l_t = max(-A r_t, -A clip(r_t, 1 - eps, 1 + eps))``; with
    dual clip (``clip_c`` = c > 1, Ye et al. 2020, verl's ``clip_ratio_c=3``) tokens with A < 0
    use ``min(l_t, -A c)``, bounding the loss when the ratio explodes. ``clip_c=None`` disables
    the dual clip. The paper's GRPO baseline is this loss with eps 0.2, c 3 and
    ``agg="token-mean"`` (verl); for RRPO/SRPO it is the clipped ablation.
    """
    values, stats = _clip_values(logp, old_logp, adv, mask, clip_eps=clip_eps, clip_c=clip_c)
    loss = agg_loss(values, mask, agg, norm=norm)
    stats["pg_loss"] = loss.detach()
    return loss, stats


def _clip_values(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, clip_eps: float,
                 clip_c: float | None) -> tuple[Tensor, Stats]:
    """Per-token values of the (dual-)clipped surrogate, and the ratio / clip statistics."""
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c must be > 1 (or None to disable the dual clip), got {clip_c}")
    ratio, stats = _ratio_stats(logp, old_logp, mask)
    a = per_token(adv, logp)
    l1 = -a * ratio
    l2 = -a * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    clipped = torch.maximum(l1, l2)
    values = clipped
    if clip_c is not None:
        l3 = -a * clip_c
        values = torch.where(a < 0, torch.minimum(l3, clipped), clipped)
    stats["clipfrac"] = masked_mean((l2 > l1).to(logp.dtype).detach(), mask)
    return values, stats


CRITIQUE_SHAPING_GAMMA = 0.1
"""gamma of Critique-GRPO's shaping ``f(p) = p / (p + gamma)`` on refinement tokens."""


def critique_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    agg: str,
    clip_eps: float,
    clip_c: float | None,
    norm: Tensor | float | None = None,
    offpolicy: Tensor | None = None,
    gamma: float = CRITIQUE_SHAPING_GAMMA,
) -> tuple[Tensor, Stats]:
    """Critique-GRPO: the clipped surrogate on the policy's own responses, and on refinement rows
    (``offpolicy[N]`` True; sampled under a critique the trained context does not show) the
    shaped objective ``-A * f(pi(y_t))`` with ``f(p) = p / (p + gamma)``, no ratio and no clip.

    ``f`` re-weights the refinement tokens' policy gradient by ``gamma / (p + gamma)``: tokens the
    policy finds unlikely (p small) get the larger weight, likely ones are damped.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    on_loss_values, stats = _clip_values(logp, old_logp, adv, mask, clip_eps=clip_eps, clip_c=clip_c)
    values = on_loss_values
    n_off = logp.new_zeros(())
    if offpolicy is not None:
        off = offpolicy.to(torch.bool).to(logp.device)
        if off.shape != (logp.shape[0],):
            raise ValueError(f"offpolicy must have shape ({logp.shape[0]},), got {tuple(off.shape)}")
        p = torch.exp(logp)
        shaped = -per_token(adv, logp) * (p / (p + gamma))
        values = torch.where(off[:, None], shaped, on_loss_values)
        n_off = (mask * off[:, None]).sum().to(logp.dtype)
    loss = agg_loss(values, mask, agg, norm=norm)
    stats["pg_loss"] = loss.detach()
    stats["offpolicy_token_frac"] = (n_off / mask.sum().clamp_min(1)).detach()
    return loss, stats


LOSSES: dict[str, LossFn] = {
    "reinforce": reinforce_loss,
    "ppo_clip": ppo_clip_loss,
    "critique": critique_loss,
}
"""Loss registry; every entry has the ``LossFn`` signature."""


def get_loss(name: str) -> LossFn:
    """Look up a loss by name; unknown names list the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token low-variance estimate of KL(pi || pi_ref) on tokens sampled from pi.

    Schulman's k3 estimator: ``exp(ref - logp) - (ref - logp) - 1`` (always >= 0, unbiased).
    The log-ratio is clamped to [-20, 20] like verl's ``low_var_kl``. Add it to the loss as
    ``kl_coef * agg_loss(kl_k3(...), mask, agg)`` (the paper's optional KL uses coefficient 0.01).
    """
    d = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.exp(d) - d - 1.0


def token_logprobs(logits: Tensor, targets: Tensor, *, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature)[targets], in float32 (design rule P5 in
    docs/design.md: the log-softmax dtype).

    Shapes: logits[N, T, V], targets[N, T] -> [N, T].
    """
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    return torch.gather(x, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)

