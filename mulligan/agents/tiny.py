"""The offline tiny model: a small Llama-architecture causal LM and a byte-level tokenizer.

Everything here is built from a config, with no download, and saved with ``save_pretrained`` so
that ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
load it like any hub model. It is the embedded default of every command and test (``--model
tiny``), and the proof that nothing in mulligan assumes a particular hub model.

The tokenizer is byte-level: every UTF-8 byte is one token, so any text round-trips exactly, and
five special tokens frame a ChatML-style chat template::

    <|im_start|>user
    What is 2+2?<|im_end|>
    <|im_start|>assistant
    4<|im_end|>

``<|im_end|>`` is the end-of-sequence token, so generation stops at the end of a turn.

The tiny *encoder-decoder* (``--model tiny-seq2seq``, :func:`build_tiny_seq2seq`) is a small
T5 of FLAN-T5's architecture (gated-GELU feed-forward, relative position buckets; tied
embeddings, unlike FLAN-T5, so that it learns quickly) with the same byte tokenizer and no chat
template. The sub-goal paper trains FLAN-T5 models (arXiv 2405.02749, Sec. 4); this is the
offline stand-in that runs the same seq2seq code path as ``google/flan-t5-large``
(:mod:`mulligan.agents.seq2seq`). The pad token starts the decoder, as in T5.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|im_end|>", "<|im_start|>", "<|unk|>")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of the tiny model (defaults give about 1.6 M parameters).

    Attributes:
        hidden_size: Width of the residual stream.
        num_hidden_layers: Transformer blocks.
        num_attention_heads: Attention heads per block.
        intermediate_size: Width of the MLP.
        max_position_embeddings: Longest sequence, in bytes (tokens).
        seed: Seed of the random initialisation.
    """

    hidden_size: int = 128
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )


def build_tiny_tokenizer(chat_template: bool = True):
    """A byte-level ``PreTrainedTokenizerFast``; no download.

    Args:
        chat_template: Attach the ChatML template above; without it, every consumer renders the
            plain format of :mod:`mulligan.training.chat` (as for a base model).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # BPE with the 256-symbol byte alphabet and no merges is exactly a byte tokenizer.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE if chat_template else None
    return tokenizer


def build_tiny_model(config: TinyModelConfig | None = None, chat_template: bool = True):
    """Return ``(model, tokenizer)``: a freshly initialised tiny Llama and its byte tokenizer.

    Args:
        config: Model size and seed.
        chat_template: Give the tokenizer the ChatML template (see :func:`build_tiny_tokenizer`).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config or TinyModelConfig()
    tokenizer = build_tiny_tokenizer(chat_template)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    # Seed a private generator-free scope: initialisation must not depend on global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, tokenizer


@dataclass(frozen=True)
class TinySeq2SeqConfig:
    """Size of the tiny T5-style encoder-decoder (defaults give about 0.8 M parameters).

    Attributes:
        d_model: Width of the residual stream.
        num_layers: Encoder blocks (the decoder has as many).
        num_heads: Attention heads per block.
        d_ff: Width of the gated feed-forward layer.
        seed: Seed of the random initialisation.
    """

    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_model", "num_layers", "num_heads", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")


def build_tiny_seq2seq(config: TinySeq2SeqConfig | None = None):
    """Return ``(model, tokenizer)``: a freshly initialised tiny T5 (FLAN-T5's layout) and the byte tokenizer.

    The tokenizer has no chat template (a seq2seq model reads the prompt text itself) and pads on
    the right, as T5's encoder expects.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = config or TinySeq2SeqConfig()
    tokenizer = build_tiny_tokenizer(chat_template=False)
    tokenizer.padding_side = "right"
    model_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_layers,
        num_heads=config.num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        # Tied embeddings scale the decoder output by d_model**-0.5 (T5's rule): untied, a fresh
        # tiny T5 starts with logits of std ~10 and learns far more slowly.
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = T5ForConditionalGeneration(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_tiny_model(directory: str | os.PathLike, config: TinyModelConfig | TinySeq2SeqConfig | None = None) -> Path:
    """Build the tiny model (or, for a :class:`TinySeq2SeqConfig`, the tiny seq2seq) and save it with its tokenizer."""
    directory = Path(directory)
    if isinstance(config, TinySeq2SeqConfig):
        model, tokenizer = build_tiny_seq2seq(config)
    else:
        model, tokenizer = build_tiny_model(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "mulligan_tiny.json").write_text(json.dumps(asdict(config or TinyModelConfig()), indent=2))
    return directory


def default_cache_dir() -> Path:
    """Where :func:`tiny_model_path` caches built models (``$MULLIGAN_CACHE`` or ``~/.cache/mulligan``)."""
    return Path(os.environ.get("MULLIGAN_CACHE", Path.home() / ".cache" / "mulligan"))


def tiny_model_path(
    config: TinyModelConfig | TinySeq2SeqConfig | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A directory holding the tiny model (or tiny seq2seq) for ``config``, built on first use and reused after."""
    config = config or TinyModelConfig()
    key = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:10]
    # The seq2seq recipe's version is part of its folder name: a cached model of an older recipe is rebuilt.
    kind = f"tiny-seq2seq-v{TINY_SEQ2SEQ_VERSION}" if isinstance(config, TinySeq2SeqConfig) else "tiny"
    directory = Path(cache_dir or default_cache_dir()) / f"{kind}-{key}"
    if not (directory / "config.json").exists() or not (directory / "tokenizer.json").exists():
        # Build into a temporary sibling and rename, so concurrent callers never see half a model.
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        save_tiny_model(tmp, config)
        try:
            tmp.rename(directory)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def resolve_model(name_or_path: str, **tiny_overrides: Any) -> str:
    """Map ``"tiny"`` / ``"tiny-seq2seq"`` to the cached tiny models' paths; return anything else unchanged.

    This is how every command accepts ``--model tiny`` (and ``--model tiny-seq2seq``) next to hub
    ids and local paths.
    """
    if name_or_path == "tiny":
        return str(tiny_model_path(TinyModelConfig(**tiny_overrides) if tiny_overrides else None))
    if name_or_path == TINY_SEQ2SEQ:
        return str(tiny_model_path(TinySeq2SeqConfig(**tiny_overrides)))
    return name_or_path


#: The keyword of the offline tiny encoder-decoder.
TINY_SEQ2SEQ = "tiny-seq2seq"
#: Bumped when :func:`build_tiny_seq2seq` changes, so that cached copies are rebuilt.
TINY_SEQ2SEQ_VERSION = 2
