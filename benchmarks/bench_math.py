"""Math benchmark: env throughput, verifier throughput against math-verify in-process, worst-case latency.

    python benchmarks/bench_math.py [--episodes 500] [--gsm8k ../shared/data/gsm8k/test.jsonl]

Prints one table. Ratios compare runs made in the same process on the same inputs.
"""

from __future__ import annotations

import argparse
import random
import time

import gymnasium

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.math import MathOracle
from mulligan.envs.verifiers.math import (
    get_verifier_pool,
    math_reward,
    shutdown_verifier_pool,
    verify,
    verify_batch,
)

# (gold, answer) pairs in the forms models write; half are equivalent.
VERIFIER_PAIRS = [
    ("72", "72"),
    ("72", "73"),
    ("1234", "1,234"),
    ("18", "$18"),
    ("0.5", "\\frac{1}{2}"),
    ("7/4", "1.75"),
    ("3", "x = 3"),
    ("25", "25\\%"),
    ("\\frac{1}{2}", "\\frac{2}{4}"),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1,2)", "(1,2)"),
    ("y=2x+1", "2x+1=y"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\pi", "3.14"),
    ("1/3", "0.333333"),
    ("12.5", "12.50"),
    ("-4", "-4.0"),
    ("100", "99"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
]
ADVERSARIAL = [
    "9^{9^{9^{9^9}}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "99999999^{99999999}",
    "(x+1)^{100000}",
    "{" * 400 + "1" + "}" * 400,
    "x" * 999,
    "\\sqrt{" * 200 + "2" + "}" * 200,
    "\\int_0^\\infty e^{-x^{x^{x}}} dx",
    "1\x00\x1b[31m2\x7f",
]
# Answers to a question whose gold answer is 72 that are not 72 (issue 15): each must be refused.
REWARD_HACKS = [
    "72 minus one",
    "72 times two",
    "72 or more",
    "72 is not the answer",
    "72 \\text{ or more}",
    "99 = 72",
    "x = 99 = 72",
    "73 \\to 72",
    "73 := 72",
    "73 \\coloneqq 72",
    "73 \\approx 72",
    "71, 72, \\ldots",
    "71, 72, ...",
    "71 \\\\ 72",
    "71 1",
    "71 \\quad 1",
    "{99 \\atop 72}",
    "99 \\therefore 72",
    "99 \\boxed{72}",
]
ADVERSARIAL_RESPONSES = ["x" * 2**20, "\\boxed{" + "{" * 2**19 + "}" * 2**19, "9" * 2**20, "\\boxed{" * 2**17]


def env_throughput(env_id: str, episodes: int, response_kind: str) -> float:
    env = gymnasium.make(env_id)
    oracle = MathOracle()
    rng = random.Random(0)
    start = time.perf_counter()
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        messages = [{"role": "user", "content": obs}]
        done = False
        while not done:
            text = oracle.act([AgentInput(messages, env.unwrapped.task, info, env_id)])[0].text
            if response_kind == "latex" and env_id.endswith("Math-v0"):
                # Rewrite the answer in a form that needs the sandbox: \frac or an expression.
                gold = env.unwrapped.task["final_answer"]
                text = text.rsplit("\\boxed", 1)[0] + rng.choice(
                    [f"\\boxed{{\\frac{{2*({gold})}}{{2}}}}", f"\\boxed{{{gold} + 0}}", f"\\boxed{{{gold}+1}}"]
                )
            obs, _, terminated, truncated, info = env.step(text)
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
            done = terminated or truncated
    return episodes / (time.perf_counter() - start)


def math_verify_in_process(pairs, rounds):
    from math_verify import parse
    from math_verify import verify as mv_verify

    start = time.perf_counter()
    results = []
    for _ in range(rounds):
        results = [
            mv_verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + answer + "}")) for gold, answer in pairs
        ]
    return (time.perf_counter() - start) / (rounds * len(pairs)), results


def ours(pairs, rounds, batch):
    start = time.perf_counter()
    results = []
    for _ in range(rounds):
        if batch:
            results = verify_batch([g for g, _ in pairs], [a for _, a in pairs])
        else:
            results = [verify(g, a) for g, a in pairs]
    return (time.perf_counter() - start) / (rounds * len(pairs)), results


def gsm8k_check(path: str) -> tuple[int, float, float]:
    """Oracle success on real GSM8K gold solutions, and the official '#### N' answers against themselves."""
    env = gymnasium.make("Mulligan/Math-v0", dataset=path)
    oracle = MathOracle()
    solved = self_consistent = 0
    total = env.unwrapped.num_tasks
    for index in range(total):
        obs, info = env.reset(options={"task_index": index})
        item = AgentInput([{"role": "user", "content": obs}], env.unwrapped.task, info, "Mulligan/Math-v0")
        text = oracle.act([item])[0].text
        solved += env.step(text)[4]["success"]
        task = env.unwrapped.task
        self_consistent += math_reward(task["answer"], task["final_answer"]) == 1.0
    return total, solved / total, self_consistent / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the verifier pairs")
    parser.add_argument("--gsm8k", help="path to GSM8K test.jsonl for the oracle / self-consistency check")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    start = time.perf_counter()
    verify("x+1", "1+x")  # start the worker pool
    rows.append(("verifier pool start-up (first symbolic check), s", f"{time.perf_counter() - start:.2f}"))
    verify_batch(["x+1"] * 8, ["1+x"] * 8)  # start every worker before timing
    rows.append(("verifier pool workers", str(len(get_verifier_pool().worker_pids()))))

    runs = [("Mulligan/Math-v0", "oracle"), ("Mulligan/Math-v0", "latex"), ("Mulligan/MathReAct-v0", "oracle")]
    for env_id, kind in runs:
        rate = env_throughput(env_id, args.episodes, kind)
        rows.append((f"{env_id} episodes/s ({kind} answers, reset+step+verify)", f"{rate:.0f}"))

    per_mv, mv_results = math_verify_in_process(VERIFIER_PAIRS, args.rounds)
    per_ours, our_results = ours(VERIFIER_PAIRS, args.rounds, batch=False)
    per_batch, batch_results = ours(VERIFIER_PAIRS, args.rounds, batch=True)
    agree = sum(a == b for a, b in zip(mv_results, our_results, strict=True))
    rows += [
        ("math-verify in-process, ms/check", f"{per_mv * 1e3:.2f}"),
        ("mulligan verify (sandboxed), ms/check", f"{per_ours * 1e3:.2f}"),
        ("mulligan verify_batch (sandboxed), ms/check", f"{per_batch * 1e3:.2f}"),
        ("throughput ratio verify / math-verify", f"{per_mv / per_ours:.2f}x"),
        ("throughput ratio verify_batch / math-verify", f"{per_mv / per_batch:.2f}x"),
        ("verdicts agreeing with math-verify", f"{agree}/{len(VERIFIER_PAIRS)}"),
        ("verify_batch agrees with verify", str(batch_results == our_results)),
    ]

    latencies = []
    for answer in ADVERSARIAL:
        t = time.perf_counter()
        assert verify("1", answer, timeout=5.0) is False
        latencies.append(time.perf_counter() - t)
    for response in ADVERSARIAL_RESPONSES:
        t = time.perf_counter()
        assert math_reward(response, "1") == 0.0
        latencies.append(time.perf_counter() - t)
    t = time.perf_counter()
    assert verify("2", "x" * 999, timeout=0.5) is False  # forced overrun: kill + replace
    kill_latency = time.perf_counter() - t
    rows += [
        ("adversarial set worst-case latency (timeout 5 s), s", f"{max(latencies):.2f}"),
        ("adversarial set median latency, s", f"{sorted(latencies)[len(latencies) // 2]:.3f}"),
        ("forced overrun (timeout 0.5 s) returned after, s", f"{kill_latency:.2f}"),
    ]

    refused = sum(not verify("72", answer) for answer in REWARD_HACKS)
    rows.append(("reward-hacking answers to gold 72 refused", f"{refused}/{len(REWARD_HACKS)}"))

    if args.gsm8k:
        total, solved, consistent = gsm8k_check(args.gsm8k)
        rows += [
            (f"GSM8K ({total} records): oracle success through Math-v0", f"{solved:.4f}"),
            (f"GSM8K ({total} records): official '#### N' answer verified against itself", f"{consistent:.4f}"),
        ]

    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    shutdown_verifier_pool()


if __name__ == "__main__":
    main()
