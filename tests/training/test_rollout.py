"""Lockstep collection: batching, env pools, reproducibility, resume after a crash, recorded contexts."""

import json

import gymnasium
import pytest

import mulligan  # noqa: F401
from mulligan.agents.base import Action, Agent
from mulligan.agents.context import LastAttempts
from mulligan.agents.testing import EchoOracle, RandomEchoAgent, ScriptedAgent
from mulligan.training.rollout import EnvPool, collect_episodes
from mulligan.training.trajectory import Trajectory, TrajectoryStore


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


def test_a_pool_is_built_once_reused_across_calls_and_not_closed():
    with EnvPool("Mulligan/Echo-v0", 3, {"max_attempts": 2}) as pool:
        envs = list(pool.envs)
        assert len(pool) == 3 and pool.is_multi_turn and pool.num_tasks is None
        first = collect_episodes(pool, EchoOracle(), 4, seed=0, progress=False)
        second = collect_episodes(pool, EchoOracle(), 4, seed=0, progress=False)
        assert pool.envs == envs  # the same env objects, still open
        assert [t.key for t in first] == [t.key for t in second]
        by_id = collect_episodes(
            "Mulligan/Echo-v0", EchoOracle(), 4, seed=0, env_kwargs={"max_attempts": 2}, progress=False
        )
        assert [t.key for t in by_id] == [t.key for t in first]
        extra = pool.make()
        assert extra not in pool.envs
        extra.close()
        with pytest.raises(ValueError, match="EnvPool"):
            collect_episodes(pool, EchoOracle(), 2, env_kwargs={"max_attempts": 3}, progress=False)
    assert pool.envs == []
    with pytest.raises(ValueError, match="closed"):
        collect_episodes(pool, EchoOracle(), 2, progress=False)
    assert not EnvPool("Mulligan/Echo-v0", 1).is_multi_turn
    with pytest.raises(ValueError, match="num_envs"):
        EnvPool("Mulligan/Echo-v0", 0)


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
        assert trajectory.sees_full_history and trajectory.agent_system_prompt is None


def test_max_turns_truncates():
    env = gymnasium.make("Mulligan/Echo-v0", max_attempts=5)
    assert env is not None
    trajectories = collect_episodes(
        "Mulligan/Echo-v0",
        EchoOracle(wrong_every=1),
        1,
        env_kwargs={"max_attempts": 5},
        max_turns=2,
        progress=False,
    )
    assert len(trajectories[0].turns) == 2 and trajectories[0].truncated and not trajectories[0].terminated


def test_resumed_collection_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "echo.jsonl"
    reference = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 12, num_envs=3, seed=5, progress=False)
    # A first run that "crashed": 7 complete lines and half of the 8th.
    with TrajectoryStore(path) as store:
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


class Interrupted(Exception):
    pass


class CrashAfter(RandomEchoAgent):
    """The sampling agent, killed after ``calls`` batches (a crash in the middle of a collection)."""

    def __init__(self, calls, **kwargs):
        super().__init__(**kwargs)
        self.left = calls

    def act(self, inputs):
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return super().act(inputs)


def test_a_resumed_sampling_run_equals_an_uninterrupted_one(tmp_path):
    # Issue 15: the agent used to be reseeded from the start on resume, so resumed episodes drew
    # different samples. Per-input seeds from (seed, k, sample, turn) make them identical.
    kwargs = {"env_kwargs": {"max_attempts": 3}, "num_envs": 4, "seed": 11, "samples_per_task": 2, "progress": False}
    uninterrupted = collect_episodes("Mulligan/Echo-v0", RandomEchoAgent(p_correct=0.3), 24, **kwargs)
    path = tmp_path / "run.jsonl"
    with pytest.raises(Interrupted):
        collect_episodes("Mulligan/Echo-v0", CrashAfter(5, p_correct=0.3), 24, store=TrajectoryStore(path), **kwargs)
    done = len(TrajectoryStore(path).load())
    assert 0 < done < 24
    # The resumed run uses a different batch size: batching must not change any episode either.
    resumed = collect_episodes(
        "Mulligan/Echo-v0", RandomEchoAgent(p_correct=0.3), 24, store=TrajectoryStore(path), **{**kwargs, "num_envs": 3}
    )
    assert [t.to_dict() for t in resumed] == [t.to_dict() for t in uninterrupted]
    assert len({t.messages[1]["content"] for t in uninterrupted}) > 2  # it did sample


class SystemAndWindow(Agent):
    """Shows its model a system prompt and the last attempt only, through Agent.prepare_context."""

    system_prompt = "Be exact."
    context = LastAttempts(1)

    def act(self, inputs):
        actions = []
        for item in inputs:
            shown, record = self.prepare_context(item.messages)
            actions.append(Action(text=f"saw {len(shown)}", prompt=json.dumps(shown), context=record))
        return actions


def test_the_context_the_model_saw_is_recorded_and_rebuilt():
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0", SystemAndWindow(), 1, env_kwargs={"max_attempts": 4}, progress=False
    )
    assert len(trajectory.turns) == 4 and trajectory.agent_system_prompt == "Be exact."
    assert not trajectory.sees_full_history
    for t, turn in enumerate(trajectory.turns):
        # What the agent showed its model at turn t is exactly what the trainer rebuilds.
        shown = [{"role": "system", "content": "Be exact."}, trajectory.messages[0]]
        if t > 0:
            shown += trajectory.messages[2 * t - 1 : 2 * t + 1]
        assert trajectory.prompt_messages(t) == shown
        assert trajectory.training_messages(t) == [*shown, trajectory.messages[2 * t + 1]]
        assert trajectory.messages[2 * t + 1]["content"] == f"saw {len(shown)}"
        # A few integers whatever the episode length; None while nothing was dropped yet.
        assert (turn.context is None) == (t < 2) and len(turn.context or []) <= 2
    assert trajectory.training_samples() == [trajectory.training_messages(t) for t in range(4)]


class RecordingSystem(SystemAndWindow):
    """Shows a system prompt (no window of its own) and keeps, call by call, what it showed its model."""

    context = None

    def __init__(self):
        self.seen = []

    def act(self, inputs):
        self.seen += [self.prepare_messages(item.messages) for item in inputs]
        return super().act(inputs)


def test_a_rewriting_wrapper_s_context_is_rebuilt_from_the_trajectory():
    """NAT's prompt rewrites the task message; the trainer must rebuild the rewritten conversation."""
    from mulligan.agents.nat_prompt import NATPromptAgent

    inner = RecordingSystem()
    agent = NATPromptAgent(inner, domain="math", context=LastAttempts(1))
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0", agent, 1, env_kwargs={"max_attempts": 4}, num_envs=1, progress=False
    )
    assert len(trajectory.turns) == 4 == len(inner.seen)
    for t, seen in enumerate(inner.seen):
        assert trajectory.prompt_messages(t) == seen


def test_a_rewriting_wrapper_s_rewrites_are_stored_and_round_trip():
    from mulligan.agents.nat_prompt import NATPromptAgent

    agent = NATPromptAgent(RecordingSystem(), domain="math")
    (trajectory,) = collect_episodes("Mulligan/Echo-v0", agent, 1, progress=False)
    assert trajectory.turns[0].context_rewritten[0]["index"] == 0
    assert not trajectory.sees_full_history
    assert Trajectory.from_dict(trajectory.to_dict()) == trajectory


def test_a_long_episode_stores_linearly_many_bytes(tmp_path):
    def size(turns):
        path = tmp_path / f"{turns}.jsonl"
        collect_episodes(
            "Mulligan/Echo-v0",
            SystemAndWindow(),
            1,
            env_kwargs={"max_attempts": turns},
            store=TrajectoryStore(path),
            progress=False,
        )
        return path.stat().st_size

    small, large = size(10), size(40)
    assert large < 4.6 * small  # 4x the turns: about 4x the bytes, not 16x


def test_summaries_per_env_with_wilson_intervals():
    from mulligan.training.stats import format_table, summarize_by_env, summary_row, wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)
    echo = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=2), 10, progress=False)
    wrong_first = ScriptedAgent(["nope"])
    wrong_first.act = lambda inputs: [Action("nope" if len(x.messages) == 1 else x.task["target"]) for x in inputs]
    retry = collect_episodes("Mulligan/Echo-v0", wrong_first, 4, env_kwargs={"max_attempts": 2}, progress=False)
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


class Primed(Agent):
    """Starts every answer with the primer and sends only the continuation (a prefilling model agent)."""

    name = "primed"

    def act(self, inputs):
        return [Action(text=" right" if len(item.messages) > 2 else " wrong", prefill="Answer:") for item in inputs]


def test_a_prefilled_answer_is_recorded_and_kept_whole_in_the_history():
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0", Primed(), 1, env_kwargs={"max_attempts": 2}, num_envs=1, progress=False
    )
    assert [t.action for t in trajectory.turns] == [" wrong", " right"]  # the env got the continuations
    assert [t.prefill for t in trajectory.turns] == ["Answer:", "Answer:"]
    answers = [m["content"] for m in trajectory.messages if m["role"] == "assistant"]
    assert answers == ["Answer: wrong", "Answer: right"]
    assert trajectory.sees_full_history  # later turns saw each answer as the model wrote it
    assert trajectory.training_messages(1)[-1] == {
        "role": "assistant",
        "content": "Answer: right",
        "prefill": "Answer:",
    }
    (plain,) = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 1, num_envs=1, progress=False)
    assert plain.turns[0].prefill is None
