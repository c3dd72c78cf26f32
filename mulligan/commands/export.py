"""``mulligan export``: trajectories as a Hugging Face dataset, in a folder or on the Hub.

::

    mulligan export runs/teacher.jsonl --to dir:runs/teacher-ds        # datasets.save_to_disk
    mulligan export runs/teacher.jsonl --to hub:my-org/teacher-math    # datasets.push_to_hub
    mulligan export hf:reasonwang/NATInstruct::gsm8k_positive \\
        --questions data/dataset/gsm8k/train.json --to dir:runs/natinstruct-gsm8k-pos

Inputs are anything :func:`mulligan.training.datasets.load_trajectory_source` reads (trajectory
JSONL stores, exported folders, ``hf:`` datasets, NATInstruct records); several inputs are
concatenated in order. The columns are described in :mod:`mulligan.training.datasets`; trainers
read the result back with ``--trajectories dir:PATH`` or ``hf:ORG/NAME``. Pushing needs a network
and a token with write access (``hf auth login`` or ``HF_TOKEN``). The target is checked before
any input is read: an existing non-empty folder needs ``--overwrite`` (which only ever replaces a
folder that ``save_to_disk`` wrote).
"""

from __future__ import annotations

import argparse
import sys

from mulligan.training.datasets import (
    DEFAULT_SPLIT,
    check_export_target,
    export_dataset,
    load_trajectory_source,
    parse_export_target,
    to_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mulligan export``."""
    parser = argparse.ArgumentParser(
        prog="mulligan export", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="Trajectory JSONL, dataset folder or hf: spec.")
    parser.add_argument("--to", required=True, help="'dir:PATH' (save_to_disk) or 'hub:ORG/NAME' (push_to_hub).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing dataset folder.")
    parser.add_argument("--private", action="store_true", help="Create the hub repository as private.")
    parser.add_argument("--split", default=DEFAULT_SPLIT, help="The hub split to write (default: train).")
    parser.add_argument(
        "--skip_corrupt_lines", action="store_true", help="Skip malformed lines of an input store (with a warning)."
    )
    parser.add_argument("--disable_tqdm", action="store_true", help="Hide the progress bars.")
    parser.add_argument("--questions", default=None, help="NATInstruct inputs: the question file joined by id.")
    parser.add_argument(
        "--domain", default=None, help="NATInstruct inputs: gsm8k | hotpotqa | strategyqa (default: from the name)."
    )
    return parser


def run_export(
    inputs: list[str],
    to: str,
    *,
    overwrite: bool = False,
    private: bool = False,
    split: str = DEFAULT_SPLIT,
    skip_corrupt_lines: bool = False,
    questions: str | None = None,
    domain: str | None = None,
    progress: bool = True,
) -> tuple[str, int]:
    """Read ``inputs``, build the dataset, write it to ``to``; return ``(where, number of rows)``.

    The target is parsed and checked first, so a bad target fails before any input is read.

    Raises:
        ValueError, FileNotFoundError, FileExistsError, NotADirectoryError: Usage errors, each with
            a one-line message that names the problem and the fix.
    """
    target = parse_export_target(to)
    check_export_target(target, overwrite=overwrite)
    trajectories = []
    for spec in inputs:
        loaded = load_trajectory_source(spec, skip_corrupt=skip_corrupt_lines, questions=questions, domain=domain)
        if not loaded:
            raise ValueError(f"{spec} holds no trajectories; nothing to export")
        trajectories.extend(loaded)
    dataset = to_dataset(trajectories)
    where = export_dataset(dataset, target, overwrite=overwrite, private=private, split=split, progress=progress)
    return where, len(dataset)


def main(argv: list[str] | None = None) -> int:
    """``mulligan export``: parse the flags, export, print where the dataset went."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    where, rows = run_export(
        args.inputs,
        args.to,
        overwrite=args.overwrite,
        private=args.private,
        split=args.split,
        skip_corrupt_lines=args.skip_corrupt_lines,
        questions=args.questions,
        domain=args.domain,
        progress=not args.disable_tqdm,
    )
    print(f"{rows} trajectories exported to {where}")
    return 0
