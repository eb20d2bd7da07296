"""Prometheus RED metrics with exemplars that link to traces.

Every metric family takes a ``registry`` (default: prometheus-client's global one), so tests and
benchmarks build fresh registries. Names translate the OpenTelemetry semantic conventions to
Prometheus conventions; docs/metrics.md lists every name, label and unit.
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from opentelemetry.trace import Span
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# OpenTelemetry's recommended boundaries for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
UNMATCHED_ROUTE = "_unmatched"


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """The exemplar labels (trace_id, span_id) of a sampled span, else None."""
    if span is None:
        return None
    span_context = span.get_span_context()
    if not span_context.trace_flags.sampled:
        return None
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


class HttpServerMetrics:
    """Request duration histogram and in-flight gauge of one service's HTTP server.

    Use ``HttpServerMetrics.get(...)``: a registry holds each metric family once, however many
    middleware instances share it.
    """

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, HttpServerMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(
        cls,
        service_name: str,
        service_version: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> HttpServerMetrics:
        """The metrics of ``registry`` (default: the global one), created on first use."""
        registry = REGISTRY if registry is None else registry
        with cls._lock:
            if registry not in cls._instances:
                cls._instances[registry] = cls(service_name, service_version, registry)
            return cls._instances[registry]

    def __init__(
        self,
        service_name: str,
        service_version: str | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._service = (service_name, service_version or "")
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            (
                "http_request_method",
                "http_route",
                "http_response_status_code",
                "service_name",
                "service_version",
            ),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            "http_server_active_requests",
            "Number of HTTP server requests in flight.",
            ("service_name", "service_version"),
            registry=registry,
        ).labels(*self._service)

    def request_started(self) -> None:
        """Count a request in flight."""
        self.active.inc()

    def request_finished(
        self, method: str, route: str | None, status_code: int, seconds: float, span: Span | None
    ) -> None:
        """Record one finished request; the route template only, never the raw path."""
        self.active.dec()
        self.duration.labels(
            method,
            route or UNMATCHED_ROUTE,
            str(status_code) if status_code else "",
            *self._service,
        ).observe(seconds, exemplar_of(span))


# Queue waits range from milliseconds to minutes.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_SERVICE_LABELS = ("service_name", "service_version")
_MESSAGING_LABELS = ("messaging_system", "messaging_destination_name")


class MessagingMetrics:
    """Publish and process durations, queue wait, and consumed/failed counters of one service."""

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, MessagingMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(
        cls,
        service_name: str,
        service_version: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> MessagingMetrics:
        """The metrics of ``registry`` (default: the global one), created on first use."""
        registry = REGISTRY if registry is None else registry
        with cls._lock:
            if registry not in cls._instances:
                cls._instances[registry] = cls(service_name, service_version, registry)
            return cls._instances[registry]

    def __init__(
        self, service_name: str, service_version: str | None, registry: CollectorRegistry
    ) -> None:
        self._service = (service_name, service_version or "")
        labels = (*_MESSAGING_LABELS, *_SERVICE_LABELS)
        self.publish_duration = Histogram(
            "messaging_client_operation_duration_seconds",
            "Duration of publishing a message.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.sent = Counter(
            "messaging_client_sent_messages", "Messages published.", labels, registry=registry
        )
        self.process_duration = Histogram(
            "messaging_process_duration_seconds",
            "Duration of processing a consumed message (the handler).",
            (*labels, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.consumed = Counter(
            "messaging_client_consumed_messages", "Messages consumed.", labels, registry=registry
        )
        self.failed = Counter(
            "tracekit_messaging_failed_messages",
            "Consumed messages whose handler raised.",
            (*labels, "error_type"),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "tracekit_messaging_queue_wait_seconds",
            "Time a message spent queued: consumer start minus publish end.",
            labels,
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )

    def published(self, system: str, destination: str, seconds: float, span: Span | None) -> None:
        """Record one publish."""
        self.publish_duration.labels(system, destination, *self._service).observe(
            seconds, exemplar_of(span)
        )
        self.sent.labels(system, destination, *self._service).inc()

    def processed(
        self,
        system: str,
        destination: str,
        seconds: float,
        span: Span | None,
        error_type: str | None = None,
    ) -> None:
        """Record one consumed message whose handler took ``seconds`` (and failed if error_type)."""
        self.process_duration.labels(system, destination, *self._service, error_type or "").observe(
            seconds, exemplar_of(span)
        )
        self.consumed.labels(system, destination, *self._service).inc()
        if error_type:
            self.failed.labels(system, destination, *self._service, error_type).inc()

    def waited(self, system: str, destination: str, seconds: float, span: Span | None) -> None:
        """Record how long one message waited in its queue."""
        self.queue_wait.labels(system, destination, *self._service).observe(
            max(0.0, seconds), exemplar_of(span)
        )
