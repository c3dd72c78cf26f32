"""``mulligan eval``: success rate and score of an agent or checkpoint on held-out tasks, with CIs.

Evaluation goes through :func:`mulligan.training.evaluation.evaluate`: by default every task of the
split once (``--num_episodes 0``); ``--num_episodes N`` takes the N consecutive task indices from
``--task_offset``, each scored exactly once (never drawn with replacement). Decoding is greedy by
default. With ``--nat_prompt math|qa`` the model sees NAT's inference prompt; with
``--rise_metrics`` RISE's metrics (m1@t1, m5@t1, m1@t5, p1@t5; arXiv 2407.18219, Sec. 5) are
computed through the same evaluation: an oracle-free multi-turn run
(``RetryWithFeedback(stop_on_success=False)``, the last ``--window`` attempts in context) and a
5-sample single-turn run, with majority votes keyed by the math verifier's answer extraction
(:func:`answer_key`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mulligan.agents.base import Agent
from mulligan.agents.loading import load_agent
from mulligan.training.args import EnvArgs, SamplingArgs, parse_args
from mulligan.training.evaluation import EvalResult, evaluate, majority_metric, rise_turn_metrics
from mulligan.training.rollout import EnvPool
from mulligan.training.stats import format_table, summary_row
from mulligan.training.trajectory import TrajectoryStore


@dataclass
class EvalArgs(EnvArgs, SamplingArgs):
    """Configuration of ``mulligan eval`` (plus :class:`EnvArgs` and :class:`SamplingArgs`).

    Attributes:
        agent: ``module:Class`` of a scripted agent, or a model (``tiny``, hub id, checkpoint path).
        num_episodes: Tasks to evaluate: 0 is the whole split (each task once); N > 0 takes the N
            task indices from ``task_offset`` (required for endless procedural sources).
        samples_per_task: Episodes per task (pass@k, majority votes).
        seed: Seed of the resets and the agent's sampling.
        temperature: Sampling temperature (0: greedy, the default for evaluation).
        nat_prompt: ``none``, or ``math``/``qa``: wrap the task in NAT's "correctly" prompt.
        nat_position: ``suffix`` or ``prefix`` (as the NAT model was trained).
        window: Attempts kept in the model's context in multi-turn episodes (0: all; RISE uses 2).
        rise_metrics: Also compute RISE's m1@t1, m5@t1, m1@t<rise_turns>, p1@t<rise_turns>.
        rise_turns: Turns of the oracle-free multi-turn run.
        rise_samples: Samples of the single-turn majority vote (m<rise_samples>@t1).
        rise_temperature: Sampling temperature of those samples.
        output: JSONL file for the evaluation trajectories (empty: not saved).
        json_output: JSON file for the results (empty: printed only).
        disable_tqdm: Hide the progress bar.
    """

    agent: str = field(default="tiny", metadata={"help": "'module:Class' or a model/checkpoint."})
    num_episodes: int = field(default=0, metadata={"help": "Tasks (0: the whole split, each once)."})
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task."})
    seed: int = field(default=1000, metadata={"help": "Seed of resets and sampling."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0: greedy)."})
    nat_prompt: str = field(default="none", metadata={"help": "none | math | qa."})
    nat_position: str = field(default="suffix", metadata={"help": "suffix | prefix."})
    window: int = field(default=0, metadata={"help": "Attempts in context (0: all)."})
    rise_metrics: bool = field(default=False, metadata={"help": "Also compute RISE metrics."})
    rise_turns: int = field(default=5, metadata={"help": "Turns of the RISE multi-turn run."})
    rise_samples: int = field(default=5, metadata={"help": "Samples of RISE's turn-1 majority vote."})
    rise_temperature: float = field(default=1.0, metadata={"help": "Temperature of those samples."})
    output: str = field(default="", metadata={"help": "JSONL for eval trajectories."})
    json_output: str = field(default="", metadata={"help": "JSON file for the results."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nat_prompt not in ("none", "math", "qa"):
            raise ValueError(f"--nat_prompt must be none, math or qa; got {self.nat_prompt!r}")
        if self.nat_position not in ("suffix", "prefix"):
            raise ValueError(f"--nat_position must be suffix or prefix; got {self.nat_position!r}")
        if self.num_episodes < 0:
            raise ValueError(f"--num_episodes must be >= 0 (0: the whole split), got {self.num_episodes}")
        for name in ("samples_per_task", "rise_turns", "rise_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.window < 0:
            raise ValueError(f"--window must be >= 0 (0: all attempts), got {self.window}")

    def task_indices(self) -> list[int] | None:
        """The explicit task indices, or ``None`` for the whole split."""
        if self.num_episodes == 0:
            return None if self.task_offset == 0 else _rest_of_split(self)
        return list(range(self.task_offset, self.task_offset + self.num_episodes))


def _rest_of_split(args: EvalArgs) -> list[int]:
    with EnvPool(args.env_id, 1, args.make_kwargs()) as pool:
        if pool.num_tasks is None:
            raise ValueError("this env is an endless procedural source; pass --num_episodes N")
        return list(range(args.task_offset, pool.num_tasks))


def build_eval_agent(args: EvalArgs) -> Agent:
    """The agent under evaluation, with the NAT prompt and context window applied."""
    kwargs: dict[str, Any] = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "system_prompt": args.system_prompt or None,
    }
    if args.window:
        from mulligan.agents.context import LastAttempts

        kwargs["context"] = LastAttempts(args.window)
    agent = load_agent(args.agent, **kwargs)
    if args.nat_prompt != "none":
        from mulligan.agents.nat_prompt import NATPromptAgent

        agent = NATPromptAgent(agent, domain=args.nat_prompt, position=args.nat_position)
    return agent


def without_oracle(pool: EnvPool) -> EnvPool:
    """Make every env of ``pool`` keep retrying after a success (RISE's no-oracle runs)."""
    from mulligan.envs.wrappers import set_stop_on_success

    if pool.is_multi_turn:
        for env in pool.envs:
            set_stop_on_success(env, False)
    return pool


def answer_key(text: str) -> str:
    """The majority-vote key of an action: the math verifier's extracted answer, else the stripped text."""
    from mulligan.envs.verifiers.math import extract_answer

    answer = extract_answer(text)
    return answer if answer is not None else text.strip()


def rise_metrics(agent: Agent, args: EvalArgs, task_indices: list[int] | None) -> dict[str, float]:
    """RISE's four metrics through :func:`~mulligan.training.evaluation.evaluate` (see the module docstring)."""
    progress = not args.disable_tqdm
    kwargs = args.make_kwargs(max_attempts=args.rise_turns)
    with without_oracle(EnvPool(args.env_id, args.num_envs, kwargs)) as pool:
        turns = evaluate(
            agent,
            pool,
            task_indices,
            seed=args.seed,
            progress=progress,
            metrics=[rise_turn_metrics(answer_key, args.rise_turns)],
        )
    single = args.make_kwargs()
    single.pop("max_attempts", None)
    # The turn-1 vote needs diverse samples: sample at rise_temperature, then restore the agent.
    sampler = getattr(agent, "agent", agent)  # a NAT prompt wrapper samples through its inner agent
    restore = getattr(sampler, "temperature", None)
    if restore is not None:
        sampler.temperature = args.rise_temperature
    try:
        samples = evaluate(
            agent,
            args.env_id,
            task_indices,
            env_kwargs=single,
            samples_per_task=args.rise_samples,
            seed=args.seed,
            num_envs=args.num_envs,
            progress=progress,
            metrics=[majority_metric(answer_key, f"m{args.rise_samples}@t1")],
        )
    finally:
        if restore is not None:
            sampler.temperature = restore
    return {**turns.metrics, **samples.metrics}


def run_eval(args: EvalArgs) -> EvalResult:
    """Evaluate; with ``--rise_metrics`` the RISE metrics are in ``result.metrics``."""
    indices = args.task_indices()
    store = TrajectoryStore(args.output) if args.output else None
    agent = build_eval_agent(args)
    result = evaluate(
        agent,
        args.env_id,
        indices,
        env_kwargs=args.make_kwargs(),
        samples_per_task=args.samples_per_task,
        seed=args.seed,
        num_envs=args.num_envs,
        store=store,
        progress=not args.disable_tqdm,
    )
    if args.rise_metrics:
        result.metrics.update(rise_metrics(agent, args, indices))
    return result


def main(argv: list[str] | None = None) -> int:
    """``mulligan eval``: parse :class:`EvalArgs` flags, evaluate, print a table."""
    args = parse_args(EvalArgs, argv, prog="mulligan eval", description=__doc__.split("\n")[0])
    result = run_eval(args)
    print(format_table([summary_row(result.summary, env=args.env_id, agent=args.agent)]))
    if result.metrics:
        print(format_table([{"agent": args.agent, **result.metrics}]))
    if args.json_output:
        with open(args.json_output, "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle, indent=2)
    return 0
