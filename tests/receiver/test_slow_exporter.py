"""An exporter on a slow link: its body outlasts the request deadline once, and it must retry.

The OpenTelemetry Python SDK's OTLP/HTTP exporter sends through a loopback proxy that passes the
first connection's upload on a few hundred bytes at a time, as a congested link would. The
OTLP/HTTP specification has exporters retry 429, 502, 503 and 504 only: a 408 made it drop the
batch, so the collector answers 503 with Retry-After and the retry, on a fresh connection, is
stored.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store


class SlowFirstUpload:
    """A loopback TCP proxy to ``upstream``; the first connection's upload trickles."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                self.sockets += [client, server]
                self.connections += 1
                slow = self.connections == 1
                threading.Thread(target=_pump, args=(client, server, slow), daemon=True).start()
                threading.Thread(target=_pump, args=(server, client, False), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def _pump(source: socket.socket, target: socket.socket, slow: bool) -> None:
    with suppress(OSError):
        while data := source.recv(256 if slow else 65536):
            target.sendall(data)
            if slow:
                time.sleep(0.05)  # about 5 KB a second
        target.shutdown(socket.SHUT_WR)


@pytest.fixture
def slow_link(store_path: Path) -> Iterator[SlowFirstUpload]:
    config = ReceiverConfig(port=0, request_timeout=1.0)
    receiver = Receiver(Store(store_path), config).start()
    proxy = SlowFirstUpload(receiver.address)
    yield proxy
    proxy.close()
    receiver.stop()


def _spans(count: int) -> list[object]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "far-away"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.slow")
    for n in range(count):
        tracer.start_span("GET /items/{id}", attributes={"n": n, "padding": "x" * 40}).end()
    return list(memory.get_finished_spans())


def test_a_body_slower_than_the_deadline_is_retried_and_stored(
    slow_link: SlowFirstUpload, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{slow_link.port}/v1/traces", timeout=15)
    spans = _spans(200)  # about 20 KB: 4 s on the slow connection, against a 1 s deadline
    result = exporter.export(spans)  # type: ignore[arg-type]
    exporter.shutdown()
    assert slow_link.connections == 2  # refused once, then sent again
    (retrying,) = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert "Service Unavailable" in retrying and "retrying in 1.00s" in retrying  # Retry-After
    assert result == SpanExportResult.SUCCESS
    with Store(store_path) as reader:
        assert reader.count_spans() == 200
