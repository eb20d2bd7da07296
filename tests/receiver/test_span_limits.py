"""One span keeps at most 128 attributes and events (and 128 attributes per event, link or
log record), the OpenTelemetry SDK's default limits, and 10,000 links, as many as tracekit's own
tracer provider keeps for a batch consumer's hops: the first ones, the rest counted in
``tracekit.dropped_*_count``. The other spans of the request are stored whole.

Before, one span of 300,000 links took the collector 12 s and 380 MiB to store.
"""

from __future__ import annotations

import json
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, TraceFlags
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.records import MAX_SPAN_LINKS, SpanRecord
from tracekit.semconv import DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS
from tracekit.store import Store

NOW = time.time_ns()
# what this SDK may record of each list: more than the collector keeps
SDK_LIMIT = 300


def _context(number: int) -> SpanContext:
    return SpanContext(number, number, is_remote=True, trace_flags=TraceFlags(1))


def _send_crowded_span(receiver: Receiver) -> tuple[ReadableSpan, ReadableSpan]:
    """A span with more of everything than the collector keeps (and more attributes than even
    the SDK keeps: it counts 10 dropped), sent with a plain sibling in the same request."""
    memory = InMemorySpanExporter()
    limits = SpanLimits(
        max_span_attributes=SDK_LIMIT, max_events=SDK_LIMIT, max_links=SDK_LIMIT,
        max_event_attributes=SDK_LIMIT, max_link_attributes=SDK_LIMIT,
    )  # fmt: skip
    provider = TracerProvider(
        resource=Resource.create({"service.name": "crowded"}), span_limits=limits
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.limits")
    links = [Link(_context(n + 1), {f"l{i}": i for i in range(200)} if n == 0 else None)
             for n in range(SDK_LIMIT)]  # fmt: skip
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("crowded", links=links) as span:
            for n in range(SDK_LIMIT + 10):
                span.set_attribute(f"a{n:03}", n)
            span.add_event("first", {f"e{i}": i for i in range(200)})
            for n in range(SDK_LIMIT - 1):
                span.add_event(f"e{n}")
        parent.set_attribute("plain", True)
    provider.shutdown()
    crowded, sent_parent = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    assert exporter.export([crowded, sent_parent]) is SpanExportResult.SUCCESS
    return crowded, sent_parent


def _stored(reader: Store, trace_id: int) -> dict[str, SpanRecord]:
    return {s.name: s for s in reader.spans_by_trace_ids([f"{trace_id:032x}"])}


def test_a_span_keeps_its_first_128_attributes_and_events_and_every_batch_link(
    receiver: Receiver, reader: Store
) -> None:
    crowded, sent_parent = _send_crowded_span(receiver)
    assert crowded.dropped_attributes == 10  # what the SDK itself left out, sent as such
    stored = _stored(reader, crowded.context.trace_id)
    span = stored["crowded"]
    sent_attributes = dict(crowded.attributes or {})
    kept = {k: v for k, v in span.attributes.items() if not k.startswith("tracekit.")}
    assert kept == dict(list(sent_attributes.items())[:128])
    assert span.attributes[DROPPED_ATTRIBUTES] == 10 + SDK_LIMIT - 128
    assert span.attributes[DROPPED_EVENTS] == SDK_LIMIT - 128
    assert DROPPED_LINKS not in span.attributes  # a batch of 300 messages: every hop kept
    assert [e.name for e in span.events] == [e.name for e in crowded.events[:128]]
    assert [int(link.span_id, 16) for link in span.links] == list(range(1, SDK_LIMIT + 1))
    first_event, first_link = span.events[0], span.links[0]
    assert len(first_event.attributes) == len(first_link.attributes) == 129
    assert first_event.attributes[DROPPED_ATTRIBUTES] == 200 - 128
    assert first_link.attributes[DROPPED_ATTRIBUTES] == 200 - 128
    assert stored["parent"].attributes == dict(sent_parent.attributes or {})  # untouched


def _json_span(span_id: str, name: str, count: int, links: int | None = None) -> dict[str, object]:
    return {
        "traceId": "ab" * 16, "spanId": span_id, "name": name,
        "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 1000),
        "attributes": [{"key": f"k{n:04}", "value": {"intValue": n}} for n in range(count)],
        "droppedAttributesCount": 5,
        "events": [{"name": f"e{n}", "timeUnixNano": str(NOW)} for n in range(count)],
        "links": [{"traceId": "cd" * 16, "spanId": f"{n + 1:016x}"}
                  for n in range(count if links is None else links)],
        "droppedLinksCount": "7",
    }  # fmt: skip


def test_json_spans_are_bounded_alike(receiver: Receiver, reader: Store) -> None:
    spans = [_json_span("01" * 8, "crowded", 1000, links=MAX_SPAN_LINKS + 20),
             _json_span("02" * 8, "small", 3)]  # fmt: skip
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    reply = post(receiver, "/v1/traces", json.dumps(body).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
    assert (reply.status, reply.body) == (200, b"{}")
    stored = _stored(reader, 0xAB * sum(256**n for n in range(16)))
    crowded, small = stored["crowded"], stored["small"]
    assert list(crowded.attributes)[:128] == [f"k{n:04}" for n in range(128)]
    assert crowded.attributes[DROPPED_ATTRIBUTES] == 5 + 1000 - 128
    assert crowded.attributes[DROPPED_EVENTS] == 1000 - 128
    assert crowded.attributes[DROPPED_LINKS] == 7 + 20
    assert len(crowded.events) == 128
    assert [int(link.span_id, 16) for link in crowded.links] == list(range(1, MAX_SPAN_LINKS + 1))
    assert small.attributes == {"k0000": 0, "k0001": 1, "k0002": 2}  # no count where none cut
    assert len(small.events) == len(small.links) == 3


def test_a_log_record_keeps_its_first_128_attributes(receiver: Receiver, reader: Store) -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    crowded = records.add(time_unix_nano=NOW, trace_id=b"\x0e" * 16, dropped_attributes_count=3)
    for n in range(1000):
        crowded.attributes.add(key=f"k{n:04}", value={"int_value": n})
    records.add(time_unix_nano=NOW + 1, trace_id=b"\x0e" * 16).attributes.add(key="plain")
    assert post(receiver, "/v1/logs", request.SerializeToString()).status == 200
    many = [{"key": f"j{n}", "value": {"intValue": n}} for n in range(200)]
    json_record = {"timeUnixNano": str(NOW + 2), "traceId": "0e" * 16, "attributes": many}
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [json_record]}]}]}
    reply = post(receiver, "/v1/logs", json.dumps(body).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
    assert (reply.status, reply.body) == (200, b"{}")
    first, plain, from_json = reader.logs_by_trace_ids(["0e" * 16])
    assert list(first.attributes)[:128] == [f"k{n:04}" for n in range(128)]
    assert first.attributes[DROPPED_ATTRIBUTES] == 3 + 1000 - 128
    assert plain.attributes == {"plain": None}
    assert len(from_json.attributes) == 129
    assert from_json.attributes[DROPPED_ATTRIBUTES] == 200 - 128


def test_protobuf_links_past_the_bound_are_counted(receiver: Receiver, reader: Store) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    span = spans.add(trace_id=b"\x0f" * 16, span_id=b"\x01" * 8, name="batch",
                     start_time_unix_nano=NOW, end_time_unix_nano=NOW + 1000,
                     dropped_links_count=2)  # fmt: skip
    for n in range(MAX_SPAN_LINKS + 30):
        span.links.add(trace_id=b"\x0c" * 16, span_id=(n + 1).to_bytes(8, "big"))
    assert post(receiver, "/v1/traces", request.SerializeToString()).status == 200
    (stored,) = reader.spans_by_trace_ids(["0f" * 16])
    assert stored.attributes == {DROPPED_LINKS: 2 + 30}
    assert [int(link.span_id, 16) for link in stored.links] == list(range(1, MAX_SPAN_LINKS + 1))
