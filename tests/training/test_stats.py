"""Intervals and verdicts that ``mulligan reproduce`` and ``mulligan demo`` report."""

import math
import random

import pytest

from mulligan.training.stats import (
    VERDICTS,
    mcnemar_exact,
    paired_bootstrap,
    t_cdf,
    t_interval,
    t_quantile,
    verdict,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    # Two-sided 95% critical values from any t table.
    [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (1000, 1.962)],
)
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_cdf_is_symmetric_and_monotone():
    assert t_cdf(0.0, 5) == pytest.approx(0.5)
    assert t_cdf(1.3, 5) + t_cdf(-1.3, 5) == pytest.approx(1.0)
    assert t_cdf(-2, 3) < t_cdf(0.5, 3) < t_cdf(3, 3)


def test_t_interval_known_answer_and_single_seed():
    mean, low, high = t_interval([0.4, 0.5, 0.6])
    # sd 0.1, n 3: half-width = 4.303 * 0.1 / sqrt(3)
    assert mean == pytest.approx(0.5)
    assert high - mean == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-3)
    assert mean - low == pytest.approx(high - mean)
    single = t_interval([0.3])
    assert single[0] == 0.3 and math.isnan(single[1]) and math.isnan(single[2])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)


def test_paired_bootstrap_identical_arms_give_zero_and_shifted_arms_exclude_zero():
    rng = random.Random(0)
    base = [[float(rng.random() < 0.5) for _ in range(300)] for _ in range(3)]
    same = paired_bootstrap(base, base, resamples=300)
    assert same.mean == 0.0 and same.low == 0.0 and same.high == 0.0
    better = [[1.0 if (x or rng.random() < 0.4) else 0.0 for x in row] for row in base]
    diff = paired_bootstrap(better, base, resamples=500)
    assert diff.low > 0 and diff.low <= diff.mean <= diff.high
    assert (diff.tasks, diff.seeds) == (300, 3)
    reverse = paired_bootstrap(base, better, resamples=500)
    assert reverse.mean == pytest.approx(-diff.mean) and reverse.high < 0


def test_paired_bootstrap_counts_seed_to_seed_spread():
    # Arm A beats B by a lot in one seed and loses by a lot in the other: no claim either way,
    # although a task-only bootstrap pooled over seeds would see a positive mean on many tasks.
    a = [[1.0] * 200, [0.0] * 150 + [1.0] * 50]
    b = [[0.0] * 200, [1.0] * 200]
    pooled = paired_bootstrap(a, b, resamples=400, resample_seeds=False)
    hierarchical = paired_bootstrap(a, b, resamples=400)
    assert hierarchical.high - hierarchical.low > pooled.high - pooled.low
    assert hierarchical.low < 0 < hierarchical.high


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="same tasks"):
        paired_bootstrap([[1, 0, 1]], [[1, 0]])
    with pytest.raises(ValueError, match="same tasks"):
        paired_bootstrap([], [])


def test_mcnemar_exact_known_answers():
    assert mcnemar_exact([1, 1, 0], [1, 1, 0]) == (0, 0, 1.0)
    # 10 discordant pairs, all for A: p = 2 * 0.5**10
    a = [1] * 10 + [0] * 5
    b = [0] * 10 + [0] * 5
    assert mcnemar_exact(a, b) == (10, 0, pytest.approx(2 / 1024))
    assert mcnemar_exact([1, 0], [0, 1])[2] == 1.0
    with pytest.raises(ValueError, match="same tasks"):
        mcnemar_exact([1], [1, 0])


def test_verdict_follows_the_interval_and_the_papers_direction():
    assert verdict(0.01, 0.2) == "reproduced in direction"
    assert verdict(-0.2, -0.01) == "contradicted"
    assert verdict(-0.1, 0.1) == "inconclusive"
    assert verdict(0.0, 0.1) == "inconclusive"
    assert verdict(-0.2, -0.01, direction=-1) == "reproduced in direction"
    assert verdict(0.01, 0.2, direction=-1) == "contradicted"
    assert verdict(math.nan, math.nan) == "inconclusive"
    assert set(VERDICTS) == {"reproduced in direction", "contradicted", "inconclusive"}
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, direction=0)


def test_wilson_interval_unchanged():
    low, high = wilson_interval(10, 64)
    assert low == pytest.approx(0.087, abs=1e-3) and high == pytest.approx(0.264, abs=1e-3)
