"""The three checks run on every route: latency (rank test), tail latency, error rate.

Each check tests "the canary is worse" one-sided and measures an effect with an interval, on a
scale where the tolerance is a number: the log of a duration ratio, or a difference of error
rates. Classification (after the correction for many tests) is ``verdict``'s job; a check also
projects how many more canary requests would settle it, in case it stays inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

from tracekit.canary.proportions import fisher_greater, newcombe_difference
from tracekit.canary.ranks import LOG_TICKS, Ticks, log_ticks, mann_whitney, shift
from tracekit.canary.samples import RouteKey, RouteSamples
from tracekit.canary.settings import ERROR_RATE, LATENCY, TAIL_LATENCY, Settings
from tracekit.canary.tail import exceedance_test, quantile_shift_interval

__all__ = ["MIN_RANK_REQUESTS", "Check", "check_route", "tail_floor"]

MIN_RANK_REQUESTS = 10  # per version, before a rank test and its interval mean anything
_EXPECTED_ABOVE = 5  # per version, above the tail quantile, before the tail test is run
_MAX_FACTOR = 1024.0  # beyond 1024 times the current traffic, "more requests" is not a number
_SMALLEST_SECONDS = 1e-9


@dataclass(frozen=True, slots=True)
class Check:
    """One metric on one route: tested and measured, not yet classified.

    ``p_value`` is one-sided ("the canary is worse"); None when there were too few requests to
    test. ``estimate``/``lower``/``upper``/``tolerance`` share one scale (log-ratio, or error
    rate difference); a None end is unbounded. ``more_requests``: about how many more canary
    requests (traffic split unchanged) would decide it.
    """

    metric: str
    key: RouteKey
    baseline: RouteSamples
    canary: RouteSamples
    method: str
    p_value: float | None
    estimate: float | None
    lower: float | None
    upper: float | None
    tolerance: float
    more_requests: int | None
    detail: Mapping[str, float] = field(default_factory=dict)


def check_route(
    key: RouteKey, baseline: RouteSamples, canary: RouteSamples, settings: Settings, tests: int
) -> list[Check]:
    """The three checks of one route; ``tests`` is how many are run in all (for projections)."""
    z_decide = NormalDist().inv_cdf(1 - settings.alpha_per_look / max(1, tests))
    ticks = (log_ticks(canary.durations), log_ticks(baseline.durations))
    return [
        _latency(key, baseline, canary, ticks, settings, z_decide),
        _tail(key, baseline, canary, ticks, settings, z_decide),
        _errors(key, baseline, canary, settings, z_decide),
    ]


def tail_floor(q: float) -> int:
    """Requests per version before the tail test: about five expected above the quantile."""
    return math.ceil(_EXPECTED_ABOVE / (1 - q))


def _latency(
    key: RouteKey,
    baseline: RouteSamples,
    canary: RouteSamples,
    ticks: tuple[Ticks, Ticks],
    settings: Settings,
    z_decide: float,
) -> Check:
    tolerance = settings.log_tolerance(LATENCY)
    method = "mann-whitney-u"
    if min(baseline.requests, canary.requests) < MIN_RANK_REQUESTS:
        more: int | None = _more_for_floor(baseline, canary, MIN_RANK_REQUESTS)
        return Check(
            LATENCY, key, baseline, canary, method, None, None, None, None, tolerance, more
        )
    test = mann_whitney(canary.durations, baseline.durations, "greater")
    found = shift(ticks[0], ticks[1], settings.alpha_per_look)
    more = _more_for_log_effect(
        found.estimate, found.upper, tolerance, settings.z, z_decide, canary
    )
    return Check(
        LATENCY, key, baseline, canary, method, test.p_value, found.estimate, found.lower,
        found.upper, tolerance, more, {"u": test.u},
    )  # fmt: skip


def _tail(
    key: RouteKey,
    baseline: RouteSamples,
    canary: RouteSamples,
    ticks: tuple[Ticks, Ticks],
    settings: Settings,
    z_decide: float,
) -> Check:
    q = settings.tail_quantile
    tolerance = settings.log_tolerance(TAIL_LATENCY)
    method = "fisher-exact-above-pooled-quantile"
    floor = tail_floor(q)
    if min(baseline.requests, canary.requests) < floor:
        more: int | None = _more_for_floor(baseline, canary, floor)
        return Check(TAIL_LATENCY, key, baseline, canary, method, None, None, None, None,
                     tolerance, more)  # fmt: skip
    test = exceedance_test(ticks[0], ticks[1], q)
    lower, upper = quantile_shift_interval(
        ticks[0], ticks[1], q, settings.alpha_per_look, LOG_TICKS
    )
    estimate = math.log(
        max(canary.quantile(q), _SMALLEST_SECONDS) / max(baseline.quantile(q), _SMALLEST_SECONDS)
    )
    more = _more_for_log_effect(estimate, upper, tolerance, settings.z, z_decide, canary)
    detail = {
        "threshold_seconds": math.exp(test.threshold / LOG_TICKS),
        "canary_above": test.canary_above,
        "baseline_above": test.baseline_above,
    }
    return Check(TAIL_LATENCY, key, baseline, canary, method, test.p_value, estimate, lower,
                 upper, tolerance, more, detail)  # fmt: skip


def _errors(
    key: RouteKey,
    baseline: RouteSamples,
    canary: RouteSamples,
    settings: Settings,
    z_decide: float,
) -> Check:
    counts = (canary.errors, canary.requests, baseline.errors, baseline.requests)
    p = fisher_greater(*counts)
    lower, upper = newcombe_difference(*counts, settings.z)
    estimate = canary.errors / canary.requests - baseline.errors / baseline.requests
    factor = _error_factor(counts, settings.error_tolerance, settings.z, z_decide)
    more = None if factor is None else _more_at(factor, canary)
    detail = {"canary_errors": canary.errors, "baseline_errors": baseline.errors}
    return Check(ERROR_RATE, key, baseline, canary, "fisher-exact", p, estimate, lower, upper,
                 settings.error_tolerance, more, detail)  # fmt: skip


# -- how many more requests ----------------------------------------------------------------------


def _more_at(factor: float, canary: RouteSamples) -> int:
    """Canary requests to add so that every count grows ``factor`` times (at least one)."""
    return max(1, math.ceil(canary.requests * (factor - 1)))


def _more_for_floor(baseline: RouteSamples, canary: RouteSamples, floor: int) -> int:
    fewest = max(1, min(baseline.requests, canary.requests))
    return _more_at(floor / fewest, canary)


def _more_for_log_effect(
    estimate: float, upper: float | None, tolerance: float, z: float, z_decide: float,
    canary: RouteSamples,
) -> int | None:  # fmt: skip
    """Requests until the interval clears the tolerance or the test turns significant.

    Interval half-widths shrink with the square root of the requests; the current half-width
    gives the spread, and the effect is assumed to stay where it is.
    """
    if upper is None or upper <= estimate:
        return None
    spread = (upper - estimate) / z
    factors = []
    if estimate < tolerance:
        factors.append((z * spread / (tolerance - estimate)) ** 2)
    if estimate > 0:
        factors.append((z_decide * spread / estimate) ** 2)
    if not factors or min(factors) > _MAX_FACTOR:
        return None
    return _more_at(max(min(factors), 1.1), canary)


def _error_factor(
    counts: tuple[int, int, int, int], tolerance: float, z: float, z_decide: float
) -> float | None:
    """How many times the current traffic, at the current error rates, would decide errors."""

    def decided(factor: float) -> bool:
        scaled = [count * factor for count in counts]
        if newcombe_difference(scaled[0], scaled[1], scaled[2], scaled[3], z)[1] <= tolerance:
            return True
        a, n_a, b, n_b = (round(value) for value in scaled)
        return fisher_greater(a, n_a, b, n_b) < 1 - NormalDist().cdf(z_decide)

    high = 1.0
    while not decided(high):
        high *= 2
        if high > _MAX_FACTOR:
            return None
    low = high / 2
    for _ in range(8):
        middle = (low + high) / 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return max(high, 1.1)
