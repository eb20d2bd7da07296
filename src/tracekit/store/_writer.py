"""Writing span rows and log records into the store: one short transaction per batch."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple, cast

from tracekit._utf8 import clean_text
from tracekit.records import CORRELATION_ATTRIBUTE, Attributes, LogRecordData
from tracekit.store._connection import (
    checkpoint,
    retry_busy,
    truncate_checkpoint,
    wal_path,
)
from tracekit.store._encoding import (
    StringTable,
    encoded_attributes,
    id_bytes,
    intern_resource,
)
from tracekit.store._interner import resource_digest, resource_document
from tracekit.store._locking import BUSY_TIMEOUT_MS, write_transaction
from tracekit.store._reclaim import StaleRows, generation
from tracekit.store._rows import SpanRow, SpanRows, indexed_correlation
from tracekit.store._schema import (
    MARK_COUNTED,
    THROUGH_ROW,
    THROUGH_SPAN_ROW,
    count_in,
    counted_through,
    fill_trace_tables_step,
    last_span_id,
)

# A row's first value holds its ids: trace id (16 bytes), span id (8), parent span id (8, zeros
# for none); trace and correlation are resolved here, "absent" is '' or 0 (see _rows.py).
_INSERT_SPAN = (
    "INSERT OR IGNORE INTO spans (trace_ref, span_id, parent_id, service_ref, name_ref, kind,"
    " start_ns, duration_ns, status, status_message, correlation_ref, resource_ref, scope_ref,"
    " attributes, events, has_links) VALUES ("
    "(SELECT id FROM traces WHERE trace_id = substr(?1, 1, 16)), substr(?1, 17, 8),"
    " nullif(substr(?1, 25, 8), zeroblob(8)), ?2, ?3, ?4, ?5, ?6, ?7, nullif(?8, ''),"
    " (SELECT id FROM correlations WHERE value = ?9), ?10, nullif(?11, 0), nullif(?12, ''),"
    " nullif(?13, ''), nullif(?14, 0))"
)
# A link row is stored only with the span stored in the same batch (its row id past the last
# one before it): a copy of a stored span sent again (a retry, another process) is skipped, and
# its links must not be stored beside it, or they would join its trace to others in every read.
_INSERT_LINK = (
    "INSERT OR IGNORE INTO links (trace_ref, span_id, position, linked_trace_id, linked_span_id,"
    " attributes) SELECT s.trace_ref, s.span_id, ?3, ?4, ?5, nullif(?6, '') FROM spans s"
    " WHERE s.trace_ref = (SELECT id FROM traces WHERE trace_id = ?1) AND s.span_id = ?2"
    " AND s.id > ?7"
)
# What tells a copy of a stored span sent again (an export retried) from another span sent with
# its trace and span id (a client reusing ids): the row's columns that a copy repeats exactly.
# One statement per row, compared in SQLite: a retried batch is all copies, and is checked whole.
_INSERT_CLASH = (
    "INSERT OR IGNORE INTO span_id_clashes (trace_ref, span_id)"
    " SELECT trace_ref, span_id FROM spans"
    " WHERE trace_ref = (SELECT id FROM traces WHERE trace_id = substr(?1, 1, 16))"
    " AND span_id = substr(?1, 17, 8)"
    " AND (service_ref, name_ref, kind, start_ns, duration_ns) IS NOT (?2, ?3, ?4, ?5, ?6)"
)
# Whether a row is such another span (the clause of _INSERT_CLASH): to name one the batch had.
_CLASHES_WITH_STORED = (
    "SELECT 1 FROM spans"
    " WHERE trace_ref = (SELECT id FROM traces WHERE trace_id = substr(?1, 1, 16))"
    " AND span_id = substr(?1, 17, 8)"
    " AND (service_ref, name_ref, kind, start_ns, duration_ns) IS NOT (?2, ?3, ?4, ?5, ?6)"
)
_INSERT_MARK = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_INSERT_TRACE = "INSERT OR IGNORE INTO traces (trace_id) VALUES (?)"
_INSERT_CORRELATION = "INSERT OR IGNORE INTO correlations (value) VALUES (?)"
# Like a span row's, a log row's trace and correlation are looked up by the INSERT, and "absent"
# is '' or 0 (binding None or bytes makes sqlite3 consult its adapter registry).
_INSERT_LOG = (
    "INSERT INTO logs (time_ns, service_ref, severity_number, severity_ref, body, trace_ref,"
    " span_id, correlation_ref, resource_ref, attributes) VALUES (?1, ?2, ?3, nullif(?4, 0), ?5,"
    " (SELECT id FROM traces WHERE trace_id = ?6), nullif(?7, ''),"
    " (SELECT id FROM correlations WHERE value = ?8), ?9, nullif(?10, ''))"
)


# SQLite writes the WAL from its start again only when no read holds a snapshot in it. Reads that
# follow each other without a gap (three `tracekit services` loops during an ingest) always left
# one there, and the WAL grew for as long as they ran: 133 MB beside a 31 MB store in 90 s. Past
# this size a writer empties it (``_bound_wal``); journal_size_limit is the same size.
WAL_BOUND_BYTES = 64 * 1024 * 1024
# How long a writer's first checkpoint past the bound waits for the reads in flight, holding the
# write lock. Each try that gives up waits twice as long the next time, up to the busy timeout,
# so that reads overlapping for longer are waited out too. Every try waiting the full 5 s made
# an OTel SDK exporter sending 3,000 spans/s drop 13,000 of them (its queue holds 2,048).
FIRST_WAIT_MS = 500


class SpanIdClashes(NamedTuple):
    """Span ids a batch sent for a span other than the one stored under them: one of them (lower-
    case hex, as the store made it) and how many were newly noted."""

    trace_id: str
    span_id: str
    noted: int


class BatchMark(NamedTuple):
    """A batch's number, recorded under ``key`` in ``meta`` by the transaction that writes it.

    The collector's writer process may die after a commit and before its answer; its batches
    are then written again, and logs, which have no id, were stored twice. The number of the
    last batch committed tells which of those were written already (see ``store._process``).
    """

    key: str
    number: int


class StoreWriter:
    """Writes rows on one write connection; not thread-safe (the Store locks)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.strings = StringTable()
        self._resources: dict[bytes, int] = {}
        self._pending_resources: dict[bytes, int] = {}
        self._batch_resources: dict[tuple[int, str | None], int] = {}
        self._generation = -1
        self._wal = wal_path(conn)
        self._next_try = 0
        self._gave_up_at = 0  # the WAL's frames when the last try gave up (0: it did not)
        self._wait_ms = FIRST_WAIT_MS  # how long the next try waits

    def write(
        self, spans: SpanRows, logs: Sequence[LogRecordData], mark: BatchMark | None = None
    ) -> SpanIdClashes | None:
        """Insert ``spans`` and ``logs`` in one transaction (spans already stored are skipped);
        returns the span id clashes it noted, if any. ``mark``, if given, is recorded in the
        same transaction (see ``BatchMark``)."""
        if not spans.spans and not logs:
            return None
        clashes = retry_busy(lambda: self._write_once(spans, logs, mark))
        self._bound_wal()
        # After the batch, in a transaction of its own (see _schema). Asked at every batch: a
        # refill another writer started may be left to this one (that writer exited).
        retry_busy(lambda: fill_trace_tables_step(self.conn))
        return clashes

    def _bound_wal(self) -> None:
        """Empty a WAL grown past ``WAL_BOUND_BYTES``.

        A TRUNCATE checkpoint holds the write lock, copies what is left back into the file,
        waits for the reads begun before it (a read that starts once the WAL is all copied reads
        the file alone and is not waited for), then empties the WAL. It waits 0.5 s, twice as long
        after each try that gave up, up to the time a writer waits for a lock (``busy_timeout``,
        5 s), and 0.5 s again once the WAL was emptied (by a try, the collector's WAL copier or a
        retention pass); a read lasting longer keeps its
        snapshot, and the writer tries again once the WAL has grown by another quarter of the
        bound, not after every commit; once the WAL is found smaller than it was then (emptied or
        restarted meanwhile), the bound is the bound again. While the read that made a try give
        up still holds its snapshot (the WAL is copied back no further than where it began),
        the writer does not wait for it again: each such wait paused every write for 5 s, and a
        collector stored 29% of what was sent for as long as one long read lasted.
        """
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return  # no WAL (yet): nothing to bound
        if size < self._next_try - WAL_BOUND_BYTES // 4:
            # smaller than when the last try gave up: emptied since (another writer, retention)
            # or restarted and cut back to journal_size_limit, the bound itself: no read held
            # it then, so the reads that made tries give up are over and the wait is short again
            self._next_try = self._gave_up_at = 0
            self._wait_ms = FIRST_WAIT_MS
        if size <= max(WAL_BOUND_BYTES, self._next_try):
            return
        if self._gave_up_at and self._copied_back() < self._gave_up_at:
            self._next_try = size + WAL_BOUND_BYTES // 4  # that read goes on
            return
        try:
            busy, frames, _ = truncate_checkpoint(self.conn, self._wait_ms)
        except sqlite3.Error:
            busy, frames = 1, 0  # the batch is committed all the same
        self._next_try = size + WAL_BOUND_BYTES // 4 if busy else 0
        self._gave_up_at = frames if busy else 0
        self._wait_ms = min(2 * self._wait_ms, BUSY_TIMEOUT_MS) if busy else FIRST_WAIT_MS

    def _copied_back(self) -> int:
        """How many of the WAL's frames are in the file once those no read needs are copied
        (a PASSIVE checkpoint, which waits for no one; -1 when it could not run)."""
        try:
            return checkpoint(self.conn)[2]
        except sqlite3.Error:
            return -1

    def _write_once(
        self, spans: SpanRows, logs: Sequence[LogRecordData], mark: BatchMark | None
    ) -> SpanIdClashes | None:
        try:
            with write_transaction(self.conn):
                self._check_generation(spans)
                self.strings.begin(self.conn)
                self._pending_resources = {}
                self._batch_resources = {}
                clashes = self._insert_spans(spans)
                self._insert_logs(logs)
                if mark is not None:
                    self.conn.execute(_INSERT_MARK, mark)
        except BaseException:
            self.strings.rollback()
            raise
        self.strings.commit()
        self._resources.update(self._pending_resources)
        return clashes

    def _check_generation(self, spans: SpanRows) -> None:
        """Forget cached ids after a reclaim; refuse rows encoded before it (inside BEGIN)."""
        current = generation(self.conn)
        if current != self._generation:
            self.strings = StringTable()
            self._resources = {}
            self._generation = current
        if spans.spans and spans.generation is not None and spans.generation != current:
            raise StaleRows("rows carry ids from before strings were reclaimed")

    def _insert_spans(self, rows: SpanRows) -> SpanIdClashes | None:
        execute = self.conn.executemany
        execute(_INSERT_TRACE, [(bytearray(t),) for t in rows.trace_ids])
        execute(_INSERT_CORRELATION, [(c,) for c in rows.correlations])
        last_before = last_span_id(self.conn) if rows.links else 0  # (_INSERT_LINK)
        changes_before = self.conn.total_changes
        execute(_INSERT_SPAN, rows.spans)
        self._extend_trace_tables()
        clashes = None
        if self.conn.total_changes - changes_before < len(rows.spans):  # some were ignored
            clashes = self._note_clashes(rows.spans)
        execute(_INSERT_LINK, [(*link, last_before) for link in rows.links])
        return clashes

    def _extend_trace_tables(self) -> None:
        """Count the spans stored since the per-trace tables were last kept in: this batch's,
        and any an older tracekit, which keeps no such tables, stored meanwhile."""
        counted = counted_through(self.conn)
        last = last_span_id(self.conn)
        if counted is None or counted == (last, True):
            return
        through, same = counted
        # An older tracekit deleted the spans counted last: their ids were (or are to be)
        # handed out again, to spans of this batch or of that tracekit's, counted in by none.
        if through > last or not same:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('trace_tables_fill', 0)")
        else:
            count_in(self.conn, "spans NOT INDEXED WHERE id > ?", (through,))
        self.conn.execute(MARK_COUNTED, (THROUGH_ROW, THROUGH_SPAN_ROW, last))

    def _note_clashes(self, spans: list[SpanRow]) -> SpanIdClashes | None:
        """Note the span ids stored for a span other than the one of ``spans`` that the
        insert skipped: a copy sent again is the same span, and no clash."""
        changes_before = self.conn.total_changes
        self.conn.executemany(_INSERT_CLASH, [row[:6] for row in spans])
        noted = self.conn.total_changes - changes_before
        if not noted:  # copies sent again (a retried export): the common case, said in one step
            return None
        clashing = (r for r in spans if self.conn.execute(_CLASHES_WITH_STORED, r[:6]).fetchone())
        ids = bytes(cast("bytearray", next(clashing)[0]))  # (_INSERT_SPAN)
        return SpanIdClashes(ids[:16].hex(), ids[16:24].hex(), noted)

    def _insert_logs(self, logs: Sequence[LogRecordData]) -> None:
        if not logs:
            return
        rows: list[tuple[object, ...]] = []
        traces: set[bytes] = set()
        correlations: set[str] = set()
        for record in logs:
            trace_id = id_bytes(record.trace_id, 16, "trace id") if record.trace_id else b""
            correlation = indexed_correlation(record.attributes.get(CORRELATION_ATTRIBUTE)) or ""
            traces.add(trace_id)
            correlations.add(correlation)
            rows.append(self._log_row(record, trace_id, correlation))
        # a statement per table, not one per new trace or correlation id
        self.conn.executemany(_INSERT_TRACE, [(bytearray(t),) for t in traces if t])
        self.conn.executemany(_INSERT_CORRELATION, [(c,) for c in correlations if c])
        self.conn.executemany(_INSERT_LOG, rows)

    def _log_row(
        self, record: LogRecordData, trace_id: bytes, correlation: str
    ) -> tuple[object, ...]:
        ref = self.strings.ref
        skip = CORRELATION_ATTRIBUTE if correlation else None
        return (
            record.time_unix_nano,
            ref(record.service),
            record.severity_number,
            ref(record.severity_text) if record.severity_text else 0,
            clean_text(record.body),
            bytearray(trace_id),
            bytearray(id_bytes(record.span_id, 8, "log span id")) if record.span_id else "",
            correlation,
            self._resource_ref(record.resource, None),
            encoded_attributes(self.strings, record.attributes, skip) or "",
        )

    def _resource_ref(self, resource: Attributes, version: str | None) -> int:
        # Records decoded from one OTLP ResourceSpans share one dict: hash it once per batch.
        cache_key = (id(resource), version)
        known = self._batch_resources.get(cache_key)
        if known is None:
            known = self._resource_id(resource, version)
            self._batch_resources[cache_key] = known
        return known

    def _resource_id(self, resource: Attributes, version: str | None) -> int:
        text = resource_document(resource, version)
        digest = resource_digest(text)
        known = self._resources.get(digest) or self._pending_resources.get(digest)
        if known is None:
            known = intern_resource(self.conn, digest, text)
            self._pending_resources[digest] = known
        return known
