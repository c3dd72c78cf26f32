"""Scripted science teachers: the gold-path oracle and the noisy teacher."""

from __future__ import annotations

import shutil

import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.science import NoisyScienceTeacher, ScienceOracle


def rollout(env, agent, *, seed=None, options=None):
    observation, info = env.reset(seed=seed, options=options)
    messages = [{"role": "user", "content": observation}]
    kinds = []
    while True:
        action = agent.act([AgentInput(messages, task=env.unwrapped.task, info=info)])[0]
        kinds.append(action.metadata.get("mistake", "gold"))
        observation, _, terminated, truncated, info = env.step(action.text)
        messages += [{"role": "assistant", "content": action.text}, {"role": "user", "content": observation}]
        if terminated or truncated:
            return info, kinds, [m["content"] for m in messages if m["role"] == "assistant"]


def test_oracle_solves_miniscience():
    env = gymnasium.make("Mulligan/MiniScience-v0")
    for index in range(70):
        info, _, _ = rollout(env, ScienceOracle(), options={"task_index": index})
        assert info["success"], env.unwrapped.task


def test_noisy_teacher_fails_sometimes_and_is_deterministic():
    env = gymnasium.make("Mulligan/MiniScience-v0")
    teacher = NoisyScienceTeacher(error_rate=0.3, seed=1)
    results, all_kinds = [], set()
    for index in range(70):
        info, kinds, actions = rollout(env, teacher, options={"task_index": index})
        results.append(info["success"])
        all_kinds |= set(kinds)
        again = rollout(env, teacher, options={"task_index": index})[2]
        assert again == actions  # a pure function of (seed, task, turn)
    assert 0 < sum(results) < len(results)
    assert {"wander", "skip", "wrong_object", "gold"} <= all_kinds
    teacher.reset(seed=2)
    assert teacher.seed == 2


def test_noisy_teacher_with_zero_error_rate_is_the_oracle():
    env = gymnasium.make("Mulligan/MiniScience-v0")
    for index in range(14):
        _, _, noisy = rollout(env, NoisyScienceTeacher(error_rate=0.0), options={"task_index": index})
        _, _, oracle = rollout(env, ScienceOracle(), options={"task_index": index})
        assert noisy == oracle


def test_error_rate_one_never_follows_the_path_blindly():
    env = gymnasium.make("Mulligan/MiniScience-v0", task="boil", variation=0)
    teacher = NoisyScienceTeacher(error_rate=1.0, mistake_weights=(1, 0, 0))
    _, kinds, _ = rollout(env, teacher, options={"task_index": 0})
    assert set(kinds) == {"wander"}


def test_teachers_explain_a_missing_gold_path():
    with pytest.raises(ValueError, match="gold_actions"):
        ScienceOracle().act([AgentInput([{"role": "user", "content": "hi"}], task={"task_name": "boil"})])
    with pytest.raises(ValueError, match="error_rate"):
        NoisyScienceTeacher(error_rate=1.5)
    with pytest.raises(ValueError, match="mistake_weights"):
        NoisyScienceTeacher(mistake_weights=(0, 0, 0))


@pytest.mark.scienceworld
def test_oracle_solves_scienceworld():
    pytest.importorskip("scienceworld", reason="the scienceworld extra is not installed")
    if shutil.which("java") is None:
        pytest.skip("ScienceWorld needs a Java runtime (java not on PATH)")
    env = gymnasium.make("Mulligan/ScienceWorld-v0", task="find-living-thing", variation="dev")
    try:
        info, _, _ = rollout(env, ScienceOracle(), seed=0)
        assert info["success"]
    finally:
        env.close()
