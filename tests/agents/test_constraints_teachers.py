"""Scripted constraint writers: the careful writer succeeds, the noisy one fails on cue and heeds feedback."""

import gymnasium
import pytest

import mulligan  # noqa: F401
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.constraints import (
    ConstraintWriter,
    NoisyConstraintWriter,
    compose_response,
)
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import check_constraints


def _results(task, text, mode="strict"):
    return check_constraints(task["instruction_id_list"], task["kwargs"], text, mode)


def test_careful_writer_satisfies_generated_tasks():
    config = ConstraintTaskConfig()
    solved = sum(
        all(r.holds for r in _results(task, compose_response(task)))
        for task in (generate_constraint_task(config, 1, i) for i in range(300))
    )
    assert solved >= 0.97 * 300


@pytest.mark.parametrize(
    ("cid", "kwargs"),
    [
        ("corgi:num_planning", {"prefix": "The dog", "num_words": 6, "last_word": "home"}),
        ("corgi:cmg_hard", {"concepts": ["river", "lantern", "run"]}),
        ("corgi:panagram", {"letters": ["a", "e", "r", "k", "b"]}),
        ("corgi:panagram", {"letters": ["t", "i", "g", "e", "r"]}),
        ("completion:word_count_ending", {"prefix": "The dog", "num_words": 6, "last_word": "home"}),
        ("concepts:use_all", {"concepts": ["river", "lantern", "run"]}),
        ("letters:pangram", {}),
        ("letters:lipogram", {"letter": "y"}),
        ("words:max_word_length", {"max_length": 5}),
        ("length_constraints:number_words", {"num_words": 150, "relation": "at least"}),
        ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}),
        ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "so"}),
        ("detectable_format:multiple_sections", {"section_spliter": "Day", "num_sections": 4}),
        ("detectable_format:number_bullet_lists", {"num_bullets": 4}),
        ("detectable_format:json_format", {}),
        ("combination:two_responses", {}),
        ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about rain."}),
        ("change_case:english_capital", {}),
        ("change_case:capital_word_frequency", {"capital_frequency": 5, "capital_relation": "at least"}),
        ("language:response_language", {"language": "de"}),
        ("startend:quotation", {}),
    ],
)
def test_writer_satisfies_and_breaks_each_constraint_on_request(cid, kwargs):
    task = {"prompt": "p", "instruction_id_list": [cid], "kwargs": [kwargs]}
    assert _results(task, compose_response(task))[0].holds
    assert not _results(task, compose_response(task, frozenset({0})))[0].holds


def test_noisy_writer_breaks_a_share_and_is_reproducible():
    config = ConstraintTaskConfig(min_constraints=3, max_constraints=3)
    tasks = [generate_constraint_task(config, 2, i) for i in range(150)]
    writer = NoisyConstraintWriter(break_rate=0.5, seed=7)
    first = [writer.act([AgentInput(messages=[], task=t)])[0].text for t in tasks]
    assert first == [writer.act([AgentInput(messages=[], task=t)])[0].text for t in tasks]
    broken = sum(not r.holds for t, text in zip(tasks, first, strict=True) for r in _results(t, text))
    total = sum(len(t["instruction_id_list"]) for t in tasks)
    assert 0.35 < broken / total < 0.65
    never = NoisyConstraintWriter(break_rate=0.0)
    always = NoisyConstraintWriter(break_rate=0.0, min_broken=1)
    task = tasks[0]
    assert all(r.holds for r in _results(task, never.act([AgentInput(messages=[], task=task)])[0].text))
    assert not all(r.holds for r in _results(task, always.act([AgentInput(messages=[], task=task)])[0].text))


def test_noisy_writer_fixes_only_what_feedback_names():
    task = {"prompt": "p", "instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}, {}]}
    writer = NoisyConstraintWriter(break_rate=1.0)
    first = writer.act([AgentInput(messages=[{"role": "user", "content": "p"}], task=task)])[0].text
    assert [r.holds for r in _results(task, first)] == [False, False]
    comma_critique = _results(task, first)[0].critique
    messages = [
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": f"- Feedback: {comma_critique} Please Try again."},
    ]
    second = writer.act([AgentInput(messages=messages, task=task)])[0].text
    assert [r.holds for r in _results(task, second)] == [True, False]
    # Unrelated feedback fixes nothing.
    messages[-1]["content"] = "- Feedback: Try harder. Please Try again."
    assert [r.holds for r in _results(task, writer.act([AgentInput(messages=messages, task=task)])[0].text)] == [
        False,
        False,
    ]


def test_writer_drives_a_corgi_session_to_success_through_the_registry():
    env = gymnasium.make(
        "Mulligan/Constraints-v0",
        max_attempts=4,
        families=("letters", "keywords"),
        min_constraints=2,
        max_constraints=2,
    )
    writer = NoisyConstraintWriter(break_rate=1.0, fixes_per_turn=1)
    successes = 0
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        messages = [{"role": "user", "content": obs}]
        while True:
            text = writer.act([AgentInput(messages=list(messages), task=env.unwrapped.task)])[0].text
            obs, _, terminated, _, info = env.step(text)
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
            if terminated:
                break
        successes += info["success"]
        assert info["attempt"] <= 3
    assert successes == 10


def test_bad_arguments_and_missing_task_are_rejected():
    with pytest.raises(ValueError, match="break_rate"):
        NoisyConstraintWriter(break_rate=1.5)
    with pytest.raises(ValueError, match="fixes_per_turn"):
        NoisyConstraintWriter(fixes_per_turn=0)
    with pytest.raises(ValueError, match="task record"):
        ConstraintWriter().act([AgentInput(messages=[])])


def test_careful_writer_solves_generated_corgi_tasks_through_the_env():
    env = gymnasium.make("Mulligan/Constraints-v0", families=("corgi",))
    writer = ConstraintWriter()
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        action = writer.act([AgentInput(messages=[{"role": "user", "content": obs}], task=env.unwrapped.task)])[0]
        _, reward, _, _, info = env.step(action.text)
        assert reward == 1.0, (env.unwrapped.task, action.text, info["feedback"])
