"""Samples from Prometheus: tracekit's own histograms, by ``service_version``, over the window.

For a team without the store. Per version and family, instant queries at the window's end: the
bucket counts per route, ``sum by (route, le) (increase(<histogram>_bucket{...}[window]))``, and
the failed requests per route from the histogram's ``_count``. ``increase()`` copes with counter
resets (pods restarting mid-rollout) and extrapolates to the window's edges, so counts can differ
from the requests served by about a scrape interval's worth; they are rounded to whole requests.

``increase()`` counts nothing for the jump from "no series" to a series' first scraped value, and
every series of a canary is new: a 5xx series appears with its first failure, a pod's series with
its first requests. So each count has a second query, ``born``: the first value in the window
(``min_over_time``, a counter's first value unless it was reset) of every series that did not
exist at the window's start, counted from zero as ``increase()`` counts after a reset.

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
from typing import Any

from tracekit.canary.samples import (
    HTTP,
    MESSAGING,
    UNMATCHED_ROUTE,
    RouteKey,
    histogram_samples,
)
from tracekit.canary.samples import VersionSamples as Samples
from tracekit.records import BackendError

__all__ = ["FAMILIES", "MAX_REQUESTS", "MAX_SERIES", "Family", "samples_from_prometheus"]

MAX_SERIES = 10_000  # per query: routes x buckets; tracekit caps routes at 500 per process
# Requests per route and version taken into the tests; a busier route's buckets (and failures)
# are scaled down to this many in proportion: one float per request must fit in memory.
MAX_REQUESTS = 200_000


@dataclass(frozen=True, slots=True)
class Family:
    """One histogram tracekit records per request, and how its failed requests are told apart."""

    kind: str
    histogram: str
    route_label: str
    failed: tuple[str, ...]  # label matchers each selecting failed requests (their union counts)

    def selector(self, service: str, version: str, extra: str = "") -> str:
        """``{service_name="...", service_version="..."}`` plus an optional matcher."""
        labels = f"service_name={_string(service)}, service_version={_string(version)}"
        return "{" + labels + (f", {extra}" if extra else "") + "}"

    def buckets_query(
        self, service: str, version: str, seconds: float, *, born: bool = False
    ) -> str:
        """Bucket counts per route over the last ``seconds`` (``born``: see ``_counted``)."""
        series = f"{self.histogram}_bucket{self.selector(service, version)}"
        return f"sum by ({self.route_label}, le) ({_counted(series, seconds, born=born)})"

    def failed_query(
        self, service: str, version: str, seconds: float, *, born: bool = False
    ) -> str:
        """Failed requests per route over the last ``seconds`` (``born``: see ``_counted``):
        the series any of ``failed`` selects, each once (``or`` keeps one of the same labels)."""
        parts = []
        for matcher in self.failed:
            series = f"{self.histogram}_count{self.selector(service, version, matcher)}"
            parts.append(f"({_counted(series, seconds, born=born)})")
        return f"sum by ({self.route_label}) ({' or '.join(parts)})"


def _counted(series: str, seconds: float, *, born: bool = False) -> str:
    """How much each counter of ``series`` grew over the last ``seconds``: ``increase()``, or
    with ``born`` what ``increase()`` leaves out, the first value of each series that did not
    exist at the window's start (a series absent at the start began at zero inside the window).
    """
    duration = _duration(seconds)
    if born:
        return f"min_over_time({series}[{duration}]) unless {series} offset {duration}"
    return f"increase({series}[{duration}])"


def _duration(seconds: float) -> str:
    """A PromQL duration to the millisecond: where the window starts decides which series were
    born inside it."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


FAMILIES = (
    # an error type (the application raised, before or while answering, or a 5xx), or from a
    # tracekit without that label: 5xx, or no status at all (raised before it responded)
    Family(HTTP, "http_server_request_duration_seconds", "http_route",
           ('error_type!=""', 'http_response_status_code=~"5..|"')),
    Family(MESSAGING, "messaging_process_duration_seconds", "messaging_destination_name",
           ('error_type!=""',)),
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
    from tracekit.backends._http import JsonClient, NotFound

    client = JsonClient(url, name="Prometheus", timeout=timeout, headers=headers)
    seconds = (end_ns - start_ns) / 1e9
    at = f"{end_ns / 1e9:.3f}"

    def query(promql: str) -> list[dict[str, Any]]:
        try:
            answer = client.get("/api/v1/query", {"query": promql, "time": at})
        except NotFound:
            raise BackendError(f"no Prometheus query API at {client.base_url}") from None
        return _vector(answer)

    found = []
    for version in versions:
        samples: Samples = {}
        for family in FAMILIES:
            buckets, failed = [], []
            for born in (False, True):  # the two parts of each count, added up per route
                buckets += query(family.buckets_query(service, version, seconds, born=born))
                failed += query(family.failed_query(service, version, seconds, born=born))
            samples.update(_family_samples(family, buckets, failed))
        found.append(samples)
    return found[0], found[1]


def _vector(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise BackendError(f"Prometheus query failed: {str(error or 'unexpected answer')[:200]}")
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


def _family_samples(
    family: Family, buckets: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> Samples:
    """Samples per route from bucket series and failed-request series (a route's or a bucket's
    series are added up)."""
    by_route: dict[str, dict[float, float]] = {}
    for series in buckets:
        labels = series["metric"]
        bound = _number(labels.get("le"))
        if bound is None:
            raise BackendError("Prometheus answered a histogram bucket without a numeric le label")
        cumulative = by_route.setdefault(_route(labels, family), {})
        cumulative[bound] = cumulative.get(bound, 0.0) + _value(series)
    errors: dict[str, float] = {}
    for series in failed:
        route = _route(series["metric"], family)
        errors[route] = errors.get(route, 0.0) + _value(series)
    out: Samples = {}
    for route, cumulative in sorted(by_route.items()):
        bounds, counts = _buckets(cumulative.items())
        total = sum(counts)
        if not total:
            continue
        # increase() extrapolates each series on its own: the failed count of an all-failing
        # route can come out above its request count
        failures = min(round(errors.get(route, 0.0)), total)
        if total > MAX_REQUESTS:  # the same shares, in fewer requests: only more cautious
            counts = [round(c * MAX_REQUESTS / total) for c in counts]
            failures = min(round(failures * MAX_REQUESTS / total), sum(counts))
        samples = histogram_samples(bounds, counts, failures)
        if samples.requests:
            out[RouteKey(family.kind, route)] = samples
    return out


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
    """The sample's value as a count: NaN, infinite and negative values count nothing."""
    number = _number(series["value"][1])
    return number if number is not None and math.isfinite(number) and number > 0 else 0.0


def _string(value: str) -> str:
    """A PromQL string literal: double-quoted, with Go's escapes (JSON's are a subset)."""
    return json.dumps(value, ensure_ascii=False)
