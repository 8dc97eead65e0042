"""Worker for tests/test_fsdp_checkpoint.py: FSDP checkpoints on 2 CPU processes (gloo).

Run as ``torchrun --nproc_per_node 2 tests/fsdp_ckpt_worker.py OUT MODE...``; MODE is
``fsdp1`` (FSDP1, flat parameters, one unit per decoder layer: accelerate's FSDP defaults with
``TRANSFORMER_BASED_WRAP``), ``fsdp1-orig`` (FSDP1 with ``use_orig_params=True``), ``fsdp2``
(``fully_shard`` per decoder layer and at the root) or ``fsdp2-offload`` (FSDP2, saving through
the GPU branch: gathered with ``cpu_offload=True``, so only rank 0 holds the full state; FSDP1
cannot take that branch on the CPU). accelerate itself does not shard on the CPU
(``Accelerator(cpu=True)`` with an FSDP plugin or ``ACCELERATE_USE_FSDP=true`` stays
``MULTI_CPU``), so the model is wrapped here with the torch classes accelerate uses, and the
``Accelerator`` only runs the processes (gloo). Rank 0 writes ``OUT/<mode>.json``: the largest
differences of each check (the test asserts on them).

Per mode, on the tiny Llama (tied embeddings), AdamW + LambdaLR, a fixed global batch of 4
sequences per step (2 per process; loss = token mean, so FSDP's gradient average is the
single-process gradient):

- ``ref``: 2 uninterrupted FSDP steps (the reference weights);
- FSDP 1 step, ``save_checkpoint_distributed``; (a) rank 0 alone loads it with plain
  ``load_checkpoint`` into a plain model + optimizer (a different init), compares weights and
  AdamW moments with the gathered ones, then takes step 2 in one process; (b) a fresh FSDP model
  (different init) loads it with ``load_checkpoint_distributed`` and takes step 2;
- the other way: rank 0 takes step 1 in one process and saves with plain ``save_checkpoint``;
  a fresh FSDP model loads it with ``load_checkpoint_distributed`` and takes step 2.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from llm_fixtures import tiny_lm  # noqa: E402

from respo.llm.checkpoint import (  # noqa: E402
    latest_checkpoint,
    load_checkpoint,
    load_checkpoint_distributed,
    save_checkpoint,
    save_checkpoint_distributed,
)

# eps 1e-3, not AdamW's 1e-8: with 1e-8, elements whose gradient is ~1e-8 turn float rounding
# (FSDP's reduce-scatter vs one process's sum) into update differences of ~lr, about 2e-4 here;
# with 1e-3 one process and FSDP agree to ~1e-7 after a step, so a wrong state would show.
LR, WD, EPS = 1e-2, 0.1, 1e-3


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(4, 90, (4, 12), generator=g)


def wrap(mode: str, model: torch.nn.Module, world: int) -> torch.nn.Module:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    if mode in ("fsdp1", "fsdp1-orig"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        policy = functools.partial(transformer_auto_wrap_policy,
                                   transformer_layer_cls={LlamaDecoderLayer})
        return FSDP(model, auto_wrap_policy=policy, device_id=torch.device("cpu"),
                    use_orig_params=mode == "fsdp1-orig")
    if mode in ("fsdp2", "fsdp2-offload"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(mode)


def make(mode: str | None, seed: int, world: int):
    model = copy.deepcopy(tiny_lm(seed))
    wrapped = model if mode is None else wrap(mode, model, world)
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=LR,
                            weight_decay=WD, eps=EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))
    return model, wrapped, opt, sched


def train_step(wrapped, opt, sched, step: int, rows: slice) -> None:
    x = batch(step)[rows]
    wrapped(input_ids=x, labels=x).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def gathered(wrapped, opt=None):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    if opt is None:
        return {k: v.detach().clone() for k, v in get_model_state_dict(wrapped, options=opts).items()}
    return get_state_dict(wrapped, opt, options=opts)


def optim_diff(plain, popt, osd: dict) -> float:
    """Largest difference of AdamW's state: a plain optimizer (by index) vs a gathered one (by name)."""
    names = [n for n, p in plain.named_parameters() if p.requires_grad]
    pstate = popt.state_dict()["state"]
    assert len(pstate) == len(names) == len(osd["state"]), (len(pstate), len(names), len(osd["state"]))
    return max(float((torch.as_tensor(pstate[i][k]).double()
                      - torch.as_tensor(osd["state"][n][k]).double()).abs().max())
               for i, n in enumerate(names) for k in ("exp_avg", "exp_avg_sq", "step"))


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:5]
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def run_mode(mode: str, acc, out: Path) -> dict:
    if mode == "fsdp2-offload":  # what _gather_options picks for GPU parameters
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        import respo.llm.checkpoint as ckpt

        ckpt._gather_options = lambda wrapped: StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True)
    rank, world = acc.process_index, acc.num_processes
    mine = slice(rank * 4 // world, (rank + 1) * 4 // world)
    everything = slice(0, 4)
    res: dict = {"mode": mode}

    # Reference: two uninterrupted FSDP steps.
    _, w, opt, sched = make(mode, 0, world)
    train_step(w, opt, sched, 0, mine)
    train_step(w, opt, sched, 1, mine)
    ref = gathered(w)
    ref_lr = sched.get_last_lr()
    del w, opt, sched

    # One FSDP step, then a checkpoint saved under FSDP.
    model, w, opt, sched = make(mode, 0, world)
    train_step(w, opt, sched, 0, mine)
    msd1, osd1 = gathered(w, opt)
    run = out / mode
    path = save_checkpoint_distributed(run, acc=acc, wrapped=w, model=model, optimizer=opt,
                                       scheduler=sched, step=0, config={"mode": mode},
                                       data_position=4, keep=1)
    assert latest_checkpoint(run) == path, (latest_checkpoint(run), path)
    del model, w, opt, sched

    if acc.is_main_process:  # (a) one process, plain load_checkpoint
        from safetensors.torch import load_file

        files = load_file(str(path / "model" / "model.safetensors"))
        res["saved_keys"] = len(files)
        res["saved_has_lm_head"] = "lm_head.weight" in files
        plain, _, popt, psched = make(None, 1, 1)
        state = load_checkpoint(path, model=plain, optimizer=popt, scheduler=psched)
        res["a_step"], res["a_data_position"] = state["step"], state["data_position"]
        res["a_weights_diff"] = max_diff({k: v.detach() for k, v in plain.state_dict().items()},
                                         {k: v.detach() for k, v in msd1.items()})
        res["a_optim_diff"] = optim_diff(plain, popt, osd1)
        # No storage shared between saved tensors (FSDP1 hands out views and one shared step).
        saved = torch.load(path / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
        ptrs = [t.untyped_storage().data_ptr() for d in saved.values() for t in d.values()]
        res["a_shared_storages"] = len(ptrs) - len(set(ptrs))
        train_step(plain, popt, psched, 1, everything)
        res["a_resumed_vs_ref"] = max_diff(
            {k: v.detach() for k, v in plain.state_dict().items()}, ref)
        res["a_lr"] = [psched.get_last_lr(), ref_lr]
    acc.wait_for_everyone()

    # (b) a fresh FSDP model (other init) resumes from the FSDP checkpoint.
    model, w, opt, sched = make(mode, 1, world)
    state = load_checkpoint_distributed(path, acc=acc, wrapped=w, model=model, optimizer=opt,
                                        scheduler=sched)
    res["b_step"] = state["step"]
    msd_b, osd_b = gathered(w, opt)
    res["b_loaded_vs_saved"] = max_diff({k: v.detach() for k, v in msd_b.items()},
                                        {k: v.detach() for k, v in msd1.items()})
    res["b_optim_loaded_vs_saved"] = max(
        float((torch.as_tensor(osd_b["state"][n][k]).double()
               - torch.as_tensor(osd1["state"][n][k]).double()).abs().max())
        for n in osd1["state"] for k in ("exp_avg", "exp_avg_sq", "step"))
    train_step(w, opt, sched, 1, mine)
    res["b_resumed_vs_ref"] = max_diff(gathered(w), ref)
    res["b_lr"] = [sched.get_last_lr(), ref_lr]
    del model, w, opt, sched

    # (c) the other way: a one-process checkpoint resumed under FSDP.
    single = out / f"{mode}-single"
    if acc.is_main_process:
        plain, _, popt, psched = make(None, 0, 1)
        train_step(plain, popt, psched, 0, everything)
        save_checkpoint(single, step=0, model=plain, optimizer=popt, scheduler=psched,
                        config={}, data_position=4)
        res["step0_fsdp_vs_single"] = max_diff({k: v.detach() for k, v in plain.state_dict().items()},
                                               {k: v.detach() for k, v in msd1.items()})
    acc.wait_for_everyone()
    model, w, opt, sched = make(mode, 1, world)
    state = load_checkpoint_distributed(latest_checkpoint(single), acc=acc, wrapped=w, model=model,
                                        optimizer=opt, scheduler=sched)
    res["c_step"] = state["step"]
    msd_c, osd_c = gathered(w, opt)
    if acc.is_main_process:  # exactly the one-process state that was saved
        res["c_loaded_vs_saved"] = max_diff({k: v.detach() for k, v in msd_c.items()},
                                            {k: v.detach() for k, v in plain.state_dict().items()})
        res["c_optim_loaded_vs_saved"] = optim_diff(plain, popt, osd_c)
    train_step(w, opt, sched, 1, mine)
    res["c_resumed_vs_ref"] = max_diff(gathered(w), ref)
    del model, w, opt, sched
    return res


def main(out: str, modes: list[str]) -> None:
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2, acc.num_processes
    for mode in modes:
        res = run_mode(mode, acc, Path(out))
        if acc.is_main_process:
            (Path(out) / f"{mode}.json").write_text(json.dumps(res, indent=1))
        acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
