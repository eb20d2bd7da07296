"""A stop drains gRPC and HTTP side by side, under one deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from conditions import wait_for

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEADLINE = 8.0  # each request's own (request_timeout)


def _never_sends(held: threading.Event) -> Iterator[bytes]:
    held.wait()
    yield from ()


def _begin_upload(address: tuple[str, int]) -> socket.socket | None:
    """An exporter's upload whose body is still to come, or None when nothing accepts it."""
    try:
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
    except OSError:
        return None
    return sock


def test_http_does_not_take_new_uploads_while_grpc_drains(store_path: Path) -> None:
    """A stop drained gRPC first and HTTP after: HTTP went on accepting while gRPC drained,
    and an upload begun late in that drain was then waited for to its own deadline, so the
    stop took the two drains end to end (about 14 s here; up to 70 s with the defaults, past
    Kubernetes' 30 s and, with a writer process taken for dead, systemd's 90 s). Both sides
    now stop accepting at once: the stop ends with the gRPC call it waited for."""
    config = ReceiverConfig(port=0, grpc_port=0, request_timeout=DEADLINE, commit_timeout=4)
    receiver = Receiver(Store(store_path), config).start()
    grpc_side, grpc_address = receiver.grpc, receiver.grpc_address
    assert receiver.wait_ready(30) and grpc_side is not None and grpc_address is not None
    held = threading.Event()
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_address[1]}")
    late: socket.socket | None = None
    try:
        stalled = channel.stream_unary(TRACES).future(_never_sends(held))  # to its deadline
        wait_for(lambda: grpc_side._open_calls == 1, what="the call open")
        began = time.monotonic()
        stopping = threading.Thread(target=receiver.stop)
        stopping.start()
        time.sleep(DEADLINE - 2)  # well into the gRPC drain: an exporter's next upload begins
        assert stopping.is_alive()  # the call still holds the stop
        late = _begin_upload(receiver.address)
        stopping.join(30)
        took = time.monotonic() - began
    finally:
        held.set()
        if late is not None:
            late.close()
        channel.close()
    assert stalled.exception(10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert late is None  # refused: its exporter sends it again, to the next collector
    assert took < DEADLINE + 2.5, took  # was 14.0 s: 6 s of gRPC drain, then the upload's 8 s
