"""``HierarchicalAgent``: sub-goal distillation's planner and executor (arXiv 2405.02749).

Two policies share the work (Section 3 of the paper):

* the **planner** reads the context (task, completed sub-goals, recent actions and observations,
  the latest observation) and emits the current sub-goal as a function call, e.g.
  ``navigate_to(kitchen)`` or ``pick_up(thermometer)``;
* the **executor** reads the same context plus the current sub-goal and emits the next elementary
  action, or ``END_SG()`` when the sub-goal is done.

``END_SG()`` never reaches the env: within the same :meth:`HierarchicalAgent.act` call the finished
sub-goal joins the completed list, the planner is asked for the next one, and the executor is asked
again, at most ``max_subgoals_per_act`` planner calls per env and call.

Prompt formats
--------------
:func:`planner_prompt` and :func:`executor_prompt` are the single definition of what the two
models see; the sub-goal distillation trainer builds its training data with them. They render the
same text as the training views of :mod:`mulligan.envs.subgoals` (``record["prompt"]``), with the
same fields: ``task``, ``completed_subgoals``, ``history`` (``{"action", "observation"}`` dicts),
``observation`` and, for the executor, ``subgoal``::

    Task: <task description>
    Completed sub-goals: navigate_to(kitchen); pick_up(thermometer)      ("none" when empty)
    History:                                                             (omitted when empty)
    > <action>
    <observation>
    Observation: <latest observation>
    Current sub-goal: <sub-goal>                                         (executor only)
    Next action:                                                         (executor; planner: "Next sub-goal:")

The planner's history is the last ``history_len`` steps; the executor's is the last
``history_len`` steps of the current sub-goal, as in the training views.

Episode state
-------------
The agent keeps, per env, the list of completed sub-goals, the current sub-goal and the step at
which it started. That state is keyed by the conversation: after returning an action the agent
files the state under the conversation extended by that action, and on the next call it finds the
state again under the conversation minus its latest observation. Envs whose conversations are
identical share identical state, so envs are never confused; a conversation the agent has not seen
(a new episode, or one rewritten by someone else) starts from an empty state. :meth:`reset`
clears all state.

Invalid actions
---------------
When the env lists its valid actions in ``info["valid_actions"]`` (ScienceWorld does) and the
executor's action is not among them, the action sent is the most similar valid one
(:func:`most_similar_action`: ``difflib`` string similarity by default, or cosine similarity of an
embedding function), as in the paper's Section 4.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, Message
from mulligan.agents.context import split_head

# The prompt formats are defined once, next to the training records they render.
from mulligan.envs.subgoals import END_SUBGOAL, executor_prompt, planner_prompt

__all__ = [
    "END_SUBGOAL",
    "HierarchicalAgent",
    "executor_prompt",
    "is_end_subgoal",
    "most_similar_action",
    "planner_prompt",
    "prompt_for_record",
    "string_similarity",
    "task_description",
]

#: Embeds texts as vectors, for embedding-based action mapping.
EmbedFunction = Callable[[Sequence[str]], Sequence[Sequence[float]]]


def prompt_for_record(record: Mapping[str, Any]) -> str:
    """Render a training-view record of :func:`mulligan.envs.subgoals.build_training_views`.

    Args:
        record: A record with ``view`` (``"executor"``, ``"planner"`` or ``"first_step"``),
            ``task``, ``completed_subgoals``, ``history``, ``observation`` and, for the executor,
            ``subgoal``.

    Returns:
        The prompt the agent would show its planner or executor in that situation.
    """
    fields = {k: record[k] for k in ("task", "completed_subgoals", "history", "observation")}
    if record["view"] == "executor":
        return executor_prompt(subgoal=record["subgoal"], **fields)
    if record["view"] in ("planner", "first_step"):
        return planner_prompt(**fields)
    raise ValueError(f"unknown view {record['view']!r}; expected 'executor', 'planner' or 'first_step'")


def task_description(first_observation: str) -> str:
    """The task part of a ScienceWorld-style first observation: its first paragraph."""
    return first_observation.split("\n\n", 1)[0]


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


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


def _conversation_key(messages: Sequence[Message]) -> str:
    blob = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class SubgoalState:
    """One env's episode state in a :class:`HierarchicalAgent`.

    Attributes:
        completed: Completed sub-goal texts, oldest first.
        subgoal: The current sub-goal, or ``None`` when the planner must be asked.
        subgoal_start: The step (actions taken) at which the current sub-goal started.
    """

    completed: list[str] = field(default_factory=list)
    subgoal: str | None = None
    subgoal_start: int = 0


@dataclass
class _Pending:
    """Book-keeping of one env during an ``act`` call."""

    index: int
    item: AgentInput
    state: SubgoalState
    task: str
    steps: list[dict[str, str]]
    observation: str
    planner_calls: int = 0
    planner_actions: list[Action] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)


class HierarchicalAgent(Agent):
    """Sub-goal distillation's planner + executor pair acting on many envs at once.

    See the module docstring for the protocol, the prompts, the episode state and action mapping.
    Both policies are ordinary :class:`~mulligan.agents.base.Agent` objects (an ``HFAgent`` each,
    a served model, or scripted agents in tests): each receives one user message, the rendered
    prompt, and its first line (stripped) is the sub-goal or action.

    Args:
        planner: The policy that emits sub-goals.
        executor: The policy that emits actions or ``END_SG()``.
        history_len: Steps of history shown (the training views' ``history_len``).
        max_subgoals_per_act: Planner calls allowed per env within one ``act`` call; when the
            executor keeps answering ``END_SG()``, ``fallback_action`` is sent instead.
        fallback_action: The action sent when the loop bound is reached (ScienceWorld's no-op).
        embed: Optional embedding function for mapping invalid actions (default: ``difflib``).
        task_extractor: Maps the first observation to the task description (default: its first
            paragraph, as the sub-goal annotations do).
        stop: Stop strings given to both policies (a sub-goal or an action is one line).
        max_states: Conversations remembered at most (oldest forgotten first).
    """

    def __init__(
        self,
        planner: Agent,
        executor: Agent,
        *,
        history_len: int = 4,
        max_subgoals_per_act: int = 4,
        fallback_action: str = "look around",
        embed: EmbedFunction | None = None,
        task_extractor: Callable[[str], str] = task_description,
        stop: Sequence[str] = ("\n",),
        max_states: int = 100_000,
    ):
        if history_len < 0:
            raise ValueError(f"history_len must be >= 0, got {history_len}")
        if max_subgoals_per_act < 1:
            raise ValueError(f"max_subgoals_per_act must be >= 1, got {max_subgoals_per_act}")
        self.planner = planner
        self.executor = executor
        self.history_len = history_len
        self.max_subgoals_per_act = max_subgoals_per_act
        self.fallback_action = fallback_action
        self.embed = embed
        self.task_extractor = task_extractor
        self.stop = tuple(stop)
        self.max_states = max_states
        self._states: dict[str, SubgoalState] = {}

    def reset(self, seed: int | None = None) -> None:
        """Forget every episode's sub-goal state and reset both policies."""
        self._states.clear()
        self.planner.reset(seed)
        self.executor.reset(seed)

    def state_for(self, messages: Sequence[Message]) -> SubgoalState:
        """The episode state the agent holds for a conversation (a fresh one if it has none)."""
        _, rest = split_head(messages)
        if rest and rest[-1]["role"] == "user":
            found = self._states.get(_conversation_key(list(messages[:-1])))
            if found is not None:
                return SubgoalState(list(found.completed), found.subgoal, found.subgoal_start)
        return SubgoalState()

    # ------------------------------------------------------------------ acting
    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One env action per input, asking the planner for sub-goals as the executor finishes them."""
        pending = [self._prepare(i, item) for i, item in enumerate(inputs)]
        results: list[Action | None] = [None] * len(pending)
        while pending:
            needs_plan = [p for p in pending if p.state.subgoal is None]
            exhausted = [p for p in needs_plan if p.planner_calls >= self.max_subgoals_per_act]
            for p in exhausted:
                results[p.index] = self._finish(p, self.fallback_action, None, exhausted=True)
            needs_plan = [p for p in needs_plan if p.planner_calls < self.max_subgoals_per_act]
            pending = [p for p in pending if results[p.index] is None]
            if needs_plan:
                plans = self.planner.act([self._planner_input(p) for p in needs_plan])
                for p, plan in zip(needs_plan, plans, strict=True):
                    p.planner_calls += 1
                    p.planner_actions.append(plan)
                    p.state.subgoal = _first_line(plan.text)
                    p.state.subgoal_start = len(p.steps)
            if not pending:
                break
            decisions = self.executor.act([self._executor_input(p) for p in pending])
            still = []
            for p, decision in zip(pending, decisions, strict=True):
                if is_end_subgoal(decision.text):
                    # END_SG() is not sent to the env: the sub-goal is done, ask for the next one.
                    assert p.state.subgoal is not None
                    p.state.completed.append(p.state.subgoal)
                    p.ended.append(p.state.subgoal)
                    p.state.subgoal = None
                    still.append(p)
                else:
                    results[p.index] = self._finish(p, _first_line(decision.text), decision, exhausted=False)
            pending = still
        actions = [r for r in results if r is not None]
        assert len(actions) == len(inputs)
        return actions

    def _prepare(self, index: int, item: AgentInput) -> _Pending:
        if not item.messages:
            raise ValueError(f"input {index} has no messages; the agent needs at least the first observation")
        head, rest = split_head(item.messages)
        first_observation = head[-1]["content"] if head and head[-1]["role"] == "user" else ""
        steps = []
        for k, message in enumerate(rest):
            if message["role"] == "assistant":
                following = rest[k + 1]["content"] if k + 1 < len(rest) and rest[k + 1]["role"] == "user" else ""
                steps.append({"action": message["content"], "observation": following})
        state = self.state_for(item.messages)
        state.subgoal_start = min(state.subgoal_start, len(steps))
        observation = item.messages[-1]["content"] if item.messages[-1]["role"] == "user" else first_observation
        return _Pending(index, item, state, self.task_extractor(first_observation), steps, observation)

    def _planner_input(self, p: _Pending) -> AgentInput:
        history = p.steps[max(0, len(p.steps) - self.history_len):] if self.history_len else []
        prompt = planner_prompt(p.task, p.state.completed, history, p.observation)
        return AgentInput([{"role": "user", "content": prompt}], p.item.task, p.item.info, p.item.env_id, self.stop)

    def _executor_input(self, p: _Pending) -> AgentInput:
        assert p.state.subgoal is not None
        lo = max(p.state.subgoal_start, len(p.steps) - self.history_len)
        history = p.steps[lo:] if self.history_len else []
        prompt = executor_prompt(p.task, p.state.subgoal, p.state.completed, history, p.observation)
        return AgentInput([{"role": "user", "content": prompt}], p.item.task, p.item.info, p.item.env_id, self.stop)

    def _finish(self, p: _Pending, raw: str, decision: Action | None, *, exhausted: bool) -> Action:
        valid = (p.item.info or {}).get("valid_actions") or []
        text = most_similar_action(raw, list(valid), self.embed) if valid else raw
        # File the state under the conversation as it will read once this action is appended.
        key = _conversation_key([*p.item.messages, {"role": "assistant", "content": text}])
        self._states[key] = SubgoalState(list(p.state.completed), p.state.subgoal, p.state.subgoal_start)
        while len(self._states) > self.max_states:
            self._states.pop(next(iter(self._states)))
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
        if decision is None:
            return Action(text=text, metadata=metadata)
        return Action(
            text=text,
            prompt=decision.prompt,
            prompt_ids=decision.prompt_ids,
            completion_ids=decision.completion_ids,
            logprobs=decision.logprobs,
            metadata={**metadata, "executor_metadata": decision.metadata},
        )


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.split("\n", 1)[0].strip() if stripped else ""
