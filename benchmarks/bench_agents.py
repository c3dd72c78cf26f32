"""Generated tokens per second of HFAgent against a plain ``model.generate`` (the ceiling).

For each number of envs played at once (1, 8, 32 by default) the script renders the same prompts
(observations of ``Mulligan/Math-v0``, or of the Echo test env when Math is not available), then
times, interleaved and best of ``--repeats``:

* ``generate``: ``model.generate`` on the left-padded prompts, sampling at temperature 1, nothing
  else (the ceiling: no log-probabilities, no stop strings, no per-action bookkeeping);
* ``agent``: ``HFAgent.act`` on the same prompts (templating, tokenising, log-probabilities,
  cutting, building actions included);
* ``agent+stop``: the same with a ReAct stop string per env (``"\\nObservation:"``), which adds the
  per-row stop-string check at every step;
* ``rollout``: one episode per env through :func:`mulligan.training.rollout.collect_episodes` on an
  :class:`~mulligan.training.rollout.EnvPool` built once (env resets and steps, context records,
  trajectories included): what a trainer's collection costs on top of the agent.

Tokens are counted up to and including each row's first EOS, for every method. The ratios
(agent / generate) are what to read: above 0.9 means the agent's overhead is small.

    python benchmarks/bench_agents.py                      # the offline tiny model
    python benchmarks/bench_agents.py --model Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import torch

import mulligan  # noqa: F401 - registers the ids
from mulligan.agents.base import AgentInput
from mulligan.agents.hf import HFAgent
from mulligan.training.chat import encode
from mulligan.training.rollout import EnvPool, collect_episodes


def prompt_env() -> str:
    """The env whose observations are the prompts (Math-v0, else the Echo test env)."""
    for env_id in ("Mulligan/Math-v0", "Mulligan/Echo-v0"):
        try:
            gymnasium.make(env_id).close()
        except (ImportError, gymnasium.error.Error):
            continue
        return env_id
    raise RuntimeError("no env available to draw prompts from")


def observations(env_id: str, count: int) -> list[str]:
    env = gymnasium.make(env_id)
    return [env.reset(seed=k)[0] for k in range(count)]


def count_tokens(rows: list[list[int]], eos: set[int]) -> int:
    total = 0
    for row in rows:
        for k, token in enumerate(row):
            if token in eos:
                total += k + 1
                break
        else:
            total += len(row)
    return total


def time_generate(agent: HFAgent, inputs: list[AgentInput], max_new_tokens: int) -> tuple[float, int]:
    prompts = [agent.render_prompt(x) for x in inputs]
    ids = [encode(agent.tokenizer, p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), agent.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    input_ids, mask = input_ids.to(agent.device), mask.to(agent.device)
    sync(agent.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = agent.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            pad_token_id=agent.pad_token_id,
            eos_token_id=agent.eos_token_ids,
        )
    sync(agent.device)
    elapsed = time.perf_counter() - start
    return elapsed, count_tokens(out[:, width:].tolist(), set(agent.eos_token_ids))


def time_agent(agent: HFAgent, inputs: list[AgentInput]) -> tuple[float, int]:
    sync(agent.device)
    start = time.perf_counter()
    actions = agent.act(inputs)
    sync(agent.device)
    return time.perf_counter() - start, sum(len(a.completion_ids) for a in actions)


def time_rollout(agent: HFAgent, pool: EnvPool, num_episodes: int) -> tuple[float, int]:
    sync(agent.device)
    start = time.perf_counter()
    trajectories = collect_episodes(pool, agent, num_episodes, max_turns=1, progress=False)
    sync(agent.device)
    return time.perf_counter() - start, sum(len(t.completion_ids or []) for tr in trajectories for t in tr.turns)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="model id or path ('tiny' is the offline tiny model)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    agent = HFAgent(
        args.model,
        device=args.device,
        dtype=args.dtype,
        temperature=1.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=max(args.num_envs),
        seed=0,
    )
    env_id = prompt_env()
    texts = observations(env_id, max(args.num_envs))
    print(
        f"model={args.model} device={agent.device} max_new_tokens={args.max_new_tokens} "
        f"repeats={args.repeats} torch_threads={torch.get_num_threads()}"
    )
    header = (
        f"{'envs':>5} {'generate tok/s':>15} {'agent tok/s':>12} {'ratio':>6} "
        f"{'agent+stop tok/s':>17} {'ratio':>6} {'rollout tok/s':>14} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for num_envs in args.num_envs:
        plain = [AgentInput(messages=[{"role": "user", "content": t}]) for t in texts[:num_envs]]
        stopped = [AgentInput(messages=x.messages, stop=["\nObservation:"]) for x in plain]
        time_generate(agent, plain, 4)  # warm-up
        agent.act(plain[:1])
        best = {"generate": 0.0, "agent": 0.0, "stop": 0.0, "rollout": 0.0}
        with EnvPool(env_id, num_envs) as pool:
            for _ in range(args.repeats):
                runs = {
                    "generate": lambda p=plain: time_generate(agent, p, args.max_new_tokens),
                    "agent": lambda p=plain: time_agent(agent, p),
                    "stop": lambda s=stopped: time_agent(agent, s),
                    "rollout": lambda n=num_envs, pool=pool: time_rollout(agent, pool, n),
                }
                for name, run in runs.items():
                    elapsed, tokens = run()
                    best[name] = max(best[name], tokens / elapsed)
        ratio = {name: best[name] / best["generate"] for name in best}
        print(
            f"{num_envs:>5} {best['generate']:>15.0f} {best['agent']:>12.0f} {ratio['agent']:>6.2f} "
            f"{best['stop']:>17.0f} {ratio['stop']:>6.2f} {best['rollout']:>14.0f} {ratio['rollout']:>6.2f}"
        )


if __name__ == "__main__":
    main()
