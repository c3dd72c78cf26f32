"""The one evaluation: explicit task lists scored once each, known metric values, groups and macro averages."""

import json

import numpy as np
import pytest

import mulligan  # noqa: F401
from mulligan.agents.testing import EchoOracle, FunctionAgent, RandomEchoAgent, echo_target, turn_number
from mulligan.training.evaluation import (
    EvalResult,
    evaluate,
    majority_at_k,
    majority_metric,
    majority_over_turns,
    majority_vote,
    majority_votes_over_samples,
    majority_votes_over_turns,
    pass_at_k,
    resolve_task_indices,
    rise_turn_metrics,
    success_within_turns,
)
from mulligan.training.rollout import EnvPool
from mulligan.training.trajectory import Trajectory, TrajectoryStore, Turn


def write_math_records(path, n):
    """An n-record GSM8K-format test file: question k asks for k + k."""
    path.write_text(
        "".join(json.dumps({"question": f"What is {k}+{k}?", "answer": f"#### {2 * k}"}) + "\n" for k in range(n))
    )
    return str(path)


@pytest.fixture
def math_file(tmp_path):
    return write_math_records(tmp_path / "test.jsonl", 7)


def gold_answer(item):
    return f"The answer is {item.task['final_answer']}"


class EveryOtherWrong(FunctionAgent):
    def __init__(self):
        super().__init__(self.answer)
        self.calls = 0

    def answer(self, item):
        self.calls += 1
        return gold_answer(item) if self.calls % 2 else "The answer is -1"


def test_the_whole_split_scores_every_record_exactly_once(math_file):
    agent = EveryOtherWrong()
    result = evaluate(agent, "Mulligan/Math-v0", env_kwargs={"dataset": math_file}, num_envs=3, progress=False)
    questions = sorted(t.task["question"] for t in result.trajectories)
    assert questions == sorted(f"What is {k}+{k}?" for k in range(7))
    assert result.summary.episodes == 7 and agent.calls == 7
    assert result.summary.success_rate == pytest.approx(4 / 7)  # calls 1, 3, 5, 7 are right
    assert isinstance(result, EvalResult) and result.groups == {} and result.macro == {}
    assert json.loads(json.dumps(result.to_dict()))["summary"]["episodes"] == 7


def test_explicit_indices_keep_their_order_and_samples_are_consecutive(math_file):
    result = evaluate(
        FunctionAgent(gold_answer),
        "Mulligan/Math-v0",
        [4, 0, 2],
        env_kwargs={"dataset": math_file},
        samples_per_task=2,
        progress=False,
    )
    assert [t.task["final_answer"] for t in result.trajectories] == ["8", "8", "0", "0", "4", "4"]
    assert [t.sample_index for t in result.trajectories] == [0, 1] * 3
    assert result.summary.success_rate == 1.0


def test_task_lists_are_checked_never_drawn_with_replacement():
    assert resolve_task_indices(3, None) == [0, 1, 2]
    assert resolve_task_indices(None, range(2)) == [0, 1]
    with pytest.raises(ValueError, match="endless procedural source"):
        resolve_task_indices(None, None)
    with pytest.raises(ValueError, match="more than once"):
        resolve_task_indices(10, [1, 2, 1])
    with pytest.raises(ValueError, match=r"outside the split \[0, 3\)"):
        resolve_task_indices(3, [0, 3])
    with pytest.raises(ValueError, match="empty"):
        resolve_task_indices(3, [])
    with pytest.raises(ValueError, match="endless"):
        evaluate(EchoOracle(), "Mulligan/Echo-v0", progress=False)


def test_a_pool_is_reused_and_the_store_receives_every_episode(tmp_path):
    with EnvPool("Mulligan/Echo-v0", 2) as pool:
        first = evaluate(EchoOracle(), pool, range(5), store=TrajectoryStore(tmp_path / "e.jsonl"), progress=False)
        second = evaluate(EchoOracle(), pool, range(5), progress=False)
        assert len(pool) == 2 and pool.envs  # still open
    assert [t.key for t in first.trajectories] == [t.key for t in second.trajectories]
    assert len(TrajectoryStore(tmp_path / "e.jsonl").load()) == 5


def test_metrics_and_groups_with_macro_averages():
    def solve_short_words(item):
        target = echo_target(item)
        return target if len(target) <= 4 else "nope"

    result = evaluate(
        FunctionAgent(solve_short_words),
        "Mulligan/Echo-v0",
        range(12),
        progress=False,
        metrics=[lambda ts: {"n": float(len(ts))}, lambda ts: {"pass@1": pass_at_k(ts)}],
        group_by=lambda t: "short" if len(t.task["target"]) <= 4 else "long",
    )
    assert result.metrics == {"n": 12.0, "pass@1": result.summary.success_rate}
    assert set(result.groups) <= {"short", "long"} and sum(s.episodes for s in result.groups.values()) == 12
    assert result.groups.get("short") is None or result.groups["short"].success_rate == 1.0
    assert result.groups.get("long") is None or result.groups["long"].success_rate == 0.0
    expected = sum(s.success_rate for s in result.groups.values()) / len(result.groups)
    assert result.macro["success"] == pytest.approx(expected)


def fake(task, actions, successes, sample=0):
    turns = [Turn(task, a, float(s), {"success": s}) for a, s in zip(actions, successes, strict=True)]
    return Trajectory(
        env_id="E",
        task_id=task,
        task={},
        messages=[],
        turns=turns,
        success=successes[-1],
        score=float(successes[-1]),
        episode_return=0.0,
        terminated=True,
        truncated=False,
        metadata={"sample_index": sample},
    )


def test_known_metric_values():
    rng = np.random.default_rng(0)
    assert majority_vote(["4", "5", "4"], [True, False, True], rng) == (True, False)
    assert majority_vote(["5", "4", "5"], [False, True, False], rng) == (False, False)
    assert majority_vote([None, None], [True, True], rng) == (False, False)  # no stated answer: no vote
    assert majority_vote([None, "4", None], [True, True, False], rng) == (True, False)  # None does not vote
    samples = [
        fake("a", ["x=4"], [True], 0),
        fake("a", ["x=5"], [False], 1),
        fake("a", ["4"], [True], 2),
        fake("b", ["7"], [False], 0),
        fake("b", ["8"], [False], 1),
        fake("b", ["9"], [False], 2),
    ]
    assert pass_at_k(samples) == 0.5
    last_number = lambda text: text.split("=")[-1]  # noqa: E731
    assert majority_at_k(samples, last_number) == 0.5  # task a: "4" wins; task b: a 3-way tie of wrong answers
    assert majority_metric(last_number, "m3@t1")(samples) == {"m3@t1": 0.5, "m3@t1_ties": 0.5}
    episodes = [
        fake("a", ["5", "4", "4", "5", "4"], [False, True, True, False, True]),
        fake("b", ["1", "2", "3", "3", "3"], [False, False, False, False, False]),
    ]
    assert success_within_turns(episodes, 1) == 0.0
    assert success_within_turns(episodes, 2) == 0.5
    assert majority_over_turns(episodes, str) == 0.5
    assert rise_turn_metrics(str, 5)(episodes) == {"m1@t1": 0.0, "m1@t5": 0.5, "m1@t5_ties": 0.0, "p1@t5": 0.5}


def test_majority_ties_are_a_fair_seeded_draw_per_task():
    """A tie is drawn among the tied answers (not "the first answer wins"), the same way for a seed."""
    wins = [majority_vote(["1", "2"], [True, False], np.random.default_rng(s)) for s in range(200)]
    assert all(tied for _, tied in wins)
    assert 60 < sum(correct for correct, _ in wins) < 140
    # Over many tasks whose two samples disagree (one right), maj@2 is near 1/2, with every vote tied.
    samples = [
        fake(f"t{i}", [answer], [answer == "right"], s)
        for i in range(200)
        for s, answer in enumerate(["right", "wrong"])
    ]
    votes = majority_votes_over_samples(samples, str, seed=3)
    assert all(tied for _, tied in votes) and 60 < sum(c for c, _ in votes) < 140
    # Seeded by (seed, task id): the same seed gives the same draws, whatever the order of tasks.
    tasks_reversed = [t for i in reversed(range(200)) for t in samples[2 * i : 2 * i + 2]]
    assert majority_at_k(samples, str, seed=3) == majority_at_k(tasks_reversed, str, seed=3)
    assert majority_votes_over_samples(samples, str, seed=3) != majority_votes_over_samples(samples, str, seed=4)
    # By default the seed is the run seed the rollout stored.
    for trajectory in samples:
        trajectory.metadata["run_seed"] = 3
    assert majority_votes_over_samples(samples, str) == votes
    # One turn, first answers: a 5-turn episode with five distinct answers is a tie (m1@t5 is not m1@t1).
    distinct = fake("c", ["1", "2", "3", "4", "5"], [True, False, False, False, False])
    assert majority_votes_over_turns([distinct], str, seed=0)[0][1] is True


def test_rise_metrics_come_from_ordinary_no_oracle_rollouts():
    from mulligan.commands.evaluate import without_oracle

    def right_from_turn_two(item):
        return echo_target(item) if turn_number(item) >= 1 else "nope"

    with without_oracle(EnvPool("Mulligan/Echo-v0", 2, {"max_attempts": 3})) as pool:
        result = evaluate(
            FunctionAgent(right_from_turn_two), pool, range(4), progress=False, metrics=[rise_turn_metrics(str, 3)]
        )
    # No oracle: the episode goes on after the success at turn 2, so every episode has 3 turns.
    assert all(len(t.turns) == 3 for t in result.trajectories)
    assert result.metrics == {"m1@t1": 0.0, "m1@t3": 1.0, "m1@t3_ties": 0.0, "p1@t3": 1.0}


def test_sampling_agents_give_pass_at_k_above_pass_at_1():
    result = evaluate(
        RandomEchoAgent(p_correct=0.4),
        "Mulligan/Echo-v0",
        range(30),
        samples_per_task=4,
        seed=3,
        progress=False,
        metrics=[lambda ts: {"pass@4": pass_at_k(ts)}],
    )
    assert result.summary.episodes == 120
    assert result.metrics["pass@4"] > result.summary.success_rate + 0.2
