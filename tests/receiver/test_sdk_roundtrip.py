"""The real OpenTelemetry Python SDK's OTLP/HTTP exporters send to the receiver; every field the
SDK produced reads back identically from the store."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracekit.receiver import Receiver
from tracekit.store import Store
from tracekit.store.exporter import log_record, span_record

RESOURCE = Resource.create(
    {"service.name": "orders", "service.version": "3.1.0", "deployment.environment.name": "test"}
)
EVERY_TYPE = {
    "s": "text",
    "i": -(2**62),
    "f": 2.5,
    "b": True,
    "ss": ("a", "b"),
    "ii": (1, 2, 3),
    "ff": (0.5, -1.25),
    "bb": (True, False),
    "correlation.id": "corr-42",
}


def _emit_spans(receiver: Receiver) -> list[object]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
    )
    tracer = provider.get_tracer("tests.roundtrip", "0.1")
    with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as producer:
        producer.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span(
        "GET /orders/{id}", kind=SpanKind.SERVER, attributes=EVERY_TYPE,
        links=[Link(producer.get_span_context(), {"messaging.operation.type": "receive"})],
    ) as server:  # fmt: skip
        server.add_event("cache.miss", {"key": "order:7", "attempt": 2})
        with tracer.start_as_current_span("db", kind=SpanKind.CLIENT) as client:
            client.record_exception(ValueError("no such order"))
            client.set_status(Status(StatusCode.ERROR, "no such order"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_sdk_spans_round_trip_every_field(receiver: Receiver, reader: Store) -> None:
    finished = _emit_spans(receiver)
    expected = sorted((span_record(s) for s in finished), key=lambda r: r.span_id)  # type: ignore[arg-type]
    trace_ids = {r.trace_id for r in expected}
    stored = sorted(reader.spans_by_trace_ids(trace_ids), key=lambda r: r.span_id)
    assert stored == expected
    server = next(r for r in stored if r.kind == "SERVER")
    assert server.attributes["ss"] == ["a", "b"] and server.attributes["i"] == -(2**62)
    assert server.service == "orders" and server.service_version == "3.1.0"
    assert server.scope == "tests.roundtrip"
    assert reader.spans_by_correlation_id("corr-42") == [server]
    producer = next(r for r in stored if r.kind == "PRODUCER")
    assert reader.trace_ids_linking_to([producer.trace_id]) == {server.trace_id}


def test_sdk_logs_round_trip_every_field(receiver: Receiver, reader: Store) -> None:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs"))
    )
    logger = logging.getLogger("tests.roundtrip.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)  # independent of whatever the root logger was left at
    logger.addHandler(LoggingHandler(logger_provider=provider))
    tracer = TracerProvider(resource=RESOURCE).get_tracer("t")
    with tracer.start_as_current_span("handler"):
        logger.warning("payment %s declined", "p-1", extra={"correlation.id": "corr-logs", "n": 3})
    provider.shutdown()
    expected = [log_record(r) for r in memory.get_finished_logs()]
    assert len(expected) == 1 and expected[0].trace_id
    stored = reader.logs_by_trace_ids([expected[0].trace_id or ""])
    assert stored == expected
    assert stored[0].body == "payment p-1 declined" and stored[0].severity_text == "WARN"


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
def test_sdk_http_exporter_acknowledged_equals_stored(
    compression: Compression, receiver: Receiver, reader: Store
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.count")
    for n in range(300):
        with tracer.start_as_current_span("GET /orders/{id}", attributes={"n": n}):
            tracer.start_span("SELECT orders").end()
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", compression=compression)
    acknowledged = sum(
        100 for start in range(0, len(spans), 100)
        if exporter.export(spans[start : start + 100]) == SpanExportResult.SUCCESS
    )  # fmt: skip
    exporter.shutdown()
    assert acknowledged == reader.count_spans() == 600
