"""CORGI: sessions with critiques on Constraints-v0, the retry_limit=0 baseline, held-out families,
and the same number of test-time attempts for both, reported as a success-after-attempt-i curve."""

from __future__ import annotations

import gymnasium
import pytest
from rl_helpers import SMALL

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.testing import ScriptedAgent
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
from mulligan.envs.wrappers import RetryWithFeedback
from mulligan.training.args import parse_args
from mulligan.training.corgi import CORGIArgs, attempts_to_success, main, success_curve, train_corgi
from mulligan.training.ppo import episodes_to_batch
from mulligan.training.rollout import collect_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layers(env):
    while isinstance(env, gymnasium.Wrapper):
        yield env
        env = env.env


def _session(env):
    return next((layer for layer in _layers(env) if isinstance(layer, RetryWithFeedback)), None)


def test_defaults_are_the_papers_retry_limits():
    args = CORGIArgs()
    assert args.retry_limit == 3 and args.max_attempts == 4  # run_trainer.sh: --retry_limit 3
    assert args.eval_retry_limit == 4  # validate_with_critique.py: --retry_limit default 4
    assert args.kl_coef == 0.075
    paper = CORGIArgs(preset="paper")
    assert (paper.max_attempts, paper.eval_retry_limit, paper.episodes_per_step, paper.lora_r) == (4, 4, 32, 16)
    assert (paper.reward_placement, paper.gae_mode, paper.kl_controller) == ("last_token", "all_tokens", "adaptive")
    assert paper.families("train_families") == ["corgi:num_planning"] and paper.eval_tasks == 1000
    assert paper.families("eval_families") == ["corgi:cmg_hard", "corgi:panagram"]


def test_paper_preset_trains_on_corgis_tasks_end_to_end(tmp_path):
    # CORGI's prompts carry two worked examples: a longer context than SMALL's 512 positions.
    model, tokenizer = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "max_position_embeddings": 4096}))
    # The paper's settings, shrunk only in size: LoRA on q_proj/v_proj, bf16 autocast, gradient
    # checkpointing, adaptive KL, legacy GAE, the score on the session's last token.
    args = CORGIArgs(
        preset="paper",
        output_dir=str(tmp_path),
        total_steps=1,
        episodes_per_step=4,
        mini_batch_size=4,
        gradient_accumulation_steps=2,
        max_new_tokens=6,
        eval_tasks=2,
        eval_retry_limit=1,
        num_envs=4,
        disable_tqdm=True,
    )
    trainer, results = train_corgi(args, model, tokenizer)
    assert trainer.step == 1 and results["eval_families"] == ["corgi:cmg_hard", "corgi:panagram"]
    assert trainer.history[0]["objective/kl_coef"] == pytest.approx(0.075)
    assert set(results["after"]) >= {"success_after_attempt_1", "success_after_attempt_2"}
    assert (tmp_path / "adapter_config.json").exists()


def test_args_build_corgi_sessions_and_the_baseline():
    args = CORGIArgs(retry_limit=2, train_families="completion,concepts", eval_families="punctuation")
    session = _session(gymnasium.make(args.env_id, **args.training_env_kwargs()))
    assert session.max_attempts == 3 and session.reward_mode == "max"
    assert session.feedback_template.startswith("- Feedback:")
    baseline = CORGIArgs(retry_limit=0, train_families="completion", eval_families="punctuation")
    assert _session(gymnasium.make(baseline.env_id, **baseline.training_env_kwargs())) is None


def test_baseline_and_corgi_get_the_same_test_time_attempts():
    for retry_limit in (0, 1, 3):
        args = CORGIArgs(retry_limit=retry_limit, train_families="completion", eval_families="punctuation")
        assert args.eval_env_kwargs() == {"families": ["punctuation"], "max_attempts": 5}
        assert _session(gymnasium.make(args.env_id, **args.eval_env_kwargs())).max_attempts == 5
    single = CORGIArgs(eval_retry_limit=0, train_families="completion", eval_families="punctuation")
    assert single.eval_env_kwargs() == {"families": ["punctuation"]}


def test_max_attempts_is_derived_not_a_flag():
    with pytest.raises(ValueError, match="--max_attempts"):
        parse_args(CORGIArgs, ["--max_attempts", "7"], prog="mulligan train corgi")
    with pytest.raises(TypeError):
        CORGIArgs(max_attempts=7)
    assert parse_args(CORGIArgs, ["--retry_limit", "1"], prog="corgi").max_attempts == 2


def test_args_reject_overlapping_or_unknown_families():
    with pytest.raises(ValueError, match="held out"):
        CORGIArgs(train_families="completion,concepts", eval_families="concepts")
    with pytest.raises(ValueError, match="constraint ids"):
        CORGIArgs(train_families="completion,haiku")
    with pytest.raises(ValueError, match="held out"):  # a family holds its ids
        CORGIArgs(train_families="punctuation", eval_families="punctuation:no_comma")
    single = CORGIArgs(train_families="punctuation:no_comma", eval_families="change_case")
    assert single.constraint_ids("train_families") == {"punctuation:no_comma"}
    with pytest.raises(ValueError, match="retry_limit"):
        CORGIArgs(retry_limit=-1)
    with pytest.raises(ValueError, match="eval_retry_limit"):
        CORGIArgs(eval_retry_limit=-1)


def test_training_tasks_come_from_training_families_only():
    args = CORGIArgs(train_families="completion", eval_families="punctuation,change_case")
    train_env = gymnasium.make(args.env_id, **args.training_env_kwargs()).unwrapped
    eval_env = gymnasium.make(args.env_id, **args.eval_env_kwargs()).unwrapped
    for index in range(20):
        train_ids = train_env.get_task(index)["instruction_id_list"]
        eval_ids = eval_env.get_task(args.eval_task_offset + index)["instruction_id_list"]
        assert all(i.split(":")[0] == "completion" for i in train_ids), train_ids
        assert all(i.split(":")[0] in ("punctuation", "change_case") for i in eval_ids), eval_ids


def test_success_curve_by_hand():
    kwargs = {"max_attempts": 3, "retry_reward": "max", "vocabulary": ["river"], "partial_credit": True}

    def sessions(answers):
        return collect_episodes("Mulligan/Echo-v0", ScriptedAgent(answers), 1, env_kwargs=kwargs, progress=False)

    # Solved at attempt 1, solved at attempt 2, never solved (best 0.8 after three attempts).
    played = [*sessions(["river"]), *sessions(["r", "river"]), *sessions(["r", "x", "rive"])]
    assert [attempts_to_success(t) for t in played] == [1, 2, None]
    curve = success_curve(3)(played)
    assert curve["success_after_attempt_1"] == pytest.approx(1 / 3)
    assert curve["success_after_attempt_2"] == pytest.approx(2 / 3)
    assert curve["success_after_attempt_3"] == pytest.approx(2 / 3)
    assert curve["mean_attempts"] == pytest.approx((1 + 2 + 3) / 3)
    assert curve["mean_best_score"] == pytest.approx((1 + 1 + 0.8) / 3)
    # A longer curve than the sessions ran: a solved session keeps counting, an unsolved one never does.
    assert success_curve(5)(played)["success_after_attempt_5"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="max_attempts"):
        success_curve(0)


def test_a_session_is_one_sample_with_every_attempt_learned_and_critiques_masked():
    _, tokenizer = build_tiny_model(SMALL)
    args = CORGIArgs(retry_limit=1, train_families="completion", eval_families="punctuation")
    (session,) = collect_episodes(
        args.env_id,
        ScriptedAgent(["one", "two"]),
        1,
        env_kwargs=args.training_env_kwargs(),
        task_indices=[0],
        progress=False,
    )
    assert len(session.turns) == 2 and session.messages[2]["content"].startswith("- Feedback:")
    batch = episodes_to_batch([session], tokenizer)
    ids, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    assert tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "one<|im_end|>two<|im_end|>"
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert session.messages[2]["content"] in env_text
    # Reward "max": the session's return is its best attempt's score.
    assert session.episode_return == pytest.approx(max(t.info["attempt_return"] for t in session.turns))


@pytest.mark.parametrize("retry_limit", [1, 0])
def test_corgi_and_baseline_train_and_are_evaluated_with_the_same_attempts(tmp_path, retry_limit):
    model, tokenizer = build_tiny_model(SMALL)
    args = CORGIArgs(
        output_dir=str(tmp_path),
        retry_limit=retry_limit,
        eval_retry_limit=2,
        train_families="completion",
        eval_families="punctuation",
        total_steps=1,
        episodes_per_step=4,
        mini_batch_size=4,
        max_new_tokens=6,
        eval_tasks=4,
        num_envs=4,
        disable_tqdm=True,
        learning_rate=1e-4,
    )
    trainer, results = train_corgi(args, model, tokenizer)
    assert trainer.step == 1 and trainer.env.envs == []  # the training envs were closed
    assert results["eval_retry_limit"] == 2
    for phase in ("before", "after"):
        curve = [results[phase][f"success_after_attempt_{i}"] for i in (1, 2, 3)]
        assert curve == sorted(curve) and "success_after_attempt_4" not in results[phase]
        assert results[phase]["episodes"] == 4
        # An untrained tiny model fails the punctuation constraints, so sessions use the retries,
        # whatever retry_limit the model was trained with.
        assert 1 < results[phase]["mean_attempts"] <= 3
    assert (tmp_path / "corgi_eval.json").exists()


def test_cli_help_documents_the_fields(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--retry_limit",
        "--eval_retry_limit",
        "--train_families",
        "--eval_families",
        "--kl_coef",
        "--use_lora",
        "--preset",
        "--reward_placement",
    ):
        assert flag in text
    assert "--max_attempts" not in text


def test_corgi_reports_to_tensorboard(tmp_path):
    """CORGI logs through PPO's report_to: ``tensorboard`` writes event files with TRL's PPO names."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tokenizer = build_tiny_model(SMALL)
    args = CORGIArgs(output_dir=str(tmp_path), retry_limit=1, eval_retry_limit=1, train_families="completion",
                     eval_families="punctuation", total_steps=1, episodes_per_step=4, mini_batch_size=4,
                     max_new_tokens=4, eval_tasks=0, num_envs=4, disable_tqdm=True, report_to="tensorboard",
                     logging_steps=1)  # fmt: skip
    train_corgi(args, model, tokenizer)
    (events,) = (tmp_path / "runs").glob("events.out.tfevents*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"objective/kl", "env/success_rate"} <= set(tags)


# ----------------------------------------------------------------------------------- prefilled answers (C7)
def test_prefill_response_primes_the_envs_and_the_paper_preset_turns_it_on():
    tiny = CORGIArgs(train_families="corgi:num_planning", eval_families="corgi:panagram")
    assert tiny.prefill_response is False and "primed" not in tiny.training_env_kwargs()
    paper = CORGIArgs(preset="paper")
    assert paper.prefill_response is True
    assert paper.training_env_kwargs()["primed"] is True and paper.eval_env_kwargs()["primed"] is True
    flagged = parse_args(
        CORGIArgs,
        ["--prefill_response", "--train_families", "corgi:num_planning", "--eval_families", "corgi:panagram"],
        prog="corgi",
    )
    assert flagged.prefill_response is True
    env = gymnasium.make(flagged.env_id, **flagged.training_env_kwargs())
    assert env.unwrapped.primed is True and _session(env).max_attempts == 4
    off = parse_args(CORGIArgs, ["--preset", "paper", "--prefill_response", "false"], prog="corgi")
    assert off.prefill_response is False and "primed" not in off.eval_env_kwargs()


def test_a_prefilled_corgi_attempt_continues_the_primer_and_is_scored_and_learned_as_a_continuation(tmp_path):
    from mulligan.agents.base import AgentInput
    from mulligan.envs.verifiers.constraints import check_constraints
    from mulligan.training.ppo import PPOTrainer
    from mulligan.training.trajectory import Trajectory, Turn

    model, tokenizer = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "max_position_embeddings": 4096}))
    args = CORGIArgs(
        prefill_response=True, train_families="corgi:num_planning", eval_families="corgi:panagram", retry_limit=0,
        output_dir=str(tmp_path), max_new_tokens=6, num_envs=1, episodes_per_step=4, mini_batch_size=4,
    )  # fmt: skip
    with PPOTrainer(args, model, tokenizer) as trainer:
        env = gymnasium.make(args.env_id, **args.training_env_kwargs())
        observation, info = env.reset(options={"task_index": 0})
        primer = env.unwrapped.task["primer"]
        assert info["response_prefix"] == primer == "- Output: On the last day of summer, my friends and I"
        messages = [{"role": "user", "content": observation}]
        action = trainer.agent(seed=0).act([AgentInput(messages=messages, info=info)])[0]
    # The model was conditioned on the prompt followed by the primer and wrote the continuation.
    assert action.prompt.endswith("<|im_start|>assistant\n" + primer) and action.prefill == primer
    _, reward, *_ = env.step(action.text)
    task = env.unwrapped.task
    (expected,) = [r.score for r in check_constraints(task["instruction_id_list"], task["kwargs"], action.text,
                                                       primed=True)]  # fmt: skip
    assert reward == expected
    # Learned as the rollout records it: the primer is context, the continuation's tokens are learned.
    trajectory = Trajectory(
        args.env_id, "constraints-0-0", task, [*messages, {"role": "assistant", "content": action.text}],
        [Turn(observation, action.text, reward, {}, action.completion_ids, action.logprobs, prefill=action.prefill)],
        False, reward, reward, True, False,
    )  # fmt: skip
    batch = episodes_to_batch([trajectory], tokenizer)
    ids, mask = batch.input_ids[0].tolist(), batch.action_mask[0].tolist()
    assert [t for t, m in zip(ids, mask, strict=True) if m] == action.completion_ids
    assert ids[: len(action.prompt_ids)] == action.prompt_ids


def test_prefilled_corgi_sessions_record_the_primer_and_are_learned_as_sampled(tmp_path):
    from mulligan.training.ppo import PPOTrainer

    model, tokenizer = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "max_position_embeddings": 4096}))
    args = CORGIArgs(
        prefill_response=True, train_families="corgi:num_planning", eval_families="corgi:panagram", retry_limit=1,
        output_dir=str(tmp_path), max_new_tokens=4, num_envs=2, episodes_per_step=2, mini_batch_size=2,
    )  # fmt: skip
    with PPOTrainer(args, model, tokenizer) as trainer:
        sessions = trainer.collect(0)
        batch = episodes_to_batch(sessions, tokenizer, reward_placement="last_token")
    retried = [s for s in sessions if len(s.turns) == 2]
    assert retried, "an untrained model fails its first attempt and retries"
    for row, session in enumerate(sessions):
        primer = session.task["primer"]
        assert all(turn.prefill == primer for turn in session.turns)  # retries are primed too
        assert session.sees_full_history  # later attempts saw each answer whole, primer included
        ids, mask = batch.input_ids[row].tolist(), batch.action_mask[row].tolist()
        learned = [t for t, m in zip(ids, mask, strict=True) if m]
        assert learned == [t for turn in session.turns for t in turn.completion_ids]
        # Each attempt's learned tokens follow its assistant header and the primer (context).
        starts = [t for t, m in enumerate(mask) if m and not mask[t - 1]]
        assert len(starts) == len(session.turns)
        for start in starts:
            assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n" + primer)
    session = retried[0]
    shown = session.prompt_messages(1)  # what the retry saw of the first answer
    assert shown[1] == {"role": "assistant", "content": session.task["primer"] + session.turns[0].action}


def _released(task, user, primer, **fields):
    """One record of CORGI's released ``data_llama_3`` files (a rendered Llama-3 query)."""
    query = (
        f"<|start_header_id|>user<|end_header_id|>\n\n{user}"
        f"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n\n{primer}"
    )
    return {"id": f"{task}_0", "query": query, "task": task, **fields}


def test_corgi_trains_and_evaluates_on_corgis_released_files(tmp_path):
    import json

    train = [
        _released("num_planning", f'- Input: "N = {n} ; Last word = sea ; Prefix = The"', "- Output: The",
                  prefix="The", last_word="sea", N=n)
        for n in (3, 4, 5)
    ]  # fmt: skip
    held_out = [
        _released("panagram", f'- Input: "Letters: {letters}"', "- Output: Word:", letters_list=list(letters))
        for letters in ("tca", "god", "nur")
    ]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps(held_out))
    args = CORGIArgs(
        output_dir=str(tmp_path / "run"), retry_limit=1, train_data=str(tmp_path / "train.json"),
        eval_data=str(tmp_path / "test.json"), eval_tasks=50, eval_retry_limit=1, prefill_response=True,
        total_steps=1, episodes_per_step=4, mini_batch_size=4, max_new_tokens=4, num_envs=4, disable_tqdm=True,
    )  # fmt: skip
    assert args.eval_task_offset == 0  # the files' own tasks, from the first
    train_env = gymnasium.make(args.env_id, **args.training_env_kwargs()).unwrapped
    assert train_env.num_tasks == 3 and train_env.primed
    _, results = train_corgi(args)
    # Each released held-out task once (eval_tasks is capped at the file's 3), under CORGI's names.
    assert results["eval_data"] == [str(tmp_path / "test.json")] and results["after"]["episodes"] == 3.0
    assert results["train_families"] == [] and results["eval_families"] == []
    with pytest.raises(ValueError, match="held out from train_data"):
        CORGIArgs(train_data=str(tmp_path / "train.json"), eval_data=str(tmp_path / "train.json"))
    with pytest.raises(ValueError, match="critics must be"):
        CORGIArgs(critics="gpt4")
