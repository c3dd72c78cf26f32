import json

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401  (registers the ids)
from mulligan.envs.strategyqa import YES_NO_FORMAT, StrategyQAEnv

ENV_ID = "Mulligan/StrategyQA-v0"


def test_check_env_through_the_registry():
    check_env(gymnasium.make(ENV_ID).unwrapped)
    assert gymnasium.make(ENV_ID).spec.max_episode_steps == 10


def test_first_observation_asks_for_yes_or_no():
    env = gymnasium.make(ENV_ID)
    obs, info = env.reset(options={"task_index": 0})
    task = env.unwrapped.task
    assert "answer Yes or No" in obs and obs.endswith(f"Question: {task['question']}")
    assert task["answer"] in ("Yes", "No") and task["decomposition"] and task["facts"]
    assert info["task_id"] == "world-strategyqa-0-0"


@pytest.mark.parametrize("reward", ["em", "f1"])
def test_right_and_wrong_answers(reward):
    env = gymnasium.make(ENV_ID, reward=reward)
    env.reset(options={"task_index": 5})
    gold = env.unwrapped.task["answer"]
    _, r, terminated, _, info = env.step(f"Thought: sure.\nAction: finish[{gold.lower()}.]")
    assert (r, terminated, info["success"], info["score"], info["fine_grained_label"]) == (
        1.0,
        True,
        True,
        1.0,
        "[Correct]",
    )
    env.reset(options={"task_index": 5})
    wrong = "No" if gold == "Yes" else "Yes"
    _, r, terminated, _, info = env.step(f"Action: finish[{wrong}]")
    assert (r, terminated, info["success"], info["f1"], info["fine_grained_label"]) == (
        0.0,
        True,
        False,
        0.0,
        "[Totally Incorrect]",
    )
    assert "incorrect" in info["feedback"]


@pytest.mark.parametrize("answer", ["maybe", "It depends", "yes and no", "true", "1"])
def test_non_yes_no_answers_are_format_errors_and_the_episode_goes_on(answer):
    env = gymnasium.make(ENV_ID)
    env.reset(options={"task_index": 1})
    obs, reward, terminated, truncated, info = env.step(f"Action: finish[{answer}]")
    assert obs == YES_NO_FORMAT == info["feedback"]
    assert (reward, terminated, truncated, info["action_type"]) == (0.0, False, False, "invalid")
    gold = env.unwrapped.task["answer"]
    _, reward, terminated, *_ = env.step(f"finish[{gold}]")
    assert reward == 1.0 and terminated


def test_search_and_lookup_work_as_in_hotpotqa():
    env = gymnasium.make(ENV_ID, search_sentences=1)
    env.reset(options={"task_index": 2})
    task = env.unwrapped.task
    title, index = task["evidence"][0]
    sentences = dict(task["context"])[title]
    obs, *_ = env.step(f"search[{title}]")
    assert obs == f'Page "{title}": {sentences[0]}'
    fact = task["facts"][0]
    if index > 0:
        keyword = fact.split()[-1].strip(".")
        seen = []
        for _ in range(len(sentences)):
            obs, *_ = env.step(f"lookup[{keyword}]")
            seen.append(obs)
        assert any(fact in o for o in seen)


def test_records_round_trip_and_boolean_answers(tmp_path):
    env = gymnasium.make(ENV_ID)
    obs, _info = env.reset(options={"task_index": 9})
    task = json.loads(json.dumps(env.unwrapped.task))
    assert env.reset(options={"task": task})[0] == obs
    official_style = dict(task, answer=task["answer"] == "Yes")  # StrategyQA files store booleans
    path = tmp_path / "strategy.json"
    path.write_text(json.dumps([official_style]))
    file_env = gymnasium.make(ENV_ID, dataset=str(path))
    file_env.reset(options={"task_index": 0})
    assert file_env.unwrapped.task["answer"] == task["answer"]
    with pytest.raises(ValueError, match="Yes/No or a boolean"):
        env.reset(options={"task": dict(task, answer="Paris")})


def test_yes_no_balance_over_the_procedural_source():
    env = StrategyQAEnv()
    answers = [env.get_task(i)["answer"] for i in range(200)]
    assert 70 < answers.count("Yes") < 130
