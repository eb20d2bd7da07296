"""The WAL stays bounded while reads follow each other without a gap, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit.store._writer import FIRST_WAIT_MS

BOUND = 500_000
START = 1_700_000_000_000_000_000


def batch(number: int, size: int = 200) -> list[SpanRecord]:
    return [
        SpanRecord(f"{number + 1:032x}", f"{n + 1:016x}", None, "api", "GET /orders/{id}",
                   "SERVER", START + number * 1000 + n, START + number * 1000 + n + 5,
                   attributes={"url.path": f"/orders/{number}-{n}", "note": "x" * 200})
        for n in range(size)
    ]  # fmt: skip


@contextmanager
def reads_without_a_gap(path: Path) -> Iterator[list[int]]:
    """Two readers taking turns: each takes its snapshot before the other lets go of its own, so
    some read always holds one (as `tracekit services` run in loops did). Yields the count of
    reads made."""
    stop, reads = threading.Event(), [0]

    def relay() -> None:
        held, next_ = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
        held.execute("BEGIN")
        held.execute("SELECT count(*) FROM spans").fetchone()
        while not stop.is_set():
            next_.execute("BEGIN")
            next_.execute("SELECT count(*) FROM spans").fetchone()  # its snapshot: taken now
            held.execute("COMMIT")
            held, next_ = next_, held
            reads[0] += 1
        held.execute("COMMIT")

    thread = threading.Thread(target=relay)
    thread.start()
    try:
        yield reads
    finally:
        stop.set()
        thread.join()


def test_the_wal_is_emptied_past_its_bound_while_reads_keep_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a WAL grew as long as reads overlapped: 165 MB beside a 44 MB store after 90 s
    of ingest with three `tracekit services` loops."""
    monkeypatch.setattr("tracekit.store._writer.WAL_BOUND_BYTES", BOUND, raising=False)
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    largest = written = 0
    with Store(path) as store:
        store.write_spans(batch(0))
        with reads_without_a_gap(path) as reads:
            for number in range(1, 150):
                store.write_spans(batch(number))
                largest = max(largest, wal.stat().st_size)
                written += 1
        assert store.count_spans() == 200 * 150
    assert reads[0] > written  # reads overlapped all along
    assert largest < 2 * BOUND


def test_a_checkpoint_that_gave_up_does_not_raise_the_bound_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long read made the writer's checkpoints give up, again and again, while the WAL grew;
    then another connection emptied the WAL (another writer process, the retention pass). When
    reads overlap again the WAL must be held near the bound, not let grow back to where the
    last try gave up."""
    monkeypatch.setattr("tracekit.store._writer.WAL_BOUND_BYTES", BOUND, raising=False)
    monkeypatch.setattr("tracekit.store._connection.BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    with Store(path) as store:
        store.write_spans(batch(0))
        long_read = sqlite3.connect(path, isolation_level=None)
        long_read.execute("BEGIN")
        long_read.execute("SELECT count(*) FROM spans").fetchone()
        number = 1
        while wal.stat().st_size < 4 * BOUND:  # each try past the bound gives up
            store.write_spans(batch(number))
            number += 1
        long_read.execute("COMMIT")
        long_read.close()
        other = sqlite3.connect(path, isolation_level=None)
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        other.close()
        assert wal.stat().st_size == 0
        largest = 0
        with reads_without_a_gap(path):
            for more in range(60):
                store.write_spans(batch(number + more))
                largest = max(largest, wal.stat().st_size)
    assert largest < 2 * BOUND


def test_one_read_that_outlasts_the_wait_pauses_the_writer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read held longer than a writer waits for a lock (a backup of the store, a search over
    a large one): every try, 16 MB apart, waited the busy timeout out for nothing while the
    write lock was held. A collector stored 113,000 of the 392,000 spans an OTel SDK sent during
    one 50 s read (380,000 of 412,000 before the WAL was bounded). Once that read has ended,
    overlapping reads are waited for and the WAL is emptied again."""
    monkeypatch.setattr("tracekit.store._writer.WAL_BOUND_BYTES", BOUND, raising=False)
    monkeypatch.setattr("tracekit.store._connection.BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    checkpoints: list[str] = []
    with Store(path) as store:
        store.write_spans(batch(0))
        store._writer_side().conn.set_trace_callback(checkpoints.append)
        long_read = sqlite3.connect(path, isolation_level=None)
        long_read.execute("BEGIN")
        long_read.execute("SELECT count(*) FROM spans").fetchone()
        number = 1
        while wal.stat().st_size < 6 * BOUND:
            store.write_spans(batch(number))
            number += 1
        waited = [s for s in checkpoints if "TRUNCATE" in s]
        long_read.execute("COMMIT")
        long_read.close()
        with reads_without_a_gap(path):
            for more in range(60):
                store.write_spans(batch(number + more))
                if wal.stat().st_size < BOUND:
                    break
        emptied = wal.stat().st_size < BOUND
    assert len(waited) == 1
    assert emptied


def test_a_wal_another_connection_emptied_makes_the_next_wait_short_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try that gave up to a long read doubled the writer's next wait, and only a try of
    its own that emptied the WAL made it short again. In the collector the WAL copier empties
    the WAL within 0.1 s of a read's end, before the writer tries again: with 3 OTel SDK
    exporters and 8 s reads 2 s apart, each new read paused every write longer, 0.6, 1.0, then
    2.0 s (up to 5 s). Once another connection emptied the WAL (no read held it then), the next
    read is waited for FIRST_WAIT_MS again."""
    monkeypatch.setattr("tracekit.store._writer.WAL_BOUND_BYTES", BOUND, raising=False)
    path = tmp_path / "s.db"
    wal = Path(f"{path}-wal")
    longest_per_read = []
    with Store(path) as store:
        store.write_spans(batch(0))
        number = 1
        for _ in range(3):
            long_read = sqlite3.connect(path, isolation_level=None)
            long_read.execute("BEGIN")
            long_read.execute("SELECT count(*) FROM spans").fetchone()
            longest = 0.0
            while wal.stat().st_size < 3 * BOUND:  # a try past the bound gives up
                started = time.monotonic()
                store.write_spans(batch(number))
                longest = max(longest, time.monotonic() - started)
                number += 1
            longest_per_read.append(longest)
            long_read.execute("COMMIT")
            long_read.close()
            copier = sqlite3.connect(path, isolation_level=None)  # as the WAL copier does
            assert copier.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            copier.close()
    assert longest_per_read[0] >= FIRST_WAIT_MS / 1000  # the first read was waited for
    assert all(longest < 1.5 * FIRST_WAIT_MS / 1000 for longest in longest_per_read), (
        longest_per_read
    )
