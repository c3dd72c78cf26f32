"""RISE: improvement by best-of-N, the paper's filters, RWR weights, metrics, and a training iteration."""

import math

import pytest
import torch

from mulligan.agents.base import Action, Agent
from mulligan.training.rise import (
    RISEConfig,
    RWRCollator,
    answer_key,
    evaluate_rise,
    filter_samples,
    improve_rollouts,
    rwr_dataset,
    train_rise,
)
from mulligan.training.rollout import collect_episodes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def target_of(item):
    """The Echo target, from the task record (scripted teachers may read it)."""
    return item.task["target"]


class Wrong(Agent):
    name = "wrong"

    def act(self, inputs):
        return [Action("nope") for _ in inputs]


class Teacher(Agent):
    """Right on one candidate in two: best-of-2 always finds the answer, best-of-1 sometimes not."""

    name = "teacher"

    def __init__(self):
        self.calls = 0

    def act(self, inputs):
        self.calls += 1
        return [Action(target_of(x) if self.calls % 2 == 0 else "wrong") for x in inputs]


class LearnsFromFeedback(Agent):
    """Wrong at turn 1, right once it has seen feedback."""

    def act(self, inputs):
        return [Action("nope" if len(x.messages) == 1 else target_of(x)) for x in inputs]


def tokenizer():
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny"))


def test_best_of_n_improves_every_turn_with_the_whole_history():
    rollouts = collect_episodes("Mulligan/Echo-v0", Wrong(), 3, env_kwargs={"max_attempts": 2}, progress=False)
    samples = improve_rollouts(rollouts, Teacher(), "Mulligan/Echo-v0", best_of_n=2)
    assert len(samples) == 6  # 3 rollouts x 2 turns
    for sample in samples:
        assert sample["reward"] == 1.0 and sample["success"] and sample["policy_reward"] == 0.0
        rollout = rollouts[sample["rollout"]]
        history = sample["messages"][:-1]
        assert history == rollout.messages[: 2 * sample["turn"] - 1]
        assert sample["messages"][-1] == {"role": "assistant", "content": rollout.task["target"]}
    second = next(s for s in samples if s["turn"] == 2)
    assert "The answer is incorrect. Please try again." in second["messages"][-2]["content"]


def test_filters():
    samples = [
        {"rollout": 0, "reward": 1.0, "success": True, "policy_reward": 0.0},
        {"rollout": 0, "reward": 0.5, "success": False, "policy_reward": 0.5},
        {"rollout": 1, "reward": 0.2, "success": False, "policy_reward": 0.0},
        {"rollout": 1, "reward": 0.1, "success": False, "policy_reward": 0.3},
    ]
    assert filter_samples(samples, "all") == samples
    assert filter_samples(samples, "better") == [samples[0], samples[2]]
    assert filter_samples(samples, "best") == [samples[0], samples[2]]
    assert filter_samples(samples, "success") == [samples[0]]
    with pytest.raises(ValueError, match="better"):
        filter_samples(samples, "top")


def test_rwr_weights_exp_reward_over_tau_on_the_last_turn_only():
    tok = tokenizer()
    messages = [{"role": "user", "content": "Repeat exactly: apple"}, {"role": "assistant", "content": "nope"},
                {"role": "user", "content": "The answer is incorrect."}, {"role": "assistant", "content": "apple"}]
    dataset = rwr_dataset(tok, [{"messages": messages, "reward": 0.6}], tau=0.4)
    row = dataset[0]
    learned = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tok.decode(learned) == "apple<|im_end|>"  # not "nope", not the env's turns
    expected = math.exp(0.6 / 0.4)
    for label, weight in zip(row["labels"], row["loss_weights"], strict=True):
        assert weight == (pytest.approx(expected) if label != -100 else 0.0)


def test_weighted_loss_is_the_weighted_token_mean():
    from transformers import TrainingArguments

    from mulligan.agents.tiny import build_tiny_model
    from mulligan.training.rise import RewardWeightedTrainer

    model, tok = build_tiny_model()
    messages = [{"role": "user", "content": "Repeat exactly: apple"}, {"role": "assistant", "content": "apple"}]
    samples = [{"messages": messages, "reward": 0.0}, {"messages": messages, "reward": 0.4}]
    batch = RWRCollator(tok.pad_token_id)([dict(r) for r in rwr_dataset(tok, samples, tau=0.4)])
    trainer = RewardWeightedTrainer(model=model, args=TrainingArguments("/tmp/unused", report_to="none"))
    loss = trainer.compute_loss(model, dict(batch))
    plain = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # token mean, weight 1
    assert loss.item() == pytest.approx(plain.item() * (1 + math.e) / 2, rel=1e-4)


def test_metrics_count_turns_and_majorities():
    metrics = evaluate_rise(LearnsFromFeedback(), "Mulligan/Echo-v0", num_tasks=4, turns=5)
    assert metrics == {"m1@t1": 0.0, "m5@t1": 0.0, "m1@t5": 1.0, "p1@t5": 1.0}
    assert answer_key("so \\boxed{42}.") == "42" and answer_key("it is 7 or 8") == "8"


def test_config_validation():
    with pytest.raises(ValueError, match="better"):
        RISEConfig(filter="some")
    with pytest.raises(ValueError, match=r"0\.4"):
        RISEConfig(tau=0)
    with pytest.raises(ValueError, match="--max_attempts"):
        RISEConfig(env_kwargs='{"max_attempts": 3}')


def test_one_iteration_trains_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM

    from mulligan.agents.tiny import resolve_model

    config = RISEConfig(
        env_id="Mulligan/Echo-v0", output_dir=str(tmp_path / "rise"), improver="teacher",
        num_tasks=4, max_attempts=2, best_of_n=2, max_steps=2, per_device_train_batch_size=4,
        max_new_tokens=4, num_envs=4, disable_tqdm=True, eval_tasks=2,
    )
    summary = train_rise(config, improver=Teacher())
    stats = summary["iterations"][0]
    assert stats["samples"] >= 4 and stats["kept"] == stats["samples"]
    assert set(summary["eval"]) == {"m1@t1", "m5@t1", "m1@t5", "p1@t5"}
    before = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(summary["model_dir"]).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Resuming finds the finished iteration and does not train it again.
    again = train_rise(RISEConfig(**{**config.__dict__, "resume_from_checkpoint": "auto", "eval_tasks": 0}),
                       improver=Teacher())
    assert again["iterations"] == summary["iterations"]
