"""Time per training step of mulligan's GRPO against a plain TRL GRPOTrainer, and of PPO episodes.

Three rows, each timed over the same tiny model, data and settings in one run:

* ``trl-plain``: a plain ``trl.GRPOTrainer`` with a hand-written reward function that scores the
  completion against the target string held in the dataset (the baseline);
* ``mulligan-grpo single-turn``: :func:`mulligan.training.grpo.build_grpo_trainer` on the same
  Echo tasks, its reward stepping the env;
* ``mulligan-grpo episodes``: the same, with ``max_attempts`` retries (multi-turn episodes through
  ``rollout_func`` with ``env_mask``);
* ``mulligan-ppo episodes``: :class:`mulligan.training.ppo.PPOTrainer` on the multi-turn episodes.

Reported: seconds per optimizer step (median over the timed steps after warm-up), the ratio to
the plain TRL baseline, and peak memory (Python allocations through ``tracemalloc``, and the
process's maximum resident set size).

``--learning`` instead runs the learning checks that the test suite marks ``slow``
(``tests/training/test_ppo.py`` and ``tests/training/test_grpo.py``, ``*_raises_echo_success_rate``): from a warm start
that answers Echo with a random one of four words (~25% success), PPO (15 iterations) and GRPO
(20 steps) each train on Echo, and the held-out success rate (64 tasks, sampling at temperature 1,
through :func:`mulligan.training.evaluation.evaluate`) is reported before and after, with the
pass rule of the tests (before < 0.5, after >= 0.8, gain >= 0.3).

Usage: ``python benchmarks/bench_rl.py --steps 6 --batch 16 --generations 8``;
``python benchmarks/bench_rl.py --learning``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
import tracemalloc

import torch
from transformers import TrainerCallback

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
from mulligan.envs.testing import EchoConfig, echo_score, generate_echo_task


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (generation, reward, loss, update)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        """Start the clock."""
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        """Stop the clock."""
        self.times.append(time.perf_counter() - self._start)


def plain_trl_trainer(model, tokenizer, args, output_dir):
    """A plain TRL GRPOTrainer on Echo prompts with a reward written against the dataset's targets."""
    import trl
    from datasets import Dataset

    config = EchoConfig()
    rows = []
    for index in range(args.tasks):
        target = generate_echo_task(config, 0, index)["target"]
        rows.append({"prompt": [{"role": "user", "content": f"Repeat exactly: {target}"}], "target": target})

    def echo_reward(completions, target, **kwargs):
        return [echo_score(c[0]["content"], t) for c, t in zip(completions, target, strict=True)]

    grpo_args = trl.GRPOConfig(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_completion_length=args.max_tokens,
        learning_rate=1e-5,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        loss_type="dapo",
        remove_unused_columns=False,
    )
    return trl.GRPOTrainer(
        model=model,
        reward_funcs=echo_reward,
        args=grpo_args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def mulligan_grpo_trainer(model, tokenizer, args, output_dir, max_attempts):
    """mulligan's GRPO on the same Echo tasks (score as reward, like the baseline)."""
    from mulligan.training.grpo import GRPOArgs, build_grpo_trainer

    config = GRPOArgs(
        output_dir=output_dir,
        max_steps=args.steps,
        num_train_tasks=args.tasks,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_new_tokens=args.max_tokens,
        learning_rate=1e-5,
        disable_tqdm=True,
        max_attempts=max_attempts,
        reward_field="score",
        num_envs=16,
        env_kwargs=json.dumps({"partial_credit": True}),
        logging_steps=1,
        save_steps=0,
    )
    return build_grpo_trainer(config, model, tokenizer)


def measure(build, steps_to_skip: int):
    """Build and train; returns (median seconds per step, peak tracemalloc MiB)."""
    tracemalloc.start()
    trainer = build()
    timer = StepTimer()
    if hasattr(trainer, "add_callback"):
        trainer.add_callback(timer)
        trainer.train()
    else:  # PPOTrainer: time each iteration
        while trainer.step < trainer.args.total_steps:
            start = time.perf_counter()
            trainer.train_step()
            timer.times.append(time.perf_counter() - start)
        trainer.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    timed = timer.times[steps_to_skip:] or timer.times
    return statistics.median(timed), peak / 2**20


def main() -> None:
    """Run the rows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per row (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=16, help="completions per step")
    parser.add_argument("--generations", type=int, default=8, help="GRPO group size")
    parser.add_argument("--tasks", type=int, default=64, help="prompts in the dataset")
    parser.add_argument("--max_tokens", type=int, default=16, help="tokens per completion (per turn)")
    parser.add_argument("--attempts", type=int, default=3, help="attempts per multi-turn episode")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--model_size",
        choices=["default", "small"],
        default="default",
        help="tiny model size: the package default (1.6M params) or a 0.1M one",
    )
    parser.add_argument(
        "--learning",
        action="store_true",
        help="run the PPO and GRPO learning checks on Echo instead of the timing rows",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.learning:
        learning()
        return
    # Import everything first, so that no row's tracemalloc peak counts module imports.
    import datasets  # noqa: F401
    import trl  # noqa: F401

    import mulligan.training.grpo
    import mulligan.training.ppo  # noqa: F401

    size = (
        TinyModelConfig()
        if args.model_size == "default"
        else TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    )

    def fresh():
        model, tokenizer = build_tiny_model(size)
        tokenizer.padding_side = "left"
        return model, tokenizer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("trl-plain single-turn", *measure(lambda: plain_trl_trainer(*fresh(), args, tmp + "/a"), 1)))
        rows.append(
            ("mulligan-grpo single-turn", *measure(lambda: mulligan_grpo_trainer(*fresh(), args, tmp + "/b", 1), 1))
        )
        rows.append(
            (
                f"mulligan-grpo episodes (x{args.attempts})",
                *measure(lambda: mulligan_grpo_trainer(*fresh(), args, tmp + "/c", args.attempts), 1),
            )
        )

        def ppo():
            from mulligan.training.ppo import PPOArgs, PPOTrainer

            config = PPOArgs(
                output_dir=tmp + "/d",
                total_steps=args.steps,
                episodes_per_step=args.batch,
                mini_batch_size=args.batch // 2,
                ppo_epochs=1,
                max_new_tokens=args.max_tokens,
                max_attempts=args.attempts,
                disable_tqdm=True,
                num_envs=16,
                env_kwargs=json.dumps({"partial_credit": True}),
            )
            return PPOTrainer(config, *fresh())

        rows.append((f"mulligan-ppo episodes (x{args.attempts})", *measure(ppo, 1)))
    baseline = rows[0][1]
    print(
        f"tiny model {args.model_size}, batch {args.batch}, group {args.generations}, "
        f"{args.max_tokens} tokens/turn, {args.threads} thread(s)"
    )
    print(f"{'row':34s} {'s/step':>8s} {'vs TRL':>7s} {'peak py MiB':>12s}")
    for name, seconds, peak in rows:
        print(f"{name:34s} {seconds:8.3f} {seconds / baseline:7.2f} {peak:12.1f}")
    print(f"max RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def learning() -> None:
    """The slow learning tests' runs: held-out Echo success before and after PPO and GRPO."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from rl_helpers import ECHO_KWARGS, echo_success, warm_start

    from mulligan.training.grpo import GRPOArgs, build_grpo_trainer
    from mulligan.training.ppo import PPOArgs, PPOTrainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = warm_start()
        before = echo_success(model, tokenizer)
        start = time.perf_counter()
        ppo_args = PPOArgs(
            output_dir=tmp + "/ppo",
            total_steps=15,
            episodes_per_step=16,
            mini_batch_size=8,
            max_new_tokens=4,
            learning_rate=1e-3,
            disable_tqdm=True,
            env_kwargs=json.dumps(ECHO_KWARGS),
        )
        with PPOTrainer(ppo_args, model, tokenizer) as trainer:
            trainer.train()
        rows.append(("ppo (15 iterations)", before, echo_success(model, tokenizer), time.perf_counter() - start))

        model, tokenizer = warm_start()
        before = echo_success(model, tokenizer)
        start = time.perf_counter()
        grpo_args = GRPOArgs(
            output_dir=tmp + "/grpo",
            max_steps=20,
            num_train_tasks=256,
            per_device_train_batch_size=16,
            num_generations=8,
            max_new_tokens=4,
            learning_rate=3e-3,
            disable_tqdm=True,
            env_kwargs=json.dumps(ECHO_KWARGS),
            trl_args='{"lr_scheduler_type": "constant"}',
        )
        trainer = build_grpo_trainer(grpo_args, model, tokenizer)
        trainer.train()
        rows.append(("grpo (20 steps)", before, echo_success(trainer.model, tokenizer), time.perf_counter() - start))
    print("Echo held-out success (64 tasks, T=1), from a warm start answering a random one of 4 words")
    print(f"{'trainer':22s} {'before':>7s} {'after':>7s} {'gain':>6s} {'seconds':>8s}  pass")
    for name, before, after, seconds in rows:
        ok = before < 0.5 and after >= 0.8 and after - before >= 0.3
        print(f"{name:22s} {before:7.3f} {after:7.3f} {after - before:6.3f} {seconds:8.1f}  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
