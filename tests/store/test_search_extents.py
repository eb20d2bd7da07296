"""``search --min-duration`` read from the per-trace tables the store keeps as spans arrive
(``trace_extents``, ``trace_correlations``): the same requests, in the same order, as measured
over every span, whatever order and batches the spans came in, through retention and an upgrade."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from tracekit.records import RequestSummary, SpanLink, SpanRecord
from tracekit.store import Retention, Store, _retention
from tracekit.store import _schema as schema
from tracekit.store._schema import trace_tables_filled
from tracekit.store._writer import StoreWriter

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
THRESHOLDS = (0, 5, 20, 40, 60, 80, 120, 1_000_000)
# What a tracekit before the per-trace tables had: a reader of such a file measures every span.
_DROP_TRACE_TABLES = """
    DROP TABLE IF EXISTS trace_extents; DROP TABLE IF EXISTS trace_correlations;
    DELETE FROM meta WHERE key = 'trace_tables_fill';
"""


def _request(rng: random.Random, number: int) -> list[SpanRecord]:
    """A request of a few spans in one trace, some with a consumer in a trace of its own that
    links back and carries the correlation ID, some with a parent never stored, some with a
    correlation ID another request also used (a retry)."""
    trace, start = f"{number + 1:032x}", T0 + rng.randrange(0, 500) * MS
    correlation = f"req-{rng.randrange(0, 40) if rng.random() < 0.2 else 100 + number}"
    spans, parent = [], "0" * 15 + "1" if rng.random() < 0.1 else None
    for index in range(rng.randrange(1, 6)):
        span_id = f"{number + 1:08x}{index + 1:08x}"
        begin = start + rng.randrange(0, 30) * MS
        end = begin + rng.randrange(0, 60) * MS
        attributes = {"correlation.id": correlation}
        spans.append(SpanRecord(trace, span_id, parent, f"svc-{index}", "GET /", "SERVER",
                                begin, end, attributes=attributes))  # fmt: skip
        parent = span_id
    if rng.random() < 0.3:
        consumer_start = spans[-1].end_unix_nano + rng.randrange(0, 80) * MS
        spans.append(SpanRecord(f"{number + 1:016x}{'f' * 16}", "e" * 16, None, "worker",
                                "process", "CONSUMER", consumer_start, consumer_start + 3 * MS,
                                attributes={"correlation.id": correlation},
                                links=[SpanLink(trace, spans[-1].span_id)]))  # fmt: skip
    return spans


def _write_shuffled(path: Path, rng: random.Random, requests: int) -> None:
    spans = [s for number in range(requests) for s in _request(rng, number)]
    rng.shuffle(spans)
    with Store(path) as store:
        while spans:
            size = rng.randrange(1, 40)
            store.write_spans(spans[:size])
            spans = spans[size:]


def _searches(path: Path) -> list[list[RequestSummary]]:
    with Store(path) as store:
        return [
            store.recent_requests(min_duration_ms=ms, limit=limit)
            for ms in THRESHOLDS
            for limit in (3, 1000)
        ]


def _measured_over_every_span(path: Path, copy: Path) -> list[list[RequestSummary]]:
    shutil.copyfile(path, copy)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.executescript(_DROP_TRACE_TABLES)
    return _searches(copy)


@pytest.mark.parametrize("seed", range(6))
def test_min_duration_finds_what_every_span_measured_finds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "s.db"
    _write_shuffled(path, rng, 150)
    found = _searches(path)

    assert found == _measured_over_every_span(path, tmp_path / "old.db")
    assert any(found[THRESHOLDS.index(60) * 2 + 1]) and not any(found[-1])


@pytest.mark.parametrize("seed", range(3))
def test_min_duration_after_retention_finds_what_every_span_measured_finds(
    tmp_path: Path, seed: int
) -> None:
    """Retention deletes the oldest spans, cutting traces in two: their extents shrink."""
    rng = random.Random(seed)
    path = tmp_path / "s.db"
    _write_shuffled(path, rng, 150)
    with Store(path) as store:
        assert store.apply_retention(Retention(max_age_ns=10**9), now_ns=T0 + 10**9 + 250 * MS)

    assert _searches(path) == _measured_over_every_span(path, tmp_path / "old.db")


def test_a_store_of_the_previous_release_is_upgraded_a_chunk_after_each_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first current writer makes the tables and starts at once; the spans already stored
    are counted in a chunk of traces after each batch it writes, and searches measure every
    span until the last chunk (a 2.2-million-span store filled at open kept a collector from
    listening for 5 s)."""
    path = tmp_path / "s.db"
    _write_shuffled(path, random.Random(7), 150)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(_DROP_TRACE_TABLES)
    monkeypatch.setattr(schema, "FILL_CHUNK_TRACES", 40)
    late = [SpanRecord(f"{3:032x}", f"{n + 1:016x}", None, "late", "late", "INTERNAL",
                       T0 + 900 * MS + n, T0 + 990 * MS) for n in range(8)]  # fmt: skip
    filled = []
    for span in late:
        with Store(path) as store:  # (closed: the copy below is of the file, WAL copied in)
            store.write_spans([span])
            filled.append(store._read(lambda r: trace_tables_filled(r.conn)))
        assert _searches(path) == _measured_over_every_span(path, tmp_path / "old.db")

    assert filled[:3] == [False] * 3 and filled[-1]
    assert any(late[0].trace_id == r.trace_id for r in _searches(path)[-3])  # 120 ms and more


def test_spans_an_older_tracekit_stored_are_counted_in_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older tracekit writing the same store keeps no per-trace tables: until a current
    writer counts its spans in, searches measure every span, and find them."""
    path = tmp_path / "s.db"
    _write_shuffled(path, random.Random(5), 100)
    late = SpanRecord(f"{2:032x}", "a" * 16, None, "old", "old", "INTERNAL",
                      T0 + 900 * MS, T0 + 990 * MS)  # fmt: skip
    with monkeypatch.context() as older:
        older.setattr(StoreWriter, "_extend_trace_tables", lambda self: None)
        with Store(path) as store:
            store.write_spans([late])
    with Store(path) as store:
        assert not store._read(lambda r: trace_tables_filled(r.conn))
    assert _searches(path) == _measured_over_every_span(path, tmp_path / "old.db")
    assert any(late.trace_id == r.trace_id for r in _searches(path)[-3])  # 120 ms and more
    with Store(path) as store:
        store.write_spans([dataclasses.replace(late, trace_id="c" * 32, span_id="c" * 16)])
        assert store._read(lambda r: trace_tables_filled(r.conn))

    assert _searches(path) == _measured_over_every_span(path, tmp_path / "old.db")


def test_a_search_matching_nothing_reads_a_quarter_of_what_measuring_every_span_did(
    tmp_path: Path,
) -> None:
    """A search matching nothing read every span of the store: 8-11 s on 2.2 million spans
    (requests of ten spans, one in ten with a consumer in a trace of its own)."""
    path = tmp_path / "s.db"
    with Store(path) as store:
        for number in range(1, 2_001):
            start, trace = T0 + number * MS, f"{number:032x}"
            spans = [SpanRecord(trace, f"{number:08x}{index:08x}",
                                f"{number:08x}{index - 1:08x}" if index else None, "svc", "GET /",
                                "SERVER", start + index, start + 50 * MS - index,
                                attributes={"correlation.id": f"req-{number}"})
                     for index in range(10)]  # fmt: skip
            if number % 10 == 0:
                spans[-1] = SpanRecord(f"{number:016x}{'f' * 16}", "e" * 16, None, "worker", "do",
                                       "CONSUMER", start, start + MS,
                                       attributes={"correlation.id": f"req-{number}"},
                                       links=[SpanLink(trace, spans[-2].span_id)])  # fmt: skip
            store.write_spans(spans)
    old = tmp_path / "old.db"
    _measured_over_every_span(path, old)

    assert _steps_of_a_search_for_nothing(path) * 4 < _steps_of_a_search_for_nothing(old)


def _steps_of_a_search_for_nothing(path: Path) -> int:
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    with Store(path) as store:
        store._reader_side().conn.set_progress_handler(step, 1_000)
        assert store.recent_requests(min_duration_ms=100) == []
    return steps[0]


@pytest.mark.parametrize("writer", ["older", "current"])
def test_span_ids_handed_out_again_after_an_older_tracekit_deleted_the_newest_are_counted_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    """An older tracekit's retention deletes the spans stored last (an hour old by their times:
    a host whose clock is behind), so SQLite hands their ids out again to the next spans stored.
    Those had ids already counted in: a request lasting 900 ms was missing from the search."""
    path = tmp_path / "s.db"
    with Store(path) as store:
        for number in range(1, 21):
            store.write_spans([SpanRecord(f"{number:032x}", f"{number:016x}", None, "svc",
                                          "GET /", "SERVER", T0 + number * MS, T0 + number * MS
                                          + 5 * MS)])  # fmt: skip
        store.write_spans([SpanRecord(f"{number:032x}", f"{number:016x}", None, "behind", "GET /",
                                      "SERVER", T0 - 3600 * 10**9, T0 - 3600 * 10**9 + MS)
                           for number in range(100, 103)])  # fmt: skip
    long_children = [SpanRecord(f"{1:032x}", f"{number:016x}", f"{1:016x}", "svc", "work",
                                "INTERNAL", T0 + 10 * MS, T0 + 900 * MS)
                     for number in range(200, 203)]  # fmt: skip
    others = [SpanRecord(f"{number:032x}", f"{number:016x}", None, "svc", "GET /", "SERVER",
                         T0 + 60 * MS, T0 + 61 * MS) for number in range(300, 302)]  # fmt: skip
    with monkeypatch.context() as older:
        older.setattr(_retention, "_shrink_trace_tables", lambda conn: None)
        if writer == "older":
            older.setattr(StoreWriter, "_extend_trace_tables", lambda self: None)
        with Store(path) as store:
            assert store.apply_retention(Retention(max_age_ns=60 * 10**9), now_ns=T0 + 10**9)
            store.write_spans(long_children + others)
    with Store(path) as store:  # a current writer
        store.write_spans([SpanRecord("d" * 32, "d" * 16, None, "svc", "GET /", "SERVER",
                                      T0 + 70 * MS, T0 + 71 * MS)])  # fmt: skip

    found = _searches(path)
    assert found == _measured_over_every_span(path, tmp_path / "old.db")
    assert [(r.trace_id, r.duration_ms) for r in found[THRESHOLDS.index(120) * 2 + 1]] == [
        (f"{1:032x}", 899.0)
    ]


def test_a_refill_a_writer_left_unfinished_is_finished_by_a_writer_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that starts a refill (an older tracekit deleted the newest spans) and exits
    before its last chunk (a job with the store exporter, a service stopped or killed) leaves
    it to the collector still writing: until it is done, every duration search measures every
    span (seconds on a large store)."""
    path = tmp_path / "s.db"
    _write_shuffled(path, random.Random(3), 150)
    monkeypatch.setattr(schema, "FILL_CHUNK_TRACES", 40)
    behind = [SpanRecord(f"{number:032x}", f"{number:016x}", None, "behind", "GET /", "SERVER",
                         T0 - 3600 * 10**9, T0 - 3600 * 10**9 + MS)
              for number in range(900, 903)]  # fmt: skip

    def span(number: int) -> SpanRecord:
        return SpanRecord(f"{number:032x}", f"{number:016x}", None, "svc", "GET /", "SERVER",
                          T0 + 70 * MS, T0 + 71 * MS)  # fmt: skip

    with Store(path) as collector:
        collector.write_spans(behind)
        with monkeypatch.context() as older:
            older.setattr(_retention, "_shrink_trace_tables", lambda conn: None)
            with Store(path) as store:
                assert store.apply_retention(Retention(max_age_ns=10**12), now_ns=T0)
        with Store(path) as job:
            job.write_spans([span(1000)])  # starts the refill, fills a chunk, exits
            assert not job._read(lambda r: trace_tables_filled(r.conn))
        for number in range(1001, 1011):
            collector.write_spans([span(number)])
        assert collector._read(lambda r: trace_tables_filled(r.conn))

    assert _searches(path) == _measured_over_every_span(path, tmp_path / "old.db")
