"""Sub-goal distillation: data from oracle gold paths, planner/executor/flat training, the paper's evaluation."""

import json

import pytest
import torch

from mulligan.agents.base import Action, Agent
from mulligan.agents.hierarchical import END_SUBGOAL, executor_prompt, flat_prompt, planner_prompt
from mulligan.agents.teachers.science import ScienceOracle
from mulligan.training.subgoal import (
    PAPER_EVAL_MAX_TURNS,
    PAPER_STALL_LIMIT,
    SubgoalArgs,
    eval_env_options,
    evaluate_subgoal_agents,
    paper_test_indices,
    train_subgoal,
)
from mulligan.training.subgoal_data import collect_gold, distillation_conversations, step_contexts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_conversations_use_the_agents_prompt_formats():
    annotated = collect_gold("Mulligan/MiniScience-v0", 2, seed=0)
    data = distillation_conversations(annotated, history_len=2)
    first = annotated[0]
    contexts = step_contexts(first.trajectory)
    for context in contexts:
        context.history = context.history[-2:]
    planner_first = data["planner"][0]
    assert planner_first[0]["content"] == planner_prompt(contexts[0], [], None, history_len=2)
    assert planner_first[1]["content"] == first.subgoals[0].text
    executor_first = data["executor"][0]
    assert executor_first[0]["content"] == executor_prompt(contexts[0], first.subgoals[0].text, [], history_len=2)
    assert executor_first[1]["content"] == first.actions[0]
    assert data["flat"][1][0]["content"] == flat_prompt(contexts[1], history_len=2)
    assert data["flat"][1][1]["content"] == first.actions[1]
    assert sum(c[1]["content"] == END_SUBGOAL for c in data["executor"]) == sum(len(a.subgoals) for a in annotated)
    # The planner is trained at every step (official controller) unless told otherwise.
    assert len(data["planner"]) == sum(len(a.actions) + len(a.subgoals) - 1 for a in annotated)
    boundaries = distillation_conversations(annotated, history_len=2, planner_every_step=False)["planner"]
    assert len(boundaries) == sum(len(a.subgoals) for a in annotated)
    assert len(data["flat"]) == sum(len(a.actions) for a in annotated)
    assert all("sub-goal" not in c[0]["content"] for c in data["flat"])


def test_config_composes_the_shared_pieces_and_validates():
    config = SubgoalArgs()
    assert (config.learning_rate, config.planner_learning_rate, config.history_len) == (1e-3, 1e-3, 10)
    paper = SubgoalArgs(preset="paper")
    assert (paper.learning_rate, paper.num_train_epochs) == (1e-4, 30.0)  # official ds_train.sh
    assert (paper.planner_learning_rate, paper.planner_num_train_epochs) == (4e-4, 20.0)  # ds_train_sg.sh
    assert paper.per_device_train_batch_size * paper.gradient_accumulation_steps == 32 and paper.bf16
    assert SubgoalArgs(preset="paper", learning_rate=3e-5).learning_rate == 3e-5
    with pytest.raises(ValueError, match="JSON object"):
        SubgoalArgs(env_kwargs="[1]")
    with pytest.raises(ValueError, match="eval_env_kwargs must be a JSON object"):
        SubgoalArgs(eval_env_kwargs="nope")
    with pytest.raises(ValueError, match="max_steps"):
        SubgoalArgs(max_steps=0)
    with pytest.raises(ValueError, match="num_gold"):
        SubgoalArgs(num_gold=0)


def test_eval_env_defaults_to_the_papers_protocol_on_test_variations():
    config = SubgoalArgs(env_kwargs='{"task": "boil"}')
    assert eval_env_options(config) == {
        "task": "boil",
        "variation": "test",
        "include_valid_actions": True,
        "stall_limit": PAPER_STALL_LIMIT,
        "max_episode_steps": PAPER_EVAL_MAX_TURNS,
    }
    assert (PAPER_STALL_LIMIT, PAPER_EVAL_MAX_TURNS) == (50, 200)
    assert eval_env_options(SubgoalArgs(eval_env_kwargs='{"variation": 3}')) == {"variation": 3}


def test_paper_test_indices_take_the_first_variations_of_each_task():
    pairs = [("boil", 3), ("boil", 7), ("boil", 9), ("melt", 2), ("grow", 1), ("grow", 4)]
    assert paper_test_indices(pairs, 2) == [0, 1, 3, 4, 5]
    assert paper_test_indices(pairs, 0) == list(range(6))


class GoldOnBoilOnly(Agent):
    """Follows the gold path on boil tasks and looks around elsewhere."""

    def __init__(self):
        self.oracle = ScienceOracle()

    def act(self, inputs):
        gold = self.oracle.act(inputs)
        return [
            g if (x.task or {}).get("task_name") == "boil" else Action("look around")
            for x, g in zip(inputs, gold, strict=True)
        ]


def test_results_are_macro_averaged_per_task_as_in_the_paper(tmp_path):
    # 8 test episodes over 7 tasks: boil gets 2 variations, every other task 1. An agent that solves
    # only boil succeeds on 2/8 episodes (micro) but on 1 task of 7 (macro, the paper's average).
    config = SubgoalArgs(eval_episodes=8, num_envs=4, disable_tqdm=True, output_dir=str(tmp_path))
    results = evaluate_subgoal_agents(config, {"boil_only": GoldOnBoilOnly()})["boil_only"]
    assert results["summary"]["episodes"] == 8
    assert results["summary"]["success_rate"] == pytest.approx(2 / 8)
    assert results["macro"] == {"success": pytest.approx(1 / 7), "score": pytest.approx(1 / 7)}
    assert results["groups"]["boil"]["episodes"] == 2 and results["groups"]["melt"]["episodes"] == 1
    # The paper's stall rule ended the episodes that never scored after 50 actions, not the 200-turn cap.
    assert results["groups"]["melt"]["success_rate"] == 0.0 and results["groups"]["melt"]["mean_turns"] == 50


def _changed(path):
    from transformers import AutoModelForCausalLM

    from mulligan.agents.tiny import resolve_model

    before = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).state_dict()
    after = AutoModelForCausalLM.from_pretrained(path).state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_trains_planner_executor_and_flat_then_evaluates(tmp_path):
    config = SubgoalArgs(
        output_dir=str(tmp_path / "sg"),
        num_gold=2,
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=768,
        eval_episodes=2,
        eval_max_turns=2,
        max_new_tokens=8,
        disable_tqdm=True,
        history_len=2,
        random_subgoals=True,
        num_envs=2,
    )
    summary = train_subgoal(config)
    for role in ("planner", "executor", "flat"):
        assert summary["training"][role]["global_step"] == 2
        assert _changed(summary["models"][role])
    assert set(summary["eval"]) == {"hierarchical", "flat", "random_subgoals"}
    assert summary["eval"]["hierarchical"]["summary"]["episodes"] == 2
    assert set(summary["eval"]["flat"]["macro"]) >= {"success", "score"}
    assert json.loads((tmp_path / "sg" / "subgoal_summary.json").read_text())["gold_paths"] == 2
    # Resuming skips the finished models.
    again = train_subgoal(
        SubgoalArgs(
            **{
                **{k: v for k, v in config.__dict__.items() if not k.endswith("_dict")},
                "resume_from_checkpoint": "auto",
                "eval_episodes": 0,
            }
        )
    )
    assert again["training"] == summary["training"]


def test_shared_model_serves_both_roles(tmp_path):
    config = SubgoalArgs(
        output_dir=str(tmp_path / "sg"),
        num_gold=1,
        max_steps=1,
        per_device_train_batch_size=2,
        max_length=1024,
        shared_model=True,
        train_flat=False,
        disable_tqdm=True,
        history_len=2,
    )
    summary = train_subgoal(config)
    assert summary["models"]["planner"] == summary["models"]["executor"]
    assert set(summary["training"]) == {"shared"}


def test_seq2seq_models_train_end_to_end_with_the_papers_three_models(tmp_path):
    # FLAN-T5's path with the tiny T5: planner, executor, first-sub-goal model and flat baseline
    # trained with Seq2SeqTrainer, evaluated with beam search, plus semi-rand and exact match.
    from transformers import AutoConfig

    from mulligan.agents.seq2seq import Seq2SeqAgent
    from mulligan.training.subgoal import evaluation_agents

    config = SubgoalArgs(
        model="tiny-seq2seq", output_dir=str(tmp_path / "sg"), num_gold=2, max_steps=2, per_device_train_batch_size=2,
        max_length=512, eval_episodes=2, eval_max_turns=2, max_new_tokens=8, disable_tqdm=True, history_len=2,
        num_envs=2, num_beams=2, first_subgoal_model=True, semi_random_subgoals=True, exact_match_paths=1,
    )  # fmt: skip
    summary = train_subgoal(config)
    assert set(summary["models"]) == {"planner", "executor", "first_step", "flat"}
    for role, path in summary["models"].items():
        assert summary["training"][role]["model_type"] == "seq2seq"
        assert summary["training"][role]["global_step"] == 2
        assert AutoConfig.from_pretrained(path).is_encoder_decoder
    # The first-sub-goal model learns the step-0 records only (one per gold path).
    assert summary["training"]["first_step"]["examples"] == 2
    assert summary["records"]["first_step"] == 2
    assert set(summary["eval"]) == {"hierarchical", "flat", "semi_random_subgoals"}
    assert summary["eval"]["semi_random_subgoals"]["summary"]["episodes"] == 2
    matches = summary["exact_match"]
    assert set(matches) == {"planner", "executor", "flat"}
    assert all(0.0 <= m["exact_match"] <= 1.0 and m["records"] > 0 for m in matches.values())
    agents = evaluation_agents(config, summary["models"])
    hierarchical = agents["hierarchical"]
    assert isinstance(hierarchical.planner, Seq2SeqAgent) and hierarchical.planner.num_beams == 2
    assert isinstance(hierarchical.first_planner, Seq2SeqAgent)
    assert isinstance(agents["flat"].policy, Seq2SeqAgent)


def test_beam_search_needs_greedy_temperature_and_the_paper_preset_uses_five_beams():
    from mulligan.training.subgoal import seq2seq_limits

    assert SubgoalArgs(preset="paper").num_beams == 5 and SubgoalArgs().num_beams == 1
    assert seq2seq_limits(SubgoalArgs(preset="paper")) == (1024, 30)  # official max_source / max_target
    with pytest.raises(ValueError, match="--temperature 0"):
        SubgoalArgs(num_beams=5, temperature=0.7)
    with pytest.raises(ValueError, match="model_type"):
        SubgoalArgs(model_type="encoder")
    with pytest.raises(ValueError, match="shared_model"):
        SubgoalArgs(first_subgoal_model=True, shared_model=True)


def test_causal_policies_decode_with_the_configured_beams():
    from mulligan.agents.hf import HFAgent
    from mulligan.training.subgoal import evaluation_agents

    config = SubgoalArgs(num_beams=5)
    agents = evaluation_agents(config, {"planner": "tiny", "executor": "tiny", "flat": "tiny"})
    for policy in (agents["hierarchical"].planner, agents["hierarchical"].executor, agents["flat"].policy):
        assert isinstance(policy, HFAgent) and policy.num_beams == 5
    # The agents weigh every beam as the official agent does, unless told to use the best only.
    assert agents["hierarchical"].beam_candidates == 5 and agents["flat"].beam_candidates == 5
    best_only = evaluation_agents(
        SubgoalArgs(num_beams=5, use_all_beams=False), {"planner": "tiny", "executor": "tiny"}
    )
    assert best_only["hierarchical"].beam_candidates == 1
