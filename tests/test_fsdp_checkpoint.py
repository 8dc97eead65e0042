"""Checkpoints of sharded (FSDP) models: ``save/load_checkpoint_distributed``.

The main test launches 2 CPU processes (torchrun, gloo; tests/fsdp_ckpt_worker.py) and checks,
for FSDP1 with flat parameters (accelerate's default), FSDP1 with ``use_orig_params=True`` and
FSDP2 (``fully_shard``; also saving with ``cpu_offload=True``, the branch taken for GPU
parameters, where only rank 0 holds the gathered state), on the tiny Llama (tied embeddings) with AdamW + LambdaLR:

(a) a checkpoint saved under FSDP loads in ONE process with plain ``load_checkpoint``: weights
    and AdamW moments exactly the gathered ones, same layout as ``save_checkpoint`` (no tied
    ``lm_head`` copy), and one more step there matches the uninterrupted FSDP run;
(b) resumed under FSDP (a fresh model with another init) with ``load_checkpoint_distributed``:
    the state is exactly the saved one and one more step gives exactly (bitwise) the weights of
    the uninterrupted 2-step FSDP run;
(c) the other way: a ``save_checkpoint`` checkpoint (one process) resumed under FSDP.

Tolerances: exact (0) for every load; 1e-6 between one process and FSDP after a step (float
rounding of the gradient reduction; measured 1e-8 .. 6e-8 with the worker's AdamW eps 1e-3).

Limit: accelerate does not shard on the CPU (``Accelerator(cpu=True)`` with an FSDP plugin or
``ACCELERATE_USE_FSDP=true`` stays ``MULTI_CPU``), so the worker wraps the model with the torch
FSDP classes accelerate uses. No GPU here: the ``cpu_offload=True`` gather is run with FSDP2 on
the CPU only (FSDP1's offload path fails on CPU parameters, see ``_gather_options``).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from llm_fixtures import tiny_lm
from procs import run_checked

from respo.llm.checkpoint import (
    load_checkpoint,
    load_checkpoint_distributed,
    save_checkpoint,
    save_checkpoint_distributed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fsdp_ckpt_worker.py"
MODES = ["fsdp1", "fsdp1-orig", "fsdp2", "fsdp2-offload"]


_run = run_checked


def test_fsdp_checkpoint_round_trips_on_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the python executable")
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path), *MODES])
    for mode in MODES:
        r = json.loads((tmp_path / f"{mode}.json").read_text())
        # (a) one process, plain load_checkpoint, save_checkpoint's layout
        assert (r["saved_keys"], r["saved_has_lm_head"]) == (20, False), mode
        assert (r["a_step"], r["a_data_position"]) == (0, 4), mode
        assert r["a_weights_diff"] == 0.0 and r["a_optim_diff"] == 0.0, (mode, r)
        assert r["a_shared_storages"] == 0, mode
        assert r["a_resumed_vs_ref"] < 1e-6, (mode, r["a_resumed_vs_ref"])
        assert r["a_lr"][0] == r["a_lr"][1], mode
        # (b) resumed under FSDP: exact
        assert r["b_step"] == 0, mode
        assert r["b_loaded_vs_saved"] == 0.0 and r["b_optim_loaded_vs_saved"] == 0.0, (mode, r)
        assert r["b_resumed_vs_ref"] == 0.0, (mode, r["b_resumed_vs_ref"])
        assert r["b_lr"][0] == r["b_lr"][1], mode
        # (c) a one-process checkpoint resumed under FSDP
        assert r["c_step"] == 0, mode
        assert r["c_loaded_vs_saved"] == 0.0 and r["c_optim_loaded_vs_saved"] == 0.0, (mode, r)
        assert r["c_resumed_vs_ref"] < 1e-6, (mode, r["c_resumed_vs_ref"])


def _trained(seed: int = 0):
    model = copy.deepcopy(tiny_lm(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))
    x = torch.tensor([[5, 6, 7, 8, 9]])
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return model, opt, sched


def _same_files(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa = torch.load(a / "trainer_state.pt", weights_only=False)
    sb = torch.load(b / "trainer_state.pt", weights_only=False)
    assert sa.keys() == sb.keys()
    assert sa["scheduler"] == sb["scheduler"] and sa["step"] == sb["step"]
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(oa["state"][i][k], ob["state"][i][k]), (i, k)
    assert sorted(p.name for p in (a / "model").iterdir()) == sorted(p.name for p in (b / "model").iterdir())


def test_distributed_functions_in_one_process_match_the_plain_ones(tmp_path):
    """Without a process group they write and read exactly what the plain functions do."""
    model, opt, sched = _trained()
    plain = save_checkpoint(tmp_path / "plain", step=3, model=model, optimizer=opt, scheduler=sched,
                            config={"x": 1}, data_position=8)
    dist = save_checkpoint_distributed(tmp_path / "dist", wrapped=model, model=model, optimizer=opt,
                                       scheduler=sched, step=3, config={"x": 1}, data_position=8)
    _same_files(plain, dist)

    m1, o1, s1 = _trained(1)
    m2, o2, s2 = _trained(1)
    st1 = load_checkpoint(plain, model=m1, optimizer=o1, scheduler=s1)
    st2 = load_checkpoint_distributed(plain, wrapped=m2, model=m2, optimizer=o2, scheduler=s2)
    assert (st2["step"], st2["data_position"]) == (st1["step"], st1["data_position"]) == (3, 8)
    for (k, a), (k2, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert m2.lm_head.weight is m2.model.embed_tokens.weight  # still tied
    d1, d2 = o1.state_dict(), o2.state_dict()
    assert d1["param_groups"] == d2["param_groups"]
    for i in d1["state"]:
        for k in d1["state"][i]:
            assert torch.equal(d1["state"][i][k], d2["state"][i][k]), (i, k)
    assert s1.state_dict() == s2.state_dict()


PEFT_WARNING = "ignore:.*is_gradient_checkpointing.*:FutureWarning"  # peft 0.21 on transformers 5


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_distributed_functions_keep_lora_checkpoints_adapters(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    def lora(seed: int):
        return get_peft_model(copy.deepcopy(tiny_lm(0)), LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
            init_lora_weights=False, lora_dropout=0.0)) if seed == 0 else get_peft_model(
            copy.deepcopy(tiny_lm(0)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  task_type="CAUSAL_LM", lora_dropout=0.0))

    model = lora(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.tensor([[5, 6, 7, 8]])
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    path = save_checkpoint_distributed(tmp_path, wrapped=model, model=model, optimizer=opt,
                                       scheduler=None, step=0, config={}, data_position=0)
    assert (path / "model" / "adapter_config.json").exists()
    again = PeftModel.from_pretrained(copy.deepcopy(tiny_lm(0)), str(path / "model"))
    torch.testing.assert_close(again(input_ids=x).logits, model(input_ids=x).logits)

    other = lora(1)  # LoRA B = 0: a different adapter
    opt2 = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad], lr=1e-3)
    load_checkpoint_distributed(path, wrapped=other, model=other, optimizer=opt2)
    torch.testing.assert_close(other(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)
    d1, d2 = opt.state_dict(), opt2.state_dict()
    assert d1["state"].keys() == d2["state"].keys()
    for i in d1["state"]:
        assert torch.equal(d1["state"][i]["exp_avg"], d2["state"][i]["exp_avg"]), i


# -- the trainer's FSDP path, end to end (tests/fsdp_train_worker.py) ---------------------------
#
# ``respo.llm.trainer.train`` under FSDP on 2 CPU processes (torchrun, gloo): a real
# ``Accelerator(cpu=True)`` whose state is switched to FSDP1 the way accelerate does it on GPUs
# (see the worker's docstring), so ``prepare_model`` shards with ``FullyShardedDataParallel`` and
# checkpoints go through ``save/load_checkpoint_distributed``. Variants grpo (token-mean) and srpo
# (seq-mean-token-mean, with resets), the fake token sampler and the tiny Llama of the DP test.

TRAIN_WORKER = ROOT / "tests" / "fsdp_train_worker.py"
TRAIN_VARIANTS = ["grpo", "srpo"]


def _torchrun() -> str:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the python executable")
    return torchrun


def _weights_of(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights, loaded in this one process with the plain ``load_checkpoint``."""
    model = copy.deepcopy(tiny_lm(0))
    load_checkpoint(path, model=model, restore_rng=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_metrics(a: dict, b: dict, *, rel: float, where: str) -> None:
    """Every metric but the timings: floats within ``rel`` (relative), the rest equal
    (``metrics.jsonl`` writes NaN as null)."""
    keys = {k for k in a if not k.startswith("time/")}
    assert keys == {k for k in b if not k.startswith("time/")}, (where, sorted(keys ^ set(b)))
    for k in sorted(keys):
        if {type(a[k]), type(b[k])} == {float, type(None)}:
            assert math.isnan(a[k] if b[k] is None else b[k]), (where, k, a[k], b[k])
        elif isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], rel=rel, abs=1e-9, nan_ok=True), (where, k, a[k], b[k])
        else:
            assert a[k] == b[k], (where, k)


def test_trainer_fsdp_path_resumes_exactly_on_two_cpu_processes(tmp_path):
    """Both runs finish under FSDP; a run stopped after step 0 and resumed from its (FSDP)
    checkpoint logs the uninterrupted run's step-1 metrics and ends with its weights; the final
    checkpoint loads in one process; and training moved the weights (not a vacuous equality).
    Tolerance 1e-6 relative (the same sharding and reduction order on both runs: measured exact)."""
    _run([_torchrun(), "--standalone", "--nproc_per_node", "2", str(TRAIN_WORKER), str(tmp_path),
          *TRAIN_VARIANTS])
    init = {k: v.detach() for k, v in tiny_lm(0).state_dict().items()}
    for v in TRAIN_VARIANTS:
        r = json.loads((tmp_path / f"{v}-fsdp.json").read_text())
        assert (r["variant"], r["world"], r["fsdp"]) == (v, 2, True)
        full, resumed = r["rows"]["full"][0], r["rows"]["resumed"][0]  # process 0's rows
        assert [row["step"] for row in full] == [0, 1], v
        assert [row["step"] for row in resumed] == [1], v  # it resumed, not restarted
        _same_metrics(full[1], resumed[0], rel=1e-6, where=f"{v} step 1")
        for k in ("loss/loss", "loss/grad_norm", "reward/trained_mean", "tokens/trained"):
            assert k in resumed[0], (v, k)
        # The resumed run's log: the first leg's step 0 (kept), then the resumed step 1.
        log = [json.loads(line) for line in
               (tmp_path / "fsdp" / v / "resumed" / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in log] == [0, 1], v
        _same_metrics(full[0], log[0], rel=1e-6, where=f"{v} step 0 (log)")

        weights = {}
        for name in ("full", "resumed"):
            f = r["final"][name]
            assert (f["step"], f["data_position"]) == (1, 4), (v, name)
            assert f["live_vs_ckpt"] == 0.0, (v, name)  # the checkpoint holds the trained weights
            weights[name] = _weights_of(f["path"])  # loads in one process (this one)
            total = sum(float(t.double().sum()) for t in weights[name].values())
            assert total == pytest.approx(f["sum"], rel=1e-12), (v, name)  # what rank 0 loaded
        assert weights["full"].keys() == weights["resumed"].keys() == init.keys()
        for k, w in weights["full"].items():
            torch.testing.assert_close(weights["resumed"][k], w, rtol=1e-6, atol=1e-8,
                                       msg=f"{v} {k}")
        moved = {k: float((w - init[k]).abs().max()) for k, w in weights["full"].items()}
        assert all(d > 0 for d in moved.values()), (v, [k for k, d in moved.items() if d == 0])
        assert max(moved.values()) > 1e-4, (v, max(moved.values()))
        assert r["final"]["full"]["sha256"] != r["init"]["sha256"], v


def test_trainer_fsdp_path_matches_one_process(tmp_path):
    """FSDP on 2 processes trains what one process trains (as DDP does, tests/test_llm_dp.py):
    every process logs the same metrics, and they and the final weights match a one-process run
    within 1e-5 (float rounding of the reductions). 4 prompts per step: 2 mini-batches, so the
    second one's old log-probs come from the no-grad forward before the update."""
    _run([_torchrun(), "--standalone", "--nproc_per_node", "2", str(TRAIN_WORKER), str(tmp_path),
          *TRAIN_VARIANTS, "--prompts-per-step", "4", "--no-resume"])
    _run([sys.executable, str(TRAIN_WORKER), str(tmp_path), *TRAIN_VARIANTS,
          "--prompts-per-step", "4"])
    for v in TRAIN_VARIANTS:
        two = json.loads((tmp_path / f"{v}-fsdp.json").read_text())
        one = json.loads((tmp_path / f"{v}-single.json").read_text())
        assert (one["world"], one["fsdp"], two["world"], two["fsdp"]) == (1, False, 2, True)
        rank0, rank1 = two["rows"]["full"]
        for a, b in zip(rank0, rank1, strict=True):
            _same_metrics(a, b, rel=0.0, where=f"{v} step {a['step']}, process 1 vs 0")
        for a, b in zip(one["rows"]["full"][0], rank0, strict=True):
            _same_metrics(a, b, rel=1e-5, where=f"{v} step {a['step']}, FSDP vs one process")
        w1 = _weights_of(one["final"]["full"]["path"])
        w2 = _weights_of(two["final"]["full"]["path"])
        for k, p in w1.items():
            torch.testing.assert_close(w2[k], p, rtol=0, atol=1e-5, msg=f"{v} {k}")


def _tensor_sha(t: torch.Tensor) -> str:
    """The worker's ``tensor_sha``: sha256 of the values as float32 bytes."""
    import hashlib

    return hashlib.sha256(t.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def test_trainer_fsdp_path_pushes_full_weights_to_every_process(tmp_path):
    """``push_weights`` under FSDP1 (flat parameters): the sampler's backend has a
    ``sync_weights(model, *, state_dict=None)`` (``VLLMBackend``'s signature; the worker's
    ``--sync`` recorder). Every process gets exactly one push per step, after the step's updates,
    plus one right after a resume; each push is the FULL state dict (gathered with
    ``get_model_state_dict(full_state_dict=True)``: every key of the plain model's ``state_dict``,
    the tied ``lm_head.weight`` included, plain tensors of unsharded shape), the same bytes on
    both processes, and exactly the weights of that step's checkpoint loaded in one process."""
    _run([_torchrun(), "--standalone", "--nproc_per_node", "2", str(TRAIN_WORKER), str(tmp_path),
          "grpo", "--sync"])
    r = json.loads((tmp_path / "grpo-fsdp.json").read_text())
    assert (r["world"], r["fsdp"]) == (2, True)
    plain = tiny_lm(0).state_dict()
    assert "lm_head.weight" in plain  # tied: get_model_state_dict keeps the copy, like state_dict
    init = {k: _tensor_sha(v) for k, v in plain.items()}
    ckpt_sha = {name: {int(s): {k: _tensor_sha(v) for k, v in _weights_of(p).items()}
                       for s, p in paths.items()} for name, paths in r["ckpts"].items()}
    # full: steps 0, 1 in one leg; resumed: step 0 (leg 0), then the resume push and step 1 (leg 1).
    expected = {"full": [(0, 0), (0, 1)], "resumed": [(0, 0), (1, 0), (1, 1)]}  # (leg, ckpt step)
    for name, per_process in r["pushes"].items():
        assert len(per_process) == 2, name
        assert sorted(ckpt_sha[name]) == [0, 1], (name, r["ckpts"][name])
        for rank, calls in enumerate(per_process):
            assert [c["leg"] for c in calls] == [leg for leg, _ in expected[name]], (name, rank)
            for i, (c, (_, step)) in enumerate(zip(calls, expected[name], strict=True)):
                where = (name, rank, i)
                assert c["state_dict_given"] and c["model_is_unwrapped"], where
                assert c["n_keys"] == len(plain) and c["keys"].keys() == plain.keys(), where
                for k, t in plain.items():
                    got = c["keys"][k]
                    assert got["type"] == "Tensor", (where, k, got["type"])  # not a DTensor / shard
                    assert (got["shape"], got["dtype"]) == (list(t.shape), str(t.dtype)), (where, k)
                sha = {k: v["sha256"] for k, v in c["keys"].items()}
                assert sha["lm_head.weight"] == sha["model.embed_tokens.weight"], where  # tied
                assert sha == ckpt_sha[name][step], (where, step)  # exactly that step's weights
                assert sha != init, where  # after the updates, not the initial weights
        assert per_process[0] == per_process[1], name  # both processes: identical records
    last = r["pushes"]["full"][0][-1]["keys"]
    assert {k: v["sha256"] for k, v in last.items()} == ckpt_sha["full"][1]  # = the final checkpoint
    assert r["final"]["full"]["step"] == 1 and r["final"]["full"]["path"] == r["ckpts"]["full"]["1"]
    assert sum(v["sum"] for v in last.values()) == pytest.approx(
        sum(float(t.double().sum()) for t in _weights_of(r["final"]["full"]["path"]).values()), rel=1e-12)
