"""What the analysis works on: per version and route, the durations of the requests that
succeeded and how many failed.

Latency is compared over successes only: a failure's duration says how it failed, not how fast
the service serves. A canary that now answers in 50 ms a request the baseline failed in 1 ms is
a fix, not a slowdown, and a canary failing fast must not look faster; failures have their own
check, the error rate.

The store gives real per-request durations. Prometheus gives histogram bucket counts; those are
turned into durations spread evenly inside each bucket, the assumption ``histogram_quantile``
makes, so both sources feed the same statistics (see ``spread_histogram``). Such samples also
keep each request's bucket edges (``RouteSamples.edges``): the spread is a guess, and an interval
must not claim more than the edges allow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "HTTP",
    "MESSAGING",
    "UNMATCHED_ROUTE",
    "Floats",
    "RouteKey",
    "RouteSamples",
    "VersionSamples",
    "histogram_samples",
    "spread_histogram",
]

HTTP = "http"  # SERVER spans, routed by http.route
MESSAGING = "messaging"  # CONSUMER spans, routed by messaging.destination.name
UNMATCHED_ROUTE = "_unmatched"  # no route: the value tracekit's metrics use too

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, order=True)
class RouteKey:
    """Where requests entered the service: an HTTP route or a messaging destination."""

    kind: str  # HTTP or MESSAGING
    route: str


@dataclass(frozen=True, slots=True)
class RouteSamples:
    """One version's requests on one route: the succeeded ones' durations in seconds (sorted),
    and how many failed.

    ``edges``, for durations read from histogram buckets: each request's lowest and highest
    possible duration (its bucket's edges, the last bucket's upper one infinite), in the order of
    ``durations``; None when the durations are exact.
    """

    durations: Floats
    errors: int
    edges: tuple[Floats, Floats] | None = None
    # requests neither timed here nor counted failed: the other routes' failures, when one
    # route's failures are counted among every request of the version; in a route's own
    # samples, requests that succeeded while the clock stepped back (no duration to tell)
    uncounted: int = 0

    @classmethod
    def of(cls, seconds: Iterable[float], errors: int) -> RouteSamples:
        """Samples from the succeeded requests' durations in any order, and ``errors`` failed."""
        durations = np.sort(np.fromiter(seconds, dtype=np.float64))
        return cls(durations, max(0, errors))

    @classmethod
    def joined(cls, parts: Iterable[RouteSamples], errors: int) -> RouteSamples:
        """The succeeded requests of all ``parts`` as one sample, with ``errors`` failed."""
        durations = [part.durations for part in parts]
        return cls.of(np.concatenate(durations) if durations else [], errors)

    @property
    def requests(self) -> int:
        """Number of requests, succeeded and failed."""
        return len(self.durations) + self.errors + self.uncounted

    @property
    def succeeded(self) -> int:
        """Number of requests that succeeded: those whose durations the latency checks compare."""
        return len(self.durations)

    @property
    def all_failed(self) -> bool:
        """Whether none of the requests succeeded, timed or not (a route that only ever failed,
        which has no latency to compare, unlike one whose clock stepped back)."""
        return not self.succeeded and not self.uncounted

    def quantile(self, q: float) -> float:
        """The succeeded requests' ``q``-quantile in seconds, interpolated linearly between order
        statistics."""
        return float(np.quantile(self.durations, q)) if self.succeeded else math.nan

    @property
    def lowest(self) -> Floats:
        """Each request's lowest possible duration (sorted): its bucket's lower edge, if any."""
        return self.durations if self.edges is None else self.edges[0]

    @property
    def highest(self) -> Floats:
        """Each request's highest possible duration (sorted): its bucket's upper edge, if any."""
        return self.durations if self.edges is None else self.edges[1]


VersionSamples = dict[RouteKey, RouteSamples]


def spread_histogram(bounds: Sequence[float], counts: Sequence[int]) -> Floats:
    """Durations for per-bucket ``counts``, evenly spaced inside each bucket.

    ``bounds`` are the buckets' upper bounds (ascending, finite); ``counts`` has one more entry,
    the requests above the last bound, which sit on that bound as ``histogram_quantile`` puts
    them. Bucket i spans (bounds[i-1], bounds[i]], the first starting at 0.
    """
    parts = []
    lower = 0.0
    for upper, count in zip(bounds, counts, strict=False):
        if count > 0:
            parts.append(lower + (upper - lower) * (np.arange(count) + 0.5) / count)
        lower = upper
    above = counts[len(bounds)] if len(counts) > len(bounds) else 0
    if above > 0:
        parts.append(np.full(above, bounds[-1] if bounds else 0.0))
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.float64)


def histogram_samples(bounds: Sequence[float], counts: Sequence[int], errors: int) -> RouteSamples:
    """Samples from the succeeded requests' per-bucket ``counts`` (as ``spread_histogram``), with
    each request's edges, and ``errors`` failed requests."""
    lower = np.concatenate([[0.0], bounds])
    upper = np.concatenate([bounds, [math.inf]])
    sizes = np.zeros(len(upper), dtype=np.int64)
    sizes[: len(counts)] = counts
    edges = (np.repeat(lower, sizes), np.repeat(upper, sizes))
    return RouteSamples(spread_histogram(bounds, counts), errors, edges)
