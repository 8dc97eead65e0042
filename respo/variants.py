"""The paper's delta in one table (P1): every method is a row of ``VARIANTS``.

A variant says *which localizer picks the reset step* (none / uniform / the policy itself /
an oracle), *how the 8-rollout budget is split* (``Split``) and its *default* loss, aggregation and
advantage. The loss is a separate axis: ``resolve_objective(variant, pairing)`` gives the "paper"
pairing (GRPO with verl's clipped token-mean loss, resets with unclipped REINFORCE) or the
"matched" pairing (every method with one loss), and results name the pairing they used.

Only names live here; each world builds its localizer objects from ``Variant.localizer``:
``"uniform"`` is ``respo.resets.UniformLocalizer`` in both worlds, ``"oracle"`` an
``OracleLocalizer`` over a step judge, ``"self"`` the policy itself in the LLM world (prompted or
confidence-based) and a noisy oracle with chosen (beta, gamma) in the simulator's bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCALIZER_KINDS: tuple[str, ...] = ("none", "uniform", "self", "oracle")
PAIRINGS: tuple[str, ...] = ("paper", "matched")


@dataclass(frozen=True)
class Split:
    """How one prompt's budget of trained rollouts is divided.

    ``fresh``: size of the fresh group G1. ``parents``: failed chains to reset into, each giving
    one suffix group G2 of ``suffix`` chains. ``max_fresh``: at most this many fresh attempts are
    drawn while looking for parents (the paper: 12). ``budget = fresh + parents * suffix``.
    """

    name: str
    fresh: int
    parents: int = 0
    suffix: int = 0
    max_fresh: int = 12

    def __post_init__(self) -> None:
        if self.fresh < 0 or self.parents < 0 or self.suffix < 0:
            raise ValueError(f"split {self.name!r}: sizes must be >= 0")
        if self.parents > 0 and self.suffix < 1:
            raise ValueError(f"split {self.name!r}: a reset split needs suffix >= 1")
        if self.budget < 1:
            raise ValueError(f"split {self.name!r}: budget must be >= 1")
        if self.parents > 0 and self.max_fresh < self.parents:
            raise ValueError(
                f"split {self.name!r}: max_fresh={self.max_fresh} < parents={self.parents}"
            )

    @property
    def budget(self) -> int:
        """Trained rollouts per prompt."""
        return self.fresh + self.parents * self.suffix

    @property
    def resets(self) -> bool:
        """Whether this split resets into failed parents at all."""
        return self.parents > 0

    @classmethod
    def all_fresh(cls, n: int = 8) -> Split:
        """GRPO: one group of n fresh chains."""
        return cls(f"{n}", fresh=n)

    @classmethod
    def reset(cls, fresh: int, parents: int, suffix: int, max_fresh: int = 12) -> Split:
        """A reset split, named like the paper: "1x4" (plus 4 fresh), "2x4", "1x8"."""
        return cls(f"{parents}x{suffix}", fresh, parents, suffix, max_fresh)


@dataclass(frozen=True)
class Variant:
    """One method: localizer kind, budget split and default objective (loss, agg, advantage)."""

    name: str
    localizer: str
    split: Split
    loss: str
    agg: str
    advantage: str
    description: str

    def __post_init__(self) -> None:
        if self.localizer not in LOCALIZER_KINDS:
            raise ValueError(
                f"variant {self.name!r}: unknown localizer {self.localizer!r}; "
                f"valid: {', '.join(LOCALIZER_KINDS)}"
            )
        if (self.localizer == "none") == self.split.resets:
            raise ValueError(f"variant {self.name!r}: localizer and split disagree on resets")


_GRPO_OBJ = {"loss": "ppo_clip", "agg": "token-mean", "advantage": "zscore_verl"}
_RESET_OBJ = {"loss": "reinforce", "agg": "seq-mean-token-mean", "advantage": "zscore"}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("grpo", "none", Split.all_fresh(8), **_GRPO_OBJ,
                description="GRPO: 8 fresh chains, one group (verl's clipped token-mean loss)"),
        Variant("rrpo", "uniform", Split.reset(4, 1, 4), **_RESET_OBJ,
                description="Random-Reset PO: 4 fresh + 4 suffixes from a uniform step of a failed parent"),
        Variant("srpo", "self", Split.reset(4, 1, 4), **_RESET_OBJ,
                description="Self-Reset Policy Optimization: the policy localizes its own first error (1x4)"),
        Variant("srpo-2x4", "self", Split.reset(0, 2, 4), **_RESET_OBJ,
                description="SRPO ablation: two failed parents, two suffix groups of 4, no fresh group"),
        Variant("srpo-1x8", "self", Split.reset(0, 1, 8), **_RESET_OBJ,
                description="SRPO ablation: one failed parent, 8 suffixes, no fresh group"),
        Variant("rrpo-2x4", "uniform", Split.reset(0, 2, 4), **_RESET_OBJ,
                description="RRPO ablation: two failed parents, two suffix groups of 4"),
        Variant("rrpo-1x8", "uniform", Split.reset(0, 1, 8), **_RESET_OBJ,
                description="RRPO ablation: one failed parent, 8 suffixes"),
        Variant("oracle", "oracle", Split.reset(4, 1, 4), **_RESET_OBJ,
                description="Oracle reset (1x4): reset at the ground-truth first error (tasks with a step judge)"),
    )
}
"""The variant table. Loss defaults follow the paper's code (``method.md`` sections 3 and 5)."""


def get_variant(name: str) -> Variant:
    """Look up a variant; unknown names list the valid ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class Objective:
    """What a run optimises: loss name, token aggregation, advantage name, and the pairing."""

    loss: str
    agg: str
    advantage: str
    pairing: str


def resolve_objective(
    variant: Variant,
    pairing: str = "paper",
    *,
    matched_loss: str = "reinforce",
    matched_agg: str = "seq-mean-token-mean",
    matched_advantage: str = "zscore",
) -> Objective:
    """The objective a variant trains with under a pairing.

    ``"paper"``: each variant's own default (GRPO clipped token-mean with verl numerics, resets
    unclipped REINFORCE with the paper's numerics): faithful to the paper's code, but a confound.
    ``"matched"``: every variant uses ``matched_*`` (default: the reset methods' objective).
    """
    if pairing == "paper":
        return Objective(variant.loss, variant.agg, variant.advantage, pairing)
    if pairing == "matched":
        return Objective(matched_loss, matched_agg, matched_advantage, pairing)
    raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
