"""mulligan.integrations.trl: any Mulligan/* env as a TRL environment (GRPOTrainer(environment_factory=...))."""

from __future__ import annotations

import os

import pytest
from transformers.utils import get_json_schema

from mulligan.envs.registration import env_tools
from mulligan.integrations.trl import EPISODE_OVER, MulliganTRLEnvironment, environment_class, environment_factory


def _public_methods(instance) -> dict:
    """The tools TRL finds: public functions of the class, less reset and get_reward (as grpo_trainer.py lists them)."""
    import inspect

    return {
        name: getattr(instance, name)
        for name, _ in inspect.getmembers(type(instance), predicate=inspect.isfunction)
        if name not in ("reset", "get_reward") and not name.startswith("_")
    }


@pytest.mark.parametrize(
    "env_id", ["Mulligan/MathReAct-v0", "Mulligan/HotpotQA-v0", "Mulligan/StrategyQA-v0", "Mulligan/MiniScience-v0"]
)
def test_trl_sees_exactly_the_envs_tools(env_id):
    instance = environment_factory(env_id)()
    methods = _public_methods(instance)
    expected = {tool["function"]["name"]: tool["function"] for tool in env_tools(env_id)}
    assert set(methods) == set(expected)
    for name, method in methods.items():
        schema = get_json_schema(method)["function"]  # how TRL renders a tool for the chat template
        assert schema["description"] == expected[name]["description"]
        properties = schema["parameters"].get("properties", {})
        assert {k: v["type"] for k, v in properties.items()} == {
            k: v["type"] for k, v in expected[name]["parameters"]["properties"].items()
        }
        assert sorted(schema["parameters"].get("required", [])) == sorted(expected[name]["parameters"]["required"])


def test_an_episode_through_the_adapter_steps_the_env_and_pays_its_return():
    factory = environment_factory("Mulligan/HotpotQA-v0", {"split": "test"})
    environment = factory()
    observation = environment.reset(task_index=0, prompt=[{"role": "user", "content": ""}])
    task = environment.env.unwrapped.task
    assert observation.endswith(f"Question: {task['question']}") and "search(query)" in observation
    title = task["context"][0][0]
    assert environment.search(query=title).startswith(f'Page "{title}"')
    assert environment.get_reward() == 0.0 and not environment.done
    environment.finish(answer=task["answer"])
    assert environment.get_reward() == 1.0 and environment.done
    assert environment.search(query=title) == EPISODE_OVER  # nothing changes after the end
    assert environment.get_reward() == 1.0
    # The next row starts a fresh episode.
    environment.reset(task_index=1)
    assert environment.get_reward() == 0.0 and not environment.done


def test_bad_arguments_reach_the_env_as_an_invalid_call():
    environment = environment_factory("Mulligan/MathReAct-v0", {"format_reward": -0.5})()
    environment.reset(task_index=0)
    result = environment.calculate(expr="1+1")  # TRL passes the model's arguments as they are
    assert "unexpected: ['expr']" in result
    assert environment.get_reward() == -0.5 and environment.last_info["action_type"] == "invalid"
    assert environment.calculate(expression="6*7") == "42"


def test_the_turn_cap_ends_the_episode_and_rows_pick_tasks():
    environment = environment_factory("Mulligan/MathReAct-v0", seed=3)()
    environment.reset()
    drawn = environment.env.unwrapped.task_index
    for _ in range(12):  # MathReAct-v0's registered cap
        result = environment.calculate(expression="1+1")
    assert environment.done and result.endswith(EPISODE_OVER)
    again = environment_factory("Mulligan/MathReAct-v0", seed=3)()
    again.reset()
    assert again.env.unwrapped.task_index == drawn  # the factory's seed makes the first draw reproducible
    again.reset(task={"question": "What is 1+1?", "answer": "#### 2"})
    assert again.env.unwrapped.task["final_answer"] == "2"


def test_envs_without_tools_are_refused():
    with pytest.raises(ValueError, match="no tools"):
        environment_class("Mulligan/Math-v0")
    with pytest.raises(ValueError, match="unknown env id"):
        environment_factory("Mulligan/Nope-v0")
    assert issubclass(environment_class("Mulligan/MiniScience-v0"), MulliganTRLEnvironment)
    assert "close" in _public_methods(environment_factory("Mulligan/MiniScience-v0")())  # the env's tool


def test_trl_grpo_trains_two_steps_with_the_adapter(tmp_path):
    # TRL's own multi-turn GRPO on StrategyQA through the adapter, with a tiny model trained to
    # call finish(answer="Yes") through a Qwen-style template: the calls run in the env, the
    # env's return is the reward (1 for task 0, whose answer is Yes; 0 for task 1).
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from tool_calling_model import ENV_ID, ENV_KWARGS, TASK_INDICES, cached_tool_calling_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    path = cached_tool_calling_model()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {k: v for k, v in ENV_KWARGS.items() if k != "action_format"}
    made = []

    make = environment_factory(ENV_ID, kwargs)

    def factory():
        made.append(make())
        return made[-1]

    rows = {
        "prompt": [[{"role": "user", "content": ""}]] * 4,
        "task_index": [TASK_INDICES[0], TASK_INDICES[1]] * 2,
    }
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=80,
        temperature=1e-3,  # near-greedy: the trained call
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        shuffle_dataset=False,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        environment_factory=factory,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2 and trainer.state.global_step == 2
    assert all(entry["tools/call_frequency"] > 0 for entry in logs)
    # Each step's batch is one row's group of 2: task 0 (answer Yes, reward 1), then task 1 (No, 0).
    assert [entry["reward"] for entry in logs] == [1.0, 0.0]
    assert [e.env.unwrapped.task_index for e in made[-2:]] == [TASK_INDICES[1]] * 2


def test_factories_pickle_for_trls_async_workers():
    import pickle

    factory = environment_factory("Mulligan/MathReAct-v0", {"format_reward": -0.5}, seed=1)
    first = factory()
    copy = pickle.loads(pickle.dumps(factory))  # as TRL's async GRPO ships factories to workers
    assert (copy.env_id, copy.env_kwargs, copy.seed) == ("Mulligan/MathReAct-v0", {"format_reward": -0.5}, 1)
    second = copy()
    assert type(second).__name__ == type(first).__name__ == "MulliganMathReAct"
    assert second.env.unwrapped.format_reward == -0.5
