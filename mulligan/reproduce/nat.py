"""NAT's claim as an experiment (Wang et al. 2024, arXiv 2402.11651).

Claim: fine-tuning on negatives *with* the correct/incorrect prompt signal beats positives-only
when positives are scarce, and beats the same data without the signal (NUT).

One cell (arm x seed x budget):

1. Teacher data for the seed: :class:`~mulligan.agents.teachers.math.NoisyMathTeacher` plays
   ``teacher_episodes`` train-split tasks starting at ``seed * 100_000`` (the seed picks the data
   subsample and the teacher's mistakes); cached per seed, shared by every arm.
2. Training through :func:`mulligan.training.nat.train_nat` (the method's public function): the
   arm's recipe (``positives_only``, ``nat``, ``nut``, or ``nat`` with the success labels shuffled
   among the trajectories: the "more data, no information" control), the first ``pos_num``
   positives and ``negative_ratio`` negatives per positive, the tiny model initialised with the
   seed. Budgets: ``epochs`` (the paper's: the same epochs, so extra negatives cost extra steps)
   and ``matched_steps`` (every arm takes positives-only's optimiser steps).
3. Evaluation through :func:`mulligan.training.evaluation.evaluate`: greedy, the first
   ``test_tasks`` tasks of the procedural test split (disjoint by content from every train task;
   checked against this seed's training tasks), each once, the same for every arm. NAT-trained
   arms are prompted with the positive signal, the baselines with the plain prompt, as in the
   official code.
4. Mechanism: NAT-trained arms are evaluated again under the *incorrectly* prompt; if the model
   learned the signal, success falls (``signal_drop = success - success_incorrect_prompt > 0``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Any

from mulligan.reproduce.protocol import Arm, CellResult, Comparison, PhaseTimer, Protocol, TimedAgent, model_agent

PROTOCOL = Protocol(
    paper="nat",
    title="NAT: learning from negatives with a prompt signal (arXiv 2402.11651)",
    claim=(
        "With scarce positives, fine-tuning on positives plus negatives marked by the prompt "
        "('...correctly' / '...incorrectly') gives higher held-out success than positives only, "
        "and than the same data without the signal (NUT)."
    ),
    env_id="Mulligan/MathReAct-v0",
    primary_metric="success",
    metric_description="the episode's final answer equals the reference answer (1/0 per test task)",
    reference_arm="positives_only",
    arms=(
        Arm("positives_only", "positives_only", "plain", "SFT on the positives only (the usual recipe)"),
        Arm("nat", "nat", "positive_signal", "SFT on positives + negatives, each prompted with its label (NAT)"),
        Arm("nut", "nut", "plain", "the same positives + negatives, no signal (NUT)"),
        Arm(
            "nat_shuffled",
            "nat_shuffled",
            "positive_signal",
            "NAT with the labels shuffled among trajectories (more data, no information)",
        ),
    ),
    comparisons=(
        Comparison("nat", "positives_only", 1, "negatives with the signal beat positives only", primary=True),
        Comparison("nat", "nut", 1, "the signal matters: NAT beats the same data without it"),
        Comparison("nat", "nat_shuffled", 1, "the labels matter: NAT beats NAT with shuffled labels"),
    ),
    budgets=("epochs", "matched_steps"),
    mechanism=(
        "NAT-trained arms are evaluated a second time under the 'incorrectly' prompt. If the model "
        "learned to condition on the signal, success falls: `signal_drop` = success under the "
        "positive prompt - success under the negative prompt > 0 (for the shuffled-label control it "
        "should be about 0)."
    ),
    decoding="greedy (temperature 0), the same max_new_tokens and turn cap for every arm",
)

#: Sizes. ``tiny`` is for tests; ``cpu`` is the learnable regime chosen on the validation split
#: (docs/reproduce.md, try 8: positives-only at 0.66 on 128 validation problems after 750 steps);
#: ``gpu`` is a paper-like setting for a 0.5 B instruct model.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": "tiny",
        "tiny_model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "seeds": 2,
        "test_tasks": 6,
        "eval_split": "test",
        "teacher_episodes": 12,
        "teacher_error_rate": 0.5,
        "pos_num": 3,
        "negative_ratio": 2.0,
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 50,
        "templates": "shopping,ages",
        "domain": "math_cot",
        "position": "suffix",
        "learning_rate": 3e-3,
        "num_train_epochs": 1.0,
        "batch_size": 4,
        "max_length": 512,
        "max_new_tokens": 8,
        "max_turns": 2,
        "num_envs": 8,
    },
    "cpu": {
        "model": "tiny",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 500,
        "eval_split": "test",
        "teacher_episodes": 2000,
        "teacher_error_rate": 0.5,
        "pos_num": 1000,
        "negative_ratio": 2.0,
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 30,
        "templates": "shopping,ages,sharing,discounts",
        "domain": "math_cot",
        "position": "suffix",
        "learning_rate": 3e-3,
        "num_train_epochs": 12.0,
        "batch_size": 16,
        "max_length": 512,
        "max_new_tokens": 80,
        "max_turns": 4,
        "num_envs": 64,
    },
    "gpu": {
        # A small hub instruct model; the paper fine-tunes Llama-2-7B-chat for 2 epochs at lr 5e-5.
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "tiny_model": {},
        "seeds": 5,
        "test_tasks": 1000,
        "eval_split": "test",
        "teacher_episodes": 4000,
        "teacher_error_rate": 0.5,
        "pos_num": 500,
        "negative_ratio": 2.0,
        "min_steps": 2,
        "max_steps": 5,
        "max_number": 50,
        "templates": "shopping,ages,rates,sharing,discounts,recipes",
        "domain": "math",
        "position": "suffix",
        "learning_rate": 5e-5,
        "num_train_epochs": 2.0,
        "batch_size": 16,
        "max_length": 2048,
        "max_new_tokens": 256,
        "max_turns": 10,
        "num_envs": 64,
    },
}

#: Train-split indices of seed ``s`` start at ``s * DATA_STRIDE``; validation tasks at ``VALIDATION_START``.
DATA_STRIDE = 100_000
VALIDATION_START = 10_000_000


def env_kwargs(settings: dict[str, Any], split: str) -> dict[str, Any]:
    """``gymnasium.make`` keyword arguments of the claim's env for ``split`` (``train`` or ``test``)."""
    from mulligan.envs.generators.math import MathGeneratorConfig

    generator = MathGeneratorConfig(
        min_steps=settings["min_steps"],
        max_steps=settings["max_steps"],
        min_number=2,
        max_number=settings["max_number"],
        templates=tuple(t.strip() for t in settings["templates"].split(",") if t.strip()),
        non_integer_share=0.0,
    )
    return {"generator_config": generator, "split": split}


def _signatures(settings: dict[str, Any], split: str, indices: list[int]) -> list[str]:
    from mulligan.envs.generators.math import math_task_signature
    from mulligan.training.rollout import EnvPool

    with EnvPool(PROTOCOL.env_id, 1, env_kwargs(settings, split)) as pool:
        source = pool.envs[0].unwrapped.source
        return [math_task_signature(source.get(i)) for i in indices]


def evaluation_tasks(settings: dict[str, Any]) -> tuple[str, list[int]]:
    """``(split, indices)`` every arm is scored on, each once.

    ``eval_split="test"``: the first ``test_tasks`` of the procedural test split. ``"validation"``
    (for choosing the regime, never the test split): train-split tasks from
    :data:`VALIDATION_START` on whose content appears in no seed's training data.
    """
    if settings["eval_split"] == "test":
        from mulligan.training.rollout import EnvPool

        with EnvPool(PROTOCOL.env_id, 1, env_kwargs(settings, "test")) as pool:
            available = pool.num_tasks
        if available < settings["test_tasks"]:
            raise ValueError(
                f"the test split of this generator config has {available} tasks, fewer than test_tasks="
                f"{settings['test_tasks']}: widen max_number/templates/steps or lower test_tasks"
            )
        return "test", list(range(settings["test_tasks"]))
    if settings["eval_split"] != "validation":
        raise ValueError(f"eval_split must be 'test' or 'validation', got {settings['eval_split']!r}")
    used = set()
    for seed in range(settings["seeds"]):
        start = seed * DATA_STRIDE
        used.update(_signatures(settings, "train", list(range(start, start + settings["teacher_episodes"]))))
    # A small generator config leaves few unseen problems: scan widely (signatures are cheap).
    candidates = list(range(VALIDATION_START, VALIDATION_START + 40 * settings["test_tasks"]))
    kept, seen = [], set(used)
    for index, signature in zip(candidates, _signatures(settings, "train", candidates), strict=True):
        if signature not in seen:
            kept.append(index)
            seen.add(signature)
        if len(kept) == settings["test_tasks"]:
            return "train", kept
    raise ValueError("too few distinct validation tasks: widen the generator config or lower test_tasks")


def teacher_data(
    seed: int,
    settings: dict[str, Any],
    workdir: str,
    timer: PhaseTimer,
    *,
    env_id: str | None = None,
    train_kwargs: dict[str, Any] | None = None,
) -> list:
    """The seed's teacher trajectories (collected once, cached under ``workdir/data``).

    ``env_id`` and ``train_kwargs`` default to this claim's env and training split; RISE's
    reproduction passes its own (the same noisy teacher, on single-answer math).
    """
    from mulligan.agents.teachers.math import NoisyMathTeacher
    from mulligan.training.rollout import collect_episodes
    from mulligan.training.trajectory import TrajectoryStore, load_trajectories

    path = os.path.join(workdir, "data", f"teacher-seed{seed}.jsonl")
    if os.path.exists(path):
        return load_trajectories(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    start = seed * DATA_STRIDE
    with timer.phase("env"):
        data = collect_episodes(
            env_id or PROTOCOL.env_id,
            TimedAgent(NoisyMathTeacher(error_rate=settings["teacher_error_rate"], seed=seed), timer),
            settings["teacher_episodes"],
            env_kwargs=train_kwargs if train_kwargs is not None else env_kwargs(settings, "train"),
            task_indices=list(range(start, start + settings["teacher_episodes"])),
            seed=seed,
            num_envs=settings["num_envs"],
            store=TrajectoryStore(partial),
            progress=False,
        )
    os.replace(partial, path)
    return data


def shuffled_labels(trajectories: list, seed: int) -> list:
    """The trajectories with their success flags permuted among them (the same number of positives)."""
    flags = [t.success for t in trajectories]
    random.Random(seed).shuffle(flags)
    return [dataclasses.replace(t, success=f) for t, f in zip(trajectories, flags, strict=True)]


def model_path(settings: dict[str, Any], seed: int) -> str:
    """The starting model: the tiny model initialised with ``seed``, or the hub model."""
    from mulligan.agents.tiny import resolve_model

    if settings["model"] == "tiny":
        return resolve_model("tiny", **{**settings.get("tiny_model", {}), "seed": seed})
    return settings["model"]


def train(
    recipe: str, seed: int, budget: str, data: list, *, settings: dict[str, Any], workdir: str, timer: PhaseTimer
):
    """Train (or reuse) the recipe's model for this seed and budget; returns ``(path, summary)``."""
    from mulligan.training.nat import NATArgs, train_nat

    # Positives-only has no negatives: its two budgets are the same run, trained once.
    key_budget = "any" if recipe == "positives_only" else budget
    out = os.path.join(workdir, "models", f"{recipe}-{key_budget}-seed{seed}")
    summary_path = os.path.join(out, "nat_summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            return out, json.load(handle)
    method = "nat" if recipe == "nat_shuffled" else recipe
    trajectories = shuffled_labels(data, seed) if recipe == "nat_shuffled" else data
    config = NATArgs(
        output_dir=out,
        method=method,
        model=model_path(settings, seed),
        domain=settings["domain"],
        position=settings["position"],
        baseline_prompt="official",
        pos_num=settings["pos_num"],
        negative_ratio=settings["negative_ratio"],
        budget="epochs" if budget == "epochs" else "matched_steps",
        num_train_epochs=settings["num_train_epochs"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="constant_with_warmup",
        warmup_ratio=0.05,
        max_length=settings["max_length"],
        seed=seed,
        save_steps=0,
        logging_steps=50,
        disable_tqdm=True,
        report_to="none",
    )
    with timer.phase("optimisation"):
        summary = train_nat(config, trajectories)
    return out, summary


def nat_agent(path: str, evaluation: str, settings: dict[str, Any], seed: int, timer: PhaseTimer):
    """The evaluated agent: the greedy model behind the NAT prompt of the arm's evaluation mode.

    The model generates through :func:`~mulligan.reproduce.protocol.model_agent` (the preset's
    backend). ``plain``: the official plain prompt (baselines); ``positive_signal``: NAT's *correctly*
    prompt; ``negative_signal``: the *incorrectly* prompt (mechanism check only).
    """
    from mulligan.agents.nat_prompt import NATPromptAgent

    batching = {} if settings.get("generation", "hf") == "vllm" else {"batch_size": settings["num_envs"]}
    model = model_agent(
        path, settings, temperature=0.0, max_new_tokens=settings["max_new_tokens"], seed=seed, **batching
    )
    agent = NATPromptAgent(
        model,
        domain=settings["domain"],
        position=settings["position"],
        signal=evaluation != "plain",
        negative_signal=evaluation == "negative_signal",
    )
    return TimedAgent(agent, timer)


def _evaluate(agent, settings: dict[str, Any], split: str, indices: list[int], *, seed: int, timer: PhaseTimer):
    from mulligan.training.evaluation import evaluate

    with timer.phase("env"):
        result = evaluate(
            agent,
            PROTOCOL.env_id,
            indices,
            env_kwargs=env_kwargs(settings, split),
            seed=seed + 1,
            num_envs=settings["num_envs"],
            max_turns=settings["max_turns"],
            progress=False,
        )
    by_index = {int(t.metadata["task_index"]): t for t in result.trajectories}
    return [by_index[i] for i in indices]


def run_cell(
    arm: Arm, seed: int, budget: str, *, settings: dict[str, Any], workdir: str, timer: PhaseTimer
) -> CellResult:
    """Train and evaluate one cell (see the module docstring)."""
    from mulligan.envs.generators.math import math_task_signature

    # The evaluation tasks first: a config with too few held-out tasks fails before any training.
    split, indices = evaluation_tasks(settings)
    data = teacher_data(seed, settings, workdir, timer)
    path, summary = train(arm.train, seed, budget, data, settings=settings, workdir=workdir, timer=timer)
    trajectories = _evaluate(
        nat_agent(path, arm.evaluation, settings, seed, timer), settings, split, indices, seed=seed, timer=timer
    )
    trained_on = {math_task_signature(t.task) for t in data}
    overlap = sum(math_task_signature(t.task) in trained_on for t in trajectories)
    if overlap:
        raise ValueError(f"{overlap} evaluation tasks share their content with seed {seed}'s training tasks")
    tasks = [
        {"task_index": i, "task_id": t.task_id, "success": float(t.success), "turns": len(t.turns)}
        for i, t in zip(indices, trajectories, strict=True)
    ]
    success = sum(t["success"] for t in tasks) / len(tasks)
    mechanism: dict[str, float] = {}
    if arm.evaluation == "positive_signal":
        negative = _evaluate(
            nat_agent(path, "negative_signal", settings, seed, timer), settings, split, indices, seed=seed, timer=timer
        )
        under_negative = sum(t.success for t in negative) / len(negative)
        mechanism = {"success_incorrect_prompt": under_negative, "signal_drop": success - under_negative}
    extra = {
        "split": split,
        "examples": summary.get("examples"),
        "positives": summary.get("positives"),
        "negatives": summary.get("negatives"),
        "global_step": summary.get("global_step"),
        "train_loss": summary.get("train_loss"),
        "teacher_success": sum(t.success for t in data) / max(len(data), 1),
    }
    return CellResult(tasks=tasks, mechanism=mechanism, extra=extra)
