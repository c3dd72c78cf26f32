"""PPO: GAE and the loss against hand-computed values, masks, checkpoints, and learning on Echo."""

from __future__ import annotations

import json
import math

import pytest
import torch
from rl_helpers import ECHO_KWARGS, SMALL, ScriptedAgent, warm_start

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.tiny import build_tiny_model, save_tiny_model
from mulligan.training.ppo import (
    PPOConfig,
    PPOTrainer,
    compute_gae,
    episodes_to_batch,
    evaluate_policy,
    explained_variance,
    latest_checkpoint,
    main,
    ppo_loss,
)
from mulligan.training.rollout import collect_episodes
from mulligan.training.tokens import tokenize_conversation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- GAE and loss
def test_gae_matches_hand_computation_and_skips_env_tokens():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.2, 0.9, 0.1]])
    mask = torch.tensor([[1, 1, 0, 1]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # By hand over the model tokens (positions 0, 1, 3):
    # A3 = 2 - 0.1 = 1.9; A1 = (1 + 0.9*0.1 - 0.2) + 0.72*1.9 = 2.258; A0 = (0.9*0.2 - 0.5) + 0.72*2.258.
    expected = torch.tensor([[-0.32 + 0.72 * 2.258, 2.258, 0.0, 1.9]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_gae_is_unchanged_by_interleaved_env_tokens():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(2, 5, generator=generator), torch.rand(2, 5, generator=generator)
    compact, _ = compute_gae(rewards, values, torch.ones(2, 5), gamma=0.95, lam=0.9)
    # Put env tokens (with junk rewards and values) between the model tokens.
    spread_rewards, spread_values = torch.rand(2, 9, generator=generator), torch.rand(2, 9, generator=generator)
    model_positions = [0, 2, 3, 6, 8]
    spread_rewards[:, model_positions], spread_values[:, model_positions] = rewards, values
    mask = torch.zeros(2, 9)
    mask[:, model_positions] = 1
    spread, _ = compute_gae(spread_rewards, spread_values, mask, gamma=0.95, lam=0.9)
    torch.testing.assert_close(spread[:, model_positions], compact)
    assert spread[:, [1, 4, 5, 7]].abs().sum() == 0


def test_ppo_loss_matches_hand_computation():
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5), 5.0]])
    old = torch.zeros(1, 3)
    advantages = torch.tensor([[1.0, 1.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is an env token: it must not count
    terms = ppo_loss(
        logprobs, old, advantages, values=torch.tensor([[1.0, 0.0, 9.0]]), old_values=torch.tensor([[0.5, 0.0, 0.0]]),
        returns=torch.tensor([[0.0, 1.0, 0.0]]), mask=mask, clip_range=0.2, clip_range_value=0.2, value_coef=0.5,
    )
    # Policy: max(-1.5, -1.2) = -1.2 and max(-0.5, -0.8) = -0.5, mean -0.85.
    assert terms.policy_loss.item() == pytest.approx(-0.85)
    # Value: max(1, 0.49) = 1 and max(1, 1) = 1; halved mean 0.5.
    assert terms.value_loss.item() == pytest.approx(0.5)
    assert terms.loss.item() == pytest.approx(-0.85 + 0.5 * 0.5)
    assert terms.clip_fraction.item() == pytest.approx(1.0)
    expected_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2
    assert terms.approx_kl.item() == pytest.approx(expected_kl)


def test_ppo_loss_gradient_vanishes_outside_the_clip_region():
    logprobs = torch.tensor([[math.log(1.5)]], requires_grad=True)
    terms = ppo_loss(logprobs, torch.zeros(1, 1), torch.ones(1, 1), values=torch.zeros(1, 1),
                     old_values=torch.zeros(1, 1), returns=torch.zeros(1, 1), mask=torch.ones(1, 1))
    terms.loss.backward()
    assert logprobs.grad.item() == 0.0  # ratio 1.5 > 1.2 with a positive advantage: clipped


def test_explained_variance():
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones_like(target)
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target, mask) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------- masks
def test_episode_batch_learns_exactly_the_model_tokens_and_places_rewards():
    _, tokenizer = build_tiny_model(SMALL)
    agent = ScriptedAgent(["wrong", "river"])
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0", agent, 1, env_kwargs={"max_attempts": 2, "vocabulary": ["river"]}, task_indices=[1],
        progress=False,
    )
    assert trajectory.task["target"] == "river" and trajectory.success and len(trajectory.turns) == 2
    batch = episodes_to_batch([trajectory], tokenizer)
    ids, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    env_side = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert learned == "wrong<|im_end|>river<|im_end|>"
    # Everything else is env text: the rendering with the two answers cut out of their turns.
    rendered = tokenize_conversation(tokenizer, trajectory.messages).text
    expected_env = rendered.replace("assistant\nwrong<|im_end|>", "assistant\n").replace(
        "assistant\nriver<|im_end|>", "assistant\n")
    assert env_side == expected_env and "Please try again" in env_side
    reward_positions = batch.env_rewards[0].nonzero().flatten().tolist()
    # The success reward sits on the last token of the second answer (its end-of-turn token).
    assert len(reward_positions) == 1 and batch.env_rewards[0, reward_positions[0]] == 1.0
    assert tokenizer.decode([ids[reward_positions[0]]]) == "<|im_end|>"
    assert mask[reward_positions[0]] == 1 and sum(mask[reward_positions[0] + 1:]) == 0


# ----------------------------------------------------------------------------------- the trainer
def test_config_rejects_bad_values_with_the_fix():
    with pytest.raises(ValueError, match="must divide episodes_per_step"):
        PPOConfig(episodes_per_step=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        PPOConfig(mini_batch_size=8, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="JSON object"):
        PPOConfig(env_kwargs="{partial_credit: true}")
    with pytest.raises(ValueError, match="report_to"):
        PPOConfig(report_to="wandb-ish")


def test_ppo_steps_checkpoints_and_resumes(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    config = PPOConfig(output_dir=str(tmp_path), total_steps=2, episodes_per_step=4, mini_batch_size=2,
                       gradient_accumulation_steps=2, max_new_tokens=4, progress=False, learning_rate=1e-3,
                       env_kwargs=json.dumps(ECHO_KWARGS))
    trainer = PPOTrainer(config, model, tokenizer)
    history = trainer.train()
    assert len(history) == 2
    for key in ("approx_kl", "clip_fraction", "explained_variance", "value_loss", "entropy", "policy_loss"):
        assert key in history[-1]
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert (tmp_path / "config.json").exists() and (tmp_path / "value_head.pt").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2

    resumed = PPOTrainer(PPOConfig(**{**config.__dict__, "total_steps": 3, "resume_from_checkpoint": "auto"}),
                         *build_tiny_model(SMALL))
    assert resumed.step == 2 and len(resumed.history) == 2
    for (name, a), b in zip(trainer.policy.named_parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a.detach().cpu(), b.detach().cpu()), name
    resumed.train()
    assert resumed.step == 3 and latest_checkpoint(tmp_path).name == "checkpoint-3"


def test_ppo_with_lora_trains_adapters_only(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = PPOConfig(output_dir=str(tmp_path), total_steps=1, episodes_per_step=4, mini_batch_size=4,
                       max_new_tokens=4, progress=False, use_lora=True, lora_r=4, learning_rate=1e-2,
                       env_kwargs=json.dumps(ECHO_KWARGS), report_to="tensorboard")
    trainer = PPOTrainer(config, model, tokenizer)
    trainer.train()
    trainable = [n for n, p in trainer.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "value_head" in n for n in trainable)
    merged = trainer.policy.model.get_base_model()
    for name, param in merged.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param.detach(), base[name.replace("base_layer.", "")]), name
    assert (tmp_path / "adapter_config.json").exists()
    assert list((tmp_path / "runs").glob("events.out.tfevents*"))


def test_cli_runs_a_step(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model", SMALL)
    code = main(["--model", str(model_dir), "--output_dir", str(tmp_path / "run"), "--total_steps", "1",
                 "--episodes_per_step", "2", "--mini_batch_size", "2", "--max_new_tokens", "4",
                 "--progress", "false"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1.0


def test_ppo_raises_echo_success_rate(tmp_path):
    """From ~25% (a model that answers a random one of four words) PPO learns to answer the target."""
    model, tokenizer = warm_start()
    held_out = range(10_000, 10_064)

    def success():
        return evaluate_policy(model, tokenizer, "Mulligan/Echo-v0", held_out, env_kwargs=ECHO_KWARGS,
                               max_new_tokens=4, temperature=1.0, seed=123)["success_rate"]

    before = success()
    config = PPOConfig(output_dir=str(tmp_path), total_steps=15, episodes_per_step=16, mini_batch_size=8,
                       max_new_tokens=4, learning_rate=1e-3, progress=False, env_kwargs=json.dumps(ECHO_KWARGS))
    trainer = PPOTrainer(config, model, tokenizer)
    trainer.train()
    after = success()
    assert before < 0.5, before
    assert after >= 0.8 and after - before >= 0.3, (before, after)


def test_unknown_env_kwargs_fail_at_rollout(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    config = PPOConfig(output_dir=str(tmp_path), total_steps=1, episodes_per_step=2, mini_batch_size=2,
                       progress=False, env_kwargs='{"no_such_option": 1}')
    with pytest.raises(TypeError):
        PPOTrainer(config, model, tokenizer).train_step()
