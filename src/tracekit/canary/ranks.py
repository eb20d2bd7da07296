"""The Mann-Whitney U test, and the Hodges-Lehmann shift with the interval that inverts it.

Durations are compared on a log scale, so a shift is a ratio: the Hodges-Lehmann estimate is the
median of every canary/baseline pair's duration ratio ("a typical canary request takes 1.2 times
as long"), and its interval holds the ratios the test cannot reject. Ranks do not change under
the log, so the test itself is the usual one on durations.

p-values follow scipy.stats.mannwhitneyu with ``method="auto"``: the exact null distribution when
one sample has at most 8 values and there are no ties, else the normal approximation with tie
correction and continuity correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import numpy.typing as npt

from tracekit._stats import rank_sum_normal_sf
from tracekit.canary.selection import kth_pair_differences

__all__ = [
    "EXACT_LIMIT",
    "LOG_TICKS",
    "UNBOUNDED_TICKS",
    "Floats",
    "RankTest",
    "Shift",
    "Ticks",
    "edge_ticks",
    "exact_sf",
    "log_ratio",
    "log_ticks",
    "mann_whitney",
    "shift",
]

EXACT_LIMIT = 8  # as scipy's "auto": exact when a sample is this small and nothing is tied
LOG_TICKS = 1e9  # log-durations are held as integers of 1e-9: pair differences stay exact
# An infinite duration (the upper edge of a histogram's last bucket), in log-ticks: above any
# finite duration's (|log| of 1e-9 to 1e300 s is under 7e11 ticks), and differences with those
# still fit in 64 bits. A difference this far out (half of it or more) is not a finite ratio.
UNBOUNDED_TICKS = 2**60
_SMALLEST_SECONDS = 1e-9  # a zero duration is one nanosecond on the log scale

Floats = npt.NDArray[np.float64]
Ticks = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class RankTest:
    """A Mann-Whitney U test: the canary's U, the p-value and how it was computed."""

    u: float
    p_value: float
    method: str  # "exact" or "normal"


@dataclass(frozen=True, slots=True)
class Shift:
    """Hodges-Lehmann shift of the canary on the log scale, with a two-sided interval.

    ``lower``/``upper`` are None when the samples are too small to bound that side at all.
    """

    estimate: float
    lower: float | None
    upper: float | None


def log_ticks(seconds: Floats) -> Ticks:
    """Sorted durations (seconds) as integer log-ticks, keeping their order (an infinite one is
    ``UNBOUNDED_TICKS``)."""
    clipped = np.maximum(seconds, _SMALLEST_SECONDS)
    finite = np.isfinite(clipped)
    ticks = np.rint(np.log(np.where(finite, clipped, 1.0)) * LOG_TICKS).astype(np.int64)
    return np.where(finite, ticks, UNBOUNDED_TICKS)


def edge_ticks(seconds: Floats) -> Ticks:
    """Bucket edges (sorted seconds) as log-ticks: as ``log_ticks``, but a zero edge (the first
    bucket's lower one) bounds nothing, ``-UNBOUNDED_TICKS``."""
    return np.where(seconds > 0, log_ticks(seconds), -UNBOUNDED_TICKS)


def log_ratio(ticks: float) -> float:
    """A difference of log-ticks as the log of a ratio; infinite where an infinite duration
    decided it."""
    if abs(ticks) >= UNBOUNDED_TICKS / 2:
        return math.copysign(math.inf, ticks)
    return ticks / LOG_TICKS


def mann_whitney(canary: Floats, baseline: Floats, alternative: str = "greater") -> RankTest:
    """Test whether canary values tend to be larger ("greater"), smaller ("less") or either."""
    n1, n2 = len(canary), len(baseline)
    _, inverse, counts = np.unique(
        np.concatenate([canary, baseline]), return_inverse=True, return_counts=True
    )
    sizes = counts.astype(np.float64)
    mid_ranks = np.cumsum(sizes) - (sizes - 1) / 2
    u1 = float(mid_ranks[inverse[:n1]].sum()) - n1 * (n1 + 1) / 2
    u = _statistic_for(u1, n1 * n2, alternative)
    tied = bool((counts > 1).any())
    if min(n1, n2) <= EXACT_LIMIT and not tied:
        p = exact_sf(round(u), n1, n2)
        method = "exact"
    else:
        p = rank_sum_normal_sf(u, n1, n2, float((sizes**3 - sizes).sum()))
        method = "normal"
    if alternative == "two-sided":
        p *= 2
    return RankTest(u1, min(1.0, max(0.0, p)), method)


def _statistic_for(u1: float, pairs: int, alternative: str) -> float:
    if alternative == "greater":
        return u1
    if alternative == "less":
        return pairs - u1
    if alternative == "two-sided":
        return max(u1, pairs - u1)
    raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")


def exact_sf(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under the null hypothesis, from the exact distribution of U (no ties)."""
    counts = _u_counts(min(n1, n2), max(n1, n2))
    if u <= 0:
        return 1.0
    if u >= len(counts):
        return 0.0
    return sum(counts[u:]) / sum(counts)


def _u_counts(small: int, large: int) -> list[int]:
    """How many orderings give U = 0, 1, ..., small*large: the Gaussian binomial's coefficients.

    Built one factor at a time, [large+i choose i]_q from [large+i-1 choose i-1]_q: multiply by
    (1 - q^(large+i)), divide by (1 - q^i). Every step is a polynomial with integer
    coefficients, so Python's integers keep it exact.
    """
    counts = [1]
    for i in range(1, small + 1):
        shifted = [0] * (large + i) + counts
        grown = counts + [0] * (large + i)
        product = [a - b for a, b in zip(grown, shifted, strict=True)]
        counts = _divide_by_one_minus_power(product, i)[: i * large + 1]
    return counts


def _divide_by_one_minus_power(poly: list[int], power: int) -> list[int]:
    """``poly / (1 - q^power)``: a running sum along each residue class modulo ``power``."""
    out = poly[:]
    for residue in range(power):
        out[residue::power] = list(accumulate(poly[residue::power]))
    return out


def shift(canary: Ticks, baseline: Ticks, alpha: float) -> Shift:
    """Hodges-Lehmann shift (canary minus baseline, log-ticks) and its (1 - 2 alpha) interval.

    Each end is the one-sided (1 - alpha) bound from inverting the test: the pairwise
    differences whose rank sits at the critical value of U. The critical value comes from the
    untied null distribution, which is wider than the tie-corrected one: conservative on ties.
    """
    n1, n2 = len(canary), len(baseline)
    pairs = n1 * n2
    depth = _interval_depth(n1, n2, alpha)
    wanted = [(pairs + 1) // 2, pairs // 2 + 1]
    if depth is not None:
        wanted += [depth, pairs + 1 - depth]
    found = kth_pair_differences(canary, baseline, wanted)
    estimate = log_ratio((found[0] + found[1]) / 2)
    if depth is None:
        return Shift(estimate, None, None)
    return Shift(estimate, _bounded(log_ratio(found[2])), _bounded(log_ratio(found[3])))


def _bounded(log_value: float) -> float | None:
    return log_value if math.isfinite(log_value) else None


def _interval_depth(n1: int, n2: int, alpha: float) -> int | None:
    """k such that the k-th smallest pair difference is the lower end (None: unbounded).

    U at least ``critical`` rejects at level alpha; the lower end is the difference that
    ``critical`` pairs exceed, the (pairs - critical + 1)-th smallest.
    """
    pairs = n1 * n2
    if min(n1, n2) <= EXACT_LIMIT:
        critical = _exact_critical(n1, n2, alpha)
    else:
        z = _normal_quantile(1 - alpha)
        sd = math.sqrt(pairs * (n1 + n2 + 1) / 12)
        critical = math.ceil(pairs / 2 + 0.5 + z * sd)
    if critical is None or critical > pairs:
        return None
    return pairs - critical + 1


def _exact_critical(n1: int, n2: int, alpha: float) -> int | None:
    counts = _u_counts(min(n1, n2), max(n1, n2))
    total = sum(counts)
    tail = 0
    for u in range(len(counts) - 1, -1, -1):
        tail += counts[u]
        if tail / total > alpha:
            return u + 1 if u + 1 < len(counts) else None
    return None


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)
