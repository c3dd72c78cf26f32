"""Success-rate and score summaries with confidence intervals.

Success rates get Wilson score intervals (well behaved at 0 and 1 and for small samples, unlike
the normal approximation); mean scores and returns get a normal-approximation interval from the
sample standard error. Everything is pure Python over lists of trajectories or numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

#: Two-sided normal quantiles for the confidence levels we print.
_Z = {0.90: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004}


def _z(confidence: float) -> float:
    if confidence not in _Z:
        raise ValueError(f"confidence must be one of {sorted(_Z)}, got {confidence}")
    return _Z[confidence]


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0.0, 1.0)`` when ``total`` is 0."""
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got successes={successes}, total={total}")
    if total == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and a normal-approximation interval from its standard error."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return (mean, mean, mean)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = _z(confidence) * math.sqrt(variance / n)
    return (mean, mean - half, mean + half)


@dataclass
class Summary:
    """Aggregate results of a set of episodes.

    Attributes:
        name: What was evaluated (an env id, or an env id and agent).
        episodes: Number of episodes.
        success_rate: Fraction of episodes solved.
        success_low: Lower end of the Wilson interval of the success rate.
        success_high: Upper end of the Wilson interval.
        mean_score: Mean final ``info["score"]``.
        score_low: Lower end of the interval of the mean score.
        score_high: Upper end of the interval of the mean score.
        mean_return: Mean episode return.
        mean_turns: Mean number of agent turns.
    """

    name: str
    episodes: int
    success_rate: float
    success_low: float
    success_high: float
    mean_score: float
    score_low: float
    score_high: float
    mean_return: float
    mean_turns: float

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def summarize(trajectories: Iterable, name: str = "", confidence: float = 0.95) -> Summary:
    """Summarise trajectories (anything with ``success``, ``score``, ``episode_return``, ``turns``)."""
    trajectories = list(trajectories)
    successes = sum(bool(t.success) for t in trajectories)
    low, high = wilson_interval(successes, len(trajectories), confidence)
    score, score_low, score_high = mean_interval([float(t.score) for t in trajectories], confidence)
    returns = [float(t.episode_return) for t in trajectories]
    turns = [len(t.turns) for t in trajectories]
    n = len(trajectories)
    return Summary(
        name=name,
        episodes=n,
        success_rate=successes / n if n else math.nan,
        success_low=low,
        success_high=high,
        mean_score=score,
        score_low=score_low,
        score_high=score_high,
        mean_return=sum(returns) / n if n else math.nan,
        mean_turns=sum(turns) / n if n else math.nan,
    )


def summarize_by_env(trajectories: Iterable, confidence: float = 0.95) -> dict[str, Summary]:
    """One :class:`Summary` per ``env_id``, in order of first appearance."""
    groups: dict[str, list] = {}
    for trajectory in trajectories:
        groups.setdefault(trajectory.env_id, []).append(trajectory)
    return {env_id: summarize(group, env_id, confidence) for env_id, group in groups.items()}


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of dict rows (floats shown with 3 decimals)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def summary_row(summary: Summary, **extra) -> dict:
    """A table row for :func:`format_table`: the summary with its interval written as text."""
    return {
        **extra,
        "episodes": summary.episodes,
        "success": summary.success_rate,
        "success 95% CI": f"[{summary.success_low:.2f}, {summary.success_high:.2f}]",
        "score": summary.mean_score,
        "turns": summary.mean_turns,
    }
