"""Mulligan/Constraints-v0: the env contract, datasets, CORGI sessions, and no network."""

import json
import socket
import time

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401  (registers the ids)
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.constraints import ConstraintWriter, NoisyConstraintWriter
from mulligan.envs.constraints import ConstraintsEnv, load_constraint_dataset
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import CONSTRAINT_IDS, CORGI_IDS, FAMILIES, constraint_family

ENV_ID = "Mulligan/Constraints-v0"
INFO_KEYS = {
    "task_id",
    "success",
    "score",
    "feedback",
    "instruction_id_list",
    "constraint_results",
    "constraint_scores",
}

SESSION_TASK = {
    "prompt": "Write about a river at night. Use the concepts river, lantern and boat. Use no commas. "
    "Write in lowercase. End with 'Good night.'",
    "instruction_id_list": [
        "concepts:use_all",
        "punctuation:no_comma",
        "change_case:english_lowercase",
        "startend:end_checker",
    ],
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
    actions += [
        "",
        " ",
        "\x00\x1b\x7f",
        "a" * 1_000_000,
        "\\frac{" * 5000,
        "{" * 10_000,
        "[" * 10_000,
        "<<" * 10_000,
        "*" * 10_000,
        "💥" * 500,
        "\ud800",
        "My answer is yes.",
        '{"a": 1}',
    ]
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
    task = {
        "prompt": "Complete: The dog",
        "instruction_id_list": ["completion:word_count_ending"],
        "kwargs": [{"prefix": "The dog", "num_words": 3, "last_word": "home"}],
    }
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
    held_out = tuple(f for f in FAMILIES if f not in ("corgi", "completion", "concepts", "letters", "words"))
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
        ({"dataset": "hf:"}, "hf:NAME"),
        ({"primed": "yes"}, "primed"),
        ({"families": ("corgi:nothing",)}, "unknown constraint families"),
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
    assert seen == set(CONSTRAINT_IDS)  # every CORGI, mulligan and IFEval id gets drawn


def test_local_ifeval_jsonl_dataset(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    rows = [
        {
            "key": 1,
            "prompt": "Say hi without commas.",
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{"num_words": None}],
        },
        {
            "key": 2,
            "prompt": "Two paragraphs.",
            "instruction_id_list": ["length_constraints:number_paragraphs"],
            "kwargs": [{"num_paragraphs": 2}],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = gymnasium.make(ENV_ID, dataset=str(path), mode="loose")
    assert env.unwrapped.num_tasks == 2
    obs, info = env.reset(options={"task_index": 1})
    assert obs == "Two paragraphs." and info["task_id"] == "ifeval-1"
    _, reward, _, _, info = env.step("Sure!\nOne.\n***\nTwo.")
    assert reward == 1.0 and info["success"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["keywords:existence"], "kwargs": [{}]}))
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*keywords"):
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
        assert retry.startswith("- Feedback: ") and retry.endswith(" Please Try again.")
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


# --------------------------------------------------------------------------------------------------
# Hardening (issue 15)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["Σ.Σ", "ΑΣ'Α go", "İİ Σ.Σ", "Straße ẞ", "ﬁre ǅ"])
def test_completion_tasks_never_raise_on_prefixes_that_change_under_case_folding(prefix):
    env = gymnasium.make(ENV_ID)
    for cid in ("completion:word_count_ending", "corgi:num_planning"):
        task = {
            "prompt": "Complete it.",
            "instruction_id_list": [cid],
            "kwargs": [{"prefix": prefix, "num_words": 2, "last_word": "home"}],
        }
        for action in (
            prefix + " go home",
            prefix.lower() + " go home",
            prefix.upper() + " go home",
            prefix.casefold() + " go home",
            "go home",
        ):
            env.reset(options={"task": task})
            _, reward, terminated, _, info = env.step(action)
            assert terminated and 0.0 <= reward <= 1.0
            if action in (prefix + " go home", "go home"):
                assert info["success"], (cid, action, info["feedback"])


def test_an_action_over_the_size_limit_is_refused_without_being_read():
    env = gymnasium.make(ENV_ID)
    env.reset(seed=0)
    action = "a. " * (10_000_000 // 3)  # 10 MB: took 22 s and 477 MB before
    start = time.perf_counter()
    _, reward, terminated, _, info = env.step(action)
    assert time.perf_counter() - start < 1.0
    assert terminated and reward == 0.0 and not info["success"] and "limit" in info["feedback"]


def test_actions_at_the_size_limit_are_checked_in_linear_time():
    # Bullets (a run of newlines: quadratic in IFEval's regex), sentences and capitalised words were
    # the slow checks; loose mode checks 8 variants of the action. 2**21 characters is the limit.
    env = gymnasium.make(ENV_ID, mode="loose")
    ids = [
        "length_constraints:number_sentences",
        "detectable_format:number_bullet_lists",
        "change_case:capital_word_frequency",
        "corgi:cmg_hard",
    ]
    kwargs = [
        {"num_sentences": 3, "relation": "at least"},
        {"num_bullets": 2},
        {"capital_frequency": 3, "capital_relation": "less than"},
        {"concepts": ["river", "lantern", "x"]},
    ]
    task = {"prompt": "p", "instruction_id_list": ids, "kwargs": kwargs}
    limit = env.unwrapped.action_space.max_length
    for shape in ("\n", "* X\n", "Mr. A. "):
        env.reset(options={"task": task})
        start = time.perf_counter()
        env.step((shape * (limit // len(shape) + 1))[:limit])
        assert time.perf_counter() - start < 60.0, repr(shape)  # quadratic scans took hours here


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02binary", r"data.jsonl:1: binary data"),
        ('{"prompt": "caf\u00e9"}\n'.encode("latin-1"), r"data.jsonl:1: not UTF-8"),
        ('{"prompt": "x"}\n'.encode("utf-16"), r"data.jsonl:1: the file is UTF-16"),
        (
            b'{"prompt": "p", "instruction_id_list": ["length_constraints:number_words"], '
            b'"kwargs": [{"num_words": Infinity, "relation": "at least"}]}',
            r"data.jsonl:1: .*Infinity",
        ),
    ],
)
def test_unreadable_dataset_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        ConstraintsEnv(dataset=str(path))


@pytest.mark.parametrize(
    ("iid", "kwargs", "message"),
    [
        (
            "keywords:letter_frequency",
            {"letter": "abc", "let_frequency": 2, "let_relation": "at least"},
            "letter must be one character",
        ),
        ("language:response_language", {"language": "klingon"}, "language must be an ISO 639-1 code"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"},
            r"nth_paragraph must lie in 1\.\.num_paragraphs \(2\)",
        ),
        ("punctuation:no_comma", {"num_words": 3}, r"unknown argument\(s\) \['num_words'\]"),
        ("length_constraints:number_words", {"num_words": 2.5, "relation": "at least"}, "non-negative int"),
    ],
)
def test_impossible_ifeval_settings_are_refused_with_file_and_line(tmp_path, iid, kwargs, message):
    path = tmp_path / "tasks.jsonl"
    good = {"prompt": "Hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    bad = {"prompt": "Hi.", "instruction_id_list": [iid], "kwargs": [kwargs]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=rf"tasks.jsonl:3: .*{message}"):
        load_constraint_dataset(str(path))
    with pytest.raises(ValueError, match=message):
        gymnasium.make(ENV_ID).reset(options={"task": bad})


# --------------------------------------------------------------------------------------------------
# CORGI's tasks and CORGI's released data format
# --------------------------------------------------------------------------------------------------

_CORGI_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
_CORGI_ASSISTANT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n\n"


def _corgi_record(task, user, primer, **fields):
    return {"id": f"{task}_test_0", "query": _CORGI_USER + user + _CORGI_ASSISTANT + primer, "task": task, **fields}


CORGI_FIXTURE = [
    _corgi_record(
        "num_planning",
        '# Instruction\n\n...\n- Input: "N = 3 ; Last word = Vinci ; Prefix = Where"',
        "- Output: Where",
        prefix="Where",
        last_word="Vinci",
        N=3,
        ref="Where is Da Vinci?",
    ),
    _corgi_record(
        "panagram",
        '# Instruction\n\n...\n- Input: "Letters: [a, e, r, k, b]"',
        "- Output: Word:",
        letters_list=["a", "e", "r", "k", "b"],
        ref="baker",
    ),
    _corgi_record(
        "cmg_hard", '# Instruction\n\n...\n- Input: "river, lantern"', "- Output:", concepts=["river", "lantern"]
    ),
]


def test_corgis_released_json_files_load_as_tasks(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(CORGI_FIXTURE, indent=4))
    env = ConstraintsEnv(dataset=str(path), primed=True)
    assert env.num_tasks == 3
    expected = [
        (
            "corgi:num_planning",
            {"prefix": "Where", "num_words": 3, "last_word": "Vinci"},
            "- Output: Where",
            " is Da Vinci?",
        ),
        ("corgi:panagram", {"letters": ["a", "e", "r", "k", "b"]}, "- Output: Word:", " baker."),
        ("corgi:cmg_hard", {"concepts": ["river", "lantern"]}, "- Output:", " A lantern shone on the river."),
    ]
    for index, (cid, kwargs, primer, answer) in enumerate(expected):
        obs, info = env.reset(options={"task_index": index})
        assert obs.startswith("# Instruction") and obs.endswith('"') and "<|" not in obs
        assert env.task["instruction_id_list"] == [cid] and env.task["kwargs"] == [kwargs]
        assert env.task["primer"] == primer and env.task["key"] == CORGI_FIXTURE[index]["id"]
        _, reward, _, _, info = env.step(answer)
        assert reward == 1.0 and info["success"], info["feedback"]


def test_corgi_records_of_model_critiqued_tasks_need_a_critic_and_bad_ones_name_the_line(tmp_path):
    path = tmp_path / "sentiment.json"
    records = [CORGI_FIXTURE[0], {"id": "s0", "query": "Write a review.", "task": "sentiment", "label": "3 stars"}]
    path.write_text(json.dumps(records, indent=4))
    with pytest.raises(ValueError, match=r"CORGI task 'sentiment' is checked by a model critic .*critics='paper'"):
        ConstraintsEnv(dataset=str(path))
    records[1]["label"] = 3
    path.write_text(json.dumps(records, indent=4))
    with pytest.raises(ValueError, match=r"sentiment.json:\d+: corgi:sentiment: label must be a non-empty string"):
        ConstraintsEnv(dataset=str(path))
    broken = dict(CORGI_FIXTURE[1])
    del broken["letters_list"]
    with pytest.raises(ValueError, match="letters_list"):
        gymnasium.make(ENV_ID).reset(options={"task": broken})


def test_generated_corgi_tasks_carry_corgis_prompt_and_primer():
    config = ConstraintTaskConfig(families=("corgi",))
    seen = set()
    for index in range(60):
        task = generate_constraint_task(config, 0, index)
        (cid,) = task["instruction_id_list"]
        seen.add(cid)
        assert task["prompt"].startswith("# Instruction\n\n") and "## Example 2" in task["prompt"]
        assert task["primer"].startswith("- Output:")
        if cid == "corgi:num_planning":
            assert 2 <= task["kwargs"][0]["num_words"] <= 10
            assert task["primer"] == "- Output: " + task["kwargs"][0]["prefix"]
    assert seen == set(CORGI_IDS)
    only = ConstraintTaskConfig(families=("corgi:panagram", "punctuation"))
    ids = {i for n in range(40) for i in generate_constraint_task(only, 0, n)["instruction_id_list"]}
    assert ids == {"corgi:panagram", "punctuation:no_comma"}


def test_the_primer_is_the_response_prefix_on_reset_and_on_every_retry_turn(tmp_path):
    # The prefill contract (CORGI's retries are primed with the same "- Output:{suffix}" as the
    # first answer): every info an agent sees in a session carries the primer.
    path = tmp_path / "test.json"
    path.write_text(json.dumps(CORGI_FIXTURE))
    env = gymnasium.make(ENV_ID, dataset=str(path), primed=True, max_attempts=3)
    _, info = env.reset(options={"task_index": 1})
    infos = [info]
    for answer in (" bark.", " bake.", " baker."):
        _, _, terminated, _, info = env.step(answer)
        infos.append(info)
        if terminated:
            break
    assert [i["attempt"] for i in infos] == [1, 1, 2, 3] and infos[-1]["success"]
    assert all(i["response_prefix"] == "- Output: Word:" for i in infos)
    _, info = env.reset(options={"task_index": 0})
    assert info["response_prefix"] == "- Output: Where"
    # A task without a primer does not set the key.
    plain = gymnasium.make(ENV_ID, max_attempts=2)
    _, info = plain.reset(options={"task": SESSION_TASK})
    _, _, _, _, step_info = plain.step("x")
    assert "response_prefix" not in info and "response_prefix" not in step_info


def test_corgi_feedback_joins_critiques_as_corgis_critic():
    env = gymnasium.make(ENV_ID)
    task = {
        "prompt": "p",
        "instruction_id_list": ["corgi:num_planning"],
        "kwargs": [{"prefix": "Where", "num_words": 3, "last_word": "Vinci"}],
    }
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step("- Output: Where was he born, then? Nobody knows.")
    assert reward == 0.0
    assert info["feedback"] == (
        "You completed the sentence with 6 words. However you should complete the sentence with 3 words. "
        'In addition, the last word should be "Vinci" and not "knows".'
    )
