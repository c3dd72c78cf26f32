"""RISE's one-shot opening: the exact messages, the unlearned demo answer, rebuilt from trajectories."""

import itertools
import json

import pytest

from mulligan.agents.context import LastAttempts
from mulligan.agents.hf import HFAgent
from mulligan.agents.one_shot import (
    BUILTIN_DEMO,
    NEXT_QUESTION,
    OneShotAgent,
    OneShotDemo,
    load_one_shot_demo,
    one_shot_messages,
)
from mulligan.agents.testing import FunctionAgent
from mulligan.envs.wrappers import RISE_FEEDBACK_TEMPLATE
from mulligan.training.rise import rise_samples, rwr_dataset
from mulligan.training.rollout import collect_episodes

DEMO = OneShotDemo(question="  Solve it and box the answer.\nWhat is 1+1?\n", answer="1+1 = 2. \\boxed{2}")
GREAT_JOB = "Great job! You've successfully answered the question. Now, let's move on to the next one.\n"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wrong_each_turn():
    """An Echo agent that is wrong with a new answer at every call (nothing deduplicated)."""
    calls = itertools.count()
    return FunctionAgent(lambda item: f"guess {next(calls)}")


def test_the_opening_is_the_official_structure_character_for_character():
    assert NEXT_QUESTION.format(query="Q") == GREAT_JOB + "Q"
    assert one_shot_messages(DEMO, "What is 2+2?") == [
        {"role": "system", "content": "Solve it and box the answer.\nWhat is 1+1?"},  # stripped, as the trainer
        {"role": "assistant", "content": "1+1 = 2. \\boxed{2}"},
        {"role": "user", "content": GREAT_JOB + "What is 2+2?"},
    ]


def test_agent_shows_the_demo_then_the_framed_question_then_the_episode():
    inner = wrong_each_turn()
    agent = OneShotAgent(inner, DEMO)
    env_prompt = "Please reason step by step.\n\nWhat is 2+2?"
    feedback = RISE_FEEDBACK_TEMPLATE.format(question=env_prompt)
    from mulligan.agents.base import AgentInput

    item = AgentInput(
        [
            {"role": "user", "content": env_prompt},
            {"role": "assistant", "content": "5"},
            {"role": "user", "content": feedback},
        ],
        task={"question": "What is 2+2?", "answer": "4"},
    )
    (action,) = agent.act([item])
    assert inner.batches[0][0].messages == [
        {"role": "system", "content": "Solve it and box the answer.\nWhat is 1+1?"},
        {"role": "assistant", "content": "1+1 = 2. \\boxed{2}"},
        {"role": "user", "content": GREAT_JOB + "What is 2+2?"},  # the dataset's question, not the env's prompt
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": feedback},
    ]
    assert action.context.shown(item.messages) == inner.batches[0][0].messages  # recorded as a rewrite


def test_a_window_cuts_the_episode_and_keeps_the_opening_whole():
    inner = wrong_each_turn()
    rollouts = collect_episodes(
        "Mulligan/Echo-v0", OneShotAgent(inner, DEMO, context=LastAttempts(1)), 2,
        env_kwargs={"max_attempts": 3}, progress=False,
    )  # fmt: skip
    by_question = {GREAT_JOB + r.messages[0]["content"]: r for r in rollouts}
    for item in inner.batches[-1]:  # the third attempt of each episode
        assert [m["role"] for m in item.messages] == ["system", "assistant", "user", "assistant", "user"]
        rollout = by_question[item.messages[2]["content"]]
        assert item.messages[3]["content"] == rollout.turns[1].action  # the most recent attempt only


def test_trajectory_training_messages_and_rise_samples_rebuild_what_the_model_saw():
    inner = wrong_each_turn()
    rollouts = collect_episodes(
        "Mulligan/Echo-v0", OneShotAgent(inner, DEMO, context=LastAttempts(1)), 2,
        env_kwargs={"max_attempts": 3}, progress=False,
    )  # fmt: skip
    seen = [x.messages for batch in inner.batches for x in batch]
    rebuilt = [r.prompt_messages(t) for t in range(3) for r in rollouts]  # batches run turn by turn
    assert rebuilt == seen
    samples = rise_samples(rollouts, one_shot=DEMO, window=1)
    assert len(samples) == 6
    for sample in samples:
        trajectory = rollouts[sample["rollout"]]
        assert sample["messages"] == trajectory.training_messages(sample["turn"] - 1)


def test_the_demo_answer_is_context_not_learned():
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    rollouts = collect_episodes(
        "Mulligan/Echo-v0", OneShotAgent(wrong_each_turn(), DEMO), 1, env_kwargs={"max_attempts": 2}, progress=False
    )
    (first, second) = rise_samples(rollouts, one_shot=DEMO, window=1)
    for sample, attempt in ((first, "guess 0"), (second, "guess 1")):
        row = rwr_dataset(tokenizer, [{**sample, "reward": 0.0}], tau=0.4)[0]
        learned = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert tokenizer.decode(learned) == attempt + "<|im_end|>"
        assert "\\boxed{2}" in tokenizer.decode(row["input_ids"])  # the demo answer is there, as context


def test_history_removed_samples_keep_the_first_prompt_only():
    rollouts = collect_episodes(
        "Mulligan/Echo-v0", wrong_each_turn(), 1, env_kwargs={"max_attempts": 3}, progress=False
    )
    plain = rise_samples(rollouts, history=False)
    task = rollouts[0].messages[0]
    assert [s["messages"] for s in plain] == [[task, {"role": "assistant", "content": f"guess {k}"}] for k in range(3)]
    assert [s["reward"] for s in plain] == [s["reward"] for s in rise_samples(rollouts)]  # same weights
    with_demo = rise_samples(rollouts, history=False, one_shot=DEMO)
    assert all(s["messages"][:3] == one_shot_messages(DEMO, task["content"]) for s in with_demo)
    assert all(len(s["messages"]) == 4 for s in with_demo)


def test_demo_files_and_refusals(tmp_path):
    assert load_one_shot_demo("builtin") is BUILTIN_DEMO
    assert "\\boxed{" in BUILTIN_DEMO.question and BUILTIN_DEMO.answer.endswith("\\boxed{119}")
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"question": "Q", "answer": "A"}))
    assert load_one_shot_demo(str(path)) == OneShotDemo("Q", "A")
    path.write_text(json.dumps({"question": "Q"}))
    with pytest.raises(ValueError, match="exactly 'question' and 'answer'"):
        load_one_shot_demo(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_one_shot_demo(str(path))
    with pytest.raises(ValueError, match="non-empty"):
        OneShotDemo("Q", " ")
    from mulligan.agents.tiny import resolve_model

    model = resolve_model("tiny")
    with pytest.raises(ValueError, match="system_prompt"):
        OneShotAgent(HFAgent(model, system_prompt="Be brief."), DEMO)
    with pytest.raises(ValueError, match="context policy"):
        OneShotAgent(HFAgent(model, context=LastAttempts(1)), DEMO)
    with pytest.raises(ValueError, match="system"):
        rise_samples([], one_shot=DEMO, system_prompt="Be brief.")


def test_the_model_is_conditioned_on_the_rendered_opening():
    """What a real model's prompt is, through the tiny model's chat template (ChatML)."""
    from mulligan.agents.base import AgentInput
    from mulligan.agents.tiny import resolve_model

    model = HFAgent(resolve_model("tiny"), temperature=0.0, max_new_tokens=2)
    agent = OneShotAgent(model, OneShotDemo("Q1", "A1"))
    item = AgentInput([{"role": "user", "content": "env text"}], task={"question": "Q2"})
    assert model.render_prompt(agent.rewrite(item)) == (
        "<|im_start|>system\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n"
        + GREAT_JOB
        + "Q2<|im_end|>\n<|im_start|>assistant\n"
    )
    (action,) = agent.act([item])
    assert action.context.shown(item.messages) == agent.rewrite(item).messages
