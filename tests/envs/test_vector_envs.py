"""Envs in worker processes: ``gymnasium.make_vec(..., vectorization_mode="async")`` with shared memory."""

from __future__ import annotations

import copy
import multiprocessing

import gymnasium
import numpy as np
import pytest

from mulligan.envs.core import SharedTexts, TextSpace
from mulligan.envs.tools import format_tool_call


@pytest.mark.parametrize("env_id", ["Mulligan/Echo-v0", "Mulligan/MiniScience-v0"])
def test_async_vector_env_matches_single_envs_with_default_shared_memory(env_id):
    vector = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="async")
    singles = [gymnasium.make(env_id) for _ in range(2)]
    try:
        assert vector.shared_memory  # the default, not vector_kwargs={"shared_memory": False}
        observations, _ = vector.reset(seed=[3, 4])
        expected = [env.reset(seed=seed)[0] for env, seed in zip(singles, [3, 4], strict=True)]
        assert list(observations) == expected
        actions = ("look around", "Repeat exactly: é \ud800 😀")
        observations, rewards, terminated, _, infos = vector.step(actions)
        steps = [env.step(action) for env, action in zip(singles, actions, strict=True)]
        assert list(observations) == [s[0] for s in steps]
        assert list(rewards) == [s[1] for s in steps] and list(terminated) == [s[2] for s in steps]
        assert list(infos["success"]) == [s[4]["success"] for s in steps]
    finally:
        vector.close()


def test_async_vector_env_in_tools_mode():
    vector = gymnasium.make_vec(
        "Mulligan/MiniScience-v0", num_envs=2, vectorization_mode="async", action_format="tools"
    )
    try:
        vector.reset(seed=0)
        observations, *_, infos = vector.step((format_tool_call("look_around", {}), "not a call"))
        assert observations[0].startswith("This room is called")
        assert observations[1].startswith("Invalid tool call")
        assert list(infos["tool_call_id"]) == ["call_0", ""]
    finally:
        vector.close()


def test_shared_memory_round_trips_any_string_and_is_a_live_view():
    space = TextSpace(max_length=16)
    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    memory = create_shared_memory(space, n=3, ctx=multiprocessing.get_context("spawn"))
    view = read_from_shared_memory(space, memory, n=3)
    assert isinstance(view, SharedTexts) and list(view) == ["", "", ""]
    texts = ["x" * 16, "\ud800 lone", "世界🙂\x00"]
    for index, text in enumerate(texts):
        write_to_shared_memory(space, index, text, memory)
    assert list(view) == texts and view[1:] == tuple(texts[1:])
    snapshot = copy.deepcopy(view)
    write_to_shared_memory(space, 0, "short", memory)  # a shorter string replaces a longer one
    assert view[0] == "short" and snapshot == tuple(texts)
    with pytest.raises(ValueError, match="does not contain"):
        write_to_shared_memory(space, 0, "y" * 17, memory)
    assert np.frombuffer(memory.get_obj(), dtype=np.int32).size == 3 * 17
