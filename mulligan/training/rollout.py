"""Collect episodes from many envs in lockstep with one agent.

:func:`collect_episodes` keeps several copies of an env running side by side. At every turn it
gathers the conversation of each live env into one batch and calls ``agent.act`` once, so a model
agent generates for all envs in a single forward pass. A finished env is reset onto the next
pending task at once, so the batch stays full until the work runs out.

Envs are built once: a trainer or command makes an :class:`EnvPool` before its loop and passes it
to every :func:`collect_episodes` call (the pool is reused, never closed by the call); an env id
instead of a pool builds a temporary pool for one call (one-shot CLI use).

Reproducibility: the ``k``-th task of a run is chosen by a generator seeded with ``(seed, k)``
(or taken from ``task_indices``), its ``s``-th sample is reset with a seed derived from
``(seed, k, s)``, and every agent input of that episode carries a seed derived from
``(seed, k, s, turn)`` (:attr:`~mulligan.agents.base.AgentInput.seed`), so an agent that draws from
it acts the same whatever episodes share its batch. Which env slot runs an episode does not
matter. Resume: with a ``store``, episodes whose ``(env_id, task_id, sample_index)`` is already
stored are not run again; their stored trajectories are returned in their place, and the others
are exactly those an uninterrupted run would produce.

Prefilled answers (CORGI's primer, :attr:`~mulligan.agents.base.Action.prefill`): the env gets the
continuation, :attr:`~mulligan.training.trajectory.Turn.prefill` records the prefix, and the
history holds the whole answer (prefix + continuation), as later turns show it to the model.

What the model saw: each :class:`~mulligan.training.trajectory.Turn` records the agent's
:class:`~mulligan.agents.base.ContextRecord` (spans of kept message indices; ``None`` when the
whole history was shown, and the messages a wrapper agent rewrote) and the trajectory records the
agent's system prompt once, so trainers rebuild exactly that context
(:meth:`~mulligan.training.trajectory.Trajectory.training_messages`); a rewriting agent's
rewrites (NAT's prompt, the sub-goal agents' step prompts) go to ``Turn.context_rewritten``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from mulligan.agents.base import Agent, AgentInput
from mulligan.envs.core import seeded_rng
from mulligan.training.env_workers import BACKENDS, EnvWorkers, RemoteEnv, call_on_env
from mulligan.training.progress import progress_bar
from mulligan.training.trajectory import Trajectory, TrajectoryStore, Turn

#: Salt that separates the task-choice stream from the reset-seed stream of a run.
_TASK_SALT = 1
_RESET_SALT = 2
_AGENT_SALT = 3


def task_index_for(env: gymnasium.Env | int | None, seed: int, k: int) -> int:
    """The task index of the ``k``-th task of a run seeded ``seed`` (uniform over the dataset).

    ``env`` is an env or its ``num_tasks`` (``None`` for a procedural source).
    """
    num_tasks = env if env is None or isinstance(env, int) else env.unwrapped.num_tasks
    rng = seeded_rng(seed, k, _TASK_SALT)
    return int(rng.integers(num_tasks if num_tasks is not None else 2**31 - 1))


def reset_seed_for(seed: int, k: int, sample: int) -> int:
    """The reset seed of sample ``sample`` of the ``k``-th task of a run seeded ``seed``."""
    return int(seeded_rng(seed, k, _RESET_SALT, sample).integers(2**31 - 1))


def agent_seed_for(seed: int, k: int, sample: int, turn: int) -> int:
    """The agent seed of turn ``turn`` of sample ``sample`` of the ``k``-th task of a run seeded ``seed``."""
    return int(seeded_rng(seed, k, _AGENT_SALT, sample, turn).integers(2**31 - 1))


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gymnasium.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` after registering the ``Mulligan/*`` ids.

    Raises:
        ValueError: If ``env_kwargs`` is not a dict (with the fix in the message).
    """
    import mulligan  # noqa: F401 - registers the ids

    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of keyword arguments, got {type(env_kwargs).__name__}")
    return gymnasium.make(env_id, **dict(env_kwargs or {}))


def is_multi_turn(env: gymnasium.Env) -> bool:
    """Whether an episode of ``env`` can take more than one action (turn cap or retry wrapper)."""
    from mulligan.envs.wrappers import RetryWithFeedback

    if env.spec is not None and env.spec.max_episode_steps not in (None, 1):
        return True
    layer = env
    while isinstance(layer, gymnasium.Wrapper):
        if isinstance(layer, RetryWithFeedback) and layer.max_attempts > 1:
            return True
        layer = layer.env
    return False


class EnvPool:
    """``num_envs`` copies of one env, built once and reused by every collection of a run.

    Building an env can be expensive (a JVM for ScienceWorld, a BM25 index for HotpotQA
    fullwiki); a trainer builds its pool before its loop and passes it to
    :func:`collect_episodes` each iteration. Use it as a context manager or call :meth:`close`.

    With ``env_workers=N`` the envs live in ``N`` worker processes (or Ray actors with
    ``env_workers_backend="ray"``; :mod:`mulligan.training.env_workers`) and a collection steps
    them in all workers at once: for envs whose step is slow (ScienceWorld, HotpotQA fullwiki),
    not for cheap ones, where the messages cost more than the step. The trajectories are the same
    as with the envs in this process. :attr:`envs` then holds
    :class:`~mulligan.training.env_workers.RemoteEnv` handles (``reset``, ``step``, ``call``);
    :meth:`call` runs a function on every env wherever it lives.

    Args:
        env_id: A registered id.
        num_envs: Envs in the pool (the agent's batch size in a collection).
        env_kwargs: Keyword arguments for ``gymnasium.make``.
        env_workers: Worker processes for the envs; 0 (the default) keeps them in this process.
        env_workers_backend: ``"process"`` (``multiprocessing``) or ``"ray"``.

    Raises:
        ValueError: If ``num_envs < 1``, ``env_workers < 0``, the backend is unknown or
            ``env_kwargs`` is not a dict.
        gymnasium.error.Error: If ``env_id`` is not registered.
        mulligan.training.env_workers.EnvWorkerError: If an env fails to build in a worker.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 8,
        env_kwargs: dict[str, Any] | None = None,
        *,
        env_workers: int = 0,
        env_workers_backend: str = "process",
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if isinstance(env_workers, bool) or not isinstance(env_workers, int) or env_workers < 0:
            raise ValueError(f"env_workers must be an int >= 0 (0: envs in this process), got {env_workers!r}")
        if env_kwargs is not None and not isinstance(env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict of keyword arguments, got {type(env_kwargs).__name__}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.workers: EnvWorkers | None = None
        self._description: dict[str, Any] = {}
        if env_workers:
            self.envs: list[Any] = []
            self.workers = EnvWorkers(env_id, self.env_kwargs, env_workers, env_workers_backend)
            try:
                self.grow(num_envs)
            except BaseException:
                self.close()
                raise
            return
        if env_workers_backend not in BACKENDS:
            raise ValueError(f"env_workers_backend must be one of {BACKENDS}, got {env_workers_backend!r}")
        self.envs = [make_env(env_id, self.env_kwargs)]
        try:
            self.envs += [make_env(env_id, self.env_kwargs) for _ in range(num_envs - 1)]
        except BaseException:
            self.close()
            raise

    @property
    def num_tasks(self) -> int | None:
        """The dataset size, or ``None`` for an endless procedural source."""
        if self.workers is not None:
            return self._description["num_tasks"]
        return self.envs[0].unwrapped.num_tasks

    @property
    def is_multi_turn(self) -> bool:
        """Whether an episode can take more than one action."""
        if self.workers is not None:
            return self._description["is_multi_turn"]
        return is_multi_turn(self.envs[0])

    @property
    def env_workers(self) -> int:
        """The number of worker processes (0: the envs are in this process)."""
        return 0 if self.workers is None else len(self.workers)

    def make(self) -> gymnasium.Env:
        """One extra env with the pool's settings, in this process (the caller closes it)."""
        return make_env(self.env_id, self.env_kwargs)

    def grow(self, num_envs: int) -> None:
        """Add envs until the pool holds ``num_envs`` (a no-op when it already does)."""
        if self.workers is None:
            while len(self.envs) < num_envs:
                self.envs.append(self.make())
            return
        if len(self.envs) < num_envs:
            descriptions = self.workers.add_envs(num_envs - len(self.envs))
            self._description = self._description or descriptions[0]
            self.envs += [RemoteEnv(self.workers, index) for index in range(len(self.envs), num_envs)]

    def reset_many(self, requests: Sequence[tuple[int, int | None, dict | None]]) -> list[tuple[Any, dict, Any]]:
        """Reset envs: ``(index, seed, options)`` each; ``(observation, info, task record)`` each.

        With workers, all the resets run at once (each worker's in order).
        """
        if self.workers is not None:
            calls = [(index, "reset", (), {"seed": seed, "options": options}) for index, seed, options in requests]
            results = self.workers.run(calls)
            for (index, *_), (_, _, task) in zip(requests, results, strict=True):
                self.envs[index].task = task
            return results
        results = []
        for index, seed, options in requests:
            env = self.envs[index]
            observation, info = env.reset(seed=seed, options=options)
            results.append((observation, info, env.unwrapped.task))
        return results

    def step_many(self, requests: Sequence[tuple[int, Any]]) -> list[tuple[Any, float, bool, bool, dict]]:
        """Step envs: ``(index, action)`` each; ``env.step``'s 5-tuple each (with workers, all at once)."""
        if self.workers is not None:
            return self.workers.run([(index, "step", (action,), {}) for index, action in requests])
        return [self.envs[index].step(action) for index, action in requests]

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """``function(env, *args, **kwargs)`` on every env of the pool, in its worker if it has one.

        E.g. ``pool.call(set_stop_on_success, False)``. A result that is the env itself comes back
        as ``None``. With workers ``function`` must pickle (a module-level function) and the
        results come back pickled.
        """
        if self.workers is not None:
            return self.workers.run([(index, "call", (function, *args), kwargs) for index in range(len(self.envs))])
        return [call_on_env(env, function, *args, **kwargs) for env in self.envs]

    def close(self) -> None:
        """Close every env of the pool (and its workers)."""
        envs, self.envs = self.envs, []
        if self.workers is not None:
            self.workers.close()
            return
        for env in envs:
            env.close()

    def __len__(self) -> int:
        return len(self.envs)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        workers = "" if self.workers is None else f", env_workers={len(self.workers)} ({self.workers.backend})"
        return f"EnvPool({self.env_id!r}, num_envs={len(self.envs)}, env_kwargs={self.env_kwargs!r}{workers})"


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

    index: int
    job: _Job | None = None
    seed: int | None = None
    task_id: str = ""
    task: dict[str, Any] = field(default_factory=dict)
    task_record: Any = None
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    agent_system_prompt: str | None = None
    observation: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def collect_episodes(
    env: str | EnvPool,
    agent: Agent,
    num_episodes: int,
    *,
    env_kwargs: dict | None = None,
    num_envs: int | None = None,
    seed: int = 0,
    task_indices: Sequence[int] | None = None,
    samples_per_task: int = 1,
    system_prompt: str | None = None,
    stop: Sequence[str] = (),
    store: TrajectoryStore | None = None,
    progress: bool = True,
    max_turns: int | None = None,
    env_workers: int = 0,
    env_workers_backend: str = "process",
) -> list[Trajectory]:
    """Run ``num_episodes`` episodes of ``agent``, batching each turn across envs.

    Args:
        env: An :class:`EnvPool` (reused, not closed), or a registered id for which a temporary
            pool of ``num_envs`` envs ``gymnasium.make(env, **env_kwargs)`` is built and closed
            (pass ``env_kwargs={"max_attempts": k}`` for RISE's multi-turn retries).
        agent: The policy; ``agent.act`` is called once per turn with every live env's input.
        num_episodes: Total episodes: ``num_episodes / samples_per_task`` tasks, each played
            ``samples_per_task`` times. Must be a multiple of ``samples_per_task``.
        env_kwargs: Keyword arguments for ``gymnasium.make`` (only with an env id).
        num_envs: Envs run side by side (the agent's batch size): default 8 with an env id, the
            whole pool with a pool (a smaller number uses only the pool's first envs).
        seed: Seed of the run: picks the tasks (unless ``task_indices`` is given), the reset
            seeds, the per-input agent seeds, and ``agent.reset(seed)`` at the start.
        task_indices: Explicit task indices (e.g. ``range(100)`` to evaluate on a dataset's first
            100 tasks); then ``num_episodes`` must be ``len(task_indices) * samples_per_task``.
        samples_per_task: Episodes per task (GRPO groups, best-of-N, majority voting).
        system_prompt: A system message placed first in every conversation.
        stop: Stop strings passed to the agent with every input (ReAct's ``"\\nObservation:"``).
        store: Where to append each finished trajectory; episodes already in it are skipped.
        progress: Show progress (a tqdm bar in a terminal, a line every 10% or 30 s in a log).
        max_turns: A safety cap on agent turns per episode (the episode is marked truncated);
            ``None`` relies on the env's own ``max_episode_steps``.
        env_workers: With an env id, step the temporary pool's envs in this many worker processes
            (0: in this process); a pool brings its own (``EnvPool(..., env_workers=N)``).
        env_workers_backend: ``"process"`` or ``"ray"`` (with ``env_workers``).

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
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
    wanted = 8 if num_envs is None else num_envs
    with pool_for(
        env,
        env_kwargs,
        min(wanted, max(num_episodes, 1)),
        env_workers=env_workers,
        env_workers_backend=env_workers_backend,
    ) as pool:
        return _collect(
            pool,
            agent,
            num_episodes,
            num_envs=num_envs,
            seed=seed,
            task_indices=task_indices,
            samples_per_task=samples_per_task,
            system_prompt=system_prompt,
            stop=stop,
            store=store,
            progress=progress,
            max_turns=max_turns,
        )


@contextlib.contextmanager
def pool_for(
    env: str | EnvPool,
    env_kwargs: dict | None,
    num_envs: int,
    *,
    env_workers: int = 0,
    env_workers_backend: str = "process",
) -> Iterator[EnvPool]:
    """``env`` itself when it is an :class:`EnvPool` (reused, left open), else a temporary pool.

    The temporary pool has ``num_envs`` envs ``gymnasium.make(env, **env_kwargs)`` (in
    ``env_workers`` worker processes when that is not 0) and is closed on exit.

    Raises:
        ValueError: If ``env_kwargs`` or ``env_workers`` come with a pool (they apply when envs
            are built), or the pool is closed.
    """
    if isinstance(env, EnvPool):
        if env_kwargs:
            raise ValueError("env_kwargs apply when building envs: pass them to EnvPool(...), not with a pool")
        if env_workers:
            raise ValueError(
                "env_workers apply when building envs: pass them to EnvPool(..., env_workers=N), not with a pool"
            )
        if not env.envs:
            raise ValueError("the EnvPool is closed; build a new one")
        yield env
        return
    pool = EnvPool(env, num_envs, env_kwargs, env_workers=env_workers, env_workers_backend=env_workers_backend)
    try:
        yield pool
    finally:
        pool.close()


class _Collection:
    """One run of :func:`collect_episodes` over a pool: the job queue, the slots and the results."""

    def __init__(
        self,
        pool: EnvPool,
        agent: Agent,
        jobs: list[_Job],
        *,
        num_slots: int,
        seed: int,
        system_prompt: str | None,
        stop: Sequence[str],
        store: TrajectoryStore | None,
        stored: dict[tuple[str, str, int], Trajectory],
        progress: bool,
        max_turns: int | None,
    ):
        self.env_id, self.pool = pool.env_id, pool
        self.agent, self.name = agent, agent_name(agent)
        self.jobs, self.pending = jobs, iter(jobs)
        self.slots = [_Slot(index) for index in range(min(num_slots, len(pool)))]
        self.seed, self.system_prompt, self.stop = seed, system_prompt, tuple(stop)
        self.store, self.stored, self.max_turns = store, stored, max_turns
        self.results: dict[tuple[int, int], Trajectory] = {}
        # A bar in a terminal, rare whole lines in a log (training/progress.py).
        self.bar = progress_bar(len(jobs), f"collect {self.env_id}", "ep", enabled=progress)

    def start_jobs(self, slots: Sequence[_Slot]) -> None:
        """Reset each of ``slots`` onto the next job not already stored; leave it idle when none is left.

        The resets of a round run as one batch (in all env workers at once); a slot whose job turns
        out to be stored is reset onto the following job in the next round.
        """
        waiting = list(slots)
        for slot in waiting:
            slot.job = None
        while waiting:
            assigned = [(slot, job) for slot, job in zip(waiting, self.pending, strict=False)]
            if not assigned:
                return
            resets = [
                (slot.index, reset_seed_for(self.seed, job.k, job.sample), {"task_index": job.task_index})
                for slot, job in assigned
            ]
            waiting = []
            results = self.pool.reset_many(resets)
            for (slot, job), (_, reset_seed, _), (observation, info, task) in zip(
                assigned, resets, results, strict=True
            ):
                key = (self.env_id, str(info["task_id"]), job.sample)
                if key in self.stored:
                    self.results[(job.k, job.sample)] = self.stored[key]
                    if self.bar is not None:
                        self.bar.update(1)
                    waiting.append(slot)
                    continue
                slot.job, slot.seed, slot.task_id = job, reset_seed, str(info["task_id"])
                slot.task_record = task
                slot.task = json.loads(json.dumps(task, default=str))
                slot.messages = (
                    [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
                )
                slot.messages.append({"role": "user", "content": observation})
                slot.turns, slot.observation, slot.info = [], observation, info
                slot.agent_system_prompt = None

    def finish(self, slot: _Slot, observation: str, terminated: bool, truncated: bool) -> None:
        """Record the finished episode of ``slot`` (and append it to the store)."""
        info = slot.info
        trajectory = Trajectory(
            env_id=self.env_id,
            task_id=slot.task_id,
            task=slot.task,
            messages=slot.messages,
            turns=slot.turns,
            success=bool(info.get("success", False)),
            score=float(info.get("score", 0.0)),
            episode_return=float(sum(t.reward for t in slot.turns)),
            terminated=terminated,
            truncated=truncated,
            agent=self.name,
            seed=slot.seed,
            metadata={"task_index": slot.job.task_index, "sample_index": slot.job.sample, "run_seed": self.seed},
            final_observation=observation,
            agent_system_prompt=slot.agent_system_prompt,
        )
        self.results[(slot.job.k, slot.job.sample)] = trajectory
        if self.store is not None:
            self.store.append(trajectory)
        if self.bar is not None:
            self.bar.update(1)
            successes = sum(t.success for t in self.results.values())
            self.bar.set_postfix(success=f"{successes / len(self.results):.2f}")

    def agent_input(self, slot: _Slot) -> AgentInput:
        """What the agent is given for ``slot``'s current turn (with the episode's turn seed)."""
        return AgentInput(
            messages=[dict(m) for m in slot.messages],
            task=slot.task_record,
            info=slot.info,
            env_id=self.env_id,
            stop=self.stop,
            seed=agent_seed_for(self.seed, slot.job.k, slot.job.sample, len(slot.turns)),
        )

    def record(self, slot: _Slot, action, text: str, outcome: tuple) -> bool:
        """Record the turn ``slot``'s env answered with ``outcome``; whether the episode ended."""
        observation, reward, terminated, truncated, info = outcome
        record = getattr(action, "context", None)
        prefill = getattr(action, "prefill", None) or None
        if record is not None and record.system_prompt is not None and slot.agent_system_prompt is None:
            slot.agent_system_prompt = record.system_prompt
        slot.turns.append(
            Turn(
                observation=slot.observation,
                action=text,
                reward=float(reward),
                info=dict(info),
                completion_ids=action.completion_ids,
                logprobs=action.logprobs,
                context=_spans(record, len(slot.messages)),
                prefill=prefill,
                **self.rewrites(record),
            )
        )
        # A prefilled answer (CORGI's primer) goes into the history whole, as the model wrote it,
        # so later turns see it that way (Trajectory.sees_full_history); the env got the continuation.
        slot.messages.append({"role": "assistant", "content": (prefill or "") + text})
        slot.info = info
        if not (terminated or truncated) and self.max_turns is not None and len(slot.turns) >= self.max_turns:
            truncated = True
        if terminated or truncated:
            self.finish(slot, observation, bool(terminated), bool(truncated))
            return True
        slot.messages.append({"role": "user", "content": observation})
        slot.observation = observation
        return False

    def rewrites(self, record) -> dict[str, Any]:
        """The ``Turn`` keyword that stores ``record``'s rewrites (empty when there are none)."""
        rewrites = _rewrites(record)
        return {} if rewrites is None else {"context_rewritten": rewrites}

    def run(self) -> list[Trajectory]:
        """Play every job; the trajectories in job order."""
        try:
            self.start_jobs(self.slots)
            while live := [slot for slot in self.slots if slot.job is not None]:
                actions = self.agent.act([self.agent_input(slot) for slot in live])
                if len(actions) != len(live):
                    raise RuntimeError(f"{self.name}.act returned {len(actions)} actions for {len(live)} inputs")
                texts = [action.text if isinstance(action.text, str) else str(action.text) for action in actions]
                # One batch: with env workers every env steps at once.
                outcomes = self.pool.step_many([(slot.index, text) for slot, text in zip(live, texts, strict=True)])
                ended = [
                    slot
                    for slot, action, text, outcome in zip(live, actions, texts, outcomes, strict=True)
                    if self.record(slot, action, text, outcome)
                ]
                if ended:
                    self.start_jobs(ended)
        finally:
            if self.bar is not None:
                self.bar.close()
        return [self.results[(job.k, job.sample)] for job in self.jobs]


def _collect(
    pool: EnvPool,
    agent: Agent,
    num_episodes: int,
    *,
    num_envs: int | None,
    seed: int,
    task_indices: Sequence[int] | None,
    samples_per_task: int,
    system_prompt: str | None,
    stop: Sequence[str],
    store: TrajectoryStore | None,
    progress: bool,
    max_turns: int | None,
) -> list[Trajectory]:
    num_tasks = num_episodes // samples_per_task
    size = len(pool) if num_envs is None else min(num_envs, len(pool))
    if task_indices is None:
        indices = [task_index_for(pool.num_tasks, seed, k) for k in range(num_tasks)]
    else:
        indices = [int(i) for i in task_indices]
    jobs = [_Job(k, s, indices[k]) for k in range(num_tasks) for s in range(samples_per_task)]
    locked_here = False
    stored: dict[tuple[str, str, int], Trajectory] = {}
    if store is not None:
        # Refuse a second writer before doing any work; keep the lock until the collection ends.
        locked_here = store.lock()
        stored = {t.key: t for t in store}
    try:
        agent.reset(seed)
        collection = _Collection(
            pool,
            agent,
            jobs,
            num_slots=min(size, max(num_episodes, 1)),
            seed=seed,
            system_prompt=system_prompt,
            stop=stop,
            store=store,
            stored=stored,
            progress=progress,
            max_turns=max_turns,
        )
        return collection.run()
    finally:
        if locked_here:
            store.unlock()


def _rewrites(record) -> list[dict[str, Any]] | None:
    """The stored form of a record's rewrites, ``[{"index": i, "messages": [...]}, ...]``, or ``None``."""
    rewritten = getattr(record, "rewritten", ()) if record is not None else ()
    if not rewritten:
        return None
    return [{"index": int(index), "messages": [dict(m) for m in messages]} for index, messages in rewritten]


def _spans(record, num_messages: int) -> list[list[int]] | None:
    """The stored form of a context record: ``None`` when the whole history was shown."""
    if record is None or record.covers(num_messages):
        return None
    return [[int(a), int(b)] for a, b in record.spans]
