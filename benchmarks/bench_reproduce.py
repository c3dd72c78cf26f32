"""Wall time of ``mulligan reproduce`` per paper, and its split into generation, env steps and optimisation.

Runs each paper's grid (``--preset tiny`` by default: seconds, the split is what matters; ``--preset
cpu`` for the real grid, an hour or more per paper on 2 cores) into a fresh folder, then reads the
per-cell time split that the grid records in ``results.jsonl`` and prints one row per paper: cells,
wall seconds, and the share of generation (model calls, timed around the agent), env steps
(evaluation and data collection outside the model), optimisation (the method's training call; RISE
and CORGI interleave their rollouts inside it) and other (loading, data preparation, I/O).

``--from_dir runs/reproduce`` only summarises grids that already ran.

Usage: ``python benchmarks/bench_reproduce.py --papers nat,rise --preset tiny --torch_threads 1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from mulligan.commands.reproduce import PAPERS
from mulligan.commands.reproduce import main as reproduce
from mulligan.reproduce.grid import read_results
from mulligan.reproduce.protocol import PHASES
from mulligan.training.stats import format_table


def summarise(paper: str, folder: str, wall: float | None) -> dict:
    _, cells = read_results(os.path.join(folder, paper, "results.jsonl"))
    seconds = {p: sum(float(c["seconds"].get(p, 0.0)) for c in cells) for p in PHASES}
    total = sum(seconds.values()) or 1.0
    row = {"paper": paper, "cells": len(cells), "wall s": round(wall if wall is not None else total, 1)}
    row.update({f"{p} %": round(100 * seconds[p] / total, 1) for p in PHASES})
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", default=",".join(PAPERS), help="Comma-separated papers.")
    parser.add_argument("--preset", default="tiny", help="tiny | cpu | gpu.")
    parser.add_argument("--torch_threads", default="1")
    parser.add_argument("--from_dir", default="", help="Summarise existing grids under this folder instead.")
    args = parser.parse_args()
    rows = []
    folder = args.from_dir or tempfile.mkdtemp(prefix="bench_reproduce-")
    for paper in [p for p in args.papers.split(",") if p]:
        wall = None
        if not args.from_dir:
            started = time.perf_counter()
            code = reproduce([paper, "--preset", args.preset, "--output_dir", folder,
                              "--torch_threads", args.torch_threads, "--disable_tqdm"])  # fmt: skip
            wall = time.perf_counter() - started
            if code:
                return code
        rows.append(summarise(paper, folder, wall))
    print(format_table(rows))
    print(f"grids under {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
