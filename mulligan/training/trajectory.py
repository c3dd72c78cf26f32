"""Trajectories, the unit of training data, and their crash-safe JSONL store.

A :class:`Trajectory` records one episode: the task, the conversation (observations as ``user``
messages, actions as ``assistant`` messages), every turn's action, reward and ``info``, success,
score, and for model agents what the model saw and generated at each turn.

What the model saw, and how trainers rebuild it
-----------------------------------------------
An agent shows its model a *context* built by
:meth:`~mulligan.agents.base.Agent.prepare_context`: its system prompt (stored once per trajectory
as :attr:`Trajectory.agent_system_prompt`) and the messages its context policy kept (stored per turn
as :attr:`Turn.context`, half-open index spans into :attr:`Trajectory.messages`; ``None`` when the
whole history was kept). The record is a few integers per turn, so the file grows linearly with
episode length. Trainers never rebuild a context themselves; they call:

* :meth:`Trajectory.prompt_messages` ``(t)``: exactly the messages the model saw before turn ``t``;
* :meth:`Trajectory.training_messages` ``(t)``: those plus the turn's action (one sample per turn;
  learn its last message);
* :attr:`Trajectory.sees_full_history` and :meth:`Trajectory.conversation`: when every turn saw the
  whole history, the episode is one conversation (agent system prompt + messages) in which every
  assistant message is a learned turn; :meth:`Trajectory.training_samples` picks the right form;
* :meth:`Trajectory.tokenize`: the one-sequence form as tokens with the agent-token mask (through
  :func:`mulligan.training.chat.tokenize_conversation`, the one place that decides it);
* :meth:`Trajectory.sampled_tokens` ``(tokenizer, t)``: turn ``t`` as the exact tokens sampled (the
  rendered prompt, then the recorded completion ids), aligned with the turn's log-probabilities.
* :func:`trajectory_sample`: the whole episode as one token sequence for episode-level RL (PPO and
  GRPO share it): the sampled ids and log-probs of every turn, the env's tokens between them.

Prefilled answers: a turn whose answer the agent started itself (:attr:`Turn.prefill`, CORGI's
primer) is learned as prefix (context) + continuation (learned); see :meth:`Trajectory.answer_message`.

Token ids: model agents record each turn's :attr:`Turn.completion_ids` and their behaviour
:attr:`Turn.logprobs` (the exact tokens sampled, for exact-token RL); prompt ids are not stored
(they would re-store the whole prefix every turn), they are re-rendered from the context above.

The store
---------
A :class:`TrajectoryStore` is an append-only JSONL file, one trajectory per line, that
``datasets.load_dataset("json", data_files=path)`` reads. Every append writes a whole line, flushes
and fsyncs. A last line without its newline (a crash mid-write, even inside a multi-byte UTF-8
character) is a torn tail: readers skip it and the first append cuts it, so a resumed collection
continues from the last complete trajectory. A corrupt line in the middle raises
:class:`TrajectoryFileError` naming the file and line, unless the store was opened with
``skip_corrupt=True``. A writer holds an exclusive lock on the file; a second writer is refused
with :class:`StoreLockedError` instead of silently duplicating data.

Rows are kept consistently typed across envs: the free-form records (``task``, each turn's
``info``, ``metadata``) are stored as JSON strings, so that Arrow never sees two types for one
column. :meth:`Trajectory.from_dict` accepts both the stored form and plain dicts.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mulligan.agents.base import ContextRecord

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
        completion_ids: Token ids the model generated (model agents only).
        logprobs: Per-token log-probabilities of ``completion_ids`` under the sampling policy.
        context: Which messages the model saw before this action: half-open ``[start, stop)``
            spans of indices into the trajectory's ``messages``; ``None`` means all of them (see
            :meth:`Trajectory.prompt_messages`).
        context_rewritten: Messages a wrapper agent showed in place of kept input messages
            (NAT's opening for the task message, the sub-goal agents' step prompt for the latest
            observation), stored as ``[{"index": i, "messages": [...]}, ...]``; ``None`` when the
            model saw the kept messages as they are. Its size does not grow with the episode.
        prefill: The text the agent started its answer with before the model generated (CORGI's
            primer, :attr:`mulligan.agents.base.Action.prefill`); ``action`` is then the model's
            continuation. ``None`` (and absent in files written before it existed): no prefill.
    """

    observation: str
    action: str
    reward: float
    info: dict[str, Any]
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None
    context: list[list[int]] | None = None
    context_rewritten: list[dict[str, Any]] | None = None
    prefill: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form: ``info`` as a JSON string, everything else plain."""
        return {
            "observation": self.observation,
            "action": self.action,
            "reward": float(self.reward),
            "info": _dumps(self.info),
            "completion_ids": None if self.completion_ids is None else [int(t) for t in self.completion_ids],
            "logprobs": None if self.logprobs is None else [float(x) for x in self.logprobs],
            "context": None if self.context is None else [[int(a), int(b)] for a, b in self.context],
            "context_rewritten": None if self.context_rewritten is None else _dumps(self.context_rewritten),
            "prefill": self.prefill,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Turn:
        """Inverse of :meth:`to_dict`; also accepts ``info`` as a plain dict.

        The ``prompt_ids`` that files written by older versions hold are ignored.
        """
        context = row.get("context")
        return cls(
            observation=row["observation"],
            action=row["action"],
            reward=float(row["reward"]),
            info=_loads_if_str(row.get("info")),
            completion_ids=row.get("completion_ids"),
            logprobs=row.get("logprobs"),
            context=None if context is None else [[int(a), int(b)] for a, b in context],
            context_rewritten=None if row.get("context_rewritten") is None else _loads_if_str(row["context_rewritten"]),
            prefill=row.get("prefill") or None,
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
        agent_system_prompt: The system prompt the agent put in front of what its model saw
            (stored once; see :meth:`prompt_messages`), or ``None``.
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
    agent_system_prompt: str | None = None

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

    def assistant_positions(self) -> list[int]:
        """The index in :attr:`messages` of each turn's action, in turn order."""
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]

    def _system(self) -> list[dict[str, str]]:
        return [] if self.agent_system_prompt is None else [{"role": "system", "content": self.agent_system_prompt}]

    def prompt_messages(self, turn: int) -> list[dict[str, str]]:
        """Exactly the messages the model saw before acting at turn ``turn`` (0-based).

        The agent's system prompt (if any), then the messages its context policy kept.

        Raises:
            IndexError: If the trajectory has no turn ``turn``.
        """
        positions = self.assistant_positions()
        if not 0 <= turn < len(positions):
            raise IndexError(f"turn {turn} out of range: the trajectory has {len(positions)} turns")
        history = self.messages[: positions[turn]]
        record = self.turns[turn] if turn < len(self.turns) else None
        spans = record.context if record is not None else None
        rewritten = (record.context_rewritten or []) if record is not None else []
        if not rewritten:
            kept = history if spans is None else [m for start, stop in spans for m in history[start:stop]]
            return self._system() + [dict(m) for m in kept]
        shown = ContextRecord(
            spans=tuple((int(a), int(b)) for a, b in spans) if spans is not None else ((0, len(history)),),
            system_prompt=self.agent_system_prompt,
            rewritten=tuple((int(r["index"]), tuple(r["messages"])) for r in rewritten),
        )
        return shown.shown(history)

    def _prefill_stored(self, turn: int) -> bool:
        """Whether turn ``turn``'s assistant message holds its prefill (prefix + continuation)."""
        record = self.turns[turn]
        content = self.messages[self.assistant_positions()[turn]]["content"]
        return bool(record.prefill) and content == record.prefill + record.action

    def answer_message(self, turn: int) -> dict[str, str]:
        """Turn ``turn``'s assistant message as the model produced it.

        For a prefilled turn (:attr:`Turn.prefill`) the content is the prefix followed by the
        continuation, and the message's ``"prefill"`` key (:data:`mulligan.training.chat.PREFILL_KEY`)
        names the prefix, which the tokenizers of :mod:`mulligan.training.chat` render as context
        and do not learn. The stored message may hold the whole answer or the continuation alone.
        """
        message = dict(self.messages[self.assistant_positions()[turn]])
        record = self.turns[turn] if turn < len(self.turns) else None
        if record is None or not record.prefill:
            return message
        if not self._prefill_stored(turn):
            message["content"] = record.prefill + message["content"]
        message["prefill"] = record.prefill
        return message

    def training_messages(self, turn: int) -> list[dict[str, str]]:
        """:meth:`prompt_messages` of ``turn`` followed by the turn's action (learn the last message).

        A prefilled turn's action is :meth:`answer_message`: prefix (context) + continuation (learned).
        """
        return [*self.prompt_messages(turn), self.answer_message(turn)]

    @property
    def sees_full_history(self) -> bool:
        """Whether every turn saw the whole history, each earlier answer as the model produced it.

        ``False`` when a context policy dropped or rewrote messages, or when a prefilled answer
        (other than the last) is stored without its prefix, so later turns saw it differently from
        how the model wrote it.
        """
        if not all(turn.context is None and not turn.context_rewritten for turn in self.turns):
            return False
        earlier = range(len(self.turns) - 1)
        return all(not self.turns[t].prefill or self._prefill_stored(t) for t in earlier)

    def conversation(self) -> list[dict[str, str]]:
        """The agent's system prompt (if any) and every message, answers as :meth:`answer_message`.

        This is what the model saw at its last turn when :attr:`sees_full_history`.
        """
        positions = {index: turn for turn, index in enumerate(self.assistant_positions()) if turn < len(self.turns)}
        return self._system() + [
            self.answer_message(positions[k]) if k in positions else dict(m) for k, m in enumerate(self.messages)
        ]

    def training_samples(self) -> list[list[dict[str, str]]]:
        """The conversations to learn this episode's turns from, exactly as the model saw them.

        One conversation whose every assistant message is a learned turn when
        :attr:`sees_full_history`, else one :meth:`training_messages` per turn (learn its last
        message). Trainers pass these to :mod:`mulligan.training.chat`.
        """
        if self.sees_full_history:
            return [self.conversation()]
        return [self.training_messages(t) for t in range(len(self.assistant_positions()))]

    def sampled_tokens(self, tokenizer, turn: int):
        """Turn ``turn`` as the exact tokens sampled: rendered prompt, then the recorded completion ids.

        The learned tokens align one to one with :attr:`Turn.logprobs` (exact-token RL); see
        :func:`mulligan.training.chat.tokenize_sampled_turn`.

        Raises:
            ValueError: If the turn has no recorded completion ids (a scripted agent's turn).
        """
        from mulligan.agents.tools import tools_for_trajectory
        from mulligan.training.chat import tokenize_sampled_turn

        return tokenize_sampled_turn(
            tokenizer,
            self.prompt_messages(turn),
            self.turns[turn].completion_ids or [],
            tools=tools_for_trajectory(self),  # a tools-mode episode's prompt showed the env's tools
            prefill=self.turns[turn].prefill,  # the agent's prompt ended with it
        )

    def tokenize(self, tokenizer, *, learn_turns=None):
        """:meth:`conversation` as tokens with the agent-token mask (see :mod:`mulligan.training.chat`).

        ``learn_turns`` index into :meth:`conversation`. Meaningful as one sequence when
        :attr:`sees_full_history`; otherwise tokenize each of :meth:`training_samples`.
        """
        from mulligan.agents.tools import tools_for_trajectory
        from mulligan.training.chat import tokenize_conversation

        return tokenize_conversation(
            tokenizer, self.conversation(), learn_turns=learn_turns, tools=tools_for_trajectory(self)
        )

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
            "agent_system_prompt": self.agent_system_prompt,
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
            agent_system_prompt=values.get("agent_system_prompt"),
        )


# ----------------------------------------------------------------------------------- episodes as one sequence
@dataclass
class EpisodeSample:
    """One episode as one token sequence for RL: a prompt, then a completion with its model-token mask.

    Shared by GRPO (TRL's ``rollout_func`` output) and PPO (one row of its batch).

    Attributes:
        prompt_ids: Tokens up to and including the first assistant header (and the first turn's prefill).
        completion_ids: The rest of the conversation up to the model's last token.
        env_mask: 1 on the model's own tokens of ``completion_ids``, 0 on env/feedback/header/prefill tokens.
        logprobs: The sampler's log-probability of each token of ``completion_ids`` (0.0 on env
            tokens, ``None`` where the sampler recorded none), or ``None`` for a sample rebuilt from text.
        exact: Whether every turn's prompt, as the model saw it, is the sample's prefix before that
            turn (``False``: some turn saw a re-rendering that differs from the sampled tokens).
        turn_ends: For each turn, the index in ``completion_ids`` of its last model token.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float | None] | None = None
    exact: bool = True
    turn_ends: list[int] = field(default_factory=list)


def require_one_sequence(tokenizer, messages: list[dict[str, str]]) -> None:
    """Refuse a multi-turn episode that the chat template cannot render as one token sequence.

    Episode-level RL (PPO, GRPO's episode samples) learns every turn of an episode in one sequence,
    which is what the model saw only if the template renders append-only; reasoning templates that
    re-render earlier turns (dropping their ``<think>`` part) do not.

    Raises:
        ValueError: With the fix, when the episode has several turns and the template is not append-only.
    """
    from mulligan.training.chat import is_append_only

    if sum(m["role"] == "assistant" for m in messages) > 1 and not is_append_only(tokenizer, messages):
        raise ValueError(
            "this chat template re-renders earlier turns (e.g. a reasoning template that drops <think> from "
            "past answers), so a multi-turn episode is not one token sequence as the model saw it; use a "
            "template that renders append-only, or single-turn episodes"
        )


def full_history(trajectory: Trajectory) -> list[dict[str, str]]:
    """The episode as one conversation (:meth:`Trajectory.conversation`), refused unless the model saw it so.

    Raises:
        ValueError: If some turn did not see the whole history (:attr:`Trajectory.sees_full_history`).
    """
    if not trajectory.sees_full_history:
        raise ValueError(
            "an episode learned as one sequence needs an agent that saw the whole history at every turn (each "
            "earlier answer as written); play the episodes without a context policy that drops messages"
        )
    return trajectory.conversation()


def episode_sample(tokenizer, messages: list[dict[str, str]]) -> EpisodeSample:
    """Split a tokenized episode into a prompt and one completion with its ``env_mask`` (from text).

    The prompt is everything before the model's first learned token; the completion stops after
    the model's last token (its end-of-turn token when it ended its turn), and ``env_mask`` is the
    episode's assistant mask over that span. The model's turns are re-tokenized from their text,
    so there are no sampler log-probabilities; :func:`sampled_episode_sample` keeps the sampled
    tokens instead.
    """
    from mulligan.training.chat import tokenize_conversation

    require_one_sequence(tokenizer, messages)
    episode = tokenize_conversation(tokenizer, messages)
    mask = episode.assistant_mask
    learned = [t for t, m in enumerate(mask) if m]
    if not learned:
        raise ValueError("the episode has no model tokens: it needs at least one assistant message")
    start, end = learned[0], learned[-1] + 1
    last: dict[int, int] = {}
    for t in learned:
        last[episode.turn_index[t]] = t - start
    turn_ends = [last[k] for k in sorted(last)]
    return EpisodeSample(episode.input_ids[:start], episode.input_ids[start:end], mask[start:end], turn_ends=turn_ends)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def sampled_episode_sample(tokenizer, trajectory: Trajectory) -> EpisodeSample:
    """An episode as one completion made of the exact tokens the sampler produced, with their log-probs.

    Turn ``t``'s tokens are its recorded :attr:`Turn.completion_ids` (EOS or stop-string tokens
    included, as generated) with its recorded ``logprobs``, so a trainer's ratio compares its
    log-probs with the sampler's on the same tokens. Between two turns come the env's tokens: the
    part of turn ``t``'s rendered prompt (:meth:`Trajectory.sampled_tokens`, which ends with the
    turn's prefill, if any) after the tokens so far. When the model ended its turn with its
    end-of-turn token and its text re-tokenizes to the same ids (the usual case), that prompt
    continues the sampled tokens exactly and the sample is what the model saw at every turn.
    Otherwise (a turn cut at a stop string or the token limit whose text the template closes
    differently, or ids that do not round-trip through text) the env tokens start where the
    prompt first differs, the sample's context for the next turn differs from the sampler's, and
    ``exact`` is ``False``.

    Raises:
        ValueError: If a turn has no recorded ``completion_ids`` (a scripted agent played it), the
            agent did not see the whole history, or a multi-turn episode's template is not append-only.
    """
    conversation = full_history(trajectory)
    require_one_sequence(tokenizer, conversation)
    if not trajectory.turns:
        raise ValueError("the episode has no model tokens: it needs at least one turn")
    prompt_ids: list[int] = []
    completion: list[int] = []
    mask: list[int] = []
    logprobs: list[float | None] = []
    turn_ends: list[int] = []
    exact = True
    for t, turn in enumerate(trajectory.turns):
        if not turn.completion_ids:
            raise ValueError(
                f"turn {t} has no recorded completion_ids (a scripted agent's turn); use episode_sample for text"
            )
        sampled = trajectory.sampled_tokens(tokenizer, t)
        prompt = sampled.input_ids[: len(sampled.input_ids) - len(turn.completion_ids)]
        if t == 0:
            prompt_ids = list(prompt)
        else:
            so_far = prompt_ids + completion
            start = _common_prefix(prompt, so_far)
            exact = exact and start == len(so_far)
            bridge = list(prompt[max(start, len(prompt_ids)) :])
            completion += bridge
            mask += [0] * len(bridge)
            logprobs += [0.0] * len(bridge)  # env tokens: trainers mask them out
        ids = [int(x) for x in turn.completion_ids]
        recorded = list(turn.logprobs) if turn.logprobs is not None else []
        if len(recorded) != len(ids):
            recorded = [None] * len(ids)  # unknown: no sampler log-prob on these tokens
        completion += ids
        mask += [1] * len(ids)
        logprobs += [None if x is None else float(x) for x in recorded]
        turn_ends.append(len(completion) - 1)
    return EpisodeSample(prompt_ids, completion, mask, logprobs, exact, turn_ends)


def trajectory_sample(tokenizer, trajectory: Trajectory) -> EpisodeSample:
    """The episode as RL learns it: the sampled tokens when every turn recorded them, else its text's tokens.

    Model agents record each turn's ids (:func:`sampled_episode_sample`); scripted teachers do not
    (:func:`episode_sample` of :func:`full_history`).
    """
    if trajectory.turns and all(turn.completion_ids for turn in trajectory.turns):
        return sampled_episode_sample(tokenizer, trajectory)
    return episode_sample(tokenizer, full_history(trajectory))


class TrajectoryFileError(ValueError):
    """A trajectory file holds a line that is not a trajectory (the message names file and line)."""


class StoreLockedError(RuntimeError):
    """Another writer holds the trajectory file."""


class TrajectoryStore:
    """Append-only JSONL file of trajectories that survives crashes.

    Each :meth:`append` writes one complete line in a single ``write``, then flushes and fsyncs.
    A last line without its newline (a crash mid-write, possibly inside a multi-byte character)
    is a torn tail: readers skip it, and the first append of a writer cuts it off, so the file
    always holds whole trajectories and a resumed collection redoes only the episode that was cut.
    A malformed line before the last raises :class:`TrajectoryFileError` with the file and line
    number; with ``skip_corrupt=True`` it is skipped with a warning instead.

    One writer at a time: the first :meth:`append` (or :meth:`lock`) takes an exclusive,
    non-blocking ``flock`` on the file and holds it until :meth:`unlock`/:meth:`close`; a second
    writer (another process, or another store object on the same file) gets
    :class:`StoreLockedError`. Readers do not lock.
    ``datasets.load_dataset("json", data_files=str(store.path))`` reads the file.

    Args:
        path: The JSONL file; created (with its parent folders) on first append.
        skip_corrupt: Skip malformed middle lines (with a warning) instead of raising.

    Raises:
        ValueError: If ``path`` is an existing directory, or a parent of it is a file.
    """

    def __init__(self, path: str | os.PathLike, *, skip_corrupt: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(
                f"trajectory file {self.path} is a directory; pass a file path such as "
                f"{self.path / 'trajectories.jsonl'}"
            )
        for parent in self.path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(
                        f"cannot create {self.path}: {parent} is a file, not a folder; choose another path"
                    )
                break
        self.skip_corrupt = skip_corrupt
        self._keys: set[tuple[str, str, int]] | None = None
        self._handle = None

    # ------------------------------------------------------------------ writing
    def lock(self) -> bool:
        """Take the writer's lock (and cut a torn tail); ``True`` if this call took it, ``False`` if held.

        Raises:
            StoreLockedError: If another writer holds the file.
        """
        if self._handle is not None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab")  # noqa: SIM115 - held open: the lock lives as long as the handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(
                f"{self.path} is being written by another writer (a process or store holds its lock); wait "
                "for it to finish, or write to another file"
            ) from None
        self._handle = handle
        self._repair()
        return True

    def unlock(self) -> None:
        """Release the writer's lock (a later append takes it again)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the descriptor releases the flock

    close = unlock

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.unlock()

    def __del__(self) -> None:
        # A plain try, not contextlib.suppress: at interpreter shutdown a module's globals (the
        # contextlib name included) may already be None, and the finalizer must still not raise.
        try:  # noqa: SIM105 - see above
            self.unlock()
        except Exception:
            pass

    def _repair(self) -> None:
        """Cut a torn tail (a last line without its newline) left by a crash."""
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
        """Write ``trajectory`` as one line, durably (flush + fsync); takes the lock on first use.

        Raises:
            StoreLockedError: If another writer holds the file.
        """
        self.lock()
        line = json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n"
        self._handle.write(line.encode("utf-8", "surrogatepass"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if self._keys is not None:
            self._keys.add(trajectory.key)

    def extend(self, trajectories) -> None:
        """Append several trajectories."""
        for trajectory in trajectories:
            self.append(trajectory)

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Trajectory]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    break  # a torn tail (or a line being written right now): not yet a trajectory
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8", "surrogatepass"))
                    trajectory = Trajectory.from_dict(row)
                except (
                    ValueError,
                    KeyError,
                    TypeError,
                    AttributeError,
                ) as err:  # JSON and UTF-8 errors are ValueErrors
                    message = f"{self.path}, line {number}: not a trajectory ({type(err).__name__}: {err})"
                    if not self.skip_corrupt:
                        raise TrajectoryFileError(
                            message + "; fix or delete that line, or skip corrupt lines (TrajectoryStore("
                            "skip_corrupt=True), mulligan collect --skip_corrupt_lines)"
                        ) from None
                    warnings.warn(message + "; skipped", stacklevel=2)
                    continue
                yield trajectory

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


def load_trajectories(path: str | os.PathLike, *, skip_corrupt: bool = False) -> list[Trajectory]:
    """Read every trajectory of a JSONL file written by :class:`TrajectoryStore`.

    Raises:
        FileNotFoundError: If ``path`` does not exist (with the fix in the message).
        TrajectoryFileError: On a corrupt line (unless ``skip_corrupt``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}; pass the JSONL file written by mulligan collect")
    return TrajectoryStore(path, skip_corrupt=skip_corrupt).load()
