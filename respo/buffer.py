"""Fill one prompt's rollout buffer for the reset variants (``docs/method.md`` section 3), once,
for both worlds: the reset seam's builder, GRPO's all-fresh group included.

``build_buffer(sampler, localizer, policy, root, split=..., rngs=...)``:

1. No resets (``split.parents == 0`` or no localizer): ``split.fresh`` fresh chains, one group.
2. Reset splits: draw fresh chains in rounds (each round asks exactly for the missing slots, so
   the outcome equals drawing one at a time). Failed chains (reward < ``success``) become parents
   until ``split.parents`` exist; the other chains fill G1 up to ``split.fresh``; surplus chains
   are discarded (generated, not trained). Stop when both are full or ``split.max_fresh`` attempts
   were made.
3. Fewer parents than needed: fall back to one fresh group of ``split.budget`` chains, the first
   attempts in order, topping up with new draws if needed (counted as ``no_failure``).
4. Localize each parent. The reset step k gives the prefix ``parent.states[:k]`` and a suffix
   group G2 of ``split.suffix`` continuations. A "skip" fallback drops that parent's suffix group:
   its slots become fresh chains in G1 (counted).
5. Top G1 up to ``split.fresh`` if it is short. Parents are never in the buffer.

Every fallback is returned in ``BufferStats`` (design rule P9, docs/design.md). Group ids are
explicit (no slot arithmetic).

``build_buffers`` runs the same logic for all prompts of a step in lock-step (each prompt's
builder is a coroutine that yields its sampling and localization requests, ``Extend`` and
``Locate``), so a sampler with ``extend_many`` (one batched generate per round) or a localizer
with ``locate_many`` serves every prompt at once; ``build_buffer`` is the one-prompt case.

The published baselines' builders (tree, two-attempt, critique) live in
``respo.baselines.builders``; ``build_buffers`` runs them with the same driver (``builder=``).
Their own requests carry a ``serve`` method, so this module knows only the two above.
"""

from __future__ import annotations

from collections.abc import Generator as Generator_
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, runtime_checkable

import numpy as np
from numpy.random import Generator
from numpy.typing import NDArray

from respo.resets import Chain, Localizer, LocateResult, Pol, S, Sampler
from respo.seeding import rng_for
from respo.variants import Split


@dataclass
class Rngs:
    """The three random streams of one (seed, step, problem): fresh chains, localization, suffixes.

    Keyed identically across variants so that GRPO, RRPO and SRPO see common random numbers.
    """

    fresh: Generator
    localize: Generator
    suffix: Generator

    @classmethod
    def keyed(cls, seed: int, *keys: int | str) -> Rngs:
        """Streams ``rng_for(seed, *keys, role)`` for role in fresh, localize, suffix."""
        return cls(*(rng_for(seed, *keys, role) for role in ("fresh", "localize", "suffix")))


@dataclass
class BufferStats:
    """Counts and fallbacks of one buffer (all returned, none hidden)."""

    fresh_attempts: int = 0
    """Fresh chains drawn (trained, parents and discarded)."""
    discarded: int = 0
    """Fresh chains drawn but neither trained nor used as parent."""
    no_failure: bool = False
    """Too few failed chains in ``max_fresh`` attempts: the buffer fell back to one fresh group."""
    locate_fallbacks: int = 0
    """Localizations that fell back (``LocateResult.fell_back``)."""
    skipped_resets: int = 0
    """Parents whose suffix group was replaced by fresh chains (fallback mode "skip")."""
    topped_up: int = 0
    """Fresh chains drawn after the search to fill G1 (or the fallback group)."""


@dataclass
class Buffer(Generic[S]):
    """One prompt's trained chains with explicit group ids and roles, plus what was not trained.

    ``chains[i]`` belongs to group ``group[i]``; ``role[i]`` is "fresh" or "suffix" (the
    baselines add "branch", "second" and "refine"). ``parents`` (the glossary's: failed chains
    reset into, never trained) and ``locates`` align: parent j was localized to ``locates[j]``
    (its suffix group, if any, has id ``suffix_group_of[j]``, else -1). ``generated`` lists every
    chain sampled, trained or not. The baselines' buffers have no parents; their fields are the
    last three below.
    """

    chains: list[Chain[S]]
    group: NDArray[np.int64]
    role: list[str]
    parents: list[Chain[S]] = field(default_factory=list)
    locates: list[LocateResult] = field(default_factory=list)
    suffix_group_of: list[int] = field(default_factory=list)
    generated: list[Chain[S]] = field(default_factory=list)
    stats: BufferStats = field(default_factory=BufferStats)
    speculative: list[Chain[S]] = field(default_factory=list)
    """``search="rest"`` only (else empty): fresh chains drawn in the parent search after the
    buffer was already complete. Drawing them in one round saves rounds of generation; the
    method as specified (one attempt at a time) would never have drawn them, so they are in
    neither ``generated`` nor ``stats.fresh_attempts``, and are counted apart."""
    source: list[int] = field(default_factory=list)
    """Baselines only (else empty): ``source[i]`` is the index in ``chains`` of the chain that
    chain i was derived from (a tree branch's first chain, SCoRe's first attempt), -1 for a chain
    drawn from the problem (and for Critique-GRPO's refinements, trained as answers to it)."""
    offpolicy: list[bool] = field(default_factory=list)
    """Baselines only (else empty): chains whose tokens were sampled under another context
    (Critique-GRPO's refinements, trained as answers to the bare problem)."""
    branch_points: list[LocateResult] = field(default_factory=list)
    """Tree baselines only (else empty): ``branch_points[m]`` is where the first chain
    ``chains[m]`` was cut, as a thought index with its fallback flag. First chains are trained:
    they are not parents, but their branch points are reported like reset steps
    (``localized``)."""

    @property
    def rewards(self) -> NDArray[np.float64]:
        """Rewards of the trained chains, shape [N]."""
        return np.array([c.reward for c in self.chains], dtype=np.float64)

    def localized(self) -> list[tuple[Chain[S], LocateResult]]:
        """Every chain whose thought was picked, with the pick: each parent with its reset step,
        then each tree first chain with its branch point. The ``reset/*`` metrics
        (``buffer_metrics``) and the ``resets`` of ``rollouts.jsonl`` report these pairs, so for
        the tree baselines those serialized names count branch points."""
        return (list(zip(self.parents, self.locates, strict=True))
                + [(self.chains[m], bp) for m, bp in enumerate(self.branch_points)])

    def groups(self, role: str) -> list[int]:
        """Distinct group ids with the given role, in order of appearance."""
        seen: dict[int, None] = {}
        for g, r in zip(self.group.tolist(), self.role, strict=True):
            if r == role:
                seen.setdefault(int(g), None)
        return list(seen)


@dataclass(frozen=True)
class Extend(Generic[S]):
    """A request from a prompt's builder: n continuations of ``prefix`` drawn with ``rng``."""

    prefix: tuple[S, ...]
    n: int
    rng: Generator


@dataclass(frozen=True)
class Locate(Generic[S]):
    """A request from a prompt's builder: localize ``parent`` with ``rng``."""

    parent: Chain[S]
    rng: Generator


@runtime_checkable
class BatchSampler(Protocol[S, Pol]):
    """A sampler that can serve many ``extend`` requests in one call (e.g. one batched generate).

    ``extend_many(policy, [(prefix, n, rng), ...])`` returns one list of n chains per request,
    under the same contract as ``Sampler.extend``. ``build_buffers`` uses it to run all prompts
    of a step in lock-step; a plain ``Sampler`` is served one request at a time.
    """

    def extend_many(
        self, policy: Pol, requests: Sequence[tuple[tuple[S, ...], int, Generator]]
    ) -> list[list[Chain[S]]]: ...


@runtime_checkable
class BatchLocalizer(Protocol[S, Pol]):
    """A localizer that can localize many parents in one call (e.g. one batched generate)."""

    def locate_many(
        self, policy: Pol, requests: Sequence[tuple[Chain[S], Generator]]
    ) -> list[LocateResult]: ...


def _fill(
    has_localizer: bool, root: S, split: Split, rngs: Rngs, success: float, search: str = "sequential"
) -> Generator_[Extend[S] | Locate[S], Any, Buffer[S]]:
    """One prompt's buffer as a coroutine: it yields sampling and localization requests and
    receives their answers, so a driver can serve many prompts in lock-step."""
    root_prefix: tuple[S, ...] = (root,)
    stats = BufferStats()
    generated: list[Chain[S]] = []
    speculative: list[Chain[S]] = []

    def one_group(chains: list[Chain[S]]) -> Buffer[S]:
        return Buffer(
            chains=chains,
            group=np.zeros(len(chains), dtype=np.int64),
            role=["fresh"] * len(chains),
            generated=generated,
            stats=stats,
            speculative=speculative,
        )

    def fresh(n: int) -> Generator_[Extend[S], Any, list[Chain[S]]]:
        if n <= 0:
            return []
        out: list[Chain[S]] = yield Extend(root_prefix, n, rngs.fresh)
        generated.extend(out)
        stats.fresh_attempts += len(out)
        return out

    if not has_localizer or not split.resets:
        return one_group((yield from fresh(split.budget)))

    # -- search for parents, filling G1 on the way --------------------------------------------
    attempts: list[Chain[S]] = []
    parents: list[Chain[S]] = []
    g1: list[Chain[S]] = []
    while len(attempts) < split.max_fresh:
        missing = (split.parents - len(parents)) + max(split.fresh - len(g1), 0)
        if missing <= 0:
            break
        n = min(missing, split.max_fresh - len(attempts))
        if search == "rest" and attempts:  # later rounds: every attempt still allowed, at once
            n = split.max_fresh - len(attempts)
        drawn: list[Chain[S]] = yield Extend(root_prefix, n, rngs.fresh)
        for c in drawn:
            if len(parents) >= split.parents and len(g1) >= split.fresh:
                speculative.append(c)  # drawn after the buffer was complete: never needed
                continue
            generated.append(c)
            stats.fresh_attempts += 1
            attempts.append(c)
            if c.reward < success and len(parents) < split.parents:
                parents.append(c)
            elif len(g1) < split.fresh:
                g1.append(c)
            else:
                stats.discarded += 1

    if len(parents) < split.parents:
        stats.no_failure = True
        stats.discarded = max(len(attempts) - split.budget, 0)
        group = attempts[: split.budget]
        top = split.budget - len(group)
        stats.topped_up += max(top, 0)
        return one_group(group + (yield from fresh(top)))

    # -- localize each parent and draw its suffix group ---------------------------------------
    chains: list[Chain[S]] = []
    group_ids: list[int] = []
    roles: list[str] = []
    locates: list[LocateResult] = []
    suffix_group_of: list[int] = []
    next_group = 1  # group 0 is G1
    extra_fresh = 0
    for parent in parents:
        loc: LocateResult = yield Locate(parent, rngs.localize)
        locates.append(loc)
        stats.locate_fallbacks += int(loc.fell_back)
        if loc.step is None:
            stats.skipped_resets += 1
            suffix_group_of.append(-1)
            extra_fresh += split.suffix
            continue
        if not 1 <= loc.step <= parent.n_thoughts:
            raise ValueError(f"localizer returned step {loc.step} outside 1..{parent.n_thoughts}")
        suffixes: list[Chain[S]] = yield Extend(parent.states[: loc.step], split.suffix, rngs.suffix)
        generated.extend(suffixes)
        chains.extend(suffixes)
        group_ids.extend([next_group] * len(suffixes))
        roles.extend(["suffix"] * len(suffixes))
        suffix_group_of.append(next_group)
        next_group += 1

    top = split.fresh + extra_fresh - len(g1)
    if top > 0:
        stats.topped_up += top
        g1 = g1 + (yield from fresh(top))
    return Buffer(
        chains=g1 + chains,
        group=np.array([0] * len(g1) + group_ids, dtype=np.int64),
        role=["fresh"] * len(g1) + roles,
        parents=parents,
        locates=locates,
        suffix_group_of=suffix_group_of,
        generated=generated,
        stats=stats,
        speculative=speculative,
    )


def _serve_extends(
    sampler: Sampler[S, Pol], policy: Pol, reqs: list[Extend[S]]
) -> list[list[Chain[S]]]:
    if isinstance(sampler, BatchSampler) and len(reqs) > 1:
        outs = sampler.extend_many(policy, [(r.prefix, r.n, r.rng) for r in reqs])
        if len(outs) != len(reqs):
            raise RuntimeError(f"extend_many answered {len(outs)} requests, asked {len(reqs)}")
    else:
        outs = [sampler.extend(policy, r.prefix, r.n, rng=r.rng) for r in reqs]
    for r, out in zip(reqs, outs, strict=True):
        if len(out) != r.n:
            raise RuntimeError(f"sampler returned {len(out)} chains, asked for {r.n}")
    return outs


def _serve_locates(
    localizer: Localizer[S, Pol], policy: Pol, reqs: list[Locate[S]]
) -> list[LocateResult]:
    if isinstance(localizer, BatchLocalizer) and len(reqs) > 1:
        outs = localizer.locate_many(policy, [(r.parent, r.rng) for r in reqs])
        if len(outs) != len(reqs):
            raise RuntimeError(f"locate_many answered {len(outs)} requests, asked {len(reqs)}")
        return outs
    return [localizer.locate(policy, r.parent, rng=r.rng) for r in reqs]


def build_buffers(
    sampler: Sampler[S, Pol],
    localizer: Localizer[S, Pol] | None,
    policy: Pol,
    roots: Sequence[S],
    *,
    split: Split,
    rngs: Sequence[Rngs],
    success: float = 1.0,
    builder: str = "reset",
    search: str = "sequential",
) -> list[Buffer[S]]:
    """``build_buffer`` for many prompts at once, in lock-step (one buffer per root).

    Every round collects the pending request of each prompt and serves all sampling requests in
    one ``extend_many`` call (and all localizations in one ``locate_many`` call) when the sampler
    (localizer) offers it, one by one otherwise. Each prompt keeps its own random streams, so the
    result equals building the buffers one after the other whenever the sampler's output for a
    request depends only on that request: true for the tabular sampler and for ``LMSampler``,
    whose backend keys every row's random stream by its request's seed and row number (tested).
    ``builder`` (a variant's ``builder``) selects the published baselines' buffers
    (``respo.baselines.builders.fill_baseline``); for "tree" the ``localizer`` argument is the
    ``Cutter``.

    ``search`` (reset splits): ``"sequential"`` asks each round for exactly the missing slots,
    so the search is the paper's one attempt at a time, but a prompt whose chains keep passing
    needs up to ``max_fresh - budget_of_round_1`` rounds of generation; ``"rest"`` asks its
    second round for every attempt still allowed at once (at most two rounds). The chains are
    drawn and used in the same order, so the buffer has the same distribution; the chains the
    second round drew beyond the point where the buffer was complete go to
    ``Buffer.speculative`` (wall-clock savings paid in extra tokens, reported apart).
    """
    if len(roots) != len(rngs):
        raise ValueError(f"{len(roots)} roots but {len(rngs)} random-stream sets")
    if search not in ("sequential", "rest"):
        raise ValueError(f"search must be 'sequential' or 'rest', got {search!r}")
    coros: list[Generator_[Any, Any, Buffer[S]]]
    if builder == "reset":
        coros = [_fill(localizer is not None, r, split, g, success, search)
                 for r, g in zip(roots, rngs, strict=True)]
    else:
        # Imported here: the baselines' package builds on this module (Buffer, Extend).
        from respo.baselines.builders import fill_baseline

        coros = [fill_baseline(builder, r, split, g, success) for r, g in zip(roots, rngs, strict=True)]
    results: list[Buffer[S] | None] = [None] * len(coros)
    pending: dict[int, Any] = {}  # a request, or a list of requests (answered with a list)

    def advance(i: int, answer: Any) -> None:
        try:
            pending[i] = coros[i].send(answer)
        except StopIteration as done:
            results[i] = done.value
            pending.pop(i, None)

    for i in range(len(coros)):
        advance(i, None)
    while pending:
        # Flatten: (prompt, position in its list or -1 for a single request, request).
        flat = [(i, j, r) for i, req in pending.items()
                for j, r in (enumerate(req) if isinstance(req, list) else [(-1, req)])]
        got: dict[tuple[int, int], Any] = {}
        ext = [(i, j, r) for i, j, r in flat if isinstance(r, Extend)]
        if ext:
            outs = _serve_extends(sampler, policy, [r for _, _, r in ext])
            got.update({(i, j): o for (i, j, _), o in zip(ext, outs, strict=True)})
        loc = [(i, j, r) for i, j, r in flat if isinstance(r, Locate)]
        if loc:
            assert localizer is not None  # _fill only asks when it has one
            louts = _serve_locates(localizer, policy, [r for _, _, r in loc])
            got.update({(i, j): o for (i, j, _), o in zip(loc, louts, strict=True)})
        # Any other request (the baselines' cuts, follow-up prompts, re-rooted chains) serves
        # itself: one ``serve`` call per kind, kinds in order of first appearance.
        others = list(dict.fromkeys(type(r) for _, _, r in flat if not isinstance(r, Extend | Locate)))
        for kind in others:
            these = [(i, j, r) for i, j, r in flat if type(r) is kind]
            kouts = kind.serve(sampler, localizer, policy, [r for _, _, r in these])
            got.update({(i, j): o for (i, j, _), o in zip(these, kouts, strict=True)})
        for i, req in list(pending.items()):
            if isinstance(req, list):
                advance(i, [got[(i, j)] for j in range(len(req))])
            else:
                advance(i, got[(i, -1)])
    return [b for b in results if b is not None]


def build_buffer(
    sampler: Sampler[S, Pol],
    localizer: Localizer[S, Pol] | None,
    policy: Pol,
    root: S,
    *,
    split: Split,
    rngs: Rngs,
    success: float = 1.0,
    builder: str = "reset",
    search: str = "sequential",
) -> Buffer[S]:
    """Sample, localize and group one prompt's rollouts (see the module docstring).

    ``root`` is the problem state (``states[0]``). A chain with ``reward < success`` counts as
    failed (the paper: verifier says wrong; for fractional code rewards, not all tests passed).
    """
    return build_buffers(sampler, localizer, policy, [root], split=split, rngs=[rngs],
                         success=success, builder=builder, search=search)[0]


def buffer_metrics(buffers: list[Buffer[Any]]) -> dict[str, float]:
    """Reset-specific metrics over one step's buffers (keys match the trainer's metric names).

    ``buffer/no_failure_frac``, ``reset/fallback_frac`` (per localization), ``reset/skipped``,
    ``reset/position_frac`` (mean of (k - 1) / n over answered resets), ``reset/step_mean``,
    ``g1/reward_mean``, ``g2/reward_mean`` (the suffix-group pass rate: self-correction),
    ``buffer/fresh_attempts_mean``, ``buffer/discarded``. For the tree baselines the ``reset/*``
    keys describe the branch points instead (``Buffer.localized``; names kept so that committed
    runs stay readable).
    """
    nan = float("nan")
    locs = [(lr, c) for b in buffers for c, lr in b.localized()]
    answered = [(lr.step, p.n_thoughts) for lr, p in locs if lr.step is not None]
    r_g1 = [c.reward for b in buffers for c, r in zip(b.chains, b.role, strict=True) if r == "fresh"]
    r_g2 = [c.reward for b in buffers for c, r in zip(b.chains, b.role, strict=True) if r == "suffix"]
    return {
        "buffer/no_failure_frac": float(np.mean([b.stats.no_failure for b in buffers])) if buffers else nan,
        "buffer/fresh_attempts_mean": float(np.mean([b.stats.fresh_attempts for b in buffers])) if buffers else nan,
        "buffer/discarded": float(sum(b.stats.discarded for b in buffers)),
        "reset/count": float(len(answered)),
        "reset/fallback_frac": float(np.mean([lr.fell_back for lr, _ in locs])) if locs else nan,
        "reset/skipped": float(sum(b.stats.skipped_resets for b in buffers)),
        "reset/position_frac": float(np.mean([(k - 1) / n for k, n in answered])) if answered else nan,
        "reset/step_mean": float(np.mean([k for k, _ in answered])) if answered else nan,
        "g1/reward_mean": float(np.mean(r_g1)) if r_g1 else nan,
        "g2/reward_mean": float(np.mean(r_g2)) if r_g2 else nan,
    }
