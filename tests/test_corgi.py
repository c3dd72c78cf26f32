"""CORGI: sessions with critiques on Constraints-v0, the retry_limit=0 baseline, held-out families."""

from __future__ import annotations

import gymnasium
import pytest
from rl_helpers import SMALL, ScriptedAgent

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.tiny import build_tiny_model
from mulligan.envs.wrappers import RetryWithFeedback
from mulligan.training.corgi import CORGIConfig, main, train_corgi
from mulligan.training.ppo import episodes_to_batch
from mulligan.training.rollout import collect_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_builds_corgi_sessions_and_the_baseline():
    config = CORGIConfig(retry_limit=2, train_families="completion,concepts", eval_families="punctuation")
    env = gymnasium.make(config.env_id, **config.env_options())
    session = next(layer for layer in _layers(env) if isinstance(layer, RetryWithFeedback))
    assert session.max_attempts == 3 and session.reward_mode == "max"
    assert session.feedback_template.startswith("- Feedback:")
    assert config.kl_coef == 0.075
    baseline = CORGIConfig(retry_limit=0, train_families="completion", eval_families="punctuation")
    plain = gymnasium.make(baseline.env_id, **baseline.env_options())
    assert not any(isinstance(layer, RetryWithFeedback) for layer in _layers(plain))
    assert baseline.eval_env_options() == {"families": ["punctuation"]}


def _layers(env):
    while isinstance(env, gymnasium.Wrapper):
        yield env
        env = env.env


def test_config_rejects_overlapping_or_unknown_families():
    with pytest.raises(ValueError, match="held out"):
        CORGIConfig(train_families="completion,concepts", eval_families="concepts")
    with pytest.raises(ValueError, match="subset"):
        CORGIConfig(train_families="completion,haiku")
    with pytest.raises(ValueError, match="retry_limit"):
        CORGIConfig(retry_limit=-1)


def test_training_tasks_come_from_training_families_only():
    config = CORGIConfig(train_families="completion", eval_families="punctuation,change_case")
    train_env = gymnasium.make(config.env_id, **config.env_options()).unwrapped
    eval_env = gymnasium.make(config.env_id, **config.eval_env_options()).unwrapped
    for index in range(20):
        train_ids = train_env.get_task(index)["instruction_id_list"]
        eval_ids = eval_env.get_task(config.eval_task_offset + index)["instruction_id_list"]
        assert all(i.split(":")[0] == "completion" for i in train_ids), train_ids
        assert all(i.split(":")[0] in ("punctuation", "change_case") for i in eval_ids), eval_ids


def test_a_session_is_one_sample_with_every_attempt_learned_and_critiques_masked():
    _, tokenizer = build_tiny_model(SMALL)
    config = CORGIConfig(retry_limit=1, train_families="completion", eval_families="punctuation")
    (session,) = collect_episodes(config.env_id, ScriptedAgent(["one", "two"]), 1,
                                  env_kwargs=config.env_options(), task_indices=[0], progress=False)
    assert len(session.turns) == 2 and session.messages[2]["content"].startswith("- Feedback:")
    batch = episodes_to_batch([session], tokenizer)
    ids, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    assert tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "one<|im_end|>two<|im_end|>"
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert session.messages[2]["content"] in env_text
    # Reward "max": the session's return is its best attempt's score.
    assert session.episode_return == pytest.approx(max(t.info["attempt_return"] for t in session.turns))


@pytest.mark.parametrize("retry_limit", [1, 0])
def test_corgi_and_baseline_train_and_evaluate_on_held_out_families(tmp_path, retry_limit):
    model, tokenizer = build_tiny_model(SMALL)
    config = CORGIConfig(output_dir=str(tmp_path), retry_limit=retry_limit, train_families="completion",
                         eval_families="punctuation", total_steps=1, episodes_per_step=4, mini_batch_size=4,
                         max_new_tokens=6, eval_tasks=4, progress=False, learning_rate=1e-4)
    trainer, results = train_corgi(config, model, tokenizer)
    assert trainer.step == 1
    for phase in ("before", "after"):
        assert set(results[phase]) >= {"first_attempt_success", "session_success", "mean_best_score"}
        assert results[phase]["episodes"] == 4
        assert 1 <= results[phase]["mean_attempts"] <= retry_limit + 1
    assert (tmp_path / "corgi_eval.json").exists()


def test_cli_help_documents_the_fields(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--retry_limit", "--train_families", "--eval_families", "--kl_coef", "--use_lora"):
        assert flag in text
