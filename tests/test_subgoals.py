"""Sub-goal annotation of gold paths and the sub-goal distillation training views."""

from __future__ import annotations

import json
import shutil

import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.envs.subgoals import (
    END_SUBGOAL,
    AnnotatedTrajectory,
    RuleBasedAnnotator,
    SubGoal,
    SubgoalAnnotator,
    annotate_gold_trajectory,
    build_training_views,
    check_annotation,
)

# ScienceWorld's own gold path for boil, variation 0, easy (recorded from the simulator).
SCIENCEWORLD_BOIL = [
    "open door to kitchen", "go to kitchen", "look around", "pick up thermometer", "open cupboard",
    "pick up metal pot", "look around", "move metal pot to sink", "activate sink", "deactivate sink",
    "pick up metal pot", "focus on substance in metal pot", "pour metal pot into metal pot", "pick up metal pot",
    "move metal pot to stove", "activate stove", "examine substance in metal pot",
    "use thermometer in inventory on substance in metal pot", "examine substance in metal pot",
    "use thermometer in inventory on substance in metal pot", "examine steam",
    "use thermometer in inventory on steam", "wait1",
]
SCIENCEWORLD_GROW = [
    "open door to kitchen", "go to kitchen", "look around", "pick up seed jar", "open door to outside",
    "go to outside", "open door to greenhouse", "go to greenhouse", "look around",
    "move apple seed in seed jar to flower pot 1", "0", "focus on apple seed in flower pot 1", "activate sink",
    "move jug to sink", "pour jug into flower pot 1", "deactivate sink", "wait1", "wait1", "look around", "wait1",
]


def texts(goals):
    return [(g.text, g.actions) for g in goals]


def test_annotates_scienceworld_boil_in_the_papers_format():
    goals = RuleBasedAnnotator().annotate("boil water", SCIENCEWORLD_BOIL)
    check_annotation(SCIENCEWORLD_BOIL, goals)
    got = texts(goals)
    assert got[0] == ("navigate_to(kitchen)", ["open door to kitchen", "go to kitchen"])
    assert got[1] == ("find(thermometer)", ["look around", "pick up thermometer"])
    assert got[2] == ("find(metal pot)", ["open cupboard", "pick up metal pot"])
    assert got[3][0] == "fill(metal pot, water)"
    assert ("focus_on(substance in metal pot)", ["focus on substance in metal pot"]) in got
    assert ("heat(metal pot)", ["move metal pot to stove", "activate stove"]) in got
    assert got[-2][0] == "monitor_temperature(substance in metal pot)"
    assert got[-1] == ("wait(1)", ["wait1"])


def test_disambiguation_answers_join_their_action_and_sinks_water_pots():
    goals = RuleBasedAnnotator().annotate("grow", SCIENCEWORLD_GROW)
    check_annotation(SCIENCEWORLD_GROW, goals)
    got = texts(goals)
    assert ("navigate_to(greenhouse)", SCIENCEWORLD_GROW[4:8]) in got
    assert ("move(apple seed in seed jar, flower pot 1)",
            ["look around", "move apple seed in seed jar to flower pot 1", "0"]) in got
    assert ("water(flower pot 1)", SCIENCEWORLD_GROW[12:16]) in got
    assert got[-2:] == [("wait(2)", ["wait1", "wait1"]), ("wait(1)", ["look around", "wait1"])]


@pytest.mark.parametrize("actions", [[], ["look around"], ["0", "1"], ["juggle"], ["wait", "wait1", "wait"],
                                     ["open door to a", "close door to b"], ["use thermometer on x", "wait1"]])
def test_edge_cases_are_covered(actions):
    check_annotation(actions, RuleBasedAnnotator().annotate("t", actions))


def test_check_annotation_rejects_gaps_overlaps_and_reordering():
    actions = ["a", "b", "c"]
    with pytest.raises(ValueError):
        check_annotation(actions, [SubGoal("x", [], ["a"], 0, 1), SubGoal("y", [], ["c"], 2, 3)])
    with pytest.raises(ValueError):
        check_annotation(actions, [SubGoal("x", [], ["a", "b"], 0, 2), SubGoal("y", [], ["b", "c"], 1, 3)])
    with pytest.raises(ValueError):
        check_annotation(actions, [SubGoal("x", [], ["b", "a", "c"], 0, 3)])
    check_annotation(actions, [SubGoal("x", [], ["a", "b"], 0, 2), SubGoal("y", [], ["c"], 2, 3)])


def test_miniscience_gold_paths_are_covered_exactly_once_in_order():
    env = gymnasium.make("Mulligan/MiniScience-v0")
    names = set()
    for index in range(140):
        trajectory = annotate_gold_trajectory(env, options={"task_index": index})
        check_annotation(trajectory.actions, trajectory.subgoals)
        flat = [a for g in trajectory.subgoals for a in g.actions]
        assert flat == trajectory.actions
        names |= {g.name for g in trajectory.subgoals}
    assert {"navigate_to", "pick_up", "focus_on", "heat", "cool", "fill", "water", "monitor_temperature",
            "wait"} <= names


@pytest.mark.scienceworld
def test_scienceworld_gold_paths_are_covered_exactly_once_in_order():
    pytest.importorskip("scienceworld", reason="the scienceworld extra is not installed")
    if shutil.which("java") is None:
        pytest.skip("ScienceWorld needs a Java runtime (java not on PATH)")
    env = gymnasium.make("Mulligan/ScienceWorld-v0", variation=0, step_limit=None, max_episode_steps=400)
    try:
        for index in [0, 1, 2, 4, 11, 15, 17]:
            env.reset(options={"task_index": index})
            gold = env.unwrapped.gold_actions()
            goals = RuleBasedAnnotator().annotate(env.unwrapped.task["task_name"], gold)
            check_annotation(gold, goals)
    finally:
        env.close()


def test_training_views_follow_the_documented_format():
    env = gymnasium.make("Mulligan/MiniScience-v0", task="boil", variation=3)
    trajectory = annotate_gold_trajectory(env, options={"task_index": 0})
    records = build_training_views(trajectory, history_len=2)
    json.loads(json.dumps(records))  # JSONL friendly
    goals = trajectory.subgoals
    first = [r for r in records if r["view"] == "first_step"]
    planner = [r for r in records if r["view"] == "planner"]
    executor = [r for r in records if r["view"] == "executor"]
    assert len(first) == 1 and first[0]["completion"] == goals[0].text and first[0]["step"] == 0
    assert first[0]["task"].startswith("Your task is to boil")
    assert [r["completion"] for r in planner] == [g.text for g in goals[1:]]
    assert len(executor) == len(trajectory.actions) + len(goals)
    for goal in goals:
        mine = [r for r in executor if r["subgoal"] == goal.text and goal.start <= r["step"] <= goal.end]
        assert [r["completion"] for r in mine][-len(goal.actions) - 1:] == [*goal.actions, END_SUBGOAL]
    for record in records:
        assert len(record["history"]) <= 2
        assert record["prompt"].startswith("Task: ")
        assert record["prompt"].endswith("Next action:" if record["view"] == "executor" else "Next sub-goal:")
        if record["view"] == "executor":
            assert f"Current sub-goal: {record['subgoal']}" in record["prompt"]
    # The executor's history holds only the current sub-goal's turns.
    second = next(r for r in executor if r["step"] == goals[1].start and r["subgoal"] == goals[1].text)
    assert second["history"] == []
    assert second["completed_subgoals"] == [goals[0].text]


def test_views_reject_an_annotation_that_does_not_cover_the_actions():
    bad = AnnotatedTrajectory("id", "task", "obs", ["a", "b"], ["o1", "o2"], [SubGoal("x", [], ["a"], 0, 1)])
    with pytest.raises(ValueError, match="cover"):
        build_training_views(bad)


def test_annotator_is_a_protocol_an_llm_can_implement():
    class OneGoal:
        def annotate(self, task, actions):
            return [SubGoal("solve", [task], list(actions), 0, len(actions))]

    assert isinstance(RuleBasedAnnotator(), SubgoalAnnotator)
    assert isinstance(OneGoal(), SubgoalAnnotator)
    env = gymnasium.make("Mulligan/MiniScience-v0")
    trajectory = annotate_gold_trajectory(env, OneGoal(), options={"task_index": 2})
    assert len(trajectory.subgoals) == 1 and trajectory.subgoals[0].actions == trajectory.actions
    assert SubGoal.from_dict(trajectory.subgoals[0].to_dict()) == trajectory.subgoals[0]
