"""Steps per second: the ScienceWorld wrapper against the scienceworld package, and MiniScience.

Usage::

    python benchmarks/bench_science.py                 # both (ScienceWorld part skipped without java)
    python benchmarks/bench_science.py --tasks boil find-animal --episodes 2
    python benchmarks/bench_science.py --skip-scienceworld --mini-episodes 2000

Part 1 plays the same gold paths (variation 0 of each task) through ``scienceworld.ScienceWorldEnv``
directly (``load`` + ``step``, which also fetches look/inventory/valid actions on every step) and
through ``gymnasium.make("Mulligan/ScienceWorld-v0")``, and prints steps per second of each and the
ratio wrapper / direct, steps only (resets excluded, since both load the same variation); both JVMs
start with the wrapper's default ``jvm_options``.
Part 2 plays MiniScience gold paths on one core and prints steps per second (target: >= 10,000).
"""

from __future__ import annotations

import argparse
import shutil
import time

import gymnasium

import mulligan  # noqa: F401 - registers the ids

DEFAULT_TASKS = [
    "boil",
    "melt",
    "find-animal",
    "grow-plant",
    "use-thermometer",
    "chemistry-mix",
    "lifespan-longest-lived",
    "measure-melting-point-known-substance",
]


def bench_scienceworld(tasks: list[str], episodes: int) -> float:
    import scienceworld

    wrapper = gymnasium.make("Mulligan/ScienceWorld-v0", variation=0, step_limit=None, max_episode_steps=1000)
    golds = {}
    for name in tasks:
        wrapper.reset(options={"task": {"task_name": name, "variation": 0}})
        golds[name] = wrapper.unwrapped.gold_actions()

    def play_wrapper() -> tuple[int, float]:
        steps, seconds = 0, 0.0
        for name in tasks:
            wrapper.reset(options={"task": {"task_name": name, "variation": 0}})
            start = time.perf_counter()
            for action in golds[name]:
                steps += 1
                if wrapper.step(action)[2]:
                    break
            seconds += time.perf_counter() - start
        return steps, seconds

    from mulligan.envs.scienceworld import DEFAULT_JVM_OPTIONS, java_options

    with java_options(DEFAULT_JVM_OPTIONS):  # the wrapper's JVM flags, so both JVMs are alike
        direct = scienceworld.ScienceWorldEnv("", envStepLimit=10**9)

    def play_direct() -> tuple[int, float]:
        steps, seconds = 0, 0.0
        for name in tasks:
            direct.load(name, 0, "easy")
            start = time.perf_counter()
            for action in golds[name]:
                steps += 1
                if direct.step(action)[2]:
                    break
            seconds += time.perf_counter() - start
        return steps, seconds

    play_wrapper(), play_direct()  # warm up both JVMs
    totals = {"direct": [0, 0.0], "wrapper": [0, 0.0]}
    for _ in range(episodes):  # interleaved, so machine load hits both alike
        for key, play in (("direct", play_direct), ("wrapper", play_wrapper)):
            steps, seconds = play()
            totals[key][0] += steps
            totals[key][1] += seconds
    wrapper.close()
    direct.close()
    rate = {k: s / t for k, (s, t) in totals.items()}
    print(f"\nScienceWorld gold paths, variation 0 of {len(tasks)} tasks x {episodes} rounds (steps only)")
    print(f"{'driver':<34}{'steps':>8}{'seconds':>10}{'steps/s':>10}")
    print(
        f"{'scienceworld.ScienceWorldEnv':<34}{totals['direct'][0]:>8}{totals['direct'][1]:>10.2f}"
        f"{rate['direct']:>10.1f}"
    )
    print(
        f"{'Mulligan/ScienceWorld-v0':<34}{totals['wrapper'][0]:>8}{totals['wrapper'][1]:>10.2f}"
        f"{rate['wrapper']:>10.1f}"
    )
    print(f"ratio wrapper / direct: {rate['wrapper'] / rate['direct']:.2f}")
    return rate["wrapper"]


def bench_miniscience(episodes: int) -> float:
    env = gymnasium.make("Mulligan/MiniScience-v0", max_episode_steps=1000)
    paths = []
    for index in range(episodes):
        env.reset(options={"task_index": index})
        paths.append((index, env.unwrapped.gold_actions()))
    rows = []
    for label, target in (("gymnasium.make (wrappers)", env), ("env.unwrapped", env.unwrapped)):
        steps, seconds, resets = 0, 0.0, 0.0
        for index, path in paths:
            start = time.perf_counter()
            target.reset(options={"task_index": index})
            resets += time.perf_counter() - start
            start = time.perf_counter()
            for action in path:
                steps += 1
                if target.step(action)[2]:
                    break
            seconds += time.perf_counter() - start
        rows.append((label, steps, seconds, steps / seconds, resets / len(paths) * 1000))
    print(f"\nMiniScience gold paths, {episodes} episodes (all 7 tasks), one core")
    print(f"{'driver':<28}{'steps':>8}{'seconds':>10}{'steps/s':>10}{'ms/reset':>10}")
    for label, steps, seconds, rate, reset_ms in rows:
        print(f"{label:<28}{steps:>8}{seconds:>10.2f}{rate:>10.0f}{reset_ms:>10.2f}")
    return rows[0][3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="ScienceWorld tasks to play")
    parser.add_argument("--episodes", type=int, default=2, help="rounds over the ScienceWorld tasks")
    parser.add_argument("--mini-episodes", type=int, default=1400, help="MiniScience episodes")
    parser.add_argument("--skip-scienceworld", action="store_true")
    args = parser.parse_args()
    sw_rate = None
    if not args.skip_scienceworld:
        if shutil.which("java") is None:
            print("java not found: skipping the ScienceWorld part")
        else:
            sw_rate = bench_scienceworld(args.tasks, args.episodes)
    mini_rate = bench_miniscience(args.mini_episodes)
    if sw_rate:
        print(f"MiniScience / ScienceWorld wrapper steps per second: {mini_rate / sw_rate:.0f}x")


if __name__ == "__main__":
    main()
