"""Sub-goal annotation of gold paths and the sub-goal distillation training views (training/subgoal_data.py)."""

from __future__ import annotations

import json
import shutil

import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import Action, Agent
from mulligan.agents.hierarchical import END_SUBGOAL, StepContext
from mulligan.agents.testing import FunctionAgent, ScriptedAgent
from mulligan.training.subgoal_data import (
    AnnotatedTrajectory,
    LLMAnnotator,
    RuleBasedAnnotator,
    SubGoal,
    SubgoalAnnotator,
    align_spans,
    annotate,
    annotation_request,
    build_training_views,
    check_annotation,
    collect_gold,
    drop_filler_steps,
    format_annotation,
    parse_annotation,
    render_record,
    step_contexts,
)

# ScienceWorld's own gold path for boil, variation 0, easy (recorded from the simulator).
SCIENCEWORLD_BOIL = [
    "open door to kitchen",
    "go to kitchen",
    "look around",
    "pick up thermometer",
    "open cupboard",
    "pick up metal pot",
    "look around",
    "move metal pot to sink",
    "activate sink",
    "deactivate sink",
    "pick up metal pot",
    "focus on substance in metal pot",
    "pour metal pot into metal pot",
    "pick up metal pot",
    "move metal pot to stove",
    "activate stove",
    "examine substance in metal pot",
    "use thermometer in inventory on substance in metal pot",
    "examine substance in metal pot",
    "use thermometer in inventory on substance in metal pot",
    "examine steam",
    "use thermometer in inventory on steam",
    "wait1",
]
SCIENCEWORLD_GROW = [
    "open door to kitchen",
    "go to kitchen",
    "look around",
    "pick up seed jar",
    "open door to outside",
    "go to outside",
    "open door to greenhouse",
    "go to greenhouse",
    "look around",
    "move apple seed in seed jar to flower pot 1",
    "0",
    "focus on apple seed in flower pot 1",
    "activate sink",
    "move jug to sink",
    "pour jug into flower pot 1",
    "deactivate sink",
    "wait1",
    "wait1",
    "look around",
    "wait1",
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
    assert (
        "move(apple seed in seed jar, flower pot 1)",
        ["look around", "move apple seed in seed jar to flower pot 1", "0"],
    ) in got
    assert ("water(flower pot 1)", SCIENCEWORLD_GROW[12:16]) in got
    assert got[-2:] == [("wait(2)", ["wait1", "wait1"]), ("wait(1)", ["look around", "wait1"])]


@pytest.mark.parametrize(
    "actions",
    [
        [],
        ["look around"],
        ["0", "1"],
        ["juggle"],
        ["wait", "wait1", "wait"],
        ["open door to a", "close door to b"],
        ["use thermometer on x", "wait1"],
    ],
)
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
    annotated = collect_gold("Mulligan/MiniScience-v0", 140, seed=0)
    assert len(annotated) == 140
    names = set()
    for item in annotated:
        assert item.trajectory.success  # the oracle completed the gold path
        assert item.actions == item.trajectory.task["gold_actions"]
        check_annotation(item.actions, item.subgoals)
        assert [a for g in item.subgoals for a in g.actions] == item.actions
        names |= {g.name for g in item.subgoals}
    assert {
        "navigate_to",
        "pick_up",
        "focus_on",
        "heat",
        "cool",
        "fill",
        "water",
        "monitor_temperature",
        "wait",
    } <= names


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
    # The oracle's trajectories carry what the contexts need (look, inventory, scores), e.g. the
    # orange that find-animal starts with.
    (item,) = collect_gold("Mulligan/ScienceWorld-v0", 1, env_kwargs={"task": "find-animal", "variation": 0})
    contexts = step_contexts(item.trajectory)
    assert "orange" in contexts[0].inventory and contexts[0].look.startswith("This room is called")
    assert contexts[-1].score == 100 and item.trajectory.success
    assert len(build_training_views(item)) > len(item.actions)


def boil_gold():
    (item,) = collect_gold("Mulligan/MiniScience-v0", 1, env_kwargs={"task": "boil", "variation": 3})
    return item


def test_step_contexts_hold_what_the_env_reported():
    item = boil_gold()
    turns = item.trajectory.turns
    contexts = step_contexts(item.trajectory)
    assert len(contexts) == len(turns) + 1
    first = contexts[0]
    assert first.step == 0 and first.score == 0 and first.history == []
    assert first.look == turns[0].observation.split("\n\n", 1)[1]
    assert first.inventory == "In your inventory, you see:\n\tnothing"
    for t in range(1, len(contexts)):
        context = contexts[t]
        assert context.step == t and context.score == round(100 * turns[t - 1].info["score"])
        assert context.look == turns[t - 1].info["look"] and context.inventory == turns[t - 1].info["inventory"]
        assert [h["action"] for h in context.history] == item.actions[:t]
        assert [h["reward"] for h in context.history] == [round(100 * x.reward) for x in turns[:t]]
    assert contexts[-1].score == 100 and sum(h["reward"] for h in contexts[-1].history) == 100
    assert contexts[-1].visited_rooms[0] == contexts[0].visited_rooms[0] and "kitchen" in contexts[-1].visited_rooms


@pytest.mark.parametrize("every_step", [True, False])
def test_training_views_follow_the_documented_format(every_step):
    item = boil_gold()
    goals, actions = item.subgoals, item.actions
    records = build_training_views(item, history_len=2, planner_every_step=every_step)
    json.loads(json.dumps(records))  # JSONL friendly
    first = [r for r in records if r["view"] == "first_step"]
    planner = [r for r in records if r["view"] == "planner"]
    executor = [r for r in records if r["view"] == "executor"]
    flat = [r for r in records if r["view"] == "flat"]
    assert len(first) == 1 and first[0]["completion"] == goals[0].text and first[0]["step"] == 0
    assert first[0]["current_subgoal"] is None
    starts = [r for r in planner if r["current_subgoal"] is None]
    assert [r["completion"] for r in starts] == [g.text for g in goals[1:]]
    assert [r["completed_subgoals"] for r in starts] == [[g.text for g in goals[:k]] for k in range(1, len(goals))]
    if every_step:
        # One record per step of each sub-goal, plus the step after its last action (but the episode's end).
        assert len(first) + len(planner) == len(actions) + len(goals) - 1
        keep = [r for r in planner if r["current_subgoal"] is not None]
        assert all(r["completion"] == r["current_subgoal"] for r in keep)
    else:
        assert len(planner) == len(goals) - 1
    assert len(executor) == len(actions) + len(goals)
    for goal in goals:
        mine = [r for r in executor if r["subgoal"] == goal.text and goal.start <= r["step"] <= goal.end]
        assert [r["completion"] for r in mine][-len(goal.actions) - 1 :] == [*goal.actions, END_SUBGOAL]
    assert [r["completion"] for r in flat] == actions and all(r["completed_subgoals"] == [] for r in flat)
    for record in records:
        context = StepContext.from_dict(record["context"])
        assert len(context.history) <= 2 and context.step == record["step"]
        prompt = render_record(record, history_len=2)
        assert prompt.startswith("Task: Your task is to boil")
        assert prompt.endswith("Next sub-goal:" if record["view"] in ("first_step", "planner") else "Next action:")
        if record["view"] == "executor":
            assert f"Current sub-goal: {record['subgoal']}" in prompt
        if record["view"] == "flat":
            assert "sub-goal" not in prompt


def test_views_reject_an_annotation_that_does_not_cover_the_actions():
    item = boil_gold()
    bad = AnnotatedTrajectory(item.trajectory, [SubGoal("x", [], item.actions[:1], 0, 1)])
    with pytest.raises(ValueError, match="cover"):
        build_training_views(bad)
    with pytest.raises(ValueError, match="unknown view"):
        render_record({**build_training_views(item)[0], "view": "critic"})


def test_annotated_trajectories_round_trip_through_json():
    item = boil_gold()
    again = AnnotatedTrajectory.from_dict(json.loads(json.dumps(item.to_dict())))
    assert again.subgoals == item.subgoals and again.actions == item.actions
    assert build_training_views(again) == build_training_views(item)


def test_annotator_is_a_protocol_an_llm_can_implement():
    class OneGoal:
        def annotate(self, task, actions):
            return [SubGoal("solve", [task], list(actions), 0, len(actions))]

    assert isinstance(RuleBasedAnnotator(), SubgoalAnnotator)
    assert isinstance(OneGoal(), SubgoalAnnotator)
    (item,) = collect_gold("Mulligan/MiniScience-v0", 1, annotator=OneGoal())
    assert len(item.subgoals) == 1 and item.subgoals[0].actions == item.actions
    assert SubGoal.from_dict(item.subgoals[0].to_dict()) == item.subgoals[0]
    assert annotate(item.trajectory, OneGoal()).subgoals == item.subgoals


def test_annotator_replies_parse_into_spans():
    reply = (
        "Here are the sub-goals.\n"
        "1- navigate_to(kitchen) : {'open door to kitchen', 'go to kitchen'}\n"
        "2. Fill(metal pot, water):{move metal pot to sink, activate sink,}\n"
        "3) empty() : {}\n"
        "4- wait(2): {wait1, wait1}"
    )
    assert parse_annotation(reply) == [
        ("navigate_to(kitchen)", ["open door to kitchen", "go to kitchen"]),
        ("Fill(metal pot, water)", ["move metal pot to sink", "activate sink"]),
        ("wait(2)", ["wait1", "wait1"]),
    ]
    spans = [("a(x)", ["p", "q"]), ("b()", ["r"])]
    assert parse_annotation(format_annotation(spans)) == spans


def test_alignment_keeps_the_most_matches_in_order():
    spans = [("s0", ["a", "invented", "b"]), ("s1", ["d", "c"]), ("s2", ["e"])]
    # c/d swapped: one of them is matched; the invented action is dropped; f was missed.
    assert align_spans(["a", "b", "c", "d", "e", "f"], spans) == [0, 0, 1, None, 2, None]
    assert align_spans(["a"], []) == [None]


GOLD = ["open door to kitchen", "go to kitchen", "close door to kitchen", "pick up pot", "wait1", "wait1", "eat pot"]
FIRST_REPLY = (
    "1- navigate_to(kitchen) : {open door to kitchen, go to kitchen}\n"
    "2- pick_up(pot) : {look around, pick up pot}\n"
    "3- eat(pot) : {eat pot}"
)


def test_llm_annotator_aligns_the_reply_to_the_gold_path_and_asks_again_about_missed_runs():
    # The reply misses "close door to kitchen" (one action: joins the sub-goal before it), invents
    # "look around" (dropped) and misses the two waits (a run: asked again, answered wait(2)).
    def respond(item):
        request = item.messages[-1]["content"]
        return (
            "1- wait(2) : {wait1, wait1}" if request == annotation_request("Boil.", ["wait1", "wait1"]) else FIRST_REPLY
        )

    agent = FunctionAgent(respond)
    goals = LLMAnnotator(agent).annotate("Boil.", GOLD)
    assert [(g.text, g.actions, g.start, g.end) for g in goals] == [
        ("navigate_to(kitchen)", GOLD[0:3], 0, 3),
        ("pick_up(pot)", ["pick up pot"], 3, 4),
        ("wait(2)", ["wait1", "wait1"], 4, 6),
        ("eat(pot)", ["eat pot"], 6, 7),
    ]
    first, again = agent.batches
    assert [m["role"] for m in first[0].messages] == ["system", "user", "assistant", "user"]
    assert first[0].messages[-1]["content"] == annotation_request("Boil.", GOLD)
    assert parse_annotation(first[0].messages[2]["content"])  # the demo is in the functional format
    assert len(again) == 1
    # Without asking again, the missed run joins the sub-goal before it.
    joined = LLMAnnotator(FunctionAgent(lambda item: FIRST_REPLY), reask_missing=False).annotate("Boil.", GOLD)
    assert [(g.text, g.start, g.end) for g in joined] == [
        ("navigate_to(kitchen)", 0, 3),
        ("pick_up(pot)", 3, 6),
        ("eat(pot)", 6, 7),
    ]


def test_llm_annotator_without_a_span_raises_or_falls_back():
    with pytest.raises(ValueError, match="no 'verb\\(args\\) : \\{actions\\}' span"):
        LLMAnnotator(ScriptedAgent(["I cannot help."])).annotate("Boil.", GOLD)
    rules = RuleBasedAnnotator()
    fallback = LLMAnnotator(ScriptedAgent(["I cannot help."]), fallback=rules).annotate("Boil.", GOLD)
    assert fallback == rules.annotate("Boil.", GOLD)


class OneSubgoalPerActionAgent(Agent):
    """An annotator model stand-in: every requested action is its own ``do(action)`` sub-goal."""

    def act(self, inputs):
        answers = []
        for item in inputs:
            actions = item.messages[-1]["content"].split("\nActions: ", 1)[1].removesuffix("\nSub-goals:").split(", ")
            answers.append(Action(format_annotation([(f"do({a})", [a]) for a in actions])))
        return answers


def test_the_trainer_annotates_with_an_agent_spec_and_drops_filler_steps_as_the_paper():
    from mulligan.training.subgoal import SubgoalArgs, build_annotator

    assert isinstance(build_annotator(SubgoalArgs()), RuleBasedAnnotator)
    annotator = build_annotator(SubgoalArgs(annotator=f"{__name__}:OneSubgoalPerActionAgent"))
    assert isinstance(annotator, LLMAnnotator) and isinstance(annotator.agent, OneSubgoalPerActionAgent)
    items = collect_gold("Mulligan/MiniScience-v0", 3, annotator=annotator, drop_filler=True)
    for item in items:
        assert [g.text for g in item.subgoals] == [f"do({a})" for a in item.actions]
        assert not any(a == "look around" or a.startswith("close door") for a in item.actions)


def test_dropping_filler_steps_keeps_each_kept_actions_answer():
    agent = ScriptedAgent(["look around", "open door to kitchen", "look around", "close door to kitchen", "wait1"])
    from mulligan.training.rollout import collect_episodes

    [played] = collect_episodes("Mulligan/MiniScience-v0", agent, 1, progress=False, max_turns=5)
    assert [t.action for t in played.turns] == agent.answers
    kept = drop_filler_steps(played)
    assert [t.action for t in kept.turns] == ["open door to kitchen", "wait1"]
    # "open door" is shown the first observation; "wait1" is shown the answer to "open door".
    assert kept.turns[0].observation == played.turns[0].observation
    assert kept.turns[1].observation == played.turns[2].observation
    assert kept.turns[1].info == played.turns[4].info and kept.final_observation == played.final_observation
    assert drop_filler_steps(kept) is kept
