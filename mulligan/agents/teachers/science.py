"""Scripted teachers for ``Mulligan/ScienceWorld-v0`` and ``Mulligan/MiniScience-v0``.

Both envs put the gold path in the task record on reset (``env.unwrapped.task["gold_actions"]``),
which rollouts pass to agents as :attr:`AgentInput.task`. The teachers read it from there and find
their place in it by counting the assistant turns of the conversation (one action per turn), so
they keep no per-episode state.

* :class:`ScienceOracle` follows the gold path: positive trajectories.
* :class:`NoisyScienceTeacher` follows it with probability ``1 - error_rate`` per turn and otherwise
  makes one of three realistic mistakes: it *wanders* (a detour: a move to another room, a look
  around, an unrelated open), *skips* the gold step it was about to take, or acts on the *wrong
  object* (the gold action with its object swapped for another object of the episode). Its
  trajectories are the negative (and partially successful) examples NAT and RISE train on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput

#: What a teacher says once the gold path is exhausted (free in both envs).
FALLBACK_ACTION = "look around"
_ROOMS = ("kitchen", "hallway", "greenhouse", "outside", "living room", "bathroom", "workshop")
_OBJECT_PREFIXES = ("pick up ", "focus on ", "examine ", "open ", "activate ", "deactivate ", "look at ")


def gold_path(task: Mapping[str, Any] | None) -> list[str]:
    """The gold actions in a ScienceWorld/MiniScience task record; ``ValueError`` if it has none."""
    if not task or not isinstance(task.get("gold_actions"), list):
        raise ValueError(
            "the task record has no 'gold_actions': use Mulligan/ScienceWorld-v0 (generate_gold_path=True) "
            "or Mulligan/MiniScience-v0, and pass env.unwrapped.task as AgentInput.task"
        )
    return list(task["gold_actions"])


def turns_taken(messages: Sequence[Mapping[str, str]]) -> int:
    """The number of actions taken in the conversation (its assistant turns)."""
    return sum(1 for message in messages if message["role"] == "assistant")


class ScienceOracle(Agent):
    """Follows the gold path of the task: action ``k`` of the gold path on turn ``k``."""

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The next gold action for each input (``look around`` after the path's end)."""
        out = []
        for item in inputs:
            path = gold_path(item.task)
            k = turns_taken(item.messages)
            out.append(Action(path[k] if k < len(path) else FALLBACK_ACTION, metadata={"gold_index": k}))
        return out


def _object_of(action: str) -> str | None:
    for prefix in _OBJECT_PREFIXES:
        if action.startswith(prefix) and not action.startswith("open door"):
            return action[len(prefix) :]
    if action.startswith("move ") and " to " in action:
        return action[5:].rpartition(" to ")[0]
    return None


class NoisyScienceTeacher(Agent):
    """The gold path with mistakes: each turn errs with probability ``error_rate``.

    Mistakes, in proportions ``mistake_weights`` (wander, skip, wrong object):

    * ``wander``: a detour action instead of the gold one (go to / open a door to a random room,
      look around); the gold step is taken on a later turn.
    * ``skip``: the gold step is dropped and the next one taken instead.
    * ``wrong_object``: the gold action with its object replaced by another object of the gold
      path (e.g. ``focus on thermometer`` for ``focus on substance in metal pot``).

    Decisions are a pure function of ``(seed, task_id, turn)``, replayed from the start of the
    episode on each call, so the teacher keeps no per-episode state; :meth:`reset` changes the seed.

    Args:
        error_rate: Probability of a mistake on each turn, in [0, 1].
        mistake_weights: Relative weights of wander, skip and wrong object.
        seed: Seed of the decisions.
    """

    def __init__(self, error_rate: float = 0.2, mistake_weights: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0):
        if not 0.0 <= float(error_rate) <= 1.0:
            raise ValueError(f"error_rate must lie in [0, 1], got {error_rate!r}")
        weights = np.asarray(mistake_weights, dtype=float)
        if weights.shape != (3,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                "mistake_weights must be three non-negative numbers (wander, skip, wrong object) with a positive sum"
            )
        self.error_rate = float(error_rate)
        self.mistake_probs = weights / weights.sum()
        self.seed = int(seed)

    def reset(self, seed: int | None = None) -> None:
        """Change the decision seed (``None`` keeps it)."""
        if seed is not None:
            self.seed = int(seed)

    def _rng(self, task_key: str) -> np.random.Generator:
        digest = int(hashlib.sha1(task_key.encode("utf-8")).hexdigest()[:12], 16)
        return np.random.default_rng([self.seed, digest])

    def plan(self, task: Mapping[str, Any], task_key: str, turn: int) -> tuple[str, str]:
        """The action and its kind (``gold``, ``wander``, ``skip``, ``wrong_object``) on ``turn``."""
        path = gold_path(task)
        rng = self._rng(task_key)
        objects = sorted({o for a in path if (o := _object_of(a))})
        position = 0
        action, kind = FALLBACK_ACTION, "gold"
        for _ in range(turn + 1):
            err = rng.random() < self.error_rate
            mistake = int(rng.choice(3, p=self.mistake_probs))
            pick = rng.random()
            if position >= len(path):
                action, kind = FALLBACK_ACTION, "gold"
                continue
            gold = path[position]
            if not err:
                action, kind = gold, "gold"
                position += 1
            elif mistake == 0:
                room = _ROOMS[int(pick * len(_ROOMS))]
                action = ("look around", f"go to {room}", f"open door to {room}")[int(pick * 3 * 7) % 3]
                kind = "wander"
            elif mistake == 1 and position + 1 < len(path):
                position += 2
                action, kind = path[position - 1], "skip"
            else:
                obj = _object_of(gold)
                others = [o for o in objects if o != obj]
                if obj is None or not others:
                    action, kind = gold, "gold"
                else:
                    action, kind = gold.replace(obj, others[int(pick * len(others))], 1), "wrong_object"
                position += 1
        return action, kind

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The next (possibly mistaken) action for each input; ``metadata["mistake"]`` names the kind."""
        out = []
        for item in inputs:
            task = item.task or {}
            # The task record (without its gold path) identifies the episode on every turn.
            key = repr(sorted((k, str(v)) for k, v in task.items() if k != "gold_actions"))
            action, kind = self.plan(task, key, turns_taken(item.messages))
            out.append(Action(action, metadata={"mistake": kind}))
        return out
