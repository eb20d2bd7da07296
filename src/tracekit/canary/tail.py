"""The tail test: does the canary put more requests above the shared p95 than the baseline does?

A rank test weighs the whole distribution and barely moves when only the slowest few percent get
slower (a wider tail at the same median). This test looks only there: pool both versions, take
the pooled q-quantile (nearest rank), count each version's requests above it, and ask
Fisher's exact test whether the canary's share is larger. Under the null hypothesis the version
labels are exchangeable and the pooled threshold does not depend on them, so the test is exact.

Its effect is the ratio of the two versions' q-quantiles, with an interval found by inverting the
same test: the ratios r for which "canary / r" is not significantly heavier-tailed nor lighter.

Durations read from histogram buckets are only known to lie inside their bucket (ties by the
hundred, and nothing known within a bucket): there the interval is also bounded by order
statistics (``bucketed_quantile_interval``), which need no more than that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tracekit.canary.proportions import fisher_greater, fisher_less

__all__ = [
    "Exceedance",
    "Floats",
    "Ticks",
    "bucketed_quantile_interval",
    "exceedance_test",
    "order_statistic_ranks",
    "quantile_shift_interval",
]

Ticks = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
_Side = Literal["left", "right"]  # numpy's searchsorted side: "left" counts ties as above
_RESOLUTION = 10_000  # interval ends to 1e-5 on the log scale (0.001% of the ratio)


@dataclass(frozen=True, slots=True)
class Exceedance:
    """The canary's and the baseline's counts above the pooled quantile, and the one-sided p."""

    threshold: int  # in the samples' units
    canary_above: int
    baseline_above: int
    p_value: float


def exceedance_test(canary: Ticks, baseline: Ticks, q: float, offset: int = 0) -> Exceedance:
    """Fisher's test on counts above the pooled ``q``-quantile; ``offset`` is taken off the canary.

    The p-value is for "the canary has more above the threshold".
    """
    rank = math.ceil(q * (len(canary) + len(baseline)))
    threshold = _pooled_order_statistic(canary, baseline, offset, rank)
    side = _side(canary, baseline, threshold, offset)
    canary_above = len(canary) - int(np.searchsorted(canary, threshold + offset, side=side))
    baseline_above = len(baseline) - int(np.searchsorted(baseline, threshold, side=side))
    p = fisher_greater(canary_above, len(canary), baseline_above, len(baseline))
    return Exceedance(threshold, canary_above, baseline_above, p)


def _side(canary: Ticks, baseline: Ticks, threshold: int, offset: int) -> _Side:
    """Count requests strictly above the threshold (``"right"``), or, when that is nobody, at it
    too (``"left"``).

    Many requests can tie at the threshold (a histogram's overflow bucket all sits on its last
    bound; constant latencies): then "strictly above" is nobody in either version, and the test
    would see no difference however many more the canary puts there. The choice looks at the
    pooled sample only, so the test stays exact.
    """
    total = len(canary) + len(baseline)
    at_or_above = (
        total
        - int(np.searchsorted(canary, threshold + offset, side="left"))
        - int(np.searchsorted(baseline, threshold, side="left"))
    )
    strictly = (
        total
        - int(np.searchsorted(canary, threshold + offset, side="right"))
        - int(np.searchsorted(baseline, threshold, side="right"))
    )
    return "left" if strictly == 0 and at_or_above < total else "right"


def _pooled_order_statistic(canary: Ticks, baseline: Ticks, offset: int, rank: int) -> int:
    """The ``rank``-th smallest (1-based) of ``baseline`` together with ``canary - offset``.

    Binary search on how many of the ``rank`` smallest come from the canary: O(log n).
    """
    low, high = max(0, rank - len(baseline)), min(rank, len(canary))
    while low < high:
        from_canary = (low + high) // 2
        from_baseline = rank - from_canary
        if int(canary[from_canary]) - offset < int(baseline[from_baseline - 1]):
            low = from_canary + 1
        else:
            high = from_canary
    from_canary = low
    candidates = []
    if from_canary > 0:
        candidates.append(int(canary[from_canary - 1]) - offset)
    if rank - from_canary > 0:
        candidates.append(int(baseline[rank - from_canary - 1]))
    return max(candidates)


def quantile_shift_interval(
    canary: Ticks, baseline: Ticks, q: float, alpha: float, scale: float
) -> tuple[float | None, float | None]:
    """The (1 - 2 alpha) interval of the log-ratio of q-quantiles, in units of ``1 / scale``.

    None at an end the samples cannot bound (too few requests above the quantile).
    """
    low = int(canary[0]) - int(baseline[-1]) - 1
    high = int(canary[-1]) - int(baseline[0]) + 1
    step = max(1, round(scale / _RESOLUTION))

    def heavier(offset: int) -> bool:  # canary - offset still significantly heavier-tailed
        return exceedance_test(canary, baseline, q, offset).p_value < alpha

    def lighter(offset: int) -> bool:
        return _lighter_p(canary, baseline, q, offset) < alpha

    lower = _boundary(heavier, low, high, step, rising=False)
    upper = _boundary(lighter, low, high, step, rising=True)
    return (
        None if lower is None else lower / scale,
        None if upper is None else upper / scale,
    )


def _lighter_p(canary: Ticks, baseline: Ticks, q: float, offset: int) -> float:
    test = exceedance_test(canary, baseline, q, offset)
    return fisher_less(test.canary_above, len(canary), test.baseline_above, len(baseline))


def _boundary(
    rejects: Callable[[int], bool], low: int, high: int, step: int, *, rising: bool
) -> int | None:
    """Where ``rejects`` stops (``rising=False``: lowest offset not rejected) or starts.

    ``rising=False``: rejected at ``low``, accepted at ``high`` -> the first accepted offset.
    ``rising=True``: accepted at ``low``, rejected at ``high`` -> the last accepted offset.
    None when the extreme offset is not rejected: that side has no bound.
    """
    extreme = high if rising else low
    if not rejects(extreme):
        return None
    while high - low > step:
        middle = (low + high) // 2
        if rejects(middle) == rising:
            high = middle
        else:
            low = middle
    return low if rising else high


def order_statistic_ranks(n: int, q: float, alpha: float) -> tuple[int | None, int | None]:
    """1-based ranks (low, high) of order statistics of ``n`` values at or below, and at or above,
    the ``q``-quantile of their distribution, each with confidence 1 - alpha (None: too few).

    The r-th smallest is below the quantile when at least r values are: P = P(Binomial(n, q) >= r).
    """
    k = np.arange(1, n + 1)
    steps = np.log((n - k + 1) / k) + math.log(q / (1 - q))
    cdf = np.cumsum(np.exp(n * math.log1p(-q) + np.concatenate([[0.0], np.cumsum(steps)])))
    low = int(np.searchsorted(cdf, alpha, side="right"))  # P(Binomial <= low - 1) <= alpha
    high = int(np.searchsorted(cdf, 1 - alpha, side="left")) + 1  # P(Binomial <= high - 1)
    return (low if low >= 1 else None), (high if high <= n else None)


def bucketed_quantile_interval(
    canary: tuple[Floats, Floats], baseline: tuple[Floats, Floats], q: float, alpha: float
) -> tuple[float | None, float | None]:
    """The (1 - 2 alpha) interval of the log-ratio of q-quantiles from durations known only to lie
    between a lowest and a highest value (each version's two arrays, sorted).

    Each end takes each version's quantile at its own one-sided bound (alpha / 2 apiece): the
    upper end, the canary's upper bound at its highest values over the baseline's lower bound at
    its lowest. An infinite or unreachable bound leaves that end None.
    """
    low_canary, high_canary = order_statistic_ranks(len(canary[0]), q, alpha / 2)
    low_baseline, high_baseline = order_statistic_ranks(len(baseline[0]), q, alpha / 2)
    lower = _log_ratio(canary[0], low_canary, baseline[1], high_baseline)
    upper = _log_ratio(canary[1], high_canary, baseline[0], low_baseline)
    return lower, upper


def _log_ratio(
    over: Floats, over_rank: int | None, under: Floats, under_rank: int | None
) -> float | None:
    """log(over[over_rank] / under[under_rank]) (1-based ranks); None without a rank or where an
    edge bounds nothing (zero, the first bucket's lower one; infinite, the last one's upper)."""
    if over_rank is None or under_rank is None:
        return None
    top, bottom = float(over[over_rank - 1]), float(under[under_rank - 1])
    if not (0 < top < math.inf and 0 < bottom < math.inf):
        return None
    return math.log(top / bottom)
