"""Retention by age and by size, applied in short transactions so ingest keeps flowing."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tracekit.store._connection import retry_busy, truncate_checkpoint
from tracekit.store._locking import exclusive, write_transaction
from tracekit.store._reclaim import string_heavy
from tracekit.store._schema import (
    MARK_COUNTED,
    THROUGH_ROW,
    THROUGH_SPAN_ROW,
    counted_through,
    last_span_id,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|y)?\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}  # as --since
_POWERS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4}
CHUNK_ROWS = 5000
# Bounds past which a value can only be a typo: records are refused when dated before 2000, and
# SQLite stores at most 281 TB. They keep every cutoff inside SQLite's 64-bit integers.
MAX_AGE_SECONDS = 36500 * 86400
MAX_BYTES = 1000 * 10**12


def parse_duration(text: str) -> int:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"``, ``"1y"`` (365 days) -> ns; bare numbers
    are seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text[:40]!r} (use e.g. 7d, 12h, 30m)")
    seconds = float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError("retention must be positive")
    if seconds > MAX_AGE_SECONDS:  # also infinity, from a number too long for a float
        raise ValueError("retention must be at most 36500d (100y)")
    return int(seconds * 1e9)


def parse_size(text: str) -> int:
    """``"2GB"`` (powers of 1000), ``"2GiB"`` (powers of 1024), or bytes -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text[:40]!r} (use e.g. 500MB, 2GB)")
    unit = (match.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    size = float(match.group(1)) * base ** _POWERS[unit[:1]]
    if size < 1_000_000:
        raise ValueError(f"max size must be at least 1MB{_bytes_hint(text, unit)}")
    if size > MAX_BYTES:  # also infinity, from a number too long for a float
        raise ValueError("max size must be at most 1000TB")
    return int(size)


def _bytes_hint(text: str, unit: str) -> str:
    """Said of a size too small: a bare ``500`` meant as megabytes is 500 bytes."""
    return "" if unit else f" ({text.strip()[:40]!r} without a unit is bytes: 500MB, 2GB)"


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the store keeps: records younger than ``max_age_ns``, file under ``max_bytes``."""

    max_age_ns: int | None = None
    max_bytes: int | None = None


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file holding live pages (free pages excluded)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


Reclaim = Callable[[], int]


def steps(
    conn: sqlite3.Connection, retention: Retention, now_ns: int, reclaim: Reclaim
) -> Iterator[int]:
    """Apply ``retention`` one short transaction at a time, yielding rows deleted by each.

    Between steps the caller may write: the receiver interleaves retention with ingest.
    ``reclaim`` deletes the strings no record refers to any more (see ``_reclaim``); it runs
    once records were deleted and strings are a large share of the store.
    """
    prepare(conn)
    deleted_any = False
    if retention.max_age_ns is not None:
        cutoff = now_ns - retention.max_age_ns
        while deleted := _delete_chunk(conn, "s.start_ns < ?", "time_ns < ?", (cutoff,)):
            deleted_any = True
            yield deleted
    if retention.max_bytes is not None:
        for deleted in _shrink_steps(conn, int(retention.max_bytes * 0.9), reclaim):
            deleted_any = deleted_any or deleted > 0
            yield deleted
    if deleted_any and string_heavy(conn):
        reclaim()
        yield 0
    yield from _vacuum_steps(conn)


def _vacuum_steps(conn: sqlite3.Connection) -> Iterator[int]:
    """Give the free pages back to the file system a few MB per transaction (yielding 0 after
    each), then checkpoint so that the file itself shrinks."""
    free = _free_pages(conn)
    while free > 0:
        # executescript steps the pragma to its end: execute() steps a statement that returns
        # no columns once, and incremental_vacuum frees one page per step.
        retry_busy(lambda: _vacuum_step(conn))
        yield 0
        # A file whose auto_vacuum is not INCREMENTAL (made by an older tracekit in a file that
        # held a table before) gives nothing back: its free pages are only reused.
        free, before = _free_pages(conn), free
        if free >= before:
            break
    # The file itself shrinks when the WAL is copied back into it. Every pass asks, not only
    # one that vacuumed: a reader's snapshot may have held the last pass's copy back, and an
    # idle store has no writes whose automatic checkpoints would finish it.
    _checkpoint_without_waiting(conn)


def _vacuum_step(conn: sqlite3.Connection) -> None:
    with exclusive(conn):  # a write transaction of its own
        conn.executescript("PRAGMA incremental_vacuum(2048)")


def _checkpoint_without_waiting(conn: sqlite3.Connection) -> None:
    """Copy the WAL back into the file, and empty the WAL if no one is using it just now.

    A WAL that grew behind a long read is otherwise cut back (to journal_size_limit) only by
    a later write. Without a busy timeout, TRUNCATE never waits for the writer or a reader: it
    then copies what it can, as PASSIVE does, and the next pass tries again.
    """
    with contextlib.suppress(sqlite3.OperationalError):  # the lock held past its wait: next pass
        truncate_checkpoint(conn, wait_ms=0)


def _free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def _shrink_steps(conn: sqlite3.Connection, target_bytes: int, reclaim: Reclaim) -> Iterator[int]:
    """Delete the oldest records until the live pages fit in ``target_bytes``.

    Where strings weigh much (unique names or keys), the strings of the records deleted are
    reclaimed before measuring again; otherwise every record would go and the file still be big.
    """
    fresh = True  # nothing deleted since the last reclaim
    for _ in range(100_000):  # bounded: each pass deletes at least one row or stops
        used = used_bytes(conn)
        if used > target_bytes and not fresh and string_heavy(conn):
            reclaim()
            fresh = True
            yield 0
            used = used_bytes(conn)
        if used <= target_bytes:
            return
        cutoff = _oldest_cutoff(conn, _rows_to_free(conn, used, target_bytes))
        if cutoff is None:
            return
        deleted = _delete_chunk(conn, "s.start_ns <= ?", "time_ns <= ?", (cutoff,))
        if not deleted:
            return
        fresh = False
        yield deleted


def apply(conn: sqlite3.Connection, retention: Retention, now_ns: int, reclaim: Reclaim) -> int:
    """Apply ``retention`` fully; returns the number of records deleted."""
    return sum(steps(conn, retention, now_ns, reclaim))


def _rows_to_free(conn: sqlite3.Connection, used: int, target: int) -> int:
    """About how many of the oldest records to delete next: the excess share, at most a chunk."""
    rows = _approximate_rows(conn, "spans") + _approximate_rows(conn, "logs")
    return max(50, min(CHUNK_ROWS, rows * (used - target) // max(used, 1)))


def _approximate_rows(conn: sqlite3.Connection, table: str) -> int:
    # max(id) - min(id) approximates the row count: deletes mostly trim the start. Each in a
    # subquery of its own, which SQLite answers from the end of the index (O(log n)); written
    # as one expression, max(id) - min(id) reads every row, 0.45 s a chunk at 3 million rows.
    query = f"SELECT (SELECT max(id) FROM {table}) - (SELECT min(id) FROM {table}) + 1"  # noqa: S608
    row = conn.execute(query).fetchone()
    return int(row[0] or 0)


def _oldest_cutoff(conn: sqlite3.Connection, rows: int) -> int | None:
    """The time of the ``rows``-th oldest record, spans and logs together (or of the newest)."""
    # Both time indexes are read in order and merged: a mostly-log store loses its oldest
    # records, whichever kind they are, not every span first.
    row = (
        conn.execute(
            "SELECT t FROM (SELECT start_ns AS t FROM spans UNION ALL SELECT time_ns FROM logs)"
            " ORDER BY t LIMIT 1 OFFSET ?",
            (rows - 1,),
        ).fetchone()
        or conn.execute(
            "SELECT max(t) FROM (SELECT max(start_ns) AS t FROM spans UNION ALL"
            " SELECT max(time_ns) FROM logs)"
        ).fetchone()
    )
    return None if row is None or row[0] is None else int(row[0])


def _delete_chunk(
    conn: sqlite3.Connection, span_condition: str, log_condition: str, params: tuple[int, ...]
) -> int:
    return retry_busy(lambda: _delete_chunk_once(conn, span_condition, log_condition, params))


def _delete_chunk_once(
    conn: sqlite3.Connection, span_condition: str, log_condition: str, params: tuple[int, ...]
) -> int:
    with write_transaction(conn):
        deleted = _delete_spans(conn, span_condition, params)
        logs = conn.execute(
            f"DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE {log_condition}"  # noqa: S608
            " ORDER BY time_ns LIMIT ?) RETURNING trace_ref, correlation_ref",
            (*params, CHUNK_ROWS),
        ).fetchall()
        _touch(conn, logs)
        deleted += len(logs)
        _shrink_trace_tables(conn)
        _delete_orphans(conn)
    return deleted


def _any_span_id_clash(conn: sqlite3.Connection) -> bool:
    """Whether the store notes any span id clash: almost never, and then retention spares a
    delete per span it deletes (a fifth of its time)."""
    return conn.execute("SELECT 1 FROM span_id_clashes LIMIT 1").fetchone() is not None


def _delete_spans(conn: sqlite3.Connection, condition: str, params: tuple[int, ...]) -> int:
    rows = conn.execute(
        f"DELETE FROM spans WHERE id IN (SELECT s.id FROM spans s WHERE {condition}"  # noqa: S608
        " ORDER BY s.start_ns LIMIT ?) RETURNING trace_ref, correlation_ref, span_id, has_links",
        (*params, CHUNK_ROWS),
    ).fetchall()
    conn.executemany(
        "DELETE FROM links WHERE trace_ref = ? AND span_id = ?",
        [(row[0], row[2]) for row in rows if row[3]],
    )
    if _any_span_id_clash(conn):  # a trace ref is handed out again once its trace is gone
        conn.executemany(
            "DELETE FROM span_id_clashes WHERE trace_ref = ? AND span_id = ?",
            [(row[0], row[2]) for row in rows],
        )
    _touch(conn, rows)
    return len(rows)


def _touch(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Remember the trace and correlation refs of deleted rows, to check them for orphans."""
    conn.executemany(
        "INSERT OR IGNORE INTO temp.touched_traces VALUES (?)",
        [r[:1] for r in rows if r[0] is not None],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO temp.touched_correlations VALUES (?)",
        [r[1:2] for r in rows if r[1] is not None],
    )


def _shrink_trace_tables(conn: sqlite3.Connection) -> None:
    """Measure the touched traces' extents and correlations again over the spans left."""
    conn.execute(
        "DELETE FROM trace_correlations"
        " WHERE correlation_ref IN (SELECT ref FROM temp.touched_correlations)"
        " AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_ref = trace_correlations.trace_ref"
        " AND s.correlation_ref = trace_correlations.correlation_ref)"
    )
    conn.execute(
        "DELETE FROM trace_extents WHERE trace_ref IN (SELECT ref FROM temp.touched_traces)"
        " AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_ref = trace_extents.trace_ref)"
    )
    conn.execute(
        "UPDATE trace_extents SET (start_ns, end_ns) = (SELECT min(s.start_ns),"
        " max(s.start_ns + s.duration_ns) FROM spans s WHERE s.trace_ref = trace_extents.trace_ref)"
        " WHERE trace_ref IN (SELECT ref FROM temp.touched_traces)"
    )
    # The newest spans deleted: the ids past the last left are handed out again
    counted, last = counted_through(conn), last_span_id(conn)
    if counted is not None and counted[0] > last:
        conn.execute(MARK_COUNTED, (THROUGH_ROW, THROUGH_SPAN_ROW, last))


def _delete_orphans(conn: sqlite3.Connection) -> None:
    """Drop trace and correlation ids no span or log refers to any more."""
    conn.execute(
        "DELETE FROM traces WHERE id IN (SELECT ref FROM temp.touched_traces)"
        " AND NOT EXISTS (SELECT 1 FROM spans WHERE trace_ref = traces.id)"
        " AND NOT EXISTS (SELECT 1 FROM logs WHERE trace_ref = traces.id)"
    )
    conn.execute(
        "DELETE FROM correlations WHERE id IN (SELECT ref FROM temp.touched_correlations)"
        " AND NOT EXISTS (SELECT 1 FROM spans WHERE correlation_ref = correlations.id)"
        " AND NOT EXISTS (SELECT 1 FROM logs WHERE correlation_ref = correlations.id)"
    )
    conn.execute("DELETE FROM temp.touched_traces")
    conn.execute("DELETE FROM temp.touched_correlations")


def prepare(conn: sqlite3.Connection) -> None:
    """Create the connection-local scratch table retention uses."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS touched_traces (ref INTEGER PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS touched_correlations (ref INTEGER PRIMARY KEY)")
