"""Requests with a known ground truth, built as real traces and sent through a real store.

Each service has its own OpenTelemetry SDK ``TracerProvider`` (its own resource: service.name,
service.version, host.name), tracekit's ``CorrelationSpanProcessor`` stamping the correlation ID
the request carries, and tracekit's ``StoreSpanExporter`` writing into one ``Store`` file
(batched, flushed before reading), as services exporting with ``TRACEKIT_EXPORTER=store`` do.
Context crosses services the way it does on the wire: the caller's span is injected into W3C
``traceparent`` headers and the receiver extracts its parent from them; a batch consumer starts a
new trace linked to each message.

What is not real is the clock: spans get explicit start and end times (milliseconds from the
request's origin, plus the skew of the service's host), so every expected number can be worked
out by hand. ``tracekit diff`` then reads the store like any other.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracekit import correlation
from tracekit._runtime.setup import CorrelationSpanProcessor
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit.store.exporter import StoreSpanExporter

MS = 1_000_000
W3C = TraceContextTextMapPropagator()
_KINDS = {"SERVER": SpanKind.SERVER, "CLIENT": SpanKind.CLIENT, "PRODUCER": SpanKind.PRODUCER,
          "CONSUMER": SpanKind.CONSUMER, "INTERNAL": SpanKind.INTERNAL}  # fmt: skip


class PrivateIdGenerator(IdGenerator):
    """Random ids from a generator of its own.

    The SDK's default draws from the global ``random``, which hypothesis reseeds for every
    example: the same ids would come back, and the store skips a span it already holds.
    """

    def __init__(self) -> None:
        self._random = random.SystemRandom()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


def recent_origin(minutes_ago: float = 10) -> int:
    """A request start inside ``tracekit diff``'s default window (--since 1h)."""
    return time.time_ns() - int(minutes_ago * 60e9)


class Deployment:
    """One provider per (service, version, host), all exporting into ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.exporter = StoreSpanExporter(store=store)
        self.providers: dict[tuple[str, str, str], TracerProvider] = {}
        self._ids = itertools.count(1)

    def tracer(self, service: str, version: str, host: str) -> trace.Tracer:
        """The tracer of one service instance (made on first use)."""
        key = (service, version, host)
        if key not in self.providers:
            resource = Resource.create(
                {"service.name": service, "service.version": version, "host.name": host}
            )
            provider = TracerProvider(resource=resource, id_generator=PrivateIdGenerator())
            provider.add_span_processor(CorrelationSpanProcessor())
            batch = BatchSpanProcessor(self.exporter, max_export_batch_size=512)
            provider.add_span_processor(batch)
            self.providers[key] = provider
        return self.providers[key].get_tracer("tests.diff")

    def request(
        self, correlation_id: str | None = None, *, origin_ns: int | None = None,
        versions: dict[str, str] | None = None, hosts: dict[str, str] | None = None,
        skew_ms: dict[str, float] | None = None,
    ) -> Request:  # fmt: skip
        """A new request: its own correlation ID, start, versions, hosts and clock skews."""
        cid = correlation_id or f"req-{next(self._ids):05d}"
        return Request(self, cid, origin_ns or recent_origin(), dict(versions or {}),
                       dict(hosts or {}), dict(skew_ms or {}))  # fmt: skip

    def flush(self) -> None:
        """Export everything started so far into the store (as services do every few seconds)."""
        for provider in self.providers.values():
            assert provider.force_flush(30_000)

    def shutdown(self) -> None:
        """Flush and stop every provider."""
        for provider in self.providers.values():
            provider.shutdown()


@dataclass
class Request:
    """Spans of one request, started and ended at given milliseconds from its origin."""

    deployment: Deployment
    correlation_id: str
    origin_ns: int
    versions: dict[str, str]
    hosts: dict[str, str]
    skew_ms: dict[str, float]
    spans: list[Span] = field(default_factory=list)

    def at(self, service: str, ms: float) -> int:
        """Unix nanoseconds of ``ms`` as the host of ``service`` stamps it (its skew added)."""
        return self.origin_ns + int((ms + self.skew_ms.get(service, 0.0)) * MS)

    def span(
        self, service: str, name: str, kind: str, start: float, end: float,
        parent: otel_context.Context | None = None, *, attrs: dict[str, object] | None = None,
        links: Sequence[Span] = (), error: str | None = None,
    ) -> Span:  # fmt: skip
        """Start and end one span of ``service``; ``parent`` is the context it continues."""
        tracer = self.deployment.tracer(
            service, self.versions.get(service, "1.0"), self.hosts.get(service, f"{service}-host")
        )
        token = correlation.set_correlation_id(self.correlation_id)
        try:
            span = tracer.start_span(
                name, context=parent or otel_context.Context(), kind=_KINDS[kind],
                attributes=attrs or {}, links=[Link(s.get_span_context()) for s in links],
                start_time=self.at(service, start),
            )  # fmt: skip
        finally:
            correlation.reset_correlation_id(token)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=self.at(service, end))
        assert isinstance(span, Span)
        self.spans.append(span)
        return span

    def entry(
        self, service: str, route: str, start: float, end: float, method: str = "POST"
    ) -> Span:
        """The SERVER span where the request entered (its client is not traced)."""
        attrs = {"http.route": route, "http.request.method": method, "url.path": route,
                 "http.response.status_code": 200}  # fmt: skip
        return self.span(service, f"{method} {route}", "SERVER", start, end, attrs=attrs)

    def call(
        self, caller: Span, service: str, route: str, start: float, end: float, *,
        method: str = "GET", lag: float = 1.0, status: int = 200, resend: int | None = None,
        path: str | None = None, error: str | None = None,
    ) -> tuple[Span, Span]:  # fmt: skip
        """An HTTP call: the caller's CLIENT span (named by method) and the SERVER it reached;
        a status of 500 or more fails both, with ``error`` or ``HTTP <status>`` as message."""
        concrete = path or route.replace("{", "").replace("}", "-42")
        error = (error or f"HTTP {status}") if status >= 500 else None
        client_attrs: dict[str, object] = {
            "http.request.method": method, "url.full": f"http://{service}:8080{concrete}",
            "http.response.status_code": status,
        }  # fmt: skip
        if resend is not None:
            client_attrs["http.request.resend_count"] = resend
        client = self.span(_service(caller), method, "CLIENT", start, end, _context(caller),
                           attrs=client_attrs, error=error)  # fmt: skip
        server_attrs = {"http.route": route, "http.request.method": method, "url.path": concrete,
                        "http.response.status_code": status}  # fmt: skip
        server = self.span(service, f"{method} {route}", "SERVER", start + lag, end - lag,
                           _carried(client), attrs=server_attrs, error=error)  # fmt: skip
        return client, server

    def db(self, caller: Span, statement: str, start: float, end: float) -> Span:
        """A database call (a CLIENT span nothing answers with a span of its own)."""
        attrs = {"db.system": "postgresql", "db.query.text": statement}
        return self.span(_service(caller), statement, "CLIENT", start, end, _context(caller),
                         attrs=attrs)  # fmt: skip

    def publish(self, caller: Span, destination: str, start: float, end: float) -> Span:
        """A PRODUCER span sending one message."""
        return self.span(_service(caller), f"send {destination}", "PRODUCER", start, end,
                         _context(caller), attrs=_messaging(destination, "send"))  # fmt: skip

    def consume(self, service: str, producer: Span, start: float, end: float) -> Span:
        """A CONSUMER span continuing the message's trace (parent from its headers)."""
        destination = str((producer.attributes or {})["messaging.destination.name"])
        return self.span(service, f"process {destination}", "CONSUMER", start, end,
                         _carried(producer), attrs=_messaging(destination, "process"))  # fmt: skip

    def consume_batch(
        self, service: str, producers: Sequence[Span], start: float, end: float
    ) -> Span:
        """A batch CONSUMER span: a new trace, linked to every message it took."""
        destination = str((producers[0].attributes or {})["messaging.destination.name"])
        return self.span(service, f"process {destination}", "CONSUMER", start, end,
                         links=producers, attrs=_messaging(destination, "process"))  # fmt: skip

    def internal(self, parent: Span, name: str, start: float, end: float) -> Span:
        """An INTERNAL span of the parent's service."""
        return self.span(_service(parent), name, "INTERNAL", start, end, _context(parent))


def _service(span: Span) -> str:
    return str(span.resource.attributes["service.name"])


def _context(span: Span) -> otel_context.Context:
    return trace.set_span_in_context(span)


def _carried(span: Span) -> otel_context.Context:
    """The context a receiver extracts from the headers ``span``'s side injected."""
    headers: dict[str, str] = {}
    W3C.inject(headers, context=_context(span))
    return W3C.extract(headers)


def _messaging(destination: str, operation: str) -> dict[str, object]:
    return {"messaging.system": "rabbitmq", "messaging.destination.name": destination,
            "messaging.operation.type": operation}  # fmt: skip


def api_entry(n: int, start_ns: int, duration_ms: float = 20, **fields: Any) -> SpanRecord:
    """Request ``n`` to service ``api`` as one stored SERVER span ``GET /items``, with ``fields``
    (attributes, service_version): for tests that write records straight into a store or a fake
    backend, with no SDK."""
    return SpanRecord(
        trace_id=f"{n + 1:032x}", span_id=f"{n + 1:016x}", parent_span_id=None,
        service="api", name="GET /items", kind="SERVER", start_unix_nano=start_ns,
        end_unix_nano=start_ns + int(duration_ms * 10**6), **fields,
    )  # fmt: skip
