"""Two proportions: Fisher's exact test, Wilson's interval and Newcombe's interval of a difference.

Error rates are zero-heavy (0 of 300, 3 of 50): these methods stay honest there. Fisher's test
conditions on the total count and sums hypergeometric probabilities exactly, so a handful of
errors is judged by their real chance, not a normal approximation; the score intervals never
collapse to zero width at zero counts (0 of 50 still allows up to about 5%).
"""

from __future__ import annotations

import math

from tracekit._stats import hypergeometric_support, log_hypergeometric_pmf

__all__ = ["fisher_greater", "fisher_less", "newcombe_difference", "wilson"]

# Terms beyond this share of the running sum no longer change a double.
_NEGLIGIBLE = 1e-17


def _upper_tail(x: int, total: int, marked: int, drawn: int) -> float:
    """P(X >= x): summed from ``x`` upwards, or 1 - P(X < x) when ``x`` lies below the mode.

    Either way the sum starts at its largest term and stops once terms no longer count, so a
    term that underflows to zero is always a negligible one.
    """
    low, high = hypergeometric_support(total, marked, drawn)
    if x > high:
        return 0.0
    if x <= low:
        return 1.0
    if x < (drawn + 1) * (marked + 1) // (total + 2):
        return max(0.0, 1.0 - _lower_tail(x - 1, total, marked, drawn))
    term = math.exp(log_hypergeometric_pmf(x, total, marked, drawn))
    tail = term
    for k in range(x, high):
        term *= (marked - k) * (drawn - k) / ((k + 1) * (total - marked - drawn + k + 1))
        tail += term
        if term <= tail * _NEGLIGIBLE:
            break
    return min(1.0, tail)


def _lower_tail(x: int, total: int, marked: int, drawn: int) -> float:
    """P(X <= x) for ``x`` at or below the mode, summed from ``x`` downwards."""
    low, _ = hypergeometric_support(total, marked, drawn)
    term = math.exp(log_hypergeometric_pmf(x, total, marked, drawn))
    tail = term
    for k in range(x, low, -1):
        term *= k * (total - marked - drawn + k) / ((marked - k + 1) * (drawn - k + 1))
        tail += term
        if term <= tail * _NEGLIGIBLE:
            break
    return min(1.0, tail)


def fisher_greater(a_events: int, a_trials: int, b_events: int, b_trials: int) -> float:
    """One-sided p of Fisher's exact test that group A's event rate exceeds group B's.

    The same number as ``scipy.stats.fisher_exact([[a_events, a_trials - a_events],
    [b_events, b_trials - b_events]], alternative="greater")``.
    """
    total = a_trials + b_trials
    return _upper_tail(a_events, total, a_events + b_events, a_trials)


def fisher_less(a_events: int, a_trials: int, b_events: int, b_trials: int) -> float:
    """One-sided p of Fisher's exact test that group A's event rate is below group B's."""
    return fisher_greater(b_events, b_trials, a_events, a_trials)


def wilson(events: float, trials: float, z: float) -> tuple[float, float]:
    """Wilson's score interval of ``events / trials``; ``z`` is the normal quantile of each end."""
    if trials <= 0:
        return 0.0, 1.0
    p = events / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(
    a_events: float, a_trials: float, b_events: float, b_trials: float, z: float
) -> tuple[float, float]:
    """Interval of rate A minus rate B from the two Wilson intervals (Newcombe's hybrid score).

    Unlike the textbook Wald interval it does not shrink to a point when both counts are zero.
    Counts may be fractional (projections scale them).
    """
    p_a, p_b = a_events / a_trials, b_events / b_trials
    low_a, high_a = wilson(a_events, a_trials, z)
    low_b, high_b = wilson(b_events, b_trials, z)
    difference = p_a - p_b
    lower = difference - math.hypot(p_a - low_a, high_b - p_b)
    upper = difference + math.hypot(high_a - p_a, p_b - low_b)
    return lower, upper
