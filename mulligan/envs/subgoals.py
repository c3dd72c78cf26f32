"""Sub-goal annotation of ScienceWorld-style action sequences and the sub-goal distillation views.

Sub-goal distillation (arXiv 2405.02749, Sec. 3) splits each gold trajectory into sub-goals written
as function calls, each covering a contiguous run of actions::

    navigate_to(kitchen) : ['open door to kitchen', 'go to kitchen']
    pick_up(thermometer) : ['pick up thermometer']
    find(metal pot)      : ['open cupboard', 'pick up metal pot']
    fill(metal pot, water)
    focus_on(substance in metal pot)
    heat(metal pot)      : ['move metal pot to stove', 'activate stove']
    monitor_temperature(substance in metal pot)
    wait(2)              : ['wait1', 'wait1']

and trains a planner (context -> next sub-goal) and an executor (context + sub-goal -> next action,
or ``END_SG()`` when the sub-goal is done). An annotator is anything with
``annotate(task, actions) -> list[SubGoal]`` (:class:`SubgoalAnnotator`): the rule-based
:class:`RuleBasedAnnotator` here works on the gold paths of both ``Mulligan/ScienceWorld-v0`` and
``Mulligan/MiniScience-v0``; an LLM can implement the same protocol. :func:`check_annotation`
verifies that an annotation covers every action exactly once, in order.

Record formats (plain dicts, one JSON object per line in JSONL):

``SubGoal.to_dict()``::

    {"name": "navigate_to", "args": ["kitchen"], "text": "navigate_to(kitchen)",
     "actions": ["open door to kitchen", "go to kitchen"], "start": 0, "end": 2}

(``start``/``end``: the half-open range of action indices the sub-goal covers.)

:func:`build_training_views` turns an :class:`AnnotatedTrajectory` (task description, actions,
the observation after each action, sub-goals) into records that all share these keys:

* ``view``: ``"executor"``, ``"planner"`` or ``"first_step"``.
* ``task_id`` (str), ``task`` (the task description).
* ``step``: the number of actions taken before this record's decision.
* ``completed_subgoals`` (list of sub-goal texts finished before the current one).
* ``history``: the last ``history_len`` ``{"action", "observation"}`` pairs before ``step``
  (for the executor: only those of the current sub-goal).
* ``observation``: the latest observation (the initial one at step 0).
* ``prompt`` (str): the rendered input, ready for SFT; ``completion`` (str): the target.

and per view:

* ``executor``: ``subgoal`` (the current sub-goal text); ``completion`` is the next action, or
  ``"END_SG()"`` after the sub-goal's last action (one record per action plus one ``END_SG()``).
* ``planner``: ``completion`` is the next sub-goal's text; one record per sub-goal after the first.
* ``first_step``: the task (and initial observation) to the first sub-goal; one record.

Prompts render as ``Task: ...``, ``Completed sub-goals: ...``, ``History:`` lines of
``> action`` and observation, ``Observation: ...``, and for the executor ``Current sub-goal: ...``,
ending with ``Next action:`` (executor) or ``Next sub-goal:`` (planner, first step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The executor's answer when its sub-goal is done.
END_SUBGOAL = "END_SG()"

_HEATERS = ("stove", "burner", "oven", "blast furnace", "hot plate", "fire pit", "campfire", "lighter")
_COOLERS = ("freezer", "fridge", "refrigerator", "ultra low temperature freezer")
_NAV = re.compile(r"^(open door to|close door to|go to|teleport to) (.+)$")
_QUALIFIER = re.compile(r" in (inventory|the [a-z ]+)$")


@dataclass
class SubGoal:
    """One sub-goal: a function-call text and the contiguous actions it covers.

    Attributes:
        name: The function name (``navigate_to``, ``pick_up``, ``find``, ...).
        args: Its arguments.
        actions: The actions it covers, in order.
        start: Index of its first action in the trajectory.
        end: One past the index of its last action.
    """

    name: str
    args: list[str]
    actions: list[str]
    start: int
    end: int

    @property
    def text(self) -> str:
        """The functional form, e.g. ``fill(metal pot, water)``."""
        return f"{self.name}({', '.join(self.args)})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (see the module docstring)."""
        return {**asdict(self), "text": self.text}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SubGoal:
        """Inverse of :meth:`to_dict`."""
        return cls(record["name"], list(record["args"]), list(record["actions"]), record["start"], record["end"])

    def __str__(self) -> str:
        return f"{self.text} : {self.actions!r}"


@runtime_checkable
class SubgoalAnnotator(Protocol):
    """Anything that splits a task's action sequence into sub-goals (rules, or an LLM agent)."""

    def annotate(self, task: str, actions: Sequence[str]) -> list[SubGoal]:
        """Split ``actions`` (the trajectory of ``task``) into contiguous sub-goals covering all of them."""
        ...


def _strip(ref: str) -> str:
    """An object reference without its location qualifier ("thermometer in inventory" -> "thermometer")."""
    if ref.startswith("substance in "):
        return ref
    return _QUALIFIER.sub("", ref)


def _move_parts(action: str) -> tuple[str, str] | None:
    if not action.startswith("move ") or " to " not in action:
        return None
    src, _, dst = action[5:].rpartition(" to ")
    return _strip(src), _strip(dst)


def _pour_parts(action: str) -> tuple[str, str] | None:
    if not action.startswith("pour "):
        return None
    rest = action[5:]
    sep = " into " if " into " in rest else (" in " if " in " in rest else None)
    if sep is None:
        return None
    src, _, dst = rest.rpartition(sep)
    return _strip(src), _strip(dst)


def _is_search(action: str) -> bool:
    """Actions that look for something: they join the sub-goal that uses what they found."""
    return action in ("look around", "look") or (action.startswith("open ") and not action.startswith("open door"))


def _is_sink_action(action: str) -> bool:
    parts = _move_parts(action)
    return action in ("activate sink", "deactivate sink") or (parts is not None and parts[1] == "sink")


class RuleBasedAnnotator:
    """Rule-based sub-goals for ScienceWorld-style gold paths (both ScienceWorld envs).

    Rules, applied left to right (each sub-goal takes the longest run its rule matches):

    * a run of door/``go to`` actions -> ``navigate_to(last room)``;
    * a run of sink actions (move X to sink, (de)activate sink, pick up X, pours of X) ->
      ``fill(X, water)``, or ``water(pot, ...)`` when the water is poured into flower pots;
    * ``move X to <heater>`` / ``activate <heater>`` -> ``heat(X)``; ``move X to <cooler>`` -> ``cool(X)``;
    * a run of ``use thermometer ... on Y`` / ``examine Y`` (with the ``wait1`` between readings)
      -> ``monitor_temperature(Y)``;
    * a run of waits -> ``wait(n)`` (``n`` actions); ``focus on X`` -> ``focus_on(X)``;
    * ``pick up X`` -> ``pick_up(X)``, or ``find(X)`` when search actions (``look around``,
      ``open <container>``) led to it; search actions otherwise join the next sub-goal, or make
      ``look_around()`` at the end;
    * the simulator's disambiguation answers (``0``, ``1``, ...) join the previous sub-goal;
    * anything else -> ``<verb>(<objects>)`` (``move``, ``pour``, ``mix``, ``read``, ``activate``,
      ``connect``, ``examine``, ...), with repeated identical actions grouped.
    """

    def annotate(self, task: str, actions: Sequence[str]) -> list[SubGoal]:
        """Split ``actions`` into sub-goals; ``task`` is unused by the rules."""
        actions = list(actions)
        goals: list[SubGoal] = []
        pending: list[int] = []  # search actions waiting for the sub-goal that uses them
        i = 0
        while i < len(actions):
            action = actions[i]
            if action.strip().isdigit() and (goals or pending):
                if pending:
                    pending.append(i)
                else:
                    goals[-1].actions.append(action)
                    goals[-1].end = i + 1
                i += 1
                continue
            if _is_search(action):
                pending.append(i)
                i += 1
                continue
            name, args, j = self._match(actions, i)
            start = pending[0] if pending else i
            if pending and name == "pick_up":
                name = "find"
            # Pending search actions are contiguous with i by construction.
            goals.append(SubGoal(name, args, actions[start:j], start, j))
            pending = []
            i = j
        if pending:
            goals.append(SubGoal("look_around", [], actions[pending[0]:], pending[0], len(actions)))
        return goals

    def _match(self, actions: list[str], i: int) -> tuple[str, list[str], int]:
        """The rule that fires at ``i``: ``(name, args, end)``."""
        action = actions[i]
        n = len(actions)
        nav = _NAV.match(action)
        if nav:
            j, room = i, nav.group(2)
            while j < n and (m := _NAV.match(actions[j])):
                if m.group(1) in ("go to", "teleport to"):
                    room = m.group(2)
                j += 1
            has_move = any(_NAV.match(a).group(1) in ("go to", "teleport to") for a in actions[i:j])
            if not has_move:
                verb = "open" if action.startswith("open") else "close"
                rooms = [_NAV.match(a).group(2) for a in actions[i:j]]
                return f"{verb}_door", list(dict.fromkeys(rooms)), j
            return "navigate_to", [room], j
        if _is_sink_action(action):
            return self._match_sink(actions, i)
        move = _move_parts(action)
        if move and move[1] in _HEATERS:
            j = i + 1
            if j < n and actions[j] == f"activate {move[1]}":
                j += 1
            return "heat", [move[0]], j
        if action.startswith("activate ") and action[9:] in _HEATERS:
            return "heat", [action[9:]], i + 1
        if move and move[1] in _COOLERS:
            return "cool", [move[0]], i + 1
        if action.startswith("use thermometer") or (action.startswith("examine ") and self._monitors(actions, i)):
            target = ""
            j = i
            while j < n:
                if actions[j].startswith("use thermometer") or actions[j].startswith("examine "):
                    if actions[j].startswith("use thermometer") and " on " in actions[j]:
                        target = target or _strip(actions[j].split(" on ", 1)[1])
                    j += 1
                    continue
                # Waits between two readings are part of monitoring; trailing waits are wait(n).
                k = j
                while k < n and actions[k] == "wait1":
                    k += 1
                if k > j and k < n and actions[k].startswith("use thermometer"):
                    j = k
                    continue
                break
            return "monitor_temperature", [target or _strip(action[8:])], j
        if action == "wait" or action.startswith("wait"):
            j = i
            while j < n and actions[j].startswith("wait"):
                j += 1
            return "wait", [str(j - i)], j
        if action.startswith("focus on "):
            return "focus_on", [_strip(action[9:])], i + 1
        if action.startswith("pick up "):
            return "pick_up", [_strip(action[8:])], i + 1
        # Generic: verb(objects); identical repeats are one sub-goal.
        j = i + 1
        while j < n and actions[j] == action:
            j += 1
        return (*self._generic(action), j)

    @staticmethod
    def _monitors(actions: list[str], i: int) -> bool:
        """``examine X`` is monitoring when a thermometer reading follows it."""
        return i + 1 < len(actions) and actions[i + 1].startswith("use thermometer")

    def _match_sink(self, actions: list[str], i: int) -> tuple[str, list[str], int]:
        n = len(actions)
        j = i
        filled: list[str] = []
        poured: list[str] = []
        while j < n:
            action = actions[j]
            move = _move_parts(action)
            pour = _pour_parts(action)
            if _is_sink_action(action):
                if move:
                    filled.append(move[0])
            elif action.startswith("pick up ") and _strip(action[8:]) in filled:
                pass
            elif pour and pour[0] in filled and pour[1] != pour[0]:
                poured.append(pour[1])
            else:
                break
            j += 1
        if poured:
            return "water", list(dict.fromkeys(poured)), j
        container = filled[0] if filled else "sink"
        return "fill", [container, "water"], j

    @staticmethod
    def _generic(action: str) -> tuple[str, list[str]]:
        move = _move_parts(action)
        if move:
            return "move", [move[0], move[1]]
        pour = _pour_parts(action)
        if pour:
            return "pour", [pour[0], pour[1]]
        if action.startswith("connect ") and " to " in action:
            a, _, b = action[8:].partition(" to ")
            return "connect", [_strip(a), _strip(b)]
        if action.startswith("look at "):
            return "examine", [_strip(action[8:])]
        words = action.split(" ", 1)
        verb = re.sub(r"[^a-z_]", "_", words[0].lower()) or "act"
        return verb, [_strip(words[1])] if len(words) > 1 else []


def check_annotation(actions: Sequence[str], subgoals: Sequence[SubGoal]) -> None:
    """Raise ``ValueError`` unless ``subgoals`` cover every action exactly once, in order, contiguously."""
    position = 0
    for goal in subgoals:
        if goal.start != position or goal.end - goal.start != len(goal.actions) or not goal.actions:
            raise ValueError(f"sub-goal {goal.text} does not start where the previous one ended ({position})")
        if list(actions[goal.start:goal.end]) != goal.actions:
            raise ValueError(f"sub-goal {goal.text} does not cover actions[{goal.start}:{goal.end}]")
        position = goal.end
    if position != len(actions):
        raise ValueError(f"the sub-goals cover {position} of {len(actions)} actions")


@dataclass
class AnnotatedTrajectory:
    """A trajectory with its sub-goals: what :func:`build_training_views` reads.

    Attributes:
        task_id: The env's ``info["task_id"]``.
        task: The task description.
        initial_observation: The observation on reset.
        actions: The actions taken.
        observations: The observation after each action (same length as ``actions``).
        subgoals: The annotation.
    """

    task_id: str
    task: str
    initial_observation: str
    actions: list[str]
    observations: list[str]
    subgoals: list[SubGoal] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {**asdict(self), "subgoals": [g.to_dict() for g in self.subgoals]}


def _render_context(
    task: str,
    completed_subgoals: Sequence[str],
    history: Sequence[Mapping[str, str]],
    observation: str,
) -> list[str]:
    lines = [f"Task: {task}", "Completed sub-goals: " + ("; ".join(completed_subgoals) or "none")]
    if history:
        lines.append("History:")
        for turn in history:
            lines.append(f"> {turn['action']}")
            lines.append(turn["observation"])
    lines.append(f"Observation: {observation}")
    return lines


def planner_prompt(
    task: str,
    completed_subgoals: Sequence[str] = (),
    history: Sequence[Mapping[str, str]] = (),
    observation: str = "",
) -> str:
    """The planner's input: the context, ending with ``Next sub-goal:``.

    Args:
        task: The task description.
        completed_subgoals: Sub-goal texts finished so far, oldest first.
        history: Recent steps as ``{"action": ..., "observation": ...}`` dicts, oldest first.
        observation: The latest observation.

    Returns:
        The prompt text (see the module docstring for the format); the target is the next
        sub-goal's text, e.g. ``"pick_up(thermometer)"``.
    """
    return "\n".join([*_render_context(task, completed_subgoals, history, observation), "Next sub-goal:"])


def executor_prompt(
    task: str,
    subgoal: str,
    completed_subgoals: Sequence[str] = (),
    history: Sequence[Mapping[str, str]] = (),
    observation: str = "",
) -> str:
    """The executor's input: the context and the current sub-goal, ending with ``Next action:``.

    Args:
        task: The task description.
        subgoal: The sub-goal being executed.
        completed_subgoals: Sub-goal texts finished before it, oldest first.
        history: The current sub-goal's recent steps as ``{"action", "observation"}`` dicts.
        observation: The latest observation.

    Returns:
        The prompt text; the target is the next action, or ``END_SG()`` when the sub-goal is done.
    """
    lines = _render_context(task, completed_subgoals, history, observation)
    return "\n".join([*lines, f"Current sub-goal: {subgoal}", "Next action:"])


def _render(record: dict[str, Any], kind: str) -> str:
    fields = {k: record[k] for k in ("task", "completed_subgoals", "history", "observation")}
    if kind == "executor":
        return executor_prompt(subgoal=record["subgoal"], **fields)
    return planner_prompt(**fields)


def build_training_views(trajectory: AnnotatedTrajectory, history_len: int = 4) -> list[dict[str, Any]]:
    """The first-step, planner and executor records of one annotated trajectory (see module docstring)."""
    check_annotation(trajectory.actions, trajectory.subgoals)
    if len(trajectory.observations) != len(trajectory.actions):
        raise ValueError("observations must hold one observation per action")
    turns = [{"action": a, "observation": o} for a, o in zip(trajectory.actions, trajectory.observations,
                                                              strict=True)]

    def observation_at(step: int) -> str:
        return trajectory.initial_observation if step == 0 else trajectory.observations[step - 1]

    def base(view: str, step: int, completed: list[str], history_from: int) -> dict[str, Any]:
        lo = max(history_from, step - history_len)
        return {"view": view, "task_id": trajectory.task_id, "task": trajectory.task, "step": step,
                "completed_subgoals": list(completed), "history": turns[lo:step],
                "observation": observation_at(step)}

    records: list[dict[str, Any]] = []
    completed: list[str] = []
    for k, goal in enumerate(trajectory.subgoals):
        view = "first_step" if k == 0 else "planner"
        record = base(view, goal.start, completed, 0)
        record["prompt"], record["completion"] = _render(record, view), goal.text
        records.append(record)
        for step in range(goal.start, goal.end + 1):
            record = base("executor", step, completed, goal.start)
            record["subgoal"] = goal.text
            record["prompt"] = _render(record, "executor")
            record["completion"] = trajectory.actions[step] if step < goal.end else END_SUBGOAL
            records.append(record)
        completed.append(goal.text)
    return records


def annotate_gold_trajectory(env: Any, annotator: SubgoalAnnotator | None = None, *, seed: int | None = None,
                             options: dict[str, Any] | None = None) -> AnnotatedTrajectory:
    """Reset ``env`` (a ScienceWorld or MiniScience env), play its gold path, and annotate it.

    The gold path is played until the episode ends; the annotation covers the actions played.
    """
    annotator = annotator or RuleBasedAnnotator()
    initial, info = env.reset(seed=seed, options=options)
    unwrapped = env.unwrapped
    actions, observations = [], []
    for action in unwrapped.gold_actions():
        observation, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        observations.append(observation)
        if terminated or truncated:
            break
    description = initial.split("\n\n", 1)[0]
    subgoals = annotator.annotate(description, actions)
    check_annotation(actions, subgoals)
    return AnnotatedTrajectory(info["task_id"], description, initial, actions, observations, subgoals)
