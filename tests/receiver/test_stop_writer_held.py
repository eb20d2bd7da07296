"""A stop ends within its deadline even when the writer process is held (stopped, hung)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conditions import wait_for
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.receiver.conftest import storing, writer_pid

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
from tracekit.store._process import EXIT_TIMEOUT

STOP_TIMEOUT = 8.0  # the receiver's whole stop (the default is 35 s)


def _one_span() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("held").start_as_current_span("not acknowledged"):
        pass
    return list(memory.get_finished_spans())


@pytest.fixture
def receiver(store_path: Path) -> Iterator[Receiver]:
    config = ReceiverConfig(port=0, grpc_port=0, commit_timeout=2, stop_timeout=STOP_TIMEOUT)
    receiver = storing(Receiver(Store(store_path), config).start())
    yield receiver
    receiver.stop()  # once: a second stop does nothing


def _held_by_writer(receiver: Receiver) -> bool:
    """A request's records are taken from the queue and not yet committed."""
    queue = receiver.queue
    return not queue._items and bool(queue._unwritten_by)


def _stopped_within(receiver: Receiver, seconds: float) -> bool:
    stopping = threading.Thread(target=receiver.stop)
    stopping.start()
    stopping.join(seconds)
    return not stopping.is_alive()


def _rows(store_path: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store_path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_stop_with_the_writer_held_ends_by_its_deadline(
    receiver: Receiver, store_path: Path, protocol: str
) -> None:
    """An export in flight while the writer process is stopped: the stop waited up to 60 s
    for the writer's answer, then wrote the batch again with a new writer (58.5 s with the CLI,
    past Kubernetes' grace, which then killed it anyway). It ends by its deadline now, the
    writer killed; the exporter, never told its batch was stored, is told to retry."""
    grpc_address = receiver.grpc_address
    assert grpc_address is not None
    exporter: SpanExporter = (
        HttpSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=15)
        if protocol == "http"
        else GrpcSpanExporter(endpoint=f"http://127.0.0.1:{grpc_address[1]}", timeout=15)
    )
    writer = writer_pid(receiver)
    os.kill(writer, signal.SIGSTOP)
    results: list[SpanExportResult] = []
    exporting = threading.Thread(target=lambda: results.append(exporter.export(_one_span())))
    try:
        exporting.start()
        wait_for(lambda: _held_by_writer(receiver), what="the export's batch sent to the writer")
        assert _stopped_within(receiver, STOP_TIMEOUT + 10)  # was 60 s
        exporting.join(60)
    finally:
        exporter.shutdown()
        if os.path.exists(f"/proc/{writer}"):
            os.kill(writer, signal.SIGCONT)
    assert results == [SpanExportResult.FAILURE]  # never acknowledged: nothing was lost
    assert _rows(store_path, "SELECT count(*) FROM spans") == [(0,)]
    # the killed writer's batch mark is not left behind in meta
    assert _rows(store_path, "SELECT key FROM meta WHERE key LIKE 'written_batch %'") == []


def test_a_stop_with_the_writer_held_and_nothing_to_write_ends_soon(
    receiver: Receiver, store_path: Path
) -> None:
    """Nothing in flight, the writer process stopped: the stop waited 30 s for it to end (30.3 s
    with the CLI); everything it was sent is committed, so it is killed after a short wait."""
    writer = writer_pid(receiver)
    os.kill(writer, signal.SIGSTOP)
    try:
        assert _stopped_within(receiver, EXIT_TIMEOUT + 10)  # was 30 s
    finally:
        if os.path.exists(f"/proc/{writer}"):
            os.kill(writer, signal.SIGCONT)
    assert _rows(store_path, "SELECT key FROM meta WHERE key LIKE 'written_batch %'") == []
