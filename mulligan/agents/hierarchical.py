"""``HierarchicalAgent``: sub-goal distillation's controller and executor (arXiv 2405.02749).

Two policies share the work (Section 3 of the paper):

* the **planner** (the paper's *controller*) reads the context and emits the current sub-goal as a
  function call, e.g. ``navigate_to(kitchen)`` or ``pick_up(thermometer)``;
* the **executor** reads the same context plus the current sub-goal and emits the next elementary
  action, or ``END_SG()`` when the sub-goal is done.

This module is the single definition of what the models see: :func:`planner_prompt`,
:func:`executor_prompt` and :func:`flat_prompt` (the flat baseline of
:class:`~mulligan.agents.flat.FlatAgent`) render a :class:`StepContext`; the sub-goal trainer
(:mod:`mulligan.training.subgoal_data`) renders its training data with the same functions.

Context (the official ``compose_instance_v4_sg``)
-------------------------------------------------
Every prompt shows what the official executor input shows: the task, the time step and the score,
the last ``history_len`` (10) steps as ``action (+reward) --> observation``, the current room
(``look around``), the inventory and the rooms visited so far. The flat baseline sees exactly this
context without the sub-goal lines (the official ``compose_instance_v4``), so a comparison is not
won by a baseline that sees less. Newlines inside texts are flattened to `` | `` as the official
``sanitizeStr`` does, so every field is one line::

    Task: <task description>
    Time: 3; Score: 25
    Completed sub-goals: navigate_to(kitchen); pick_up(thermometer)     ("none" when empty)
    Current sub-goal: heat(metal pot)                                    ("none" for the planner after END_SG())
    Action history:                                                      (" none" at the first step)
    > open door to kitchen (+0) --> The door is now open.
    > go to kitchen (+8) --> You move to the kitchen.
    Current environment: This room is called the kitchen. | ...
    Current inventory: In your inventory, you see: | a thermometer
    Visited rooms: hallway, kitchen
    Next action:                                                         (planner: "Next sub-goal:")

``look`` and ``inventory`` come from the env's ``info`` (``Mulligan/ScienceWorld-v0`` and
``Mulligan/MiniScience-v0`` provide them; they are free actions in ScienceWorld); rewards come from
the score in ``info`` on each turn; visited rooms from the observations.

Protocol
--------
With ``planner_every_step=True`` (the official agent, the default) the planner is queried before
every action; when its answer differs from the current sub-goal, the current one joins the completed
list. With ``False`` it is queried only at the start and after ``END_SG()``. ``END_SG()`` never
reaches the env: within the same :meth:`HierarchicalAgent.act` call the finished sub-goal joins the
completed list, the planner is asked again, and the executor too, at most ``max_subgoals_per_act``
planner calls per env and call.

The agent keeps, per conversation, the completed sub-goals, the current one and the score after
each step (for the rewards in the history): after returning an action it files that state under the
conversation extended by the action, and finds it again on the next call under the conversation
minus its latest observation. A conversation it has not seen starts from an empty state.

What is recorded
----------------
Each action carries the executor's completion ids and log-probabilities and, as its
:class:`~mulligan.agents.base.ContextRecord`, what the executor saw: its system prompt (if any) and
the rendered prompt in place of the latest observation, nothing else of the conversation
(:func:`prompt_context`), so that a trainer rebuilds the executor's exact input from the trajectory.
The policies receive the rollout's per-input seed.

Ablations and the oracle (official ``evaluation/agent.py``, ``--mode_sg``)
-----------------------------------------------------------------------
``random_subgoals`` is the official ``rand`` mode: every 10th step the planner's sub-goal is
replaced by one drawn from all training sub-goals. ``semi_random`` is ``semi-rand``: every 10th
step each argument of the planner's sub-goal is replaced by a random room (when it is a room) or a
random object (:func:`semi_random_subgoal`); the official code draws objects from
``env.getPossibleObjects()``, mulligan from the arguments of the training annotations
(:class:`SemiRandomSubgoals`), which works for every env. :class:`OraclePlanner` is a planner that
knows the gold path: it answers the gold annotation's sub-goal for the next gold action the
episode has not yet taken, so the hierarchical agent measures the executor under oracle
sub-goals. ``first_planner`` answers the first query of an episode (the paper's separate
first-sub-goal generator).

Invalid actions
---------------
When the env lists its valid actions in ``info["valid_actions"]`` and the executor's action is not
among them, the action sent is the first valid one among its other beams (``beam_candidates``, the
official top-5 check), else the most similar valid one (:func:`most_similar_action`: ``difflib``
by default, or the cosine similarity of an embedding function, the paper's SBERT).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message, rewritten_context
from mulligan.agents.context import split_head

__all__ = [
    "END_SUBGOAL",
    "HISTORY_LEN",
    "HierarchicalAgent",
    "OraclePlanner",
    "SemiRandomSubgoals",
    "StepContext",
    "executor_prompt",
    "flat_prompt",
    "is_end_subgoal",
    "most_similar_action",
    "parse_steps",
    "planner_prompt",
    "semi_random_subgoal",
    "split_subgoal",
    "step_context",
    "string_similarity",
    "task_description",
]

#: The executor's answer when its sub-goal is done.
END_SUBGOAL = "END_SG()"
#: Steps of history in every prompt (the official ``recent_actions[-10:]``).
HISTORY_LEN = 10
#: How often the official ``rand`` ablation replaces the controller's sub-goal by a random one.
RANDOM_SUBGOAL_EVERY = 10

#: Embeds texts as vectors, for embedding-based action mapping.
EmbedFunction = Callable[[Sequence[str]], Sequence[Sequence[float]]]

_MOVED = re.compile(r"move to the ([^.\n]+)\.")
_ROOM = re.compile(r"This room is called the ([^.\n]+)\.")


# ---------------------------------------------------------------------- the context
@dataclass
class StepContext:
    """What the sub-goal paper's agents see before one action (the official composer's inputs).

    Attributes:
        task: The task description.
        step: Actions taken so far (the prompt shows ``Time: step + 1``).
        score: The score so far, in points (0-100).
        history: Every step so far as ``{"action", "reward" (points), "observation"}``, oldest
            first; prompts show the last ``history_len``.
        look: The current room's description (``look around``).
        inventory: The inventory listing.
        visited_rooms: Rooms visited so far, in order of first visit.
    """

    task: str
    step: int = 0
    score: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    look: str = ""
    inventory: str = ""
    visited_rooms: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> StepContext:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})


def task_description(first_observation: str) -> str:
    """The task part of a ScienceWorld-style first observation: its first paragraph."""
    return first_observation.split("\n\n", 1)[0]


def _room_part(first_observation: str) -> str:
    """The room description of a ScienceWorld-style first observation (after the task paragraph)."""
    parts = first_observation.split("\n\n", 1)
    return parts[1] if len(parts) > 1 else ""


def visited_rooms(observations: Sequence[str]) -> list[str]:
    """Rooms named by ``You move to the X.`` or ``This room is called the X.``, in order of first mention.

    The official ``add_current_place`` reads the same two phrases.
    """
    rooms: list[str] = []
    for text in observations:
        for match in sorted([*_MOVED.finditer(text), *_ROOM.finditer(text)], key=lambda m: m.start()):
            room = match.group(1).strip()
            if room and room not in rooms:
                rooms.append(room)
    return rooms


def parse_steps(messages: Sequence[Message]) -> tuple[str, list[dict[str, str]], str]:
    """Split a conversation into ``(first observation, steps, latest observation)``.

    Args:
        messages: An env conversation: optional system messages, the first observation as a user
            message, then assistant actions each answered by a user observation.

    Returns:
        The first observation, the steps as ``{"action", "observation"}`` dicts (the observation
        that answered each action; ``""`` for an unanswered last action), and the latest
        observation (the first one when no action was taken).
    """
    head, rest = split_head(messages)
    first = head[-1]["content"] if head and head[-1]["role"] == "user" else ""
    steps = []
    for k, message in enumerate(rest):
        if message["role"] == "assistant":
            following = rest[k + 1]["content"] if k + 1 < len(rest) and rest[k + 1]["role"] == "user" else ""
            steps.append({"action": message["content"], "observation": following})
    latest = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else first
    return first, steps, latest


def step_context(
    task: str,
    first_observation: str,
    steps: Sequence[Mapping[str, str]],
    scores: Sequence[float],
    *,
    look: str | None = None,
    inventory: str = "",
) -> StepContext:
    """The context before the next action, from the episode so far.

    Args:
        task: The task description.
        first_observation: The observation on reset (its room part is the look at step 0).
        steps: The steps so far as ``{"action", "observation"}`` dicts.
        scores: The score (in [0, 1]) after each step; missing entries count as unchanged.
        look: The current room description (``info["look"]``); ``None`` uses the first
            observation's room part at step 0 and ``""`` later.
        inventory: The inventory listing (``info["inventory"]``).

    Returns:
        The :class:`StepContext`; rewards are score changes in points, as the official agent shows.
    """
    points = [0]
    for k in range(len(steps)):
        points.append(round(100 * float(scores[k])) if k < len(scores) else points[-1])
    history = [
        {"action": step["action"], "reward": points[k + 1] - points[k], "observation": step["observation"]}
        for k, step in enumerate(steps)
    ]
    if look is None:
        look = _room_part(first_observation) if not steps else ""
    rooms = visited_rooms([first_observation, *(s["observation"] for s in steps), look])
    return StepContext(task, len(steps), points[-1], history, look, inventory, rooms)


# ---------------------------------------------------------------------- the prompts
def one_line(text: str) -> str:
    """``text`` with newlines and tabs as `` | `` (the official ``sanitizeStr``), stripped."""
    return text.replace("\n\t", " | ").replace("\n", " | ").replace("\t", " | ").strip()


def _context_lines(context: StepContext, history_len: int, subgoal_lines: Sequence[str]) -> list[str]:
    lines = [f"Task: {one_line(context.task)}", f"Time: {context.step + 1}; Score: {context.score}"]
    lines += subgoal_lines
    shown = context.history[max(0, len(context.history) - history_len) :] if history_len else []
    lines.append("Action history:" + ("" if shown else " none"))
    for turn in shown:
        lines.append(f"> {one_line(turn['action'])} ({int(turn['reward']):+d}) --> {one_line(turn['observation'])}")
    lines.append(f"Current environment: {one_line(context.look)}")
    lines.append(f"Current inventory: {one_line(context.inventory)}")
    lines.append("Visited rooms: " + (", ".join(context.visited_rooms) or "none"))
    return lines


def _completed_line(completed: Sequence[str]) -> str:
    return "Completed sub-goals: " + ("; ".join(completed) or "none")


def planner_prompt(
    context: StepContext,
    completed_subgoals: Sequence[str] = (),
    current_subgoal: str | None = None,
    history_len: int = HISTORY_LEN,
) -> str:
    """The planner's (controller's) input, ending with ``Next sub-goal:``.

    Args:
        context: The context before the next action.
        completed_subgoals: Sub-goal texts finished so far, oldest first.
        current_subgoal: The sub-goal being executed, or ``None`` (start, or after ``END_SG()``).
        history_len: Steps of history shown.

    Returns:
        The prompt (see the module docstring); the target is the sub-goal for the next action.
    """
    subgoal_lines = [_completed_line(completed_subgoals), f"Current sub-goal: {current_subgoal or 'none'}"]
    return "\n".join([*_context_lines(context, history_len, subgoal_lines), "Next sub-goal:"])


def executor_prompt(
    context: StepContext,
    subgoal: str,
    completed_subgoals: Sequence[str] = (),
    history_len: int = HISTORY_LEN,
) -> str:
    """The executor's input, ending with ``Next action:``.

    Args:
        context: The context before the next action.
        subgoal: The sub-goal being executed.
        completed_subgoals: Sub-goal texts finished before it, oldest first.
        history_len: Steps of history shown.

    Returns:
        The prompt; the target is the next action, or ``END_SG()`` when the sub-goal is done.
    """
    subgoal_lines = [_completed_line(completed_subgoals), f"Current sub-goal: {subgoal}"]
    return "\n".join([*_context_lines(context, history_len, subgoal_lines), "Next action:"])


def flat_prompt(context: StepContext, history_len: int = HISTORY_LEN) -> str:
    """The flat baseline's input: the executor's context without sub-goals, ending with ``Next action:``."""
    return "\n".join([*_context_lines(context, history_len, ()), "Next action:"])


# ---------------------------------------------------------------------- sub-goal texts
_CALL = re.compile(r"^\s*([^()]*?)\s*\((.*)\)\s*$")


def split_subgoal(text: str) -> tuple[str, list[str]]:
    """``(name, args)`` of a functional sub-goal ``name(a, b)``; ``(text, [])`` when it is not one."""
    match = _CALL.match(text)
    if match is None:
        return text.strip(), []
    inner = match.group(2).strip()
    return match.group(1), [a.strip() for a in inner.split(",")] if inner else []


@dataclass(frozen=True)
class SemiRandomSubgoals:
    """The pools of the official ``semi-rand`` ablation.

    Attributes:
        rooms: Locations an argument is drawn from when it names one.
        objects: Objects every other argument is drawn from.
    """

    rooms: tuple[str, ...]
    objects: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.rooms or not self.objects:
            raise ValueError("semi-random sub-goals need at least one room and one object to draw from")


def semi_random_subgoal(text: str, pools: SemiRandomSubgoals, rng: np.random.Generator) -> str:
    """``text`` with each argument replaced by a random room (if it is a room) or a random object.

    The official ``creat_semi_random_sg``: the function name is kept, so the sub-goal is plausible
    in form and wrong in content. A text that is not a function call is returned unchanged.
    """
    name, args = split_subgoal(text)
    if not args:
        return text
    drawn = [
        pools.rooms[int(rng.integers(len(pools.rooms)))]
        if arg in pools.rooms
        else pools.objects[int(rng.integers(len(pools.objects)))]
        for arg in args
    ]
    return f"{name}({', '.join(drawn)})"


# ---------------------------------------------------------------------- actions
def is_end_subgoal(text: str) -> bool:
    """Whether an executor output means "this sub-goal is done" (``END_SG()``, spacing tolerated)."""
    return text.strip().replace(" ", "").startswith("END_SG")


def string_similarity(a: str, b: str) -> float:
    """``difflib`` similarity in [0, 1] of two actions, ignoring case and surrounding space."""
    return difflib.SequenceMatcher(None, a.strip().lower(), b.strip().lower()).ratio()


def most_similar_action(action: str, valid_actions: Sequence[str], embed: EmbedFunction | None = None) -> str:
    """The valid action closest to ``action`` (``action`` itself when it is valid).

    Args:
        action: The proposed action.
        valid_actions: The env's valid actions (non-empty).
        embed: Optional embedding function; when given, closeness is the cosine similarity of
            embeddings, otherwise :func:`string_similarity`.

    Returns:
        An element of ``valid_actions``; ties go to the earliest.

    Raises:
        ValueError: If ``valid_actions`` is empty.
    """
    if not valid_actions:
        raise ValueError("valid_actions is empty: there is nothing to map the action to")
    if action in valid_actions:
        return action
    normalised = action.strip().lower()
    for candidate in valid_actions:
        if candidate.strip().lower() == normalised:
            return candidate
    if embed is None:
        scores = [string_similarity(action, candidate) for candidate in valid_actions]
    else:
        vectors = [list(map(float, v)) for v in embed([action, *valid_actions])]
        scores = [_cosine(vectors[0], v) for v in vectors[1:]]
    best = max(range(len(valid_actions)), key=lambda i: (scores[i], -i))
    return valid_actions[best]


def map_to_valid(
    action: str,
    info: Mapping[str, Any] | None,
    embed: EmbedFunction | None = None,
    candidates: Sequence[str] = (),
) -> str:
    """``action``, or a valid one when the env lists ``info["valid_actions"]`` and ``action`` is not among them.

    The replacement is the first of ``candidates`` (the policy's other beams, best first) that is
    valid, as the official ``findValidActionNew`` takes the first valid of the top 5 beams; failing
    that, the valid action most similar to ``action``.
    """
    valid = list((info or {}).get("valid_actions") or [])
    if not valid or action in valid:
        return action
    for candidate in candidates:
        if candidate in valid:
            return candidate
    return most_similar_action(action, valid, embed)


def beam_texts(actions: Sequence[Action]) -> list[str]:
    """The distinct first lines of a policy's beams (or samples), best first."""
    return list(dict.fromkeys(first_line(a.text) for a in actions))


def policy_answers(policy: Agent, inputs: Sequence[AgentInput], candidates: int) -> list[list[Action]]:
    """Each input's answers: the policy's best (``act``), or its top ``candidates`` beams (``sample``)."""
    if candidates > 1:
        return policy.sample(inputs, candidates)
    return [[a] for a in policy.act(inputs)]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


def first_line(text: str) -> str:
    """The first non-empty line of a model's answer, stripped (a sub-goal or an action is one line)."""
    stripped = text.strip()
    return stripped.split("\n", 1)[0].strip() if stripped else ""


# ---------------------------------------------------------------------- per-conversation memory
State = TypeVar("State")


def prompt_input(item: AgentInput, prompt: str, stop: Sequence[str]) -> AgentInput:
    """What a sub-goal agent gives a policy: one user message, the rendered ``prompt``.

    The env's task, info and id, and the rollout's per-input seed, carry over (the seed keeps a
    sampling policy's draws independent of the batch).
    """
    return AgentInput([{"role": "user", "content": prompt}], item.task, item.info, item.env_id, tuple(stop), item.seed)


def prompt_context(item: AgentInput, given: AgentInput, action: Action) -> ContextRecord:
    """The record of a policy's action on ``given`` (from :func:`prompt_input`), as a record of ``item``.

    The policy saw (its system prompt and) the rendered prompt in place of the latest observation,
    and nothing else of the conversation: ``shown(item.messages)`` rebuilds exactly that.
    """
    return rewritten_context(item.messages, given.messages, [len(item.messages) - 1], action.context)


def _conversation_key(messages: Sequence[Message]) -> str:
    blob = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()


class ConversationMemory(Generic[State]):
    """Per-episode state of a batched agent, keyed by the conversation (no env ids needed).

    :meth:`put` files a state under the conversation extended by the action just returned;
    :meth:`get` finds it on the next call under the conversation minus its latest observation.

    Args:
        max_states: Conversations remembered at most (oldest forgotten first).
    """

    def __init__(self, max_states: int = 100_000):
        self.max_states = max_states
        self._states: OrderedDict[str, State] = OrderedDict()

    def get(self, messages: Sequence[Message]) -> State | None:
        """The state filed for this conversation's previous turn, or ``None``."""
        _, rest = split_head(messages)
        if rest and rest[-1]["role"] == "user":
            return self._states.get(_conversation_key(list(messages[:-1])))
        return None

    def put(self, messages: Sequence[Message], action: str, state: State) -> None:
        """File ``state`` under ``messages`` extended by the assistant turn ``action``."""
        self._states[_conversation_key([*messages, {"role": "assistant", "content": action}])] = state
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)

    def clear(self) -> None:
        """Forget every state."""
        self._states.clear()


def context_of(
    item: AgentInput, scores: Sequence[float], task_extractor: Callable[[str], str] = task_description
) -> tuple[StepContext, list[float]]:
    """The :class:`StepContext` of an agent input, and the score list extended by its latest score.

    Args:
        item: The env's conversation and latest ``info`` (``score``, ``look``, ``inventory``).
        scores: The scores after each earlier step, as remembered by the agent.
        task_extractor: Maps the first observation to the task description.
    """
    first, steps, _ = parse_steps(item.messages)
    info = item.info or {}
    # Scores after each earlier step come from memory (unknown ones repeat the last known); the
    # latest comes from the env's info.
    known = list(scores)[: max(0, len(steps) - 1)]
    while len(known) < len(steps) - 1:
        known.append(known[-1] if known else 0.0)
    if steps:
        known.append(float(info.get("score", 0.0)))
    look = info.get("look") or None
    inventory = str(info.get("inventory", ""))
    context = step_context(task_extractor(first), first, steps, known, look=look, inventory=inventory)
    scores = known
    return context, scores


# ---------------------------------------------------------------------- the oracle
#: Splits a gold path into sub-goals: ``annotate(task, actions)`` returns objects with ``text``,
#: ``start`` and ``end`` (a :class:`~mulligan.training.subgoal_data.SubgoalAnnotator`'s method).
AnnotateFunction = Callable[[str, Sequence[str]], Sequence[Any]]


class OraclePlanner(Agent):
    """A planner that knows the gold path: the gold annotation's sub-goal of the next gold action not yet taken.

    It reads the episode, not a prompt (:attr:`reads_episode`): :class:`HierarchicalAgent` gives it
    the env's own input. The gold path is ``task["gold_actions"]`` (MiniScience and ScienceWorld
    put it in the task record on reset), split by ``annotate``; progress is the longest prefix of
    the gold path that the episode's actions contain in order. After the last gold action it keeps
    answering the last sub-goal. An executor that answers ``END_SG()`` before the gold sub-goal's
    actions are taken is given the same sub-goal again, up to ``max_subgoals_per_act`` times,
    after which the agent's ``fallback_action`` is sent.

    Args:
        annotate: The annotator's ``annotate(task, actions)`` (e.g. ``RuleBasedAnnotator().annotate``),
            the same that labelled the training data, so the oracle speaks the planner's language.
        task_extractor: Maps the first observation to the task description.
        max_cached: Annotated gold paths remembered at most.

    Raises:
        ValueError: At ``act``, for an input whose task record has no ``gold_actions``.
    """

    reads_episode = True

    def __init__(
        self,
        annotate: AnnotateFunction,
        *,
        task_extractor: Callable[[str], str] = task_description,
        max_cached: int = 10_000,
    ):
        self.annotate = annotate
        self.task_extractor = task_extractor
        self.max_cached = max_cached
        self.name = "oracle_planner"
        self._cache: OrderedDict[str, list[tuple[str, int, int]]] = OrderedDict()

    def gold_subgoals(self, item: AgentInput) -> tuple[list[str], list[tuple[str, int, int]]]:
        """The gold path of ``item``'s task and its annotation as ``(text, start, end)`` spans."""
        gold = list((item.task or {}).get("gold_actions") or [])
        if not gold:
            raise ValueError("the oracle planner needs the gold path: the task record has no 'gold_actions'")
        first, _, _ = parse_steps(item.messages)
        task = self.task_extractor(first)
        key = hashlib.sha1(json.dumps([task, gold]).encode("utf-8", "surrogatepass")).hexdigest()
        if key not in self._cache:
            self._cache[key] = [(g.text, int(g.start), int(g.end)) for g in self.annotate(task, gold)]
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return gold, self._cache[key]

    def subgoal_for(self, item: AgentInput) -> str:
        """The oracle's sub-goal for the episode so far."""
        gold, spans = self.gold_subgoals(item)
        _, steps, _ = parse_steps(item.messages)
        done = 0
        for step in steps:  # the longest gold prefix taken in order (detours allowed)
            if done < len(gold) and step["action"].strip() == gold[done].strip():
                done += 1
        for text, start, end in spans:
            if start <= done < end:
                return text
        return spans[-1][0] if spans else ""

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The gold sub-goal of each episode (module docstring)."""
        return [Action(self.subgoal_for(item), metadata={"oracle": True}) for item in inputs]


# ---------------------------------------------------------------------- the agent
@dataclass
class SubgoalState:
    """One episode's state in a :class:`HierarchicalAgent`.

    Attributes:
        completed: Completed sub-goal texts, oldest first.
        subgoal: The current sub-goal, or ``None`` when the planner must be asked.
        scores: The score after each step taken so far.
    """

    completed: list[str] = field(default_factory=list)
    subgoal: str | None = None
    scores: list[float] = field(default_factory=list)

    def copy(self) -> SubgoalState:
        """An independent copy."""
        return SubgoalState(list(self.completed), self.subgoal, list(self.scores))


@dataclass
class _Pending:
    """Book-keeping of one env during an ``act`` call."""

    index: int
    item: AgentInput
    state: SubgoalState
    context: StepContext
    planner_calls: int = 0
    planner_actions: list[Action] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)


class HierarchicalAgent(Agent):
    """Sub-goal distillation's planner + executor pair acting on many envs at once.

    See the module docstring for the protocol, the prompts, the episode state and action mapping.
    Both policies are ordinary :class:`~mulligan.agents.base.Agent` objects (an ``HFAgent`` each,
    a served model, or scripted agents in tests): each receives one user message, the rendered
    prompt, and the first line of its answer is the sub-goal or action.

    Args:
        planner: The policy that emits sub-goals (the paper's controller).
        executor: The policy that emits actions or ``END_SG()``.
        history_len: Steps of history shown (the official 10).
        planner_every_step: Query the planner before every action (the official agent) instead of
            only at the start and after ``END_SG()``.
        max_subgoals_per_act: Planner calls allowed per env within one ``act`` call; when the
            executor keeps answering ``END_SG()``, ``fallback_action`` is sent instead.
        fallback_action: The action sent when the loop bound is reached (ScienceWorld's no-op).
        random_subgoals: The official ``rand`` ablation: when given, every
            ``RANDOM_SUBGOAL_EVERY``-th step the planner's sub-goal is replaced by one drawn
            uniformly from these texts.
        semi_random: The official ``semi-rand`` ablation: when given, every
            ``RANDOM_SUBGOAL_EVERY``-th step the planner's sub-goal gets random arguments
            (:func:`semi_random_subgoal`).
        first_planner: The policy asked for an episode's first sub-goal (the paper's
            first-sub-goal generator); ``None``: the planner.
        beam_candidates: Executor answers considered per step (its top beams, through
            ``executor.sample``; the paper's 5 with 5-beam decoding): ``END_SG()`` in any of them
            ends the sub-goal, and an invalid best action is replaced by the first valid one of
            them before the most similar valid action. 1: the best answer only.
        embed: Optional embedding function for mapping invalid actions (default: ``difflib``).
        task_extractor: Maps the first observation to the task description.
        stop: Stop strings given to both policies (a sub-goal or an action is one line).
        max_states: Conversations remembered at most.
        seed: Seed of the random sub-goals.
    """

    def __init__(
        self,
        planner: Agent,
        executor: Agent,
        *,
        history_len: int = HISTORY_LEN,
        planner_every_step: bool = True,
        max_subgoals_per_act: int = 4,
        fallback_action: str = "look around",
        random_subgoals: Sequence[str] | None = None,
        semi_random: SemiRandomSubgoals | None = None,
        first_planner: Agent | None = None,
        beam_candidates: int = 1,
        embed: EmbedFunction | None = None,
        task_extractor: Callable[[str], str] = task_description,
        stop: Sequence[str] = ("\n",),
        max_states: int = 100_000,
        seed: int = 0,
    ):
        if history_len < 0:
            raise ValueError(f"history_len must be >= 0, got {history_len}")
        if max_subgoals_per_act < 1:
            raise ValueError(f"max_subgoals_per_act must be >= 1, got {max_subgoals_per_act}")
        if random_subgoals is not None and not list(random_subgoals):
            raise ValueError("random_subgoals must hold at least one sub-goal text, or be None")
        if beam_candidates < 1:
            raise ValueError(f"beam_candidates must be >= 1, got {beam_candidates}")
        if random_subgoals is not None and semi_random is not None:
            raise ValueError("pass random_subgoals (rand) or semi_random (semi-rand), not both")
        self.planner = planner
        self.executor = executor
        self.history_len = history_len
        self.planner_every_step = bool(planner_every_step)
        self.max_subgoals_per_act = max_subgoals_per_act
        self.fallback_action = fallback_action
        self.random_subgoals = list(random_subgoals) if random_subgoals is not None else None
        self.semi_random = semi_random
        self.first_planner = first_planner
        self.beam_candidates = beam_candidates
        self.embed = embed
        self.task_extractor = task_extractor
        self.stop = tuple(stop)
        self.memory: ConversationMemory[SubgoalState] = ConversationMemory(max_states)
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Forget every episode's state and reset both policies."""
        self.memory.clear()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.planner.reset(seed)
        self.executor.reset(seed)
        if self.first_planner is not None:
            self.first_planner.reset(seed)

    def state_for(self, messages: Sequence[Message]) -> SubgoalState:
        """The episode state the agent holds for a conversation (a fresh one if it has none)."""
        found = self.memory.get(messages)
        return found.copy() if found is not None else SubgoalState()

    # ------------------------------------------------------------------ acting
    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One env action per input, querying the planner before the executor (see the module docstring)."""
        pending = [self._prepare(i, item) for i, item in enumerate(inputs)]
        results: list[Action | None] = [None] * len(pending)
        # Every step (official) or only when no sub-goal is current.
        needs_plan = [p for p in pending if self.planner_every_step or p.state.subgoal is None]
        while pending:
            exhausted = [p for p in needs_plan if p.planner_calls >= self.max_subgoals_per_act]
            for p in exhausted:
                results[p.index] = self._finish(p, self.fallback_action, None, exhausted=True)
            pending = [p for p in pending if results[p.index] is None]
            self._plan([p for p in needs_plan if results[p.index] is None])
            if not pending:
                break
            given = [self._prompt_input(p, self._executor_prompt(p)) for p in pending]
            answers = policy_answers(self.executor, given, self.beam_candidates)
            needs_plan = []
            for p, executor_input, beams in zip(pending, given, answers, strict=True):
                decision = beams[0]
                # The official agent ends the sub-goal when any of its beams is END_SG().
                if any(is_end_subgoal(b.text) for b in beams):
                    # END_SG() is not sent to the env: the sub-goal is done, ask for the next one.
                    p.state.completed.append(p.state.subgoal or "")
                    p.ended.append(p.state.subgoal or "")
                    p.state.subgoal = None
                    needs_plan.append(p)
                else:
                    results[p.index] = self._finish(
                        p,
                        first_line(decision.text),
                        decision,
                        exhausted=False,
                        given=executor_input,
                        candidates=beam_texts(beams[1:]),
                    )
            pending = needs_plan
        return [r for r in results if r is not None]

    def _prepare(self, index: int, item: AgentInput) -> _Pending:
        if not item.messages:
            raise ValueError(f"input {index} has no messages; the agent needs at least the first observation")
        state = self.state_for(item.messages)
        context, state.scores = context_of(item, state.scores, self.task_extractor)
        return _Pending(index, item, state, context)

    def _plan(self, needs_plan: Sequence[_Pending]) -> None:
        """Ask the planner for each env's sub-goal; a changed sub-goal retires the current one."""
        if not needs_plan:
            return
        plans: dict[int, Action] = {}
        # An episode's first query goes to the first-sub-goal model when there is one (paper Sec. 3).
        first = [
            p
            for p in needs_plan
            if self.first_planner is not None and p.context.step == 0 and not p.state.completed and not p.ended
        ]
        first_ids = {id(p) for p in first}
        rest = [p for p in needs_plan if id(p) not in first_ids]
        for policy, group in ((self.first_planner, first), (self.planner, rest)):
            if group:
                answers = policy.act([self._planner_input(policy, p) for p in group])
                plans.update({id(p): a for p, a in zip(group, answers, strict=True)})
        for p in needs_plan:
            plan = plans[id(p)]
            p.planner_calls += 1
            p.planner_actions.append(plan)
            subgoal = first_line(plan.text)
            if self.random_subgoals is not None and p.context.step % RANDOM_SUBGOAL_EVERY == 0:
                # The official `rand` ablation: a random sub-goal every 10th step.
                subgoal = self.random_subgoals[int(self._rng.integers(len(self.random_subgoals)))]
            elif self.semi_random is not None and p.context.step % RANDOM_SUBGOAL_EVERY == 0:
                # The official `semi-rand` ablation: the planner's sub-goal with random arguments.
                subgoal = semi_random_subgoal(subgoal, self.semi_random, self._rng)
            if p.state.subgoal is not None and subgoal != p.state.subgoal:
                p.state.completed.append(p.state.subgoal)
            p.state.subgoal = subgoal

    def _planner_input(self, policy: Agent, p: _Pending) -> AgentInput:
        if getattr(policy, "reads_episode", False):  # the oracle reads the episode itself
            return p.item
        prompt = planner_prompt(p.context, p.state.completed, p.state.subgoal, self.history_len)
        return self._prompt_input(p, prompt)

    def _executor_prompt(self, p: _Pending) -> str:
        return executor_prompt(p.context, p.state.subgoal or "", p.state.completed, self.history_len)

    def _prompt_input(self, p: _Pending, prompt: str) -> AgentInput:
        return prompt_input(p.item, prompt, self.stop)

    def _finish(
        self,
        p: _Pending,
        raw: str,
        decision: Action | None,
        *,
        exhausted: bool,
        given: AgentInput | None = None,
        candidates: Sequence[str] = (),
    ) -> Action:
        text = map_to_valid(raw, p.item.info, self.embed, candidates)
        self.memory.put(p.item.messages, text, p.state.copy())
        metadata = {
            "subgoal": p.state.subgoal,
            "completed_subgoals": list(p.state.completed),
            "ended_subgoals": list(p.ended),
            "raw_action": raw,
            "mapped": text != raw,
            "planner_calls": p.planner_calls,
            "planner_actions": p.planner_actions,
            "exhausted": exhausted,
        }
        if decision is None or given is None:
            return Action(text=text, metadata=metadata)
        return Action(
            text=text,
            prompt=decision.prompt,
            prompt_ids=decision.prompt_ids,
            completion_ids=decision.completion_ids,
            logprobs=decision.logprobs,
            metadata={**metadata, "executor_metadata": decision.metadata},
            context=prompt_context(p.item, given, decision),
        )
