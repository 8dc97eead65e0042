"""Finite-horizon layered MDPs, vectorised by layer, and the toy families the simulator uses.

What lives here: the ``LayeredMDP`` frozen dataclass (validated once) and its constructors:

- ``random_layered_mdp``: general layered tabular MDPs with stochastic transitions (K outcomes
  per state-action pair), for the exact-identity and bound property tests;
- ``random_tree_mdp``: a prefix tree (every prefix its own state, deterministic transitions),
  used by the speed benchmark at >= 10^6 states;
- ``reasoning_tree``: a prefix tree of reasoning chains with recoverable and unrecoverable
  errors (a knob ``q`` sets how many states hold an error action);
- ``coverage_chain``: the coverage-sweep family. The coverage p_pi = d^pi(G_tau) is exactly
  proportional to the knob ``q``, so sweeping q over decades sweeps p over decades, while the
  advantages at the improvable states stay fixed and the non-improvable states are coin flips.

What must not live here: value functions and updates (``exact.py``, ``cpi.py``); torch.

Representation (shape letters used throughout the simulator: S states, A actions, K outcomes,
H horizon).
States are integers numbered layer by layer: layer h (h = 0 .. H) holds the ids
``offsets[h] .. offsets[h+1]-1``. Layers 0 .. H-1 are *decision* layers (``n_dec`` states in
all); layer H holds the terminal states, each with a mean reward in [0, r_max]. Layer 0 holds
exactly one state, the start state 0 (the problem). Transitions are stored in fixed-fan-out
form: from decision state s under action a the next state is ``succ[s, a, k]`` with probability
``prob[s, a, k]`` (k < K), always a state of the next layer. A prefix tree has K = 1 and
prob = 1; a dense layered MDP has K = layer width. No dense P[S, A, S] is ever built.

Rewards are terminal and *coin flips*: a terminal state with mean reward r pays r_max with
probability r / r_max and 0 otherwise. So the return of any rollout from (x, y) is
r_max * Bernoulli(Q(x, y) / r_max), which the sample-based mode uses (``cpi.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.random import Generator
from numpy.typing import NDArray

from respo.theory._checks import check_integer, check_real

F = NDArray[np.float64]
I = NDArray[np.int64]  # noqa: E741

_PROB_TOL = 1e-9


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class LayeredMDP:
    """A finite-horizon MDP with terminal coin-flip rewards, stored layer by layer.

    Fields (validated once in ``__post_init__``; every failure is a ValueError naming the problem):

    - ``layer_sizes``: states per layer, length H + 1; ``layer_sizes[0] == 1`` (the start state).
    - ``succ``: int64 [n_dec, A, K], next-state ids (each in the next layer).
    - ``prob``: float64 [n_dec, A, K], transition probabilities; each (s, a) row sums to 1.
    - ``reward``: float64 [n_term], mean terminal reward in [0, r_max].
    - ``horizon``: H, the number of decisions; must equal ``len(layer_sizes) - 1``.
    - ``r_max``: R, the reward bound (> 0).
    """

    layer_sizes: tuple[int, ...]
    succ: I
    prob: F
    reward: F
    horizon: int
    r_max: float = 1.0

    def __post_init__(self) -> None:
        sizes = tuple(check_integer(f"layer_sizes[{i}]", n) for i, n in enumerate(self.layer_sizes))
        object.__setattr__(self, "layer_sizes", sizes)
        H = check_integer("horizon", self.horizon, minimum=1)
        if len(sizes) != H + 1:
            raise ValueError(
                f"horizon {H} does not fit the MDP: layer_sizes has {len(sizes)} layers, "
                f"a horizon of H decisions needs H + 1 (H decision layers plus the terminal layer)"
            )
        if any(n < 1 for n in sizes):
            raise ValueError(f"every layer needs at least one state, got layer_sizes={sizes}")
        if sizes[0] != 1:
            raise ValueError(f"layer 0 must hold exactly the start state, got {sizes[0]} states")
        if not check_real("r_max", self.r_max) > 0:
            raise ValueError(f"r_max must be a positive number, got {self.r_max}")
        succ = np.asarray(self.succ)
        prob = np.asarray(self.prob, dtype=np.float64)
        reward = np.asarray(self.reward, dtype=np.float64)
        n_dec = sum(sizes[:-1])
        if succ.ndim != 3:
            raise ValueError(f"succ must have shape [n_dec, A, K], got shape {succ.shape}")
        if not np.issubdtype(succ.dtype, np.integer):
            raise ValueError(f"succ must hold integer state ids, got dtype {succ.dtype}")
        if succ.shape[0] != n_dec:
            raise ValueError(
                f"shape mismatch: succ has {succ.shape[0]} rows but the decision layers hold "
                f"{n_dec} states"
            )
        if prob.shape != succ.shape:
            raise ValueError(f"shape mismatch: prob {prob.shape} vs succ {succ.shape}")
        if reward.shape != (sizes[-1],):
            raise ValueError(
                f"shape mismatch: reward has shape {reward.shape}, the terminal layer holds "
                f"{sizes[-1]} states"
            )
        if succ.shape[1] < 1 or succ.shape[2] < 1:
            raise ValueError(f"need at least one action and one outcome, got succ {succ.shape}")
        if not np.all(np.isfinite(prob)) or prob.min() < 0:
            raise ValueError("transition probabilities are not stochastic: negative or non-finite entries")
        rowsum = prob.sum(axis=2)
        bad = np.abs(rowsum - 1.0) > _PROB_TOL
        if bad.any():
            s, a = np.argwhere(bad)[0]
            raise ValueError(
                f"transition probabilities are not stochastic: (state {s}, action {a}) sums to "
                f"{rowsum[s, a]:.12g}"
            )
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        layer_of = np.repeat(np.arange(H, dtype=np.int64), sizes[:-1])
        lo = offsets[layer_of + 1][:, None, None]
        hi = offsets[layer_of + 2][:, None, None]
        # Zero-probability outcomes may point anywhere in the next layer, but never outside it.
        outside = (succ < lo) | (succ >= hi)
        if outside.any():
            s, a, k = np.argwhere(outside)[0]
            raise ValueError(
                f"transition from state {s} (layer {layer_of[s]}) action {a} outcome {k} goes to "
                f"state {succ[s, a, k]}, outside layer {layer_of[s] + 1} (the MDP must be layered)"
            )
        if not np.all(np.isfinite(reward)) or reward.min() < 0 or reward.max() > self.r_max + 1e-12:
            raise ValueError(f"terminal rewards must lie in [0, r_max={self.r_max}]")
        object.__setattr__(self, "succ", _frozen(succ.astype(np.int64, copy=False)))
        object.__setattr__(self, "prob", _frozen(prob))
        object.__setattr__(self, "reward", _frozen(reward))
        object.__setattr__(self, "horizon", H)
        object.__setattr__(self, "r_max", float(self.r_max))

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def offsets(self) -> I:
        """First state id of each layer, length H + 2 (``offsets[-1]`` = number of states)."""
        return np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(np.int64)

    @property
    def n_states(self) -> int:
        """All states, decision and terminal."""
        return int(sum(self.layer_sizes))

    @property
    def n_dec(self) -> int:
        """Decision states (layers 0 .. H-1); ids 0 .. n_dec-1."""
        return int(sum(self.layer_sizes[:-1]))

    @property
    def n_actions(self) -> int:
        """A, the same at every decision state."""
        return int(self.succ.shape[1])

    def layer_of(self) -> I:
        """Layer index of every state, shape [n_states]."""
        return np.repeat(np.arange(self.horizon + 1, dtype=np.int64), self.layer_sizes)

    def layer_slice(self, h: int) -> slice:
        """Ids of layer h as a slice."""
        off = self.offsets
        return slice(int(off[h]), int(off[h + 1]))

    def check_policy(self, pi: NDArray[np.floating]) -> F:
        """Validate a stochastic policy pi[n_dec, A] and return it as float64."""
        p = np.asarray(pi, dtype=np.float64)
        if p.shape != (self.n_dec, self.n_actions):
            raise ValueError(
                f"shape mismatch: policy has shape {p.shape}, the MDP needs "
                f"[n_dec={self.n_dec}, A={self.n_actions}]"
            )
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise ValueError("policy is not stochastic: negative or non-finite entries")
        rs = p.sum(axis=1)
        bad = np.abs(rs - 1.0) > 1e-8
        if bad.any():
            s = int(np.argmax(bad))
            raise ValueError(f"policy is not stochastic: row of state {s} sums to {rs[s]:.12g}")
        return p

    def uniform_policy(self) -> F:
        """pi(y|x) = 1/A everywhere, shape [n_dec, A]."""
        return np.full((self.n_dec, self.n_actions), 1.0 / self.n_actions)


def _check_h(H: int, *, minimum: int = 1) -> int:
    return check_integer("horizon H", H, minimum=minimum)


def random_layered_mdp(
    rng: Generator, H: int, width: int, n_actions: int, n_outcomes: int = 2, *, r_max: float = 1.0
) -> LayeredMDP:
    """A random layered MDP: ``width`` states per layer (1 at layer 0), K random outcomes per (s, a).

    Outcome targets are uniform in the next layer, probabilities Dirichlet(1), terminal mean
    rewards uniform in [0, r_max]. Shapes: succ/prob [n_dec, A, K].
    """
    H = _check_h(H)
    if width < 1 or n_actions < 1 or n_outcomes < 1:
        raise ValueError(f"width, n_actions and n_outcomes must be >= 1, got {width}, {n_actions}, {n_outcomes}")
    sizes = (1,) + (width,) * H
    off = np.concatenate([[0], np.cumsum(sizes)])
    n_dec = int(off[H])
    layer = np.repeat(np.arange(H), sizes[:-1])
    succ = off[layer + 1][:, None, None] + rng.integers(0, width, size=(n_dec, n_actions, n_outcomes))
    prob = rng.dirichlet(np.ones(n_outcomes), size=(n_dec, n_actions))
    reward = rng.uniform(0.0, r_max, size=width)
    return LayeredMDP(sizes, succ.astype(np.int64), prob, reward, H, r_max)


def _tree_sizes(H: int, A: int) -> tuple[int, ...]:
    return tuple(A**h for h in range(H + 1))


def random_tree_mdp(rng: Generator, H: int, n_actions: int, *, r_max: float = 1.0) -> LayeredMDP:
    """A full prefix tree: state = (y_1..y_h), child of s under a is the next prefix; K = 1.

    Layer h has A^h states; terminal mean rewards uniform in [0, r_max]. For A = 2, H = 20 this
    has 2^21 - 1 ~ 2.1 * 10^6 states (about 10^6 decision states).
    """
    H = _check_h(H)
    A = check_integer("n_actions", n_actions)
    if A < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    sizes = _tree_sizes(H, A)
    n_dec = int(sum(sizes[:-1]))
    # In breadth-first numbering the children of state s are A*s + 1 .. A*s + A.
    succ = (A * np.arange(n_dec, dtype=np.int64)[:, None] + 1 + np.arange(A, dtype=np.int64)[None, :])[:, :, None]
    prob = np.ones((n_dec, A, 1))
    reward = rng.uniform(0.0, r_max, size=sizes[-1])
    return LayeredMDP(sizes, succ, prob, reward, H, r_max)


# Status codes of reasoning-tree nodes.
OK, WRONG, DEAD = 0, 1, 2


def reasoning_tree(
    rng: Generator,
    H: int,
    n_actions: int = 3,
    *,
    q: float = 0.3,
    p_unrecoverable: float = 0.5,
    s_ok: float = 0.8,
    s_wrong: float = 0.1,
    r_max: float = 1.0,
) -> tuple[LayeredMDP, NDArray[np.int8]]:
    """A prefix tree of reasoning chains with recoverable and unrecoverable errors.

    Every prefix is its own state (K = 1). Each node has a status: on track (OK), wrong but
    recoverable (WRONG) or dead (DEAD). An OK node is *critical* with probability ``q`` (the
    coverage knob): one random action is an error, unrecoverable (child DEAD) with probability
    ``p_unrecoverable``, else recoverable (child WRONG); other actions keep the chain OK. A
    WRONG node has one random "recover" action (child OK) and otherwise stays WRONG. DEAD stays
    DEAD. Terminal means: OK -> ``s_ok``, WRONG -> ``s_wrong``, DEAD -> 0 (times r_max), paid as
    coin flips. Returns the MDP and the status of every state (int8 [n_states]).
    """
    H = _check_h(H)
    A = check_integer("n_actions", n_actions)
    if A < 2:
        raise ValueError(f"a reasoning tree needs at least 2 actions, got {n_actions}")
    for name, v in (("q", q), ("p_unrecoverable", p_unrecoverable), ("s_ok", s_ok), ("s_wrong", s_wrong)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    base = random_tree_mdp(rng, H, A, r_max=r_max)
    off = base.offsets
    status = np.zeros(base.n_states, dtype=np.int8)
    for h in range(H):
        par = np.arange(off[h], off[h + 1])
        st = status[par]
        n = par.size
        child = base.succ[par, :, 0]  # [n, A]
        cst = np.repeat(st[:, None], A, axis=1)
        special = rng.integers(0, A, size=n)
        critical = (st == OK) & (rng.random(n) < q)
        unrec = rng.random(n) < p_unrecoverable
        rows = np.arange(n)
        cst[rows[critical], special[critical]] = np.where(unrec[critical], DEAD, WRONG)
        wrong = st == WRONG
        cst[rows[wrong], special[wrong]] = OK
        status[child] = cst
    term = status[off[H]:]
    reward = np.select([term == OK, term == WRONG], [s_ok * r_max, s_wrong * r_max], 0.0)
    mdp = LayeredMDP(base.layer_sizes, base.succ, base.prob, reward, H, r_max)
    status.setflags(write=False)
    return mdp, status


# State names of the coverage chain (position within each layer h >= 1).
CHAIN_STATES: tuple[str, ...] = ("easy", "hard", "ok", "wrong", "dead")


def coverage_chain(
    H: int,
    q: float,
    *,
    fork: int = 1,
    s_easy: float = 0.5,
    s_ok: float = 0.5,
    easy_gap: float = 0.0,
    r_max: float = 1.0,
) -> LayeredMDP:
    """The coverage-sweep family: p_pi = d^pi(G_tau) is exactly proportional to ``q``.

    A reasoning chain in compact (merged-prefix) form with A = 3 actions
    (0 = correct / recover, 1 = unrecoverable error, 2 = recoverable error). From the start
    state every action leads to the *hard* track with probability ``q`` and to the *easy* track
    otherwise (the problem's difficulty is drawn by the environment, so the start state has zero
    advantage). Layers 1..H-1 hold the five states ``CHAIN_STATES`` (ids ``offsets[h] + i``):

    - easy: every action stays easy; terminal mean ``s_easy`` (a coin flip: non-improvable
      states whose outcomes still vary, which is what gives RR its -2 sample slope);
    - hard: every action stays hard until layer ``fork``, where action 0 -> ok, 1 -> dead,
      2 -> wrong (the critical fork);
    - ok: stays ok; terminal mean ``s_ok`` (coin flip);
    - wrong: action 0 recovers (-> ok), 1 -> dead, 2 stays wrong; terminal mean 0;
    - dead: stays dead; terminal mean 0.

    Conditioned on the hard track nothing depends on q, so for any policy the advantages are
    the same for every q and d^pi of every hard-track state is proportional to q.
    Requires H >= 2 and 1 <= fork <= H - 1.

    ``easy_gap`` > 0 adds sub-threshold advantage on the easy track, the instance on which CARO
    is not always better than RR (docs/theory.md, "Caveats"): at the last easy state, action 0
    leads to a sixth terminal state with mean ``s_easy + easy_gap`` (so A(easy, 0) = easy_gap *
    (1 - pi(0|easy)) there). With that advantage below tau, G_tau is unchanged but RR's mean
    advantage no longer vanishes with p, so at small enough p RR improves more than CARO.
    """
    H = _check_h(H, minimum=2)
    fork = check_integer("fork", fork)
    if not 1 <= fork <= H - 1:
        raise ValueError(f"fork must lie in 1..H-1={H - 1} for horizon {H}, got {fork}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if not 0.0 <= s_easy + easy_gap <= 1.0 or easy_gap < 0:
        raise ValueError(f"easy_gap must be >= 0 with s_easy + easy_gap <= 1, got {easy_gap}")
    E, HD, OKs, W, D = range(5)
    A = 3
    sizes = (1,) + (5,) * (H - 1) + (6 if easy_gap > 0 else 5,)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_dec = int(off[H])
    succ = np.empty((n_dec, A, 2), dtype=np.int64)
    prob = np.zeros((n_dec, A, 2))
    # start state: difficulty drawn by the environment
    succ[0, :, 0] = off[1] + E
    succ[0, :, 1] = off[1] + HD
    prob[0, :, 0] = 1.0 - q
    prob[0, :, 1] = q
    for h in range(1, H):
        nxt = off[h + 1]
        for i in range(5):
            s = off[h] + i
            prob[s, :, 0] = 1.0
            succ[s, :, 1] = nxt  # unused outcome (probability 0), kept inside the next layer
            if i == HD and h == fork:
                succ[s, :, 0] = nxt + np.array([OKs, D, W])
            elif i == W:
                succ[s, :, 0] = nxt + np.array([OKs, D, W])
            else:
                succ[s, :, 0] = nxt + i
            if i == E and h == H - 1 and easy_gap > 0:
                succ[s, 0, 0] = nxt + 5
    reward = np.array([s_easy, 0.0, s_ok, 0.0, 0.0] + ([s_easy + easy_gap] if easy_gap > 0 else [])) * r_max
    return LayeredMDP(sizes, succ, prob, reward, H, r_max)


def coverage_chain_policy(mdp: LayeredMDP, *, fork: int = 1, eps: float = 0.4, p_recover: float = 0.3) -> F:
    """The initial policy for ``coverage_chain``: uniform, except at the fork and the wrong states.

    At the fork pi = (1 - eps, eps/2, eps/2); at every wrong state pi = (p_recover,
    (1 - p_recover)/2, (1 - p_recover)/2). Shape [n_dec, 3].
    """
    if mdp.n_actions != 3:
        raise ValueError(f"coverage_chain_policy needs a 3-action coverage chain, got A={mdp.n_actions}")
    pi = mdp.uniform_policy()
    off = mdp.offsets
    pi[off[fork] + 1] = (1.0 - eps, eps / 2, eps / 2)
    for h in range(1, mdp.horizon):
        pi[off[h] + 3] = (p_recover, (1 - p_recover) / 2, (1 - p_recover) / 2)
    return mdp.check_policy(pi)


def tight_chain(H: int, *, r_max: float = 1.0) -> LayeredMDP:
    """The instance on which the conservative bound's second-order term is attained (to O(alpha^3)).

    Layers 1..H-1 hold two states: "open" (offset 0) and "won" (offset 1). At open, action 0
    wins (-> won, terminal mean r_max) and action 1 continues (-> open, terminal mean 0); won
    stays won. Under the policy that never takes action 0, A^pi(open, 0) = r_max at every step,
    eta = 0, and the CPI mixture on all states gives eta = r_max (1 - (1 - alpha)^H)
    = alpha H r_max - alpha^2 r_max H (H - 1) / 2 + O(alpha^3): half the (CU) penalty with c = 1.
    """
    H = _check_h(H)
    sizes = (1,) + (2,) * H
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_dec = int(off[H])
    succ = np.empty((n_dec, 2, 1), dtype=np.int64)
    for h in range(H):
        nxt = off[h + 1]
        succ[off[h], :, 0] = (nxt + 1, nxt)
        if h > 0:
            succ[off[h] + 1, :, 0] = nxt + 1
    return LayeredMDP(sizes, succ, np.ones((n_dec, 2, 1)), np.array([0.0, r_max]), H, r_max)
