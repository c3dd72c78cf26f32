"""NAT: the paper's prompts and ratio, agent-only loss, training that moves the model and the metric."""

import json

import pytest
import torch

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.envs.verifiers.qa import CORRECT, MOSTLY_CORRECT, MOSTLY_INCORRECT, TOTALLY_INCORRECT
from mulligan.training.nat import (
    NATConfig,
    NATPromptAgent,
    build_nat_examples,
    conversations_to_dataset,
    nat_prompt,
    train_nat,
)
from mulligan.training.rollout import collect_episodes
from mulligan.training.stats import summarize
from mulligan.training.trajectory import Trajectory, Turn

VOCAB = ("apple", "river", "stone", "cloud")


@pytest.fixture(autouse=True)
def one_thread():
    # The CI box is shared: one thread avoids oversubscription and keeps step times steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class EchoAgent(Agent):
    """Echoes the target; wrong (answers "nope") on every ``wrong_every``-th call when set."""

    name = "echo"

    def __init__(self, wrong_every=0):
        self.wrong_every, self.calls = wrong_every, 0

    def act(self, inputs):
        out = []
        for item in inputs:
            self.calls += 1
            wrong = self.wrong_every and self.calls % self.wrong_every == 0
            out.append(Action("nope" if wrong else item.observation.split(": ", 1)[-1]))
        return out


def fake_trajectory(question, success, score=None):
    return Trajectory(
        env_id="Mulligan/Echo-v0", task_id=question, task={"target": question},
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": "answer"}],
        turns=[Turn(question, "answer", float(success), {})], success=success,
        score=float(success) if score is None else score, episode_return=float(success),
        terminated=True, truncated=False,
    )


def test_exact_paper_wording_and_variants():
    assert nat_prompt("What is 2+3?", True) == (
        "Question: What is 2+3?. Generate a sequence of Thought and Action steps to solve the problem correctly."
    )
    assert nat_prompt("What is 2+3?", False) == (
        "Question: What is 2+3?. Generate a sequence of Thought and Action steps. But incorrectly solve the problem."
    )
    assert nat_prompt("Who?", True, domain="qa") == (
        "Question: Who?. Generate a sequence of Thought and Action steps to answer the question **correctly**."
    )
    assert nat_prompt("Who?", "negative", domain="qa").endswith("But answer the question **incorrectly**.")
    assert nat_prompt("Q", True, position="prefix") == (
        "Generate a sequence of Thought and Action steps to solve the problem correctly. Question: Q."
    )
    assert "[Mostly Correct]" in nat_prompt("Q", MOSTLY_CORRECT, domain="qa")
    with pytest.raises(ValueError, match="domain"):
        nat_prompt("Q", True, domain="chess")
    with pytest.raises(ValueError, match="label"):
        nat_prompt("Q", "maybe")


def test_ratio_prompts_and_baselines():
    trajectories = [fake_trajectory(f"p{i}", True) for i in range(10)]
    trajectories += [fake_trajectory(f"n{i}", False) for i in range(35)]
    nat = build_nat_examples(trajectories)
    labels = [e["label"] for e in nat]
    assert labels.count("positive") == 10 and labels.count("negative") == 20  # the paper's 1:2
    for example in nat:
        first = example["messages"][0]["content"]
        question = example["task_id"]
        assert first == nat_prompt(question, example["label"] == "positive")
        assert example["messages"][1] == {"role": "assistant", "content": "answer"}
    assert [e["label"] for e in build_nat_examples(trajectories, negative_ratio=1.0)].count("negative") == 10
    # The subsample is seeded: the same seed picks the same negatives.
    assert build_nat_examples(trajectories, seed=3) == build_nat_examples(trajectories, seed=3)
    few = trajectories[:10] + trajectories[10:13]
    assert [e["label"] for e in build_nat_examples(few)].count("negative") == 3  # all there are
    positives_only = build_nat_examples(trajectories, method="positives_only")
    assert len(positives_only) == 10 and positives_only[0]["messages"][0]["content"] == "p0"
    nut = build_nat_examples(trajectories, method="nut")
    assert len(nut) == 30 and all(e["messages"][0]["content"] == e["task_id"] for e in nut)


def test_fine_grained_labels_by_f1():
    scores = [1.0, 0.7, 0.2, 0.0, 0.0, 1.0]
    trajectories = [fake_trajectory(f"q{i}", s == 1.0, score=s) for i, s in enumerate(scores)]
    examples = build_nat_examples(trajectories, method="fine_grained", domain="qa", negative_ratio=10)
    by_task = {e["task_id"]: e["label"] for e in examples}
    assert by_task == {"q0": CORRECT, "q1": MOSTLY_CORRECT, "q2": MOSTLY_INCORRECT, "q3": TOTALLY_INCORRECT,
                       "q4": TOTALLY_INCORRECT, "q5": CORRECT}
    q1 = next(e for e in examples if e["task_id"] == "q1")
    assert q1["messages"][0]["content"] == nat_prompt("q1", MOSTLY_CORRECT, domain="qa")


def test_loss_mask_covers_the_agent_turns_only():
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    messages = [{"role": "user", "content": "Repeat exactly: apple"}, {"role": "assistant", "content": "apple"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "river"}]
    dataset = conversations_to_dataset(tokenizer, [messages], max_length=None)
    ids, mask = dataset[0]["input_ids"], dataset[0]["assistant_masks"]
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == "apple<|im_end|>river<|im_end|>"  # content and end-of-turn token, nothing else


def test_inference_agent_sees_the_correctly_prompt():
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("x") for _ in inputs]

    agent = NATPromptAgent(Recorder(), domain="math")
    agent.act([AgentInput([{"role": "user", "content": "What is 1+1?"}])])
    assert seen[0].messages[0]["content"] == nat_prompt("What is 1+1?", True)


def test_config_rejects_bad_values_with_the_fix():
    with pytest.raises(ValueError, match="positives_only"):
        NATConfig(method="dpo")
    with pytest.raises(ValueError, match="1:2"):
        NATConfig(negative_ratio=-1)
    with pytest.raises(ValueError, match="max_steps"):
        NATConfig(max_steps=0)


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_few_steps_change_parameters_and_resume(tmp_path):
    from mulligan.agents.tiny import resolve_model

    data = collect_episodes("Mulligan/Echo-v0", EchoAgent(wrong_every=3), 12, progress=False)
    config = NATConfig(output_dir=str(tmp_path / "nat"), max_steps=2, save_steps=2, per_device_train_batch_size=4,
                       logging_steps=1, disable_tqdm=True)
    summary = train_nat(config, data)
    assert summary["positives"] == 8 and summary["negatives"] == 4
    before, after = _weights(resolve_model("tiny")), _weights(tmp_path / "nat")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "nat" / "nat_dataset.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {"positive", "negative"}
    # Resume from the step-2 checkpoint and go on to step 3.
    resumed = NATConfig(**{**config.__dict__, "max_steps": 3, "resume_from_checkpoint": "auto"})
    assert train_nat(resumed, data)["global_step"] == 3


def test_sft_on_oracle_echo_data_raises_success(tmp_path):
    from mulligan.agents.hf import HFAgent

    env_kwargs = {"vocabulary": VOCAB}
    data = collect_episodes("Mulligan/Echo-v0", EchoAgent(), 64, env_kwargs=env_kwargs, seed=0, progress=False)

    def success(model):
        agent = HFAgent(model, temperature=0, max_new_tokens=8)
        held_out = collect_episodes("Mulligan/Echo-v0", agent, 24, env_kwargs=env_kwargs, seed=1, num_envs=24,
                                    progress=False)
        return summarize(held_out).success_rate

    assert success("tiny") == 0.0
    config = NATConfig(output_dir=str(tmp_path / "sft"), method="positives_only", max_steps=70,
                       per_device_train_batch_size=16, learning_rate=3e-3, save_steps=1000, disable_tqdm=True)
    train_nat(config, data)
    assert success(str(tmp_path / "sft")) >= 0.75
