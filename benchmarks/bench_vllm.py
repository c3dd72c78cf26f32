"""Generation throughput of ``VLLMAgent`` against ``HFAgent`` on the same prompts, on this machine.

Both agents sample (temperature 1) ``--max_tokens`` tokens per prompt for the first observations of
``--prompts`` Math tasks, in one batch, ``--repeats`` times after a warm-up call; the engine or
model load is timed apart. Reported per agent: generated tokens per second (the median call),
the load time, and the ratio of vLLM's throughput to transformers'. vLLM runs the model in
``--vllm_dtype`` (its CPU build defaults to bfloat16; float32 is transformers' precision).

Needs vLLM (``bash scripts/install.sh vllm``); run from the repository root with
``VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_vllm.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def prompts(count: int) -> list[list[dict[str, str]]]:
    """The first observations of ``count`` Math tasks, as one-message conversations."""
    import gymnasium

    import mulligan  # noqa: F401 - registers the ids

    env = gymnasium.make("Mulligan/Math-v0")
    return [[{"role": "user", "content": env.reset(options={"task_index": i})[0]}] for i in range(count)]


def throughput(agent, conversations, repeats: int) -> dict[str, float]:
    """Median generated tokens per second of ``agent.act`` over ``repeats`` calls (after a warm-up)."""
    from mulligan.agents.base import AgentInput

    inputs = [AgentInput(messages=c, seed=k) for k, c in enumerate(conversations)]
    agent.act(inputs)  # warm-up
    rates, tokens = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        actions = agent.act(inputs)
        seconds = time.perf_counter() - started
        count = sum(len(a.completion_ids) for a in actions)
        rates.append(count / seconds)
        tokens.append(count)
    return {"tokens_per_s": statistics.median(rates), "tokens_per_call": statistics.median(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a model path/id both libraries load")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per call (one batch)")
    parser.add_argument("--max_tokens", type=int, default=64, help="tokens per completion")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per agent")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    parser.add_argument("--vllm_dtype", default="float32", help="vLLM's dtype (its CPU build's default: bfloat16)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch

    from mulligan.agents.hf import HFAgent
    from mulligan.agents.tiny import resolve_model
    from mulligan.agents.vllm import VLLMAgent

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    conversations = prompts(args.prompts)
    rows = {}

    started = time.perf_counter()
    hf = HFAgent(model, temperature=1.0, max_new_tokens=args.max_tokens, seed=0, batch_size=args.prompts)
    rows["transformers"] = {"load_s": time.perf_counter() - started, **throughput(hf, conversations, args.repeats)}
    del hf

    started = time.perf_counter()
    engine = {"dtype": args.vllm_dtype, "max_model_len": 2048}
    vllm = VLLMAgent(model, temperature=1.0, max_new_tokens=args.max_tokens, seed=0, engine_kwargs=engine)
    rows["vllm"] = {"load_s": time.perf_counter() - started, **throughput(vllm, conversations, args.repeats)}

    ratio = rows["vllm"]["tokens_per_s"] / rows["transformers"]["tokens_per_s"]
    print(f"{'agent':<14}{'load s':>9}{'tokens/s':>11}{'tokens/call':>13}")
    for name, row in rows.items():
        print(f"{name:<14}{row['load_s']:>9.1f}{row['tokens_per_s']:>11.1f}{row['tokens_per_call']:>13.0f}")
    print(f"vLLM / transformers throughput: {ratio:.2f}x")
    print(json.dumps({"model": model, "prompts": args.prompts, "max_tokens": args.max_tokens, **rows, "ratio": ratio}))


if __name__ == "__main__":  # vLLM's engine runs in a spawned process
    main()
