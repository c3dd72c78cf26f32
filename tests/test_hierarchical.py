"""HierarchicalAgent: the planner/executor protocol with scripted policies, and prompt alignment."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.hierarchical import (
    END_SUBGOAL,
    HierarchicalAgent,
    executor_prompt,
    is_end_subgoal,
    most_similar_action,
    planner_prompt,
    prompt_for_record,
)
from mulligan.envs.wrappers import ChatHistory


class Scripted(Agent):
    """A policy that answers each prompt with ``respond(prompt)`` and records every batch it saw."""

    def __init__(self, respond: Callable[[str], str]):
        self.respond = respond
        self.batches: list[list[AgentInput]] = []
        self.resets = 0

    def act(self, inputs):
        self.batches.append(list(inputs))
        return [Action(text=self.respond(x.messages[-1]["content"]), prompt=x.messages[-1]["content"])
                for x in inputs]

    def reset(self, seed=None):
        self.resets += 1

    @property
    def prompts(self):
        return [x.messages[-1]["content"] for batch in self.batches for x in batch]


def field(prompt, name):
    return next(line.split(": ", 1)[1] for line in prompt.splitlines() if line.startswith(name + ": "))


def conversation(task="Do the thing.\n\nYou are in a room.", steps=()):
    messages = [{"role": "user", "content": task}]
    for action, observation in steps:
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
    return messages


def test_prompt_formats_are_exact():
    history = [{"action": "go to kitchen", "observation": "You are in the kitchen."}]
    assert planner_prompt("Boil water.", ["navigate_to(kitchen)"], history, "You are in the kitchen.") == (
        "Task: Boil water.\nCompleted sub-goals: navigate_to(kitchen)\nHistory:\n> go to kitchen\n"
        "You are in the kitchen.\nObservation: You are in the kitchen.\nNext sub-goal:")
    assert executor_prompt("Boil water.", "pick_up(pot)", [], [], "A pot.") == (
        "Task: Boil water.\nCompleted sub-goals: none\nObservation: A pot.\nCurrent sub-goal: pick_up(pot)\n"
        "Next action:")
    with pytest.raises(ValueError, match="view"):
        prompt_for_record({"view": "critic", "task": "", "completed_subgoals": [], "history": [], "observation": ""})


def test_end_sg_is_never_sent_and_the_planner_is_asked_again_in_the_same_call():
    planner = Scripted(lambda p: "find(pot)" if field(p, "Completed sub-goals") == "none" else "heat(pot)")

    def executor(prompt):
        subgoal = field(prompt, "Current sub-goal")
        if subgoal == "find(pot)":
            return END_SUBGOAL if "> open cupboard" in prompt else "open cupboard"
        return "move pot to stove"

    executor_agent = Scripted(executor)
    agent = HierarchicalAgent(planner, executor_agent)
    first = agent.act([AgentInput(conversation())])[0]
    assert first.text == "open cupboard"
    assert first.metadata["subgoal"] == "find(pot)" and first.metadata["completed_subgoals"] == []

    messages = conversation(steps=[("open cupboard", "The cupboard is open. In it is a pot.")])
    second = agent.act([AgentInput(messages)])[0]
    # One act call: executor said END_SG() for find(pot), planner gave heat(pot), executor acted.
    assert second.text == "move pot to stove"
    assert second.metadata["ended_subgoals"] == ["find(pot)"]
    assert second.metadata["completed_subgoals"] == ["find(pot)"]
    assert second.metadata["subgoal"] == "heat(pot)" and second.metadata["planner_calls"] == 1
    assert planner.prompts[-1].startswith("Task: Do the thing.\nCompleted sub-goals: find(pot)\n")
    # The executor's history for heat(pot) starts at heat(pot): the cupboard step is not in it.
    assert "> open cupboard" not in executor_agent.prompts[-1]
    assert all(not is_end_subgoal(a) for a in (first.text, second.text))

    later = [*messages, {"role": "assistant", "content": second.text},
             {"role": "user", "content": "The pot is on the stove."}]
    third = agent.act([AgentInput(later)])[0]
    assert third.metadata["completed_subgoals"] == ["find(pot)"] and third.metadata["subgoal"] == "heat(pot)"
    assert third.metadata["planner_calls"] == 0  # the current sub-goal carries over


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
    planner = Scripted(lambda p: f"goal_{field(p, 'Observation')}()")

    def executor(prompt):
        return END_SUBGOAL if field(prompt, "Observation") == "b" and "> step" in prompt else "step"

    planner_agent, executor_agent = Scripted(planner.respond), Scripted(executor)
    agent = HierarchicalAgent(planner_agent, executor_agent)
    first = agent.act([AgentInput(conversation("T", [])), AgentInput(conversation("T2", []))])
    assert [a.text for a in first] == ["step", "step"]
    assert len(planner_agent.batches) == 1 and len(planner_agent.batches[0]) == 2  # one batched call
    inputs = [AgentInput(conversation("T", [("step", "a")])), AgentInput(conversation("T2", [("step", "b")]))]
    second = agent.act(inputs)
    assert second[0].metadata["completed_subgoals"] == []
    assert second[1].metadata["completed_subgoals"] == ["goal_T2()"]
    assert second[1].metadata["subgoal"] == "goal_b()"
    # The planner was asked only for the env whose executor ended its sub-goal.
    assert [len(b) for b in planner_agent.batches] == [2, 1]

    # An unseen conversation starts from an empty state; reset() forgets everything and resets policies.
    assert agent.state_for(conversation("T", [("other", "a")])).completed == []
    assert agent.state_for(conversation("T2", [("step", "b"), ("step", "c")])).completed == ["goal_T2()"]
    agent.reset()
    assert agent.state_for(conversation("T2", [("step", "b"), ("step", "c")])).completed == []
    assert planner_agent.resets == executor_agent.resets == 1


def test_invalid_actions_map_to_the_most_similar_valid_action():
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


def test_prompts_match_the_subgoal_training_views_and_replay_the_gold_path():
    subgoals = pytest.importorskip("mulligan.envs.subgoals")
    env = ChatHistory(gymnasium.make("Mulligan/MiniScience-v0"))
    trajectory = subgoals.annotate_gold_trajectory(env, seed=3)
    records = subgoals.build_training_views(trajectory, history_len=4)
    for record in records:
        assert prompt_for_record(record) == record["prompt"]
    # Scripted policies that only know the training records: any prompt the agent renders differently
    # from the records raises KeyError, so replaying the gold path proves the formats agree.
    answers = {r["prompt"]: r["completion"] for r in records}
    agent = HierarchicalAgent(Scripted(answers.__getitem__), Scripted(answers.__getitem__), history_len=4)
    _, info = env.reset(seed=3)
    sent = []
    for _ in range(len(trajectory.actions)):
        action = agent.act([AgentInput(env.messages, info=info)])[0]
        sent.append(action.text)
        _, _, terminated, truncated, info = env.step(action.text)
        if terminated or truncated:
            break
    assert sent == trajectory.actions
    assert info["success"]
    assert action.metadata["completed_subgoals"] == [g.text for g in trajectory.subgoals[:-1]]
