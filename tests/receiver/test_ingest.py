"""The batching writer behind the receiver, with its real SQLite writer process.

Batches are handed to the writer process before the previous one is answered; these tests check
that a request is acknowledged only once its own rows are committed, and that one request that
cannot be written fails alone while the batches around it, already in flight, still land.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver.conftest import post, queued_rows

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.receiver._ingest import IngestQueue, Ticket
from tracekit.store import Retention, Store
from tracekit.store._rows import SpanRows


def _unwritable(store: Store) -> SpanRows:
    """Rows SQLite refuses: the last one lacks values for most columns."""
    rows = queued_rows(store, "e" * 32, 2)
    rows.spans.append(rows.spans[0][:3])
    return rows


def test_a_failing_request_fails_alone_while_others_are_in_flight(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create()
    # batch_size=1: every request is a batch of its own, so two are in the writer at once
    queue = IngestQueue(store, batch_size=1)
    tickets: list[Ticket] = []
    for n, trace in enumerate("abcdef"):
        rows = _unwritable(store) if n == 2 else queued_rows(store, trace * 32, 3)
        tickets.append(queue.submit(rows, []))
    queue.start()
    for ticket in tickets:
        assert ticket.done.wait(30)
    queue.close()

    failed = [n for n, ticket in enumerate(tickets) if ticket.error is not None]
    assert failed == [2]
    assert queue.committed == 5 * 3
    with Store(tmp_path / "s.db") as reader:
        assert reader.count_spans() == 5 * 3


def test_requests_queued_before_start_are_written_in_one_pass_and_closing_writes_all(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db")
    store.create()
    queue = IngestQueue(store)
    tickets = [queue.submit(queued_rows(store, f"{n + 1:032x}", 50), []) for n in range(40)]
    queue.start()
    queue.close()  # graceful: everything queued is committed before the writer stops
    assert all(t.done.is_set() and t.error is None for t in tickets)
    with Store(tmp_path / "s.db") as reader:
        assert reader.count_spans() == 40 * 50


def test_a_failing_retention_pass_is_reported_once_and_ingest_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Retention of 10**30 ns puts the age cutoff outside SQLite's 64-bit integers: every pass
    # fails (OverflowError, not an sqlite3.Error). The writer must outlive it and say so once.
    store = Store(tmp_path / "s.db")
    config = ReceiverConfig(port=0, retention=Retention(max_age_ns=10**30), retention_interval=0.05)
    receiver = Receiver(store, config).start()
    try:
        for n in range(3):
            time.sleep(0.3)  # several retention passes
            body = _protobuf_span(n)
            assert post(receiver, "/v1/traces", body).status == 200
    finally:
        receiver.stop()
    assert Store(tmp_path / "s.db").count_spans() == 3
    failed = [r.getMessage() for r in caplog.records if "retention failed" in r.getMessage()]
    assert len(failed) == 1 and "OverflowError" in failed[0], failed


def _protobuf_span(n: int) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="GET /")
    span.trace_id, span.span_id = b"\x0a" * 16, (n + 1).to_bytes(8, "big")
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()
