"""``Mulligan/ScienceWorld-v0``: the real ScienceWorld simulator behind ``gymnasium.make``.

ScienceWorld (Wang et al. 2022) is a Scala text world driven from Python through py4j; the
``scienceworld`` package ships the jar. The sub-goal distillation paper (arXiv 2405.02749, Sec. 4)
trains and evaluates on its 30 tasks with the ``easy`` simplifications, which is this env's default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome
from mulligan.envs.miniscience.env import check_stall_limit
from mulligan.envs.tools import SCIENCE_TOOLS

#: The simulator's answer to an action that matches no template.
NO_MATCH = "No known action matches that input."
#: Prefix of the simulator's answer to an ambiguous action (a numbered list of readings follows).
AMBIGUOUS_PREFIX = "Ambiguous request"
#: Actions longer than this never reach the JVM: no ScienceWorld action is anywhere near as long,
#: and megabyte strings would only cost parser time.
MAX_SIMULATOR_ACTION_CHARS = 1000
SPLITS = ("train", "dev", "test")

_INSTALL_HINT = (
    'ScienceWorld-v0 needs the scienceworld package and a Java runtime: pip install "mulligan[scienceworld]" '
    "and install a JRE 11+ (e.g. apt-get install default-jre-headless)."
)
# Per-process cache of each task's train/dev/test variations: reading them needs a load in the JVM.
_SPLIT_CACHE: dict[str, dict[str, list[int]]] = {}


def import_scienceworld() -> Any:
    """Import the ``scienceworld`` package, or raise ``ImportError`` saying how to install it.

    Also quiets py4j's logger (unless the user set its level): py4j logs every failed call to a
    dead JVM as an ERROR with a 50-line traceback, which the env already reports as one
    :class:`SimulatorDiedError`.
    """
    try:
        import scienceworld
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    if shutil.which("java") is None:
        raise ImportError("no `java` executable on PATH. " + _INSTALL_HINT)
    py4j_logger = logging.getLogger("py4j")
    if py4j_logger.level == logging.NOTSET:
        py4j_logger.setLevel(logging.CRITICAL)
    return scienceworld


def official_task_names() -> list[str]:
    """The 30 task names in the paper's numbering (1-1 boil, 1-2 melt, ..., 10-2)."""
    from scienceworld.constants import TASKS
    from scienceworld.utils import infer_task

    return [infer_task(task["task_name"]) for task in TASKS]


def _shutdown_simulator(handle: dict[str, Any]) -> None:
    """End a simulator's JVM and reap it; safe to call twice and on an already dead process."""
    sim = handle.pop("sim", None)
    if sim is None:
        return
    process = getattr(sim._gateway, "java_process", None)
    # A dead gateway raises on shutdown; the process itself is handled below.
    with contextlib.suppress(Exception):
        sim.close()
    # The package's __del__ calls close() again; make that a no-op on the closed gateway.
    sim.close = lambda: None
    if process is not None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


#: The simulator JVM's default flags: one core's worth of GC and JIT threads and the serial
#: collector. Each env has its own JVM, so a pool of envs (or of env workers) on few cores
#: otherwise runs many JVMs each sized for the whole machine; measured with 2 env workers on 2
#: cores (benchmarks/bench_vector.py, docs/scaling.md) they stepped 1.20-1.35x faster than 1 worker
#: against 1.13-1.19x with the JVM's own defaults.
DEFAULT_JVM_OPTIONS = ("-XX:ActiveProcessorCount=1", "-XX:+UseSerialGC")
#: Serialises the brief change of ``JDK_JAVA_OPTIONS`` while a JVM is launched (see ``jvm_options``).
_JAVA_OPTIONS_LOCK = threading.Lock()


def check_jvm_options(options: Sequence[str] | None) -> tuple[str, ...]:
    """``options`` as a tuple, each a single ``-`` flag without spaces (``ValueError`` says the fix).

    ``None`` gives :data:`DEFAULT_JVM_OPTIONS`; an empty list the JVM's own defaults.
    """
    if options is None:
        return DEFAULT_JVM_OPTIONS
    if isinstance(options, str):
        raise ValueError(f"jvm_options must be a list of flags, e.g. ['-XX:ActiveProcessorCount=1'], got {options!r}")
    checked = tuple(options)
    for option in checked:
        if not isinstance(option, str) or not option.startswith("-") or any(c.isspace() for c in option):
            raise ValueError(
                f"each JVM option must be one flag starting with '-' and without spaces, e.g. "
                f"'-XX:+UseSerialGC'; got {option!r}"
            )
    return checked


@contextlib.contextmanager
def java_options(options: Sequence[str]) -> Iterator[None]:
    """Launch JVMs inside this block with ``options`` added (through ``JDK_JAVA_OPTIONS``).

    The scienceworld package starts its JVM with py4j's ``launch_gateway`` and takes no JVM
    options; the ``java`` launcher (JDK 9+) also reads ``JDK_JAVA_OPTIONS`` from its environment,
    which the JVM inherits from this process. The variable is set only while the block runs and
    restored after (a value the user set is kept, with ``options`` after it).
    """
    if not options:
        yield
        return
    with _JAVA_OPTIONS_LOCK:
        previous = os.environ.get("JDK_JAVA_OPTIONS")
        os.environ["JDK_JAVA_OPTIONS"] = " ".join([previous, *options] if previous else options)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("JDK_JAVA_OPTIONS", None)
            else:
                os.environ["JDK_JAVA_OPTIONS"] = previous


class SimulatorDiedError(RuntimeError):
    """The ScienceWorld JVM stopped answering in the middle of an episode."""


#: What every step of an episode whose JVM died raises (the episode is over; reset starts a new JVM).
SIMULATOR_DIED_MESSAGE = "the ScienceWorld Java process died mid-episode; call reset() to start a fresh one"


class ScienceWorldEnv(MulliganEnv):
    """The ScienceWorld simulator: 30 science tasks in a text world, scored by the simulator.

    ## Description
    Each episode is one (task, variation) of ScienceWorld, loaded in a Java process that this env
    starts once and keeps for its lifetime. Tasks range from boiling water to Mendelian genetics;
    the simulator scores progress through task-specific milestones (0-100) and marks completion.

    A *task index* is an index into :attr:`task_pairs`, the ``(task name, variation)`` pairs of the
    selected tasks and variations, in the paper's task order (1-1 boil ... 10-2) and the
    simulator's variation order. ``num_tasks == len(task_pairs)``. ``reset()`` without options
    draws a pair uniformly with ``self.np_random``; ``options={"task_index": i}`` picks pair ``i``;
    ``options={"task": record}`` runs any record ``{"task_name", "variation", "simplification"}``
    (``env.unwrapped.task`` round-trips).

    ## Observation and Action Space
    Text (:class:`~mulligan.envs.core.TextSpace`). On reset: the task description, a blank line,
    and the room description ("look around", which costs no simulated time). On a step: the
    simulator's answer. Actions are ScienceWorld commands ("open door to kitchen", "go to kitchen",
    "pick up thermometer", "focus on substance in metal pot", "wait1", ...). An ambiguous command
    is answered with a numbered list; the next action ("0", "1", ...) picks a reading.

    ## Reward
    The change in the simulator's score divided by 100, so that an episode's return is its final
    score in [0, 1]. A failed task (the simulator's score drops below 0, e.g. after focusing on the
    wrong object) is scored 0: the step pays ``-previous score`` and the return is 0. Unrecognised
    actions (the simulator's "No known action matches that input.") pay 0 and set ``feedback``.

    ## Episode End
    ``terminated`` when the task is completed (``success``), failed (score below 0), or the
    simulator's own move budget ``step_limit`` is exceeded (a failure: ``success`` False, the score
    keeps its partial credit, ``feedback`` says so). Moves are simulated time: most actions take one
    move, ``wait`` takes ten, ``wait1`` one, ``look around``/``inventory`` none. The env never
    truncates; ``max_episode_steps`` (100 at registration) caps *agent turns*. With the defaults both
    caps are 100, so whichever comes first ends the episode: the turn cap as truncation, the
    simulator's move cap as termination. Pass ``step_limit=None`` to leave only the turn cap. With
    ``stall_limit=n`` the episode also ends after ``n`` consecutive actions without a score change
    (the sub-goal paper's evaluation rule, n = 50; ``success`` False, partial credit kept).

    ## Information
    ``task_id``, ``success``, ``score`` (the simulator's score / 100, clipped to [0, 1]),
    ``feedback``, ``raw_score`` (the simulator's integer score, -100 on failure), ``moves`` (the
    simulator's move count), ``task_name``, ``variation``, and ``valid_actions`` (the simulator's
    valid action-object combinations with ``include_valid_actions=True``; an empty list otherwise,
    so that ``info`` has the same keys on every step), ``look`` and ``inventory`` (the simulator's
    free ``look around`` and ``inventory`` answers, which the sub-goal paper's agents read on every
    step; empty strings with ``include_look_inventory=False``). On reset the task record also gets
    ``initial_inventory`` (the reset ``info["inventory"]``, which a stored trajectory would lose).

    ## Arguments
    * ``task`` (str | int | None, None): a task name ("boil"), the paper's name ("Matter Changes of
      State (Boiling)") or id ("1-1"), an index into the 30 tasks in the paper's order, or ``None``
      for all 30.
    * ``variation`` (int | str, "train"): a variation index, or ``"train"``, ``"dev"``, ``"test"``
      for every variation of that split.
    * ``simplification`` (str, "easy"): the simulator's simplification string (comma-separated,
      "" for none); "easy" is the paper's setting.
    * ``step_limit`` (int | None, 100): the simulator's move budget (see Episode End).
    * ``include_valid_actions`` (bool, False): put the valid actions in ``info`` (slow: a JVM round
      trip per step and long lists).
    * ``include_look_inventory`` (bool, True): put ``look`` and ``inventory`` in ``info`` (two
      JVM round trips per step; they cost no simulated time).
    * ``stall_limit`` (int | None, None): end an episode after this many actions without a score
      change (see Episode End).
    * ``jvm_options`` (list[str] | None, None): flags for the simulator's JVM; ``None`` is
      :data:`DEFAULT_JVM_OPTIONS` (``-XX:ActiveProcessorCount=1 -XX:+UseSerialGC``: one core's
      worth of GC and JIT threads per JVM, since every env has its own JVM; faster with several
      envs or env workers on few cores, ``benchmarks/bench_vector.py``), ``[]`` the JVM's own
      defaults. Passed through ``JDK_JAVA_OPTIONS`` while the JVM starts (the package's launcher
      takes no options).
    * ``generate_gold_path`` (bool, True): have the simulator plan a gold path when a variation is
      first loaded (seconds for some tasks; cached per variation afterwards). It is what
      :meth:`gold_actions` returns and what scripted teachers follow, found in
      ``env.unwrapped.task["gold_actions"]``. Pass False for faster RL resets.
    * ``action_format`` (str, ``"react"``): ``"react"`` reads each action as a ScienceWorld
      command; ``"tools"`` reads it as a tool call (:data:`mulligan.envs.tools.SCIENCE_TOOLS`: one
      tool per command template, ``select`` for an ambiguity's readings, ``command`` for any other
      command), listed in ``env.unwrapped.tools``. A call is rendered to its command and sent to
      the simulator; its observation is the simulator's answer and ``info["tool_call_id"]`` names
      the call. An invalid call is scored as an unrecognised command (0, ``feedback`` says why).

    The Java process is started in ``__init__`` and reused across resets: each reset re-loads the
    variation in the running JVM (``load`` measured faster than the simulator's own ``reset``,
    which regenerates the world and the gold path). ``close()`` ends it, and so does garbage
    collection of the env. If the JVM dies mid-episode, the episode is over: every ``step`` (of
    any action, sent or not) raises the same :class:`SimulatorDiedError` until ``reset``, which
    starts a fresh JVM. py4j's own logging of the dead connection is silenced (see
    :func:`import_scienceworld`); its exception stays in the error's ``__cause__``.

    ## Version History
    * v0: the real simulator behind ``gymnasium.make``: one JVM per env reused across resets,
      ``variation`` splits, the move budget as termination, ``stall_limit`` (the sub-goal paper's
      rule), ``look``/``inventory`` in ``info``, over-long actions refused unread, a dead JVM
      reported as :class:`SimulatorDiedError`; ``action_format="tools"`` (tool calls, beside the
      text commands, which stay the default).
    """

    tool_specs = SCIENCE_TOOLS

    def __init__(
        self,
        task: str | int | None = None,
        *,
        variation: int | str = "train",
        simplification: str = "easy",
        step_limit: int | None = 100,
        include_valid_actions: bool = False,
        include_look_inventory: bool = True,
        generate_gold_path: bool = True,
        stall_limit: int | None = None,
        jvm_options: Sequence[str] | None = None,
        action_format: str = "react",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode, action_format=action_format)
        self.jvm_options = check_jvm_options(jvm_options)
        self._sw = import_scienceworld()
        if step_limit is not None and (
            isinstance(step_limit, bool) or not isinstance(step_limit, int) or step_limit < 1
        ):
            raise ValueError(f"step_limit must be a positive int or None, got {step_limit!r}")
        if not isinstance(simplification, str):
            raise ValueError(f"simplification must be a str such as 'easy' or '', got {simplification!r}")
        self.simplification = simplification
        self.step_limit = step_limit
        self.include_valid_actions = bool(include_valid_actions)
        self.include_look_inventory = bool(include_look_inventory)
        self.stall_limit = check_stall_limit(stall_limit)
        self.generate_gold_path = bool(generate_gold_path)
        self.all_task_names = official_task_names()
        self.task_names = self._resolve_tasks(task)
        self._handle: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _shutdown_simulator, self._handle)
        self._loaded: tuple[str, int, str] | None = None
        self._gold_cache: dict[tuple[str, int, str], list[str]] = {}
        self._score = 0
        self._stalled = 0
        self._simulator_died = False
        self._start_simulator()
        self.task_pairs = self._resolve_pairs(variation)
        self.num_tasks = len(self.task_pairs)

    # ----------------------------------------------------------------- the JVM
    def _start_simulator(self) -> None:
        _shutdown_simulator(self._handle)
        with java_options(self.jvm_options):
            self._handle["sim"] = self._sw.ScienceWorldEnv("", envStepLimit=self.step_limit or 10**9)
        self._loaded = None

    @property
    def _sim(self) -> Any:
        sim = self._handle.get("sim")
        if sim is None:
            raise RuntimeError("the ScienceWorld simulator is closed; make a new env")
        return sim

    @property
    def java_process(self) -> subprocess.Popen | None:
        """The running JVM's process (``None`` once closed)."""
        sim = self._handle.get("sim")
        return None if sim is None else sim._gateway.java_process

    def simulator_alive(self) -> bool:
        """Whether the JVM is running."""
        process = self.java_process
        return process is not None and process.poll() is None

    def close(self) -> None:
        """End the Java process (idempotent)."""
        self._finalizer()
        super().close()

    # ----------------------------------------------------------------- task selection
    def _resolve_tasks(self, task: str | int | None) -> list[str]:
        if task is None:
            return list(self.all_task_names)
        if isinstance(task, bool):
            raise ValueError(f"task must be a name, an index or None, got {task!r}")
        if isinstance(task, int):
            if not 0 <= task < len(self.all_task_names):
                raise ValueError(f"task index {task} out of range [0, {len(self.all_task_names)})")
            return [self.all_task_names[task]]
        if isinstance(task, str):
            name = self._canonical_task(task)
            return [name]
        raise ValueError(f"task must be a name, an index or None, got {task!r}")

    def _canonical_task(self, task: str) -> str:
        from scienceworld.utils import infer_task

        name = infer_task(task)
        if name not in self.all_task_names:
            raise ValueError(f"unknown ScienceWorld task {task!r}; known tasks: {self.all_task_names}")
        return name

    def _splits(self, task_name: str) -> dict[str, list[int]]:
        if task_name not in _SPLIT_CACHE:
            sim = self._sim
            sim.server.load(task_name, 0, self.simplification, False)
            self._loaded = None
            _SPLIT_CACHE[task_name] = {
                "train": [int(v) for v in sim.server.getVariationsTrain()],
                "dev": [int(v) for v in sim.server.getVariationsDev()],
                "test": [int(v) for v in sim.server.getVariationsTest()],
            }
        return _SPLIT_CACHE[task_name]

    def _resolve_pairs(self, variation: int | str) -> list[tuple[str, int]]:
        if isinstance(variation, str):
            if variation not in SPLITS:
                raise ValueError(f"variation must be an int or one of {SPLITS}, got {variation!r}")
            return [(name, v) for name in self.task_names for v in self._splits(name)[variation]]
        if isinstance(variation, bool) or not isinstance(variation, int):
            raise ValueError(f"variation must be an int or one of {SPLITS}, got {variation!r}")
        for name in self.task_names:
            count = int(self._sim.server.getTaskMaxVariations(name))
            if not 0 <= variation < count:
                raise ValueError(f"variation {variation} out of range for task {name!r}: it has {count}")
        return [(name, variation) for name in self.task_names]

    def get_task(self, index: int) -> dict[str, Any]:
        """The record of pair ``index``: ``{"task_name", "variation", "simplification"}``."""
        name, variation = self.task_pairs[index]
        return {"task_name": name, "variation": variation, "simplification": self.simplification}

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``{"task_name": str, "variation": int, "simplification": str (optional)}``.

        Extra keys (such as ``gold_actions``, which the env adds on reset) are ignored.
        """
        name = record.get("task_name")
        if not isinstance(name, str):
            raise ValueError("a ScienceWorld task record needs a string 'task_name', e.g. 'boil'")
        name = self._canonical_task(name)
        variation = record.get("variation")
        if isinstance(variation, bool) or not isinstance(variation, int) or variation < 0:
            raise ValueError("a ScienceWorld task record needs a non-negative int 'variation'")
        count = int(self._sim.server.getTaskMaxVariations(name))
        if variation >= count:
            raise ValueError(f"variation {variation} out of range for task {name!r}: it has {count}")
        simplification = record.get("simplification", self.simplification)
        if not isinstance(simplification, str):
            raise ValueError("'simplification' must be a str such as 'easy'")
        return {"task_name": name, "variation": variation, "simplification": simplification}

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``scienceworld-<task>-<variation>-<simplification>``: stable for a given simulator version."""
        return f"scienceworld-{task['task_name']}-{task['variation']}-{task['simplification'] or 'none'}"

    def default_info(self) -> dict[str, Any]:
        """The family's extra keys: ``raw_score``, ``moves``, ``task_name``, ``variation``, ``valid_actions``, ..."""
        task = self.task or {}
        return {
            "raw_score": 0,
            "moves": 0,
            "task_name": task.get("task_name", ""),
            "variation": task.get("variation", -1),
            "valid_actions": [],
            "look": "",
            "inventory": "",
        }

    # ----------------------------------------------------------------- episodes
    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence for the current variation."""
        if self.task is None:
            raise RuntimeError("call reset() before gold_actions()")
        key = (self.task["task_name"], self.task["variation"], self.task["simplification"])
        if key not in self._gold_cache:
            raise RuntimeError("gold paths are off: make the env with generate_gold_path=True")
        return list(self._gold_cache[key])

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not self.simulator_alive():
            self._start_simulator()
        key = (task["task_name"], task["variation"], task["simplification"])
        want_gold = self.generate_gold_path and key not in self._gold_cache
        server = self._sim.server
        server.load(key[0], key[1], key[2], want_gold)
        self._loaded = key
        if want_gold:
            self._gold_cache[key] = [str(a) for a in server.getGoldActionSequence()]
        if key in self._gold_cache:
            # The teacher reads the gold path from the task record (AgentInput.task).
            task["gold_actions"] = list(self._gold_cache[key])
        self._score = 0
        self._stalled = 0
        self._simulator_died = False
        description = str(server.getTaskDescription())
        look = str(server.freeActionLook())
        info = self._info_updates(0)
        # What the agent carries at the start, for trainers that rebuild the first turn's context.
        task["initial_inventory"] = info["inventory"]
        return f"{description}\n\n{look}", info

    def _info_updates(self, moves: int) -> dict[str, Any]:
        server = self._sim.server
        valid = [str(a) for a in server.getValidActionObjectCombinations()] if self.include_valid_actions else []
        look = str(server.freeActionLook()) if self.include_look_inventory else ""
        inventory = str(server.freeActionInventory()) if self.include_look_inventory else ""
        return {
            "raw_score": self._score,
            "moves": moves,
            "task_name": self.task["task_name"],
            "variation": self.task["variation"],
            "valid_actions": valid,
            "look": look,
            "inventory": inventory,
        }

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score ``action``; after the JVM died, every call raises :class:`SimulatorDiedError` until reset."""
        if self._simulator_died:
            raise SimulatorDiedError(SIMULATOR_DIED_MESSAGE)
        if self._started and not self._done and not self.simulator_alive():
            # Checked here too, so that an action the base class refuses unread (over its length
            # limit) ends the episode the same way.
            raise self._died()
        return super().step(action)

    def _died(self, cause: BaseException | None = None) -> SimulatorDiedError:
        """End the episode because the JVM is gone; the error to raise (py4j's own stays in ``__cause__``)."""
        self._done = True
        self._simulator_died = True
        error = SimulatorDiedError(SIMULATOR_DIED_MESSAGE)
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error

    def _call(self, query: Any) -> Any:
        """Run ``query(server)`` on the JVM, turning a dead JVM into :class:`SimulatorDiedError`."""
        if not self.simulator_alive():
            raise self._died()
        try:
            return query(self._sim.server)
        except Exception as err:
            if self.simulator_alive() and not _is_network_error(err):
                raise
            raise self._died(err) from err

    def _step(self, action: str) -> StepOutcome:
        if len(action) > MAX_SIMULATOR_ACTION_CHARS:
            # Not sent (see MAX_SIMULATOR_ACTION_CHARS); the move count still comes from the JVM.
            observation, raw_score, completed = NO_MATCH, self._score, False
            moves = self._call(lambda server: int(server.getNumMoves()))
        else:
            # Lone surrogates cannot cross py4j's UTF-8 socket: replace them, like any bad byte.
            safe = action.encode("utf-8", "replace").decode("utf-8")

            def query(server: Any) -> tuple[str, int, bool, int]:
                observation = str(server.step(safe))
                return (
                    observation,
                    round(100 * float(server.getScore())),
                    bool(server.getCompleted()),
                    int(server.getNumMoves()),
                )

            observation, raw_score, completed, moves = self._call(query)
        previous = self._score
        self._score = raw_score
        self._stalled = 0 if raw_score != previous else self._stalled + 1
        failed = raw_score < 0
        over_budget = self.step_limit is not None and moves > self.step_limit and not completed
        stalled = self.stall_limit is not None and self._stalled >= self.stall_limit and not completed
        score = min(max(raw_score, 0), 100) / 100
        feedback = ""
        if observation.startswith(NO_MATCH):
            feedback = (
                "ScienceWorld did not recognise that action. Use its command templates, e.g. "
                "'open door to kitchen', 'go to kitchen', 'look around', 'pick up thermometer', "
                "'focus on substance in metal pot', 'wait1'."
            )
        elif observation.startswith(AMBIGUOUS_PREFIX):
            feedback = "The action is ambiguous: answer with the number of the reading you mean."
        elif failed:
            feedback = "The task failed (for example, by focusing on the wrong object)."
        elif over_budget:
            feedback = f"The simulator's move budget ({self.step_limit} moves) is spent."
        elif stalled:
            feedback = f"The score has not changed in {self.stall_limit} actions: the episode ends."
        reward = (score * 100 - max(min(previous, 100), 0)) / 100
        terminated = completed or failed or over_budget or stalled
        success = completed and not failed
        info = self._call(lambda server: self._info_updates(moves))
        return StepOutcome(
            observation=observation,
            reward=reward,
            terminated=terminated,
            success=success,
            score=score,
            feedback=feedback,
            info=info,
        )


def _is_network_error(err: Exception) -> bool:
    try:
        from py4j.protocol import Py4JNetworkError
    except ImportError:  # pragma: no cover - py4j comes with scienceworld
        return False
    return isinstance(err, Py4JNetworkError | ConnectionError | OSError)
