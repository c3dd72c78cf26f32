"""From ``results.jsonl`` to per-arm intervals, paired differences and computed verdicts.

* Per arm and budget: each seed's mean of the primary metric over the test tasks, then the mean
  over seeds with a Student-t 95% interval (:func:`~mulligan.training.stats.t_interval`).
* Per comparison and budget: the paired per-task difference ``arm - baseline`` over the seeds both
  arms finished, with a bootstrap interval that resamples seeds and tasks
  (:func:`~mulligan.training.stats.paired_bootstrap`), McNemar per seed for binary metrics, and
  the verdict (:func:`~mulligan.training.stats.verdict`): computed from the interval, never written.
* The mechanism check: each mechanism number's mean over seeds with its t-interval.
* The learnable regime: whether the reference arm's held-out mean lies in [0.3, 0.7].
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from mulligan.reproduce.protocol import Protocol
from mulligan.training.stats import mcnemar_exact, paired_bootstrap, t_interval, verdict

#: The reference arm must land here on held-out tasks for differences to be measurable.
LEARNABLE_REGIME = (0.3, 0.7)


def _outcomes(task_rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str], dict[int, dict[int, float]]]:
    """``{(arm, budget): {seed: {task_index: value}}}`` for rows that have ``metric``."""
    table: dict[tuple[str, str], dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in task_rows:
        if metric in row and row[metric] is not None:
            table[(row["arm"], row["budget"])][int(row["seed"])][int(row["task_index"])] = float(row[metric])
    return table


def arm_summaries(protocol: Protocol, task_rows: list[dict[str, Any]], metric: str = "") -> list[dict[str, Any]]:
    """One row per (arm, budget): seeds, tasks, mean over seeds with its t-interval, per-seed means."""
    metric = metric or protocol.primary_metric
    table = _outcomes(task_rows, metric)
    rows = []
    for budget in protocol.budgets:
        for arm in protocol.arms:
            per_seed = table.get((arm.name, budget), {})
            if not per_seed:
                continue
            seed_means = {s: sum(v.values()) / len(v) for s, v in sorted(per_seed.items())}
            mean, low, high = t_interval(list(seed_means.values()))
            rows.append(
                {
                    "arm": arm.name,
                    "budget": budget,
                    "metric": metric,
                    "seeds": len(seed_means),
                    "tasks": min(len(v) for v in per_seed.values()),
                    "mean": mean,
                    "low": low,
                    "high": high,
                    "per_seed": seed_means,
                }
            )
    return rows


def comparisons(
    protocol: Protocol, task_rows: list[dict[str, Any]], *, resamples: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Every declared comparison under every budget: paired difference, interval, McNemar, verdict."""
    results = []
    for comparison in protocol.comparisons:
        metric = comparison.metric or protocol.primary_metric
        table = _outcomes(task_rows, metric)
        for budget in protocol.budgets:
            arm, base = table.get((comparison.arm, budget), {}), table.get((comparison.baseline, budget), {})
            seeds = sorted(set(arm) & set(base))
            row: dict[str, Any] = {
                "arm": comparison.arm,
                "baseline": comparison.baseline,
                "budget": budget,
                "metric": metric,
                "direction": comparison.direction,
                "claim": comparison.claim,
                "primary": comparison.primary,
                "seeds": len(seeds),
            }
            if not seeds:
                results.append({**row, "tasks": 0, "mean": math.nan, "low": math.nan, "high": math.nan,
                                "verdict": verdict(math.nan, math.nan, comparison.direction)})  # fmt: skip
                continue
            tasks = sorted(set.intersection(*(set(arm[s]) & set(base[s]) for s in seeds)))
            a = [[arm[s][t] for t in tasks] for s in seeds]
            b = [[base[s][t] for t in tasks] for s in seeds]
            difference = paired_bootstrap(a, b, resamples=resamples, seed=seed)
            row.update(tasks=len(tasks), mean=difference.mean, low=difference.low, high=difference.high)
            row["verdict"] = verdict(difference.low, difference.high, comparison.direction)
            if all(v in (0.0, 1.0) for values in a + b for v in values):
                row["mcnemar"] = [
                    dict(zip(("seed", "arm_only", "baseline_only", "p"), (s, *mcnemar_exact(x, y)), strict=True))
                    for s, x, y in zip(seeds, a, b, strict=True)
                ]
            results.append(row)
    return results


def mechanism_summaries(protocol: Protocol, cell_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arm, budget, mechanism number): the mean over seeds with its t-interval."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for cell in cell_rows:
        for key, value in (cell.get("mechanism") or {}).items():
            if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                values[(cell["arm"], cell["budget"], key)].append(float(value))
    order = {a.name: i for i, a in enumerate(protocol.arms)}
    rows = []
    for (arm, budget, key), numbers in sorted(
        values.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 0), kv[0][2])
    ):
        mean, low, high = t_interval(numbers)
        rows.append(
            {"arm": arm, "budget": budget, "check": key, "seeds": len(numbers), "mean": mean, "low": low, "high": high}
        )
    return rows


def curves(
    protocol: Protocol, task_rows: list[dict[str, Any]]
) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """``{(arm, budget): [(mean, low, high) at step 1..k]}`` of the protocol's curve metric (``{}`` when none)."""
    if not protocol.curve_metric:
        return {}
    steps = sorted(
        {int(k[len(protocol.curve_metric):]) for r in task_rows for k in r
         if k.startswith(protocol.curve_metric) and k[len(protocol.curve_metric):].isdigit()}
    )  # fmt: skip
    result = {}
    for step in steps:
        for row in arm_summaries(protocol, task_rows, f"{protocol.curve_metric}{step}"):
            result.setdefault((row["arm"], row["budget"]), []).append((row["mean"], row["low"], row["high"]))
    return result


def learnable_regime(protocol: Protocol, arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the reference arm's mean (first budget) lies in :data:`LEARNABLE_REGIME`."""
    for row in arms:
        if row["arm"] == protocol.reference_arm and row["budget"] == protocol.budgets[0]:
            low, high = LEARNABLE_REGIME
            return {"arm": row["arm"], "mean": row["mean"], "in_regime": low <= row["mean"] <= high}
    return {"arm": protocol.reference_arm, "mean": math.nan, "in_regime": False}


def analyse(
    protocol: Protocol, task_rows: list[dict[str, Any]], cell_rows: list[dict[str, Any]], **kwargs: Any
) -> dict[str, Any]:
    """Everything the report shows; the claim's verdict is the primary comparison's under the first budget."""
    arms = arm_summaries(protocol, task_rows)
    compared = comparisons(protocol, task_rows, **kwargs)
    primary = next(
        (c for c in compared if c["primary"] and c["budget"] == protocol.budgets[0]),
        None,
    )
    return {
        "arms": arms,
        "comparisons": compared,
        "mechanism": mechanism_summaries(protocol, cell_rows),
        "curves": curves(protocol, task_rows),
        "regime": learnable_regime(protocol, arms),
        "verdict": primary["verdict"] if primary else verdict(math.nan, math.nan),
        "primary": primary,
    }
