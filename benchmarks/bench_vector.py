"""Env workers: ScienceWorld gold-path steps per second with 1 and 2 async worker processes.

Usage::

    python benchmarks/bench_vector.py                       # ScienceWorld (needs java), 1 and 2 workers
    python benchmarks/bench_vector.py --env_id Mulligan/MiniScience-v0 --tasks 7
    python benchmarks/bench_vector.py --workers 1 2 4 --tasks 4 --repeats 2
    python benchmarks/bench_vector.py --env_kwargs '{"include_look_inventory": false}'

Each worker count ``n`` builds ``gymnasium.make_vec(env_id, num_envs=n, vectorization_mode="async")``
(default shared memory), resets every worker onto the same task (``options={"task_index": i}``,
variation 0 of each of the first ``--tasks`` tasks) and plays its gold path in lockstep, so one
``step`` call advances ``n`` episodes. Steps per second count env steps (``n`` per call) during
``step`` calls only: JVM start-up, resets and gold-path planning are excluded. A first pass over
the tasks warms up each worker (gold paths are planned and cached on a task's first load) and is
not timed. The ratio 2 workers / 1 worker is the speed-up (issue 14's target: >= 1.7 on 2 cores).
The single-process env (``gymnasium.make``) is reported as the no-IPC reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium

import mulligan  # noqa: F401 - registers the ids


def gold_paths(env_id: str, env_kwargs: dict, num_tasks: int) -> list[list[str]]:
    """The gold path of each of the first ``num_tasks`` tasks (planned once in this process)."""
    env = gymnasium.make(env_id, **env_kwargs)
    try:
        paths = []
        for index in range(num_tasks):
            env.reset(seed=0, options={"task_index": index})
            paths.append(env.unwrapped.gold_actions())
        return paths
    finally:
        env.close()


def play_vector(vector, paths: list[list[str]]) -> tuple[int, float]:
    """Env steps and seconds spent in ``step`` playing every path on every worker in lockstep."""
    steps, seconds = 0, 0.0
    for index, path in enumerate(paths):
        vector.reset(seed=0, options={"task_index": index})
        for action in path:
            start = time.perf_counter()
            _, _, terminated, truncated, _ = vector.step((action,) * vector.num_envs)
            seconds += time.perf_counter() - start
            steps += vector.num_envs
            if terminated.any() or truncated.any():
                break
    return steps, seconds


def play_single(env_id: str, env_kwargs: dict, paths: list[list[str]]) -> tuple[int, float]:
    """The same in one env in this process (the reference without inter-process traffic)."""
    env = gymnasium.make(env_id, **env_kwargs)
    try:
        totals = [0, 0.0]
        for warm in (True, False):
            for index, path in enumerate(paths):
                env.reset(seed=0, options={"task_index": index})
                for action in path:
                    start = time.perf_counter()
                    _, _, terminated, truncated, _ = env.step(action)
                    if not warm:
                        totals[1] += time.perf_counter() - start
                        totals[0] += 1
                    if terminated or truncated:
                        break
        return totals[0], totals[1]
    finally:
        env.close()


def main() -> None:
    """Run the benchmark and print steps per second for each worker count."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env_id", default="Mulligan/ScienceWorld-v0")
    parser.add_argument("--tasks", type=int, default=6, help="first N tasks (variation 0 of each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the tasks per worker count")
    parser.add_argument("--env_kwargs", default="{}", help="extra env kwargs as a JSON object")
    args = parser.parse_args()
    env_kwargs = {"variation": 0, **json.loads(args.env_kwargs)}
    paths = gold_paths(args.env_id, env_kwargs, args.tasks)
    # Each step is CPU work in a Python worker and its JVM, passed back and forth over py4j, so
    # n workers need n free cores: the speed-up is bounded by what other processes leave.
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (1 min) before the runs")
    print(f"{args.env_id}: {args.tasks} tasks, gold paths of {[len(p) for p in paths]} steps")
    steps, seconds = play_single(args.env_id, env_kwargs, paths)
    print(f"single process (no IPC): {steps / seconds:8.1f} steps/s")
    rates = {}
    for workers in args.workers:
        vector = gymnasium.make_vec(args.env_id, num_envs=workers, vectorization_mode="async", **env_kwargs)
        try:
            play_vector(vector, paths)  # warm-up: plans and caches gold paths in every worker
            steps = seconds = 0
            for _ in range(args.repeats):
                more_steps, more_seconds = play_vector(vector, paths)
                steps, seconds = steps + more_steps, seconds + more_seconds
        finally:
            vector.close()
        rates[workers] = steps / seconds
        print(f"{workers} async worker(s):     {rates[workers]:8.1f} steps/s")
    if 1 in rates:
        for workers, rate in rates.items():
            if workers != 1:
                print(f"speed-up {workers} workers / 1 worker: {rate / rates[1]:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after the runs")


if __name__ == "__main__":
    main()
