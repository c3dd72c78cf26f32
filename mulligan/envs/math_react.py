"""``Mulligan/MathReAct-v0``: math word problems solved as a ReAct agent with a calculator (NAT's format)."""

from __future__ import annotations

from typing import Any

from mulligan.envs.core import StepOutcome, truncate_for_feedback
from mulligan.envs.math import MathEnv, score_final_answer
from mulligan.envs.react import parse_react_action
from mulligan.envs.tools import ToolParameter, ToolSpec, check_action_format
from mulligan.envs.verifiers.calculator import CalculatorError, calculate
from mulligan.envs.verifiers.math import extract_answer

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
#: The first observation's instruction with ``action_format="tools"``.
DEFAULT_TOOLS_INSTRUCTION = (
    "Solve the problem step by step, calling one tool per turn: calculate(expression) evaluates an "
    "arithmetic expression (numbers, + - * / ** % and parentheses); finish(answer) gives the final "
    "answer and ends the episode."
)
#: The verbs of a MathReAct step; the grammar around them is :mod:`mulligan.envs.react`'s.
ACTION_VERBS = ("calculate", "finish")
#: The verbs as tools (``action_format="tools"``).
MATH_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "calculate",
        "Evaluate an arithmetic expression: numbers, + - * / ** % and parentheses.",
        (ToolParameter("expression", "the arithmetic expression, e.g. '(3 + 4) * 12'"),),
    ),
    ToolSpec(
        "finish",
        "Give the final answer and end the episode.",
        (ToolParameter("answer", "the final answer, e.g. '84' or '3/4'"),),
    ),
)


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
    first action in the text counts. The grammar (marker, brackets, multi-line arguments) is that
    of every ReAct env, :func:`mulligan.envs.react.parse_react_action`.

    ## Reward
    ``finish``: 1.0 if the answer equals the gold answer, else 0.0. ``calculate`` steps pay 0.0.
    A malformed action pays ``format_reward`` (default 0.0) and counts as a step; so does an
    action longer than the action space's ``max_length`` (2**21 characters), which is not read.

    ## Episode End
    Terminates on ``finish``. Registered with ``max_episode_steps=12`` (gymnasium's TimeLimit
    truncates; the env itself never does).

    ## Information
    ``task_id``, ``success``, ``score``, ``feedback``, ``parsed_answer`` (the ``finish`` answer, or
    ``None``), ``gold_answer``, ``action_type`` (``"calculate"``, ``"finish"``, ``"invalid"``, or
    ``None`` before the first step).

    ## Arguments
    Those of ``Mulligan/Math-v0`` (``dataset``, ``split``, ``data_seed``, ``num_tasks``,
    ``generator_config``, ``verify_timeout``, ``answer_check``: ``"exact"`` is NAT's string match
    of the ``finish`` argument), plus ``format_reward`` (float, 0.0): the reward of
    a malformed action, ``instruction`` (str): the text shown before the question, and
    ``action_format`` (str, ``"react"``): ``"tools"`` reads each action as a tool call
    (:mod:`mulligan.envs.tools`) of ``calculate(expression)`` or ``finish(answer)``
    (``env.unwrapped.tools``); the default instruction then asks for tool calls, a
    ``calculate`` call's observation is the value alone (the tool result, without ``Observation:``),
    ``info["tool_call_id"]`` names the call, and an invalid call is a malformed action.

    ## Version History
    * v0: the action grammar is the shared one of :mod:`mulligan.envs.react` (before: ``Action:``
      was required, so a bare ``finish[7]`` was malformed here but not in HotpotQA-v0); over-long
      actions are refused; the procedural splits are disjoint by content (see ``Mulligan/Math-v0``);
      ``action_format="tools"`` (tool calls; ReAct text stays the default).
    """

    default_instruction = DEFAULT_INSTRUCTION
    tool_specs = MATH_TOOLS

    def __init__(self, dataset: Any = None, *, action_format: str = "react", **kwargs: Any):
        """Those of ``Mulligan/Math-v0`` plus ``action_format`` (see the class docstring)."""
        if check_action_format(action_format) == "tools":
            # Read by MathEnv.__init__ when no instruction is given.
            self.default_instruction = DEFAULT_TOOLS_INSTRUCTION
        super().__init__(dataset, **kwargs)
        self.action_format = action_format

    def default_info(self) -> dict[str, Any]:
        """MathReAct adds ``parsed_answer``, ``gold_answer`` and ``action_type``."""
        return {**super().default_info(), "action_type": None}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        question = task["question"].strip()
        return (f"{self.instruction}\n\nQuestion: {question}" if self.instruction else question), {}

    def refuse_action(self, feedback: str) -> StepOutcome:
        """An over-long action: a malformed step (``format_reward``), told the limit as an observation."""
        outcome = super().refuse_action(feedback)
        outcome.observation = feedback if self.action_format == "tools" else f"Observation: {feedback}"
        return outcome

    def _step(self, action: str) -> StepOutcome:
        parsed = parse_react_action(action, ACTION_VERBS)
        if parsed is None:
            feedback = f"Invalid action. {ACTION_FORMAT}"
            return StepOutcome(
                observation=f"Observation: {feedback}",
                reward=self.format_reward,
                feedback=feedback,
                info={"action_type": "invalid"},
            )
        return self._act(*parsed)

    def _step_tool(self, spec: ToolSpec, arguments: dict[str, Any]) -> StepOutcome:
        outcome = self._act(spec.name, next(iter(arguments.values())))
        # A tool result is the value itself; "Observation:" is ReAct's transcript marker.
        outcome.observation = outcome.observation.removeprefix("Observation: ")
        return outcome

    def _act(self, tool: str, argument: str) -> StepOutcome:
        if tool == "calculate":
            try:
                observation = f"Observation: {calculate(argument)}"
                feedback = ""
            except CalculatorError as err:
                feedback = f"calculate[{truncate_for_feedback(argument)}] failed: {err}."
                observation = f"Observation: Error: {err}."
            return StepOutcome(observation=observation, feedback=feedback, info={"action_type": "calculate"})
        # A boxed answer inside finish[...] is taken from its box; otherwise the whole argument is the answer.
        answer = extract_answer(argument) if "\\boxed" in argument else argument
        outcome = score_final_answer(
            answer,
            self.task["final_answer"],
            0.0,
            self.verify_timeout,
            expected_format="finish[...]",
            units=self.answer_units,
            exact=self.answer_check == "exact",
        )
        outcome.observation = "Episode over."
        outcome.info["action_type"] = "finish"
        return outcome
