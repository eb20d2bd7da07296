"""Samples from Prometheus: tracekit's own histograms, by ``service_version``, over the window.

For a team without the store. Per version and family, instant queries at the window's end: the
succeeded requests' bucket counts per route, ``sum by (route, le)
(increase(<histogram>_bucket{..., <not failed>}[window]))`` (latency is compared over successes,
see ``samples``), and the failed requests per route from the histogram's ``_count``.
``increase()`` copes with counter resets (pods restarting mid-rollout) and extrapolates to the
window's edges, so counts can differ from the requests served by about a scrape interval's worth;
they are rounded to whole requests.

``increase()`` counts nothing for the jump from "no series" to a series' first scraped value, and
every series of a canary is new: a 5xx series appears with its first failure, a pod's series with
its first requests. So ``increase()`` counts only the series that existed at the window's start,
and each count has a second query, ``born``, for those that did not: ``increase()`` of the series
read as 0 before its first scrape and as its last value where it had none since (a failed
scrape, a restart that had not yet recreated it) (``_from_zero``). Its first value, where it was
born, was not enough: a crash-looping canary's counters reset, and the first value is then lost
among smaller ones. That reading takes ``BORN_STEPS`` steps of every series of the selector, about
3,000 samples held per series: a service of 17,000 bucket series passed Prometheus' default
``query.max-samples``. So a first query asks whether any born series reset in the window
(``Family.resets_query``); where none did, as is usual, each born series counts the same from its
values at the window's edges (``_since_birth``), one read of its samples. Where one did (a
crash-looping canary), the bucket series take the steps one bucket bound (``le``) at a time
(a query holds a bound's share of them, as the counts are by route and bound), and only as
many steps as read each sample at a step of its own: under half a scrape interval each, about
300 in a 30-minute window scraped every 15 s (``DENSITY_PARTS``).

Durations inside a bucket are spread evenly (``samples.spread_histogram``), the assumption
``histogram_quantile`` makes, and keep their bucket's edges: a latency interval is never narrower
than the buckets can tell (``checks``).

The Grafana canary dashboard (dashboards/canary.json) reads the same series.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracekit.canary.samples import (
    HTTP,
    MESSAGING,
    UNMATCHED_ROUTE,
    RouteKey,
    histogram_samples,
)
from tracekit.canary.samples import VersionSamples as Samples
from tracekit.records import BackendError

if TYPE_CHECKING:
    from tracekit.backends._http import JsonClient

__all__ = [
    "BORN_STEPS",
    "DENSITY_PARTS",
    "FAMILIES",
    "LOOKBACK",
    "LOOKBACK_MS",
    "MAX_BOUNDS_STEPPED",
    "MAX_BOUND_SECONDS",
    "MAX_REQUESTS",
    "MAX_SERIES",
    "YOUNG_DENSITY_PARTS",
    "Family",
    "Window",
    "samples_from_prometheus",
    "versions_from_prometheus",
]

# the largest finite bucket bound read as a duration (about 30 years): past it the log-scale
# arithmetic overflows, and no latency histogram has one
MAX_BOUND_SECONDS = 1e9
MAX_SERIES = 10_000  # per query: routes x buckets; tracekit caps routes at 500 per process
# Requests per route and version taken into the tests; a busier route's buckets (and failures)
# are scaled down to this many in proportion: one float per request must fit in memory.
MAX_REQUESTS = 200_000
# The most steps a series born inside the window is read at where one reset there (a window's
# 1/1000th each): fewer where its samples are further apart than two steps (``DENSITY_PARTS``).
BORN_STEPS = 1000
# How far before the window's start a series' last sample shows it existed then: Prometheus'
# default lookback, the reach of an instant selector.
LOOKBACK = "5m"
LOOKBACK_MS = 5 * 60 * 1000  # the same, to add to a window's length
# Bucket bounds whose series take the steps one query each; a histogram with more (none of
# tracekit's) takes them in one query.
MAX_BOUNDS_STEPPED = 100
# Parts of the window in which to count a version's samples, to find how often it is scraped
# where it is scraped at all (a version deployed late in the window has samples in its last parts).
DENSITY_PARTS = 16
# The same for a version none of whose series existed through one of those parts (deployed in a
# 30-minute window's last 4 minutes, or fewer where the window's end is not on the parts' grid).
YOUNG_DENSITY_PARTS = 64


@dataclass(frozen=True, slots=True)
class Window:
    """The time a count covers, to the millisecond (as Prometheus reads query times)."""

    start_ms: int
    end_ms: int

    @classmethod
    def of(cls, start_ns: int, end_ns: int) -> Window:
        """The window from ``start_ns`` to ``end_ns`` (Unix nanoseconds)."""
        return cls(round(start_ns / 1e6), round(end_ns / 1e6))

    @property
    def length(self) -> str:
        """Its length as a PromQL duration: where it starts decides which series were born
        inside it."""
        return _duration(self.end_ms - self.start_ms)

    @property
    def at(self) -> str:
        """Its end as a query time."""
        return _seconds(self.end_ms)


@dataclass(frozen=True, slots=True)
class Family:
    """One histogram tracekit records per request, and how its failed requests are told apart."""

    kind: str
    histogram: str
    route_label: str
    failed: tuple[str, ...]  # label matchers each selecting failed requests (their union counts)
    succeeded: str  # the matchers selecting every other request: none of ``failed`` holds

    def selector(self, service: str, version: str, extra: str = "") -> str:
        """``{service_name="...", service_version="..."}`` plus an optional matcher."""
        labels = f"service_name={_string(service)}, service_version={_string(version)}"
        return "{" + labels + (f", {extra}" if extra else "") + "}"

    def buckets_query(
        self, service: str, version: str, window: Window, bound: str | None = None, *,
        born: bool = False, resets: bool = True, steps: int = BORN_STEPS,
    ) -> str:  # fmt: skip
        """The succeeded requests' bucket counts per route over ``window`` (``born``,
        ``resets``, ``steps``: see ``_counted``), of every bucket bound or of ``bound`` only."""
        series = self._buckets(service, version, bound)
        counted = _counted(series, window, born=born, resets=resets, steps=steps)
        return f"sum by ({self.route_label}, le) ({counted})"

    def bounds_query(self, service: str, version: str, window: Window) -> str:
        """The bucket bounds (``le``) of the series ``buckets_query`` reads, each once: those
        with a sample in the window, or in the window's length and ``LOOKBACK`` before it."""
        reach = _duration(2 * (window.end_ms - window.start_ms) + LOOKBACK_MS)
        return f"count by (le) (last_over_time({self._buckets(service, version)}[{reach}]))"

    def failed_query(
        self, service: str, version: str, window: Window, *, born: bool = False,
        resets: bool = True, steps: int = BORN_STEPS,
    ) -> str:  # fmt: skip
        """Failed requests per route over ``window`` (``born``, ``resets``, ``steps``: see
        ``_counted``): the series any of ``failed`` selects, each once (``or`` keeps one of the
        same labels)."""
        parts = [
            f"({_counted(series, window, born=born, resets=resets, steps=steps)})"
            for series in self._failed(service, version)
        ]
        return f"sum by ({self.route_label}) ({' or '.join(parts)})"

    def resets_query(self, service: str, version: str, window: Window) -> str:
        """How many of the series ``buckets_query`` and ``failed_query`` read were born in
        ``window`` and reset there (no answer: none); only then do their ``born`` parts need
        ``resets``."""
        series = [self._buckets(service, version), *self._failed(service, version)]
        return f"count({' or '.join(f'({_reset_born(s, window)})' for s in series)})"

    def density_query(
        self, service: str, version: str, window: Window, parts: int = DENSITY_PARTS
    ) -> str:
        """The most samples any of the version's series of this histogram has in one of
        ``parts`` parts of ``window``: how often Prometheus scrapes them, where a young
        version's series span only the window's last parts. Only parts a series existed as
        they began count (a sample in the ``LOOKBACK`` before): in the part it was born in it
        has fewer samples than its scrapes give (no answer: none existed a whole part)."""
        part = _duration((window.end_ms - window.start_ms) // parts)
        counters = f"{self.histogram}_count{self.selector(service, version)}"
        existed = f"last_over_time({counters}[{LOOKBACK}] offset {part})"
        counted = f"count_over_time({counters}[{part}]) and {existed}"
        return f"max(max_over_time(({counted})[{window.length}:{part}]))"

    def _buckets(self, service: str, version: str, bound: str | None = None) -> str:
        matchers = self.succeeded + ("" if bound is None else f", le={_string(bound)}")
        return f"{self.histogram}_bucket{self.selector(service, version, matchers)}"

    def _failed(self, service: str, version: str) -> list[str]:
        return [
            f"{self.histogram}_count{self.selector(service, version, matcher)}"
            for matcher in self.failed
        ]


def _counted(
    series: str, window: Window, *, born: bool = False, resets: bool = True,
    steps: int = BORN_STEPS,
) -> str:  # fmt: skip
    """How much each counter of ``series`` grew over ``window``: ``increase()`` for the series
    that existed at the window's start, or with ``born`` for those that did not, counted from
    zero: read at ``steps`` steps (``_from_zero``), or without ``resets``, where none of them
    reset in the window, from the values at its edges (``_since_birth``).

    A series existed when it has a sample in the ``LOOKBACK`` before the start, as an instant
    selector would find it, but for staleness: a scrape that failed just before the start marks
    every series of its target stale, and such a series taken as born would count, from zero,
    everything its process served before the window (days of it, for a baseline)."""
    existed = _existed(series, window)
    if born:
        grown = _from_zero(series, window, steps) if resets else _since_birth(series, window)
        return f"{grown} unless {existed}"
    return f"increase({series}[{window.length}]) and {existed}"


def _existed(series: str, window: Window) -> str:
    """The series with a sample in the ``LOOKBACK`` before the window (see ``_counted``)."""
    return f"last_over_time({series}[{LOOKBACK}] offset {window.length})"


def _reset_born(series: str, window: Window) -> str:
    """The series born in the window that fell there: a restart."""
    return f"resets({series}[{window.length}]) > 0 unless {_existed(series, window)}"


def _since_birth(series: str, window: Window) -> str:
    """What ``_from_zero`` counts of a series that did not reset in the window, from one read of
    its samples: its last value, less its value before the window (``_at_start``) where its first
    in the window (its lowest, as it never fell) is not below it; else all of it. Range selectors
    skip the stale markers of failed scrapes, and an outage holds no sample to read."""
    last = f"last_over_time({series}[{window.length}])"
    before = _at_start(series, window)
    first = f"min_over_time({series}[{window.length}])"
    return f"(({last} - ({before} and {first} >= {before})) or {last})"


def _from_zero(series: str, window: Window, steps: int = BORN_STEPS) -> str:
    """``increase()`` of each series over ``window`` as if it were 0 before its first scrape
    (or at its last value before the window, see ``_at_start``) and kept its last value while it
    had none (a failed scrape, a pod not yet recreated after a
    restart): its first value counts as growth, and a reset after it as a reset. Read at
    ``steps`` steps, the last at the window's end (a series' first value alone, its
    minimum, is lost when it resets)."""
    step = max(1, (window.end_ms - window.start_ms) // steps)
    # A subquery's steps fall on multiples of its step: they are moved later by ``shift``, and
    # each reads ``shift`` back, so that the last reads the window's end and nothing after it.
    shift = -window.end_ms % step
    shifted = f" offset {_duration(shift)}" if shift else ""
    # Its last value, stale or not, back to the window's start: a scrape that failed marks it
    # stale until the next, and one unscraped for minutes (Prometheus restarted, the pod
    # unreachable) has no sample in LOOKBACK; read as 0 meanwhile it looked like a restart, and
    # what it served before was counted twice.
    held = f"(last_over_time({series}[{window.length}]{shifted}) or {_at_start(series, window)})"
    every_series = f"last_over_time({series}[{window.length}] @ end())"  # its labels, every step
    # + 0 and * 0 both drop the metric name, so that `or` gives one series, not two
    at_steps = f"(({held} + 0) or ({every_series} * 0))[{window.length}:{_duration(step)}]"
    return f"increase({at_steps} @ {_seconds(window.end_ms + shift)})"


def _at_start(series: str, window: Window) -> str:
    """Each series' last value before the window (back the window's length and ``LOOKBACK``):
    where a step has no sample of the window yet, its count stands there, not at 0.

    A series is born in the window when it has no sample in ``LOOKBACK`` before it; one unscraped
    across the start (Prometheus restarted, its target unreachable for minutes) has one earlier,
    and read from 0 it counted its whole life before the window (10,800 requests of a baseline
    for 3,600). A version rolled back and deployed again starts below its earlier count: a
    reset, which counts that count back."""
    reach = _duration(window.end_ms - window.start_ms + LOOKBACK_MS)
    return f"last_over_time({series}[{reach}] @ {_seconds(window.start_ms)})"


def _duration(millis: int) -> str:
    """A PromQL duration to the millisecond (at least one)."""
    millis = max(1, millis)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _seconds(millis: int) -> str:
    """A PromQL time (Unix seconds) to the millisecond."""
    return f"{millis / 1000:.3f}"


FAMILIES = (
    # an error type (the application raised, before or while answering, or a 5xx), or from a
    # tracekit without that label: 5xx, or no status at all (raised before it responded)
    Family(HTTP, "http_server_request_duration_seconds", "http_route",
           ('error_type!=""', 'http_response_status_code=~"5..|"'),
           'error_type="", http_response_status_code!~"5..|"'),
    Family(MESSAGING, "messaging_process_duration_seconds", "messaging_destination_name",
           ('error_type!=""',), 'error_type=""'),
)  # fmt: skip


def samples_from_prometheus(
    url: str,
    service: str,
    versions: tuple[str, str],
    start_ns: int,
    end_ns: int,
    timeout: float = 10.0,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[Samples, Samples]:
    """(baseline, canary) samples from tracekit's histograms, asked with ``headers`` (a
    tenant, credentials); raises ``BackendError``."""
    asking = _Asking.of(url, service, start_ns, end_ns, timeout, headers)
    read = [{family: asking.histograms(family, v) for family in FAMILIES} for v in versions]
    found: tuple[Samples, Samples] = ({}, {})
    for family in FAMILIES:
        baseline, canary = read[0][family], read[1][family]
        shared = _shared_bounds(baseline, canary)
        found[0].update(_family_samples(family, baseline, shared))
        found[1].update(_family_samples(family, canary, shared))
    return found


def versions_from_prometheus(
    url: str,
    service: str,
    start_ns: int,
    end_ns: int,
    timeout: float = 10.0,
    *,
    headers: Mapping[str, str] | None = None,
) -> set[str | None]:
    """The ``service_version`` values (None: none recorded) of ``service``'s requests in the
    window: of its request histograms whose count grew there, counted as the samples are
    (``_counted``, ``_born_grew``); a series scraped there unchanged holds no request of the
    window. Raises ``BackendError``."""
    asking = _Asking.of(url, service, start_ns, end_ns, timeout, headers)
    window = asking.window
    found: set[str | None] = set()
    for family in FAMILIES:
        series = f"{family.histogram}_count{{service_name={_string(service)}}}"
        # the two parts of each count, as ``samples_from_prometheus``
        for grew in (f"({_counted(series, window)}) > 0", _born_grew(series, window)):
            answer = asking.query(f"count by (service_version) ({grew})")
            found |= {sample["metric"].get("service_version") or None for sample in answer}
    return found


def _born_grew(series: str, window: Window) -> str:
    """The series born in ``window`` whose count there (``_counted``) is above 0, from one read
    of their samples: where one rose, or fell to above 0 (``increase()`` adds up each rise and
    each value after a fall), or else where their highest, which is then the first, is above 0
    and not the value before the window (``_at_start``). Read at steps instead (``_from_zero``),
    a crash-looping canary's counters held 3,000 samples each: asking which versions of a
    service of 17,100 bucket series had requests took 7.9 s of the 10 s ``--timeout``."""
    over = f"{series}[{window.length}]"
    highest = f"max_over_time({over})"
    first_is_growth = f"({highest} > 0 unless {highest} == {_at_start(series, window)})"
    return f"((increase({over}) > 0) or {first_is_growth}) unless {_existed(series, window)}"


@dataclass(frozen=True, slots=True)
class _Asking:
    """One Prometheus, asked about ``service``'s histograms over ``window``."""

    client: JsonClient
    service: str
    window: Window

    @classmethod
    def of(
        cls, url: str, service: str, start_ns: int, end_ns: int, timeout: float,
        headers: Mapping[str, str] | None,
    ) -> _Asking:  # fmt: skip
        from tracekit.backends._http import JsonClient

        client = JsonClient(url, name="Prometheus", timeout=timeout, headers=headers)
        return cls(client, service, Window.of(start_ns, end_ns))

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` gives at the window's end."""
        from tracekit.backends._http import NotFound

        try:
            answer = self.client.get("/api/v1/query", {"query": promql, "time": self.window.at})
        except NotFound:
            raise BackendError(f"no Prometheus query API at {self.client.base_url}") from None
        return _vector(answer)

    def histograms(self, family: Family, version: str) -> _Histograms:
        """``version``'s histograms of ``family``: each count in two parts, added up per route
        (the series that existed at the window's start, and those born in it)."""
        service, window = self.service, self.window
        resets = bool(self.query(family.resets_query(service, version, window)))
        buckets, failed = [], []
        for born in (False, True):
            stepped = born and resets  # read at steps: see ``steps`` and ``bounds``
            asked = {"born": born, "resets": resets}
            read_at = self.steps(family, version) if stepped else BORN_STEPS
            for bound in self.bounds(family, version) if stepped else [None]:
                bucket_counts = family.buckets_query(
                    service, version, window, bound, steps=read_at, **asked
                )
                buckets += self.query(bucket_counts)
            failed_counts = family.failed_query(service, version, window, steps=read_at, **asked)
            failed += self.query(failed_counts)
        return _histograms(family, buckets, failed)

    def steps(self, family: Family, version: str) -> int:
        """Steps (``_from_zero``) shorter than half the time between two scrapes, at most
        ``BORN_STEPS``: each step reads one sample at most, so the count is the samples' own,
        every restart they show counted from zero and no growth before one lost. Scraped every
        ``s`` seconds, a series has at most ``n`` samples in a part of the window only if ``s``
        is over ``part / (n + 1)``. A step holds 3 samples per series: at 1,000 steps, 17,100
        bucket series of a crash-looping canary (15 s scrapes, a 30-minute window) took 49 s;
        at 288, 9 to 17 s. Measured in parts: a service deployed in a 1-hour window's last 10
        minutes has 41 samples a series there, and at twice that many steps, 44 s each, a
        crash-looping canary's growth before some restarts was lost (764 requests of 848). Only
        in parts its series were scraped through: a 1-hour window's last 16th held 2 samples a
        series of a service deployed 225 s before its end (200 s after that 16th began), and at
        steps of 37.5 s its canary, restarting every 40 s, read 96 requests of 195. And from the
        version's own series: from the service's, a baseline scraped every minute set steps of
        19 s for a canary scraped every 5 s, which read 19 requests of 90."""
        for parts in (DENSITY_PARTS, YOUNG_DENSITY_PARTS):
            found = self.query(family.density_query(self.service, version, self.window, parts))
            if found:
                return min(BORN_STEPS, 2 * parts * (round(_value(found[0])) + 1))
        return BORN_STEPS

    def bounds(self, family: Family, version: str) -> list[str | None]:
        """The bounds to read the steps of one at a time (``_from_zero``): each of a version's
        bucket series holds 3 samples a step there, and a service's would not fit in one query
        (50 million samples, Prometheus' default limit, at 17,000 series and 1,000 steps)."""
        answer = self.query(family.bounds_query(self.service, version, self.window))
        found = {series["metric"].get("le", "") for series in answer}
        return [None] if len(found) > MAX_BOUNDS_STEPPED else sorted(found)


def _vector(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise BackendError(f"Prometheus query failed: {str(error or 'unexpected answer')[:200]}")
    warnings = answer.get("warnings")
    if warnings:  # a store it reads from (remote read, Thanos' store API) did not answer
        said = warnings[0] if isinstance(warnings, list) else warnings
        raise BackendError(f"Prometheus answered only part of the data: {str(said)[:200]}")
    data = answer.get("data") or {}
    result = data.get("result") if data.get("resultType") == "vector" else None
    if not isinstance(result, list):
        raise BackendError("Prometheus answered something other than an instant vector")
    if len(result) > MAX_SERIES:
        raise BackendError(f"Prometheus answered more than {MAX_SERIES} series")
    if not all(_is_sample(series) for series in result):
        raise BackendError(
            'Prometheus answered a series that is not {"metric": {labels}, "value": [time, number]}'
        )
    return result


def _is_sample(series: Any) -> bool:
    """One sample of an instant vector, as Prometheus writes it: text labels, a numeric text."""
    if not isinstance(series, dict):
        return False
    labels, pair = series.get("metric"), series.get("value")
    return (
        isinstance(labels, dict)
        and all(isinstance(value, str) for value in labels.values())
        and isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[1], str)
        and _is_number(pair[1])
    )


def _is_number(text: str) -> bool:
    """Whether Prometheus' sample text is a number ("NaN" and "+Inf" are)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# per route: the succeeded requests' cumulative counts by bucket bound (``le``), and the failed
_Histograms = dict[str, tuple[dict[float, float], float]]


def _histograms(
    family: Family, buckets: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> _Histograms:
    """Per route, from the succeeded requests' bucket series and the failed-request series (a
    route's or a bucket's series are added up); a route may have only failures."""
    by_route: dict[str, dict[float, float]] = {}
    for series in buckets:
        labels = series["metric"]
        bound = _number(labels.get("le"))
        if bound is None:
            raise BackendError("Prometheus answered a histogram bucket without a numeric le label")
        if not (0 <= bound <= MAX_BOUND_SECONDS or bound == math.inf):
            raise BackendError(
                f"Prometheus answered a histogram bucket with le={str(labels['le'])[:40]!r}:"
                " not a duration in seconds"
            )
        cumulative = by_route.setdefault(_route(labels, family), {})
        cumulative[bound] = cumulative.get(bound, 0.0) + _value(series)
    errors: dict[str, float] = {}
    for series in failed:
        route = _route(series["metric"], family)
        errors[route] = errors.get(route, 0.0) + _value(series)
    routes = by_route.keys() | errors.keys()
    return {route: (by_route.get(route, {}), errors.get(route, 0.0)) for route in routes}


def _shared_bounds(baseline: _Histograms, canary: _Histograms) -> dict[str, set[float]]:
    """Per route both versions timed, the bucket bounds both versions' histograms have.

    Inside a bucket the requests are spread evenly, a guess; when the versions' buckets differ
    (a tracekit or a configuration with other bounds), the guess differs too, and the tests
    would see that difference as one of latency. Read on the bounds both have, the two versions
    are guessed alike (a cumulative count at a bound does not depend on the other bounds).
    """
    return {
        route: set(baseline[route][0]) & set(canary[route][0])
        for route in baseline.keys() & canary.keys()
        if baseline[route][0] and canary[route][0]
    }


def _family_samples(
    family: Family, histograms: _Histograms, shared: dict[str, set[float]]
) -> Samples:
    """Samples per route, each read on the bucket bounds it shares with the other version's."""
    out: Samples = {}
    for route in sorted(histograms):
        cumulative, errors = histograms[route]
        if route in shared:
            cumulative = _on_bounds(cumulative, shared[route])
        bounds, counts = _buckets(cumulative.items())
        failures = round(errors)
        total = sum(counts) + failures
        if total > MAX_REQUESTS:  # the same shares, in fewer requests: only more cautious
            counts = [round(c * MAX_REQUESTS / total) for c in counts]
            failures = round(failures * MAX_REQUESTS / total)
        samples = histogram_samples(bounds, counts, failures)
        if samples.requests:
            out[RouteKey(family.kind, route)] = samples
    return out


def _on_bounds(cumulative: dict[float, float], bounds: set[float]) -> dict[float, float]:
    """The cumulative counts at ``bounds`` only (merging the buckets between them), and at the
    highest bound, which counts every request."""
    kept = bounds | {max(cumulative)}
    return {bound: count for bound, count in cumulative.items() if bound in kept}


def _route(labels: dict[str, str], family: Family) -> str:
    """The series' route; without one (a label Prometheus drops when empty), ``_unmatched``."""
    return labels.get(family.route_label) or UNMATCHED_ROUTE


def _buckets(cumulative: Iterable[tuple[float, float]]) -> tuple[list[float], list[int]]:
    """Finite bucket bounds and per-bucket request counts (one more: above the last bound)
    from cumulative counts (``le`` -> count), rounded."""
    bounds, counts, previous = [], [], 0
    for bound, value in sorted(cumulative):
        total = max(previous, round(value))  # cumulative counts never fall, whatever rounding did
        if math.isfinite(bound):
            bounds.append(bound)
        counts.append(total - previous)
        previous = total
    if len(counts) == len(bounds):  # no +Inf bucket: nothing above the last bound
        counts.append(0)
    return bounds, counts


def _number(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _value(series: dict[str, Any]) -> float:
    """The sample's value as a count. ``increase()`` of a counter is never NaN, infinite or
    negative: such a value is a backend error. Read as 0, a NaN count of failed requests hid
    them, and a NaN bucket moved its requests into the next, slower one."""
    text = series["value"][1]
    number = float(text)
    if not (math.isfinite(number) and number >= 0):
        raise BackendError(f"Prometheus answered {text[:20]!r} where a count of requests belongs")
    return number


def _string(value: str) -> str:
    """A PromQL string literal: double-quoted, with Go's escapes (JSON's are a subset)."""
    return json.dumps(value, ensure_ascii=False)
