"""Success-rate and score summaries with confidence intervals.

Success rates get Wilson score intervals (well behaved at 0 and 1 and for small samples, unlike
the normal approximation); mean scores and returns get a normal-approximation interval from the
sample standard error. Everything is pure Python over lists of trajectories or numbers.

For experiments that compare methods (``mulligan reproduce``): :func:`t_interval` (a mean over a
few seeds with a Student-t interval), :func:`paired_bootstrap` (the paired per-task difference of
two arms scored on the same tasks, resampling seeds and tasks), :func:`mcnemar_exact` (paired
binary outcomes within one seed) and :func:`verdict` (the computed verdict on a claim).
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


# ------------------------------------------------------------------ intervals over seeds and paired tasks


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-14
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (for the t and binomial tails)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - front * _incomplete_beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """The cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t (bisection on :func:`t_cdf`; no scipy needed)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie in (0, 1), got {probability}")
    low, high = -1e6, 1e6
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over a few runs (seeds) with a Student-t interval.

    With the handful of seeds an experiment affords, the normal interval of :func:`mean_interval`
    is too narrow; the t quantile with ``n - 1`` degrees of freedom is the honest one. One value
    gives ``(v, nan, nan)``: a single seed says nothing about seed-to-seed spread.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return (mean, math.nan, math.nan)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(variance / n)
    return (mean, mean - half, mean + half)


@dataclass
class PairedDifference:
    """The paired difference ``arm A - arm B`` over the same tasks, with a bootstrap interval.

    Attributes:
        mean: Mean over tasks of the per-task difference (each arm's per-task outcome averaged over seeds).
        low: Lower end of the bootstrap interval.
        high: Upper end of the bootstrap interval.
        tasks: Tasks compared (scored by both arms).
        seeds: Seeds per arm.
        resamples: Bootstrap resamples drawn.
        confidence: Confidence level of the interval.
    """

    mean: float
    low: float
    high: float
    tasks: int
    seeds: int
    resamples: int
    confidence: float

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def paired_bootstrap(
    outcomes_a: Sequence[Sequence[float]],
    outcomes_b: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    resample_seeds: bool = True,
) -> PairedDifference:
    """Paired per-task difference of two arms with a (hierarchical) percentile bootstrap interval.

    ``outcomes_a[s][j]`` is arm A's outcome (1/0 success, or a score) on task ``j`` in seed ``s``;
    arm B's seed ``s`` shares that seed's data and tasks, so seeds pair as tasks do. Each resample
    draws seeds with replacement (when ``resample_seeds`` and there are at least two), then tasks
    with replacement, and takes the mean difference; the interval is the central ``confidence``
    share of those means. Resampling seeds as well as tasks keeps the training run's own
    randomness in the interval, which a task-only bootstrap (or McNemar within one seed) ignores.

    Raises:
        ValueError: if the arms' shapes differ or are empty.
    """
    import numpy as np

    a = np.asarray(outcomes_a, dtype=float)
    b = np.asarray(outcomes_b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"need two equal, non-empty (seeds x tasks) arrays scored on the same tasks; got {a.shape} and {b.shape}"
        )
    if not 0.0 < confidence < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence}, {resamples}")
    difference = a - b  # (seeds, tasks)
    num_seeds, num_tasks = difference.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(0, num_seeds, num_seeds) if resample_seeds and num_seeds > 1 else np.arange(num_seeds)
        columns = rng.integers(0, num_tasks, num_tasks)
        means[r] = difference[np.ix_(rows, columns)].mean()
    tail = (1.0 - confidence) / 2
    return PairedDifference(
        mean=float(difference.mean()),
        low=float(np.quantile(means, tail)),
        high=float(np.quantile(means, 1.0 - tail)),
        tasks=num_tasks,
        seeds=num_seeds,
        resamples=resamples,
        confidence=confidence,
    )


def mcnemar_exact(successes_a: Sequence[bool], successes_b: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on paired binary outcomes (one seed, the same tasks).

    Returns:
        ``(a_only, b_only, p_value)``: tasks only arm A solved, tasks only arm B solved, and the
        two-sided exact binomial p-value of the discordant pairs (1.0 when there are none).
    """
    if len(successes_a) != len(successes_b):
        raise ValueError(f"need outcomes on the same tasks, got {len(successes_a)} and {len(successes_b)}")
    a_only = sum(bool(x) and not bool(y) for x, y in zip(successes_a, successes_b, strict=True))
    b_only = sum(bool(y) and not bool(x) for x, y in zip(successes_a, successes_b, strict=True))
    discordant = a_only + b_only
    if discordant == 0:
        return (0, 0, 1.0)
    k = min(a_only, b_only)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2.0**discordant
    return (a_only, b_only, min(1.0, 2.0 * tail))


#: The three verdicts a claim can get; computed by :func:`verdict`, never written by hand.
VERDICTS = ("reproduced in direction", "contradicted", "inconclusive")


def verdict(low: float, high: float, direction: int = 1) -> str:
    """The verdict on a claim from the interval of ``arm - baseline``.

    Args:
        low: Lower end of the paired interval.
        high: Upper end.
        direction: ``+1`` when the paper says the arm is higher, ``-1`` when it says lower.

    Returns:
        ``"reproduced in direction"`` when the interval excludes zero on the paper's side,
        ``"contradicted"`` when it excludes zero on the other side, else ``"inconclusive"``
        (also when the interval is undefined).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if math.isnan(low) or math.isnan(high) or low > high:
        return VERDICTS[2]
    low, high = (low, high) if direction == 1 else (-high, -low)
    if low > 0:
        return VERDICTS[0]
    if high < 0:
        return VERDICTS[1]
    return VERDICTS[2]
