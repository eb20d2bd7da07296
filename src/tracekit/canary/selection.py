"""The k-th smallest of the n*m pairwise differences of two sorted samples, without the n*m pairs.

100,000 requests per version make 10^10 pairs. Instead, a bracket (lo, hi] around the answer is
narrowed by counting the pairs at or below a value (one vectorised binary search per canary
value), guessing by interpolation and falling back to halving, until few enough pairs remain
inside to list them and select exactly. Integer inputs keep the counts and the listing exact.
Samples of few distinct values (a histogram's bucket edges: every request of a bucket ties) are
selected from their distinct differences, each weighted by its number of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Ticks", "kth_pair_differences"]

Ticks = npt.NDArray[np.int64]

_MIN_LISTED = 10_000  # pairs listed outright once the bracket holds no more than this (or 4(n+m))


def kth_pair_differences(canary: Ticks, baseline: Ticks, ks: Sequence[int]) -> list[int]:
    """For each 1-based ``k``, the k-th smallest ``canary[j] - baseline[i]`` (both sorted)."""
    canary_values, canary_counts = np.unique(canary, return_counts=True)
    baseline_values, baseline_counts = np.unique(baseline, return_counts=True)
    if len(canary_values) * len(baseline_values) <= _MIN_LISTED:
        differences = np.subtract.outer(canary_values, baseline_values).ravel()
        order = np.argsort(differences)
        pairs = np.cumsum(np.multiply.outer(canary_counts, baseline_counts).ravel()[order])
        return [int(differences[order[np.searchsorted(pairs, k)]]) for k in ks]
    found: dict[int, int] = {}
    for k in ks:
        if k not in found:
            found[k] = _kth(canary, baseline, k)
    return [found[k] for k in ks]


def _count_at_most(canary: Ticks, baseline: Ticks, value: int) -> int:
    """Pairs with ``canary[j] - baseline[i] <= value``: ``baseline[i] >= canary[j] - value``."""
    below = np.searchsorted(baseline, canary - value, side="left")
    return len(baseline) * len(canary) - int(below.sum())


def _kth(canary: Ticks, baseline: Ticks, k: int) -> int:
    lo, hi = int(canary[0] - baseline[-1]) - 1, int(canary[-1] - baseline[0])
    below_lo, below_hi = 0, len(canary) * len(baseline)  # pairs <= lo, pairs <= hi
    limit = max(_MIN_LISTED, 4 * (len(canary) + len(baseline)))
    interpolate = True
    while below_hi - below_lo > limit and hi - lo > 1:
        guess = _guess(lo, hi, below_lo, below_hi, k) if interpolate else (lo + hi) // 2
        count = _count_at_most(canary, baseline, guess)
        width = hi - lo
        if count >= k:
            hi, below_hi = guess, count
        else:
            lo, below_lo = guess, count
        interpolate = hi - lo <= width // 2  # halve next time when the guess gained little
    if hi - lo == 1:
        return hi  # every pair left in the bracket equals hi
    return _select_listed(canary, baseline, lo, hi, k - below_lo)


def _guess(lo: int, hi: int, below_lo: int, below_hi: int, k: int) -> int:
    share = (k - below_lo) / (below_hi - below_lo)
    return min(hi - 1, max(lo + 1, lo + round((hi - lo) * share)))


def _select_listed(canary: Ticks, baseline: Ticks, lo: int, hi: int, rank: int) -> int:
    """The ``rank``-th smallest of the pair differences inside (lo, hi], listed outright."""
    first = np.searchsorted(baseline, canary - hi, side="left")
    stop = np.searchsorted(baseline, canary - lo, side="left")
    sizes = stop - first
    total = int(sizes.sum())
    starts = np.repeat(first - (np.cumsum(sizes) - sizes), sizes)
    indexes = starts + np.arange(total)
    differences = np.repeat(canary, sizes) - baseline[indexes]
    return int(np.partition(differences, rank - 1)[rank - 1])
