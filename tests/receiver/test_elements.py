"""A small compressed body of millions of tiny messages is refused (413) before it is decoded.

Each empty span event, attribute or resource is two bytes on the wire: 3 MiB of them gzip to
4 KiB, and used to take seconds and hundreds of MiB to decode while every other exporter waited.
A default SDK batch, however large, is still taken whole.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from tests.receiver.conftest import post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

MIB = 1024 * 1024
NOW = time.time_ns()


def _varint(value: int) -> bytes:
    out = b""
    while value > 0x7F:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written out byte by byte (faster than building
    millions of messages, and able to write what no valid message holds)."""
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _span(extra: bytes = b"") -> bytes:
    ids = _field(1, b"\x0a" * 16) + _field(2, b"\x0b" * 8) + _field(5, b"op")
    times = b"\x39" + NOW.to_bytes(8, "little") + b"\x41" + NOW.to_bytes(8, "little")
    return ids + times + extra


def _traces(span: bytes, resource: bytes = b"") -> bytes:
    resource_spans = (_field(1, resource) if resource else b"") + _field(2, _field(2, span))
    return _field(1, resource_spans)


COUNT = 3 * MIB // 2  # empty messages, 3 MiB of them
HOSTILE = {
    "empty span events": (_traces(_span(_field(11, b"") * COUNT)), "/v1/traces"),
    "empty resource attributes": (_traces(_span(), _field(1, b"") * COUNT), "/v1/traces"),
    "empty log attributes": (
        _field(1, _field(2, _field(2, b"\x09" + NOW.to_bytes(8, "little") + b"\x32\x00" * COUNT))),
        "/v1/logs",
    ),
}


def test_millions_of_empty_messages_are_refused_at_once(receiver: Receiver, reader: Store) -> None:
    for name, (body, path) in HOSTILE.items():
        packed = gzip.compress(body)
        assert len(packed) < 16 * 1024, name
        started = time.process_time()  # CPU: wall time waits on other processes
        reply = post(receiver, path, packed, {"Content-Encoding": "gzip"})
        assert reply.status == 413, name
        assert b"send smaller batches" in reply.body, name
        assert time.process_time() - started < 2, name
    good = _traces(_span(_field(9, _field(1, b"k") + _field(2, _field(1, b"v")))))
    assert post(receiver, "/v1/traces", good).status == 200
    assert reader.count_spans() == 1


def test_json_of_millions_of_empty_objects_is_refused(receiver: Receiver) -> None:
    span = {"traceId": "0a" * 16, "spanId": "0b" * 8, "name": "op", "attributes": ["@"],
            "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW)}  # fmt: skip
    text = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    body = text.replace('"@"', ",".join(["{}"] * MIB)).encode()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    started = time.process_time()  # CPU: wall time waits on other processes
    reply = post(receiver, "/v1/traces", gzip.compress(body), headers)
    assert reply.status == 413 and "smaller batches" in json.loads(reply.body)["message"]
    assert time.process_time() - started < 2


def test_json_of_many_empty_attributes_is_refused(store_path: Path) -> None:
    """An attribute's value object is counted with its attribute, never instead of it."""
    span = {"traceId": "0a" * 16, "spanId": "0b" * 8, "name": "op", "attributes": ["@"],
            "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW)}  # fmt: skip
    text = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    body = text.replace('"@"', ",".join(['{"value":{}}'] * 400_000)).encode()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with Receiver(Store(store_path), ReceiverConfig(port=0)) as receiver:
        reply = post(receiver, "/v1/traces", gzip.compress(body), headers)
    assert reply.status == 413 and "smaller batches" in json.loads(reply.body)["message"]


def test_an_sdk_batch_of_512_large_spans_is_stored_whole(receiver: Receiver, reader: Store) -> None:
    """512 spans of 60 attributes and 10 events each: a body large enough to be counted."""
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("elements")
    for n in range(512):
        attributes = {f"attribute.{k}": f"value {n} {k}" for k in range(60)}
        with tracer.start_as_current_span("GET /orders/{id}", attributes=attributes) as span:
            for e in range(10):
                span.add_event("retry", {"attempt": e, "reason": "timeout", "ok": False})
    provider.shutdown()
    assert reader.count_spans() == 512


def test_grpc_refuses_them_with_resource_exhausted(store_path: Path) -> None:
    config = ReceiverConfig(port=0, grpc_port=0, max_body_bytes=8 * MIB)
    with Receiver(Store(store_path), config) as receiver:
        assert receiver.grpc_address is not None
        host, port = receiver.grpc_address
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            try:
                export(HOSTILE["empty span events"][0], timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
                assert "smaller batches" in error.details()  # type: ignore[attr-defined]
            else:
                raise AssertionError("accepted")


def test_metrics_of_many_data_points_are_still_acknowledged(receiver: Receiver) -> None:
    """Metrics are dropped unread, so their data points are not counted: 120,000 of them (an
    export of a busy histogram family) are acknowledged at once."""
    request = ExportMetricsServiceRequest()
    gauge = request.resource_metrics.add().scope_metrics.add().metrics.add(name="queue.depth")
    for n in range(120_000):
        point = gauge.gauge.data_points.add(time_unix_nano=NOW, as_int=n)
        point.attributes.add(key="q").value.string_value = "o"
    started = time.process_time()  # CPU: wall time waits on other processes
    assert post(receiver, "/v1/metrics", request.SerializeToString()).status == 200
    assert time.process_time() - started < 2


def test_json_metrics_of_many_data_points_are_acknowledged_as_protobuf_ones(
    store_path: Path,
) -> None:
    """The same 120,000 data points in OTLP/JSON (11 MiB) got 413: json.loads built them all,
    so they were counted, where protobuf's are dropped unread."""
    request = ExportMetricsServiceRequest()
    gauge = request.resource_metrics.add().scope_metrics.add().metrics.add(name="queue.depth")
    for n in range(120_000):
        point = gauge.gauge.data_points.add(time_unix_nano=NOW, as_int=n)
        point.attributes.add(key="q").value.string_value = "o [retry] {x}"
    body = json_format.MessageToJson(request, indent=None).encode()
    headers = {"Content-Type": "application/json"}
    with Receiver(Store(store_path), ReceiverConfig(port=0)) as receiver:
        assert post(receiver, "/v1/metrics", request.SerializeToString()).status == 200
        started = time.process_time()  # CPU: wall time waits on other processes
        reply = post(receiver, "/v1/metrics", body, headers)
        assert reply.status == 200, reply.body
        assert time.process_time() - started < 2


def test_json_metrics_of_millions_of_empty_metrics_are_refused(receiver: Receiver) -> None:
    """Dropped unbuilt, metrics are still counted, as protobuf counts its Metric messages."""
    text = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": ["@"]}]}]})
    body = gzip.compress(text.replace('"@"', ",".join(["{}"] * MIB)).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    started = time.process_time()  # CPU: wall time waits on other processes
    reply = post(receiver, "/v1/metrics", body, headers)
    assert reply.status == 413 and "smaller batches" in json.loads(reply.body)["message"]
    assert time.process_time() - started < 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x"', "not valid JSON"),
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x"]}]}]}', "not valid"),
        (b'{"resourceMetrics": 5}', "resourceMetrics must be an array"),
        (b'{"resourceMetrics": [{"scopeMetrics": ["x"]}]}', "scopeMetrics[] must be an object"),
        (b"[]", "body must be an object"),
        (b'{"resourceMetrics": []} {}', "not valid JSON"),
    ],
)
def test_malformed_json_metrics_are_400(receiver: Receiver, body: bytes, message: str) -> None:
    reply = post(receiver, "/v1/metrics", body, {"Content-Type": "application/json"})
    assert reply.status == 400 and message in json.loads(reply.body)["message"]


def test_json_strings_full_of_brackets_and_braces_are_not_counted(
    receiver: Receiver, reader: Store
) -> None:
    """Log lines such as ``[INFO] [req 7] {...}`` hold brackets and braces that are not JSON."""
    line = "[INFO] [worker] [retry] {} " * 10
    records = [{"timeUnixNano": str(NOW), "body": {"stringValue": line}} for _ in range(11_000)]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
    assert body.count(b"[") > 327_680  # the most elements a request may hold
    reply = post(receiver, "/v1/logs", body, {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    assert reader.count_logs() == 11_000


def test_a_collector_batch_of_8192_spans_with_20_attributes_is_stored_whole(
    store_path: Path,
) -> None:
    """The OpenTelemetry Collector's batch processor sends 8,192 spans at a time by default."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(8192):
        span = scope.spans.add(name="GET /orders/{id}", start_time_unix_nano=NOW,
                               end_time_unix_nano=NOW + 1000, kind=2)  # fmt: skip
        span.trace_id, span.span_id = bytes(15) + b"\x01", (n + 1).to_bytes(8, "big")
        span.status.code = 1
        for k in range(20):
            span.attributes.add(key=f"attribute.{k}").value.string_value = f"value {k}"
    with Receiver(Store(store_path), ReceiverConfig(port=0)) as receiver:
        assert post(receiver, "/v1/traces", request.SerializeToString()).status == 200
    with Store(store_path) as reader:
        assert reader.count_spans() == 8192


def test_millions_of_fields_that_hold_no_element_are_refused_too(store_path: Path) -> None:
    """A status repeated 8 million times merges into one, so it costs the decoder nothing, but
    walking it to count elements took 5 s of CPU for 16 KiB of gzip."""
    body = _traces(_span(_field(15, b"") * (8 * MIB - 64)))
    with Receiver(Store(store_path), ReceiverConfig(port=0)) as receiver:
        started = time.process_time()  # CPU, as the docstring says: wall time waits on neighbours
        reply = post(receiver, "/v1/traces", gzip.compress(body), {"Content-Encoding": "gzip"})
        assert reply.status == 413 and b"protobuf fields" in reply.body
        assert time.process_time() - started < 2.5


def test_a_span_with_a_corrupt_event_in_a_counted_request_is_rejected_alone(
    receiver: Receiver, reader: Store
) -> None:
    """A body large enough to be counted: the count must not turn one span's corrupt event
    (which the decoder rejects alone) into a 400 for all 3,000."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(3000):
        span = scope.spans.add(name="op", start_time_unix_nano=NOW, end_time_unix_nano=NOW)
        span.trace_id, span.span_id = b"\x01" * 16, (n + 1).to_bytes(8, "big")
        span.attributes.add(key="db.query.text").value.string_value = "SELECT 1 " * 30
        if n == 7:
            span.events.add(name="MARK", time_unix_nano=NOW)
    body = request.SerializeToString()
    mark = body.index(b"MARK")
    body = body[: mark - 1] + b"\x09" + body[mark:]  # the event's name runs past its end
    assert len(body) > 2 * 327_680
    reply = post(receiver, "/v1/traces", body)
    assert reply.status == 200
    assert ExportTraceServiceResponse.FromString(reply.body).partial_success.rejected_spans == 1
    assert reader.count_spans() == 2999


def _nest(value: AnyValue, depth: int) -> None:
    for _ in range(depth):
        value = value.array_value.values.add()
    value.string_value = "bottom"


def _batch_with_one_nested_too_deep(signal: str) -> bytes:
    """3,000 records, the eighth nesting arrays 200 deep: a body large enough to be counted."""
    if signal == "logs":
        logs = ExportLogsServiceRequest()
        scope_logs = logs.resource_logs.add().scope_logs.add()
        for n in range(3000):
            record = scope_logs.log_records.add(time_unix_nano=NOW)
            record.body.string_value = "SELECT 1 " * 30
            if n == 7:
                _nest(record.body, 200)
        return logs.SerializeToString()
    traces = ExportTraceServiceRequest()
    scope = traces.resource_spans.add().scope_spans.add()
    for n in range(3000):
        span = scope.spans.add(name="op", start_time_unix_nano=NOW, end_time_unix_nano=NOW)
        span.trace_id, span.span_id = b"\x01" * 16, (n + 1).to_bytes(8, "big")
        span.attributes.add(key="db.query.text").value.string_value = "SELECT 1 " * 30
        if n == 7:
            _nest(span.attributes.add(key="deep").value, 200)
    return traces.SerializeToString()


@pytest.mark.parametrize(("signal", "what"), [("traces", "span"), ("logs", "log record")])
def test_a_record_nested_too_deep_in_a_counted_request_is_rejected_alone(
    signal: str, what: str, receiver: Receiver, reader: Store
) -> None:
    """The count refused the whole body as 'not a valid OTLP protobuf message (nested too
    deep)', a 400 for all 3,000 records, where a smaller batch lost that record alone."""
    body = _batch_with_one_nested_too_deep(signal)
    assert len(body) > 2 * 327_680
    reply = post(receiver, f"/v1/{signal}", body)
    assert reply.status == 200
    assert reply.body.endswith(
        f"{what} is nested too deep (over 100 messages within each other)".encode()
    )
    assert (reader.count_spans() if signal == "traces" else reader.count_logs()) == 2999


def test_messages_nested_too_deep_to_walk_are_still_counted(receiver: Receiver) -> None:
    """Past protobuf's depth the count does not walk on, but charges what such a message could
    hold: millions of empty array values at the bottom of a deep attribute are refused too."""
    bottom = _field(1, b"") * COUNT  # an ArrayValue of empty AnyValues
    for _ in range(60):  # ArrayValue.values: [AnyValue.array_value], 120 messages deep
        bottom = _field(1, _field(5, bottom))
    body = _traces(_span(_field(9, _field(1, b"deep") + _field(2, _field(5, bottom)))))
    reply = post(receiver, "/v1/traces", gzip.compress(body), {"Content-Encoding": "gzip"})
    assert reply.status == 413 and b"elements in one request" in reply.body


def test_a_group_cannot_hide_the_messages_after_it(receiver: Receiver) -> None:
    """protobuf's parser skips a group (wire types 3 and 4, never in OTLP); had the count
    stopped there as at a corrupt message, the events after it would have been decoded."""
    group = b"\x9b\x01\x9c\x01"  # field 19: start group, end group
    body = _traces(_span(group + _field(11, b"") * COUNT))
    started = time.process_time()  # CPU: wall time waits on other processes
    reply = post(receiver, "/v1/traces", gzip.compress(body), {"Content-Encoding": "gzip"})
    assert reply.status == 400 and b"group" in reply.body
    assert time.process_time() - started < 2


def test_the_same_collector_batch_in_json_is_stored_whole(store_path: Path) -> None:
    """OTLP/JSON spells each attribute as two objects (the KeyValue and its AnyValue) where
    protobuf counts one message: JSON must be held to the same limit, not to half of it."""
    attributes = [{"key": f"attribute.{k}", "value": {"stringValue": f"value {k}"}}
                  for k in range(20)]  # fmt: skip
    spans = [{"traceId": "00" * 15 + "01", "spanId": f"{n + 1:016x}", "name": "GET /orders/{id}",
              "kind": 2, "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 1000),
              "status": {"code": 1}, "attributes": attributes} for n in range(8192)]  # fmt: skip
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    body = json.dumps(document, separators=(",", ":")).encode()
    with Receiver(Store(store_path), ReceiverConfig(port=0)) as receiver:
        reply = post(receiver, "/v1/traces", body, {"Content-Type": "application/json"})
        assert reply.status == 200, reply.body
    with Store(store_path) as reader:
        assert reader.count_spans() == 8192
