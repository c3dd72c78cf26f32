"""GRPO through TRL: env-scored rewards, episode samples with env_mask, and learning on Echo."""

from __future__ import annotations

import json

import gymnasium
import pytest
from rl_helpers import DROPS_PAST_THINKING, ECHO_KWARGS, SMALL, echo_success, warm_start

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.testing import ScriptedAgent
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model, save_tiny_model
from mulligan.training.grpo import (
    GRPOArgs,
    build_grpo_trainer,
    build_prompt_dataset,
    episode_sample,
    main,
    prompt_key,
    sampled_episode_sample,
)
from mulligan.training.rewards import EnvReward, EpisodeReturnReward, completion_text
from mulligan.training.rollout import EnvPool, collect_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- data and rewards
def test_prompt_dataset_rows_are_env_resets():
    with EnvPool("Mulligan/Echo-v0", 1) as pool:
        dataset = build_prompt_dataset(pool, [3, 7], system_prompt="Be exact.")
    env = gymnasium.make("Mulligan/Echo-v0")
    for row in dataset:
        observation, info = env.reset(options={"task_index": row["task_index"]})
        assert row["prompt"] == [{"role": "system", "content": "Be exact."}, {"role": "user", "content": observation}]
        assert row["task_id"] == info["task_id"]


def test_env_reward_scores_with_the_env_by_index_or_record():
    env = gymnasium.make("Mulligan/Echo-v0")
    targets = [env.reset(options={"task_index": i})[1]["target"] for i in range(3)]
    reward = EnvReward("Mulligan/Echo-v0")
    completions = [
        [{"role": "assistant", "content": targets[0]}],
        [{"role": "assistant", "content": "nope"}],
        targets[2] + "  ",
    ]
    assert reward(prompts=None, completions=completions, task_index=[0, 1, 2]) == [1.0, 0.0, 1.0]
    records = [json.dumps({"target": "stone"}), {"target": "cloud"}]
    assert reward(completions=["stone", "clou"], task=records) == [1.0, 0.0]
    partial = EnvReward("Mulligan/Echo-v0", {"partial_credit": True}, field="score")
    assert partial(completions=["ston"], task=[{"target": "stone"}]) == [pytest.approx(0.8)]
    with pytest.raises(ValueError, match="task_index"):
        reward(completions=["x"])
    with pytest.raises(ValueError, match="field"):
        EnvReward("Mulligan/Echo-v0", field="vibes")
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"


def test_episode_return_reward_requires_the_rollout_column():
    logged = {}
    reward = EpisodeReturnReward()
    values = reward(
        completions=["a", "b"], episode_return=[0.5, 1], episode_success=[0.0, 1.0], log_metric=logged.__setitem__
    )
    assert values == [0.5, 1.0] and logged == {"env/success_rate": 0.5}
    with pytest.raises(ValueError, match="rollout"):
        reward(completions=["a"])


def test_episode_sample_env_mask_covers_exactly_the_model_tokens():
    _, tokenizer = build_tiny_model(SMALL)
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["first try", "stone"]),
        1,
        env_kwargs={"max_attempts": 3, "vocabulary": ["stone"]},
        task_indices=[0],
        progress=False,
    )
    sample = episode_sample(tokenizer, trajectory.messages)
    assert len(sample.completion_ids) == len(sample.env_mask)
    prompt_text = tokenizer.decode(sample.prompt_ids)
    assert prompt_text == tokenizer.apply_chat_template(
        trajectory.messages[:1], tokenize=False, add_generation_prompt=True
    )
    model_text = tokenizer.decode([t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if m])
    env_text = tokenizer.decode([t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if not m])
    assert model_text == "first try<|im_end|>stone<|im_end|>"
    feedback = trajectory.messages[2]["content"]
    assert env_text == f"\n<|im_start|>user\n{feedback}<|im_end|>\n<|im_start|>assistant\n"
    assert sample.completion_ids[-1] == tokenizer.eos_token_id  # the episode ends on the model's end of turn


def _sampled_episode(tokenizer, model, temperature=1.0):
    from mulligan.agents.hf import HFAgent

    agent = HFAgent(model, tokenizer, temperature=temperature, max_new_tokens=4, seed=0)
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0",
        agent,
        1,
        env_kwargs={"max_attempts": 3, "vocabulary": ["stone"]},
        task_indices=[0],
        progress=False,
    )
    return trajectory


def _learned(sample):
    return [t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if m]


def test_sampled_episode_sample_is_the_sampled_tokens_and_logprobs():
    model, tokenizer = warm_start(steps=40)  # answers a word and ends its turn: its text round-trips
    trajectory = _sampled_episode(tokenizer, model, temperature=0.3)
    assert len(trajectory.turns) == 3  # it never says "stone": every attempt fails
    sample = sampled_episode_sample(tokenizer, trajectory)
    assert len(sample.completion_ids) == len(sample.env_mask) == len(sample.logprobs)
    # The learned tokens are exactly the sampled ones, in order, with the sampler's log-probs.
    assert _learned(sample) == [t for turn in trajectory.turns for t in turn.completion_ids]
    learned_logprobs = [lp for lp, m in zip(sample.logprobs, sample.env_mask, strict=True) if m]
    assert learned_logprobs == pytest.approx([lp for turn in trajectory.turns for lp in turn.logprobs])
    assert all(lp == 0.0 for lp, m in zip(sample.logprobs, sample.env_mask, strict=True) if not m)
    # Exact: before each turn the sample is the prompt that turn was sampled from.
    assert sample.exact
    sequence = sample.prompt_ids + sample.completion_ids
    end = 0
    for t, turn in enumerate(trajectory.turns):
        prompt = trajectory.sampled_tokens(tokenizer, t).input_ids[: -len(turn.completion_ids)]
        assert len(prompt) >= end and sequence[: len(prompt)] == prompt
        end = len(prompt) + len(turn.completion_ids)
        assert sequence[len(prompt) : end] == turn.completion_ids
    assert end == len(sequence)


def test_sampled_tokens_survive_text_that_does_not_round_trip():
    model, tokenizer = build_tiny_model(SMALL)  # untrained: it samples byte tokens that are not UTF-8
    trajectory = _sampled_episode(tokenizer, model)
    sampled = [t for turn in trajectory.turns for t in turn.completion_ids]
    # Re-tokenizing the text loses them (decoding replaced them with U+FFFD)...
    assert _learned(episode_sample(tokenizer, trajectory.conversation())) != sampled
    # ...the sampled sample learns them as generated, and says that a later prompt differed.
    sample = sampled_episode_sample(tokenizer, trajectory)
    assert _learned(sample) == sampled and not sample.exact


def test_sampled_episode_sample_keeps_tokens_past_a_stop_string_and_reports_the_mismatch():
    _, tokenizer = build_tiny_model(SMALL)
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["first try", "stone"]),
        1,
        env_kwargs={"max_attempts": 3, "vocabulary": ["stone"]},
        task_indices=[0],
        progress=False,
    )
    with pytest.raises(ValueError, match="completion_ids"):
        sampled_episode_sample(tokenizer, trajectory)  # a scripted agent samples no tokens
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    first, second = trajectory.turns
    # Turn 1 hit the token limit (no end-of-turn token): the template closes it, still exact.
    first.completion_ids, first.logprobs = encode("first try"), [-1.0] * len(encode("first try"))
    second.completion_ids, second.logprobs = encode("stone<|im_end|>"), [-0.5] * len(encode("stone<|im_end|>"))
    sample = sampled_episode_sample(tokenizer, trajectory)
    assert sample.exact
    rendered = tokenizer.apply_chat_template(trajectory.messages, tokenize=False)
    assert tokenizer.decode(sample.prompt_ids + sample.completion_ids) + "\n" == rendered
    # Turn 1 generated past the text the env received (a stop string): those tokens stay learned
    # as sampled, the next prompt follows from where the renderings part, and the sample says so.
    first.completion_ids = encode("first try\nObservation:")
    first.logprobs = [-1.0] * len(first.completion_ids)
    sample = sampled_episode_sample(tokenizer, trajectory)
    assert not sample.exact
    assert _learned(sample) == first.completion_ids + second.completion_ids
    assert sample.logprobs.count(-1.0) == len(first.completion_ids)


# ----------------------------------------------------------------------------------- trainers
def test_config_rejects_bad_values_with_the_fix():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOArgs(per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match=">= 2"):
        GRPOArgs(num_generations=1)
    with pytest.raises(ValueError, match="rollout"):
        GRPOArgs(rollout="sometimes")
    with pytest.raises(ValueError, match="JSON object"):
        GRPOArgs(trl_args="[1]")
    with pytest.raises(ValueError, match="report_to"):
        GRPOArgs(report_to="")


def test_grpo_multi_turn_episodes_reach_trl_with_env_mask(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    config = GRPOArgs(
        output_dir=str(tmp_path),
        max_steps=2,
        num_train_tasks=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_new_tokens=4,
        max_attempts=2,
        disable_tqdm=True,
        env_kwargs=json.dumps(ECHO_KWARGS),
        num_envs=4,
    )
    trainer = build_grpo_trainer(config, model, tokenizer)
    assert trainer.rollout_func is not None
    rollout = trainer.rollout_func
    envs = list(rollout.env.envs)  # built once, reused by every rollout call
    assert len(envs) == 4
    prompts = list(trainer.train_dataset["prompt"][:2])
    output = rollout([prompts[0], prompts[0], prompts[1], prompts[1]], trainer)
    assert set(output) >= {"prompt_ids", "completion_ids", "env_mask", "episode_return", "episode_success"}
    for ids, mask in zip(output["completion_ids"], output["env_mask"], strict=True):
        assert len(ids) == len(mask) and mask[0] == 1 and mask[-1] == 1
    assert output["logprobs"] is None  # transformers sampled: TRL recomputes (vLLM's are tested in test_vllm.py)
    # Each prompt maps back to a task whose reset shows that prompt (identical prompts share a task).
    env = gymnasium.make("Mulligan/Echo-v0", **ECHO_KWARGS)
    for prompt in prompts:
        assert env.reset(options={"task_index": rollout.task_index(prompt)})[0] == prompt[-1]["content"]
    trainer.train()
    buffered = trainer._buffered_inputs[0]
    assert "tool_mask" in buffered  # TRL turned env_mask into its loss mask
    assert trainer.state.global_step == 2
    with pytest.raises(ValueError, match="not in its training dataset"):
        rollout.task_index([{"role": "user", "content": "unknown"}])
    assert prompt_key(prompts[0]) in rollout.prompt_tasks
    assert rollout.env.envs == envs
    rollout.close()


def test_grpo_cli_runs_and_resumes(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model", SMALL)
    args = [
        "--model",
        str(model_dir),
        "--output_dir",
        str(tmp_path / "run"),
        "--max_steps",
        "1",
        "--num_train_tasks",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "2",
        "--max_new_tokens",
        "4",
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
        "--disable_tqdm",
    ]
    assert main(args) == 0
    assert (tmp_path / "run" / "checkpoint-1").is_dir()
    # Resume to step 2 under another seed: the step-1 record comes from the checkpoint (a fresh run
    # with seed 5 would sample, and log, a different first step).
    more = [("2" if previous == "--max_steps" else arg) for previous, arg in zip(["", *args], args, strict=False)]
    assert main([*more, "--seed", "5", "--resume_from_checkpoint", "auto"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    first = json.loads((tmp_path / "run" / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    second = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert second[0] == first[0] and second[1]["step"] == 2


@pytest.mark.slow
def test_grpo_raises_echo_success_rate(tmp_path):
    """From ~25% (a model that answers a random one of four words) GRPO learns to answer the target.

    ``python benchmarks/bench_rl.py --learning`` reports the same run.
    """
    model, tokenizer = warm_start()
    before = echo_success(model, tokenizer)
    config = GRPOArgs(
        output_dir=str(tmp_path),
        max_steps=20,
        num_train_tasks=256,
        per_device_train_batch_size=16,
        num_generations=8,
        max_new_tokens=4,
        learning_rate=3e-3,
        disable_tqdm=True,
        env_kwargs=json.dumps(ECHO_KWARGS),
        trl_args='{"lr_scheduler_type": "constant"}',
    )
    trainer = build_grpo_trainer(config, model, tokenizer)
    trainer.train()
    after = echo_success(trainer.model, tokenizer)
    assert before < 0.5, before
    assert after >= 0.8 and after - before >= 0.3, (before, after)


def test_vllm_agent_needs_a_colocated_vllm_trainer_and_cuts_at_stops(tmp_path):
    from mulligan.agents.vllm import TrainerVLLMAgent, cut_at_stop

    assert cut_at_stop("search[x]\nObservation: y", ["\nObservation:"]) == "search[x]"
    assert cut_at_stop("a b c", ["\nUser:", " c", " b"]) == "a"
    assert cut_at_stop("plain", []) == "plain"
    model, tokenizer = build_tiny_model(SMALL)
    config = GRPOArgs(
        output_dir=str(tmp_path),
        num_train_tasks=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_new_tokens=4,
        disable_tqdm=True,
    )
    trainer = build_grpo_trainer(config, model, tokenizer)  # single-turn Echo, generating with transformers
    with pytest.raises(ValueError, match="use_vllm"):
        TrainerVLLMAgent(trainer)


def test_episode_sample_refuses_a_template_that_rewrites_past_turns():
    _, tokenizer = build_tiny_model(SMALL)
    tokenizer.chat_template = DROPS_PAST_THINKING
    messages = [
        {"role": "user", "content": "Repeat exactly: river"},
        {"role": "assistant", "content": "<think>hmm</think>rive"},
        {"role": "user", "content": "Try again."},
        {"role": "assistant", "content": "river"},
    ]
    with pytest.raises(ValueError, match="append-only"):
        episode_sample(tokenizer, messages)
    assert episode_sample(tokenizer, messages[:2]).env_mask[-1] == 1


def test_grpo_reports_to_tensorboard(tmp_path):
    """``--report_to tensorboard`` writes event files with the trainer's metrics (TRL's integration)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model_dir = save_tiny_model(tmp_path / "model", SMALL)
    argv = ["--model", str(model_dir), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
            "--num_train_tasks", "4", "--per_device_train_batch_size", "4", "--num_generations", "2",
            "--max_new_tokens", "4", "--logging_steps", "1", "--save_steps", "0", "--disable_tqdm",
            "--report_to", "tensorboard"]  # fmt: skip
    assert main(argv) == 0
    events = list((tmp_path / "run").rglob("events.out.tfevents*"))
    assert events
    tags = set().union(*(EventAccumulator(str(e)).Reload().Tags()["scalars"] for e in events))
    assert any("reward" in tag for tag in tags) and any("loss" in tag for tag in tags), tags


def test_grpo_episodes_can_prefill_corgis_primer_and_learn_only_the_continuations(tmp_path):
    with pytest.raises(ValueError, match="rollout episode"):
        GRPOArgs(prefill_response=True, rollout="single_turn")
    with pytest.raises(ValueError, match="num_beams"):
        GRPOArgs(num_beams=2)
    model, tokenizer = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "max_position_embeddings": 4096}))
    config = GRPOArgs(
        output_dir=str(tmp_path), env_id="Mulligan/Constraints-v0", max_steps=1, num_train_tasks=2,
        per_device_train_batch_size=2, num_generations=2, max_new_tokens=4, max_attempts=2, num_envs=2,
        env_kwargs=json.dumps({"families": ["corgi:num_planning"], "primed": True}), prefill_response=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = build_grpo_trainer(config, model, tokenizer)
    rollout = trainer.rollout_func
    prompt = trainer.train_dataset["prompt"][0]
    output = rollout([prompt, prompt], trainer)
    env = gymnasium.make("Mulligan/Constraints-v0", families=["corgi:num_planning"])
    env.reset(options={"task_index": rollout.task_index(prompt)})
    primer = env.unwrapped.task["primer"]
    for prompt_ids, ids, mask in zip(output["prompt_ids"], output["completion_ids"], output["env_mask"], strict=True):
        # The first attempt's primer ends the prompt; every later attempt's sits in the env's tokens.
        assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n" + primer)
        starts = [t for t, m in enumerate(mask) if m and (t == 0 or not mask[t - 1])]
        for start in starts[1:]:
            assert tokenizer.decode(prompt_ids + ids[:start]).endswith("<|im_start|>assistant\n" + primer)
    assert max(len(m) - sum(m) for m in output["env_mask"]) > 0  # an untrained model's first attempt fails: retried
    rollout.close()
