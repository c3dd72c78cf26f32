"""``mulligan reproduce``: each seed paper's headline claim as a pre-declared, seeded experiment.

A claim is a :class:`~mulligan.reproduce.protocol.Protocol` (the primary metric, the arms, the
controls, the budgets, the seeds, the test set and the comparisons with the paper's direction),
declared in code and in ``docs/reproduce.md`` before any result is looked at. A paper module
(:mod:`mulligan.reproduce.nat`, :mod:`~mulligan.reproduce.rise`, :mod:`~mulligan.reproduce.subgoal`,
:mod:`~mulligan.reproduce.corgi`) trains and evaluates one cell (arm x seed x budget) through the
methods' public functions. :mod:`mulligan.reproduce.grid` runs every cell once, resumably, and
appends each cell's per-task outcomes to ``results.jsonl``; :mod:`mulligan.reproduce.analysis`
turns them into per-arm intervals over seeds, paired per-task differences with bootstrap intervals
and computed verdicts; :mod:`mulligan.reproduce.report` writes ``report.md`` and the plots.
"""

from mulligan.reproduce.protocol import Arm, CellResult, Comparison, PhaseTimer, Protocol

__all__ = ["Arm", "CellResult", "Comparison", "PhaseTimer", "Protocol"]
