"""The statistics ``tracekit.canary`` and ``tracekit.diff`` share, in plain Python.

The canary asks one-sided questions of up to 100k requests a version (numpy for the ranks); diff
asks two-sided ones of a few hundred (no numpy, so ``tracekit diff`` runs without it). What is
the same in both lives here once:

- ``holm``: Holm's step-down adjustment over every test of one run;
- ``hypergeometric_support`` and ``log_hypergeometric_pmf``: the distribution Fisher's exact test
  sums, one-sided (canary) or two-sided (diff);
- ``rank_sum_normal_sf``: the Mann-Whitney U tail by the normal approximation, with the tie and
  continuity corrections scipy's ``mannwhitneyu`` applies.

Both packages' tests compare their results with scipy's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, overload


@overload
def holm(p_values: Sequence[float]) -> list[float]: ...


@overload
def holm(p_values: Sequence[float | None]) -> list[float | None]: ...


def holm(p_values: Sequence[float | None]) -> list[Any]:  # typed by the overloads above
    """Holm-adjusted p-values in the order given, each at most 1 (None: no test, not counted)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for order, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - order) * p))
        adjusted[index] = running
    return adjusted


def hypergeometric_support(total: int, marked: int, drawn: int) -> tuple[int, int]:
    """The fewest and most marked items ``drawn`` of ``total`` can hold (``marked`` are)."""
    return max(0, drawn - (total - marked)), min(marked, drawn)


def log_hypergeometric_pmf(x: int, total: int, marked: int, drawn: int) -> float:
    """log P(X = x), X hypergeometric: ``drawn`` of ``total`` items, ``marked`` of them marked."""
    return (
        _log_choose(marked, x) + _log_choose(total - marked, drawn - x) - _log_choose(total, drawn)
    )


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def rank_sum_normal_sf(u: float, n1: int, n2: int, tie_term: float) -> float:
    """P(U >= u) for samples of ``n1`` and ``n2`` values by the normal approximation.

    ``tie_term`` is the sum of t^3 - t over groups of t tied values (0 without ties); the
    continuity correction takes half a step off ``u``. When every value ties there is no
    evidence either way: 1.0.
    """
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))
