"""Scripted math teachers for ``Mulligan/Math-v0`` and ``Mulligan/MathReAct-v0``.

* :class:`MathOracle` writes the task's worked solution with a correct ``\\boxed{}`` answer
  (Math-v0), or replays the solution's calculator annotations ``<<expr=result>>`` as
  ``Thought: ... Action: calculate[expr]`` steps and ends with ``finish[answer]`` (MathReAct-v0).
  It is stateless: progress is read from the conversation.
* :class:`NoisyMathTeacher` behaves like the oracle but, with probability ``error_rate`` per
  episode, fails the way models do: an arithmetic slip in one step carried through to the end, a
  wrong final step, a missing final answer (a response cut off mid-solution), or an early
  ``finish``. Every failure is checked to be wrong, so its success rate is ``1 - error_rate`` in
  expectation. These are the negative examples NAT (Wang et al. 2024, Sec. 3) learns from.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput, input_rng
from mulligan.envs.verifiers.calculator import CalculatorError, evaluate, format_number
from mulligan.envs.verifiers.math import extract_answer, parse_plain_number

_ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# An annotated step as written in GSM8K: "48/2 = <<48/2=24>>24" (the "= " and a "$" are optional).
_ANNOTATED_STEP_RE = re.compile(r"(?:=\s*)?\$?\s*<<[^<>]*>>\s*-?[\d,/]*(?:\.\d+)?")
_NUMBER_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?")
_FRACTION_RE = re.compile(r"(-?)(\d+)/(\d+)")
_MATH_REACT_MARKERS = ("calculate[", "finish[")


@dataclass
class _Step:
    """One calculator-annotated step of a worked solution."""

    line: int
    expression: str
    result: str
    thought: str


def _solution_steps(solution: str) -> tuple[list[str], list[_Step]]:
    """The solution's lines (without the ``####`` line) and its replayable annotated steps."""
    lines = [line for line in solution.split("\n") if not line.strip().startswith("####")]
    steps: list[_Step] = []
    for number, line in enumerate(lines):
        for position, match in enumerate(_ANNOTATION_RE.finditer(line)):
            expression = match.group(1).strip()
            try:
                result = format_number(evaluate(expression))
            except CalculatorError:
                continue  # an annotation our calculator cannot replay (rare in GSM8K): skip it
            readable = re.sub(r"\s+([.,;!?])", r"\1", " ".join(_ANNOTATED_STEP_RE.sub("", line).split()))
            thought = readable if position == 0 and readable else f"Next I compute {expression}."
            steps.append(_Step(number, expression, result, thought))
    return lines, steps


def _plain_text(line: str) -> str:
    """A solution line without its calculator annotations, as people write it."""
    return _ANNOTATION_RE.sub("", line)


def _boxed(answer: str) -> str:
    fraction = _FRACTION_RE.fullmatch(answer.strip())
    if fraction:
        sign, numerator, denominator = fraction.groups()
        return f"\\boxed{{{sign}\\frac{{{numerator}}}{{{denominator}}}}}"
    return f"\\boxed{{{answer.strip()}}}"


def _is_react(item: AgentInput) -> bool:
    if item.env_id is not None:
        return "MathReAct" in item.env_id
    first = next((m["content"] for m in item.messages if m["role"] == "user"), "")
    return all(marker in first for marker in _MATH_REACT_MARKERS)


def _attempt_actions(item: AgentInput) -> list[str]:
    """The assistant turns of the current attempt: after the last user turn that states the question."""
    question = str((item.task or {}).get("question", "")).strip()
    start = 0
    for index, message in enumerate(item.messages):
        if message["role"] == "user" and question and question in message["content"]:
            start = index
    return [m["content"] for m in item.messages[start:] if m["role"] == "assistant"]


def _same_answer(answer: str | None, gold: str) -> bool:
    """Exact in-process comparison of plain numbers (teachers only produce plain numbers)."""
    if answer is None:
        return False
    a, g = parse_plain_number(answer.replace(",", "")), parse_plain_number(gold.replace(",", ""))
    return a is not None and a == g if g is not None else answer.strip() == gold.strip()


# ---------------------------------------------------------------------------------------- scripts


def _math_response(task: Mapping[str, Any]) -> str:
    """The oracle's Math-v0 response: the worked solution and a boxed final answer."""
    solution, final = task["answer"], task["final_answer"]
    if "\\boxed" in solution:  # MATH format: the solution already ends in a boxed answer
        return solution.strip()
    lines, _ = _solution_steps(solution)
    body = "\n".join(_plain_text(line) for line in lines).strip()
    return f"{body}\nThe final answer is {_boxed(final)}.".strip()


def _react_script(task: Mapping[str, Any]) -> list[str]:
    """The oracle's MathReAct-v0 actions: one calculate per annotation, then finish."""
    _, steps = _solution_steps(task["answer"])
    actions = [f"Thought: {step.thought}\nAction: calculate[{step.expression}]" for step in steps]
    final = task["final_answer"]
    actions.append(f"Thought: So the answer is {final}.\nAction: finish[{final}]")
    return actions


def _replace_numbers(expression: str, substitutions: Mapping[Fraction, str]) -> str:
    def swap(match: re.Match) -> str:
        return substitutions.get(Fraction(match.group(0)), match.group(0))

    return _NUMBER_TOKEN_RE.sub(swap, expression)


def _slipped_steps(steps: list[_Step], slip_at: int, rng: np.random.Generator) -> list[_Step] | None:
    """The steps with an operand typo at ``slip_at``, the wrong value carried into later steps."""
    numbers = list(_NUMBER_TOKEN_RE.finditer(steps[slip_at].expression))
    if not numbers:
        return None
    target = numbers[int(rng.integers(len(numbers)))]
    original = Fraction(target.group(0))
    delta = int(rng.choice([1, 2, 3, 5, 10]))
    typo = format_number(original + delta if original < delta or rng.random() < 0.5 else original - delta)
    expression = steps[slip_at].expression
    expression = expression[: target.start()] + typo + expression[target.end() :]
    substitutions: dict[Fraction, str] = {}
    new_steps = list(steps[:slip_at])
    for index, step in enumerate(steps[slip_at:]):
        if index > 0:
            expression = _replace_numbers(step.expression, substitutions)
        try:
            result = format_number(evaluate(expression))
        except CalculatorError:
            return None
        if result.startswith("-") and not step.result.startswith("-"):
            return None  # a negative price or age would give the slip away
        if result != step.result:
            substitutions[Fraction(evaluate(step.result))] = result
        thought = step.thought.replace(step.expression, expression) if step.expression in step.thought else step.thought
        new_steps.append(_Step(step.line, expression, result, thought))
    return new_steps


def _render_steps(lines: list[str], steps: list[_Step], original: list[_Step]) -> str:
    """Solution lines rewritten with ``steps`` in place of ``original`` (annotations removed)."""
    rewritten = list(lines)
    for old, new in zip(original, steps, strict=True):
        line = rewritten[old.line]
        line = line.replace(f"<<{old.expression}={old.result}>>{old.result}", new.result, 1)
        line = line.replace(old.expression, new.expression, 1)
        rewritten[old.line] = line
    return "\n".join(_plain_text(line) for line in rewritten).strip()


def _wrong_final(final: str, steps: list[_Step], rng: np.random.Generator) -> str:
    """A plausible wrong final answer: the previous step's result, or the answer off by a little."""
    if len(steps) >= 2 and not _same_answer(steps[-2].result, final):
        return steps[-2].result
    value = parse_plain_number(final)
    if value is None:
        return final + "1"
    return format_number(value + int(rng.choice([1, 2, 10])) * (1 if rng.random() < 0.5 else -1))


# ---------------------------------------------------------------------------------------- agents


class MathOracle(Agent):
    """Solves Math-v0 and MathReAct-v0 tasks from their worked solutions (stateless).

    Math-v0: the worked solution without calculator annotations, ending with
    ``The final answer is \\boxed{...}.`` MathReAct-v0: one ``Thought: ... Action: calculate[...]``
    per calculator annotation, then ``Action: finish[...]``; the step is the number of the
    current attempt's actions so far (attempts restart after a retry's feedback).
    """

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One correct action per input."""
        actions = []
        for item in inputs:
            if item.task is None:
                raise ValueError("MathOracle needs each AgentInput's task (env.unwrapped.task)")
            if _is_react(item):
                script = _react_script(item.task)
                done = len(_attempt_actions(item))
                actions.append(Action(script[min(done, len(script) - 1)]))
            else:
                actions.append(Action(_math_response(item.task)))
        return actions


class NoisyMathTeacher(Agent):
    """The oracle with realistic failures in a share ``error_rate`` of episodes.

    Failure modes (drawn uniformly among those possible for the task): ``slip`` (an operand typo in
    one step, the wrong value carried to the end), ``wrong_final`` (a wrong last step or final
    answer), ``missing_answer`` (Math-v0: the response stops mid-solution, without a final answer)
    and ``early_finish`` (MathReAct-v0: ``finish`` with an intermediate result). Each failure is
    checked to give a wrong answer.

    MathReAct-v0 episodes follow a script drawn at their first step; scripts are looked up by the
    conversation so far, so the teacher serves many envs at once, including identical ones.

    Args:
        error_rate: Probability in [0, 1] that an episode fails.
        seed: Seed of the teacher's random generator (:meth:`reset` reseeds it).
    """

    _MAX_PENDING_SCRIPTS = 100_000

    def __init__(self, error_rate: float = 0.3, seed: int | None = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must lie in [0, 1], got {error_rate!r}")
        self.error_rate = float(error_rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._draws = self.rng
        self._scripts: OrderedDict[str, list[tuple[list[str], str]]] = OrderedDict()

    def reset(self, seed: int | None = None) -> None:
        """Reseed the generator (with ``seed``, or the constructor's seed) and forget open episodes."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)
        self._scripts.clear()

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input; ``action.metadata["mode"]`` names the episode's failure mode or ``"correct"``."""
        actions = []
        for item in inputs:
            if item.task is None:
                raise ValueError("NoisyMathTeacher needs each AgentInput's task (env.unwrapped.task)")
            # Draws come from the input's own seed when the rollout gives one (derived from the run
            # seed, task, sample and turn), so a resumed collection draws what an uninterrupted one did.
            self._draws = input_rng(item, self.rng)
            if _is_react(item):
                actions.append(self._react_action(item))
            else:
                text, mode = self._math_response(item.task)
                actions.append(Action(text, metadata={"mode": mode}))
        return actions

    # ------------------------------------------------------------------ Math-v0
    def _math_response(self, task: Mapping[str, Any]) -> tuple[str, str]:
        if self._draws.random() >= self.error_rate:
            return _math_response(task), "correct"
        final = task["final_answer"]
        lines, steps = _solution_steps(task["answer"])
        modes = ["wrong_final", "missing_answer"] + (["slip"] if steps else [])
        for mode in self._draws.permutation(modes):
            text = self._math_failure(str(mode), lines, steps, final)
            if text is not None and not _same_answer(extract_answer(text), final):
                return text, str(mode)
        wrong = _wrong_final(final, steps, self._draws)
        return f"{_math_response(task).rsplit(chr(10), 1)[0]}\nThe final answer is {_boxed(wrong)}.", "wrong_final"

    def _math_failure(self, mode: str, lines: list[str], steps: list[_Step], final: str) -> str | None:
        if mode == "slip":
            slipped = _slipped_steps(steps, int(self._draws.integers(len(steps))), self._draws)
            if slipped is None:
                return None
            return f"{_render_steps(lines, slipped, steps)}\nThe final answer is {_boxed(slipped[-1].result)}."
        if mode == "wrong_final":
            body = "\n".join(_plain_text(line) for line in lines[:-1]) if len(lines) > 1 else ""
            wrong = _wrong_final(final, steps, self._draws)
            return f"{body}\nThe final answer is {_boxed(wrong)}.".strip()
        # missing_answer: the response stops partway, like a generation that hit its token limit.
        text = "\n".join(_plain_text(line) for line in lines)
        cut = int(self._draws.integers(max(1, len(text) // 4), max(2, (3 * len(text)) // 4)))
        return text[:cut].rstrip()

    # ------------------------------------------------------------------ MathReAct-v0
    def _react_action(self, item: AgentInput) -> Action:
        done = _attempt_actions(item)
        key = self._conversation_key(item.messages)
        pending = self._scripts.get(key)
        if pending:
            script, mode = pending.pop(0)
            if not pending:
                del self._scripts[key]
        else:
            script, mode = self._draw_react_script(item.task, start=len(done))
            script = [""] * len(done) + script
        step = min(len(done), len(script) - 1)
        action = script[step]
        if step < len(script) - 1:
            next_key = self._conversation_key([*item.messages, {"role": "assistant", "content": action}])
            self._scripts.setdefault(next_key, []).append((script, mode))
            while len(self._scripts) > self._MAX_PENDING_SCRIPTS:
                self._scripts.popitem(last=False)
        return Action(action, metadata={"mode": mode})

    @staticmethod
    def _conversation_key(messages: Sequence[Mapping[str, str]]) -> str:
        # The observation that answers an action is not part of the key: scripts are keyed by the
        # conversation up to and including the action they produced.
        trimmed = list(messages)
        if trimmed and trimmed[-1]["role"] == "user" and any(m["role"] == "assistant" for m in trimmed):
            trimmed = trimmed[:-1]
        blob = json.dumps([[m["role"], m["content"]] for m in trimmed], ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def _draw_react_script(self, task: Mapping[str, Any], start: int) -> tuple[list[str], str]:
        """Actions from step ``start`` to the end of the attempt, and the failure mode."""
        oracle = _react_script(task)[start:] or [_react_script(task)[-1]]
        if self._draws.random() >= self.error_rate:
            return oracle, "correct"
        final = task["final_answer"]
        _, all_steps = _solution_steps(task["answer"])
        steps = all_steps[start:]
        modes = ["wrong_final"] + (["slip", "early_finish"] if steps else [])
        for mode in self._draws.permutation(modes):
            script = self._react_failure(str(mode), steps, final)
            if script is not None:
                return script, str(mode)
        wrong = _wrong_final(final, steps, self._draws)
        return [*oracle[:-1], f"Thought: So the answer is {wrong}.\nAction: finish[{wrong}]"], "wrong_final"

    def _react_failure(self, mode: str, steps: list[_Step], final: str) -> list[str] | None:
        def calc(step: _Step) -> str:
            return f"Thought: {step.thought}\nAction: calculate[{step.expression}]"

        def finish(answer: str) -> str:
            return f"Thought: So the answer is {answer}.\nAction: finish[{answer}]"

        if mode == "slip":
            slipped = _slipped_steps(steps, int(self._draws.integers(len(steps))), self._draws)
            if slipped is None or _same_answer(slipped[-1].result, final):
                return None
            return [calc(step) for step in slipped] + [finish(slipped[-1].result)]
        if mode == "early_finish":
            stop = int(self._draws.integers(len(steps)))
            if _same_answer(steps[stop].result, final):
                return None
            return [calc(step) for step in steps[: stop + 1]] + [finish(steps[stop].result)]
        wrong = _wrong_final(final, steps, self._draws)
        return [calc(step) for step in steps] + [finish(wrong)]
