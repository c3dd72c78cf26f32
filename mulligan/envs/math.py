"""``Mulligan/Math-v0``: single-turn math problems answered in ``\\boxed{}``, and the math data sources.

The data helpers here are shared by :class:`MathEnv` and ``Mulligan/MathReAct-v0``: one
implementation of where math tasks come from (the procedural generator, local GSM8K or MATH JSONL
files, or the Hugging Face hub) and of the normalised task record::

    {"question": str, "answer": str (worked solution), "final_answer": str, ...}

Extra fields of the source record (``template``, ``level``, ``type``...) are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id, truncate_for_feedback
from mulligan.envs.generators.math import MathGeneratorConfig, generate_math_task
from mulligan.envs.verifiers.math import (
    DEFAULT_TIMEOUT,
    boxed_final_answer,
    extract_answer,
    gsm8k_final_answer,
    verify,
)

#: The instruction appended to every question (the usual prompt for boxed answers).
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
#: Procedural tasks of the "test" split: indices [0, PROCEDURAL_TEST_SIZE) of the generator.
#: The "train" split starts after them, so the two never share a task.
PROCEDURAL_TEST_SIZE = 1000
_SPLITS = ("train", "test")


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

    Accepted: GSM8K (``question``, ``answer`` ending in ``#### N``), MATH (``problem``,
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


def load_math_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load a GSM8K or MATH JSONL file (the format is detected from the file) as normalised records.

    Raises:
        ValueError: if the file is empty, a line is not JSON, or the records are in neither format
            (or mix them); the message names the line.
        FileNotFoundError: if ``path`` does not exist.
    """
    records: list[dict[str, Any]] = []
    file_format: str | None = None
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number}: not a JSON object ({err.msg})") from None
            if not isinstance(raw, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(raw).__name__}")
            line_format = "gsm8k" if "question" in raw else "math" if "problem" in raw else None
            if file_format is None:
                file_format = line_format
            if line_format is None or line_format != file_format:
                raise ValueError(
                    f"{path}:{line_number}: expected a {file_format or 'GSM8K or MATH'} record "
                    "(GSM8K: 'question', 'answer' ending in '#### N'; MATH: 'problem', 'solution' with "
                    f"\\boxed{{}}), got fields {sorted(raw)}"
                )
            try:
                records.append(normalize_math_record(raw))
            except ValueError as err:
                raise ValueError(f"{path}:{line_number}: {err}") from None
    if not records:
        raise ValueError(f"{path}: no records (expected GSM8K or MATH JSONL)")
    return records


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """Split ``"hf:<dataset>[:config]:<split>"`` into ``(dataset, config, split)``.

    Raises:
        ValueError: if the spec does not have that shape.
    """
    if not spec.startswith("hf:"):
        raise ValueError(f"a hub dataset spec starts with 'hf:', got {spec!r}")
    parts = spec[3:].split(":")
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise ValueError(
        f"bad hub dataset spec {spec!r}: use 'hf:<dataset>:<split>' or 'hf:<dataset>:<config>:<split>', "
        "e.g. 'hf:openai/gsm8k:main:test'"
    )


def load_hf_math(spec: str) -> list[dict[str, Any]]:
    """Load GSM8K- or MATH-format records from the Hugging Face hub (needs ``datasets`` and a network)."""
    name, config, split = parse_hf_spec(spec)
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("hf: datasets need the 'datasets' package: pip install 'mulligan[train]'") from err
    rows = datasets.load_dataset(name, config, split=split)
    return [normalize_math_record(dict(row)) for row in rows]


class MathTaskSource:
    """Where an env's math tasks come from: the procedural generator, a JSONL file, or the hub.

    Args:
        dataset: ``None`` for the procedural generator, a path to a GSM8K/MATH JSONL file, or
            ``"hf:<dataset>[:config]:<split>"``.
        split: For the generator, ``"train"`` (default) or ``"test"`` (disjoint index ranges). A
            file is its own split, and a hub spec names its split, so it must be ``None`` there.
        data_seed: Seed of the procedural generator.
        num_tasks: Cap on the number of tasks (``None``: endless for the generator's train split,
            :data:`PROCEDURAL_TEST_SIZE` for its test split, the whole file otherwise).
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
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
        self.data_seed = data_seed
        self.generator_config = generator_config or MathGeneratorConfig()
        self.records: list[dict[str, Any]] | None = None
        if dataset is None:
            self.split = "train" if split is None else split
            if self.split not in _SPLITS:
                raise ValueError(f"the procedural source has splits {_SPLITS}, got split={split!r}")
            self.name = f"gen{data_seed}-{self.split}"
            self._offset = PROCEDURAL_TEST_SIZE if self.split == "train" else 0
            if self.split == "test":
                num_tasks = min(num_tasks or PROCEDURAL_TEST_SIZE, PROCEDURAL_TEST_SIZE)
            self.num_tasks = num_tasks
            return
        if split is not None:
            raise ValueError(
                f"split={split!r} is only for the procedural source: a file is its own split, and a "
                "hub spec names its split ('hf:<dataset>[:config]:<split>')"
            )
        dataset = os.fspath(dataset)
        if dataset.startswith("hf:"):
            self.records, self.name, self.split = load_hf_math(dataset), dataset[3:], parse_hf_spec(dataset)[2]
        else:
            if not os.path.exists(dataset):
                raise ValueError(f"dataset file {dataset!r} does not exist (or use 'hf:<name>:<split>' for the hub)")
            self.records = load_math_jsonl(dataset)
            self.name, self.split = os.path.splitext(os.path.basename(dataset))[0], "file"
        if num_tasks is not None:
            self.records = self.records[:num_tasks]
        self.num_tasks = len(self.records)

    def get(self, index: int) -> dict[str, Any]:
        """The normalised task record at ``index`` (a copy)."""
        if self.records is None:
            return generate_math_task(self.generator_config, self.data_seed, self._offset + index)
        return dict(self.records[index])

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
    Single turn: the episode terminates after one action. With
    ``gymnasium.make("Mulligan/Math-v0", max_attempts=5)`` it becomes RISE's multi-turn retry MDP.

    ## Information
    ``task_id``, ``success``, ``score`` (1.0 or 0.0), ``feedback`` (why the answer was not accepted,
    without revealing the gold answer), ``parsed_answer`` (the extracted answer, or ``None``),
    ``gold_answer``.

    ## Arguments
    * ``dataset`` (str | None): ``None`` for the procedural generator, a GSM8K/MATH JSONL path, or
      ``"hf:<dataset>[:config]:<split>"`` (needs ``datasets`` and a network).
    * ``split`` (str | None): ``"train"`` or ``"test"`` for the generator (disjoint); ``None`` otherwise.
    * ``data_seed`` (int, 0): seed of the generator.
    * ``num_tasks`` (int | None): cap on the dataset size.
    * ``generator_config`` (:class:`~mulligan.envs.generators.math.MathGeneratorConfig`, a dict of
      its fields, or None).
    * ``format_reward`` (float, 0.0): reward when no answer can be extracted.
    * ``instruction`` (str | None): text appended to each question (``None``: the default).
    * ``verify_timeout`` (float, 5.0): hard deadline of one symbolic check, in seconds.
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
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
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

    def _step(self, action: str) -> StepOutcome:
        outcome = score_final_answer(
            extract_answer(action), self.task["final_answer"], self.format_reward, self.verify_timeout
        )
        outcome.observation = "Episode over."
        return outcome


def score_final_answer(
    answer: str | None, gold: str, format_reward: float, timeout: float, expected_format: str = "\\boxed{}"
) -> StepOutcome:
    """The terminal outcome of a math answer, shared by Math-v0 and MathReAct-v0's ``finish``."""
    info = {"parsed_answer": answer, "gold_answer": gold}
    if answer is None:
        feedback = f"No final answer found: put the final answer in {expected_format}."
        return StepOutcome("", float(format_reward), True, False, 0.0, feedback, info)
    if verify(gold, answer, timeout):
        return StepOutcome("", 1.0, True, True, 1.0, "", info)
    feedback = f"The final answer {truncate_for_feedback(answer)!r} is incorrect."
    return StepOutcome("", 0.0, True, False, 0.0, feedback, info)
