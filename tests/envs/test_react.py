"""The one ReAct grammar (mulligan.envs.react) shared by MathReAct-v0, HotpotQA-v0 and StrategyQA-v0."""

from __future__ import annotations

import time

import gymnasium
import pytest

import mulligan  # noqa: F401  (registers the ids)
from mulligan.envs.hotpotqa import ACTION_VERBS as QA_VERBS
from mulligan.envs.math_react import ACTION_VERBS as MATH_VERBS
from mulligan.envs.react import DEFAULT_MAX_ARGUMENT_CHARS, ReactAction, parse_react_action

REACT_IDS = ["Mulligan/MathReAct-v0", "Mulligan/HotpotQA-v0", "Mulligan/StrategyQA-v0"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        # The two cases where the old parsers disagreed now parse the same way in every env:
        ("finish[7]", ("finish", "7")),  # no marker: was malformed in MathReAct only
        ("Action: finish[line one\nline two]", ("finish", "line one\nline two")),  # was malformed in QA only
        ("Thought: x\nAction 2: Finish[ 7 ]\nObservation 2: made up", ("finish", "7")),
        ("  finish[7]", ("finish", "7")),
        ("Thought: I could finish[7] now", None),  # a verb inside a thought is not an action
        ("my next action: think it over\nAction: finish[7]", ("finish", "7")),
        ("finish[7]\nAction: finish[8]", ("finish", "7")),  # the first action counts
        ("Action: finish[[1, 2)]", ("finish", "[1, 2)")),  # unbalanced interval: the line's last ']'
        ("Action: finish[a [b] c] tail ]", ("finish", "a [b] c")),
        ("Action: finish[  ]", None),
        ("Action: finish[unclosed", None),
        ("Action: jump[x]", None),
        ("Transaction: finish[7]", None),  # the marker is a word
        ("", None),
    ],
)
def test_one_grammar_for_every_react_env(text, parsed):
    assert parse_react_action(text, MATH_VERBS) == parsed
    assert parse_react_action(text, QA_VERBS) == parsed


def test_verbs_are_the_envs_own_and_the_result_is_a_named_tuple():
    assert parse_react_action("Action: calculate[1+1]", QA_VERBS) is None
    assert parse_react_action("Action: search[x]", MATH_VERBS) is None
    action = parse_react_action("ACTION: Search[Ed Wood]", QA_VERBS)
    assert action == ReactAction("search", "Ed Wood") and action.verb == "search"
    with pytest.raises(ValueError, match="verbs"):
        parse_react_action("finish[1]", "finish")
    with pytest.raises(ValueError, match="verbs"):
        parse_react_action("finish[1]", ())


def test_arguments_are_bounded():
    at_limit = "a" * DEFAULT_MAX_ARGUMENT_CHARS
    assert parse_react_action(f"finish[{at_limit}]", QA_VERBS) == ("finish", at_limit)
    assert parse_react_action(f"finish[{at_limit}a]", QA_VERBS) is None


def _best_time(function, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


HOSTILE = {
    # "action" followed by a long run of whitespace: the old QA marker regex `action\s*\d*\s*:`
    # backtracked quadratically (100k characters took 14-27 s, issue 15).
    "whitespace_after_marker": lambda n: "Action" + " " * n,
    "numbered_marker_whitespace": lambda n: "Action 1" + " " * n + "2",
    "leading_whitespace": lambda n: " " * n + "x",
    "many_markers": lambda n: "action: " * (n // 8),
    "markers_inside_words": lambda n: "xaction: finish[1] " * (n // 19),
    "unclosed_brackets": lambda n: "Action: finish[" + "[" * n,
    "newlines": lambda n: "Action: search[" + "\n" * n,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_parsing_is_linear_in_the_text(name):
    make = HOSTILE[name]
    small, large = make(100_000), make(1_000_000)
    small_time = _best_time(lambda: parse_react_action(small, QA_VERBS))
    assert small_time < 1.0, f"{name}: {small_time:.2f}s for 100k characters"
    large_time = _best_time(lambda: parse_react_action(large, QA_VERBS))
    # Ten times the text: linear is ~10x; quadratic would be ~100x. The floor keeps timer noise on
    # a sub-millisecond parse from failing the ratio.
    assert large_time < 30 * max(small_time, 5e-3), f"{name}: {small_time:.4f}s -> {large_time:.4f}s"


@pytest.mark.parametrize("env_id", REACT_IDS)
def test_react_envs_step_in_milliseconds_on_long_whitespace(env_id):
    env = gymnasium.make(env_id)
    env.reset(seed=0)
    start = time.perf_counter()
    _, reward, terminated, _, info = env.step("Action" + " " * 100_000)
    assert time.perf_counter() - start < 1.0
    assert info["action_type"] == "invalid" and not terminated and reward <= 0.0
