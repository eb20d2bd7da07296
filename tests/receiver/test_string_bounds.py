"""Every stored string has a bound: a client sent a 2-million-character span name inside a body
the receiver accepted (16 MiB), and it was stored and printed whole by `--format json`.

Spans go through the real OpenTelemetry SDK's OTLP/HTTP exporter (protobuf, where a span whose
name and status were seen before takes the receiver's fast path) and OTLP/JSON; log records
through the SDK's log exporter.
"""

from __future__ import annotations

import json
import logging
import time

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.store import Store

NAME, KEY, VALUE, BODY = 1_024, 256, 16_384, 65_536  # docs/store.md, "What is stored"
LONG = "x" * 100_000


def _provider(receiver: Receiver, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_sdk_spans_are_stored_with_every_string_at_its_bound(
    receiver: Receiver, reader: Store
) -> None:
    provider = _provider(receiver, "s" + LONG)
    tracer = provider.get_tracer("scope" + LONG)
    with tracer.start_as_current_span(
        "n" + LONG,
        attributes={"correlation.id": "bounds-1", "k" + LONG: "v", "long": "v" + LONG,
                    "list": ["short", "i" + LONG]},
    ) as span:  # fmt: skip
        span.add_event("e" + LONG, {"detail": "d" + LONG})
        span.set_status(Status(StatusCode.ERROR, "m" + LONG))
    # the same name and status again: the fast path, where only the attribute is new
    for n in range(2):
        with tracer.start_as_current_span("GET /", attributes={"correlation.id": f"fast-{n}"}) as s:
            s.set_attribute("long", f"{n}" + LONG)
            s.set_status(Status(StatusCode.ERROR, "m" + LONG))
    provider.shutdown()

    (slow,) = reader.spans_by_correlation_id("bounds-1")
    assert slow.service == ("s" + LONG)[:NAME] and slow.name == ("n" + LONG)[:NAME]
    assert slow.scope == ("scope" + LONG)[:NAME]
    assert slow.status_message == ("m" + LONG)[:VALUE]
    assert slow.attributes["long"] == ("v" + LONG)[:VALUE]
    assert slow.attributes["list"] == ["short", ("i" + LONG)[:VALUE]]
    assert slow.attributes[("k" + LONG)[:KEY]] == "v"
    (event,) = slow.events
    assert event.name == ("e" + LONG)[:NAME]
    assert event.attributes["detail"] == ("d" + LONG)[:VALUE]
    for n in range(2):
        (fast,) = reader.spans_by_correlation_id(f"fast-{n}")
        assert fast.attributes["long"] == (f"{n}" + LONG)[:VALUE]
        assert fast.status_message == ("m" + LONG)[:VALUE]
        assert fast.service == ("s" + LONG)[:NAME]


def test_json_spans_and_sdk_logs_are_stored_with_every_string_at_its_bound(
    receiver: Receiver, reader: Store
) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    span = {
        "traceId": trace_id, "spanId": "eee19b7ec3c1b174", "name": "n" + LONG, "kind": 2,
        "startTimeUnixNano": str(_now()), "endTimeUnixNano": str(_now() + 1000),
        "attributes": [{"key": "k" + LONG, "value": {"stringValue": "v" + LONG}}],
        "status": {"code": 2, "message": "m" + LONG},
    }  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "s" + LONG}}]}
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    reply = post(
        receiver, "/v1/traces", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    assert reply.status == 200, reply.body

    (stored,) = reader.spans_by_trace_ids([trace_id])
    assert stored.name == ("n" + LONG)[:NAME] and stored.service == ("s" + LONG)[:NAME]
    assert stored.attributes == {("k" + LONG)[:KEY]: ("v" + LONG)[:VALUE]}
    assert stored.status_message == ("m" + LONG)[:VALUE]

    provider = LoggerProvider(resource=Resource.create({"service.name": "logs"}))
    exporter = OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs")
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    log = logging.getLogger("tests.bounds")
    log.addHandler(LoggingHandler(logger_provider=provider))
    log.propagate = False
    tracer = _provider(receiver, "logs").get_tracer("t")
    with tracer.start_as_current_span("with a log") as parent:
        log.warning("b" * 200_000, extra={"detail": "d" + LONG})
    provider.shutdown()

    trace = format(parent.get_span_context().trace_id, "032x")
    (record,) = reader.logs_by_trace_ids([trace])
    assert record.body == "b" * BODY
    assert record.attributes["detail"] == ("d" + LONG)[:VALUE]


def _now() -> int:
    return time.time_ns()
