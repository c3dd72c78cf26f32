"""MiniScience: a small science simulator with ScienceWorld's action grammar, in pure Python.

* :mod:`~mulligan.envs.miniscience.world`: rooms, things, physics and the action parser (:class:`World`);
* :mod:`~mulligan.envs.miniscience.tasks`: one :class:`Task` object per task, in :data:`TASKS`;
* :mod:`~mulligan.envs.miniscience.planner`: the gold-path planner;
* :mod:`~mulligan.envs.miniscience.env`: ``Mulligan/MiniScience-v0`` (:class:`MiniScienceEnv`).
"""

from mulligan.envs.miniscience.env import SPLITS, MiniScienceEnv, split_variation
from mulligan.envs.miniscience.planner import Planner, plan_gold_actions
from mulligan.envs.miniscience.tasks import TASK_NAMES, TASKS, Task, build_variation
from mulligan.envs.miniscience.world import NO_MATCH, World, WorldConfig

__all__ = [
    "NO_MATCH",
    "SPLITS",
    "TASKS",
    "TASK_NAMES",
    "MiniScienceEnv",
    "Planner",
    "Task",
    "World",
    "WorldConfig",
    "build_variation",
    "plan_gold_actions",
    "split_variation",
]
