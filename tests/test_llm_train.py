"""The LLM training loop on the tiny random model: every variant, every buffer fallback, NaN stop."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from llm_fixtures import tiny_lm
from llm_train_fakes import FixedLocalizer, TokenCoinSampler, fake_parts, problems

from respo import losses
from respo.jsonl import read_jsonl
from respo.llm.config import TrainConfig, config_from_dict, config_to_dict
from respo.llm.data import load_problems_jsonl, shard, step_indices
from respo.llm.trainer import NonFiniteLossError, _collate, _logp, train
from respo.llm.types import TokenState
from respo.resets import Chain
from respo.variants import VARIANTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _cfg(variant: str, **kw) -> TrainConfig:
    base = dict(variant=variant, steps=2, prompts_per_step=2, minibatch_prompts=1, micro_batch_chains=4)
    base.update(kw)
    return TrainConfig(**base)


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_two_steps_and_changes_parameters(variant):
    cfg = _cfg(variant)
    parts = fake_parts(tiny_lm(0), cfg.variant_row.localizer)
    before = _params(parts.model)
    rows = list(train(cfg, parts))
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        assert math.isfinite(r["loss/loss"]) and math.isfinite(r["loss/grad_norm"])
        assert r["variant"] == variant and r["pairing"] == "paper"
        assert r["tokens/trained_chains"] == 2 * cfg.variant_row.split.budget
        if variant != "treerl":  # TreeRL trains a shared segment once per leaf below it
            assert r["tokens/generated"] >= r["tokens/trained"] > 0
    after = _params(parts.model)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_matched_pairing_gives_every_variant_one_loss():
    for v in ("grpo", "srpo"):
        r = next(iter(train(_cfg(v, steps=1, pairing="matched"), fake_parts(tiny_lm(0), VARIANTS[v].localizer))))
        assert (r["pairing"], r["loss_name"], r["agg"]) == ("matched", "reinforce", "seq-mean-token-mean")


def test_collate_masks_the_copied_prefix_and_padding():
    p = TokenState(np.array([5, 6, 7]), 3)
    s1 = TokenState(np.array([5, 6, 7, 11, 12]), 3)
    s2 = TokenState(np.array([5, 6, 7, 11, 12, 13, 14, 15]), 3)
    fresh = Chain((p, s1), 1.0)
    suffix = Chain((p, s1, s2), 0.0, prefix_len=1)
    m = _collate([fresh, suffix], [[(3, 0.5)], [(5, -0.5)]], pad_id=0, device=torch.device("cpu"))
    assert m.ids.shape == (2, 8)
    # Target k predicts token k+1: fresh trains tokens 3..4 (targets 2..3), suffix tokens 5..7
    # (targets 4..6). Targets before k0 = 2 (the shared prompt) are not computed at all.
    assert m.first == 2
    assert m.mask[0].tolist() == [True, True, False, False, False]
    assert m.mask[1].tolist() == [False, False, True, True, True]
    assert m.attn[0].tolist() == [1] * 5 + [0] * 3
    model = copy.deepcopy(tiny_lm(0))
    full = losses.token_logprobs(model(input_ids=m.ids, attention_mask=m.attn).logits[:, :-1], m.ids[:, 1:])
    for keep in (True, False):
        torch.testing.assert_close(_logp(model, m, 1.0, None, keep), full[:, 2:])
    # Through the model and the loss: the prefix and padding targets get exactly zero gradient.
    logp = _logp(model, m, 1.0, None, True)
    logp.retain_grad()
    loss, _ = losses.reinforce_loss(logp, logp.detach(), m.adv, m.mask, agg="seq-mean-token-mean",
                                    clip_eps=0.2, clip_c=None)
    loss.backward()
    assert (logp.grad[~m.mask] == 0).all() and (logp.grad[m.mask] != 0).all()


def test_no_failure_fallback_is_counted():
    cfg = _cfg("srpo", steps=1)
    parts = fake_parts(tiny_lm(0), "self")
    parts.sampler = TokenCoinSampler(p_success=1.0)
    r = next(iter(train(cfg, parts)))
    assert r["buffer/no_failure_frac"] == 1.0
    assert r["g2/count"] == 0 and r["g1/count"] == 16
    assert r["buffer/fresh_attempts_mean"] == 12 + 0  # searched the full 12, then trained the first 8
    assert math.isnan(r["reset/fallback_frac"])


def test_localizer_fallback_step1_is_counted():
    cfg = _cfg("srpo", steps=1)
    loc = FixedLocalizer(None, mode="step1")
    parts = fake_parts(tiny_lm(0), "self", p_success=0.3, localizer=loc)
    r = next(iter(train(cfg, parts)))
    assert r["reset/fallback_frac"] == 1.0 and r["reset/count"] == 2
    assert r["reset/position_frac"] == 0.0 and r["buffer/locate_fallbacks"] == 2
    assert r["tokens/localization"] == 10


def test_localizer_skip_fallback_trains_fresh_chains_and_is_counted():
    cfg = _cfg("srpo", steps=1)
    parts = fake_parts(tiny_lm(0), "self", p_success=0.3, localizer=FixedLocalizer(None, mode="skip"))
    r = next(iter(train(cfg, parts)))
    assert r["reset/skipped"] == 2 and r["reset/count"] == 0
    assert r["g2/count"] == 0 and r["g1/count"] == 16 and r["buffer/topped_up"] >= 8


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    calls = {"n": 0}
    real = losses.LOSSES["reinforce"]

    def flaky(logp, old_logp, adv, mask, **kw):
        calls["n"] += 1
        loss, st = real(logp, old_logp, adv, mask, **kw)
        return (loss * float("nan") if calls["n"] > 4 else loss), st

    monkeypatch.setitem(losses.LOSSES, "reinforce", flaky)
    cfg = _cfg("srpo", steps=3)
    parts = fake_parts(tiny_lm(0), "self")
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* step 1.*step-000000"):
        for r in train(cfg, parts, run_dir=tmp_path):
            seen.append(r["step"])
            good = {k: v.detach().clone() for k, v in parts.model.state_dict().items()}
    assert seen == [0]
    # The weights were not touched by the bad step, and the checkpoint of step 0 loads with
    # plain transformers and equals them.
    for k, v in parts.model.state_dict().items():
        assert torch.equal(v, good[k]), k
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoints" / "step-000000" / "model"))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, good[k]), k
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0]


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid: grpo, rrpo, srpo"):
        TrainConfig(variant="spro")
    with pytest.raises(ValueError, match="valid: paper, matched"):
        TrainConfig(pairing="fair")
    with pytest.raises(ValueError, match="valid: reinforce, ppo_clip"):
        TrainConfig(matched_loss="dpo")
    with pytest.raises(ValueError, match="valid: token-mean"):
        TrainConfig(matched_agg="mean")
    with pytest.raises(ValueError, match="multiple of"):
        TrainConfig(prompts_per_step=6, minibatch_prompts=4)


def test_bad_reward_names_the_problem():
    class BoolReward(TokenCoinSampler):
        def extend(self, policy, prefix, n, *, rng):
            return [Chain(c.states, True, c.prefix_len, c.info)  # a bool is not a reward
                    for c in super().extend(policy, prefix, n, rng=rng)]

    parts = fake_parts(tiny_lm(0), "none")
    parts.sampler = BoolReward()
    with pytest.raises(ValueError, match=r"step 0, problem 'p\d+', chain 0: reward must be a number"):
        next(iter(train(_cfg("grpo", steps=1), parts)))


def test_bad_dataset_row_is_named(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "", "answer": "3"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2"):
        load_problems_jsonl(f)
    f.write_text('{"question": "1+1?", "answer": 2}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: a row must be"):
        load_problems_jsonl(f)


def test_data_order_is_keyed_and_sharded():
    a = step_indices(10, 3, 4, seed=1)
    assert a == step_indices(10, 3, 4, seed=1) and len(a) == 4
    seen = [i for s in range(5) for i in step_indices(10, s, 2, seed=1)]
    assert sorted(seen) == list(range(10))  # one epoch covers every problem once
    assert shard(a, 0, 2) == [0, 2] and shard(a, 1, 2) == [1, 3]


def test_config_roundtrips_through_json():
    cfg = _cfg("srpo-2x4", clip_c=None)
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_from_dict(d) == cfg
    assert d["derived"]["objective"]["pairing"] == "paper"


def test_the_sampling_limits_are_declared_once():
    """``SamplingConfig`` is the one ``SampleConfig`` plus the trainer's own fields: same names, same
    defaults (the paper's code: 5120 response tokens), and the sampler gets exactly those."""
    import dataclasses

    from respo.llm.config import SampleConfig, SamplingConfig, VLLMConfig
    from respo.llm.sampler import SampleConfig as SamplerSampleConfig

    assert SamplerSampleConfig is SampleConfig and issubclass(SamplingConfig, SampleConfig)
    own = {f.name for f in dataclasses.fields(SampleConfig)}
    s = SamplingConfig()
    assert s.sample_config() == SampleConfig() and type(s.sample_config()) is SampleConfig
    assert (s.max_response_tokens, s.delimiter, s.prompt_variant) == (5120, "</thought>", "paper")
    assert not {f.name for f in dataclasses.fields(SamplingConfig)} & {f.name for f in dataclasses.fields(VLLMConfig)}
    assert own <= {f.name for f in dataclasses.fields(SamplingConfig)}
    with pytest.raises(ValueError, match="sampling.max_response_tokens"):
        SamplingConfig(max_response_tokens=0)
    with pytest.raises(ValueError, match="sampling.temperature"):  # rollouts sample; greedy is for evaluation
        SamplingConfig(temperature=0.0)
    assert SampleConfig(temperature=0.0).temperature == 0.0
    with pytest.raises(ValueError, match="prompt_variant"):
        SampleConfig(prompt_variant="plain")  # type: ignore[arg-type]


def test_committed_run_configs_load_in_the_current_layout():
    """Every committed run's config.json (flat ``sampling.vllm_*`` keys, or none, and no
    ``overflow``) loads, with its values where the current layout keeps them."""
    from pathlib import Path

    from respo.llm.config import OLD_VLLM_KEYS

    root = Path(__file__).resolve().parents[1] / "experiments" / "results"
    files = [p for p in sorted(root.rglob("config.json")) if "sampling" in json.loads(p.read_text())]
    assert len(files) > 100
    for p in files:
        d = json.loads(p.read_text())
        cfg = config_from_dict(d)
        s, old = cfg.sampling, d["sampling"]
        assert (s.max_response_tokens, s.delimiter, s.prompt_variant) == (
            old["max_response_tokens"], old["delimiter"], old["prompt_variant"]), p
        assert s.overflow == old.get("overflow", "force")
        for key, new in OLD_VLLM_KEYS.items():
            if key in old:
                assert getattr(s.vllm, new) == old[key], (p, key)
        assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_metrics_file_and_config_are_written(tmp_path):
    cfg = _cfg("rrpo")
    list(train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and all(r["pairing"] == "paper" for r in rows)
    assert json.loads((tmp_path / "config.json").read_text())["variant"] == "rrpo"
    with pytest.raises(FileExistsError):
        next(iter(train(cfg, fake_parts(tiny_lm(0), "uniform"), run_dir=tmp_path)))


def test_problems_fixture_is_deterministic():
    assert problems(3) == problems(3)


# -- the real generation stack (LMSampler over the tiny model, the arithmetic task) ---------------

def _tiny_real(variant: str, **kw) -> TrainConfig:
    from respo.presets import get_preset

    base = get_preset("tiny-smoke")
    sampling = dataclasses.replace(base.sampling, max_response_tokens=24, max_thought_tokens=8,
                                   **kw.pop("sampling", {}))
    return dataclasses.replace(base, variant=variant, steps=1, prompts_per_step=1, sampling=sampling, **kw)


@pytest.mark.parametrize("variant,sampling", [
    ("grpo", {}),
    ("srpo", {"localizer": "confidence"}),
    ("srpo", {"localizer": "prompted", "localize_max_tokens": 8}),
    ("oracle", {}),
])
def test_real_stack_one_step(variant, sampling):
    from respo.llm.train_parts import build_parts

    cfg = _tiny_real(variant, sampling=sampling)
    parts = build_parts(cfg)
    (r,) = list(train(cfg, parts))
    assert math.isfinite(r["loss/loss"])
    assert r["tokens/generated"] > 0
    # one name per number: the sampler's and localizer's own counters are not repeated
    assert not {"gen/tokens", "gen/chains", "localize/tokens", "localize/fallbacks"} & set(r)
    if variant != "grpo":
        # A random model never solves the task: every buffer has a parent and one reset group.
        assert r["reset/count"] == cfg.prompts_per_step
    if sampling.get("localizer") == "prompted":
        assert r["localize/calls"] == cfg.prompts_per_step
        assert r["tokens/localization"] > 0
    # All rewards are 0 here, so every advantage is 0 and so is the gradient.
    assert r["reward/trained_mean"] == 0 and r["loss/grad_norm"] == 0


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_lora_run_trains_only_the_adapter():
    from respo.llm.train_parts import build_model

    cfg = _cfg("rrpo", model=dataclasses.replace(TrainConfig().model, lora_rank=4, lora_alpha=8))
    model, _ = build_model(cfg)
    parts = fake_parts(tiny_lm(0), "uniform")
    parts.model = model
    named = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}
    list(train(cfg, parts))
    changed = {k for k, v in named.items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)


def test_command_line_runs_a_preset_and_resumes(tmp_path, capsys):
    from respo.commands.train import main

    small = ["--prompts-per-step", "1", "--sampling.max-response-tokens", "24",
             "--sampling.max-thought-tokens", "8", "--no-progress"]
    args = ["--preset", "tiny-smoke", "--runs-dir", str(tmp_path), "--steps", "1", *small]
    assert main(args) == 0
    run = tmp_path / "tiny-smoke"
    assert json.loads((run / "config.json").read_text())["steps"] == 1
    assert len(read_jsonl(run / "metrics.jsonl")) == 1
    assert main(["--preset", "tiny-smoke", "--runs-dir", str(tmp_path), "--steps", "2", *small,
                 "--resume"]) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
    assert main(["--preset", "tiny-smok"]) == 2
    assert "valid: tiny-smoke, cpu-synthetic, smollm2-cpu" in capsys.readouterr().err
    assert main(["--preset", "tiny-smoke", "--variant", "spro"]) == 2
    assert "valid: grpo" in capsys.readouterr().err


def test_evaluation_hook_runs_every_k_steps_and_after_the_last():
    cfg = _cfg("grpo", steps=3, eval=dataclasses.replace(TrainConfig().eval, every=2, problems=3))
    parts = fake_parts(tiny_lm(0), "none")
    seen = []
    parts.eval_problems = problems(5)
    parts.evaluate = lambda policy, probs: seen.append(len(probs)) or {"greedy_pass@1": 0.5}
    rows = list(train(cfg, parts))
    assert ["eval/greedy_pass@1" in r for r in rows] == [False, True, True]
    assert seen == [3, 3]


def test_gradient_checkpointing_gives_the_same_update():
    from respo.llm.train_parts import build_model

    outs = []
    for gc in (False, True):
        cfg = _cfg("srpo", steps=1, model=dataclasses.replace(TrainConfig().model, gradient_checkpointing=gc))
        model, _ = build_model(cfg)
        parts = fake_parts(tiny_lm(0), "self")
        parts.model = model
        list(train(cfg, parts))
        outs.append(_params(model))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_dropout_is_refused():
    parts = fake_parts(tiny_lm(0), "none")
    parts.model.config.attention_dropout = 0.1
    with pytest.raises(ValueError, match="no dropout.*attention_dropout"):
        next(iter(train(_cfg("grpo", steps=1), parts)))


def test_a_row_whose_scoring_fails_scores_zero_and_the_run_goes_on():
    from respo.llm.train_parts import build_parts

    class Exploding:  # the task's reward fails on its first three responses (a hostile output)
        def __init__(self, task):
            self.inner, self.calls = task, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def reward(self, problem, response):
            self.calls += 1
            if self.calls <= 3:
                raise OverflowError("int too large to convert to float")
            return self.inner.reward(problem, response)

    cfg = dataclasses.replace(_tiny_real("grpo"), steps=2)
    parts = build_parts(cfg)
    parts.sampler.task.task = Exploding(parts.sampler.task.task)
    rows = list(train(cfg, parts))
    assert [r["step"] for r in rows] == [0, 1]
    assert [r["reward/failures"] for r in rows] == [3.0, 0.0]
