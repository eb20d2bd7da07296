"""Typical spans for the store and receiver benchmarks: 10 attributes, as a gateway would emit."""

from __future__ import annotations

import os
import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tracekit.records import SpanRecord

SERVICES = ("gateway", "orders", "payments", "inventory", "shipping")
ROUTES = ("/orders/{order_id}", "/orders", "/payments/{id}", "/stock/{sku}", "/shipments")
RESOURCE = {"service.name": "orders", "service.version": "1.4.2", "host.name": "ip-10-0-3-17"}


def typical_span(
    rng: random.Random, trace_id: str, parent: str | None, correlation: str, trace_start: int
) -> SpanRecord:
    """One SERVER span with the ten attributes an HTTP hop typically carries."""
    route = rng.choice(ROUTES)
    start = trace_start + rng.randrange(20_000_000)  # within 20 ms of the request's start
    attributes = {
        "http.request.method": rng.choice(("GET", "POST")),
        "http.route": route,
        "url.path": route.replace("{order_id}", str(rng.randrange(10**6))).replace("{id}", "77"),
        "url.scheme": "http",
        "http.response.status_code": rng.choice((200, 200, 200, 201, 404, 500)),
        "server.address": "orders.internal",
        "server.port": 8080,
        "network.protocol.version": "1.1",
        "user_agent.original": "python-httpx/0.27.0",
        "correlation.id": correlation,
    }
    return SpanRecord(
        trace_id=trace_id, span_id=os.urandom(8).hex(), parent_span_id=parent,
        service=rng.choice(SERVICES), name=f"GET {route}", kind="SERVER",
        start_unix_nano=start, end_unix_nano=start + rng.randrange(100_000, 50_000_000),
        attributes=attributes, resource=RESOURCE, service_version="1.4.2",
    )  # fmt: skip


def typical_spans(count: int, seed: int = 7, spans_per_request: int = 8) -> list[SpanRecord]:
    """``count`` spans grouped into requests of ``spans_per_request`` spans each.

    Requests start about 1 ms apart in the order they are exported, as live traffic does (an
    exporter sends what just ended), so the time index grows at its end as it would in service.
    """
    rng = random.Random(seed)
    spans: list[SpanRecord] = []
    clock = 1_700_000_000_000_000_000 + seed * 10**12
    while len(spans) < count:
        trace_id, correlation = os.urandom(16).hex(), os.urandom(16).hex()
        clock += rng.randrange(2_000_000)
        root = typical_span(rng, trace_id, None, correlation, clock)
        spans.append(root)
        for _ in range(spans_per_request - 1):
            spans.append(typical_span(rng, trace_id, root.span_id, correlation, clock))
    return spans[:count]


def _any(value: object) -> AnyValue:
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(double_value=float(value))  # type: ignore[arg-type]


def otlp_request(spans: list[SpanRecord]) -> ExportTraceServiceRequest:
    """The spans as one OTLP ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in RESOURCE.items():
        resource_spans.resource.attributes.append(KeyValue(key=key, value=_any(value)))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tracekit"
    for record in spans:
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(record.trace_id)
        span.span_id = bytes.fromhex(record.span_id)
        if record.parent_span_id:
            span.parent_span_id = bytes.fromhex(record.parent_span_id)
        span.name, span.kind = record.name, 2
        span.start_time_unix_nano, span.end_time_unix_nano = (
            record.start_unix_nano,
            record.end_unix_nano,
        )
        for key, value in record.attributes.items():
            span.attributes.append(KeyValue(key=key, value=_any(value)))
    return request
