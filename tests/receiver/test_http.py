"""Receiver HTTP behaviour: gzip, partial success, back-pressure, health, metrics, shutdown."""

from __future__ import annotations

import contextlib
import gc
import gzip
import http.client
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from rawhttp import RawResponse
from tests.receiver.conftest import Reply, post, read_response

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.receiver._admission import ClientStream
from tracekit.records import SpanRecord
from tracekit.store import Store, _process


def _spans(
    count: int, trace: str = "0af7651916cd43dd8448eb211c80319c", first: int = 1, name: str = ""
) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for number in range(first, first + count):
        span = scope.spans.add()
        span.trace_id, span.span_id = bytes.fromhex(trace), number.to_bytes(8, "big")
        span.name = name or f"op-{number}"
        span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()


def test_gzip_body_is_accepted(receiver: Receiver, reader: Store) -> None:
    reply = post(receiver, "/v1/traces", gzip.compress(_spans(3)), {"Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-protobuf"
    assert reader.count_spans() == 3


def test_the_server_header_names_the_collector_alone(receiver: Receiver) -> None:
    """``Server: tracekit-collector `` had a trailing space (the standard library appends the
    Python version, left empty), which strict proxies and header checks flag."""
    reply = post(receiver, "/v1/traces", _spans(1))
    assert reply.headers["server"] == "tracekit-collector"


@pytest.mark.parametrize("encoding", ["deflate", "zlib"])
def test_deflate_body_is_accepted(encoding: str, receiver: Receiver, reader: Store) -> None:
    """``zlib`` is what the OpenTelemetry Collector's exporters send for ``compression: zlib``
    (the same format as its ``deflate``), and what its receiver reads."""
    reply = post(receiver, "/v1/traces", zlib.compress(_spans(3)), {"Content-Encoding": encoding})
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-protobuf"
    assert reader.count_spans() == 3


@pytest.mark.parametrize(
    "body",
    [
        zlib.compress(_spans(3)) + b"junk",  # data after the stream's end
        zlib.compress(_spans(3))[:-6],  # cut short
        gzip.compress(_spans(3)),  # gzip sent as deflate
    ],
    ids=["data-after-the-end", "truncated", "gzip"],
)
def test_bad_deflate_is_400_and_nothing_is_stored(
    body: bytes, receiver: Receiver, reader: Store
) -> None:
    reply = post(receiver, "/v1/traces", body, {"Content-Encoding": "deflate"})
    assert reply.status == 400 and b"deflate" in reply.body
    assert reader.count_spans() == 0


def test_deflate_bomb_gets_413(receiver: Receiver) -> None:
    bomb = zlib.compress(bytes(64 * 1024 * 1024), 9)
    reply = post(receiver, "/v1/traces", bomb, {"Content-Encoding": "deflate"})
    assert reply.status == 413


def test_a_protobuf_export_is_stored_on_protobuf_releases_before_5_28(
    receiver: Receiver, reader: Store
) -> None:
    """The body arrives in a bytearray, which protobuf's parser refused before 5.28 (TypeError;
    opentelemetry-proto allows protobuf 5.0 and up): every uncompressed protobuf export then
    had its connection closed unanswered, the SDK retried it to the end and nothing was
    stored."""
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    assert post(receiver, "/v1/traces", _spans(3)).status == 200
    assert post(receiver, "/v1/logs", request.SerializeToString()).status == 200
    assert reader.count_spans() == 3 and reader.count_logs() == 1


def test_protobuf_partial_success(receiver: Receiver, reader: Store) -> None:
    request = ExportTraceServiceRequest.FromString(_spans(2))
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b"\0" * 8
    reply = post(receiver, "/v1/traces", request.SerializeToString())
    assert reply.status == 200
    partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
    assert partial.rejected_spans == 1 and partial.error_message
    assert reader.count_spans() == 1


@pytest.mark.parametrize("where", ["span name", "attribute value"])
def test_a_span_with_a_string_that_is_not_utf8_is_rejected_alone(
    where: str, receiver: Receiver, reader: Store
) -> None:
    """Protobuf strings must be UTF-8, but C++ and Go SDKs can send other bytes: one such span
    failed the whole request with 400 (not retried), and the good spans beside it were lost."""
    request = ExportTraceServiceRequest.FromString(_spans(3, name="op-ok"))
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="sku").value.string_value = "sku-ok"
    marker = "op-XX" if where == "span name" else "sku-XX"
    spans = request.resource_spans[0].scope_spans[0].spans
    if where == "span name":
        spans[1].name = marker
    else:
        spans[1].attributes[0].value.string_value = marker
    body = request.SerializeToString().replace(marker.encode(), marker[:-2].encode() + b"\xff\xfe")

    reply = post(receiver, "/v1/traces", body)

    assert reply.status == 200
    partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
    assert partial.rejected_spans == 1 and "UTF-8" in partial.error_message
    assert reader.count_spans() == 2


def _not_utf8(body: bytes, marker: str) -> bytes:
    return body.replace(marker.encode(), marker[:-2].encode() + b"\xff\xfe")


@pytest.mark.parametrize("where", ["body", "attribute", "resource"])
def test_a_log_record_with_a_string_that_is_not_utf8_is_rejected_alone(
    where: str, receiver: Receiver, reader: Store
) -> None:
    """As for spans: the bad record (or every record of a bad resource) is rejected, not the
    whole request."""
    request = ExportLogsServiceRequest()
    for service in ("svc-ok", "svc-XX"):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = service
        for n in range(2):
            record = resource_logs.scope_logs.add().log_records.add(time_unix_nano=time.time_ns())
            record.body.string_value = f"line-{service}-{n}"
            record.attributes.add(key="sku").value.string_value = f"sku-{service}-{n}"
    marker = {"body": "line-svc-ok-1", "attribute": "sku-svc-ok-1", "resource": "svc-XX"}[where]
    reply = post(receiver, "/v1/logs", _not_utf8(request.SerializeToString(), marker))

    assert reply.status == 200
    partial = ExportLogsServiceResponse.FromString(reply.body).partial_success
    rejected = 2 if where == "resource" else 1
    assert partial.rejected_log_records == rejected and "UTF-8" in partial.error_message
    assert reader.count_logs() == 4 - rejected


@pytest.mark.parametrize("where", ["resource", "scope"])
def test_spans_under_a_resource_not_utf8_are_rejected_and_under_such_a_scope_kept(
    where: str, receiver: Receiver, reader: Store
) -> None:
    request = ExportTraceServiceRequest()
    for n, service in enumerate(("svc-ok", "svc-XX")):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name").value.string_value = service
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = f"scope-{service}"
        span = scope_spans.spans.add(name="op", start_time_unix_nano=time.time_ns())
        span.end_time_unix_nano = span.start_time_unix_nano
        span.trace_id, span.span_id = b"\x01" * 16, bytes([n + 1]) * 8
    marker = "svc-XX" if where == "resource" else "scope-svc-ok"
    reply = post(receiver, "/v1/traces", _not_utf8(request.SerializeToString(), marker))

    assert reply.status == 200
    partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
    if where == "resource":  # its spans cannot be told apart from another service's
        assert partial.rejected_spans == 1 and "UTF-8" in partial.error_message
        (stored,) = reader.spans_since(0)
        assert stored.service == "svc-ok"
    else:  # the scope is not stored with logs, and with spans only for its name: kept unscoped
        assert not partial.rejected_spans
        scopes = {span.service: span.scope for span in reader.spans_since(0)}
        assert scopes == {"svc-ok": None, "svc-XX": "scope-svc-XX"}


def test_metrics_are_acknowledged_not_stored(receiver: Receiver, reader: Store) -> None:
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.add(name="http.server.duration")
    assert post(receiver, "/v1/metrics", request.SerializeToString()).status == 200
    assert reader.count_spans() == 0 and reader.count_logs() == 0


def test_health_endpoint(receiver: Receiver) -> None:
    assert receiver.wait_ready(30)  # "starting" (503) until its writer process can commit
    conn = http.client.HTTPConnection(*receiver.address, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    conn.close()


def test_head_answers_like_get_without_a_body(receiver: Receiver) -> None:
    """Load balancers and probes check health with HEAD; RFC 9110: the GET's head, no content."""
    assert receiver.wait_ready(30)  # "starting" (503) until its writer process can commit

    def exchange(method: str, path: str) -> tuple[str, dict[str, str], bytes]:
        with socket.create_connection(receiver.address, timeout=10) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return status, headers, body

    got = exchange("GET", "/health")
    for path, status in (("/health", "200"), ("/v1/traces", "405")):
        line, headers, body = exchange("HEAD", path)
        assert line.split()[1] == status and body == b"", (path, line, body)
        if status == "200":
            assert headers["content-length"] == got[1]["content-length"] != "0"


def test_error_bodies_name_the_matching_rpc_code(receiver: Receiver) -> None:
    """OTLP/HTTP error bodies are google.rpc.Status: a 404 says NOT_FOUND, not UNKNOWN."""
    reply = post(receiver, "/v1/nowhere", b"", {"Content-Type": "application/json"})
    assert reply.status == 404 and json.loads(reply.body)["code"] == 5  # NOT_FOUND


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("POST", "/v1/trace", 404, code_pb2.NOT_FOUND), ("GET", "/v1/traces", 405,
     code_pb2.UNIMPLEMENTED), ("PUT", "/v1/logs", 405, code_pb2.UNIMPLEMENTED),
     ("GET", "/v1/nowhere", 404, code_pb2.NOT_FOUND)],
)  # fmt: skip
def test_refusals_of_a_protobuf_request_are_protobuf(
    method: str, path: str, status: int, code: int, receiver: Receiver
) -> None:
    """A response uses the request's Content-Type (OTLP/HTTP), and an SDK decodes a protobuf
    request's failure as a google.rpc.Status: 404 and 405 answered in JSON, which it cannot
    decode, so an exporter sent to a wrong path could not say why."""
    connection = http.client.HTTPConnection(*receiver.address, timeout=30)
    try:
        connection.request(method, path, b"", {"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == status
    assert response.getheader("Content-Type") == "application/x-protobuf"
    assert status_pb2.Status.FromString(body).code == code


def test_full_queue_answers_503_with_retry_after(store_path: Path) -> None:
    """Hold the database lock from outside so the writer stalls, then overfill the queue.

    The requests reuse one span name, interned before the lock is taken: a never-seen string
    needs the write lock too (a request that brings one waits for it, then gets 503).
    """
    store = Store(store_path)
    store.create()
    config = ReceiverConfig(port=0, queue_capacity=10, commit_timeout=60)
    receiver = Receiver(store, config).start()
    rows = store.encoder.encode(_decoded_spans(10))  # interns op-1..op-10 and the resource
    assert post(receiver, "/v1/traces", _spans(1, first=99, name="op")).status == 200  # and "op"
    blocker = sqlite3.connect(store_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    replies: list[Reply] = []
    try:
        stalled = receiver.queue.submit(rows, [])
        # the writer took it and waits for the lock
        wait_for(lambda: receiver.queue.depth == 0, 30, "an empty queue")
        second = threading.Thread(
            target=lambda: replies.append(
                post(receiver, "/v1/traces", _spans(10, first=100, name="op"))
            )
        )
        second.start()
        wait_for(lambda: receiver.queue.depth == 10, 30, "10 batches queued")
        full = post(receiver, "/v1/traces", _spans(5, first=200, name="op"))
        assert full.status == 503 and full.headers["retry-after"] == "1"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    second.join()
    assert stalled.done.wait(60) and stalled.error is None
    receiver.stop()
    assert [r.status for r in replies] == [200]
    assert Store(store_path).count_spans() == 21


def _decoded_spans(count: int) -> list[SpanRecord]:
    from tracekit.receiver._protobuf import decode_traces

    return decode_traces(_spans(count)).spans


def test_stop_writes_everything_acknowledged(store_path: Path) -> None:
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    statuses = [post(receiver, "/v1/traces", _spans(50, first=1 + 50 * i)).status for i in range(5)]
    receiver.stop()
    assert statuses == [200] * 5
    assert Store(store_path).count_spans() == 250


def _writer_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "tracekit-writer"]


def test_writer_process_killed_is_replaced_and_nothing_acknowledged_is_lost(
    receiver: Receiver, reader: Store
) -> None:
    """SIGKILL the writer process: requests get 503 rather than a false 200, then a new one."""
    assert post(receiver, "/v1/traces", _spans(3)).status == 200
    (writer,) = _writer_processes()
    os.kill(writer.pid or 0, signal.SIGKILL)
    writer.join(10)
    statuses = [post(receiver, "/v1/traces", _spans(2, first=10 + 2 * i)).status for i in range(3)]
    assert statuses[0] in (200, 503) and statuses[1:] == [
        200,
        200,
    ]  # the first may meet the dead one
    acknowledged = 3 + 2 * statuses.count(200)
    assert reader.count_spans() == acknowledged
    assert len(_writer_processes()) == 1


def test_writer_process_ends_with_the_receiver(store_path: Path) -> None:
    """The SQLite writer runs in a child process; stopping the receiver ends it."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    assert post(receiver, "/v1/traces", _spans(1)).status == 200
    assert len(_writer_processes()) == 1
    receiver.stop()
    assert _writer_processes() == []


def _stopped_mid_upload(
    store_path: Path, begun: Callable[[Receiver], object], pause: float
) -> RawResponse:
    """Send an exporter's 40 spans, stop the receiver once ``begun(receiver)`` holds after the
    first 100 bytes, send the rest ``pause`` s into the stop; the answer, once the stop ended
    (within 30 s)."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    body = _spans(40)
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
        wait_for(lambda: begun(receiver))
        stopping = threading.Thread(target=receiver.stop)
        stopping.start()
        wait_for(lambda: receiver.service.stopping)
        time.sleep(pause)
        sock.sendall(body[100:])
        answer = read_response(sock)
    stopping.join(30)
    assert not stopping.is_alive()
    return answer


def test_a_body_still_arriving_at_stop_is_stored_not_cut_off(store_path: Path) -> None:
    """Stopping (SIGTERM) while an exporter uploads: its request finishes, it is told 200."""
    idle: list[socket.socket] = []  # a keep-alive connection, waiting for its next request

    def both_connected(receiver: Receiver) -> bool:
        if not idle:
            idle.append(socket.create_connection(receiver.address, timeout=10))
        return len(receiver.httpd.connections.sockets()) == 2

    answer = _stopped_mid_upload(store_path, both_connected, pause=0.3)
    assert idle[0].recv(100) == b""  # the idle connection was closed, not waited for
    idle[0].close()
    assert answer.status == 200 and answer.header("Connection") == "close"
    assert Store(store_path).count_spans() == 40


def test_a_receiver_that_cannot_listen_leaves_no_descriptor_open(store_path: Path) -> None:
    """An embedding service retrying on a port in use must not run out of descriptors."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(OSError):
                Receiver(Store(store_path), ReceiverConfig(port=taken.getsockname()[1]))
        assert len(os.listdir("/proc/self/fd")) == before


def test_a_stop_that_outwaits_a_slow_upload_leaves_no_descriptor_open(store_path: Path) -> None:
    """A stop gives up waiting for a handler (an upload slower than its wait) and left the
    stop's pipe open for that handler: two descriptors lost for good on every such stop of an
    embedded receiver. They are closed once the last handler ends."""
    gc.collect()  # earlier tests' unclosed Store(...) readers, closed now rather than meanwhile
    before = len(os.listdir("/proc/self/fd"))
    config = ReceiverConfig(port=0, commit_timeout=0.1, request_timeout=20, writer_process=False)
    receiver = Receiver(Store(store_path), config).start()
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # and nothing more, for now
        wait_for(lambda: receiver.httpd.connections.sockets() != [])
        receiver.stop()  # gives up on the upload after 5.1 s
        assert receiver.httpd.connections.sockets() != []
    wait_for(lambda: receiver.httpd.connections.sockets() == [])
    wait_for(lambda: len(os.listdir("/proc/self/fd")) == before)


@pytest.mark.parametrize(
    ("target", "status"),
    [("http://{host}/v1/traces", 200), ("HTTP://{host}/v1/traces?x=1", 200),
     ("http://{host}/v1/other", 404), ("http://[::1/v1/traces", 404)],
)  # fmt: skip
def test_an_absolute_form_target_is_routed_by_its_path(
    target: str, status: int, receiver: Receiver
) -> None:
    """RFC 9112 3.2.2: a server must accept ``POST http://host:4318/v1/traces`` (what a client
    sends to a proxy, and so to a collector set as its proxy); it was 404."""
    host = "{}:{}".format(*receiver.address)
    head = (
        f"POST {target.format(host=host)} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(head.encode())
        assert read_response(sock).status == status


def test_a_request_not_yet_read_at_stop_is_stored_not_cut_off(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its handler thread not yet run (a loaded machine) when the stop began, a request's first
    bytes waited in the socket unread: the stop took the connection for an idle one and shut
    it, and the exporter was told 400 "body shorter than Content-Length" (found by CI)."""
    arm = ClientStream.arm
    started = threading.Event()

    def late(stream: ClientStream) -> None:
        started.set()
        time.sleep(0.5)  # the stop begins meanwhile
        arm(stream)

    monkeypatch.setattr(ClientStream, "arm", late)
    answer = _stopped_mid_upload(store_path, lambda _: started.is_set(), pause=0.8)
    assert answer.status == 200 and answer.header("Connection") == "close"
    assert Store(store_path).count_spans() == 40


def test_a_request_begun_as_the_stop_wakes_its_idle_connection_is_stored(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive exporter sent its next batch as the stop began; its handler, preempted
    right after reading the request's first bytes (a loaded machine), had not yet marked the
    connection as reading one. The stop found it idle with nothing left to read, shut its
    reading side, and the rest of the body read as cut short: the exporter was told 400 "body
    shorter than Content-Length", which it does not retry, and the batch was lost."""
    armed, paused, resume = threading.Event(), threading.Event(), threading.Event()
    recv_into = socket.socket.recv_into

    def late(sock: socket.socket, *args: Any) -> int:
        count = recv_into(sock, *args)
        if count and armed.is_set() and not paused.is_set():
            paused.set()
            resume.wait(10)  # the handler thread does not run meanwhile
        return count

    monkeypatch.setattr(socket.socket, "recv_into", late)
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    first, body = _spans(1, first=100), _spans(40)
    with socket.create_connection(receiver.address, timeout=10) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(first) + first)
        assert read_response(sock).status == 200  # the connection is kept alive, idle
        armed.set()
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
        assert paused.wait(10)
        stopping = threading.Thread(target=receiver.stop)
        stopping.start()
        wait_for(lambda: receiver.httpd.socket.fileno() == -1)  # next: the connections
        time.sleep(0.3)
        resume.set()
        time.sleep(0.3)  # the body's last bytes come later, as a large one's do
        sock.sendall(body[100:])
        answer = read_response(sock)
    stopping.join(30)
    assert answer.status == 200 and answer.header("Connection") == "close"
    assert not stopping.is_alive() and Store(store_path).count_spans() == 41


@pytest.mark.parametrize("count", [3, 5000], ids=["answer-awaited", "batch-past-the-pipe"])
def test_a_stalled_writer_process_is_replaced_and_the_stop_ends(
    count: int, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer process that stopped answering (SIGSTOP here; hung, in the field) held every
    request that reached it, and a stop (SIGTERM to ``tracekit collector``) waited for it for
    ever: still running 100 s later (a batch larger than its pipe takes, the handing over
    itself never ended). Taken for dead past its answer timeout, it is replaced, what it held
    is written again and acknowledged, and the stop ends."""
    monkeypatch.setattr(_process, "ANSWER_TIMEOUT", 3.0)
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0)).start()
    assert post(receiver, "/v1/traces", _spans(1, first=10_000)).status == 200
    (writer,) = _writer_processes()
    os.kill(writer.pid or 0, signal.SIGSTOP)
    try:
        answers: list[int] = []
        posting = threading.Thread(
            target=lambda: answers.append(post(receiver, "/v1/traces", _spans(count)).status)
        )
        posting.start()
        time.sleep(0.5)  # decoded and handed to the writer process
        stopping = threading.Thread(target=receiver.stop)
        stopping.start()
        stopping.join(30)
        assert not stopping.is_alive()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer.pid or 0, signal.SIGCONT)  # let a failed test end
        stopping.join(60)
    posting.join(10)
    assert answers == [200] and Store(store_path).count_spans() == 1 + count
    assert _writer_processes() == []
