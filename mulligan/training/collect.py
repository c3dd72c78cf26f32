"""``mulligan collect``: roll an agent out on an env and append the trajectories to a JSONL store.

The agent is a scripted teacher given as ``module:Class`` (built with no arguments, e.g.
``mulligan.agents.teachers.math:NoisyMathTeacher``) or a model (``tiny``, a hub id, a local path)
driven by :class:`~mulligan.agents.hf.HFAgent`. Re-running the same command after a crash resumes:
episodes already in the output file are skipped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from mulligan.training.rise import load_agent
from mulligan.training.rollout import collect_episodes
from mulligan.training.stats import format_table, summarize, summary_row
from mulligan.training.trajectory import TrajectoryStore


@dataclass
class CollectConfig:
    """Configuration of ``mulligan collect``.

    Attributes:
        env_id: A registered env id, e.g. ``Mulligan/Math-v0``.
        agent: ``module:Class`` of a scripted agent, or a model (``tiny``, hub id, local path).
        output: The JSONL file to append to (resumable).
        num_episodes: Episodes in total (tasks x samples_per_task).
        samples_per_task: Episodes per task.
        env_kwargs: JSON keyword arguments for ``gymnasium.make`` (``{"max_attempts": 3}`` for retries).
        num_envs: Envs run side by side (the agent's batch).
        seed: Seed of task choice, resets and the agent.
        temperature: Sampling temperature of a model agent (0: greedy).
        max_new_tokens: Tokens a model agent generates per action.
        system_prompt: A system message for every conversation (empty: none).
        stop: Stop strings, comma-separated (e.g. ``\\nObservation:`` for ReAct envs).
        max_turns: Safety cap on turns per episode (0: rely on the env's own cap).
        disable_tqdm: Hide the progress bar.
    """

    env_id: str = field(default="Mulligan/Echo-v0", metadata={"help": "Registered env id."})
    agent: str = field(default="tiny", metadata={"help": "'module:Class' of a scripted agent, or a model."})
    output: str = field(default="trajectories.jsonl", metadata={"help": "JSONL file to append to."})
    num_episodes: int = field(default=100, metadata={"help": "Episodes in total."})
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON kwargs for gymnasium.make."})
    num_envs: int = field(default=8, metadata={"help": "Envs in lockstep."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    temperature: float = field(default=1.0, metadata={"help": "Model sampling temperature."})
    max_new_tokens: int = field(default=256, metadata={"help": "Model tokens per action."})
    system_prompt: str = field(default="", metadata={"help": "System message (empty: none)."})
    stop: str = field(default="", metadata={"help": "Stop strings, comma-separated."})
    max_turns: int = field(default=0, metadata={"help": "Turn cap per episode (0: env's own)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"env_kwargs must be a JSON object, e.g. '{{\"max_attempts\": 3}}': {err}") from err
        if not isinstance(kwargs, dict):
            raise ValueError("env_kwargs must be a JSON object, e.g. '{\"max_attempts\": 3}'")
        if self.num_episodes < 1 or self.samples_per_task < 1 or self.num_episodes % self.samples_per_task:
            raise ValueError("num_episodes must be a positive multiple of samples_per_task")
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be >= 0 (0: no extra cap), got {self.max_turns}")


def run_collect(config: CollectConfig) -> list:
    """Collect into ``config.output`` and return the trajectories (stored ones included)."""
    agent = load_agent(config.agent, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                       seed=config.seed)
    return collect_episodes(
        config.env_id, agent, config.num_episodes, env_kwargs=json.loads(config.env_kwargs),
        num_envs=config.num_envs, seed=config.seed, samples_per_task=config.samples_per_task,
        system_prompt=config.system_prompt or None, stop=[s for s in config.stop.split(",") if s],
        store=TrajectoryStore(config.output), progress=not config.disable_tqdm,
        max_turns=config.max_turns or None,
    )


def main(argv: list[str] | None = None) -> int:
    """``mulligan collect``: parse :class:`CollectConfig` flags, collect, print a summary."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(CollectConfig, prog="mulligan collect", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    trajectories = run_collect(config)
    print(format_table([summary_row(summarize(trajectories), env=config.env_id, agent=config.agent)]))
    print(f"trajectories in {config.output}")
    return 0
