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


def save_tiny_model(directory: str | os.PathLike, config: TinyModelConfig | None = None) -> Path:
    """Build the tiny model and tokenizer and save both to ``directory`` with ``save_pretrained``."""
    directory = Path(directory)
    model, tokenizer = build_tiny_model(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "mulligan_tiny.json").write_text(json.dumps(asdict(config or TinyModelConfig()), indent=2))
    return directory


def default_cache_dir() -> Path:
    """Where :func:`tiny_model_path` caches built models (``$MULLIGAN_CACHE`` or ``~/.cache/mulligan``)."""
    return Path(os.environ.get("MULLIGAN_CACHE", Path.home() / ".cache" / "mulligan"))


def tiny_model_path(config: TinyModelConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A directory holding the tiny model for ``config``, built on first use and reused after."""
    config = config or TinyModelConfig()
    key = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:10]
    directory = Path(cache_dir or default_cache_dir()) / f"tiny-{key}"
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
    """Map the keyword ``"tiny"`` to the cached tiny model's path; return anything else unchanged.

    This is how every command accepts ``--model tiny`` next to hub ids and local paths.
    """
    if name_or_path == "tiny":
        return str(tiny_model_path(TinyModelConfig(**tiny_overrides) if tiny_overrides else None))
    return name_or_path
