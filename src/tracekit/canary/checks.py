"""The three checks run on every route: latency (rank test), tail latency, error rate.

Each check tests "the canary is worse" one-sided and measures an effect with an interval, on a
scale where the tolerance is a number: the log of a duration ratio, or a difference of error
rates. Classification (after the correction for many tests) is ``verdict``'s job; a check also
projects how many more canary requests would settle it, in case it stays inconclusive.

Durations read from histogram buckets are only known to lie inside their bucket. A latency
interval's ends are then taken with every request where its bucket puts it most against the
verdict: the lower end with the canary at its buckets' lower edges and the baseline at their
upper edges, the upper end the other way round. Two versions inside one bucket can differ by
as much as the bucket is wide, and no number of requests changes that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist

import numpy as np

from tracekit.canary.proportions import fisher_greater, newcombe_difference
from tracekit.canary.ranks import LOG_TICKS, Ticks, edge_ticks, log_ticks, mann_whitney, shift
from tracekit.canary.samples import Floats, RouteKey, RouteSamples
from tracekit.canary.settings import ERROR_RATE, LATENCY, TAIL_LATENCY, Settings
from tracekit.canary.tail import (
    bucketed_quantile_interval,
    exceedance_test,
    quantile_shift_interval,
)

__all__ = [
    "MIN_RANK_REQUESTS",
    "Check",
    "check_errors_among_all",
    "check_new_route_errors",
    "check_route",
    "tail_floor",
]

MIN_RANK_REQUESTS = 10  # per version, before a rank test and its interval mean anything
_METHODS = {
    LATENCY: "mann-whitney-u",
    TAIL_LATENCY: "fisher-exact-above-pooled-quantile",
    ERROR_RATE: "fisher-exact",
}
_EXPECTED_ABOVE = 5  # per version, above the tail quantile, before the tail test is run
_MAX_FACTOR = 1024.0  # beyond 1024 times the current traffic, "more requests" is not a number
_SMALLEST_SECONDS = 1e-9
# clock steps a version's durations may be multiples of (an SDK timing to the millisecond, .NET's
# 100 ns ticks), coarsest first, in nanoseconds
_CLOCK_STEPS_NS = (10**6, 10**5, 10**4, 10**3, 10**2, 10)


@dataclass(frozen=True, slots=True)
class Check:
    """One metric on one route: tested and measured, not yet classified.

    ``p_value`` is one-sided ("the canary is worse"); None when there were too few requests to
    test. ``estimate``/``lower``/``upper``/``tolerance`` share one scale (log-ratio, or error
    rate difference); a None end is unbounded. ``more_requests``: about how many more canary
    requests (traffic split unchanged) would decide it; ``coarse``: none would, the histogram
    buckets the durations came from cannot rule out a change beyond the tolerance. ``among_all``:
    an error rate of one route's requests (those that matched no route, or a route only the
    canary serves), counted among every request of the version (``baseline`` and ``canary`` hold
    them all), see ``check_errors_among_all``. ``against_all``: the error rate of a route only
    the canary serves, on its own requests, against the baseline's among all of its requests,
    see ``check_new_route_errors``.
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
    coarse: bool = False  # histogram buckets, not traffic, keep the tolerance from being cleared
    among_all: bool = False  # one route's errors among all requests (check_errors_among_all)
    against_all: bool = False  # a new route's own errors (check_new_route_errors)

    @property
    def well_within(self) -> bool:
        """Whether the interval rules out a change beyond half the tolerance (half the log of
        the ratio, half the percentage points): a change that small passes even where it is
        significant, as a canary 1% slower over 100,000 requests a version is."""
        return self.upper is not None and self.upper <= self.tolerance / 2


@dataclass(frozen=True, slots=True)
class _Route:
    """One route's two samples and what every check of it shares."""

    key: RouteKey
    baseline: RouteSamples
    canary: RouteSamples
    settings: Settings
    z_decide: float  # normal quantile a test must pass to decide (Bonferroni over the run)

    @property
    def bucketed(self) -> bool:
        """Whether either version's durations came from histogram buckets."""
        return self.canary.edges is not None or self.baseline.edges is not None

    def best_case(self) -> tuple[Ticks, Ticks]:
        """(canary, baseline) log-durations with the canary as fast as its buckets allow and the
        baseline as slow."""
        return edge_ticks(self.canary.lowest), edge_ticks(self.baseline.highest)

    def worst_case(self) -> tuple[Ticks, Ticks]:
        """(canary, baseline) log-durations with the canary as slow as its buckets allow and the
        baseline as fast."""
        return edge_ticks(self.canary.highest), edge_ticks(self.baseline.lowest)

    def check(
        self, metric: str, method: str, p: float | None, effect: tuple[float | None, ...],
        tolerance: float, more: int | None, detail: Mapping[str, float] | None = None,
        coarse: bool = False,
    ) -> Check:  # fmt: skip
        """A check of this route; ``effect`` is (estimate, lower, upper)."""
        estimate, lower, upper = effect
        return Check(metric, self.key, self.baseline, self.canary, method, p, estimate, lower,
                     upper, tolerance, more, detail or {}, coarse)  # fmt: skip

    def too_few(self, metric: str, method: str, tolerance: float, floor: int) -> Check | None:
        """An untested latency check when a version has fewer than ``floor`` requests that
        succeeded (the ones timed), else None. A version none of whose requests succeeded gets
        no projection: more of its traffic, failing as it does, adds nothing to time."""
        fewest = min(self.baseline.succeeded, self.canary.succeeded)
        if fewest >= floor:
            return None
        more = _more_at(floor / fewest, self.canary) if fewest else None
        return self.check(metric, method, None, (None, None, None), tolerance, more)


def check_route(
    key: RouteKey, baseline: RouteSamples, canary: RouteSamples, settings: Settings, tests: int
) -> list[Check]:
    """The three checks of one route; ``tests`` is how many are run in all (for projections).

    A route the canary served no request of (it stopped serving it) has all three untested: no
    evidence, so it cannot pass, and no number of requests that would settle it. A route none of
    whose baseline requests succeeded has only its errors checked: as a new endpoint, it has no
    baseline latency to be slower than, and a canary that fixed it must be able to pass. One whose
    baseline requests succeeded untimed (the clock stepped back) keeps its latency checks: how fast
    the baseline was is unknown, not missing, and a slower canary must not pass unseen.
    """
    route = _route(key, baseline, canary, settings, tests)
    if not canary.requests:
        nothing = (None, None, None)
        return [
            route.check(metric, method, None, nothing, _tolerance(metric, settings), None)
            for metric, method in _METHODS.items()
        ]
    if baseline.all_failed:
        return [_errors(route)]
    durations = _on_one_clock(route)
    return [_latency(route, durations), _tail(route, durations), _errors(route)]


def check_errors_among_all(
    key: RouteKey, baseline: RouteSamples, canary: RouteSamples, settings: Settings, tests: int
) -> Check:
    """The error rate of ``key``'s requests among all requests: for the requests that matched
    no route, and for a route only the canary serves.

    ``baseline`` and ``canary`` hold every request of their version (of the key's kind), with
    the failures of ``key``'s requests as their errors: a version that fails there is compared
    with one that does not, whether or not it had such requests at all. Their latencies are not
    compared: 404 probes and scanners say nothing about a release, and a new endpoint has no
    baseline to be slower than.
    """
    errors = _errors(_route(key, baseline, canary, settings, tests))
    return replace(errors, among_all=True)


def check_new_route_errors(
    key: RouteKey, baseline: RouteSamples, canary: RouteSamples, settings: Settings, tests: int
) -> Check:
    """The error rate of a route only the canary serves, on its own requests (``canary``),
    against the baseline's among every request (``baseline`` holds them all, with all their
    failures): what the baseline fails of its requests is the best guess of what it would have
    failed of the route's. For where counting the route's failures among every request
    (``check_errors_among_all``) hides them under the tolerance: a new endpoint failing all of
    its few requests among thousands of healthy ones.
    """
    errors = _errors(_route(key, baseline, canary, settings, tests))
    return replace(errors, against_all=True)


def _route(
    key: RouteKey, baseline: RouteSamples, canary: RouteSamples, settings: Settings, tests: int
) -> _Route:
    z_decide = NormalDist().inv_cdf(1 - settings.alpha_per_look / max(1, tests))
    return _Route(key, baseline, canary, settings, z_decide)


def _tolerance(metric: str, settings: Settings) -> float:
    return settings.error_tolerance if metric == ERROR_RATE else settings.log_tolerance(metric)


def tail_floor(q: float) -> int:
    """Requests per version before the tail test: about five expected above the quantile."""
    return math.ceil(_EXPECTED_ABOVE / (1 - q))


def _latency(route: _Route, durations: tuple[Floats, Floats]) -> Check:
    """``durations``: (canary, baseline) as ``_on_one_clock`` gives them."""
    tolerance = route.settings.log_tolerance(LATENCY)
    method = _METHODS[LATENCY]
    untested = route.too_few(LATENCY, method, tolerance, MIN_RANK_REQUESTS)
    if untested is not None:
        return untested
    canary, baseline = durations
    test = mann_whitney(canary, baseline, "greater")
    alpha = route.settings.alpha_per_look
    found = shift(log_ticks(canary), log_ticks(baseline), alpha)
    effect = (found.estimate, found.lower, found.upper)
    detail = {"u": test.u}
    if not route.bucketed:
        more = _more_for_log_effect(effect, tolerance, route)
        return route.check(LATENCY, method, test.p_value, effect, tolerance, more, detail)
    lowest, highest = shift(*route.best_case(), alpha), shift(*route.worst_case(), alpha)
    coarse = highest.estimate >= tolerance  # where the upper end shrinks to with more traffic
    ceiling = (highest.estimate, highest.upper)
    more = None if coarse else _more_for_log_effect(effect, tolerance, route, ceiling)
    widened = (found.estimate, lowest.lower, highest.upper)
    return route.check(LATENCY, method, test.p_value, widened, tolerance, more, detail, coarse)


def _tail(route: _Route, durations: tuple[Floats, Floats]) -> Check:
    """``durations``: (canary, baseline) as ``_on_one_clock`` gives them."""
    q = route.settings.tail_quantile
    tolerance = route.settings.log_tolerance(TAIL_LATENCY)
    method = _METHODS[TAIL_LATENCY]
    untested = route.too_few(TAIL_LATENCY, method, tolerance, tail_floor(q))
    if untested is not None:
        return untested
    canary, baseline = durations
    ticks = log_ticks(canary), log_ticks(baseline)
    test = exceedance_test(*ticks, q)
    alpha = route.settings.alpha_per_look
    lower, upper = quantile_shift_interval(*ticks, q, alpha, LOG_TICKS)
    canary_q, baseline_q = route.canary.quantile(q), route.baseline.quantile(q)
    estimate = math.log(max(canary_q, _SMALLEST_SECONDS) / max(baseline_q, _SMALLEST_SECONDS))
    # Where many requests tie (a histogram's overflow bucket), the inverted test is a step
    # function whose ends can miss the estimate, even cross: widening to it is only more careful.
    lower = None if lower is None else min(lower, estimate)
    upper = None if upper is None else max(upper, estimate)
    effect = (estimate, lower, upper)
    detail = {
        "threshold_seconds": math.exp(test.threshold / LOG_TICKS),
        "canary_above": test.canary_above,
        "baseline_above": test.baseline_above,
    }
    if not route.bucketed:
        more = _more_for_log_effect(effect, tolerance, route)
        return route.check(TAIL_LATENCY, method, test.p_value, effect, tolerance, more, detail)
    return _bucketed_tail(route, test.p_value, effect, detail)


def _on_one_clock(route: _Route) -> tuple[Floats, Floats]:
    """(canary, baseline) durations, the finer-timed version's as the other's clock would have
    timed them (durations read from histogram buckets as they are).

    A version timed by a millisecond clock ties its requests on whole milliseconds; counted
    against the pooled p95, which lands on such a tie, its requests there are all below it while
    the other version's, timed to the nanosecond, are split: an identical canary timed finer than
    its baseline had more requests above and read as significantly slower at p95. Ranked against
    one another, a version timed to the millisecond and one timed finer differ too. Readings of
    a clock are then spread over the durations they allow (``_untied``).
    """
    canary, baseline = route.canary.durations, route.baseline.durations
    if route.bucketed:
        return canary, baseline
    step = max(_clock_step_ns(canary), _clock_step_ns(baseline))
    return _untied(_clocked(canary, step), step, 1), _untied(_clocked(baseline, step), step, 2)


def _untied(ticked: Floats, step_ns: int, seed: int) -> Floats:
    """Durations read on a clock of ``step_ns`` (sorted), each moved to a place its reading
    allows: ``k`` steps read lasted between ``k - 1`` and ``k + 1`` steps (0: under one), most
    likely ``k``; a triangular draw, from each version's own fixed seed. Requests of a few steps
    tie on a few readings without lasting the same: ranked as ties, the shift's interval closed
    on the grid's ratios (a canary 1.3x slower read "1x, 1x to 1x")."""
    if step_ns == 1:
        return ticked
    spread = np.random.default_rng(seed).triangular(-1.0, 0.0, 1.0, len(ticked))
    return np.sort(np.abs(ticked + spread * (step_ns / 1e9)))


def _clock_step_ns(seconds: Floats) -> int:
    """The coarsest of ``_CLOCK_STEPS_NS`` every nonzero duration is a multiple of (1: none)."""
    nanoseconds = np.rint(seconds * 1e9)
    nanoseconds = nanoseconds[nanoseconds > 0]
    if not nanoseconds.size:
        return 1
    return next((step for step in _CLOCK_STEPS_NS if not (nanoseconds % step).any()), 1)


def _clocked(seconds: Floats, step_ns: int) -> Floats:
    """Durations (sorted) as a clock ticking every ``step_ns`` times them: a request starts
    anywhere between two ticks, so one lasting 2.3 steps reads 3 steps with a chance of 0.3, else
    2. Where the request started is drawn from a fixed seed: the same data, the same verdict.
    Durations already on that clock are left as they are."""
    if step_ns == 1 or _clock_step_ns(seconds) == step_ns:
        return seconds
    steps = seconds * (1e9 / step_ns)
    started = np.random.default_rng(0).random(len(steps))
    return np.sort(np.floor(steps + started)) * (step_ns / 1e9)


def _bucketed_tail(
    route: _Route, p: float, effect: tuple[float, float | None, float | None],
    detail: Mapping[str, float],
) -> Check:  # fmt: skip
    """The tail check of durations read from histogram buckets: the interval widened to every
    place the buckets allow, and coarse when the buckets alone keep the tolerance from being
    cleared."""
    q = route.settings.tail_quantile
    tolerance = route.settings.log_tolerance(TAIL_LATENCY)
    estimate, lower, upper = effect
    canary, baseline = route.canary, route.baseline
    lowest, highest = bucketed_quantile_interval(
        (canary.lowest, canary.highest),
        (baseline.lowest, baseline.highest),
        q,
        route.settings.alpha_per_look,
    )
    if lower is not None and lowest is not None:
        lowest = min(lowest, lower)
    if upper is not None and highest is not None:
        highest = max(highest, upper)
    reach = _worst_quantile_ratio(route, q)
    coarse = reach >= tolerance
    more = None if coarse else _more_for_log_effect(effect, tolerance, route, (reach, highest))
    return route.check(TAIL_LATENCY, _METHODS[TAIL_LATENCY], p, (estimate, lowest, highest),
                       tolerance, more, detail, coarse)  # fmt: skip


def _worst_quantile_ratio(route: _Route, q: float) -> float:
    """Log of the ``q``-quantiles' ratio with the canary at its buckets' upper edges and the
    baseline at their lower ones: where the tail interval's upper end shrinks to (infinite when
    the canary's quantile is in the last bucket)."""
    canary_q = float(np.quantile(route.canary.highest, q, method="inverted_cdf"))
    baseline_q = float(np.quantile(route.baseline.lowest, q, method="inverted_cdf"))
    return math.log(max(canary_q, _SMALLEST_SECONDS) / max(baseline_q, _SMALLEST_SECONDS))


def _errors(route: _Route) -> Check:
    canary, baseline, settings = route.canary, route.baseline, route.settings
    counts = (canary.errors, canary.requests, baseline.errors, baseline.requests)
    lower, upper = newcombe_difference(*counts, settings.z)
    estimate = canary.errors / canary.requests - baseline.errors / baseline.requests
    factor = _error_factor(counts, settings.error_tolerance, settings.z, route.z_decide)
    more = None if factor is None else _more_at(factor, canary)
    detail = {"canary_errors": canary.errors, "baseline_errors": baseline.errors}
    effect = (estimate, lower, upper)
    p = fisher_greater(*counts)
    return route.check(
        ERROR_RATE, _METHODS[ERROR_RATE], p, effect, settings.error_tolerance, more, detail
    )


# -- how many more requests ----------------------------------------------------------------------


def _more_at(factor: float, canary: RouteSamples) -> int:
    """Canary requests to add so that every count grows ``factor`` times (at least one)."""
    return max(1, math.ceil(canary.requests * (factor - 1)))


def _more_for_log_effect(
    effect: tuple[float | None, ...],
    tolerance: float,
    route: _Route,
    ceiling: tuple[float, float | None] | None = None,
) -> int | None:
    """Requests until the interval clears the tolerance or the test turns significant.

    Interval half-widths shrink with the square root of the requests; the current half-width
    gives the spread, and the effect is assumed to stay where it is. ``ceiling``: where the
    interval's upper end shrinks to, and where it is, when histogram buckets widened it (the
    estimate and upper end of the canary at its buckets' upper edges against the baseline at
    their lower ones); by default the effect's own.
    """
    estimate, _, upper = effect
    if estimate is None or upper is None or upper <= estimate:
        return None
    z = route.settings.z
    spread = (upper - estimate) / z
    top, top_upper = ceiling or (estimate, upper)
    factors = []
    if top < tolerance and top_upper is not None and top_upper > top:
        top_spread = (top_upper - top) / z
        factors.append((z * top_spread / (tolerance - top)) ** 2)
    if estimate > 0:
        factors.append((route.z_decide * spread / estimate) ** 2)
    if not factors or min(factors) > _MAX_FACTOR:
        return None
    return _more_at(max(min(factors), 1.1), route.canary)


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
