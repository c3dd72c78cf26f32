"""Mulligan/MiniScience-v0: the pure-Python science world (mulligan.envs.miniscience)."""

from __future__ import annotations

import os

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mulligan  # noqa: F401 - registers the ids
from mulligan.envs.miniscience import TASK_NAMES, TASKS, Task, WorldConfig, build_variation, plan_gold_actions
from mulligan.envs.miniscience.world import (
    ANIMALS,
    FREEZER_TEMPERATURE,
    ROOM_TEMPERATURE,
    STOVE_TEMPERATURE,
    SUBSTANCES,
    make_substance,
)

ENV_ID = "Mulligan/MiniScience-v0"


def play(env, actions):
    info = {}
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            break
    return info, total


def test_check_env_through_registry():
    env = gymnasium.make(ENV_ID)
    check_env(env.unwrapped)
    assert len(TASK_NAMES) >= 6


def test_gold_paths_succeed_on_hundreds_of_variations():
    env = gymnasium.make(ENV_ID)
    failures = []
    for index in range(350):  # 50 variations of each of the 7 tasks
        env.reset(options={"task_index": index})
        info, total = play(env, env.unwrapped.gold_actions())
        if not info["success"]:
            failures.append(env.unwrapped.task)
        assert total == pytest.approx(info["score"])
    assert failures == []


def test_gold_paths_succeed_on_dev_and_test_splits_and_other_seeds():
    for variation, seed in [("dev", 0), ("test", 0), ("train", 12345)]:
        env = gymnasium.make(ENV_ID, variation=variation, data_seed=seed)
        for index in range(35):
            env.reset(options={"task_index": index})
            info, _ = play(env, env.unwrapped.gold_actions())
            assert info["success"], env.unwrapped.task


def test_generation_is_deterministic_and_varied():
    config = WorldConfig()
    for task in TASK_NAMES:
        plans = [plan_gold_actions(build_variation(config, task, v, 0)) for v in range(8)]
        assert plans[0] == plan_gold_actions(build_variation(config, task, 0, 0))
        assert len({tuple(p) for p in plans}) > 1, f"{task} has no variety"


def test_task_selection_and_record_round_trip():
    env = gymnasium.make(ENV_ID, task="boil", variation=5)
    assert env.unwrapped.num_tasks == 1
    _, info = env.reset(options={"task_index": 0})
    assert env.unwrapped.task["task_name"] == "boil" and env.unwrapped.task["variation"] == 5
    first, info2 = env.reset(options={"task": env.unwrapped.task})
    assert info2["task_id"] == info["task_id"] == "miniscience-boil-0-5"
    assert first.startswith("Your task is to boil")
    assert gymnasium.make(ENV_ID).unwrapped.num_tasks is None
    with pytest.raises(ValueError, match="task_name"):
        env.reset(options={"task": {"task_name": "juggle", "variation": 0}})
    with pytest.raises(ValueError, match="unknown MiniScience task"):
        gymnasium.make(ENV_ID, task="juggle")
    with pytest.raises(ValueError, match="variation"):
        gymnasium.make(ENV_ID, variation="validation")


FUZZ = [
    "",
    " \n\t ",
    "\x00\x01\x1b[31m\x7f",
    "a" * 1_000_000,
    "é世界🙂\u200b" * 500,
    "answer \ud800 \udfff",
    "__import__('os').system('touch /tmp/mulligan_pwned')",
    "move to",
    "pour into",
    "use on",
    "focus on",
    "go to nowhere",
    "open door to",
    "move stove to stove",
    "PICK   UP   Thermometer extra",
]


def test_action_fuzz_never_raises_and_pays_nothing():
    env = gymnasium.make(ENV_ID)
    for seed in range(7):
        env.reset(seed=seed)
        for action in FUZZ + [env.action_space.sample() for _ in range(30)]:
            observation, reward, terminated, _, info = env.step(action)
            assert isinstance(observation, str)
            assert reward <= 0.0 and not info["success"]
            if terminated:
                break
    assert not os.path.exists("/tmp/mulligan_pwned")


def test_random_valid_actions_keep_invariants():
    env = gymnasium.make(ENV_ID, include_valid_actions=True, max_episode_steps=60)
    rng = __import__("numpy").random.default_rng(0)
    for seed in range(40):
        _, info = env.reset(seed=seed)
        keys = set(info)
        world = env.unwrapped.world
        total = 0.0
        while True:
            actions = info["valid_actions"]
            assert actions and all(isinstance(a, str) for a in actions)
            action = actions[rng.integers(len(actions))]
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            assert set(info) == keys
            assert 0.0 <= info["score"] <= 1.0
            assert not info["feedback"].startswith("No known action"), action
            for thing in world.all_things():
                if thing.spec is not None:
                    # Temperatures stay between the coldest cooler and the hottest heater.
                    assert FREEZER_TEMPERATURE - 1e-9 <= thing.temperature <= STOVE_TEMPERATURE + 1e-9
            if terminated or truncated:
                break
        assert total == pytest.approx(info["score"])


def test_state_of_matter_follows_temperature():
    for key, spec in SUBSTANCES.items():
        assert make_substance(key, spec["mp"] - 1).state == "solid"
        assert make_substance(key, (spec["mp"] + spec["bp"]) / 2).state == "liquid"
        assert make_substance(key, spec["bp"]).state == "gas"
        assert make_substance(key, spec["bp"]).name == spec["gas"]


def test_stove_boils_water_and_freezer_freezes_it():
    env = gymnasium.make(ENV_ID, task="boil", variation=0, closed_doors=False).unwrapped
    env.reset(options={"task": {"task_name": "boil", "variation": 0}})
    world = env.world
    water = make_substance("water", ROOM_TEMPERATURE)
    pot = next(t for t in world.all_things() if t.name == "metal pot")
    pot.add(water)
    world.heat_trackers.append(water)
    stove = next(t for t in world.all_things() if t.name == "stove")
    stove.add(pot)
    world.tick(5)
    assert water.temperature == ROOM_TEMPERATURE and water.state == "liquid"  # the stove is off
    stove.active = True
    temperatures = []
    for _ in range(12):
        world.tick()
        temperatures.append(water.temperature)
    assert temperatures == sorted(temperatures) and water.state == "gas" and water.name == "steam"
    freezer = next(t for t in world.all_things() if t.name == "freezer")
    freezer.add(pot)
    world.tick(60)
    assert water.state == "solid" and water.name == "ice"
    assert water.temperature == FREEZER_TEMPERATURE


def test_plants_need_soil_and_water():
    config = WorldConfig()
    world = build_variation(config, "grow-plant", 0, 0)
    seed = world.target
    pots = [t for t in world.all_things() if t.name.startswith("flower pot") and not t.contents]
    dry_soil = next(p for p in pots if p.soil)
    dry_soil.add(seed)
    world.tick(10)
    assert seed.growth == 0  # soil without water
    dry_soil.water = 5
    world.tick(10)
    assert seed.growth == 5 and dry_soil.water == 0  # one unit of water per unit of growth
    seed.growth = 0
    no_soil = next((p for p in pots if not p.soil), None)
    if no_soil is not None:
        no_soil.add(seed)
        no_soil.water = 10
        world.tick(5)
        assert seed.growth == 0  # water without soil


def test_doors_block_movement_until_opened():
    env = gymnasium.make(ENV_ID, task="find-living-thing", variation=0)
    observation, _ = env.reset(seed=0)
    world = env.unwrapped.world
    neighbour = sorted(world.location.doors)[0]
    start = world.location.name
    observation = env.step(f"go to {neighbour}")[0]
    assert "closed" in observation and world.location.name == start
    env.step(f"open door to {neighbour}")
    assert env.step(f"go to {neighbour}")[0] == f"You move to the {neighbour}."
    assert world.location.name == neighbour


def test_focusing_on_the_wrong_thing_fails_the_task():
    env = gymnasium.make(ENV_ID, task="find-living-thing", variation=0, closed_doors=False)
    env.reset(seed=0)
    gold = env.unwrapped.gold_actions()
    nonliving = next(t.name for t in env.unwrapped.world.visible() if not t.living)
    _, reward, terminated, _, info = env.step(f"focus on {nonliving}")
    assert terminated and not info["success"] and info["score"] == 0.0 and reward == 0.0
    env.reset(seed=0)
    info, _ = play(env, gold)
    assert info["success"]


def test_partial_credit_through_milestones():
    env = gymnasium.make(ENV_ID, task="boil", variation=0)
    env.reset(seed=0)
    gold = env.unwrapped.gold_actions()
    scores = []
    for action in gold:
        _, _, terminated, _, info = env.step(action)
        scores.append(info["score"])
    assert scores == sorted(scores)  # the gold path never loses credit
    assert len({s for s in scores if 0.0 < s < 1.0}) >= 2  # partial credit before completion
    assert scores[-1] == 1.0 and terminated


def test_every_task_is_one_registered_task_object():
    assert (
        TASK_NAMES
        == tuple(TASKS)
        == ("boil", "melt", "freeze", "use-thermometer", "grow-plant", "find-living-thing", "find-non-living-thing")
    )
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name
        world = build_variation(WorldConfig(), name, 3, 0)
        assert world.task_spec is task and world.description.startswith("Your task is to")
        # A task's solver completes its own world (plan() goes through the planner).
        assert plan_gold_actions(world) and world.completed


def test_world_config_fields_are_env_kwargs():
    env = gymnasium.make(
        ENV_ID, task="find-living-thing", variation=0, num_animals=5, num_flower_pots=6, closed_doors=False
    )
    env.reset()
    world = env.unwrapped.world
    assert sum(t.name in ANIMALS for t in world.rooms["outside"].contents) == 5
    assert sum(t.name.startswith("flower pot") for t in world.rooms["greenhouse"].contents) == 6
    assert all(world.location.doors.values())
    info, _ = play(env, env.unwrapped.gold_actions())
    assert info["success"]
    for bad in (
        {"num_animals": 0},
        {"num_animals": 9},
        {"num_flower_pots": 1},
        {"closed_doors": "yes"},
        {"stall_limit": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            gymnasium.make(ENV_ID, **bad)


def test_info_shows_the_room_and_the_inventory_as_free_actions_do():
    env = gymnasium.make(ENV_ID, task="boil", variation=1)
    first, info = env.reset(seed=0)
    assert first.split("\n\n", 1)[1] == info["look"] == env.step("look around")[0]
    assert info["inventory"] == env.step("inventory")[0] == "In your inventory, you see:\n\tnothing"
    gold = env.unwrapped.gold_actions()
    _, _, _, _, info = env.step(gold[0])
    assert info["look"] == env.unwrapped.world.look()
    info, _ = play(env, [a for a in gold[1:] if a.startswith("pick up")][:1])
    assert "thermometer" in info["inventory"] or "pot" in info["inventory"] or "cup" in info["inventory"]


def test_look_and_inventory_can_be_left_out_for_speed():
    env = gymnasium.make(ENV_ID, task="boil", variation=1, include_look_inventory=False)
    _, info = env.reset(seed=0)
    assert info["look"] == info["inventory"] == ""
    info, _ = play(env, env.unwrapped.gold_actions())
    assert info["success"] and info["look"] == info["inventory"] == ""


def test_stall_limit_ends_an_episode_without_score_change():
    env = gymnasium.make(ENV_ID, task="boil", variation=0, stall_limit=3)
    env.reset(seed=0)
    outcomes = [env.step("look around") for _ in range(3)]
    assert [o[2] for o in outcomes] == [False, False, True]
    assert "has not changed in 3 actions" in outcomes[-1][4]["feedback"] and not outcomes[-1][4]["success"]
    # A score change resets the count: with the paper's 50, no gold path is stopped.
    paper = gymnasium.make(ENV_ID, stall_limit=50, max_episode_steps=1000)
    for index in range(70):
        paper.reset(options={"task_index": index})
        info, _ = play(paper, paper.unwrapped.gold_actions())
        assert info["success"], paper.unwrapped.task
    unlimited = gymnasium.make(ENV_ID, task="boil", variation=0)
    unlimited.reset(seed=0)
    assert not any(unlimited.step("look around")[2] for _ in range(20))
