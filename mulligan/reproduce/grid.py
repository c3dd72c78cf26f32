"""Run a protocol's grid (arm x seed x budget) once, resumably, into ``results.jsonl``.

Every finished cell appends, in one write, one ``{"kind": "task", ...}`` row per held-out task
and then one ``{"kind": "cell", ...}`` row (mechanism numbers, time per phase). A cell whose
``cell`` row is missing (the run was interrupted inside it) is run again and its stray task rows
are ignored, so an interrupted grid continues where it stopped and ends with the same file content
per cell as an uninterrupted one. ``manifest.json`` pins the protocol and settings: resuming with
different settings is refused (it would mix two experiments in one file).

``workers > 1`` runs cells in that many spawned processes. Cells of one seed share cached data and
models, so they always run one after the other in order; cells of different seeds run side by
side. The main process alone writes the files, a cell at a time as each finishes, so a parallel
grid resumes like a sequential one and yields the same rows.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from typing import Any

from mulligan.reproduce.protocol import CellResult, PhaseTimer, Protocol

#: ``run_cell(arm, seed, budget, *, settings, workdir, timer) -> CellResult``
CellRunner = Callable[..., CellResult]


def read_results(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(task_rows, cell_rows)`` of the finished cells in ``results.jsonl`` (a missing file is empty).

    Task rows of a cell without its closing ``cell`` row (an interrupted cell) are dropped, and so
    is a torn last line.
    """
    if not os.path.exists(path):
        return [], []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by an interruption; its cell is rerun
    cells = [r for r in rows if r.get("kind") == "cell"]
    done = {cell_key(r) for r in cells}
    tasks = [r for r in rows if r.get("kind") == "task" and cell_key(r) in done]
    # A rerun cell may have left task rows twice (once torn, once whole): keep each task once, the last.
    unique: dict[tuple, dict[str, Any]] = {}
    for row in tasks:
        unique[(*cell_key(row), row["task_index"])] = row
    return list(unique.values()), cells


def cell_key(row: dict[str, Any]) -> tuple[str, int, str]:
    """The cell a result row belongs to: ``(arm, seed, budget)``."""
    return (row["arm"], int(row["seed"]), row["budget"])


def grid_cells(
    protocol: Protocol, seeds: Iterable[int], arms: Iterable[str] | None = None
) -> list[tuple[str, int, str]]:
    """Every cell in run order: seed by seed (so a partial grid already pairs arms), then budget, then arm."""
    chosen = list(arms) if arms is not None else [a.name for a in protocol.arms]
    for name in chosen:
        protocol.arm(name)  # raises on an unknown arm
    return [(arm, seed, budget) for seed in seeds for budget in protocol.budgets for arm in chosen]


def _check_manifest(path: str, manifest: dict[str, Any]) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("settings") != manifest["settings"] or previous.get("protocol") != manifest["protocol"]:
            raise ValueError(
                f"{path} was written by a run with other settings or another protocol; resuming would mix two "
                "experiments in one results.jsonl. Use another --output_dir, or --overwrite to start again."
            )
        return
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, default=str)


def _init_worker(torch_threads: int) -> None:
    """A worker process's torch threads (each worker gets its share of the cores)."""
    import torch

    torch.set_num_threads(max(1, torch_threads))


Cell = tuple[str, int, str]


def _run_timed_cell(
    run_cell: CellRunner, protocol: Protocol, cell: Cell, settings: dict[str, Any], workdir: str
) -> tuple[CellResult, dict[str, float], float]:
    """Run one cell and time it: ``(result, seconds per phase, wall seconds)`` (in a worker or here)."""
    arm_name, seed, budget = cell
    timer = PhaseTimer()
    started = time.perf_counter()
    result = run_cell(protocol.arm(arm_name), seed, budget, settings=settings, workdir=workdir, timer=timer)
    wall = time.perf_counter() - started
    timer.seconds["other"] += max(0.0, wall - sum(timer.seconds.values()))
    return result, dict(timer.seconds), wall


def _run_in_workers(
    todo: list[Cell], job: tuple[CellRunner, Protocol, dict[str, Any], str], workers: int, threads: int, record
) -> None:
    """Run ``todo`` in ``workers`` spawned processes, at most one cell per seed at a time, in grid order.

    ``record(cell, result, seconds, wall)`` is called here, in the main process, as each cell ends.
    """
    run_cell, protocol, settings, workdir = job
    waiting = list(todo)
    running: dict[Future, Cell] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch or tokenizer state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        while waiting or running:
            busy = {cell[1] for cell in running.values()}
            # Start the next cell of every idle seed, in grid order (a seed's cells stay in order).
            for cell in list(waiting):
                if len(running) >= workers:
                    break
                if cell[1] in busy:
                    continue
                busy.add(cell[1])
                waiting.remove(cell)
                running[pool.submit(_run_timed_cell, run_cell, protocol, cell, settings, workdir)] = cell
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                record(running.pop(future), *future.result())


def run_grid(
    protocol: Protocol,
    run_cell: CellRunner,
    settings: dict[str, Any],
    output_dir: str,
    *,
    seeds: Iterable[int],
    arms: Iterable[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    workers: int = 1,
    torch_threads: int = 0,
) -> dict[str, Any]:
    """Run every cell not yet in ``output_dir/results.jsonl`` and append its rows.

    Args:
        protocol: The claim's protocol.
        run_cell: The paper module's cell runner.
        settings: The preset's settings (plus overrides); pinned in ``manifest.json``.
        output_dir: ``runs/reproduce/<paper>`` (models go under ``work/``).
        seeds: Seeds of every arm.
        arms: A subset of arms (default: all).
        progress: Show a progress bar over the whole grid.
        overwrite: Delete previous results and start again.
        log: Where one line per finished cell goes (default: nothing).
        workers: Processes running cells side by side (1: all in this process); cells of one seed
            never run at the same time.
        torch_threads: Torch threads per worker process (0: the cores divided among the workers).

    Returns:
        ``{"cells", "ran", "skipped", "seconds": {phase: s}, "wall_seconds"}`` for this invocation.

    Raises:
        ValueError: when a cell scores a different list of tasks than the cells before it (every arm
            must be scored on the same tasks), or the manifest disagrees.
    """
    seeds = list(seeds)
    os.makedirs(output_dir, exist_ok=True)
    results_path = os.path.join(output_dir, "results.jsonl")
    manifest_path = os.path.join(output_dir, "manifest.json")
    if overwrite:
        for path in (results_path, manifest_path):
            if os.path.exists(path):
                os.remove(path)
    _check_manifest(manifest_path, {"protocol": json.loads(json.dumps(asdict(protocol))), "settings": settings})
    task_rows, cell_rows = read_results(results_path)
    done = {cell_key(r) for r in cell_rows}
    expected_tasks = _task_list(task_rows)
    cells = grid_cells(protocol, seeds, arms)
    todo = [c for c in cells if c not in done]
    # A tqdm bar in a terminal, a whole line every 10% or 30 s in a log (mulligan.training.progress).
    from mulligan.training.progress import progress_bar

    bar = progress_bar(
        len(cells), f"reproduce {protocol.paper}", "cell", enabled=progress, initial=len(cells) - len(todo)
    )
    totals = PhaseTimer()
    started = time.perf_counter()
    workdir = os.path.join(output_dir, "work")
    from mulligan.reproduce.report import git_commit, machine

    provenance = {"commit": git_commit(), "machine": machine()}
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def record(cell: Cell, result: CellResult, seconds: dict[str, float], wall: float) -> None:
        nonlocal expected_tasks
        arm_name, seed, budget = cell
        indices = [int(t["task_index"]) for t in result.tasks]
        if expected_tasks is None:
            expected_tasks = indices
        elif indices != expected_tasks:
            raise ValueError(
                f"cell {arm_name}/seed {seed}/{budget} scored tasks {indices[:5]}... but earlier cells scored "
                f"{expected_tasks[:5]}...: every arm must be scored on the same tasks, each once"
            )
        if len(set(indices)) != len(indices):
            raise ValueError(f"cell {arm_name}/seed {seed}/{budget} scored a task twice: each task is scored once")
        base = {"paper": protocol.paper, "arm": arm_name, "seed": seed, "budget": budget}
        lines = [json.dumps({"kind": "task", **base, **task}) for task in result.tasks]
        lines.append(
            json.dumps(
                {
                    "kind": "cell",
                    **base,
                    "tasks": len(result.tasks),
                    "mechanism": result.mechanism,
                    "extra": result.extra,
                    "seconds": {k: round(v, 3) for k, v in seconds.items()},
                    **provenance,
                },
                default=str,
            )
        )
        with open(results_path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for phase, value in seconds.items():
            totals.seconds[phase] += value
        if log is not None:
            primary = [float(t[protocol.primary_metric]) for t in result.tasks]
            log(
                f"{arm_name} seed {seed} {budget}: {protocol.primary_metric} "
                f"{sum(primary) / max(len(primary), 1):.3f} on {len(primary)} tasks ({wall:.0f}s)"
            )
        if bar is not None:
            bar.update(1)

    if workers == 1:
        for cell in todo:
            record(cell, *_run_timed_cell(run_cell, protocol, cell, settings, workdir))
    else:
        threads = torch_threads or max(1, (os.cpu_count() or 1) // workers)
        _run_in_workers(todo, (run_cell, protocol, settings, workdir), workers, threads, record)
    if bar is not None:
        bar.close()
    return {
        "cells": len(cells),
        "ran": len(todo),
        "skipped": len(cells) - len(todo),
        "seconds": totals.seconds,
        "wall_seconds": time.perf_counter() - started,
    }


def _task_list(task_rows: list[dict[str, Any]]) -> list[int] | None:
    """The task indices of the first finished cell, in order (``None`` when nothing has run)."""
    if not task_rows:
        return None
    first = cell_key(task_rows[0])
    return [int(r["task_index"]) for r in task_rows if cell_key(r) == first]
