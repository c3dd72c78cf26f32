"""Sub-goal distillation's claim as an experiment (Hashemzadeh et al. 2024, arXiv 2405.02749).

Claim: a planner that writes sub-goals plus an executor that carries them out, both distilled
from the same gold paths, beat a flat policy imitating those paths, on ScienceWorld-style tasks.

One cell (arm x seed):

1. Training once per seed through :func:`mulligan.training.subgoal.train_subgoal` (the method's
   public function): ``num_gold`` gold paths of ``Mulligan/MiniScience-v0`` played by the oracle
   (train variations, chosen with the seed), annotated with sub-goals; planner, executor and the
   flat baseline (same context, same history window, no sub-goals) are fine-tuned from the tiny
   model initialised with the seed.
2. Evaluation through :func:`mulligan.training.evaluation.evaluate` on the first ``test_tasks``
   test variations (spread over the seven tasks), each once, greedy, the paper's stopping rules:
   ``hierarchical`` (planner + executor), ``flat``, and ``random_subgoals`` (the executor under
   sub-goals drawn at random from the training vocabulary: the official ``rand`` ablation).
   Per task: ``score`` (the final score in [0, 1], negative counts 0) and ``success``.
3. Mechanism (hierarchical cells): on ``probe_paths`` gold paths of *test* variations, the
   planner's exact match with the gold sub-goal at each step (the official ``eval_test_sg``; per
   step and macro-averaged per task), and the executor's exact match with the gold action when
   given the gold sub-goal (one step at a time); and, on the cell's test tasks, whole episodes of
   the executor under oracle sub-goals
   (:class:`~mulligan.agents.hierarchical.OraclePlanner`: the gold annotation's sub-goal for the
   next gold action), which bounds what a better planner could gain.

Every evaluated policy is built by :func:`mulligan.reproduce.protocol.model_agent` (the preset's
generation backend), or :class:`~mulligan.agents.seq2seq.Seq2SeqAgent` for an encoder-decoder.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mulligan.reproduce import nat as nat_reproduction
from mulligan.reproduce.protocol import Arm, CellResult, Comparison, PhaseTimer, Protocol, TimedAgent, model_agent

PROTOCOL = Protocol(
    paper="subgoal",
    title="Sub-goal distillation: planner + executor vs flat imitation (arXiv 2405.02749)",
    claim=(
        "A planner that writes sub-goals and an executor that carries them out, both distilled from "
        "the same gold paths, score higher on held-out variations than a flat policy imitating them."
    ),
    env_id="Mulligan/MiniScience-v0",
    primary_metric="score",
    metric_description="the episode's final task score in [0, 1] (a negative score counts 0), per test variation",
    reference_arm="flat",
    arms=(
        Arm("flat", "distill", "flat", "flat policy: the same gold paths and context, no sub-goals"),
        Arm("hierarchical", "distill", "hierarchical", "planner writes sub-goals, executor acts on them"),
        Arm("random_subgoals", "distill", "random_subgoals", "the executor under random sub-goals (control)"),
    ),
    comparisons=(
        Comparison("hierarchical", "flat", 1, "planner + executor beat flat imitation", primary=True),
        Comparison("hierarchical", "random_subgoals", 1, "the planner's sub-goals matter"),
        Comparison("hierarchical", "flat", 1, "planner + executor solve more tasks", metric="success"),
    ),
    budgets=("default",),
    mechanism=(
        "On gold paths of test variations: `planner_exact_match` (the planner's sub-goal equals the gold "
        "one, step by step; `planner_exact_match_macro` averages per task) and "
        "`executor_exact_match_oracle_subgoals` (the executor's action equals the gold action when it is "
        "given the gold sub-goal). On the test tasks: `oracle_subgoals_score` and `oracle_subgoals_success`, "
        "whole episodes of the executor under oracle sub-goals (the gold annotation's sub-goal for the next "
        "gold action): the bound on what a better planner could gain."
    ),
    decoding="greedy (temperature 0), the paper's stopping rules (200 turns, 50 steps without a score change)",
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **{k: nat_reproduction.PRESETS["tiny"][k] for k in ("model", "tiny_model", "batch_size")},
        "seeds": 2,
        "test_tasks": 2,
        "num_gold": 2,
        "history_len": 2,
        "num_train_epochs": 1.0,
        "learning_rate": 3e-3,
        "max_length": 1024,
        "max_new_tokens": 8,
        "eval_max_turns": 3,
        "probe_paths": 1,
        "num_envs": 2,
    },
    "cpu": {
        "model": "tiny",
        "tiny_model": {},
        "seeds": 5,
        # Episodes are long (3-25 gold actions, up to 200 turns): 140 test variations (20 per task).
        "test_tasks": 140,
        "num_gold": 256,
        "history_len": 10,
        "num_train_epochs": 5.0,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "max_length": 2048,
        "max_new_tokens": 32,
        "eval_max_turns": 60,
        "probe_paths": 32,
        "num_envs": 16,
    },
    "gpu": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 700,
        "num_gold": 2000,
        "history_len": 10,
        "num_train_epochs": 3.0,
        "learning_rate": 1e-4,
        "batch_size": 16,
        "max_length": 2048,
        "max_new_tokens": 48,
        "eval_max_turns": 200,
        "probe_paths": 100,
        "num_envs": 32,
    },
}


def subgoal_args(seed: int, settings: dict[str, Any], workdir: str):
    """The :class:`~mulligan.training.subgoal.SubgoalArgs` of the seed's training run."""
    from mulligan.training.subgoal import SubgoalArgs

    return SubgoalArgs(
        env_id=PROTOCOL.env_id, output_dir=os.path.join(workdir, "models", f"subgoal-seed{seed}"),
        model=nat_reproduction.model_path(settings, seed), num_gold=settings["num_gold"],
        history_len=settings["history_len"], train_flat=True, random_subgoals=True, eval_episodes=0,
        eval_max_turns=settings["eval_max_turns"], num_train_epochs=settings["num_train_epochs"],
        planner_num_train_epochs=settings["num_train_epochs"], learning_rate=settings["learning_rate"],
        planner_learning_rate=settings["learning_rate"], per_device_train_batch_size=settings["batch_size"],
        lr_scheduler_type="constant_with_warmup", warmup_ratio=0.05, max_length=settings["max_length"],
        max_new_tokens=settings["max_new_tokens"], temperature=0.0, num_envs=settings["num_envs"],
        seed=seed, save_steps=0, logging_steps=50, disable_tqdm=True, report_to="none",
    )  # fmt: skip


def trained(seed: int, settings: dict[str, Any], workdir: str, timer: PhaseTimer):
    """``(config, summary, vocabulary)`` of the seed's planner, executor and flat models (trained once)."""
    from mulligan.training.subgoal import train_subgoal
    from mulligan.training.subgoal_data import AnnotatedTrajectory, subgoal_vocabulary

    config = subgoal_args(seed, settings, workdir)
    summary_path = os.path.join(config.output_dir, "subgoal_summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
    else:
        # Gold paths are env steps; the three fine-tunes dominate: charged to optimisation.
        with timer.phase("optimisation"):
            summary = train_subgoal(config)
    with open(os.path.join(config.output_dir, "gold_annotated.jsonl"), encoding="utf-8") as handle:
        annotated = [AnnotatedTrajectory.from_dict(json.loads(line)) for line in handle if line.strip()]
    return config, summary, subgoal_vocabulary(annotated)


def cell_policy(settings: dict[str, Any], seed: int, timer: PhaseTimer):
    """Builds a cell's greedy policy for a checkpoint path, timed (``model_agent``, or seq2seq)."""
    from mulligan.agents.seq2seq import Seq2SeqAgent, is_seq2seq

    def build(path: str) -> TimedAgent:
        options = {"temperature": 0.0, "max_new_tokens": settings["max_new_tokens"], "seed": seed}
        agent = Seq2SeqAgent(path, **options) if is_seq2seq(path) else model_agent(path, settings, **options)
        return TimedAgent(agent, timer)

    return build


def mechanism_check(config, models: dict[str, str], settings: dict[str, Any], seed: int, timer: PhaseTimer):
    """Planner exact match and executor exact match under gold sub-goals on test-variation gold paths."""
    from mulligan.training.subgoal import eval_env_options, subgoal_exact_match
    from mulligan.training.subgoal_data import collect_gold

    with timer.phase("env"):
        gold = collect_gold(
            PROTOCOL.env_id, settings["probe_paths"], env_kwargs=eval_env_options(config), seed=seed + 7,
            num_envs=settings["num_envs"],
        )  # fmt: skip
    build = cell_policy(settings, seed, timer)
    roles = {"planner": build(models["planner"]), "executor": build(models["executor"])}
    with timer.phase("env"):
        matches = subgoal_exact_match(roles, gold, settings["history_len"])
    return {
        "planner_exact_match": matches["planner"]["exact_match"],
        "planner_exact_match_macro": matches["planner"]["macro"],
        "executor_exact_match_oracle_subgoals": matches["executor"]["exact_match"],
    }


def _evaluate(agent, config, settings: dict[str, Any], seed: int, timer: PhaseTimer):
    """The agent on the cell's test tasks (each once, the paper's stopping rules)."""
    from mulligan.training.evaluation import evaluate
    from mulligan.training.rollout import EnvPool
    from mulligan.training.subgoal import eval_env_options, task_name_of

    indices = list(range(settings["test_tasks"]))
    with timer.phase("env"), EnvPool(PROTOCOL.env_id, settings["num_envs"], eval_env_options(config)) as pool:
        if pool.num_tasks is not None and pool.num_tasks < len(indices):
            raise ValueError(f"the test variations number {pool.num_tasks} < test_tasks={len(indices)}")
        return evaluate(
            agent, pool, indices, seed=seed + 1, max_turns=settings["eval_max_turns"], progress=False,
            group_by=task_name_of,
        )  # fmt: skip


def oracle_subgoal_check(config, models: dict[str, str], settings: dict[str, Any], seed: int, timer: PhaseTimer):
    """Whole test episodes of the executor under oracle sub-goals: mean score and success."""
    from mulligan.agents.hierarchical import HierarchicalAgent, OraclePlanner
    from mulligan.training.subgoal_data import RuleBasedAnnotator

    agent = HierarchicalAgent(
        OraclePlanner(RuleBasedAnnotator().annotate),  # the annotator that labelled the training data
        cell_policy(settings, seed, timer)(models["executor"]),
        history_len=config.history_len,
        planner_every_step=config.planner_every_step,
        seed=seed,
    )
    result = _evaluate(agent, config, settings, seed, timer)
    scores = [max(0.0, float(t.score)) for t in result.trajectories]
    return {
        "oracle_subgoals_score": sum(scores) / len(scores),
        "oracle_subgoals_success": sum(float(t.success) for t in result.trajectories) / len(scores),
    }


def run_cell(
    arm: Arm, seed: int, budget: str, *, settings: dict[str, Any], workdir: str, timer: PhaseTimer
) -> CellResult:
    """Train (or reuse) the seed's models and evaluate the arm's agent (module docstring)."""
    from mulligan.training.subgoal import evaluation_agents, task_name_of

    config, summary, vocabulary = trained(seed, settings, workdir, timer)
    agents = evaluation_agents(config, summary["models"], vocabulary, policy=cell_policy(settings, seed, timer))
    result = _evaluate(agents[arm.evaluation], config, settings, seed, timer)
    by_index = {int(t.metadata["task_index"]): t for t in result.trajectories}
    tasks = [
        {
            "task_index": i,
            "task_id": by_index[i].task_id,
            "task_name": task_name_of(by_index[i]),
            "score": max(0.0, float(by_index[i].score)),
            "success": float(by_index[i].success),
        }
        for i in range(settings["test_tasks"])
    ]
    mechanism = {}
    if arm.evaluation == "hierarchical":
        mechanism = mechanism_check(config, summary["models"], settings, seed, timer)
        mechanism.update(oracle_subgoal_check(config, summary["models"], settings, seed, timer))
    return CellResult(
        tasks=tasks, mechanism=mechanism, extra={"macro": result.macro, "records": summary.get("records")}
    )
