"""``mulligan eval``: success rate and score of an agent or checkpoint on held-out tasks, with CIs.

Evaluation is a collection with its own seed (so its tasks differ from training's), greedy
decoding by default, and a summary: success rate with a Wilson interval, mean score, turns. With
``--nat_prompt math|qa`` the model sees NAT's inference prompt (the "correctly" instruction); with
``--rise_metrics`` the RISE metrics (m1@t1, m5@t1, m1@t5, p1@t5) are computed as well.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from mulligan.training.rise import evaluate_rise, load_agent
from mulligan.training.rollout import collect_episodes
from mulligan.training.stats import format_table, summarize, summary_row
from mulligan.training.trajectory import TrajectoryStore


@dataclass
class EvalConfig:
    """Configuration of ``mulligan eval``.

    Attributes:
        env_id: A registered env id.
        agent: ``module:Class`` of a scripted agent, or a model (``tiny``, hub id, checkpoint path).
        num_episodes: Held-out episodes.
        seed: Seed of the held-out tasks (use one different from training's).
        env_kwargs: JSON keyword arguments for ``gymnasium.make``.
        num_envs: Envs run side by side.
        temperature: Sampling temperature (0: greedy).
        max_new_tokens: Tokens per action.
        nat_prompt: ``none``, or ``math``/``qa``: wrap the task in NAT's "correctly" prompt.
        nat_position: ``suffix`` or ``prefix`` (as the NAT model was trained).
        window: Attempts kept in context for multi-turn envs (0: all; RISE uses 2).
        rise_metrics: Also compute RISE's m1@t1, m5@t1, m1@t5, p1@t5.
        output: JSONL file for the evaluation trajectories (empty: not saved).
        disable_tqdm: Hide the progress bar.
    """

    env_id: str = field(default="Mulligan/Echo-v0", metadata={"help": "Registered env id."})
    agent: str = field(default="tiny", metadata={"help": "'module:Class' or a model/checkpoint."})
    num_episodes: int = field(default=100, metadata={"help": "Held-out episodes."})
    seed: int = field(default=1000, metadata={"help": "Seed of held-out tasks."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON kwargs for gymnasium.make."})
    num_envs: int = field(default=16, metadata={"help": "Envs in lockstep."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0: greedy)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens per action."})
    nat_prompt: str = field(default="none", metadata={"help": "none | math | qa."})
    nat_position: str = field(default="suffix", metadata={"help": "suffix | prefix."})
    window: int = field(default=0, metadata={"help": "Attempts in context (0: all)."})
    rise_metrics: bool = field(default=False, metadata={"help": "Also compute RISE metrics."})
    output: str = field(default="", metadata={"help": "JSONL for eval trajectories."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"env_kwargs must be a JSON object: {err}") from err
        if not isinstance(kwargs, dict):
            raise ValueError("env_kwargs must be a JSON object, e.g. '{\"max_attempts\": 3}'")
        if self.nat_prompt not in ("none", "math", "qa"):
            raise ValueError(f"nat_prompt must be none, math or qa; got {self.nat_prompt!r}")
        if self.num_episodes < 1 or self.num_envs < 1:
            raise ValueError("num_episodes and num_envs must be >= 1")
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")


def build_eval_agent(config: EvalConfig):
    """The agent under evaluation, with the NAT prompt and context window applied."""
    from mulligan.training.nat import NATPromptAgent

    kwargs: dict[str, Any] = {"temperature": config.temperature, "max_new_tokens": config.max_new_tokens,
                              "seed": config.seed}
    if config.window:
        from mulligan.agents.context import LastAttempts

        kwargs["context"] = LastAttempts(config.window)
    agent = load_agent(config.agent, **kwargs)
    if config.nat_prompt != "none":
        agent = NATPromptAgent(agent, domain=config.nat_prompt, position=config.nat_position)
    return agent


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate; returns ``{"summary": {...}, "rise": {...} or None}``."""
    agent = build_eval_agent(config)
    trajectories = collect_episodes(
        config.env_id, agent, config.num_episodes, env_kwargs=json.loads(config.env_kwargs),
        num_envs=config.num_envs, seed=config.seed, progress=not config.disable_tqdm,
        store=TrajectoryStore(config.output) if config.output else None,
    )
    result: dict[str, Any] = {"summary": summarize(trajectories, config.env_id).to_dict(), "rise": None}
    if config.rise_metrics:
        result["rise"] = evaluate_rise(agent, config.env_id, num_tasks=config.num_episodes, seed=config.seed,
                                       env_kwargs=json.loads(config.env_kwargs))
    return result


def main(argv: list[str] | None = None) -> int:
    """``mulligan eval``: parse :class:`EvalConfig` flags, evaluate, print a table."""
    from transformers import HfArgumentParser

    from mulligan.training.stats import Summary

    parser = HfArgumentParser(EvalConfig, prog="mulligan eval", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    result = run_eval(config)
    print(format_table([summary_row(Summary(**result["summary"]), agent=config.agent)]))
    if result["rise"]:
        print(format_table([{"agent": config.agent, **result["rise"]}]))
    return 0
