"""The paper's delta in one table: every method is a row of ``VARIANTS``.

Design rule P1 (docs/design.md): the methods differ in one table.

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

LOCALIZER_KINDS: tuple[str, ...] = ("none", "uniform", "self", "oracle", "segment", "entropy")
BUILDERS: tuple[str, ...] = ("reset", "tree", "two_attempt", "critique")
"""How a variant fills a prompt's buffer: ``reset`` (``respo.buffer``; GRPO when the split has no
parents, RRPO / SRPO / oracle otherwise) and the published baselines' builders
(``respo.baselines.builders``): ``tree`` (SPO-Tree, TreeRL: each first chain is cut once and
branched), ``two_attempt`` (SCoRe: a second attempt conditioned on each first one) and
``critique`` (Critique-GRPO: each response critiqued and refined, the best refinements kept)."""
TREE_CUTS: tuple[str, ...] = ("segment", "entropy")
"""Localizer kinds that cut a chain at a token (trees) rather than pick a thought of a failed one."""
PAIRINGS: tuple[str, ...] = ("paper", "matched")


@dataclass(frozen=True)
class Split:
    """How one prompt's budget of trained rollouts is divided.

    ``fresh``: size of the fresh group G1. ``parents``: failed chains to reset into, each giving
    one suffix group G2 of ``suffix`` chains. ``max_fresh``: at most this many fresh attempts are
    drawn while looking for parents (the paper: 12). ``budget = fresh + parents * suffix``.

    The baselines never reset and reuse the two counts under these (serialized) names:
    ``parents`` is the number of first chains a tree cuts (== ``fresh``), of first attempts SCoRe
    retries, or of refinements Critique-GRPO keeps; ``suffix`` the continuations drawn from each
    (tree branches; 1 otherwise).
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
    builder: str = "reset"
    """How the buffer is filled (``BUILDERS``)."""
    deviations: tuple[str, ...] = ()
    """Where this implementation departs from the method's own paper (listed beside its row)."""

    def __post_init__(self) -> None:
        if self.localizer not in LOCALIZER_KINDS:
            raise ValueError(
                f"variant {self.name!r}: unknown localizer {self.localizer!r}; "
                f"valid: {', '.join(LOCALIZER_KINDS)}"
            )
        if self.builder not in BUILDERS:
            raise ValueError(f"variant {self.name!r}: unknown builder {self.builder!r}; "
                             f"valid: {', '.join(BUILDERS)}")
        if (self.localizer in TREE_CUTS) != (self.builder == "tree"):
            raise ValueError(f"variant {self.name!r}: localizer {self.localizer!r} and builder "
                             f"{self.builder!r} disagree (token cuts go with trees)")
        if self.builder == "reset" and (self.localizer == "none") == self.split.resets:
            raise ValueError(f"variant {self.name!r}: localizer and split disagree on resets")
        if self.builder != "reset" and not self.split.resets:
            raise ValueError(f"variant {self.name!r}: builder {self.builder!r} needs parents > 0")
        if self.builder == "tree" and self.split.fresh != self.split.parents:
            raise ValueError(f"variant {self.name!r}: a tree split cuts each of its first chains "
                             "once (fresh == parents)")
        if self.builder in ("two_attempt", "critique") and (self.split.suffix != 1
                                                            or self.split.parents > self.split.fresh):
            raise ValueError(f"variant {self.name!r}: builder {self.builder!r} draws one follow-up "
                             "each for `parents` <= `fresh` chains (suffix == 1)")

    @property
    def baseline(self) -> bool:
        """Whether this is one of the paper's published baselines (not a reset variant)."""
        return self.builder != "reset"


# "V(parent)" below is SPO's tree notation (the node above a node), quoted; respo's glossary keeps
# "parent" for the failed chain a reset starts from (respo.resets).
SPO_TREE_DEVIATIONS: tuple[str, ...] = (
    "the tree is drawn as 2 full chains cut after a fixed number of response tokens, each cut "
    "continued 3 more times (the chain's own tail is the 4th leaf): the same distribution and "
    "token cost as SPO's branch factors [2, 4], with 8 leaves to match the budget",
    "segments of 600 tokens at paper scale, 12 on the CPU track's character model and 16 on "
    "SmolLM2; a chain that ends inside its first segment is not split (its 3 branches become fresh "
    "chains, counted as fallbacks) where SPO would keep it as an early leaf",
    "kept from SPO: A = V(child) - V(parent) without std, zero-advantage segments dropped, each "
    "segment trained once, probability mask 0.9; not kept: its replay buffer, batch whitening and "
    "KL 1e-4 (no method of this reproduction uses a KL term)",
    "the run's clipped surrogate (eps 0.2 and verl's dual clip 3) with token-mean aggregation",
)
TREERL_DEVIATIONS: tuple[str, ...] = (
    "EPTree with M=2 chains, N=1 branch point per chain, T=3 continuations and one round (8 leaves, "
    "all trained; the authors' compute match) instead of TreeRL's (6, 2, 1, 2) with 16 of 30 leaves "
    "trained",
    "node reward in the paper's form (G + L) / sqrt(|L(s)|) from raw leaf rewards; TreeRL's code "
    "first centres leaf rewards leave-one-out and applies the square root before the difference",
    "branch token = largest -log p of a sampled token (the fork token is re-sampled), excluding the "
    "last token and everything from where the text first says 'answer' or 'conclusion'",
    "the run's clipped surrogate (eps 0.2, dual clip 3), token mean per sequence then mean over "
    "sequences; no KL",
)
SCORE_DEVIATIONS: tuple[str, ...] = (
    "stage II only: no stage-I initialisation (which rewards the second attempt while a strong KL "
    "pins the first to the base model), and no KL term (SCoRe: beta1 0.01)",
    "REINFORCE with a baseline: each attempt's (shaped) reward minus its mean over the same "
    "attempt in the prompt's group; the first attempt is trained on r1 alone, the second on "
    "r2 + 10 (r2 - r1) (SCoRe leaves the per-turn return implicit)",
    "4 first attempts + 4 second attempts (8 trained rollouts per prompt) to match the budget",
    "self-correction instruction in our words; completion prompts repeat the question after it "
    "(the CPU track's character model was never trained to read instructions)",
)
CRITIQUE_DEVIATIONS: tuple[str, ...] = (
    "rule-based critique with the ground truth (right or wrong, and the reference answer), as in "
    "the authors' released script, in our words; no CoT critiques from a stronger model",
    "kept from Critique-GRPO: all 8 responses critiqued and refined, one refinement kept (first "
    "correct, else best) in place of the first response, trained as an answer to the bare "
    "question with f(p) = p / (p + 0.1), no ratio or clip; advantage r - mean over the mixed group",
    "responses with the paper's clipped surrogate (eps 0.2, dual clip 3) and a token mean; the "
    "released script turns clipping off and divides by a constant length; no entropy bonus",
)

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
        # -- the paper's published baselines (respo.baselines: their buffers and credit) --------
        Variant("spo-tree", "segment", Split("2x4-tree", fresh=2, parents=2, suffix=3, max_fresh=2),
                loss="ppo_clip", agg="token-mean", advantage="spo_tree", builder="tree",
                description="SPO-Tree: 2 chains cut after a fixed token count, 3 more branches per "
                            "cut (8 leaves), segment advantage V(node) - V(node above)",
                deviations=SPO_TREE_DEVIATIONS),
        Variant("treerl", "entropy", Split("2x(1+3)", fresh=2, parents=2, suffix=3, max_fresh=2),
                loss="ppo_clip", agg="seq-mean-token-mean", advantage="treerl", builder="tree",
                description="TreeRL (EPTree): 2 chains, each branched 3 times at its highest-entropy "
                            "token (8 leaves), (global + local advantage) / sqrt(leaves)",
                deviations=TREERL_DEVIATIONS),
        Variant("score", "none", Split("4+4", fresh=4, parents=4, suffix=1, max_fresh=4),
                loss="reinforce", agg="seq-mean-token-mean", advantage="score", builder="two_attempt",
                description="SCoRe (stage II): 4 first attempts, one self-correction attempt each, "
                            "REINFORCE with the shaped reward alpha * (r2 - r1)",
                deviations=SCORE_DEVIATIONS),
        Variant("critique-grpo", "none", Split("7+1", fresh=7, parents=1, suffix=1, max_fresh=7),
                loss="critique", agg="token-mean", advantage="critique", builder="critique",
                description="Critique-GRPO: 8 responses each critiqued (right/wrong + reference answer) "
                            "and refined; 7 responses + 1 kept refinement, mixed group, shaped "
                            "off-policy tokens",
                deviations=CRITIQUE_DEVIATIONS),
    )
}
"""The variant table. Loss defaults follow the paper's code (``docs/method.md`` sections 3 and 5)."""


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
        # A baseline's advantage is its credit assignment (tree, shaped reward, mixed group): the
        # matched pairing changes only its loss and aggregation.
        adv = variant.advantage if variant.baseline else matched_advantage
        return Objective(matched_loss, matched_agg, adv, pairing)
    raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
