"""The one routine that decides which tokens are the model's: exact masks on known conversations."""

from __future__ import annotations

import pytest

from mulligan.agents.tiny import build_tiny_tokenizer
from mulligan.training.tokens import render_plain, tokenize_conversation

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "The answer is incorrect. Please try again."},
    {"role": "assistant", "content": "4 🙂"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def learned_text(tokenizer, episode) -> str:
    return tokenizer.decode([t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if m])


def test_mask_covers_exactly_the_assistant_contents_and_eos(tokenizer):
    episode = tokenize_conversation(tokenizer, CONVERSATION)
    assert learned_text(tokenizer, episode) == "5<|im_end|>4 🙂<|im_end|>"
    # The ids are those of the whole rendering: masking never changes what the model is fed.
    assert episode.input_ids == tokenizer(episode.text, add_special_tokens=False)["input_ids"]
    assert len(episode.input_ids) == len(episode.assistant_mask) == len(episode.turn_index)


def test_env_and_header_tokens_are_never_learned(tokenizer):
    episode = tokenize_conversation(tokenizer, CONVERSATION)
    env_text = tokenizer.decode([t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if not m])
    assert "What is 2+2?" in env_text and "Please try again." in env_text
    assert env_text.count("<|im_start|>assistant\n") == 2
    for token, turn, mask in zip(episode.input_ids, episode.turn_index, episode.assistant_mask, strict=True):
        if CONVERSATION[turn]["role"] != "assistant":
            assert mask == 0, tokenizer.decode([token])


def test_learn_turns_selects_the_last_turn_only(tokenizer):
    # RISE learns the last turn of each sample; earlier turns are context (Sec. 4.2).
    episode = tokenize_conversation(tokenizer, CONVERSATION, learn_turns=[4])
    assert learned_text(tokenizer, episode) == "4 🙂<|im_end|>"


def test_tokenizer_without_chat_template_uses_the_plain_format(tokenizer):
    plain = build_tiny_tokenizer()
    plain.chat_template = None
    episode = tokenize_conversation(plain, CONVERSATION[1:3])
    assert episode.text == render_plain(CONVERSATION[1:3]) == "User: What is 2+2?\nAssistant: 5\n"
    # No EOS text in the plain format: the whole assistant line is learned.
    assert learned_text(plain, episode) == "5\n"


def test_non_incremental_template_is_rejected_with_the_fix(tokenizer):
    odd = build_tiny_tokenizer()
    odd.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="incrementally"):
        tokenize_conversation(odd, CONVERSATION)
    with pytest.raises(ValueError, match="empty"):
        tokenize_conversation(tokenizer, [])
