"""Hostile actions against every registered env: worst step latency and peak memory, as ratios.

A model (or whoever serves it) can send any string. For each registered ``Mulligan/*`` id this
script times ``env.step`` on hostile actions of growing size, up to the action space's
``max_length`` (2**21 characters by default) and one 10 MB action beyond it, which every env must
refuse unread:

* ``whitespace``: ``"Action"`` then a run of spaces (the old QA parser was quadratic on it),
* ``brackets``: ``"Action: finish["`` then unclosed ``[``,
* ``markers``: ``"xaction: finish[1] "`` repeated (an action marker glued to a word, every time),
* ``braces``: ``"\\boxed{"`` then unclosed ``{``,
* ``newlines``: a run of ``"\\n"`` (line and bullet counting),
* ``sentences``: ``"Hi. "`` repeated (sentence splitting),
* ``unicode``: accented, CJK, emoji, zero-width and bidi characters,
* ``letters``: one long word.

Each is measured against a baseline in the same run: a normal action for that env (a short
answer, ReAct step or command). Reported per env: the worst latency (seconds, and as a ratio to
the baseline's), and the worst peak Python memory during the step (``tracemalloc``; bytes, and
per character of input). Memory used by the math verifier's sandbox process is not included (it
runs under its own limits).

Example::

    python benchmarks/bench_hostile.py                # all ids, sizes 10k, 100k, 1M and the limit
    python benchmarks/bench_hostile.py --skip Mulligan/ScienceWorld-v0 --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

import gymnasium

import mulligan

#: A normal action per env, the baseline of every ratio.
NORMAL_ACTIONS = {
    "Mulligan/Echo-v0": "apple",
    "Mulligan/Math-v0": "First 3 * 4 = 12, then 12 + 30 = 42. The answer is \\boxed{42}.",
    "Mulligan/MathReAct-v0": "Thought: multiply first.\nAction: calculate[3 * 4 + 30]",
    "Mulligan/HotpotQA-v0": "Thought: find the film first.\nAction: search[The Silent Harbor]",
    "Mulligan/StrategyQA-v0": "Thought: find the film first.\nAction: search[The Silent Harbor]",
    "Mulligan/ScienceWorld-v0": "look around",
    "Mulligan/MiniScience-v0": "look around",
    "Mulligan/Constraints-v0": "The quiet harbor town wakes early. Fishermen check their nets before dawn.",
}
_UNICODE = "é世界🙂\u200b\u202e"
HOSTILE: dict[str, Callable[[int], str]] = {
    "whitespace": lambda n: ("Action" + " " * n)[:n],
    "brackets": lambda n: ("Action: finish[" + "[" * n)[:n],
    "markers": lambda n: ("xaction: finish[1] " * (n // 19 + 1))[:n],
    "braces": lambda n: ("\\boxed{" + "{" * n)[:n],
    "newlines": lambda n: "\n" * n,
    "sentences": lambda n: ("Hi. " * (n // 4 + 1))[:n],
    "unicode": lambda n: (_UNICODE * (n // len(_UNICODE) + 1))[:n],
    "letters": lambda n: "a" * n,
}
OVER_LIMIT = 10 * 2**20


def measure(env: gymnasium.Env, action: str, repeats: int) -> tuple[float, int]:
    """The best wall time of ``env.step(action)`` over ``repeats`` resets, and its peak Python memory."""
    best = float("inf")
    for _ in range(repeats):
        env.reset(seed=0)
        gc.collect()
        start = time.perf_counter()
        env.step(action)
        best = min(best, time.perf_counter() - start)
    env.reset(seed=0)
    gc.collect()
    tracemalloc.start()
    try:
        env.step(action)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return best, peak


def bench_env(env_id: str, sizes: list[int], repeats: int) -> list[dict]:
    env = gymnasium.make(env_id)
    limit = env.unwrapped.action_space.max_length
    normal = NORMAL_ACTIONS.get(env_id, "Thought: answer.\nAction: finish[42]")
    base_time, base_peak = measure(env, normal, repeats)
    rows = [{"input": "baseline", "size": len(normal), "seconds": base_time, "peak": base_peak}]
    for name, make in HOSTILE.items():
        for size in [s for s in sizes if s <= limit] + [limit]:
            seconds, peak = measure(env, make(size), 1 if size > 100_000 else repeats)
            rows.append({"input": name, "size": size, "seconds": seconds, "peak": peak})
    seconds, peak = measure(env, "x" * OVER_LIMIT, 1)
    rows.append({"input": "over_limit", "size": OVER_LIMIT, "seconds": seconds, "peak": peak})
    env.close()
    for row in rows:
        row["time_ratio"] = row["seconds"] / max(base_time, 1e-6)
        row["peak_per_char"] = row["peak"] / max(row["size"], 1)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--skip", nargs="*", default=[], help="env ids to leave out")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of small inputs (best of)")
    parser.add_argument("--verbose", action="store_true", help="print every (input, size) row")
    args = parser.parse_args(argv)
    summary = []
    for env_id in mulligan.env_ids():
        if env_id in args.skip:
            continue
        try:
            rows = bench_env(env_id, args.sizes, args.repeats)
        except (ImportError, RuntimeError, OSError) as err:  # e.g. ScienceWorld without Java
            print(f"{env_id}: skipped ({err})")
            continue
        base = rows[0]
        hostile = rows[1:]
        slowest = max(hostile, key=lambda r: r["seconds"])
        hungriest = max(hostile, key=lambda r: r["peak"])
        refused = rows[-1]
        summary.append((env_id, base, slowest, hungriest, refused))
        if args.verbose:
            for row in rows:
                print(
                    f"  {env_id:26s} {row['input']:11s} {row['size']:>9d} {row['seconds']:9.4f}s "
                    f"x{row['time_ratio']:9.1f} peak {row['peak'] / 2**20:8.2f} MB"
                )
    header = (
        f"{'env':26s} {'baseline':>10s} {'worst latency (input, size)':>38s} {'ratio':>9s} "
        f"{'worst peak MB (input)':>26s} {'B/char':>7s} {'10MB refused':>13s}"
    )
    print(header)
    print("-" * len(header))
    for env_id, base, slowest, hungriest, refused in summary:
        print(
            f"{env_id:26s} {base['seconds'] * 1e3:8.2f}ms "
            f"{slowest['seconds']:10.4f}s ({slowest['input']}, {slowest['size']:>8d}) "
            f"x{slowest['time_ratio']:8.1f} "
            f"{hungriest['peak'] / 2**20:9.2f} ({hungriest['input']:>10s}) "
            f"{hungriest['peak_per_char']:7.2f} "
            f"{refused['seconds'] * 1e3:8.2f}ms"
        )
    if summary:
        worst_time = max(summary, key=lambda s: s[2]["seconds"])
        worst_ratio = max(summary, key=lambda s: s[2]["time_ratio"])
        worst_peak = max(summary, key=lambda s: s[3]["peak"])
        print(
            f"\nworst latency over all envs: {worst_time[2]['seconds']:.3f}s ({worst_time[0]}, "
            f"{worst_time[2]['input']}, {worst_time[2]['size']} chars); worst ratio to the baseline "
            f"x{worst_ratio[2]['time_ratio']:.0f} ({worst_ratio[0]}); worst peak memory "
            f"{worst_peak[3]['peak'] / 2**20:.1f} MB ({worst_peak[0]}, {worst_peak[3]['input']}, "
            f"{worst_peak[3]['peak_per_char']:.1f} bytes per input character)"
        )


if __name__ == "__main__":
    main()
