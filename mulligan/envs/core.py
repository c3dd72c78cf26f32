"""The environment contract shared by every mulligan env.

What lives here:

* :class:`TextSpace`, the observation and action space of every env: any Python ``str`` up to a
  maximum length, Unicode included.
* :class:`MulliganEnv`, the base class. It implements ``reset`` (seeding, task selection through
  ``options``) and ``step`` (the ``info`` contract, the episode bookkeeping) once, so that an env
  family only writes how a task starts and how an action is scored.
* :class:`StepOutcome`, what a family's ``_step`` returns (keyword-only).
* The shared-memory layout of :class:`TextSpace` (:class:`SharedTexts`), so that
  ``gymnasium.make_vec(id, n, vectorization_mode="async")`` runs envs in worker processes with
  Gymnasium's default ``shared_memory=True``.

The contract (``docs/envs.md`` has the user's version):

* ``reset(seed=None, options=None)``: ``options={"task_index": i}`` picks the i-th task,
  ``options={"task": record}`` runs an explicit record in the dataset's own format, and otherwise a
  task index is drawn from ``self.np_random``. ``info["task_id"]`` is stable across runs.
* ``step(action)``: ``info`` has the same keys on every step and always holds ``success`` (bool),
  ``score`` (float in [0, 1]) and ``feedback`` (str). Envs never truncate: turn caps come from
  ``max_episode_steps`` at registration.
* ``action_format="tools"`` (multi-step envs): the env lists its actions as tools
  (``env.unwrapped.tools``) and reads each action as one tool call; see :mod:`mulligan.envs.tools`.
  ``info`` then also holds ``tool_call_id``.
* Any string is a legal action. Malformed actions cost reward and explain themselves in
  ``feedback``; they never raise. An action longer than the action space's ``max_length`` is
  refused before the env reads it (:meth:`MulliganEnv.refuse_action`): it is scored as the env
  scores a malformed (empty) action, and ``feedback`` states the limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

from mulligan.envs.tools import (
    ToolCall,
    ToolCallError,
    ToolSpec,
    check_action_format,
    default_call_id,
    parse_tool_call,
    validate_tool_call,
)

#: Default cap on action length: a 1 MB response is a legal action and must be scored, not refused.
DEFAULT_MAX_ACTION_LENGTH = 2**21
#: Default cap on observation length.
DEFAULT_MAX_OBSERVATION_LENGTH = 2**20

# Character pools for ``TextSpace.sample``: plain ASCII dominates, but every draw can also hit
# whitespace and control characters, accented Latin, CJK and characters outside the BMP, so that
# an env tested with sampled actions sees the whole range a model can emit.
_ASCII = np.array([chr(c) for c in range(0x20, 0x7F)])
_CONTROL = np.array(["\n", "\t", "\r", "\x00", "\x0b", "\x1b", "\x7f"])
_LATIN = np.array([chr(c) for c in range(0xC0, 0x180)])
_CJK = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 512)])
_ASTRAL = np.array([chr(c) for c in [*range(0x1F600, 0x1F650), *range(0x1D400, 0x1D420)]])
_POOLS = (_ASCII, _CONTROL, _LATIN, _CJK, _ASTRAL)
_POOL_WEIGHTS = np.array([0.80, 0.05, 0.05, 0.05, 0.05])


class TextSpace(spaces.Space[str]):
    """Any Python ``str`` of at most ``max_length`` characters, Unicode included.

    Gymnasium's :class:`gymnasium.spaces.Text` restricts strings to a fixed charset, which is wrong
    for LLM text: a model may emit any code point. This space accepts every ``str`` (lone
    surrogates included) whose length is within ``[min_length, max_length]``.

    ``sample()`` draws a length (short strings are likelier, as they are for real actions) and
    characters mostly from printable ASCII, with whitespace and control characters, accented
    Latin, CJK and astral-plane characters mixed in. Samples never contain lone surrogates, so
    they survive UTF-8 and JSON round trips.

    Args:
        max_length: The longest accepted string, in characters.
        min_length: The shortest accepted string.
        sample_max_length: The longest string ``sample()`` draws (defaults to
            ``min(max_length, 256)``, since sampling megabyte strings is rarely what a test wants).
        seed: Seed for the space's own random generator.
    """

    def __init__(
        self,
        max_length: int = DEFAULT_MAX_ACTION_LENGTH,
        *,
        min_length: int = 0,
        sample_max_length: int | None = None,
        seed: int | np.random.Generator | None = None,
    ):
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if not isinstance(min_length, int) or not 0 <= min_length <= max_length:
            raise ValueError(f"min_length must be an int in [0, max_length], got {min_length!r}")
        self.max_length = max_length
        self.min_length = min_length
        self.sample_max_length = min(max_length, 256) if sample_max_length is None else sample_max_length
        if not self.min_length <= self.sample_max_length <= self.max_length:
            raise ValueError("sample_max_length must lie in [min_length, max_length]")
        super().__init__(dtype=str, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """Text is not flattenable to a numeric array."""
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """Draw a random string; see the class docstring for the distribution."""
        if mask is not None or probability is not None:
            raise ValueError("TextSpace.sample does not support masks or probabilities")
        rng = self.np_random
        # Geometric-ish length: most samples are short, some reach sample_max_length.
        span = self.sample_max_length - self.min_length
        length = self.min_length + int(min(span, rng.exponential(scale=max(1.0, span / 4))))
        if length == 0:
            return ""
        pool_ids = rng.choice(len(_POOLS), size=length, p=_POOL_WEIGHTS)
        chars = [_POOLS[p][rng.integers(len(_POOLS[p]))] for p in pool_ids]
        return "".join(chars)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a ``str`` whose length lies within the bounds."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def to_jsonable(self, sample_n: Any) -> list[str]:
        """Strings are already JSON values."""
        return list(sample_n)

    def from_jsonable(self, sample_n: list[str]) -> list[str]:
        """Strings are already JSON values."""
        return list(sample_n)

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length}, min_length={self.min_length})"

    def __hash__(self) -> int:
        return hash((TextSpace, self.max_length, self.min_length))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TextSpace) and self.max_length == other.max_length and self.min_length == other.min_length
        )


# ``gymnasium.make_vec(..., vectorization_mode="async")`` moves observations through shared memory
# by default. Each env gets a slot of ``max_length + 1`` int32 values: the length, then the code
# points (UTF-32, so that any str, lone surrogates included, round-trips). The slot of the default
# observation space is 4 MiB per env; only the written prefix is read back. AsyncVectorEnv reads
# the shared memory once, at construction, and relies on the result being a live view (as numpy
# arrays over the buffer are), so the read returns :class:`SharedTexts`, which decodes on access.
class SharedTexts(Sequence[str]):
    """The observations of an async vector env: a live, read-only view of the workers' shared memory.

    Indexing and iteration decode the current strings; ``tuple(view)`` (and ``copy.deepcopy``,
    which AsyncVectorEnv applies with its default ``copy=True``) gives a snapshot.
    """

    def __init__(self, shared_memory: Any, n: int, max_length: int):
        self._data = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, max_length + 1))

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        row = self._data[index]
        return row[1 : 1 + int(row[0])].astype("<i4").tobytes().decode("utf-32-le", "surrogatepass")

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment] - a live view is mutable

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@create_shared_memory.register(TextSpace)
def _create_text_shared_memory(space: TextSpace, n: int = 1, ctx: Any = None) -> Any:
    import multiprocessing

    ctx = multiprocessing if ctx is None else ctx
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1), lock=True)


@read_from_shared_memory.register(TextSpace)
def _read_text_from_shared_memory(space: TextSpace, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(shared_memory, n, space.max_length)


@write_to_shared_memory.register(TextSpace)
def _write_text_to_shared_memory(space: TextSpace, index: int, value: str, shared_memory: Any) -> None:
    if not space.contains(value):
        raise ValueError(f"{space} does not contain the observation (a str of at most max_length characters)")
    size = space.max_length + 1
    codes = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype="<i4")
    destination = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)
    destination[index * size + 1 : index * size + 1 + len(codes)] = codes
    destination[index * size] = len(codes)


@dataclass(kw_only=True)
class StepOutcome:
    """What an env family's ``_step`` returns; :meth:`MulliganEnv.step` turns it into the 5-tuple.

    Keyword-only, so that the booleans and floats of a call say which is which.

    Attributes:
        observation: The next observation.
        reward: The step's reward.
        terminated: Whether the episode ended (answer given, task completed or failed).
        success: Whether the task is solved.
        score: Graded quality in [0, 1] (equals ``float(success)`` for binary tasks).
        feedback: What went wrong or what format was expected; empty when there is nothing to say.
        info: Family-specific ``info`` entries; every key must be declared in ``default_info()``.
    """

    observation: str
    reward: float = 0.0
    terminated: bool = False
    success: bool = False
    score: float = 0.0
    feedback: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def stable_task_id(prefix: str, record: Mapping[str, Any]) -> str:
    """A task id derived from a record's content: identical records get identical ids in any run."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return f"{prefix}-{hashlib.sha1(blob.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


class MulliganEnv(gymnasium.Env[str, str]):
    """Base class of every mulligan env: the task-selection and ``info`` contract, written once.

    A family subclasses this and implements:

    * ``num_tasks`` (attribute): the dataset size, or ``None`` for an endless procedural source.
    * ``get_task(index)``: the task record at ``index`` (for procedural sources, any index >= 0).
    * ``task_from_record(record)``: validate and normalise an explicit task given through
      ``options={"task": record}``; raise ``ValueError`` saying what is missing.
    * ``task_id(task, index)``: a stable id (``index`` is ``None`` for explicit records).
    * ``_start(task) -> (observation, info_updates)``: begin an episode on a task.
    * ``_step(action) -> StepOutcome``: score one action.
    * ``default_info()``: the family's extra ``info`` keys with their values before any step.
    * optionally ``refuse_action(feedback)``: the outcome of an over-long action (the default
      scores the empty action, which every family treats as malformed).
    * for tool calls (``action_format="tools"``): ``tool_specs`` (class attribute, the tools) and
      either a ``command`` template on each tool (the call is rendered to a text action and
      scored by ``_step``) or ``_step_tool(spec, arguments)``; optionally
      ``invalid_tool_call(feedback)`` (default: scored as the empty action, like a malformed one).

    After ``reset``, ``self.task`` holds the current task record (what a scripted teacher reads) and
    ``self.task_index`` its index (``None`` for explicit records).

    Stepping before ``reset`` or after the episode terminated raises ``RuntimeError``: that is a bug
    in the caller's loop, not a model action.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 1}
    #: Set by subclasses: dataset size, or None for an endless procedural source.
    num_tasks: int | None = None
    #: The env's actions as tools (``action_format="tools"``); empty for envs without tools.
    tool_specs: ClassVar[tuple[ToolSpec, ...]] = ()

    def __init__(
        self,
        *,
        max_action_length: int = DEFAULT_MAX_ACTION_LENGTH,
        max_observation_length: int = DEFAULT_MAX_OBSERVATION_LENGTH,
        render_mode: str | None = None,
        action_format: str = "react",
    ):
        self.action_format = check_action_format(action_format)
        if action_format == "tools" and not self.tool_specs:
            raise ValueError(f"{type(self).__name__} has no tools: use action_format='react'")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = TextSpace(max_action_length)
        self.observation_space = TextSpace(max_observation_length)
        self.task: dict[str, Any] | None = None
        self.task_index: int | None = None
        self._task_id: str | None = None
        self._done = True
        self._started = False
        self._transcript: list[tuple[str, str]] = []
        self._num_steps = 0
        self._tool_call_id = ""

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The env's tools in OpenAI's function-tool format (JSON Schema parameters).

        Listed in both action formats (a client may want them before choosing); an env reads tool
        calls only with ``action_format="tools"``. Empty for envs without tools.
        """
        return [spec.schema() for spec in self.tool_specs]

    # ----------------------------------------------------------------- to implement in families
    def get_task(self, index: int) -> dict[str, Any]:
        """Return the task record at ``index``."""
        raise NotImplementedError

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and normalise an explicit task record (``options={"task": record}``)."""
        return dict(record)

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """A stable id for ``task``; the default hashes the record's content."""
        return stable_task_id(type(self).__name__, task)

    def default_info(self) -> dict[str, Any]:
        """The family's extra ``info`` keys and their values before any step."""
        return {}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Begin an episode on ``task``; return the first observation and ``info`` updates."""
        raise NotImplementedError

    def _step(self, action: str) -> StepOutcome:
        """Score one action of the current episode."""
        raise NotImplementedError

    def _step_tool(self, spec: ToolSpec, arguments: dict[str, Any]) -> StepOutcome:
        """Score one validated tool call; the default renders the tool's command and scores it as text."""
        return self._step(spec.render_command(arguments))

    def invalid_tool_call(self, feedback: str) -> StepOutcome:
        """The outcome of an action that is no valid tool call: that of a malformed action.

        The env scores the empty action (malformed in every family, so it pays what a malformed
        action pays and counts as a step); ``feedback`` and, while the episode goes on, the
        observation say what was wrong.
        """
        outcome = self._step("")
        outcome.feedback = feedback
        if not outcome.terminated:
            outcome.observation = feedback
        return outcome

    def _tool_outcome(self, action: str) -> StepOutcome:
        """Parse, validate and score a tools-mode action (sets the call id for ``info``)."""
        try:
            call: ToolCall = parse_tool_call(action)
        except ToolCallError as err:
            return self.invalid_tool_call(f"Invalid tool call: {err}.")
        self._tool_call_id = call.id or default_call_id(self._num_steps)
        try:
            spec, arguments = validate_tool_call(call, self.tool_specs)
        except ToolCallError as err:
            return self.invalid_tool_call(f"Invalid tool call: {err}.")
        outcome = self._step_tool(spec, arguments)
        if call.num_calls > 1:
            note = f"Only the first of {call.num_calls} tool calls was run: call one tool per turn."
            outcome.feedback = f"{outcome.feedback} {note}".strip()
        return outcome

    def refuse_action(self, feedback: str) -> StepOutcome:
        """The outcome of an action over the size limit: that of a malformed action.

        The default scores the empty action (a malformed action in every family: no answer, no
        ReAct step, no command), then makes sure the refusal cannot succeed or pay more than 0 and
        that ``feedback`` (and, while the episode goes on, the observation) states the limit.
        """
        outcome = self._step("")
        outcome.success, outcome.score = False, 0.0
        outcome.reward = min(float(outcome.reward), 0.0)
        outcome.feedback = feedback
        if not outcome.terminated:
            outcome.observation = feedback
        return outcome

    # ----------------------------------------------------------------- the contract
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode; see the module docstring for ``options``."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"task", "task_index"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'task' or 'task_index'")
        if "task" in options and "task_index" in options:
            raise ValueError("pass either options['task'] or options['task_index'], not both")
        if "task" in options:
            record = options["task"]
            if not isinstance(record, Mapping):
                raise ValueError(f"options['task'] must be a dict record, got {type(record).__name__}")
            task, index = self.task_from_record(record), None
        else:
            if "task_index" in options:
                index = self._check_index(options["task_index"])
            elif self.num_tasks is not None:
                index = int(self.np_random.integers(self.num_tasks))
            else:
                index = int(self.np_random.integers(2**31 - 1))
            task = self.get_task(index)
        self.task, self.task_index = task, index
        self._task_id = self.task_id(task, index)
        self._num_steps, self._tool_call_id = 0, ""
        observation, updates = self._start(task)
        self._done, self._started = False, True
        info = self._make_info(success=False, score=0.0, feedback="", updates=updates)
        self._transcript = [("observation", observation)]
        self._render_step()
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score ``action``; returns ``(observation, reward, terminated, truncated=False, info)``."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has terminated; call reset() to start a new one")
        if not isinstance(action, str):
            raise TypeError(f"actions are str, got {type(action).__name__}")
        limit = self.action_space.max_length
        self._tool_call_id = ""
        if len(action) > limit:
            # Refused before any parsing, so a 10 MB response costs a len() (issue 15), and the
            # transcript keeps a note instead of the text.
            outcome = self.refuse_action(
                f"The action has {len(action)} characters, more than this env's limit of {limit}; "
                "it was not read. Write a shorter response."
            )
            action = f"<action of {len(action)} characters refused>"
        elif self.action_format == "tools":
            outcome = self._tool_outcome(action)
        else:
            outcome = self._step(action)
        self._num_steps += 1
        score = float(outcome.score)
        if not 0.0 <= score <= 1.0:
            raise AssertionError(f"{type(self).__name__} produced score {score} outside [0, 1]")
        self._done = bool(outcome.terminated)
        info = self._make_info(
            success=bool(outcome.success), score=score, feedback=outcome.feedback, updates=outcome.info
        )
        self._transcript += [("action", action), ("observation", outcome.observation)]
        self._render_step()
        return outcome.observation, float(outcome.reward), bool(outcome.terminated), False, info

    def render(self) -> str | None:
        """``ansi``: the episode so far as text; ``human``: print it (printing happens on each step)."""
        if self.render_mode == "ansi":
            return self._transcript_text()
        return None

    # ----------------------------------------------------------------- helpers
    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ValueError(f"task_index must be an int, got {index!r}")
        index = int(index)
        if index < 0 or (self.num_tasks is not None and index >= self.num_tasks):
            bound = f"[0, {self.num_tasks})" if self.num_tasks is not None else ">= 0"
            raise ValueError(f"task_index {index} out of range: must be {bound}")
        return index

    def _make_info(self, *, success: bool, score: float, feedback: str, updates: Mapping[str, Any]) -> dict:
        info = self.default_info()
        extra = set(updates) - set(info)
        if extra:
            raise AssertionError(
                f"{type(self).__name__} returned undeclared info keys {sorted(extra)}; add them to default_info()"
            )
        info.update(updates)
        info.update(task_id=self._task_id, success=success, score=score, feedback=feedback)
        if self.action_format == "tools":
            info["tool_call_id"] = self._tool_call_id
        return info

    def _transcript_text(self) -> str:
        lines = []
        for kind, text in self._transcript:
            lines.append(("> " if kind == "action" else "") + text)
        return "\n".join(lines)

    def _render_step(self) -> None:
        if self.render_mode == "human":
            kind, text = self._transcript[-1]
            if kind == "observation" and len(self._transcript) > 1:
                print("> " + self._transcript[-2][1])
            print(text)


def seeded_rng(seed: int, index: int, *salt: int) -> np.random.Generator:
    """The random generator of a pure ``(config, seed, index)`` generator.

    Task ``index`` of a dataset seeded ``seed`` is the same in every run and independent of which
    other indices were generated: each task gets its own stream.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index, *salt])


def truncate_for_feedback(text: str, limit: int = 80) -> str:
    """A short, printable excerpt of model text to quote back in feedback."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
