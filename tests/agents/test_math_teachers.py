import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.math import MathOracle, NoisyMathTeacher
from mulligan.envs.wrappers import ChatHistory


def run_episode(env_id, agent, seed, **kwargs):
    env = ChatHistory(gymnasium.make(env_id, **kwargs))
    _, info = env.reset(seed=seed)
    modes, done, reward = set(), False, 0.0
    while not done:
        action = agent.act([AgentInput(list(env.messages), env.unwrapped.task, info, env_id)])[0]
        modes.add(action.metadata.get("mode"))
        _, step_reward, terminated, truncated, info = env.step(action.text)
        reward += step_reward
        done = terminated or truncated
    return info["success"], reward, modes, env.messages


@pytest.mark.parametrize("env_id", ["Mulligan/Math-v0", "Mulligan/MathReAct-v0"])
def test_oracle_solves_every_procedural_task(env_id):
    oracle = MathOracle()
    for seed in range(60):
        success, reward, _, _ = run_episode(env_id, oracle, seed)
        assert success and reward == 1.0, seed


@pytest.mark.parametrize("env_id", ["Mulligan/Math-v0", "Mulligan/MathReAct-v0"])
def test_oracle_solves_gsm8k_and_competition_files(env_id):
    oracle = MathOracle()
    for name in ["math_gsm8k_sample.jsonl", "math_competition_sample.jsonl"]:
        env = gymnasium.make(env_id, dataset=f"tests/fixtures/{name}")
        for index in range(env.unwrapped.num_tasks):
            _, info = env.reset(options={"task_index": index})
            messages = [{"role": "user", "content": _}]
            done = False
            while not done:
                text = oracle.act([AgentInput(messages, env.unwrapped.task, info, env_id)])[0].text
                obs, _, terminated, truncated, info = env.step(text)
                messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
                done = terminated or truncated
            assert info["success"], (name, index)


def test_oracle_text_is_plausible():
    _, _, _, messages = run_episode("Mulligan/Math-v0", MathOracle(), seed=0)
    response = messages[-1]["content"]
    assert "<<" not in response and "####" not in response and "\\boxed{" in response
    _, _, _, messages = run_episode("Mulligan/MathReAct-v0", MathOracle(), seed=0)
    actions = [m["content"] for m in messages if m["role"] == "assistant"]
    assert all(a.startswith("Thought: ") for a in actions)
    assert all("Action: calculate[" in a for a in actions[:-1]) and "Action: finish[" in actions[-1]
    assert all("<<" not in a for a in actions)


def test_oracle_needs_the_task():
    with pytest.raises(ValueError, match="task"):
        MathOracle().act([AgentInput([{"role": "user", "content": "q"}])])


@pytest.mark.parametrize("env_id", ["Mulligan/Math-v0", "Mulligan/MathReAct-v0"])
@pytest.mark.parametrize("error_rate", [0.0, 0.3, 1.0])
def test_noisy_teacher_success_tracks_error_rate(env_id, error_rate):
    teacher = NoisyMathTeacher(error_rate=error_rate, seed=5)
    episodes = 150
    results = [run_episode(env_id, teacher, seed) for seed in range(episodes)]
    success_rate = sum(r[0] for r in results) / episodes
    if error_rate in (0.0, 1.0):
        assert success_rate == 1.0 - error_rate  # every failure is really wrong
    else:
        assert abs(success_rate - (1 - error_rate)) < 0.12
    failure_modes = set().union(*(r[2] for r in results)) - {"correct"}
    if error_rate > 0:
        expected = {"slip", "wrong_final"} | ({"early_finish"} if "ReAct" in env_id else {"missing_answer"})
        assert expected <= failure_modes


def test_noisy_failures_look_like_model_mistakes():
    teacher = NoisyMathTeacher(error_rate=1.0, seed=0)
    seen = {}
    for seed in range(80):
        success, _, modes, messages = run_episode("Mulligan/Math-v0", teacher, seed)
        assert not success
        seen.setdefault(modes.pop(), messages[-1]["content"])
    assert "\\boxed{" not in seen["missing_answer"]
    assert "\\boxed{" in seen["slip"] and "\\boxed{" in seen["wrong_final"]
    assert "<<" not in "".join(seen.values())


def test_noisy_teacher_is_reproducible_and_reset_reseeds():
    def rewards(teacher):
        return [run_episode("Mulligan/MathReAct-v0", teacher, seed)[1] for seed in range(30)]

    teacher = NoisyMathTeacher(error_rate=0.5, seed=9)
    first = rewards(teacher)
    assert rewards(NoisyMathTeacher(error_rate=0.5, seed=9)) == first
    teacher.reset()
    assert rewards(teacher) == first


def test_noisy_teacher_serves_identical_envs_in_one_batch():
    # A GRPO group: the same task in several envs, stepped in lockstep with one act() call.
    teacher = NoisyMathTeacher(error_rate=0.5, seed=1)
    envs = [gymnasium.make("Mulligan/MathReAct-v0") for _ in range(8)]
    states = []
    for env in envs:
        obs, info = env.reset(seed=4)
        states.append({"messages": [{"role": "user", "content": obs}], "info": info, "done": False})
    while not all(s["done"] for s in states):
        live = [i for i, s in enumerate(states) if not s["done"]]
        inputs = [
            AgentInput(states[i]["messages"], envs[i].unwrapped.task, states[i]["info"], "Mulligan/MathReAct-v0")
            for i in live
        ]
        for i, action in zip(live, teacher.act(inputs), strict=True):
            obs, _, terminated, truncated, info = envs[i].step(action.text)
            states[i]["messages"] += [{"role": "assistant", "content": action.text}, {"role": "user", "content": obs}]
            states[i]["info"], states[i]["done"] = info, terminated or truncated
    outcomes = [s["info"]["success"] for s in states]
    assert all(s["info"]["action_type"] == "finish" for s in states)  # every script ran to its finish
    assert True in outcomes and False in outcomes


def test_noisy_teacher_retries_after_feedback():
    teacher = NoisyMathTeacher(error_rate=0.5, seed=2)
    successes = 0
    for seed in range(40):
        success, *_ = run_episode("Mulligan/MathReAct-v0", teacher, seed, max_attempts=3)
        successes += success
    # Three independent attempts at 50% each succeed about 7 times in 8.
    assert successes >= 28


def test_error_rate_validated():
    with pytest.raises(ValueError, match="error_rate"):
        NoisyMathTeacher(error_rate=1.5)


@pytest.mark.parametrize(
    ("env_id", "teacher"),
    [("Mulligan/Math-v0", "math"), ("Mulligan/MathReAct-v0", "math"), ("Mulligan/HotpotQA-v0", "qa")],
)
def test_a_resumed_noisy_collection_equals_an_uninterrupted_one(tmp_path, env_id, teacher):
    """The noisy teachers draw from each input's seed: resuming (or another batch size) changes nothing."""
    from mulligan.agents.teachers.qa import NoisyQATeacher
    from mulligan.training.rollout import collect_episodes
    from mulligan.training.trajectory import TrajectoryStore

    def make():
        return NoisyMathTeacher(error_rate=0.5, seed=3) if teacher == "math" else NoisyQATeacher(0.6, seed=3)

    whole = collect_episodes(env_id, make(), 12, num_envs=4, seed=7, progress=False)
    assert len({t.success for t in whole}) == 2  # the teacher really is noisy here
    store = TrajectoryStore(tmp_path / "half.jsonl")
    with store:
        for trajectory in collect_episodes(env_id, make(), 12, num_envs=1, seed=7, progress=False)[:5]:
            store.append(trajectory)
    resumed = collect_episodes(env_id, make(), 12, num_envs=3, seed=7, store=TrajectoryStore(store.path),
                               progress=False)  # fmt: skip
    key = [(t.task_id, [turn.action for turn in t.turns], t.success) for t in whole]
    assert [(t.task_id, [turn.action for turn in t.turns], t.success) for t in resumed] == key
