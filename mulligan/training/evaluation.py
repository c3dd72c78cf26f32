"""The one evaluation: every listed task scored exactly once per sample, summarised with intervals.

:func:`evaluate` runs an agent on an explicit list of task indices (or the whole split) through the
shared rollout (:func:`~mulligan.training.rollout.collect_episodes`), so ``mulligan eval``, the
demo, every trainer's periodic evaluation and the benchmarks measure the same thing the same way.
Tasks are never drawn with replacement: a split of N records evaluated with N tasks scores each
record once. Success rates come with Wilson intervals (:mod:`mulligan.training.stats`).

Metrics beyond the summary are small functions of the trajectories, passed through ``metrics=``;
this module provides the generic ones that the papers' metrics are built from:

* :func:`pass_at_k`: a task is solved if any of its ``samples_per_task`` samples succeeded.
* :func:`majority_at_k`: a task is solved if the most common answer among its samples is correct
  (the answer key is the verifier's own extraction, e.g.
  :func:`mulligan.envs.verifiers.math.extract_answer`).
* :func:`success_within_turns`: success within the first ``t`` turns of a multi-turn episode.
* :func:`majority_over_turns`: the most common answer over an episode's turns is correct.

RISE's metrics (arXiv 2407.18219, Sec. 5) come from ordinary rollouts: with
``RetryWithFeedback(stop_on_success=False)`` the episode keeps retrying after a success, so the
model never learns it was right (no oracle); then ``m1@t1`` is the first turn's success,
``m1@t5`` is :func:`majority_over_turns` and ``p1@t5`` is :func:`success_within_turns` (an oracle
would stop at the first success, whose turns up to then are those of the oracle-free run).
``m5@t1`` is :func:`majority_at_k` of a single-turn evaluation with ``samples_per_task=5``.
:func:`rise_turn_metrics` bundles the three multi-turn ones.

Majority votes break ties one way everywhere (:func:`majority_vote`): one of the tied answers is
drawn with a generator seeded by the run seed and the task id (:func:`task_rng`), and every
majority metric reports the share of tied votes as ``<name>_ties``.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mulligan.agents.base import Agent
from mulligan.training.rollout import EnvPool, collect_episodes, pool_for
from mulligan.training.stats import Summary, summarize
from mulligan.training.trajectory import Trajectory, TrajectoryStore

#: A metric: a function of the evaluated trajectories returning named numbers.
Metric = Callable[[list[Trajectory]], dict[str, float]]
#: An answer key: the answer stated in an action (``None`` when there is none).
AnswerKey = Callable[[str], Any]


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        trajectories: Every episode, task by task (a task's samples are consecutive).
        summary: Success rate with its Wilson interval, mean score, return and turns.
        metrics: The values of the ``metrics`` functions, merged.
        groups: One summary per group when ``group_by`` was given (e.g. per ScienceWorld task).
        macro: ``{"success": ..., "score": ...}``, the mean over groups of the per-group means
            (the sub-goal paper macro-averages per task); empty without ``group_by``.
    """

    trajectories: list[Trajectory]
    summary: Summary
    metrics: dict[str, float] = field(default_factory=dict)
    groups: dict[str, Summary] = field(default_factory=dict)
    macro: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything but the trajectories."""
        return {
            "summary": self.summary.to_dict(),
            "metrics": dict(self.metrics),
            "groups": {name: summary.to_dict() for name, summary in self.groups.items()},
            "macro": dict(self.macro),
        }


def resolve_task_indices(num_tasks: int | None, task_indices: Iterable[int] | None) -> list[int]:
    """The task indices to evaluate: ``task_indices`` checked, or every index of the split.

    Args:
        num_tasks: The split's size, or ``None`` for an endless procedural source.
        task_indices: Explicit indices, or ``None`` for the whole split.

    Raises:
        ValueError: For an endless source without explicit indices, an empty list, a repeated
            index (tasks are never drawn with replacement), or an index outside the split.
    """
    if task_indices is None:
        if num_tasks is None:
            raise ValueError(
                "this env is an endless procedural source, so 'the whole split' is undefined; pass explicit "
                "task indices (e.g. range(200)), or --num_episodes N on the command line"
            )
        return list(range(num_tasks))
    indices = [int(i) for i in task_indices]
    if not indices:
        raise ValueError("task_indices is empty; pass at least one task index, or None for the whole split")
    repeated = sorted(i for i, n in Counter(indices).items() if n > 1)
    if repeated:
        raise ValueError(
            f"task indices {repeated[:5]} are listed more than once; each task is scored once per sample "
            "(use samples_per_task for repeats)"
        )
    bad = [i for i in indices if i < 0 or (num_tasks is not None and i >= num_tasks)]
    if bad:
        bound = f"[0, {num_tasks})" if num_tasks is not None else ">= 0"
        raise ValueError(f"task indices {bad[:5]} are outside the split {bound}; pass indices inside it")
    return indices


def evaluate(
    agent: Agent,
    env: str | EnvPool,
    task_indices: Sequence[int] | None = None,
    *,
    env_kwargs: dict | None = None,
    samples_per_task: int = 1,
    seed: int = 0,
    num_envs: int = 8,
    system_prompt: str | None = None,
    stop: Sequence[str] = (),
    max_turns: int | None = None,
    store: TrajectoryStore | None = None,
    progress: bool = True,
    metrics: Sequence[Metric] = (),
    group_by: Callable[[Trajectory], str] | None = None,
    env_workers: int = 0,
    env_workers_backend: str = "process",
) -> EvalResult:
    """Evaluate ``agent`` on every listed task, ``samples_per_task`` times each.

    Args:
        agent: The policy (its own decoding settings apply: evaluate greedy agents for point
            estimates, sampling ones for pass@k and majority votes).
        env: An env id, or an :class:`~mulligan.training.rollout.EnvPool` (reused, not closed).
        task_indices: The tasks; ``None`` is the whole split (each index of ``num_tasks`` once).
        env_kwargs: ``gymnasium.make`` keyword arguments (only with an env id).
        samples_per_task: Episodes per task (pass@k and majority@k need more than one).
        seed: Seed of the reset seeds and the agent's per-input seeds.
        num_envs: Envs run side by side (with an env id; a pool uses its own size at most).
        system_prompt: A system message placed first in every conversation.
        stop: Stop strings passed to the agent.
        max_turns: A safety cap on turns per episode.
        store: Where to append the trajectories (resumable).
        progress: Show progress (a tqdm bar in a terminal, rare whole lines in a log).
        metrics: Functions ``f(trajectories) -> dict[str, float]`` merged into ``metrics``.
        group_by: A function ``trajectory -> str``; then per-group summaries and macro averages.
        env_workers: With an env id, step the envs in this many worker processes (0: in this
            process; :mod:`mulligan.training.env_workers`); a pool brings its own.
        env_workers_backend: ``"process"`` or ``"ray"`` (with ``env_workers``).

    Returns:
        The :class:`EvalResult`.

    Raises:
        ValueError: See :func:`resolve_task_indices`; also for ``samples_per_task < 1``.
    """
    if samples_per_task < 1:
        raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
    with pool_for(env, env_kwargs, 1, env_workers=env_workers, env_workers_backend=env_workers_backend) as pool:
        indices = resolve_task_indices(pool.num_tasks, task_indices)
        if pool is not env:
            # Grow the temporary pool to the batch this evaluation needs.
            pool.grow(min(num_envs, len(indices) * samples_per_task))
        trajectories = collect_episodes(
            pool,
            agent,
            len(indices) * samples_per_task,
            num_envs=num_envs,
            seed=seed,
            task_indices=indices,
            samples_per_task=samples_per_task,
            system_prompt=system_prompt,
            stop=stop,
            store=store,
            progress=progress,
            max_turns=max_turns,
        )
        env_id = pool.env_id
    result = EvalResult(trajectories=trajectories, summary=summarize(trajectories, env_id))
    for metric in metrics:
        result.metrics.update(metric(trajectories))
    if group_by is not None:
        grouped: dict[str, list[Trajectory]] = {}
        for trajectory in trajectories:
            grouped.setdefault(str(group_by(trajectory)), []).append(trajectory)
        result.groups = {name: summarize(group, name) for name, group in grouped.items()}
        result.macro = {
            "success": _mean([s.success_rate for s in result.groups.values()]),
            "score": _mean([s.mean_score for s in result.groups.values()]),
        }
    return result


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def by_task(trajectories: Iterable[Trajectory]) -> list[list[Trajectory]]:
    """The trajectories grouped by task (``env_id``, ``task_id``), in order of first appearance."""
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for trajectory in trajectories:
        groups.setdefault((trajectory.env_id, trajectory.task_id), []).append(trajectory)
    return list(groups.values())


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    """The generator that breaks one task's vote ties, seeded by ``(seed, crc32(task_id))``.

    A tie is then drawn the same way in every run with the same seed, whatever the other tasks.
    """
    return np.random.default_rng([int(seed), zlib.crc32(str(task_id).encode("utf-8"))])


def majority_vote(answers: Sequence[Any], correct: Sequence[bool], rng: np.random.Generator) -> tuple[bool, bool]:
    """``(correct, tied)``: whether the most common answer is a correct one, and whether it was a tie.

    ``None`` answers (nothing stated) do not vote; no answer at all counts as wrong (and no tie).
    Ties (documented in docs/fidelity.md, RISE row R14; neither paper states a rule): among the
    answers with the top count, one is drawn with ``rng`` (:func:`task_rng`), so with five
    distinct answers the vote is right as often as a random one of them, not as the first one.

    Raises:
        ValueError: If ``answers`` and ``correct`` differ in length.
    """
    votes = [(a, bool(c)) for a, c in zip(answers, correct, strict=True) if a is not None]
    if not votes:
        return False, False
    counts = Counter(a for a, _ in votes)
    top = max(counts.values())
    leaders = list(dict.fromkeys(a for a, _ in votes if counts[a] == top))  # in order of first appearance
    winner = leaders[int(rng.integers(len(leaders)))] if len(leaders) > 1 else leaders[0]
    return any(c for a, c in votes if a == winner), len(leaders) > 1


def _run_seed(trajectories: Sequence[Trajectory], seed: int | None) -> int:
    """``seed``, or by default the run seed the rollout stored on the trajectories (0 if none)."""
    if seed is not None:
        return int(seed)
    return int(next((t.metadata.get("run_seed") for t in trajectories if t.metadata.get("run_seed") is not None), 0))


def _share(values: Sequence[bool]) -> float:
    return _mean([float(v) for v in values])


def pass_at_k(trajectories: Iterable[Trajectory]) -> float:
    """Fraction of tasks with at least one successful sample (pass@k for k samples per task)."""
    tasks = by_task(trajectories)
    return _mean([float(any(t.success for t in samples)) for samples in tasks])


def _final_action(trajectory: Trajectory) -> str:
    return trajectory.turns[-1].action if trajectory.turns else ""


def majority_votes_over_samples(
    trajectories: Iterable[Trajectory], answer_key: AnswerKey, *, seed: int | None = None
) -> list[tuple[bool, bool]]:
    """One :func:`majority_vote` per task over its samples: ``(correct, tied)`` in task order.

    Each sample votes with ``answer_key`` of its final action; its correctness is its ``success``.
    Ties are drawn with :func:`task_rng` of ``seed`` (default: the run seed stored on the
    trajectories) and the task id.
    """
    episodes = list(trajectories)
    run_seed = _run_seed(episodes, seed)
    return [
        majority_vote(
            [answer_key(_final_action(t)) for t in samples],
            [t.success for t in samples],
            task_rng(run_seed, samples[0].task_id),
        )
        for samples in by_task(episodes)
    ]


def majority_at_k(trajectories: Iterable[Trajectory], answer_key: AnswerKey, *, seed: int | None = None) -> float:
    """Fraction of tasks whose majority answer over their samples is correct (maj@k).

    See :func:`majority_votes_over_samples` for the votes and the tie rule.
    """
    return _share([correct for correct, _ in majority_votes_over_samples(trajectories, answer_key, seed=seed)])


def _turn_success(trajectory: Trajectory, turn: int) -> bool:
    return bool(trajectory.turns[turn].info.get("success", False))


def success_within_turns(trajectories: Iterable[Trajectory], turns: int) -> float:
    """Fraction of episodes with a successful turn among their first ``turns`` turns."""
    episodes = list(trajectories)
    return _mean([float(any(_turn_success(t, i) for i in range(min(turns, len(t.turns))))) for t in episodes])


def majority_votes_over_turns(
    trajectories: Iterable[Trajectory], answer_key: AnswerKey, turns: int | None = None, *, seed: int | None = None
) -> list[tuple[bool, bool]]:
    """One :func:`majority_vote` per episode over its first ``turns`` turns: ``(correct, tied)``.

    Each turn votes with ``answer_key`` of its action; its correctness is ``info["success"]``.
    Ties are drawn with :func:`task_rng` of ``seed`` (default: the run seed stored on the
    trajectories) and the episode's task id.
    """
    episodes = list(trajectories)
    run_seed = _run_seed(episodes, seed)
    votes = []
    for trajectory in episodes:
        kept = trajectory.turns[: turns or len(trajectory.turns)]
        votes.append(
            majority_vote(
                [answer_key(turn.action) for turn in kept],
                [bool(turn.info.get("success")) for turn in kept],
                task_rng(run_seed, trajectory.task_id),
            )
        )
    return votes


def majority_over_turns(
    trajectories: Iterable[Trajectory], answer_key: AnswerKey, turns: int | None = None, *, seed: int | None = None
) -> float:
    """Fraction of episodes whose most common answer over their first ``turns`` turns is correct.

    See :func:`majority_votes_over_turns` for the votes and the tie rule.
    """
    return _share([correct for correct, _ in majority_votes_over_turns(trajectories, answer_key, turns, seed=seed)])


def rise_turn_metrics(answer_key: AnswerKey, turns: int, *, seed: int | None = None) -> Metric:
    """RISE's multi-turn metrics as one ``metrics=`` function.

    ``m1@t1``, ``m1@t<turns>`` (with ``m1@t<turns>_ties``, the share of tied votes) and
    ``p1@t<turns>``. Evaluate with ``max_attempts=turns`` and ``stop_on_success=False`` (no
    oracle); see the module docstring. ``seed`` seeds the tie draws (default: the run seed).
    """

    def metric(trajectories: list[Trajectory]) -> dict[str, float]:
        votes = majority_votes_over_turns(trajectories, answer_key, turns, seed=seed)
        return {
            "m1@t1": success_within_turns(trajectories, 1),
            f"m1@t{turns}": _share([correct for correct, _ in votes]),
            f"m1@t{turns}_ties": _share([tied for _, tied in votes]),
            f"p1@t{turns}": success_within_turns(trajectories, turns),
        }

    return metric


def majority_metric(answer_key: AnswerKey, name: str, *, seed: int | None = None) -> Metric:
    """A ``metrics=`` function: ``{name: majority_at_k(...), name + "_ties": share of tied votes}``.

    ``name`` is e.g. ``m5@t1``; ``seed`` seeds the tie draws (default: the run seed).
    """

    def metric(trajectories: list[Trajectory]) -> dict[str, float]:
        votes = majority_votes_over_samples(trajectories, answer_key, seed=seed)
        return {name: _share([correct for correct, _ in votes]), f"{name}_ties": _share([tied for _, tied in votes])}

    return metric


def pass_metric(name: str) -> Metric:
    """A ``metrics=`` function returning ``{name: pass_at_k(...)}``."""
    return lambda trajectories: {name: pass_at_k(trajectories)}
