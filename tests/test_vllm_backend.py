"""VLLMBackend against a fake vLLM engine (``vllm_fakes.FakeLLM``), with vLLM's own types when
vLLM imports (the CPU lane: ``make install`` puts vLLM, ``--no-deps``, where the tests find it).

Tests that build sampling parameters or LoRA requests run once per lane (``lane`` fixture:
``fake``, and ``vllm`` when importable, else skipped); the engine stays the fake (a live engine
needs a GPU: ``experiments/gpu_smoke.py``).
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import math
import sys
import threading
import zlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from llm_fixtures import TOY_PROBLEM, ToyTask, tiny_lm, tiny_tokenizer
from vllm_fakes import FAKE_TYPES, LANE_TYPES, FakeLLM, FakeParams, TokenFn, lp_of

from respo.llm.generation import GenerationBackend, GroupBackend, StopRule
from respo.llm.thoughts import ThoughtFormat, split_thoughts
from respo.llm.vllm_backend import (
    NEUTRAL_SAMPLING,
    SEED_MOD,
    ServerEngine,
    VLLMBackend,
    VLLMTypes,
    _http,
    engine_kwargs,
    hf_weights,
    load_weights_into_engine,
    make_engine,
    server_types,
)
from respo.seeding import int_seed_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TYPES = FAKE_TYPES
"""The types ``backend()`` injects: the current lane's (set by the ``lane`` fixture)."""


@pytest.fixture(params=["fake", "vllm"])
def lane(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    """Run a test with the fake types, then with vLLM's (skipped where vLLM does not import)."""
    global TYPES
    types = LANE_TYPES[request.param]
    if types is None:
        pytest.skip("vllm not importable (the CPU lane installs it with `make install`)")
    TYPES = VLLMTypes(types.sampling_params, types.lora_request)
    yield types
    TYPES = FAKE_TYPES


TOK = tiny_tokenizer()
EOS = int(TOK.eos_token_id)


def ids(text: str) -> list[int]:
    return list(TOK.encode(text, add_special_tokens=False))


def random_tokens(alphabet: str = "abcde \n", *, seeded: bool = True) -> TokenFn:
    """A deterministic pseudo-random "model": the next token hashes (context[, seed])."""
    pool = ids(alphabet)

    def fn(ctx: list[int], prompt_len: int, seed: int) -> int:
        h = zlib.crc32(np.asarray(ctx, dtype=np.int64).tobytes())
        rng = np.random.default_rng([seed % 2**32 if seeded else 0, h, len(ctx)])
        return pool[int(rng.integers(len(pool)))]

    return fn


def scripted(text: str, *, repeat: bool = True) -> TokenFn:
    """Every request generates ``text`` (again and again when ``repeat``) from its own prompt."""
    script = ids(text)

    def fn(ctx: list[int], prompt_len: int, seed: int) -> int:
        k = len(ctx) - prompt_len
        return script[k % len(script)] if repeat or k < len(script) else script[-1]

    return fn


def backend(token_fn: TokenFn | None = None, **kw: Any) -> tuple[VLLMBackend, FakeLLM]:
    eng = FakeLLM(token_fn or random_tokens(), **{k: kw.pop(k) for k in
                                                  ("reverse_outputs", "honor_stop", "max_model_len",
                                                   "busy_reset") if k in kw})
    return VLLMBackend(eng, eos_ids=[EOS], types=TYPES, **kw), eng


PREFIX = np.asarray(ids("Q: what is 2+3?\nstep one\n"), dtype=np.int64)
FMT = ThoughtFormat.for_tokenizer(TOK, "\n")


def assert_aligned(prompt: np.ndarray, g: Any) -> None:
    """Sampled tokens carry the fake's log-prob at their absolute position; forced ones NaN."""
    assert g.logprobs.shape == g.ids.shape and g.logprobs.dtype == np.float32
    nan = np.isnan(g.logprobs)
    assert int(nan.sum()) == g.n_forced
    for k, (t, lp) in enumerate(zip(g.ids.tolist(), g.logprobs.tolist(), strict=True)):
        if not math.isnan(lp):
            assert lp == pytest.approx(lp_of(len(prompt) + k, t), abs=1e-6)


# -- the protocol and the missing-vLLM error --------------------------------------------------------


def test_satisfies_generation_protocols() -> None:
    be, _ = backend()
    assert isinstance(be, GenerationBackend) and isinstance(be, GroupBackend)


def test_missing_vllm_gives_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as on a machine without it
    with pytest.raises(ImportError, match=r"pip install 'respo\[vllm\]'"):
        VLLMBackend(model="Qwen/Qwen2.5-14B-Instruct", eos_ids=[EOS])
    with pytest.raises(ImportError, match=r"respo\[vllm\]"):
        VLLMBackend(FakeLLM(random_tokens()), eos_ids=[EOS])  # no types injected: needs vllm's
    with pytest.raises(ImportError, match=r"respo\[vllm\]"):
        make_engine("Qwen/Qwen2.5-14B-Instruct")


def test_bad_arguments() -> None:
    be, _ = backend()
    kw: dict[str, Any] = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, seed=0)
    with pytest.raises(ValueError):
        be.generate([PREFIX], n=0, **kw)
    with pytest.raises(ValueError):
        be.generate([np.zeros(0, dtype=np.int64)], n=1, **kw)
    with pytest.raises(ValueError):
        be.generate_groups([PREFIX], [1, 2], **kw)
    with pytest.raises(ValueError):
        be.generate([PREFIX], n=1, max_new_tokens=4, temperature=1.0, top_p=0.0, seed=0)
    with pytest.raises(ValueError, match="EOS"):
        VLLMBackend(FakeLLM(random_tokens()), types=FAKE_TYPES)
    with pytest.raises(ValueError, match="fanout"):
        VLLMBackend(FakeLLM(random_tokens()), eos_ids=[EOS], types=FAKE_TYPES, fanout="tree")  # type: ignore[arg-type]


# -- token-exact continuation, parameters, log-prob alignment -----------------------------------------


def test_continuation_is_token_exact_with_the_documented_params(lane: Any) -> None:
    be, eng = backend(random_tokens())
    gens = be.continue_group(PREFIX, 3, max_new_tokens=12, temperature=0.7, top_p=0.95, seed=11)
    assert len(gens) == 3 and len(eng.calls) == 1
    prompts, params, lora = eng.calls[0]
    assert prompts == [PREFIX.tolist()] * 3, "each row is a request on the exact prefix ids"
    assert lora is None
    ref = FakeLLM(random_tokens())
    for j, (p, g) in enumerate(zip(params, gens, strict=True)):
        assert (p.n, p.temperature, p.top_p, p.max_tokens) == (1, 0.7, 0.95, 12)
        assert (p.logprobs, p.stop_token_ids, p.ignore_eos, p.detokenize) == (0, [EOS], True, False)
        assert p.seed == int_seed_for(11, "generation", j) % SEED_MOD
        # the generation holds the new ids only (no prompt): exactly the engine's stream for row j
        (want,) = ref.generate([{"prompt_token_ids": PREFIX.tolist()}],
                               FakeParams(n=1, max_tokens=12, seed=p.seed, stop_token_ids=[EOS]))
        assert g.ids.tolist() == want.outputs[0].token_ids
        assert_aligned(PREFIX, g)
    assert len({tuple(g.ids.tolist()) for g in gens}) > 1, "rows have different seeds"


def test_rows_depend_only_on_prompt_seed_and_index(lane: Any) -> None:
    be, _ = backend(random_tokens())
    kw: dict[str, Any] = dict(max_new_tokens=10, temperature=1.0, top_p=1.0)
    four = be.continue_group(PREFIX, 4, seed=3, **kw)
    two = be.continue_group(PREFIX, 2, seed=3, **kw)
    assert [g.ids.tolist() for g in two] == [g.ids.tolist() for g in four[:2]]
    other = be.continue_group(PREFIX, 2, seed=4, **kw)
    assert [g.ids.tolist() for g in other] != [g.ids.tolist() for g in two]


def test_groups_keep_order_counts_limits_and_match_one_call_per_prompt(lane: Any) -> None:
    be, eng = backend(random_tokens())
    prompts = [np.asarray(ids(t), dtype=np.int64) for t in ("hi\n", "a longer prompt\n", "mid?\n")]
    counts, limits, seeds = [2, 1, 3], [5, 9, 7], [101, 202, 303]
    stop = StopRule(FMT, max_thought_tokens=50, max_thoughts=50)
    groups = be.generate_groups(prompts, counts, max_new_tokens=limits, temperature=1.0, top_p=1.0,
                                seed=seeds, stop=[stop, None, stop])
    assert [len(g) for g in groups] == counts
    for i, p in enumerate(prompts):
        alone = be.continue_group(p, counts[i], max_new_tokens=limits[i], temperature=1.0, top_p=1.0,
                                  seed=seeds[i], stop=[stop, None, stop][i])
        assert [g.ids.tolist() for g in groups[i]] == [g.ids.tolist() for g in alone]
        for g in groups[i]:
            assert len(g.ids) <= limits[i]
            assert_aligned(p, g)
    first_call_prompts = eng.calls[0][0]
    assert first_call_prompts == [p.tolist() for i, p in enumerate(prompts) for _ in range(counts[i])]


def test_native_fanout_one_request_per_prompt_and_outputs_sorted_by_index(lane: Any) -> None:
    be, eng = backend(random_tokens(), fanout="native", reverse_outputs=True)
    prompts = [PREFIX, np.asarray(ids("hi\n"), dtype=np.int64)]
    groups = be.generate_groups(prompts, [3, 2], max_new_tokens=6, temperature=1.0, top_p=1.0,
                                seed=[7, 8])
    reqs, params, _ = eng.calls[0]
    assert reqs == [p.tolist() for p in prompts]
    assert [(p.n, p.seed) for p in params] == [(3, 7), (2, 8)]
    ref = FakeLLM(random_tokens())
    for i, p in enumerate(prompts):
        for j, g in enumerate(groups[i]):  # child j was seeded seed + j by the (fake) engine
            want = ref.generate([{"prompt_token_ids": p.tolist()}],
                                FakeParams(n=1, max_tokens=6, seed=[7, 8][i] + j, stop_token_ids=[EOS]))
            assert g.ids.tolist() == want[0].outputs[0].token_ids
            assert_aligned(p, g)


# -- StopRule: EOS, answer, max_thoughts, thought cap, max_new_tokens --------------------------------


@pytest.mark.parametrize("honor_stop", [True, False], ids=["engine-stops", "post-hoc-cut"])
def test_eos_is_kept_and_ends_the_row(honor_stop: bool, lane: Any) -> None:
    stream = ids("abc") + [EOS] + ids("xyz")  # an engine that ignores stop ids runs past the EOS
    be, _ = backend(lambda ctx, n, s: stream[(len(ctx) - n) % len(stream)], honor_stop=honor_stop)
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=20, temperature=1.0, top_p=1.0, seed=0)
    assert g.ids.tolist() == ids("abc") + [EOS]
    assert g.finished and g.stop_reason == "eos"
    stats = be.pop_stats()
    assert stats["vllm/foreign_stops"] == 0 and stats["vllm/discarded_tokens"] == (0 if honor_stop else 16)
    assert_aligned(PREFIX, g)


def test_an_engine_stop_outside_eos_ids_is_counted() -> None:
    eng = FakeLLM(scripted("ab!cd"))
    be = VLLMBackend(eng, eos_ids=[EOS], types=FAKE_TYPES)
    be._params = lambda *a: FakeParams(n=a[0], max_tokens=a[3], seed=a[4], logprobs=0,  # type: ignore[method-assign]
                                       stop_token_ids=[EOS, ids("!")[0]])
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=20, temperature=1.0, top_p=1.0, seed=0)
    assert g.ids.tolist() == ids("ab!") and g.stop_reason == "eos" and g.finished
    assert be.pop_stats()["vllm/foreign_stops"] == 1


def test_answer_stop_cuts_after_the_final_thought(lane: Any) -> None:
    be, eng = backend(scripted("ab\n\\boxed{3}\nmore text\n", repeat=False))
    stop = StopRule(FMT, max_thought_tokens=64, max_thoughts=20)
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=40, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    assert g.ids.tolist() == ids("ab\n\\boxed{3}\n")
    assert g.finished and g.stop_reason == "answer" and g.n_forced == 0
    assert len(eng.calls) == 1, "no forced thought end: one round"
    stats = be.pop_stats()
    assert stats["vllm/engine_tokens"] == 40 and stats["vllm/discarded_tokens"] == 40 - len(g.ids)
    assert_aligned(PREFIX, g)


def test_max_thoughts_stop(lane: Any) -> None:
    be, _ = backend(scripted("a\nb\nc\n"))
    stop = StopRule(FMT, max_thought_tokens=8, max_thoughts=2)
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=30, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    assert g.ids.tolist() == ids("a\nb\n") and g.stop_reason == "max_thoughts" and g.finished


def test_thought_cap_forces_the_delimiter_and_continues_token_exactly(lane: Any) -> None:
    be, eng = backend(scripted("abcdefghij\n"))
    stop = StopRule(FMT, max_thought_tokens=5, max_thoughts=3, overflow="force")
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=40, temperature=1.0, top_p=1.0, seed=9, stop=stop)
    # each thought: 4 sampled tokens + the forced "\n" (5 = max_thought_tokens), then a new round
    assert g.ids.tolist() == ids("abcd\n") * 3
    assert g.n_forced == 3 and g.stop_reason == "max_thoughts" and g.finished
    assert all(e - s <= 5 for s, e in split_thoughts(g.ids, FMT.delimiter))
    assert len(eng.calls) == 3
    round2 = eng.calls[1][0][0]
    assert round2 == PREFIX.tolist() + ids("abcd\n"), "a new round continues from the exact ids"
    assert eng.calls[1][1][0].max_tokens == 40 - 5, "the budget shrinks by what was generated"
    assert eng.calls[1][1][0].seed == int_seed_for(int_seed_for(9, "generation", 0), "round", 1) % SEED_MOD
    assert_aligned(PREFIX, g)
    assert np.isnan(g.logprobs[4]) and not np.isnan(g.logprobs[3])


def test_thought_cap_overflow_stop_cuts_without_a_new_round(lane: Any) -> None:
    be, eng = backend(scripted("abcdefghij\n"))
    stop = StopRule(FMT, max_thought_tokens=5, max_thoughts=3, overflow="stop")
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=40, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    assert g.ids.tolist() == ids("abcde") and g.stop_reason == "thought_limit" and not g.finished
    assert len(eng.calls) == 1


def test_max_new_tokens_cut(lane: Any) -> None:
    be, eng = backend(scripted("xyz"))
    gens = be.generate([PREFIX], n=2, max_new_tokens=9, temperature=1.0, top_p=1.0, seed=0)
    for g in gens:
        assert len(g.ids) == 9 and g.stop_reason == "length" and not g.finished
        assert_aligned(PREFIX, g)
    assert all(p.max_tokens == 9 for p in eng.calls[0][1])
    # forcing may not exceed the budget either: the cut lands inside the forced delimiter
    tag = ThoughtFormat.for_tokenizer(TOK, "</thought>")
    stop = StopRule(tag, max_thought_tokens=4, max_thoughts=10)
    (g,) = be.continue_group(PREFIX, 1, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    assert len(g.ids) == 6 and g.stop_reason == "length"


def test_round_cap_gives_the_same_ids_in_more_rounds(lane: Any) -> None:
    token_fn = random_tokens("abc \n", seeded=False)  # seed-free: rounds see the same stream
    stop = StopRule(FMT, max_thought_tokens=30, max_thoughts=20)
    kw: dict[str, Any] = dict(max_new_tokens=25, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    one, eng1 = backend(token_fn)
    capped, eng2 = backend(token_fn, max_tokens_per_round=4)
    a, b = one.continue_group(PREFIX, 2, **kw), capped.continue_group(PREFIX, 2, **kw)
    assert [g.ids.tolist() for g in a] == [g.ids.tolist() for g in b]
    assert len(eng1.calls) == 1 and len(eng2.calls) > 1
    assert all(p.max_tokens <= 4 for _, ps, _ in eng2.calls for p in ps)


# -- the sampler contract over the fake-backed backend -----------------------------------------------


@pytest.mark.parametrize("overflow", ["force", "stop"])
def test_lm_sampler_contract_over_vllm_backend(overflow: str, lane: Any) -> None:
    from contract import check_sampler_contract

    from respo.llm.sampler import LMSampler, SampleConfig

    be, _ = backend(random_tokens("abcdfghijklmnopqrstuvwxyz e\n"))  # answer "e": some chains fail
    cfg = SampleConfig(max_response_tokens=24, max_thought_tokens=6, max_thoughts=6, temperature=1.0,
                       top_p=1.0, delimiter="\n", prompt_variant="small", overflow=overflow)  # type: ignore[arg-type]
    sampler = LMSampler(be, TOK, ToyTask(), cfg=cfg)
    check_sampler_contract(sampler, None, sampler.root(TOY_PROBLEM), n=4, seed=0)
    # extend_many batches every request into one backend call with the same chains
    root = sampler.root(TOY_PROBLEM)
    many = sampler.extend_many(None, [((root,), 2, np.random.default_rng(5)), ((root,), 3, np.random.default_rng(6))])
    single = [sampler.extend(None, (root,), 2, rng=np.random.default_rng(5)),
              sampler.extend(None, (root,), 3, rng=np.random.default_rng(6))]
    for xs, ys in zip(many, single, strict=True):
        assert [c.states[-1].ids.tolist() for c in xs] == [c.states[-1].ids.tolist() for c in ys]


# -- weights -----------------------------------------------------------------------------------------


def _peft_tiny() -> Any:
    import warnings

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():  # peft reads a deprecated transformers attribute
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(copy.deepcopy(tiny_lm(0)), LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_hf_weights_merges_lora_without_touching_the_model() -> None:
    model = _peft_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = dict(hf_weights(model))
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(got) == set(merged) == set(tiny_lm(0).state_dict())
    for k, v in merged.items():
        torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-5, msg=k)
    assert any(not torch.equal(got[k], tiny_lm(0).state_dict()[k]) for k in got), "LoRA delta applied"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "the trainer's model must not be modified"
    plain = dict(hf_weights(tiny_lm(0)))
    assert all(torch.equal(plain[k], v) for k, v in tiny_lm(0).state_dict().items())


def test_sync_weights_full_path_loads_merged_weights_and_resets_the_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    be, eng = backend()
    model = _peft_tiny()
    be.sync_weights(model)
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    loaded = dict(eng.model.loaded)
    assert set(loaded) == set(merged)
    torch.testing.assert_close(loaded["model.layers.0.self_attn.q_proj.weight"],
                               merged["model.layers.0.self_attn.q_proj.weight"], atol=1e-5, rtol=1e-5)
    assert eng.resets == 1 and be.version == 1 and be.lora is None


def test_sync_weights_lora_path_saves_adapters_and_tags_requests(tmp_path: Any, lane: Any) -> None:
    be, eng = backend(adapter_dir=tmp_path / "adapters")
    model = _peft_tiny()
    be.sync_weights(model)
    first = tmp_path / "adapters" / "v000001"
    assert (first / "adapter_config.json").exists()
    assert (be.lora.lora_name, be.lora.lora_int_id, be.lora.lora_path) == ("respo-v1", 1, str(first))
    assert isinstance(be.lora, lane.lora_request)
    be.generate([PREFIX], n=2, max_new_tokens=3, temperature=1.0, top_p=1.0, seed=0)
    assert eng.calls[-1][2] == be.lora, "every request carries the current adapter"
    be.sync_weights(model)
    assert be.lora.lora_int_id == 2 and not first.exists(), "a new id per version; old folders go"
    assert eng.resets == 2 and eng.model.loaded == []
    with pytest.raises(TypeError, match="peft"):
        be.sync_weights(tiny_lm(0))


def test_full_weight_sync_needs_an_in_process_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match="collective_rpc"):
        load_weights_into_engine(SimpleNamespace(), iter([]))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(RuntimeError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        load_weights_into_engine(FakeLLM(random_tokens()), iter([]))


def test_a_busy_prefix_cache_reset_is_not_ignored(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's reset_prefix_cache() returns False (and resets nothing) while blocks are held."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    be, eng = backend(busy_reset=True)
    with pytest.raises(RuntimeError, match="prefix cache"):
        be.sync_weights(_peft_tiny())  # full weights: stale blocks would be served
    lora, _ = backend(busy_reset=True, adapter_dir=tmp_path / "adapters")
    lora.sync_weights(_peft_tiny())  # LoRA: blocks are keyed by the old adapter id, never reused
    assert lora.pop_stats()["vllm/cache_reset_failures"] == 1


# -- the five bugs found by reading vLLM 0.33 ---------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 4, 16, 48, 64, 300])
def test_bug1_lora_slot_rank_is_one_vllm_accepts(rank: int, lane: Any) -> None:
    kw = engine_kwargs("some/model", lora_rank=rank)
    config = lane.lora_config(kw["max_lora_rank"], kw["max_loras"])  # vLLM's LoRAConfig validation
    assert rank <= config.max_lora_rank
    lane.engine_args(kw)  # every name is an EngineArgs field
    with pytest.raises(ValueError, match="512"):
        engine_kwargs("some/model", lora_rank=1024)


def test_bug4_torchrun_engines_use_the_external_launcher(monkeypatch: pytest.MonkeyPatch, lane: Any) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert "distributed_executor_backend" not in engine_kwargs("m")
    monkeypatch.setenv("WORLD_SIZE", "4")
    kw = engine_kwargs("m", tensor_parallel_size=1)
    assert kw["distributed_executor_backend"] == "external_launcher"  # LOCAL_RANK's GPU, in-process
    lane.engine_args(kw)
    with pytest.raises(ValueError, match="tensor_parallel_size must be 1"):
        engine_kwargs("m", tensor_parallel_size=2)


def test_bug5_a_row_that_reaches_the_context_cap_ends_instead_of_aborting(lane: Any) -> None:
    stop = StopRule(FMT, max_thought_tokens=5, max_thoughts=50, overflow="force")
    room = 13  # the context holds the prefix plus 13 ids
    be, eng = backend(scripted("abcdefghij\n"), max_model_len=len(PREFIX) + room)
    gens = be.continue_group(PREFIX, 2, max_new_tokens=40, temperature=1.0, top_p=1.0, seed=0, stop=stop)
    for g in gens:
        assert len(g.ids) == room and g.stop_reason == "length" and not g.finished
        assert g.ids.tolist() == (ids("abcd\n") * 3)[:room]
        assert_aligned(PREFIX, g)
    for prompts, params, _ in eng.calls:  # every request fits: prompt + max_tokens <= max_model_len
        assert all(len(p) + sp.max_tokens <= len(PREFIX) + room for p, sp in zip(prompts, params, strict=True))
    with pytest.raises(ValueError, match="prompt 0 has"):
        backend(max_model_len=len(PREFIX))[0].generate([PREFIX], n=1, max_new_tokens=4, temperature=1.0,
                                                       top_p=1.0, seed=0)


def test_the_fake_engine_refuses_what_vllm_refuses() -> None:
    eng = FakeLLM(random_tokens(), max_model_len=len(PREFIX))
    with pytest.raises(ValueError, match="max_model_len"):
        eng.generate([{"prompt_token_ids": PREFIX.tolist()}], FakeParams())
    for bad in (dict(temperature=2.5), dict(temperature=0.0, n=2), dict(top_p=0.0), dict(max_tokens=0)):
        with pytest.raises(ValueError):
            FakeParams(**bad)  # type: ignore[arg-type]


def test_sampling_rules_vllm_refuses_are_refused_or_avoided(lane: Any) -> None:
    kw: dict[str, Any] = dict(max_new_tokens=4, top_p=1.0, seed=0)
    be, eng = backend(fanout="native")
    for t in (2.5, 0.001):  # vLLM refuses > 2 and silently raises < 0.01
        with pytest.raises(ValueError, match="temperature"):
            be.continue_group(PREFIX, 2, temperature=t, **kw)
    gens = be.continue_group(PREFIX, 3, temperature=0.0, **kw)  # greedy: n=1 requests, not one n=3
    assert [sp.n for sp in eng.calls[-1][1]] == [1, 1, 1] and len(gens) == 3
    assert all(sp.temperature == 0.0 for sp in eng.calls[-1][1])


def test_bug3_a_server_samples_exactly_what_the_backend_asks(lane: Any) -> None:
    """A vLLM server fills unset sampling fields from the model's generation_config.json."""
    qwen_defaults = {"top_k": 20, "top_p": 0.8, "temperature": 0.7, "repetition_penalty": 1.05,
                     "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": 0.5, "max_tokens": 64}
    be = VLLMBackend(ServerEngine("http://x:8000", "m", post=lambda *a: {}, max_model_len=8192),
                     eos_ids=[EOS], types=server_types())
    body = {"model": "m", "prompt": PREFIX.tolist(), "return_tokens_as_token_ids": True,
            **{k: v for k, v in be._params(1, 0.9, 0.95, 12, 5).items() if k != "detokenize"}}
    sp = lane.server_sampling(body, qwen_defaults)
    assert (sp.temperature, sp.top_p, sp.max_tokens, sp.seed) == (0.9, 0.95, 12, 5)
    assert (sp.top_k, sp.min_p, sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty) in (
        (0, 0.0, 1.0, 0.0, 0.0), (-1, 0.0, 1.0, 0.0, 0.0)), "no field may come from the server's defaults"
    assert set(NEUTRAL_SAMPLING) <= set(body)


class _PlainTextServer(http.server.BaseHTTPRequestHandler):
    """Answers like vLLM's server: /v1/load_lora_adapter with a plain-text 200, the rest JSON."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/load_lora_adapter":
            self._answer(b"Success: LoRA adapter 'respo-v1' added successfully.", None)
        else:
            self._answer(b'{"success": false}', "application/json")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(b'{"object": "list", "data": [{"id": "m", "max_model_len": 4096}]}', "application/json")

    def _answer(self, body: bytes, kind: str | None) -> None:
        self.send_response(200)
        if kind is not None:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_bug2_the_http_transport_reads_plain_text_answers() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainTextServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        got = _http(f"{url}/v1/load_lora_adapter", {"lora_name": "respo-v1", "lora_path": "/a"}, 5.0)
        assert got == {"text": "Success: LoRA adapter 'respo-v1' added successfully."}
        engine = ServerEngine(url, "m")
        assert engine.max_model_len == 4096, "read from /v1/models"
        assert engine.reset_prefix_cache() is False, "the server's success flag is passed on"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- a separate server through the OpenAI-compatible API (fake transport) ----------------------------


def test_server_engine_with_a_fake_transport() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    local = FakeLLM(random_tokens())

    def post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        sent.append((url, body))
        if not url.endswith("/v1/completions"):
            return {}
        p = FakeParams(**{k: body[k] for k in ("n", "max_tokens", "seed", "stop_token_ids")})
        (out,) = local.generate([{"prompt_token_ids": body["prompt"]}], p)
        return {"choices": [{"index": c.index, "finish_reason": c.finish_reason, "logprobs": {
            "tokens": [f"token_id:{t}" for t in c.token_ids],
            "token_logprobs": [d[t].logprob for t, d in zip(c.token_ids, c.logprobs, strict=True)]}}
            for c in out.outputs]}

    server = ServerEngine("http://trainer-node:8000/", "served-model", post=post, max_model_len=8192)
    be = VLLMBackend(server, eos_ids=[EOS], types=server_types())
    gens = be.continue_group(PREFIX, 2, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=1)
    ref, _ = backend(random_tokens())
    want = ref.continue_group(PREFIX, 2, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=1)
    assert [g.ids.tolist() for g in gens] == [g.ids.tolist() for g in want]
    for g in gens:
        assert_aligned(PREFIX, g)
    url, body = sent[0]
    assert url == "http://trainer-node:8000/v1/completions" and body["model"] == "served-model"
    assert body["prompt"] == PREFIX.tolist() and body["return_tokens_as_token_ids"] is True
    assert body["logprobs"] == 0 and "detokenize" not in body
    be.lora = server_types().lora_request("respo-v1", 1, "/shared/adapters/v000001")
    be.generate([PREFIX], n=1, max_new_tokens=2, temperature=1.0, top_p=1.0, seed=0)
    be.generate([PREFIX], n=1, max_new_tokens=2, temperature=1.0, top_p=1.0, seed=0)
    loads = [b for u, b in sent if u.endswith("/v1/load_lora_adapter")]
    assert loads == [{"lora_name": "respo-v1", "lora_path": "/shared/adapters/v000001"}], "loaded once"
    assert sent[-1][1]["model"] == "respo-v1"


# -- experiments/gpu_smoke.py: the vLLM section without vLLM ------------------------------------------


def test_gpu_smoke_reports_vllm_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM

    path = Path(__file__).resolve().parents[1] / "experiments" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke_for_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.vllm_section(None, None, torch.device("cpu"), small=True)
    assert out == {"status": "not measured (vllm not installed)", "ratio": "not measured (vllm not installed)",
                   "backend_tokens_per_s": "not measured (vllm not installed)",
                   "plain_tokens_per_s": "not measured (vllm not installed)"}
