"""MiniScience's gold-path planner: a scripted solver that acts on a private copy of the world.

:func:`plan_gold_actions` builds nothing itself: it hands a :class:`Planner` (navigation, fetching,
opening, monitoring) to the task's :meth:`~mulligan.envs.miniscience.tasks.Task.plan`. Every
action the planner records was accepted by the simulation, and the plan ends when the task is
completed, so a gold path is correct by construction.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from mulligan.envs.miniscience.world import Thing, World

#: Thermometer readings the planner takes at most while waiting for a change of state.
MAX_MONITOR_READINGS = 400


def room_path(world: World, goal: str) -> list[str]:
    """Shortest room path from the agent's room to ``goal`` (room names, excluding the start)."""
    start = world.location.name
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        room = queue.popleft()
        if room == goal:
            break
        for nxt in sorted(world.rooms[room].doors):
            if nxt not in previous:
                previous[nxt] = room
                queue.append(nxt)
    path = []
    node: str | None = goal
    while node is not None and node != start:
        path.append(node)
        node = previous[node]
    return path[::-1]


class Planner:
    """Runs a scripted solver on ``world`` (a private copy) and records the actions it takes."""

    def __init__(self, world: World):
        self.world = world
        self.actions: list[str] = []

    def do(self, action: str) -> str:
        """Apply ``action`` and record it; ``AssertionError`` if the simulation does not recognise it."""
        observation, recognised = self.world.step(action)
        if not recognised:
            raise AssertionError(f"planner produced an unrecognised action {action!r}")
        self.actions.append(action)
        return observation

    def done(self) -> bool:
        """Whether the task has ended (completed or failed)."""
        return self.world.completed or self.world.failed

    def goto(self, room: str) -> None:
        """Walk to ``room``, opening closed doors on the way."""
        for nxt in room_path(self.world, room):
            if not self.world.location.doors[nxt]:
                self.do(f"open door to {nxt}")
            self.do(f"go to {nxt}")

    def room_of(self, thing: Thing) -> str:
        """The room ``thing`` is in (the agent's room for things in the inventory)."""
        node: Any = thing
        while isinstance(node, Thing):
            node = node.parent
        return node.name if node is not None else self.world.location.name

    def fetch(self, thing: Thing) -> None:
        """Walk to ``thing``, open what hides it, pick it up."""
        if thing.parent is self.world.inventory:
            return
        self.goto(self.room_of(thing))
        self.reveal(thing)
        self.do(f"pick up {thing.name}")

    def reveal(self, thing: Thing) -> None:
        """Open every closed container around ``thing``, outermost first."""
        closed = []
        holder = thing.parent
        while isinstance(holder, Thing):
            if holder.openable and holder.closed:
                closed.append(holder)
            holder = holder.parent
        for holder in reversed(closed):
            self.do(f"open {holder.name}")

    def monitor(self, ref: str) -> None:
        """Read the thermometer on ``ref`` and wait one tick, until the task ends."""
        for _ in range(MAX_MONITOR_READINGS):
            if self.done():
                return
            self.do(f"use thermometer in inventory on {ref}")
            if self.done():
                return
            self.do("wait1")


def plan_gold_actions(world: World) -> list[str]:
    """A gold action sequence that completes ``world``'s task (``world`` is consumed: pass a copy).

    Raises:
        AssertionError: If the task's solver does not complete the task (a bug in the task).
    """
    planner = Planner(world)
    world.task_spec.plan(planner)
    if not world.completed:
        raise AssertionError(f"the gold planner did not complete {world.task}; actions: {planner.actions}")
    return planner.actions
