"""Prometheus RED metrics with exemplars that link to traces.

Every metric family takes a ``registry`` (default: prometheus-client's global one), so tests and
benchmarks build fresh registries. Names translate the OpenTelemetry semantic conventions to
Prometheus conventions; docs/metrics.md lists every name, label and unit.

This module holds the metric families of a service (``HttpServerMetrics``, ``HttpClientMetrics``,
``MessagingMetrics``) and re-exports the rest of the public surface from ``tracekit._metrics``:
label bounds (``labels``), the exemplar filter (``exemplars``), what a scrape is served
(``exposition``) and the metrics port (``port``).

Exposition: ``install`` (called by ``tracekit.init()``) serves the registry on
``TRACEKIT_METRICS_PORT`` (``tracekit._metrics.server``); ``asgi_metrics_app`` and
``wsgi_metrics_app`` mount it in an application instead. Both aggregate every worker's values when
``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

from opentelemetry.trace import Span
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tracekit import semconv
from tracekit._metrics.exemplars import exemplar_ids, exemplar_of
from tracekit._metrics.exposition import (
    MULTIPROC_DIR_ENV,
    MetricsASGIApp,
    asgi_metrics_app,
    exposition_registry,
    fold_reused_files,
    mark_process_dead,
    multiprocess_enabled,
    recorded_now,
    wsgi_metrics_app,
)
from tracekit._metrics.families import join
from tracekit._metrics.labels import (
    MAX_LABEL_LENGTH,
    OTHER_VALUE,
    BoundedLabel,
    client_error_type,
    destination_key,
    label_value,
    renew_locks,
    server_error_type,
    status_label,
)
from tracekit._metrics.local import (
    LocalCounter,
    LocalGauge,
    LocalHistogram,
    LockFreeCounter,
    local_values,
)
from tracekit._metrics.port import MetricsServer, install
from tracekit._metrics.recorded import RecordedSeries

__all__ = [
    "DURATION_BUCKETS",
    "MAX_CLIENT_DESTINATIONS",
    "MAX_CLIENT_STATUS_CODES",
    "MAX_LABEL_LENGTH",
    "MULTIPROC_DIR_ENV",
    "OTHER_VALUE",
    "QUEUE_WAIT_BUCKETS",
    "UNMATCHED_ROUTE",
    "BoundedLabel",
    "HttpClientMetrics",
    "HttpServerMetrics",
    "MessagingMetrics",
    "MetricsASGIApp",
    "MetricsServer",
    "asgi_metrics_app",
    "exemplar_of",
    "exposition_registry",
    "install",
    "mark_process_dead",
    "multiprocess_enabled",
    "wsgi_metrics_app",
]

# OpenTelemetry's recommended boundaries for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
UNMATCHED_ROUTE = "_unmatched"
MAX_CLIENT_DESTINATIONS = 100  # distinct (server.address, server.port) pairs per process
MAX_CLIENT_STATUS_CODES = 20  # distinct status codes per destination and process
_SERVICE_LABELS = ("service_name", "service_version")
_SERVER_DURATION = "http_server_request_duration_seconds"
_SERVER_DURATION_HELP = "Duration of HTTP server requests."
_SERVER_LABELS = ("http_request_method", "http_route", "http_response_status_code", "error_type")
_SERVER_ACTIVE = "http_server_active_requests"
_SERVER_ACTIVE_HELP = "Number of HTTP server requests in flight."
_Family = TypeVar("_Family", Counter, Gauge, Histogram)


def _histogram(
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    registry: CollectorRegistry,
    buckets: tuple[float, ...] = DURATION_BUCKETS,
) -> Histogram:
    return _joined(Histogram(name, documentation, labels, buckets=buckets, registry=None), registry)


def _joined(family: _Family, registry: CollectorRegistry) -> _Family:
    """``family`` (built outside any registry) exposed in ``registry``, beside the same family
    of the other services recording there."""
    join(registry, family)
    return family


class _ServiceMetrics:
    """Metric families of one service in one registry, held once per service name, version and
    registry: build them with ``get``.

    A process records under a second service after ``tracekit.shutdown()`` and an ``init()``
    under a new name, or through a middleware given its own ``service_name``; each service's
    collectors join the families of the registry (``tracekit._metrics.families``), which refuses
    a second family of the same name.
    """

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, dict[tuple[str, str], Any]]]
    # The service and registry asked for last and their instance: every queue hop and client
    # call asks, nearly always for the same ones, and this answers without a lock or a weak
    # reference.
    _last: ClassVar[tuple[CollectorRegistry, str, str | None, Any] | None]
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instances = weakref.WeakKeyDictionary()
        cls._last = None

    @classmethod
    def get(
        cls,
        service_name: str,
        service_version: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> Self:
        """The metrics of the service in ``registry`` (default: the global one), created on
        first use; raises what creating them raised, then and at every later call."""
        registry = REGISTRY if registry is None else registry
        last = cls._last
        if (
            last is not None
            and last[0] is registry
            and last[1] == service_name
            and last[2] == service_version
        ):
            known: Self = last[3]
            return known
        with cls._lock:
            services = cls._instances.setdefault(registry, {})
            key = (service_name, service_version or "")
            instance = services.get(key)
            if instance is None:
                instance = services[key] = cls._built(service_name, service_version, registry)
            if isinstance(instance, Exception):
                raise instance.with_traceback(None)  # not this call's frames added to the last
            cls._last = (registry, service_name, service_version, instance)
            return instance

    @classmethod
    def _built(
        cls, service_name: str, service_version: str | None, registry: CollectorRegistry
    ) -> Self | Exception:
        """A new instance, or why there is none. The reason is kept: building again (at every
        message) joined the families made before the one that failed (a name the registry
        already has) to the registry once more, a collector more per message, without end."""
        try:
            return cls(service_name, service_version, registry)
        except Exception as error:
            return error

    def __init__(
        self,
        service_name: str,
        service_version: str | None,
        registry: CollectorRegistry,
        *,
        local: bool | None = None,
    ) -> None:
        """``local``: count in this process (default: unless in multiprocess mode)."""
        self._service = (service_name, service_version or "")
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._local = local_values() if local is None else local
        if not self._local:
            fold_reused_files()

    def _admit_recorded_destinations(self, recorded: RecordedSeries) -> None:
        """Count, against the caps, the label values of ``recorded``, the series in the shared
        directory (see ``_recorded_labels``): none by default."""

    @classmethod
    def _shared_instances(cls) -> list[_ServiceMetrics]:
        """Every instance keeping its values in the shared directory."""
        return [
            instance
            for services in list(cls._instances.values())
            for instance in list(services.values())
            if isinstance(instance, _ServiceMetrics) and not instance._local
        ]

    def _child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels, service_name, service_version)``, cached.

        prometheus-client locks and validates on every ``labels()`` call; the label values here
        are already bounded, so the cache stays small.
        """
        child = self._children.get((family, labels))
        if child is None:
            child = family.labels(*labels, *self._service)
            self._children[(family, labels)] = child
        return child


class HttpServerMetrics(_ServiceMetrics):
    """Request duration histogram and in-flight gauge of one service's HTTP server.

    In a single process the families count in ``tracekit._metrics.local`` (same exposition, a
    fraction of the per-request cost); in multiprocess mode they are prometheus-client's own,
    whose values live in the shared files every worker's scrape sums.
    """

    def __init__(
        self,
        service_name: str,
        service_version: str | None,
        registry: CollectorRegistry,
        *,
        local: bool | None = None,
    ) -> None:
        """``local``: count in this process (default: unless in multiprocess mode)."""
        super().__init__(service_name, service_version, registry, local=local)
        self._route = BoundedLabel(500)
        self._known_routes = self._route.seen
        service = tuple(zip(_SERVICE_LABELS, self._service, strict=True))
        if self._local:
            self.duration: Any = LocalHistogram(
                _SERVER_DURATION, _SERVER_DURATION_HELP, _SERVER_LABELS, DURATION_BUCKETS,
                registry, service,
            )  # fmt: skip
            # In flight = started - finished; the histogram counts the finished ones anyway.
            self._started = LockFreeCounter()
            self._dropped = LockFreeCounter()
            self.active: Any = LocalGauge(
                _SERVER_ACTIVE, _SERVER_ACTIVE_HELP, service, registry, self._in_flight
            )
            return
        labels = (*_SERVER_LABELS, *_SERVICE_LABELS)
        self.duration = _histogram(_SERVER_DURATION, _SERVER_DURATION_HELP, labels, registry)
        self.active = _joined(
            Gauge(
                _SERVER_ACTIVE,
                _SERVER_ACTIVE_HELP,
                _SERVICE_LABELS,
                registry=None,
                multiprocess_mode="livesum",  # one number for the server: the sum over live workers
            ),
            registry,
        ).labels(*self._service)

    def request_started(self) -> None:
        """Count a request in flight."""
        if self._local:
            self._started.add()
        else:
            self.active.inc()

    def request_dropped(self) -> None:
        """A request counted in flight is no longer, and is not recorded (an excluded path)."""
        if self._local:
            self._dropped.add()
        else:
            self.active.dec()

    def request_finished(
        self,
        method: str,
        route: str | None,
        status_code: int,
        seconds: float,
        span: Span | None,
        error: BaseException | None = None,
    ) -> None:
        """Record one finished request; the route template only, never the raw path.

        ``error``: what the application raised, before its response or while sending it (a
        streamed body that fails after its first chunk went out with a 200).
        """
        if not route:
            route = UNMATCHED_ROUTE
        elif route not in self._known_routes:  # known routes pass as they are, without a call
            route = self._route(route)
        labels = (method, route, status_label(status_code), server_error_type(status_code, error))
        if not self._local:
            self.active.dec()
            self._child(self.duration, *labels).observe(seconds, exemplar_of(span))
            return
        self.duration.observe(labels, seconds, *exemplar_ids(span))

    def _in_flight(self) -> int:
        # first: a request finishing now is not negative
        finished = self.duration.observations + self._dropped.value()
        return int(self._started.value() - finished)


# Queue waits range from milliseconds to minutes.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_MESSAGING_LABELS = ("messaging_system", "messaging_destination_name")
_PUBLISH_DURATION = "messaging_client_operation_duration_seconds"
_PUBLISH_DURATION_HELP = "Duration of publishing a message."
_SENT = "messaging_client_sent_messages"
_SENT_HELP = "Messages published."
_PROCESS_DURATION = "messaging_process_duration_seconds"
_PROCESS_DURATION_HELP = "Duration of processing a consumed message (the handler)."
_CONSUMED = "messaging_client_consumed_messages"
_CONSUMED_HELP = "Messages consumed."
_FAILED = "tracekit_messaging_failed_messages"
_FAILED_HELP = "Consumed messages whose handler raised."
_QUEUE_WAIT = "tracekit_messaging_queue_wait_seconds"
_QUEUE_WAIT_HELP = (
    "Time a message spent queued: consumer start minus the publish time taken before the broker "
    "call."
)


class MessagingMetrics(_ServiceMetrics):
    """Publish and process durations, queue wait, and consumed/failed counters of one service.

    In a single process the histograms count in ``tracekit._metrics.local`` and the counters are
    read from them at scrape time (messages sent are those of a publish observed without an
    ``error_type``, a batch's every message; a message consumed is a process duration observed,
    a failed one a duration observed with an ``error_type``): one
    short locked update per observation instead of prometheus-client's locks, exemplar checks
    and counter increments. Multiprocess mode keeps prometheus-client's classes.
    """

    def __init__(
        self,
        service_name: str,
        service_version: str | None,
        registry: CollectorRegistry,
        *,
        local: bool | None = None,
    ) -> None:
        """``local``: count in this process (default: unless in multiprocess mode)."""
        super().__init__(service_name, service_version, registry, local=local)
        self._destination = BoundedLabel(200)
        self._known_destinations = self._destination.seen
        if self._local:
            self._local_families(registry)
        else:
            self._shared_families(registry)
            self._admit_recorded_destinations(recorded_now())

    def _local_families(self, registry: CollectorRegistry) -> None:
        service = tuple(zip(_SERVICE_LABELS, self._service, strict=True))
        with_error = (*_MESSAGING_LABELS, "error_type")
        publish = LocalHistogram(
            _PUBLISH_DURATION, _PUBLISH_DURATION_HELP, with_error, DURATION_BUCKETS, registry,
            service,
        )  # fmt: skip
        LocalCounter(
            _SENT, _SENT_HELP, _MESSAGING_LABELS, registry,
            lambda: _per_destination([s for s in publish.series_counts() if not s[0][2]]),
            service,
        )  # fmt: skip
        process = LocalHistogram(
            _PROCESS_DURATION, _PROCESS_DURATION_HELP, with_error, DURATION_BUCKETS, registry,
            service,
        )  # fmt: skip
        LocalCounter(
            _CONSUMED, _CONSUMED_HELP, _MESSAGING_LABELS, registry,
            lambda: _per_destination(process.series_counts()), service,
        )  # fmt: skip
        LocalCounter(
            _FAILED, _FAILED_HELP, with_error, registry,
            lambda: [series for series in process.series_counts() if series[0][2]], service,
        )  # fmt: skip
        wait = LocalHistogram(
            _QUEUE_WAIT, _QUEUE_WAIT_HELP, _MESSAGING_LABELS, QUEUE_WAIT_BUCKETS, registry, service
        )
        self.publish_duration: Any = publish
        self.process_duration: Any = process
        self.queue_wait: Any = wait

    def _shared_families(self, registry: CollectorRegistry) -> None:
        labels = (*_MESSAGING_LABELS, *_SERVICE_LABELS)
        with_error = (*_MESSAGING_LABELS, "error_type", *_SERVICE_LABELS)
        self.publish_duration = _histogram(
            _PUBLISH_DURATION, _PUBLISH_DURATION_HELP, with_error, registry
        )
        self.sent = _joined(Counter(_SENT, _SENT_HELP, labels, registry=None), registry)
        self.process_duration = _histogram(
            _PROCESS_DURATION, _PROCESS_DURATION_HELP, with_error, registry
        )
        self.consumed = _joined(Counter(_CONSUMED, _CONSUMED_HELP, labels, registry=None), registry)
        self.failed = _joined(Counter(_FAILED, _FAILED_HELP, with_error, registry=None), registry)
        self.queue_wait = _histogram(
            _QUEUE_WAIT, _QUEUE_WAIT_HELP, labels, registry, QUEUE_WAIT_BUCKETS
        )

    def _admit_recorded_destinations(self, recorded: RecordedSeries) -> None:
        """Count, against the cap, the destinations this service's workers have recorded in the
        shared directory (see ``_recorded_labels``)."""
        families = (_PUBLISH_DURATION, _PROCESS_DURATION, _QUEUE_WAIT)
        for labels in _recorded_labels(recorded, self._service, *families):
            self._destination.admit_recorded(labels.get("messaging_destination_name", ""))

    def published(
        self,
        system: str,
        destination: str,
        seconds: float,
        span: Span | None,
        error_type: str | None = None,
        messages: int = 1,
    ) -> None:
        """Record one publish of ``messages`` messages (a batch) that took ``seconds``; one that
        failed (``error_type``) sent none."""
        destination, error_type = self._bounded(destination, error_type)
        if self._local:
            labels = (system, destination, error_type)
            self.publish_duration.observe(labels, seconds, *exemplar_ids(span), counted=messages)
            return
        self._child(self.publish_duration, system, destination, error_type).observe(
            seconds, exemplar_of(span)
        )
        if not error_type:
            self._child(self.sent, system, destination).inc(messages)

    def processed(
        self,
        system: str,
        destination: str,
        seconds: float,
        span: Span | None,
        error_type: str | None = None,
    ) -> None:
        """Record one consumed message whose handler took ``seconds`` (its share of a batch's
        handler call) and failed if ``error_type``."""
        destination, error_type = self._bounded(destination, error_type)
        if self._local:
            labels = (system, destination, error_type)
            self.process_duration.observe(labels, seconds, *exemplar_ids(span))
            return
        self._child(self.process_duration, system, destination, error_type).observe(
            seconds, exemplar_of(span)
        )
        self._child(self.consumed, system, destination).inc()
        if error_type:
            self._child(self.failed, system, destination, error_type).inc()

    def _bounded(self, destination: str, error_type: str | None) -> tuple[str, str]:
        """The destination and error type as label values: bounded in number and length."""
        if destination not in self._known_destinations:
            destination = self._destination(destination)
        return destination, label_value(error_type) if error_type else ""

    def waited(self, system: str, destination: str, seconds: float, span: Span | None) -> None:
        """Record how long one message waited in its queue."""
        if destination not in self._known_destinations:
            destination = self._destination(destination)
        seconds = max(0.0, seconds)
        if self._local:
            self.queue_wait.observe((system, destination), seconds, *exemplar_ids(span))
            return
        self._child(self.queue_wait, system, destination).observe(seconds, exemplar_of(span))


def _per_destination(
    series: list[tuple[tuple[str, ...], int, float]],
) -> list[tuple[tuple[str, ...], int, float]]:
    """Counts of ``(system, destination, error_type)`` series summed per (system, destination),
    in order of first appearance, created when the first of them was."""
    totals: dict[tuple[str, ...], tuple[int, float]] = {}
    for labels, count, created in series:
        key = labels[:2]
        previous = totals.get(key)
        totals[key] = (count, created) if previous is None else (previous[0] + count, previous[1])
    return [(key, count, created) for key, (count, created) in totals.items()]


_CLIENT_LABELS = (
    "http_request_method",
    "server_address",
    "server_port",
    "http_response_status_code",
    "error_type",
    *_SERVICE_LABELS,
)
_CLIENT_DURATION = "http_client_request_duration_seconds"


class HttpClientMetrics(_ServiceMetrics):
    """Duration histogram of the outgoing HTTP requests of one service."""

    def __init__(
        self, service_name: str, service_version: str | None, registry: CollectorRegistry
    ) -> None:
        super().__init__(service_name, service_version, registry)
        # Hosts and ports come from URLs the application builds (webhooks may be user-supplied):
        # bound the destinations, an address and port together, so neither can multiply series.
        self._destination = BoundedLabel(MAX_CLIENT_DESTINATIONS)
        # The peer chooses its status code: bounded per destination, so that one answering
        # every call with another code multiplies only its own series, and by a few.
        self._statuses: dict[tuple[str, str], BoundedLabel] = {}
        self.duration = _histogram(
            _CLIENT_DURATION, "Duration of outgoing HTTP requests.", _CLIENT_LABELS, registry
        )
        if not self._local:
            self._admit_recorded_destinations(recorded_now())

    def _admit_recorded_destinations(self, recorded: RecordedSeries) -> None:
        """Count, against the caps, the destinations and each one's status codes that this
        service's workers have recorded in the shared directory (see ``_recorded_labels``)."""
        for labels in _recorded_labels(recorded, self._service, _CLIENT_DURATION):
            host, port = labels.get("server_address", ""), labels.get("server_port", "")
            if (host or port) and host != OTHER_VALUE:  # past the cap: both are _other
                self._destination.admit(destination_key(host, port))
            status = labels.get("http_response_status_code", "")
            if status:
                self._statuses_of(host, port).admit_recorded(status)

    def request_finished(
        self,
        attributes: Mapping[str, Any],
        status_code: int | None,
        error: BaseException | None,
        seconds: float,
        span: Span | None,
    ) -> None:
        """Record one outgoing request described by its CLIENT span ``attributes``."""
        host, port = self._bounded_destination(attributes)
        status = self._bounded_status(host, port, status_code)
        self._child(
            self.duration,
            str(attributes.get(semconv.HTTP_REQUEST_METHOD, semconv.OTHER_METHOD)),
            host,
            port,
            status,
            client_error_type(status_code, status, error),
        ).observe(seconds, exemplar_of(span))

    def _bounded_destination(self, attributes: Mapping[str, Any]) -> tuple[str, str]:
        """``server.address`` and ``server.port`` as labels; past the cap both are ``_other``."""
        host = label_value(attributes.get(semconv.SERVER_ADDRESS, ""))
        port = label_value(attributes.get(semconv.SERVER_PORT, ""))
        if not host and not port:
            return "", ""
        if self._destination.admit(destination_key(host, port)):
            return host, port
        return OTHER_VALUE, OTHER_VALUE

    def _bounded_status(self, host: str, port: str, status_code: int | None) -> str:
        """The status label; past the destination's first ``MAX_CLIENT_STATUS_CODES`` codes,
        ``_other``."""
        status = status_label(status_code)
        if not status or status == OTHER_VALUE:
            return status
        return status if self._statuses_of(host, port).admit(status) else OTHER_VALUE

    def _statuses_of(self, host: str, port: str) -> BoundedLabel:
        """The status codes seen from a destination (label values, ``_other`` included)."""
        statuses = self._statuses.get((host, port))
        if statuses is None:  # at most MAX_CLIENT_DESTINATIONS + 2 destinations: "" and _other
            statuses = self._statuses.setdefault(
                (host, port), BoundedLabel(MAX_CLIENT_STATUS_CODES)
            )
        return statuses


def _recorded_labels(
    recorded: RecordedSeries, service: tuple[str, str], *families: str
) -> list[dict[str, str]]:
    """The labels of the series of the histogram ``families`` that ``service`` has among
    ``recorded``.

    A cap on a label's values (``BoundedLabel``) counts in one process; the series of exited
    workers stay in the directory. Each worker gunicorn's ``--max-requests`` recycled admitted a
    whole cap of new values again, without end, until it counted these first.
    """
    wanted = dict(zip(_SERVICE_LABELS, service, strict=True))
    return [
        labels
        for family, labels in recorded
        if family in families and wanted.items() <= labels.items()
    ]


def _admit_recorded_in_child() -> None:
    """A worker forked from a process that had made its metrics (gunicorn ``--preload``, an app
    calling out as it starts) held only that process's count of each capped label: each worker
    ``--max-requests`` recycled admitted a whole cap of new values again. It counts the
    directory's now, as a worker that makes its metrics itself does.

    First, the files of an exited process that had this one's ID are folded: it has opened
    none yet (prometheus-client opens its own at its next value)."""
    fold_reused_files(forked=True)
    renew_locks()
    # (as the labels' locks: one a parent thread held, building a service's metrics at the fork)
    _ServiceMetrics._lock = threading.Lock()
    instances = [*MessagingMetrics._shared_instances(), *HttpClientMetrics._shared_instances()]
    if instances:
        recorded = recorded_now()  # read once for all of them: a directory of many files
        for instance in instances:
            instance._admit_recorded_destinations(recorded)


os.register_at_fork(after_in_child=_admit_recorded_in_child)
