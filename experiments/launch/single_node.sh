#!/usr/bin/env bash
# Train one run on one node, one process per GPU:
#
#   experiments/launch/single_node.sh PRESET NPROC [respo train overrides...]
#   experiments/launch/single_node.sh paper-olmo3-7b-math-srpo 2 --seed 0 --name paper-olmo3-7b-math-srpo-s0
#
# LAUNCHER=torchrun (default): data parallel through torchrun (`python -m torch.distributed.run`,
#   so the torchrun of $PYTHON's environment is used); accelerate picks NCCL on CUDA, gloo on CPU.
# LAUNCHER=accelerate: `accelerate launch` with experiments/launch/accelerate_fsdp.yaml (FSDP2).
# PYTHON: the interpreter (default: python). PORT: rendezvous port (default: a free one,
#   torchrun --standalone). DRY_RUN=1 prints the command, shell-quoted, and runs nothing.
# The command runs from the repository root, so --runs-dir defaults to runs/ there.
set -euo pipefail

usage="usage: $0 PRESET NPROC [respo train overrides...]"
PRESET=${1:?$usage}
NPROC=${2:?$usage}
shift 2
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "NPROC must be a positive integer, got '$NPROC'" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-torchrun}

case "$LAUNCHER" in
  torchrun)
    if [[ -n "${PORT:-}" ]]; then
      rdzv=(--nnodes 1 --master_addr 127.0.0.1 --master_port "$PORT")
    else
      rdzv=(--standalone)
    fi
    cmd=("$PYTHON" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$NPROC"
         -m respo.cli train --preset "$PRESET" "$@")
    ;;
  accelerate)
    cmd=("$PYTHON" -m accelerate.commands.launch
         --config_file "$ROOT/experiments/launch/accelerate_fsdp.yaml" --num_processes "$NPROC"
         -m respo.cli train --preset "$PRESET" "$@")
    ;;
  *)
    echo "LAUNCHER must be torchrun or accelerate, got '$LAUNCHER'" >&2
    exit 2
    ;;
esac

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
cd "$ROOT"
exec "${cmd[@]}"
