"""HierarchicalAgent and FlatAgent: the official context, the controller protocol, prompt alignment with training."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.flat import FlatAgent
from mulligan.agents.hierarchical import (
    END_SUBGOAL,
    HierarchicalAgent,
    OraclePlanner,
    SemiRandomSubgoals,
    StepContext,
    executor_prompt,
    flat_prompt,
    is_end_subgoal,
    most_similar_action,
    parse_steps,
    planner_prompt,
    semi_random_subgoal,
    split_subgoal,
    step_context,
    visited_rooms,
)
from mulligan.training.rollout import collect_episodes
from mulligan.training.subgoal_data import (
    RuleBasedAnnotator,
    collect_gold,
    distillation_conversations,
    semi_random_pools,
)


class Scripted(Agent):
    """A policy that answers each prompt with ``respond(prompt)`` and records every batch it saw."""

    def __init__(self, respond: Callable[[str], str]):
        self.respond = respond
        self.batches: list[list[AgentInput]] = []
        self.resets = 0

    def act(self, inputs):
        self.batches.append(list(inputs))
        return [Action(text=self.respond(x.messages[-1]["content"]), prompt=x.messages[-1]["content"]) for x in inputs]

    def reset(self, seed=None):
        self.resets += 1

    @property
    def prompts(self):
        return [x.messages[-1]["content"] for batch in self.batches for x in batch]


def field(prompt, name):
    return next(line.split(": ", 1)[1] for line in prompt.splitlines() if line.startswith(name + ": "))


def conversation(task="Do the thing.\n\nThis room is called the hallway. A door.", steps=()):
    messages = [{"role": "user", "content": task}]
    for action, observation in steps:
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
    return messages


CONTEXT = StepContext(
    task="Boil water.",
    step=2,
    score=8,
    history=[
        {"action": "open door to kitchen", "reward": 0, "observation": "The door is now open."},
        {"action": "go to kitchen", "reward": 8, "observation": "You move to the kitchen."},
    ],
    look="This room is called the kitchen. In it, you see:\n\ta stove",
    inventory="In your inventory, you see:\n\tnothing",
    visited_rooms=["hallway", "kitchen"],
)
TAIL = (
    "Action history:\n> open door to kitchen (+0) --> The door is now open.\n"
    "> go to kitchen (+8) --> You move to the kitchen.\n"
    "Current environment: This room is called the kitchen. In it, you see: | a stove\n"
    "Current inventory: In your inventory, you see: | nothing\nVisited rooms: hallway, kitchen\n"
)


def test_prompt_formats_are_exact():
    head = "Task: Boil water.\nTime: 3; Score: 8\n"
    assert planner_prompt(CONTEXT, ["navigate_to(kitchen)"], None) == (
        head + "Completed sub-goals: navigate_to(kitchen)\nCurrent sub-goal: none\n" + TAIL + "Next sub-goal:"
    )
    assert executor_prompt(CONTEXT, "pick_up(pot)") == (
        head + "Completed sub-goals: none\nCurrent sub-goal: pick_up(pot)\n" + TAIL + "Next action:"
    )
    # The flat baseline sees the same context, without the sub-goal lines.
    assert flat_prompt(CONTEXT) == head + TAIL + "Next action:"
    # history_len keeps the most recent steps; 0 shows none.
    assert "open door" not in flat_prompt(CONTEXT, history_len=1) and "go to kitchen (+8)" in flat_prompt(CONTEXT, 1)
    assert "Action history: none" in flat_prompt(CONTEXT, history_len=0)


def test_step_context_from_a_conversation_as_the_official_agent_builds_it():
    first = "Boil water.\n\nThis room is called the hallway. In it, you see: a picture."
    steps = [
        {"action": "open door to kitchen", "observation": "The door is now open."},
        {"action": "go to kitchen", "observation": "You move to the kitchen."},
        {"action": "look around", "observation": "This room is called the kitchen. In it..."},
    ]
    context = step_context("Boil water.", first, steps, [0.0, 0.08, 0.08], look="kitchen look", inventory="inv")
    assert context.step == 3 and context.score == 8
    assert [h["reward"] for h in context.history] == [0, 8, 0]
    assert context.visited_rooms == ["hallway", "kitchen"] and context.look == "kitchen look"
    # At the first step the look is the room part of the first observation.
    assert step_context("Boil water.", first, [], []).look == first.split("\n\n", 1)[1]
    assert visited_rooms(["You move to the living room.", "This room is called the kitchen."]) == [
        "living room",
        "kitchen",
    ]
    messages = conversation(steps=[("a", "A."), ("b", "B.")])
    assert parse_steps(messages) == (
        messages[0]["content"],
        [{"action": "a", "observation": "A."}, {"action": "b", "observation": "B."}],
        "B.",
    )


def test_the_controller_is_queried_every_step_and_a_changed_subgoal_is_completed():
    planner = Scripted(lambda p: "find(pot)" if field(p, "Time") == "1; Score: 0" else "heat(pot)")
    executor = Scripted(
        lambda p: "open cupboard" if field(p, "Current sub-goal") == "find(pot)" else "move pot to stove"
    )
    agent = HierarchicalAgent(planner, executor)
    first = agent.act([AgentInput(conversation(), info={"score": 0.0})])[0]
    assert first.text == "open cupboard" and first.metadata["planner_calls"] == 1
    messages = conversation(steps=[("open cupboard", "The cupboard is open. In it is a pot.")])
    second = agent.act([AgentInput(messages, info={"score": 0.25})])[0]
    # The planner answered heat(pot) without END_SG(): find(pot) joins the completed list (official).
    assert second.text == "move pot to stove" and second.metadata["planner_calls"] == 1
    assert second.metadata["completed_subgoals"] == ["find(pot)"] and second.metadata["subgoal"] == "heat(pot)"
    assert field(planner.prompts[-1], "Current sub-goal") == "find(pot)"
    # The reward of the step comes from the score in info.
    assert "> open cupboard (+25) --> The cupboard is open." in executor.prompts[-1]
    assert field(executor.prompts[-1], "Time") == "2; Score: 25"


def test_end_sg_is_never_sent_and_the_planner_is_asked_again_in_the_same_call():
    def plan(prompt):
        if field(prompt, "Completed sub-goals") == "none" and field(prompt, "Current sub-goal") in (
            "none",
            "find(pot)",
        ):
            return "find(pot)"
        return "heat(pot)"

    def execute(prompt):
        if field(prompt, "Current sub-goal") == "find(pot)":
            return END_SUBGOAL if "> open cupboard" in prompt else "open cupboard"
        return "move pot to stove"

    for every_step in (True, False):
        planner, executor = Scripted(plan), Scripted(execute)
        agent = HierarchicalAgent(planner, executor, planner_every_step=every_step)
        first = agent.act([AgentInput(conversation())])[0]
        assert first.text == "open cupboard" and first.metadata["completed_subgoals"] == []
        messages = conversation(steps=[("open cupboard", "The cupboard is open. In it is a pot.")])
        second = agent.act([AgentInput(messages)])[0]
        # One act call: executor said END_SG() for find(pot), planner gave heat(pot), executor acted.
        assert second.text == "move pot to stove"
        assert second.metadata["ended_subgoals"] == ["find(pot)"]
        assert second.metadata["completed_subgoals"] == ["find(pot)"]
        assert second.metadata["subgoal"] == "heat(pot)"
        assert second.metadata["planner_calls"] == (2 if every_step else 1)
        assert field(planner.prompts[-1], "Completed sub-goals") == "find(pot)"
        assert field(planner.prompts[-1], "Current sub-goal") == "none"
        assert all(not is_end_subgoal(a) for a in (first.text, second.text))
        later = [
            *messages,
            {"role": "assistant", "content": second.text},
            {"role": "user", "content": "The pot is on the stove."},
        ]
        third = agent.act([AgentInput(later)])[0]
        assert third.metadata["completed_subgoals"] == ["find(pot)"] and third.metadata["subgoal"] == "heat(pot)"
        # Every step: the controller is asked again; otherwise the current sub-goal carries over.
        assert third.metadata["planner_calls"] == (1 if every_step else 0)


def test_loop_is_bounded_when_the_executor_only_ends_subgoals():
    planner = Scripted(lambda p: "wait(1)")
    executor = Scripted(lambda p: "END_SG()")
    agent = HierarchicalAgent(planner, executor, max_subgoals_per_act=3, fallback_action="look around")
    action = agent.act([AgentInput(conversation())])[0]
    assert action.text == "look around" and action.metadata["exhausted"]
    assert action.metadata["planner_calls"] == 3
    assert action.metadata["completed_subgoals"] == ["wait(1)"] * 3
    assert len(executor.batches) == 3


def test_envs_are_batched_and_keep_separate_state():
    planner_agent = Scripted(lambda p: f"goal_{field(p, 'Task')}_{field(p, 'Time').split(';')[0]}()")

    def executor(prompt):
        return END_SUBGOAL if field(prompt, "Current sub-goal") == "goal_T2_1()" and "> step" in prompt else "step"

    executor_agent = Scripted(executor)
    agent = HierarchicalAgent(planner_agent, executor_agent, planner_every_step=False)
    first = agent.act([AgentInput(conversation("T", [])), AgentInput(conversation("T2", []))])
    assert [a.text for a in first] == ["step", "step"]
    assert len(planner_agent.batches) == 1 and len(planner_agent.batches[0]) == 2  # one batched call
    inputs = [AgentInput(conversation("T", [("step", "a")])), AgentInput(conversation("T2", [("step", "b")]))]
    second = agent.act(inputs)
    assert second[0].metadata["completed_subgoals"] == []
    assert second[1].metadata["completed_subgoals"] == ["goal_T2_1()"]
    assert second[1].metadata["subgoal"] == "goal_T2_2()"
    # The planner was asked only for the env whose executor ended its sub-goal.
    assert [len(b) for b in planner_agent.batches] == [2, 1]

    # An unseen conversation starts from an empty state; reset() forgets everything and resets policies.
    assert agent.state_for(conversation("T", [("other", "a")])).completed == []
    assert agent.state_for(conversation("T2", [("step", "b"), ("step", "c")])).completed == ["goal_T2_1()"]
    agent.reset()
    assert agent.state_for(conversation("T2", [("step", "b"), ("step", "c")])).completed == []
    assert planner_agent.resets == executor_agent.resets == 1


def test_invalid_actions_map_to_the_most_similar_valid_action_for_both_agents():
    valid = ["pick up thermometer", "open door to kitchen", "look around"]
    agent = HierarchicalAgent(Scripted(lambda p: "pick_up(thermometer)"), Scripted(lambda p: "pick up thermomter"))
    action = agent.act([AgentInput(conversation(), info={"valid_actions": valid})])[0]
    assert action.text == "pick up thermometer"
    assert action.metadata["mapped"] and action.metadata["raw_action"] == "pick up thermomter"
    # The next call finds the state under the conversation that holds the mapped action.
    followed = conversation(steps=[("pick up thermometer", "Done.")])
    assert agent.state_for(followed).subgoal == "pick_up(thermometer)"
    # Without valid actions the action is sent as is.
    raw = agent.act([AgentInput(conversation("new task"), info={"valid_actions": []})])[0]
    assert raw.text == "pick up thermomter" and not raw.metadata["mapped"]
    flat = FlatAgent(Scripted(lambda p: "pick up thermomter\nmore text"))
    assert flat.act([AgentInput(conversation(), info={"valid_actions": valid})])[0].text == "pick up thermometer"
    assert flat.act([AgentInput(conversation())])[0].text == "pick up thermomter"


def test_random_subgoal_ablation_replaces_the_controller_every_tenth_step():
    pool = ["wait(1)", "focus_on(rock)"]
    agent = HierarchicalAgent(
        Scripted(lambda p: "navigate_to(kitchen)"), Scripted(lambda p: "look around"), random_subgoals=pool, seed=0
    )
    first = agent.act([AgentInput(conversation())])[0]
    assert first.metadata["subgoal"] in pool  # step 0 is a multiple of 10
    steps = [("look around", "x")] * 3
    assert agent.act([AgentInput(conversation(steps=steps))])[0].metadata["subgoal"] == "navigate_to(kitchen)"
    with pytest.raises(ValueError, match="random_subgoals"):
        HierarchicalAgent(Scripted(str), Scripted(str), random_subgoals=[])


def test_most_similar_action_by_string_and_by_embedding():
    valid = ["go to kitchen", "go to hallway", "Open Fridge"]
    assert most_similar_action("go to kitchn", valid) == "go to kitchen"
    assert most_similar_action("open fridge ", valid) == "Open Fridge"
    assert most_similar_action("go to hallway", valid) == "go to hallway"

    def embed(texts):  # a toy embedding in which "cook" is close to "kitchen"
        return [[1.0, 0.0] if ("kitchen" in t or "cook" in t) else [0.0, 1.0] for t in texts]

    assert most_similar_action("go cook", valid, embed=embed) == "go to kitchen"
    with pytest.raises(ValueError, match="empty"):
        most_similar_action("x", [])


@pytest.mark.parametrize("every_step", [True, False])
def test_agents_render_exactly_the_training_prompts_and_replay_the_gold_paths(every_step):
    """Scripted policies that only know the training records: a prompt rendered differently at
    inference raises KeyError, so replaying the gold paths proves training and inference agree."""
    env_kwargs = {"variation": 5}
    annotated = collect_gold("Mulligan/MiniScience-v0", 7, env_kwargs=env_kwargs, seed=3)
    data = distillation_conversations(annotated, history_len=4, planner_every_step=every_step)
    answers = {c[0]["content"]: c[1]["content"] for role in ("planner", "executor") for c in data[role]}
    flat_answers = {c[0]["content"]: c[1]["content"] for c in data["flat"]}
    hierarchical = HierarchicalAgent(
        Scripted(answers.__getitem__), Scripted(answers.__getitem__), history_len=4, planner_every_step=every_step
    )
    flat = FlatAgent(Scripted(flat_answers.__getitem__), history_len=4)
    for agent in (hierarchical, flat):
        played = collect_episodes("Mulligan/MiniScience-v0", agent, 7, env_kwargs=env_kwargs, seed=3, progress=False)
        assert [t.task_id for t in played] == [a.trajectory.task_id for a in annotated]
        assert [[turn.action for turn in t.turns] for t in played] == [a.actions for a in annotated]
        assert all(t.success for t in played)


def test_semi_random_subgoals_keep_the_function_and_draw_rooms_for_rooms_and_objects_otherwise():
    import numpy as np

    assert split_subgoal("fill(metal pot, water)") == ("fill", ["metal pot", "water"])
    assert split_subgoal("look_around()") == ("look_around", [])
    assert split_subgoal("not a call") == ("not a call", [])
    pools = SemiRandomSubgoals(rooms=("kitchen", "greenhouse"), objects=("rock",))
    rng = np.random.default_rng(0)
    assert semi_random_subgoal("fill(metal pot, water)", pools, rng) == "fill(rock, rock)"
    drawn = {semi_random_subgoal("navigate_to(kitchen)", pools, rng) for _ in range(20)}
    assert drawn == {"navigate_to(kitchen)", "navigate_to(greenhouse)"}
    assert semi_random_subgoal("look_around()", pools, rng) == "look_around()"
    with pytest.raises(ValueError, match="at least one room and one object"):
        SemiRandomSubgoals(rooms=(), objects=("rock",))
    # The pools of the training annotations: navigation arguments are rooms, the rest objects.
    annotated = collect_gold("Mulligan/MiniScience-v0", 3, seed=0)
    learned = semi_random_pools(annotated)
    navigations = {a for t in annotated for g in t.subgoals if g.name == "navigate_to" for a in g.args}
    assert navigations and navigations <= set(learned.rooms) and not set(learned.objects) & set(learned.rooms)


def test_semi_random_ablation_changes_the_controllers_arguments_every_tenth_step():
    pools = SemiRandomSubgoals(rooms=("kitchen",), objects=("rock",))
    agent = HierarchicalAgent(
        Scripted(lambda p: "pick_up(thermometer)"), Scripted(lambda p: "look around"), semi_random=pools
    )
    assert agent.act([AgentInput(conversation())])[0].metadata["subgoal"] == "pick_up(rock)"
    steps = [("look around", "x")] * 3
    assert agent.act([AgentInput(conversation(steps=steps))])[0].metadata["subgoal"] == "pick_up(thermometer)"
    with pytest.raises(ValueError, match="not both"):
        HierarchicalAgent(Scripted(str), Scripted(str), random_subgoals=["a()"], semi_random=pools)


def test_first_subgoal_model_answers_only_the_first_query():
    first = Scripted(lambda p: "navigate_to(kitchen)")
    planner = Scripted(lambda p: "pick_up(thermometer)")
    agent = HierarchicalAgent(planner, Scripted(lambda p: "look around"), first_planner=first)
    assert agent.act([AgentInput(conversation())])[0].metadata["subgoal"] == "navigate_to(kitchen)"
    later = agent.act([AgentInput(conversation(steps=[("look around", "x")]))])[0]
    assert later.metadata["subgoal"] == "pick_up(thermometer)"
    assert later.metadata["completed_subgoals"] == ["navigate_to(kitchen)"]
    assert len(first.prompts) == 1 and len(planner.prompts) == 1
    assert first.prompts[0] == planner_prompt(step_context("Do the thing.", conversation()[0]["content"], [], []))


def test_the_executor_under_oracle_subgoals_replays_the_gold_paths():
    """The oracle planner answers the gold annotation's sub-goal of the next gold action; an executor
    that knows only its training records then replays every gold path (a wrong sub-goal or a
    completed list that differs from training would raise KeyError)."""
    env_kwargs = {"variation": 5}
    annotated = collect_gold("Mulligan/MiniScience-v0", 7, env_kwargs=env_kwargs, seed=3)
    answers = {c[0]["content"]: c[1]["content"] for c in distillation_conversations(annotated, 4)["executor"]}
    oracle = OraclePlanner(RuleBasedAnnotator().annotate)
    agent = HierarchicalAgent(oracle, Scripted(answers.__getitem__), history_len=4)
    played = collect_episodes("Mulligan/MiniScience-v0", agent, 7, env_kwargs=env_kwargs, seed=3, progress=False)
    assert [[turn.action for turn in t.turns] for t in played] == [a.actions for a in annotated]
    assert all(t.success for t in played)
    # Mid-path the oracle names the sub-goal of the next gold action, detours allowed.
    gold = annotated[0]
    task = {"gold_actions": gold.actions}
    first_observation = gold.trajectory.turns[0].observation
    steps = [("look around", "x"), (gold.actions[0], "ok")]
    expected = next(g.text for g in gold.subgoals if g.start <= 1 < g.end)
    assert oracle.subgoal_for(AgentInput(conversation(first_observation, steps), task=task)) == expected
    with pytest.raises(ValueError, match="gold_actions"):
        oracle.act([AgentInput(conversation())])


class Beams(Agent):
    """A policy with ranked beams: ``beams(prompt)`` best first; ``act`` returns the best."""

    def __init__(self, beams: Callable[[str], list[str]]):
        self.beams = beams

    def act(self, inputs):
        return [group[0] for group in self.sample(inputs, 1)]

    def sample(self, inputs, num_samples):
        return [[Action(b) for b in self.beams(x.messages[-1]["content"])[:num_samples]] for x in inputs]


def test_every_beam_counts_as_in_the_official_agent():
    # END_SG() in the second beam ends the sub-goal; an invalid best action gives way to the first
    # valid beam rather than to the most similar valid action.
    def executor_beams(prompt):
        if field(prompt, "Current sub-goal") == "navigate_to(kitchen)":
            return ["go to kitchen", END_SUBGOAL, "look around"]
        return ["pick up thermomter", "wait", "pick up apple"]

    valid = ["pick up apple", "pick up thermometer", "look around"]
    plans = iter(["navigate_to(kitchen)", "pick_up(thermometer)"])
    agent = HierarchicalAgent(
        Scripted(lambda p: next(plans)), Beams(executor_beams), planner_every_step=False, beam_candidates=5
    )
    [action] = agent.act([AgentInput(conversation(), info={"valid_actions": valid})])
    assert action.metadata["ended_subgoals"] == ["navigate_to(kitchen)"]
    assert action.text == "pick up apple" and action.metadata["raw_action"] == "pick up thermomter"
    # With the best beam only (the default), the same answers go elsewhere.
    plans = iter(["navigate_to(kitchen)"])
    single = HierarchicalAgent(Scripted(lambda p: next(plans)), Beams(executor_beams), planner_every_step=False)
    [action] = single.act([AgentInput(conversation(), info={"valid_actions": ["go to kitchen"]})])
    assert action.text == "go to kitchen" and action.metadata["ended_subgoals"] == []
    flat = FlatAgent(Beams(lambda p: ["pick up thermomter", "pick up apple"]), beam_candidates=5)
    assert flat.act([AgentInput(conversation(), info={"valid_actions": valid})])[0].text == "pick up apple"
    assert (
        FlatAgent(Beams(lambda p: ["pick up thermomter", "pick up apple"]))
        .act([AgentInput(conversation(), info={"valid_actions": valid})])[0]
        .text
        == "pick up thermometer"
    )
    with pytest.raises(ValueError, match="beam_candidates"):
        HierarchicalAgent(Scripted(str), Scripted(str), beam_candidates=0)
