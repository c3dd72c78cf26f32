"""``mulligan collect``: roll an agent out on an env and append the trajectories to a JSONL store.

The agent is a scripted agent given as ``module:Class`` (built with no arguments, e.g.
``mulligan.agents.teachers.math:NoisyMathTeacher``), a model (``tiny``, a hub id, a local path)
driven by :class:`~mulligan.agents.hf.HFAgent`, or a served model (``--agent openai:MODEL
--base_url http://HOST:PORT/v1 --api_key_env NAME --concurrency 16``: a teacher behind vLLM, a
hosted API or ``transformers serve``, as NAT and RISE collect from GPT-3.5). Tasks are drawn with
``--seed``. Re-running the same command after a crash resumes: episodes already in the output
file are skipped, and the others are exactly those an uninterrupted run would have produced
(per-episode seeds). Only one collection may write a file at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mulligan.agents.loading import ServedModelArgs, load_agent
from mulligan.training.args import EnvArgs, EnvWorkerArgs, SamplingArgs, parse_args
from mulligan.training.rollout import EnvPool, collect_episodes
from mulligan.training.stats import format_table, summarize, summary_row
from mulligan.training.trajectory import Trajectory, TrajectoryStore


@dataclass
class CollectArgs(ServedModelArgs, EnvArgs, SamplingArgs, EnvWorkerArgs):
    """Configuration of ``mulligan collect`` (plus :class:`ServedModelArgs`, :class:`EnvArgs`, :class:`SamplingArgs`).

    Attributes:
        agent: ``openai:MODEL`` (a served model), ``module:Class`` of a scripted agent, or a
            model (``tiny``, hub id, local path).
        output: The JSONL file to append to (resumable).
        num_episodes: Episodes in total (tasks x samples_per_task).
        samples_per_task: Episodes per task.
        seed: Seed of task choice, resets and the agent.
        stop: Stop strings, comma-separated (e.g. ``\\nObservation:`` for ReAct envs).
        max_turns: Safety cap on turns per episode (0: rely on the env's own cap).
        skip_corrupt_lines: Skip malformed lines of an existing output file (with a warning)
            instead of stopping with the file and line number.
        disable_tqdm: Hide the progress bar.
    """

    agent: str = field(default="tiny", metadata={"help": "'openai:MODEL', 'module:Class' or a model."})
    output: str = field(default="trajectories.jsonl", metadata={"help": "JSONL file to append to."})
    num_episodes: int = field(default=100, metadata={"help": "Episodes in total."})
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task."})
    seed: int = field(default=0, metadata={"help": "Seed of tasks, resets and the agent."})
    stop: str = field(default="", metadata={"help": "Stop strings, comma-separated."})
    max_turns: int = field(default=0, metadata={"help": "Turn cap per episode (0: env's own)."})
    skip_corrupt_lines: bool = field(default=False, metadata={"help": "Skip malformed lines of the output file."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_episodes < 1 or self.samples_per_task < 1 or self.num_episodes % self.samples_per_task:
            raise ValueError(
                f"--num_episodes ({self.num_episodes}) must be a positive multiple of --samples_per_task "
                f"({self.samples_per_task})"
            )
        if self.max_turns < 0:
            raise ValueError(f"--max_turns must be >= 0 (0: no extra cap), got {self.max_turns}")
        if self.task_offset:
            raise ValueError("--task_offset applies to mulligan eval; collect draws its tasks with --seed")
        if not self.output:
            raise ValueError("--output is empty; pass the JSONL file to write, e.g. --output data/run.jsonl")


def run_collect(args: CollectArgs) -> list[Trajectory]:
    """Collect into ``args.output`` and return the trajectories (stored ones included)."""
    # Cheap checks first: the env id and the output path, before a model is loaded.
    with EnvPool(
        args.env_id, min(args.num_envs, args.num_episodes), args.make_kwargs(), **args.worker_kwargs()
    ) as pool:
        store = TrajectoryStore(args.output, skip_corrupt=args.skip_corrupt_lines)
        agent = load_agent(
            args.agent,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            system_prompt=args.system_prompt or None,
            **args.decoding_kwargs(),
            **args.served_kwargs(),
        )
        try:
            return collect_episodes(
                pool,
                agent,
                args.num_episodes,
                seed=args.seed,
                samples_per_task=args.samples_per_task,
                stop=[s for s in args.stop.split(",") if s],
                store=store,
                progress=not args.disable_tqdm,
                max_turns=args.max_turns or None,
            )
        finally:
            if hasattr(agent, "close"):
                agent.close()


def main(argv: list[str] | None = None) -> int:
    """``mulligan collect``: parse :class:`CollectArgs` flags, collect, print a summary."""
    args = parse_args(CollectArgs, argv, prog="mulligan collect", description=__doc__.split("\n")[0])
    trajectories = run_collect(args)
    print(format_table([summary_row(summarize(trajectories), env=args.env_id, agent=args.agent)]))
    print(f"trajectories in {args.output}")
    return 0
