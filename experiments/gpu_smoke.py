"""GPU smoke check: a few SRPO steps on one GPU, and a JSON report of the speed figures.

Runs on a GPU machine that has CUDA torch, transformers, accelerate and peft but possibly neither
vLLM, nor network access, nor model weights. Speed does not depend on the weights, so the models
are randomly initialised from real architectures' configurations (SmolLM2-135M's, and a 1B-class
Llama) with a tokenizer built locally whose vocabulary has the real model's size. Reported:

- ``generate``: plain batched generation tokens/s of the transformers backend (``HFBackend``);
- ``train_step``: forward + backward + AdamW on a fixed [batch, seq] bf16 batch, its time and the
  model FLOPs utilization, MFU = 6 N T / (t * peak), N = parameters, T = tokens;
- ``srpo``: a few SRPO training steps through the real loop (``respo.llm.trainer.train``): rollout,
  localization and update times, generated / trained / localization tokens, the update's MFU;
- ``vllm``: the same prompts through ``respo.llm.vllm_backend.VLLMBackend`` and through plain
  ``LLM.generate`` (same sampling parameters, one request per prompt): tokens/s of both and their
  ratio (target >= 0.8), the same with a thought ``StopRule`` whose per-thought cap forces extra
  rounds (the backend's worst case), and the time of one full-weight ``sync_weights``; then the
  weight-sync check: the model's weights are perturbed, pushed with ``sync_weights``, and the
  engine's greedy continuations must equal transformers' greedy ``generate`` on the same prompts
  (``greedy_after_sync``: rows equal, mean common prefix, and the same before the sync, which
  should differ). Every figure reads "not measured (vllm not installed)" when vLLM is not
  importable.

Usage (from the repository root; no install needed)::

    PYTHONPATH=. python experiments/gpu_smoke.py --out smoke.json
    PYTHONPATH=. python experiments/gpu_smoke.py --cpu-test   # seconds-long CPU dry run
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCHS: dict[str, dict[str, Any]] = {
    # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M-Instruct config.json, read from the GGUF metadata).
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    # A 1B-class Llama (Llama-3.2-1B shapes with SmolLM2's vocabulary size).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=49152,
                     rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    # CPU dry run only.
    "cpu-test": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=2048,
                     rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
}

PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
"""Dense bf16 tensor-core peak FLOP/s by device name (vendor datasheets, no sparsity)."""


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16.items():
        if key in name:
            return val, name
    return None, name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(arch: str, device: torch.device, seed: int) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from respo.llm.models import char_tokenizer

    spec = dict(ARCHS[arch])
    base = len(char_tokenizer())
    filler = tuple(f"<w{i}>" for i in range(spec["vocab_size"] - base - 1))
    tok = char_tokenizer(extra_tokens=("</thought>",) + filler)
    spec["vocab_size"] = len(tok)
    cfg = LlamaConfig(**spec, max_position_embeddings=8192, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    return model.to(device).eval(), tok


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_generate(model: Any, tok: Any, device: torch.device, *, batch: int, new_tokens: int,
                   prompt_len: int) -> dict[str, float]:
    from respo.llm.generation import HFBackend

    # bf16 on CUDA (the backend keeps the model's own dtype unless told otherwise).
    backend = HFBackend(model, tok, device=str(device),
                        dtype=torch.bfloat16 if device.type == "cuda" else None)
    gen = np.random.default_rng(0)
    prompts = [gen.integers(10, 90, size=prompt_len).astype(np.int64) for _ in range(batch)]
    kw = dict(n=1, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0)
    backend.generate(prompts[:2], seed=0, **{**kw, "max_new_tokens": 8})  # warm-up
    sync(device)
    t = time.perf_counter()
    outs = backend.generate(prompts, seed=1, **kw)
    sync(device)
    dt = time.perf_counter() - t
    toks = sum(len(o.ids) for o in outs)
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "tokens": toks, "seconds": dt, "tokens_per_s": toks / dt}


def bench_train_step(model: Any, device: torch.device, *, batch: int, seq: int,
                     peak: float | None, steps: int = 3) -> dict[str, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(10, vocab, (batch, seq), generator=gen).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    times = []
    for i in range(steps + 1):
        sync(device)
        t = time.perf_counter()
        with amp:
            logits = model(input_ids=ids).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i > 0:  # the first step pays allocation and kernel selection
            times.append(time.perf_counter() - t)
    t_step = float(np.median(times))
    flops = 6.0 * n_params(model) * batch * seq
    return {"batch": batch, "seq": seq, "seconds": t_step, "tokens_per_s": batch * seq / t_step,
            "mfu": flops / t_step / peak if peak else None}


def run_srpo(model: Any, tok: Any, device: torch.device, *, steps: int, prompts: int,
             response_tokens: int, localize_tokens: int, peak: float | None) -> dict[str, Any]:
    from respo.llm.config import ModelConfig, OptimConfig, SamplingConfig, TrainConfig
    from respo.llm.generation import HFBackend
    from respo.llm.localize import PromptedSelfLocalizer
    from respo.llm.sampler import LMSampler
    from respo.llm.train_parts import build_task
    from respo.llm.trainer import Parts, train

    cfg = TrainConfig(
        name="gpu-smoke", variant="srpo", task="arithmetic", train_problems=64, steps=steps,
        prompts_per_step=prompts, minibatch_prompts=prompts, micro_batch_chains=8,
        checkpoint_every=0, model=ModelConfig(name="random", dtype="auto"),
        sampling=SamplingConfig(temperature=0.7, top_p=0.95, delimiter="\n", max_thoughts=8,
                                max_thought_tokens=max(8, response_tokens // 4),
                                max_response_tokens=response_tokens, localizer="prompted",
                                localize_max_tokens=localize_tokens, fallback="step1"),
        optim=OptimConfig(lr=1e-6),
    )
    task = build_task(cfg.task)
    s = cfg.sampling
    backend = HFBackend(model, tok, device=str(device))
    sampler = LMSampler(backend, tok, task, cfg=s.sample_config())
    loc = PromptedSelfLocalizer.for_sampler(sampler, temperature=s.localize_temperature,
                                            max_new_tokens=s.localize_max_tokens,
                                            fallback_mode=s.fallback)
    parts = Parts(model=model, sampler=sampler, root=sampler.root,
                  train_problems=task.problems(cfg.train_problems, seed=cfg.seed, split="train"),
                  localizer=loc, tokenizer=tok, pad_id=int(tok.pad_token_id),
                  stats_sources=[sampler.pop_stats, loc.pop_stats])
    rows = []
    for m in train(cfg, parts):
        rows.append(m)
        print(f"  srpo step {m['step']}: {m['time/step']:.1f} s (rollout {m['time/rollout']:.1f}, "
              f"update {m['time/update']:.1f}); generated {m['tokens/generated']:.0f}, "
              f"trained {m['tokens/trained']:.0f}, localization {m['tokens/localization']:.0f} tokens",
              flush=True)
    N = n_params(model)
    out = []
    for m in rows:
        gen_tok = m["tokens/generated"] + m["tokens/localization"]
        # Update = old-logp forward (2NT) + training forward/backward (6NT) over the padded
        # trained chains; count trained tokens only (a lower bound on the work done).
        t_upd = m["time/update"] + m["time/prep"]
        flops = 8.0 * N * m["tokens/trained"]
        out.append({k: m[k] for k in ("step", "time/step", "time/rollout", "time/prep", "time/update",
                                      "tokens/generated", "tokens/trained", "tokens/localization",
                                      "reset/fallback_frac") if k in m}
                   | {"rollout_tokens_per_s": gen_tok / m["time/rollout"],
                      "update_mfu_trained_tokens": flops / t_upd / peak if peak else None})
    return {"config": {"prompts_per_step": prompts, "response_tokens": response_tokens,
                       "localize_tokens": localize_tokens, "steps": steps}, "steps": out}


def has_vllm() -> bool:
    """Whether ``import vllm`` works here."""
    try:
        importlib.import_module("vllm")
    except ImportError:
        return False
    return True


VLLM_TARGET_RATIO = 0.8
"""VLLMBackend tokens/s divided by plain ``LLM.generate`` tokens/s should reach this."""


def _time_vllm(llm: Any, model: Any, tok: Any, device: torch.device, prompts: list[Any],
               new_tokens: int, eos: list[int]) -> dict[str, Any]:
    """The figures of ``vllm_section`` for one engine (plain vLLM first, then the backend)."""
    from vllm import SamplingParams

    from respo.llm.generation import StopRule
    from respo.llm.thoughts import ThoughtFormat
    from respo.llm.vllm_backend import VLLMBackend

    backend = VLLMBackend(llm, eos_ids=eos)

    def plain() -> int:
        params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=new_tokens, seed=1,
                                logprobs=0, stop_token_ids=eos, ignore_eos=True, detokenize=False)
        res = llm.generate([{"prompt_token_ids": p.tolist()} for p in prompts], params, use_tqdm=False)
        return sum(len(r.outputs[0].token_ids) for r in res)

    def ours(stop: StopRule | None) -> int:
        gens = backend.generate(prompts, n=1, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0,
                                seed=1, stop=stop)
        return sum(len(g.ids) for g in gens)

    def timed(fn: Any) -> tuple[float, float]:
        fn()  # warm-up (graph capture, prefix cache)
        sync(device)
        t = time.perf_counter()
        n = fn()
        sync(device)
        dt = time.perf_counter() - t
        return n / dt, dt

    plain_tps, plain_s = timed(plain)
    ours_tps, ours_s = timed(lambda: ours(None))
    fmt = ThoughtFormat.for_tokenizer(tok, "</thought>", scan_vocab=False)
    rule = StopRule(fmt, max_thought_tokens=max(8, new_tokens // 4), max_thoughts=64)
    rule_tps, rule_s = timed(lambda: ours(rule))
    out: dict[str, Any] = dict(
        status="measured", plain_tokens_per_s=plain_tps, plain_s=plain_s,
        backend_tokens_per_s=ours_tps, backend_s=ours_s, ratio=ours_tps / plain_tps,
        meets_target=ours_tps / plain_tps >= VLLM_TARGET_RATIO,
        thought_rule_tokens_per_s=rule_tps, thought_rule_s=rule_s,
        thought_rule_ratio=rule_tps / plain_tps, backend_stats=backend.pop_stats())
    try:
        t = time.perf_counter()
        backend.sync_weights(model)  # full-weight path into the in-process engine
        sync(device)
        out["sync_weights_s"] = time.perf_counter() - t
    except RuntimeError as err:  # an engine whose model is out of reach: recorded, not hidden
        out["sync_weights_s"] = f"failed: {err}"
    return out


def _greedy_after_sync(llm: Any, model: Any, device: torch.device, prompts: list[Any],
                       new_tokens: int, eos: list[int]) -> dict[str, Any]:
    """Perturb the weights, sync them into the engine, and compare greedy continuations with
    transformers' (all prompts have one length, so the reference batch needs no padding)."""
    from respo.llm.vllm_backend import VLLMBackend

    backend = VLLMBackend(llm, eos_ids=eos)

    def engine_greedy() -> list[list[int]]:
        gens = backend.generate(prompts, n=1, max_new_tokens=new_tokens, temperature=0.0, top_p=1.0, seed=0)
        return [g.ids.tolist() for g in gens]

    gen = torch.Generator(device="cpu").manual_seed(1)
    with torch.no_grad():  # weights the engine has not seen
        for p in model.parameters():
            p.add_((torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype))
    before = engine_greedy()
    backend.sync_weights(model)
    after = engine_greedy()
    with torch.no_grad():
        ids = torch.as_tensor(np.stack(prompts), device=device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=eos[0])
    ref = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        ref.append(row[:cut])

    def prefix(a: list[int], b: list[int]) -> int:
        return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    return {"rows": len(ref), "rows_equal": sum(a == r for a, r in zip(after, ref, strict=True)),
            "greedy_equal": after == ref,
            "mean_common_prefix": float(np.mean([prefix(a, r) for a, r in zip(after, ref, strict=True)])),
            "rows_equal_before_sync": sum(b == r for b, r in zip(before, ref, strict=True)),
            "mean_common_prefix_before_sync": float(np.mean([prefix(b, r) for b, r in zip(before, ref, strict=True)]))}


def vllm_section(model: Any, tok: Any, device: torch.device, *, small: bool) -> dict[str, Any]:
    """Time VLLMBackend against plain vLLM on the same prompts (see the module docstring)."""
    missing = None
    if not has_vllm():
        missing = "not measured (vllm not installed)"
    elif device.type != "cuda":
        missing = "not measured (no CUDA device)"
    if missing is not None:
        return {k: missing for k in ("status", "ratio", "backend_tokens_per_s", "plain_tokens_per_s")}
    import gc
    import tempfile

    # In-process engine, so that the full-weight sync path (which reaches the model inside the
    # engine) can be timed too; set before vLLM is imported.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from respo.llm.vllm_backend import make_engine

    batch, prompt_len, new_tokens = (4, 16, 16) if small else (32, 128, 256)
    gen = np.random.default_rng(0)
    prompts = [gen.integers(10, 90, size=prompt_len).astype(np.int64) for _ in range(batch)]
    eos = [int(tok.eos_token_id)]
    out: dict[str, Any] = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
                           "target_ratio": VLLM_TARGET_RATIO}
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        engine: Any = None
        try:
            engine = make_engine(folder, max_model_len=2048, gpu_memory_utilization=0.35,
                                 skip_tokenizer_init=True)
            out.update(_time_vllm(engine, model, tok, device, prompts, new_tokens, eos))
            out["greedy_after_sync"] = _greedy_after_sync(engine, model, device, prompts, new_tokens, eos)
        except Exception as err:  # recorded in the report, not hidden: the other figures still count
            out["status"] = f"failed: {err!r}"
        finally:
            del engine
            gc.collect()
            torch.cuda.empty_cache()
    for k in ("ratio", "backend_tokens_per_s", "plain_tokens_per_s"):
        out.setdefault(k, out["status"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_smoke.json", help="JSON report path")
    ap.add_argument("--archs", default="smollm2-135m,llama-1b", help="comma-separated: " + ",".join(ARCHS))
    ap.add_argument("--srpo-steps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per SRPO step")
    ap.add_argument("--response-tokens", type=int, default=256)
    ap.add_argument("--localize-tokens", type=int, default=128)
    ap.add_argument("--cpu-test", action="store_true", help="tiny architecture on the CPU (dry run)")
    args = ap.parse_args(argv)

    device = torch.device("cpu" if args.cpu_test or not torch.cuda.is_available() else "cuda")
    archs = ["cpu-test"] if args.cpu_test else args.archs.split(",")
    peak, dev_name = peak_flops(device)
    import transformers

    report: dict[str, Any] = {
        "device": dev_name, "peak_bf16_flops": peak, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "models": {},
    }
    vllm_here = has_vllm()
    report["vllm"] = {"installed": vllm_here, "models": {},
                      "status": "see models" if vllm_here else "not measured (vllm not installed)"}

    out_path = Path(args.out)
    for arch in archs:
        t0 = time.perf_counter()
        print(f"[{arch}] building (random init) ...", flush=True)
        model, tok = build(arch, device, seed=0)
        entry: dict[str, Any] = {"params": n_params(model), "vocab": len(tok)}
        small = args.cpu_test
        entry["generate"] = bench_generate(model, tok, device, batch=4 if small else 32,
                                           new_tokens=16 if small else 256,
                                           prompt_len=16 if small else 128)
        print(f"[{arch}] generate: {entry['generate']['tokens_per_s']:.0f} tokens/s", flush=True)
        entry["train_step"] = bench_train_step(model, device, batch=2 if small else 8,
                                               seq=32 if small else 1024, peak=peak)
        print(f"[{arch}] train step: {entry['train_step']['seconds']:.3f} s, "
              f"MFU {entry['train_step']['mfu']}", flush=True)
        entry["srpo"] = run_srpo(model, tok, device, steps=1 if small else args.srpo_steps,
                                 prompts=1 if small else args.prompts,
                                 response_tokens=24 if small else args.response_tokens,
                                 localize_tokens=16 if small else args.localize_tokens, peak=peak)
        entry["vllm"] = vllm_section(model, tok, device, small=small)
        report["vllm"]["models"][arch] = entry["vllm"]
        print(f"[{arch}] vllm: {entry['vllm']['ratio']}", flush=True)
        entry["wall_s"] = time.perf_counter() - t0
        report["models"][arch] = entry
        # Write after each model so a timeout keeps what finished.
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out_path)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
