"""Turn a multi-turn conversation into token ids and the mask that separates model from env tokens.

Every trainer learns only the agent's own tokens: NAT and RISE compute the loss on assistant turns,
GRPO passes the mask to TRL as ``env_mask``, and PPO runs GAE over the model's tokens only. This
module is the one place that decides which token belongs to whom.

The conversation is rendered with the tokenizer's chat template one message at a time: the text
that message ``k`` adds to the rendering of messages ``0..k-1`` is that message's span. For an
assistant message the span is split into the template's header (``<|im_start|>assistant\\n``, the
generation prompt, not learned) and the rest (content and end-of-turn marker, learned). Tokenizers
without a chat template use :data:`PLAIN_FORMAT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Plain conversation format for tokenizers that have no chat template: one block per message,
#: ``"<Role>: <content>\\n"``, with the assistant header ``"Assistant: "`` as the generation prompt.
PLAIN_FORMAT = "{role}: {content}\n"
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages in :data:`PLAIN_FORMAT` (for tokenizers without a chat template)."""
    text = "".join(
        PLAIN_FORMAT.format(role=PLAIN_ROLES.get(m["role"], m["role"].title()), content=m["content"])
        for m in messages
    )
    return text + ("Assistant: " if add_generation_prompt else "")


def render_conversation(tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages with the tokenizer's chat template, or :func:`render_plain` when it has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return render_plain(messages, add_generation_prompt)


@dataclass
class TokenizedEpisode:
    """A conversation as tokens.

    Attributes:
        input_ids: Token ids of the whole rendered conversation.
        assistant_mask: 1 for tokens the agent produced (content and end-of-sequence token of
            assistant messages), 0 for everything else (system, user/env turns, assistant headers,
            template text after the end-of-sequence token).
        turn_index: For each token, the index of the message it belongs to.
        text: The rendered conversation.
    """

    input_ids: list[int]
    assistant_mask: list[int]
    turn_index: list[int]
    text: str

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_conversation(
    tokenizer,
    messages: Sequence[dict[str, str]],
    *,
    learn_turns: Sequence[int] | None = None,
) -> TokenizedEpisode:
    """Tokenize ``messages`` and mask out everything the agent did not write.

    Args:
        tokenizer: A Hugging Face tokenizer.
        messages: Chat messages; assistant messages are the agent's actions.
        learn_turns: Indices (into ``messages``) of the assistant messages to learn; default all.
            RISE learns only the last turn of each sample (Sec. 4.2), NAT every agent turn.

    Raises:
        ValueError: When the chat template does not render conversations incrementally (the
            rendering of a prefix is not a prefix of the rendering of the whole), so that spans
            cannot be attributed to messages.
    """
    if not messages:
        raise ValueError("cannot tokenize an empty conversation")
    learn = set(range(len(messages))) if learn_turns is None else set(learn_turns)
    input_ids: list[int] = []
    mask: list[int] = []
    turns: list[int] = []
    rendered = ""

    def add(text: str, learned: bool, turn: int) -> None:
        if not text:
            return
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        mask.extend([int(learned)] * len(ids))
        turns.extend([turn] * len(ids))

    eos = getattr(tokenizer, "eos_token", None)
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            with_header = render_conversation(tokenizer, messages[:k], add_generation_prompt=True)
            _check_prefix(rendered, with_header, k)
            add(with_header[len(rendered):], False, k)
            rendered = with_header
        full = render_conversation(tokenizer, messages[: k + 1])
        _check_prefix(rendered, full, k)
        span = full[len(rendered):]
        learned = message["role"] == "assistant" and k in learn
        # The model stops at its end-of-sequence token; whatever the template writes after it (a
        # newline in ChatML) is never generated, so it is context, not a learned token.
        cut = span.rfind(eos) + len(eos) if learned and eos and eos in span else len(span)
        add(span[:cut], learned, k)
        add(span[cut:], False, k)
        rendered = full
    return TokenizedEpisode(input_ids, mask, turns, rendered)


def _check_prefix(prefix: str, text: str, k: int) -> None:
    if not text.startswith(prefix):
        raise ValueError(
            f"the chat template does not render message {k} incrementally (the rendering of the first "
            f"{k} messages is not a prefix of the next rendering); pass a tokenizer whose template "
            "renders conversations append-only, or set tokenizer.chat_template to one that does"
        )
