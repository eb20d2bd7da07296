"""The batching writer behind the receiver, with its real SQLite writer process.

Batches are handed to the writer process before the previous one is answered; these tests check
that a request is acknowledged only once its own rows are committed, and that one request that
cannot be written fails alone while the batches around it, already in flight, still land.
"""

from __future__ import annotations

from pathlib import Path

from tracekit.receiver._ingest import IngestQueue, Ticket
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit.store._rows import SpanRows


def _rows(store: Store, trace: str, count: int) -> SpanRows:
    records = [_span(trace, i) for i in range(count)]
    return store.encoder.encode(records)


def _span(trace: str, i: int) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=f"{i + 1:016x}",
        parent_span_id=None,
        service="gateway",
        name="GET /",
        kind="SERVER",
        start_unix_nano=1_000 + i,
        end_unix_nano=2_000 + i,
    )


def _unwritable(store: Store) -> SpanRows:
    """Rows SQLite refuses: the last one lacks values for most columns."""
    rows = _rows(store, "e" * 32, 2)
    rows.spans.append(rows.spans[0][:3])
    return rows


def test_a_failing_request_fails_alone_while_others_are_in_flight(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create()
    # batch_size=1: every request is a batch of its own, so two are in the writer at once
    queue = IngestQueue(store, batch_size=1)
    tickets: list[Ticket] = []
    for n, trace in enumerate("abcdef"):
        rows = _unwritable(store) if n == 2 else _rows(store, trace * 32, 3)
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
    tickets = [queue.submit(_rows(store, f"{n + 1:032x}", 50), []) for n in range(40)]
    queue.start()
    queue.close()  # graceful: everything queued is committed before the writer stops
    assert all(t.done.is_set() and t.error is None for t in tickets)
    with Store(tmp_path / "s.db") as reader:
        assert reader.count_spans() == 40 * 50
