"""The tests the set form needs, in plain Python: two-sided Mann-Whitney U, Fisher's exact, Holm.

Sets of requests are hundreds, not millions, so no array library is needed. The numbers are the
ones scipy gives (``tests/diff/test_stats.py`` checks them against scipy on tied and untied data):

- ``mann_whitney``: ``scipy.stats.mannwhitneyu(x, y, method="asymptotic")`` (normal approximation
  with tie correction and continuity correction), two-sided. Durations and counts are full of
  ties (0 or 1 calls, whole milliseconds), where the exact distribution does not apply anyway;
  the set form tests nothing with fewer requests than ``--min-requests`` per side.
- ``fisher_exact``: ``scipy.stats.fisher_exact`` two-sided: the probability of every table with
  the same margins that is at most as likely as the one observed.
- ``holm``: Holm's step-down adjustment, shared with the canary (``tracekit._stats``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tracekit._stats import (
    holm,
    hypergeometric_support,
    log_hypergeometric_pmf,
    rank_sum_normal_sf,
)

__all__ = ["fisher_exact", "holm", "mann_whitney"]

# scipy counts a table as "as extreme" when its probability is within this factor of the observed
# one, so rounding in the log-gamma sums cannot drop the observed table's mirror image.
_RELATIVE_TOLERANCE = 1 + 1e-7


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value that ``x`` and ``y`` come from one distribution (1.0 when all tie)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, tie_term = _mid_ranks([*x, *y])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    return min(1.0, max(0.0, 2 * rank_sum_normal_sf(u, n1, n2, tie_term)))


def _mid_ranks(values: list[float]) -> tuple[list[float], float]:
    """Each value's rank (ties get the mean of their ranks), and the tie term sum(t^3 - t)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    tie_term = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in range(start, end + 1):
            ranks[order[i]] = (start + end) / 2 + 1
        size = end - start + 1
        tie_term += size**3 - size
        start = end + 1
    return ranks, tie_term


def fisher_exact(a_events: int, a_trials: int, b_events: int, b_trials: int) -> float:
    """Two-sided p of Fisher's exact test that the event rates of A and B are the same."""
    if not (0 <= a_events <= a_trials and 0 <= b_events <= b_trials):
        raise ValueError("events must lie between 0 and the number of trials")
    total, marked, drawn = a_trials + b_trials, a_events + b_events, a_trials
    low, high = hypergeometric_support(total, marked, drawn)
    observed = log_hypergeometric_pmf(a_events, total, marked, drawn)
    limit = observed + math.log(_RELATIVE_TOLERANCE)
    p = 0.0
    for k in range(low, high + 1):
        log_p = log_hypergeometric_pmf(k, total, marked, drawn)
        if log_p <= limit:
            p += math.exp(log_p)
    return min(1.0, p)
