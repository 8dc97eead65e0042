"""Training checkpoints: written atomically, loadable with plain transformers / peft.

Layout of ``<run_dir>/checkpoints/step-000007/``:

- ``model/``: ``save_pretrained`` output (the full model, or only the LoRA adapter for a peft
  model) plus the tokenizer when it can be saved, so ``AutoModelForCausalLM.from_pretrained``
  (or ``PeftModel.from_pretrained`` on the base model) loads it with no respo code;
- ``trainer_state.pt``: optimizer and scheduler state, step, data position, RNG states
  (python / numpy / torch; respo keys its own generators by (seed, step, problem), so these are
  only a safety net for library code that draws from the global streams);
- ``config.json``: the run's configuration.

A checkpoint is first written to a temporary folder next to its final place and then renamed
with ``os.replace``, and only then does ``LATEST`` (a one-line file, itself replaced atomically)
point to it. A run killed at any moment leaves the previous checkpoint intact and ``LATEST``
pointing to a complete folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "LATEST"


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
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-", dir=root))
    try:
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(
            {
                "step": step,
                "data_position": data_position,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            tmp / "trainer_state.pt",
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if final.exists():  # a re-run of the same step after a resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    if keep > 0:
        old = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
        for p in old[: max(len(old) - (keep - 1), 0)]:
            shutil.rmtree(p)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``LATEST`` points to, or None when the run has no checkpoint."""
    root = checkpoint_dir(run_dir)
    ptr = root / LATEST
    if not ptr.exists():
        return None
    path = root / ptr.read_text().strip()
    if not (path / "trainer_state.pt").exists():
        raise FileNotFoundError(f"{ptr} points to {path}, which is not a complete checkpoint")
    return path


def _load_weights(model: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, state)
        unexpected = list(getattr(res, "unexpected_keys", []) or [])
        if unexpected:
            raise RuntimeError(f"adapter weights in {folder} do not fit the model: {unexpected[:5]}")
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    real_missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise RuntimeError(
            f"weights in {folder} do not fit the model: missing {real_missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def load_checkpoint(
    path: str | Path, *, model: Any, optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None, restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer, scheduler, RNG states) from ``path`` in place.

    Returns the trainer state dict (``step``, ``data_position``, ...).
    """
    p = Path(path)
    _load_weights(model, p / "model")
    state = torch.load(p / "trainer_state.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return dict(state)
