"""NAT: the official prompts to the character, data amounts, budgets, agent-only loss, and learning."""

import json

import pytest
import torch

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.context import LastAttempts
from mulligan.agents.nat_prompt import (
    ACKNOWLEDGEMENT,
    INSTRUCTIONS,
    NATPromptAgent,
    nat_messages,
    nat_prompt,
)
from mulligan.agents.testing import EchoOracle
from mulligan.envs.verifiers.qa import CORRECT, MOSTLY_CORRECT, MOSTLY_INCORRECT, TOTALLY_INCORRECT
from mulligan.training.args import parser_for
from mulligan.training.nat import NATArgs, build_nat_examples, matched_steps, train_nat
from mulligan.training.rollout import collect_episodes
from mulligan.training.sft import conversations_to_dataset
from mulligan.training.stats import summarize
from mulligan.training.trajectory import Trajectory, Turn

VOCAB = ("apple", "river", "stone", "cloud")
MATH_INSTRUCTION = (
    "Solve a math problem with interleaving Thought, Action, Observation steps. Thought can reason about the "
    "current situation, and Action can be two types:\n(1) calculate[expression], which calculates the expression "
    "and returns the answer.\n(2) finish[answer], which returns the answer and finishes the task."
)
QA_INSTRUCTION = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps. Thought can reason "
    "about the current situation, and Action can be two types: \n(1) search[query], which searches a query on "
    "google and returns a short snippet containing the answer. Note that sometimes the snippet does not contain "
    "the answer, and some alternative search might be needed.\n(2) finish[answer], which returns the answer and "
    "finishes the task."
)
QA_NOTE = (
    " You need to generate a sequence of Thought and Action steps to solve the question. Note that the steps could "
    "be correct or incorrect. You need to follow the instruction strictly."
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_trajectory(question, success, score=None, task=None):
    return Trajectory(
        env_id="Mulligan/Echo-v0",
        task_id=question,
        task=task if task is not None else {"target": question},
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": "answer"}],
        turns=[Turn(question, "answer", float(success), {})],
        success=success,
        score=float(success) if score is None else score,
        episode_return=float(success),
        terminated=True,
        truncated=False,
    )


def test_official_question_prompts_character_for_character():
    assert nat_prompt("What is 2+3?", True) == (
        "Question: What is 2+3?. Generate a sequence of Thought and Action steps to solve the problem correctly."
    )
    assert nat_prompt("What is 2+3?", False) == (
        "Question: What is 2+3?. Generate a sequence of Thought and Action steps. But incorrectly solve the problem."
    )
    # QA: "solve the question", with the asterisks that are literally in the official prompt file.
    assert nat_prompt("Who?", True, domain="hotpotqa") == (
        "Question: Who?. Generate a sequence of Thought and Action steps to solve the question **correctly**."
    )
    assert nat_prompt("Who?", "negative", domain="qa") == (
        "Question: Who?. Generate a sequence of Thought and Action steps. But **incorrectly** solve the question."
    )
    assert nat_prompt("Is it?", True, domain="strategyqa") == nat_prompt("Is it?", True, domain="hotpotqa")
    assert nat_prompt("Q", True, domain="math_cot") == "Question: Q. Please solve the problem correctly."
    assert (
        nat_prompt("Q", False, domain="math_cot") == "Question: Q. Generate steps that incorrectly solve the problem."
    )
    assert nat_prompt("Q", True, position="prefix") == "[Correct] Question: Q."
    assert nat_prompt("Q", False, position="prefix") == "[Incorrect] Question: Q."
    assert nat_prompt("Q", False, position="prefix", tags="good") == "[Bad] Question: Q."
    assert nat_prompt("Q", MOSTLY_CORRECT, domain="qa") == "[Mostly Correct] Question: Q."
    assert nat_prompt("Q", "[Partially Correct]", domain="qa") == "[Partially Correct] Question: Q."
    assert nat_prompt("Q", None) == "Question: Q"
    with pytest.raises(ValueError, match="domain"):
        nat_prompt("Q", True, domain="chess")
    with pytest.raises(ValueError, match="label"):
        nat_prompt("Q", "maybe")
    with pytest.raises(ValueError, match="tags"):
        nat_prompt("Q", True, position="prefix", tags="colours")


def test_signal_ablations_of_section_4_4_character_for_character():
    """The official ``zero-shot-target-aware-*`` ablation templates (gsm8k prompt file), exactly."""
    assert nat_prompt("Q", True, position="prefix", tags="meaningless") == "[1] Question: Q."
    assert nat_prompt("Q", False, position="prefix", tags="laptop") == "[Screen] Question: Q."
    assert nat_prompt("Q", True, position="prefix", tags="good_suffix") == "Question: Q. [Good]"
    assert nat_prompt("Q", False, position="prefix", tags="good_suffix") == "Question: Q. [Bad]"
    assert nat_prompt("Q", True, position="prefix", tags="random_sentence") == (
        "Question: Q. 15th-century Italy saw the formation of the two main variants that are known today."
    )
    assert nat_prompt("Q", False, position="prefix", tags="random_sentence") == (
        "Question: Q. An apple is a round, edible fruit produced by an apple tree."
    )
    # Inverse: each label gets the other's prompt (prefix-correct-inverse; hotpotqa's suffix inverse).
    assert nat_prompt("Q", True, position="prefix", inverse=True) == "[Incorrect] Question: Q."
    assert nat_prompt("Q", False, position="prefix", inverse=True) == "[Correct] Question: Q."
    assert nat_prompt("Who?", True, domain="hotpotqa", inverse=True) == (
        "Question: Who?. Generate a sequence of Thought and Action steps. But **incorrectly** solve the question."
    )
    assert nat_prompt("Q", None, inverse=True) == "Question: Q"  # no signal, nothing to invert
    with pytest.raises(ValueError, match="fine-grained"):
        nat_prompt("Q", MOSTLY_CORRECT, domain="qa", inverse=True)
    # The QA inverse keeps the target-aware instruction, as the official template does.
    assert nat_messages("Who?", True, domain="qa", inverse=True)[0]["content"] == QA_INSTRUCTION + QA_NOTE


def test_inverse_and_random_sentence_training_data_and_matching_inference_prompt():
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("x") for _ in inputs]

    trajectories = [fake_trajectory("good one", True), fake_trajectory("bad one", False)]
    inverse = build_nat_examples(trajectories, position="prefix", inverse=True)
    assert [e["messages"][2]["content"] for e in inverse] == [
        "[Incorrect] Question: good one.",
        "[Correct] Question: bad one.",
    ]
    # Baselines have no signal to invert.
    nut = build_nat_examples(trajectories, method="nut", position="prefix", inverse=True)
    assert [e["messages"][2]["content"] for e in nut] == ["Question: good one", "Question: bad one"]
    # Inference prompts with what the positives were trained with (the official inverse does).
    item = AgentInput([{"role": "user", "content": "env text"}], task={"question": "good one"})
    NATPromptAgent(Recorder(), position="prefix", inverse=True).act([item])
    assert seen[-1].messages[-1]["content"] == inverse[0]["messages"][2]["content"]
    sentences = build_nat_examples(trajectories, position="prefix", tags="random_sentence")
    NATPromptAgent(Recorder(), position="prefix", tags="random_sentence").act([item])
    assert seen[-1].messages == sentences[0]["messages"][:3]
    with pytest.raises(ValueError, match="inverse"):
        NATArgs(method="nut", inverse=True)
    with pytest.raises(ValueError, match="tags"):
        NATArgs(position="prefix", tags="colours")
    config = parser_for(NATArgs).parse_args_into_dataclasses(
        ["--position", "prefix", "--tags", "random_sentence", "--inverse", "true"]
    )[0]
    assert (config.tags, config.inverse) == ("random_sentence", True)


def test_negative_signal_agent_prompts_with_what_negatives_were_trained_with():
    """The mechanism check (issue 13): the same template's negative prompt, public and exact."""
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("x") for _ in inputs]

    item = AgentInput([{"role": "user", "content": "env text"}], task={"question": "What is 1+1?"})
    negative = build_nat_examples([fake_trajectory("What is 1+1?", False)], domain="math", neg_num=1)[0]
    agent = NATPromptAgent(Recorder(), domain="math", negative_signal=True)
    agent.act([item])
    assert seen[-1].messages == negative["messages"][:3]
    assert seen[-1].messages[-1]["content"].endswith("But incorrectly solve the problem.")
    assert agent.name.startswith("nat_negative(")
    NATPromptAgent(Recorder(), position="prefix", tags="AB", negative_signal=True).act([item])
    assert seen[-1].messages[-1]["content"] == "[B] Question: What is 1+1?."
    NATPromptAgent(Recorder(), domain="qa", fine_grained=True, negative_signal=True).act([item])
    assert seen[-1].messages[-1]["content"] == "[Totally Incorrect] Question: What is 1+1?."
    with pytest.raises(ValueError, match="signal"):
        NATPromptAgent(Recorder(), signal=False, negative_signal=True)


def test_two_message_preamble_per_domain_and_template():
    opening = nat_messages("What is 2+3?", True)
    assert opening == [
        {"role": "user", "content": MATH_INSTRUCTION},
        {"role": "assistant", "content": "I've understood your instruction, start please."},
        {"role": "user", "content": nat_prompt("What is 2+3?", True)},
    ]
    assert ACKNOWLEDGEMENT == "I've understood your instruction, start please."
    # HotpotQA: the binary target-aware instruction adds the note; the fine-grained one does not.
    assert nat_messages("Who?", False, domain="qa")[0]["content"] == QA_INSTRUCTION + QA_NOTE
    assert nat_messages("Who?", TOTALLY_INCORRECT, domain="qa")[0]["content"] == QA_INSTRUCTION
    assert nat_messages("Who?", None, domain="qa")[0]["content"] == QA_INSTRUCTION
    assert INSTRUCTIONS["strategyqa"]["target_aware"] == (
        QA_INSTRUCTION + QA_NOTE + " Remember you should answer Yes or No."
    )
    assert nat_messages("Q", True, domain="math_cot") == [
        {"role": "user", "content": nat_prompt("Q", True, domain="math_cot")}
    ]


def test_mathreact_trajectories_get_one_question_and_the_preamble():
    from mulligan.agents.teachers.math import MathOracle

    trajectories = collect_episodes("Mulligan/MathReAct-v0", MathOracle(), 2, progress=False)
    examples = build_nat_examples(trajectories)
    for example, trajectory in zip(examples, trajectories, strict=True):
        messages = example["messages"]
        question = trajectory.task["question"].strip()
        assert messages[:3] == nat_messages(question, True)
        assert sum(m["content"].count("Question:") for m in messages) == 1  # never doubled
        assert messages[3:] == trajectory.messages[1:]  # the trajectory itself, untouched
        # The acknowledgement (index 1) is not learned; every agent turn of the trajectory is.
        assert example["learn_turns"] == [k for k in range(3, len(messages)) if messages[k]["role"] == "assistant"]


def test_amounts_ratio_pos_num_and_neg_num():
    trajectories = [fake_trajectory(f"p{i}", True) for i in range(10)]
    trajectories += [fake_trajectory(f"n{i}", False) for i in range(35)]
    labels = [e["label"] for e in build_nat_examples(trajectories, domain="math_cot")]
    assert labels.count("positive") == 10 and labels.count("negative") == 20  # the paper's 1:2
    # pos_num keeps the first positives (the official pos_trajs[:pos_num]), the ratio follows them.
    few = build_nat_examples(trajectories, pos_num=4, domain="math_cot")
    assert [e["task_id"] for e in few if e["label"] == "positive"] == ["p0", "p1", "p2", "p3"]
    assert sum(e["label"] == "negative" for e in few) == 8
    # neg_num is absolute and overrides the ratio; the sample is seeded.
    fixed = build_nat_examples(trajectories, pos_num=2, neg_num=7, seed=3, domain="math_cot")
    assert sum(e["label"] == "negative" for e in fixed) == 7
    assert fixed == build_nat_examples(trajectories, pos_num=2, neg_num=7, seed=3, domain="math_cot")
    assert sum(e["label"] == "negative" for e in build_nat_examples(trajectories[:13])) == 3  # all there are
    positives_only = build_nat_examples(trajectories, method="positives_only", domain="math_cot")
    assert len(positives_only) == 10 and positives_only[0]["messages"][0]["content"] == "Question: p0"
    nut = build_nat_examples(trajectories, method="nut", domain="math_cot")
    assert len(nut) == 30 and all(e["messages"][0]["content"] == f"Question: {e['task_id']}" for e in nut)
    as_env = build_nat_examples(trajectories, method="positives_only", baseline_prompt="env")
    assert [e["messages"] for e in as_env] == [t.messages for t in trajectories[:10]]  # the env's own prompt
    with pytest.raises(ValueError, match="pos_num"):
        build_nat_examples(trajectories, pos_num=-2)


def test_question_comes_from_the_task_record_not_the_env_prompt():
    trajectory = fake_trajectory("Instruction.\n\nQuestion: How many?", True, task={"question": "How many?"})
    (example,) = build_nat_examples([trajectory], domain="math_cot")
    assert example["messages"][0]["content"] == nat_prompt("How many?", True, domain="math_cot")


def test_fine_grained_variants_by_f1():
    scores = [1.0, 0.7, 0.2, 0.0, 0.1, 1.0]
    trajectories = [fake_trajectory(f"q{i}", s == 1.0, score=s) for i, s in enumerate(scores)]
    four = build_nat_examples(trajectories, method="fine_grained", domain="qa", negative_ratio=10)
    assert {e["task_id"]: e["label"] for e in four} == {
        "q0": CORRECT, "q1": MOSTLY_CORRECT, "q2": MOSTLY_INCORRECT, "q3": TOTALLY_INCORRECT,
        "q4": MOSTLY_INCORRECT, "q5": CORRECT,
    }  # fmt: skip
    q1 = next(e for e in four if e["task_id"] == "q1")
    assert q1["messages"][2]["content"] == "[Mostly Correct] Question: q1."
    three = build_nat_examples(trajectories, method="fine_grained_3", domain="qa", negative_ratio=10)
    assert {e["task_id"]: e["label"] for e in three}["q1"] == "[Partially Correct]"
    assert {e["task_id"]: e["label"] for e in three}["q3"] == "[Incorrect]"
    soft = build_nat_examples(trajectories, method="soft", domain="qa", negative_ratio=10)
    assert {e["task_id"] for e in soft if e["label"] == "positive"} == {"q0", "q1", "q5"}  # F1 > 0.2


def test_loss_mask_covers_the_agent_turns_only():
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    messages = [
        {"role": "user", "content": "Instruction"},
        {"role": "assistant", "content": ACKNOWLEDGEMENT},
        {"role": "user", "content": "Repeat exactly: apple"},
        {"role": "assistant", "content": "apple"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "river"},
    ]
    dataset = conversations_to_dataset(tokenizer, [messages], max_length=None, learn_turns=[[3, 5]])
    ids, mask = dataset[0]["input_ids"], dataset[0]["assistant_masks"]
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == "apple<|im_end|>river<|im_end|>"  # not the acknowledgement, not the env's turns


def test_inference_agent_sees_the_official_positive_opening():
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("x") for _ in inputs]

    env_prompt = "Solve step by step.\n\nQuestion: What is 1+1?"
    item = AgentInput([{"role": "user", "content": env_prompt}], task={"question": "What is 1+1?", "answer": "2"})
    NATPromptAgent(Recorder(), domain="math").act([item])
    assert seen[0].messages == nat_messages("What is 1+1?", True)
    NATPromptAgent(Recorder(), domain="qa", fine_grained=True).act([item])
    assert seen[1].messages[-1]["content"] == "[Correct] Question: What is 1+1?."
    NATPromptAgent(Recorder(), domain="math", signal=False).act([item])
    assert seen[2].messages[-1]["content"] == "Question: What is 1+1?"


def test_a_window_keeps_nat_s_opening_whole():
    """RISE's window on a NAT prompt: the opening (instruction, acknowledgement, question) stays the head."""
    seen = []

    class Recorder(Agent):
        def act(self, inputs):
            seen.extend(inputs)
            return [Action("x") for _ in inputs]

    attempts = [{"role": "user", "content": "Solve: 1+1"}]
    for k in range(3):
        attempts += [{"role": "assistant", "content": f"try {k}"}, {"role": "user", "content": f"wrong {k}"}]
    item = AgentInput(attempts, task={"question": "What is 1+1?"})
    (action,) = NATPromptAgent(Recorder(), domain="math", context=LastAttempts(1)).act([item])
    opening = nat_messages("What is 1+1?", True)
    assert seen[0].messages == [*opening, attempts[-2], attempts[-1]]
    assert action.context.shown(attempts) == seen[0].messages
    assert action.context.spans == ((0, 1), (5, 7)) and action.context.rewritten == ((0, tuple(opening)),)
    # An inner agent with a window of its own would drop the question: refused, with the fix.
    windowed = Recorder()
    windowed.context = LastAttempts(1)
    with pytest.raises(ValueError, match=r"NATPromptAgent\(\.\.\., context=LastAttempts"):
        NATPromptAgent(windowed, domain="math")


def test_presets_and_validation():
    tiny = NATArgs()
    assert (tiny.learning_rate, tiny.num_train_epochs, tiny.bf16, tiny.max_length) == (1e-3, 3.0, False, 1024)
    (paper,) = parser_for(NATArgs).parse_args_into_dataclasses(["--preset", "paper", "--use_lora"])
    assert (paper.learning_rate, paper.lr_scheduler_type, paper.warmup_ratio, paper.num_train_epochs) == (
        5e-5, "cosine", 0.03, 2.0,
    )  # fmt: skip
    assert (paper.per_device_train_batch_size, paper.gradient_accumulation_steps, paper.max_length) == (2, 8, 4096)
    assert paper.bf16 is True and paper.use_lora is True
    with pytest.raises(ValueError, match="positives_only"):
        NATArgs(method="dpo")
    with pytest.raises(ValueError, match="1:2"):
        NATArgs(negative_ratio=-1)
    with pytest.raises(ValueError, match="max_steps"):
        NATArgs(max_steps=0)
    with pytest.raises(ValueError, match="matched_steps"):
        NATArgs(budget="tokens")


def test_matched_steps_is_positives_only_step_count():
    config = NATArgs(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=3)
    assert matched_steps(10, config) == 5  # ceil(10/4) = 3 micro-steps per epoch, 9 in all, / 2 -> 5
    assert matched_steps(1, config) == 2


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_budgets_steps_change_parameters_and_resume(tmp_path):
    from mulligan.agents.tiny import resolve_model

    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=3), 12, progress=False)
    common = {"per_device_train_batch_size": 4, "num_train_epochs": 1.0, "logging_steps": 1, "disable_tqdm": True,
              "domain": "math_cot"}  # fmt: skip
    # The paper's budget: one epoch over all 12 examples (8 positive + 4 negative) = 3 steps.
    epochs = train_nat(NATArgs(output_dir=str(tmp_path / "e"), save_steps=0, **common), data)
    assert (epochs["positives"], epochs["negatives"], epochs["global_step"]) == (8, 4, 3)
    # Compute-matched: the 2 steps one epoch over the 8 positives takes.
    matched = train_nat(NATArgs(output_dir=str(tmp_path / "m"), budget="matched_steps", save_steps=0, **common), data)
    assert matched["global_step"] == 2
    before, after = _weights(resolve_model("tiny")), _weights(tmp_path / "m")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "m" / "nat_dataset.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {"positive", "negative"}
    # Resume from the step-2 checkpoint and go on to step 3.
    config = NATArgs(output_dir=str(tmp_path / "r"), max_steps=2, save_steps=2, **common)
    train_nat(config, data)
    resumed = NATArgs(
        output_dir=str(tmp_path / "r"), max_steps=3, save_steps=2, resume_from_checkpoint="auto", **common
    )
    assert train_nat(resumed, data)["global_step"] == 3


def test_lora_bf16_and_checkpointing_pass_through_and_save_a_full_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from mulligan.agents.tiny import resolve_model

    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=3), 8, progress=False)
    config = NATArgs(
        output_dir=str(tmp_path / "lora"), max_steps=2, per_device_train_batch_size=4, use_lora=True, lora_r=4,
        gradient_checkpointing=True, bf16=True, save_steps=0, disable_tqdm=True, domain="math_cot",
    )  # fmt: skip
    assert train_nat(config, data)["global_step"] == 2
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # merged into the base weights
    before = _weights(resolve_model("tiny"))
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "lora").state_dict()
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapters' update is in the weights


def test_sft_on_oracle_echo_data_raises_success(tmp_path):
    from mulligan.agents.hf import HFAgent

    env_kwargs = {"vocabulary": VOCAB}
    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 64, env_kwargs=env_kwargs, seed=0, progress=False)

    def success(model):
        # Prompted as trained: the official plain format of the positives-only baseline.
        agent = NATPromptAgent(HFAgent(model, temperature=0, max_new_tokens=8), domain="math_cot", signal=False)
        held_out = collect_episodes(
            "Mulligan/Echo-v0", agent, 24, env_kwargs=env_kwargs, seed=1, num_envs=24, progress=False
        )
        return summarize(held_out).success_rate

    assert success("tiny") == 0.0
    config = NATArgs(
        output_dir=str(tmp_path / "sft"), method="positives_only", domain="math_cot", max_steps=70,
        per_device_train_batch_size=16, learning_rate=3e-3, save_steps=0, disable_tqdm=True,
    )  # fmt: skip
    train_nat(config, data)
    assert success(str(tmp_path / "sft")) >= 0.75


def test_tools_mode_episodes_train_with_their_env_tools():
    from mulligan.agents.testing import ScriptedAgent
    from mulligan.envs.registration import env_tools
    from mulligan.envs.tools import format_tool_call

    calls = [format_tool_call("calculate", {"expression": "1 + 1"}), format_tool_call("finish", {"answer": "2"})]
    [tools_mode] = collect_episodes(
        "Mulligan/MathReAct-v0", ScriptedAgent(calls), 1, env_kwargs={"action_format": "tools"}, progress=False
    )
    text_mode = collect_episodes("Mulligan/Echo-v0", EchoOracle(), 1, progress=False)
    examples = build_nat_examples([tools_mode, *text_mode], method="nut", domain="math")
    by_task = {e["task_id"]: e["tools"] for e in examples}
    assert by_task == {tools_mode.task_id: env_tools("Mulligan/MathReAct-v0"), text_mode[0].task_id: None}
