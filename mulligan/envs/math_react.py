"""``Mulligan/MathReAct-v0``: math word problems solved as a ReAct agent with a calculator (NAT's format)."""

from __future__ import annotations

import re
from typing import Any

from mulligan.envs.core import StepOutcome, truncate_for_feedback
from mulligan.envs.math import MathEnv, score_final_answer
from mulligan.envs.verifiers.calculator import CalculatorError, calculate
from mulligan.envs.verifiers.math import MAX_ANSWER_CHARS, extract_answer

#: What every malformed action is told.
ACTION_FORMAT = (
    "Write a thought and one action, as 'Thought: <reasoning>\\nAction: calculate[<arithmetic expression>]' "
    "or 'Thought: <reasoning>\\nAction: finish[<final answer>]'."
)
DEFAULT_INSTRUCTION = (
    "Solve the problem step by step. At each turn write a thought and one action:\n"
    "Thought: <your reasoning>\n"
    "Action: calculate[<arithmetic expression>]  (numbers, + - * / ** % and parentheses)\n"
    "or\n"
    "Action: finish[<final answer>]"
)
# "Action:" (ReAct's numbered "Action 2:" too), then the tool and its opening bracket. The first
# action in the text counts: anything a model writes after it (a hallucinated observation) is ignored.
_ACTION_RE = re.compile(r"action(?:\s*\d+)?\s*:\s*(calculate|finish)\s*\[", re.IGNORECASE)
#: Longest calculate[...] or finish[...] content looked at.
_MAX_ARGUMENT_CHARS = 2 * MAX_ANSWER_CHARS


def parse_react_action(text: str) -> tuple[str, str] | None:
    """The first ``Action: calculate[...]`` or ``Action: finish[...]`` in ``text``.

    Returns:
        ``(tool, argument)`` with ``tool`` in ``{"calculate", "finish"}``, or ``None`` when the text
        holds no well-formed action (no ``Action:``, an unknown tool, an unclosed bracket, or an
        empty argument).
    """
    match = _ACTION_RE.search(text)
    if match is None:
        return None
    tool, start = match.group(1).lower(), match.end()
    window = text[start : start + _MAX_ARGUMENT_CHARS + 1]
    depth, end = 1, None
    for position, char in enumerate(window):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                end = position
                break
    if end is None:
        # An interval answer such as finish[[1, 2)] leaves brackets unbalanced: take the line's last ']'.
        line = window.split("\n", 1)[0]
        end = line.rfind("]") if tool == "finish" else -1
        if end < 0:
            return None
    argument = window[:end].strip()
    return (tool, argument) if argument else None


class MathReActEnv(MathEnv):
    """Math word problems solved step by step with a calculator tool, in NAT's ReAct format.

    ## Description
    NAT (Wang et al. 2024, Sec. 4) trains math agents on ReAct trajectories: the agent alternates a
    thought and an action; ``calculate[expression]`` evaluates arithmetic, ``finish[answer]`` ends
    the episode. Tasks are those of ``Mulligan/Math-v0`` (procedural GSM8K-style problems by
    default, or GSM8K/MATH files), and ``finish`` is scored by the same verifier.

    ## Observation and Action Space
    :class:`~mulligan.envs.core.TextSpace` both. The first observation is the instruction and the
    question; after ``calculate[...]`` it is ``"Observation: <value>"`` (or the calculator's error);
    after a malformed action it says the expected format. An action is
    ``"Thought: ...\\nAction: calculate[...]"`` or ``"Thought: ...\\nAction: finish[...]"``; the
    first action in the text counts.

    ## Reward
    ``finish``: 1.0 if the answer equals the gold answer, else 0.0. ``calculate`` steps pay 0.0.
    A malformed action pays ``format_reward`` (default 0.0) and counts as a step.

    ## Episode End
    Terminates on ``finish``. Registered with ``max_episode_steps=12`` (gymnasium's TimeLimit
    truncates; the env itself never does).

    ## Information
    ``task_id``, ``success``, ``score``, ``feedback``, ``parsed_answer`` (the ``finish`` answer, or
    ``None``), ``gold_answer``, ``action_type`` (``"calculate"``, ``"finish"``, ``"invalid"``, or
    ``None`` before the first step).

    ## Arguments
    Those of ``Mulligan/Math-v0`` (``dataset``, ``split``, ``data_seed``, ``num_tasks``,
    ``generator_config``, ``verify_timeout``), plus ``format_reward`` (float, 0.0): the reward of
    a malformed action, and ``instruction`` (str): the text shown before the question.
    """

    default_instruction = DEFAULT_INSTRUCTION

    def default_info(self) -> dict[str, Any]:
        """MathReAct adds ``parsed_answer``, ``gold_answer`` and ``action_type``."""
        return {**super().default_info(), "action_type": None}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        question = task["question"].strip()
        return (f"{self.instruction}\n\nQuestion: {question}" if self.instruction else question), {}

    def _step(self, action: str) -> StepOutcome:
        parsed = parse_react_action(action)
        if parsed is None:
            feedback = f"Invalid action. {ACTION_FORMAT}"
            return StepOutcome(
                f"Observation: {feedback}", self.format_reward, False, False, 0.0, feedback,
                {"action_type": "invalid"},
            )
        tool, argument = parsed
        if tool == "calculate":
            try:
                observation = f"Observation: {calculate(argument)}"
                feedback = ""
            except CalculatorError as err:
                feedback = f"calculate[{truncate_for_feedback(argument)}] failed: {err}."
                observation = f"Observation: Error: {err}."
            return StepOutcome(observation, 0.0, False, False, 0.0, feedback, {"action_type": "calculate"})
        # A boxed answer inside finish[...] is taken from its box; otherwise the whole argument is the answer.
        answer = extract_answer(argument) if "\\boxed" in argument else argument
        outcome = score_final_answer(
            answer, self.task["final_answer"], 0.0, self.verify_timeout, expected_format="finish[...]"
        )
        outcome.observation = "Episode over."
        outcome.info["action_type"] = "finish"
        return outcome
