"""MiniScience's tasks: one :class:`Task` object per task, registered in :data:`TASKS`.

A task is everything that differs between tasks, in one place:

* :meth:`Task.build` adds the task's objects to the shared house and writes its description;
* :meth:`Task.milestones` marks the milestones reached, completion and failure (the score is the
  sum of :attr:`Task.weights` of the milestones reached, ScienceWorld style);
* :meth:`Task.focus_allowed` says which ``focus on X`` does not fail the task;
* :meth:`Task.plan` solves the task with a :class:`~mulligan.envs.miniscience.planner.Planner`.

Adding a task means writing one subclass and adding it to :data:`TASKS`. The order of :data:`TASKS`
is part of every variation's seed: append new tasks at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mulligan.envs.core import seeded_rng
from mulligan.envs.miniscience.world import (
    FREEZER_TEMPERATURE,
    FRIDGE_TEMPERATURE,
    PLANT_KINDS,
    ROOM_TEMPERATURE,
    SUBSTANCES,
    Thing,
    World,
    WorldConfig,
    build_house,
    make_substance,
    pick,
)

if TYPE_CHECKING:
    from mulligan.envs.miniscience.planner import Planner

BOIL_SUBSTANCES = ("water", "salt water", "orange juice", "milk")
MELT_SUBSTANCES = ("water", "chocolate", "butter", "wax")
FREEZE_SUBSTANCES = ("water", "salt water", "orange juice", "milk")
MEASURE_SUBSTANCES = ("water", "orange juice", "milk", "salt water")
BOX_COLORS = ("red", "green", "blue", "orange", "yellow", "purple")
HOLDERS = ("glass cup", "tin cup", "ceramic bowl", "glass jar")
#: Rooms where answer boxes are placed.
BOX_ROOMS = ("kitchen", "living room", "workshop", "bathroom")


def _device_under(thing: Thing) -> str:
    """The device (stove, freezer, ...) the container holding ``thing`` stands on or in, or ``""``."""
    holder = thing.parent
    place = holder.parent if isinstance(holder, Thing) else None
    return getattr(place, "device", "") if place is not None else ""


class Task:
    """One MiniScience task (see the module docstring). Subclasses set :attr:`name` and :attr:`weights`."""

    #: The task's name, as in ScienceWorld.
    name: ClassVar[str] = ""
    #: Points of each partial milestone (completion is 100, failure 0).
    weights: ClassVar[Mapping[str, int]] = {}

    def build(self, rng: np.random.Generator, world: World) -> None:
        """Add the task's objects to ``world`` (the shared house) and set ``world.description``."""
        raise NotImplementedError

    def milestones(self, world: World) -> None:
        """Add reached milestones to ``world.milestones``; set ``world.completed`` / ``world.failed``."""
        raise NotImplementedError

    def focus_allowed(self, world: World, thing: Thing) -> bool:
        """Whether focusing on ``thing`` keeps the task alive (default: only the target)."""
        return thing is world.target

    def plan(self, planner: Planner) -> None:
        """Solve the task on ``planner.world``, recording every action through ``planner.do``."""
        raise NotImplementedError


class ChangeOfStateTask(Task):
    """``boil``, ``melt`` and ``freeze``: focus on a substance, then heat or cool it until its state changes."""

    weights: ClassVar[Mapping[str, int]] = {"focus": 25, "on heat": 25, "in cooler": 25, "temperature changed": 25}

    def __init__(self, name: str, substances: tuple[str, ...]):
        self.name = name  # type: ignore[misc] - one class, three tasks
        self.substances = substances

    def build(self, rng: np.random.Generator, world: World) -> None:
        """A substance in a holder somewhere in the kitchen (water: the agent fills the metal pot)."""
        counter, table = world.places["counter"], world.places["table"]
        fridge, freezer = world.places["fridge"], world.places["freezer"]
        key = pick(rng, self.substances)
        if self.name == "melt" and SUBSTANCES[key]["mp"] <= ROOM_TEMPERATURE:
            holder = freezer.add(Thing(pick(rng, HOLDERS), container=True))
            temperature = FREEZER_TEMPERATURE
        elif key == "water":
            holder, temperature = None, ROOM_TEMPERATURE  # the planner fills the metal pot at the sink
        else:
            place = pick(rng, [counter, table, fridge]) if self.name != "melt" else pick(rng, [counter, table])
            holder = place.add(Thing(pick(rng, HOLDERS), container=True))
            temperature = FRIDGE_TEMPERATURE if place is fridge else ROOM_TEMPERATURE
        world.task["substance"] = key
        world.task["start_temperature"] = temperature if holder is not None else ROOM_TEMPERATURE
        if holder is not None:
            substance = holder.add(make_substance(key, temperature))
            world.target = substance
            world.heat_trackers.append(substance)
        shown = SUBSTANCES[key]["solid" if self.name == "melt" else "liquid"]
        world.description = (
            f"Your task is to {self.name} {shown}. First, focus on the substance. Then, take actions that will "
            "cause it to change its state of matter."
        )

    def milestones(self, world: World) -> None:
        """Focus, on heat (or in the freezer), temperature changed by 5 degrees, state changed."""
        target, m = world.target, world.milestones
        if target is None or world.focus is not target:
            return
        m.add("focus")
        device = _device_under(target)
        start = world.task["start_temperature"]
        if self.name == "freeze":
            if device == "freezer":
                m.add("in cooler")
            if target.temperature < start - 5:
                m.add("temperature changed")
            if target.state == "solid":
                world.completed = True
            return
        holder = target.parent
        stove = holder.parent if isinstance(holder, Thing) else None
        if device == "stove" and stove is not None and stove.active:
            m.add("on heat")
        if target.temperature > start + 5:
            m.add("temperature changed")
        if (self.name == "boil" and target.state == "gas") or (self.name == "melt" and target.state != "solid"):
            world.completed = True

    def focus_allowed(self, world: World, thing: Thing) -> bool:
        """The substance; in water tasks, the water the agent made by filling a container."""
        if world.target is None and thing.spec is SUBSTANCES[world.task["substance"]]:
            world.target = thing
        return thing is world.target

    def plan(self, planner: Planner) -> None:
        """Thermometer, the substance's holder (filled at the sink for water), focus, heat or cool, monitor."""
        w = planner.world
        planner.fetch(w.thermometer)
        if w.target is None:  # water: fill the metal pot at the kitchen sink
            planner.goto("kitchen")
            pot = next(t for t in w.all_things() if t.name == "metal pot")
            planner.reveal(pot)
            for action in (
                "pick up metal pot",
                "move metal pot to sink",
                "activate sink",
                "deactivate sink",
                "pick up metal pot",
            ):
                planner.do(action)
            holder = pot
        else:
            holder = w.target.parent
            planner.fetch(holder)
        ref = f"substance in {holder.name}"
        planner.do(f"focus on {ref}")
        planner.goto("kitchen")
        if self.name == "freeze":
            freezer = next(t for t in w.location.contents if t.name == "freezer")
            if freezer.closed:
                planner.do("open freezer")
            planner.do(f"move {holder.name} to freezer")
        else:
            planner.do(f"move {holder.name} to stove")
            planner.do("activate stove")
        planner.monitor(ref)


class UseThermometerTask(Task):
    """``use-thermometer``: focus on the thermometer, then the substance; sort it into a box by temperature."""

    name: ClassVar[str] = "use-thermometer"
    weights: ClassVar[Mapping[str, int]] = {"focus thermometer": 25, "focus target": 25, "measured": 25}

    def build(self, rng: np.random.Generator, world: World) -> None:
        """A substance in the kitchen, a threshold, two coloured boxes in another room."""
        counter, table, fridge = world.places["counter"], world.places["table"], world.places["fridge"]
        key = pick(rng, MEASURE_SUBSTANCES)
        place = pick(rng, [counter, table, fridge])
        holder = place.add(Thing(pick(rng, HOLDERS), container=True))
        temperature = FRIDGE_TEMPERATURE if place is fridge else ROOM_TEMPERATURE
        substance = holder.add(make_substance(key, temperature))
        world.target = substance
        threshold = float(temperature + pick(rng, (-15, -10, -5, 5, 10, 15)))
        above, below = (str(c) for c in rng.permutation(BOX_COLORS)[:2])
        box_room = world.rooms[pick(rng, BOX_ROOMS)]
        above_box = box_room.add(Thing(f"{above} box", container=True, portable=False))
        below_box = box_room.add(Thing(f"{below} box", container=True, portable=False))
        world.answer_box = above_box if temperature > threshold else below_box
        world.task.update(substance=key, threshold=threshold)
        name = substance.name
        world.description = (
            f"Your task is to measure the temperature of the {name}, which is located around the kitchen. "
            f"First, focus on the thermometer. Next, focus on the {name}. If the {name} temperature is above "
            f"{threshold} degrees celsius, place it in the {above} box. If the {name} temperature is below "
            f"{threshold} degrees celsius, place it in the {below} box. The boxes are located around the "
            f"{box_room.name}."
        )

    def milestones(self, world: World) -> None:
        """Focus on the thermometer, then the target, measure it; the right box completes, a wrong one fails."""
        target, m = world.target, world.milestones
        if world.focus is world.thermometer:
            m.add("focus thermometer")
        if "focus thermometer" in m and world.focus is target:
            m.add("focus target")
        if id(target) in world.measured and "focus target" in m:
            m.add("measured")
        box = target.parent
        while isinstance(box, Thing) and not box.name.endswith(" box"):
            box = box.parent
        if isinstance(box, Thing):
            if box is world.answer_box and "focus target" in m:
                world.completed = True
            else:
                world.failed = True

    def focus_allowed(self, world: World, thing: Thing) -> bool:
        """The thermometer or the substance."""
        return thing is world.thermometer or thing is world.target

    def plan(self, planner: Planner) -> None:
        """Thermometer, focus on it and on the substance, measure, carry the holder to the right box."""
        w = planner.world
        planner.fetch(w.thermometer)
        planner.do("focus on thermometer")
        target = w.target
        holder = target.parent
        planner.goto(planner.room_of(holder))
        planner.reveal(target)
        planner.do(f"focus on {target.name}")
        planner.do(f"use thermometer in inventory on {target.name}")
        planner.do(f"pick up {holder.name}")
        planner.goto(planner.room_of(w.answer_box))
        planner.do(f"move {holder.name} to {w.answer_box.name}")


class GrowPlantTask(Task):
    """``grow-plant``: focus on a seed, plant it in a pot with soil, water it until it reproduces."""

    name: ClassVar[str] = "grow-plant"
    weights: ClassVar[Mapping[str, int]] = {"focus": 10, "planted": 20, "watered": 10, "seedling": 20, "adult": 20}

    def build(self, rng: np.random.Generator, world: World) -> None:
        """A seed jar in the kitchen or the greenhouse."""
        kind = pick(rng, PLANT_KINDS)
        jar_room = pick(rng, (world.rooms["kitchen"], world.rooms["greenhouse"]))
        jar = jar_room.add(Thing("seed jar", container=True))
        seed = jar.add(Thing(f"{kind} seed", living=True))
        seed.growth = 0
        world.target = seed
        world.plants.append(seed)
        world.task["plant"] = kind
        world.description = (
            f"Your task is to grow a {kind} plant from seed. Seeds can be found in the {jar_room.name}. "
            "First, focus on a seed. Then, make changes to the environment that grow the plant until it "
            "reaches the reproducing stage."
        )

    def milestones(self, world: World) -> None:
        """Focus, planted, watered, seedling, adult; reproducing completes, a dead plant fails."""
        target, m = world.target, world.milestones
        if world.focus is not target:
            return
        m.add("focus")
        pot = target.parent
        if isinstance(pot, Thing) and pot.soil:
            m.add("planted")
            if pot.water > 0:
                m.add("watered")
        stage = target.stage()
        if stage in ("seedling", "adult", "reproducing"):
            m.add("seedling")
        if stage in ("adult", "reproducing"):
            m.add("adult")
        if stage == "reproducing":
            world.completed = True
        if not target.living:
            world.failed = True

    def plan(self, planner: Planner) -> None:
        """Seed jar, focus on the seed, plant it in an empty pot with soil, water and wait until it reproduces."""
        w = planner.world
        seed = w.target
        planner.fetch(seed.parent)
        planner.do(f"focus on {seed.name} in seed jar")
        planner.goto("greenhouse")
        pot = next(p for p in w.location.contents if p.name.startswith("flower pot") and p.soil and not p.contents)
        planner.do(f"move {seed.name} in seed jar to {pot.name}")
        for _ in range(20):
            if planner.done():
                break
            if pot.water <= 0:
                for action in ("move jug to sink", "activate sink", "deactivate sink", f"pour jug into {pot.name}"):
                    planner.do(action)
            planner.do("wait")


class FindThingTask(Task):
    """``find-living-thing`` / ``find-non-living-thing``: focus on such a thing and move it to a box."""

    weights: ClassVar[Mapping[str, int]] = {"focus": 50, "picked up": 25}

    def __init__(self, living: bool):
        self.living = living
        self.name = "find-living-thing" if living else "find-non-living-thing"  # type: ignore[misc]

    def build(self, rng: np.random.Generator, world: World) -> None:
        """A coloured box in one of the rooms."""
        color = pick(rng, BOX_COLORS)
        box_room = world.rooms[pick(rng, BOX_ROOMS)]
        world.answer_box = box_room.add(Thing(f"{color} box", container=True, portable=False))
        kind = "living" if self.living else "non-living"
        world.description = (
            f"Your task is to find a(n) {kind} thing. First, focus on the thing. Then, move it to the "
            f"{color} box in the {box_room.name}."
        )

    def milestones(self, world: World) -> None:
        """Focus, picked up; in the box completes."""
        focus = world.focus
        if focus is None:
            return
        world.milestones.add("focus")
        if focus.parent is world.inventory:
            world.milestones.add("picked up")
        if focus.parent is world.answer_box:
            world.completed = True

    def focus_allowed(self, world: World, thing: Thing) -> bool:
        """A living thing, or a portable non-living object that is not a substance."""
        if self.living:
            return thing.living
        return not thing.living and thing.portable and thing.spec is None

    def plan(self, planner: Planner) -> None:
        """An animal outside (or a nearby object), focus, pick it up, carry it to the box."""
        w = planner.world
        if self.living:
            planner.goto("outside")
            choice = next(t for t in w.location.contents if t.living)
        else:
            candidates = [t for t in w.visible() if not t.living and t.portable and t.spec is None and t.device == ""]
            if not candidates:
                planner.goto("outside")
                candidates = [t for t in w.location.contents if not t.living and t.portable]
            choice = candidates[0]
        planner.do(f"focus on {choice.name}")
        planner.do(f"pick up {choice.name}")
        planner.goto(planner.room_of(w.answer_box))
        planner.do(f"move {choice.name} in inventory to {w.answer_box.name}")


#: Every task by name, in the order that salts each variation's seed (append new tasks at the end).
TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        ChangeOfStateTask("boil", BOIL_SUBSTANCES),
        ChangeOfStateTask("melt", MELT_SUBSTANCES),
        ChangeOfStateTask("freeze", FREEZE_SUBSTANCES),
        UseThermometerTask(),
        GrowPlantTask(),
        FindThingTask(living=True),
        FindThingTask(living=False),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def build_variation(config: WorldConfig, task_name: str, variation: int, seed: int) -> World:
    """The world of ``variation`` of ``task_name`` for world seed ``seed`` (pure in its arguments).

    Args:
        config: A :class:`~mulligan.envs.miniscience.world.WorldConfig`.
        task_name: One of :data:`TASK_NAMES`.
        variation: The variation index (>= 0).
        seed: The world generator's seed (the env's ``data_seed``).
    """
    task_spec = TASKS.get(task_name)
    if task_spec is None:
        raise ValueError(f"unknown MiniScience task {task_name!r}; known: {TASK_NAMES}")
    rng = seeded_rng(seed, variation, TASK_NAMES.index(task_name))
    task: dict[str, Any] = {"task_name": task_name, "variation": variation, "data_seed": seed}
    world = build_house(config, rng, task, task_spec)
    task_spec.build(rng, world)
    task["description"] = world.description
    return world
