"""PPO: GAE, the loss and the KL controller against hand-computed values, masks and reward placement,
presets, envs built once, checkpoints, logging, and learning on Echo."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from rl_helpers import DROPS_PAST_THINKING, ECHO_KWARGS, SMALL, echo_success, warm_start

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.testing import ScriptedAgent
from mulligan.agents.tiny import build_tiny_model, save_tiny_model
from mulligan.training.chat import tokenize_conversation
from mulligan.training.ppo import (
    PAPER_PRESET,
    KLController,
    PPOArgs,
    PPOTrainer,
    compute_gae,
    episodes_to_batch,
    explained_variance,
    latest_checkpoint,
    main,
    parse_report_to,
    ppo_loss,
)
from mulligan.training.rollout import EnvPool, collect_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- GAE, loss, KL
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


def test_gae_over_all_tokens_matches_legacy_trl_by_hand():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.2, 0.9, 0.1]])
    mask = torch.tensor([[1, 1, 0, 1]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8, mode="all_tokens")
    # Legacy TRL: values and rewards zeroed at the env token (position 2), recursion over every position.
    # A3 = 1.9; A2 = (0 + 0.9*0.1 - 0) + 0.72*1.9 = 1.458 (masked out afterwards);
    # A1 = (1 + 0.9*0 - 0.2) + 0.72*1.458 = 1.84976 (no bootstrap across the env token);
    # A0 = (0 + 0.9*0.2 - 0.5) + 0.72*1.84976 = 1.0118272.
    expected = torch.tensor([[1.0118272, 1.84976, 0.0, 1.9]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values * mask) * mask)
    with pytest.raises(ValueError, match="mode"):
        compute_gae(rewards, values, mask, gamma=0.9, lam=0.8, mode="some_tokens")


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
        logprobs,
        old,
        advantages,
        values=torch.tensor([[1.0, 0.0, 9.0]]),
        old_values=torch.tensor([[0.5, 0.0, 0.0]]),
        returns=torch.tensor([[0.0, 1.0, 0.0]]),
        mask=mask,
        clip_range=0.2,
        clip_range_value=0.2,
        value_coef=0.5,
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
    terms = ppo_loss(
        logprobs,
        torch.zeros(1, 1),
        torch.ones(1, 1),
        values=torch.zeros(1, 1),
        old_values=torch.zeros(1, 1),
        returns=torch.zeros(1, 1),
        mask=torch.ones(1, 1),
    )
    terms.loss.backward()
    assert logprobs.grad.item() == 0.0  # ratio 1.5 > 1.2 with a positive advantage: clipped


def test_explained_variance():
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones_like(target)
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target, mask) == pytest.approx(0.0)


def test_adaptive_kl_controller_follows_legacy_trl_by_hand():
    adaptive = KLController(0.075, adaptive=True, target=6.0, horizon=10_000)
    adaptive.update(kl=12.0, num_episodes=32)  # error clipped to +0.2: x (1 + 0.2 * 32 / 10000)
    assert adaptive.value == pytest.approx(0.075 * 1.00064)
    adaptive.update(kl=6.6, num_episodes=32)  # error 0.1: x (1 + 0.1 * 32 / 10000)
    assert adaptive.value == pytest.approx(0.075 * 1.00064 * 1.00032)
    adaptive.update(kl=0.0, num_episodes=100)  # error clipped to -0.2: x (1 - 0.2 * 100 / 10000)
    assert adaptive.value == pytest.approx(0.075 * 1.00064 * 1.00032 * 0.998)
    fixed = KLController(0.075)
    fixed.update(kl=100.0, num_episodes=32)
    assert fixed.value == 0.075


# ----------------------------------------------------------------------------------- masks and rewards
def test_episode_batch_learns_exactly_the_model_tokens_and_places_rewards():
    _, tokenizer = build_tiny_model(SMALL)
    (trajectory,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["wrong", "river"]),
        1,
        env_kwargs={"max_attempts": 2, "vocabulary": ["river"]},
        task_indices=[1],
        progress=False,
    )
    assert trajectory.task["target"] == "river" and trajectory.success and len(trajectory.turns) == 2
    batch = episodes_to_batch([trajectory], tokenizer)
    ids, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    env_side = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert learned == "wrong<|im_end|>river<|im_end|>"
    # Everything else is env text: the rendering up to the last answer, with the two answers cut out.
    rendered = tokenize_conversation(tokenizer, trajectory.messages).text
    rendered = rendered[: rendered.rindex("<|im_end|>") + len("<|im_end|>")]  # the sequence ends with the model
    expected_env = rendered.replace("assistant\nwrong<|im_end|>", "assistant\n").replace(
        "assistant\nriver<|im_end|>", "assistant\n"
    )
    assert env_side == expected_env and "Please try again" in env_side
    reward_positions = batch.env_rewards[0].nonzero().flatten().tolist()
    # The success reward sits on the last token of the second answer (its end-of-turn token).
    assert len(reward_positions) == 1 and batch.env_rewards[0, reward_positions[0]] == 1.0
    assert tokenizer.decode([ids[reward_positions[0]]]) == "<|im_end|>"
    assert mask[reward_positions[0]] == 1 and sum(mask[reward_positions[0] + 1 :]) == 0


def _segment_ends(mask: list[int]) -> list[int]:
    """Last position of each run of 1s (each attempt's last model token)."""
    return [t for t, m in enumerate(mask) if m and (t + 1 == len(mask) or not mask[t + 1])]


def test_reward_placement_per_attempt_and_on_the_last_token_by_hand():
    _, tokenizer = build_tiny_model(SMALL)
    # Target "river"; partial credit is the matched prefix: "r" 1/5 = 0.2, "x" 0, "rive" 4/5 = 0.8.
    # With the "max" objective the running best is 0.2, 0.2, 0.8 and the session's return 0.8.
    (session,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["r", "x", "rive"]),
        1,
        env_kwargs={"max_attempts": 3, "retry_reward": "max", "vocabulary": ["river"], "partial_credit": True},
        task_indices=[0],
        progress=False,
    )
    assert [t.info["attempt_return"] for t in session.turns] == pytest.approx([0.2, 0.0, 0.8])
    assert session.episode_return == pytest.approx(0.8)

    per_attempt = episodes_to_batch([session], tokenizer, reward_placement="per_attempt")
    mask = per_attempt.action_mask[0].tolist()
    ends = _segment_ends(mask)
    assert len(ends) == 3
    # Each attempt is paid the increment of the running best on its own last token: 0.2, 0, 0.6.
    assert per_attempt.env_rewards[0, ends].tolist() == pytest.approx([0.2, 0.0, 0.6])
    assert per_attempt.env_rewards[0].sum().item() == pytest.approx(0.8)

    last = episodes_to_batch([session], tokenizer, reward_placement="last_token")
    # CORGI: the whole best-of-session score on the session's last model token, nothing elsewhere.
    assert last.env_rewards[0, ends].tolist() == pytest.approx([0.0, 0.0, 0.8])
    assert last.env_rewards[0].abs().sum().item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="reward_placement"):
        episodes_to_batch([session], tokenizer, reward_placement="first_token")


def test_episodes_a_template_cannot_render_as_one_sequence_are_refused():
    _, tokenizer = build_tiny_model(SMALL)
    tokenizer.chat_template = DROPS_PAST_THINKING
    (session,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["<think>hmm</think>wrong", "river"]),
        1,
        env_kwargs={"max_attempts": 2, "vocabulary": ["river"]},
        task_indices=[1],
        progress=False,
    )
    with pytest.raises(ValueError, match="append-only"):
        episodes_to_batch([session], tokenizer)
    (single,) = collect_episodes(
        "Mulligan/Echo-v0",
        ScriptedAgent(["<think>hmm</think>river"]),
        1,
        env_kwargs={"vocabulary": ["river"]},
        progress=False,
    )
    assert episodes_to_batch([single], tokenizer).action_mask.sum() > 0  # one turn is always one sequence


# ----------------------------------------------------------------------------------- configuration
def test_args_reject_bad_values_with_the_fix():
    with pytest.raises(ValueError, match="must divide episodes_per_step"):
        PPOArgs(episodes_per_step=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        PPOArgs(mini_batch_size=8, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="JSON object"):
        PPOArgs(env_kwargs="{partial_credit: true}")
    with pytest.raises(ValueError, match="report_to"):
        PPOArgs(report_to="wandb-ish")
    with pytest.raises(ValueError, match="reward_placement"):
        PPOArgs(reward_placement="first_token")
    with pytest.raises(ValueError, match="preset"):
        PPOArgs(preset="huge")


def test_report_to_follows_trl_convention():
    import importlib.util

    assert parse_report_to("none") == [] and parse_report_to("") == []
    assert parse_report_to("tensorboard") == ["tensorboard"]
    installed = [n for n in ("wandb", "trackio") if importlib.util.find_spec(n) is not None]
    assert parse_report_to("all") == ["tensorboard", *installed]  # TRL's "all": what is installed
    assert parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="tensorboard, wandb, trackio"):
        parse_report_to("tensorboard,comet_ml")


def test_ppo_reports_to_wandb_offline_and_trackio_locally(tmp_path, monkeypatch):
    """The same report_to options as TRL's trainers: W&B (offline, no network) and trackio (local files)."""
    import importlib.util
    import uuid

    if importlib.util.find_spec("wandb") is None or importlib.util.find_spec("trackio") is None:
        pytest.skip("wandb and trackio are not installed (the dev extra installs them)")
    project = f"mulligan-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", project)
    monkeypatch.setenv("TRACKIO_PROJECT", project)
    model, tokenizer = build_tiny_model(SMALL)
    args = PPOArgs(output_dir=str(tmp_path / "run"), total_steps=1, episodes_per_step=4, mini_batch_size=4,
                   max_new_tokens=4, disable_tqdm=True, env_kwargs=json.dumps(ECHO_KWARGS),
                   report_to="wandb,trackio", logging_steps=1)  # fmt: skip
    with PPOTrainer(args, model, tokenizer) as trainer:
        trainer.train()
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"objective/kl" in run_file.read_bytes()
    import trackio.utils  # where trackio keeps its local runs (TRACKIO_DIR, read once at import)

    stored = [p for p in Path(trackio.utils.TRACKIO_DIR).rglob(f"*{project}*") if p.is_file()]
    try:
        assert stored and b"objective/kl" in b"".join(p.read_bytes() for p in stored)
    finally:
        for path in stored:
            path.unlink()


def test_presets_tiny_and_paper_and_explicit_values_win():
    tiny = PPOArgs()
    assert (tiny.learning_rate, tiny.episodes_per_step, tiny.use_lora, tiny.max_new_tokens) == (1e-5, 16, False, 64)
    assert (tiny.reward_placement, tiny.gae_mode, tiny.kl_controller) == ("per_attempt", "model_tokens", "fixed")
    paper = PPOArgs(preset="paper")
    for name, value in PAPER_PRESET.items():
        assert getattr(paper, name) == value, name
    assert (paper.kl_coef, paper.gamma, paper.lam, paper.clip_range) == (0.075, 1.0, 0.95, 0.2)
    mine = main_args(["--preset", "paper", "--learning_rate", "3e-6", "--use_lora", "false"])
    assert mine.learning_rate == 3e-6 and mine.use_lora is False and mine.ppo_epochs == 4


def main_args(argv):
    from mulligan.training.args import parse_args

    return parse_args(PPOArgs, argv, prog="test")


# ----------------------------------------------------------------------------------- the trainer
def test_ppo_builds_its_envs_once_and_reuses_them(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=2,
        episodes_per_step=4,
        mini_batch_size=4,
        num_envs=4,
        max_new_tokens=4,
        disable_tqdm=True,
        env_kwargs=json.dumps(ECHO_KWARGS),
    )
    with EnvPool("Mulligan/Echo-v0", 4, ECHO_KWARGS) as pool:
        envs = list(pool.envs)
        trainer = PPOTrainer(args, model, tokenizer, env=pool)
        trainer.train()
        trainer.close()  # a pool passed in stays the caller's
        assert pool.envs == envs and all(env.unwrapped.task_index is not None for env in envs)
    # CORGI's placement and legacy GAE on sessions with retries: the same env reuse.
    paper_like = dataclasses.replace(
        args, total_steps=1, max_attempts=2, reward_placement="last_token", gae_mode="all_tokens"
    )
    owned = PPOTrainer(paper_like, *build_tiny_model(SMALL))
    built = list(owned.env.envs)
    assert owned.env.is_multi_turn
    for _ in range(2):
        assert math.isfinite(owned.train_step()["loss/value_avg"])
    assert owned.env.envs == built  # the same env objects serve every iteration
    owned.close()
    assert owned.env.envs == []


def test_ppo_steps_checkpoints_resumes_and_logs_trl_names(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=2,
        episodes_per_step=4,
        mini_batch_size=2,
        gradient_accumulation_steps=2,
        max_new_tokens=4,
        disable_tqdm=True,
        learning_rate=1e-3,
        kl_controller="adaptive",
        env_kwargs=json.dumps(ECHO_KWARGS),
        save_steps=1,
        logging_steps=1,
        save_total_limit=2,
    )
    with PPOTrainer(args, model, tokenizer) as trainer:
        history = trainer.train()
    assert len(history) == 2
    for key in (
        "objective/kl",
        "objective/kl_coef",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/explained_variance",
        "env/success_rate",
        "objective/scores",
    ):
        assert key in history[-1], key
    assert history[1]["objective/kl_coef"] != history[0]["objective/kl_coef"]  # the adaptive controller moved
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (tmp_path / "config.json").exists() and (tmp_path / "value_head.pt").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2

    resumed = PPOTrainer(
        dataclasses.replace(args, total_steps=3, resume_from_checkpoint="auto"), *build_tiny_model(SMALL)
    )
    assert resumed.step == 2 and len(resumed.history) == 2
    assert resumed.kl_controller.value == pytest.approx(trainer.kl_controller.value)
    for (name, a), b in zip(trainer.policy.named_parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a.detach().cpu(), b.detach().cpu()), name
    resumed.train()
    resumed.close()
    assert resumed.step == 3 and latest_checkpoint(tmp_path).name == "checkpoint-3"
    # save_total_limit=2 keeps the two newest checkpoints.
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


def test_ppo_with_lora_trains_adapters_only_and_reports_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tokenizer = build_tiny_model(SMALL)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=1,
        episodes_per_step=4,
        mini_batch_size=4,
        max_new_tokens=4,
        disable_tqdm=True,
        use_lora=True,
        lora_r=4,
        learning_rate=1e-2,
        env_kwargs=json.dumps(ECHO_KWARGS),
        report_to="tensorboard",
        logging_steps=1,
    )
    with PPOTrainer(args, model, tokenizer) as trainer:
        trainer.train()
    trainable = [n for n, p in trainer.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "value_head" in n for n in trainable)
    merged = trainer.policy.model.get_base_model()
    for name, param in merged.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param.detach(), base[name.replace("base_layer.", "")]), name
    assert (tmp_path / "adapter_config.json").exists()
    (events,) = (tmp_path / "runs").glob("events.out.tfevents*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"objective/kl", "policy/approxkl_avg", "env/success_rate"} <= set(tags)


def test_cli_runs_a_step(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model", SMALL)
    argv = [
        "--model",
        str(model_dir),
        "--output_dir",
        str(tmp_path / "run"),
        "--total_steps",
        "1",
        "--episodes_per_step",
        "2",
        "--mini_batch_size",
        "2",
        "--max_new_tokens",
        "4",
        "--disable_tqdm",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1.0


def test_unknown_env_kwargs_fail_when_the_envs_are_built(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=1,
        episodes_per_step=2,
        mini_batch_size=2,
        disable_tqdm=True,
        env_kwargs='{"no_such_option": 1}',
    )
    with pytest.raises(TypeError):
        PPOTrainer(args, model, tokenizer)


@pytest.mark.slow
def test_ppo_raises_echo_success_rate(tmp_path):
    """From ~25% (a model that answers a random one of four words) PPO learns to answer the target.

    ``python benchmarks/bench_rl.py --learning`` reports the same run.
    """
    model, tokenizer = warm_start()
    before = echo_success(model, tokenizer)
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=15,
        episodes_per_step=16,
        mini_batch_size=8,
        max_new_tokens=4,
        learning_rate=1e-3,
        disable_tqdm=True,
        env_kwargs=json.dumps(ECHO_KWARGS),
    )
    with PPOTrainer(args, model, tokenizer) as trainer:
        trainer.train()
    after = echo_success(model, tokenizer)
    assert before < 0.5, before
    assert after >= 0.8 and after - before >= 0.3, (before, after)


def test_ppo_runs_with_bf16_autocast_gradient_checkpointing_and_lora(tmp_path):
    model, tokenizer = warm_start()  # varied rewards, so the policy gradient is not zero
    args = PPOArgs(
        output_dir=str(tmp_path),
        total_steps=1,
        episodes_per_step=16,
        mini_batch_size=8,
        max_new_tokens=4,
        disable_tqdm=True,
        bf16=True,
        gradient_checkpointing=True,
        use_lora=True,
        lora_r=4,
        learning_rate=1e-2,
        env_kwargs=json.dumps(ECHO_KWARGS),
    )
    with PPOTrainer(args, model, tokenizer) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_B" in n}
        metrics = trainer.train_step()
    assert math.isfinite(metrics["loss/policy_avg"]) and math.isfinite(metrics["loss/value_avg"])
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(value, after[name].detach()) for name, value in before.items())
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())  # fp32 master weights


# ----------------------------------------------------------------------------------- the sampled tokens
def _sampled_trajectory(tokenizer, turns, prefill=None):
    """A trajectory of model turns ``(text, completion_ids, logprobs)``, as the rollout records them."""
    from mulligan.training.trajectory import Trajectory, Turn

    messages = [{"role": "user", "content": "Repeat exactly: river"}]
    recorded = []
    for k, (text, ids, logprobs) in enumerate(turns):
        messages.append({"role": "assistant", "content": (prefill or "") + text})
        recorded.append(Turn(messages[-2]["content"], text, float(k), {}, ids, logprobs, prefill=prefill))
        if k + 1 < len(turns):
            messages.append({"role": "user", "content": "Please try again."})
    return Trajectory("Mulligan/Echo-v0", "e", {}, messages, recorded, True, 1.0, 1.0, True, False)


def test_ppo_learns_the_sampled_token_ids_not_a_retokenisation_of_the_text():
    _, tokenizer = build_tiny_model(SMALL)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    end, stray = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|im_start|>")
    # The model emitted a special token mid-answer: the text ("river") re-tokenises without it.
    first = [*ids("riv"), stray, *ids("er"), end]
    second = [*ids("river"), end]
    trajectory = _sampled_trajectory(
        tokenizer, [("river", first, [-0.5] * len(first)), ("river", second, [-0.25] * len(second))]
    )
    assert [*ids(tokenizer.decode(first, skip_special_tokens=True)), end] != first
    batch = episodes_to_batch([trajectory], tokenizer)
    row, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    assert [t for t, m in zip(row, mask, strict=True) if m] == first + second
    lps = batch.sampled_logprobs[0]
    assert lps[batch.action_mask[0].bool()].tolist() == [-0.5] * len(first) + [-0.25] * len(second)
    assert torch.isnan(lps[~batch.action_mask[0].bool()]).all()
    # per_attempt: each turn's reward on its own last sampled token.
    ends = _segment_ends(mask)
    assert batch.env_rewards[0, ends].tolist() == [0.0, 1.0]


def test_ppo_takes_a_prefilled_primer_as_context():
    _, tokenizer = build_tiny_model(SMALL)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    completion = tokenizer(" sat.", add_special_tokens=False)["input_ids"] + [end]
    trajectory = _sampled_trajectory(tokenizer, [(" sat.", completion, None)], prefill="- Output: The cat")
    batch = episodes_to_batch([trajectory], tokenizer)
    row, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    assert [t for t, m in zip(row, mask, strict=True) if m] == completion
    context = tokenizer.decode([t for t, m in zip(row, mask, strict=True) if not m])
    assert context.endswith("<|im_start|>assistant\n- Output: The cat")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM installed: see test_vllm.py")
def test_use_vllm_without_vllm_says_how_to_install_it(tmp_path):
    model, tokenizer = build_tiny_model(SMALL)
    args = PPOArgs(output_dir=str(tmp_path), use_vllm=True, episodes_per_step=2, mini_batch_size=2, num_envs=1)
    with pytest.raises(ValueError, match=r"scripts/install\.sh vllm"):
        PPOTrainer(args, model, tokenizer)
    assert not any(tmp_path.glob("vllm_start_*"))  # the engine's copy of the weights is not left behind
    with pytest.raises(ValueError, match="num_beams"):
        PPOArgs(num_beams=4)
