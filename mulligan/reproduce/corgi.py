"""CORGI's claim as an experiment (Bezalel et al. 2024, arXiv 2411.01483).

Claim: RL with the checker's critique in the conversation (CORGI: up to ``retry_limit`` retries,
each after the critique) gives higher success than plain RL without feedback, when both get the
critique at test time.

One cell (arm x seed):

1. Warm start for the seed: SFT (:func:`mulligan.training.nat.train_nat`, ``nut``: the noisy
   writer's imperfect and correct first attempts, no signal) on
   :class:`~mulligan.agents.teachers.constraints.NoisyConstraintWriter` sessions of the training
   constraints, from the tiny model initialised with the seed; a tiny model cannot start PPO from
   scratch. Shared by every arm of the seed.
2. PPO through :func:`mulligan.training.corgi.train_corgi` (the method's public function), the same
   iterations for every arm: ``corgi`` (``retry_limit`` retries after the checker's critique),
   ``rl_baseline`` (``retry_limit=0``: plain single-attempt RL, the paper's baseline) and
   ``uninformative`` (the same retries, but the feedback is "Your output is incorrect. Please try
   again.": does the critique's content matter?).
3. Evaluation through :func:`mulligan.training.evaluation.evaluate` of the trained model, which
   generates on the preset's backend (:func:`~mulligan.reproduce.protocol.model_agent`): greedy
   sessions with the same ``eval_retry_limit`` retries *and the real critique* for every arm, on
   ``test_tasks`` evaluation tasks (indices from 1,000,000), each once: per task
   ``success_within_k`` for every attempt k.
4. Mechanism: success as a function of attempt number (the curve), and the gain after the first
   attempt (``retry_gain`` = success within the last attempt - success at the first).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mulligan.reproduce import nat as nat_reproduction
from mulligan.reproduce.protocol import Arm, CellResult, Comparison, PhaseTimer, Protocol, TimedAgent, model_agent

#: CORGI's ``num_planning_no_feedback`` analogue: a retry prompt that says nothing about what is wrong.
UNINFORMATIVE_FEEDBACK = "Your output is incorrect. Please try again."
#: The evaluation tasks start here; training tasks are drawn from index 0 on.
EVAL_OFFSET = 1_000_000

PROTOCOL = Protocol(
    paper="corgi",
    title="CORGI: RL with a checker's critique in the conversation (arXiv 2411.01483)",
    claim=(
        "RL on sessions where the checker's critique comes back and the model retries beats plain "
        "single-attempt RL, when both models get the critique and retries at test time."
    ),
    env_id="Mulligan/Constraints-v0",
    primary_metric="success_last",
    metric_description="every constraint holds at some attempt within the evaluation's retries (1/0 per task)",
    reference_arm="rl_baseline",
    arms=(
        Arm("rl_baseline", "retry_0", "critique", "PPO on single attempts (no feedback in training)"),
        Arm("corgi", "retry_critique", "critique", "PPO on sessions: attempt, critique, retry (CORGI)"),
        Arm("uninformative", "retry_uninformative", "critique", "the same sessions, feedback without content"),
    ),
    comparisons=(
        Comparison("corgi", "rl_baseline", 1, "training with the critique beats plain RL", primary=True),
        Comparison("corgi", "uninformative", 1, "the critique's content matters, not only the retries"),
        Comparison("corgi", "rl_baseline", 1, "CORGI gains more from the retries", metric="retry_gain"),
    ),
    budgets=("iterations",),
    mechanism=(
        "Success as a function of attempt number (`curve.png`), and `retry_gain` = success within the "
        "last attempt - success at the first: CORGI should gain more from the critique than the baseline."
    ),
    decoding="greedy (temperature 0), the same eval_retry_limit and critique for every arm",
    curve_metric="success_within_",
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **{k: nat_reproduction.PRESETS["tiny"][k] for k in ("model", "tiny_model", "batch_size")},
        "seeds": 2,
        "test_tasks": 4,
        "train_families": "concepts",
        "eval_families": "concepts",
        "max_constraints": 1,
        "warm_start_episodes": 8,
        "warm_start_epochs": 1.0,
        "warm_start_learning_rate": 3e-3,
        "break_rate": 0.5,
        "retry_limit": 1,
        "eval_retry_limit": 1,
        "ppo_steps": 1,
        "episodes_per_step": 4,
        "ppo_learning_rate": 1e-5,
        "max_new_tokens": 8,
        "max_length": 512,
        "num_envs": 4,
    },
    "cpu": {
        "model": "tiny",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 500,
        # In-distribution (unseen tasks of the trained family): held-out families are out of a
        # from-scratch tiny model's reach; the gpu preset evaluates on held-out families.
        "train_families": "concepts",
        "eval_families": "concepts",
        "max_constraints": 1,
        "warm_start_episodes": 512,
        "warm_start_epochs": 10.0,
        "warm_start_learning_rate": 3e-3,
        "batch_size": 16,
        "break_rate": 0.5,
        "retry_limit": 2,
        "eval_retry_limit": 2,
        "ppo_steps": 30,
        "episodes_per_step": 32,
        "ppo_learning_rate": 1e-5,
        "max_new_tokens": 96,
        "max_length": 1024,
        "num_envs": 32,
    },
    "gpu": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 1000,
        "train_families": "completion,concepts,letters,words,keywords,language,length_constraints",
        "eval_families": "detectable_content,detectable_format,combination,startend,change_case,punctuation",
        "max_constraints": 3,
        "warm_start_episodes": 2000,
        "warm_start_epochs": 1.0,
        "warm_start_learning_rate": 1e-5,
        "batch_size": 16,
        "break_rate": 0.5,
        "retry_limit": 3,
        "eval_retry_limit": 4,
        "ppo_steps": 200,
        "episodes_per_step": 32,
        "ppo_learning_rate": 1.41e-5,
        "max_new_tokens": 256,
        "max_length": 2048,
        "num_envs": 32,
    },
}


def _families(text: str) -> list[str]:
    return [f.strip() for f in text.split(",") if f.strip()]


def _env_kwargs(settings: dict[str, Any], families: str) -> dict[str, Any]:
    return {"families": _families(families), "max_constraints": settings["max_constraints"]}


def warm_start(seed: int, settings: dict[str, Any], workdir: str, timer: PhaseTimer) -> str:
    """The seed's SFT warm start (trained once, cached): the noisy writer's first attempts."""
    from mulligan.agents.teachers.constraints import NoisyConstraintWriter
    from mulligan.training.nat import NATArgs, train_nat
    from mulligan.training.rollout import collect_episodes

    out = os.path.join(workdir, "models", f"warm-seed{seed}")
    if os.path.exists(os.path.join(out, "nat_summary.json")):
        return out
    with timer.phase("env"):
        data = collect_episodes(
            PROTOCOL.env_id,
            TimedAgent(NoisyConstraintWriter(break_rate=settings["break_rate"], seed=seed), timer),
            settings["warm_start_episodes"],
            env_kwargs=_env_kwargs(settings, settings["train_families"]),
            task_indices=list(range(seed * nat_reproduction.DATA_STRIDE, seed * nat_reproduction.DATA_STRIDE
                                    + settings["warm_start_episodes"])),
            seed=seed, num_envs=settings["num_envs"], progress=False,
        )  # fmt: skip
    config = NATArgs(
        output_dir=out, method="nut", baseline_prompt="env", negative_ratio=1.0, domain="math_cot",
        model=nat_reproduction.model_path(settings, seed), num_train_epochs=settings["warm_start_epochs"],
        per_device_train_batch_size=settings["batch_size"], learning_rate=settings["warm_start_learning_rate"],
        lr_scheduler_type="constant_with_warmup", warmup_ratio=0.05, max_length=settings["max_length"], seed=seed,
        save_steps=0, logging_steps=50, disable_tqdm=True, report_to="none",
    )  # fmt: skip
    with timer.phase("optimisation"):
        train_nat(config, data)
    return out


def _held_out_families(train: str) -> str:
    """Families disjoint from ``train`` for CORGIArgs' own check (its evaluation is not used here)."""
    from mulligan.envs.verifiers.constraints import FAMILIES

    chosen = set(_families(train))
    return next(f for f in FAMILIES if f not in chosen)


def run_cell(
    arm: Arm, seed: int, budget: str, *, settings: dict[str, Any], workdir: str, timer: PhaseTimer
) -> CellResult:
    """Warm start, PPO with the arm's sessions, evaluation with the critique (module docstring)."""
    from mulligan.training.corgi import CORGIArgs, attempts_to_success, train_corgi
    from mulligan.training.evaluation import evaluate
    from mulligan.training.rollout import EnvPool

    base = warm_start(seed, settings, workdir, timer)
    retry_limit = 0 if arm.train == "retry_0" else settings["retry_limit"]
    env_kwargs = _env_kwargs(settings, settings["train_families"])
    if arm.train == "retry_uninformative":
        env_kwargs["feedback_template"] = UNINFORMATIVE_FEEDBACK
    args = CORGIArgs(
        model=base, output_dir=os.path.join(workdir, "runs", f"{arm.name}-seed{seed}"), retry_limit=retry_limit,
        eval_retry_limit=settings["eval_retry_limit"], train_families=settings["train_families"],
        eval_families=_held_out_families(settings["train_families"]), eval_tasks=0, eval_before=False,
        env_kwargs=json.dumps(env_kwargs), total_steps=settings["ppo_steps"],
        episodes_per_step=settings["episodes_per_step"],
        mini_batch_size=min(8, settings["episodes_per_step"]), learning_rate=settings["ppo_learning_rate"],
        max_new_tokens=settings["max_new_tokens"], num_envs=settings["num_envs"], seed=seed, preset="tiny",
        save_steps=0, report_to="none", disable_tqdm=True,
    )  # fmt: skip
    # PPO's rollouts and updates are interleaved inside train_corgi; the whole call is charged to
    # optimisation (the report says so).
    with timer.phase("optimisation"):
        trainer, _ = train_corgi(args)
    trainer.close()
    attempts = settings["eval_retry_limit"] + 1
    indices = list(range(EVAL_OFFSET, EVAL_OFFSET + settings["test_tasks"]))
    evaluation_kwargs = {**_env_kwargs(settings, settings["eval_families"]), "max_attempts": attempts}
    # The trained model (train_corgi saves it to output_dir) generates on the preset's backend.
    batching = {} if settings.get("generation", "hf") == "vllm" else {"batch_size": settings["num_envs"]}
    agent = model_agent(
        args.output_dir, settings, temperature=0.0, seed=seed, max_new_tokens=settings["max_new_tokens"], **batching
    )
    try:
        with timer.phase("env"), EnvPool(PROTOCOL.env_id, settings["num_envs"], evaluation_kwargs) as pool:
            result = evaluate(TimedAgent(agent, timer), pool, indices, seed=seed + 1, progress=False)
    finally:
        if hasattr(agent, "close"):
            agent.close()
    by_index = {int(t.metadata["task_index"]): t for t in result.trajectories}
    tasks = []
    for i in indices:
        t = by_index[i]
        first = attempts_to_success(t)
        row = {"task_index": i, "task_id": t.task_id}
        for k in range(1, attempts + 1):
            row[f"success_within_{k}"] = float(first is not None and first <= k)
        row["success_last"] = row[f"success_within_{attempts}"]
        row["retry_gain"] = row["success_last"] - row["success_within_1"]
        tasks.append(row)
    mechanism = {f"success_within_{k}": sum(r[f"success_within_{k}"] for r in tasks) / len(tasks)
                 for k in range(1, attempts + 1)}  # fmt: skip
    mechanism["retry_gain"] = sum(r["retry_gain"] for r in tasks) / len(tasks)
    return CellResult(tasks=tasks, mechanism=mechanism, extra={"retry_limit": retry_limit})
