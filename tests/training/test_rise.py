"""RISE: on-policy first turns, the official converter and filters, RWR losses, metrics, one iteration."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mulligan.agents.base import Action, Agent
from mulligan.agents.best_of_n import BestOfNAfterFirst, is_degenerate
from mulligan.agents.testing import EchoOracle, FunctionAgent, ScriptedAgent, echo_target, turn_number
from mulligan.envs.wrappers import RISE_FEEDBACK_TEMPLATE
from mulligan.training.args import parser_for
from mulligan.training.evaluation import majority_metric, majority_vote
from mulligan.training.rise import (
    RISEArgs,
    RWRCollator,
    answer_key,
    evaluate_rise,
    parallel_metrics,
    rise_samples,
    rwr_dataset,
    rwr_loss,
    sequential_metrics,
    train_rise,
)
from mulligan.training.rollout import collect_episodes
from mulligan.training.trajectory import Trajectory, Turn

FEEDBACK = RISE_FEEDBACK_TEMPLATE.format(question="Q?")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rollout(actions, rewards, successes=None, task_id="t"):
    """A hand-made RISE rollout: question "Q?", then attempts answered with the retry feedback."""
    successes = successes or [False] * len(actions)
    messages, turns = [{"role": "user", "content": "Q?"}], []
    for k, (action, reward, success) in enumerate(zip(actions, rewards, successes, strict=True)):
        observation = messages[-1]["content"]
        messages.append({"role": "assistant", "content": action})
        last = success or k == len(actions) - 1
        if not last:
            messages.append({"role": "user", "content": FEEDBACK})
        info = {"success": success, "attempt": k + 1, "attempt_return": reward}
        turns.append(Turn(observation, action, reward, info))
    return Trajectory(
        env_id="Mulligan/Echo-v0", task_id=task_id, task={"target": "x"}, messages=messages, turns=turns,
        success=any(successes), score=float(any(successes)), episode_return=rewards[-1], terminated=True,
        truncated=False,
    )  # fmt: skip


def test_first_attempt_is_the_learners_own_sample_and_later_ones_best_of_n():
    learner = ScriptedAgent(["nope"], name="learner")
    calls = []

    def improve(item):  # right on every second candidate: best-of-2 always finds it
        calls.append(item)
        return echo_target(item) if len(calls) % 2 == 0 else "wrong"

    scored = []

    def scorer(text, task):
        scored.append(text)
        return (1.0, True) if text == task["target"] else (0.0, False)

    agent = BestOfNAfterFirst(learner, FunctionAgent(improve), 2, scorer)
    rollouts = collect_episodes("Mulligan/Echo-v0", agent, 3, env_kwargs={"max_attempts": 3}, progress=False)
    for r in rollouts:
        assert r.turns[0].action == "nope"  # on-policy, N = 1, never replaced
        assert r.turns[1].action == r.task["target"] and r.success  # the best of two, then the episode ends
        assert len(r.turns) == 2
    assert all(turn_number(item) == 1 for item in calls)  # the improver is asked at turn 2 only
    assert len(calls) == 6 and len(scored) == 6  # 3 tasks x 2 candidates
    # A learner that succeeds at turn 1 is never improved.
    solved = collect_episodes(
        "Mulligan/Echo-v0", BestOfNAfterFirst(EchoOracle(), FunctionAgent(improve), 2, scorer), 2,
        env_kwargs={"max_attempts": 3}, progress=False,
    )  # fmt: skip
    assert [len(r.turns) for r in solved] == [1, 1] and len(calls) == 6


def test_degenerate_candidates_are_set_aside():
    assert is_degenerate("so " * 151) and not is_degenerate("so " * 150)
    assert is_degenerate("a" * 301) and not is_degenerate("so " * 151, max_repeats=0)
    candidates = ["right " * 151, "wrong"]
    improver = FunctionAgent(lambda item: candidates[len(improver.batches) % 2])

    def scorer(text, task):
        return (1.0, True) if text.startswith("right") else (0.0, False)

    agent = BestOfNAfterFirst(ScriptedAgent(["nope"]), improver, 2, scorer)
    (r,) = collect_episodes("Mulligan/Echo-v0", agent, 1, env_kwargs={"max_attempts": 2}, progress=False)
    assert r.turns[1].action == "wrong"  # the degenerate candidate scored higher but is set aside


def test_converter_all_keeps_every_attempt_with_its_history():
    samples = rise_samples([rollout(["a1", "a2"], [0.0, 1.0], [False, True])])
    assert [s["turn"] for s in samples] == [1, 2]
    assert samples[0]["messages"] == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "a1"}]
    assert samples[1]["messages"] == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": FEEDBACK},
        {"role": "assistant", "content": "a2"},
    ]
    assert [s["reward"] for s in samples] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("criteria", "turns"),
    [
        ("all", [1, 2, 3, 4]),
        ("better", [1, 3, 4]),  # turn 1 always; then r_i > r_{i-1}: 0.4 > 0.2, 0.6 > 0.4
        ("best", [1, 4]),  # turn 1 always; then r_i >= every earlier: only 0.6
        ("success", []),
    ],
)
def test_filters_mean_what_the_official_converter_means(criteria, turns):
    samples = rise_samples([rollout(["a", "b", "c", "d"], [0.5, 0.2, 0.4, 0.6])], criteria=criteria, window=0)
    assert [s["turn"] for s in samples] == turns


def test_success_filter_keeps_only_successful_attempts_turn_one_included():
    rollouts = [rollout(["a", "b"], [0.0, 1.0], [False, True]), rollout(["c"], [1.0], [True], task_id="u")]
    assert [(s["task_id"], s["turn"]) for s in rise_samples(rollouts, criteria="success")] == [("t", 2), ("u", 1)]
    with pytest.raises(ValueError, match="better"):
        rise_samples(rollouts, criteria="top")


def test_duplicates_and_empty_attempts_are_dropped_with_their_feedback():
    samples = rise_samples([rollout(["a", " a ", "  ", "b"], [0.0, 0.0, -1.0, 0.5])])
    assert [s["messages"][-1]["content"] for s in samples] == ["a", "b"]
    assert samples[1]["turn"] == 2
    assert [m["content"] for m in samples[1]["messages"]] == ["Q?", "a", FEEDBACK, "b"]
    kept = rise_samples([rollout(["a", "a"], [0.0, 0.0])], remove_duplicates=False)
    assert len(kept) == 2
    degenerate = rise_samples([rollout(["x " * 151, "b"], [0.0, 0.5])])
    assert [s["messages"][-1]["content"] for s in degenerate] == ["b"]


def test_training_context_is_the_evaluation_window():
    three = rollout(["a1", "a2", "a3"], [0.0, 0.0, 0.0])
    (_, _, last) = rise_samples([three], window=1)
    # The first prompt and the most recent attempt with its feedback (the paper's context_window 2).
    assert [m["content"] for m in last["messages"]] == ["Q?", "a2", FEEDBACK, "a3"]
    (_, _, full) = rise_samples([three], window=0)
    assert [m["content"] for m in full["messages"]] == ["Q?", "a1", FEEDBACK, "a2", FEEDBACK, "a3"]
    (first, *_) = rise_samples([three], system_prompt="Be brief.")
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}


def tokenizer():
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny"))


def test_rwr_weight_is_exp_reward_over_tau_on_the_last_turn_only():
    tok = tokenizer()
    messages = [
        {"role": "user", "content": "Repeat exactly: apple"},
        {"role": "assistant", "content": "nope"},
        {"role": "user", "content": "The answer is incorrect."},
        {"role": "assistant", "content": "apple"},
    ]
    row = rwr_dataset(tok, [{"messages": messages, "reward": 0.6}], tau=0.4)[0]
    learned = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tok.decode(learned) == "apple<|im_end|>"  # not "nope", not the env's turns
    assert row["weight"] == pytest.approx(math.exp(0.6 / 0.4))
    unboxed = rwr_dataset(tok, [{"messages": messages, "reward": -1.0}], tau=0.4)[0]
    assert unboxed["weight"] == pytest.approx(math.exp(-2.5))  # RISE's unboxed answer: e^-2.5


def test_loss_normalizations_known_answer():
    # Two samples: 1 learned token with NLL a, 3 learned tokens with NLL b each; weights w1, w2.
    vocab = 4
    logits = torch.zeros(2, 5, vocab)
    logits[0, 0, 1] = 2.0  # sample 0 predicts token 1 at position 1 with some confidence
    labels = torch.tensor([[-100, 1, -100, -100, -100], [-100, 2, 3, 0, -100]])
    weight = torch.tensor([1.0, math.e])
    log_probs = torch.log_softmax(logits, dim=-1)
    a = -log_probs[0, 0, 1].item()
    b = -log_probs[1, 0, 0].item()  # uniform: log(4)
    sample = rwr_loss(logits, labels, weight, "sample").item()
    token = rwr_loss(logits, labels, weight, "token").item()
    assert sample == pytest.approx((1.0 * a + math.e * b) / 2, rel=1e-5)  # official: per-sample mean, then mean
    assert token == pytest.approx((1.0 * a + math.e * 3 * b) / 4, rel=1e-5)
    batch = RWRCollator(0)(
        [{"input_ids": [5, 6], "labels": [-100, 6], "weight": 2.0}, {"input_ids": [7], "labels": [7], "weight": 1.0}]
    )
    assert batch["labels"].tolist() == [[-100, 6], [7, -100]] and batch["weight"].tolist() == [2.0, 1.0]


def test_rise_votes_with_the_one_majority_rule_of_evaluation():
    # Tied samples: RISE's m{k}@t1 is evaluation's majority metric (one implementation, one tie rule).
    par = [rollout([a], [float(a == "4")], [a == "4"], task_id=f"t{i}") for i in range(20) for a in ("4", "5")]
    assert set(parallel_metrics(par, seed=5).items()) >= set(majority_metric(answer_key, "m2@t1", seed=5)(par).items())
    assert parallel_metrics(par, seed=5)["m2@t1_ties"] == 1.0


def test_majority_votes_use_the_verifier_key_and_break_ties_at_random():
    assert answer_key(r"so \boxed{\frac{1}{2}}") == r"\frac{1}{2}"  # not "2"
    assert answer_key("  the   end ") == "the end"
    rng = np.random.default_rng(0)
    assert majority_vote(["1", "2", "2"], [True, False, False], rng) == (False, False)
    assert majority_vote(["1", "1", "2"], [True, True, False], rng) == (True, False)
    wins = [majority_vote(["1", "2"], [True, False], np.random.default_rng(s))[0] for s in range(200)]
    assert 60 < sum(wins) < 140  # a tie is a fair draw, not "the first answer wins"
    assert majority_vote(["1", "2"], [True, False], rng)[1] is True


def test_metrics_on_hand_made_trajectories():
    # Sequential, no oracle: right at turn 2 only -> majority wrong, p1 right.
    seq = [rollout(["7", "8", "7", "7", "7"], [0, 1, 0, 0, 0], [False, True, False, False, False])]
    assert sequential_metrics(seq) == {"m1@t5": 0.0, "m1@t5_ties": 0.0, "p1@t5": 1.0}
    # Parallel: 3 samples of one task, 2 right with the same answer.
    par = [rollout([a], [float(a == "4")], [a == "4"]) for a in ("4", "4", "5")]
    metrics = parallel_metrics(par)
    assert metrics["m1@t1"] == pytest.approx(2 / 3) and metrics["m3@t1"] == 1.0 and metrics["m3@t1_ties"] == 0.0


def test_evaluate_rise_runs_the_no_oracle_loop_on_each_task_once():
    class LearnsFromFeedback(Agent):
        """Wrong at turn 1, right once it has seen feedback."""

        def act(self, inputs):
            return [Action("nope" if turn_number(x) == 0 else echo_target(x)) for x in inputs]

    metrics = evaluate_rise(LearnsFromFeedback(), "Mulligan/Echo-v0", range(4), turns=5)
    # Turn 1 always wrong; turns 2-5 right: majority right (4 of 5), some turn right.
    assert metrics == {"m1@t1": 0.0, "m5@t1": 0.0, "m5@t1_ties": 0.0, "m1@t5": 1.0, "m1@t5_ties": 0.0, "p1@t5": 1.0}


def test_config_presets_and_validation():
    tiny = RISEArgs()
    assert (tiny.learning_rate, tiny.best_of_n, tiny.max_new_tokens, tiny.max_attempts, tiny.window) == (
        5e-4, 4, 64, 2, 1,
    )  # fmt: skip
    (paper,) = parser_for(RISEArgs).parse_args_into_dataclasses(["--preset", "paper"])
    assert (paper.learning_rate, paper.lr_scheduler_type, paper.warmup_ratio) == (1e-5, "cosine", 0.04)
    assert (paper.per_device_train_batch_size, paper.gradient_accumulation_steps, paper.max_length) == (1, 16, 2048)
    assert (paper.bf16, paper.gradient_checkpointing, paper.max_new_tokens, paper.best_of_n) == (True, True, 1000, 16)
    assert paper.eval_temperature == 1.0 and paper.loss_normalization == "sample"
    assert RISEArgs(format_reward=-1.0).env_kwargs_dict == {"format_reward": -1.0}
    assert RISEArgs(env_kwargs='{"data_seed": 2}').eval_env_kwargs_dict == {"data_seed": 2, "split": "test"}
    with pytest.raises(ValueError, match="better"):
        RISEArgs(filter="some")
    with pytest.raises(ValueError, match=r"0\.4"):
        RISEArgs(tau=0)
    with pytest.raises(ValueError, match="--max_attempts"):
        RISEArgs(env_kwargs='{"max_attempts": 3}')
    with pytest.raises(ValueError, match="sample"):
        RISEArgs(loss_normalization="mean")


def test_a_bad_evaluation_env_fails_before_training(tmp_path):
    config = RISEArgs(env_id="Mulligan/Echo-v0", output_dir=str(tmp_path / "r"), eval_tasks=2, num_envs=2)
    with pytest.raises(TypeError, match="split"):  # Echo-v0 has no split: the default eval kwargs do not fit
        train_rise(config, improver=EchoOracle())
    assert not (tmp_path / "r" / "iter-0").exists()


def test_one_iteration_trains_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM

    from mulligan.agents.tiny import resolve_model

    config = RISEArgs(
        env_id="Mulligan/Echo-v0", output_dir=str(tmp_path / "rise"), num_tasks=4, max_attempts=2, best_of_n=2,
        max_steps=2, per_device_train_batch_size=4, max_new_tokens=4, num_envs=4, disable_tqdm=True, save_steps=0,
        eval_tasks=2, eval_env_kwargs="{}",
    )  # fmt: skip
    summary = train_rise(config, improver=EchoOracle())
    assert set(summary["eval"]) == {"m1@t1", "m5@t1", "m5@t1_ties", "m1@t5", "m1@t5_ties", "p1@t5"}
    stats = summary["iterations"][0]
    assert stats["rollouts"] == 4 and stats["examples"] >= 4 and stats["global_step"] == 2
    assert 0 <= stats["env/success_rate"] <= 1 and stats["data/success_rate"] > 0  # the oracle's turn-2 answers
    samples = [json.loads(x) for x in (tmp_path / "rise" / "iter-0" / "samples.jsonl").read_text().splitlines()]
    # Turn-1 samples are the tiny learner's own outputs; turn-2 samples are the oracle's answers.
    assert any(s["turn"] == 2 and s["success"] for s in samples)
    before = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(summary["model_dir"]).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Resuming finds the finished iteration and does not train it again.
    again = train_rise(replace(config, resume_from_checkpoint="auto", eval_tasks=0), improver=EchoOracle())
    assert again["iterations"] == summary["iterations"]


def test_one_shot_and_history_removed_options_reach_the_training_samples(tmp_path):
    from mulligan.agents.one_shot import BUILTIN_DEMO, one_shot_messages
    from mulligan.training.trajectory import load_trajectories

    config = RISEArgs(
        env_id="Mulligan/Echo-v0", output_dir=str(tmp_path / "rise"), num_tasks=3, max_attempts=2, best_of_n=2,
        max_steps=1, per_device_train_batch_size=4, max_new_tokens=4, num_envs=3, disable_tqdm=True, save_steps=0,
        one_shot="builtin", without_history=True, remove_duplicates=False, max_repeats=0,
    )  # fmt: skip
    train_rise(config, improver=EchoOracle())
    iteration = tmp_path / "rise" / "iter-0"
    samples = [json.loads(x) for x in (iteration / "samples.jsonl").read_text().splitlines()]
    rollouts = load_trajectories(str(iteration / "rollouts.jsonl"))
    assert {s["turn"] for s in samples} == {1, 2}
    for sample in samples:
        rollout = rollouts[sample["rollout"]]
        # The opening, then the attempt: no earlier attempt or feedback, even at turn 2.
        assert sample["messages"][:3] == one_shot_messages(BUILTIN_DEMO, rollout.messages[0]["content"])
        assert len(sample["messages"]) == 4
        if sample["turn"] == 1:  # the learner's own turn: exactly what it was shown
            assert sample["messages"] == rollout.training_messages(0)
    with pytest.raises(ValueError, match="system_prompt"):
        RISEArgs(one_shot="builtin", system_prompt="Be brief.")
    with pytest.raises(FileNotFoundError):
        RISEArgs(one_shot=str(tmp_path / "missing.json"))


def test_a_tools_mode_rollout_trains_with_the_tools_its_model_saw():
    from trl.chat_template_utils import qwen2_5_chat_template

    from mulligan.agents.tiny import build_tiny_tokenizer
    from mulligan.envs.registration import env_tools
    from mulligan.envs.tools import format_tool_call

    calls = [format_tool_call("calculate", {"expression": "1 + 1"}), format_tool_call("finish", {"answer": "2"})]
    [rollout] = collect_episodes(
        "Mulligan/MathReAct-v0", ScriptedAgent(calls), 1, env_kwargs={"action_format": "tools"}, progress=False
    )
    samples = rise_samples([rollout])
    assert samples and all(s["tools"] == env_tools("Mulligan/MathReAct-v0") for s in samples)
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template
    text = tokenizer.decode(rwr_dataset(tokenizer, samples[:1], tau=0.4)[0]["input_ids"])
    assert "<tools>" in text and '"name": "calculate"' in text


@pytest.mark.parametrize("flag", [{"prefill_response": True}, {"num_beams": 5}])
def test_sampling_flags_rise_cannot_use_are_refused(flag):
    with pytest.raises(ValueError, match="do not apply to RISE"):
        RISEArgs(**flag)
