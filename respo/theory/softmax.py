"""The softmax-policy bridge: a tabular softmax policy trained with the LLM trainer's shared code.

Per iteration and per "prompt" (the start state), ``respo.buffer.build_buffer`` fills the
variant's budget with ``TabularSampler`` chains and the variant's localizer (grpo: none; rrpo:
``UniformLocalizer``; srpo: ``NoisyOracleLocalizer(beta, gamma)`` standing in for the model's
self-localization; oracle: ``OracleLocalizer``), the judge being the first tau-improvable state
of the chain under the current policy. Advantages come from ``respo.advantages.ADVANTAGES``
and the objective from ``respo.variants.resolve_objective``. The update is one gradient ascent
step on the REINFORCE objective with the trainer's aggregation, computed analytically:

    seq-mean-token-mean:  J = (1/N) sum_i (1/T_i) sum_{t trained} A_i log pi(y_t | x_t)
    token-mean:           J = (1 / sum_i T_i) sum_i sum_{t trained} A_i log pi(y_t | x_t)

with T_i the trained thoughts of chain i (those after ``prefix_len``; copied prefix thoughts get
no gradient) and d log pi(y|x) / d theta[x, :] = onehot(y) - pi(.|x).

Deviation: the paper's GRPO uses verl's clipped PPO loss. With one on-policy gradient step per
batch the clipped loss has the same gradient as REINFORCE (ratio 1), so only the aggregation
and the advantage numerics differ; ``pairing="paper"`` keeps those, "matched" equalises them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from respo.advantages import get_advantage
from respo.buffer import Buffer, Rngs, buffer_metrics, build_buffer
from respo.resets import NoisyOracleLocalizer, OracleLocalizer, UniformLocalizer
from respo.theory.exact import check_tau, evaluate, improvable_set
from respo.theory.mdp import LayeredMDP
from respo.theory.sampler import TabularSampler, first_improvable_judge
from respo.variants import get_variant, resolve_objective

F = NDArray[np.float64]
AGGS: tuple[str, ...] = ("seq-mean-token-mean", "token-mean")


def softmax_policy(theta: F) -> F:
    """Row-wise softmax pi[x, :] = exp(theta[x, :]) / sum exp, numerically stable."""
    z = theta - theta.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reinforce_gradient(pi: F, chains: list[Any], adv: F, *, agg: str) -> F:
    """Gradient of the REINFORCE objective (module docstring) w.r.t. the logits, shape like pi.

    ``chains[i].info["actions"]`` gives the thoughts; only indices >= prefix_len are trained.
    """
    if agg not in AGGS:
        raise ValueError(f"unknown aggregation {agg!r}; valid: {', '.join(AGGS)}")
    adv = np.asarray(adv, dtype=np.float64)
    if adv.shape != (len(chains),):
        raise ValueError(f"shape mismatch: {len(chains)} chains but advantages of shape {adv.shape}")
    xs: list[int] = []
    ys: list[int] = []
    ws: list[float] = []
    total_T = sum(c.n_trained for c in chains)
    for c, a in zip(chains, adv, strict=True):
        T = c.n_trained
        if T == 0:
            continue
        acts = c.info["actions"]
        scale = a / T / len(chains) if agg == "seq-mean-token-mean" else a / total_T
        for t in range(c.prefix_len, c.n_thoughts):
            xs.append(int(c.states[t]))
            ys.append(int(acts[t]))
            ws.append(float(scale))
    grad = np.zeros_like(pi)
    if not xs:
        return grad
    x = np.array(xs)
    y = np.array(ys)
    w = np.array(ws)
    if (y < 0).any():
        raise ValueError("a trained thought has no recorded action (info['actions'] = -1)")
    np.add.at(grad, (x, y), w)
    np.add.at(grad, x, -w[:, None] * pi[x])
    return grad


def make_localizer(kind: str, G: NDArray[np.bool_], *, beta: float, gamma: float) -> Any:
    """The tabular localizer of a variant kind: none / uniform / self (noisy oracle) / oracle."""
    judge = first_improvable_judge(G)
    if kind == "none":
        return None
    if kind == "uniform":
        return UniformLocalizer()
    if kind == "oracle":
        return OracleLocalizer(judge)
    if kind == "self":
        return NoisyOracleLocalizer(judge, beta=beta, gamma=gamma)
    raise ValueError(f"unknown localizer kind {kind!r}")


def train_softmax(
    mdp: LayeredMDP,
    variant: str,
    *,
    tau: float,
    n_iters: int,
    n_prompts: int = 8,
    lr: float = 1.0,
    seed: int = 0,
    beta: float = 0.2,
    gamma: float = 0.6,
    pairing: str = "matched",
    theta0: F | None = None,
) -> dict[str, Any]:
    """Train a tabular softmax policy with one variant of ``respo.variants.VARIANTS``.

    Each iteration builds ``n_prompts`` buffers from the start state (keys (seed, it, b), common
    random numbers across variants), computes the shared advantages per buffer and takes one
    gradient step of size ``lr`` on the mean objective. Returns arrays over iterations 0..n:
    ``eta`` (exact), ``p`` (coverage of G_tau), ``samples`` (cumulative chains generated),
    ``thoughts`` (cumulative thoughts generated), plus per-iteration ``fallback_frac`` and
    ``no_failure_frac``, and the final ``theta``.
    """
    check_tau(tau, r_max=mdp.r_max)
    v = get_variant(variant)
    obj = resolve_objective(v, pairing)
    adv_fn = get_advantage(obj.advantage)
    if obj.agg not in AGGS:
        raise ValueError(f"aggregation {obj.agg!r} is not supported by the tabular bridge")
    sampler = TabularSampler(mdp)
    theta = np.zeros((mdp.n_dec, mdp.n_actions)) if theta0 is None else np.array(theta0, dtype=np.float64)
    if theta.shape != (mdp.n_dec, mdp.n_actions):
        raise ValueError(f"shape mismatch: theta {theta.shape}, need {(mdp.n_dec, mdp.n_actions)}")
    eta, ps, samples, thoughts, fb, nof = [], [], [0.0], [0.0], [], []
    for it in range(int(n_iters) + 1):
        pi = softmax_policy(theta)
        ev = evaluate(mdp, pi)
        G = improvable_set(ev, tau)
        eta.append(ev.eta)
        ps.append(float(ev.d[G].sum()))
        if it == n_iters:
            break
        loc = make_localizer(v.localizer, G, beta=beta, gamma=gamma)
        grad = np.zeros_like(theta)
        bufs: list[Buffer[int]] = []
        for b in range(int(n_prompts)):
            buf = build_buffer(sampler, loc, pi, 0, split=v.split, rngs=Rngs.keyed(seed, it, b))
            bufs.append(buf)
            adv = adv_fn(buf.rewards, buf.group)
            grad += reinforce_gradient(pi, buf.chains, adv, agg=obj.agg)
        theta = theta + lr * grad / n_prompts
        samples.append(samples[-1] + sum(len(b.generated) for b in bufs))
        thoughts.append(thoughts[-1] + sum(c.n_trained for b in bufs for c in b.generated))
        m = buffer_metrics(bufs)
        fb.append(m["reset/fallback_frac"])
        nof.append(m["buffer/no_failure_frac"])
    return {
        "eta": np.array(eta), "p": np.array(ps), "samples": np.array(samples),
        "thoughts": np.array(thoughts), "fallback_frac": np.array(fb),
        "no_failure_frac": np.array(nof), "theta": theta,
    }
