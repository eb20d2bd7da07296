"""The embedded store on real SQLite files: round trips, lookups, roots, retention, paths."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tracekit.records import BackendError, LogRecordData, SpanEvent, SpanLink, SpanRecord
from tracekit.store import Retention, Store, default_store_path, parse_duration, parse_size

T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32


def span(trace: str, span_id: str, parent: str | None = None, **fields: object) -> SpanRecord:
    base: dict[str, object] = dict(
        service="gateway", name="GET /", kind="SERVER", start_unix_nano=1_000, end_unix_nano=3_000
    )
    base.update(fields)
    return SpanRecord(trace_id=trace, span_id=span_id, parent_span_id=parent, **base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.db")


def test_every_field_round_trips(store: Store) -> None:
    record = span(
        T1, "1" * 16, None, status="ERROR", status_message="boom", scope="lib", service_version="2",
        attributes={"correlation.id": "c-1", "n": 7, "f": 0.5, "b": False, "l": ["x", 1],
                    "m": {"k": [True]}, "long": "y" * 500, "none": None},
        links=[SpanLink(T2, "2" * 16, {"why": "batch"})],
        events=[SpanEvent("exception", 2_000, {"exception.type": "KeyError"})],
        resource={"service.name": "gateway", "host.name": "h"},
    )  # fmt: skip
    store.write_spans([record, record])  # a retried export must not duplicate
    assert store.spans_by_correlation_id("c-1") == [record]
    assert store.spans_by_trace_ids([T1.upper()]) == [record]
    assert store.count_spans() == 1


LONE = "\ud800"  # a lone surrogate: json.loads makes one of "\\ud800", UTF-8 has none
CLEAN = "\ufffd"


def test_lone_surrogates_are_stored_as_replacement_characters(store: Store) -> None:
    """OTLP/JSON (or an app's own attribute) can carry a lone surrogate: every string field is
    stored readable, so that `tracekit trace --format json` can print it as UTF-8."""
    record = span(
        T1, "1" * 16, None, name=f"GET {LONE}", status="ERROR", status_message=f"boom{LONE}",
        attributes={"correlation.id": "c-lone", "long": "y" * 70 + LONE, "short": f"s{LONE}",
                    "list": [f"a{LONE}", 1], "map": {f"k{LONE}": [f"v{LONE}"]},
                    "emoji": "\U0001f600"},
        links=[SpanLink(T2, "2" * 16, {"why": f"batch{LONE}" * 20})],
        events=[SpanEvent(f"ex{LONE}", 2_000, {"exception.message": f"m{LONE}" * 40})],
        resource={"service.name": "gateway", "host.name": f"h{LONE}"},
    )  # fmt: skip
    store.write_spans([record])
    store.write_logs([LogRecordData(
        time_unix_nano=2_000, service="gateway", severity_text="INFO", severity_number=9,
        body=f"body{LONE}", trace_id=T1, span_id="1" * 16,
        attributes={"a": f"x{LONE}" * 40},
        resource={"service.name": f"gateway{LONE}"})])  # fmt: skip

    (read,) = store.spans_by_correlation_id("c-lone")
    (log,) = store.logs_by_trace_ids([T1])
    text = repr((read, log))
    assert LONE not in text and CLEAN in text
    assert read.attributes["long"] == "y" * 70 + CLEAN
    assert read.attributes["map"] == {f"k{CLEAN}": [f"v{CLEAN}"]}
    assert read.attributes["emoji"] == "\U0001f600"  # a real pair stays what it was
    assert read.events[0].name == f"ex{CLEAN}" and read.resource["host.name"] == f"h{CLEAN}"
    assert read.links[0].attributes["why"] == f"batch{CLEAN}" * 20


def test_links_can_be_followed_both_ways(store: Store) -> None:
    producer = span(T2, "2" * 16, kind="PRODUCER")
    consumer = span(T3, "3" * 16, kind="CONSUMER", links=[SpanLink(T2, "2" * 16)], service="worker")
    store.write_spans([producer, consumer])
    assert store.trace_ids_linking_to([T2]) == {T3}
    assert store.spans_linking_to(T2, "2" * 16) == [consumer]
    assert store.spans_by_trace_ids([T3])[0].links == [SpanLink(T2, "2" * 16, {})]
    assert [(e.from_service, e.to_service) for e in store.service_edges()] == [
        ("gateway", "worker")
    ]


def test_recent_requests_lists_roots_newest_first(store: Store) -> None:
    store.write_spans([
        span(T1, "1" * 16, start_unix_nano=100, end_unix_nano=200,
             attributes={"correlation.id": "c"}),
        span(T1, "2" * 16, "1" * 16, service="orders", status="ERROR"),
        span(T2, "3" * 16, "f" * 16, start_unix_nano=500, end_unix_nano=5_000_600),  # parent absent
    ])  # fmt: skip
    requests = store.recent_requests()
    assert [(r.trace_id, r.span_count, r.error) for r in requests] == [
        (T2, 1, False),
        (T1, 2, True),
    ]
    assert requests[1].correlation_id == "c"
    assert [r.trace_id for r in store.recent_requests(errors_only=True)] == [T1]
    assert [r.trace_id for r in store.recent_requests(min_duration_ms=1)] == [T2]
    assert store.recent_requests(service="nobody") == []
    assert [r.trace_id for r in store.recent_requests(since_unix_nano=400)] == [T2]
    assert [s.span_id for s in store.spans_since(1000)] == ["2" * 16]


def test_a_trace_whose_parent_ids_form_a_loop_is_listed(store: Store) -> None:
    """Corrupt or hostile exports: A's parent is B and B's is A; a span is its own parent. Such
    a trace holds no root, and search never listed it, though `tracekit trace` shows it (the
    loop cut at its earliest span)."""
    store.write_spans([
        span(T1, "2" * 16, "1" * 16, name="B", start_unix_nano=200, end_unix_nano=900),
        span(T1, "1" * 16, "2" * 16, name="A", start_unix_nano=100, end_unix_nano=300,
             status="ERROR"),
        span(T2, "3" * 16, "3" * 16, name="own parent", start_unix_nano=1_000),
        span(T3, "4" * 16, None, name="fine", start_unix_nano=2_000),
    ])  # fmt: skip
    listed = [(r.trace_id, r.root_name, r.span_count, r.duration_ms, r.error)
              for r in store.recent_requests()]  # fmt: skip
    assert listed == [
        (T3, "fine", 1, 0.001, False),
        (T2, "own parent", 1, 0.002, False),
        (T1, "A", 2, 0.0008, True),
    ]
    assert [r.trace_id for r in store.recent_requests(errors_only=True)] == [T1]


def test_search_filters_measure_only_the_requests_that_could_match(store: Store) -> None:
    """``--errors`` and ``--min-duration`` measured every request in the store over its joined
    traces, one recursive query each, to keep a few (8.5 s for one error among 100,000
    requests); now only the candidates are measured, with the same answers."""
    ms = 1_000_000
    spans = [span(f"{n:032x}", f"{n:016x}", start_unix_nano=n * ms, end_unix_nano=n * ms + ms,
                  attributes={"correlation.id": f"c{n}"}) for n in range(1, 1001)]  # fmt: skip
    spans[10] = dataclasses.replace(spans[10], status="ERROR")  # an old request failed
    spans[20] = dataclasses.replace(spans[20], end_unix_nano=spans[20].end_unix_nano + 50 * ms)
    late = dataclasses.replace(  # the 31st request's correlation ID, 2 s later: 2 s long
        spans[30], trace_id="f" * 32, span_id="f" * 16, start_unix_nano=2_000 * ms,
        end_unix_nano=2_000 * ms + 1,
    )  # fmt: skip
    store.write_spans([*spans, late])
    assert store.count_spans() == 1001
    measured: list[str] = []
    store._reader_side().conn.set_trace_callback(measured.append)

    assert [r.correlation_id for r in store.recent_requests(errors_only=True)] == ["c11"]
    assert [r.correlation_id for r in store.recent_requests(min_duration_ms=20)] == ["c31", "c21"]
    assert len([q for q in measured if "WITH RECURSIVE page" in q]) <= 4


def test_logs_round_trip_and_follow_their_trace(store: Store) -> None:
    log = LogRecordData(5, "orders", "ERROR", 17, "failed", T1, "1" * 16, {"correlation.id": "c9"},
                        {"service.name": "orders"})  # fmt: skip
    store.write_logs([log])
    assert store.logs_by_trace_ids([T1]) == [log]
    assert store.logs_by_correlation_id("c9") == [log]


_ROW_INSERTS = (
    "INSERT INTO logs",
    "INSERT OR IGNORE INTO traces",
    "INSERT OR IGNORE INTO correlations",
)


def test_log_records_are_written_in_a_few_statements_however_many_traces(store: Store) -> None:
    """Each new trace and correlation id of a batch of log records was added by a statement of
    its own (two per request; 14.5 us of CPU per record, 12.8 now, bench/store_write_bench.py);
    now one statement per table adds them all, and each row finds its ids itself, as a span
    row does.
    Every field still reads back the same, and records without a trace, span or correlation id
    still follow no trace."""
    statements: list[str] = []  # (a row of executemany is traced as a statement)

    def logs(traces: int, first: int) -> list[LogRecordData]:
        return [
            LogRecordData(first + n, "orders", "INFO" if n % 2 else "", 9, f"line {n}",
                          f"{first + n // 4 + 1:032x}", f"{n + 1:016x}",
                          {"correlation.id": f"c{first + n // 4}", "n": n},
                          {"service.name": "orders"})
            for n in range(4 * traces)
        ]  # fmt: skip

    store.write_logs([LogRecordData(1, "orders", "", 9, "no ids at all"), *logs(1, 500)])
    counts = []
    for traces, first in ((2, 1_000), (32, 2_000)):
        written = logs(traces, first)
        store._writer_side().conn.set_trace_callback(statements.append)
        store.write_logs(written)
        store._writer_side().conn.set_trace_callback(None)
        counts.append(len([q for q in statements if not q.startswith(_ROW_INSERTS)]))
        statements.clear()
        for record in written[::4]:
            same_trace = [r for r in written if r.trace_id == record.trace_id]
            assert store.logs_by_trace_ids([str(record.trace_id)]) == same_trace
            assert store.logs_by_correlation_id(str(record.correlation_id)) == same_trace
    assert counts[0] == counts[1]
    assert store.count_logs() == 1 + 4 * 35
    with contextlib.closing(sqlite3.connect(store.path)) as conn:  # the one with no ids at all
        assert conn.execute(
            "SELECT trace_ref, span_id, correlation_ref, severity_ref, attributes FROM logs"
            " WHERE time_ns = 1"
        ).fetchall() == [(None, None, None, None, None)]


def test_reading_a_missing_store_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no tracekit store"):
        Store(tmp_path / "absent.db").spans_by_correlation_id("x")
    assert not (tmp_path / "absent.db").exists()


def test_a_store_written_by_an_older_tracekit_is_read_as_it_is(tmp_path: Path) -> None:
    """Schema 1 (before the ``meta`` table) is read, not called "empty or not initialised", and
    not upgraded by a reader: an older collector still writing it could not open it again."""
    path = tmp_path / "v1.db"
    with Store(path) as writer:
        writer.write_spans([span(T1, "1" * 16, attributes={"correlation.id": "req-1"})])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript("DROP TABLE meta; PRAGMA user_version = 1;")

    with Store(path) as reader:
        assert [s.span_id for s in reader.spans_by_correlation_id("req-1")] == ["1" * 16]
        assert [r.correlation_id for r in reader.recent_requests()] == ["req-1"]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)


def test_a_store_removed_while_open_is_not_written_blind(tmp_path: Path) -> None:
    """Before: the write succeeded into the deleted file, which no reader could find."""
    store = Store(tmp_path / "gone.db")
    store.write_spans([span(T1, "1" * 16)])
    for leftover in tmp_path.iterdir():
        leftover.unlink()

    with pytest.raises(sqlite3.OperationalError, match="removed or replaced while open"):
        store.write_spans([span(T2, "2" * 16)])
    store.close()


@pytest.mark.parametrize("replaced_by", ["another store", "a new file"])
def test_a_store_file_replaced_while_closed_is_written_with_its_own_strings(
    tmp_path: Path, replaced_by: str
) -> None:
    """A store closed (``Store.close``, or around a ``fork()``) reopens by path. The file there
    had been replaced (rotated, restored from another store, or deleted and created again):
    before, the ids cached for the old file were written into it, and the span written as
    checkout's ``GET /cart`` read as billing's ``POST /pay``, the other store's strings."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.write_spans([span(T1, "1" * 16, service="checkout", name="GET /cart")])
    store.close()
    with contextlib.closing(Store(tmp_path / "other.db")) as other:
        if replaced_by == "another store":
            other.write_spans([span(T2, "2" * 16, service="billing", name="POST /pay")])
        else:
            other.create()
    os.replace(tmp_path / "other.db", path)

    store.write_spans([span(T3, "3" * 16, service="checkout", name="GET /cart")])
    store.close()
    with contextlib.closing(Store(path)) as reread:
        written = [(s.trace_id, s.service, s.name) for s in reread.spans_since(0)]
    before = [(T2, "billing", "POST /pay")] if replaced_by == "another store" else []
    assert written == [*before, (T3, "checkout", "GET /cart")]


def test_bad_ids_are_refused_before_anything_is_written(store: Store) -> None:
    with pytest.raises(ValueError, match="span id"):
        store.write_spans([span(T1, "1" * 16), span(T1, "nothex")])
    store.create()
    assert store.count_spans() == 0


def test_retention_by_age_removes_old_records_and_their_ids(store: Store) -> None:
    store.write_spans([span(T1, "1" * 16, start_unix_nano=10, attributes={"correlation.id": "old"}),
                       span(T2, "2" * 16, start_unix_nano=10_000)])  # fmt: skip
    deleted = store.apply_retention(Retention(max_age_ns=1_000), now_ns=10_500)
    assert deleted == 1
    assert store.spans_by_correlation_id("old") == [] and store.count_spans() == 1


def test_retention_by_size_keeps_the_file_under_the_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "big.db")
    filler = {"payload": "z" * 400}
    for batch in range(20):
        store.write_spans(
            span(os.urandom(16).hex(), os.urandom(8).hex(), start_unix_nano=batch * 1000 + i,
                 attributes=filler)
            for i in range(500)
        )  # fmt: skip
    before = (tmp_path / "big.db").stat().st_size
    store.apply_retention(Retention(max_bytes=2_000_000))
    store.close()
    with Store(tmp_path / "big.db") as reopened:
        kept = reopened.spans_since(0, limit=100_000)
        assert 0 < len(kept) < 10_000
        assert min(s.start_unix_nano for s in kept) > 0  # the oldest went first
    assert before > 4_000_000 and (tmp_path / "big.db").stat().st_size <= 2_000_000


def _filled(path: Path) -> Store:
    store = Store(path)
    filler = {"payload": "z" * 400}
    store.write_spans(span(f"{n + 1:032x}", f"{n + 1:016x}", start_unix_nano=10 + n,
                           attributes=filler) for n in range(5_000))  # fmt: skip
    return store


def _pass_ends(store: Store) -> bool:
    """Whether a retention pass deleting everything ends (within 10,000 steps: it did not)."""
    steps = store.retention_steps(Retention(max_age_ns=1), now_ns=10**6)
    return len(list(itertools.islice(steps, 10_000))) < 10_000


def test_a_file_that_held_a_table_before_the_store_gives_freed_space_back(tmp_path: Path) -> None:
    """auto_vacuum only takes effect before a file's first table: in a file made before (a
    table created and dropped) the store was never INCREMENTAL, freed pages stayed, and every
    retention pass asked for them back forever at 100% CPU."""
    path = tmp_path / "made-before.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript("CREATE TABLE mine (x); DROP TABLE mine;")
    store = _filled(path)
    store.close()
    full = path.stat().st_size

    assert _pass_ends(store) and store.count_spans() == 0
    store.close()
    assert path.stat().st_size < full / 4


def test_retention_gives_freed_space_back_megabytes_per_step(tmp_path: Path) -> None:
    """sqlite3 steps a statement that returns no columns only once, and incremental_vacuum
    frees one page per step: each retention step gave back 4 KB, so shrinking a file by 200 MB
    took some 50,000 write transactions, each interleaved with the collector's ingest."""
    path = tmp_path / "freed.db"
    store = _filled(path)
    store.close()
    full = path.stat().st_size

    steps = list(store.retention_steps(Retention(max_age_ns=1), now_ns=10**6))
    store.close()

    assert store.count_spans() == 0 and path.stat().st_size < full / 4
    assert len(steps) < 20  # a chunk or two of deletes, then a few MB freed per step


def test_retention_ends_on_a_store_that_cannot_give_space_back(tmp_path: Path) -> None:
    """A store an older tracekit made in such a file (auto_vacuum NONE): the pass ends, and the
    free pages are reused."""
    path = tmp_path / "none.db"
    Store(path).create()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript("PRAGMA auto_vacuum = NONE; VACUUM;")
    store = _filled(path)

    assert _pass_ends(store) and store.count_spans() == 0
    store.close()


def test_a_pass_that_met_a_long_read_shrinks_the_file_at_the_next_pass(tmp_path: Path) -> None:
    """A read during the pass (a slow ``tracekit search``) kept its checkpoint from copying the
    shrunk store back into the file. Later passes found no free page and never checkpointed:
    an idle collector's file stayed over ``--max-size`` (2.8 MB of 1 MB) until spans came."""
    path = tmp_path / "idle.db"
    store = _filled(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM spans").fetchone()
        store.apply_retention(Retention(max_bytes=1_000_000))
        reader.execute("COMMIT")
    assert path.stat().st_size > 2_000_000  # the checkpoint could not shrink it yet

    store.apply_retention(Retention(max_bytes=1_000_000))

    assert path.stat().st_size <= 1_000_000
    store.close()


def test_a_wal_grown_behind_a_long_read_is_emptied_by_the_next_pass(tmp_path: Path) -> None:
    """While a read holds its snapshot, every commit lands in the WAL, which grows past the
    64 MB the docs promise; SQLite cuts it back only at a write after a checkpoint, so on a
    collector that then received nothing, 100 MB of WAL stayed beside the store for good."""
    path = tmp_path / "wal.db"
    store = Store(path)
    payload = {"payload": "w" * 16_000}
    store.create()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM spans").fetchone()
        for n in range(6_000):  # 96 MB, in 60 commits
            if n % 100 == 0:
                batch: list[SpanRecord] = []
            batch.append(span(f"{n + 1:032x}", f"{n + 1:016x}", attributes=payload))
            if len(batch) == 100:
                store.write_spans(batch)
        reader.execute("COMMIT")
    wal = tmp_path / "wal.db-wal"
    assert wal.stat().st_size > 90_000_000

    store.apply_retention(Retention(max_age_ns=10**18), now_ns=10**18)  # deletes nothing

    assert wal.stat().st_size <= 64 * 2**20
    assert store.count_spans() == 6_000
    store.close()


def test_size_retention_deletes_the_oldest_records_spans_and_logs_alike(tmp_path: Path) -> None:
    """A store of mostly logs, a few percent over ``--max-size``'s 90%: the oldest few percent
    of the hour go, spans and logs alike (before: every span, the newest included)."""
    path = tmp_path / "logs.db"
    store = Store(path)
    hour, count = 3600 * 10**9, 20_000
    times = [1_700_000_000 * 10**9 + i * (hour // count) for i in range(count)]
    logs = [
        LogRecordData(t, "svc", "INFO", 9, f"line {i} " + "x" * 40, None, None,
                      {"correlation.id": "c"}, {})
        for i, t in enumerate(times)
    ]  # fmt: skip
    spans = [span(f"{i + 1:032x}", f"{i + 1:016x}", start_unix_nano=t, end_unix_nano=t + 1)
             for i, t in enumerate(times) if i % 1000 == 0]  # fmt: skip
    store.write(spans, logs)
    store.close()
    limit = int(path.stat().st_size / 0.9 * 0.95)  # the live data is 5% over the target

    store.apply_retention(Retention(max_bytes=limit))
    kept_spans = store.spans_since(0)
    kept_logs = store.logs_by_correlation_id("c")
    assert len(kept_spans) >= 17 and 0.85 * count < len(kept_logs) < count
    oldest_kept = min(kept_spans[0].start_unix_nano, kept_logs[0].time_unix_nano)
    assert kept_spans == [s for s in spans if s.start_unix_nano >= oldest_kept]
    assert kept_logs == [log for log in logs if log.time_unix_nano >= oldest_kept]
    store.close()


def vm_steps_of_a_size_retention_step(path: Path, count: int) -> int:
    """SQLite's steps (thousands) for the first step of a pass on a store of ``count`` spans
    and half as many logs, a few kB over its target: a chunk of the 50 oldest records."""
    spans = [span(f"{n + 1:032x}", f"{n + 1:016x}", start_unix_nano=10 + 2 * n)
             for n in range(count)]  # fmt: skip
    logs = [LogRecordData(11 + 4 * n, "svc", "INFO", 9, "line", None, None, {}, {})
            for n in range(count // 2)]  # fmt: skip
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    with Store(path) as store:
        store.write(spans, logs)
        over_target = Retention(max_bytes=int((store.used_bytes() - 8_192) / 0.9) + 1)
        store._writer_side().conn.set_progress_handler(step, 1_000)
        deleted = next(store.retention_steps(over_target))
    assert 50 <= deleted < 100
    return steps[0]


def test_a_size_retention_step_costs_the_same_in_a_store_ten_times_larger(tmp_path: Path) -> None:
    """Each chunk estimated the rows stored with ``max(id) - min(id)`` in one SELECT, which
    SQLite answers by reading every row: 0.45 s a chunk at 3 million records, and a collector
    at its ``--max-size`` took in 3,300 spans a second instead of 10,000-13,000."""
    small = vm_steps_of_a_size_retention_step(tmp_path / "small.db", 5_000)
    large = vm_steps_of_a_size_retention_step(tmp_path / "large.db", 50_000)
    assert large < 2 * small


def test_default_path_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACEKIT_STORE", str(tmp_path / "x.db"))
    assert default_store_path() == tmp_path / "x.db"
    monkeypatch.delenv("TRACEKIT_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "tracekit" / "tracekit.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_store_path() == Path.home() / ".local/share/tracekit/tracekit.db"


def test_parsing_retention_flags() -> None:
    assert parse_duration("7d") == 7 * 86400 * 10**9 and parse_duration("90") == 90 * 10**9
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_duration("36500d") == 36500 * 86400 * 10**9 and parse_size("1000TB") == 10**15
    assert parse_duration("1y") == parse_duration("365d")
    assert parse_duration("100y") == parse_duration("36500d")
    for bad in ("7 days", "101y", "-1d", "0s", "36501d", "999999999999d", "9" * 400):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("12 parsecs", "1001TB", "9" * 400 + "GB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_another_application_s_database_is_refused_and_left_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TRACEKIT_STORE pointed at the app's own SQLite file: the exporter vacuumed it, switched
    it to WAL for good and added tracekit's tables to it, without a word."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tracekit.store.exporter import StoreSpanExporter

    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');"
            "PRAGMA user_version = 1;"  # the app's own migration number
        )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(StoreSpanExporter(path)))
    with provider.get_tracer("t").start_as_current_span("GET /"):
        pass
    with pytest.raises(sqlite3.Error, match="not a tracekit store"):
        Store(path).create()

    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
        assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("users",)]
        assert conn.execute("SELECT name FROM users").fetchall() == [("ann",)]
    assert "not a tracekit store" in caplog.text


def test_an_exporter_that_cannot_write_says_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    from tracekit.store.exporter import StoreSpanExporter

    folder = tmp_path / "a-folder"
    folder.mkdir()
    exporter = StoreSpanExporter(folder)  # a folder where the file should be
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(2):
        tracer.start_span("lost").end()

    warnings = [r.getMessage() for r in caplog.records if r.name == "tracekit"]
    assert warnings == [
        "tracekit: writing spans to the store failed: "
        "OperationalError: unable to open database file (SQLITE_CANTOPEN)"
        f" (store {str(folder)!r})"
    ]
    assert exporter.export([]) is SpanExportResult.FAILURE


def test_an_exporter_names_the_store_it_cannot_write_and_the_system_s_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service given a wrong TRACEKIT_STORE (a file where a folder should be) said only
    "writing spans to the store failed: NotADirectoryError", naming neither the path nor why.
    The path is quoted with its control characters escaped: it is shown, never written raw."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from tracekit.store.exporter import StoreSpanExporter

    a_file = tmp_path / "not-a-folder\x1b[31m"
    a_file.write_text("")
    exporter = StoreSpanExporter(a_file / "tracekit.db")
    assert exporter.export([]) is SpanExportResult.FAILURE

    (warning,) = [r.getMessage() for r in caplog.records if r.name == "tracekit"]
    assert warning == (
        "tracekit: writing spans to the store failed: NotADirectoryError: Not a directory"
        f" (store '{tmp_path}/not-a-folder\\x1b[31m/tracekit.db')"
    )


def test_an_exporter_that_still_cannot_write_says_so_again_a_minute_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the first failure was the only one ever logged: a store that broke an hour later
    (a full disk) lost every export from then on without a word."""
    from types import SimpleNamespace

    from opentelemetry.sdk.trace.export import SpanExportResult

    from tracekit._runtime import ratelimit
    from tracekit.store.exporter import StoreSpanExporter

    clock = SimpleNamespace(now=1_000.0)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=lambda: clock.now))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    exporter = StoreSpanExporter(folder)
    for _ in range(3):
        assert exporter.export([]) is SpanExportResult.FAILURE
    clock.now += 61
    assert exporter.export([]) is SpanExportResult.FAILURE

    failed = (
        "tracekit: writing spans to the store failed: OperationalError: unable to open database"
        f" file (SQLITE_CANTOPEN) (store {str(folder)!r})"
    )
    assert [r.getMessage() for r in caplog.records if r.name == "tracekit"] == [
        failed,
        failed + "; 2 more such warnings suppressed",
    ]


def test_the_store_exporter_keeps_a_span_whose_clock_stepped_back_with_no_duration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wall clock stepped back mid-span: the SDK reports an end before the start. Before, the
    store exporter left the span out with a warning (it once stored a negative duration, which
    ``tracekit trace`` showed); now it ends when it starts and says how far the clock went back."""
    import time

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tracekit.store.exporter import StoreSpanExporter

    exporter = StoreSpanExporter(tmp_path / "s.db")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    now = time.time_ns()
    with tracer.start_as_current_span("kept", start_time=now, end_on_exit=False) as parent:
        tracer.start_span("clock stepped back", start_time=now + 50_000_000).end(
            end_time=now + 20_000_000
        )
        tracer.start_span("fine", start_time=now).end(end_time=now + 1_000)
    parent.end(end_time=now + 60_000_000)

    stored = Store(tmp_path / "s.db").spans_by_trace_ids(
        [f"{parent.get_span_context().trace_id:032x}"]
    )
    by_name = {s.name: s for s in stored}
    assert sorted(by_name) == ["clock stepped back", "fine", "kept"]
    stepped = by_name["clock stepped back"]
    assert (stepped.start_unix_nano, stepped.end_unix_nano) == (now + 50_000_000,) * 2
    assert stepped.attributes["tracekit.clock_stepped_back_ns"] == 30_000_000
    assert "tracekit.clock_stepped_back_ns" not in by_name["fine"].attributes
    assert [r.getMessage() for r in caplog.records if r.name == "tracekit"] == []


def test_one_log_record_the_store_cannot_keep_leaves_the_others_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record dated far ahead (nanoseconds taken for microseconds) overflowed SQLite's
    integers and failed the whole batch: none of the ten good records was stored."""
    import time

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from tracekit.store.exporter import StoreLogExporter

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(StoreLogExporter(tmp_path / "s.db")))
    logger = provider.get_logger("t")
    for n in range(10):
        logger.emit(body=f"good {n}", attributes={"correlation.id": "c-logs"})
    logger.emit(body="from far ahead", timestamp=time.time_ns() * 1000)
    logger.emit(body="from 1970", timestamp=1_000, attributes={"correlation.id": "c-logs"})
    provider.shutdown()

    stored = Store(tmp_path / "s.db").logs_by_correlation_id("c-logs")
    assert [log.body for log in stored] == [f"good {n}" for n in range(10)]
    assert [r.getMessage() for r in caplog.records if r.name == "tracekit"] == [
        "tracekit: a log record the store cannot keep was left out: log time before 2000 or more"
        " than a day ahead (a clock that stepped back, or set before 2000 or a day ahead)"
    ]


def test_one_export_of_spans_from_two_providers_stores_each_with_its_own_resource(
    tmp_path: Path,
) -> None:
    """The exporter makes each resource plain once per batch and shares it among that
    resource's spans: spans of two providers, interleaved in one batch, keep their own."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tracekit.store.exporter import StoreSpanExporter

    finished: list[list[ReadableSpan]] = []
    for service, version in (("cart", "1.0"), ("pay", "2.0")):
        memory = InMemorySpanExporter()
        attributes = {"service.name": service, "service.version": version, "zone": service}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        for n in range(3):
            provider.get_tracer("t").start_span(f"{service}-{n}").end()
        finished.append(list(memory.get_finished_spans()))
    batch = [span for pair in zip(*finished, strict=True) for span in pair]

    exporter = StoreSpanExporter(tmp_path / "s.db")
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()

    with Store(tmp_path / "s.db") as store:
        ids = [f"{s.get_span_context().trace_id:032x}" for s in batch]  # type: ignore[union-attr]
        stored = store.spans_by_trace_ids(ids)
    seen = {(s.name, s.service, s.service_version, s.resource["zone"]) for s in stored}
    assert seen == {
        (f"{service}-{n}", service, version, service)
        for service, version in (("cart", "1.0"), ("pay", "2.0"))
        for n in range(3)
    }


def vm_steps_of_a_search(path: Path, width: int) -> int:
    """SQLite's steps (thousands) for a search of a store holding one trace of ``width`` spans
    under its root, whose span ids grow as their starts go back in time."""
    root = span(T1, "f" * 16, None, name="run", start_unix_nano=1_000, end_unix_nano=10**9)
    children = [
        span(T1, f"{n + 1:016x}", "f" * 16, name="item", kind="INTERNAL",
             start_unix_nano=2_000 + (width - n) * 1_000, end_unix_nano=2_500 + (width - n) * 1_000)
        for n in range(width)
    ]  # fmt: skip
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    with Store(path) as store:
        store.write_spans([root, *children])
        store._reader_side().conn.set_progress_handler(count, 1_000)
        [request] = store.recent_requests()
    assert (request.root_name, request.span_count) == ("run", width + 1)
    return steps[0]


def test_a_search_reads_a_wide_trace_once_per_span(tmp_path: Path) -> None:
    """Whether a span opens a trace whose parent ids all lead into a loop was asked by walking
    its trace for an earlier span, for every span that is not a root: a batch job's trace of
    8,000 spans took 3.5 s to search (twice as wide, four times as long), now 12 ms."""
    narrow = vm_steps_of_a_search(tmp_path / "narrow.db", 1_000)
    wide = vm_steps_of_a_search(tmp_path / "wide.db", 2_000)
    assert wide < 2.5 * narrow


def test_the_store_exporter_writes_a_nan_in_a_log_body_as_json(tmp_path: Path) -> None:
    """``TRACEKIT_EXPORTER=store`` (``StoreLogExporter``) wrote a structured body holding a NaN
    or infinite double as non-JSON text (``{"ratio": NaN, ...}``), as the collector did."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from tests.receiver.test_log_body_json import BODY, STORED, strict_json

    from tracekit.store.exporter import StoreLogExporter

    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(StoreLogExporter(tmp_path / "s.db")))
    provider.get_logger("test").emit(
        body=BODY, timestamp=time.time_ns(), attributes={"correlation.id": "c-nan-body"}
    )
    provider.shutdown()
    with Store(tmp_path / "s.db") as store:
        (stored,) = store.logs_by_correlation_id("c-nan-body")
    assert strict_json(stored.body) == STORED


def test_the_store_exporter_cuts_a_long_string_of_a_str_subclass_to_its_bound(
    tmp_path: Path,
) -> None:
    """The SDK keeps a ``str`` subclass as it is (Jinja's ``Markup``, Django's ``SafeString``:
    a rendered page set as an attribute), and the store, which bounds every string value to
    16,384 characters, took only an exact ``str`` for a string: a 200,007-character page was
    stored whole, in a span's attributes and in a log record's."""
    from django.utils.safestring import mark_safe
    from markupsafe import Markup
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tracekit.store.exporter import StoreLogExporter, StoreSpanExporter

    page = "<p>" + "x" * 200_000 + "</p>"
    shown = {"correlation.id": "c-page", "jinja": Markup(page), "django": mark_safe(page),
             "both": [Markup(page), "short"]}  # fmt: skip
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(StoreSpanExporter(tmp_path / "s.db")))
    tracer_provider.get_tracer("t").start_span("GET /page", attributes=shown).end()
    tracer_provider.shutdown()
    logger_provider = LoggerProvider()
    exporter = StoreLogExporter(tmp_path / "s.db")
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger_provider.get_logger("t").emit(body="rendered", attributes=shown)
    logger_provider.shutdown()

    store = Store(tmp_path / "s.db")
    [stored_span] = store.spans_by_correlation_id("c-page")
    [stored_log] = store.logs_by_correlation_id("c-page")
    for attributes in (stored_span.attributes, stored_log.attributes):
        assert attributes["jinja"] == attributes["django"] == page[:16_384]
        assert attributes["both"] == [page[:16_384], "short"]
