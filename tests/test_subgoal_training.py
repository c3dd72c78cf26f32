"""Sub-goal distillation: data from annotated gold paths, planner/executor/flat training, evaluation."""

import json

import pytest
import torch

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.hierarchical import END_SUBGOAL, executor_prompt, planner_prompt
from mulligan.training.subgoal import (
    FlatAgent,
    SubgoalConfig,
    collect_gold,
    distillation_conversations,
    flat_prompt,
    train_subgoal,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_conversations_use_the_agents_prompt_formats():
    annotated = collect_gold("Mulligan/MiniScience-v0", {}, 2, seed=0)
    data = distillation_conversations(annotated, history_len=2)
    first = annotated[0]
    planner_first = data["planner"][0]
    assert planner_first[0]["content"] == planner_prompt(first.task, [], [], first.initial_observation)
    assert planner_first[1]["content"] == first.subgoals[0].text
    executor_first = data["executor"][0]
    assert executor_first[0]["content"] == executor_prompt(first.task, first.subgoals[0].text, [], [],
                                                           first.initial_observation)
    assert executor_first[1]["content"] == first.actions[0]
    assert sum(c[1]["content"] == END_SUBGOAL for c in data["executor"]) == sum(len(a.subgoals) for a in annotated)
    assert len(data["planner"]) == sum(len(a.subgoals) for a in annotated)
    assert len(data["flat"]) == sum(len(a.actions) for a in annotated)
    assert data["flat"][1][0]["content"] == flat_prompt(
        first.task, [{"action": first.actions[0], "observation": first.observations[0]}], first.observations[0])
    assert all("sub-goal" not in c[0]["content"] for c in data["flat"])


def test_flat_agent_renders_its_training_prompt():
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("go to kitchen\nextra") for _ in inputs]

    messages = [{"role": "user", "content": "Your task is X.\n\nRoom A."},
                {"role": "assistant", "content": "look around"}, {"role": "user", "content": "Room A again."}]
    (action,) = FlatAgent(Recorder(), history_len=4).act([AgentInput(messages)])
    assert action.text == "go to kitchen"
    assert seen[0].messages[0]["content"] == flat_prompt(
        "Your task is X.", [{"action": "look around", "observation": "Room A again."}], "Room A again.")


def test_config_validation():
    with pytest.raises(ValueError, match="JSON object"):
        SubgoalConfig(env_kwargs="[1]")
    with pytest.raises(ValueError, match="max_steps"):
        SubgoalConfig(max_steps=0)


def _changed(path):
    from transformers import AutoModelForCausalLM

    from mulligan.agents.tiny import resolve_model

    before = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(path).state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_trains_planner_executor_and_flat_then_evaluates(tmp_path):
    config = SubgoalConfig(output_dir=str(tmp_path / "sg"), num_gold=2, max_steps=2, per_device_train_batch_size=2,
                           max_length=768, eval_episodes=2, eval_max_turns=2, max_new_tokens=8, disable_tqdm=True)
    summary = train_subgoal(config)
    for role in ("planner", "executor", "flat"):
        assert summary["training"][role]["global_step"] == 2
        assert _changed(summary["models"][role])
    assert set(summary["eval"]) == {"hierarchical", "flat"}
    assert summary["eval"]["hierarchical"]["episodes"] == 2
    assert json.loads((tmp_path / "sg" / "subgoal_summary.json").read_text())["gold_paths"] == 2
    # Resuming skips the finished models.
    again = train_subgoal(SubgoalConfig(**{**config.__dict__, "resume_from_checkpoint": "auto", "eval_episodes": 0}))
    assert again["training"] == summary["training"]


def test_shared_model_serves_both_roles(tmp_path):
    config = SubgoalConfig(output_dir=str(tmp_path / "sg"), num_gold=1, max_steps=1, per_device_train_batch_size=2,
                           max_length=512, shared_model=True, train_flat=False, disable_tqdm=True)
    summary = train_subgoal(config)
    assert summary["models"]["planner"] == summary["models"]["executor"]
    assert set(summary["training"]) == {"shared"}


def test_flat_agent_maps_invalid_actions_to_the_nearest_valid_one():
    class Garbler(Agent):
        def act(self, inputs):
            return [Action(text="opn dor to kitchn\nmore text") for _ in inputs]

    agent = FlatAgent(Garbler())
    messages = [{"role": "user", "content": "Your task is to boil water.\n\nYou are in the hallway."}]
    valid = ["open door to kitchen", "go to kitchen", "look around"]
    mapped, unmapped = agent.act([AgentInput(messages, info={"valid_actions": valid}), AgentInput(messages)])
    assert mapped.text == "open door to kitchen"
    assert unmapped.text == "opn dor to kitchn"  # no valid actions offered: the first line, as generated


def test_eval_env_defaults_to_the_training_env_on_test_variations():
    from mulligan.training.subgoal import eval_env_options

    config = SubgoalConfig(env_kwargs='{"task": "boil"}')
    assert eval_env_options(config) == {"task": "boil", "variation": "test", "include_valid_actions": True}
    assert eval_env_options(SubgoalConfig(eval_env_kwargs='{"variation": 3}')) == {"variation": 3}
