"""``Mulligan/Math-v0``: single-turn math problems answered in ``\\boxed{}``, and the math data sources.

The data helpers here are shared by :class:`MathEnv` and ``Mulligan/MathReAct-v0``: one
implementation of where math tasks come from (the procedural generator, local GSM8K or MATH JSONL
files, or the Hugging Face hub) and of the normalised task record::

    {"question": str, "answer": str (worked solution), "final_answer": str, ...}

Extra fields of the source record (``template``, ``level``, ``type``...) are kept.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id, truncate_for_feedback
from mulligan.envs.data import (
    check_data_seed,
    dataset_name,
    is_hub_spec,
    load_records,
    parse_hf_spec,
    split_of_signature,
)
from mulligan.envs.generators.math import MathGeneratorConfig, generate_math_task, math_task_signature
from mulligan.envs.verifiers.math import (
    DEFAULT_TIMEOUT,
    MAX_ANSWER_CHARS,
    boxed_final_answer,
    extract_answer,
    gsm8k_final_answer,
    last_boxed_integer,
    question_units,
    verify,
)

#: The instruction appended to every question (the usual prompt for boxed answers).
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
#: Most tasks in the procedural "test" split (a finite list, so that an evaluation can score
#: each once; a small generator config has fewer distinct test problems).
PROCEDURAL_TEST_SIZE = 1000
#: Generator indices scanned for the procedural test split.
PROCEDURAL_TEST_SCAN = 20 * PROCEDURAL_TEST_SIZE
#: The split of a hub spec that names none (``hf:openai/gsm8k:main`` is GSM8K's train split).
DEFAULT_HUB_SPLIT = "train"
_SPLITS = ("train", "test")
_MAX_REDRAWS = 1000
#: How an answer is compared with the gold one: the math verifier, NAT's exact string match, or
#: RISE's GSM8K rule (the last box, an integer).
ANSWER_CHECKS = ("verify", "exact", "boxed_int")
_BARE_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


# ------------------------------------------------------------------------------------------ records


def _first_answer(solution: str, *extractors: Any) -> str | None:
    for extractor in extractors:
        try:
            return extractor(solution)
        except ValueError:
            continue
    return None


def normalize_math_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A math task record in GSM8K or MATH format, as the normalised record envs run.

    Accepted: GSM8K (``question``, ``answer`` ending in ``#### N``, or ``answer`` a bare number as
    in NAT's ASDiv/SVAMP/MultiArith files), MATH (``problem``,
    ``solution`` with a ``\\boxed{}`` answer, optionally ``answer``), or an already normalised
    record (``question``, ``answer``, ``final_answer``).

    Raises:
        ValueError: if the record matches none of these, saying what is missing.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a math task record must be a dict, got {type(record).__name__}")
    if "question" in record and "answer" in record:
        question, solution = record["question"], record["answer"]
        if not isinstance(question, str) or not isinstance(solution, str) or not question.strip():
            raise ValueError("a GSM8K record needs string fields 'question' (non-empty) and 'answer'")
        final = record.get("final_answer")
        if final is None:
            final = _first_answer(solution, gsm8k_final_answer, boxed_final_answer)
        if final is None and _BARE_NUMBER.fullmatch(solution.strip()):
            # NAT's one-answer files (ASDiv, SVAMP, MultiArith) give the bare number as 'answer'.
            final = solution.strip()
        if not isinstance(final, str) or not final.strip():
            raise ValueError(
                "a GSM8K record's 'answer' must end with a line '#### <answer>' (or the record must "
                "carry 'final_answer')"
            )
        extra = {k: v for k, v in record.items() if k not in ("question", "answer", "final_answer")}
        return {"question": question, "answer": solution, "final_answer": final.strip(), **extra}
    if "problem" in record and "solution" in record:
        problem, solution = record["problem"], record["solution"]
        if not isinstance(problem, str) or not isinstance(solution, str) or not problem.strip():
            raise ValueError("a MATH record needs string fields 'problem' (non-empty) and 'solution'")
        final = record.get("answer")
        if not isinstance(final, str) or not final.strip():
            final = _first_answer(solution, boxed_final_answer)
        if final is None:
            raise ValueError("a MATH record's 'solution' must contain a \\boxed{...} answer")
        extra = {k: v for k, v in record.items() if k not in ("problem", "solution", "answer")}
        return {"question": problem, "answer": solution, "final_answer": final.strip(), **extra}
    raise ValueError(
        f"unrecognised math record with fields {sorted(record)}: expected GSM8K format "
        "('question', 'answer' ending in '#### N') or MATH format ('problem', 'solution' with \\boxed{})"
    )


def check_matchable_answer(final_answer: str) -> None:
    """Refuse a gold answer that no response can ever match.

    The verifier reads at most :data:`~mulligan.envs.verifiers.math.MAX_ANSWER_CHARS` characters of
    an answer and takes it from ``\\boxed{...}`` by brace matching, so a longer gold answer, or one
    whose braces do not balance (``"1}"``), can never be produced by a model.

    Raises:
        ValueError: saying why the answer cannot be matched.
    """
    if len(final_answer) > MAX_ANSWER_CHARS:
        raise ValueError(
            f"the final answer has {len(final_answer)} characters, more than the verifier reads "
            f"({MAX_ANSWER_CHARS}): no response can match it"
        )
    depth = 0
    for char in final_answer.replace("\\{", "").replace("\\}", ""):
        depth += (char == "{") - (char == "}")
        if depth < 0:
            break
    if depth != 0 or extract_answer(f"\\boxed{{{final_answer}}}") is None:
        raise ValueError(
            f"the final answer {truncate_for_feedback(final_answer)!r} has unbalanced braces: no "
            "\\boxed{} answer can match it"
        )


def _record_normalizer() -> Any:
    """A normaliser for one file: every record must be in the format of the first (GSM8K or MATH)."""
    file_format: list[str] = []

    def normalize(raw: Mapping[str, Any]) -> dict[str, Any]:
        line_format = "gsm8k" if "question" in raw else "math" if "problem" in raw else None
        if not file_format and line_format is not None:
            file_format.append(line_format)
        if line_format is None or line_format != file_format[0]:
            expected = file_format[0] if file_format else "GSM8K or MATH"
            raise ValueError(
                f"expected a {expected} record (GSM8K: 'question', 'answer' ending in '#### N'; MATH: "
                f"'problem', 'solution' with \\boxed{{}}), got fields {sorted(raw)}"
            )
        record = normalize_math_record(raw)
        check_matchable_answer(record["final_answer"])
        return record

    return normalize


def load_math_records(dataset: str | os.PathLike) -> list[dict[str, Any]]:
    """Load GSM8K or MATH records (the format is detected from the first record) as normalised records.

    Args:
        dataset: A .json/.jsonl path or ``"hf:NAME[:CONFIG][:SPLIT]"`` (the split defaults to
            :data:`DEFAULT_HUB_SPLIT`); see :mod:`mulligan.envs.data`.

    Raises:
        ValueError: if the file is missing, empty or not UTF-8 JSON, or a record is in neither format
            (or mixes them), or its answer can never be matched; the message names the file and line.
    """
    return load_records(dataset, default_split=DEFAULT_HUB_SPLIT, normalize=_record_normalizer())


@functools.lru_cache(maxsize=16)
def procedural_test_indices(config: MathGeneratorConfig, seed: int) -> tuple[int, ...]:
    """Generator indices of the procedural test split of ``(config, seed)``, in order.

    The test split is every distinct test-content task (:func:`~mulligan.envs.data.split_of_signature`) among the
    generator's first ``PROCEDURAL_TEST_SCAN`` indices, in index order, at most
    :data:`PROCEDURAL_TEST_SIZE` of them: a finite list of distinct problems, as an evaluation that
    scores each task once needs. A small generator config gives fewer (every distinct test problem
    it has); it raises if it gives none.
    """
    indices: list[int] = []
    seen: set[str] = set()
    for raw in range(PROCEDURAL_TEST_SCAN):
        signature = math_task_signature(generate_math_task(config, seed, raw))
        if signature in seen or split_of_signature(signature) != "test":
            continue
        seen.add(signature)
        indices.append(raw)
        if len(indices) == PROCEDURAL_TEST_SIZE:
            break
    if not indices:
        raise ValueError(
            f"the generator config {config} has no test-split problems in {PROCEDURAL_TEST_SCAN} draws "
            "(its content space is too small to hold out any): widen max_number, steps or templates"
        )
    return tuple(indices)


def procedural_train_task(config: MathGeneratorConfig, seed: int, index: int) -> dict[str, Any]:
    """Task ``index`` of the endless procedural train split: no test-split problem ever appears.

    The generator's task ``PROCEDURAL_TEST_SIZE + index`` is used unless its content belongs to
    the test split; then it is redrawn at indices ``2**32 * k + PROCEDURAL_TEST_SIZE + index``
    (k = 1, 2, ...), so the result is a pure function of ``(config, seed, index)``.

    Raises:
        ValueError: if no train-split problem turns up in ``_MAX_REDRAWS`` draws (a generator
            config whose content is all held out).
    """
    base = PROCEDURAL_TEST_SIZE + index
    for attempt in range(_MAX_REDRAWS):
        task = generate_math_task(config, seed, base + attempt * 2**32)
        if split_of_signature(math_task_signature(task)) == "train":
            return task
    raise ValueError(f"the generator config {config} produced no train-split problem in {_MAX_REDRAWS} draws: widen it")


class MathTaskSource:
    """Where an env's math tasks come from: the procedural generator, a data file, or the hub.

    Args:
        dataset: ``None`` for the procedural generator, or a dataset spec of
            :mod:`mulligan.envs.data`: a GSM8K/MATH .jsonl/.json path, or
            ``"hf:NAME[:CONFIG][:SPLIT]"`` (split default: :data:`DEFAULT_HUB_SPLIT`).
        split: For the generator, ``"train"`` (default) or ``"test"``: disjoint by content (see
            :func:`~mulligan.envs.data.split_of_signature`). A file is its own split and a hub spec names its split,
            so it must be ``None`` there.
        data_seed: Seed of the procedural generator.
        num_tasks: Cap on the number of tasks (``None``: endless for the generator's train split,
            the whole test split (:func:`procedural_test_indices`, at most
            :data:`PROCEDURAL_TEST_SIZE`), the whole file otherwise).
        generator_config: The generator's configuration, or a dict of its fields (what a JSON
            ``--env_kwargs`` flag can carry).
    """

    def __init__(
        self,
        dataset: str | os.PathLike | None = None,
        *,
        split: str | None = None,
        data_seed: int = 0,
        num_tasks: int | None = None,
        generator_config: MathGeneratorConfig | Mapping[str, Any] | None = None,
    ):
        if isinstance(generator_config, Mapping):
            fields = dict(generator_config)
            if isinstance(fields.get("templates"), list):
                fields["templates"] = tuple(fields["templates"])
            try:
                generator_config = MathGeneratorConfig(**fields)
            except TypeError as err:
                raise ValueError(f"generator_config has an unknown field: {err}") from err
        if num_tasks is not None and (isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1):
            raise ValueError(f"num_tasks must be a positive int or None, got {num_tasks!r}")
        self.data_seed = check_data_seed(data_seed)
        self.generator_config = generator_config or MathGeneratorConfig()
        self.records: list[dict[str, Any]] | None = None
        self._test_indices: tuple[int, ...] | None = None
        if dataset is None:
            self.split = "train" if split is None else split
            if self.split not in _SPLITS:
                raise ValueError(f"the procedural source has splits {_SPLITS}, got split={split!r}")
            self.name = f"gen{data_seed}-{self.split}"
            if self.split == "test":
                self._test_indices = procedural_test_indices(self.generator_config, self.data_seed)
                num_tasks = min(num_tasks or len(self._test_indices), len(self._test_indices))
            self.num_tasks = num_tasks
            return
        if split is not None:
            raise ValueError(
                f"split={split!r} is only for the procedural source: a file is its own split, and a "
                "hub spec names its split ('hf:NAME[:CONFIG][:SPLIT]')"
            )
        self.records = load_math_records(dataset)
        self.name = dataset_name(dataset, default_split=DEFAULT_HUB_SPLIT)
        self.split = parse_hf_spec(dataset, default_split=DEFAULT_HUB_SPLIT).split if is_hub_spec(dataset) else "file"
        if num_tasks is not None:
            self.records = self.records[:num_tasks]
        self.num_tasks = len(self.records)

    def get(self, index: int) -> dict[str, Any]:
        """The normalised task record at ``index`` (a copy)."""
        if self.records is not None:
            return dict(self.records[index])
        if self._test_indices is not None:
            return generate_math_task(self.generator_config, self.data_seed, self._test_indices[index])
        return procedural_train_task(self.generator_config, self.data_seed, index)

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``math-<source>-<index>`` for indexed tasks, a content hash for explicit records."""
        if index is None:
            return stable_task_id("math", {"question": task["question"], "final_answer": task["final_answer"]})
        return f"math-{self.name}-{index}"


# ------------------------------------------------------------------------------------------ env


class MathEnv(MulliganEnv):
    """Single-turn math problems: answer with reasoning and a final ``\\boxed{}`` answer.

    ## Description
    Each episode is one problem, GSM8K-style by default: a multi-step word problem from an offline
    procedural generator (shopping, ages, rates, sharing, discounts, recipes; some answers are
    decimals or fractions). Local GSM8K or MATH JSONL files and hub datasets work too. Correctness
    is decided by :mod:`mulligan.envs.verifiers.math` (math-verify in a sandbox process under a hard
    deadline), so equivalent forms (``0.5``, ``\\frac{1}{2}``, ``1/2``) all count.

    ## Observation and Action Space
    :class:`~mulligan.envs.core.TextSpace` both. The observation is the question followed by the
    instruction (default: "Please reason step by step, and put your final answer within
    \\boxed{}."). The action is the full response.

    ## Reward
    1.0 if the extracted final answer equals the gold answer, 0.0 if it does not, and
    ``format_reward`` (default 0.0; RISE, Qu et al. 2024, used -1.0) when no final answer can be
    extracted. The answer is the last ``\\boxed{}``, else ``#### N``, else "the answer is ...", else
    ``finish[...]``, else the last number.

    ## Episode End
    Single turn: the episode terminates after one action, also when it is refused for being
    longer than the action space's ``max_length`` (2**21 characters; reward ``format_reward``). With
    ``gymnasium.make("Mulligan/Math-v0", max_attempts=5)`` it becomes RISE's multi-turn retry MDP.

    ## Information
    ``task_id``, ``success``, ``score`` (1.0 or 0.0), ``feedback`` (why the answer was not accepted,
    without revealing the gold answer), ``parsed_answer`` (the extracted answer, or ``None``),
    ``gold_answer``.

    ## Arguments
    * ``dataset`` (str | None): ``None`` for the procedural generator, a GSM8K/MATH ``.jsonl`` or
      ``.json`` path (a file is its own split), or ``"hf:NAME[:CONFIG][:SPLIT]"`` (split default
      ``train``, e.g. ``"hf:openai/gsm8k:main:test"``; needs ``datasets`` and a network). See
      :mod:`mulligan.envs.data`. Records are checked at load: a bad one, or a gold answer that no
      response can match, is reported with its file and line.
    * ``split`` (str | None): the generator's split, ``"train"`` (default, endless) or ``"test"``
      (finite: at most ``PROCEDURAL_TEST_SIZE`` = 1000 distinct problems, so an evaluation can
      score each once). The splits are disjoint by content, not only by index: a problem's
      signature (template, numbers, answer) decides its split, so no test problem appears in
      training under other names. ``None`` for files and hub specs.
    * ``data_seed`` (int, 0): seed of the generator.
    * ``num_tasks`` (int | None): cap on the dataset size.
    * ``generator_config`` (:class:`~mulligan.envs.generators.math.MathGeneratorConfig`, a dict of
      its fields, or None).
    * ``format_reward`` (float, 0.0): reward when no answer can be extracted.
    * ``instruction`` (str | None): text appended to each question (``None``: the default).
    * ``verify_timeout`` (float, 5.0): hard deadline of one symbolic check, in seconds.
    * ``answer_check`` (str, ``"verify"``): ``"verify"`` (equivalent forms count) or ``"exact"``:
      NAT's check (its ``api/tools/math/utils.py``), the stripped answer must equal the gold answer
      with its thousands commas removed, character for character (``4.50`` is not ``4.5``);
      ``"boxed_int"``: RISE's GSM8K reward, only the last ``\\boxed{...}`` counts and it must hold
      an integer (commas removed) equal to the gold one; anything else is no answer and pays
      ``format_reward`` (RISE uses -1: ``format_reward=-1.0``). For integer answers (GSM8K).

    ## Version History
    * v0: the procedural splits are disjoint by content (before: by index only, and about 1% of
      train problems repeated a test problem with other names); actions longer than the action
      space's ``max_length`` are refused like an answerless response; a hub spec follows
      :mod:`mulligan.envs.data` (``hf:NAME:X`` names a config, ``hf:NAME::SPLIT`` a split).
    """

    #: The instruction appended to each question when ``instruction`` is not given.
    default_instruction: ClassVar[str] = DEFAULT_INSTRUCTION

    def __init__(
        self,
        dataset: str | os.PathLike | None = None,
        *,
        split: str | None = None,
        data_seed: int = 0,
        num_tasks: int | None = None,
        generator_config: MathGeneratorConfig | Mapping[str, Any] | None = None,
        format_reward: float = 0.0,
        instruction: str | None = None,
        verify_timeout: float = DEFAULT_TIMEOUT,
        answer_check: str = "verify",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if answer_check not in ANSWER_CHECKS:
            raise ValueError(f"answer_check must be one of {ANSWER_CHECKS}, got {answer_check!r}")
        self.answer_check = answer_check
        instruction = self.default_instruction if instruction is None else instruction
        if not verify_timeout > 0:
            raise ValueError(f"verify_timeout must be positive, got {verify_timeout!r}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
        self.source = MathTaskSource(
            dataset, split=split, data_seed=data_seed, num_tasks=num_tasks, generator_config=generator_config
        )
        self.num_tasks = self.source.num_tasks
        self.format_reward = float(format_reward)
        self.instruction = instruction
        self.verify_timeout = float(verify_timeout)
        self._units_question: str | None = None
        self._units: frozenset[str] = frozenset()

    def get_task(self, index: int) -> dict[str, Any]:
        """The normalised task record at ``index``."""
        return self.source.get(index)

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An explicit task in GSM8K, MATH or normalised format."""
        return normalize_math_record(record)

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """Stable: the source and index, or a content hash for explicit records."""
        return self.source.task_id(task, index)

    def default_info(self) -> dict[str, Any]:
        """Math adds ``parsed_answer`` and ``gold_answer``."""
        return {"parsed_answer": None, "gold_answer": self.task["final_answer"] if self.task else ""}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        question = task["question"].strip()
        return (f"{question}\n\n{self.instruction}" if self.instruction else question), {}

    @property
    def answer_units(self) -> frozenset[str]:
        """Words an answer may carry after its number: the noun the question counts ("3750 rolls")."""
        question = self.task["question"] if self.task else ""
        if self._units_question is not question:
            self._units_question, self._units = question, question_units(question)
        return self._units

    def _step(self, action: str) -> StepOutcome:
        if self.answer_check == "boxed_int":
            outcome = score_boxed_integer(action, self.task["final_answer"], self.format_reward)
            outcome.observation = "Episode over."
            return outcome
        outcome = score_final_answer(
            extract_answer(action),
            self.task["final_answer"],
            self.format_reward,
            self.verify_timeout,
            units=self.answer_units,
            exact=self.answer_check == "exact",
        )
        outcome.observation = "Episode over."
        return outcome


def score_boxed_integer(action: str, gold: str, format_reward: float) -> StepOutcome:
    """RISE's GSM8K outcome: 1 for the gold integer in the last box, 0 for another integer, else ``format_reward``."""
    answer = last_boxed_integer(action)
    info = {"parsed_answer": None if answer is None else str(answer), "gold_answer": gold}
    if answer is None:
        feedback = "No final answer found: put the final answer, an integer, in the last \\boxed{}."
        return StepOutcome(observation="", reward=float(format_reward), terminated=True, feedback=feedback, info=info)
    try:
        correct = answer == int(gold.replace(",", "").strip())
    except ValueError:  # a non-integer gold answer: no integer matches it
        correct = False
    if correct:
        return StepOutcome(observation="", reward=1.0, terminated=True, success=True, score=1.0, info=info)
    return StepOutcome(
        observation="", reward=0.0, terminated=True, feedback=f"The final answer {answer} is incorrect.", info=info
    )


def score_final_answer(
    answer: str | None,
    gold: str,
    format_reward: float,
    timeout: float,
    expected_format: str = "\\boxed{}",
    *,
    units: frozenset[str] = frozenset(),
    exact: bool = False,
) -> StepOutcome:
    """The terminal outcome of a math answer, shared by Math-v0 and MathReAct-v0's ``finish``.

    ``units`` are the task's extra unit words (:func:`~mulligan.envs.verifiers.math.question_units`).
    ``exact`` replaces the verifier by NAT's string match (NAT, arXiv 2402.11651, official
    ``api/tools/math/utils.py``): the answer must equal the gold answer without its commas.
    """
    info = {"parsed_answer": answer, "gold_answer": gold}
    if answer is None:
        feedback = f"No final answer found: put the final answer in {expected_format}."
        return StepOutcome(observation="", reward=float(format_reward), terminated=True, feedback=feedback, info=info)
    correct = answer.strip() == gold.replace(",", "").strip() if exact else verify(gold, answer, timeout, units=units)
    if correct:
        return StepOutcome(observation="", reward=1.0, terminated=True, success=True, score=1.0, info=info)
    feedback = f"The final answer {truncate_for_feedback(answer)!r} is incorrect."
    return StepOutcome(observation="", reward=0.0, terminated=True, feedback=feedback, info=info)
