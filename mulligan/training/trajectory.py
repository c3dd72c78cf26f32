"""Trajectories, the unit of training data, and their crash-safe JSONL store.

A :class:`Trajectory` records one episode: the task, every turn's observation and action, the
per-turn reward and ``info``, success, score, and for model agents the token ids and
log-probabilities of each turn. :meth:`Trajectory.tokenize` gives the whole conversation as tokens
with the mask that separates the model's tokens from the env's (through
:func:`mulligan.training.tokens.tokenize_conversation`, the one place that decides it).

A :class:`TrajectoryStore` is an append-only JSONL file, one trajectory per line, that
``datasets.load_dataset("json", data_files=path)`` reads. Every append writes a whole line, flushes
and fsyncs; on open, a trailing partial line (the trace of a crash mid-write) is cut off, so a
resumed collection continues from the last complete trajectory and skips what is already stored.

Rows are kept consistently typed across envs: the free-form records (``task``, each turn's
``info``, ``metadata``) are stored as JSON strings, so that Arrow never sees two types for one
column. :meth:`Trajectory.from_dict` accepts both the stored form and plain dicts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Fields stored as JSON strings in a row (their inner types vary from env to env).
_JSON_STRING_FIELDS = ("task", "metadata")


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types (numpy scalars and arrays, tuples, sets, paths)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_jsonable(value.tolist())
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)


def _loads_if_str(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else (value if value is not None else {})


@dataclass
class Turn:
    """One agent turn of an episode.

    Attributes:
        observation: What the agent saw before acting (the env's latest observation).
        action: The text the agent sent to the env.
        reward: The reward the env paid for this action.
        info: The env's ``info`` after this action.
        prompt_ids: Token ids the model was conditioned on (model agents only).
        completion_ids: Token ids the model generated (model agents only).
        logprobs: Per-token log-probabilities of ``completion_ids`` under the sampling policy.
    """

    observation: str
    action: str
    reward: float
    info: dict[str, Any]
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form: ``info`` as a JSON string, everything else plain."""
        return {
            "observation": self.observation,
            "action": self.action,
            "reward": float(self.reward),
            "info": _dumps(self.info),
            "prompt_ids": None if self.prompt_ids is None else [int(t) for t in self.prompt_ids],
            "completion_ids": None if self.completion_ids is None else [int(t) for t in self.completion_ids],
            "logprobs": None if self.logprobs is None else [float(x) for x in self.logprobs],
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Turn:
        """Inverse of :meth:`to_dict`; also accepts ``info`` as a plain dict."""
        return cls(
            observation=row["observation"],
            action=row["action"],
            reward=float(row["reward"]),
            info=_loads_if_str(row.get("info")),
            prompt_ids=row.get("prompt_ids"),
            completion_ids=row.get("completion_ids"),
            logprobs=row.get("logprobs"),
        )


@dataclass
class Trajectory:
    """One episode of one agent on one task.

    Attributes:
        env_id: The registered env id (``Mulligan/Math-v0``).
        task_id: The env's stable ``info["task_id"]``.
        task: The task record (``env.unwrapped.task``); ``reset(options={"task": task})`` replays it.
        messages: The conversation the agent took part in: optional system prompt, observations as
            ``user`` turns, actions as ``assistant`` turns (the final observation is not included;
            see ``final_observation``).
        turns: The agent's turns, in order.
        success: Whether the episode ended solved (the last step's ``info["success"]``).
        score: The last step's ``info["score"]``.
        episode_return: The sum of rewards.
        terminated: Whether the env ended the episode.
        truncated: Whether a turn cap cut the episode.
        agent: A name for the agent that played.
        seed: The reset seed of the episode.
        metadata: Free-form extras; :func:`~mulligan.training.rollout.collect_episodes` stores
            ``task_index`` and ``sample_index`` here (the resume key).
        final_observation: The env's observation after the last action.
    """

    env_id: str
    task_id: str
    task: dict[str, Any]
    messages: list[dict[str, str]]
    turns: list[Turn]
    success: bool
    score: float
    episode_return: float
    terminated: bool
    truncated: bool
    agent: str = ""
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    final_observation: str = ""

    @property
    def rewards(self) -> list[float]:
        """Per-turn rewards."""
        return [turn.reward for turn in self.turns]

    @property
    def sample_index(self) -> int:
        """Which sample of its task this episode is (0 unless several were drawn per task)."""
        return int(self.metadata.get("sample_index", 0))

    @property
    def key(self) -> tuple[str, str, int]:
        """``(env_id, task_id, sample_index)``: what a resumed collection skips."""
        return (self.env_id, self.task_id, self.sample_index)

    @property
    def question(self) -> str:
        """The first observation of the episode (the task as the agent first saw it)."""
        return self.turns[0].observation if self.turns else self.final_observation

    def tokenize(self, tokenizer, *, learn_turns=None):
        """The conversation as tokens with the agent-token mask (see :mod:`mulligan.training.tokens`)."""
        from mulligan.training.tokens import tokenize_conversation

        return tokenize_conversation(tokenizer, self.messages, learn_turns=learn_turns)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: a JSON-ready row with ``task``, ``metadata`` and turn infos as JSON strings."""
        return {
            "env_id": self.env_id,
            "task_id": str(self.task_id),
            "task": _dumps(self.task),
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "turns": [turn.to_dict() for turn in self.turns],
            "success": bool(self.success),
            "score": float(self.score),
            "episode_return": float(self.episode_return),
            "terminated": bool(self.terminated),
            "truncated": bool(self.truncated),
            "agent": self.agent,
            "seed": None if self.seed is None else int(self.seed),
            "metadata": _dumps(self.metadata),
            "final_observation": self.final_observation,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict`; also accepts plain dicts for the JSON-string fields."""
        values = dict(row)
        for name in _JSON_STRING_FIELDS:
            values[name] = _loads_if_str(values.get(name))
        return cls(
            env_id=values["env_id"],
            task_id=values["task_id"],
            task=values["task"],
            messages=[dict(m) for m in values["messages"]],
            turns=[Turn.from_dict(t) for t in values["turns"]],
            success=bool(values["success"]),
            score=float(values["score"]),
            episode_return=float(values["episode_return"]),
            terminated=bool(values["terminated"]),
            truncated=bool(values["truncated"]),
            agent=values.get("agent") or "",
            seed=values.get("seed"),
            metadata=values["metadata"],
            final_observation=values.get("final_observation") or "",
        )


class TrajectoryStore:
    """Append-only JSONL file of trajectories that survives crashes.

    Each :meth:`append` writes one complete line in a single ``write``, then flushes and fsyncs.
    Opening a store whose last line is incomplete (a crash mid-write) truncates that partial line,
    so the file always holds whole trajectories and a resumed collection redoes only the episode
    that was cut. (The cut happens at the first append, never on read: a reader skips an
    incomplete last line without touching the file.)
    ``datasets.load_dataset("json", data_files=str(store.path))`` reads the file.

    Args:
        path: The JSONL file; created (with its parent folders) on first append.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._keys: set[tuple[str, str, int]] | None = None
        self._repaired = False

    def _repair(self) -> None:
        """Cut a trailing partial line left by a crash."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "rb+") as handle:
            # Scan backwards for the last newline; everything after it is a partial line.
            block = 1 << 16
            position = size
            last_newline = -1
            while position > 0 and last_newline < 0:
                start = max(0, position - block)
                handle.seek(start)
                chunk = handle.read(position - start)
                index = chunk.rfind(b"\n")
                if index >= 0:
                    last_newline = start + index
                position = start
            keep = last_newline + 1
            if keep < size:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, trajectory: Trajectory) -> None:
        """Write ``trajectory`` as one line, durably (flush + fsync)."""
        if not self._repaired:
            self._repair()
            self._repaired = True
        line = json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(line.encode("utf-8", "surrogatepass"))
            handle.flush()
            os.fsync(handle.fileno())
        if self._keys is not None:
            self._keys.add(trajectory.key)

    def extend(self, trajectories) -> None:
        """Append several trajectories."""
        for trajectory in trajectories:
            self.append(trajectory)

    def __iter__(self) -> Iterator[Trajectory]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="surrogatepass") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # a partial line written after this store was opened: not yet a trajectory
                if line.strip():
                    yield Trajectory.from_dict(json.loads(line))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def load(self) -> list[Trajectory]:
        """Every stored trajectory, in file order."""
        return list(self)

    def keys(self) -> set[tuple[str, str, int]]:
        """The ``(env_id, task_id, sample_index)`` of every stored trajectory (the resume keys)."""
        if self._keys is None:
            self._keys = {trajectory.key for trajectory in self}
        return set(self._keys)


def load_trajectories(path: str | os.PathLike) -> list[Trajectory]:
    """Read every trajectory of a JSONL file written by :class:`TrajectoryStore`."""
    return TrajectoryStore(path).load()
