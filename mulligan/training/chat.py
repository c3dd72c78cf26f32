"""The one renderer: chat messages -> prompt text -> token ids, and the mask of the model's tokens.

Every consumer renders through this module: :class:`~mulligan.agents.hf.HFAgent` builds its prompt
with :func:`render` (``add_generation_prompt=True``), and every trainer tokenizes the recorded
conversation with :func:`tokenize_conversation` (or :func:`tokenize_turns`), so a model is trained
on exactly the format it samples with.

Formats
-------
A tokenizer with a chat template renders through ``tokenizer.apply_chat_template``. A tokenizer
without one uses the :data:`PLAIN_FORMAT`, one block per message::

    System: Be brief.
    User: What is 2+2?
    Assistant: 4<eos>
    User: ...
    Assistant:

An assistant block ends with the tokenizer's EOS token (when it has one), as a chat template ends
a turn with its end-of-turn token, so a model trained on the plain format learns to stop. The
generation prompt is ``"Assistant: "``. Agents also stop at :data:`PLAIN_FORMAT_STOP` so that an
untrained base model does not write the next user turn.

Masks
-----
Every trainer learns only the agent's own tokens: NAT and RISE compute the loss on assistant turns,
GRPO passes the mask to TRL as ``env_mask``, and PPO runs GAE over the model's tokens only. The
conversation is rendered one message at a time: the text that message ``k`` adds to the rendering
of messages ``0..k-1`` is that message's span. For an assistant message the span is split into the
template's header (the generation prompt, not learned) and the rest (content and EOS, learned);
whatever the template writes after the EOS token (ChatML's newline) is never generated, so it is
context, not learned.

Prefilled answers
-----------------
An assistant message may carry a ``"prefill"`` key (:data:`PREFILL_KEY`): its ``content`` begins with
that text, which the agent wrote into the prompt before the model generated (CORGI's ``- Output:``
primer, :func:`mulligan.agents.base.response_prefix`). It is rendered as part of the message, but
its tokens are context, not learned: the model learns the continuation with the prefix before it,
as it generated it. :meth:`~mulligan.training.trajectory.Trajectory.training_messages` sets the key.

Tool calls
----------
Conversations of an env in ``action_format="tools"`` (:mod:`mulligan.envs.tools`) are stored as text
like any other: an assistant message holds the tool call, the next user message its result. Every
function here takes ``tools=`` (the env's tool schemas, e.g. ``env.unwrapped.tools`` or
:func:`mulligan.agents.tools.tools_for_trajectory`): with a chat template, the conversation is then
rendered as tool messages (:func:`mulligan.agents.tools.tool_conversation`: ``tool_calls`` on the
assistant message, a ``tool`` message for the result) and the schemas through
``apply_chat_template(..., tools=...)``, exactly as :class:`~mulligan.agents.hf.HFAgent` renders its
prompt. Masks follow the messages: a tool result is the env's text (a user message in the stored
conversation), never learned; the call, as the template writes it, is the assistant's and learned.
Without a chat template ``tools`` is ignored (the plain format has no tool syntax).

Templates that are not append-only
----------------------------------
Some templates re-render earlier turns (reasoning models drop the ``<think>`` part of earlier
assistant turns), so the rendering of a prefix is not a prefix of the whole. Such a conversation
cannot be one sequence in which every turn is seen as the model saw it. The fallback, the same in
every consumer: each assistant turn ``k`` is its own sample, ``render(messages[:k],
add_generation_prompt=True)`` (exactly the prompt the agent sampled from) followed by the turn's
content and EOS (:func:`tokenize_turns`). :func:`tokenize_conversation` never raises on such a
template: it returns the sample of the *last* learned turn (its earlier turns are context, as the
template renders them) and warns that the other learned turns need :func:`tokenize_turns`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

#: Plain conversation format for tokenizers without a chat template: one ``"<Role>: <content>"``
#: block per message, an assistant block closed by the EOS token, every block ended by a newline.
PLAIN_FORMAT = "{role}: {content}{end}\n"
#: Role labels of the plain format (other roles are capitalised).
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
#: The plain format's generation prompt: an open assistant block.
PLAIN_GENERATION_PROMPT = "Assistant: "
#: Stop string for plain-format generation: the model must not write the next user turn.
PLAIN_FORMAT_STOP = "\nUser:"
#: Key of an assistant message that names the prefix of its content the agent prefilled (not learned).
PREFILL_KEY = "prefill"


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` renders with its own chat template (else the plain format is used)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_plain(
    messages: Sequence[dict[str, str]], add_generation_prompt: bool = False, eos_token: str | None = None
) -> str:
    """Render messages in :data:`PLAIN_FORMAT`; assistant blocks end with ``eos_token`` when given."""
    text = "".join(
        PLAIN_FORMAT.format(
            role=PLAIN_ROLES.get(m["role"], m["role"].capitalize()),
            content=m["content"],
            end=(eos_token or "") if m["role"] == "assistant" else "",
        )
        for m in messages
    )
    return text + (PLAIN_GENERATION_PROMPT if add_generation_prompt else "")


def render(
    tokenizer,
    messages: Sequence[dict[str, str]],
    add_generation_prompt: bool = False,
    *,
    tools: Sequence[dict] | None = None,
) -> str:
    """Render ``messages`` as the model sees them: the chat template, or the plain format without one.

    Args:
        tokenizer: A Hugging Face tokenizer.
        messages: Chat messages ``{"role", "content"}``; the system prompt and context policy are
            already applied (see :meth:`mulligan.agents.base.Agent.prepare_messages`).
        add_generation_prompt: End with an open assistant turn (the prompt a model samples from).
        tools: Tool schemas of an env in tools mode: the messages are rendered as tool messages and
            the schemas through the template (see the module docstring); ``None`` or empty: none.
    """
    if has_chat_template(tokenizer):
        if tools:
            from mulligan.agents.tools import tool_conversation

            return tokenizer.apply_chat_template(
                tool_conversation(messages, arguments="dict"),
                tools=list(tools),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        return tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    return render_plain(messages, add_generation_prompt, getattr(tokenizer, "eos_token", None))


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of rendered ``text`` (no special tokens added: templates write their own)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class TokenizedEpisode:
    """A conversation as tokens.

    Attributes:
        input_ids: Token ids of the whole rendered conversation.
        assistant_mask: 1 for tokens the agent produced (content and end-of-sequence token of
            learned assistant messages), 0 for everything else (system, user/env turns, assistant
            headers, template text after the end-of-sequence token).
        turn_index: For each token, the index of the message it belongs to.
        text: The rendered conversation.
    """

    input_ids: list[int]
    assistant_mask: list[int]
    turn_index: list[int]
    text: str

    def __len__(self) -> int:
        return len(self.input_ids)


class _Builder:
    """Accumulates token spans with their mask and message index."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos = getattr(tokenizer, "eos_token", None)
        self.input_ids: list[int] = []
        self.mask: list[int] = []
        self.turns: list[int] = []
        self.text = ""

    def add(self, text: str, learned: bool, turn: int) -> None:
        if not text:
            return
        ids = encode(self.tokenizer, text)
        self.input_ids.extend(ids)
        self.mask.extend([int(learned)] * len(ids))
        self.turns.extend([turn] * len(ids))
        self.text += text

    def add_turn(self, span: str, learned: bool, turn: int, prefill: str | None = None) -> None:
        """Add an assistant span: learned up to and including EOS, context after it.

        A ``prefill`` the span holds (the template may put whitespace before it) is context up to
        its end: the agent wrote it, the model continued it.
        """
        if prefill:
            where = span.find(prefill)
            if where < 0:
                warnings.warn(
                    "the chat template rewrote a prefilled answer so that its prefix is not in the rendering; "
                    "the whole answer is learned",
                    stacklevel=3,
                )
            else:
                self.add(span[: where + len(prefill)], False, turn)
                span = span[where + len(prefill) :]
        eos = self.eos
        cut = span.rfind(eos) + len(eos) if learned and eos and eos in span else len(span)
        self.add(span[:cut], learned, turn)
        self.add(span[cut:], False, turn)

    def episode(self) -> TokenizedEpisode:
        return TokenizedEpisode(self.input_ids, self.mask, self.turns, self.text)


def is_append_only(tokenizer, messages: Sequence[dict[str, str]], *, tools: Sequence[dict] | None = None) -> bool:
    """Whether the template renders ``messages`` append-only, so the conversation is one sequence.

    Every prefix (with the generation prompt before an assistant turn) must render as a prefix of
    the next rendering.
    """
    rendered = ""
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            header = render(tokenizer, messages[:k], add_generation_prompt=True, tools=tools)
            if not header.startswith(rendered):
                return False
            rendered = header
        full = render(tokenizer, messages[: k + 1], tools=tools)
        if not full.startswith(rendered):
            return False
        rendered = full
    return True


def tokenize_turn(
    tokenizer, messages: Sequence[dict[str, str]], turn: int, *, tools: Sequence[dict] | None = None
) -> TokenizedEpisode:
    """One sample: the prompt the model sampled assistant turn ``turn`` from, then that turn.

    The prompt is ``render(messages[:turn], add_generation_prompt=True)`` (exactly what an agent
    renders), the completion is the text the full rendering adds after it, learned up to its EOS.
    Any template works, append-only or not.

    Raises:
        ValueError: If ``messages[turn]`` is not an assistant message.
    """
    if not 0 <= turn < len(messages) or messages[turn]["role"] != "assistant":
        raise ValueError(f"message {turn} is not an assistant message; pass the index of one")
    builder = _Builder(tokenizer)
    prompt = render(tokenizer, messages[:turn], add_generation_prompt=True, tools=tools)
    builder.add(prompt, False, max(turn - 1, 0))
    full = render(tokenizer, messages[: turn + 1], tools=tools)
    # A template that rewrites the turn when it closes it: take the content and EOS as generated.
    completion = full[len(prompt) :] if full.startswith(prompt) else messages[turn]["content"] + (builder.eos or "")
    builder.add_turn(completion, True, turn, messages[turn].get(PREFILL_KEY))
    return builder.episode()


def tokenize_sampled_turn(
    tokenizer,
    prompt_messages: Sequence[dict[str, str]],
    completion_ids: Sequence[int],
    *,
    tools: Sequence[dict] | None = None,
    prefill: str | None = None,
) -> TokenizedEpisode:
    """The exact tokens of one sampled turn: the rendered prompt, then the completion ids as generated.

    For exact-token RL (PPO, GRPO): the completion is the recorded ``completion_ids`` (including the
    EOS or stop-string tokens the model generated), not a re-tokenisation of the action text, so the
    learned tokens align one to one with the recorded behaviour log-probabilities.

    Args:
        tokenizer: The tokenizer the agent sampled with.
        prompt_messages: What the model saw (:meth:`~mulligan.training.trajectory.Trajectory.prompt_messages`).
        completion_ids: The recorded :attr:`~mulligan.training.trajectory.Turn.completion_ids`.
        tools: Tool schemas of an env in tools mode, as the agent rendered them (see the module docstring).
        prefill: The text the agent prefilled the answer with (:attr:`~mulligan.training.trajectory.Turn.prefill`):
            the prompt ends with it, as the agent's did, so it is context.

    Raises:
        ValueError: If ``completion_ids`` is empty or ``prompt_messages`` is empty.
    """
    if not prompt_messages:
        raise ValueError("prompt_messages is empty; pass what the model saw (Trajectory.prompt_messages(t))")
    if not completion_ids:
        raise ValueError("completion_ids is empty: the turn was not sampled by a model agent; use tokenize_turn")
    text = render(tokenizer, prompt_messages, add_generation_prompt=True, tools=tools) + (prefill or "")
    prompt_ids = encode(tokenizer, text)
    completion = [int(t) for t in completion_ids]
    turn = len(prompt_messages)
    return TokenizedEpisode(
        input_ids=prompt_ids + completion,
        assistant_mask=[0] * len(prompt_ids) + [1] * len(completion),
        turn_index=[turn - 1] * len(prompt_ids) + [turn] * len(completion),
        text=text + tokenizer.decode(completion),
    )


def tokenize_turns(
    tokenizer,
    messages: Sequence[dict[str, str]],
    *,
    learn_turns: Sequence[int] | None = None,
    tools: Sequence[dict] | None = None,
) -> list[TokenizedEpisode]:
    """One sample per learned assistant turn (see :func:`tokenize_turn`).

    The fallback for templates that are not append-only, and the form of per-turn contexts.
    """
    learn = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    if learn_turns is not None:
        wanted = set(learn_turns)
        learn = [k for k in learn if k in wanted]
    return [tokenize_turn(tokenizer, messages, k, tools=tools) for k in learn]


def tokenize_conversation(
    tokenizer,
    messages: Sequence[dict[str, str]],
    *,
    learn_turns: Sequence[int] | None = None,
    tools: Sequence[dict] | None = None,
) -> TokenizedEpisode:
    """Tokenize ``messages`` as one sequence and mask out everything the agent did not write.

    Args:
        tokenizer: A Hugging Face tokenizer.
        messages: Chat messages; assistant messages are the agent's actions.
        learn_turns: Indices (into ``messages``) of the assistant messages to learn; default all.
            RISE learns only the last turn of each sample (Sec. 4.2), NAT every agent turn.
        tools: Tool schemas of an env in tools mode (see the module docstring).

    Returns:
        The tokenized episode. For a template that is not append-only, the sample of the last
        learned turn (see the module docstring), with a warning when other turns were to be learned.

    Raises:
        ValueError: On an empty conversation.
    """
    if not messages:
        raise ValueError("cannot tokenize an empty conversation; pass at least one message")
    learn = set(range(len(messages))) if learn_turns is None else set(learn_turns)
    if not is_append_only(tokenizer, messages, tools=tools):
        learned = [k for k, m in enumerate(messages) if m["role"] == "assistant" and k in learn]
        if not learned:
            builder = _Builder(tokenizer)
            builder.add(render(tokenizer, messages, tools=tools), False, len(messages) - 1)
            return builder.episode()
        if len(learned) > 1:
            warnings.warn(
                "the chat template re-renders earlier turns (not append-only), so only the last learned "
                f"turn ({learned[-1]}) is learned from this sequence; use mulligan.training.chat.tokenize_turns "
                "for one sample per turn",
                stacklevel=2,
            )
        return tokenize_turn(tokenizer, messages, learned[-1], tools=tools)
    builder = _Builder(tokenizer)
    rendered = ""
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            with_header = render(tokenizer, messages[:k], add_generation_prompt=True, tools=tools)
            builder.add(with_header[len(rendered) :], False, k)
            rendered = with_header
        full = render(tokenizer, messages[: k + 1], tools=tools)
        span = full[len(rendered) :]
        if message["role"] == "assistant":
            builder.add_turn(span, k in learn, k, message.get(PREFILL_KEY))
        else:
            builder.add(span, False, k)
        rendered = full
    return builder.episode()
