"""MiniScience's world: the rooms, things and physics of a small science simulation.

:class:`World` is a stateful simulator with ScienceWorld's action grammar: :meth:`World.step` parses
one action, applies it, advances simulated time and asks the task (a
:class:`~mulligan.envs.miniscience.tasks.Task`) which milestones are reached. :func:`build_house`
builds the house every task shares; each task then adds its own objects.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mulligan.envs.miniscience.tasks import Task

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
    "salt water": {
        "solid": "frozen salt water",
        "liquid": "salt water",
        "gas": "salty steam",
        "mp": -10.0,
        "bp": 102.0,
    },
    "orange juice": {
        "solid": "frozen orange juice",
        "liquid": "orange juice",
        "gas": "orange juice vapor",
        "mp": -2.0,
        "bp": 100.0,
    },
    "milk": {"solid": "frozen milk", "liquid": "milk", "gas": "milk vapor", "mp": -1.0, "bp": 101.0},
    "chocolate": {
        "solid": "chocolate",
        "liquid": "liquid chocolate",
        "gas": "chocolate smoke",
        "mp": 35.0,
        "bp": 250.0,
    },
    "butter": {"solid": "butter", "liquid": "liquid butter", "gas": "butter smoke", "mp": 32.0, "bp": 250.0},
    "wax": {"solid": "wax", "liquid": "liquid wax", "gas": "wax vapor", "mp": 60.0, "bp": 280.0},
}
PLANT_KINDS = ("apple", "orange", "peach", "lemon", "pea", "banana")
ANIMALS = ("dove", "butterfly", "frog", "chipmunk", "beaver", "toad", "moth", "crow")

#: Rooms and the doors between them (ScienceWorld's house, smaller).
ROOMS = ("hallway", "kitchen", "greenhouse", "living room", "bathroom", "workshop", "outside")
DOORS = (
    ("hallway", "kitchen"),
    ("hallway", "greenhouse"),
    ("hallway", "living room"),
    ("hallway", "workshop"),
    ("kitchen", "bathroom"),
    ("kitchen", "outside"),
    ("greenhouse", "outside"),
)


@dataclass(frozen=True)
class WorldConfig:
    """The house every MiniScience task shares (each field is an env kwarg of ``MiniScience-v0``).

    Attributes:
        closed_doors: Whether doors start closed (ScienceWorld's "easy" mode opens them).
        num_animals: How many animals live outside.
        num_flower_pots: Flower pots in the greenhouse (some without soil; the last holds a tree).
    """

    closed_doors: bool = True
    num_animals: int = 2
    num_flower_pots: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.closed_doors, bool):
            raise ValueError(f"closed_doors must be True or False, got {self.closed_doors!r}")
        if (
            isinstance(self.num_animals, bool)
            or not isinstance(self.num_animals, int)
            or not (1 <= self.num_animals <= len(ANIMALS))
        ):
            raise ValueError(f"num_animals must be an int in [1, {len(ANIMALS)}], got {self.num_animals!r}")
        if (
            isinstance(self.num_flower_pots, bool)
            or not isinstance(self.num_flower_pots, int)
            or not (2 <= self.num_flower_pots <= 6)
        ):
            raise ValueError(f"num_flower_pots must be an int in [2, 6], got {self.num_flower_pots!r}")


class Thing:
    """An object of the world: furniture, container, device, substance, plant or animal."""

    __slots__ = (
        "active",
        "closed",
        "container",
        "contents",
        "device",
        "dry",
        "growth",
        "living",
        "name",
        "openable",
        "parent",
        "portable",
        "soil",
        "spec",
        "state",
        "surface",
        "temperature",
        "water",
    )

    def __init__(
        self,
        name: str,
        *,
        container: bool = False,
        surface: bool = False,
        openable: bool = False,
        portable: bool = True,
        device: str = "",
        living: bool = False,
        temperature: float = ROOM_TEMPERATURE,
    ):
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
    update_state(thing)
    return thing


def update_state(thing: Thing) -> None:
    """Set a substance's state of matter (and its name) from its temperature."""
    spec = thing.spec
    t = thing.temperature
    state = "solid" if t < spec["mp"] else ("gas" if t >= spec["bp"] else "liquid")
    thing.state = state
    thing.name = spec[state]


def pick(rng: np.random.Generator, options: tuple | list) -> Any:
    """One of ``options``, drawn uniformly with ``rng``."""
    return options[int(rng.integers(len(options)))]


class World:
    """A running MiniScience world: the rooms, the agent's location and inventory, the task state.

    Built by :func:`build_house` and a task's ``build``. :meth:`step` applies one action string and returns the
    observation; :attr:`score` (0-100), :attr:`completed` and :attr:`failed` follow the task's
    milestones.
    """

    def __init__(self, task: dict[str, Any], task_spec: Task, rooms: dict[str, Room], start: str):
        self.task = task
        self.task_spec = task_spec
        #: Named furniture and devices the tasks build on (``"counter"``, ``"fridge"``, ...).
        self.places: dict[str, Thing] = {}
        self.pots: list[Thing] = []
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
        lines = [
            f"This room is called the {self.location.name}. In it, you see: ",
            "\tthe agent",
            "\ta substance called air",
        ]
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
        update_state(thing)

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
    # ------------------------------------------------------------------ scoring
    def _update_score(self) -> None:
        """Ask the task which milestones are reached, then score them ScienceWorld style (0-100)."""
        self.task_spec.milestones(self)
        if self.failed:
            self.score = 0
        elif self.completed:
            self.score = 100
        else:
            self.score = min(99, sum(self.task_spec.weights.get(name, 0) for name in self.milestones))

    # ------------------------------------------------------------------ actions
    def step(self, action: str) -> tuple[str, bool]:
        """Apply ``action``; return ``(observation, recognised)``."""
        text = " ".join(action.lower().split())
        if text.startswith("> "):
            text = text[2:]
        for prefix, handler in _PREFIXES:
            if text.startswith(prefix):
                result = handler(self, text[len(prefix) :])
                return (NO_MATCH, False) if result is None else (result, True)
        simple = _SIMPLE.get(text)
        if simple is None:
            return NO_MATCH, False
        return simple(self), True

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
        if not self.task_spec.focus_allowed(self, thing):
            self.failed = True
        return self._cost(f"You focus on the {thing.name}.")

    def _do_use(self, rest: str) -> str | None:
        if " on " not in rest:
            return None
        tool_ref, _, target_ref = rest.partition(" on ")
        tool, target = self.resolve(tool_ref), self.resolve(target_ref)
        if tool is None or target is None:
            return None
        if tool.device == "thermometer":
            self.measured.add(id(target))
            return self._cost(f"the thermometer measures a temperature of {round(target.temperature)} degrees celsius")
        if tool.device == "lighter":
            if target.spec is None:
                return self._cost(f"The {target.name} does not catch fire.")
            target.temperature += LIGHTER_HEAT
            update_state(target)
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

#: The parser: action prefixes and their handlers, longest prefixes first ("look at" before "look",
#: "put down" before "put"). A handler returns the observation, or ``None`` when the action names
#: nothing the agent can see (the simulator's "No known action matches that input.").
_PREFIXES: tuple[tuple[str, Callable[[World, str], str | None]], ...] = (
    ("open ", World._do_open),
    ("close ", World._do_close),
    ("go to ", World._do_go),
    ("pick up ", World._do_pick_up),
    ("take ", World._do_pick_up),
    ("put down ", World._do_put_down),
    ("drop ", World._do_put_down),
    ("move ", World._do_move),
    ("put ", World._do_move),
    ("pour ", World._do_pour),
    ("activate ", World._do_activate),
    ("deactivate ", World._do_deactivate),
    ("turn on ", World._do_activate),
    ("turn off ", World._do_deactivate),
    ("focus on ", World._do_focus),
    ("use ", World._do_use),
    ("examine ", World._do_examine),
    ("look at ", World._do_examine),
)
#: Actions without an object.
_SIMPLE: dict[str, Callable[[World], str]] = {
    "look around": World._do_look,
    "look": World._do_look,
    "inventory": World._do_inventory,
    "wait": World._do_wait,
    "wait1": World._do_wait1,
    "task": World._do_task,
}


def build_house(config: WorldConfig, rng: np.random.Generator, task: dict[str, Any], task_spec: Task) -> World:
    """The house every task shares: rooms, doors, furniture, devices, pots, animals, a tree.

    Draws from ``rng`` in a fixed order (thermometer place, pot soil, animals, tree, start room),
    so that a task's own draws come after and a variation is a pure function of its seed.
    Named places land in ``world.places`` (``counter``, ``table``, ``fridge``, ``freezer``,
    ``cupboard``) and the flower pots in ``world.pots``.
    """
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
    thermometer_place = pick(rng, [counter, table, rooms["workshop"], rooms["hallway"]])
    thermometer = thermometer_place.add(Thing("thermometer", device="thermometer"))
    greenhouse.add(Thing("sink", container=True, portable=False, device="sink"))
    greenhouse.add(Thing("jug", container=True))
    pots = []
    soil_flags = [bool(rng.random() < 0.5) for _ in range(config.num_flower_pots)]
    # The last pot holds a grown tree; at least one other pot has soil for a seed.
    soil_flags[int(rng.integers(config.num_flower_pots - 1))] = True
    soil_flags[-1] = True
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
    for a in rng.permutation(len(ANIMALS))[: config.num_animals]:
        outside.add(Thing(ANIMALS[int(a)], living=True, temperature=15.0))
    # A grown tree in the last pot: a living thing of the greenhouse, scenery that does not grow
    # (it is not in world.plants).
    tree = pots[-1].add(Thing(f"{pick(rng, PLANT_KINDS)} tree", living=True, portable=False))
    tree.growth = STAGE_GROWTH[2]
    start = pick(rng, [r for r in ROOMS if r != "outside"])
    world = World(task, task_spec, rooms, start)
    world.thermometer = thermometer
    world.sinks = [t for r in rooms.values() for t in r.contents if t.device == "sink"]
    world.places = {"counter": counter, "table": table, "fridge": fridge, "freezer": freezer, "cupboard": cupboard}
    world.pots = pots
    return world
