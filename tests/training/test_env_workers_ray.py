"""Env workers on Ray (``env_workers_backend="ray"``), against a local Ray instance; skipped without ray."""

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs `pip install ray`")

import mulligan  # noqa: E402, F401
from mulligan.agents.teachers.science import NoisyScienceTeacher  # noqa: E402
from mulligan.agents.testing import RandomEchoAgent  # noqa: E402
from mulligan.training.env_workers import EnvWorkerError  # noqa: E402
from mulligan.training.evaluation import evaluate  # noqa: E402
from mulligan.training.rollout import EnvPool, collect_episodes  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (it takes seconds to start)."""
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started_here:
        ray.shutdown()


def dicts(trajectories):
    return [t.to_dict() for t in trajectories]


def test_ray_workers_give_the_trajectories_of_one_process(local_ray):
    kwargs = {"max_attempts": 3}
    agent = RandomEchoAgent(p_correct=0.3)
    expected = collect_episodes("Mulligan/Echo-v0", agent, 10, env_kwargs=kwargs, num_envs=3, seed=5, progress=False)
    with EnvPool("Mulligan/Echo-v0", 3, kwargs, env_workers=2, env_workers_backend="ray") as pool:
        assert pool.env_workers == 2 and pool.is_multi_turn
        assert dicts(collect_episodes(pool, agent, 10, seed=5, progress=False)) == dicts(expected)
    teacher = NoisyScienceTeacher(error_rate=0.1, seed=1)
    local = evaluate(teacher, "Mulligan/MiniScience-v0", range(4), num_envs=2, seed=2, progress=False)
    remote = evaluate(
        teacher,
        "Mulligan/MiniScience-v0",
        range(4),
        num_envs=2,
        seed=2,
        progress=False,
        env_workers=2,
        env_workers_backend="ray",
    )
    assert dicts(remote.trajectories) == dicts(local.trajectories)


def test_ray_env_errors_and_dead_actors_are_reported(local_ray):
    pool = EnvPool("Mulligan/MiniScience-v0", 2, env_workers=2, env_workers_backend="ray")
    try:
        with pytest.raises(
            EnvWorkerError, match=r"env 1 of 'Mulligan/MiniScience-v0' in env worker 1 \(Ray actor, pid \d+\)"
        ) as caught:
            pool.reset_many([(0, 0, {"task_index": 0}), (1, 0, {"task_index": -1})])
        assert isinstance(caught.value.__cause__, ValueError) and "resetting it" in str(caught.value)
        local_ray.kill(pool.workers.workers[0].actor)
        with pytest.raises(EnvWorkerError, match=r"env worker 0 \(Ray actor, pid \d+\) died"):
            collect_episodes(pool, NoisyScienceTeacher(), 2, task_indices=[0, 1], progress=False)
        with pytest.raises(EnvWorkerError, match="build a new pool"):
            pool.step_many([(1, "look around")])
    finally:
        pool.close()
