"""Training checkpoints: written atomically, loadable with plain transformers / peft.

Layout of ``<run_dir>/checkpoints/step-000007/``:

- ``model/``: ``save_pretrained`` output (the full model, or only the LoRA adapter for a peft
  model) plus the tokenizer when it can be saved, so ``AutoModelForCausalLM.from_pretrained``
  (or ``PeftModel.from_pretrained`` on the base model) loads it with no respo code;
- ``trainer_state.pt``: optimizer and scheduler state, step, data position, RNG states
  (python / numpy / torch; respo keys its own generators by (seed, step, problem), so these are
  only a safety net for library code that draws from the global streams);
- ``config.json``: the run's configuration.

A checkpoint is first written to a temporary folder next to its final place, every file and
the folder fsynced, then renamed with ``os.replace``, and only then does ``LATEST`` (a one-line
file, itself fsynced and replaced atomically) point to it; older checkpoints are removed after
that. A run killed at any moment (or a power loss) leaves the previous checkpoint intact and
``LATEST`` pointing to a complete folder. Temporary folders a killed run left behind are removed
by the next process that takes the run's lock.

``hold_run_lock`` takes an exclusive lock (``fcntl.flock`` on ``<run_dir>/.lock``) for a run's
whole life (``RunLock``): a second process on the same folder is refused with ``RunLockedError``. Loading
checks what it reads: a ``LATEST`` that does not name a checkpoint, truncated or mis-shaped
weights, or an unreadable trainer state raise ``CheckpointError`` naming the file.

Sharded models (FSDP): ``save_checkpoint_distributed`` / ``load_checkpoint_distributed``, called
on every process, gather / scatter the full state and use the same layout, so checkpoints move
freely between one process and FSDP (see the section at the end).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "LATEST"
LOCK = ".lock"
_STEP_NAME = re.compile(r"step-\d{6,}")


class RunLockedError(OSError):
    """Another process holds the run folder's lock."""


class CheckpointError(ValueError):
    """A checkpoint folder (or its ``LATEST`` pointer) is missing files or holds unreadable ones."""


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held until ``close`` or until collected."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def hold_run_lock(run_dir: str | Path) -> RunLock:
    """Lock ``run_dir`` for this process (non-blocking); the lock lasts while the result lives.

    The kernel drops the lock when its holder closes it or dies, so a killed run never leaves a
    stale lock. A second holder, in another process or through another call, gets
    ``RunLockedError`` naming the folder and the holder's pid. Once locked, temporary checkpoint
    folders that a killed run left behind are removed (no other writer can exist).
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(f"{run} is in use by another run (pid {holder}): wait for it to end, or "
                             "pick another run name / runs folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    for orphan in checkpoint_dir(run).glob(".tmp-step-*"):
        shutil.rmtree(orphan, ignore_errors=True)
    return RunLock(fd, run / LOCK)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and ``folder`` itself)."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def rng_state() -> dict[str, Any]:
    """Global python / numpy / torch RNG states (restored by ``set_rng_state``)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (saved, not drawn from)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 (restored, not drawn from)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    write_model: Callable[[Path], None],
    trainer_state: Callable[[], dict[str, Any]],
    config: dict[str, Any],
    tokenizer: Any,
    keep: int,
) -> Path:
    """The atomic write shared by ``save_checkpoint`` and ``save_checkpoint_distributed``."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-", dir=root))
    try:
        write_model(tmp / "model")
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(trainer_state(), tmp / "trainer_state.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        _fsync_tree(tmp)  # the data is on disk before any name points to it
        if final.exists():  # a re-run of the same step after a resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_path(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    pointer = root / f".{LATEST}.tmp"
    with open(pointer, "w") as f:
        f.write(final.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, root / LATEST)
    _fsync_path(root)
    if keep > 0:
        old = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
        for p in old[: max(len(old) - (keep - 1), 0)]:
            shutil.rmtree(p)
    return final


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: dict[str, Any],
    data_position: int,
    tokenizer: Any = None,
    keep: int = 1,
) -> Path:
    """Write checkpoint ``step`` atomically and point ``LATEST`` at it; keep the newest ``keep``."""
    return _write_checkpoint(
        run_dir,
        step=step,
        write_model=lambda d: model.save_pretrained(str(d), safe_serialization=True),
        trainer_state=lambda: {
            "step": step,
            "data_position": data_position,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
        },
        config=config,
        tokenizer=tokenizer,
        keep=keep,
    )


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``LATEST`` points to, or None when the run has no checkpoint."""
    root = checkpoint_dir(run_dir)
    ptr = root / LATEST
    if not ptr.exists():
        return None
    try:
        name = ptr.read_bytes()[:256].decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ptr}: unreadable checkpoint pointer ({e})") from None
    if not _STEP_NAME.fullmatch(name):
        raise CheckpointError(f"{ptr}: holds {name[:60]!r}, not a checkpoint name like 'step-000007'")
    path = root / name
    missing = [f for f in ("trainer_state.pt", "model") if not (path / f).exists()]
    if missing:
        raise CheckpointError(f"{ptr} points to {path}, which is not a complete checkpoint (no {', '.join(missing)})")
    return path


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{f}: unreadable weights ({type(e).__name__}: {str(e)[:200]})") from None
    return state


def _load_weights(model: Any, folder: Path) -> None:
    state = _read_weights(folder)
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, state)
        unexpected = list(getattr(res, "unexpected_keys", []) or [])
        if unexpected:
            raise CheckpointError(f"adapter weights in {folder} do not fit the model: {unexpected[:5]}")
        return
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise CheckpointError(f"weights in {folder} do not fit the model: {str(e)[:300]}") from None
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    real_missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise CheckpointError(
            f"weights in {folder} do not fit the model: missing {real_missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """``<path>/trainer_state.pt`` (a checkpoint folder's), checked to hold the keys a resume needs."""
    f = Path(path) / "trainer_state.pt"
    try:
        state = torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, ...: all mean the same here
        raise CheckpointError(f"{f}: unreadable trainer state ({type(e).__name__}: {str(e)[:200]})") from None
    need = ("step", "optimizer", "rng")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise CheckpointError(f"{f}: trainer state must be a dict with keys {', '.join(need)}")
    if type(state["step"]) is not int or state["step"] < 0:
        raise CheckpointError(f"{f}: step must be an int >= 0, got {state['step']!r}")
    return state


def load_checkpoint(
    path: str | Path, *, model: Any, optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None, restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer, scheduler, RNG states) from ``path`` in place.

    Returns the trainer state dict (``step``, ``data_position``, ...).
    """
    p = Path(path)
    _load_weights(model, p / "model")
    state = read_trainer_state(p)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return dict(state)


# -- sharded models (FSDP) ----------------------------------------------------------------------
#
# Under FSDP every process holds a shard of the parameters and of the optimizer state, so a
# checkpoint is gathered (a collective: every process calls these functions) and written by the
# main process in the layout above. The files hold exactly what ``save_checkpoint`` writes for
# the unsharded model: full weights (tied copies dropped, as ``save_pretrained`` does), and the
# optimizer state keyed by parameter index. ``torch.distributed.checkpoint.state_dict`` keys the
# gathered optimizer state by parameter name instead; the names are numbered in the model's own
# parameter order (the order of its state dict), which is the order ``torch.optim`` numbers them
# in for an optimizer built over ``model.parameters()`` (as ``respo.llm.trainer`` builds it). So a
# checkpoint written under FSDP loads with ``load_checkpoint`` in one process, and one written by
# ``save_checkpoint`` loads with ``load_checkpoint_distributed`` under FSDP.


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _main_and_barrier(acc: Any) -> tuple[bool, Callable[[], None]]:
    if acc is not None:
        return bool(acc.is_main_process), acc.wait_for_everyone
    dist = _dist()
    if dist is None:
        return True, lambda: None
    return dist.get_rank() == 0, dist.barrier


def _gather_options(wrapped: Any) -> Any:
    """Options for gathering the full (unsharded) state on the main process.

    ``cpu_offload`` puts the gathered copy in rank 0's CPU memory only, which is what one wants for
    parameters on GPUs. For parameters on the CPU (gloo) it is off: FSDP1's offload path fails
    there in torch 2.13 (``setStorage: ... out of bounds for storage of size 0`` with flat
    parameters, a segmentation fault with ``use_orig_params=True``), so every process then gets
    the full copy.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    first = next(iter(wrapped.parameters()), None)
    offload = _dist() is not None and first is not None and first.device.type != "cpu"
    return StateDictOptions(full_state_dict=True, cpu_offload=offload)


def _tie_targets(model: Any, keys: Any) -> dict[str, str]:
    """``{tied key: key it is tied to}`` among ``keys``, from the model's tied-weights mapping."""
    keys = set(keys)
    ties = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None)
    if isinstance(ties, dict):  # transformers >= 5: {tied key: source key}
        return {str(k): str(v) for k, v in ties.items() if k in keys and v in keys and k != v}
    if ties and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        emb = model.get_input_embeddings()  # transformers 4: a list of keys tied to the embeddings
        name = next((n for n, m in model.named_modules() if m is emb), None)
        if name is not None:
            src = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
            src += ".weight"
            return {str(k): src for k in ties if k in keys and src in keys and k != src}
    return {}


def _param_order(keys: Any) -> dict[str, int]:
    return {k: i for i, k in enumerate(keys)}


def _numbered_groups(groups: list[dict[str, Any]], order: dict[str, int]) -> list[list[str]]:
    """Each group's parameter names in the model's parameter order."""
    return [sorted(g["params"], key=lambda k: order.get(k, len(order))) for g in groups]


def _own_storage(value: Any, seen: set[int]) -> Any:
    """``value``, cloned when it is a tensor that shares its storage with another one.

    FSDP1 (flat parameters) gathers the optimizer state of all the parameters of one flat
    parameter as views of one tensor, and hands the same ``step`` tensor to all of them. Saved as
    is, ``torch.save`` keeps the sharing, and a plain optimizer that loads the file would then
    advance one shared ``step`` once per parameter (a wrong bias correction).
    """
    if not isinstance(value, torch.Tensor):
        return value
    storage = value.untyped_storage()
    shared = storage.data_ptr() in seen or storage.nbytes() != value.numel() * value.element_size()
    seen.add(storage.data_ptr())
    return value.clone() if shared else value


def _optimizer_state_by_index(osd: dict[str, Any], order: dict[str, int]) -> dict[str, Any]:
    """A name-keyed (gathered) optimizer state dict as ``Optimizer.state_dict()`` writes it."""
    seen: set[int] = set()
    state: dict[int, Any] = {}
    groups: list[dict[str, Any]] = []
    n = 0
    for g, names in zip(osd["param_groups"], _numbered_groups(osd["param_groups"], order),
                        strict=True):
        ids = list(range(n, n + len(names)))
        n += len(names)
        for i, name in zip(ids, names, strict=True):
            if name in osd["state"]:
                state[i] = {k: _own_storage(v, seen) for k, v in osd["state"][name].items()}
        packed = {k: v for k, v in g.items() if k != "params"}
        packed["params"] = ids
        groups.append(packed)
    return {"state": state, "param_groups": groups}


def _optimizer_state_by_name(
    saved: dict[str, Any], template: dict[str, Any], order: dict[str, int],
) -> dict[str, Any]:
    """The inverse of ``_optimizer_state_by_index``; ``template`` (name keyed) gives the names."""
    names = _numbered_groups(template["param_groups"], order)
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(n) for n in names]:
        raise ValueError(f"optimizer state in the checkpoint has parameter groups of sizes {sizes}, "
                         f"the optimizer {[len(n) for n in names]}")
    state: dict[str, Any] = {}
    groups: list[dict[str, Any]] = []
    for g, group_names in zip(saved["param_groups"], names, strict=True):
        for i, name in zip(g["params"], group_names, strict=True):
            if i in saved["state"]:
                state[name] = saved["state"][i]
        packed = {k: v for k, v in g.items() if k != "params"}
        packed["params"] = list(group_names)
        groups.append(packed)
    return {"state": state, "param_groups": groups}


def _full_weights_from_disk(model: Any, folder: Path, names: dict[str, Any]) -> dict[str, Any]:
    """The full weights to load, keyed like ``names`` (the model's state dict, possibly sharded).

    A peft checkpoint holds the adapter weights only, saved without the adapter name: they are
    mapped back to the model's keys (the other keys keep their current values). A tied copy that
    ``save_pretrained`` left out takes the loaded value of the weight it is tied to.
    """
    disk = _read_weights(folder)
    if _is_peft(model):
        from peft import get_peft_model_state_dict

        by_id = {id(v): k for k, v in names.items()}
        saved_form = get_peft_model_state_dict(model, state_dict=names)
        rename = {k: by_id[id(v)] for k, v in saved_form.items() if id(v) in by_id}
        disk = {rename.get(k, k): v for k, v in disk.items()}
    unexpected = [k for k in disk if k not in names]
    if unexpected:
        raise CheckpointError(f"weights in {folder} do not fit the model: unexpected {unexpected[:5]}")
    if _is_peft(model):
        return disk
    ties = _tie_targets(model, names)
    missing = [k for k in names if k not in disk]
    real_missing = [k for k in missing if ties.get(k) not in disk]
    if real_missing:
        raise CheckpointError(f"weights in {folder} do not fit the model: missing {real_missing[:5]}")
    for k in missing:
        disk[k] = disk[ties[k]]
    return disk


def save_checkpoint_distributed(
    run_dir: str | Path,
    *,
    acc: Any = None,
    wrapped: Any,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    config: dict[str, Any],
    data_position: int,
    tokenizer: Any = None,
    keep: int = 1,
) -> Path:
    """``save_checkpoint`` for a sharded (FSDP) model; call it on every process.

    ``wrapped`` is the model the optimizer was built over (``accelerator.prepare_model`` output,
    or a model sharded with ``fully_shard``), ``model`` the unwrapped one (its
    ``save_pretrained`` writes the files). The full weights and optimizer state are gathered
    (``torch.distributed.checkpoint.state_dict.get_state_dict``; into rank 0's CPU memory for
    GPU parameters, on every process for CPU ones), the main process (``acc.is_main_process``,
    else rank 0) writes them in ``save_checkpoint``'s layout, and all processes wait for it.
    Also right for DDP and for one process. Returns the checkpoint's folder on every process.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    main, barrier = _main_and_barrier(acc)
    gathered = get_state_dict(wrapped, optimizer, options=_gather_options(wrapped))
    weights: dict[str, Any] = dict(gathered[0])
    osd: dict[str, Any] = dict(gathered[1])
    final = checkpoint_dir(run_dir) / f"step-{step:06d}"
    if main:
        optim_state = _optimizer_state_by_index(osd, _param_order(weights))
        if not _is_peft(model):  # drop tied copies, as save_pretrained does without state_dict
            for k, src in _tie_targets(model, weights).items():
                if torch.equal(weights[k], weights[src]):
                    weights.pop(k)
        final = _write_checkpoint(
            run_dir,
            step=step,
            write_model=lambda d: model.save_pretrained(str(d), state_dict=weights,
                                                        safe_serialization=True),
            trainer_state=lambda: {
                "step": step,
                "data_position": data_position,
                "optimizer": optim_state,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            config=config,
            tokenizer=tokenizer,
            keep=keep,
        )
    barrier()
    return final


def load_checkpoint_distributed(
    path: str | Path,
    *,
    acc: Any = None,
    wrapped: Any,
    model: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """``load_checkpoint`` for a sharded (FSDP) model; call it on every process.

    Loads a checkpoint in this module's layout (from ``save_checkpoint`` or
    ``save_checkpoint_distributed``). Every process reads the files (so each holds the full
    weights and optimizer state in CPU memory for a moment) and keeps its shard
    (``set_state_dict`` with ``full_state_dict=True``); the parameter names come from the
    model's sharded state dict, which gathers nothing. (``broadcast_from_rank0`` would read the
    files once, but with an optimizer it hangs on gloo in torch 2.13.) Every process restores the
    scheduler and the saved RNG states. Returns the trainer state (``step``, ``data_position``,
    ...) without the optimizer state.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    p = Path(path)
    _, barrier = _main_and_barrier(acc)
    sharded = StateDictOptions(full_state_dict=False)
    names_osd: dict[str, Any] = {}
    if optimizer is not None:
        names, names_osd = get_state_dict(wrapped, optimizer, options=sharded)  # type: ignore[assignment]
    else:
        names = get_model_state_dict(wrapped, options=sharded)
    weights = _full_weights_from_disk(model, p / "model", names)
    state = read_trainer_state(p)
    load_opts = StateDictOptions(full_state_dict=True, strict=not _is_peft(model))
    if optimizer is not None:
        osd = _optimizer_state_by_name(state.pop("optimizer"), names_osd, _param_order(names))
        del names, names_osd
        set_state_dict(wrapped, optimizer, model_state_dict=weights, optim_state_dict=osd,
                       options=load_opts)
        # set_state_dict turns tuple hyperparameters (AdamW's betas) into lists: undo that.
        for group, saved in zip(optimizer.param_groups, osd["param_groups"], strict=True):
            for k, v in saved.items():
                if isinstance(v, tuple) and isinstance(group.get(k), list):
                    group[k] = tuple(group[k])
        del osd
    else:
        state.pop("optimizer", None)
        del names
        set_model_state_dict(wrapped, weights, options=load_opts)
    del weights
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    barrier()
    return dict(state)
