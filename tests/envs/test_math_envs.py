import time
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401 - registers the ids
from mulligan.envs.data import parse_hf_spec
from mulligan.envs.generators.math import MathGeneratorConfig, math_task_signature
from mulligan.envs.math import (
    DEFAULT_HUB_SPLIT,
    PROCEDURAL_TEST_SIZE,
    normalize_math_record,
    procedural_test_indices,
    split_of_signature,
)
from mulligan.envs.math_react import ACTION_VERBS
from mulligan.envs.react import parse_react_action

FIXTURES = Path(__file__).parents[1] / "fixtures"
GSM8K = str(FIXTURES / "math_gsm8k_sample.jsonl")
COMPETITION = str(FIXTURES / "math_competition_sample.jsonl")
IDS = ["Mulligan/Math-v0", "Mulligan/MathReAct-v0"]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    check_env(gymnasium.make(env_id).unwrapped)
    check_env(gymnasium.make(env_id, dataset=GSM8K).unwrapped)


def test_math_known_answer_and_info():
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K)
    assert env.unwrapped.num_tasks == 3
    obs, info = env.reset(options={"task_index": 0})
    assert obs.startswith("Lina has 3 boxes") and obs.rstrip().endswith("\\boxed{}.")
    assert info["gold_answer"] == "33" and info["parsed_answer"] is None
    keys = set(info)
    obs, reward, terminated, truncated, info = env.step("3*14 = 42, 42 - 9 = 33, so \\boxed{33}.")
    assert (reward, terminated, truncated, info["success"], info["score"]) == (1.0, True, False, True, 1.0)
    assert info["parsed_answer"] == "33" and info["feedback"] == ""
    assert set(info) == keys


@pytest.mark.parametrize(
    ("index", "response", "reward"),
    [
        (1, "\\boxed{3,750}", 1.0),  # thousands separators; the gold '#### 3,750' is read as 3750
        (1, "The answer is 3750 rolls.", 1.0),
        (1, "\\boxed{3700}", 0.0),
        (2, "\\boxed{\\frac{9}{2}}", 1.0),  # 4.5 as a fraction
        (2, "It costs $4.50 each.\n#### 4.50", 1.0),
    ],
)
def test_math_gsm8k_answers(index, response, reward):
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K)
    env.reset(options={"task_index": index})
    assert env.step(response)[1] == reward


def test_math_format_reward_when_no_answer():
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, format_reward=-1.0)
    env.reset(options={"task_index": 0})
    _, reward, terminated, _, info = env.step("I am not sure how to do this.")
    assert reward == -1.0 and terminated and not info["success"] and info["score"] == 0.0
    assert info["parsed_answer"] is None and "\\boxed{}" in info["feedback"]
    env.reset(options={"task_index": 0})
    _, reward, _, _, info = env.step("\\boxed{34}")
    assert reward == 0.0 and "incorrect" in info["feedback"] and "33" not in info["feedback"]


def test_rise_boxed_integer_check_reads_only_the_last_box():
    from mulligan.envs.verifiers.math import last_boxed_integer

    assert last_boxed_integer("so \\boxed{1,234}.") == 1234
    assert last_boxed_integer("\\boxed{7} then \\boxed{8}") == 8
    assert last_boxed_integer("\\boxed{7} then \\boxed{x}") is None  # no fall-back to an earlier box
    assert last_boxed_integer("\\boxed{7} then \\boxed{8") is None  # the last box never closes
    assert last_boxed_integer("\\boxed{4.5}") is None and last_boxed_integer("#### 72") is None
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, answer_check="boxed_int", format_reward=-1.0)
    env.reset(options={"task_index": 0})
    gold = env.unwrapped.task["final_answer"]
    for action, reward in (
        (f"\\boxed{{{gold}}}", 1.0),
        (f"The answer is {gold}.", -1.0),  # right, but not boxed: RISE pays -1
        (f"\\boxed{{{gold}}} or maybe \\boxed{{{int(gold) + 1}}}", 0.0),
        (f"\\boxed{{{gold}.0}}", -1.0),  # not an integer
    ):
        env.reset(options={"task_index": 0})
        assert env.step(action)[1] == reward, action
    with pytest.raises(ValueError, match="answer_check must be one of"):
        gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, answer_check="boxed")


def test_math_competition_format():
    env = gymnasium.make("Mulligan/Math-v0", dataset=COMPETITION)
    answers = {0: "0.5", 1: "x = 4", 2: "(-2,2)"}
    for index, answer in answers.items():
        _, info = env.reset(options={"task_index": index})
        _, reward, _, _, info = env.step(f"So the answer is $\\boxed{{{answer}}}$.")
        assert reward == 1.0, (index, info)
    assert env.unwrapped.task["level"] == "Level 2"  # extra fields are kept


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="expected a GSM8K or MATH record"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(FIXTURES / "math_bad_format.jsonl"))
    with pytest.raises(ValueError, match="#### <answer>"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(FIXTURES / "math_missing_final.jsonl"))
    with pytest.raises(ValueError, match="does not exist"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(tmp_path / "nope.jsonl"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        (FIXTURES / "math_gsm8k_sample.jsonl").read_text().splitlines()[0]
        + "\n"
        + (FIXTURES / "math_competition_sample.jsonl").read_text().splitlines()[0]
        + "\n"
    )
    with pytest.raises(ValueError, match=r"mixed.jsonl:2: expected a gsm8k record"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(mixed))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:1: not a JSON object"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(broken))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(empty))


def test_split_arguments():
    with pytest.raises(ValueError, match="only for the procedural source"):
        gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, split="test")
    with pytest.raises(ValueError, match="splits"):
        gymnasium.make("Mulligan/Math-v0", split="validation")
    train = gymnasium.make("Mulligan/Math-v0").unwrapped
    test = gymnasium.make("Mulligan/Math-v0", split="test").unwrapped
    assert train.num_tasks is None and test.num_tasks == PROCEDURAL_TEST_SIZE
    test_questions = {test.get_task(i)["question"] for i in range(200)}
    train_questions = {train.get_task(i)["question"] for i in range(200)}
    assert not test_questions & train_questions
    assert [test.get_task(i) for i in range(5)] == [
        gymnasium.make("Mulligan/Math-v0", split="test").unwrapped.get_task(i) for i in range(5)
    ]
    assert gymnasium.make("Mulligan/Math-v0", num_tasks=7).unwrapped.num_tasks == 7


def test_hf_spec_parsing():
    def parse(spec):
        hub = parse_hf_spec(spec, default_split=DEFAULT_HUB_SPLIT)
        return hub.name, hub.config, hub.split

    assert parse("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse("hf:openai/gsm8k:main") == ("openai/gsm8k", "main", "train")
    assert parse("hf:HuggingFaceH4/MATH-500::test") == ("HuggingFaceH4/MATH-500", None, "test")
    # The old Math-only meaning (the second part is a split) is refused with the fix.
    with pytest.raises(ValueError, match=r"'hf:HuggingFaceH4/MATH-500::test'"):
        parse("hf:HuggingFaceH4/MATH-500:test")
    for bad in ["hf::test", "hf:a:b:c:d", "gsm8k:test", "hf:a:b:"]:
        with pytest.raises(ValueError):
            parse(bad)


def test_procedural_splits_are_disjoint_by_content():
    # Over 1,000 test problems and 20,000 train problems no signature (template, numbers, answer)
    # is shared. Before, the splits were disjoint by index only, and 278 of the first 20,000 train
    # problems repeated a test problem under other names.
    test = gymnasium.make("Mulligan/Math-v0", split="test").unwrapped
    train = gymnasium.make("Mulligan/Math-v0").unwrapped
    test_signatures = {math_task_signature(test.get_task(i)) for i in range(test.num_tasks)}
    assert len(test_signatures) == test.num_tasks == PROCEDURAL_TEST_SIZE  # no problem twice
    train_signatures = {math_task_signature(train.get_task(i)) for i in range(20_000)}
    assert len(train_signatures) > 15_000
    assert not test_signatures & train_signatures
    assert all(split_of_signature(s) == "test" for s in test_signatures)


def test_small_generator_configs_still_hold_out_a_finite_distinct_test_split():
    # The demo's one-step, numbers-up-to-5 space has ~100 distinct problems: the test split is the
    # distinct held-out ones (finite, so an evaluation scores each once), and training never sees them.
    config = {
        "min_steps": 1,
        "max_steps": 1,
        "min_number": 1,
        "max_number": 5,
        "templates": ["shopping", "ages"],
        "non_integer_share": 0.0,
    }
    test = gymnasium.make("Mulligan/Math-v0", split="test", generator_config=config).unwrapped
    train = gymnasium.make("Mulligan/Math-v0", generator_config=config).unwrapped
    assert 10 <= test.num_tasks < PROCEDURAL_TEST_SIZE
    test_signatures = [math_task_signature(test.get_task(i)) for i in range(test.num_tasks)]
    assert len(set(test_signatures)) == test.num_tasks
    train_signatures = {math_task_signature(train.get_task(i)) for i in range(3000)}
    assert len(train_signatures) > 20 and not train_signatures & set(test_signatures)
    assert test.num_tasks == len(
        procedural_test_indices(MathGeneratorConfig(**{**config, "templates": ("shopping", "ages")}), 0)
    )


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_determinism_and_task_round_trip(env_id):
    first = [gymnasium.make(env_id).reset(seed=s) for s in range(5)]
    second = [gymnasium.make(env_id).reset(seed=s) for s in range(5)]
    assert first == second
    env = gymnasium.make(env_id)
    obs, info = env.reset(seed=3)
    task = env.unwrapped.task
    again_obs, again_info = env.reset(options={"task": task})
    assert again_obs == obs and env.unwrapped.task == task
    assert again_info["gold_answer"] == info["gold_answer"]


def test_explicit_records_in_dataset_formats():
    env = gymnasium.make("Mulligan/Math-v0")
    _, info = env.reset(options={"task": {"question": "What is 6*7?", "answer": "6*7=<<6*7=42>>42\n#### 42"}})
    assert info["gold_answer"] == "42"
    assert env.step("\\boxed{42}")[1] == 1.0
    _, info = env.reset(options={"task": {"problem": "Half of 1?", "solution": "$\\boxed{\\frac12}$"}})
    assert env.step("\\boxed{0.5}")[1] == 1.0
    with pytest.raises(ValueError, match="GSM8K format"):
        env.reset(options={"task": {"text": "?"}})
    with pytest.raises(ValueError, match="final_answer"):
        normalize_math_record({"question": "q", "answer": "no final line"})


def test_retry_with_feedback_through_make():
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, max_attempts=5)
    obs, info = env.reset(options={"task_index": 0})
    question = obs
    obs, reward, terminated, _, info = env.step("\\boxed{30}")
    assert not terminated and reward == 0.0 and info["attempt"] == 1
    assert obs.startswith("The answer is incorrect. Please try again.") and question in obs
    obs, reward, terminated, _, info = env.step("\\boxed{33}")
    assert terminated and reward == 1.0 and info["attempt"] == 2 and info["success"]


def test_retry_ends_after_max_attempts():
    env = gymnasium.make("Mulligan/Math-v0", dataset=GSM8K, max_attempts=3)
    env.reset(options={"task_index": 0})
    for attempt in range(1, 4):
        *_, terminated, _, info = env.step("no idea")
        assert info["attempt"] == attempt
    assert terminated


# ----------------------------------------------------------------------------- MathReAct-v0


def test_react_episode_with_calculator_and_finish():
    env = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K)
    obs, info = env.reset(options={"task_index": 0})
    assert "calculate[" in obs and "finish[" in obs and "Lina has 3 boxes" in obs
    obs, reward, terminated, _, info = env.step("Thought: boxes times crayons.\nAction: calculate[3*14]")
    assert obs == "Observation: 42" and reward == 0.0 and not terminated and info["action_type"] == "calculate"
    obs, *_ = env.step("Thought: minus the gift.\nAction: calculate[42 - 9]\nObservation: 99")
    assert obs == "Observation: 33"  # the first action counts; a hallucinated observation is ignored
    obs, reward, terminated, _, info = env.step("Thought: done.\nAction: finish[33]")
    assert (reward, terminated, info["success"], info["parsed_answer"]) == (1.0, True, True, "33")


def test_react_calculator_errors_and_malformed_actions():
    env = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K)
    env.reset(options={"task_index": 0})
    obs, reward, terminated, _, info = env.step("Action: calculate[__import__('os')]")
    assert obs.startswith("Observation: Error: names are not supported") and not terminated
    assert "calculate[" in info["feedback"]
    for bad in ["I think it is 33", "Action: search[crayons]", "Action: finish[]", "Action: calculate[1+2"]:
        obs, reward, terminated, _, info = env.step(bad)
        assert info["action_type"] == "invalid" and not terminated and reward == 0.0
        assert "Action: calculate[" in obs and "Action: finish[" in info["feedback"]


def test_react_wrong_finish_and_time_limit():
    env = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K)
    env.reset(options={"task_index": 0})
    _, reward, terminated, _, info = env.step("Action: finish[34]")
    assert reward == 0.0 and terminated and not info["success"]
    env.reset(options={"task_index": 0})
    steps = 0
    truncated = False
    while not truncated:
        _, _, terminated, truncated, _ = env.step("Action: calculate[1+1]")
        steps += 1
        assert not terminated
    assert steps == 12  # max_episode_steps=12 at registration


def test_react_format_reward_for_malformed_actions():
    env = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K, format_reward=-0.1)
    env.reset(options={"task_index": 0})
    assert env.step("what")[1] == -0.1


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Thought: x\nAction: calculate[2*3]", ("calculate", "2*3")),
        ("action 3: Finish[ 7 ]", ("finish", "7")),
        ("Action: finish[[1, 2)]", ("finish", "[1, 2)")),
        ("Action: calculate[(1+2)*3] then Action: finish[9]", ("calculate", "(1+2)*3")),
        ("Action: finish[\\boxed{5}]", ("finish", "\\boxed{5}")),
        # A bare action at the start parses as in HotpotQA (before: refused here, accepted there).
        ("calculate[2*3]", ("calculate", "2*3")),
        ("finish[7]", ("finish", "7")),
        ("Thought: try calculate[2*3]", None),
        (
            "Action: finish[\\begin{pmatrix}1\\\\\n2\\end{pmatrix}]",
            ("finish", "\\begin{pmatrix}1\\\\\n2\\end{pmatrix}"),
        ),
        ("Action: calculate[]", None),
        ("Action: search[x]", None),
        ("", None),
    ],
)
def test_parse_react_action(text, parsed):
    assert parse_react_action(text, ACTION_VERBS) == parsed


# ----------------------------------------------------------------------------- any string is legal

FUZZ = [
    "",
    "x" * 2**20,
    "\x00\x01\x1b[2J\x7f" * 100,
    "数学 😀 \ud800",
    "import os; os.system('rm -rf /')",
    "\\boxed{9^{9^{9^{9^9}}}}",
    "Action: finish[9^{9^{9^{9^9}}}]",
    "Action: calculate[9**9**9**9]",
    "Action: calculate[" + "(" * 10_000 + "]",
    "\\boxed{" + "{" * 100_000,
]


@pytest.mark.parametrize("env_id", IDS)
def test_fuzzed_actions_never_raise_and_stay_bounded(env_id):
    env = gymnasium.make(env_id, dataset=GSM8K)
    for action in FUZZ:
        env.reset(options={"task_index": 0})
        start = time.monotonic()
        _, reward, _, _, info = env.step(action)
        assert time.monotonic() - start < 30
        assert reward <= 0.0 and not info["success"]


def test_generator_config_may_be_a_dict_as_json_flags_carry_it():
    config = {"min_steps": 1, "max_steps": 1, "templates": ["shopping"]}
    env = gymnasium.make("Mulligan/Math-v0", generator_config=config)
    env.reset(seed=0)
    assert env.unwrapped.task["num_steps"] == 1 and env.unwrapped.task["template"] == "shopping"
    with pytest.raises(ValueError, match="unknown field"):
        gymnasium.make("Mulligan/Math-v0", generator_config={"steps": 2})
    with pytest.raises(ValueError, match="max_steps"):
        gymnasium.make("Mulligan/Math-v0", generator_config={"max_steps": 99})


def test_nat_one_answer_files_load_as_they_are(tmp_path):
    # NAT's out-of-distribution test files (ASDiv, SVAMP, MultiArith) carry the bare number as
    # 'answer'; before, they had to be converted to GSM8K's '#### N' first.
    path = tmp_path / "asdiv_test_one_answer.jsonl"
    path.write_text(
        '{"id": 0, "question": "Seven red apples and two green apples. How many apples?", "answer": "9"}\n'
        '{"id": 1, "question": "A shop sold 1,250 pens and 250 more. How many pens?", "answer": "1,500"}\n'
    )
    env = gymnasium.make("Mulligan/Math-v0", dataset=str(path))
    assert env.unwrapped.num_tasks == 2
    env.reset(options={"task_index": 0})
    assert env.unwrapped.task["final_answer"] == "9" and env.unwrapped.task["id"] == 0
    assert env.step("So \\boxed{9}.")[1] == 1.0
    env.reset(options={"task_index": 1})
    assert env.step("\\boxed{1500}")[1] == 1.0


def test_nat_exact_match_is_one_option_away():
    # NAT scores finish[...] by exact string match with the number after '####' (commas removed);
    # the default verifier accepts equivalent forms.
    lenient = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K)
    exact = gymnasium.make("Mulligan/MathReAct-v0", dataset=GSM8K, answer_check="exact")
    gold = lenient.unwrapped.get_task(1)["final_answer"]
    assert gold.replace(",", "") == "3750"
    for env, answer, reward in [(lenient, "3,750", 1.0), (exact, "3,750", 0.0), (exact, " 3750 ", 1.0)]:
        env.reset(options={"task_index": 1})
        assert env.step(f"Action: finish[{answer}]")[1] == reward
    with pytest.raises(ValueError, match="answer_check"):
        gymnasium.make("Mulligan/Math-v0", answer_check="fuzzy")
