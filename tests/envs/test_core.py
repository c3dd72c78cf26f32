"""The text space, the base env and the CLI, on the Echo test double (wrappers: test_wrappers.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium
import pytest

import mulligan
from mulligan.cli import main as cli_main
from mulligan.envs.core import TextSpace, seeded_rng, stable_task_id
from mulligan.envs.testing import EchoConfig, EchoEnv, echo_score, generate_echo_task

# ----------------------------------------------------------------------------- TextSpace


def test_text_space_accepts_any_str_within_length():
    space = TextSpace(10)
    for text in ["", "abc", "é世界🙂", "\x00\n", "\ud800", "x" * 10]:
        assert space.contains(text)
    assert not space.contains("x" * 11)
    assert not space.contains(b"bytes")
    assert not space.contains(5)


def test_text_space_samples_exercise_unicode_and_survive_json():
    space = TextSpace(1000, seed=0)
    samples = [space.sample() for _ in range(300)]
    joined = "".join(samples)
    assert all(space.contains(s) for s in samples)
    assert any(ord(c) > 0xFFFF for c in joined), "no astral-plane characters sampled"
    assert any(0x4E00 <= ord(c) < 0x9FFF for c in joined), "no CJK sampled"
    assert any(c in "\n\t\x00" for c in joined), "no control characters sampled"
    assert "" in samples or min(map(len, samples)) <= 2
    assert json.loads(json.dumps(samples)) == samples
    assert TextSpace(1000, seed=0).sample() == samples[0]


def test_text_space_rejects_bad_bounds():
    with pytest.raises(ValueError, match="max_length"):
        TextSpace(0)
    with pytest.raises(ValueError, match="min_length"):
        TextSpace(5, min_length=6)


# ----------------------------------------------------------------------------- generators and ids


def test_generators_are_pure_functions_of_config_seed_index():
    config = EchoConfig(num_words=3)
    assert generate_echo_task(config, 0, 5) == generate_echo_task(config, 0, 5)
    tasks = {generate_echo_task(config, 0, i)["target"] for i in range(50)}
    assert len(tasks) > 10
    # Another seed gives another sequence of tasks (any single index may coincide by chance).
    assert [generate_echo_task(config, 1, i) for i in range(20)] != [
        generate_echo_task(config, 0, i) for i in range(20)
    ]
    assert [generate_echo_task(config, 0, i) for i in range(20)] == [
        generate_echo_task(config, 0, i) for i in range(20)
    ]


def test_generator_config_validates():
    with pytest.raises(ValueError, match="num_words"):
        EchoConfig(num_words=0)
    with pytest.raises(ValueError, match="vocabulary"):
        EchoConfig(vocabulary=())


def test_seeded_rng_rejects_negative_and_is_stable():
    assert seeded_rng(3, 4).integers(1_000_000) == seeded_rng(3, 4).integers(1_000_000)
    with pytest.raises(ValueError):
        seeded_rng(-1, 0)


def test_stable_task_id_depends_only_on_content():
    assert stable_task_id("x", {"a": 1, "b": 2}) == stable_task_id("x", {"b": 2, "a": 1})
    assert stable_task_id("x", {"a": 1}) != stable_task_id("x", {"a": 2})


# ----------------------------------------------------------------------------- Echo env


def test_echo_optimal_policy_gets_reward_one():
    env = gymnasium.make("Mulligan/Echo-v0", num_words=2)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        _, reward, terminated, truncated, info = env.step(info["target"])
        assert (reward, terminated, truncated, info["success"], info["score"]) == (1.0, True, False, True, 1.0)


def test_echo_wrong_answer_scores_partially_and_explains():
    assert echo_score("apple", "apple") == 1.0
    assert 0 < echo_score("app", "apple") < 1
    assert echo_score("zzz", "apple") == 0.0
    env = gymnasium.make("Mulligan/Echo-v0", partial_credit=True)
    env.reset(options={"task": {"target": "apple"}})
    _, reward, _, _, info = env.step("app")
    assert reward == pytest.approx(0.6) and info["score"] == pytest.approx(0.6)
    assert "apple" in info["feedback"]


def test_echo_explicit_task_record_is_validated():
    env = gymnasium.make("Mulligan/Echo-v0")
    with pytest.raises(ValueError, match="target"):
        env.reset(options={"task": {"nope": 1}})
    with pytest.raises(ValueError, match="dict"):
        env.reset(options={"task": "apple"})


def test_render_ansi_shows_the_transcript():
    env = EchoEnv(render_mode="ansi")
    env.reset(options={"task": {"target": "river"}})
    env.step("river")
    assert env.render() == "Repeat exactly: river\n> river\nEpisode over."
    with pytest.raises(ValueError, match="render_mode"):
        EchoEnv(render_mode="rgb_array")


# ----------------------------------------------------------------------------- CLI


def test_cli_envs_lists_every_id(capsys):
    assert cli_main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in mulligan.env_ids():
        assert env_id in out
    assert cli_main(["envs", "--json"]) == 0
    assert {row["id"] for row in json.loads(capsys.readouterr().out)} == set(mulligan.env_ids())


def test_cli_play_runs_an_episode_from_stdin():
    target = gymnasium.make("Mulligan/Echo-v0").reset(seed=5)[1]["target"]
    result = subprocess.run(
        [sys.executable, "-m", "mulligan.cli", "play", "Mulligan/Echo-v0", "--seed", "5"],
        input=target + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "success True" in result.stdout and "return +1.000" in result.stdout


def test_cli_rejects_unknown_commands():
    with pytest.raises(SystemExit):
        cli_main(["frobnicate"])
