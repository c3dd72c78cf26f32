"""Env workers: a pool's envs stepped in worker processes give the trajectories of one process."""

import os
import signal
import time

import pytest

import mulligan  # noqa: F401
from mulligan.agents.teachers.science import NoisyScienceTeacher
from mulligan.agents.testing import RandomEchoAgent
from mulligan.envs.wrappers import set_stop_on_success
from mulligan.training.env_workers import EnvWorkerError, RemoteEnv
from mulligan.training.evaluation import evaluate
from mulligan.training.rollout import EnvPool, collect_episodes
from mulligan.training.trajectory import TrajectoryStore


def dicts(trajectories):
    return [t.to_dict() for t in trajectories]


def retry_count(env):
    """How many attempts the retry layer allows (a module-level function, so it pickles)."""
    layer = env
    while not hasattr(layer, "max_attempts"):
        layer = layer.env
    return layer.max_attempts, layer.stop_on_success


def test_two_workers_give_the_trajectories_of_one_process(tmp_path):
    # Echo with retries: a sampling agent, several turns, episodes of different lengths, so
    # slots finish and restart out of step; 5 envs over 2 workers (3 and 2 envs).
    kwargs = {"max_attempts": 3}
    agent = RandomEchoAgent(p_correct=0.3)
    expected = collect_episodes("Mulligan/Echo-v0", agent, 12, env_kwargs=kwargs, num_envs=5, seed=4, progress=False)
    with EnvPool("Mulligan/Echo-v0", 5, kwargs, env_workers=2) as pool:
        assert pool.env_workers == 2 and pool.is_multi_turn and pool.num_tasks is None
        assert all(isinstance(env, RemoteEnv) for env in pool.envs)
        got = collect_episodes(pool, agent, 12, seed=4, progress=False)
        assert dicts(got) == dicts(expected)
        assert len({t.turns.__len__() for t in got}) > 1  # the check covers episodes of different lengths
        # Resume: with half the episodes stored, the rest are those of the uninterrupted run.
        store = TrajectoryStore(tmp_path / "half.jsonl")
        for trajectory in expected[:6]:
            store.append(trajectory)
        resumed = collect_episodes(pool, agent, 12, seed=4, store=store, progress=False)
        assert dicts(resumed) == dicts(expected)
        assert len(list(TrajectoryStore(tmp_path / "half.jsonl"))) == 12


def test_one_and_two_workers_match_on_a_dataset_env_with_task_records():
    # MiniScience: multi-step episodes whose agent reads the gold path from the task record that
    # the worker sends back after each reset.
    teacher = NoisyScienceTeacher(error_rate=0.1, seed=1)
    expected = evaluate(teacher, "Mulligan/MiniScience-v0", range(6), num_envs=3, seed=2, progress=False)
    for workers in (1, 2):
        got = evaluate(
            teacher, "Mulligan/MiniScience-v0", range(6), num_envs=3, seed=2, progress=False, env_workers=workers
        )
        assert dicts(got.trajectories) == dicts(expected.trajectories)
        assert got.summary == expected.summary
    # Both outcomes and episodes of different lengths occur, so the comparison has teeth.
    assert {t.success for t in expected.trajectories} == {True, False}


def test_call_and_remote_handles_reach_the_envs_in_their_workers():
    with EnvPool("Mulligan/Echo-v0", 3, {"max_attempts": 2}, env_workers=2) as pool:
        assert pool.call(retry_count) == [(2, True)] * 3
        assert pool.call(set_stop_on_success, False) == [None] * 3  # a setter's env is not sent back
        assert pool.call(retry_count) == [(2, False)] * 3
        env = pool.envs[1]
        observation, _ = env.reset(seed=3, options={"task_index": 7})
        assert observation.startswith("Repeat exactly: ") and env.task["target"] in observation
        assert env.step(env.task["target"])[4]["success"]
        pool.grow(5)
        assert len(pool) == 5 and pool.call(retry_count) == [(2, False)] * 3 + [(2, True)] * 2
    with EnvPool("Mulligan/Echo-v0", 2, {"max_attempts": 2}) as local:
        assert local.call(set_stop_on_success, False) == [None, None]
        assert local.call(retry_count) == [(2, False)] * 2


def test_an_env_error_names_the_env_and_the_call_and_keeps_the_cause():
    with EnvPool("Mulligan/MiniScience-v0", 2, env_workers=2) as pool:
        with pytest.raises(
            EnvWorkerError, match=r"env 0 of 'Mulligan/MiniScience-v0' in env worker 0 \(pid \d+\)"
        ) as caught:
            collect_episodes(pool, NoisyScienceTeacher(), 1, task_indices=[-1], progress=False)
        assert "resetting it" in str(caught.value) and "Traceback" in str(caught.value)
        assert isinstance(caught.value.__cause__, ValueError)
        # The workers survive an env's exception: the other env still plays.
        observation, _ = pool.envs[1].reset(seed=0, options={"task_index": 0})
        assert observation and pool.envs[1].step("look around")[0]


def test_a_dead_worker_is_reported_with_its_exit_and_the_pool_shut_down():
    pool = EnvPool("Mulligan/Echo-v0", 2, env_workers=2)
    try:
        processes = [worker.process for worker in pool.workers.workers]
        victim = processes[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        with pytest.raises(EnvWorkerError, match=rf"env worker 1 \(pid {victim.pid}\) died \(killed by signal 9\)"):
            collect_episodes(pool, RandomEchoAgent(), 2, progress=False)
        assert not any(process.is_alive() for process in processes)  # the other worker was shut down too
        with pytest.raises(EnvWorkerError, match="build a new pool"):
            collect_episodes(pool, RandomEchoAgent(), 2, progress=False)
    finally:
        pool.close()


def test_bad_worker_settings_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="env_workers must be an int >= 0"):
        EnvPool("Mulligan/Echo-v0", 1, env_workers=-1)
    with pytest.raises(ValueError, match="env_workers_backend must be one of"):
        EnvPool("Mulligan/Echo-v0", 1, env_workers=1, env_workers_backend="threads")
    with pytest.raises(ValueError, match="env_workers_backend must be one of"):
        EnvPool("Mulligan/Echo-v0", 1, env_workers_backend="threads")
    with EnvPool("Mulligan/Echo-v0", 1) as pool, pytest.raises(ValueError, match=r"EnvPool\(\.\.\., env_workers=N\)"):
        collect_episodes(pool, RandomEchoAgent(), 1, env_workers=2, progress=False)
    with pytest.raises(EnvWorkerError, match=r"raised ValueError.*while building the env"):
        EnvPool("Mulligan/Echo-v0", 1, {"max_attempts": 0}, env_workers=1)


def nap(env, seconds):
    """Keep a worker busy (a module-level function, so it pickles)."""
    time.sleep(seconds)
    return seconds


class Alarm(Exception):
    pass


def test_an_interrupted_exchange_stops_the_workers_instead_of_leaving_answers_behind():
    def interrupt(signum, frame):
        raise Alarm

    pool = EnvPool("Mulligan/Echo-v0", 2, env_workers=2)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        processes = [worker.process for worker in pool.workers.workers]
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Alarm):
            pool.call(nap, 3)  # Ctrl-C would land the same way, mid-wait
        # The naps' answers would otherwise be read as the answers of the next call.
        with pytest.raises(EnvWorkerError, match="closed"):
            pool.call(nap, 0)
        assert not any(process.is_alive() for process in processes)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        pool.close()
