"""``Mulligan/StrategyQA-v0``: yes/no questions that need an implicit multi-step strategy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mulligan.envs.generators.world import generate_strategyqa_task
from mulligan.envs.hotpotqa import QA_TOOLS, AnswerFormatError, HotpotQAEnv
from mulligan.envs.tools import ToolParameter, ToolSpec
from mulligan.envs.verifiers.qa import normalize_yes_no

#: What ``finish[...]`` with something other than Yes or No is told.
YES_NO_FORMAT = "Invalid answer. StrategyQA answers are Yes or No: write finish[Yes] or finish[No]."
#: The same, for tool calls.
YES_NO_TOOL_FORMAT = "Invalid answer. StrategyQA answers are Yes or No: call finish with the answer Yes or No."
#: StrategyQA's tools: HotpotQA's, with a Yes/No ``finish``.
STRATEGYQA_TOOLS: tuple[ToolSpec, ...] = (
    *QA_TOOLS[:2],
    ToolSpec("finish", "Answer Yes or No and end the episode.", (ToolParameter("answer", "Yes or No"),)),
)


class StrategyQAEnv(HotpotQAEnv):
    """Answer Yes or No to a question whose strategy is implicit (StrategyQA, Geva et al. 2021).

    ## Description
    A question such as "Did the director of F study at a university founded after 1950?" names no
    steps: the agent must work out the strategy (who directed F, where they studied, when that
    university was founded, compare), find each fact with the same search and lookup actions as
    :class:`~mulligan.envs.hotpotqa.HotpotQAEnv`, and answer Yes or No.

    By default tasks come from the offline procedural world
    (:func:`~mulligan.envs.generators.world.generate_strategyqa_task`, deterministic in
    ``(data_seed, index)``). Each task carries its gold strategy in StrategyQA's vocabulary:
    ``decomposition`` (sub-questions), ``facts`` (the sentences that answer them) and ``evidence``
    (per sub-question, the ``[title, sentence index]`` that answers it, or ``"operation"``), beside
    HotpotQA-format ``context`` and ``supporting_facts``. ``dataset=`` accepts files of such
    records (a boolean ``answer``, as in the official StrategyQA files, is read as Yes or No);
    official StrategyQA records carry no paragraphs, so they need ``corpus=``.

    ## Observation and Action Space
    As in :class:`~mulligan.envs.hotpotqa.HotpotQAEnv`: the first observation states the grammar
    and ends with ``Question: <question>``; actions are ``[Thought: ...] Action: search[entity]``,
    ``lookup[keyword]`` or ``finish[Yes|No]``.

    ## Reward
    1.0 for the right Yes/No, 0.0 for the wrong one (``reward="f1"`` is the same here: a yes/no
    answer has no partial credit, the HotpotQA special case). ``finish[...]`` with anything other
    than Yes or No (any case, surrounding punctuation allowed) is a format error: 0.0, an
    observation and ``feedback`` saying to answer Yes or No, and the episode goes on. Malformed
    actions pay 0.0 and count as a step.

    ## Episode End
    Terminates on ``finish[Yes]`` or ``finish[No]``. ``gymnasium.make`` caps episodes at 10 steps.

    ## Information
    The same keys as HotpotQA: ``task_id``, ``success``, ``score``, ``feedback``, ``em``, ``f1``,
    ``fine_grained_label``, ``action_type``.

    ## Arguments
    * ``dataset`` (str | None), ``corpus`` (str | None), ``reward`` (``"em"`` or ``"f1"``),
      ``data_seed`` (int, 0), ``num_distractors`` (int, 8), ``search_sentences`` (int, 3),
      ``split`` (``"train"``/``"test"``, content-disjoint), ``num_tasks`` (int | None): as in
      :class:`~mulligan.envs.hotpotqa.HotpotQAEnv` (``hf:`` specs default to the ``validation`` split).
    * ``action_format`` (str, ``"react"``): as in HotpotQA; the tools are ``search(query)``,
      ``lookup(keyword)`` and ``finish(answer)`` with ``answer`` Yes or No.
    * ``search_backend`` (``"local"`` or ``"web"``) and ``web_search`` (dict | None): as in HotpotQA
      (``"web"``: NAT's Google search through Serper).

    ## Version History
    * v0: as HotpotQA-v0's: the shared ReAct grammar (linear-time parsing, multi-line arguments),
      over-long actions refused, file records validated at load, content-disjoint procedural splits;
      ``action_format="tools"``.
    """

    answer_instruction = "finish[answer]: answer Yes or No and end the episode."
    task_prefix = "strategyqa"
    tool_specs = STRATEGYQA_TOOLS

    def __init__(
        self,
        dataset: str | None = None,
        *,
        corpus: str | None = None,
        reward: str = "em",
        data_seed: int = 0,
        num_distractors: int = 8,
        search_sentences: int = 3,
        split: str | None = None,
        num_tasks: int | None = None,
        action_format: str = "react",
        search_backend: str = "local",
        web_search: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(
            dataset=dataset,
            corpus=corpus,
            reward=reward,
            data_seed=data_seed,
            num_distractors=num_distractors,
            search_sentences=search_sentences,
            split=split,
            num_tasks=num_tasks,
            action_format=action_format,
            search_backend=search_backend,
            web_search=web_search,
            render_mode=render_mode,
        )

    def generate_task(self, index: int) -> dict[str, Any]:
        """The procedural yes/no task at ``index``."""
        return generate_strategyqa_task(self.world_config, self.data_seed, index)

    def normalize_answer_field(self, answer: Any) -> str:
        """``"Yes"`` or ``"No"`` from a boolean or a yes/no string (raises ValueError otherwise)."""
        if isinstance(answer, bool):
            return "Yes" if answer else "No"
        normalized = normalize_yes_no(answer) if isinstance(answer, str) else None
        if normalized is None:
            raise ValueError(f"a StrategyQA record's 'answer' must be Yes/No or a boolean, got {answer!r}")
        return normalized

    def grade(self, answer: str) -> tuple[float, float]:
        """``(1, 1)`` for the right Yes/No, ``(0, 0)`` for the wrong one.

        Raises:
            AnswerFormatError: with :data:`YES_NO_FORMAT` when the answer is not Yes or No.
        """
        normalized = normalize_yes_no(answer)
        if normalized is None:
            raise AnswerFormatError(YES_NO_FORMAT if self.action_format == "react" else YES_NO_TOOL_FORMAT)
        correct = float(normalized == self.task["answer"])
        return correct, correct
