"""Lockstep collection: batching, reproducibility, resume after a crash."""

import json

import gymnasium
import pytest

import mulligan  # noqa: F401
from mulligan.agents.base import Action, Agent
from mulligan.training.rollout import collect_episodes
from mulligan.training.trajectory import TrajectoryStore


class EchoOracle(Agent):
    """Echoes the target of the current Echo task; records each batch size it was called with."""

    name = "echo-oracle"

    def __init__(self, wrong_every=0):
        self.batch_sizes = []
        self.wrong_every = wrong_every
        self.calls = 0

    def act(self, inputs):
        self.batch_sizes.append(len(inputs))
        actions = []
        for item in inputs:
            self.calls += 1
            target = item.observation.removeprefix("Repeat exactly: ")
            wrong = self.wrong_every and self.calls % self.wrong_every == 0
            actions.append(Action("nope" if wrong else target))
        return actions


def test_batches_across_envs_and_records_everything():
    agent = EchoOracle()
    trajectories = collect_episodes("Mulligan/Echo-v0", agent, 10, num_envs=4, seed=3, progress=False)
    assert len(trajectories) == 10
    assert agent.batch_sizes[0] == 4 and max(agent.batch_sizes) == 4
    for trajectory in trajectories:
        assert trajectory.success and trajectory.score == 1.0 and trajectory.terminated
        assert trajectory.messages[0]["content"].startswith("Repeat exactly: ")
        assert trajectory.messages[-1]["role"] == "assistant"
        assert trajectory.turns[0].observation == trajectory.messages[0]["content"]
        assert trajectory.final_observation == "Episode over."
        assert trajectory.agent == "echo-oracle"


def test_same_seed_same_tasks_different_seed_different_tasks():
    first = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 6, num_envs=2, seed=1, progress=False)
    again = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 6, num_envs=5, seed=1, progress=False)
    other = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 6, num_envs=2, seed=2, progress=False)
    assert [t.task_id for t in first] == [t.task_id for t in again]
    assert [t.seed for t in first] == [t.seed for t in again]
    assert [t.task_id for t in first] != [t.task_id for t in other]


def test_samples_per_task_and_explicit_indices():
    trajectories = collect_episodes(
        "Mulligan/Echo-v0", EchoOracle(), 6, task_indices=[5, 9, 11], samples_per_task=2, progress=False
    )
    assert [t.task_id for t in trajectories] == ["echo-0-5"] * 2 + ["echo-0-9"] * 2 + ["echo-0-11"] * 2
    assert [t.sample_index for t in trajectories] == [0, 1] * 3
    with pytest.raises(ValueError, match="multiple of samples_per_task"):
        collect_episodes("Mulligan/Echo-v0", EchoOracle(), 5, samples_per_task=2, progress=False)
    with pytest.raises(ValueError, match="len\\(task_indices\\)"):
        collect_episodes("Mulligan/Echo-v0", EchoOracle(), 4, task_indices=[1], progress=False)


def test_multi_turn_retries_keep_the_whole_history():
    agent = EchoOracle(wrong_every=1)  # always wrong: every attempt is used
    trajectories = collect_episodes(
        "Mulligan/Echo-v0", agent, 2, env_kwargs={"max_attempts": 3}, num_envs=2, progress=False
    )
    for trajectory in trajectories:
        assert len(trajectory.turns) == 3 and not trajectory.success and trajectory.terminated
        assert [m["role"] for m in trajectory.messages] == ["user", "assistant"] * 3
        assert "Please try again" in trajectory.turns[1].observation
        assert [t.info["attempt"] for t in trajectory.turns] == [1, 2, 3]


def test_max_turns_truncates():
    env = gymnasium.make("Mulligan/Echo-v0", max_attempts=5)
    assert env is not None
    trajectories = collect_episodes(
        "Mulligan/Echo-v0", EchoOracle(wrong_every=1), 1, env_kwargs={"max_attempts": 5}, max_turns=2,
        progress=False,
    )
    assert len(trajectories[0].turns) == 2 and trajectories[0].truncated and not trajectories[0].terminated


def test_resumed_collection_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "echo.jsonl"
    reference = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 12, num_envs=3, seed=5, progress=False)
    # A first run that "crashed": 7 complete lines and half of the 8th.
    store = TrajectoryStore(path)
    for trajectory in reference[:7]:
        store.append(trajectory)
    half = json.dumps(reference[7].to_dict())
    with open(path, "a") as handle:
        handle.write(half[: len(half) // 2])
    agent = EchoOracle()
    resumed = collect_episodes(
        "Mulligan/Echo-v0", agent, 12, num_envs=3, seed=5, store=TrajectoryStore(path), progress=False
    )
    assert sum(agent.batch_sizes) == 5  # only the missing episodes ran
    assert [t.key for t in resumed] == [t.key for t in reference]
    on_disk = TrajectoryStore(path).load()
    assert len(on_disk) == 12
    assert sorted(t.key for t in on_disk) == sorted(t.key for t in reference)
    assert len({t.key for t in on_disk}) == 12


def test_summaries_per_env_with_wilson_intervals():
    from mulligan.training.stats import format_table, summarize_by_env, summary_row, wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)
    echo = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=2), 10, progress=False)
    class WrongFirst(Agent):
        def act(self, inputs):
            return [Action("nope" if len(x.messages) == 1 else x.task["target"]) for x in inputs]

    retry = collect_episodes("Mulligan/Echo-v0", WrongFirst(), 4, env_kwargs={"max_attempts": 2}, progress=False)
    for trajectory in retry:
        trajectory.env_id = "Mulligan/Echo-v0+retry"
    summaries = summarize_by_env(echo + retry)
    assert list(summaries) == ["Mulligan/Echo-v0", "Mulligan/Echo-v0+retry"]
    single = summaries["Mulligan/Echo-v0"]
    assert single.episodes == 10 and single.success_rate == 0.5 and single.mean_turns == 1.0
    assert (single.success_low, single.success_high) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert summaries["Mulligan/Echo-v0+retry"].success_rate == 1.0  # the second attempt always succeeds
    assert summaries["Mulligan/Echo-v0+retry"].mean_turns == 2.0
    table = format_table([summary_row(s, env=name) for name, s in summaries.items()])
    assert "Mulligan/Echo-v0+retry" in table and "[0.24, 0.76]" in table
