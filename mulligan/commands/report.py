"""``mulligan report``: compare ``mulligan eval`` results files: a models x envs table, paired differences, a plot.

Each file is what ``mulligan eval --results PATH`` writes (schema ``mulligan.eval/1``, see
:func:`mulligan.commands.evaluate.results_record`). The report has

* a table with one row per model (the ``--agent`` spec) and one column per env: the success rate,
  its Wilson 95% interval and the number of episodes ``n``;
* for every two runs on the same env that share tasks (the env's stable ``task_id``), the paired
  per-task difference of success (the later file minus the earlier one, each task's success
  averaged over its samples) with a percentile bootstrap 95% interval over tasks. Pairing removes
  the between-task variance that two independent intervals carry, so a difference the separate
  intervals cannot resolve often shows here (:func:`mulligan.training.stats.paired_bootstrap`);
* with ``--plot PATH``, a PNG bar chart (envs on the x axis, one bar per model, the intervals as
  error bars), drawn with matplotlib's headless Agg backend.

``mulligan eval --compare A.json B.json`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mulligan.training.stats import format_table, paired_bootstrap, wilson_interval

#: Results files this report reads.
SCHEMA_PREFIX = "mulligan.eval/"


@dataclass
class Run:
    """One results file.

    Attributes:
        path: The file.
        label: The model's name in the report (the ``--agent`` spec, or the file's name when two
            files evaluate the same spec on the same env).
        env_id: The env evaluated.
        episodes: Episodes scored.
        successes: Episodes solved.
        task_success: Each task's success averaged over its samples, by ``task_id``.
        record: The whole file.
    """

    path: str
    label: str
    env_id: str
    episodes: int
    successes: int
    task_success: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """The fraction of episodes solved (NaN when none were scored)."""
        return self.successes / self.episodes if self.episodes else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson 95% interval of the success rate."""
        return wilson_interval(self.successes, self.episodes)


def load_run(path: str) -> Run:
    """Read one results file.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not a ``mulligan eval`` results file (naming the file and the fix).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no results file {path}; write one with mulligan eval --results {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not JSON ({err}); pass files written by mulligan eval --results") from err
    if not isinstance(record, dict) or not str(record.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise ValueError(f"{path} is not a mulligan eval results file (no 'schema': '{SCHEMA_PREFIX}...'); "
                         "write one with mulligan eval --results PATH")  # fmt: skip
    try:
        tasks = record["tasks"]
        task_success = {
            str(t["task_id"]): float(np.mean([bool(s) for s in t["success"]])) for t in tasks if t["success"]
        }
        episodes = sum(len(t["success"]) for t in tasks)
        successes = sum(bool(s) for t in tasks for s in t["success"])
        env_id, agent = str(record["env_id"]), str(record["agent"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: a results file needs env_id, agent and tasks[].task_id/success ({err!r})") from err
    return Run(path, agent, env_id, episodes, successes, task_success, record)


def _disambiguate(runs: list[Run]) -> None:
    """Label runs that share a spec and an env by their file names, so no table cell holds two runs."""
    seen: dict[tuple[str, str], int] = {}
    for run in runs:
        seen[(run.label, run.env_id)] = seen.get((run.label, run.env_id), 0) + 1
    for run in runs:
        if seen[(run.label, run.env_id)] > 1:
            run.label = f"{run.label} ({os.path.basename(run.path)})"


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """The models x envs table: one row per label, a ``success [low, high] n=N`` cell per env."""
    envs = list(dict.fromkeys(r.env_id for r in runs))
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        low, high = run.interval
        row = rows.setdefault(run.label, {"model": run.label, **dict.fromkeys(envs, "")})
        row[run.env_id] = f"{run.success_rate:.3f} [{low:.3f}, {high:.3f}] n={run.episodes}"
    return list(rows.values())


def paired_rows(runs: list[Run], *, resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of runs on one env that share tasks: the paired difference (later - earlier) and its interval."""
    rows = []
    for i, first in enumerate(runs):
        for second in runs[i + 1 :]:
            if first.env_id != second.env_id:
                continue
            shared = [t for t in first.task_success if t in second.task_success]
            if not shared:
                continue
            # One row of outcomes per arm: a task-only bootstrap (each run is one seed).
            paired = paired_bootstrap(
                [[second.task_success[t] for t in shared]],
                [[first.task_success[t] for t in shared]],
                resamples=resamples,
                seed=seed,
            )
            rows.append({
                "env": first.env_id, "A": first.label, "B": second.label, "tasks": len(shared),
                "B - A": paired.mean, "95% CI": f"[{paired.low:.3f}, {paired.high:.3f}]",
                "low": paired.low, "high": paired.high,
            })  # fmt: skip
    return rows


def plot(runs: list[Run], path: str) -> str:
    """A PNG bar chart of success per env and model with the Wilson intervals; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r.env_id for r in runs))
    labels = list(dict.fromkeys(r.label for r in runs))
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(envs) * max(1, len(labels)) ** 0.5), 3.6))
    for k, label in enumerate(labels):
        xs, ys, errors = [], [], [[], []]
        for j, env in enumerate(envs):
            run = next((r for r in runs if r.label == label and r.env_id == env), None)
            if run is None or not run.episodes:
                continue
            low, high = run.interval
            xs.append(j - 0.4 + width * (k + 0.5))
            ys.append(run.success_rate)
            errors[0].append(max(0.0, run.success_rate - low))  # rounding may put the rate a hair outside
            errors[1].append(max(0.0, high - run.success_rate))
        axes.bar(xs, ys, width, yerr=errors, capsize=3, label=label)
    axes.set_xticks(range(len(envs)), [e.removeprefix("Mulligan/") for e in envs])
    axes.set_ylim(0, 1)
    axes.set_ylabel("success rate (95% CI)")
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``mulligan report``."""
    parser = argparse.ArgumentParser(prog="mulligan report", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="Results files written by mulligan eval --results.")
    parser.add_argument("--plot", default="", help="Write a PNG bar chart here.")
    parser.add_argument("--json", default="", help="Write the tables as JSON here.")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="Bootstrap resamples of paired differences.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``mulligan report``: print the comparison (and write the plot/JSON when asked)."""
    args = build_parser().parse_args(argv)
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    runs = [load_run(path) for path in args.results]
    _disambiguate(runs)
    table = comparison_rows(runs)
    pairs = paired_rows(runs, resamples=args.bootstrap, seed=args.seed)
    print(format_table(table))
    if pairs:
        print("\npaired differences on shared tasks (bootstrap over tasks):")
        print(format_table(pairs, ["env", "A", "B", "tasks", "B - A", "95% CI"]))
    if args.plot:
        print(f"plot in {plot(runs, args.plot)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"table": table, "paired": pairs, "files": [r.path for r in runs]}, handle, indent=2)
    return 0
