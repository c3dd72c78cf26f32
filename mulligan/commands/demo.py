"""``mulligan demo``: one paper's claim in miniature, offline on a CPU in about ten minutes.

The claim (NAT, arXiv 2402.11651): when correct examples are scarce, also training on *wrong*
solutions, each marked in the prompt as "solve it correctly" or "solve it incorrectly", gives a
better model than training on the correct ones alone.

What the demo does, end to end (the wall time is printed at the end):

1. A teacher that makes realistic mistakes (:class:`~mulligan.agents.teachers.math.NoisyMathTeacher`)
   solves one-step word problems with a calculator (``Mulligan/MathReAct-v0``: ``Thought: ...``,
   ``Action: calculate[3*20]``, ``Observation: 60``, ``Action: finish[60]``). Its correct solutions are
   the positives, its failed ones the negatives.
2. For each seed, a small byte-level transformer is trained *from scratch* twice:
   ``positives_only`` (the usual recipe) and ``nat`` (positives plus negatives with the signal).
   The seed sets the model's initial weights, the teacher's tasks and its mistakes.
3. Both models solve the same held-out problems (never seen in training, by content), each once,
   greedily. The NAT model is also asked with the "incorrectly" prompt: if its success falls, it
   learned to read the signal (the mechanism check).
4. The comparison: the paired per-problem difference ``nat - positives_only`` with a 95% bootstrap
   interval over seeds and problems; the verdict is computed from it ("reproduced in direction",
   "contradicted" or "inconclusive"). A table, ``success.png``, ``report.md`` and ``results.jsonl`` go
   to ``--output_dir``.

The sizes were chosen on a validation split (docs/reproduce.md, "what was tried"), never on the
test split, for a regime where the positives-only model lands between 30% and 70% held-out
success: a 2-layer, 128-wide model (about 0.6 M parameters), problems with base numbers up to 16
(the smallest range whose test split holds 256 distinct problems), 1,000 positives and 620
optimiser steps (10 epochs): positives-only reached 0.52 on validation (0.30 after 500 steps:
copying numbers from the question is learned late). So that it fits in about ten minutes on 2
cores, NAT gets the same number of steps as positives-only (``--budget matched_steps``, compute
parity) and the two seeds train side by side (``--workers 2``); the paper's budget, the same
epochs over 3x the data, is ``--budget epochs`` (about three times as long). Every size is a
flag. The full experiment (5 seeds, four arms, two budgets) is
``mulligan reproduce nat``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoConfig:
    """Configuration of ``mulligan demo``.

    Attributes:
        output_dir: Where ``results.jsonl``, ``report.md``, ``success.png`` and the models go.
        seeds: Training runs per arm (each: its own initial weights, data and teacher mistakes).
        test_tasks: Held-out problems every model solves, each once.
        eval_split: ``test`` (the held-out test split) or ``validation`` (train-split problems unseen
            in training: for choosing sizes without looking at the test split).
        teacher_episodes: Problems the teacher solves per seed (about half end wrong).
        pos_num: Positives kept per seed: scarce, as in the claim.
        negative_ratio: Negatives per positive for NAT (the paper's 2).
        budget: ``epochs`` (the paper's: the same epochs for both arms, so NAT's extra data costs
            extra steps) or ``matched_steps`` (NAT gets positives-only's number of steps).
        epochs: Passes over each arm's training data.
        batch_size: Sequences per optimiser step.
        learning_rate: Learning rate (constant after a short warm-up).
        hidden_size: Width of the tiny model.
        num_layers: Transformer blocks of the tiny model.
        num_heads: Attention heads per block.
        max_number: Largest number in a problem.
        max_new_tokens: Tokens generated per turn.
        workers: Processes training side by side (one seed each; 1: everything in this process).
        torch_threads: CPU threads for torch per process (0: the cores divided among the workers).
        disable_tqdm: Hide the progress bar.
        overwrite: Start again instead of resuming an earlier run in ``output_dir``.
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Output folder."})
    seeds: int = field(default=2, metadata={"help": "Training runs per arm."})
    test_tasks: int = field(default=256, metadata={"help": "Held-out problems, each solved once per model."})
    eval_split: str = field(default="test", metadata={"help": "test | validation (for choosing sizes)."})
    teacher_episodes: int = field(default=2000, metadata={"help": "Teacher problems per seed."})
    pos_num: int = field(default=1000, metadata={"help": "Positives kept per seed."})
    negative_ratio: float = field(default=2.0, metadata={"help": "Negatives per positive (paper: 2)."})
    budget: str = field(default="matched_steps", metadata={"help": "matched_steps | epochs (paper's)."})
    epochs: float = field(default=10.0, metadata={"help": "Passes over the positives (and, under epochs, NAT's data)."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate."})
    hidden_size: int = field(default=128, metadata={"help": "Tiny model width."})
    num_layers: int = field(default=2, metadata={"help": "Tiny model blocks."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads per block."})
    max_number: int = field(default=16, metadata={"help": "Largest base number in a problem."})
    max_new_tokens: int = field(default=80, metadata={"help": "Tokens per turn."})
    workers: int = field(default=2, metadata={"help": "Processes training side by side (one seed each)."})
    torch_threads: int = field(default=0, metadata={"help": "Torch threads per process (0: cores / workers)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    overwrite: bool = field(default=False, metadata={"help": "Start again instead of resuming."})

    def __post_init__(self) -> None:
        for name in ("seeds", "test_tasks", "teacher_episodes", "pos_num", "batch_size", "max_new_tokens", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seeds < 2:
            raise ValueError(
                f"seeds must be >= 2: one training run says nothing about run-to-run spread, got {self.seeds}"
            )
        if self.eval_split not in ("test", "validation"):
            raise ValueError(f"eval_split must be 'test' or 'validation', got {self.eval_split!r}")
        if self.budget not in ("epochs", "matched_steps"):
            raise ValueError(f"budget must be 'epochs' or 'matched_steps', got {self.budget!r}")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.negative_ratio <= 0:
            raise ValueError("epochs, learning_rate and negative_ratio must be > 0")
        if self.hidden_size < 8 or self.hidden_size % 2 or self.num_layers < 1:
            raise ValueError(
                f"need an even hidden_size >= 8 and num_layers >= 1, got {self.hidden_size}, {self.num_layers}"
            )
        if self.num_heads < 1 or self.hidden_size % (2 * self.num_heads):
            raise ValueError(
                f"hidden_size must split into num_heads heads of even size, got {self.hidden_size} and {self.num_heads}"
            )
        if self.max_number < 6:
            raise ValueError(
                f"max_number must be >= 6 (numbers start at 2; the generator needs a range of 5), got {self.max_number}"
            )


def demo_settings(config: DemoConfig) -> dict[str, Any]:
    """The settings of :mod:`mulligan.reproduce.nat` for the demo (its ``cpu`` preset, smaller)."""
    from mulligan.reproduce import nat

    return {
        **nat.PRESETS["cpu"],
        "tiny_model": {
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "intermediate_size": 4 * config.hidden_size,
        },
        "seeds": config.seeds,
        "test_tasks": config.test_tasks,
        "eval_split": config.eval_split,
        "teacher_episodes": config.teacher_episodes,
        "pos_num": config.pos_num,
        "negative_ratio": config.negative_ratio,
        "max_number": config.max_number,
        "num_train_epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "max_new_tokens": config.max_new_tokens,
        "max_turns": 3,
    }


def demo_parameters(config: DemoConfig) -> int:
    """Parameters of the demo's tiny model (tied embeddings over the 261-symbol byte vocabulary)."""
    width, layers = config.hidden_size, config.num_layers
    per_layer = 4 * width * width + 3 * width * 4 * width + 2 * width
    return 261 * width + layers * per_layer + width


def demo_protocol(budget: str):
    """NAT's protocol cut to the demo: positives-only vs NAT under one budget."""
    from mulligan.reproduce import nat

    protocol = nat.PROTOCOL
    return dataclasses.replace(
        protocol,
        arms=tuple(protocol.arm(name) for name in ("positives_only", "nat")),
        comparisons=(protocol.primary,),
        budgets=(budget,),
    )


def explain(config: DemoConfig, analysis: dict[str, Any], settings: dict[str, Any]) -> str:
    """The text a newcomer reads: what was trained on what, the table, the comparison, the verdict."""
    from mulligan.training.stats import format_table

    params = f"about {demo_parameters(config) / 1e6:.1f} M"
    arms = {row["arm"]: row for row in analysis["arms"]}
    mechanism = {(m["arm"], m["check"]): m for m in analysis["mechanism"]}
    table = []
    for name, what in (
        ("positives_only", "trained on correct solutions only"),
        ("nat", "also on wrong ones, marked 'incorrectly' in the prompt"),
    ):
        row = arms.get(name)
        if row is None:
            continue
        table.append(
            {
                "model": name,
                "what": what,
                "success per seed": ", ".join(f"{v:.2f}" for v in row["per_seed"].values()),
                "mean": row["mean"],
                # A success rate lies in [0, 1]; the t-interval of two seeds can cross those bounds.
                "95% interval over seeds": f"[{max(0.0, row['low']):.2f}, {min(1.0, row['high']):.2f}]",
            }
        )
    primary, regime = analysis["primary"], analysis["regime"]
    lines = [
        "",
        f"What was trained: a byte-level transformer ({params} parameters, {config.num_layers} layers) from scratch, "
        f"{config.seeds} times per recipe, on one-step word problems solved with a calculator "
        f"({settings['pos_num']} correct teacher solutions per run; NAT adds "
        f"{round(settings['negative_ratio'] * settings['pos_num'])} wrong ones).",
        "Budget: "
        + (
            "both recipes take the same number of optimiser steps (compute parity: NAT sees each example fewer times)."
            if config.budget == "matched_steps"
            else "the same epochs over each recipe's data (NAT takes about 3x the steps, as in the paper)."
        ),
        f"Scored on: {primary['tasks'] if primary else config.test_tasks} held-out problems "
        f"({config.eval_split} split, never seen in training), each solved once per model, greedy. "
        "Success = the final answer is right.",
        "",
        format_table(table),
        "",
    ]
    if primary is not None:
        lines.append(
            f"NAT - positives-only, per problem, averaged: {primary['mean']:+.3f}, 95% interval "
            f"[{primary['low']:+.3f}, {primary['high']:+.3f}] (bootstrap over seeds and problems)."
        )
    drop = mechanism.get(("nat", "signal_drop"))
    under = mechanism.get(("nat", "success_incorrect_prompt"))
    if drop is not None and under is not None:
        learned = "it learned to read the signal" if drop["mean"] > 0.05 else "it barely reacts to the signal"
        lines.append(
            f"Mechanism: NAT asked to solve 'incorrectly' succeeds {under['mean']:.2f} (vs "
            f"{arms['nat']['mean']:.2f} asked 'correctly'): {learned}."
        )
    lines.append(
        f"Regime: positives-only at {regime['mean']:.2f} "
        + (
            "is inside 30-70%, so a difference would be measurable."
            if regime["in_regime"]
            else "is OUTSIDE 30-70%: at a floor or ceiling, a null difference says little."
        )
    )
    lines.append(f"Verdict on 'NAT beats positives-only' (computed from the interval): {analysis['verdict']}.")
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo (see the module docstring); returns the analysis of :mod:`mulligan.reproduce.analysis`."""
    from mulligan.reproduce import nat
    from mulligan.reproduce.analysis import analyse
    from mulligan.reproduce.grid import read_results, run_grid
    from mulligan.reproduce.report import render_report, save_plots

    started = time.time()
    workers = min(config.workers, config.seeds)
    if config.torch_threads and workers == 1:  # with workers, run_grid sets each worker's threads
        import torch

        torch.set_num_threads(config.torch_threads)
    settings = demo_settings(config)
    protocol = demo_protocol(config.budget)

    def log(message: str) -> None:
        print(f"[demo {time.time() - started:6.1f}s] {message}", flush=True)

    log(
        f"training positives_only and nat, {config.seeds} seeds each; "
        f"evaluating on {config.test_tasks} held-out problems"
    )
    run_grid(
        protocol, nat.run_cell, settings, config.output_dir, seeds=range(config.seeds),
        progress=not config.disable_tqdm, overwrite=config.overwrite, log=log, workers=workers,
        torch_threads=config.torch_threads,
    )  # fmt: skip
    task_rows, cell_rows = read_results(os.path.join(config.output_dir, "results.jsonl"))
    analysis = analyse(protocol, task_rows, cell_rows)
    plots = save_plots(protocol, analysis, config.output_dir)
    seconds: dict[str, float] = {}
    for cell in cell_rows:
        for phase, value in cell.get("seconds", {}).items():
            seconds[phase] = seconds.get(phase, 0.0) + float(value)
    command = "mulligan demo " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["demo"] else sys.argv[1:])
    provenance = sorted({f"commit `{c.get('commit', 'unknown')}` on {c.get('machine', 'unknown')}" for c in cell_rows})
    report = render_report(
        protocol, analysis, command=command, preset="demo", settings=settings, seconds=seconds, plots=plots,
        cells=len(cell_rows), provenance=provenance,
    )  # fmt: skip
    with open(os.path.join(config.output_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    print(explain(config, analysis, settings))
    print(
        f"Files: {config.output_dir}/report.md, success.png, results.jsonl. Wall time {time.time() - started:.0f}s. "
        "The full experiment: mulligan reproduce nat."
    )
    return analysis


def _quiet_libraries() -> None:
    """Keep the demo's output to its own log, bar and table: silence library chatter that says nothing here."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    """``mulligan demo``: parse :class:`DemoConfig` flags and run the demo."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DemoConfig, prog="mulligan demo", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    _quiet_libraries()
    try:
        run_demo(config)
    except ValueError as error:  # e.g. resuming into a folder written with other flags
        print(f"mulligan demo: error: {error}", file=sys.stderr)
        return 2
    return 0
