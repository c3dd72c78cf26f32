"""Procedural GSM8K-style word problems with worked solutions, offline and deterministic.

:func:`generate_math_task` is a pure function of ``(config, seed, index)``. Each task is a record
in GSM8K's own format plus the bare answer::

    {"question": "...", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips ...\\n#### 72",
     "final_answer": "72", "template": "shopping", "num_steps": 2}

Every step of the worked solution carries a calculator annotation ``<<expression=result>>``
computed with :mod:`mulligan.envs.verifiers.calculator`, so annotations are exact and a scripted
teacher can replay them as ``calculate[...]`` actions; the ``####`` line repeats the last result
(or writes it as a fraction, for recipe quantities). Templates: shopping, ages, rates, sharing,
discounts, recipes.

:func:`math_task_signature` names a problem's content (template, numbers, answer) without its
wording, which is what the train and test splits of ``Mulligan/Math-v0`` keep apart.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from mulligan.envs.core import seeded_rng
from mulligan.envs.verifiers.calculator import evaluate, format_number

NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Daniel",
    "Emma",
    "Farah",
    "Gabriel",
    "Hana",
    "Ivan",
    "Julia",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
)
_GOODS = (
    ("notebooks", "notebook"),
    ("pens", "pen"),
    ("apples", "apple"),
    ("candles", "candle"),
    ("mugs", "mug"),
    ("scarves", "scarf"),
    ("sandwiches", "sandwich"),
    ("books", "book"),
)
_INGREDIENTS = ("flour", "sugar", "milk", "oats", "butter", "cocoa")
_PRODUCTS = (("bottles", "machine"), ("cookies", "bakery oven"), ("pages", "printer"), ("bricks", "press"))
_ITEMS_COUNTABLE = ("marbles", "stickers", "cards", "shells", "beads")
_ITEMS_MEASURED = ("kilograms of rice", "liters of juice", "meters of ribbon", "pounds of clay")

#: Templates and the numbers of solution steps each can be written with.
TEMPLATE_STEPS: dict[str, tuple[int, int]] = {
    "shopping": (1, 8),
    "ages": (1, 8),
    "rates": (1, 5),
    "sharing": (1, 8),
    "discounts": (1, 8),
    "recipes": (1, 6),
}
#: Templates whose answers can be non-integers (ages are whole years).
NON_INTEGER_TEMPLATES = frozenset({"shopping", "rates", "sharing", "discounts", "recipes"})
_MAX_TRIES = 200


@dataclass(frozen=True)
class MathGeneratorConfig:
    """Configuration of the procedural math word-problem generator.

    Attributes:
        min_steps: Fewest calculation steps in a solution (>= 1).
        max_steps: Most calculation steps (<= 8).
        min_number: Smallest base quantity in a question (>= 1).
        max_number: Largest base quantity in a question (>= min_number + 4).
        templates: Which templates to draw from (see ``TEMPLATE_STEPS``).
        non_integer_share: Probability that a task's answer is a non-integer (a terminating decimal,
            or a fraction for recipe quantities), in [0, 1].
    """

    min_steps: int = 2
    max_steps: int = 5
    min_number: int = 2
    max_number: int = 50
    templates: tuple[str, ...] = tuple(TEMPLATE_STEPS)
    non_integer_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("min_steps", "max_steps", "min_number", "max_number"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 1 <= self.min_steps <= self.max_steps <= 8:
            raise ValueError(
                f"need 1 <= min_steps <= max_steps <= 8, got min_steps={self.min_steps}, max_steps={self.max_steps}"
            )
        if self.min_number < 1 or self.max_number < self.min_number + 4:
            raise ValueError(
                f"need 1 <= min_number and max_number >= min_number + 4, got "
                f"min_number={self.min_number}, max_number={self.max_number}"
            )
        if self.max_number > 10_000:
            raise ValueError(f"max_number must be <= 10000 (word problems), got {self.max_number}")
        if isinstance(self.templates, str) or not self.templates:
            raise ValueError("templates must be a non-empty tuple of template names")
        unknown = [t for t in self.templates if t not in TEMPLATE_STEPS]
        if unknown:
            raise ValueError(f"unknown templates {unknown}; choose from {sorted(TEMPLATE_STEPS)}")
        for template in self.templates:
            low, high = TEMPLATE_STEPS[template]
            if high < self.min_steps or low > self.max_steps:
                raise ValueError(
                    f"template {template!r} writes {low}-{high} steps, outside [min_steps, max_steps]="
                    f"[{self.min_steps}, {self.max_steps}]; widen the range or drop the template"
                )
        if not 0.0 <= self.non_integer_share <= 1.0:
            raise ValueError(f"non_integer_share must lie in [0, 1], got {self.non_integer_share!r}")
        if self.non_integer_share > 0 and not NON_INTEGER_TEMPLATES & set(self.templates):
            raise ValueError(
                "non_integer_share > 0 needs a template with non-integer answers "
                f"({sorted(NON_INTEGER_TEMPLATES)}); or set non_integer_share=0"
            )


class _Retry(Exception):
    """The random draw does not satisfy the template's constraints; draw again."""


class _Work:
    """Collects solution lines; each calculation is evaluated by the calculator and annotated."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.value = Fraction(0)

    def calc(self, expression: str, sentence: str, unit_prefix: str = "") -> Fraction:
        """Evaluate ``expression`` and append ``sentence`` with ``{}`` replaced by the annotated step."""
        value = evaluate(expression)
        result = format_number(value)
        if value < 0 or evaluate(result) != value:  # only exact, non-negative quantities
            raise _Retry
        self.lines.append(sentence.format(f"{expression} = {unit_prefix}<<{expression}={result}>>{result}"))
        self.value = value
        return value


def _num(value: Fraction | int | float) -> str:
    return format_number(Fraction(value))


def _pick(rng: np.random.Generator, options: tuple | list) -> Any:
    return options[int(rng.integers(len(options)))]


def _int(rng: np.random.Generator, low: int, high: int) -> int:
    return int(rng.integers(low, high + 1))


def _money(rng: np.random.Generator, config: MathGeneratorConfig, cents: bool) -> Fraction:
    dollars = _int(rng, config.min_number, max(config.min_number, config.max_number // 2))
    return Fraction(dollars) + (Fraction(_pick(rng, (1, 2, 3)), 4) if cents else 0)


# ----------------------------------------------------------------------------------------- templates


def _shopping(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    name = _pick(rng, NAMES)
    with_change = steps == 2 or (steps >= 4 and bool(rng.integers(2)))
    num_items = 1 if steps <= 2 else steps - 1 - int(with_change)
    goods = [_GOODS[int(i)] for i in rng.permutation(len(_GOODS))[:num_items]]
    work = _Work()
    parts, costs = [], []
    for plural, _ in goods:
        quantity = _int(rng, 2, 12)
        price = _money(rng, config, cents)
        parts.append(f"{quantity} {plural} at ${_num(price)} each")
        costs.append(work.calc(f"{quantity}*{_num(price)}", f"The {plural} cost {{}}.", "$"))
    if num_items > 1:
        total = work.calc("+".join(_num(c) for c in costs), f"In total {name} spends {{}}.", "$")
    else:
        total = costs[0]
    question = f"{name} buys " + (", ".join(parts[:-1]) + " and " + parts[-1] if num_items > 1 else parts[0]) + "."
    if with_change:
        bill = next(b for b in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 10**5, 10**6) if b >= total)
        work.calc(f"{bill}-{_num(total)}", f"{name} gets {{}} in change.", "$")
        question += f" {name} pays with a ${bill} bill. How much change does {name} get, in dollars?"
    else:
        question += f" How much does {name} spend in total, in dollars?"
    return question, work


def _ages(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    people = [NAMES[int(i)] for i in rng.permutation(len(NAMES))[: steps + 1]]
    age = _int(rng, max(config.min_number, 3), min(max(config.max_number, 8), 40))
    sentences = [f"{people[0]} is {age} years old."]
    work = _Work()
    for previous, person in itertools.pairwise(people):
        choices = ["older", "younger", "twice"] + (["half"] if age % 2 == 0 and age >= 8 else [])
        relation = _pick(rng, choices)
        if relation == "older":
            gap = _int(rng, 2, 30)
            sentences.append(f"{person} is {gap} years older than {previous}.")
            age = int(work.calc(f"{age}+{gap}", f"{person} is {{}} years old."))
        elif relation == "younger":
            gap = _int(rng, 1, max(1, age - 1))
            sentences.append(f"{person} is {gap} years younger than {previous}.")
            age = int(work.calc(f"{age}-{gap}", f"{person} is {{}} years old."))
        elif relation == "twice":
            sentences.append(f"{person} is twice as old as {previous}.")
            age = int(work.calc(f"{age}*2", f"{person} is {{}} years old."))
        else:
            sentences.append(f"{person} is half as old as {previous}.")
            age = int(work.calc(f"{age}/2", f"{person} is {{}} years old."))
        if not 1 <= age <= 120:
            raise _Retry
    return " ".join(sentences) + f" How old is {people[-1]}?", work


def _rates(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    name = _pick(rng, NAMES)
    product, maker = _pick(rng, _PRODUCTS)
    rate = Fraction(_int(rng, config.min_number, config.max_number)) + (
        Fraction(_pick(rng, (1, 2, 3)), 4) if cents else 0
    )
    hours, days, weeks = _int(rng, 2, 10), _int(rng, 2, 7), _int(rng, 2, 6)
    per_box, price = _pick(rng, (4, 5, 8, 10, 20, 25)), _pick(rng, (Fraction(1, 2), Fraction(5, 4), 2, 3))
    # Each stage converts the previous quantity; a task uses the first `steps` of them.
    stages = [
        (f"{{}}*{hours}", f"In a day the {maker} makes {{}} {product}."),
        (f"{{}}*{days}", f"In a week it makes {{}} {product}."),
        (f"{{}}*{weeks}", f"In {weeks} weeks it makes {{}} {product}."),
        (f"{{}}/{per_box}", "That fills {} boxes."),
        (f"{{}}*{_num(price)}", f"{name} earns {{}}."),
    ]
    money_stage = 4
    work = _Work()
    value = rate
    for stage, (template, sentence) in enumerate(stages[:steps]):
        value = work.calc(template.format(_num(value)), sentence, "$" if stage == money_stage else "")
    question = f"{name}'s {maker} makes {_num(rate)} {product} per hour. It runs {hours} hours a day"
    question += f", {days} days a week." if steps >= 2 else "."
    if steps >= 4:
        question += f" The {product} are packed in boxes of {per_box}."
    if steps >= 5:
        question += f" {name} sells each box for ${_num(price)}."
    ask = {
        1: f"How many {product} does it make in a day?",
        2: f"How many {product} does it make in a week?",
        3: f"How many {product} does it make in {weeks} weeks?",
        4: f"How many boxes does it fill in {weeks} weeks?",
        5: f"How much does {name} earn from {weeks} weeks of production, in dollars?",
    }[steps]
    return f"{question} {ask}", work


def _sharing(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    name = _pick(rng, NAMES)
    friend = _pick(rng, [n for n in NAMES if n != name])
    item = _pick(rng, _ITEMS_MEASURED if cents else _ITEMS_COUNTABLE)
    # Plan the operations: "gives a fraction away" costs 2 steps, the others 1; a split comes last.
    plan: list[str] = []
    remaining = steps
    split_last = bool(rng.integers(2)) or steps == 1
    if split_last:
        remaining -= 1
    while remaining > 0:
        options = ["buys", "uses"] + (["gives_fraction"] if remaining >= 2 else [])
        operation = _pick(rng, options)
        plan.append(operation)
        remaining -= 2 if operation == "gives_fraction" else 1
    if split_last:
        plan.append("split")
    amount = Fraction(_int(rng, config.min_number, config.max_number) * _pick(rng, (4, 6, 8, 10, 12)))
    sentences = [f"{name} has {_num(amount)} {item}."]
    work = _Work()
    for operation in plan:
        if operation == "buys":
            more = _int(rng, config.min_number, config.max_number)
            sentences.append(f"Then {name} gets {more} more.")
            amount = work.calc(f"{_num(amount)}+{more}", f"After getting more, {name} has {{}} {item}.")
        elif operation == "uses":
            used = _int(rng, 1, max(1, int(amount) - 1))
            sentences.append(f"Then {name} uses {used} of them.")
            amount = work.calc(f"{_num(amount)}-{used}", f"After using some, {name} has {{}} {item} left.")
        elif operation == "gives_fraction":
            numerator, denominator = _pick(rng, ((1, 2), (1, 4), (3, 4), (1, 5), (2, 5), (1, 3), (2, 3)))
            sentences.append(f"Then {name} gives {numerator}/{denominator} of them to {friend}.")
            given = work.calc(f"{_num(amount)}*{numerator}/{denominator}", f"{name} gives away {{}} {item}.")
            amount = work.calc(f"{_num(amount)}-{_num(given)}", f"{name} has {{}} {item} left.")
        else:
            people = _int(rng, 2, 8)
            sentences.append(f"Finally {name} shares them equally among {people} jars.")
            amount = work.calc(f"{_num(amount)}/{people}", f"Each jar gets {{}} {item}.")
        if amount <= 0 or (not cents and amount.denominator != 1):
            raise _Retry
    ask = f"How many {item} go in each jar?" if plan[-1] == "split" else f"How many {item} does {name} have now?"
    return " ".join(sentences) + " " + ask, work


def _percent_choices(percents: tuple[int, ...], price: Fraction, cents: bool) -> tuple[int, ...]:
    """Percentages to draw from; whole-dollar tasks keep only those that give whole dollars."""
    if cents:
        return percents
    whole = tuple(p for p in percents if (price * p / 100).denominator == 1)
    if not whole:
        raise _Retry
    return whole


def _discounts(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    name = _pick(rng, NAMES)
    _, thing = _pick(rng, _GOODS)
    price = Fraction(_int(rng, config.min_number, config.max_number) * _pick(rng, (1, 2, 4, 5)))
    if cents:
        price += Fraction(_pick(rng, (1, 2, 3)), 4)
    plan: list[str] = []
    remaining = steps
    while remaining > 0:
        options = ["coupon"] + (["quantity"] if "quantity" not in plan else [])
        options += ["percent_off", "tax"] if remaining >= 2 else []
        operation = _pick(rng, options)
        plan.append(operation)
        remaining -= 2 if operation in ("percent_off", "tax") else 1
    sentences = [f"A {thing} costs ${_num(price)}."]
    work = _Work()
    for operation in plan:
        if operation == "percent_off":
            percent = _pick(rng, _percent_choices((10, 15, 20, 25, 30, 40, 50), price, cents))
            sentences.append(f"The price is reduced by {percent}%.")
            discount = work.calc(f"{_num(price)}*{percent}/100", "The discount is {}.", "$")
            price = work.calc(f"{_num(price)}-{_num(discount)}", "The reduced price is {}.", "$")
        elif operation == "tax":
            percent = _pick(rng, _percent_choices((5, 8, 10, 12, 20), price, cents))
            sentences.append(f"Then a {percent}% sales tax is added.")
            tax = work.calc(f"{_num(price)}*{percent}/100", "The tax is {}.", "$")
            price = work.calc(f"{_num(price)}+{_num(tax)}", "The price with tax is {}.", "$")
        elif operation == "coupon":
            coupon = _int(rng, 1, max(1, int(price) // 3))
            sentences.append(f"{name} uses a ${coupon} coupon.")
            price = work.calc(f"{_num(price)}-{coupon}", "After the coupon the price is {}.", "$")
        else:
            quantity = _int(rng, 2, 9)
            sentences.append(f"{name} buys {quantity} of them at that price.")
            price = work.calc(f"{_num(price)}*{quantity}", f"{quantity} of them cost {{}}.", "$")
        if price <= 0 or (not cents and price.denominator != 1):
            raise _Retry
    return " ".join(sentences) + f" How much does {name} pay, in dollars?", work


def _recipes(rng: np.random.Generator, config: MathGeneratorConfig, steps: int, cents: bool):
    name = _pick(rng, NAMES)
    has_some = steps == 2 or (steps >= 4 and bool(rng.integers(2)))
    num_ingredients = 1 if steps <= 2 else steps - 1 - int(has_some)
    ingredients = [_INGREDIENTS[int(i)] for i in rng.permutation(len(_INGREDIENTS))[:num_ingredients]]
    batches = _int(rng, 2, max(3, min(12, config.max_number // 2)))
    work = _Work()
    parts, amounts = [], []
    for ingredient in ingredients:
        cups = Fraction(_pick(rng, (1, 1, 2, 3, 3, 5, 7)), _pick(rng, (2, 4, 8)) if cents else 1)
        cups_text = f"{cups.numerator}/{cups.denominator}" if cups.denominator > 1 else str(cups.numerator)
        parts.append(f"{cups_text} {'cup' if cups == 1 else 'cups'} of {ingredient}")
        sentence = f"For {batches} batches {name} needs {{}} cups of {ingredient}."
        amounts.append(work.calc(f"{cups_text}*{batches}", sentence))
    total = amounts[0]
    if num_ingredients > 1:
        total = work.calc("+".join(_num(a) for a in amounts), f"Altogether {name} needs {{}} cups.")
    question = (
        f"One batch of {name}'s muffins needs "
        + (", ".join(parts[:-1]) + " and " + parts[-1] if num_ingredients > 1 else parts[0])
        + f". {name} makes {batches} batches."
    )
    what = "cups of ingredients in total" if num_ingredients > 1 else f"cups of {ingredients[0]}"
    if has_some:
        have = Fraction(_int(rng, 1, max(1, int(total) - 1))) if total > 1 else Fraction(1, 2)
        work.calc(f"{_num(total)}-{_num(have)}", f"{name} still needs {{}} more cups.")
        question += f" {name} already has {_num(have)} cups. How many more {what} does {name} need?"
    else:
        question += f" How many {what} does {name} need?"
    return question, work


_TEMPLATES: dict[str, Callable[..., tuple[str, _Work]]] = {
    "shopping": _shopping,
    "ages": _ages,
    "rates": _rates,
    "sharing": _sharing,
    "discounts": _discounts,
    "recipes": _recipes,
}


def generate_math_task(config: MathGeneratorConfig, seed: int, index: int) -> dict[str, Any]:
    """The word problem at ``index`` of the procedural dataset seeded ``seed``.

    Args:
        config: The generator configuration.
        seed: Dataset seed (>= 0).
        index: Task index (>= 0); tasks are independent of each other.

    Returns:
        ``{"question", "answer" (GSM8K worked solution ending in "#### N"), "final_answer",
        "template", "num_steps"}``.
    """
    rng = seeded_rng(seed, index)
    non_integer = bool(rng.random() < config.non_integer_share)
    templates = [t for t in config.templates if not non_integer or t in NON_INTEGER_TEMPLATES]
    template = _pick(rng, templates)
    low, high = TEMPLATE_STEPS[template]
    steps = _int(rng, max(low, config.min_steps), min(high, config.max_steps))
    for _ in range(_MAX_TRIES):
        try:
            question, work = _TEMPLATES[template](rng, config, steps, non_integer)
        except _Retry:
            continue
        if len(work.lines) != steps or (work.value.denominator != 1) != non_integer:
            continue
        break
    else:  # pragma: no cover - every template satisfies its constraints within a few draws
        raise RuntimeError(f"could not generate a {template!r} task for seed={seed}, index={index}")
    final = work.value
    if template == "recipes" and final.denominator != 1:
        final_answer = f"{final.numerator}/{final.denominator}"  # cups are written as fractions
    else:
        final_answer = format_number(final)
    solution = "\n".join([*work.lines, f"#### {final_answer}"])
    return {
        "question": question,
        "answer": solution,
        "final_answer": final_answer,
        "template": template,
        "num_steps": steps,
    }


_SIGNATURE_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def math_task_signature(task: dict[str, Any]) -> str:
    """The content of a generated problem, without its wording: template, numbers and answer.

    Two problems with the same template, the same numbers in the same order and the same answer
    are the same problem to a learner even when the names or goods differ ("Ava buys 3 pens at
    $2" and "Ben buys 3 mugs at $2"), so they share a signature. The procedural train and test
    splits are disjoint by signature (``mulligan.envs.math.split_of_signature``).

    Args:
        task: A record of :func:`generate_math_task` (``template``, ``question``, ``final_answer``).

    Returns:
        ``"<template>|<numbers of the question, comma-separated>|<final answer>"``.
    """
    numbers = ",".join(_SIGNATURE_NUMBER.findall(task["question"]))
    return f"{task.get('template', '')}|{numbers}|{task['final_answer']}"
