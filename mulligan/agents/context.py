"""Context management for long episodes: which messages an agent actually shows its model.

A long episode (a ReAct trajectory, RISE's attempts with feedback) outgrows any context window. The
policies here decide what an agent conditions on; they are pure functions over message lists, used
by :class:`~mulligan.agents.hf.HFAgent` and :class:`~mulligan.agents.openai_chat.OpenAIChatAgent`.

Every policy keeps the *head* of the conversation: the leading system message(s) and the task (the
first user message). What follows the head is a sequence of *turn groups*: an assistant turn and the
user turns (observations, feedback) that answer it. Policies drop whole groups, oldest first, so the
kept conversation still alternates roles the way chat templates expect, and the latest observation
is always kept.

* :func:`drop_oldest_turns` drops the oldest groups until the conversation fits a size budget
  (tokens, characters, anything a ``measure`` function counts).
* :func:`keep_last_attempts` keeps a sliding window of the last ``k`` attempts. RISE (arXiv
  2407.18219, Section 5) evaluates with a "window of 2": the first prompt and the most recent
  attempt with its feedback, which is ``LastAttempts(1)`` here (the head is always kept, ``k``
  counts attempts only; :mod:`mulligan.training.rise`'s ``--window 1``). An attempt ends at a feedback user turn that
  follows an assistant turn; by default every user turn after an assistant turn is feedback.

Agents take a policy object through their ``context=`` argument: :class:`KeepAll`,
:class:`TokenBudget`, :class:`CharBudget` or :class:`LastAttempts` (or any callable with the same
signature, ``policy(messages, count_tokens) -> messages``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mulligan.agents.base import Message

#: Counts the size of a text (tokens for a tokenizer, characters for ``len``).
Measure = Callable[[str], int]


def split_head(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """Split a conversation into its head (leading system messages and the task) and the rest.

    The task is the first user message after the leading system messages. A conversation with no
    user message is all head.

    Args:
        messages: Chat messages ``{"role": ..., "content": ...}``.

    Returns:
        ``(head, rest)``, two new lists whose concatenation is ``messages``.
    """
    index = 0
    while index < len(messages) and messages[index]["role"] == "system":
        index += 1
    if index < len(messages) and messages[index]["role"] == "user":
        index += 1
    return list(messages[:index]), list(messages[index:])


def turn_groups(rest: Sequence[Message]) -> list[list[Message]]:
    """Group the messages after the head: each group is an assistant turn and the turns after it.

    Messages before the first assistant turn (extra user turns right after the task) form a group
    of their own.

    Args:
        rest: The messages after the head (see :func:`split_head`).

    Returns:
        Consecutive groups whose concatenation is ``rest``.
    """
    groups: list[list[Message]] = []
    for message in rest:
        if message["role"] == "assistant" or not groups:
            groups.append([message])
        else:
            groups[-1].append(message)
    return groups


def conversation_size(messages: Sequence[Message], measure: Measure = len, per_message_overhead: int = 0) -> int:
    """Sum of ``measure(content)`` over messages, plus ``per_message_overhead`` for each message.

    Args:
        messages: Chat messages.
        measure: Size of one message's content (``len`` counts characters).
        per_message_overhead: What a chat template adds per message (role markers, separators).
    """
    return sum(measure(m["content"]) + per_message_overhead for m in messages)


def drop_oldest_turns(
    messages: Sequence[Message],
    budget: int,
    measure: Measure = len,
    per_message_overhead: int = 0,
) -> list[Message]:
    """Keep the head and drop the oldest turn groups until the conversation fits ``budget``.

    The head (system messages and task) and the last group (which holds the latest observation) are
    always kept, so the result can still exceed ``budget`` when those alone do.

    Args:
        messages: Chat messages.
        budget: The largest total size to aim for, in the units of ``measure``.
        measure: Size of one message's content; ``len`` counts characters, a tokenizer counts tokens.
        per_message_overhead: Size added per message for the template's role markers.

    Returns:
        A new list: the head followed by the most recent groups that fit.

    Raises:
        ValueError: If ``budget`` is negative.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    head, rest = split_head(messages)
    groups = turn_groups(rest)
    sizes = [conversation_size(g, measure, per_message_overhead) for g in groups]
    total = conversation_size(head, measure, per_message_overhead) + sum(sizes)
    first_kept = 0
    while total > budget and first_kept < len(groups) - 1:
        total -= sizes[first_kept]
        first_kept += 1
    return head + [m for g in groups[first_kept:] for m in g]


def keep_last_attempts(
    messages: Sequence[Message],
    k: int,
    is_feedback: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Keep the head and a sliding window of the last ``k`` attempts.

    An attempt is the run of turns that ends at a feedback user turn following an assistant turn;
    with the default ``is_feedback`` (every user turn is feedback) it is one assistant turn and the
    user turn that answers it, which is RISE's multi-turn format (arXiv 2407.18219, Section 4: the
    task, then attempt/feedback pairs). Turns after the last complete attempt (an assistant turn
    with no answer yet) are always kept.

    Args:
        messages: Chat messages.
        k: Attempts to keep (``k >= 0``; 0 keeps only the head and any trailing open attempt).
        is_feedback: Whether a user message closes an attempt; for a ReAct agent inside
            :class:`~mulligan.envs.wrappers.RetryWithFeedback`, pass a predicate that recognises the
            retry template so that a whole multi-step attempt counts as one.

    Returns:
        A new list: the head followed by the last ``k`` attempts.

    Raises:
        ValueError: If ``k`` is negative.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    head, rest = split_head(messages)
    attempts: list[list[Message]] = []
    current: list[Message] = []
    seen_assistant = False
    for message in rest:
        current.append(message)
        if message["role"] == "assistant":
            seen_assistant = True
        elif message["role"] == "user" and seen_assistant and (is_feedback is None or is_feedback(message)):
            attempts.append(current)
            current, seen_assistant = [], False
    kept = attempts[len(attempts) - k :] if k else []
    return head + [m for a in kept for m in a] + current


@dataclass(frozen=True)
class KeepAll:
    """The identity policy: show the model the whole conversation."""

    def __call__(self, messages: Sequence[Message], count_tokens: Measure | None = None) -> list[Message]:
        """Return a copy of ``messages``."""
        return list(messages)


@dataclass(frozen=True)
class TokenBudget:
    """Drop the oldest turns past a token budget (see :func:`drop_oldest_turns`).

    Tokens are counted per message content with the agent's tokenizer; agents without a tokenizer
    (served models) approximate a token as 4 characters.

    Attributes:
        max_tokens: The budget for the messages' contents.
        per_message_overhead: Tokens the chat template adds per message.
    """

    max_tokens: int
    per_message_overhead: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.per_message_overhead < 0:
            raise ValueError("per_message_overhead must be >= 0")

    def __call__(self, messages: Sequence[Message], count_tokens: Measure | None = None) -> list[Message]:
        """Apply the budget with ``count_tokens`` (or 4 characters per token without one)."""
        measure = count_tokens or approximate_token_count
        return drop_oldest_turns(messages, self.max_tokens, measure, self.per_message_overhead)


@dataclass(frozen=True)
class CharBudget:
    """Drop the oldest turns past a character budget (see :func:`drop_oldest_turns`).

    Attributes:
        max_chars: The budget for the messages' contents, in characters.
    """

    max_chars: int

    def __post_init__(self) -> None:
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ValueError(f"max_chars must be a positive int, got {self.max_chars!r}")

    def __call__(self, messages: Sequence[Message], count_tokens: Measure | None = None) -> list[Message]:
        """Apply the budget, counting characters."""
        return drop_oldest_turns(messages, self.max_chars, len)


@dataclass(frozen=True)
class LastAttempts:
    """Keep the head and the last ``k`` attempts (see :func:`keep_last_attempts`).

    RISE's "window of 2" (the first prompt and the most recent attempt) is ``LastAttempts(1)``, the
    default: ``k`` counts attempts, and the head (the task) is always kept.

    Attributes:
        k: Attempts to keep.
        is_feedback: Optional predicate marking the user turns that close an attempt.
    """

    k: int = 1
    is_feedback: Callable[[Message], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"k must be an int >= 0, got {self.k!r}")

    def __call__(self, messages: Sequence[Message], count_tokens: Measure | None = None) -> list[Message]:
        """Apply the window."""
        return keep_last_attempts(messages, self.k, self.is_feedback)


def approximate_token_count(text: str) -> int:
    """A tokenizer-free estimate: one token per 4 characters, rounded up."""
    return (len(text) + 3) // 4


#: What ``context=`` accepts: one of the policies above or any callable with their signature.
ContextPolicy = Callable[[Sequence[Message], "Measure | None"], list[Message]]
