"""``mulligan demo``: the main job, offline on a CPU in minutes (the wall time is printed at the end).

1. Build the offline tiny model (a 1.6M-parameter byte-level Llama, :mod:`mulligan.agents.tiny`).
2. Collect teacher trajectories on procedural math (``Mulligan/Math-v0``, train split): the noisy
   math teacher solves some problems and fails others in realistic ways, giving the positives
   and negatives NAT needs.
3. Fine-tune on positives only (the usual recipe, on the env's own prompt) and with NAT
   (positives and negatives, each with the official chain-of-thought prompt of its label, 1:2;
   arXiv 2402.11651), for the same number of steps.
4. Run one RISE iteration (arXiv 2407.18219) from the positives-only model: two-attempt rollouts
   whose first attempt is the model's own and whose second is the oracle teacher's answer,
   reward-weighted regression.
5. Evaluate every model (and the untrained one) on the held-out test split, each task once:
   success with 95% Wilson intervals, and RISE's metrics m1@t1, m5@t1, m1@t5, p1@t5 (temperature
   1, the first prompt and the most recent attempt in context).
6. Print a table; save ``results.jsonl``, ``results.png`` and every trajectory file under
   ``output_dir``.

The math is kept small so that a 1.6M-parameter model trained for minutes has something to learn:
one-step problems with numbers from 1 to ``max_number`` and no instruction text. The numbers are
whatever they honestly are; with a real model on a GPU, pass ``--model <hub id>`` and larger settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

MATH_TEACHER = "mulligan.agents.teachers.math"


@dataclass
class DemoConfig:
    """Configuration of ``mulligan demo``.

    Attributes:
        output_dir: Where models, trajectories, ``results.jsonl`` and ``results.png`` go.
        model: The starting model: ``tiny`` (offline) or a Hugging Face id/path.
        teacher_episodes: Teacher trajectories collected for training.
        teacher_error_rate: Share of the noisy teacher's episodes that fail (the negatives).
        train_steps: Optimiser steps of each fine-tuning run.
        batch_size: Sequences per step.
        learning_rate: Peak learning rate of every run.
        rise_tasks: Tasks rolled out in the RISE iteration.
        rise_attempts: Attempts per RISE rollout (the paper's 2).
        eval_tasks: Held-out tasks per model: the first ones of the test split, each once (the
            default size's test split has 46).
        rise_metrics: Also compute RISE's multi-turn metrics for every model.
        rise_eval_tasks: Held-out tasks for the RISE metrics (they cost 10 generations per task).
        max_number: Largest number in a problem (the generator's range is 1..max_number).
        templates: Problem templates, comma-separated (see the math generator).
        max_new_tokens: Tokens generated per answer.
        seed: Seed of everything.
        torch_threads: CPU threads for torch (0: torch's default; 1 is faster on a busy shared machine).
        disable_tqdm: Hide progress bars.
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Output folder."})
    model: str = field(default="tiny", metadata={"help": "'tiny' or a HF id/path."})
    teacher_episodes: int = field(default=384, metadata={"help": "Teacher trajectories for training."})
    teacher_error_rate: float = field(default=0.5, metadata={"help": "Noisy teacher's failure share."})
    train_steps: int = field(default=150, metadata={"help": "Steps per fine-tuning run."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate."})
    rise_tasks: int = field(default=64, metadata={"help": "Tasks in the RISE iteration."})
    rise_attempts: int = field(default=2, metadata={"help": "Attempts per RISE rollout."})
    eval_tasks: int = field(default=64, metadata={"help": "Held-out tasks per model."})
    rise_metrics: bool = field(default=True, metadata={"help": "Compute RISE metrics for every model."})
    rise_eval_tasks: int = field(default=32, metadata={"help": "Held-out tasks for the RISE metrics."})
    max_number: int = field(default=5, metadata={"help": "Numbers in problems range over 1..max_number."})
    templates: str = field(default="shopping,ages", metadata={"help": "Problem templates, comma-separated."})
    max_new_tokens: int = field(default=72, metadata={"help": "Tokens per answer (the teacher writes about 60)."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    torch_threads: int = field(default=0, metadata={"help": "Torch CPU threads (0: default)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self) -> None:
        for name in (
            "teacher_episodes",
            "train_steps",
            "batch_size",
            "rise_tasks",
            "rise_attempts",
            "eval_tasks",
            "rise_eval_tasks",
            "max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.teacher_error_rate < 1.0:
            raise ValueError(
                f"teacher_error_rate must lie in (0, 1) so there are positives and negatives, "
                f"got {self.teacher_error_rate}"
            )
        if self.max_number < 5:
            raise ValueError(f"max_number must be >= 5 (the generator needs a range of 5), got {self.max_number}")


def math_env_kwargs(config: DemoConfig, split: str) -> dict[str, Any]:
    """Keyword arguments of the demo's ``Mulligan/Math-v0``: one-step, small-number problems."""
    from mulligan.envs.generators.math import MathGeneratorConfig

    generator = MathGeneratorConfig(
        min_steps=1,
        max_steps=1,
        min_number=1,
        max_number=config.max_number,
        templates=tuple(t.strip() for t in config.templates.split(",") if t.strip()),
        non_integer_share=0.0,
    )
    return {"generator_config": generator, "split": split, "instruction": ""}


def save_plot(rows: list[dict[str, Any]], path: str) -> None:
    """Bar charts: held-out success with its 95% interval, and RISE's metrics, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    metrics = [k for k in ("m1@t1", "m5@t1", "m1@t5", "p1@t5") if all(k in r for r in rows)]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4), squeeze=False)
    ax = axes[0][0]
    success = [r["success"] for r in rows]
    errors = [
        [s - r["success_low"] for s, r in zip(success, rows, strict=True)],
        [r["success_high"] - s for s, r in zip(success, rows, strict=True)],
    ]
    ax.bar(names, success, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out success (95% CI)")
    ax.set_title("Math-v0, tiny model")
    ax.tick_params(axis="x", rotation=20)
    if metrics:
        ax = axes[0][1]
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            ax.bar([i + j * width for i in range(len(rows))], [r[metric] for r in rows], width, label=metric)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], names, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title("RISE metrics (T=1, last attempt in context)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(config: DemoConfig) -> list[dict[str, Any]]:
    """Run the main job (see the module docstring) and return one result row per model."""
    from transformers import set_seed

    from mulligan.agents.context import LastAttempts
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.nat_prompt import NATPromptAgent
    from mulligan.agents.teachers.math import NoisyMathTeacher
    from mulligan.agents.tiny import resolve_model
    from mulligan.training.evaluation import evaluate
    from mulligan.training.nat import NATArgs, train_nat
    from mulligan.training.rise import RISEArgs, evaluate_rise, train_rise
    from mulligan.training.rollout import EnvPool, collect_episodes
    from mulligan.training.stats import format_table
    from mulligan.training.trajectory import TrajectoryStore

    started, cpu_started = time.time(), time.process_time()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    set_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)
    progress = not config.disable_tqdm
    train_kwargs, test_kwargs = math_env_kwargs(config, "train"), math_env_kwargs(config, "test")

    def log(message: str) -> None:
        print(f"[demo {time.time() - started:6.1f}s] {message}", flush=True)

    # 1. The starting model (built offline and cached for "tiny").
    base = resolve_model(config.model)
    log(f"model: {config.model} -> {base}")

    # 2. Teacher trajectories: positives and negatives from the noisy teacher.
    teacher = NoisyMathTeacher(error_rate=config.teacher_error_rate, seed=config.seed)
    teacher_data = collect_episodes(
        "Mulligan/Math-v0", teacher, config.teacher_episodes, env_kwargs=train_kwargs, seed=config.seed,
        store=TrajectoryStore(os.path.join(config.output_dir, "teacher.jsonl")), progress=progress,
    )  # fmt: skip
    positives = sum(t.success for t in teacher_data)
    log(f"teacher: {len(teacher_data)} trajectories, {positives} positive, {len(teacher_data) - positives} negative")

    # 3. Positives-only SFT vs NAT, same steps, same data source.
    common = {
        "model": config.model, "max_steps": config.train_steps, "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "seed": config.seed, "save_steps": 0,
        "logging_steps": max(1, config.train_steps // 5), "disable_tqdm": config.disable_tqdm, "max_length": 512,
        "domain": "math_cot", "baseline_prompt": "env",
    }  # fmt: skip
    models: dict[str, str] = {"untrained": base}
    for method in ("positives_only", "nat"):
        out = os.path.join(config.output_dir, method)
        summary = train_nat(NATArgs(output_dir=out, method=method, **common), teacher_data)
        models[method] = out
        log(
            f"{method}: {summary['positives']} positive + {summary['negatives']} negative examples, "
            f"final loss {summary['train_loss']:.3f}"
        )

    # 4. One RISE iteration from the positives-only model; the second attempt is the oracle's.
    rise = train_rise(
        RISEArgs(
            env_id="Mulligan/Math-v0",
            env_kwargs=train_kwargs,
            output_dir=os.path.join(config.output_dir, "rise"),
            model=models["positives_only"],
            improver=f"{MATH_TEACHER}:MathOracle",
            iterations=1,
            num_tasks=config.rise_tasks,
            max_attempts=config.rise_attempts,
            best_of_n=1,
            max_steps=max(1, config.train_steps // 2),
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate / 3,
            max_new_tokens=config.max_new_tokens,
            num_envs=32,
            seed=config.seed,
            disable_tqdm=config.disable_tqdm,
            save_steps=0,
            logging_steps=max(1, config.train_steps // 10),
            max_length=512,
        )
    )
    models["rise"] = rise["model_dir"]
    log(f"rise: {rise['iterations'][0]}")

    # 5. Held-out evaluation: every task of the test split (up to eval_tasks) once, greedy.
    with EnvPool("Mulligan/Math-v0", 1, test_kwargs) as probe:
        num_test = probe.num_tasks
    eval_indices = list(range(min(config.eval_tasks, num_test)))
    rise_indices = list(range(min(config.rise_eval_tasks, num_test)))
    rows = []
    for name, path in models.items():
        agent = HFAgent(path, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)
        evaluated = NATPromptAgent(agent, domain="math_cot") if name == "nat" else agent
        held_out = evaluate(
            evaluated, "Mulligan/Math-v0", eval_indices, env_kwargs=test_kwargs, seed=config.seed + 1, num_envs=32,
            store=TrajectoryStore(os.path.join(config.output_dir, f"eval-{name}.jsonl")), progress=progress,
        ).summary  # fmt: skip
        row: dict[str, Any] = {
            "model": name,
            "episodes": held_out.episodes,
            "success": held_out.success_rate,
            "success_low": held_out.success_low,
            "success_high": held_out.success_high,
        }
        if config.rise_metrics:
            # RISE's protocol: temperature 1 and the first prompt plus the most recent attempt.
            sampler = HFAgent(
                path, temperature=1.0, max_new_tokens=config.max_new_tokens, seed=config.seed, context=LastAttempts(1)
            )
            row.update(
                evaluate_rise(
                    NATPromptAgent(sampler, domain="math_cot") if name == "nat" else sampler,
                    "Mulligan/Math-v0",
                    rise_indices,
                    env_kwargs=test_kwargs,
                    seed=config.seed + 1,
                    num_envs=32,
                )
            )
        rows.append(row)
        log(f"eval {name}: success {held_out.success_rate:.3f}")

    # 6. Table, JSONL, plot.
    wall = time.time() - started
    with open(os.path.join(config.output_dir, "results.jsonl"), "w", encoding="utf-8") as handle:
        for row in rows:
            record = {**row, "wall_seconds": round(wall, 1), "config": asdict(config)}
            handle.write(json.dumps(record) + "\n")
    save_plot(rows, os.path.join(config.output_dir, "results.png"))
    shown = ("model", "episodes", "success", "m1@t1", "m5@t1", "m1@t5", "p1@t5")
    table = [
        {k: r[k] for k in shown if k in r} | {"95% CI": f"[{r['success_low']:.2f}, {r['success_high']:.2f}]"}
        for r in rows
    ]
    print(format_table(table))
    print(
        f"results: {config.output_dir}/results.jsonl, plot: {config.output_dir}/results.png, "
        f"wall time {wall:.0f}s, CPU time {time.process_time() - cpu_started:.0f}s"
    )
    return rows


def _quiet_libraries() -> None:
    """Keep the demo's output to its own log, bars and table: silence library chatter that says nothing here.

    Weight-loading and dataset-mapping bars repeat for every model; the two warnings are about
    defaults that do not apply on a CPU (pinned memory) or to this run (a renamed argument TRL passes).
    """
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    """``mulligan demo``: parse :class:`DemoConfig` flags and run the main job."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DemoConfig, prog="mulligan demo", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    _quiet_libraries()
    run_demo(config)
    return 0
