"""The offline tiny model: builds without a download and loads back like any hub model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mulligan.agents.tiny import (
    SPECIAL_TOKENS,
    TinyModelConfig,
    build_tiny_model,
    build_tiny_tokenizer,
    resolve_model,
    save_tiny_model,
    tiny_model_path,
)

SMALL = TinyModelConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny"), SMALL)
    return directory


def test_round_trip_through_from_pretrained_gives_identical_logits(saved):
    model, tokenizer = build_tiny_model(SMALL)
    loaded = AutoModelForCausalLM.from_pretrained(saved)
    loaded_tokenizer = AutoTokenizer.from_pretrained(saved)
    text = "<|im_start|>user\nhi there<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert loaded_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert (
        loaded.config.eos_token_id
        == loaded_tokenizer.eos_token_id
        == loaded_tokenizer.convert_tokens_to_ids("<|im_end|>")
    )
    assert loaded_tokenizer.padding_side == "left"
    assert json.loads((saved / "mulligan_tiny.json").read_text())["hidden_size"] == 32


def test_parameter_count_is_in_the_promised_range():
    model, _ = build_tiny_model()
    count = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= count <= 10_000_000


def test_same_config_builds_the_same_weights():
    first, _ = build_tiny_model(SMALL)
    second, _ = build_tiny_model(SMALL)
    other, _ = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "seed": 1}))
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters(), strict=True))


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii",
        "naïve café",
        "数学题 ½ ∑ x²",
        "emoji 🙂🚀 and 𝐀",
        "tabs\tand\nnewlines\r\n",
        "\x00\x1b\x7f",
        "",
        "<|im_end|> is just text only when written by a template",
    ],
)
def test_byte_tokenizer_round_trips_any_text(text):
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    if "<|" not in text:
        # Byte-level: one token per UTF-8 byte, never the unknown token.
        assert len(ids) == len(text.encode("utf-8"))
        assert tokenizer.unk_token_id not in ids


def test_special_tokens_are_single_tokens():
    tokenizer = build_tiny_tokenizer()
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert (
        tokenizer.decode(tokenizer("a<|im_end|>", add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        == "a"
    )


def test_chat_template_renders_chatml_with_generation_prompt(saved):
    tokenizer = AutoTokenizer.from_pretrained(saved)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert without == text[: -len("<|im_start|>assistant\n")]


def test_the_tokenizer_can_be_built_without_a_chat_template(tmp_path):
    # A base-model stand-in: every consumer then renders the one plain format (mulligan.training.chat).
    from mulligan.training.chat import has_chat_template, render

    plain = build_tiny_tokenizer(chat_template=False)
    assert not has_chat_template(plain) and has_chat_template(build_tiny_tokenizer())
    assert render(plain, [{"role": "user", "content": "2+2?"}], add_generation_prompt=True) == "User: 2+2?\nAssistant: "
    model, tokenizer = build_tiny_model(SMALL, chat_template=False)
    assert not has_chat_template(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id
    tokenizer.save_pretrained(tmp_path)
    assert not has_chat_template(AutoTokenizer.from_pretrained(tmp_path))


def test_tiny_model_path_caches_and_resolve_model_maps_the_keyword(tmp_path, monkeypatch):
    monkeypatch.setenv("MULLIGAN_CACHE", str(tmp_path))
    first = tiny_model_path(SMALL)
    assert (first / "config.json").exists() and (first / "tokenizer.json").exists()
    mtime = (first / "config.json").stat().st_mtime_ns
    assert tiny_model_path(SMALL) == first
    assert (first / "config.json").stat().st_mtime_ns == mtime
    assert resolve_model("tiny", **SMALL.__dict__) == str(first)
    assert resolve_model("some/hub-id") == "some/hub-id"
    assert tiny_model_path(TinyModelConfig(**{**SMALL.__dict__, "seed": 5})) != first


@pytest.mark.parametrize(
    "bad", [{"hidden_size": 0}, {"hidden_size": 30, "num_attention_heads": 4}, {"num_hidden_layers": -1}]
)
def test_config_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        TinyModelConfig(**bad)
