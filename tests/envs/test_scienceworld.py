"""Mulligan/ScienceWorld-v0: the real simulator behind gymnasium.make (needs scienceworld + java)."""

from __future__ import annotations

import gc
import os
import shutil
import time

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401 - registers the ids

pytestmark = pytest.mark.scienceworld
pytest.importorskip("scienceworld", reason="the scienceworld extra is not installed")
if shutil.which("java") is None:
    pytest.skip("ScienceWorld needs a Java runtime (java not on PATH)", allow_module_level=True)

from mulligan.envs.scienceworld import SimulatorDiedError, official_task_names  # noqa: E402

ENV_ID = "Mulligan/ScienceWorld-v0"


def java_children() -> list[int]:
    """Pids of live java processes whose parent is this test process."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == os.getpid() and state != "Z" and b"java" in cmdline:
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def env():
    env = gymnasium.make(ENV_ID, task="find-animal", variation="train", generate_gold_path=False)
    yield env
    env.close()


def test_check_env_through_registry():
    env = gymnasium.make(ENV_ID, task="lifespan-longest-lived", variation=0, generate_gold_path=False)
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


FUZZ = [
    "",
    " \n\t ",
    "\x00\x01\x1b[31m\x7f",
    "a" * 1_000_000,
    "é世界🙂\u200b" * 500,
    "answer \ud800 \udfff",
    "__import__('os').system('touch /tmp/mulligan_pwned')",
    "go to " + "x" * 900,
    "focus on",
]


def test_action_fuzz_never_raises_and_pays_nothing(env):
    env.reset(seed=0)
    for action in FUZZ:
        observation, reward, terminated, truncated, info = env.step(action)
        assert isinstance(observation, str)
        assert reward <= 0.0 and not info["success"]
        assert not terminated and not truncated
    assert not os.path.exists("/tmp/mulligan_pwned")


def test_unrecognised_action_is_an_observation_with_feedback(env):
    env.reset(seed=0)
    observation, reward, terminated, _, info = env.step("juggle the moon")
    assert observation.startswith("No known action matches that input")
    assert "open door to kitchen" in info["feedback"]
    assert reward == 0.0 and not terminated


def test_info_keys_are_the_same_on_every_step(env):
    _, info = env.reset(seed=1)
    keys = set(info)
    assert {"score", "moves", "valid_actions", "raw_score", "success", "feedback", "task_id"} <= keys
    for action in ["look around", "wait1", "nonsense"]:
        assert set(env.step(action)[4]) == keys
    assert env.step("inventory")[4]["valid_actions"] == []


def test_task_selection_splits_and_record_round_trip(env):
    u = env.unwrapped
    assert u.num_tasks == len(u.task_pairs) == 150  # find-animal has 150 training variations
    _, info = env.reset(options={"task_index": 3})
    assert u.task == {
        "task_name": "find-animal",
        "variation": 3,
        "simplification": "easy",
        "initial_inventory": info["inventory"],
    }
    assert info["task_id"] == "scienceworld-find-animal-3-easy"
    first, info2 = env.reset(options={"task": dict(u.task)})
    assert info2["task_id"] == info["task_id"]
    assert first.startswith("Your task is to find a(n) animal")
    with pytest.raises(ValueError, match="variation"):
        env.reset(options={"task": {"task_name": "boil", "variation": 10_000}})
    with pytest.raises(ValueError, match="unknown ScienceWorld task"):
        env.reset(options={"task": {"task_name": "juggling", "variation": 0}})


def test_bad_arguments_say_the_fix():
    with pytest.raises(ValueError, match="unknown ScienceWorld task"):
        gymnasium.make(ENV_ID, task="juggling")
    with pytest.raises(ValueError, match="step_limit"):
        gymnasium.make(ENV_ID, task="boil", step_limit=0)


def test_failure_terminates_with_zero_score(env):
    env.reset(options={"task": {"task_name": "find-animal", "variation": 0}})
    _, reward, terminated, _, info = env.step("focus on door to kitchen")
    assert terminated and not info["success"]
    assert info["raw_score"] < 0 and info["score"] == 0.0 and reward == 0.0
    assert "failed" in info["feedback"]


def test_valid_actions_on_request():
    env = gymnasium.make(ENV_ID, task="find-animal", variation=0, include_valid_actions=True, generate_gold_path=False)
    try:
        _, info = env.reset(seed=0)
        assert "look around" in info["valid_actions"]
        assert any(a.startswith("go to") for a in env.step("look around")[4]["valid_actions"])
    finally:
        env.close()


def test_no_java_process_is_left_behind():
    before = set(java_children())
    env = gymnasium.make(ENV_ID, task="find-animal", variation=0, generate_gold_path=False)
    env.reset(seed=0)
    started = set(java_children()) - before
    assert len(started) == 1
    env.close()
    assert set(java_children()) == before
    env.close()  # idempotent

    env = gymnasium.make(ENV_ID, task="find-animal", variation=0, generate_gold_path=False)
    assert len(set(java_children()) - before) == 1
    del env
    gc.collect()
    assert set(java_children()) == before


def test_simulator_death_raises_then_reset_recovers(capfd, caplog):
    env = gymnasium.make(ENV_ID, task="find-animal", variation=0, generate_gold_path=False)
    try:
        env.reset(seed=0)
        capfd.readouterr()
        env.unwrapped.java_process.kill()
        env.unwrapped.java_process.wait()
        # Every action, sent to the JVM or refused for its length, raises the same clear error.
        too_long = "x" * (env.unwrapped.action_space.max_length + 1)  # refused unread by the base class
        for action in (too_long, "look around", "x" * 5000, "look around"):
            with pytest.raises(SimulatorDiedError, match="died mid-episode; call reset"):
                env.step(action)
        # py4j's tracebacks do not reach the user.
        captured = capfd.readouterr()
        assert "Traceback" not in captured.err and "py4j" not in captured.err
        assert not [r for r in caplog.records if r.name.startswith("py4j")]
        observation, _ = env.reset(seed=0)
        assert observation.startswith("Your task is")
        assert env.unwrapped.simulator_alive()
        assert isinstance(env.step("look around")[0], str)
    finally:
        env.close()


def test_info_shows_look_and_inventory_and_stall_limit_ends_the_episode():
    env = gymnasium.make(ENV_ID, task="find-animal", variation=0, generate_gold_path=False, stall_limit=2)
    try:
        first, info = env.reset(seed=0)
        assert first.split("\n\n", 1)[1] == info["look"] and info["look"].startswith("This room is called")
        assert info["inventory"].startswith("In your inventory")
        # The first look around scores in find-animal; two actions without a change then end the episode.
        outcomes = [env.step(action) for action in ("look around", "inventory", "look around")]
        assert [o[2] for o in outcomes] == [False, False, True]
        assert outcomes[0][4]["look"].startswith("This room is called")
        assert outcomes[1][0].strip() == outcomes[1][4]["inventory"].strip()
        info = outcomes[-1][4]
        assert not info["success"] and "has not changed in 2 actions" in info["feedback"]
    finally:
        env.close()


def test_reward_sums_to_the_final_score_on_a_gold_path():
    env = gymnasium.make(ENV_ID, task="find-plant", variation=0)
    try:
        env.reset(seed=0)
        total = 0.0
        for action in env.unwrapped.gold_actions():
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            if terminated or truncated:
                break
        assert info["success"] and info["score"] == 1.0
        assert total == pytest.approx(info["score"])
        assert env.unwrapped.task["gold_actions"] == env.unwrapped.gold_actions()
    finally:
        env.close()


def test_gold_path_of_variation_0_of_every_task_succeeds():
    """All 30 tasks, through the gym env; ~2-3 minutes on a shared 2-core machine."""
    names = official_task_names()
    assert len(names) == 30
    # Some gold paths (friction on unnamed surfaces, Mendelian genetics) need more than 100 moves.
    env = gymnasium.make(ENV_ID, variation=0, step_limit=None, max_episode_steps=400)
    failures = []
    start = time.monotonic()
    try:
        assert env.unwrapped.num_tasks == 30
        for index in range(30):
            env.reset(options={"task_index": index})
            info = {}
            for action in env.unwrapped.gold_actions():
                _, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            if not info.get("success"):
                failures.append((names[index], info.get("raw_score")))
    finally:
        env.close()
    print(f"30 gold paths in {time.monotonic() - start:.1f}s")
    assert failures == []


def test_tools_mode_check_env_invalid_calls_and_a_gold_path_as_tool_calls():
    import json

    from mulligan.envs.registration import env_tools
    from mulligan.envs.tools import format_tool_call

    env = gymnasium.make(ENV_ID, task="find-plant", variation=0, action_format="tools")
    try:
        check_env(env.unwrapped)
        assert env.unwrapped.tools == env_tools(ENV_ID) and env.unwrapped.tools[0]["function"]["name"] == "look_around"
        env.reset(seed=0)
        total = 0.0
        for bad in ["look around", '{"name": "fly", "arguments": {}}', "[" * 100_000, "x" * (2**21 + 1)]:
            observation, reward, terminated, _, info = env.step(bad)
            total += reward
            assert (reward <= 0.0, terminated, info["success"]) == (True, False, False)
            assert observation == info["feedback"] and info["feedback"]
        observation, reward, *_, info = env.step(format_tool_call("look_around", {}, "look-1"))
        total += reward
        assert observation.startswith("This room is called") and info["tool_call_id"] == "look-1"
        for action in env.unwrapped.gold_actions():
            call = {"name": "command", "arguments": json.dumps({"text": action})}
            _, reward, terminated, truncated, info = env.step(json.dumps(call))
            total += reward
            if terminated or truncated:
                break
        assert info["success"] and total == pytest.approx(info["score"]) == 1.0
    finally:
        env.close()


def test_jvm_options_reach_the_simulators_jvm_and_leave_this_process_alone():
    before = os.environ.get("JDK_JAVA_OPTIONS")
    env = gymnasium.make(
        ENV_ID,
        task="boil",
        variation=0,
        generate_gold_path=False,
        jvm_options=["-XX:ActiveProcessorCount=1", "-Dmulligan.probe=on"],
    )
    try:
        jvm = env.unwrapped._sim._gateway.jvm
        assert jvm.java.lang.Runtime.getRuntime().availableProcessors() == 1
        assert jvm.java.lang.System.getProperty("mulligan.probe") == "on"
        assert os.environ.get("JDK_JAVA_OPTIONS") == before
        env.reset()
        assert env.step("look around")[0].startswith("This room is called")
    finally:
        env.close()
    default = gymnasium.make(ENV_ID, task="boil", variation=0, generate_gold_path=False)
    try:  # by default each JVM sizes its GC and JIT threads for one core
        assert default.unwrapped.jvm_options == ("-XX:ActiveProcessorCount=1", "-XX:+UseSerialGC")
        assert default.unwrapped._sim._gateway.jvm.java.lang.Runtime.getRuntime().availableProcessors() == 1
    finally:
        default.close()
    plain = gymnasium.make(ENV_ID, task="boil", variation=0, generate_gold_path=False, jvm_options=[])
    try:  # [] leaves the JVM's own defaults: it sees every core
        processors = plain.unwrapped._sim._gateway.jvm.java.lang.Runtime.getRuntime().availableProcessors()
        assert processors > 1 or len(os.sched_getaffinity(0)) == 1
    finally:
        plain.close()
    for bad in ("-XX:+UseSerialGC", ["-Xmx1g -Xms1g"], ["Xmx1g"]):
        with pytest.raises(ValueError, match=r"jvm_options must be a list|one flag starting with '-'"):
            gymnasium.make(ENV_ID, task="boil", variation=0, jvm_options=bad)


def jvm_pid(env) -> int:
    """The pid of an env's JVM (called in the env's worker)."""
    return env.unwrapped.java_process.pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_env_workers_play_scienceworld_and_leave_no_jvm_behind():
    from mulligan.agents.teachers.science import ScienceOracle
    from mulligan.training.env_workers import EnvWorkerError
    from mulligan.training.rollout import EnvPool, collect_episodes

    kwargs = {"task": "find-animal", "variation": "train"}
    with EnvPool(ENV_ID, 2, kwargs, env_workers=2) as pool:
        jvms = pool.call(jvm_pid)
        assert len(set(jvms)) == 2 and all(alive(pid) for pid in jvms)
        trajectories = collect_episodes(pool, ScienceOracle(), 2, task_indices=[0, 1], progress=False)
        assert all(t.success for t in trajectories)
    deadline = time.time() + 30
    while any(alive(pid) for pid in jvms) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in jvms), "closing the pool ends every worker's JVM"
    # A worker killed outright takes its JVM with it (py4j's JVM exits when its parent's pipe closes).
    pool = EnvPool(ENV_ID, 1, kwargs, env_workers=1)
    try:
        (jvm,) = pool.call(jvm_pid)
        pool.workers.workers[0].process.kill()
        with pytest.raises(EnvWorkerError, match="died"):
            pool.step_many([(0, "look around")])
    finally:
        pool.close()
    deadline = time.time() + 30
    while alive(jvm) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(jvm)
