"""Admission control in a receiver of this process: the connection cap, the memory budget and
the request deadline each answer at once, and a slow client makes room for a whole request."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver.conftest import post, read_response, storing

from tracekit.receiver import Receiver, ReceiverConfig, _admission
from tracekit.receiver._admission import RECORD_COST, ClientStream
from tracekit.store import Store


def _request(span_id: int = 1) -> bytes:
    request = ExportTraceServiceRequest()
    now = time.time_ns()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(name="op", start_time_unix_nano=now, end_time_unix_nano=now)
    )
    span.trace_id, span.span_id = b"\x01" * 16, span_id.to_bytes(8, "big")
    return request.SerializeToString()


def _head(length: int) -> bytes:
    return (
        "POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver with small caps: 4 connections, 1 MiB of bodies, 2 s per request."""
    config = ReceiverConfig(
        port=0, max_connections=4, max_memory_bytes=1024 * 1024, request_timeout=2.0,
        idle_timeout=5.0,
    )  # fmt: skip
    receiver = storing(Receiver(Store(tmp_path / "small.db"), config).start())
    yield receiver
    receiver.stop()


def _behind_nat(receiver: Receiver | None = None) -> socket.socket:
    """A client socket of the address 127.0.0.2 (exporters behind one NAT address), connected
    to ``receiver`` when given."""
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    if receiver is not None:
        sock.connect(receiver.address)
    return sock


def test_over_the_connection_cap_a_client_gets_503_at_once(small: Receiver) -> None:
    held = [socket.create_connection(small.address, timeout=10) for _ in range(4)]
    try:
        time.sleep(0.2)  # the receiver has accepted all four
        with socket.create_connection(small.address, timeout=10) as fifth:
            started = time.monotonic()
            answer = read_response(fifth)
        assert answer.status == 503 and answer.header("Retry-After") == "1"
        assert time.monotonic() - started < 1.0
    finally:
        for sock in held:
            sock.close()


def test_a_slow_client_makes_room_for_a_whole_request(small: Receiver, tmp_path: Path) -> None:
    """Four clients trickle a request; after a second, a fifth (whole) request displaces one."""
    slow = [socket.create_connection(small.address, timeout=10) for _ in range(4)]
    for sock in slow:
        sock.sendall(b"PO")
    time.sleep(1.2)
    started = time.monotonic()
    assert post(small, "/v1/traces", _request()).status == 200
    assert time.monotonic() - started < 1.0
    answers = []
    for sock in slow:
        sock.settimeout(0.2)
        try:
            answers.append(read_response(sock).status)
        except (TimeoutError, IndexError):  # still waiting, or cut off at its deadline since
            answers.append(None)
        sock.close()
    assert answers.count(503) == 1  # the one displaced was told to come back


def test_connections_from_one_address_make_room_for_another_however_young(
    small: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections renewed faster than a second are never old enough to be displaced: from one
    address, 80 of them renewed every 0.5 s at a cap of 64 made the SDK's exporter lose 1 batch
    in 5 (32 every 0.2 s at a cap of 8: 1 or 2 in 3). Now a newcomer from another address
    displaces a connection of the address holding over half the cap, young or not."""
    monkeypatch.setattr(_admission, "MIN_AGE", 60.0)  # none of them is old enough
    crowd = []
    for _ in range(4):
        sock = _behind_nat(small)
        sock.sendall(b"PO")
        crowd.append(sock)
    time.sleep(0.2)  # the receiver has accepted all four
    try:
        assert post(small, "/v1/traces", _request()).status == 200  # from 127.0.0.1
        answers = []
        for sock in crowd:
            sock.settimeout(0.5)
            try:
                answers.append(read_response(sock).status)
            except (TimeoutError, IndexError):
                answers.append(None)
    finally:
        for sock in crowd:
            sock.close()
    assert answers.count(503) == 1  # the one displaced was told to come back


def test_an_address_making_room_gives_up_an_idle_connection_before_a_request_arriving(
    small: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporters behind one NAT address hold three keep-alive connections and are sending a
    batch on a fourth. A newcomer from another address took the batch's connection (503, the
    batch sent again or lost), not an idle one, which nothing is lost by closing."""
    monkeypatch.setattr(_admission, "MIN_AGE", 60.0)  # none of them is old enough
    body = _request(span_id=7)
    behind_nat = []
    for _ in range(4):
        sock = _behind_nat(small)
        behind_nat.append(sock)
    sending = behind_nat[-1]
    sending.sendall(_head(len(body)) + body[:10])
    time.sleep(0.2)  # the receiver has accepted all four and read the batch's first bytes
    try:
        assert post(small, "/v1/traces", _request(span_id=1)).status == 200  # from 127.0.0.1
        sending.sendall(body[10:])
        sending.settimeout(5)
        answer = read_response(sending).status
    finally:
        for sock in behind_nat:
            sock.close()
    assert answer == 200
    with Store(tmp_path / "small.db") as store:
        assert store.count_spans() == 2


def test_a_request_waiting_unread_is_not_taken_for_an_idle_connection(
    small: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind one NAT address an exporter has sent a whole batch, whose handler thread has not
    run yet (a loaded machine); three more connections wait idle. A newcomer from another
    address displaced the batch's connection, the oldest, taken for an idle one as nothing of
    it had been read: its exporter was told 503 while an idle connection, which nothing is lost
    by closing, was there to close."""
    monkeypatch.setattr(_admission, "MIN_AGE", 60.0)  # none of them is old enough
    body = _request(span_id=7)
    sending = _behind_nat()
    arm, newcomer_answered = ClientStream.arm, threading.Event()

    def late_for_the_batch(stream: ClientStream) -> None:
        if stream.sock.getpeername() == sending.getsockname():
            newcomer_answered.wait(10)  # the batch's handler runs only after the newcomer
        arm(stream)

    monkeypatch.setattr(ClientStream, "arm", late_for_the_batch)
    sending.connect(small.address)
    sending.sendall(_head(len(body)) + body)
    idle = []
    for _ in range(3):
        sock = _behind_nat(small)
        idle.append(sock)
    try:
        assert post(small, "/v1/traces", _request(span_id=1)).status == 200  # from 127.0.0.1
        newcomer_answered.set()
        sending.settimeout(5)
        answer = read_response(sending).status
        readable, _, _ = select.select(idle, [], [], 4)
        closed = [sock.recv(65536) for sock in readable]
    finally:
        for sock in [sending, *idle]:
            sock.close()
    assert answer == 200
    assert closed == [b""]  # an idle one made room, told nothing
    with Store(tmp_path / "small.db") as store:
        assert store.count_spans() == 2


def test_a_connection_made_room_of_before_its_handler_ran_is_closed_quietly(
    small: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exporter behind a NAT address opened a connection and has sent nothing yet; its
    handler thread has not run (a loaded machine) when a newcomer from another address makes
    room. It is closed unanswered, as an idle one is; its handler failed instead, logging
    "tracekit collector: request failed: AttributeError" as if the collector had a bug."""
    monkeypatch.setattr(_admission, "MIN_AGE", 60.0)  # none of them is old enough
    first = _behind_nat()
    arm, newcomer_answered = ClientStream.arm, threading.Event()

    def late_for_the_first(stream: ClientStream) -> None:
        if stream.sock.getpeername() == first.getsockname():
            newcomer_answered.wait(10)  # its handler runs only after the newcomer's answer
        arm(stream)

    monkeypatch.setattr(ClientStream, "arm", late_for_the_first)
    first.connect(small.address)
    others = []
    for _ in range(3):
        sock = _behind_nat(small)
        others.append(sock)
    try:
        assert post(small, "/v1/traces", _request()).status == 200  # from 127.0.0.1
        newcomer_answered.set()
        first.settimeout(5)
        received = first.recv(65536)  # (its handler's failure was logged first)
    finally:
        for sock in [first, *others]:
            sock.close()
    assert received == b""  # closed, told nothing
    assert "request failed" not in caplog.text


def test_an_idle_keep_alive_connection_making_room_is_closed_unanswered(small: Receiver) -> None:
    """Four exporters' keep-alive connections wait for their next request; after a second, a
    fifth client displaces one. It asked nothing, so it is told nothing: closed, as at its idle
    timeout. Before, it was sent a 503 answering no request, which Go's HTTP client logs as
    "Unsolicited response received on idle HTTP channel" and OkHttp reads as the answer to its
    next request."""
    body = _request()
    idle = [socket.create_connection(small.address, timeout=10) for _ in range(4)]
    for sock in idle:
        sock.sendall(_head(len(body)) + body)
        assert read_response(sock).status == 200
    time.sleep(1.2)
    assert post(small, "/v1/traces", _request(2)).status == 200
    readable, _, _ = select.select(idle, [], [], 4)  # within the others' 5 s idle timeout
    received = [sock.recv(65536) for sock in readable]
    for sock in idle:
        sock.close()
    assert received == [b""]  # one was closed, and sent nothing


def test_over_the_memory_budget_a_request_gets_503_before_sending_its_body(
    small: Receiver,
) -> None:
    """Other requests hold part of the 1 MiB budget; a 2 MiB body (16 MiB to hold, at 8 bytes
    per byte) does not fit, and is told so from its Content-Length."""
    assert small.budget.take(256 * 1024)
    try:
        with socket.create_connection(small.address, timeout=10) as sock:
            sock.sendall(_head(2 * 1024 * 1024))
            started = time.monotonic()
            answer = read_response(sock)
    finally:
        small.budget.give(256 * 1024)
    assert answer.status == 503 and answer.header("Retry-After") == "1"
    assert time.monotonic() - started < 1.0
    assert small.budget.used == 0


def test_a_request_holds_what_it_has_sent_not_what_it_declares(small: Receiver) -> None:
    """A client declares 1 MiB (6 MiB to parse, more than the whole budget) and sends one byte:
    it holds that byte, and another client's request is still taken."""
    with socket.create_connection(small.address, timeout=10) as sock:
        sock.sendall(_head(1024 * 1024) + b"\x0a")
        assert _soon(lambda: small.budget.used == 1), small.budget.used
        assert post(small, "/v1/traces", _request()).status == 200
        assert small.budget.used == 1
    assert _soon(lambda: small.budget.used == 0)


def test_a_whole_body_whose_cost_does_not_fit_gets_503(small: Receiver) -> None:
    """What parsing costs is charged once the body is whole: when others took the room meanwhile,
    503 at once, and the connection (its body read) serves the retry."""
    request = ExportTraceServiceRequest.FromString(_request())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="payload").value.string_value = "x" * 100_000
    body = request.SerializeToString()  # 600 KB to parse: fits in the 1 MiB budget alone
    with socket.create_connection(small.address, timeout=10) as sock:
        sock.sendall(_head(len(body)))
        time.sleep(0.2)  # the head was read while the budget was free
        assert small.budget.take(512 * 1024)
        try:
            sock.sendall(body)
            refused = read_response(sock)
        finally:
            small.budget.give(512 * 1024)
        sock.sendall(_head(len(body)) + body)
        retried = read_response(sock)
    assert refused.status == 503 and refused.header("Retry-After") == "1"
    assert retried.status == 200
    assert _soon(lambda: small.budget.used == 0)


def _soon(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 2
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_request_larger_than_the_whole_budget_goes_alone(small: Receiver) -> None:
    """A request costing more than the whole budget waits to be alone, never refused for ever;
    only one holding more records than half the budget's worth is refused (413)."""
    request = ExportTraceServiceRequest.FromString(_request())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="payload").value.string_value = "x" * 4000
    body = request.SerializeToString()
    small.budget.limit = 2 * RECORD_COST  # room for its one record, not for its body's cost
    try:
        assert post(small, "/v1/traces", body).status == 200
    finally:
        small.budget.limit = 1024 * 1024


def test_trickling_bytes_cannot_extend_the_request_deadline(small: Receiver) -> None:
    body = _request()
    with socket.create_connection(small.address, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_head(len(body)))
        answer = None
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                answer = read_response(sock)
                break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - started
    # 503, which exporters retry (408 they do not), and the connection closes
    assert answer is not None and answer.status == 503 and answer.header("Retry-After") == "1"
    assert answer.header("Connection") == "close"
    assert 1.8 < elapsed < 3.5  # the 2 s deadline, not 0.3 s per byte times the body (~20 s)


def test_a_trickled_request_head_is_cut_off_at_the_deadline(small: Receiver) -> None:
    with socket.create_connection(small.address, timeout=10) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"POST /v1/traces HTTP/1.1\r\nHost: c\r\n" * 3:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 4:
                break
        sock.settimeout(1)
        try:
            closed = closed or sock.recv(100) == b""
        except OSError:
            closed = True
    assert closed and time.monotonic() - started < 3.5


def test_more_records_than_half_the_budget_is_413(small: Receiver) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    most = small.budget.limit // 2 // RECORD_COST
    for n in range(most + 1):
        span = scope.spans.add(name="op", start_time_unix_nano=now, end_time_unix_nano=now)
        span.trace_id, span.span_id = b"\x02" * 16, (n + 1).to_bytes(8, "big")
    reply = post(small, "/v1/traces", request.SerializeToString())
    assert reply.status == 413 and f"at most {most}".encode() in reply.body
    del scope.spans[most:]
    assert post(small, "/v1/traces", request.SerializeToString()).status == 200


def test_metrics_cost_only_their_body_as_they_are_never_built(small: Receiver) -> None:
    """A JSON export of metrics was charged what parsing JSON costs (12 bytes a byte), so while
    other requests held part of the budget it got 503 again and again; it builds nothing."""
    points = [{"timeUnixNano": str(time.time_ns()), "asInt": str(n)} for n in range(3000)]
    metric = {"name": "queue.depth", "gauge": {"dataPoints": points}}
    body = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}).encode()
    assert 100_000 < len(body) < 256 * 1024  # over a tenth of the 1 MiB budget
    assert small.budget.take(512 * 1024)  # other requests hold half the budget
    try:
        reply = post(small, "/v1/metrics", body, {"Content-Type": "application/json"})
    finally:
        small.budget.give(512 * 1024)
    assert reply.status == 200, reply.body


def _wakeups_of_other_threads() -> int:
    """Times the threads of this process but the caller's were put to sleep and woken (the
    kernel's voluntary context switches): what they cost the machine, not a duration."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        if task.name != str(threading.get_native_id()):
            with contextlib.suppress(OSError):  # ended meanwhile
                status = (task / "status").read_text()
                total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def test_a_body_arriving_a_byte_at_a_time_is_read_in_few_wakeups(tmp_path: Path) -> None:
    """A client sending its body a byte every few milliseconds woke its reader for every byte:
    a read, a piece of body and a charge to the memory budget each (50 such clients took 40% of
    a core, and the others' requests waited for it). Once a request's reads average under 512
    bytes, its reader waits half a second before each read, its bytes gathering meanwhile; the
    request is still answered as it was."""
    receiver = storing(Receiver(Store(tmp_path / "c.db"), ReceiverConfig(port=0)).start())
    body = b"".join(_request(n + 1) for n in range(8))  # one request of 8 spans, 448 bytes
    size = len(body)
    try:
        with socket.create_connection(receiver.address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(_head(len(body)))
            before = _wakeups_of_other_threads()
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(0.003)
            answer = read_response(sock)
            woken = _wakeups_of_other_threads() - before
    finally:
        receiver.stop()
    assert answer.status == 200
    with Store(tmp_path / "c.db") as reader:
        assert reader.count_spans() == 8
    assert woken < size / 4, f"{woken} wake-ups for {size} bytes"  # 26-36; 462-469 before
