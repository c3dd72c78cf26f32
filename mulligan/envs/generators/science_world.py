"""MiniScience's world: a small pure-Python science simulation with ScienceWorld's action grammar.

Pure world building (:func:`build_world`, a function of ``(config, seed, index)``), the simulation
(:class:`World`: parsing, physics ticks, milestone scoring) and a gold-path planner
(:func:`plan_gold_actions`, which runs a scripted solver on a private copy of the world, so the
plan is correct by construction).

Physics, per tick (most actions take one tick; ``wait`` takes ten, ``wait1`` one; ``look around``,
``inventory``, ``examine`` and ``look at`` are free, as in ScienceWorld):

* Each substance moves towards the temperature of where it is, by a fixed rate: a container on an
  active stove heats at ``STOVE_RATE`` towards ``STOVE_TEMPERATURE``, the freezer and fridge cool
  their contents, anything else drifts slowly towards room temperature.
* A substance is solid below its melting point, gas at or above its boiling point, liquid between;
  its name follows its state (ice / water / steam).
* An active sink fills every container in it with water.
* A seed or plant in a flower pot with soil and water grows one unit per tick and drinks one unit of
  water; it passes seedling, adult and reproducing stages; a plant without water for
  ``PLANT_DROUGHT_TICKS`` ticks dies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from mulligan.envs.core import seeded_rng

ROOM_TEMPERATURE = 20.0
STOVE_TEMPERATURE = 300.0
STOVE_RATE = 10.0
FREEZER_TEMPERATURE = -25.0
FREEZER_RATE = 5.0
FRIDGE_TEMPERATURE = 4.0
FRIDGE_RATE = 2.0
AMBIENT_RATE = 0.5
LIGHTER_HEAT = 25.0
WATER_PER_POUR = 10
PLANT_STAGES = ("seed", "seedling", "adult", "reproducing")
STAGE_GROWTH = (0, 8, 16, 24)
PLANT_DROUGHT_TICKS = 40

#: Substances: names by state, melting and boiling points (degrees Celsius).
SUBSTANCES: dict[str, dict[str, Any]] = {
    "water": {"solid": "ice", "liquid": "water", "gas": "steam", "mp": 0.0, "bp": 100.0},
    "salt water": {"solid": "frozen salt water", "liquid": "salt water", "gas": "salty steam",
                   "mp": -10.0, "bp": 102.0},
    "orange juice": {"solid": "frozen orange juice", "liquid": "orange juice", "gas": "orange juice vapor",
                     "mp": -2.0, "bp": 100.0},
    "milk": {"solid": "frozen milk", "liquid": "milk", "gas": "milk vapor", "mp": -1.0, "bp": 101.0},
    "chocolate": {"solid": "chocolate", "liquid": "liquid chocolate", "gas": "chocolate smoke",
                  "mp": 35.0, "bp": 250.0},
    "butter": {"solid": "butter", "liquid": "liquid butter", "gas": "butter smoke", "mp": 32.0, "bp": 250.0},
    "wax": {"solid": "wax", "liquid": "liquid wax", "gas": "wax vapor", "mp": 60.0, "bp": 280.0},
}
BOIL_SUBSTANCES = ("water", "salt water", "orange juice", "milk")
MELT_SUBSTANCES = ("water", "chocolate", "butter", "wax")
FREEZE_SUBSTANCES = ("water", "salt water", "orange juice", "milk")
MEASURE_SUBSTANCES = ("water", "orange juice", "milk", "salt water")
ANIMALS = ("dove", "butterfly", "frog", "chipmunk", "beaver", "toad", "moth", "crow")
PLANT_KINDS = ("apple", "orange", "peach", "lemon", "pea", "banana")
NONLIVING = ("tin cup", "book", "rock", "axe", "ceramic bowl", "picture", "shovel", "towel")
BOX_COLORS = ("red", "green", "blue", "orange", "yellow", "purple")
HOLDERS = ("glass cup", "tin cup", "ceramic bowl", "glass jar")

#: Rooms and the doors between them (ScienceWorld's house, smaller).
ROOMS = ("hallway", "kitchen", "greenhouse", "living room", "bathroom", "workshop", "outside")
DOORS = (
    ("hallway", "kitchen"), ("hallway", "greenhouse"), ("hallway", "living room"),
    ("hallway", "workshop"), ("kitchen", "bathroom"), ("kitchen", "outside"), ("greenhouse", "outside"),
)
TASK_NAMES = ("boil", "melt", "freeze", "use-thermometer", "grow-plant", "find-living-thing",
              "find-non-living-thing")


@dataclass(frozen=True)
class ScienceWorldConfig:
    """Configuration of MiniScience's world generator.

    Attributes:
        tasks: Task names the generator draws from (any of :data:`TASK_NAMES`).
        closed_doors: Whether doors start closed (ScienceWorld's "easy" mode opens them).
        num_animals: How many animals live outside.
        num_flower_pots: Flower pots in the greenhouse (some without soil).
    """

    tasks: tuple[str, ...] = TASK_NAMES
    closed_doors: bool = True
    num_animals: int = 2
    num_flower_pots: int = 3

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {TASK_NAMES}; unknown: {unknown}")
        if not 1 <= self.num_animals <= len(ANIMALS):
            raise ValueError(f"num_animals must lie in [1, {len(ANIMALS)}], got {self.num_animals}")
        if not 2 <= self.num_flower_pots <= 6:
            raise ValueError(f"num_flower_pots must lie in [2, 6], got {self.num_flower_pots}")


class Thing:
    """An object of the world: furniture, container, device, substance, plant or animal."""

    __slots__ = (
        "active", "closed", "container", "contents", "device", "dry", "growth", "living", "name",
        "openable", "parent", "portable", "soil", "spec", "state", "surface", "temperature", "water",
    )

    def __init__(self, name: str, *, container: bool = False, surface: bool = False, openable: bool = False,
                 portable: bool = True, device: str = "", living: bool = False,
                 temperature: float = ROOM_TEMPERATURE):
        self.name = name
        self.container = container or surface
        self.surface = surface
        self.openable = openable
        self.closed = openable
        self.portable = portable
        self.device = device
        self.active = device in ("freezer", "fridge")
        self.living = living
        self.temperature = temperature
        self.contents: list[Thing] = []
        self.parent: Thing | Room | None = None
        self.spec: dict[str, Any] | None = None
        self.state = ""
        self.soil = False
        self.water = 0
        self.growth = -1
        self.dry = 0

    def add(self, thing: Thing) -> Thing:
        """Put ``thing`` inside (or on) this thing and return it."""
        if thing.parent is not None:
            thing.parent.contents.remove(thing)
        self.contents.append(thing)
        thing.parent = self
        return thing

    @property
    def is_plant(self) -> bool:
        """Whether this is a seed or plant."""
        return self.growth >= 0

    def describe(self) -> str:
        """One line of a room description."""
        if self.spec is not None:
            return f"a substance called {self.name}"
        text = f"a {self.name}"
        if self.is_plant:
            text = f"a {self.name} in the {self.stage()} stage" + ("" if self.living else " (dead)")
        if self.device in ("stove", "sink", "lighter"):
            text += ", which is turned " + ("on" if self.active else "off")
        if self.container:
            if self.openable and self.closed:
                return text + " (closed)"
            inner = [t.describe().removeprefix("a ") for t in self.contents]
            if self.soil:
                inner.insert(0, "soil")
            if self.water > 0:
                inner.append("water")
            listing = ", ".join(inner) or "nothing"
            return text + (f". On the {self.name} is: {listing}." if self.surface else f" (containing {listing})")
        return text

    def stage(self) -> str:
        """The plant's life stage."""
        stage = 0
        for i, threshold in enumerate(STAGE_GROWTH):
            if self.growth >= threshold:
                stage = i
        return PLANT_STAGES[stage]


class Room:
    """A room: its contents and the doors to its neighbours (``doors[neighbour] = is_open``)."""

    __slots__ = ("contents", "doors", "name", "temperature")

    def __init__(self, name: str, temperature: float = ROOM_TEMPERATURE):
        self.name = name
        self.contents: list[Thing] = []
        self.doors: dict[str, bool] = {}
        self.temperature = temperature

    def add(self, thing: Thing) -> Thing:
        """Put ``thing`` in the room and return it."""
        if thing.parent is not None:
            thing.parent.contents.remove(thing)
        self.contents.append(thing)
        thing.parent = self
        return thing


def make_substance(key: str, temperature: float) -> Thing:
    """A substance of kind ``key`` at ``temperature``, in the state that temperature implies."""
    spec = SUBSTANCES[key]
    thing = Thing(spec["liquid"], portable=False, temperature=temperature)
    thing.spec = spec
    _update_state(thing)
    return thing


def _update_state(thing: Thing) -> None:
    spec = thing.spec
    t = thing.temperature
    state = "solid" if t < spec["mp"] else ("gas" if t >= spec["bp"] else "liquid")
    thing.state = state
    thing.name = spec[state]


def _pick(rng: np.random.Generator, options: tuple | list) -> Any:
    return options[int(rng.integers(len(options)))]


class World:
    """A running MiniScience world: the rooms, the agent's location and inventory, the task state.

    Built by :func:`build_world`. :meth:`step` applies one action string and returns the
    observation; :attr:`score` (0-100), :attr:`completed` and :attr:`failed` follow the task's
    milestones.
    """

    def __init__(self, task: dict[str, Any], rooms: dict[str, Room], start: str):
        self.task = task
        self.rooms = rooms
        self.location = rooms[start]
        self.inventory = Thing("inventory", container=True, portable=False)
        self.moves = 0
        self.score = 0
        self.completed = False
        self.failed = False
        self.focus: Thing | None = None
        self.focus_count = 0
        self.milestones: set[str] = set()
        self.measured: set[int] = set()
        self.target: Thing | None = None
        self.description = ""
        self.heat_trackers: list[Thing] = []
        self.plants: list[Thing] = []
        self.thermometer: Thing | None = None
        self.answer_box: Thing | None = None
        self.sinks: list[Thing] = []

    # ------------------------------------------------------------------ queries
    def all_things(self) -> list[Thing]:
        """Every thing in the world (rooms and inventory), depth first."""
        out: list[Thing] = []
        stack = [t for room in self.rooms.values() for t in room.contents] + list(self.inventory.contents)
        while stack:
            thing = stack.pop()
            out.append(thing)
            stack.extend(thing.contents)
        return out

    def visible(self) -> list[Thing]:
        """Things the agent can refer to: the room's and the inventory's, inside open containers."""
        out: list[Thing] = []
        stack = list(self.location.contents) + list(self.inventory.contents)
        while stack:
            thing = stack.pop()
            out.append(thing)
            if thing.contents and not thing.closed:
                stack.extend(thing.contents)
        return out

    def resolve(self, ref: str) -> Thing | None:
        """The visible thing a reference names: ``NAME``, ``NAME in CONTAINER``, ``substance in X``."""
        ref = ref.strip()
        if ref.startswith("the "):
            ref = ref[4:]
        qualifier = None
        if " in " in ref:
            head, _, qualifier = ref.partition(" in ")
        else:
            head = ref
        if head == "substance" and qualifier is not None:
            holder = self.resolve(qualifier)
            if holder is None:
                return None
            for thing in holder.contents:
                if thing.spec is not None:
                    return thing
            return None
        candidates = self.visible()
        if qualifier == "inventory":
            candidates = [t for t in candidates if t.parent is self.inventory]
        elif qualifier is not None:
            candidates = [t for t in candidates if isinstance(t.parent, Thing) and t.parent.name == qualifier]
        for thing in candidates:
            if thing.name == head:
                return thing
        # The qualifier may name the room, as in ScienceWorld's "dove in outside".
        if qualifier is not None and not candidates and qualifier == self.location.name:
            return self.resolve(head)
        return None

    # ------------------------------------------------------------------ text
    def look(self) -> str:
        """The room description ("look around")."""
        lines = [f"This room is called the {self.location.name}. In it, you see: ", "\tthe agent",
                 "\ta substance called air"]
        lines += ["\t" + t.describe() for t in self.location.contents]
        lines.append("You also see:")
        for room, is_open in sorted(self.location.doors.items()):
            lines.append(f"\tA door to the {room} (that is {'open' if is_open else 'closed'})")
        return "\n".join(lines)

    def inventory_text(self) -> str:
        """The inventory listing."""
        items = [t.describe() for t in self.inventory.contents] or ["nothing"]
        return "In your inventory, you see:\n\t" + "\n\t".join(items)

    # ------------------------------------------------------------------ physics
    def tick(self, n: int = 1) -> None:
        """Advance simulated time by ``n`` moves."""
        for _ in range(n):
            self.moves += 1
            for thing in self.heat_trackers:
                self._heat(thing)
            for plant in self.plants:
                self._grow(plant)
            for sink in self.sinks:
                if sink.active:
                    for inner in sink.contents:
                        self._fill(inner)
            self._update_score()
            if self.completed or self.failed:
                return

    def _fill(self, container: Thing) -> None:
        if not container.container or container.surface:
            return
        for thing in container.contents:
            if thing.spec is not None:
                return
        water = make_substance("water", ROOM_TEMPERATURE)
        container.add(water)
        self.heat_trackers.append(water)

    def _heat(self, thing: Thing) -> None:
        holder = thing.parent
        target, rate = ROOM_TEMPERATURE, AMBIENT_RATE
        place = holder.parent if isinstance(holder, Thing) else None
        if not isinstance(place, Thing):
            place = None
        if isinstance(holder, Thing) and holder.device in ("freezer", "fridge"):
            place = holder
        if place is not None and place.device == "stove" and place.active:
            target, rate = STOVE_TEMPERATURE, STOVE_RATE
        elif place is not None and place.device == "freezer":
            target, rate = FREEZER_TEMPERATURE, FREEZER_RATE
        elif place is not None and place.device == "fridge":
            target, rate = FRIDGE_TEMPERATURE, FRIDGE_RATE
        t = thing.temperature
        if t < target:
            thing.temperature = min(target, t + rate)
        elif t > target:
            thing.temperature = max(target, t - rate)
        else:
            return
        _update_state(thing)

    def _grow(self, plant: Thing) -> None:
        pot = plant.parent
        if not plant.living or not isinstance(pot, Thing):
            return
        if pot.soil and pot.water > 0:
            pot.water -= 1
            plant.growth += 1
            plant.dry = 0
            stage = plant.stage()
            plant.name = plant.name.split(" ")[0] + (" seed" if stage == "seed" else " plant")
        elif plant.growth > 0:
            plant.dry += 1
            if plant.dry > PLANT_DROUGHT_TICKS:
                plant.living = False

    # ------------------------------------------------------------------ scoring
    def _update_score(self) -> None:
        """Milestones of the task, ScienceWorld style: partial credit, completion, failure."""
        task = self.task["task_name"]
        target, m = self.target, self.milestones
        if task in ("boil", "melt", "freeze"):
            if target is not None and self.focus is target:
                m.add("focus")
                holder = target.parent
                place = holder.parent if isinstance(holder, Thing) else None
                if task == "freeze":
                    if place is not None and getattr(place, "device", "") == "freezer":
                        m.add("in cooler")
                    if target.temperature < self.task["start_temperature"] - 5:
                        m.add("temperature changed")
                    if target.state == "solid":
                        self.completed = True
                else:
                    if place is not None and getattr(place, "device", "") == "stove" and place.active:
                        m.add("on heat")
                    if target.temperature > self.task["start_temperature"] + 5:
                        m.add("temperature changed")
                    if (task == "boil" and target.state == "gas") or (task == "melt" and target.state != "solid"):
                        self.completed = True
            weights = {"focus": 25, "on heat": 25, "in cooler": 25, "temperature changed": 25}
        elif task == "use-thermometer":
            if self.focus is self.thermometer:
                m.add("focus thermometer")
            if "focus thermometer" in m and self.focus is target:
                m.add("focus target")
            if id(target) in self.measured and "focus target" in m:
                m.add("measured")
            box = target.parent
            while isinstance(box, Thing) and not box.name.endswith(" box"):
                box = box.parent
            if isinstance(box, Thing):
                if box is self.answer_box and "focus target" in m:
                    self.completed = True
                else:
                    self.failed = True
            weights = {"focus thermometer": 25, "focus target": 25, "measured": 25}
        elif task == "grow-plant":
            if self.focus is target:
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
                    self.completed = True
                if not target.living:
                    self.failed = True
            weights = {"focus": 10, "planted": 20, "watered": 10, "seedling": 20, "adult": 20}
        else:  # find-living-thing / find-non-living-thing
            focus = self.focus
            if focus is not None:
                m.add("focus")
                if focus.parent is self.inventory:
                    m.add("picked up")
                if focus.parent is self.answer_box:
                    self.completed = True
            weights = {"focus": 50, "picked up": 25}
        if self.failed:
            self.score = 0
        elif self.completed:
            self.score = 100
        else:
            self.score = min(99, sum(weights.get(name, 0) for name in m))

    # ------------------------------------------------------------------ actions
    def step(self, action: str) -> tuple[str, bool]:
        """Apply ``action``; return ``(observation, recognised)``."""
        text = " ".join(action.lower().split())
        if text.startswith("> "):
            text = text[2:]
        handler = None
        verb = text
        for prefix, name in _PREFIXES:
            if text.startswith(prefix):
                handler, verb = name, text[len(prefix):]
                break
        if handler is None:
            simple = _SIMPLE.get(text)
            if simple is None:
                return NO_MATCH, False
            return getattr(self, simple)(), True
        result = getattr(self, handler)(verb)
        if result is None:
            return NO_MATCH, False
        return result, True

    def _cost(self, observation: str, moves: int = 1) -> str:
        self.tick(moves)
        return observation

    def _do_look(self) -> str:
        return self.look()

    def _do_inventory(self) -> str:
        return self.inventory_text()

    def _do_wait(self) -> str:
        return self._cost("You decide to wait for 10 iterations.", 10)

    def _do_wait1(self) -> str:
        return self._cost("You decide to wait for 1 iterations.", 1)

    def _do_task(self) -> str:
        return self.description

    def _do_open(self, ref: str) -> str | None:
        if ref.startswith("door to "):
            room = ref[8:]
            if room not in self.location.doors:
                return None
            if self.location.doors[room]:
                return "The door is already open."
            self.location.doors[room] = True
            self.rooms[room].doors[self.location.name] = True
            return self._cost(f"The door to the {room} is now open.")
        thing = self.resolve(ref)
        if thing is None:
            return None
        if not thing.openable:
            return self._cost(f"The {thing.name} can't be opened.")
        if not thing.closed:
            return "That is already open."
        thing.closed = False
        return self._cost(f"The {thing.name} is now open.")

    def _do_close(self, ref: str) -> str | None:
        if ref.startswith("door to "):
            room = ref[8:]
            if room not in self.location.doors:
                return None
            self.location.doors[room] = False
            self.rooms[room].doors[self.location.name] = False
            return self._cost(f"The door to the {room} is now closed.")
        thing = self.resolve(ref)
        if thing is None:
            return None
        if not thing.openable:
            return self._cost(f"The {thing.name} can't be closed.")
        thing.closed = True
        return self._cost(f"The {thing.name} is now closed.")

    def _do_go(self, room: str) -> str | None:
        if room not in self.location.doors:
            return None
        if not self.location.doors[room]:
            return self._cost(f"The door to the {room} is closed.")
        self.location = self.rooms[room]
        return self._cost(f"You move to the {room}.")

    def _do_pick_up(self, ref: str) -> str | None:
        thing = self.resolve(ref)
        if thing is None:
            return None
        if not thing.portable:
            return self._cost(f"You can't pick up the {thing.name}.")
        if thing.parent is self.inventory:
            return self._cost(f"The {thing.name} is already in your inventory.")
        self.inventory.add(thing)
        return self._cost(f"You move the {thing.name} to the inventory.")

    def _do_put_down(self, ref: str) -> str | None:
        thing = self.resolve(ref)
        if thing is None or thing.parent is not self.inventory:
            return None
        self.location.add(thing)
        return self._cost(f"You move the {thing.name} to the {self.location.name}.")

    def _do_move(self, rest: str) -> str | None:
        if " to " not in rest:
            return None
        src_ref, _, dst_ref = rest.rpartition(" to ")
        src, dst = self.resolve(src_ref), self.resolve(dst_ref)
        if src is None or dst is None:
            return None
        if not src.portable and src.spec is None and not src.living:
            return self._cost(f"You can't move the {src.name}.")
        if not dst.container or dst is src or _inside(dst, src):
            return self._cost(f"You can't move the {src.name} to the {dst.name}.")
        if dst.closed:
            return self._cost(f"The {dst.name} is closed.")
        if src.spec is not None and (dst.surface or dst.name.startswith("flower pot")):
            return self._cost(f"You can't move a substance to the {dst.name}.")
        dst.add(src)
        return self._cost(f"You move the {src.name} to the {dst.name}.")

    def _do_pour(self, rest: str) -> str | None:
        sep = " into " if " into " in rest else (" in " if " in " in rest else None)
        if sep is None:
            return None
        src_ref, _, dst_ref = rest.rpartition(sep)
        src, dst = self.resolve(src_ref), self.resolve(dst_ref)
        if src is None or dst is None:
            return None
        if not dst.container or dst.surface or dst.closed:
            return self._cost(f"You can't pour into the {dst.name}.")
        liquids = [t for t in src.contents if t.spec is not None and t.state == "liquid"]
        if not liquids:
            return self._cost(f"The {src.name} has nothing to pour.")
        if dst is src:
            return self._cost(f"You pour the {src.name} back into itself.")
        for liquid in liquids:
            if dst.name.startswith("flower pot"):
                src.contents.remove(liquid)
                liquid.parent = None
                if liquid in self.heat_trackers:
                    self.heat_trackers.remove(liquid)
                dst.water += WATER_PER_POUR
            else:
                dst.add(liquid)
        return self._cost(f"You pour the contents of the {src.name} into the {dst.name}.")

    def _switch(self, ref: str, on: bool) -> str | None:
        thing = self.resolve(ref)
        if thing is None:
            return None
        if thing.device not in ("stove", "sink", "lighter"):
            return self._cost(f"It's not clear how to {'' if on else 'de'}activate the {thing.name}.")
        if thing.active == on:
            return self._cost(f"The {thing.name} is already {'on' if on else 'off'}.")
        thing.active = on
        return self._cost(f"The {thing.name} is now {'activated' if on else 'deactivated'}.")

    def _do_activate(self, ref: str) -> str | None:
        return self._switch(ref, True)

    def _do_deactivate(self, ref: str) -> str | None:
        return self._switch(ref, False)

    def _do_focus(self, ref: str) -> str | None:
        thing = self.resolve(ref)
        if thing is None:
            return None
        self.focus = thing
        self.focus_count += 1
        if not self._focus_allowed(thing):
            self.failed = True
        return self._cost(f"You focus on the {thing.name}.")

    def _focus_allowed(self, thing: Thing) -> bool:
        task = self.task["task_name"]
        if task == "use-thermometer":
            return thing is self.thermometer or thing is self.target
        if task == "find-living-thing":
            return thing.living
        if task == "find-non-living-thing":
            return not thing.living and thing.portable and thing.spec is None
        if self.target is None and thing.spec is SUBSTANCES[self.task["substance"]]:
            # Water tasks start without a target: the water appears when the agent fills a container.
            self.target = thing
        return thing is self.target

    def _do_use(self, rest: str) -> str | None:
        if " on " not in rest:
            return None
        tool_ref, _, target_ref = rest.partition(" on ")
        tool, target = self.resolve(tool_ref), self.resolve(target_ref)
        if tool is None or target is None:
            return None
        if tool.device == "thermometer":
            self.measured.add(id(target))
            return self._cost(f"the thermometer measures a temperature of {round(target.temperature)} degrees "
                              "celsius")
        if tool.device == "lighter":
            if target.spec is None:
                return self._cost(f"The {target.name} does not catch fire.")
            target.temperature += LIGHTER_HEAT
            _update_state(target)
            return self._cost(f"You heat the {target.name} with the lighter.")
        return self._cost(f"You can't use the {tool.name} on the {target.name}.")

    def _do_examine(self, ref: str) -> str | None:
        thing = self.resolve(ref)
        if thing is None:
            return None
        if thing.spec is not None:
            return f"a substance called {thing.name}"
        return thing.describe()


    def valid_actions(self) -> list[str]:
        """Actions the simulation accepts in the current state (ScienceWorld's valid-action list)."""
        actions = ["look around", "inventory", "wait", "wait1"]
        for room, is_open in sorted(self.location.doors.items()):
            actions.append(f"{'close' if is_open else 'open'} door to {room}")
            if is_open:
                actions.append(f"go to {room}")
        things = self.visible()
        holders = [t for t in things if t.container and not t.closed]
        has_thermometer = any(t.device == "thermometer" for t in self.inventory.contents)
        for thing in things:
            name = f"substance in {thing.parent.name}" if thing.spec is not None else thing.name
            actions += [f"focus on {name}", f"examine {name}"]
            if thing.portable and thing.parent is not self.inventory:
                actions.append(f"pick up {name}")
            if thing.openable:
                actions.append(f"{'open' if thing.closed else 'close'} {name}")
            if thing.device in ("stove", "sink", "lighter"):
                actions.append(f"{'deactivate' if thing.active else 'activate'} {name}")
            if has_thermometer:
                actions.append(f"use thermometer in inventory on {name}")
            if thing.portable:
                actions += [f"move {name} to {h.name}" for h in holders if h is not thing and not _inside(h, thing)]
            if any(t.spec is not None and t.state == "liquid" for t in thing.contents):
                actions += [f"pour {name} into {h.name}" for h in holders if h is not thing]
        return list(dict.fromkeys(actions))


def _inside(thing: Thing, maybe_ancestor: Thing) -> bool:
    node = thing.parent
    while isinstance(node, Thing):
        if node is maybe_ancestor:
            return True
        node = node.parent
    return False


NO_MATCH = "No known action matches that input."
# Longest prefixes first: "look at" before "look", "pick up" before "put down" etc.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("open ", "_do_open"), ("close ", "_do_close"), ("go to ", "_do_go"), ("pick up ", "_do_pick_up"),
    ("take ", "_do_pick_up"), ("put down ", "_do_put_down"), ("drop ", "_do_put_down"), ("move ", "_do_move"),
    ("put ", "_do_move"), ("pour ", "_do_pour"), ("activate ", "_do_activate"), ("deactivate ", "_do_deactivate"),
    ("turn on ", "_do_activate"), ("turn off ", "_do_deactivate"), ("focus on ", "_do_focus"), ("use ", "_do_use"),
    ("examine ", "_do_examine"), ("look at ", "_do_examine"),
)
_SIMPLE = {"look around": "_do_look", "look": "_do_look", "inventory": "_do_inventory", "wait": "_do_wait",
           "wait1": "_do_wait1", "task": "_do_task"}


# ---------------------------------------------------------------------- world building
def build_world(config: ScienceWorldConfig, seed: int, index: int) -> World:
    """The world of task ``index`` of the MiniScience source seeded ``seed`` (pure in its arguments).

    Index ``i`` is task ``config.tasks[i % len(config.tasks)]``, variation ``i // len(config.tasks)``.
    """
    task_name = config.tasks[index % len(config.tasks)]
    return build_variation(config, task_name, index // len(config.tasks), seed)


def build_variation(config: ScienceWorldConfig, task_name: str, variation: int, seed: int) -> World:
    """The world of ``variation`` of ``task_name`` (pure in its arguments)."""
    if task_name not in TASK_NAMES:
        raise ValueError(f"unknown MiniScience task {task_name!r}; known: {TASK_NAMES}")
    rng = seeded_rng(seed, variation, TASK_NAMES.index(task_name))
    rooms = {name: Room(name, 15.0 if name == "outside" else ROOM_TEMPERATURE) for name in ROOMS}
    for a, b in DOORS:
        rooms[a].doors[b] = not config.closed_doors
        rooms[b].doors[a] = not config.closed_doors
    kitchen, greenhouse = rooms["kitchen"], rooms["greenhouse"]
    kitchen.add(Thing("stove", surface=True, portable=False, device="stove"))
    kitchen.add(Thing("sink", container=True, portable=False, device="sink"))
    freezer = kitchen.add(Thing("freezer", container=True, openable=True, portable=False, device="freezer"))
    fridge = kitchen.add(Thing("fridge", container=True, openable=True, portable=False, device="fridge"))
    cupboard = kitchen.add(Thing("cupboard", container=True, openable=True, portable=False))
    counter = kitchen.add(Thing("counter", surface=True, portable=False))
    table = kitchen.add(Thing("table", surface=True, portable=False))
    cupboard.add(Thing("metal pot", container=True))
    cupboard.add(Thing("ceramic bowl", container=True))
    counter.add(Thing("lighter", device="lighter"))
    thermometer_place = _pick(rng, [counter, table, rooms["workshop"], rooms["hallway"]])
    thermometer = thermometer_place.add(Thing("thermometer", device="thermometer"))
    greenhouse.add(Thing("sink", container=True, portable=False, device="sink"))
    greenhouse.add(Thing("jug", container=True))
    pots = []
    soil_flags = [bool(rng.random() < 0.5) for _ in range(config.num_flower_pots)]
    # The last pot holds a grown tree; at least one other pot has soil for a seed.
    soil_flags[int(rng.integers(config.num_flower_pots - 1))] = True
    for i in range(config.num_flower_pots):
        pot = greenhouse.add(Thing(f"flower pot {i + 1}", container=True))
        pot.soil = soil_flags[i]
        pots.append(pot)
    rooms["living room"].add(Thing("couch", surface=True, portable=False))
    shelf = rooms["living room"].add(Thing("book shelf", container=True, portable=False))
    shelf.add(Thing("book"))
    rooms["hallway"].add(Thing("picture"))
    rooms["bathroom"].add(Thing("toilet", portable=False))
    rooms["bathroom"].add(Thing("towel"))
    rooms["workshop"].add(Thing("table", surface=True, portable=False)).add(Thing("shovel"))
    outside = rooms["outside"]
    outside.add(Thing("rock"))
    outside.add(Thing("axe"))
    animals = list(rng.permutation(len(ANIMALS))[: config.num_animals])
    for a in animals:
        outside.add(Thing(ANIMALS[int(a)], living=True, temperature=15.0))
    # A grown plant in the last pot: a living thing of the greenhouse.
    tree_kind = _pick(rng, PLANT_KINDS)
    tree = Thing(f"{tree_kind} tree", living=True, portable=False)
    tree.growth = STAGE_GROWTH[2]
    start = _pick(rng, [r for r in ROOMS if r != "outside"])
    task: dict[str, Any] = {"task_name": task_name, "variation": variation, "data_seed": seed}
    world = World(task, rooms, start)
    world.thermometer = thermometer
    world.sinks = [t for r in rooms.values() for t in r.contents if t.device == "sink"]
    world.answer_box = None

    if task_name in ("boil", "melt", "freeze"):
        pool = {"boil": BOIL_SUBSTANCES, "melt": MELT_SUBSTANCES, "freeze": FREEZE_SUBSTANCES}[task_name]
        key = _pick(rng, pool)
        if task_name == "melt" and SUBSTANCES[key]["mp"] <= ROOM_TEMPERATURE:
            holder = freezer.add(Thing(_pick(rng, HOLDERS), container=True))
            temperature = FREEZER_TEMPERATURE
        elif key == "water":
            holder, temperature = None, ROOM_TEMPERATURE  # the planner fills the metal pot at the sink
        else:
            place = _pick(rng, [counter, table, fridge]) if task_name != "melt" else _pick(rng, [counter, table])
            holder = place.add(Thing(_pick(rng, HOLDERS), container=True))
            temperature = FRIDGE_TEMPERATURE if place is fridge else ROOM_TEMPERATURE
        task["substance"] = key
        if holder is not None:
            substance = holder.add(make_substance(key, temperature))
            world.target = substance
            world.heat_trackers.append(substance)
            task["start_temperature"] = temperature
        else:
            task["start_temperature"] = ROOM_TEMPERATURE
        verb = {"boil": "boil", "melt": "melt", "freeze": "freeze"}[task_name]
        shown = SUBSTANCES[key]["solid" if task_name == "melt" else "liquid"]
        world.description = (
            f"Your task is to {verb} {shown}. First, focus on the substance. Then, take actions that will "
            "cause it to change its state of matter."
        )
    elif task_name == "use-thermometer":
        key = _pick(rng, MEASURE_SUBSTANCES)
        place = _pick(rng, [counter, table, fridge])
        holder = place.add(Thing(_pick(rng, HOLDERS), container=True))
        temperature = FRIDGE_TEMPERATURE if place is fridge else ROOM_TEMPERATURE
        substance = holder.add(make_substance(key, temperature))
        world.target = substance
        threshold = float(temperature + _pick(rng, (-15, -10, -5, 5, 10, 15)))
        above, below = (str(c) for c in rng.permutation(BOX_COLORS)[:2])
        box_room = rooms[_pick(rng, ("kitchen", "living room", "workshop", "bathroom"))]
        above_box = box_room.add(Thing(f"{above} box", container=True, portable=False))
        below_box = box_room.add(Thing(f"{below} box", container=True, portable=False))
        world.answer_box = above_box if temperature > threshold else below_box
        task.update(substance=key, threshold=threshold)
        world.description = (
            f"Your task is to measure the temperature of the {substance.name}, which is located around the "
            f"kitchen. First, focus on the thermometer. Next, focus on the {substance.name}. If the "
            f"{substance.name} temperature is above {threshold} degrees celsius, place it in the {above} box. "
            f"If the {substance.name} temperature is below {threshold} degrees celsius, place it in the "
            f"{below} box. The boxes are located around the {box_room.name}."
        )
    elif task_name == "grow-plant":
        kind = _pick(rng, PLANT_KINDS)
        jar_room = _pick(rng, (kitchen, greenhouse))
        jar = jar_room.add(Thing("seed jar", container=True))
        seed_thing = jar.add(Thing(f"{kind} seed", living=True))
        seed_thing.growth = 0
        world.target = seed_thing
        world.plants.append(seed_thing)
        task["plant"] = kind
        world.description = (
            f"Your task is to grow a {kind} plant from seed. Seeds can be found in the {jar_room.name}. "
            "First, focus on a seed. Then, make changes to the environment that grow the plant until it "
            "reaches the reproducing stage."
        )
    else:
        living = task_name == "find-living-thing"
        color = _pick(rng, BOX_COLORS)
        box_room = rooms[_pick(rng, ("kitchen", "living room", "workshop", "bathroom"))]
        world.answer_box = box_room.add(Thing(f"{color} box", container=True, portable=False))
        kind = "living" if living else "non-living"
        world.description = (
            f"Your task is to find a(n) {kind} thing. First, focus on the thing. Then, move it to the "
            f"{color} box in the {box_room.name}."
        )
    # The tree is scenery (a living thing that does not grow): it is not in world.plants.
    pots[-1].soil = True
    pots[-1].add(tree)
    world.task["description"] = world.description
    return world


# ---------------------------------------------------------------------- gold-path planner
def _path(world: World, goal: str) -> list[str]:
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


class _Planner:
    """Runs a scripted solver on a world and records the actions (the world must be a private copy)."""

    def __init__(self, world: World):
        self.world = world
        self.actions: list[str] = []

    def do(self, action: str) -> str:
        observation, recognised = self.world.step(action)
        if not recognised:
            raise AssertionError(f"planner produced an unrecognised action {action!r}")
        self.actions.append(action)
        return observation

    def done(self) -> bool:
        return self.world.completed or self.world.failed

    def goto(self, room: str) -> None:
        for nxt in _path(self.world, room):
            if not self.world.location.doors[nxt]:
                self.do(f"open door to {nxt}")
            self.do(f"go to {nxt}")

    def room_of(self, thing: Thing) -> str:
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

    def monitor(self, ref: str, until: Any) -> None:
        for _ in range(400):
            if self.done() or until():
                return
            self.do(f"use thermometer in inventory on {ref}")
            if self.done() or until():
                return
            self.do("wait1")


def plan_gold_actions(world: World) -> list[str]:
    """Plan a gold action sequence that completes ``world``'s task (``world`` is consumed).

    The planner is a scripted solver run on the world itself: every action it records was accepted
    by the simulation, and the sequence ends when the task is completed.
    """
    plan = _Planner(world)
    w = world
    task = w.task["task_name"]
    kitchen = "kitchen"
    if task in ("boil", "melt", "freeze"):
        plan.fetch(w.thermometer)
        if w.target is None:  # water: fill the metal pot at the kitchen sink
            plan.goto(kitchen)
            pot = next(t for t in w.all_things() if t.name == "metal pot")
            plan.reveal(pot)
            plan.do("pick up metal pot")
            plan.do("move metal pot to sink")
            plan.do("activate sink")
            plan.do("deactivate sink")
            plan.do("pick up metal pot")
            holder = pot
        else:
            holder = w.target.parent
            plan.fetch(holder)
        ref = f"substance in {holder.name}"
        plan.do(f"focus on {ref}")
        plan.goto(kitchen)
        if task == "freeze":
            freezer = next(t for t in w.location.contents if t.name == "freezer")
            if freezer.closed:
                plan.do("open freezer")
            plan.do(f"move {holder.name} to freezer")
            plan.monitor(ref, lambda: False)
        else:
            plan.do(f"move {holder.name} to stove")
            plan.do("activate stove")
            plan.monitor(ref, lambda: False)
    elif task == "use-thermometer":
        plan.fetch(w.thermometer)
        plan.do("focus on thermometer")
        target = w.target
        holder = target.parent
        plan.goto(plan.room_of(holder))
        plan.reveal(target)
        plan.do(f"focus on {target.name}")
        plan.do(f"use thermometer in inventory on {target.name}")
        plan.do(f"pick up {holder.name}")
        plan.goto(plan.room_of(w.answer_box))
        plan.do(f"move {holder.name} to {w.answer_box.name}")
    elif task == "grow-plant":
        seed_thing = w.target
        jar = seed_thing.parent
        plan.fetch(jar)
        plan.do(f"focus on {seed_thing.name} in seed jar")
        plan.goto("greenhouse")
        pot = next(p for p in w.location.contents if p.name.startswith("flower pot") and p.soil and not p.contents)
        plan.do(f"move {seed_thing.name} in seed jar to {pot.name}")
        for _ in range(20):
            if plan.done():
                break
            if pot.water <= 0:
                plan.do("move jug to sink")
                plan.do("activate sink")
                plan.do("deactivate sink")
                plan.do(f"pour jug into {pot.name}")
            plan.do("wait")
    else:
        living = task == "find-living-thing"
        if living:
            plan.goto("outside")
            choice = next(t for t in w.location.contents if t.living)
        else:
            candidates = [t for t in w.visible() if not t.living and t.portable and t.spec is None
                          and t.device == ""]
            if not candidates:
                plan.goto("outside")
                candidates = [t for t in w.location.contents if not t.living and t.portable]
            choice = candidates[0]
        plan.do(f"focus on {choice.name}")
        plan.do(f"pick up {choice.name}")
        plan.goto(plan.room_of(w.answer_box))
        plan.do(f"move {choice.name} in inventory to {w.answer_box.name}")
    if not w.completed:
        raise AssertionError(f"the gold planner did not complete {w.task}; actions: {plan.actions}")
    return plan.actions
