"""The env contract of ``mulligan.envs.core`` (docs/envs.md), checked on every registered id from the registry."""

from __future__ import annotations

import importlib
import time
import tracemalloc

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan
from mulligan.envs.core import MulliganEnv
from mulligan.envs.registration import ENVS

ENTRIES = {entry.id: entry for entry in ENVS}


def _needs(env_id: str) -> None:
    """Skip with a reason when an env's optional dependencies are missing on this machine."""
    if env_id == "Mulligan/ScienceWorld-v0":
        import shutil

        pytest.importorskip("scienceworld", reason="the scienceworld extra is not installed")
        if shutil.which("java") is None:
            pytest.skip("ScienceWorld needs a Java runtime (java not on PATH)")


@pytest.fixture(params=mulligan.env_ids())
def env_id(request) -> str:
    _needs(request.param)
    return request.param


@pytest.fixture(scope="module")
def env_cache():
    """One env per id for the whole module: ScienceWorld starts a JVM per env, so tests share it."""
    cache: dict[str, gymnasium.Env] = {}
    yield cache
    for env in cache.values():
        env.close()


@pytest.fixture
def env(env_id, env_cache) -> gymnasium.Env:
    if env_id not in env_cache:
        env_cache[env_id] = gymnasium.make(env_id)
    return env_cache[env_id]


# Adversarial actions every env must survive: no exception, bounded time, no reward for garbage.
FUZZ_ACTIONS = {
    "empty": "",
    "whitespace": " \n\t ",
    "control": "\x00\x01\x02\x1b[31m\x7f\r\x0b",
    "one_megabyte": "a" * 1_000_000,
    "unicode": "é世界🙂\u200b\u202e" * 500,
    "lone_surrogate": "answer \ud800 \udfff",
    "python_code": "__import__('os').system('touch /tmp/mulligan_pwned'); exec('1+1')",
    "latex_power_tower": "\\boxed{9^{9^{9^{9^{9^{9^{9}}}}}}}",
    "nested_braces": "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "calc_bomb": "Thought: big\nAction: calculate[9**9**9**9**9]",
    "huge_search": "Action: search[" + "x" * 200_000 + "]",
    "bracket_spam": "finish[" * 2000,
    "json_like": '{"answer": 42, "__class__": null}',
}


def test_every_id_is_registered_under_the_namespace():
    registered = {i for i in gymnasium.registry if i.startswith("Mulligan/")}
    assert registered == set(mulligan.env_ids())
    assert all(entry.description for entry in ENVS)


def test_registry_entry_points_import_cheaply():
    # The registry holds string entry points: importing mulligan must not import torch.
    import subprocess
    import sys

    code = "import sys, mulligan; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_check_env(env):
    assert isinstance(env.unwrapped, MulliganEnv)
    check_env(env.unwrapped)


def test_seeded_reset_is_deterministic(env):
    first = env.reset(seed=123)
    following = env.reset()
    second = env.reset(seed=123)
    assert first[1]["task_id"] == second[1]["task_id"]
    assert following[1]["task_id"] == env.reset()[1]["task_id"]
    if not env.spec.nondeterministic:
        assert first[0] == second[0]


def test_task_selection_contract(env):
    base = env.unwrapped
    num_tasks = base.num_tasks
    assert num_tasks is None or (isinstance(num_tasks, int) and num_tasks > 0)
    obs_a, info_a = env.reset(options={"task_index": 0})
    obs_b, info_b = env.reset(seed=999, options={"task_index": 0})
    assert info_a["task_id"] == info_b["task_id"]
    # The task record round-trips: an explicit record runs the same task.
    task = dict(base.task)
    obs_c, _ = env.reset(options={"task": base.task})
    assert base.task == task
    if not env.spec.nondeterministic:
        assert obs_a == obs_b and obs_c == obs_a
    with pytest.raises(ValueError):
        env.reset(options={"task_index": -1})
    if num_tasks is not None:
        with pytest.raises(ValueError):
            env.reset(options={"task_index": num_tasks})
    with pytest.raises(ValueError):
        env.reset(options={"task_index": 0, "task": base.task})
    with pytest.raises(ValueError):
        env.reset(options={"no_such_option": 1})


def test_info_has_the_same_keys_on_every_step(env):
    _, info = env.reset(seed=0)
    keys = set(info)
    assert {"task_id", "success", "score", "feedback"} <= keys
    for action in ["", "look around", "Action: finish[42]", "\\boxed{7}"]:
        _, reward, terminated, truncated, info = env.step(action)
        assert set(info) == keys
        assert isinstance(info["success"], bool)
        assert isinstance(info["feedback"], str)
        assert 0.0 <= info["score"] <= 1.0
        assert isinstance(reward, float)
        if terminated or truncated:
            break


@pytest.mark.parametrize("fuzz_name", sorted(FUZZ_ACTIONS))
def test_action_fuzz(env_id, env, fuzz_name):
    env.reset(seed=7)
    start = time.monotonic()
    observation, reward, _, _, info = env.step(FUZZ_ACTIONS[fuzz_name])
    elapsed = time.monotonic() - start
    assert isinstance(observation, str)
    assert env.observation_space.contains(observation)
    # A hang check, not a speed target: verification has a hard deadline of a few seconds.
    assert elapsed < 30, f"{env_id} took {elapsed:.1f}s on {fuzz_name}"
    if env_id != "Mulligan/Constraints-v0":
        # Garbage earns no more than a wrong answer, which earns 0 by default. (Constraint
        # checks score any text; an empty reply may legitimately satisfy some constraints.)
        assert reward <= 0.0
        assert not info["success"]
    import os

    assert not os.path.exists("/tmp/mulligan_pwned"), "an env executed model text"


def test_actions_over_the_size_limit_are_refused_cheaply(env_id, env):
    # Issue 15: a 10 MB action took 22 s and 477 MB on Constraints-v0. Now every env refuses an
    # action over its action space's max_length before reading it: the outcome of a malformed
    # (empty) action, with feedback that states the limit.
    limit = env.unwrapped.action_space.max_length
    env.reset(seed=7)
    _, empty_reward, empty_terminated, _, _ = env.step("")
    env.reset(seed=7)
    action = "x" * (10 * 2**20)
    assert len(action) > limit
    tracemalloc.start()
    start = time.perf_counter()
    try:
        observation, reward, terminated, _, info = env.step(action)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, f"{env_id} took {elapsed:.2f}s to refuse a 10 MB action"
    assert peak < 2**20, f"{env_id} allocated {peak} bytes to refuse a 10 MB action"
    assert str(limit) in info["feedback"] and "limit" in info["feedback"]
    assert (reward, terminated) == (min(empty_reward, 0.0), empty_terminated)
    assert not info["success"] and info["score"] == 0.0
    assert env.observation_space.contains(observation) and len(observation) < 10_000
    if not terminated:
        assert str(limit) in observation  # the model is told why, not only the logs


def test_step_before_reset_and_after_termination_raise():
    env = gymnasium.make("Mulligan/Echo-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")
    env.reset(seed=0)
    env.step("x")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")


def test_non_string_action_is_rejected_clearly():
    env = gymnasium.make("Mulligan/Echo-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str"):
        env.step(42)


@pytest.mark.parametrize("entry", ENVS, ids=lambda e: e.id)
def test_env_class_has_a_gymnasium_style_docstring(entry):
    if entry.id == "Mulligan/ScienceWorld-v0":
        pytest.importorskip("scienceworld")
    env_class = getattr(importlib.import_module(entry.module), entry.class_name)
    doc = env_class.__doc__ or ""
    for section in ("Description", "Observation and Action Space", "Reward", "Episode End", "Information", "Arguments"):
        assert section in doc, f"{entry.class_name} docstring lacks a '{section}' section"
