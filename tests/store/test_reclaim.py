"""Retention reclaims strings and resources nothing refers to any more, without ever breaking a
record that is kept or a writer that cached ids before the reclaim."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from tracekit.records import LogRecordData, SpanEvent, SpanLink, SpanRecord
from tracekit.store import Retention, Store
from tracekit.store._interner import Interner
from tracekit.store._reclaim import reclaim
from tracekit.store._rows import RowEncoder

START = 1_700_000_000 * 10**9


def _span(n: int, unique: bool = True) -> SpanRecord:
    suffix = f"-{n}" if unique else ""
    return SpanRecord(
        trace_id=f"{n + 1:032x}", span_id=f"{n + 1:016x}", parent_span_id=None,
        service=f"svc{suffix}", name=f"op{suffix}", kind="SERVER",
        start_unix_nano=START + n, end_unix_nano=START + n + 10, scope=f"scope{suffix}",
        attributes={f"key{suffix}": f"value{suffix}", "shared": "same", "n": n},
        events=[SpanEvent(f"event{suffix}", START + n, {f"ev{suffix}": f"evv{suffix}"})],
        links=[SpanLink("f" * 32, "e" * 16, {f"link{suffix}": f"lv{suffix}"})],
        resource={"service.name": f"svc{suffix}", "host.name": f"host{suffix}"},
    )  # fmt: skip


def _log(n: int) -> LogRecordData:
    return LogRecordData(
        time_unix_nano=START + n, service=f"svc-{n}", severity_text=f"SEV{n}", severity_number=9,
        body=f"log {n}", trace_id=f"{n + 1:032x}", span_id=f"{n + 1:016x}",
        attributes={f"lk-{n}": f"lv-{n}"}, resource={"service.name": f"svc-{n}"},
    )  # fmt: skip


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_size_retention_reclaims_strings_and_keeps_records_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = Store(path)
    spans = [_span(n) for n in range(12_000)]
    for start in range(0, len(spans), 2000):
        store.write(spans[start : start + 2000], [_log(n) for n in range(start, start + 50)])
    strings_before = _count(path, "strings")
    store.apply_retention(Retention(max_bytes=1_000_000))
    kept = store.spans_since(0, limit=100_000)
    assert 0 < len(kept) < 12_000
    assert path.stat().st_size <= 1_000_000
    assert _count(path, "strings") < strings_before / 2
    assert _count(path, "resources") <= len(kept) + 50 + 1
    by_id = {s.span_id: s for s in spans}
    assert all(s == by_id[s.span_id] for s in kept)  # every kept string still reads right
    store.close()


def test_a_writer_that_cached_ids_before_a_reclaim_writes_right_strings(tmp_path: Path) -> None:
    """Two Store objects stand for two processes: one reclaims, the other cached the old ids."""
    path = tmp_path / "w.db"
    writer, janitor = Store(path), Store(path)
    old = [_span(n) for n in range(20_000)]
    writer.write(old, [])
    janitor.apply_retention(Retention(max_age_ns=1), now_ns=START + 100_000)  # deletes them all
    assert writer.count_spans() == 0 and _count(path, "strings") < 100
    again = [_span(n) for n in range(3)]  # the writer's cache still maps these names to old ids
    again = [dataclasses.replace(s, trace_id="ab" * 16) for s in again]
    writer.write(again, [_log(1)])
    assert sorted(writer.spans_by_trace_ids(["ab" * 16]), key=lambda s: s.span_id) == again
    (log,) = writer.logs_by_trace_ids([_log(1).trace_id or ""])
    assert log == _log(1)
    writer.close()
    janitor.close()


def test_strings_of_kept_records_survive_whatever_integers_say(tmp_path: Path) -> None:
    """Kept spans share strings with deleted ones and carry integers equal to string ids."""
    path = tmp_path / "s.db"
    store = Store(path)
    store.write([_span(n) for n in range(12_000)], [])  # old, unique strings
    store.write([_span(n, unique=False) for n in range(20_000, 20_005)], [])  # new, shared names
    store.apply_retention(Retention(max_age_ns=1), now_ns=START + 20_001)
    kept = store.spans_since(0)
    assert kept == [_span(n, unique=False) for n in range(20_000, 20_005)]
    assert _count(path, "strings") < 200
    store.close()


def test_nan_and_infinities_are_standard_json_that_a_reclaim_reads(tmp_path: Path) -> None:
    """OTLP allows NaN and infinite doubles; SQLite's JSON functions (the reclaim's json_tree)
    refuse them as bare numbers. They are stored as the strings OTLP/JSON writes for them."""
    path = tmp_path / "n.db"
    store = Store(path)
    odd = {"nan": math.nan, "inf": math.inf, "deep": [{"minus": -math.inf}]}
    span = dataclasses.replace(
        _span(1), attributes=odd, events=[SpanEvent("e", START, odd)],
        links=[SpanLink("f" * 32, "e" * 16, odd)],
    )  # fmt: skip
    store.write([_span(0), span], [dataclasses.replace(_log(1), attributes=odd)])
    with sqlite3.connect(path) as conn:
        assert reclaim(conn) >= 0  # OperationalError: malformed JSON, when stored bare
    written = {"nan": "NaN", "inf": "Infinity", "deep": [{"minus": "-Infinity"}]}
    (read,) = store.spans_by_trace_ids([span.trace_id])
    assert read.attributes == read.events[0].attributes == read.links[0].attributes == written
    assert store.logs_by_trace_ids([span.trace_id])[0].attributes == written
    store.close()


def _named(n: int, name: str) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{n:032x}", span_id=f"{n:016x}", parent_span_id=None, service="svc", name=name,
        kind="SERVER", start_unix_nano=START + n * 1000, end_unix_nano=START + n * 1000 + 10,
        attributes={"http.route": "/users/{id}"}, resource={"service.name": "svc"},
    )  # fmt: skip


def _plain_log(n: int) -> LogRecordData:
    return LogRecordData(START + n * 1000, "svc", "INFO", 9, "ok", None, None, {}, {})


def test_size_retention_with_unique_names_and_many_logs_keeps_the_newest(tmp_path: Path) -> None:
    """Unique span names, five logs per span, under a size limit: strings are measured against
    the live records (before: against every log ever written, so strings never looked heavy,
    were never reclaimed, and size retention deleted every record, the batch just written too)."""
    store = Store(tmp_path / "l.db")
    n = 0
    for batch in range(20):
        spans = [_named(n := n + 1, f"GET /users/{n}") for _ in range(1000)]
        store.write(spans, [_plain_log(s) for s in range(n - 999, n + 1) for _ in range(5)])
        store.apply_retention(Retention(max_bytes=1_000_000))
        kept = store.spans_since(0)
        assert kept and kept[-1] == spans[-1], f"{len(kept)} spans kept after batch {batch}"
    assert (tmp_path / "l.db").stat().st_size <= 1_000_000
    store.close()


def test_no_reclaim_once_unique_names_stop(tmp_path: Path) -> None:
    """Strings counted as rows, not by their highest id: once the unique names are gone, passes
    that delete a few old spans do not reclaim again (before, each one did, and a reclaim pauses
    ingest and makes every writer encode again)."""
    path = tmp_path / "g.db"
    store = Store(path)
    store.write([_named(n, f"GET /users/{n}") for n in range(1, 12_001)], [])
    store.write([_named(n, "GET /users/{id}") for n in range(12_001, 52_001)], [])
    store.apply_retention(Retention(max_age_ns=1), now_ns=START + 12_001 * 1000)
    assert _count(path, "strings") < 10 and store.count_spans() == 40_000
    generation = _generation(path)

    for n in range(12_002, 12_010):  # later passes, each deleting an old span
        store.apply_retention(Retention(max_age_ns=1), now_ns=START + n * 1000)
    assert store.count_spans() == 40_000 - 8
    assert _generation(path) == generation
    store.close()


def _generation(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


class _ReclaimedWhileEncoding(Interner):
    """Another process reclaims strings just before each of the next few internings."""

    reclaims_to_come = 0

    def add(self, strings: Iterable[str], resources: Iterable[str]) -> None:
        if self.reclaims_to_come:
            self.reclaims_to_come -= 1
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                reclaim(conn)
        super().add(strings, resources)


def test_reclaims_landing_while_a_write_encodes_lose_nothing(tmp_path: Path) -> None:
    """The encoder encodes again once when a reclaim meets its interning; a second reclaim
    during that second encoding escaped ``Store.write`` (the exporter's export failed), although
    docs/store.md says in-process writers encode again at once."""
    path = tmp_path / "e.db"
    store = Store(path)
    interner = _ReclaimedWhileEncoding(path)
    store._encoder = RowEncoder(interner)
    store.write_spans([_named(1, "first")])
    before = _generation(path)
    interner.reclaims_to_come = 2

    store.write_spans([_named(2, "second, a new name")])
    assert [s.name for s in store.spans_since(0)] == ["first", "second, a new name"]
    assert _generation(path) == before + 2
    store.close()
