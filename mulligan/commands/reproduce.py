"""``mulligan reproduce nat|rise|subgoal|corgi|all``: each paper's claim as a pre-declared experiment.

For each paper, the protocol declared in :mod:`mulligan.reproduce` and ``docs/reproduce.md`` is
run over its whole grid (arm x seed x budget), resumably, with a progress bar over the grid. The
outputs go to ``<output_dir>/<paper>/``: ``results.jsonl`` (every arm x seed x task), ``report.md``
(tables, the computed verdict, the exact command and commit), ``success.png`` and, when the claim
is about turns or attempts, ``curve.png``.

Presets: ``cpu`` (the tiny offline model in the learnable regime, for this kind of machine),
``gpu`` (a 0.5 B hub instruct model at paper-like settings; needs the download and a GPU) and
``tiny`` (seconds; for tests). ``--set key=value`` overrides one setting (a JSON value, else a
string); ``--seeds`` and ``--test_tasks`` are shortcuts. ``--generation`` picks the engine that
samples from the trained models: ``hf`` (transformers, the ``cpu`` and ``tiny`` default), ``vllm``
(an in-process vLLM engine) or ``auto`` (vLLM where it is installed, else transformers; the ``gpu``
default).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
from typing import Any

#: Paper name -> the module holding its PROTOCOL, PRESETS and run_cell.
PAPERS = {
    "nat": "mulligan.reproduce.nat",
    "rise": "mulligan.reproduce.rise",
    "subgoal": "mulligan.reproduce.subgoal",
    "corgi": "mulligan.reproduce.corgi",
}
PRESET_NAMES = ("cpu", "gpu", "tiny")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (``3``, ``0.5``, ``true``, ``{"a": 1}``), else the raw string."""
    if "=" not in text:
        raise ValueError(f"--set takes key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def paper_settings(module: Any, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied; an unknown key is refused with the known ones."""
    if preset not in module.PRESETS:
        raise ValueError(f"preset must be one of {sorted(module.PRESETS)}, got {preset!r}")
    # The generation engine is every paper's setting; the gpu preset uses vLLM where it is installed.
    settings = {"generation": "auto" if preset == "gpu" else "hf", **module.PRESETS[preset]}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {module.PROTOCOL.paper}; known: {sorted(settings)}")
    settings.update(overrides)
    if settings["seeds"] < 1 or settings["test_tasks"] < 1:
        raise ValueError("seeds and test_tasks must be >= 1")
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog="mulligan reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("paper", choices=[*PAPERS, "all"], help="Which paper's claim (or all four).")
    parser.add_argument("--preset", default="cpu", choices=PRESET_NAMES, help="Sizes (default: cpu).")
    parser.add_argument("--output_dir", default="runs/reproduce", help="Results go to <output_dir>/<paper>/.")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds per arm (default: the preset's).")
    parser.add_argument("--test_tasks", type=int, default=None, help="Held-out tasks (default: the preset's).")
    parser.add_argument(
        "--generation",
        default=None,
        choices=("hf", "vllm", "auto"),
        help="Engine that samples from the trained models (default: the preset's; gpu: auto).",
    )
    parser.add_argument("--arms", default="", help="Comma-separated subset of arms (default: all).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a setting.")
    parser.add_argument("--overwrite", action="store_true", help="Discard earlier results and start again.")
    parser.add_argument("--report_only", action="store_true", help="Only rewrite report.md and plots.")
    parser.add_argument(
        "--workers", type=int, default=1, help="Processes running cells side by side, one seed each (default: 1)."
    )
    parser.add_argument(
        "--torch_threads", type=int, default=0, help="Torch threads per process (0: torch's default; cores / workers)."
    )
    parser.add_argument("--disable_tqdm", action="store_true", help="Hide the progress bar.")
    return parser


def reproduce_paper(paper: str, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run (or resume) one paper's grid, then write its report and plots; returns the analysis."""
    from mulligan.reproduce.analysis import analyse
    from mulligan.reproduce.grid import read_results, run_grid
    from mulligan.reproduce.report import render_report, save_plots

    module = importlib.import_module(PAPERS[paper])
    overrides = dict(parse_override(s) for s in args.set)
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.test_tasks is not None:
        overrides["test_tasks"] = args.test_tasks
    if args.generation is not None:
        overrides["generation"] = args.generation
    settings = paper_settings(module, args.preset, overrides)
    output_dir = os.path.join(args.output_dir, paper)
    started = time.time()

    def log(message: str) -> None:
        print(f"[reproduce {paper} {time.time() - started:7.1f}s] {message}", flush=True)

    arms = [a for a in args.arms.split(",") if a] or None
    if not args.report_only:
        run_grid(
            module.PROTOCOL,
            module.run_cell,
            settings,
            output_dir,
            seeds=range(settings["seeds"]),
            arms=arms,
            progress=not args.disable_tqdm,
            overwrite=args.overwrite,
            log=log,
            workers=args.workers,
            torch_threads=args.torch_threads,
        )
    task_rows, cell_rows = read_results(os.path.join(output_dir, "results.jsonl"))
    analysis = analyse(module.PROTOCOL, task_rows, cell_rows)
    plots = save_plots(module.PROTOCOL, analysis, output_dir)
    seconds: dict[str, float] = {}
    for cell in cell_rows:
        for phase, value in cell.get("seconds", {}).items():
            seconds[phase] = seconds.get(phase, 0.0) + float(value)
    report = render_report(
        module.PROTOCOL,
        analysis,
        command=command,
        preset=args.preset,
        settings=settings,
        seconds=seconds,
        plots=plots,
        cells=len(cell_rows),
        provenance=sorted(
            {f"commit `{c.get('commit', 'unknown')}` on {c.get('machine', 'unknown')}" for c in cell_rows}
        ),
    )
    with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    primary = analysis["primary"]
    if primary is not None:
        log(
            f"{primary['arm']} - {primary['baseline']} ({primary['budget']}): {primary['mean']:+.3f} "
            f"[{primary['low']:+.3f}, {primary['high']:+.3f}] -> {analysis['verdict']}"
        )
    log(f"report: {os.path.join(output_dir, 'report.md')}")
    return analysis


def main(argv: list[str] | None = None) -> int:
    """``mulligan reproduce``: parse the flags and run each requested paper."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.torch_threads and args.workers == 1:  # with workers, each worker's threads are set by the grid
        import torch

        torch.set_num_threads(args.torch_threads)
    command = "mulligan reproduce " + shlex.join(argv)
    papers = list(PAPERS) if args.paper == "all" else [args.paper]
    try:
        for paper in papers:
            reproduce_paper(paper, args, command)
    except ValueError as error:
        print(f"mulligan reproduce: error: {error}", file=sys.stderr)
        return 2
    return 0
