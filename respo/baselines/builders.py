"""The published baselines' buffers: tree (SPO-Tree, TreeRL), two-attempt (SCoRe) and critique
(Critique-GRPO), the ``respo.variants`` builders other than "reset".

``fill_baseline(builder, root, split, rngs, success)`` is one prompt's builder as a coroutine, run
by the lock-step driver of ``respo.buffer.build_buffers`` beside the reset builder. It yields
*lists* of requests (one list per round, so a batching sampler serves a round at once): the
seam's own ``respo.buffer.Extend`` (draw continuations of a prefix) and the three requests of
this module, each of which knows how to be served (``serve``):

- ``Cut``: where a tree branches a chain (the run's ``Cutter``, passed as the localizer);
- ``Followup``: the root state of a second-turn prompt that shows a chain
  (``sampler.followup_root``);
- ``Reroot``: a chain's response re-based on the problem's own prompt (``sampler.reroot``).

Vocabulary: these builders never reset into a failed chain, so their buffers have no *parents*
(``respo.resets``' glossary). A derived chain (a branch, a second attempt, a refinement) points
to the chain it came from through ``Buffer.source``; a tree's first chains are trained and their
branch points are kept in ``Buffer.branch_points``. ``split.parents`` is a count whose meaning
depends on the builder (``respo.variants.Split``).
"""

from __future__ import annotations

from collections.abc import Generator as Generator_
from dataclasses import dataclass
from typing import Any, Generic, Protocol, runtime_checkable

import numpy as np
from numpy.random import Generator

from respo.buffer import Buffer, BufferStats, Extend, Rngs
from respo.resets import Chain, LocateResult, Pol, S
from respo.variants import Split


@dataclass(frozen=True)
class CutResult(Generic[S]):
    """Where a tree branches a chain: ``prefix`` (``chain.states[:k]``, possibly ending in a
    state inside a thought) is continued by the branches; ``token`` is the branch position in the
    chain's token ids when the world has tokens; ``fell_back`` when no cut rule applied (the
    prefix is then the bare problem and the branches are fresh chains)."""

    prefix: tuple[S, ...]
    token: int | None = None
    fell_back: bool = False
    reason: str = ""
    step: int | None = None
    """The thought (1-indexed) the branches re-sample from its start or from inside it; None:
    ``len(prefix)`` (the prefix ends at a thought boundary)."""

    @property
    def thought(self) -> int:
        """The branch point as a thought index (1..n_thoughts of the chain)."""
        return self.step if self.step is not None else len(self.prefix)


@runtime_checkable
class Cutter(Protocol[S, Pol]):
    """Picks a tree's branch point in a chain (SPO-Tree: a token count; TreeRL: an entropy peak)."""

    def cut(self, policy: Pol, chain: Chain[S], *, rng: Generator) -> CutResult[S]: ...


@dataclass(frozen=True)
class Cut(Generic[S]):
    """A request from the tree builder: where to branch ``chain`` (a ``Cutter``'s answer)."""

    chain: Chain[S]
    rng: Generator

    @staticmethod
    def serve(sampler: Any, localizer: Any, policy: Any, reqs: list[Cut[Any]]) -> list[CutResult[Any]]:
        """One ``localizer.cut`` per request (the run's localizer is its ``Cutter``)."""
        if not isinstance(localizer, Cutter):
            raise TypeError(f"a tree variant needs a Cutter (with .cut), got {type(localizer).__name__}")
        return [localizer.cut(policy, r.chain, rng=r.rng) for r in reqs]


def _sampler_method(sampler: Any, method: str) -> Any:
    fn = getattr(sampler, method, None)
    if fn is None:
        raise TypeError(f"{type(sampler).__name__} has no {method}(): the SCoRe and Critique-GRPO "
                        "variants need a sampler that renders follow-up prompts (LMSampler)")
    return fn


@dataclass(frozen=True)
class Followup(Generic[S]):
    """A request from the SCoRe / Critique-GRPO builders: the root state of a follow-up prompt that
    shows ``chain`` (``kind`` "retry": a self-correction instruction; "critique": a critique of it
    and a refinement instruction), from ``sampler.followup_root(chain, kind)``."""

    chain: Chain[S]
    kind: str

    @staticmethod
    def serve(sampler: Any, localizer: Any, policy: Any, reqs: list[Followup[Any]]) -> list[Any]:
        """One ``sampler.followup_root`` per request."""
        fn = _sampler_method(sampler, "followup_root")
        return [fn(r.chain, r.kind) for r in reqs]


@dataclass(frozen=True)
class Reroot(Generic[S]):
    """A request from the Critique-GRPO builder: ``chain``'s response re-based on the problem's
    own prompt ``root`` (``sampler.reroot(chain, root)``), i.e. trained as an answer to it."""

    chain: Chain[S]
    root: S

    @staticmethod
    def serve(sampler: Any, localizer: Any, policy: Any, reqs: list[Reroot[Any]]) -> list[Chain[Any]]:
        """One ``sampler.reroot`` per request."""
        fn = _sampler_method(sampler, "reroot")
        return [fn(r.chain, r.root) for r in reqs]


def fill_baseline(
    builder: str, root: S, split: Split, rngs: Rngs, success: float
) -> Generator_[list[Any], Any, Buffer[S]]:
    """One prompt's baseline buffer as a coroutine (see the module docstring for the requests).

    ``tree``: ``split.fresh`` first chains; each is cut once (``Cut``) and continued
    ``split.suffix`` times from the cut (SPO-Tree, TreeRL: 2 x (1 + 3) = 8 leaves). Every leaf is
    trained, the first chains included; ``source`` links a branch to its first chain and
    ``branch_points[m]`` says where first chain m was cut.
    ``two_attempt`` (SCoRe): ``split.fresh`` first attempts; the first ``split.parents`` of them
    each get one second attempt from a follow-up prompt that shows it ("retry").
    ``critique`` (Critique-GRPO): ``split.fresh + split.parents`` responses, each critiqued and
    refined once (``Followup`` "critique"); ``split.parents`` refinements are kept, the correct
    ones first (then the best-scoring), re-based on the bare problem prompt (``Reroot``), marked
    off-policy and put in place of the first ``split.parents`` responses (the authors' code
    overwrites slot 0): 7 responses + 1 refinement trained, 16 chains generated.
    """
    stats = BufferStats()
    generated: list[Chain[S]] = []
    n_first = split.fresh + (split.parents if builder == "critique" else 0)
    firsts: list[Chain[S]] = (yield [Extend((root,), n_first, rngs.fresh)])[0]
    generated.extend(firsts)
    stats.fresh_attempts += len(firsts)
    chains: list[Chain[S]] = list(firsts)
    role = ["fresh"] * len(firsts)
    source = [-1] * len(firsts)
    branch_points: list[LocateResult] = []
    if builder == "tree":
        cuts: list[CutResult[S]] = yield [Cut(c, rngs.localize) for c in firsts]
        kids: list[list[Chain[S]]] = yield [Extend(cut.prefix, split.suffix, rngs.suffix) for cut in cuts]
        for m, (cut, ks) in enumerate(zip(cuts, kids, strict=True)):
            branch_points.append(LocateResult(cut.thought, cut.fell_back, cut.reason))
            stats.locate_fallbacks += int(cut.fell_back)
            generated.extend(ks)
            chains.extend(ks)
            role += ["branch"] * len(ks)
            source += [m] * len(ks)
    elif builder == "two_attempt":
        picked = list(range(min(split.parents, len(firsts))))
        roots2: list[S] = yield [Followup(firsts[i], "retry") for i in picked]
        outs: list[list[Chain[S]]] = yield [Extend((r,), 1, rngs.suffix) for r in roots2]
        for i, (c,) in zip(picked, outs, strict=True):
            generated.append(c)
            chains.append(c)
            role.append("second")
            source.append(i)
    elif builder == "critique":
        # Every response is critiqued and refined once; ``split.parents`` refinements are kept
        # (correct ones first, in order, then the best-scoring) and replace the first
        # ``split.parents`` responses, so the group is split.fresh responses + split.parents
        # refinements. ``firsts`` holds split.fresh + split.parents responses here (see above).
        roots2 = yield [Followup(c, "critique") for c in firsts]
        outs = yield [Extend((r,), 1, rngs.suffix) for r in roots2]
        refined = [o[0] for o in outs]
        generated.extend(refined)
        order = sorted(range(len(refined)), key=lambda i: (refined[i].reward < success, -refined[i].reward, i))
        keep = order[: split.parents]
        kept: list[Chain[S]] = yield [Reroot(refined[i], root) for i in keep]
        n_drop = len(keep)
        chains = chains[n_drop:] + kept
        role = role[n_drop:] + ["refine"] * len(kept)
        source = [-1] * len(chains)
    else:
        raise ValueError(f"unknown buffer builder {builder!r}")
    return Buffer(chains=chains, group=np.zeros(len(chains), dtype=np.int64), role=role,
                  generated=generated, stats=stats, source=source,
                  offpolicy=[r == "refine" for r in role],  # refinements: sampled under the critique
                  branch_points=branch_points)
