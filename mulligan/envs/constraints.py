"""Constraint following with a checker's critique: CORGI's rule-checked tasks and IFEval's instructions."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import (
    FAMILIES,
    check_constraints,
    combine_critiques,
    normalize_constraint,
)


def normalize_task(record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an IFEval-format record and return it cleaned.

    A record has ``prompt`` (str), ``instruction_id_list`` (constraint ids, CORGI's or IFEval's) and
    ``kwargs`` (one dict per id; ``None`` values are dropped, as Hugging Face copies of IFEval fill
    every argument name). ``key`` is kept when present. Raises ``ValueError`` saying what is wrong.
    """
    prompt = record.get("prompt")
    ids = record.get("instruction_id_list")
    kwargs = record.get("kwargs")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a constraint task needs a non-empty string 'prompt'")
    if isinstance(ids, str) or not isinstance(ids, Sequence) or not ids:
        raise ValueError("a constraint task needs 'instruction_id_list', a non-empty list of constraint ids")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if isinstance(kwargs, str | Mapping) or not isinstance(kwargs, Sequence) or len(kwargs) != len(ids):
        raise ValueError(f"'kwargs' must be a list with one dict per instruction id ({len(ids)}), got {kwargs!r}")
    clean_kwargs = []
    for constraint_id, kw in zip(ids, kwargs, strict=True):
        if kw is not None and not isinstance(kw, Mapping):
            raise ValueError(f"kwargs of {constraint_id!r} must be a dict, got {kw!r}")
        clean_kwargs.append(normalize_constraint(str(constraint_id), kw))
    task: dict[str, Any] = {"prompt": prompt, "instruction_id_list": [str(i) for i in ids], "kwargs": clean_kwargs}
    if "key" in record:
        task["key"] = record["key"]
    return task


def load_constraint_dataset(dataset: str) -> list[dict[str, Any]]:
    """Load tasks from a local IFEval-format JSONL file, or from the Hugging Face hub as ``hf:name[:split]``.

    The hub is only contacted for ``hf:`` names (with a lazy ``datasets`` import); local files are
    read as they are. Every record is validated (:func:`normalize_task`); a bad line raises
    ``ValueError`` naming the file and line.
    """
    if dataset.startswith("hf:"):
        name, _, split = dataset[3:].partition(":")
        if not name:
            raise ValueError("hf: datasets are given as 'hf:<name>' or 'hf:<name>:<split>', e.g. 'hf:google/IFEval'")
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - datasets is in the train extra
            raise ImportError("hf: datasets need the `datasets` package (pip install mulligan[train])") from err
        rows = datasets.load_dataset(name, split=split or "train")
        return [normalize_task(dict(row)) for row in rows]
    if not os.path.isfile(dataset):
        raise ValueError(f"dataset {dataset!r} is not a file; pass a local IFEval-format JSONL path or 'hf:<name>'")
    tasks = []
    with open(dataset, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                tasks.append(normalize_task(json.loads(line)))
            except (ValueError, AttributeError) as err:
                raise ValueError(f"{dataset}, line {line_number}: {err}") from err
    if not tasks:
        raise ValueError(f"dataset {dataset!r} has no records")
    return tasks


class ConstraintsEnv(MulliganEnv):
    """Write text that satisfies verifiable constraints; a checker scores it and critiques what broke.

    ## Description
    The environment of CORGI (Bezalel et al. 2024, arXiv 2411.01483): an instruction with
    constraints that a rule-based checker verifies. Constraints come from CORGI's rule-checked tasks
    (complete a prefix with exactly N words ending with a given word; use every given concept; a
    pangram; a lipogram; a maximum word length) and from IFEval's 25 instructions (Zhou et al.
    2023), checked in IFEval's strict or loose mode. The checker's critique of every broken
    constraint is ``info["feedback"]``; ``gymnasium.make("Mulligan/Constraints-v0", max_attempts=3)``
    turns that into CORGI's session, where each retry is prompted with
    "- Feedback: {critique} Please try again." and the episode's reward is the best attempt's score.

    ## Observation and Action Space
    Both are :class:`~mulligan.envs.core.TextSpace`. The observation is the instruction (the task's
    ``prompt``); the action is the response text, any string.

    ## Reward
    The constraint score: the mean over the task's constraints of each one's score in [0, 1]. IFEval
    instructions and most CORGI rules score 0 or 1; the completion task scores 0.8 for the word count
    plus 0.2 for the last word (CORGI Sec. 4), concepts and pangrams score the fraction covered.
    An empty or malformed response simply breaks constraints (score 0 for each, with a critique).

    ## Episode End
    Single turn: the episode terminates after one action. Multi-turn sessions come from the
    ``max_attempts`` argument of ``gymnasium.make``.

    ## Information
    ``task_id``, ``success`` (every constraint holds), ``score``, ``feedback`` (the critiques of the
    broken constraints, joined; empty on success), ``instruction_id_list`` (the task's constraint
    ids), ``constraint_results`` (one bool per constraint, in the task's order; empty before the first
    step) and ``constraint_scores`` (one float per constraint).

    ## Arguments
    * ``dataset`` (str or None): ``None`` for the procedural generator; a local JSONL file in
      IFEval's format (``prompt``, ``instruction_id_list``, ``kwargs``); or ``"hf:<name>[:<split>]"``.
    * ``mode`` (``"strict"`` or ``"loose"``): IFEval's checking mode.
    * ``families`` (tuple of str or None): constraint families the generator draws from (default:
      all of :data:`~mulligan.envs.verifiers.constraints.FAMILIES`). Generator only.
    * ``min_constraints``, ``max_constraints`` (int, 1 and 3): constraints per generated task.
    * ``data_seed`` (int, 0): seed of the procedural task source.
    """

    def __init__(
        self,
        dataset: str | None = None,
        *,
        mode: str = "strict",
        families: Sequence[str] | None = None,
        min_constraints: int = 1,
        max_constraints: int = 3,
        data_seed: int = 0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if mode not in ("strict", "loose"):
            raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
        self.mode = mode
        self.data_seed = data_seed
        self.config = ConstraintTaskConfig(
            families=FAMILIES if families is None else families if isinstance(families, str) else tuple(families),
            min_constraints=min_constraints,
            max_constraints=max_constraints,
        )
        if dataset is not None and families is not None:
            raise ValueError("families selects what the generator draws; it cannot filter a dataset")
        self.dataset_name = dataset
        self.tasks: list[dict[str, Any]] | None = None
        if dataset is not None:
            if not isinstance(dataset, str):
                raise ValueError(f"dataset must be a path, an 'hf:' name or None, got {dataset!r}")
            self.tasks = load_constraint_dataset(dataset)
            self.num_tasks = len(self.tasks)

    def get_task(self, index: int) -> dict[str, Any]:
        """The task at ``index``: a dataset record, or the generator's task."""
        if self.tasks is not None:
            return self.tasks[index]
        return generate_constraint_task(self.config, self.data_seed, index)

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An explicit IFEval-format record (see :func:`normalize_task`)."""
        return normalize_task(record)

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``constraints-<seed>-<index>`` for generated tasks, ``<file>-<index>`` for datasets, else a hash."""
        if index is None:
            return stable_task_id("constraints", task)
        if self.tasks is None:
            return f"constraints-{self.data_seed}-{index}"
        return f"{os.path.basename(self.dataset_name or 'dataset')}-{index}"

    def default_info(self) -> dict[str, Any]:
        """Constraint ids, and per-constraint results and scores (empty before a step)."""
        ids = list(self.task["instruction_id_list"]) if self.task else []
        return {"instruction_id_list": ids, "constraint_results": [], "constraint_scores": []}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return task["prompt"], {}

    def _step(self, action: str) -> StepOutcome:
        task = self.task
        results = check_constraints(task["instruction_id_list"], task["kwargs"], action, self.mode)
        scores = [r.score for r in results]
        score = sum(scores) / len(scores)
        success = all(r.holds for r in results)
        feedback = "" if success else combine_critiques(results)
        return StepOutcome(
            observation="Episode over.",
            reward=score,
            terminated=True,
            success=success,
            score=score,
            feedback=feedback,
            info={"constraint_results": [r.holds for r in results], "constraint_scores": scores},
        )
