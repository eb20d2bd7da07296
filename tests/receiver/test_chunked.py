"""Request bodies framed every way HTTP/1.1 allows: chunked like the OpenTelemetry JS exporters
send them, gzip with one member or several, and framing that must be refused.

Requests are written byte for byte on a socket so that the framing under test is exactly what
reaches the receiver.
"""

from __future__ import annotations

import gzip
import json
import socket
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rawhttp import RawResponse
from tests.receiver.conftest import read_response

from tracekit.receiver import Receiver
from tracekit.store import Store

LIMIT = 4 * 1024 * 1024  # the receiver fixture's max_body_bytes


def _spans(first: int, count: int, name: str = "op", trace: int = 1) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    for number in range(first, first + count):
        span = scope.spans.add(name=name, start_time_unix_nano=now, end_time_unix_nano=now + 1000)
        span.trace_id, span.span_id = trace.to_bytes(16, "big"), number.to_bytes(8, "big")
    return request.SerializeToString()


def _chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def _head(headers: list[str]) -> bytes:
    lines = ["POST /v1/traces HTTP/1.1", "Host: collector", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _exchange(receiver: Receiver, data: bytes) -> RawResponse:
    """Send ``data`` and read one response (the receiver closes or answers with a length)."""
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(data)
        return read_response(sock)


PROTOBUF = "Content-Type: application/x-protobuf"
CHUNKED = "Transfer-Encoding: chunked"


def test_chunked_protobuf_is_stored(receiver: Receiver, reader: Store) -> None:
    reply = _exchange(receiver, _head([PROTOBUF, CHUNKED]) + _chunked(_spans(1, 50)))
    assert reply.status == 200
    assert reader.count_spans() == 50


def test_chunked_gzip_is_stored(receiver: Receiver, reader: Store) -> None:
    body = gzip.compress(_spans(1, 50))
    reply = _exchange(
        receiver, _head([PROTOBUF, CHUNKED, "Content-Encoding: gzip"]) + _chunked(body, 7)
    )
    assert reply.status == 200
    assert reader.count_spans() == 50


def test_chunked_with_extensions_and_trailers(receiver: Receiver, reader: Store) -> None:
    body = _spans(1, 3)
    framed = b"%x;name=value\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(body), body)
    assert _exchange(receiver, _head([PROTOBUF, CHUNKED]) + framed).status == 200
    assert reader.count_spans() == 3


def test_keep_alive_after_a_chunked_request(receiver: Receiver, reader: Store) -> None:
    with socket.create_connection(receiver.address, timeout=30) as sock:
        for first in (1, 11):
            sock.sendall(_head([PROTOBUF, CHUNKED]) + _chunked(_spans(first, 10)))
            assert read_response(sock).status == 200
    assert reader.count_spans() == 20


def test_two_gzip_members_are_both_stored(receiver: Receiver, reader: Store) -> None:
    """A body that is two gzip files one after the other decodes as their concatenation.

    Two serialized ExportTraceServiceRequests concatenated are one valid request holding both.
    """
    body = gzip.compress(_spans(1, 5)) + gzip.compress(_spans(6, 7))
    for framing in ([f"Content-Length: {len(body)}"], [CHUNKED]):
        sent = _chunked(body, 33) if framing == [CHUNKED] else body
        reply = _exchange(receiver, _head([PROTOBUF, "Content-Encoding: gzip", *framing]) + sent)
        assert reply.status == 200
    assert reader.count_spans() == 12


@pytest.mark.parametrize(
    "tail", [b"garbage after the member", b"\x1f\x8b\x08\x00truncated", b"\x1f"]
)
def test_gzip_member_followed_by_junk_is_refused_whole(
    tail: bytes, receiver: Receiver, reader: Store
) -> None:
    body = gzip.compress(_spans(1, 5)) + tail
    head = _head([PROTOBUF, "Content-Encoding: gzip", f"Content-Length: {len(body)}"])
    reply = _exchange(receiver, head + body)
    assert reply.status == 400 and "gzip" in json.loads(_status_json(reply))["message"]
    assert reader.count_spans() == 0


def _status_json(reply: RawResponse) -> bytes:
    """The error body in JSON: ask for JSON answers by sending JSON... or decode protobuf."""
    from google.rpc import status_pb2

    status = status_pb2.Status.FromString(reply.body)
    return json.dumps({"code": status.code, "message": status.message}).encode()


def test_chunked_body_over_the_limit_gets_413_before_it_ends(receiver: Receiver) -> None:
    """The answer comes once the limit is passed: the rest of the body is never sent."""
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(_head([PROTOBUF, CHUNKED]))
        piece = b"\0" * 65536
        for _ in range(LIMIT // len(piece) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        assert read_response(sock).status == 413


def test_chunked_gzip_bomb_gets_413_before_it_ends(receiver: Receiver, reader: Store) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(_head([PROTOBUF, CHUNKED, "Content-Encoding: gzip"]))
        sent = 0
        while sent < len(bomb) // 2:  # half the bomb already decodes past the limit
            sock.sendall(b"%x\r\n%s\r\n" % (4096, bomb[sent : sent + 4096]))
            sent += 4096
        assert read_response(sock).status == 413
    assert reader.count_spans() == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (["Content-Length: 10", "Content-Length: 12"], 400),
        (["Content-Length: 10, 12"], 400),
        (["Content-Length: +10"], 400),
        (["Content-Length: 10", CHUNKED], 400),
        (["Transfer-Encoding: gzip, chunked"], 501),
        ([], 411),
    ],
)
def test_unclear_framing_is_refused(
    headers: list[str], status: int, receiver: Receiver, reader: Store
) -> None:
    reply = _exchange(receiver, _head([PROTOBUF, *headers]) + b"0123456789ab")
    assert reply.status == status
    assert reply.header("Connection") == "close"
    assert reader.count_spans() == 0


def test_repeated_equal_content_length_is_accepted(receiver: Receiver, reader: Store) -> None:
    body = _spans(1, 2)
    lines = [PROTOBUF, f"Content-Length: {len(body)}", f"Content-Length: {len(body)}"]
    assert _exchange(receiver, _head(lines) + body).status == 200
    assert reader.count_spans() == 2


@pytest.mark.parametrize(
    "framed",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n", b"3" * 5000 + b"\r\n", b"3\r\nab"],
)
def test_malformed_chunks_are_400(framed: bytes, receiver: Receiver, reader: Store) -> None:
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(_head([PROTOBUF, CHUNKED]) + framed)
        sock.shutdown(socket.SHUT_WR)  # a truncated body ends with the connection
        assert read_response(sock).status == 400
    assert reader.count_spans() == 0


def test_a_body_left_unread_closes_the_connection(receiver: Receiver, reader: Store) -> None:
    """An unknown path is refused before its body is read: the body must not be taken for the
    next request on the connection."""
    body = _spans(1, 2)
    head = (
        f"POST /v2/traces HTTP/1.1\r\nHost: c\r\n{PROTOBUF}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(head.encode() + body)
        reply = read_response(sock)
        assert reply.status == 404 and reply.header("Connection") == "close"
        assert sock.recv(100) == b""
    assert reader.count_spans() == 0


EXPECTING = "POST {path} HTTP/1.1\r\nHost: c\r\nExpect: 100-continue\r\n{headers}\r\n"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/traces", "Content-Type: text/plain\r\nContent-Length: 10\r\n", 415),
        ("/v1/traces", "Content-Type: application/x-protobuf\r\nContent-Length: 99999999\r\n", 413),
        (
            "/v1/traces",
            "Content-Type: application/json\r\nContent-Encoding: br\r\nContent-Length: 10\r\n",
            415,
        ),
        ("/v1/nothing", "Content-Type: application/x-protobuf\r\nContent-Length: 10\r\n", 404),
    ],
)
def test_a_refused_request_expecting_100_continue_is_refused_first(
    path: str, headers: str, status: int, receiver: Receiver
) -> None:
    """RFC 9110 10.1.1: a client that sends ``Expect: 100-continue`` waits before sending its
    body; told ``100 Continue`` first, it sent the body only to have it refused."""
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(EXPECTING.format(path=path, headers=headers).encode())
        answer = read_response(sock)
        assert answer.status == status and not answer.raw.startswith(b"HTTP/1.1 100")
        assert answer.header("Connection") == "close"
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed: a body that may never come is not waited for
        assert time.monotonic() - started < 2


def test_a_client_sending_its_body_at_once_despite_expecting_100_continue_reads_the_refusal(
    receiver: Receiver,
) -> None:
    """RFC 9110 10.1.1 lets such a client send its body without waiting: what it sends is read
    for a moment before closing, so that the answer is not lost to a reset connection."""
    head = EXPECTING.format(
        path="/v1/traces",
        headers="Content-Type: application/x-protobuf\r\nContent-Length: 99999999\r\n",
    )
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(head.encode() + b"\0" * 8_000_000)
        assert read_response(sock).status == 413


def test_an_accepted_request_expecting_100_continue_gets_it(
    receiver: Receiver, reader: Store
) -> None:
    body = _spans(1, 3)
    head = EXPECTING.format(
        path="/v1/traces",
        headers=f"Content-Type: application/x-protobuf\r\nContent-Length: {len(body)}\r\n",
    )
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(head.encode())
        assert read_response(sock).status == 100
        sock.sendall(body)
        assert read_response(sock).status == 200
    assert reader.count_spans() == 3


def test_a_body_in_one_byte_chunks_is_refused_once_they_are_too_many(
    receiver: Receiver, reader: Store
) -> None:
    """Each chunk costs its reader a size line, a piece and a charge to the memory budget: a
    body of one-byte chunks, sent as fast as a client could, cost a microsecond of the
    collector's Python a byte (a hundred times what a body costs) and slowed every other
    request. Past 128 chunks, a body's chunks must bring 256 bytes each on average."""
    body = _spans(1, 50)
    reply = _exchange(receiver, _head([PROTOBUF, CHUNKED]) + _chunked(body, 1))
    message = json.loads(_status_json(reply))["message"]
    assert reply.status == 400 and message.startswith("chunks too small: 129 chunks for 129 bytes")
    assert reply.header("Connection") == "close"
    assert reader.count_spans() == 0
    assert _exchange(receiver, _head([PROTOBUF, CHUNKED]) + _chunked(body, 256)).status == 200
    assert reader.count_spans() == 50
