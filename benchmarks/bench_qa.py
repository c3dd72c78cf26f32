"""QA env performance: search latency and env steps per second as the corpus grows.

For each corpus size (procedural-world paragraphs, default 1k, 10k, 100k) the script measures

* the time to build the document store (BM25 inverted index),
* search latency for exact titles, BM25 queries and misses (similar titles), and the same BM25
  queries through ``linear_scan_rank`` (no index) as the baseline in the same run, with the speed-up
  ratio and a check that both return the same ranking,
* env steps per second in the fullwiki setting (every question searches the whole corpus), driven
  by the oracle teacher's actions (only ``env.step`` is timed).

With ``--hotpotqa PATH`` (e.g. ``../shared/data/hotpotqa/dev_distractor_sample.jsonl``) it also runs
the env over real HotpotQA records without the oracle: it searches each supporting title and reports
how many titles the env finds exactly and how many gold answers appear in what search (and then
lookups of the answer's words) returned; then the oracle's success on the same records.

Example::

    python benchmarks/bench_qa.py --sizes 1000 10000 100000 \\
        --hotpotqa ../shared/data/hotpotqa/dev_distractor_sample.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mulligan.agents.base import AgentInput
from mulligan.agents.teachers.qa import QAOracle
from mulligan.envs.generators.world import WorldConfig, generate_hotpotqa_task
from mulligan.envs.hotpotqa import HotpotQAEnv
from mulligan.envs.retrieval import Document, DocumentStore, linear_scan_rank, tokenize
from mulligan.envs.verifiers.qa import normalize_answer


def build_records(num_paragraphs: int, seed: int) -> list[dict]:
    records, total, index = [], 0, 0
    config = WorldConfig()
    while total < num_paragraphs:
        record = generate_hotpotqa_task(config, seed, index)
        records.append(record)
        total += len(record["context"])
        index += 1
    return records


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_calls(fn, arguments) -> list[float]:
    times = []
    for argument in arguments:
        start = time.perf_counter()
        fn(argument)
        times.append(time.perf_counter() - start)
    return times


def bench_size(size: int, args) -> dict:
    records = build_records(size, args.seed)
    documents = [Document(t, tuple(s)) for r in records for t, s in r["context"]][:size]
    start = time.perf_counter()
    store = DocumentStore(documents)
    build_s = time.perf_counter() - start

    sample = records[: args.queries]
    exact_queries = [r["supporting_facts"][0][0] for r in sample]
    bm25_queries = [r["question"] for r in sample]
    miss_queries = [title[::-1] + "q" for title in exact_queries]  # reversed titles share no words
    exact_t = time_calls(store.search, exact_queries)
    bm25_t = time_calls(store.search, bm25_queries)
    miss_t = time_calls(store.search, miss_queries[: max(1, args.queries // 5)])

    baseline_queries = bm25_queries[: args.baseline_queries]
    index_t = time_calls(store.rank, baseline_queries)
    scan_t = time_calls(lambda q: linear_scan_rank(documents, q), baseline_queries)
    agree = all(store.rank(q) == linear_scan_rank(documents, q) for q in baseline_queries[:2])

    steps_per_s = bench_env_steps(records, documents, args)
    return {
        "size": len(documents),
        "build_s": build_s,
        "exact_ms": 1e3 * statistics.median(exact_t),
        "bm25_ms": 1e3 * statistics.median(bm25_t),
        "bm25_p95_ms": 1e3 * percentile(bm25_t, 0.95),
        "miss_ms": 1e3 * statistics.median(miss_t),
        "scan_ms": 1e3 * statistics.median(scan_t),
        "speedup": statistics.median(scan_t) / statistics.median(index_t),
        "agree": agree,
        "steps_per_s": steps_per_s,
    }


def bench_env_steps(records, documents, args) -> float:
    """Fullwiki env steps per second with the oracle's actions (only env.step is timed)."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with corpus.open("w") as f:
            for document in documents:
                f.write(json.dumps({"title": document.title, "sentences": list(document.sentences)}) + "\n")
        dataset = Path(tmp) / "questions.jsonl"
        with dataset.open("w") as f:
            for record in records[: args.episodes]:
                f.write(json.dumps(record) + "\n")
        env = HotpotQAEnv(dataset=str(dataset), corpus=str(corpus))
    # The oracle reads the gold context from the record; the env searches the whole corpus.
    oracle, steps, elapsed = QAOracle(), 0, 0.0
    for index in range(min(args.episodes, env.num_tasks)):
        observation, _ = env.reset(options={"task_index": index})
        messages = [{"role": "user", "content": observation}]
        for _ in range(10):
            action = oracle.act([AgentInput(messages, task=env.task)])[0].text
            start = time.perf_counter()
            observation, _, terminated, _, _ = env.step(action)
            elapsed += time.perf_counter() - start
            steps += 1
            messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
            if terminated:
                break
    return steps / elapsed


def bench_distractor_steps(args) -> tuple[float, float]:
    """Default procedural distractor setting: env steps/s and resets/s (a reset generates the task and
    builds its 10-paragraph store); only env calls are timed."""
    env, oracle, steps, step_s, reset_s = HotpotQAEnv(), QAOracle(), 0, 0.0, 0.0
    for index in range(args.episodes):
        start = time.perf_counter()
        observation, _ = env.reset(options={"task_index": index})
        reset_s += time.perf_counter() - start
        messages = [{"role": "user", "content": observation}]
        for _ in range(10):
            action = oracle.act([AgentInput(messages, task=env.task)])[0].text
            start = time.perf_counter()
            observation, _, terminated, _, _ = env.step(action)
            step_s += time.perf_counter() - start
            steps += 1
            messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
            if terminated:
                break
    return steps / step_s, args.episodes / reset_s


def bench_real(path: str) -> None:
    env = HotpotQAEnv(dataset=path)
    titles = exact = answerable = found_search = found_lookup = 0
    for index in range(env.num_tasks):
        env.reset(options={"task_index": index})
        task = env.task
        gold = normalize_answer(task["answer"])
        is_yes_no = gold in ("yes", "no")
        answerable += not is_yes_no
        seen_search, seen_lookup = [], []
        for title in dict.fromkeys(t for t, _ in task["supporting_facts"]):
            observation, *_ = env.step(f"Action: search[{title}]")
            titles += 1
            exact += observation.startswith(f'Page "{title}"')
            seen_search.append(observation)
            words = sorted(tokenize(task["answer"]), key=len, reverse=True)[:1]
            for word in words:
                for _ in range(3):
                    observation, *_ = env.step(f"Action: lookup[{word}]")
                    seen_lookup.append(observation)
        if not is_yes_no:
            found_search += gold in normalize_answer(" ".join(seen_search))
            found_lookup += gold in normalize_answer(" ".join(seen_search + seen_lookup))
    oracle, successes, steps = QAOracle(), 0, 0
    for index in range(env.num_tasks):
        observation, _ = env.reset(options={"task_index": index})
        messages = [{"role": "user", "content": observation}]
        while True:
            action = oracle.act([AgentInput(messages, task=env.task)])[0].text
            observation, _, terminated, _, info = env.step(action)
            steps += 1
            messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
            if terminated:
                successes += info["success"]
                break
    print(f"\nReal HotpotQA records ({path}): {env.num_tasks} questions, distractor setting")
    print(f"  supporting titles found by exact search: {exact}/{titles}")
    print(f"  gold answers (non yes/no) in search observations of the supporting titles: {found_search}/{answerable}")
    print(f"  ... in search + up to 3 lookups of the answer's longest word: {found_lookup}/{answerable}")
    print(f"  oracle teacher: {successes}/{env.num_tasks} solved, {steps / env.num_tasks:.2f} steps per episode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=50, help="search queries per kind and size")
    parser.add_argument("--baseline-queries", type=int, default=5, help="queries through the linear scan")
    parser.add_argument("--episodes", type=int, default=100, help="oracle episodes for steps per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hotpotqa", help="official HotpotQA JSON/JSONL file to run the env over")
    args = parser.parse_args()

    print(
        "| paragraphs | index build s | exact ms | BM25 ms (p50) | BM25 p95 ms | miss ms | linear scan ms "
        "| index speed-up | same ranking | fullwiki env steps/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|")
    for size in args.sizes:
        row = bench_size(size, args)
        print(
            f"| {row['size']:,} | {row['build_s']:.2f} | {row['exact_ms']:.3f} | {row['bm25_ms']:.2f} "
            f"| {row['bm25_p95_ms']:.2f} | {row['miss_ms']:.2f} | {row['scan_ms']:.1f} | {row['speedup']:.0f}x "
            f"| {'yes' if row['agree'] else 'NO'} | {row['steps_per_s']:.0f} |",
            flush=True,
        )
    steps_per_s, resets_per_s = bench_distractor_steps(args)
    print(
        f"\nDistractor setting (procedural, 10 paragraphs per question): {steps_per_s:.0f} env steps/s, "
        f"{resets_per_s:.0f} resets/s (task generation + store build)"
    )
    if args.hotpotqa:
        bench_real(args.hotpotqa)


if __name__ == "__main__":
    main()
