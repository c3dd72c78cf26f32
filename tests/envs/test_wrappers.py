"""RetryWithFeedback (RISE's and CORGI's multi-attempt sessions) and ChatHistory, on the Echo env."""

from __future__ import annotations

import gymnasium
import pytest

from mulligan.envs.testing import EchoEnv
from mulligan.envs.wrappers import RISE_FEEDBACK_TEMPLATE, ChatHistory, RetryWithFeedback, set_stop_on_success


def _retry_env(**kwargs):
    return gymnasium.make("Mulligan/Echo-v0", partial_credit=True, **kwargs)


def test_make_with_max_attempts_returns_the_retry_wrapper():
    env = gymnasium.make("Mulligan/Echo-v0", max_attempts=3)
    assert isinstance(env.env.env.env, RetryWithFeedback) or any(
        isinstance(w, RetryWithFeedback) for w in _wrapper_chain(env)
    )
    plain = gymnasium.make("Mulligan/Echo-v0")
    assert not any(isinstance(w, RetryWithFeedback) for w in _wrapper_chain(plain))


def _wrapper_chain(env):
    chain = []
    while hasattr(env, "env"):
        chain.append(env)
        env = env.env
    return chain


def test_retry_feedback_repeats_the_question_and_counts_attempts():
    env = _retry_env(max_attempts=3)
    question, info = env.reset(options={"task": {"target": "apple"}})
    assert info["attempt"] == 1
    obs, _, terminated, _, info = env.step("pear")
    assert not terminated and info["attempt"] == 1
    assert obs == RISE_FEEDBACK_TEMPLATE.format(question=question)
    obs, reward, terminated, _, info = env.step("apple")
    assert terminated and info["success"] and info["attempt"] == 2 and reward == 1.0


def test_retry_episode_ends_after_max_attempts():
    env = _retry_env(max_attempts=3)
    env.reset(options={"task": {"target": "apple"}})
    done = [env.step("zzz")[2] for _ in range(3)]
    assert done == [False, False, True]


@pytest.mark.parametrize(
    ("mode", "actions", "expected_return"),
    [
        ("last", ["app", "a", "zz"], 0.0),  # scores 0.6, 0.2, 0.0: the last counts
        ("max", ["app", "a", "zz"], 0.6),  # the best counts (CORGI)
        ("last", ["a", "app", "apple"], 1.0),
        ("max", ["a", "app", "apple"], 1.0),
    ],
)
def test_retry_return_equals_the_objective(mode, actions, expected_return):
    env = _retry_env(max_attempts=3, retry_reward=mode)
    env.reset(options={"task": {"target": "apple"}})
    total, attempt_returns = 0.0, []
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        total += reward
        attempt_returns.append(info["attempt_return"])
        if terminated:
            break
    assert total == pytest.approx(expected_return)


def test_retry_keeps_task_id_and_runs_the_same_task():
    env = _retry_env(max_attempts=4)
    _, info = env.reset(seed=3)
    task_id, target = info["task_id"], info["target"]
    for _ in range(3):
        _, _, terminated, _, info = env.step("wrong")
        assert info["task_id"] == task_id and info["target"] == target
    assert not terminated


def test_retry_template_can_quote_the_env_critique():
    env = _retry_env(max_attempts=2, feedback_template="Attempt {attempt}/{max_attempts}: {feedback}")
    env.reset(options={"task": {"target": "apple"}})
    obs, *_ = env.step("pear")
    assert obs == "Attempt 1/2: Expected exactly 'apple', got 'pear'."


def test_retry_rejects_bad_arguments():
    base = EchoEnv()
    with pytest.raises(ValueError, match="max_attempts"):
        RetryWithFeedback(base, max_attempts=0)
    with pytest.raises(ValueError, match="reward"):
        RetryWithFeedback(base, reward="mean")
    with pytest.raises(ValueError, match="unknown fields"):
        RetryWithFeedback(base, feedback_template="{answer}")
    with pytest.raises(ValueError, match="format string"):
        RetryWithFeedback(base, feedback_template="{oops")


def test_chat_history_records_the_conversation():
    env = ChatHistory(_retry_env(max_attempts=2), system_prompt="Be exact.")
    env.reset(options={"task": {"target": "river"}})
    env.step("rive")
    env.step("river")
    roles = [m["role"] for m in env.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert env.messages[1]["content"] == "Repeat exactly: river"
    assert env.messages[-1]["content"] == "river"


def test_without_stop_on_success_every_attempt_is_answered_with_feedback():
    env = RetryWithFeedback(EchoEnv(), max_attempts=3, stop_on_success=False)
    question, _ = env.reset(options={"task": {"target": "apple"}})
    observation, reward, terminated, _, info = env.step("apple")
    # Right at attempt 1, yet the session goes on with the same "incorrect" feedback (no oracle).
    assert not terminated and info["success"] and reward == 1.0
    assert observation == RISE_FEEDBACK_TEMPLATE.format(question=question)
    observation, reward, terminated, _, info = env.step("pear")
    assert not terminated and not info["success"] and info["attempt"] == 2 and reward == -1.0  # "last" return
    _, _, terminated, _, info = env.step("apple")
    assert terminated and info["attempt"] == 3 and info["success"]
    with pytest.raises(ValueError, match="stop_on_success"):
        RetryWithFeedback(EchoEnv(), stop_on_success="no")


def test_set_stop_on_success_reaches_the_retry_layer_of_a_made_env():
    env = set_stop_on_success(gymnasium.make("Mulligan/Echo-v0", max_attempts=2), False)
    env.reset(options={"task": {"target": "apple"}})
    _, _, terminated, _, info = env.step("apple")
    assert info["success"] and not terminated
    with pytest.raises(ValueError, match="max_attempts"):
        set_stop_on_success(gymnasium.make("Mulligan/Echo-v0"), False)
