"""Hostile and malformed requests: each gets a 4xx, the receiver stays up, nothing is lost."""

from __future__ import annotations

import gzip
import http.client
import json
import random
import socket
import time

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.store import Store

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _good_request(span_id: str = "b7ad6b7169203331") -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(TRACE), bytes.fromhex(span_id), "ok"
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()


@pytest.fixture
def seeded(receiver: Receiver, reader: Store) -> Store:
    """The store already holds one span, which must survive every attack."""
    assert post(receiver, "/v1/traces", _good_request()).status == 200
    return reader


def _nested_value(depth: int) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(TRACE), bytes.fromhex("00000000000000aa")
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    value = span.attributes.add(key="deep").value
    for _ in range(depth):
        value = value.array_value.values.add()
    value.string_value = "bottom"
    return request.SerializeToString()


def _wrong_id_length() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x01" * 15, b"\x02" * 8
    return request.SerializeToString()


HOSTILE = {
    "truncated protobuf": (_good_request()[:-5], "application/x-protobuf"),
    "invalid id length": (_wrong_id_length(), "application/x-protobuf"),
    "nested 40 deep": (_nested_value(40), "application/x-protobuf"),
    "nested 5000 deep (protobuf)": (_nested_value(5000), "application/x-protobuf"),
    "invalid JSON": (b'{"resourceSpans": [', "application/json"),
    "JSON array body": (b"[1, 2]", "application/json"),
    "wrong JSON structure": (b'{"resourceSpans": {"scopeSpans": 3}}', "application/json"),
    "JSON id not hex": (
        json.dumps(
            {
                "resourceSpans": [
                    {"scopeSpans": [{"spans": [{"traceId": "zz" * 16, "spanId": "01" * 8}]}]}
                ]
            }
        ).encode(),
        "application/json",
    ),
    "JSON nested 100000 deep": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json"),
    "not UTF-8 JSON": (b'{"resourceSpans": "\xff\xfe"}', "application/json"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_payload_gets_400_with_status_body(
    name: str, receiver: Receiver, seeded: Store
) -> None:
    body, content_type = HOSTILE[name]
    reply = post(receiver, "/v1/traces", body, {"Content-Type": content_type})
    assert reply.status == 400
    if content_type == "application/x-protobuf":
        status = status_pb2.Status.FromString(reply.body)
        assert status.code == 3 and status.message  # INVALID_ARGUMENT, with a reason
    else:
        assert json.loads(reply.body)["code"] == 3
    assert seeded.count_spans() == 1
    assert post(receiver, "/v1/traces", _good_request("b7ad6b71692033ff")).status == 200


def test_random_bytes_never_crash_the_receiver(receiver: Receiver, seeded: Store) -> None:
    rng = random.Random(1234)
    for _ in range(40):
        body = rng.randbytes(rng.randrange(64, 4096))
        assert post(receiver, "/v1/traces", body).status == 400
    assert seeded.count_spans() == 1


def test_gzip_bomb_gets_413(receiver: Receiver, seeded: Store) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KB on the wire
    assert len(bomb) < 200_000
    reply = post(receiver, "/v1/traces", bomb, {"Content-Encoding": "gzip"})
    assert reply.status == 413
    assert seeded.count_spans() == 1


def test_100_mb_body_gets_413(receiver: Receiver, seeded: Store) -> None:
    host, port = receiver.address
    with socket.create_connection((host, port), timeout=30) as sock:
        head = (
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(100):
                sock.sendall(chunk)
        except OSError:
            pass  # the receiver may stop reading once it has answered
        answer = sock.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 413")
    assert seeded.count_spans() == 1


def test_bad_gzip_is_400(receiver: Receiver, seeded: Store) -> None:
    assert post(receiver, "/v1/traces", b"not gzip", {"Content-Encoding": "gzip"}).status == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, 415),
    ],
)
def test_unsupported_content_is_415(
    headers: dict[str, str], status: int, receiver: Receiver, seeded: Store
) -> None:
    assert post(receiver, "/v1/traces", _good_request(), headers).status == status


def test_wrong_method_is_405_and_unknown_path_404(receiver: Receiver) -> None:
    host, port = receiver.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/v1/traces")
    response = conn.getresponse()
    response.read()
    assert response.status == 405 and response.getheader("Allow") == "POST"
    assert post(receiver, "/v2/traces", _good_request()).status == 404
    conn.close()
