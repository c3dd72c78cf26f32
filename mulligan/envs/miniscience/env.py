"""``Mulligan/MiniScience-v0``: the Gymnasium env over MiniScience's world, tasks and planner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome
from mulligan.envs.miniscience.planner import plan_gold_actions
from mulligan.envs.miniscience.tasks import TASK_NAMES, build_variation
from mulligan.envs.miniscience.world import NO_MATCH, World, WorldConfig
from mulligan.envs.tools import SCIENCE_TOOLS

SPLITS = ("train", "dev", "test")
#: Actions longer than this are not parsed: no command of the grammar is anywhere near as long.
MAX_PARSED_ACTION_CHARS = 1000


def split_variation(split: str, k: int) -> int:
    """The ``k``-th variation of a split: variations ``v`` with ``v % 4`` in {0, 1} train, 2 dev, 3 test."""
    if split == "train":
        return 4 * (k // 2) + k % 2
    return 4 * k + (2 if split == "dev" else 3)


def check_stall_limit(stall_limit: Any) -> int | None:
    """Validate a ``stall_limit`` env argument (``None`` or a positive int)."""
    if stall_limit is not None and (
        isinstance(stall_limit, bool) or not isinstance(stall_limit, int) or stall_limit < 1
    ):
        raise ValueError(
            f"stall_limit must be a positive int (the sub-goal paper uses 50) or None, got {stall_limit!r}"
        )
    return stall_limit


class MiniScienceEnv(MulliganEnv):
    """A small science world with ScienceWorld's action grammar, thousands of times faster.

    ## Description
    Seven rooms joined by doors (hallway, kitchen, greenhouse, living room, bathroom, workshop,
    outside), containers that open and close, substances whose temperature follows their
    surroundings and whose state of matter (solid, liquid, gas) follows their temperature, devices
    (stove, sink, freezer, fridge, lighter), a thermometer, plants that grow in pots with soil and
    water, animals. Seven tasks, each with endless seeded variations (start room, substance, where
    things are, box colours, thresholds): ``boil``, ``melt``, ``freeze``, ``use-thermometer``
    (measure a temperature and sort by threshold), ``grow-plant``, ``find-living-thing`` and
    ``find-non-living-thing`` (focus on it, move it to a box). The grammar is ScienceWorld's for the
    actions it supports, so a policy can move between this env and ``Mulligan/ScienceWorld-v0``.

    A *task index* ``i`` is task ``tasks[i % len(tasks)]`` at the ``(i // len(tasks))``-th
    variation of the chosen ``variation`` split; with an int ``variation``, index ``i`` is task
    ``tasks[i]`` at that variation and ``num_tasks == len(tasks)``; otherwise ``num_tasks`` is
    ``None`` (endless). ``options={"task": record}`` runs ``{"task_name", "variation",
    "data_seed"}``; ``env.unwrapped.task`` round-trips.

    ## Observation and Action Space
    Text. On reset: the task description, a blank line and the room description (the same text
    as ``info["look"]``). Actions:
    ``look around``, ``inventory``, ``wait`` (10 moves), ``wait1``, ``open/close door to ROOM``,
    ``go to ROOM``, ``open/close X``, ``pick up X``, ``put down X``, ``move X to Y``,
    ``pour X into Y``, ``activate/deactivate X``, ``focus on X``, ``use X on Y``, ``examine X``,
    ``look at X``. Objects are named as in the room description; ``X in CONTAINER``,
    ``X in inventory`` and ``substance in CONTAINER`` disambiguate. Case and extra spaces are
    ignored.

    ## Reward
    The change in the task's milestone score divided by 100, so that an episode's return is its
    final score in [0, 1] (ScienceWorld's scheme). Milestones give partial credit (e.g. boil:
    focus on the substance, heat it, its temperature changes, it boils). Focusing on the wrong
    object fails the task: the score drops to 0. An unrecognised action pays 0, costs no simulated
    time and sets ``feedback``.

    ## Episode End
    ``terminated`` when the task is completed (``success``) or failed, or, with ``stall_limit=n``,
    after ``n`` consecutive actions without a score change (the sub-goal paper's evaluation stops
    an episode after 50; ``success`` False, the score keeps its partial credit, ``feedback`` says
    so). The env never truncates; registration caps episodes at 100 turns.

    ## Information
    ``task_id``, ``success``, ``score``, ``feedback``, ``moves`` (simulated time), ``task_name``,
    ``variation``, ``valid_actions`` (with ``include_valid_actions=True``; an empty list otherwise),
    ``look`` (the room description, as ``look around`` shows it) and ``inventory`` (the inventory
    listing): the state the sub-goal paper's agents read on every step (``look`` and ``inventory``
    are free actions in ScienceWorld, so showing them costs the agent nothing).
    On reset the env adds ``gold_actions`` to the task record (``env.unwrapped.task``), which is
    how scripted teachers read the gold path through ``AgentInput.task``, and
    ``initial_inventory`` (the reset ``info["inventory"]``, which a stored trajectory would lose).

    ## Arguments
    * ``task`` (str | int | None, None): a task name, an index into the tasks, or ``None`` for all.
    * ``variation`` (int | str, "train"): a variation index, or ``"train"``/``"dev"``/``"test"``
      (variations ``v`` with ``v % 4`` in {0, 1}, 2, 3).
    * ``data_seed`` (int, 0): seed of the world generator.
    * ``closed_doors`` (bool, True): whether doors start closed.
    * ``num_animals`` (int, 2): animals outside, in [1, 8].
    * ``num_flower_pots`` (int, 3): flower pots in the greenhouse, in [2, 6].
    * ``include_valid_actions`` (bool, False): put the valid actions in ``info``.
    * ``include_look_inventory`` (bool, True): put ``look`` and ``inventory`` in ``info`` (they
      cost about a third of the env's speed; pass False for RL without the sub-goal agents).
    * ``stall_limit`` (int | None, None): end the episode after this many consecutive actions
      without a score change (see Episode End).
    * ``action_format`` (str, ``"react"``): ``"react"`` reads each action as a command of the
      grammar above; ``"tools"`` reads it as a tool call (ScienceWorld-v0's tools,
      :data:`mulligan.envs.tools.SCIENCE_TOOLS`), listed in ``env.unwrapped.tools``. A call is
      rendered to its command; its observation is the world's answer and ``info["tool_call_id"]``
      names the call. An invalid call is scored as an unrecognised command.

    The world's parts live in :mod:`mulligan.envs.miniscience.world` (simulation),
    :mod:`~mulligan.envs.miniscience.tasks` (one :class:`~mulligan.envs.miniscience.tasks.Task`
    per task) and :mod:`~mulligan.envs.miniscience.planner` (gold paths).

    ## Version History
    * v0: seven tasks with endless seeded variations and ScienceWorld's grammar, gold paths from
      the planner, ``stall_limit``, ``look``/``inventory`` in ``info``; ``action_format="tools"``
      (tool calls, beside the text commands, which stay the default).
    """

    tool_specs = SCIENCE_TOOLS

    def __init__(
        self,
        task: str | int | None = None,
        *,
        variation: int | str = "train",
        data_seed: int = 0,
        closed_doors: bool = True,
        num_animals: int = 2,
        num_flower_pots: int = 3,
        include_valid_actions: bool = False,
        include_look_inventory: bool = True,
        stall_limit: int | None = None,
        action_format: str = "react",
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode, action_format=action_format)
        if task is None:
            tasks = TASK_NAMES
        elif isinstance(task, bool) or not isinstance(task, int | str):
            raise ValueError(f"task must be a name, an index or None, got {task!r}")
        elif isinstance(task, int):
            if not 0 <= task < len(TASK_NAMES):
                raise ValueError(f"task index {task} out of range [0, {len(TASK_NAMES)})")
            tasks = (TASK_NAMES[task],)
        else:
            if task not in TASK_NAMES:
                raise ValueError(f"unknown MiniScience task {task!r}; known: {TASK_NAMES}")
            tasks = (task,)
        if isinstance(variation, str):
            if variation not in SPLITS:
                raise ValueError(f"variation must be an int >= 0 or one of {SPLITS}, got {variation!r}")
            self.num_tasks = None
        elif isinstance(variation, bool) or not isinstance(variation, int) or variation < 0:
            raise ValueError(f"variation must be an int >= 0 or one of {SPLITS}, got {variation!r}")
        else:
            self.num_tasks = len(tasks)
        if not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
        self.task_names = tasks
        self.variation = variation
        self.data_seed = data_seed
        self.config = WorldConfig(closed_doors=closed_doors, num_animals=num_animals, num_flower_pots=num_flower_pots)
        self.include_valid_actions = bool(include_valid_actions)
        self.include_look_inventory = bool(include_look_inventory)
        self.stall_limit = check_stall_limit(stall_limit)
        self.world: World | None = None
        self._score = 0
        self._stalled = 0

    # ----------------------------------------------------------------- task selection
    def get_task(self, index: int) -> dict[str, Any]:
        """The record of task ``index``: ``{"task_name", "variation", "data_seed"}``."""
        n = len(self.task_names)
        if isinstance(self.variation, int):
            name, variation = self.task_names[index], self.variation
        else:
            name, variation = self.task_names[index % n], split_variation(self.variation, index // n)
        return {"task_name": name, "variation": variation, "data_seed": self.data_seed}

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``{"task_name": str, "variation": int >= 0, "data_seed": int (optional)}``."""
        name = record.get("task_name")
        if name not in TASK_NAMES:
            raise ValueError(f"a MiniScience task record needs 'task_name', one of {TASK_NAMES}; got {name!r}")
        variation = record.get("variation")
        if isinstance(variation, bool) or not isinstance(variation, int) or variation < 0:
            raise ValueError("a MiniScience task record needs a non-negative int 'variation'")
        seed = record.get("data_seed", self.data_seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError("'data_seed' must be a non-negative int")
        return {"task_name": name, "variation": variation, "data_seed": seed}

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``miniscience-<task>-<seed>-<variation>``."""
        return f"miniscience-{task['task_name']}-{task['data_seed']}-{task['variation']}"

    def default_info(self) -> dict[str, Any]:
        """MiniScience adds ``moves``, ``task_name``, ``variation``, ``valid_actions``, ``look``, ``inventory``."""
        task = self.task or {}
        return {
            "moves": 0,
            "task_name": task.get("task_name", ""),
            "variation": task.get("variation", -1),
            "valid_actions": [],
            "look": "",
            "inventory": "",
        }

    # ----------------------------------------------------------------- episodes
    def _build(self, task: Mapping[str, Any]) -> World:
        return build_variation(self.config, task["task_name"], task["variation"], task["data_seed"])

    def gold_actions(self) -> list[str]:
        """A gold action sequence for the current task (planned on a private copy of the world)."""
        if self.task is None:
            raise RuntimeError("call reset() before gold_actions()")
        return list(self.task["gold_actions"])

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.world = self._build(task)
        task["gold_actions"] = plan_gold_actions(self._build(task))
        # What the agent carries at the start, for trainers that rebuild the first turn's context.
        task["initial_inventory"] = self.world.inventory_text() if self.include_look_inventory else ""
        self._score = 0
        self._stalled = 0
        return f"{self.world.description}\n\n{self.world.look()}", self._info_updates()

    def _info_updates(self) -> dict[str, Any]:
        world = self.world
        return {
            "moves": world.moves,
            "task_name": self.task["task_name"],
            "variation": self.task["variation"],
            "valid_actions": world.valid_actions() if self.include_valid_actions else [],
            "look": world.look() if self.include_look_inventory else "",
            "inventory": world.inventory_text() if self.include_look_inventory else "",
        }

    def _step(self, action: str) -> StepOutcome:
        world = self.world
        if len(action) > MAX_PARSED_ACTION_CHARS:
            observation, recognised = NO_MATCH, False
        else:
            observation, recognised = world.step(action)
        previous, score = self._score, world.score
        self._score = score
        self._stalled = 0 if score != previous else self._stalled + 1
        stalled = self.stall_limit is not None and self._stalled >= self.stall_limit
        feedback = ""
        if not recognised:
            feedback = (
                "No known action matches that input. Use ScienceWorld's command templates with objects "
                "you can see, e.g. 'open door to kitchen', 'go to kitchen', 'pick up thermometer', "
                "'move metal pot to stove', 'focus on substance in metal pot', 'wait1', 'look around'."
            )
        elif world.failed:
            feedback = "The task failed (for example, by focusing on the wrong object)."
        elif stalled and not world.completed:
            feedback = f"The score has not changed in {self.stall_limit} actions: the episode ends."
        terminated = world.completed or world.failed or stalled
        return StepOutcome(
            observation=observation,
            reward=(score - previous) / 100,
            terminated=terminated,
            success=world.completed,
            score=score / 100,
            feedback=feedback,
            info=self._info_updates(),
        )
