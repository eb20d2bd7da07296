"""Requests nesting values too deep are refused saying so, over HTTP and gRPC.

Protobuf's parser stops at 100 messages within each other; past that a span or log record was
refused as "not a valid OTLP Span (a string that is not UTF-8?)", and a JSON body past Python's
recursion limit as "not valid JSON (UTF-8)": an operator looking for a bad string found none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from tests.receiver.conftest import post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOO_DEEP = "nested too deep (over 100 messages within each other)"


def _nest(value: AnyValue, depth: int) -> None:
    for _ in range(depth):
        value = value.array_value.values.add()
    value.string_value = "bottom"


def _deep_span(depth: int) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="GET /deep")
    span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    _nest(span.attributes.add(key="deep").value, depth)
    return request.SerializeToString()


def _deep_log(depth: int) -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    _nest(record.body, depth)
    return request.SerializeToString()


def _deep_resource(depth: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _nest(resource_spans.resource.attributes.add(key="deep").value, depth)
    span = resource_spans.scope_spans.add().spans.add(name="GET /deep")
    span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()


def _deep_json(depth: int) -> bytes:
    value = '{"stringValue": "bottom"}'
    for _ in range(depth):
        value = '{"arrayValue": {"values": [' + value + "]}}"
    span = {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "GET /deep",
        "startTimeUnixNano": str(time.time_ns()),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": [{"key": "deep", "value": "VALUE"}],
    }
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    return body.replace('"VALUE"', value).encode()


@pytest.fixture
def grpc_receiver(store_path: Path) -> Iterator[Receiver]:
    """A receiver with OTLP/gRPC too."""
    started = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0)).start()
    yield started
    started.stop()


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/traces", _deep_span(200), f"every record was rejected: span is {TOO_DEEP}"),
        ("/v1/logs", _deep_log(200), f"every record was rejected: log record is {TOO_DEEP}"),
        ("/v1/traces", _deep_resource(200), f"every record was rejected: resource is {TOO_DEEP}"),
    ],
    ids=["span attribute", "log body", "resource attribute"],
)
def test_protobuf_nested_200_deep_is_refused_as_too_deep(
    path: str, body: bytes, message: str, grpc_receiver: Receiver
) -> None:
    reply = post(grpc_receiver, path, body)
    status = status_pb2.Status.FromString(reply.body)
    assert (reply.status, status.code, status.message) == (400, 3, message)


def test_grpc_span_nested_200_deep_is_refused_as_too_deep(grpc_receiver: Receiver) -> None:
    assert grpc_receiver.grpc_address is not None
    target = "{}:{}".format(*grpc_receiver.grpc_address)
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(TRACES)(_deep_span(200), timeout=10)
    error = refused.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert error.details() == f"every record was rejected: span is {TOO_DEEP}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_json_nested_past_the_recursion_limit_is_refused_as_too_deep(
    depth: int, grpc_receiver: Receiver
) -> None:
    reply = post(
        grpc_receiver, "/v1/traces", _deep_json(depth), {"Content-Type": "application/json"}
    )
    assert (reply.status, json.loads(reply.body)) == (
        400,
        {"code": 3, "message": "body is nested too deep (JSON objects and arrays)"},
    )
