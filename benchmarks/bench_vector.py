"""Env workers: ScienceWorld gold-path steps per second with 0, 1 and 2 worker processes.

Usage::

    python benchmarks/bench_vector.py                        # ScienceWorld (needs java)
    python benchmarks/bench_vector.py --jvm_options '["-XX:ActiveProcessorCount=1", "-XX:+UseSerialGC"]'
    python benchmarks/bench_vector.py --workers 1 2 --jvm_options '[]' --jvm_options '["-XX:ActiveProcessorCount=1"]'
    python benchmarks/bench_vector.py --env_id Mulligan/MiniScience-v0 --tasks 7
    python benchmarks/bench_vector.py --workers 1 2 4 --envs 4 --rounds 5

Each configuration is an :class:`~mulligan.training.rollout.EnvPool` of ``--envs`` envs (default 2)
with ``env_workers`` = 0 (the envs in this process), 1 or 2 (``--workers``), stepped the way the
rollout steps it (``reset_many`` / ``step_many``: one message per worker per turn). Every env plays
the gold path of variation 0 of each of the first ``--tasks`` tasks (the path its own reset put in
the task record), all envs in lockstep. So every configuration does the same work; only where it
runs differs. Steps per second count env steps during ``step_many`` calls (resets excluded).

On a shared machine the other processes decide what n workers can get, so the configurations are
measured in interleaved rounds (each round plays every configuration once, after ``--warmup``
untimed rounds that let each JVM compile its hot code), and each round also times a **pure-CPU
control**: a Python busy loop in 1 process, then in 2 processes at once. Its ratio (2-process
throughput / 1-process throughput) is what 2 cores give to any CPU-bound work at that moment: a
worker speed-up near the control's is contention, below it is overhead.

Where time goes: CPU seconds per env step of the JVMs, of the worker processes' Python (the
env wrapper, py4j, pickling) and of this process (the rollout side: pickling and pipes), read
from ``/proc``. Several ``--jvm_options`` sets (ScienceWorld's ``jvm_options``, e.g.
``-XX:ActiveProcessorCount=1``, which gives each JVM one core's worth of GC and JIT threads) are
compared in the same interleaved rounds. The issue's target: 2 workers / 1 worker >= 1.7 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

from mulligan.training.rollout import EnvPool


def _pid(env: Any) -> int:
    """The pid of the process an env lives in."""
    return os.getpid()


def _java_pid(env: Any) -> int | None:
    """The pid of an env's JVM (``None`` for an env without one)."""
    process = getattr(env.unwrapped, "java_process", None)
    return None if process is None else process.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy(iterations: int) -> float:
    """A pure-Python CPU loop; its wall seconds."""
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return time.perf_counter() - start


def play_round(pool: EnvPool, num_tasks: int) -> tuple[int, float]:
    """Every env plays each task's gold path in lockstep; env steps and seconds inside ``step_many``."""
    steps, seconds = 0, 0.0
    indices = range(len(pool))
    for task in range(num_tasks):
        resets = pool.reset_many([(i, 0, {"task_index": task}) for i in indices])
        paths = {i: list(record["gold_actions"]) for i, (_, _, record) in zip(indices, resets, strict=True)}
        turn = 0
        while live := [i for i in indices if turn < len(paths[i])]:
            start = time.perf_counter()
            outcomes = pool.step_many([(i, paths[i][turn]) for i in live])
            seconds += time.perf_counter() - start
            steps += len(live)
            for i, (_, _, terminated, truncated, _) in zip(live, outcomes, strict=True):
                if terminated or truncated:
                    paths[i] = paths[i][: turn + 1]
            turn += 1
    return steps, seconds


class Config:
    """One pool under test and its counters."""

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict, workers: int, options: int | None = None):
        self.label = "in this process" if workers == 0 else f"{workers} worker{'s' if workers > 1 else ''}"
        if options is not None:
            self.label += f", JVM set {options}"
        self.workers, self.options = workers, options
        self.pool = EnvPool(env_id, num_envs, env_kwargs, env_workers=workers)
        self.jvm_pids = [pid for pid in self.pool.call(_java_pid) if pid is not None]
        self.worker_pids = sorted(set(self.pool.call(_pid))) if workers else []
        self.rates: list[float] = []
        self.steps, self.seconds = 0, 0.0
        self.cpu = {"jvm": 0.0, "worker": 0.0, "main": 0.0}

    def timed_round(self, num_tasks: int) -> float:
        jvm0 = sum(cpu_seconds(p) for p in self.jvm_pids)
        worker0 = sum(cpu_seconds(p) for p in self.worker_pids)
        main0 = time.process_time()
        steps, seconds = play_round(self.pool, num_tasks)
        self.cpu["jvm"] += sum(cpu_seconds(p) for p in self.jvm_pids) - jvm0
        self.cpu["worker"] += sum(cpu_seconds(p) for p in self.worker_pids) - worker0
        self.cpu["main"] += time.process_time() - main0
        self.steps, self.seconds = self.steps + steps, self.seconds + seconds
        self.rates.append(steps / seconds)
        return self.rates[-1]


def control_round(pool: Any, iterations: int) -> float:
    """The pure-CPU control: 2-process throughput / 1-process throughput of :func:`busy`."""
    one = pool.apply(busy, (iterations,))
    start = time.perf_counter()
    pool.map(busy, [iterations, iterations], chunksize=1)
    two = time.perf_counter() - start
    return 2 * one / two


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env_id", default="Mulligan/ScienceWorld-v0")
    parser.add_argument("--tasks", type=int, default=6, help="first N tasks (variation 0 of each)")
    parser.add_argument("--envs", type=int, default=2, help="envs per pool")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds per configuration (JIT warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration")
    parser.add_argument("--env_kwargs", default="{}", help="extra env kwargs as a JSON object")
    parser.add_argument(
        "--jvm_options",
        action="append",
        help="ScienceWorld's jvm_options as a JSON list; repeat to compare several sets in the same rounds",
    )
    parser.add_argument("--control_iterations", type=int, default=3_000_000, help="busy-loop length")
    args = parser.parse_args()
    env_kwargs = {"variation": 0, **json.loads(args.env_kwargs)}
    option_sets = [json.loads(text) for text in args.jvm_options or []]
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (1 min) before the runs")
    print(f"{args.env_id}, {env_kwargs}: {args.envs} envs per pool, {args.tasks} tasks' gold paths per round")
    for number, options in enumerate(option_sets):
        print(f"JVM set {number}: jvm_options={options}")
    control_pool = multiprocessing.get_context("spawn").Pool(2)
    configs: list[Config] = []
    try:
        for number, options in enumerate(option_sets or [None]):
            kwargs = env_kwargs if options is None else {**env_kwargs, "jvm_options": options}
            for workers in args.workers:
                configs.append(Config(args.env_id, args.envs, kwargs, workers, None if options is None else number))
        for config in configs:
            for _ in range(args.warmup):
                play_round(config.pool, args.tasks)
        control_pool.map(busy, [1000, 1000])  # both control processes started
        controls = []
        for round_number in range(args.rounds):
            rates = [f"{config.timed_round(args.tasks):7.1f}" for config in configs]
            controls.append(control_round(control_pool, args.control_iterations))
            print(f"round {round_number}: steps/s {' '.join(rates)}   control 2/1 {controls[-1]:.2f}")
    finally:
        control_pool.terminate()
        for config in configs:
            config.pool.close()
    width = max(len(config.label) for config in configs) + 2
    print(
        f"\n{'configuration':<{width}}{'steps':>7}{'steps/s':>9}   CPU ms per step: {'JVM':>6}{'worker':>8}{'main':>7}"
    )
    overall = {}
    for config in configs:
        overall[(config.options, config.workers)] = config.steps / config.seconds
        per_step = {k: 1000 * v / config.steps for k, v in config.cpu.items()}
        print(
            f"{config.label:<{width}}{config.steps:>7}{overall[(config.options, config.workers)]:>9.1f}   {'':17}"
            f"{per_step['jvm']:>6.2f}{per_step['worker']:>8.2f}{per_step['main']:>7.2f}"
        )
    control = sum(controls) / len(controls)
    for (options, workers), rate in overall.items():
        if workers > 1 and (options, 1) in overall:
            named = "" if options is None else f" (JVM set {options})"
            print(f"speed-up {workers} workers / 1 worker{named}: {rate / overall[(options, 1)]:.2f}x")
    print(f"pure-CPU control, 2 processes / 1 process: {control:.2f}x (mean of {len(controls)} rounds)")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after the runs")


if __name__ == "__main__":
    main()
