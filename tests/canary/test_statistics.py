"""tracekit's canary statistics against scipy.stats, the reference, on tied and untied data.

tracekit computes these itself (docs/design-notes.md says why); scipy is a dev dependency only,
used here to check every p-value and interval end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tracekit.canary.proportions import fisher_greater, fisher_less, newcombe_difference, wilson
from tracekit.canary.ranks import LOG_TICKS, exact_sf, log_ticks, mann_whitney, shift
from tracekit.canary.selection import kth_pair_differences
from tracekit.canary.tail import exceedance_test, order_statistic_ranks, quantile_shift_interval

ALTERNATIVES = ("greater", "less", "two-sided")


def _samples(rng: np.random.Generator, tied: bool, n1: int, n2: int) -> tuple[np.ndarray, ...]:
    if tied:  # durations recorded in whole milliseconds: many exact ties
        return (
            rng.integers(1, 8, n1).astype(float) / 1e3,
            rng.integers(1, 9, n2).astype(float) / 1e3,
        )
    return rng.lognormal(-3.0, 0.5, n1), rng.lognormal(-2.9, 0.6, n2)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("sizes", [(3, 5), (8, 30), (12, 9), (40, 55), (700, 300)])
def test_mann_whitney_matches_scipy(tied: bool, sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes) + tied)
    for _ in range(20):
        canary, baseline = _samples(rng, tied, *sizes)
        for alternative in ALTERNATIVES:
            mine = mann_whitney(canary, baseline, alternative)
            reference = stats.mannwhitneyu(canary, baseline, alternative=alternative)

            assert mine.u == reference.statistic
            assert mine.p_value == pytest.approx(reference.pvalue, rel=1e-12, abs=1e-300)
            small = min(sizes) <= 8 and len(np.unique(np.concatenate([canary, baseline]))) == sum(
                sizes
            )
            assert mine.method == ("exact" if small else "normal")


def test_exact_distribution_matches_scipy_exact_method() -> None:
    rng = np.random.default_rng(3)
    for n1, n2 in [(1, 1), (2, 7), (5, 5), (8, 8), (4, 60)]:
        canary, baseline = rng.normal(size=n1), rng.normal(size=n2)
        u = round(mann_whitney(canary, baseline).u)
        reference = stats.mannwhitneyu(canary, baseline, alternative="greater", method="exact")

        assert exact_sf(u, n1, n2) == pytest.approx(reference.pvalue, rel=1e-12)


def test_every_value_tied_is_no_evidence() -> None:
    same = np.full(20, 0.01)

    assert mann_whitney(same, same).p_value == 1.0


ZERO_HEAVY = [
    (0, 300, 10, 300), (10, 300, 0, 300), (3, 50, 0, 50), (0, 50, 3, 50), (0, 50, 0, 50),
    (0, 400, 0, 400), (5, 1000, 5, 1000), (1, 1, 0, 1), (0, 1, 0, 1), (0, 20, 20, 20),
    (11_000, 100_000, 9_000, 100_000), (9_000, 100_000, 11_000, 100_000),
]  # fmt: skip


def test_fisher_matches_scipy_on_zero_heavy_and_large_tables() -> None:
    rng = np.random.default_rng(11)
    tables = list(ZERO_HEAVY)
    for _ in range(200):
        n1, n2 = (int(n) for n in rng.integers(1, 2000, 2))
        tables.append((int(rng.integers(0, n1 + 1)), n1, int(rng.integers(0, n2 + 1)), n2))
    for a, n_a, b, n_b in tables:
        table = [[a, n_a - a], [b, n_b - b]]
        greater = stats.fisher_exact(table, alternative="greater").pvalue
        less = stats.fisher_exact(table, alternative="less").pvalue

        assert fisher_greater(a, n_a, b, n_b) == pytest.approx(greater, rel=1e-8, abs=1e-300)
        assert fisher_less(a, n_a, b, n_b) == pytest.approx(less, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("events,trials", [(0, 50), (0, 400), (3, 50), (5, 1000), (50, 50)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_wilson_matches_scipy(events: int, trials: int, alpha: float) -> None:
    z = stats.norm.ppf(1 - alpha)
    reference = stats.binomtest(events, trials).proportion_ci(1 - 2 * alpha, method="wilson")

    low, high = wilson(events, trials, z)

    assert low == pytest.approx(reference.low, abs=1e-12)
    assert high == pytest.approx(reference.high, abs=1e-12)


def test_newcombe_interval_of_a_difference() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 - 48/80, method 10.
    low, high = newcombe_difference(56, 70, 48, 80, stats.norm.ppf(0.975))
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # and built from scipy's Wilson intervals on zero-heavy counts
    for a, n_a, b, n_b in ZERO_HEAVY:
        z = stats.norm.ppf(0.95)
        wa = stats.binomtest(a, n_a).proportion_ci(0.9, method="wilson")
        wb = stats.binomtest(b, n_b).proportion_ci(0.9, method="wilson")
        d = a / n_a - b / n_b
        expected_low = d - math.hypot(a / n_a - wa.low, wb.high - b / n_b)
        expected_high = d + math.hypot(wa.high - a / n_a, b / n_b - wb.low)

        assert newcombe_difference(a, n_a, b, n_b, z) == pytest.approx(
            (expected_low, expected_high), abs=1e-12
        )


def test_pairwise_selection_matches_sorting_every_pair() -> None:
    rng = np.random.default_rng(5)
    for n1, n2, spread in [
        (1, 1, 5),
        (7, 3, 4),
        (60, 45, 30),
        (3000, 2000, 10**9),
        (3000, 2000, 8),
    ]:
        canary = np.sort(rng.integers(-spread, spread, n1))
        baseline = np.sort(rng.integers(-spread, spread, n2))
        every = np.sort((canary[:, None] - baseline[None, :]).ravel())
        ks = [1, len(every), (len(every) + 1) // 2, int(rng.integers(1, len(every) + 1))]

        assert kth_pair_differences(canary, baseline, ks) == [int(every[k - 1]) for k in ks]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_hodges_lehmann_estimate_is_the_median_pairwise_ratio(tied: bool) -> None:
    rng = np.random.default_rng(8 + tied)
    canary, baseline = (np.sort(s) for s in _samples(rng, tied, 41, 60))
    ticks = log_ticks(canary), log_ticks(baseline)
    every = (ticks[0][:, None] - ticks[1][None, :]).ravel()

    found = shift(*ticks, 0.05)

    assert found.estimate == pytest.approx(np.median(every) / LOG_TICKS, abs=1e-12)


@pytest.mark.parametrize("sizes", [(8, 8), (30, 45), (300, 300)])
def test_shift_interval_inverts_scipys_test(sizes: tuple[int, int]) -> None:
    """Each end is where scipy's one-sided test of the shifted canary turns significant."""
    rng = np.random.default_rng(sizes[0])
    canary, baseline = (np.sort(s) for s in _samples(rng, False, *sizes))
    c, b = log_ticks(canary).astype(float), log_ticks(baseline).astype(float)
    alpha = 0.05

    found = shift(log_ticks(canary), log_ticks(baseline), alpha)
    assert found.lower is not None and found.upper is not None
    lower, upper = found.lower * LOG_TICKS, found.upper * LOG_TICKS

    def p(offset: float, alternative: str) -> float:
        return float(stats.mannwhitneyu(c - offset, b, alternative=alternative).pvalue)

    assert p(lower - 0.5, "greater") <= alpha < p(lower + 0.5, "greater")
    assert p(upper + 0.5, "less") <= alpha < p(upper - 0.5, "less")
    assert lower < found.estimate * LOG_TICKS < upper


def test_shift_interval_is_unbounded_when_no_test_could_reject() -> None:
    found = shift(log_ticks(np.array([0.01, 0.02])), log_ticks(np.array([0.015])), 0.05)

    assert (found.lower, found.upper) == (None, None)


def _exceedance_table(canary: np.ndarray, baseline: np.ndarray, q: float) -> tuple[int, int]:
    pooled = np.sort(np.concatenate([canary, baseline]))
    threshold = pooled[math.ceil(q * len(pooled)) - 1]
    if (pooled > threshold).any() or (pooled >= threshold).all():
        return int((canary > threshold).sum()), int((baseline > threshold).sum())
    # nobody strictly above (all tie at the threshold): those at it count as above
    return int((canary >= threshold).sum()), int((baseline >= threshold).sum())


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_tail_test_is_fishers_on_counts_above_the_pooled_quantile(tied: bool, q: float) -> None:
    rng = np.random.default_rng(int(q * 100) + tied)
    for n1, n2 in [(20, 25), (300, 300), (150, 900)]:
        canary, baseline = (np.sort(log_ticks(np.sort(s))) for s in _samples(rng, tied, n1, n2))
        above = _exceedance_table(canary, baseline, q)
        table = [[above[0], n1 - above[0]], [above[1], n2 - above[1]]]
        reference = stats.fisher_exact(table, alternative="greater").pvalue

        found = exceedance_test(canary, baseline, q)

        assert (found.canary_above, found.baseline_above) == above
        assert found.p_value == pytest.approx(reference, rel=1e-8)


def test_tail_interval_inverts_the_tail_test() -> None:
    """Just outside each end scipy's Fisher test on the shifted canary rejects; just inside not."""
    rng = np.random.default_rng(21)
    canary = np.sort(log_ticks(np.sort(rng.lognormal(0.0, 0.8, 600))))
    baseline = np.sort(log_ticks(np.sort(rng.lognormal(0.0, 0.5, 600))))
    alpha = 0.05

    lower, upper = quantile_shift_interval(canary, baseline, 0.95, alpha, LOG_TICKS)
    assert lower is not None and upper is not None

    def p(log_offset: float, alternative: str) -> float:
        shifted = canary - round(log_offset * LOG_TICKS)
        above = _exceedance_table(shifted, baseline, 0.95)
        table = [[above[0], 600 - above[0]], [above[1], 600 - above[1]]]
        return float(stats.fisher_exact(table, alternative=alternative).pvalue)

    step = 2e-4  # two bisection steps
    assert p(lower - step, "greater") < alpha <= p(lower + step, "greater")
    assert p(upper + step, "less") < alpha <= p(upper - step, "less")
    # a wider tail at the same median: the p95 ratio's interval lies above 1
    assert 1 < math.exp(lower) < math.exp(0.3 * 1.645) < math.exp(upper)


@pytest.mark.parametrize(("n", "q", "alpha"), [(100, 0.95, 0.025), (300, 0.5, 0.05),
                                              (5000, 0.99, 0.005), (20, 0.95, 0.025)])  # fmt: skip
def test_order_statistic_ranks_bound_the_quantile_by_scipys_binomial(
    n: int, q: float, alpha: float
) -> None:
    """The r-th smallest of n is below the q-quantile when at least r values are: Binomial(n, q).
    low is the highest rank below it with confidence 1 - alpha, high the lowest rank above it."""
    low, high = order_statistic_ranks(n, q, alpha)
    below = stats.binom(n, q)

    def at_or_below(r: int) -> float:  # P(the r-th smallest is at or below the quantile)
        return float(below.sf(r - 1))

    if low is None:
        assert at_or_below(1) < 1 - alpha
    else:
        assert at_or_below(low) >= 1 - alpha - 1e-12 > at_or_below(low + 1)
    if high is None:  # even the largest value is above the quantile too rarely
        assert below.cdf(n - 1) < 1 - alpha
    else:
        assert below.cdf(high - 1) >= 1 - alpha - 1e-12 > below.cdf(high - 2)
