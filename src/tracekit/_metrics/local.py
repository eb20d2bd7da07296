"""Single-process metric families that count under one lock and format only when scraped.

prometheus-client's ``Histogram.observe`` takes a lock for the sum and another for the bucket,
validates the exemplar and builds it (trace id formatted as hex) on every call; its gauge takes
a lock per ``inc``/``dec``. On a request path or a queue hop that is a large share of tracekit's
cost, so for the single-process case (no ``PROMETHEUS_MULTIPROC_DIR``) the HTTP server and
messaging metrics count here and the collector builds exactly the samples prometheus-client's own
classes would: the same names, labels, ``le`` values, ``_created`` series and exemplars, in both
exposition formats.
Multiprocess mode keeps prometheus-client's classes, whose values live in shared files.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from time import time

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client import values as _prometheus_values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import INF, floatToGoString

from tracekit._metrics.families import join

__all__ = ["LocalCounter", "LocalGauge", "LocalHistogram", "LockFreeCounter", "local_values"]


# The families counting under a lock of their own, whose locks a child of fork() renews: a
# thread of the parent held one as it forked (a scrape copying a family's series, a request
# counting), and that thread does not exist in the child, so the lock stayed held there for
# ever: the child's first observation (a request, a message) waited for good.
_locking: weakref.WeakSet[LocalHistogram | LockFreeCounter] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for family in list(_locking):
        family._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks_in_child)


def local_values() -> bool:
    """True when prometheus-client keeps values in this process (not in multiprocess files)."""
    return _prometheus_values.ValueClass is _prometheus_values.MutexValue


def _created_series_enabled() -> bool:
    # prometheus-client's own switch (env PROMETHEUS_DISABLE_CREATED_SERIES or
    # disable_created_metrics()), read at scrape time as its classes do.
    return bool(getattr(_prometheus_metrics, "_use_created", True))


class _Series:
    """Counts of one label set: per-bucket (not cumulative), sum, last exemplar per bucket, and
    every observation (NaN too: what a counter beside the histogram would have counted)."""

    __slots__ = ("counts", "created", "exemplars", "observed", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.exemplars: list[tuple[int, int, float, float] | None] = [None] * buckets
        self.total = 0.0
        self.observed = 0
        self.created = time()


class LocalHistogram(Collector):
    """A labelled histogram whose ``observe`` is one bisect and one short locked update.

    ``labelnames`` are the per-observation labels; ``constant`` labels (the service's) follow
    them in every sample, as if they were trailing label values.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
        constant: Sequence[tuple[str, str]] = (),
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds[-1] != INF:
            bounds.append(INF)
        self.name, self.documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._constant = dict(constant)
        self._bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()
        _locking.add(self)
        self.observations = 0  # over every series: lets a caller count finished requests
        join(registry, self)

    def observe(
        self,
        labels: tuple[str, ...],
        amount: float,
        trace_id: int = 0,
        span_id: int = 0,
        *,
        counted: int = 1,
    ) -> None:
        """Count ``amount`` for ``labels``; a non-zero ``trace_id`` makes the bucket's exemplar.

        ``counted``: the events this observation stands for in ``series_counts`` (a counter read
        from it: one publish of a batch of 10 is 10 messages sent).
        """
        index = bisect_left(self._bounds, amount)  # the first bucket whose bound is >= amount
        exemplar = (trace_id, span_id, amount, time()) if trace_id else None
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _Series(len(self._bounds))
            self.observations += 1
            series.observed += counted
            series.total += amount
            if amount == amount:  # NaN falls in no bucket, as in prometheus-client
                series.counts[index] += 1
                if exemplar is not None:
                    series.exemplars[index] = exemplar

    def describe(self) -> list[Metric]:
        """The family's name and type, which the registry reserves (with the suffixes)."""
        return [Metric(self.name, self.documentation, "histogram")]

    def series_counts(self) -> list[tuple[tuple[str, ...], int, float]]:
        """``(labels, observations, created)`` of every series, in the order they appeared."""
        with self._lock:
            return [(labels, s.observed, s.created) for labels, s in self._series.items()]

    def collect(self) -> list[Metric]:
        """The samples prometheus-client's ``Histogram`` would expose for the same counts."""
        with self._lock:
            snapshot = [
                (labels, list(s.counts), list(s.exemplars), s.total, s.created)
                for labels, s in self._series.items()
            ]
        metric = Metric(self.name, self.documentation, "histogram")
        with_created = _created_series_enabled()
        for labels, counts, exemplars, total, created in snapshot:
            base = {**dict(zip(self._labelnames, labels, strict=True)), **self._constant}
            accumulated = 0.0
            for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
                accumulated += count
                bucket = {**base, "le": le}
                metric.add_sample(
                    self.name + "_bucket", bucket, accumulated, None, _exemplar(exemplar)
                )
            metric.add_sample(self.name + "_count", base, accumulated)
            if self._bounds[0] >= 0:
                metric.add_sample(self.name + "_sum", base, total)
            if with_created:
                metric.add_sample(self.name + "_created", base, created)
        return [metric]


def _exemplar(raw: tuple[int, int, float, float] | None) -> Exemplar | None:
    if raw is None:
        return None
    trace_id, span_id, value, timestamp = raw
    labels = {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}
    return Exemplar(labels, value, timestamp)


class LocalCounter(Collector):
    """A labelled counter whose series ``read`` returns at scrape time.

    ``read`` gives ``(labels, count, created)`` per series in the order prometheus-client's
    ``Counter`` would have created them: a count derived from a histogram's observations costs
    nothing when the event happens.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        read: Callable[[], Iterable[tuple[tuple[str, ...], int, float]]],
        constant: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.name, self.documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._constant = dict(constant)
        self._read = read
        join(registry, self)

    def describe(self) -> list[Metric]:
        """The family's name and type (the registry reserves ``_total`` and ``_created``)."""
        return [Metric(self.name, self.documentation, "counter")]

    def collect(self) -> list[Metric]:
        """The samples prometheus-client's ``Counter`` would expose for the same counts."""
        metric = Metric(self.name, self.documentation, "counter")
        with_created = _created_series_enabled()
        for labels, count, created in self._read():
            base = {**dict(zip(self._labelnames, labels, strict=True)), **self._constant}
            metric.add_sample(self.name + "_total", base, float(count))
            if with_created:
                metric.add_sample(self.name + "_created", base, created)
        return [metric]


class LocalGauge(Collector):
    """A gauge with one series (fixed label values) whose value ``read`` returns at scrape time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[tuple[str, str]],
        registry: CollectorRegistry,
        read: Callable[[], float],
    ) -> None:
        self.name, self.documentation = name, documentation
        self._labels = dict(labels)
        self._read = read
        join(registry, self)

    def describe(self) -> list[Metric]:
        """The family's name and type."""
        return [Metric(self.name, self.documentation, "gauge")]

    def collect(self) -> list[Metric]:
        """One sample, a float as prometheus-client's ``Gauge`` exposes it."""
        metric = Metric(self.name, self.documentation, "gauge")
        metric.add_sample(self.name, dict(self._labels), float(self._read()))
        return [metric]


class LockFreeCounter:
    """Counts events without a lock: ``next()`` on ``itertools.count`` is one atomic C call.

    Reading advances the count too, so reads are counted (under a lock, off the hot path) and
    subtracted.
    """

    def __init__(self) -> None:
        self._count = itertools.count()
        self._reads = 0
        self._lock = threading.Lock()
        _locking.add(self)

    def add(self) -> None:
        """Count one event."""
        next(self._count)

    def value(self) -> int:
        """Events counted so far."""
        with self._lock:
            value = next(self._count) - self._reads
            self._reads += 1
        return value
