"""RISE's claim as an experiment (Qu et al. 2024, arXiv 2407.18219).

Claim: a model trained with RISE improves its answer over turns: after one RISE iteration, success
within five turns (p1@t5, feedback "incorrect, try again" after each wrong attempt) is above the
SFT model's given the same extra training steps, and sequential turns beat parallel samples at
equal samples.

One cell (arm x seed):

1. Teacher data for the seed (:class:`~mulligan.agents.teachers.math.NoisyMathTeacher` on the
   ``Mulligan/Math-v0`` train split from ``seed * 100_000``); the base model is SFT on its
   positives (:func:`mulligan.training.nat.train_nat`, ``positives_only`` with the env's prompt),
   from the tiny model initialised with the seed. Shared by every arm of the seed.
2. ``rise``: one RISE iteration from the base model (:func:`mulligan.training.rise.train_rise`:
   turn 1 on-policy, turn 2 best-of-N self-improvement, reward-weighted regression).
   ``sft_extra``: the base model trained for as many more optimiser steps as RISE took, on the
   same positives (the "more steps" control). ``rise_no_history``: the history-removed control,
   RISE's update on the very rollouts the ``rise`` arm collected (same samples, filter, weights and
   steps) with every attempt trained on the first prompt alone (``--without_history``), so only
   the multi-turn conditioning differs. ``rise_parallel``: the RISE model with five independent
   single-turn samples instead of five turns (equal samples).
3. Evaluation on the first ``test_tasks`` of the test split, each once, temperature 1, the first
   prompt and the most recent attempt in context (the paper's window), in the retry env *without*
   an oracle (feedback after every attempt, right or wrong): per task ``success_within_k``
   (p1@tk), ``p1_t5``, the majority answer over the turns (``m1_t5``) and the repeat rate.
   ``rise_parallel`` fills ``p1_t5`` with pass@5 and ``m1_t5`` with m5@t1 of its parallel samples.
4. Mechanism: the rate at which an attempt repeats the previous (rejected) answer.
"""

from __future__ import annotations

import os
from typing import Any

from mulligan.reproduce import nat as nat_reproduction
from mulligan.reproduce.protocol import Arm, CellResult, Comparison, PhaseTimer, Protocol, TimedAgent, model_agent

PROTOCOL = Protocol(
    paper="rise",
    title="RISE: recursive introspection (arXiv 2407.18219)",
    claim=(
        "After RISE training, a model keeps improving over turns: success within 5 turns (p1@t5) is "
        "above the SFT model's at equal extra training, and sequential turns beat parallel samples "
        "at equal samples."
    ),
    env_id="Mulligan/Math-v0",
    primary_metric="p1_t5",
    metric_description="solved at some attempt within 5 turns, feedback after every attempt (1/0 per task)",
    reference_arm="sft_extra",
    arms=(
        Arm("sft_extra", "sft_extra", "sequential", "SFT model + as many more SFT steps as RISE took"),
        Arm("rise", "rise", "sequential", "SFT model + one RISE iteration (self-improvement, best-of-N)"),
        Arm(
            "rise_no_history",
            "rise_no_history",
            "sequential",
            "RISE's samples and steps, each attempt trained on the first prompt alone (history removed)",
        ),
        Arm("rise_parallel", "rise", "parallel", "the RISE model, 5 independent samples instead of 5 turns"),
    ),
    comparisons=(
        Comparison("rise", "sft_extra", 1, "RISE improves success within 5 turns", primary=True),
        Comparison("rise", "sft_extra", 1, "RISE improves the majority answer over 5 turns", metric="m1_t5"),
        Comparison("rise", "rise_no_history", 1, "training with the earlier attempt in context matters"),
        Comparison("rise", "rise_parallel", 1, "5 sequential turns beat 5 parallel samples (oracle stop)"),
        Comparison("rise", "rise_parallel", 1, "5 turns' majority beats 5 samples' majority", metric="m1_t5"),
        Comparison("rise", "sft_extra", -1, "RISE repeats a rejected answer less often", metric="repeat_rate"),
    ),
    budgets=("default",),
    mechanism=(
        "`repeat_rate`: the share of attempts 2-5 whose answer equals the previous, rejected attempt's "
        "(lower is better; RISE should learn not to repeat). `p1_t1` beside it: first-turn success "
        "should not degrade."
    ),
    decoding="temperature 1.0 everywhere (the paper's), the first prompt + the most recent attempt in context",
    curve_metric="success_within_",
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **{k: nat_reproduction.PRESETS["tiny"][k] for k in ("model", "tiny_model", "max_length", "batch_size")},
        "seeds": 2,
        "test_tasks": 4,
        "teacher_episodes": 12,
        "teacher_error_rate": 0.3,
        "max_number": 50,
        "templates": "shopping,ages",
        "learning_rate": 3e-3,
        "num_train_epochs": 1.0,
        "rise_tasks": 4,
        "best_of_n": 2,
        "rise_learning_rate": 1e-3,
        "rise_epochs": 1.0,
        "turns": 3,
        "max_new_tokens": 8,
        "num_envs": 8,
    },
    "cpu": {
        "model": "tiny",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 500,
        "teacher_episodes": 1024,
        "teacher_error_rate": 0.3,
        "max_number": 99,
        "templates": "ages,sharing",
        "learning_rate": 3e-3,
        "num_train_epochs": 10.0,
        "batch_size": 16,
        "max_length": 512,
        "rise_tasks": 512,
        "best_of_n": 4,
        "rise_learning_rate": 1e-3,
        "rise_epochs": 2.0,
        "turns": 5,
        "max_new_tokens": 72,
        "num_envs": 64,
    },
    "gpu": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 1000,
        "teacher_episodes": 4000,
        "teacher_error_rate": 0.3,
        "max_number": 50,
        "templates": "shopping,ages,rates,sharing,discounts,recipes",
        "learning_rate": 1e-5,
        "num_train_epochs": 1.0,
        "batch_size": 16,
        "max_length": 2048,
        "rise_tasks": 2000,
        "best_of_n": 16,
        "rise_learning_rate": 1e-5,
        "rise_epochs": 1.0,
        "turns": 5,
        "max_new_tokens": 512,
        "num_envs": 64,
    },
}


def env_kwargs(settings: dict[str, Any], split: str) -> dict[str, Any]:
    """One-step (for the tiny preset) problems of ``Mulligan/Math-v0``, no instruction text."""
    from mulligan.envs.generators.math import MathGeneratorConfig

    steps = 1 if settings["model"] == "tiny" else 2
    generator = MathGeneratorConfig(
        min_steps=1,
        max_steps=steps,
        min_number=1,
        max_number=settings["max_number"],
        templates=tuple(t.strip() for t in settings["templates"].split(",") if t.strip()),
        non_integer_share=0.0,
    )
    return {"generator_config": generator, "split": split, "instruction": ""}


def _teacher_data(seed: int, settings: dict[str, Any], workdir: str, timer: PhaseTimer) -> list:
    """The seed's noisy-teacher trajectories on this claim's env (NAT's cached collection)."""
    return nat_reproduction.teacher_data(
        seed, settings, workdir, timer, env_id=PROTOCOL.env_id, train_kwargs=env_kwargs(settings, "train")
    )


def _sft(data: list, out: str, model: str, *, settings: dict[str, Any], seed: int, timer: PhaseTimer, **extra: Any):
    from mulligan.training.nat import NATArgs, train_nat

    summary_path = os.path.join(out, "nat_summary.json")
    if os.path.exists(summary_path):
        import json

        with open(summary_path, encoding="utf-8") as handle:
            return json.load(handle)
    config = NATArgs(
        output_dir=out, method="positives_only", baseline_prompt="env", domain="math_cot", model=model,
        num_train_epochs=settings["num_train_epochs"], per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], lr_scheduler_type="constant_with_warmup", warmup_ratio=0.05,
        max_length=settings["max_length"], seed=seed, save_steps=0, logging_steps=50, disable_tqdm=True,
        report_to="none", **extra,
    )  # fmt: skip
    with timer.phase("optimisation"):
        return train_nat(config, data)


def _rise(base: str, out: str, settings: dict[str, Any], seed: int, timer: PhaseTimer, **extra: Any) -> dict[str, Any]:
    import json

    from mulligan.training.rise import RISEArgs, train_rise

    summary_path = os.path.join(out, "rise_summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            return json.load(handle)
    config = RISEArgs(
        env_id=PROTOCOL.env_id, env_kwargs=env_kwargs(settings, "train"), output_dir=out, model=base,
        improver="self", iterations=1, num_tasks=settings["rise_tasks"],
        task_offset=seed * nat_reproduction.DATA_STRIDE + 50_000, max_attempts=2,
        best_of_n=settings["best_of_n"], temperature=1.0, max_new_tokens=settings["max_new_tokens"],
        num_train_epochs=settings["rise_epochs"], per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["rise_learning_rate"], lr_scheduler_type="constant_with_warmup", warmup_ratio=0.05,
        max_length=settings["max_length"], num_envs=settings["num_envs"], seed=seed, save_steps=0,
        logging_steps=50, disable_tqdm=True, report_to="none", **extra,
    )  # fmt: skip
    # RISE's rollouts are generation and env steps; its update is optimisation. Its own timing
    # is not split, so the whole call is charged to optimisation (stated in the report's docs).
    with timer.phase("optimisation"):
        return train_rise(config)


def trained_model(recipe: str, seed: int, settings: dict[str, Any], workdir: str, timer: PhaseTimer) -> str:
    """The path of the recipe's model for ``seed`` (``rise``, ``rise_no_history`` or ``sft_extra``), cached."""
    data = _teacher_data(seed, settings, workdir, timer)
    models = os.path.join(workdir, "models")
    base = os.path.join(models, f"base-seed{seed}")
    _sft(data, base, nat_reproduction.model_path(settings, seed), settings=settings, seed=seed, timer=timer)
    rise_dir = os.path.join(models, f"rise-seed{seed}")
    rise = _rise(base, rise_dir, settings, seed, timer)
    if recipe == "rise":
        return rise["model_dir"]
    if recipe == "rise_no_history":
        # The same rollouts as the rise arm (not a new collection), trained without their history.
        rollouts = os.path.join(rise_dir, "iter-0", "rollouts.jsonl")
        control = os.path.join(models, f"rise_no_history-seed{seed}")
        return _rise(base, control, settings, seed, timer, without_history=True, rollouts=rollouts)["model_dir"]
    steps = sum(int(i["global_step"]) for i in rise["iterations"])
    extra = os.path.join(models, f"sft_extra-seed{seed}")
    _sft(data, extra, base, settings=settings, seed=seed, timer=timer, max_steps=max(1, steps))
    return extra


def repeat_rate(trajectory: Any) -> float | None:
    """The share of attempts after the first whose answer equals the previous attempt's (``None``: one attempt)."""
    from mulligan.training.rise import answer_key

    answers = [answer_key(turn.action) for turn in trajectory.turns]
    if len(answers) < 2:
        return None
    return sum(a == b for a, b in zip(answers[1:], answers[:-1], strict=True)) / (len(answers) - 1)


def _majority(trajectory_answers: list[tuple[str, bool]], rng) -> float:
    from mulligan.training.evaluation import majority_vote

    answers = [a for a, _ in trajectory_answers]
    return float(majority_vote(answers, [c for _, c in trajectory_answers], rng)[0])


def run_cell(
    arm: Arm, seed: int, budget: str, *, settings: dict[str, Any], workdir: str, timer: PhaseTimer
) -> CellResult:
    """Train (or reuse) the arm's model and evaluate it (see the module docstring)."""
    from mulligan.agents.context import LastAttempts
    from mulligan.envs.verifiers.math import extract_answer
    from mulligan.envs.wrappers import set_stop_on_success
    from mulligan.training.evaluation import by_task, evaluate, task_rng
    from mulligan.training.rollout import EnvPool

    path = trained_model(arm.train, seed, settings, workdir, timer)
    turns = settings["turns"]
    indices = list(range(settings["test_tasks"]))
    model = model_agent(
        path, settings, temperature=1.0, max_new_tokens=settings["max_new_tokens"], seed=seed, context=LastAttempts(1)
    )
    agent = TimedAgent(model, timer)
    test = env_kwargs(settings, "test")
    tasks = []
    with timer.phase("env"):
        if arm.evaluation == "sequential":
            with EnvPool(PROTOCOL.env_id, settings["num_envs"], {**test, "max_attempts": turns}) as pool:
                if pool.num_tasks < len(indices):
                    raise ValueError(f"the test split has {pool.num_tasks} tasks < test_tasks={len(indices)}")
                for env in pool.envs:
                    set_stop_on_success(env, False)  # no oracle: feedback after every attempt
                result = evaluate(agent, pool, indices, seed=seed + 1, progress=False)
            by_index = {int(t.metadata["task_index"]): t for t in result.trajectories}
            for i in indices:
                t = by_index[i]
                solved = [bool(turn.info.get("success")) for turn in t.turns]
                answers = [(extract_answer(turn.action), ok) for turn, ok in zip(t.turns, solved, strict=True)]
                row = {"task_index": i, "task_id": t.task_id, "p1_t1": float(solved[0]) if solved else 0.0}
                for k in range(1, turns + 1):
                    row[f"success_within_{k}"] = float(any(solved[:k]))
                row["p1_t5"] = row[f"success_within_{turns}"]
                row["m1_t5"] = _majority(answers, task_rng(seed, t.task_id))
                row["repeat_rate"] = repeat_rate(t)
                tasks.append(row)
        else:
            result = evaluate(
                agent, PROTOCOL.env_id, indices, env_kwargs=test, samples_per_task=turns, seed=seed + 1,
                num_envs=settings["num_envs"], progress=False,
            )  # fmt: skip
            groups = {int(g[0].metadata["task_index"]): g for g in by_task(result.trajectories)}
            for i in indices:
                group = groups[i]
                answers = [(extract_answer(t.turns[-1].action) if t.turns else None, t.success) for t in group]
                solved = [bool(t.success) for t in group]
                tasks.append({
                    "task_index": i, "task_id": group[0].task_id, "p1_t1": sum(solved) / len(solved),
                    "p1_t5": float(any(solved)), "m1_t5": _majority(answers, task_rng(seed, group[0].task_id)),
                })  # fmt: skip
    repeats = [t["repeat_rate"] for t in tasks if t.get("repeat_rate") is not None]
    mechanism = {"p1_t1": sum(t["p1_t1"] for t in tasks) / len(tasks)}
    if repeats:
        mechanism["repeat_rate"] = sum(repeats) / len(repeats)
    return CellResult(tasks=tasks, mechanism=mechanism, extra={"model": path})


__all__ = ["PRESETS", "PROTOCOL", "repeat_rate", "run_cell"]
