"""Collect episodes from many envs in lockstep with one agent.

:func:`collect_episodes` keeps ``num_envs`` copies of an env running side by side. At every turn it
gathers the conversation of each live env into one batch and calls ``agent.act`` once, so a model
agent generates for all envs in a single forward pass. A finished env is reset onto the next
pending task at once, so the batch stays full until the work runs out.

Reproducibility: the ``k``-th task of a run is chosen by a generator seeded with ``(seed, k)``
(or taken from ``task_indices``), and its ``s``-th sample is reset with a seed derived from
``(seed, k, s)``; the agent is reseeded with ``seed`` at the start. Which env slot runs an episode
does not matter. Resume: with a ``store``, episodes whose ``(env_id, task_id, sample_index)`` is
already stored are not run again; their stored trajectories are returned in their place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from mulligan.agents.base import Agent, AgentInput
from mulligan.envs.core import seeded_rng
from mulligan.training.trajectory import Trajectory, TrajectoryStore, Turn

#: Salt that separates the task-choice stream from the reset-seed stream of a run.
_TASK_SALT = 1
_RESET_SALT = 2


def task_index_for(env: gymnasium.Env, seed: int, k: int) -> int:
    """The task index of the ``k``-th task of a run seeded ``seed`` (uniform over the dataset)."""
    num_tasks = env.unwrapped.num_tasks
    rng = seeded_rng(seed, k, _TASK_SALT)
    return int(rng.integers(num_tasks if num_tasks is not None else 2**31 - 1))


def reset_seed_for(seed: int, k: int, sample: int) -> int:
    """The reset seed of sample ``sample`` of the ``k``-th task of a run seeded ``seed``."""
    return int(seeded_rng(seed, k, _RESET_SALT, sample).integers(2**31 - 1))


def agent_name(agent: Agent) -> str:
    """A readable name for ``agent`` (its ``name`` attribute, else its class name)."""
    return str(getattr(agent, "name", None) or type(agent).__name__)


@dataclass
class _Job:
    k: int
    sample: int
    task_index: int


@dataclass
class _Slot:
    """The state of one env of the lockstep batch."""

    env: gymnasium.Env
    job: _Job | None = None
    seed: int | None = None
    task_id: str = ""
    task: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    observation: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def collect_episodes(
    env_id: str,
    agent: Agent,
    num_episodes: int,
    *,
    env_kwargs: dict | None = None,
    num_envs: int = 8,
    seed: int = 0,
    task_indices: Sequence[int] | None = None,
    samples_per_task: int = 1,
    system_prompt: str | None = None,
    stop: Sequence[str] = (),
    store: TrajectoryStore | None = None,
    progress: bool = True,
    max_turns: int | None = None,
) -> list[Trajectory]:
    """Run ``num_episodes`` episodes of ``agent`` on ``env_id``, batching each turn across envs.

    Args:
        env_id: A registered id; each of the ``num_envs`` envs is ``gymnasium.make(env_id, **env_kwargs)``
            (pass ``env_kwargs={"max_attempts": k}`` for RISE's multi-turn retries).
        agent: The policy; ``agent.act`` is called once per turn with every live env's input.
        num_episodes: Total episodes: ``num_episodes / samples_per_task`` tasks, each played
            ``samples_per_task`` times. Must be a multiple of ``samples_per_task``.
        env_kwargs: Keyword arguments for ``gymnasium.make``.
        num_envs: Envs run side by side (the agent's batch size).
        seed: Seed of the run: picks the tasks (unless ``task_indices`` is given), the reset
            seeds and the agent's seed.
        task_indices: Explicit task indices (e.g. ``range(100)`` to evaluate on a dataset's first
            100 tasks); then ``num_episodes`` must be ``len(task_indices) * samples_per_task``.
        samples_per_task: Episodes per task (GRPO groups, best-of-N, majority voting).
        system_prompt: A system message placed first in every conversation.
        stop: Stop strings passed to the agent with every input (ReAct's ``"\\nObservation:"``).
        store: Where to append each finished trajectory; episodes already in it are skipped.
        progress: Show a tqdm progress bar.
        max_turns: A safety cap on agent turns per episode (the episode is marked truncated);
            ``None`` relies on the env's own ``max_episode_steps``.

    Returns:
        The trajectories in task order (task ``k``'s samples are consecutive), including those
        found in ``store`` instead of being run again.

    Raises:
        ValueError: On inconsistent counts, with the fix in the message.
    """
    if samples_per_task < 1:
        raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
    if num_episodes < 0 or num_episodes % samples_per_task:
        raise ValueError(
            f"num_episodes ({num_episodes}) must be a non-negative multiple of samples_per_task "
            f"({samples_per_task}): it counts tasks x samples"
        )
    if task_indices is not None and len(task_indices) * samples_per_task != num_episodes:
        raise ValueError(
            f"with task_indices, num_episodes must be len(task_indices) * samples_per_task = "
            f"{len(task_indices) * samples_per_task}, got {num_episodes}"
        )
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
    import mulligan  # noqa: F401 - registers the ids

    env_kwargs = dict(env_kwargs or {})
    num_tasks = num_episodes // samples_per_task
    slots = [_Slot(gymnasium.make(env_id, **env_kwargs)) for _ in range(min(num_envs, max(num_episodes, 1)))]
    if task_indices is None:
        indices = [task_index_for(slots[0].env, seed, k) for k in range(num_tasks)]
    else:
        indices = [int(i) for i in task_indices]
    jobs = [_Job(k, s, indices[k]) for k in range(num_tasks) for s in range(samples_per_task)]
    results: dict[tuple[int, int], Trajectory] = {}
    stored: dict[tuple[str, str, int], Trajectory] = {}
    if store is not None and store.path.exists():
        stored = {t.key: t for t in store}
    agent.reset(seed)
    name = agent_name(agent)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"collect {env_id}", unit="ep", dynamic_ncols=True)
    pending = iter(jobs)

    def start_next(slot: _Slot) -> None:
        """Reset ``slot`` onto the next job not already stored; leave it idle when none is left."""
        slot.job = None
        for job in pending:
            reset_seed = reset_seed_for(seed, job.k, job.sample)
            observation, info = slot.env.reset(seed=reset_seed, options={"task_index": job.task_index})
            key = (env_id, str(info["task_id"]), job.sample)
            if key in stored:
                results[(job.k, job.sample)] = stored[key]
                if bar is not None:
                    bar.update(1)
                continue
            slot.job, slot.seed, slot.task_id = job, reset_seed, str(info["task_id"])
            slot.task = json.loads(json.dumps(slot.env.unwrapped.task, default=str))
            slot.messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
            slot.messages.append({"role": "user", "content": observation})
            slot.turns, slot.observation, slot.info = [], observation, info
            return

    def finish(slot: _Slot, observation: str, terminated: bool, truncated: bool) -> None:
        info = slot.info
        trajectory = Trajectory(
            env_id=env_id,
            task_id=slot.task_id,
            task=slot.task,
            messages=slot.messages,
            turns=slot.turns,
            success=bool(info.get("success", False)),
            score=float(info.get("score", 0.0)),
            episode_return=float(sum(t.reward for t in slot.turns)),
            terminated=terminated,
            truncated=truncated,
            agent=name,
            seed=slot.seed,
            metadata={"task_index": slot.job.task_index, "sample_index": slot.job.sample, "run_seed": seed},
            final_observation=observation,
        )
        results[(slot.job.k, slot.job.sample)] = trajectory
        if store is not None:
            store.append(trajectory)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(success=f"{sum(t.success for t in results.values()) / len(results):.2f}")

    try:
        for slot in slots:
            start_next(slot)
        while True:
            live = [slot for slot in slots if slot.job is not None]
            if not live:
                break
            inputs = [
                AgentInput(
                    messages=[dict(m) for m in slot.messages],
                    task=slot.env.unwrapped.task,
                    info=slot.info,
                    env_id=env_id,
                    stop=tuple(stop),
                )
                for slot in live
            ]
            actions = agent.act(inputs)
            if len(actions) != len(live):
                raise RuntimeError(f"{name}.act returned {len(actions)} actions for {len(live)} inputs")
            for slot, action in zip(live, actions, strict=True):
                text = action.text if isinstance(action.text, str) else str(action.text)
                observation, reward, terminated, truncated, info = slot.env.step(text)
                slot.turns.append(
                    Turn(
                        observation=slot.observation,
                        action=text,
                        reward=float(reward),
                        info=dict(info),
                        prompt_ids=action.prompt_ids,
                        completion_ids=action.completion_ids,
                        logprobs=action.logprobs,
                    )
                )
                slot.messages.append({"role": "assistant", "content": text})
                slot.info = info
                if not truncated and max_turns is not None and len(slot.turns) >= max_turns and not terminated:
                    truncated = True
                if terminated or truncated:
                    finish(slot, observation, bool(terminated), bool(truncated))
                    start_next(slot)
                else:
                    slot.messages.append({"role": "user", "content": observation})
                    slot.observation = observation
    finally:
        if bar is not None:
            bar.close()
        for slot in slots:
            slot.env.close()
    return [results[(job.k, job.sample)] for job in jobs]
