import re
from fractions import Fraction

import pytest

from mulligan.envs.generators.math import (
    NON_INTEGER_TEMPLATES,
    TEMPLATE_STEPS,
    MathGeneratorConfig,
    generate_math_task,
)
from mulligan.envs.verifiers.calculator import evaluate
from mulligan.envs.verifiers.math import gsm8k_final_answer

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def _tasks(config, seed, count):
    return [generate_math_task(config, seed, index) for index in range(count)]


def test_every_annotation_is_correct_and_the_answer_is_the_last_result():
    config = MathGeneratorConfig(min_steps=1, max_steps=8, non_integer_share=0.4)
    for task in _tasks(config, seed=7, count=400):
        annotations = ANNOTATION.findall(task["answer"])
        assert len(annotations) == task["num_steps"], task
        for expression, result in annotations:
            assert evaluate(expression) == evaluate(result), (expression, result, task["answer"])
            # The visible text repeats the result right after the annotation, as in GSM8K.
            assert f"<<{expression}={result}>>{result}" in task["answer"]
        last_result = evaluate(annotations[-1][1])
        assert Fraction(task["final_answer"]) == last_result
        assert gsm8k_final_answer(task["answer"]) == task["final_answer"]
        assert task["answer"].rstrip().endswith(f"#### {task['final_answer']}")


def test_deterministic_in_seed_and_index_and_independent_of_order():
    config = MathGeneratorConfig()
    forward = _tasks(config, seed=3, count=30)
    backward = [generate_math_task(config, 3, index) for index in reversed(range(30))][::-1]
    assert forward == backward
    assert forward != _tasks(config, seed=4, count=30)


def test_all_templates_appear_and_steps_stay_in_range():
    config = MathGeneratorConfig(min_steps=2, max_steps=4)
    tasks = _tasks(config, seed=0, count=300)
    assert {t["template"] for t in tasks} == set(TEMPLATE_STEPS)
    assert all(2 <= t["num_steps"] <= 4 for t in tasks)
    assert {t["num_steps"] for t in tasks} == {2, 3, 4}


def test_non_integer_share_controls_answers():
    integers_only = _tasks(MathGeneratorConfig(non_integer_share=0.0), seed=1, count=150)
    assert all(Fraction(t["final_answer"]).denominator == 1 for t in integers_only)
    all_fractional = _tasks(MathGeneratorConfig(non_integer_share=1.0), seed=1, count=150)
    assert all(Fraction(t["final_answer"]).denominator != 1 for t in all_fractional)
    assert {t["template"] for t in all_fractional} <= NON_INTEGER_TEMPLATES
    # Recipe quantities are written as fractions, money and rates as decimals.
    assert any("/" in t["final_answer"] for t in all_fractional)
    assert any("." in t["final_answer"] for t in all_fractional)


def test_template_selection():
    tasks = _tasks(MathGeneratorConfig(templates=("ages",), non_integer_share=0.0), seed=2, count=40)
    assert {t["template"] for t in tasks} == {"ages"}
    assert all("years old" in t["question"] for t in tasks)


def test_numbers_respect_the_configured_range():
    config = MathGeneratorConfig(templates=("rates",), min_number=5, max_number=9, non_integer_share=0.0)
    for task in _tasks(config, seed=0, count=50):
        rate = int(re.search(r"makes (\d+) \w+ per hour", task["question"]).group(1))
        assert 5 <= rate <= 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_steps": 0}, "min_steps"),
        ({"min_steps": 4, "max_steps": 3}, "min_steps"),
        ({"max_steps": 9}, "max_steps <= 8"),
        ({"min_number": 0}, "min_number"),
        ({"min_number": 10, "max_number": 12}, "max_number"),
        ({"templates": ("lottery",)}, "unknown templates"),
        ({"templates": ()}, "non-empty"),
        ({"templates": "ages"}, "tuple"),
        ({"non_integer_share": 1.5}, r"\[0, 1\]"),
        ({"templates": ("ages",), "non_integer_share": 0.5}, "non-integer answers"),
        ({"templates": ("rates",), "min_steps": 6, "max_steps": 8}, "widen the range"),
        ({"max_steps": 2.5}, "must be an int"),
    ],
)
def test_config_validation_says_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MathGeneratorConfig(**kwargs)


def test_config_is_frozen():
    config = MathGeneratorConfig()
    with pytest.raises(AttributeError):
        config.max_steps = 3


def test_every_template_writes_every_step_count_it_declares():
    for template, (low, high) in TEMPLATE_STEPS.items():
        for steps in range(low, high + 1):
            shares = (0.0, 1.0) if template in NON_INTEGER_TEMPLATES else (0.0,)
            for share in shares:
                config = MathGeneratorConfig(
                    min_steps=steps, max_steps=steps, templates=(template,), non_integer_share=share
                )
                for task in _tasks(config, seed=11, count=15):
                    assert task["num_steps"] == steps
                    assert (Fraction(task["final_answer"]).denominator != 1) == (share == 1.0)
