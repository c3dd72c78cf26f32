from pathlib import Path

import gymnasium
import numpy as np
import pytest

import mulligan  # noqa: F401  (registers the ids)
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.qa import ERROR_MODES, NoisyQATeacher, QAOracle, lookup_keyword
from mulligan.envs.wrappers import ChatHistory, RetryWithFeedback

FIXTURES = Path(__file__).parents[1] / "fixtures"
ENV_IDS = ["Mulligan/HotpotQA-v0", "Mulligan/StrategyQA-v0"]


def rollout(env, agent, options):
    """Run one episode; returns the final info, the conversation and the error modes reported."""
    chat = ChatHistory(env)
    chat.reset(options=options)
    modes = []
    while True:
        action = agent.act([AgentInput(messages=list(chat.messages), task=env.unwrapped.task)])[0]
        modes.append(action.metadata.get("error_mode", ""))
        _, _, terminated, truncated, info = chat.step(action.text)
        if terminated or truncated:
            return info, chat.messages, modes


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_oracle_solves_every_one_of_hundreds_of_seeded_tasks(env_id):
    env = gymnasium.make(env_id)
    oracle = QAOracle()
    for index in range(250):
        info, messages, _ = rollout(env, oracle, {"task_index": index})
        assert info["success"] and info["fine_grained_label"] == "[Correct]", (index, messages)
        actions = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(actions) <= 7
        assert all(a.startswith("Thought: ") and "\nAction: " in a for a in actions)
        # The evidence is real: every supporting sentence was shown by the env before the answer.
        observations = "\n".join(m["content"] for m in messages if m["role"] == "user")
        task = env.unwrapped.task
        for title, i in task["supporting_facts"]:
            assert dict(task["context"])[title][i].strip() in observations


def test_oracle_thoughts_follow_the_strategyqa_decomposition():
    env = gymnasium.make("Mulligan/StrategyQA-v0")
    _, messages, _ = rollout(env, QAOracle(), {"task_index": 3})
    thoughts = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    decomposition = env.unwrapped.task["decomposition"]
    for sub_question in decomposition[:-1]:
        assert sub_question in thoughts
    assert decomposition[-1] in thoughts


@pytest.mark.parametrize(
    ("dataset", "corpus"),
    [("hotpotqa_mini.jsonl", None), ("hotpotqa_mini_fullwiki.jsonl", "hotpotqa_mini_corpus.jsonl")],
)
def test_oracle_solves_official_format_records(dataset, corpus):
    kwargs = {"dataset": str(FIXTURES / dataset)}
    if corpus:
        kwargs["corpus"] = str(FIXTURES / corpus)
    env = gymnasium.make("Mulligan/HotpotQA-v0", **kwargs)
    for index in range(env.unwrapped.num_tasks):
        info, messages, _ = rollout(env, QAOracle(), {"task_index": index})
        assert info["success"], messages
    # The third record's supporting sentence lies beyond the opening: the oracle looks it up.
    env.reset(options={"task_index": 2})
    if corpus is None:
        _, messages, _ = rollout(env, QAOracle(), {"task_index": 2})
        assert any("lookup[" in m["content"] for m in messages if m["role"] == "assistant")


def test_lookup_keyword_reaches_the_sentence_in_fewest_lookups():
    sentences = ["Vane is a musician.", "Vane studied in Corvel.", "Vane plays the viola."]
    keyword, lookups = lookup_keyword(sentences, 2)
    assert lookups == 1 and keyword.lower() in sentences[2].lower()
    assert not any(keyword.lower() in s.lower() for s in sentences[:2])
    assert lookup_keyword(["a b", "a b"], 1) == ("a b", 2)  # no usable word: fall back to the text itself


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("error_rate", [0.0, 0.25, 0.6, 1.0])
def test_noisy_success_rate_tracks_the_error_rate(env_id, error_rate):
    env = gymnasium.make(env_id)
    teacher = NoisyQATeacher(error_rate=error_rate, seed=11)
    episodes = 300
    successes = sum(rollout(env, teacher, {"task_index": i})[0]["success"] for i in range(episodes))
    expected = 1.0 - error_rate
    # Binomial standard deviation is at most 0.029 for 300 episodes; allow about 3.5 of them.
    assert abs(successes / episodes - expected) <= 0.1


def test_noisy_failures_are_realistic_and_reported():
    env = gymnasium.make("Mulligan/HotpotQA-v0")
    teacher = NoisyQATeacher(error_rate=1.0, seed=0)
    seen = set()
    for index in range(120):
        info, messages, modes = rollout(env, teacher, {"task_index": index})
        assert not info["success"]
        mode = next(m for m in modes if m)
        seen.add(mode)
        actions = [m["content"] for m in messages if m["role"] == "assistant"]
        gold = {t for t, _ in env.unwrapped.task["supporting_facts"]}
        searched = [a.split("search[", 1)[1].rsplit("]", 1)[0] for a in actions if "Action: search[" in a]
        if mode == "no_evidence":
            assert len(actions) == 1 and "finish[" in actions[0]
        elif mode == "distractor":
            assert searched[0] not in gold
        elif mode == "stop_early":
            assert len(set(searched)) == 1 and searched[0] in gold
        else:
            assert searched[0] in gold and searched[-1] not in gold
    assert seen == set(ERROR_MODES)


def test_noisy_teacher_is_reproducible_and_validates_its_arguments():
    env = gymnasium.make("Mulligan/HotpotQA-v0")

    def outcomes(teacher):
        return [rollout(env, teacher, {"task_index": i})[0]["success"] for i in range(60)]

    first = outcomes(NoisyQATeacher(0.5, seed=3))
    assert first == outcomes(NoisyQATeacher(0.5, seed=3))
    teacher = NoisyQATeacher(0.5, seed=99)
    teacher.reset(seed=3)
    assert outcomes(teacher) == first
    with pytest.raises(ValueError, match="error_rate"):
        NoisyQATeacher(1.5)
    with pytest.raises(ValueError, match="modes"):
        NoisyQATeacher(0.5, modes=("hallucinate",))


def test_restricted_modes():
    env = gymnasium.make("Mulligan/StrategyQA-v0")
    teacher = NoisyQATeacher(1.0, seed=0, modes=("stop_early",))
    for index in range(30):
        info, _, modes = rollout(env, teacher, {"task_index": index})
        assert not info["success"] and "stop_early" in modes


def test_teachers_act_on_batches_statelessly_and_need_the_task():
    envs = [gymnasium.make("Mulligan/HotpotQA-v0") for _ in range(4)]
    oracle = QAOracle()
    chats = [ChatHistory(env) for env in envs]
    for i, chat in enumerate(chats):
        chat.reset(options={"task_index": i})
    done = np.zeros(4, dtype=bool)
    while not done.all():
        live = [i for i in range(4) if not done[i]]
        actions = oracle.act([AgentInput(list(chats[i].messages), task=envs[i].unwrapped.task) for i in live])
        for i, action in zip(live, actions, strict=True):
            *_, terminated, truncated, info = chats[i].step(action.text)
            if terminated or truncated:
                assert info["success"]
                done[i] = True
    with pytest.raises(ValueError, match=r"AgentInput\.task"):
        oracle.act([AgentInput(messages=[{"role": "user", "content": "Question: ?"}])])


def test_noisy_teacher_recovers_inside_retry_sessions():
    env = RetryWithFeedback(gymnasium.make("Mulligan/HotpotQA-v0"), max_attempts=3)
    teacher = NoisyQATeacher(error_rate=0.5, seed=4)
    solved_later = 0
    for index in range(40):
        obs, _ = env.reset(options={"task_index": index})
        messages = [{"role": "user", "content": obs}]
        while True:
            action = teacher.act([AgentInput(messages, task=env.unwrapped.task)])[0]
            obs, _, terminated, truncated, info = env.step(action.text)
            messages += [{"role": "assistant", "content": action.text}, {"role": "user", "content": obs}]
            if terminated or truncated:
                break
        solved_later += info["success"] and info["attempt"] > 1
    assert solved_later > 0
