"""Mulligan/Constraints-v0: the env contract, datasets, CORGI sessions, and no network."""

import json
import socket

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401  (registers the ids)
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.constraints import ConstraintWriter, NoisyConstraintWriter
from mulligan.envs.constraints import ConstraintsEnv, load_constraint_dataset
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import FAMILIES, constraint_family

ENV_ID = "Mulligan/Constraints-v0"
INFO_KEYS = {"task_id", "success", "score", "feedback", "instruction_id_list", "constraint_results",
             "constraint_scores"}

SESSION_TASK = {
    "prompt": "Write about a river at night. Use the concepts river, lantern and boat. Use no commas. "
              "Write in lowercase. End with 'Good night.'",
    "instruction_id_list": ["concepts:use_all", "punctuation:no_comma", "change_case:english_lowercase",
                            "startend:end_checker"],
    "kwargs": [{"concepts": ["river", "lantern", "boat"]}, {}, {}, {"end_phrase": "Good night."}],
}


def test_check_env_passes_through_the_registry():
    check_env(gymnasium.make(ENV_ID).unwrapped)
    check_env(gymnasium.make(ENV_ID, mode="loose", families=("completion",)).unwrapped)


def test_info_keys_are_the_same_on_reset_and_step():
    env = gymnasium.make(ENV_ID)
    _, info = env.reset(seed=3)
    assert set(info) == INFO_KEYS
    assert info["constraint_results"] == [] and info["instruction_id_list"]
    _, reward, terminated, truncated, step_info = env.step("some text")
    assert set(step_info) == INFO_KEYS
    assert terminated and not truncated
    assert len(step_info["constraint_results"]) == len(step_info["instruction_id_list"])
    assert reward == step_info["score"]


def test_action_fuzz_never_raises_and_stays_in_range():
    env = gymnasium.make(ENV_ID)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(40)]
    actions += ["", " ", "\x00\x1b\x7f", "a" * 1_000_000, "\\frac{" * 5000, "{" * 10_000, "[" * 10_000,
                "<<" * 10_000, "*" * 10_000, "💥" * 500, "\ud800", "My answer is yes.", '{"a": 1}']
    for i, action in enumerate(actions):
        env.reset(seed=i)
        _, _, terminated, truncated, info = env.step(action)
        assert 0.0 <= info["score"] <= 1.0 and terminated and not truncated
        assert isinstance(info["feedback"], str)
        assert info["success"] == all(info["constraint_results"])
        if not info["success"]:
            assert info["feedback"]


def test_empty_action_explains_what_was_expected():
    env = gymnasium.make(ENV_ID)
    env.reset(options={"task": {"prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}})
    _, reward, _, _, info = env.step("")
    assert reward == 0.0 and info["feedback"] == "Your response is empty. Write a response."


def test_task_round_trips_and_seeding_is_deterministic():
    env = gymnasium.make(ENV_ID)
    obs, info = env.reset(seed=11)
    task = env.unwrapped.task
    obs2, _ = env.reset(options={"task": task})
    assert obs2 == obs
    obs3, info3 = gymnasium.make(ENV_ID).reset(seed=11)
    assert (obs3, info3["task_id"]) == (obs, info["task_id"])
    assert env.reset(options={"task_index": 5})[1]["task_id"] == "constraints-0-5"


def test_scores_follow_the_constraints_in_task_order():
    env = gymnasium.make(ENV_ID)
    env.reset(options={"task": SESSION_TASK})
    _, reward, _, _, info = env.step("On the river, a lantern and a boat. Good night.")
    assert info["constraint_results"] == [True, False, False, True]
    assert reward == pytest.approx(0.5)
    assert "comma" in info["feedback"] and "capital letters" in info["feedback"]
    assert info["feedback"].index("comma") < info["feedback"].index("capital letters")


def test_completion_task_scores_point_eight_for_the_count():
    env = gymnasium.make(ENV_ID)
    task = {"prompt": "Complete: The dog", "instruction_id_list": ["completion:word_count_ending"],
            "kwargs": [{"prefix": "The dog", "num_words": 3, "last_word": "home"}]}
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step("ran far away")
    assert reward == pytest.approx(0.8) and not info["success"]
    assert info["feedback"] == "Your completion ends with the word 'away'. However it should end with the word 'home'."


def test_families_select_what_the_generator_draws():
    for family in ("completion", "letters", "keywords"):
        env = gymnasium.make(ENV_ID, families=(family,), max_constraints=1)
        for seed in range(5):
            env.reset(seed=seed)
            assert {constraint_family(i) for i in env.unwrapped.task["instruction_id_list"]} == {family}
    held_out = tuple(f for f in FAMILIES if f not in ("completion", "concepts", "letters", "words"))
    config = ConstraintTaskConfig(families=held_out)
    for index in range(200):
        ids = generate_constraint_task(config, 0, index)["instruction_id_list"]
        assert all(constraint_family(i) in held_out for i in ids)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"families": ("nope",)}, "unknown constraint families"),
        ({"families": ()}, "at least one"),
        ({"families": "letters"}, "not the string"),
        ({"min_constraints": 0}, "min_constraints"),
        ({"min_constraints": 3, "max_constraints": 2}, "max_constraints"),
        ({"mode": "lenient"}, "mode"),
        ({"data_seed": -1}, "data_seed"),
        ({"dataset": "/no/such/file.jsonl"}, "not a file"),
        ({"dataset": "hf:"}, "hf:<name>"),
    ],
)
def test_bad_arguments_say_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConstraintsEnv(**kwargs)


def test_generator_is_a_pure_function_of_seed_and_index():
    config = ConstraintTaskConfig()
    assert generate_constraint_task(config, 4, 9) == generate_constraint_task(config, 4, 9)
    assert generate_constraint_task(config, 4, 9) != generate_constraint_task(config, 5, 9)
    seen = {i for index in range(800) for i in generate_constraint_task(config, 0, index)["instruction_id_list"]}
    assert len(seen) == 30  # every CORGI and IFEval id gets drawn


def test_local_ifeval_jsonl_dataset(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    rows = [
        {"key": 1, "prompt": "Say hi without commas.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{"num_words": None}]},
        {"key": 2, "prompt": "Two paragraphs.", "instruction_id_list": ["length_constraints:number_paragraphs"],
         "kwargs": [{"num_paragraphs": 2}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = gymnasium.make(ENV_ID, dataset=str(path), mode="loose")
    assert env.unwrapped.num_tasks == 2
    obs, info = env.reset(options={"task_index": 1})
    assert obs == "Two paragraphs." and info["task_id"] == "ifeval.jsonl-1"
    _, reward, _, _, info = env.step("Sure!\nOne.\n***\nTwo.")
    assert reward == 1.0 and info["success"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["keywords:existence"], "kwargs": [{}]}))
    with pytest.raises(ValueError, match=r"line 1.*keywords"):
        load_constraint_dataset(str(bad))
    with pytest.raises(ValueError, match="families"):
        ConstraintsEnv(dataset=str(path), families=("letters",))


def _session(writer, max_attempts=4):
    env = gymnasium.make(ENV_ID, max_attempts=max_attempts)
    obs, info = env.reset(options={"task": SESSION_TASK})
    messages = [{"role": "user", "content": obs}]
    scores, observations = [], [obs]
    while True:
        action = writer.act([AgentInput(messages=list(messages), task=env.unwrapped.task)])[0].text
        messages.append({"role": "assistant", "content": action})
        obs, _, terminated, _, info = env.step(action)
        scores.append(info["score"])
        if terminated:
            return scores, observations, info
        observations.append(obs)
        messages.append({"role": "user", "content": obs})


def test_corgi_session_score_rises_as_the_writer_fixes_what_feedback_names():
    writer = NoisyConstraintWriter(break_rate=1.0, fixes_per_turn=1, seed=0)
    scores, observations, info = _session(writer, max_attempts=5)
    assert scores == sorted(scores) and len(set(scores)) == len(scores)  # strictly rising
    assert scores[0] < 0.25 and scores[-1] == 1.0 and info["success"]
    assert len(scores) == 5  # four broken constraints, one fixed per retry
    for retry in observations[1:]:
        assert retry.startswith("- Feedback: ") and retry.endswith(" Please try again.")
    assert "You didn't use the following concepts: river." in observations[1]


def test_corgi_session_reward_is_the_best_attempt_and_last_is_an_option():
    env = gymnasium.make(ENV_ID, max_attempts=3)
    env.reset(options={"task": SESSION_TASK})
    total = 0.0
    for action in ["on the river a lantern and a boat. good night.", "x", "y"]:
        _, reward, terminated, _, _ = env.step(action)
        total += reward
        if terminated:
            break
    assert terminated and total == pytest.approx(1.0)  # the first attempt succeeded
    env = gymnasium.make(ENV_ID, max_attempts=2)
    env.reset(options={"task": SESSION_TASK})
    total = sum(env.step(a)[1] for a in ["on the river, a lantern and a boat. good night.", "nothing"])
    assert total == pytest.approx(0.75)  # max over attempts
    env = gymnasium.make(ENV_ID, max_attempts=2, retry_reward="last")
    env.reset(options={"task": SESSION_TASK})
    total = sum(env.step(a)[1] for a in ["on the river, a lantern and a boat. good night.", "nothing"])
    assert total == pytest.approx(env.unwrapped._step("nothing").score)


def test_checks_use_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    writer = ConstraintWriter()
    env = gymnasium.make(ENV_ID, mode="loose")
    for seed in range(60):  # covers language detection, sentence splitting and every family
        env.reset(seed=seed)
        action = writer.act([AgentInput(messages=[], task=env.unwrapped.task)])[0].text
        env.step(action)
        env.reset(seed=seed)
        env.step("Le temps était agréable et les rues étaient pleines de gens.")
