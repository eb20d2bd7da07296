"""Prometheus RED metrics with exemplars that link to traces.

Every metric family takes a ``registry`` (default: prometheus-client's global one), so tests and
benchmarks build fresh registries. Names translate the OpenTelemetry semantic conventions to
Prometheus conventions; docs/metrics.md lists every name, label and unit.

Exposition: ``install`` (called by ``tracekit.init()``) serves the registry on
``TRACEKIT_METRICS_PORT`` (``tracekit._metrics.server``); ``asgi_metrics_app`` and
``wsgi_metrics_app`` mount it in an application instead. Both aggregate every worker's values when
``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import errno
import functools
import glob
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self, TypeVar

import wrapt
from opentelemetry.trace import Span
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tracekit import semconv
from tracekit._metrics.families import join
from tracekit._metrics.fold import fold_exited, fold_reused, process_exited, reading
from tracekit._metrics.local import (
    LocalCounter,
    LocalGauge,
    LocalHistogram,
    LockFreeCounter,
    local_values,
)
from tracekit._metrics.recorded import RecordedSeries, recorded_series
from tracekit._runtime.guard import guarded, report_once
from tracekit.config import ConfigError, signal_exporter

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from tracekit.config import Options

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

_log = logging.getLogger("tracekit")

# OpenTelemetry's recommended boundaries for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
UNMATCHED_ROUTE = "_unmatched"
OTHER_VALUE = "_other"
MAX_LABEL_LENGTH = 128
MAX_CLIENT_DESTINATIONS = 100  # distinct (server.address, server.port) pairs per process
MAX_CLIENT_STATUS_CODES = 20  # distinct status codes per destination and process
_SERVICE_LABELS = ("service_name", "service_version")
_SERVER_DURATION = "http_server_request_duration_seconds"
_SERVER_DURATION_HELP = "Duration of HTTP server requests."
_SERVER_LABELS = ("http_request_method", "http_route", "http_response_status_code", "error_type")
_SERVER_ACTIVE = "http_server_active_requests"
_SERVER_ACTIVE_HELP = "Number of HTTP server requests in flight."
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}
_SAMPLED = 0x01  # W3C trace-flags bit
_Family = TypeVar("_Family", Counter, Gauge, Histogram)


_every_bounded_label: weakref.WeakSet[BoundedLabel] = weakref.WeakSet()


class BoundedLabel:
    """Caps the distinct values one open-ended label takes in this process.

    The first ``limit`` values pass through (truncated to ``MAX_LABEL_LENGTH``); later new values
    collapse into ``OTHER_VALUE``, so a misbehaving caller can add at most one extra series.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()  # the values passed through so far (read-only to callers)
        self._lock = threading.Lock()
        _every_bounded_label.add(self)

    def renew_lock(self) -> None:
        """A new lock, in a forked child: one a thread of the parent held at the fork (a call
        it was counting) would stay held there for ever."""
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        if value in self.seen:  # the usual case; every member is already a safe label value
            return value
        value = _label_value(value)
        return value if self.admit(value) else OTHER_VALUE

    def admit_recorded(self, value: str) -> None:
        """Count ``value``, a label value already recorded (by another process), against the
        limit; ``OTHER_VALUE`` is no value of its own."""
        if value != OTHER_VALUE:
            self.admit(value)

    def admit(self, key: str) -> bool:
        """Whether ``key`` is one of the first ``limit`` distinct keys (remembered if it is)."""
        if key in self.seen:
            return True
        with self._lock:
            if len(self.seen) >= self.limit:
                return False
            self.seen.add(key)
        return True


def _label_value(value: object) -> str:
    """``value`` as text cut to ``MAX_LABEL_LENGTH`` characters, every control character (and
    what UTF-8 cannot encode) read as ``?``.

    Exposition writes text: a value of another type (a Redis stream key as ``bytes``) or one
    holding a lone surrogate (bytes decoded with ``surrogateescape``: a queue name from the
    environment or a file) failed every later scrape of the process, every metric with it.
    Exposition escapes only backslash, quote and newline: a control character (a channel a
    publisher named under a pattern subscription) went out raw, to the terminal of whoever
    read the scrape, and a carriage return split the line for readers of universal newlines.
    Printed text Python calls unprintable (a no-break space, an emoji's zero-width joiner, a
    character newer than its Unicode tables) is kept: its series keeps its name.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    value = value[:MAX_LABEL_LENGTH]
    if value.isprintable():  # the usual case; a lone surrogate is not printable
        return value
    return _UNSAFE_IN_LABEL.sub("?", value)


# C0 and C1 controls and DEL (terminal escapes, carriage return), lone surrogates, the line and
# paragraph separators that str.splitlines breaks at, and bidirectional overrides and isolates
# (which make a terminal show the line in another order than it is written)
_UNSAFE_IN_LABEL = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


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


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """The exemplar labels (trace_id, span_id) of ``span`` under the exemplar filter (by default
    only a sampled span has them), else None."""
    trace_id, span_id = _exemplar_ids(span)
    if not trace_id:
        return None
    return {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}


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
            _fold_reused_files()

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
        labels = (method, route, _status_label(status_code), _server_error_type(status_code, error))
        if not self._local:
            self.active.dec()
            self._child(self.duration, *labels).observe(seconds, exemplar_of(span))
            return
        self.duration.observe(labels, seconds, *_exemplar_ids(span))

    def _in_flight(self) -> int:
        # first: a request finishing now is not negative
        finished = self.duration.observations + self._dropped.value()
        return int(self._started.value() - finished)


# Queue waits range from milliseconds to minutes.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_MESSAGING_LABELS = ("messaging_system", "messaging_destination_name")


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
            self._admit_recorded_destinations(_recorded_now())

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
            self.publish_duration.observe(labels, seconds, *_exemplar_ids(span), counted=messages)
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
            self.process_duration.observe(labels, seconds, *_exemplar_ids(span))
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
        return destination, _label_value(error_type) if error_type else ""

    def waited(self, system: str, destination: str, seconds: float, span: Span | None) -> None:
        """Record how long one message waited in its queue."""
        if destination not in self._known_destinations:
            destination = self._destination(destination)
        seconds = max(0.0, seconds)
        if self._local:
            self.queue_wait.observe((system, destination), seconds, *_exemplar_ids(span))
            return
        self._child(self.queue_wait, system, destination).observe(seconds, exemplar_of(span))


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


# Which measurements carry an exemplar: OTEL_METRICS_EXEMPLAR_FILTER, as OpenTelemetry's SDKs read
# it (``install`` sets it at init): ``trace_based`` (the default) those made under a sampled span,
# ``always_on`` those made under any span (its trace may never be exported), ``always_off`` none.
_EXEMPLAR_FILTER_ENV = "OTEL_METRICS_EXEMPLAR_FILTER"
_EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
_exemplar_filter: str | None = None  # None: no init has read it (a middleware used without one)


def _exemplar_ids(span: Span | None) -> tuple[int, int]:
    """``(trace_id, span_id)`` of the span a measurement links to under the exemplar filter,
    else ``(0, 0)``: no exemplar (an invalid span's IDs are 0 too)."""
    chosen = _exemplar_filter or _exemplar_filter_without_init()
    if span is None or chosen == "always_off":
        return 0, 0
    span_context = span.get_span_context()
    if not span_context.trace_flags & _SAMPLED and chosen == "trace_based":
        return 0, 0
    return span_context.trace_id, span_context.span_id


def _set_exemplar_filter(environ: Mapping[str, str]) -> None:
    """Read ``OTEL_METRICS_EXEMPLAR_FILTER``; a value the SDK would refuse stops ``init``."""
    global _exemplar_filter
    _exemplar_filter = _exemplar_filter_in(environ)


def _exemplar_filter_without_init() -> str:
    """The filter for a middleware recording metrics without ``init`` (its own ``registry``):
    read from the environment at its first measurement, as the middleware reads its other
    options. A value init would refuse cannot stop a request: one warning, and the default."""
    global _exemplar_filter
    try:
        _exemplar_filter = _exemplar_filter_in(os.environ)
    except ConfigError as error:
        _log.warning("tracekit: %s; using %s", error, _EXEMPLAR_FILTERS[0])
        _exemplar_filter = _EXEMPLAR_FILTERS[0]
    return _exemplar_filter


def _exemplar_filter_in(environ: Mapping[str, str]) -> str:
    value = environ.get(_EXEMPLAR_FILTER_ENV, "").strip().lower() or _EXEMPLAR_FILTERS[0]
    if value not in _EXEMPLAR_FILTERS:
        raise ConfigError(
            f"{_EXEMPLAR_FILTER_ENV}: {value[:40]!r} is not one of {', '.join(_EXEMPLAR_FILTERS)}"
        )
    return value


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
            self._admit_recorded_destinations(_recorded_now())

    def _admit_recorded_destinations(self, recorded: RecordedSeries) -> None:
        """Count, against the caps, the destinations and each one's status codes that this
        service's workers have recorded in the shared directory (see ``_recorded_labels``)."""
        for labels in _recorded_labels(recorded, self._service, _CLIENT_DURATION):
            host, port = labels.get("server_address", ""), labels.get("server_port", "")
            if (host or port) and host != OTHER_VALUE:  # past the cap: both are _other
                self._destination.admit(_destination_key(host, port))
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
            _client_error_type(status_code, status, error),
        ).observe(seconds, exemplar_of(span))

    def _bounded_destination(self, attributes: Mapping[str, Any]) -> tuple[str, str]:
        """``server.address`` and ``server.port`` as labels; past the cap both are ``_other``."""
        host = _label_value(attributes.get(semconv.SERVER_ADDRESS, ""))
        port = _label_value(attributes.get(semconv.SERVER_PORT, ""))
        if not host and not port:
            return "", ""
        if self._destination.admit(_destination_key(host, port)):
            return host, port
        return OTHER_VALUE, OTHER_VALUE

    def _bounded_status(self, host: str, port: str, status_code: int | None) -> str:
        """The status label; past the destination's first ``MAX_CLIENT_STATUS_CODES`` codes,
        ``_other``."""
        status = _status_label(status_code)
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


def _destination_key(host: str, port: str) -> str:
    """One key per (host, port) pair, whatever characters either holds."""
    return f"{len(host)}:{host}{port}"


def _server_error_type(status_code: int, error: BaseException | None) -> str:
    """OpenTelemetry's ``error.type`` of a server request: the exception's class when the
    application raised, else a 5xx status code (a 4xx is the client's error), else empty."""
    if error is not None:
        return type(error).__qualname__[:MAX_LABEL_LENGTH]
    return _status_label(status_code) if status_code >= 500 else ""


def _client_error_type(status_code: int | None, status: str, error: BaseException | None) -> str:
    """OpenTelemetry's ``error.type`` of a client call: the exception's class when the call
    raised, else the status label (``status``) of a 4xx or 5xx answer, else empty."""
    if error is not None:
        return type(error).__qualname__[:MAX_LABEL_LENGTH]
    if status_code and status_code >= 400:
        return status
    return ""


def _status_label(status_code: int | None) -> str:
    """The code as a label; empty when there is none, ``_other`` outside HTTP's 100-599 (an
    application or a peer may set any number: one series each would be unbounded)."""
    return _STATUS_LABELS.get(status_code, OTHER_VALUE) if status_code else ""


# --- exposition -------------------------------------------------------------------------------

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsServer(NamedTuple):
    """The exposition server ``install`` started (``tracekit._metrics.server``) and its thread."""

    httpd: Any
    thread: threading.Thread

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving (or waiting to serve: ``tracekit._metrics.server.Standby``) and release
        the port.

        In a process forked after ``install`` (gunicorn ``--preload``, multiprocessing's fork)
        the serving thread stayed in the parent: asking it to stop would wait for ever, so the
        child only closes its copy of the socket.
        """
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=timeout_s)


# The variable's former name, which prometheus-client still honours (with a deprecation
# warning): its values go to the shared files under either name, so the scrape must read them.
_FORMER_MULTIPROC_DIR_ENV = "prometheus_multiproc_dir"


def multiprocess_enabled() -> bool:
    """True when prometheus-client's multiprocess mode is configured for this process."""
    return bool(_multiprocess_directory())


def _multiprocess_directory() -> str:
    """The shared directory of multiprocess mode, as prometheus-client reads it ('' if unset).

    prometheus-client copies the former name into ``PROMETHEUS_MULTIPROC_DIR`` only as a
    process creates its first value: read before (at ``init``, in gunicorn's master), the new
    name alone said single-process mode, and scrapes served one worker's values of the files.
    """
    return os.environ.get(MULTIPROC_DIR_ENV) or os.environ.get(_FORMER_MULTIPROC_DIR_ENV, "")


def exposition_registry(registry: CollectorRegistry | None = None) -> Collector:
    """What to serve: ``registry``, or in multiprocess mode every worker's files summed."""
    if registry is not None:
        return registry
    if not multiprocess_enabled():
        return REGISTRY
    if local_values():
        _warn_set_too_late()
    combined = CollectorRegistry()
    combined.register(_WorkerFiles())
    return combined


_set_too_late_warned = False


def _warn_set_too_late() -> None:
    """prometheus-client chooses where values live when it is imported: the variable set later
    (in gunicorn.conf.py after an import, in the app module) leaves them in each process, and
    the scrape, which reads the directory, shows none of them. Said once per process."""
    global _set_too_late_warned
    if _set_too_late_warned:
        return
    _set_too_late_warned = True
    _log.warning(
        "tracekit: %s was set after prometheus_client was imported in this process: its "
        "metrics stay in this process and scrapes of the shared directory miss them; set %s "
        "in the environment the server starts with",
        MULTIPROC_DIR_ENV,
        MULTIPROC_DIR_ENV,
    )


class _WorkerFiles(Collector):
    """Every worker's files summed, read afresh on every scrape.

    A ``PROMETHEUS_MULTIPROC_DIR`` that is not a directory (not created yet, a typo) gives an
    empty scrape and one warning, not an exception where the application mounts or serves the
    metrics: the application must start. A directory created later is read from then on.

    A file that cannot be read is left out (one warning each), not the whole scrape:
    prometheus-client creates a worker's file empty and sizes it after, and a worker killed in
    between (or a scrape at that moment) made every scrape of the server fail. Such a file stays
    left out until it changes, so later scrapes merge the others once, as usual.

    Each scrape first folds the files of exited workers into one per kind
    (``tracekit._metrics.fold``): a worker recycled by gunicorn's ``--max-requests`` leaves no
    file of its own for every later scrape to read.
    """

    def __init__(self) -> None:
        self._unreadable: set[_FileStamp] = set()  # files found unreadable, as they were then

    def collect(self) -> Iterable[Metric]:
        """The samples of every worker's readable files, summed."""
        directory = _multiprocess_directory()
        if not os.path.isdir(directory):
            error = NotADirectoryError(f"{MULTIPROC_DIR_ENV} is not set or not a directory")
            report_once(f"metrics exposition of {MULTIPROC_DIR_ENV}", error)
            return []
        with reading(directory, fold=True):  # exited workers' files folded first
            return self._merged(directory)

    def _merged(self, directory: str) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        paths = [
            path  # (the directory's name escaped: "metrics[blue]" is no pattern)
            for path in glob.glob(os.path.join(glob.escape(directory), "*.db"))
            if not _of_dead_process(path)
        ]
        if self._unreadable:  # (a file removed or changed since is forgotten, or read again)
            stamps = {path: _stamp(path) for path in paths}
            self._unreadable &= set(stamps.values())
            paths = [path for path in paths if stamps[path] not in self._unreadable]
        merge = MultiProcessCollector.merge
        try:
            metrics: Iterable[Metric] = merge(paths)  # type: ignore[no-untyped-call]
            return metrics
        except Exception:  # noqa: S110 (a file that cannot be read: found one by one, below)
            pass
        readable = []
        for path in paths:
            # Stamped before it is read: a worker sizing its file as it is read makes it another
            # file at the next scrape, read again, not one stamped as it became, left out for good.
            stamp = _stamp(path)
            if _readable(path):
                readable.append(path)
            else:
                self._unreadable.add(stamp)
        metrics = merge(readable)  # type: ignore[no-untyped-call]
        return metrics


# path, inode, size, modification time (ns): a file replaced by another (a new inode) of the same
# size, written within the same tick of the file system's coarse clock, is another file.
_FileStamp = tuple[str, int, int, int]


def _stamp(path: str) -> _FileStamp:
    try:
        found = os.stat(path)
    except OSError:
        return (path, -1, -1, -1)
    return (path, found.st_ino, found.st_size, found.st_mtime_ns)


def _recorded_now() -> RecordedSeries:
    """The histogram series in the multiprocess files (``tracekit._metrics.recorded``); none
    when they cannot be read."""
    directory = _multiprocess_directory()
    if not os.path.isdir(directory):
        error = NotADirectoryError(f"{MULTIPROC_DIR_ENV} is not set or not a directory")
        report_once(f"metrics exposition of {MULTIPROC_DIR_ENV}", error)
        return []
    try:
        return recorded_series(directory)
    except Exception as error:
        report_once("reading the metrics files' labels", error)
        return []


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


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")


def _of_dead_process(path: str) -> bool:
    """A live gauge's file whose process has gone (prometheus-client's ``mark_process_dead``
    removes those, but only where the server calls it: uvicorn ``--workers`` has no hook): its
    requests in flight stayed in ``http_server_active_requests`` for ever."""
    match = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(path))
    return match is not None and process_exited(int(match[1]))


def _readable(path: str) -> bool:
    from prometheus_client.multiprocess import MultiProcessCollector

    try:
        MultiProcessCollector.merge([path])  # type: ignore[no-untyped-call]
    except Exception as error:
        report_once(f"reading metrics file {os.path.basename(path)!r}", error)
        return False
    return True


class MetricsASGIApp:
    """The metrics as an ASGI app object (not a function), so that Starlette's ``Route`` serves it
    at exactly ``/metrics``; a ``Mount`` would answer ``GET /metrics`` with a redirect."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one scrape."""
        await self._app(scope, receive, send)


def asgi_metrics_app(registry: CollectorRegistry | None = None) -> MetricsASGIApp:
    """An ASGI app serving the metrics: ``Route("/metrics", asgi_metrics_app())``."""
    from prometheus_client import make_asgi_app

    return MetricsASGIApp(make_asgi_app(exposition_registry(registry)))


def wsgi_metrics_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """A WSGI app serving the metrics (mount it at ``/metrics``)."""
    from prometheus_client import make_wsgi_app

    app: Callable[..., Any] = make_wsgi_app(exposition_registry(registry))
    return app


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges and fold its other files into those of the exited
    workers (multiprocess mode; call from gunicorn's child_exit)."""
    directory = _multiprocess_directory()
    if directory:
        from prometheus_client import multiprocess

        try:
            # (named: prometheus-client looks only under the new name, unset here under the former)
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except OSError as error:  # (raised in child_exit, it stops gunicorn's master)
            _unmarked(error)
        if os.path.isdir(directory):
            fold_exited(directory)


def _unmarked(error: OSError) -> None:
    """prometheus-client lists a dead process's live gauge files, then removes them: one that
    a scrape's fold removed in between (the process is gone for it too) is no error; the fold
    removes the others."""
    if not isinstance(error, FileNotFoundError):
        report_once("removing a dead process's live gauges", error)


def install(options: Options, resource: Resource | None = None) -> MetricsServer | None:
    """Serve metrics on ``options.metrics_port`` (0: don't) of ``options.metrics_host`` from a
    daemon thread.

    Returns the server (``tracekit.init()``'s runtime keeps it and closes it at shutdown), or
    None when nothing is served.
    """
    _set_exemplar_filter(os.environ)
    _fold_reused_files()
    if not _port_wanted(options):
        return None
    from tracekit._metrics.server import serve

    registry = exposition_registry()
    try:
        server = MetricsServer(*serve(options.metrics_port, registry, options.metrics_host))
    except OSError as error:
        return _stand_by(options, registry, error)
    _serving.clear()
    _serving.append((server, options.metrics_port))
    return server


def _port_wanted(options: Options) -> bool:
    """Whether to open the metrics port: not in correlation-only mode, not with port 0, and not
    when ``OTEL_METRICS_EXPORTER`` says ``none``, which an OpenTelemetry user sets to turn
    metrics export off (the Prometheus port is tracekit's only metrics exporter)."""
    exporter_off = signal_exporter("METRICS", "prometheus") == "none"
    return not (options.correlation_only or options.metrics_port == 0 or exporter_off)


def _stand_by(options: Options, registry: Collector, error: OSError) -> MetricsServer | None:
    """Wait for a port in use (``tracekit._metrics.server.Standby``): its holder may go, another
    worker, or the old worker of a gunicorn reload, which starts the new one first; then this
    process serves it. Any other refusal (a port below 1024, an address not of this host) would
    refuse it for ever: nothing waits."""
    from tracekit._metrics.server import Standby

    in_use = error.errno == errno.EADDRINUSE
    expected = in_use and multiprocess_enabled()  # another worker serves them all
    _log.log(
        logging.DEBUG if expected else logging.WARNING,
        "tracekit: metrics port %d unavailable (%s); not serving metrics from this process%s",
        options.metrics_port,
        error.strerror or type(error).__name__,
        _unserved_remedy(expected, in_use),
    )
    if not in_use:
        return None
    standby = Standby(options.metrics_port, registry, options.metrics_host)
    return MetricsServer(standby, standby.thread)


def _unserved_remedy(expected: bool, in_use: bool) -> str:
    """The end of the port-unavailable warning. A port in use outside multiprocess mode is held
    by another service on the same machine (a gateway and the app it calls, both on the default
    port), which wants a port of its own, or by a sibling worker of the same server (gunicorn
    ``-w 4``), whose scrapes then show its own counts only: a fraction of the traffic, which
    nothing else reveals."""
    if not in_use:
        return ""
    if expected:
        return " until it frees"
    return (
        " until it frees; if another service holds it, give this one TRACEKIT_METRICS_PORT=PORT"
        " (0 for none); if a worker of this server holds it, its scrapes miss this worker's "
        f"metrics: set {MULTIPROC_DIR_ENV} (docs/metrics.md)"
    )


# The server this process started, and its port: a process forked from here (gunicorn
# --preload, Celery prefork with init in the tasks module, multiprocessing) does its work with
# metrics nobody serves. The serving thread stays in the parent and answers with the parent's
# values; the children's counts never reach a scrape. Said once, in the parent, at the first fork.
_serving: list[tuple[MetricsServer, int]] = []
_forked_warned = False


def _before_fork() -> None:
    global _forked_warned
    if _forked_warned or not _serving or multiprocess_enabled():
        return
    server, port = _serving[0]
    if not server.thread.is_alive():  # closed since (tracekit.shutdown())
        return
    _forked_warned = True
    _log.warning(
        "tracekit: this process serves metrics on port %d and forked a child: the child's "
        "metrics are not served (scrapes get this process's values only); set %s for forked "
        "workers (gunicorn --preload, Celery prefork), or call tracekit.init() after the fork",
        port,
        MULTIPROC_DIR_ENV,
    )


# The process whose reused files were folded (``_fold_reused_files``): once per process.
_reused_folded_in = 0


def _fold_reused_files(forked: bool = False) -> None:
    """Fold the files in the shared directory named with this process's ID that it has not
    opened: an exited process's of the same ID (``tracekit._metrics.fold.fold_reused``). Once,
    as the process starts to record: at its fork (``forked``), or as it calls ``init`` or makes
    its first metrics."""
    global _reused_folded_in
    directory = _multiprocess_directory()
    if _reused_folded_in == os.getpid() or local_values() or not os.path.isdir(directory):
        return
    _reused_folded_in = os.getpid()
    fold_reused(directory, forked)


def _admit_recorded_in_child() -> None:
    """A worker forked from a process that had made its metrics (gunicorn ``--preload``, an app
    calling out as it starts) held only that process's count of each capped label: each worker
    ``--max-requests`` recycled admitted a whole cap of new values again. It counts the
    directory's now, as a worker that makes its metrics itself does.

    First, the files of an exited process that had this one's ID are folded: it has opened
    none yet (prometheus-client opens its own at its next value)."""
    _fold_reused_files(forked=True)
    for label in list(_every_bounded_label):
        label.renew_lock()
    # (as the labels' locks: one a parent thread held, building a service's metrics at the fork)
    _ServiceMetrics._lock = threading.Lock()
    instances = [*MessagingMetrics._shared_instances(), *HttpClientMetrics._shared_instances()]
    if instances:
        recorded = _recorded_now()  # read once for all of them: a directory of many files
        for instance in instances:
            instance._admit_recorded_destinations(recorded)


os.register_at_fork(before=_before_fork, after_in_child=_admit_recorded_in_child)


# --- reloaders and supervisors -------------------------------------------------------------------
# ``uvicorn.run("main:app", reload=True)`` below an ``init()`` at the top of main.py, and
# ``fastapi dev`` (which imports the app's module to find the app), run ``init`` in the
# supervising process too. It serves no request, yet it held the metrics port: the worker it
# starts, the one that counts the requests, waited for the port for ever, and scrapes showed the
# supervisor's empty metrics. werkzeug's reloader (``flask run --debug``, ``app.run(debug=True)``)
# does the same: the reloading process loads the app, then starts the child that serves it; and
# Django's autoreloader (``manage.py runserver``) with an ``init()`` in settings.py or manage.py.
_SUPERVISORS = (
    ("uvicorn.supervisors.basereload", "BaseReload.run"),  # --reload
    ("uvicorn.supervisors.multiprocess", "Multiprocess.run"),  # --workers N
    ("werkzeug._reloader", "ReloaderLoop.restart_with_reloader"),  # flask run --debug
    ("django.utils.autoreload", "restart_with_reloader"),  # manage.py runserver
)


@guarded(None)
def _hook_supervisor(start_workers: str, module: ModuleType) -> None:
    wrapt.wrap_function_wrapper(module, start_workers, _run_without_metrics_port)


def _run_without_metrics_port(
    wrapped: Callable[..., Any], _: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Free the metrics port before the supervisor starts its workers, for one of them."""
    _release_port()
    return wrapped(*args, **kwargs)


@guarded(None)
def _release_port() -> None:
    from tracekit._runtime import state

    runtime = state.current()
    if runtime is None or runtime.metrics_server is None:
        return
    runtime.stop_serving_metrics()
    _log.debug("tracekit: metrics port freed for the workers of a reloader or supervisor")


for _module, _start_workers in _SUPERVISORS:
    wrapt.register_post_import_hook(functools.partial(_hook_supervisor, _start_workers), _module)
