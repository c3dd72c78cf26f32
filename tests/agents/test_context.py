"""Context policies: what survives when a long episode is cut down to fit a model."""

from __future__ import annotations

import pytest

from mulligan.agents.base import Action, Agent, ContextRecord, context_record
from mulligan.agents.context import (
    CharBudget,
    KeepAll,
    LastAttempts,
    TokenBudget,
    approximate_token_count,
    conversation_size,
    drop_oldest_turns,
    keep_last_attempts,
    split_head,
    turn_groups,
)
from mulligan.envs.wrappers import RISE_FEEDBACK_TEMPLATE


def msg(role, content):
    return {"role": role, "content": content}


def episode(turns, system=True):
    """System prompt, task, then ``turns`` assistant/user pairs a0/u0, a1/u1, ..."""
    messages = [msg("system", "SYS")] if system else []
    messages.append(msg("user", "TASK"))
    for k in range(turns):
        messages += [msg("assistant", f"a{k}"), msg("user", f"u{k}")]
    return messages


def contents(messages):
    return [m["content"] for m in messages]


def test_split_head_and_turn_groups():
    head, rest = split_head(episode(2))
    assert contents(head) == ["SYS", "TASK"] and contents(rest) == ["a0", "u0", "a1", "u1"]
    assert [contents(g) for g in turn_groups(rest)] == [["a0", "u0"], ["a1", "u1"]]
    head, rest = split_head([msg("system", "s1"), msg("system", "s2")])
    assert contents(head) == ["s1", "s2"] and rest == []
    # Extra user turns before the first assistant turn make their own group.
    assert [contents(g) for g in turn_groups([msg("user", "x"), msg("assistant", "a"), msg("user", "y")])] == [
        ["x"],
        ["a", "y"],
    ]


def test_drop_oldest_turns_keeps_head_and_newest_groups_within_budget():
    messages = episode(5)  # every content is 2-4 characters
    size = conversation_size(messages)
    assert drop_oldest_turns(messages, size) == messages
    kept = drop_oldest_turns(messages, size - 1)
    assert contents(kept) == ["SYS", "TASK", "a1", "u1", "a2", "u2", "a3", "u3", "a4", "u4"]
    kept = drop_oldest_turns(messages, 11)
    assert contents(kept) == ["SYS", "TASK", "a4", "u4"]
    assert conversation_size(kept) <= 11
    # Head and the latest observation are kept even when they alone exceed the budget.
    assert contents(drop_oldest_turns(messages, 0)) == ["SYS", "TASK", "a4", "u4"]
    # Roles still alternate after the head, as chat templates require.
    roles = [m["role"] for m in drop_oldest_turns(episode(9), 20)][2:]
    assert roles == ["assistant", "user"] * (len(roles) // 2)
    with pytest.raises(ValueError, match="budget"):
        drop_oldest_turns(messages, -1)


def test_drop_oldest_turns_with_a_measure_and_overhead():
    messages = episode(3, system=False)
    words = lambda text: len(text.split())  # noqa: E731
    assert conversation_size(messages, words, per_message_overhead=2) == 7 * 3
    assert contents(drop_oldest_turns(messages, 15, words, per_message_overhead=2)) == ["TASK", "a1", "u1", "a2", "u2"]


def test_keep_last_attempts_is_rises_sliding_window():
    messages = episode(4)
    assert contents(keep_last_attempts(messages, 2)) == ["SYS", "TASK", "a2", "u2", "a3", "u3"]
    assert contents(keep_last_attempts(messages, 10)) == contents(messages)
    assert contents(keep_last_attempts(messages, 0)) == ["SYS", "TASK"]
    # A trailing assistant turn with no feedback yet is an open attempt: always kept.
    open_attempt = [*messages, msg("assistant", "a4")]
    assert contents(keep_last_attempts(open_attempt, 1)) == ["SYS", "TASK", "a3", "u3", "a4"]
    with pytest.raises(ValueError, match="k"):
        keep_last_attempts(messages, -1)


def test_keep_last_attempts_with_multi_step_attempts():
    # A ReAct agent under RetryWithFeedback: an attempt is several steps, closed by the retry message.
    feedback = RISE_FEEDBACK_TEMPLATE.format(question="Q", feedback="wrong", attempt=1, max_attempts=3)
    messages = [
        msg("user", "Q"),
        msg("assistant", "s1"),
        msg("user", "obs1"),
        msg("assistant", "s2"),
        msg("user", feedback),
        msg("assistant", "t1"),
        msg("user", "obs2"),
        msg("assistant", "t2"),
        msg("user", feedback),
        msg("assistant", "r1"),
        msg("user", "obs3"),
    ]
    is_feedback = lambda m: m["content"] == feedback  # noqa: E731
    kept = keep_last_attempts(messages, 1, is_feedback)
    assert contents(kept) == ["Q", "t1", "obs2", "t2", feedback, "r1", "obs3"]


def test_policy_objects():
    messages = episode(6)
    assert KeepAll()(messages) == messages and KeepAll()(messages) is not messages
    assert LastAttempts(2)(messages) == keep_last_attempts(messages, 2)
    # The default is RISE's "window of 2": the first prompt and the most recent attempt.
    q, a1, f1, a2, f2 = (
        msg("user", "Q"),
        msg("assistant", "a1"),
        msg("user", "f1"),
        msg("assistant", "a2"),
        msg("user", "f2"),
    )
    assert LastAttempts()([q, a1, f1, a2, f2]) == [q, a2, f2]
    assert CharBudget(12)(messages) == drop_oldest_turns(messages, 12)
    # Without a token counter, TokenBudget estimates 4 characters per token.
    assert approximate_token_count("") == 0 and approximate_token_count("abcde") == 2
    assert TokenBudget(10, per_message_overhead=1)(messages) == drop_oldest_turns(
        messages, 10, approximate_token_count, 1
    )
    tokens = len  # one token per character
    assert TokenBudget(12, per_message_overhead=0)(messages, tokens) == drop_oldest_turns(messages, 12)
    for bad in (lambda: TokenBudget(0), lambda: CharBudget(-3), lambda: LastAttempts(-1)):
        with pytest.raises(ValueError):
            bad()


def test_policies_never_mutate_their_input():
    messages = episode(5)
    snapshot = [dict(m) for m in messages]
    for policy in (KeepAll(), LastAttempts(1), CharBudget(5), TokenBudget(3)):
        policy(messages)
    assert messages == snapshot


class Shown(Agent):
    """An agent whose model would see ``prepare_context(messages)``; it acts on nothing else."""

    def __init__(self, system_prompt=None, context=None):
        self.system_prompt, self.context = system_prompt, context

    def act(self, inputs):
        return [Action("ok") for _ in inputs]


def test_prepare_context_adds_the_system_prompt_then_applies_the_policy():
    messages = episode(4, system=False)
    shown, record = Shown("SYS", LastAttempts(1)).prepare_context(messages)
    assert contents(shown) == ["SYS", "TASK", "a3", "u3"]
    # Recorded compactly: spans of kept input indices and the agent's system prompt, once.
    assert record == ContextRecord(spans=((0, 1), (7, 9)), system_prompt="SYS")
    assert [messages[i] for a, b in record.spans for i in range(a, b)] == shown[1:]
    assert Shown("SYS").prepare_messages(messages) == [msg("system", "SYS"), *messages]
    assert messages == episode(4, system=False)  # the input is untouched


def test_prepare_context_records_nothing_when_the_model_saw_the_input_unchanged():
    messages = episode(3)
    assert Shown().prepare_context(messages) == (messages, None)
    # The conversation already starts with a system message: the agent's prompt is not added.
    assert Shown("OTHER").prepare_context(messages) == (messages, None)
    assert Shown(context=KeepAll()).prepare_context(messages)[1] is None
    shown, record = Shown(context=CharBudget(12)).prepare_context(messages)
    assert record is not None and record.system_prompt is None and not record.covers(len(messages))
    assert len(shown) < len(messages)
    with pytest.raises(ValueError, match="empty"):
        Shown().prepare_context([])


def test_a_policy_that_rewrites_messages_cannot_be_recorded():
    def shout(messages, count_tokens=None):
        return [{"role": m["role"], "content": m["content"].upper()} for m in messages]

    with pytest.raises(ValueError, match="subsequence"):
        Shown(context=shout).prepare_context(episode(1))
    assert context_record(episode(2), episode(2)[:2], None) == ContextRecord(((0, 2),), None)


def test_a_wrapper_s_rewrites_are_recorded_against_the_conversation():
    """rewritten_context: what the inner model saw, as a record of the wrapper's input."""
    from mulligan.agents.base import rewritten_context

    messages = episode(3, system=False)  # TASK, a0, u0, a1, u1, a2, u2
    opening = [msg("user", "INSTR"), msg("assistant", "OK"), msg("user", "Q")]
    given = opening + messages[1:]  # NAT: the task message shown as a three-message opening
    origin = [0, 0, 0, *range(1, len(messages))]
    shown, inner = Shown("SYS", LastAttempts(1)).prepare_context(given)
    record = rewritten_context(messages, given, origin, inner)
    assert record.shown(messages) == shown  # exactly what the inner model saw
    assert record.system_prompt == "SYS" and not record.covers(len(messages))
    assert all(index == 0 for index, _ in record.rewritten)  # only the task message was rewritten
    # The inner model saw everything it was given: the whole conversation, the opening in place of TASK.
    full = rewritten_context(messages, given, origin, None)
    assert full.spans == ((0, len(messages)),) and full.shown(messages) == given
    # A policy that keeps a message unchanged records no rewrite for it.
    same = rewritten_context(messages, list(messages), list(range(len(messages))), None)
    assert same == ContextRecord(((0, len(messages)),)) and same.covers(len(messages))
    # Flat and hierarchical agents: the latest observation shown as a rendered prompt, nothing else.
    prompt = [msg("user", "PROMPT")]
    flat = rewritten_context(messages, prompt, [len(messages) - 1], ContextRecord(((0, 1),), "P"))
    assert flat.spans == ((6, 7),) and flat.shown(messages) == [msg("system", "P"), msg("user", "PROMPT")]
    # Wrappers nest: a record with rewrites, translated again, still rebuilds what the model saw.
    outer_given = [msg("user", "WRAPPED"), *messages[1:]]
    outer = rewritten_context(messages, outer_given, list(range(len(messages))), full)
    assert outer.shown(messages) == full.shown(outer_given)
    with pytest.raises(ValueError, match="non-decreasing"):
        rewritten_context(messages, given, list(reversed(origin)), None)
    with pytest.raises(IndexError, match="record keeps message"):
        flat.shown(messages[:3])
