"""The published baselines against hand computations (issue 7): SPO-Tree's segment advantages on a
known tree, TreeRL's branch points at the most uncertain tokens and its (G + L) / sqrt(L) rewards,
SCoRe's shaped reward and second-attempt prompt, Critique-GRPO's conditioned refinements, mixed
group and shaped off-policy gradient. The tiny model is the random character Llama of the tests."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from llm_fixtures import TOY_PROBLEM, tiny_lm, tiny_sampler, tiny_tokenizer

from respo import baselines, losses
from respo.buffer import Buffer, Rngs, build_buffer
from respo.llm.branching import EntropyCutter, SegmentCutter, cut_prefix, token_uncertainty
from respo.llm.config import TrainConfig
from respo.llm.prompts import CRITIQUE_INSTRUCTION, RETRY_INSTRUCTION, critique_text
from respo.llm.trainer import _collate, chain_segments, trained_start
from respo.llm.types import TokenState
from respo.resets import Chain
from respo.variants import VARIANTS, resolve_objective

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A known two-level tree: first chains 0 and 1; branches 2, 3, 4 of chain 0 and 5, 6, 7 of chain 1.
R = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
SRC = [-1, -1, 0, 0, 0, 1, 1, 1]
# By hand: V(node 0) = mean(1, 1, 1, 0) = 0.75, V(node 1) = mean(0, 0, 0, 1) = 0.25, V(root) = 0.5.


def test_every_baseline_is_a_row_with_eight_trained_rollouts_and_listed_deviations():
    for name in ("spo-tree", "treerl", "score", "critique-grpo"):
        v = VARIANTS[name]
        assert v.baseline and v.split.budget == 8 and v.deviations, name
    assert VARIANTS["spo-tree"].split.fresh == VARIANTS["treerl"].split.fresh == 2  # 2 x (1 + 3)
    # The matched pairing changes a baseline's loss, never its credit assignment.
    assert resolve_objective(VARIANTS["treerl"], "matched").advantage == "treerl"
    assert resolve_objective(VARIANTS["srpo"], "matched").advantage == "zscore"


def test_spo_tree_segment_advantages_on_a_known_tree():
    node, leaf = baselines.spo_tree_advantages(R, SRC)
    np.testing.assert_allclose(node, [0.25, -0.25, 0.25, 0.25, 0.25, -0.25, -0.25, -0.25])
    np.testing.assert_allclose(leaf, [0.25, -0.25, 0.25, 0.25, -0.75, -0.25, -0.25, 0.75])
    # Each level's advantages sum to zero over its children (V(parent) is their mean).
    assert abs(node[[0, 1]].sum()) < 1e-12 and abs(leaf[[0, 2, 3, 4]].sum()) < 1e-12


def test_treerl_global_plus_local_over_sqrt_leaves_on_a_known_tree():
    node, leaf = baselines.treerl_advantages(R, SRC)
    # Shared node 0: G = L = 0.75 - 0.5 -> (0.25 + 0.25) / sqrt(4) = 0.25.
    np.testing.assert_allclose(node[[0, 2, 3, 4]], 0.25)
    np.testing.assert_allclose(node[[1, 5, 6, 7]], -0.25)
    # Leaf 4 (r = 0 under node 0): G = 0 - 0.5, L = 0 - 0.75 -> -1.25; leaf 7: 0.5 + 0.75.
    assert leaf[4] == pytest.approx(-1.25) and leaf[7] == pytest.approx(1.25)
    assert leaf[0] == pytest.approx(0.75)


def test_score_shaped_reward_by_hand():
    # Firsts 0..3 with r1 = (0, 1, 0, 1); second attempts 4..7 (of 0..3) with r2 = (1, 1, 0, 0).
    r = [0, 1, 0, 1, 1, 1, 0, 0]
    src = [-1, -1, -1, -1, 0, 1, 2, 3]
    adv = baselines.score_advantages(r, src, alpha=10.0)
    # Shaped r2 + 10 (r2 - r1) = (11, 1, 0, -10), mean 0.5; r1 has mean 0.5.
    np.testing.assert_allclose(adv, [-0.5, 0.5, -0.5, 0.5, 10.5, 0.5, -0.5, -10.5])
    # alpha = 0: plain per-attempt baselines.
    np.testing.assert_allclose(baselines.score_advantages(r, src, alpha=0.0)[4:], [0.5, 0.5, -0.5, -0.5])


def test_critique_advantage_is_mean_centred_over_the_mixed_group():
    r = [1, 0, 0, 1, 0, 0, 0, 1]
    np.testing.assert_allclose(baselines.critique_advantages(r, [-1] * 7 + [1]), np.array(r) - 3 / 8)


def test_source_links_are_validated():
    with pytest.raises(ValueError, match="source"):
        baselines.spo_tree_advantages([1, 0, 1], [-1, 2, 0])  # 1 -> 2, which is itself derived


# -- tokens: where each advantage lands ------------------------------------------------------------


def _tok_chain(ids: list[int], bounds: list[int], reward: float, prompt: int, prefix_len: int = 0) -> Chain:
    full = np.asarray(ids, dtype=np.int64)
    states = tuple(TokenState(full[:b], prompt) for b in [prompt, *bounds])
    return Chain(states, reward, prefix_len)


def _tree_buffer() -> Buffer:
    """First chains of 8 tokens (prompt 2), cut at token 5 (inside thought 2), and their branches."""
    p = 2
    firsts = [_tok_chain([9, 9, 11, 12, 13, 14, 15, 16], [4, 6, 8], R[m], p) for m in range(2)]
    prefix = cut_prefix(firsts[0], 5)  # thought 1 (ids[:4]) and the partial thought ids[:5]
    assert [len(s.ids) for s in prefix] == [2, 4, 5]
    chains = list(firsts)
    for m in range(2):
        for j in range(3):
            tail = [20 + j, 21, 22]
            chains.append(Chain(prefix + (TokenState(np.asarray(list(prefix[-1].ids) + tail), p),),
                                R[2 + 3 * m + j], prefix_len=len(prefix) - 1))
    return Buffer(chains=chains, group=np.zeros(8, dtype=np.int64), role=["fresh"] * 2 + ["branch"] * 6,
                  source=SRC, offpolicy=[False] * 8)


def test_tree_advantages_on_tokens():
    buf = _tree_buffer()
    cfg = TrainConfig(variant="spo-tree")
    spo = chain_segments(buf, "spo_tree", cfg)
    # First chain 0: shared segment = tokens 2..4 with A(node) 0.25, then its leaf (0.25) from 5.
    assert spo[0] == [(2, 0.25), (5, 0.25)]
    assert spo[1] == [(2, -0.25), (5, -0.25)]
    # A branch trains only its own tokens, from the branch token on: SPO trains a segment once.
    assert spo[4] == [(5, -0.75)] and trained_start(buf.chains[4]) == 5
    tree = chain_segments(buf, "treerl", cfg)
    # TreeRL trains every leaf path from the prompt: the shared tokens once per leaf.
    assert tree[4] == [(2, 0.25), (5, -1.25)]
    assert tree[7] == [(2, -0.25), (5, 1.25)]
    m = _collate(buf.chains, tree, 0, torch.device("cpu"))
    # Target t predicts token t + 1; k0 = 1. Row 4: tokens 2..4 -> 0.25, tokens 5..7 -> -1.25.
    assert m.first == 1 and m.adv.shape == m.mask.shape
    row = m.adv[4][m.mask[4]].tolist()
    assert row == pytest.approx([0.25] * 3 + [-1.25] * 3)
    m_spo = _collate(buf.chains, spo, 0, torch.device("cpu"))
    assert m_spo.mask[4].sum() == 3 and m_spo.mask[0].sum() == 6


def test_spo_drops_zero_advantage_segments_from_the_loss():
    buf = _tree_buffer()
    # Subtree 0 all correct, subtree 1 all wrong: every leaf advantage is 0, nodes are +-0.5.
    for i in range(8):
        c = buf.chains[i]
        buf.chains[i] = Chain(c.states, 1.0 if i in (0, 2, 3, 4) else 0.0, c.prefix_len)
    spo = chain_segments(buf, "spo_tree", TrainConfig(variant="spo-tree"))
    assert spo[0] == [(2, 0.5), (5, None)] and spo[4] == [(5, None)]
    m = _collate(buf.chains, spo, 0, torch.device("cpu"))
    assert m.mask[0].sum() == 3 and m.mask[4].sum() == 0  # only the shared segment is trained
    assert m.adv[0][m.mask[0]].tolist() == [0.5] * 3


def test_per_token_advantage_gives_the_hand_gradient():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.125]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -2.0]], dtype=torch.float64)
    mask = torch.ones_like(adv, dtype=torch.bool)
    loss, _ = losses.reinforce_loss(logp, logp.detach(), adv, mask, agg="token-mean", clip_eps=0.2, clip_c=None)
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[-1 / 3, -1 / 3, 2 / 3]])


# -- branch points ---------------------------------------------------------------------------------


def test_segment_cutter_cuts_after_a_fixed_token_count_and_falls_back_on_short_chains():
    c = _tok_chain([9, 9, 11, 12, 13, 14, 15, 16], [4, 6, 8], 0.0, 2)
    cut = SegmentCutter(3).cut(None, c, rng=np.random.default_rng(0))
    assert cut.token == 5 and not cut.fell_back and len(cut.prefix[-1].ids) == 5
    assert cut.thought == 2  # token 5 lies in thought 2 (ids 4..5), re-sampled from inside
    at_boundary = SegmentCutter(2).cut(None, c, rng=np.random.default_rng(0))
    assert at_boundary.token == 4 and at_boundary.thought == 2 and len(at_boundary.prefix) == 2
    short = SegmentCutter(6).cut(None, c, rng=np.random.default_rng(0))  # 6 response tokens in all
    assert short.fell_back and short.prefix == c.states[:1]


def test_treerl_branches_at_the_most_uncertain_token_of_the_tiny_model():
    sampler, root = tiny_sampler(max_new_tokens=20)
    model = sampler.backend.model
    chain = sampler.extend(None, (root,), 1, rng=np.random.default_rng(3))[0]
    ids = chain.states[-1].ids
    p0 = root.prompt_len
    # By hand: -log p of every response token, one prefix at a time.
    nll = []
    with torch.no_grad():
        for t in range(p0, len(ids)):
            logits = model(input_ids=torch.tensor(ids[:t][None])).logits[0, -1].float()
            nll.append(-torch.log_softmax(logits, -1)[ids[t]].item())
    want = p0 + int(np.argmax(nll[:-1]))  # the last token is never a branch point
    cut = EntropyCutter(model).cut(None, chain, rng=np.random.default_rng(0))
    assert cut.token == want and not cut.fell_back
    np.testing.assert_allclose(token_uncertainty(model, ids)[p0 - 1:], nll, rtol=1e-4, atol=1e-5)
    # The prefix keeps every token before the branch point; branches re-sample the rest.
    assert np.array_equal(cut.prefix[-1].ids, ids[:want])
    ent = EntropyCutter(model, measure="entropy").cut(None, chain, rng=np.random.default_rng(0))
    u = token_uncertainty(model, ids, measure="entropy")[p0 - 1: len(ids) - 2]
    assert ent.token == p0 + int(np.argmax(u))


def test_tree_buffer_on_the_tiny_model_shares_the_prefix_token_exactly():
    sampler, root = tiny_sampler(max_new_tokens=20)
    v = VARIANTS["treerl"]
    buf = build_buffer(sampler, EntropyCutter(sampler.backend.model), None, root, split=v.split,
                       rngs=Rngs.keyed(0, 0, 0), builder="tree")
    assert len(buf.chains) == 8 and buf.source == [-1, -1, 0, 0, 0, 1, 1, 1]
    # A tree never resets: no parents; its first chains are trained, cut at their branch points.
    assert buf.parents == [] and buf.locates == [] and len(buf.branch_points) == 2
    assert [c for c, _ in buf.localized()] == buf.chains[:2]
    for i in range(2, 8):
        first = buf.chains[buf.source[i]].states[-1].ids
        step = buf.branch_points[buf.source[i]].step
        shared = buf.chains[i].states[buf.chains[i].prefix_len].ids
        partial = len(shared) != len(first) and not any(
            len(st.ids) == len(shared) for st in buf.chains[buf.source[i]].states)
        # The recorded step is the thought the branch re-samples (1..n_thoughts of the first chain).
        assert 1 <= step <= buf.chains[buf.source[i]].n_thoughts
        assert step == buf.chains[i].prefix_len + (0 if partial else 1)
        assert np.array_equal(shared, first[: len(shared)])  # the branch continues the first chain


# -- SCoRe and Critique-GRPO: conditioned follow-ups -----------------------------------------------


def test_score_second_attempt_is_conditioned_on_the_first():
    sampler, root = tiny_sampler(max_new_tokens=16)
    v = VARIANTS["score"]
    buf = build_buffer(sampler, None, None, root, split=v.split, rngs=Rngs.keyed(0, 0, 0),
                       builder="two_attempt")
    assert buf.role == ["fresh"] * 4 + ["second"] * 4 and buf.source == [-1] * 4 + [0, 1, 2, 3]
    tok = sampler.tokenizer
    for i in range(4, 8):
        first, second = buf.chains[buf.source[i]], buf.chains[i]
        ctx = second.states[0]
        # The second attempt's prompt shows the first attempt and the instruction; only the new
        # attempt is trained.
        assert np.array_equal(ctx.ids[: len(root.ids)], root.ids)
        text = tok.decode(ctx.ids)
        shown = sampler.fmt.decode(first.states[-1].response_ids).strip()  # as the sampler renders it
        assert RETRY_INSTRUCTION in text and shown in sampler.fmt.decode(ctx.ids)
        assert trained_start(second) == len(ctx.ids) and sampler.problem_of(ctx) is TOY_PROBLEM


def test_critique_refinements_are_conditioned_selected_and_trained_as_answers_to_the_bare_problem():
    sampler, root = tiny_sampler(max_new_tokens=16)
    v = VARIANTS["critique-grpo"]
    buf = build_buffer(sampler, None, None, root, split=v.split, rngs=Rngs.keyed(0, 0, 0),
                       builder="critique")
    assert len(buf.chains) == 8 and buf.role == ["fresh"] * 7 + ["refine"]
    assert buf.offpolicy == [False] * 7 + [True]
    responses, refinements = buf.generated[:8], buf.generated[8:]
    assert len(refinements) == 8  # every response is critiqued and refined once
    assert buf.chains[:7] == responses[1:]  # the kept refinement takes the first response's slot
    for resp, ref in zip(responses, refinements, strict=True):
        shown = sampler.tokenizer.decode(ref.states[0].ids)  # the refinement's own context
        assert critique_text(TOY_PROBLEM.answer, correct=resp.reward >= 1.0) in shown
        assert CRITIQUE_INSTRUCTION in shown
    # Kept: the first correct refinement, else the first best-scoring one.
    rewards = [c.reward for c in refinements]
    want = next((i for i, r in enumerate(rewards) if r >= 1.0), int(np.argmax(rewards)))
    kept = refinements[want]
    ref = buf.chains[-1]  # as trained: the same response tokens after the bare prompt
    assert np.array_equal(ref.states[0].ids, root.ids)
    assert np.array_equal(ref.states[-1].response_ids, kept.states[-1].response_ids)
    assert ref.reward == kept.reward and trained_start(ref) == len(root.ids)


def test_critique_keeps_a_correct_refinement_over_earlier_wrong_ones():
    from llm_train_fakes import TokenCoinSampler

    class Sampler(TokenCoinSampler):
        def extend(self, policy, prefix, n, *, rng):
            out = super().extend(policy, prefix, n, rng=rng)
            if prefix[0].ids[-1] == 4:  # a critique prompt: refinements right from the third on
                self.seen += 1
                return [Chain(c.states, float(self.seen >= 3), c.prefix_len, c.info) for c in out]
            return out

    s = Sampler(p_success=0.0)
    s.seen = 0
    root = s.root(TOY_PROBLEM)
    buf = build_buffer(s, None, None, root, split=VARIANTS["critique-grpo"].split,
                       rngs=Rngs.keyed(0, 0, 0), builder="critique")
    assert [c.reward for c in buf.generated[8:]] == [0.0, 0.0] + [1.0] * 6
    assert buf.chains[-1].reward == 1.0
    assert np.array_equal(buf.chains[-1].states[-1].ids[len(root.ids):],
                          buf.generated[10].states[-1].ids[len(buf.generated[10].states[0].ids):])


def test_critique_loss_shapes_only_the_refinement_rows():
    p = torch.tensor([[0.5, 0.05], [0.5, 0.05]], dtype=torch.float64)
    logp = torch.log(p).requires_grad_(True)
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    mask = torch.ones_like(p, dtype=torch.bool)
    off = torch.tensor([False, True])
    gamma = 0.1
    loss, st = losses.critique_loss(logp, logp.detach(), adv, mask, agg="token-mean", clip_eps=0.2,
                                    clip_c=3.0, offpolicy=off, gamma=gamma)
    loss.backward()
    g = logp.grad.numpy() * 4  # token-mean over 4 tokens
    # On-policy row at ratio 1: d(-A r)/dlogp = -A. Refinement: d(-A p/(p+g))/dlogp = -A g p/(p+g)^2.
    np.testing.assert_allclose(g[0], [-1.0, -1.0])
    want = [-gamma * x / (x + gamma) ** 2 for x in (0.5, 0.05)]
    np.testing.assert_allclose(g[1], want)
    assert want[1] < want[0]  # the unlikely token gets the larger push
    assert st["offpolicy_token_frac"].item() == pytest.approx(0.5)


def test_baselines_train_end_to_end_with_the_tiny_model(tmp_path):
    from llm_train_fakes import fake_parts

    from respo.llm.trainer import train

    for name in ("spo-tree", "treerl", "score", "critique-grpo"):
        cfg = TrainConfig(variant=name, steps=1, prompts_per_step=2, minibatch_prompts=1, micro_batch_chains=4)
        parts = fake_parts(copy.deepcopy(tiny_lm(0)), cfg.variant_row.localizer, p_success=0.4)
        row = next(iter(train(cfg, parts, run_dir=tmp_path / name)))
        assert row["tokens/trained_chains"] == 16 and math.isfinite(row["loss/loss"])
        if name in ("score", "critique-grpo"):
            assert row["derived/count"] > 0


def test_treerl_never_branches_where_the_response_already_names_its_answer():
    tokenizer = tiny_tokenizer()
    model = copy.deepcopy(tiny_lm(0))
    prompt = tokenizer("Q: 2+3\n")["input_ids"]
    text = "first 2+3\nso the answer is 5\n"
    resp = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = np.asarray(prompt + resp, dtype=np.int64)
    chain = Chain((TokenState(ids[: len(prompt)], len(prompt)), TokenState(ids, len(prompt))), 0.0)
    stop = len(prompt) + text.index("answer") + len("answer") - 1  # the token completing the word
    cutter = EntropyCutter(model, tokenizer=tokenizer)
    cut = cutter.cut(None, chain, rng=np.random.default_rng(0))
    u = token_uncertainty(model, ids)
    assert cut.token == len(prompt) + int(np.argmax(u[len(prompt) - 1: stop - 1]))
    assert cut.token < stop
    free = EntropyCutter(model).cut(None, chain, rng=np.random.default_rng(0))  # no tokenizer: no rule
    assert free.token == len(prompt) + int(np.argmax(u[len(prompt) - 1: len(ids) - 2]))


def test_spo_probability_mask_removes_confident_tokens_from_the_loss(tmp_path):
    import dataclasses

    from llm_train_fakes import fake_parts

    from respo.llm.config import BaselineConfig
    from respo.llm.trainer import train

    rows = {}
    for thr in (0.0, 1e-9):  # off, and a mask that every token's probability exceeds
        cfg = TrainConfig(variant="spo-tree", steps=1, prompts_per_step=2, minibatch_prompts=1,
                          micro_batch_chains=4, baseline=BaselineConfig(segment_tokens=3, spo_prob_mask=thr))
        parts = fake_parts(copy.deepcopy(tiny_lm(0)), "segment", p_success=0.5)
        rows[thr] = next(iter(train(cfg, parts)))
    assert rows[0.0]["tokens/trained"] > 0 and rows[1e-9]["tokens/trained"] == 0
    assert rows[1e-9]["loss/loss"] == 0.0 and math.isfinite(rows[0.0]["loss/loss"])
    assert dataclasses.asdict(BaselineConfig())["spo_prob_mask"] == 0.9


def test_bare_prompts_get_a_short_follow_up_the_character_model_can_parse():
    from llm_fixtures import ToyTask

    from respo.llm.generation import HFBackend
    from respo.llm.sampler import LMSampler, SampleConfig

    tok = tiny_tokenizer()
    s = LMSampler(HFBackend(copy.deepcopy(tiny_lm(0)), tok, device="cpu"), tok, ToyTask(),
                  cfg=SampleConfig(max_response_tokens=8, temperature=1.0, top_p=1.0, delimiter="\n",
                                   prompt_variant="bare"))
    root = s.root(TOY_PROBLEM)
    first = s.extend(None, (root,), 1, rng=np.random.default_rng(0))[0]
    shown = s.fmt.decode(first.states[-1].response_ids).rstrip()
    q = f"Q: {TOY_PROBLEM.question}\n"
    retry = tok.decode(s.followup_root(first, "retry").ids)
    assert retry == f"{q}{shown}\n{q}"  # no instruction text: the question again
    crit = tok.decode(s.followup_root(first, "critique").ids)
    verdict = "right" if first.reward >= 1.0 else "wrong"
    assert crit == f"{q}{shown}\n{verdict} {TOY_PROBLEM.answer}\n{q}"


def test_a_branch_inside_the_last_allowed_thought_is_continued_not_refused():
    """A token-level branch point inside thought ``max_thoughts`` (TreeRL's most uncertain token
    of a chain that used every thought): the partial thought is completed by the continuation,
    so the prefix holds ``max_thoughts - 1`` complete thoughts and may go on; the continuation
    stops at the cap. A prefix of ``max_thoughts`` complete thoughts is still refused."""
    from llm_fixtures import tiny_sampler

    from respo.llm.thoughts import split_thoughts

    sampler, root = tiny_sampler(max_thoughts=3, max_thought_tokens=6, max_new_tokens=40)
    d = list(sampler.fmt.delimiter.canonical)
    t1, t2, part = [30, 31] + d, [32] + d, [33]
    states = [root]
    for piece in (t1, t2, part):
        states.append(TokenState(np.concatenate([states[-1].ids, np.asarray(piece, dtype=np.int64)]),
                                 root.prompt_len))
    out = sampler.extend(None, tuple(states), 4, rng=np.random.default_rng(0))
    assert len(out) == 4
    for c in out:
        response = c.states[-1].ids[root.prompt_len:]
        assert len(split_thoughts(response, sampler.fmt.delimiter)) <= 3
    full = states[:3] + [TokenState(np.concatenate([states[2].ids, np.asarray([34] + d)]), root.prompt_len)]
    with pytest.raises(ValueError, match="3 complete thoughts"):
        sampler.extend(None, tuple(full), 1, rng=np.random.default_rng(0))
