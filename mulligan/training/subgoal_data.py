"""Sub-goal distillation's data: sub-goal annotation of gold paths and the training views.

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

and trains a planner (context -> sub-goal) and an executor (context + sub-goal -> next action, or
``END_SG()`` when the sub-goal is done).

* Gold paths are ordinary :class:`~mulligan.training.trajectory.Trajectory` objects, played by
  :class:`~mulligan.agents.teachers.science.ScienceOracle` through
  :func:`~mulligan.training.rollout.collect_episodes` (:func:`collect_gold`).
* An annotator is anything with ``annotate(task, actions) -> list[SubGoal]``
  (:class:`SubgoalAnnotator`); :class:`RuleBasedAnnotator` works on the gold paths of both
  ``Mulligan/ScienceWorld-v0`` and ``Mulligan/MiniScience-v0`` offline; :class:`LLMAnnotator` is
  the paper's pipeline with any agent (a served model at T = 0): a functional-format demo, the
  reply's ``verb(args) : {actions}`` spans parsed (:func:`parse_annotation`) and aligned to the
  gold path by dynamic programming (:func:`align_spans`). :func:`check_annotation` verifies that
  an annotation covers every action exactly once, in order.
* :func:`drop_filler_steps` removes ``look around`` and ``close door ...`` steps from a gold
  path, as the paper does before annotating (``--drop_filler_steps``).
* :func:`build_training_views` cuts an :class:`AnnotatedTrajectory` into records that store the
  fields of a decision (the :class:`~mulligan.agents.hierarchical.StepContext`, the sub-goals, the
  target); :func:`render_record` renders them with the agent's own prompt functions, so training
  and inference see the same text by construction.

``SubGoal.to_dict()``::

    {"name": "navigate_to", "args": ["kitchen"], "text": "navigate_to(kitchen)",
     "actions": ["open door to kitchen", "go to kitchen"], "start": 0, "end": 2}

(``start``/``end``: the half-open range of action indices the sub-goal covers.)

Records (one per decision) share ``view`` (``"first_step"``, ``"planner"``, ``"executor"`` or
``"flat"``), ``task_id``, ``task_name``, ``step`` (actions taken before the decision), ``context``
(``StepContext.to_dict()``, its history cut to the last ``history_len`` steps),
``completed_subgoals`` and ``completion`` (the target), and per view:

* ``executor``: ``subgoal``; the target is the next action, or ``END_SG()`` after the sub-goal's
  last action (one record per action plus one ``END_SG()`` per sub-goal).
* ``first_step`` / ``planner``: ``current_subgoal`` (``None`` at the start and after ``END_SG()``);
  the target is the sub-goal being executed. With ``planner_every_step`` (the official controller,
  trained at every step) there is a record at every step of a sub-goal and at the step after its
  last action (where it keeps the sub-goal, so that the executor answers ``END_SG()``); otherwise
  one per sub-goal, at its start.
* ``flat``: the baseline's record, one per action; the target is the action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from mulligan.agents.hierarchical import (
    END_SUBGOAL,
    HISTORY_LEN,
    SemiRandomSubgoals,
    StepContext,
    executor_prompt,
    flat_prompt,
    planner_prompt,
    step_context,
    task_description,
)
from mulligan.training.trajectory import Trajectory

VIEWS = ("first_step", "planner", "executor", "flat")


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

    The paper annotates with GPT-4 (Sec. 3.1); these rules stand in for it offline, and an LLM
    annotator can replace them through :class:`SubgoalAnnotator`.

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
            goals.append(SubGoal("look_around", [], actions[pending[0] :], pending[0], len(actions)))
        return goals

    def _match(self, actions: list[str], i: int) -> tuple[str, list[str], int]:
        """The rule that fires at ``i``: ``(name, args, end)``."""
        action = actions[i]
        if _NAV.match(action):
            return self._match_navigation(actions, i)
        if _is_sink_action(action):
            return self._match_sink(actions, i)
        device = self._match_device(actions, i)
        if device is not None:
            return device
        if action.startswith("use thermometer") or (action.startswith("examine ") and self._monitors(actions, i)):
            return self._match_monitoring(actions, i)
        if action.startswith("wait"):
            j = i
            while j < len(actions) and actions[j].startswith("wait"):
                j += 1
            return "wait", [str(j - i)], j
        if action.startswith("focus on "):
            return "focus_on", [_strip(action[9:])], i + 1
        if action.startswith("pick up "):
            return "pick_up", [_strip(action[8:])], i + 1
        # Generic: verb(objects); identical repeats are one sub-goal.
        j = i + 1
        while j < len(actions) and actions[j] == action:
            j += 1
        return (*self._generic(action), j)

    @staticmethod
    def _match_navigation(actions: list[str], i: int) -> tuple[str, list[str], int]:
        """A run of door and ``go to`` actions: ``navigate_to(last room)``, or ``open_door``/``close_door``."""
        j, room = i, _NAV.match(actions[i]).group(2)
        while j < len(actions) and (m := _NAV.match(actions[j])):
            if m.group(1) in ("go to", "teleport to"):
                room = m.group(2)
            j += 1
        if not any(_NAV.match(a).group(1) in ("go to", "teleport to") for a in actions[i:j]):
            verb = "open" if actions[i].startswith("open") else "close"
            rooms = [_NAV.match(a).group(2) for a in actions[i:j]]
            return f"{verb}_door", list(dict.fromkeys(rooms)), j
        return "navigate_to", [room], j

    @staticmethod
    def _match_device(actions: list[str], i: int) -> tuple[str, list[str], int] | None:
        """``heat(X)`` / ``cool(X)`` for moves to heaters or coolers and heater activations, else ``None``."""
        action = actions[i]
        move = _move_parts(action)
        if move and move[1] in _HEATERS:
            j = i + 1
            if j < len(actions) and actions[j] == f"activate {move[1]}":
                j += 1
            return "heat", [move[0]], j
        if action.startswith("activate ") and action[9:] in _HEATERS:
            return "heat", [action[9:]], i + 1
        if move and move[1] in _COOLERS:
            return "cool", [move[0]], i + 1
        return None

    @staticmethod
    def _match_monitoring(actions: list[str], i: int) -> tuple[str, list[str], int]:
        """Thermometer readings and examinations, with the waits between readings."""
        n = len(actions)
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
        return "monitor_temperature", [target or _strip(actions[i][8:])], j

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
        if list(actions[goal.start : goal.end]) != goal.actions:
            raise ValueError(f"sub-goal {goal.text} does not cover actions[{goal.start}:{goal.end}]")
        position = goal.end
    if position != len(actions):
        raise ValueError(f"the sub-goals cover {position} of {len(actions)} actions")


# ---------------------------------------------------------------------- the LLM annotator
#: Actions the paper removes from gold paths before annotating (official ``create_samples``).
FILLER_ACTIONS = ("look around",)
FILLER_PREFIXES = ("close door",)


def is_filler_action(action: str) -> bool:
    """Whether the paper drops ``action`` from gold paths: ``look around`` and ``close door ...``."""
    action = action.strip()
    return action in FILLER_ACTIONS or action.startswith(FILLER_PREFIXES)


def drop_filler_steps(trajectory: Trajectory) -> Trajectory:
    """``trajectory`` without its ``look around`` and ``close door ...`` steps (the paper's gold paths).

    A dropped step takes its result with it, as when the official code removes it from the gold
    path's list of (action, observation) steps: the observation shown before the next kept action
    is the one that answered the previous kept action. Scores and rewards of the kept steps stay
    as recorded. A trajectory with nothing to drop is returned unchanged.
    """
    if not any(is_filler_action(turn.action) for turn in trajectory.turns):
        return trajectory
    kept = []
    pending: str | None = None  # the answer of the last kept action, while filler steps are skipped
    for turn in trajectory.turns:
        if is_filler_action(turn.action):
            if pending is None:
                pending = turn.observation
            continue
        kept.append(turn if pending is None else replace(turn, observation=pending))
        pending = None
    final = pending if pending is not None else trajectory.final_observation
    return replace(trajectory, turns=kept, final_observation=final)


#: The system message of :class:`LLMAnnotator` (the paper's instruction, in mulligan's words).
ANNOTATION_INSTRUCTIONS = (
    "You split a successful sequence of text-game actions into high-level sub-goals. Write each "
    "sub-goal as a function call, verb(argument) or verb(argument, argument), followed by a colon "
    "and, in braces, the actions it covers, separated by commas. Put one sub-goal per line, "
    "numbered as '1- ', '2- ', ... Cover every action exactly once, in the given order, copying "
    "each action exactly."
)

#: The demonstration shown before every request: ``(task, actions, [(sub-goal, actions), ...])``.
ANNOTATION_DEMO: tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]] = (
    "Your task is to find an animal and move it to the red box in the kitchen. First, focus on the animal.",
    (
        "open door to outside",
        "go to outside",
        "focus on turtle",
        "pick up turtle",
        "open door to kitchen",
        "go to kitchen",
        "move turtle to red box",
    ),
    (
        ("navigate_to(outside)", ("open door to outside", "go to outside")),
        ("focus_on(turtle)", ("focus on turtle",)),
        ("pick_up(turtle)", ("pick up turtle",)),
        ("navigate_to(kitchen)", ("open door to kitchen", "go to kitchen")),
        ("move(turtle, red box)", ("move turtle to red box",)),
    ),
)


def annotation_request(task: str, actions: Sequence[str]) -> str:
    """The user message that asks for the sub-goals of ``actions``."""
    return f"Task: {task}\nActions: " + ", ".join(actions) + "\nSub-goals:"


def format_annotation(spans: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Spans in the functional format the annotator asks for (one numbered line per sub-goal)."""
    return "\n".join(f"{k}- {text} : {{{', '.join(actions)}}}" for k, (text, actions) in enumerate(spans, 1))


_SPAN = re.compile(r"(?:^|\s)\d+\s*[-.)]\s*(?P<subgoal>[^{}\n]+?)\s*:\s*\{(?P<actions>[^{}]*)\}", re.MULTILINE)


def parse_annotation(text: str) -> list[tuple[str, list[str]]]:
    """The ``(sub-goal, actions)`` spans of an annotator reply: numbered ``verb(args) : {a, b}`` entries.

    Actions are split on commas, stripped of spaces and quotes; empty ones are dropped, and so is a
    span with no action. Anything between entries is ignored.
    """
    spans = []
    for match in _SPAN.finditer(text):
        actions = [a.strip().strip("'\"").strip() for a in match.group("actions").split(",")]
        actions = [a for a in actions if a]
        if actions:
            spans.append((match.group("subgoal").strip(), actions))
    return spans


def align_spans(gold: Sequence[str], spans: Sequence[tuple[str, Sequence[str]]]) -> list[int | None]:
    """For each gold action, the index of the span whose action it is aligned to (``None``: unmatched).

    Dynamic programming over insertions and deletions (the official ``find_mismatched``): the
    alignment keeps the most actions of the reply that equal gold actions, in order; actions the
    reply invented are dropped and gold actions it missed stay unmatched. Ties prefer matching the
    earliest reply action.
    """
    listed = [(k, a.strip()) for k, (_, actions) in enumerate(spans) for a in actions]
    gold = [g.strip() for g in gold]
    n, m = len(gold), len(listed)
    # best[i][j]: most matches aligning gold[i:] with listed[j:].
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = max(best[i + 1][j], best[i][j + 1])
            if gold[i] == listed[j][1]:
                best[i][j] = max(best[i][j], best[i + 1][j + 1] + 1)
    owner: list[int | None] = [None] * n
    i = j = 0
    while i < n and j < m:
        if gold[i] == listed[j][1] and best[i][j] == best[i + 1][j + 1] + 1:
            owner[i] = listed[j][0]
            i, j = i + 1, j + 1
        elif best[i][j] == best[i][j + 1]:
            j += 1  # an action the reply invented (or placed elsewhere)
        else:
            i += 1  # a gold action the reply missed
    return owner


class LLMAnnotator:
    """Sub-goals from a language model, as the paper annotates with GPT-4 (Sec. 3.1).

    The model sees :data:`ANNOTATION_INSTRUCTIONS` as the system message, one demonstration
    (:data:`ANNOTATION_DEMO`, functional format) as a user/assistant exchange, then the task and
    its gold actions. Its reply's spans (:func:`parse_annotation`) are aligned to the gold path by
    dynamic programming (:func:`align_spans`): a gold action missed alone joins the sub-goal before
    it (or after it, at the start); a run of two or more missed actions is sent back to the model
    for its own sub-goals (the official ``create_prompt_inmiddle``), once, and joins the sub-goal
    before it if the second answer does not cover it either. The result always covers the gold
    path (:func:`check_annotation`).

    Args:
        agent: Any agent: ``load_agent("openai:gpt-4o", temperature=0.0)``, a local model, or a
            scripted agent in tests. Build it with temperature 0, as the paper queries GPT-4.
        demo: The demonstration ``(task, actions, spans)``.
        instructions: The system message.
        reask_missing: Ask the model again about runs of two or more gold actions its reply missed.
        fallback: Annotator used when the reply has no span at all (``None``: raise ``ValueError``).

    Raises:
        ValueError: From :meth:`annotate`, when the reply holds no span and there is no fallback.
    """

    def __init__(
        self,
        agent: Any,
        *,
        demo: tuple[str, Sequence[str], Sequence[tuple[str, Sequence[str]]]] = ANNOTATION_DEMO,
        instructions: str = ANNOTATION_INSTRUCTIONS,
        reask_missing: bool = True,
        fallback: SubgoalAnnotator | None = None,
    ):
        self.agent = agent
        self.demo = demo
        self.instructions = instructions
        self.reask_missing = reask_missing
        self.fallback = fallback

    def messages(self, task: str, actions: Sequence[str]) -> list[dict[str, str]]:
        """The conversation sent to the model for ``actions``."""
        demo_task, demo_actions, demo_spans = self.demo
        return [
            {"role": "system", "content": self.instructions},
            {"role": "user", "content": annotation_request(demo_task, demo_actions)},
            {"role": "assistant", "content": format_annotation(demo_spans)},
            {"role": "user", "content": annotation_request(task, actions)},
        ]

    def _ask(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[tuple[str, list[str]]]]:
        from mulligan.agents.base import AgentInput

        if not requests:
            return []
        replies = self.agent.act([AgentInput(self.messages(task, actions)) for task, actions in requests])
        return [parse_annotation(reply.text) for reply in replies]

    def annotate(self, task: str, actions: Sequence[str]) -> list[SubGoal]:
        """Split ``actions`` into sub-goals with the model (class docstring)."""
        return self.annotate_many([(task, actions)])[0]

    def annotate_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[SubGoal]]:
        """:meth:`annotate` for many gold paths, with one batched call to the agent per round."""
        items = [(task, list(actions)) for task, actions in items]
        replies = self._ask(items)
        spans: list[list[tuple[str, list[str]]]] = []
        owners: list[list[int | None]] = []
        for (task, actions), reply in zip(items, replies, strict=True):
            parsed = list(reply)
            if not parsed and actions:
                if self.fallback is None:
                    raise ValueError(f"the annotator's reply has no 'verb(args) : {{actions}}' span for task {task!r}")
                parsed = [(g.text, list(g.actions)) for g in self.fallback.annotate(task, actions)]
            spans.append(parsed)
            owners.append(align_spans(actions, parsed))
        if self.reask_missing:
            self._reask(items, spans, owners)
        return [_subgoals(actions, s, o) for (_, actions), s, o in zip(items, spans, owners, strict=True)]

    def _reask(self, items: list, spans: list, owners: list) -> None:
        """Ask again about runs of >= 2 unmatched gold actions; their aligned answers fill the runs."""
        requests, places = [], []
        for k, ((task, actions), owner) in enumerate(zip(items, owners, strict=True)):
            for start, end in _unmatched_runs(owner):
                if end - start >= 2:
                    requests.append((task, actions[start:end]))
                    places.append((k, start))
        for (k, start), (_, run), answer in zip(places, requests, self._ask(requests), strict=True):
            offset = len(spans[k])
            spans[k].extend(answer)
            for j, index in enumerate(align_spans(run, answer)):
                if index is not None:
                    owners[k][start + j] = offset + index


def _unmatched_runs(owner: Sequence[int | None]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, index in enumerate([*owner, 0]):
        if index is None and start is None:
            start = i
        elif index is not None and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _subgoals(actions: Sequence[str], spans: Sequence[tuple[str, Sequence[str]]], owner: list) -> list[SubGoal]:
    """Contiguous sub-goals from each gold action's span; unmatched actions join the previous span."""
    from mulligan.agents.hierarchical import split_subgoal

    owner = list(owner)
    for i in range(len(owner)):  # a missed action joins the sub-goal before it ...
        if owner[i] is None and i > 0:
            owner[i] = owner[i - 1]
    for i in range(len(owner) - 1, -1, -1):  # ... or, at the start, the one after it
        if owner[i] is None and i + 1 < len(owner):
            owner[i] = owner[i + 1]
    goals: list[SubGoal] = []
    for i, action in enumerate(actions):
        if goals and owner[i] == owner[i - 1]:
            goals[-1].actions.append(action)
            goals[-1].end = i + 1
            continue
        name, args = split_subgoal(spans[owner[i]][0]) if owner[i] is not None else ("act", [])
        goals.append(SubGoal(name, args, [action], i, i + 1))
    check_annotation(actions, goals)
    return goals


@dataclass
class AnnotatedTrajectory:
    """A gold trajectory with its sub-goals: what :func:`build_training_views` reads.

    Attributes:
        trajectory: The episode, as :func:`~mulligan.training.rollout.collect_episodes` records it.
        subgoals: The annotation of its actions.
    """

    trajectory: Trajectory
    subgoals: list[SubGoal] = field(default_factory=list)

    @property
    def actions(self) -> list[str]:
        """The actions taken."""
        return [turn.action for turn in self.trajectory.turns]

    @property
    def task(self) -> str:
        """The task description (the first observation's first paragraph)."""
        turns = self.trajectory.turns
        return task_description(turns[0].observation if turns else self.trajectory.final_observation)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"trajectory": self.trajectory.to_dict(), "subgoals": [g.to_dict() for g in self.subgoals]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> AnnotatedTrajectory:
        """Inverse of :meth:`to_dict`."""
        return cls(Trajectory.from_dict(dict(record["trajectory"])), [SubGoal.from_dict(g) for g in record["subgoals"]])


def annotate(trajectory: Trajectory, annotator: SubgoalAnnotator | None = None) -> AnnotatedTrajectory:
    """Annotate a gold trajectory (rule-based by default) and check the annotation."""
    return annotate_all([trajectory], annotator)[0]


def annotate_all(
    trajectories: Sequence[Trajectory], annotator: SubgoalAnnotator | None = None, *, drop_filler: bool = False
) -> list[AnnotatedTrajectory]:
    """Annotate gold trajectories (rule-based by default) and check every annotation.

    Args:
        trajectories: Gold paths (cut with :func:`gold_prefix` where needed).
        annotator: Any :class:`SubgoalAnnotator`; one with ``annotate_many`` (the
            :class:`LLMAnnotator`) gets all paths in one batched call.
        drop_filler: Remove ``look around`` and ``close door ...`` steps first
            (:func:`drop_filler_steps`), as the paper does.
    """
    annotator = annotator or RuleBasedAnnotator()
    kept = [drop_filler_steps(t) if drop_filler else t for t in trajectories]
    out = [AnnotatedTrajectory(t) for t in kept if t.turns]
    requests = [(a.task, a.actions) for a in out]
    many = getattr(annotator, "annotate_many", None)
    annotations = many(requests) if many is not None else [annotator.annotate(t, acts) for t, acts in requests]
    for annotated, subgoals in zip(out, annotations, strict=True):
        annotated.subgoals = list(subgoals)
        check_annotation(annotated.actions, annotated.subgoals)
    return out


def step_contexts(trajectory: Trajectory) -> list[StepContext]:
    """The context before each action of ``trajectory``, and after the last (``len(turns) + 1`` items).

    Built from what the rollout recorded, exactly as the agents build it from the conversation and
    ``info`` (:func:`~mulligan.agents.hierarchical.context_of`): the observation that answered each
    action, the score after it (``info["score"]``), and ``info["look"]`` / ``info["inventory"]``
    after the previous action; at the first step the room part of the first observation and the
    task record's ``initial_inventory``.
    """
    turns = trajectory.turns
    if not turns:
        raise ValueError(f"trajectory {trajectory.task_id} has no turns: there is nothing to learn from")
    first = turns[0].observation
    answers = [
        turns[k + 1].observation if k + 1 < len(turns) else trajectory.final_observation for k in range(len(turns))
    ]
    steps = [{"action": turn.action, "observation": answer} for turn, answer in zip(turns, answers, strict=True)]
    scores = [float(turn.info.get("score", 0.0)) for turn in turns]
    task = task_description(first)
    contexts = []
    for t in range(len(turns) + 1):
        if t == 0:
            look, inventory = None, str((trajectory.task or {}).get("initial_inventory", ""))
        else:
            info = turns[t - 1].info
            look, inventory = info.get("look") or None, str(info.get("inventory", ""))
        contexts.append(step_context(task, first, steps[:t], scores[:t], look=look, inventory=inventory))
    return contexts


def _trimmed(context: StepContext, history_len: int) -> dict[str, Any]:
    record = context.to_dict()
    record["history"] = record["history"][max(0, len(record["history"]) - history_len) :] if history_len else []
    return record


def build_training_views(
    annotated: AnnotatedTrajectory, history_len: int = HISTORY_LEN, *, planner_every_step: bool = True
) -> list[dict[str, Any]]:
    """The first-step, planner, executor and flat records of one annotated trajectory (module docstring)."""
    trajectory, goals = annotated.trajectory, annotated.subgoals
    actions = annotated.actions
    check_annotation(actions, goals)
    contexts = step_contexts(trajectory)
    task_name = str((trajectory.task or {}).get("task_name", ""))

    def record(view: str, step: int, completed: Sequence[str], completion: str, **extra: Any) -> dict[str, Any]:
        return {
            "view": view,
            "task_id": trajectory.task_id,
            "task_name": task_name,
            "step": step,
            "context": _trimmed(contexts[step], history_len),
            "completed_subgoals": list(completed),
            "completion": completion,
            **extra,
        }

    records: list[dict[str, Any]] = []
    for k, goal in enumerate(goals):
        completed = [g.text for g in goals[:k]]
        # The planner: at the sub-goal's start (no current sub-goal: the start, or after END_SG()),
        # and, as the official controller is trained, at every later step of it too, including the
        # step after its last action, where it keeps the sub-goal so that the executor ends it.
        last = min(goal.end, len(actions) - 1) if planner_every_step else goal.start
        planner_steps = range(goal.start, last + 1)
        for step in planner_steps:
            view = "first_step" if step == 0 else "planner"
            current = None if step == goal.start else goal.text
            records.append(record(view, step, completed, goal.text, current_subgoal=current))
        for step in range(goal.start, goal.end + 1):
            target = actions[step] if step < goal.end else END_SUBGOAL
            records.append(record("executor", step, completed, target, subgoal=goal.text))
    for step, action in enumerate(actions):
        records.append(record("flat", step, [], action))
    return records


def render_record(record: Mapping[str, Any], history_len: int = HISTORY_LEN) -> str:
    """The prompt of a training record, rendered by the agents' own prompt functions.

    Raises:
        ValueError: For an unknown ``view``.
    """
    context = StepContext.from_dict(record["context"])
    view = record["view"]
    if view == "executor":
        return executor_prompt(context, record["subgoal"], record["completed_subgoals"], history_len)
    if view in ("planner", "first_step"):
        return planner_prompt(context, record["completed_subgoals"], record["current_subgoal"], history_len)
    if view == "flat":
        return flat_prompt(context, history_len)
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


def distillation_conversations(
    annotated: Sequence[AnnotatedTrajectory],
    history_len: int = HISTORY_LEN,
    *,
    planner_every_step: bool = True,
    separate_first_step: bool = False,
) -> dict[str, list[list[dict[str, str]]]]:
    """Planner, executor and flat SFT conversations (prompt as ``user``, target as ``assistant``).

    Args:
        annotated: The annotated gold paths.
        history_len: Steps of history in the prompts.
        planner_every_step: Planner records at every step (the official controller).
        separate_first_step: Put the ``first_step`` records (step 0) under their own key, the
            training data of the paper's first-sub-goal generator, instead of the planner's.

    Returns:
        ``{"planner": [...], "executor": [...], "flat": [...]}`` (and ``"first_step"`` with
        ``separate_first_step``); otherwise the planner's list holds the ``first_step`` and
        ``planner`` records.
    """
    out: dict[str, list[list[dict[str, str]]]] = {"planner": [], "executor": [], "flat": []}
    if separate_first_step:
        out["first_step"] = []
    for trajectory in annotated:
        for record in build_training_views(trajectory, history_len, planner_every_step=planner_every_step):
            role = record["view"]
            if role == "first_step" and not separate_first_step:
                role = "planner"
            out[role].append(
                [
                    {"role": "user", "content": render_record(record, history_len)},
                    {"role": "assistant", "content": record["completion"]},
                ]
            )
    return out


def subgoal_vocabulary(annotated: Sequence[AnnotatedTrajectory]) -> list[str]:
    """Every distinct sub-goal text of the annotations, in first-seen order (the ``rand`` ablation's pool)."""
    return list(dict.fromkeys(g.text for a in annotated for g in a.subgoals))


def semi_random_pools(annotated: Sequence[AnnotatedTrajectory]) -> SemiRandomSubgoals:
    """The rooms and objects the ``semi-rand`` ablation draws arguments from.

    Rooms: the arguments of ``navigate_to``/``open_door``/``close_door`` sub-goals; objects: every
    other argument of the annotations (the official code draws objects from the simulator's
    ``getPossibleObjects()`` and rooms from a fixed list of six).
    """
    rooms: dict[str, None] = {}
    objects: dict[str, None] = {}
    for trajectory in annotated:
        for goal in trajectory.subgoals:
            target = rooms if goal.name in ("navigate_to", "open_door", "close_door") else objects
            target.update(dict.fromkeys(a for a in goal.args if a))
    objects = {k: None for k in objects if k not in rooms}
    return SemiRandomSubgoals(tuple(rooms), tuple(objects))


def gold_prefix(trajectory: Trajectory) -> Trajectory:
    """``trajectory`` cut to its gold path: the oracle's turns after the path ran out are dropped."""
    gold = (trajectory.task or {}).get("gold_actions")
    if isinstance(gold, list) and len(trajectory.turns) > len(gold):
        kept = trajectory.turns[: len(gold)]
        final = trajectory.turns[len(gold)].observation
        last = kept[-1].info if kept else {}
        return replace(
            trajectory,
            turns=kept,
            final_observation=final,
            success=bool(last.get("success", False)),
            score=float(last.get("score", 0.0)),
            episode_return=float(sum(t.reward for t in kept)),
            truncated=True,
        )
    return trajectory


def collect_gold(
    env: Any,
    num_tasks: int,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    annotator: SubgoalAnnotator | None = None,
    num_envs: int = 1,
    progress: bool = False,
    drop_filler: bool = False,
) -> list[AnnotatedTrajectory]:
    """Play the gold paths of ``num_tasks`` tasks with :class:`ScienceOracle` and annotate them.

    Args:
        env: An env id (``Mulligan/MiniScience-v0`` or ``Mulligan/ScienceWorld-v0``) or a pool
            that :func:`~mulligan.training.rollout.collect_episodes` accepts.
        num_tasks: Gold paths to play (tasks chosen with ``seed``).
        env_kwargs: Keyword arguments of the env.
        seed: Seed of the task choice.
        annotator: The sub-goal annotator (rule-based by default).
        num_envs: Envs run side by side.
        progress: Show a progress bar.
        drop_filler: Remove ``look around`` and ``close door ...`` steps before annotating (the paper).
    """
    from mulligan.agents.teachers.science import ScienceOracle
    from mulligan.training.rollout import collect_episodes

    trajectories = collect_episodes(
        env,
        ScienceOracle(),
        num_tasks,
        env_kwargs=dict(env_kwargs or {}),
        seed=seed,
        num_envs=num_envs,
        progress=progress,
    )
    return annotate_all([gold_prefix(t) for t in trajectories if t.turns], annotator, drop_filler=drop_filler)
