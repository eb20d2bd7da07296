"""A real receiver on a free loopback port, writing into a fresh SQLite store per test."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from rawhttp import RawResponse, parse
from tests.receiver._js_sdk import installed_node

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit.store._process import WriterProcess
from tracekit.store._rows import SpanRows


@dataclass
class Reply:
    """What a client sees: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


def post(
    receiver: Receiver, path: str, body: bytes, headers: dict[str, str] | None = None
) -> Reply:
    """POST ``body`` over a fresh HTTP/1.1 connection and read the whole answer."""
    host, port = receiver.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        sent = {"Content-Type": "application/x-protobuf", **(headers or {})}
        conn.request("POST", path, body, sent)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def storing(receiver: Receiver) -> Receiver:
    """``receiver`` once it has stored a request (a log record: tests count spans) and closed
    its connection. Its writer process imports as the receiver starts, which a loaded machine
    makes take seconds: the first request waits for it, and a test timing its requests (or
    holding them to a 2 s deadline) timed that wait too."""
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "up"
    assert post(receiver, "/v1/logs", request.SerializeToString()).status == 200
    # its connection closed, counted no more against a cap the test then fills
    wait_for(lambda: not receiver.httpd.connections.sockets(), 10, "the connection forgotten")
    return receiver


def writer_pid(receiver: Receiver) -> int:
    """The pid of ``receiver``'s writer process (to stop it, as a hung disk would)."""
    process = receiver.queue._process
    assert process is not None and process._process is not None and process._process.pid
    return process._process.pid


def read_response(sock: socket.socket) -> RawResponse:
    """Read one response (head, then Content-Length bytes); IndexError if closed unanswered."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return parse(received)
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(parse(head + b"\r\n\r\n").header("Content-Length") or 0)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return parse(head + b"\r\n\r\n" + body)


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the pinned OpenTelemetry JS SDK installed (``js_sdk/``)."""
    return installed_node()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where this test's store lives."""
    return tmp_path / "tracekit.db"


@pytest.fixture
def receiver(store_path: Path) -> Iterator[Receiver]:
    """A started receiver (stopped, gracefully, after the test)."""
    started = Receiver(Store(store_path), ReceiverConfig(port=0, max_body_bytes=4 * 1024 * 1024))
    started.start()
    yield started
    started.stop()


@pytest.fixture
def reader(store_path: Path, receiver: Receiver) -> Iterator[Store]:
    """A separate Store object reading the receiver's file, as ``tracekit trace`` would."""
    store = Store(store_path)
    yield store
    store.close()


def queued_rows(store: Store, trace_id: str, count: int) -> SpanRows:
    """``count`` server spans of one trace, encoded as the write queue takes them."""
    return store.encoder.encode([_server_span(trace_id, n) for n in range(count)])


def _server_span(trace_id: str, number: int) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id, span_id=f"{number + 1:016x}", parent_span_id=None, service="checkout",
        name="GET /orders", kind="SERVER", start_unix_nano=1_000 + number,
        end_unix_nano=2_000 + number,
    )  # fmt: skip


@pytest.fixture
def writer_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The writer process's start held until the event is set (a loaded machine, where its
    interpreter takes seconds to import the store), or 20 s at most."""
    gate = threading.Event()
    start = WriterProcess._connection

    def held(self: WriterProcess) -> Any:
        gate.wait(20)
        return start(self)

    monkeypatch.setattr(WriterProcess, "_connection", held)
    yield gate
    gate.set()
