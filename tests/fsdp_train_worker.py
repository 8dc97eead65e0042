"""Worker for tests/test_fsdp_checkpoint.py: ``respo.llm.trainer.train`` on its FSDP path, 2 CPU processes.

Run as ``torchrun --nproc_per_node 2 tests/fsdp_train_worker.py OUT VARIANT... [--prompts-per-step
N] [--no-resume] [--sync]`` (FSDP over gloo), or with ``python`` instead of torchrun (one process,
the plain path: the reference an FSDP run should match).

accelerate does not shard on the CPU: ``Accelerator(cpu=True)`` stays ``MULTI_CPU`` even with an
FSDP plugin, because ``AcceleratorState`` promotes only multi-accelerator types to ``FSDP``. The
worker takes that one step itself: it builds a real ``Accelerator(cpu=True)`` and then sets
``acc.state.distributed_type = FSDP`` and ``acc.state.fsdp_plugin`` (FSDP1 with per-decoder-layer
``transformer_based_wrap`` and flat parameters, as ``accelerate config`` sets it up), which is
what ``AcceleratorState`` does on GPUs. Every accelerator method ``train()`` uses is then
accelerate's own code on its FSDP branch: ``prepare_model`` wraps with
``FullyShardedDataParallel(model, device_id=acc.device, use_orig_params=False, ...)``,
``no_sync`` uses the FSDP module's ``no_sync`` (``clip_grad_norm_`` and ``get_state_dict`` would
take their FSDP1 branches too); ``backward``, ``device`` and the process-level state
(``process_index``, ``num_processes``, ``is_main_process``, ``wait_for_everyone``,
``gather_object``) stay the real ``MULTI_CPU`` ones, as they stay ``MULTI_GPU`` ones on GPUs.
One CPU-only adjustment: ``ACCELERATE_TORCH_DEVICE=cpu``, since FSDP1 rejects ``MULTI_CPU``'s
device ``cpu:0`` as the ``device_id`` of CPU parameters.

Per variant (TrainConfig: steps=2, prompts_per_step=2 (``--prompts-per-step``),
minibatch_prompts=2, micro_batch_chains=4, checkpoint_every=1, lr 1e-3; the fake token sampler
and the tiny Llama of the DP test):

- ``full``: an uninterrupted 2-step run in ``OUT/<fsdp|single>/<variant>/full``;
- ``resumed`` (FSDP only, unless ``--no-resume``): a 1-step run in ``.../resumed``, then
  ``resume=True`` with steps=2 (a fresh model and optimizer, loaded from the step-0 checkpoint).

The main process writes ``OUT/<variant>-<fsdp|single>.json``: per run the metric rows of every
process (``rows[run][rank]``; for ``resumed`` the resumed leg's, i.e. step 1 only) and the final
checkpoint (``final[run]``: path, step, data position, and the summary of its weights loaded
with the plain ``load_checkpoint`` into a fresh tiny model in this process: sha256 over all
tensors, sum, sum of squares, and ``live_vs_ckpt``, the largest difference between them and the
full weights gathered from the live FSDP model). ``init`` is the summary of the initial weights.

``--sync``: the fake sampler gets a ``backend`` with a ``sync_weights(model, *, state_dict=None)``
method (``PushRecorder``, shaped like ``VLLMBackend.sync_weights``), so ``train()`` pushes the
weights through ``push_weights`` after every step's updates and once after a resume; the run keeps
every checkpoint (``keep_checkpoints=10``). Each process records what every call received (see
``PushRecorder.sync_weights``); the main process gathers the records of all processes and adds
``pushes[run][rank]`` (a list over calls, in order, of every leg: ``leg`` = 0 for the first)
and ``ckpts[run]`` (the paths of all the run's checkpoints, by step) to the JSON.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from llm_fixtures import tiny_lm  # noqa: E402
from llm_train_fakes import fake_parts  # noqa: E402

from respo.llm.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint  # noqa: E402
from respo.llm.config import OptimConfig, TrainConfig  # noqa: E402
from respo.llm.trainer import is_fsdp, train  # noqa: E402

USE_ORIG_PARAMS = False  # accelerate's FSDP1 default (flat parameters)


def fsdp_accelerator():
    """A real ``Accelerator(cpu=True)`` whose state says FSDP1, as accelerate sets it on GPUs."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    # MULTI_CPU's device is cpu:0, which FSDP1 rejects as device_id for CPU parameters ("cpu vs
    # cpu:0"); accelerate's own override gives the plain cpu device (on GPUs: cuda:<local rank>).
    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    acc = Accelerator(cpu=True)
    assert acc.distributed_type == DistributedType.MULTI_CPU, acc.distributed_type
    assert acc.device == torch.device("cpu"), acc.device
    plugin = FullyShardedDataParallelPlugin(auto_wrap_policy="transformer_based_wrap",
                                            use_orig_params=USE_ORIG_PARAMS)
    acc.state.distributed_type = DistributedType.FSDP  # AcceleratorState.__init__ on GPUs
    acc.state.fsdp_plugin = plugin
    assert is_fsdp(acc) and not acc.is_fsdp2 and acc.num_processes == 2
    return acc


def config(variant: str, steps: int, prompts_per_step: int = 2, keep: int = 1) -> TrainConfig:
    return TrainConfig(variant=variant, steps=steps, prompts_per_step=prompts_per_step, minibatch_prompts=2,
                       micro_batch_chains=4, checkpoint_every=1, keep_checkpoints=keep,
                       optim=OptimConfig(lr=1e-3))


def tensor_sha(t: torch.Tensor) -> str:
    """sha256 of a tensor's values as float32 bytes (tests/test_fsdp_checkpoint.py hashes alike)."""
    return hashlib.sha256(t.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


class PushRecorder:
    """A generation backend that holds its own weights (like ``VLLMBackend``): records every push.

    ``sync_weights`` keeps, per call, what it received: whether a ``state_dict`` was given, whether
    ``model`` is the unwrapped model of the run (``expected``), and per key the tensor type, shape,
    dtype, sha256 (``tensor_sha``), sum and sum of squares. The records are plain JSON.
    """

    def __init__(self, expected: torch.nn.Module, leg: int) -> None:
        self.expected, self.leg = expected, leg
        self.calls: list[dict] = []

    def sync_weights(self, model, *, state_dict=None) -> None:
        rec: dict = {"leg": self.leg, "state_dict_given": state_dict is not None,
                     "model_is_unwrapped": model is self.expected}
        sd = state_dict if state_dict is not None else model.state_dict()
        rec["n_keys"] = len(sd)
        rec["keys"] = {k: {"type": type(v).__name__, "shape": list(v.shape), "dtype": str(v.dtype),
                           "sha256": tensor_sha(v), "sum": float(v.detach().double().sum()),
                           "sumsq": float(v.detach().double().square().sum())}
                       for k, v in sd.items()}
        self.calls.append(rec)


def summary(state: dict[str, torch.Tensor]) -> dict:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().float().contiguous().numpy().tobytes())
    return {"sha256": h.hexdigest(),
            "sum": float(sum(v.double().sum() for v in state.values())),
            "sumsq": float(sum(v.double().square().sum() for v in state.values()))}


def live_weights(acc, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights the run ends with (gathered from the shards: a collective under FSDP)."""
    if not is_fsdp(acc):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    wrapped = acc._models[-1]  # what prepare_model returned
    assert wrapped.module is model, type(wrapped)
    full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in full.items()}


def run(acc, variant: str, run_dir: Path, steps: int, prompts_per_step: int, *,
        resume: bool = False, sync_leg: int | None = None):
    """One ``train()`` call; with ``sync_leg`` (``--sync``) the sampler's backend records pushes."""
    cfg = config(variant, steps, prompts_per_step, keep=1 if sync_leg is None else 10)
    parts = fake_parts(tiny_lm(0), cfg.variant_row.localizer)
    recorder = None
    if sync_leg is not None:  # TokenCoinSampler has no backend: train() finds sync_weights here
        recorder = PushRecorder(parts.model, sync_leg)
        parts.sampler.backend = recorder
    rows = list(train(cfg, parts, run_dir=run_dir, resume=resume, accelerator=acc))
    return rows, live_weights(acc, parts.model), (recorder.calls if recorder is not None else [])


def final(run_dir: Path, live: dict[str, torch.Tensor]) -> dict:
    """The final checkpoint, loaded in this one process with the plain ``load_checkpoint``."""
    path = latest_checkpoint(run_dir)
    model = copy.deepcopy(tiny_lm(0))
    state = load_checkpoint(path, model=model, restore_rng=False)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    assert set(weights) == set(live), sorted(set(weights) ^ set(live))[:5]
    return {"path": str(path), "step": int(state["step"]),
            "data_position": int(state["data_position"]), **summary(weights),
            "live_vs_ckpt": max(float((weights[k].double() - live[k].double()).abs().max())
                                for k in weights)}


def gather_rows(acc, rows: list[dict]) -> list[list[dict]]:
    if acc.num_processes == 1:
        return [rows]
    import torch.distributed as dist

    out: list = [None] * acc.num_processes
    dist.all_gather_object(out, rows)
    return out


def gather_pushes(calls: list[dict]) -> list[list[dict]]:
    """Every process's push records, by process index (accelerate's ``gather_object``)."""
    from accelerate.utils import gather_object

    return gather_object([calls])  # one list per process, concatenated in process order


def main(argv: list[str]) -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--no-resume", action="store_true", help="only the uninterrupted run")
    ap.add_argument("--sync", action="store_true",
                    help="the sampler's backend has sync_weights: record every weight push")
    args = ap.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        acc = fsdp_accelerator()
    else:
        from accelerate import Accelerator

        acc = Accelerator(cpu=True)
    tag = "fsdp" if distributed else "single"
    out = Path(args.out)
    init = summary({k: v.detach() for k, v in tiny_lm(0).state_dict().items()})
    for variant in args.variants:
        res: dict = {"variant": variant, "world": acc.num_processes, "fsdp": is_fsdp(acc),
                     "init": init, "rows": {}, "final": {}}
        runs = {"full": [(2, False)]}
        if distributed and not args.no_resume:
            runs["resumed"] = [(1, False), (2, True)]
        if args.sync:
            res["pushes"], res["ckpts"] = {}, {}
        for name, legs in runs.items():
            run_dir = out / tag / variant / name
            rows: list[dict] = []
            live: dict[str, torch.Tensor] = {}
            calls: list[dict] = []
            for leg, (steps, resume) in enumerate(legs):
                rows, live, leg_calls = run(acc, variant, run_dir, steps, args.prompts_per_step,
                                            resume=resume, sync_leg=leg if args.sync else None)
                calls += leg_calls
            res["rows"][name] = gather_rows(acc, rows)  # the last leg's rows
            if args.sync:
                res["pushes"][name] = gather_pushes(calls)  # every leg's
            if acc.is_main_process:
                res["final"][name] = final(run_dir, live)
                if args.sync:
                    res["ckpts"][name] = {int(p.name.split("-")[1]): str(p) for p in
                                          sorted(checkpoint_dir(run_dir).glob("step-*"))}
            acc.wait_for_everyone()
        if acc.is_main_process:
            (out / f"{variant}-{tag}.json").write_text(json.dumps(res, indent=1))
        acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1:])
