"""The embedded span store: SQLite in WAL mode, one writer and many readers across processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tracekit.records import BackendError, HopSample, LogRecordData, RequestSummary, SpanRecord
from tracekit.store import _hops, _reclaim, _retention
from tracekit.store._connection import (
    StoreRemovedError,
    file_identity,
    one_line,
    open_reader,
    open_writer,
)
from tracekit.store._encoding import KIND_CODES
from tracekit.store._interner import Interner
from tracekit.store._limits import bounded_log
from tracekit.store._marks import delete_marks
from tracekit.store._paths import default_store_path
from tracekit.store._reader import StoreReader
from tracekit.store._requests import RequestGroup, request_groups, versions_served
from tracekit.store._retention import Retention
from tracekit.store._rows import RowEncoder, SpanRows
from tracekit.store._schema import (
    OLDEST_READABLE,
    SCHEMA_VERSION,
    holds_other_tables,
    schema_version,
)
from tracekit.store._writer import BatchMark, SpanIdClashes, StoreWriter

T = TypeVar("T")
MAX_CLASHES_SAID = 5  # span id clashes a path warns of one by one


@dataclass(frozen=True, slots=True)
class ServiceCallCount:
    """How many times one service called another: parent/child span pairs and links across
    traces. (``tracekit.path.ServiceEdge`` is the service map's edge, with latency and errors.)"""

    from_service: str
    to_service: str
    count: int


class Store:
    """Spans and logs in one SQLite file; implements ``tracekit.records.SpanSource``.

    Writing opens (and if needed creates) the file; reading never creates it and raises
    ``BackendError`` when it is missing. Both sides are safe to use from several threads, and any
    number of processes may read while others write.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        # "~/x.db" is the home directory, as in the CLI's --store and default_store_path():
        # TRACEKIT_STORE from an env file reaches the store exporter with no shell to expand it
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._write_lock = threading.RLock()  # reentrant: a reclaim may flush pending writes
        self._encode_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: StoreWriter | None = None
        self._writer_file: tuple[int, int] | None = None  # the file the writer opened
        self._reader: StoreReader | None = None
        self._encoder: RowEncoder | None = None
        self._encoder_lock = threading.Lock()
        _stores.add(self)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def write_spans(self, records: Iterable[SpanRecord]) -> None:
        """Store span records (a span already stored, same trace and span id, is skipped)."""
        self.write(list(records), [])

    def write_logs(self, records: Iterable[LogRecordData]) -> None:
        """Store log records."""
        self.write([], list(records))

    def write(self, spans: Sequence[SpanRecord], logs: Sequence[LogRecordData]) -> None:
        """Store spans and logs in one transaction: all of them or, on error, none."""
        for attempt in range(3):
            try:  # a reclaim may land while encoding (new strings met it) or before the write
                with self._encode_lock:  # one encoding at a time: a reclaim may reset the caches
                    rows = self.encoder.encode(spans)
                self.write_rows(rows, logs)
                return
            except _reclaim.StaleRows:
                if attempt == 2:
                    raise
                self.encoder.interner.refresh()  # ids were reclaimed meanwhile: encode again

    def write_rows(
        self, spans: SpanRows, logs: Sequence[LogRecordData] = (), mark: BatchMark | None = None
    ) -> SpanIdClashes | None:
        """Store rows built by ``encoder`` (and log records) in one transaction; returns the
        span ids it found sent for two different spans, if any (the first span stays).
        ``mark`` is recorded in the same transaction (the collector's writer process)."""
        logs = [bounded_log(record) for record in logs]
        with self._write_lock:
            writer = self._writer_side()
            self._check_still_at_path()
            return writer.write(spans, logs, mark)

    def forget_mark(self, key: str) -> None:
        """Delete the batch mark kept under ``key`` (a writer process that ends cleanly)."""
        with self._write_lock:
            delete_marks(self._writer_side().conn, [key])

    def _check_still_at_path(self) -> None:
        """Refuse to write into a file that is no longer at ``path`` (removed, or replaced by
        another): no reader could find what it holds, and it is gone once closed."""
        if file_identity(self.path) != self._writer_file:
            raise StoreRemovedError(
                "the store file was removed or replaced while open; restart the collector or"
                f" service to write a new one: {self.path}"
            )

    @property
    def encoder(self) -> RowEncoder:
        """Turns spans into rows, interning their strings (in a short transaction of its own)."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = RowEncoder(Interner(self.path))
            return self._encoder

    def create(self) -> None:
        """Create the file and schema now (writers otherwise do it on first write).

        Raises ``sqlite3.OperationalError`` if the file cannot be written (say, mode 0400).
        """
        with self._write_lock:
            self._writer_side()

    def leave_checkpoints_to_others(self) -> None:
        """Commits no longer copy the WAL back into the file (SQLite's automatic checkpoint):
        another connection does, as the writer process's ``WalCopier``. (Until ``close``.)"""
        with self._write_lock:
            self._writer_side().conn.execute("PRAGMA wal_autocheckpoint = 0")

    def apply_retention(self, retention: Retention, now_ns: int | None = None) -> int:
        """Delete what ``retention`` no longer keeps; returns the number of records deleted."""
        now = time.time_ns() if now_ns is None else now_ns
        with self._write_lock:
            conn = self._writer_side().conn
            return _retention.apply(conn, retention, now, lambda: self._reclaim(conn, None))

    def used_bytes(self) -> int:
        """Bytes of the store file holding live pages: what ``Retention.max_bytes`` bounds."""
        with self._write_lock:
            return _retention.used_bytes(self._writer_side().conn)

    def retention_steps(
        self,
        retention: Retention,
        now_ns: int | None = None,
        quiesce: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> Iterator[int]:
        """Apply ``retention`` one short transaction per step (rows deleted by each step).

        Writes from other threads may run between steps; the receiver interleaves them.
        ``quiesce`` is entered around a reclaim of strings: while in it, no rows may be encoded
        and every row encoded before it must have been written (the receiver's decode lock).
        """
        now = time.time_ns() if now_ns is None else now_ns
        with self._write_lock:
            conn = self._writer_side().conn
            steps = _retention.steps(conn, retention, now, lambda: self._reclaim(conn, quiesce))
        while True:
            with self._write_lock:
                deleted = next(steps, None)
            if deleted is None:
                return
            yield deleted

    def _reclaim(
        self,
        conn: sqlite3.Connection,
        quiesce: Callable[[], AbstractContextManager[object]] | None,
    ) -> int:
        """Reclaim unreferenced strings, then make this process's encoder forget its ids."""
        with (quiesce or contextlib.nullcontext)(), self._encode_lock:
            deleted = _reclaim.reclaim(conn)
            if self._encoder is not None:
                self._encoder.interner.forget(_reclaim.generation(conn))
        return deleted

    def _writer_side(self) -> StoreWriter:
        if self._writer is None:
            self._writer = StoreWriter(open_writer(self.path))
            self._writer_file = file_identity(self.path)
        return self._writer

    # -- reading (SpanSource) --------------------------------------------------------------------

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Every span whose ``correlation.id`` attribute equals ``correlation_id``."""
        return self._read(lambda r: r.spans_by_correlation_id(correlation_id))

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces (ids are hex, any case)."""
        ids = list(trace_ids)
        return self._read(lambda r: r.spans_by_trace_ids(ids))

    def trace_starts_by_correlation_id(
        self, correlation_id: str, limit: int
    ) -> list[tuple[str, int]]:
        """Traces carrying ``correlation_id`` with their first start (``LimitedSpanSource``)."""
        return self._read(lambda r: r.trace_starts_by_correlation_id(correlation_id, limit))

    def first_spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """The ``limit`` earliest spans of the given traces (``LimitedSpanSource``)."""
        ids = list(trace_ids)
        return self._read(lambda r: r.spans_by_trace_ids(ids, limit))

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Traces that hold a span with a link pointing into any of ``trace_ids``."""
        ids = list(trace_ids)
        return self._read(lambda r: r.trace_ids_linking_to(ids))

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Log records emitted inside spans of the given traces, oldest first."""
        ids = list(trace_ids)
        return self._read(lambda r: r.logs_by_trace_ids(ids))

    def first_logs_by_trace_ids(
        self, trace_ids: Iterable[str], limit: int
    ) -> tuple[list[LogRecordData], int]:
        """The ``limit`` earliest log records of the given traces, and how many they hold in
        all (``LimitedLogSource``)."""
        ids = list(trace_ids)
        return self._read(lambda r: r.first_logs_by_trace_ids(ids, limit))

    def warnings_for(self, trace_ids: Iterable[str]) -> list[str]:
        """What a path of these traces should warn about (``WarningSource``): a span id that
        was sent for two different spans, of which the store kept the first."""
        ids = list(trace_ids)
        clashes = self._read(lambda r: r.span_id_clashes(ids, MAX_CLASHES_SAID + 1))
        said = [
            f"span id {span_id} of trace {trace_id} was sent for two different spans (a client "
            "reusing span ids): only the first is stored, and the children of the other show "
            "under it"
            for trace_id, span_id in clashes[:MAX_CLASHES_SAID]
        ]
        if len(clashes) > MAX_CLASHES_SAID:
            said.append(f"more than {MAX_CLASHES_SAID} span ids were sent for two different spans")
        return said

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        """Requests (entry points: roots, one per trace) that started last, newest first.

        A request starts with the earliest span of the traces joined into it, as ``tracekit
        trace`` shows it; ``since_unix_nano`` keeps those that started then or later.
        ``errors_only`` keeps requests holding any span with status ERROR.
        """
        return self._read(
            lambda r: r.recent_requests(
                service, since_unix_nano, min_duration_ms, errors_only, limit
            )
        )

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans that started at or after ``since_unix_nano``, oldest first."""
        return self._read(lambda r: r.spans_since(since_unix_nano, limit))

    # -- reading (beyond SpanSource) -------------------------------------------------------------

    def newest_spans_since(self, since_unix_nano: int, *, limit: int) -> list[SpanRecord]:
        """The ``limit`` spans that started last, at or after ``since_unix_nano``, oldest first
        (``spans_since`` keeps the first ``limit``)."""
        return self._read(lambda r: r.newest_spans_since(since_unix_nano, limit))

    def newest_spans_entering(
        self, services: Sequence[str], kinds: Sequence[str], since_unix_nano: int, *, limit: int
    ) -> tuple[list[SpanRecord], bool]:
        """Of the ``limit`` spans that started last, at or after ``since_unix_nano``, those of
        the traces in which one of ``services`` has a span of one of ``kinds``, oldest first
        (``EntrySpanSource``); and whether the window holds more spans than ``limit``."""
        codes = [KIND_CODES[kind] for kind in kinds]
        return self._read(
            lambda r: r.newest_spans_entering(services, codes, since_unix_nano, limit)
        )

    def newest_hop_samples(
        self, since_unix_nano: int, *, limit: int
    ) -> tuple[list[HopSample], bool]:
        """The service map's calls among the ``limit`` spans that started last, at or after
        ``since_unix_nano``, found without reading the spans (``HopSampleSource``); and whether
        the window holds more spans than ``limit``."""
        return self._read(lambda r: _hops.newest_hop_samples(r, since_unix_nano, limit))

    def newest_requests_by_service(self, since_unix_nano: int, *, limit: int) -> dict[str, int]:
        """How many requests each service took in among the ``limit`` spans that started last
        since ``since_unix_nano`` (``tracekit.path.requests_by_service``), counted without
        reading the spans (``HopSampleSource``)."""
        return self._read(lambda r: _hops.newest_requests_by_service(r, since_unix_nano, limit))

    def spans_linking_to(self, trace_id: str, span_id: str) -> list[SpanRecord]:
        """Spans that carry a link to the span ``trace_id``/``span_id``."""
        return self._read(lambda r: r.spans_linking_to(trace_id, span_id))

    def logs_by_correlation_id(
        self, correlation_id: str, limit: int | None = None
    ) -> list[LogRecordData]:
        """Log records stamped with ``correlation_id``, oldest first (the first ``limit``)."""
        return self._read(
            lambda r: r.logs_where(
                "l.correlation_ref = (SELECT id FROM correlations WHERE value = ?)",
                (correlation_id,),
                -1 if limit is None else limit,
            )
        )

    def service_edges(self, since_unix_nano: int | None = None) -> list[ServiceCallCount]:
        """Service-to-service calls seen since ``since_unix_nano`` (parent/child and links)."""
        since = since_unix_nano or 0
        return self._read(lambda r: _service_edges(r, since))

    def request_groups(
        self, service: str, versions: Sequence[str], start_ns: int, end_ns: int
    ) -> list[RequestGroup]:
        """The service's SERVER and CONSUMER spans of ``versions`` that started in the window,
        grouped by version and route (``tracekit canary`` compares them)."""
        return self._read(lambda r: request_groups(r, service, versions, start_ns, end_ns))

    def versions_served(self, service: str, start_ns: int, end_ns: int) -> set[str | None]:
        """The versions (None: none recorded) of the service's SERVER and CONSUMER spans that
        started in the window: what ``tracekit canary`` can compare."""
        return self._read(lambda r: versions_served(r, service, start_ns, end_ns))

    def count_spans(self) -> int:
        """Number of spans stored."""
        return self._read(lambda r: int(r.conn.execute("SELECT count(*) FROM spans").fetchone()[0]))

    def count_logs(self) -> int:
        """Number of log records stored."""
        return self._read(lambda r: int(r.conn.execute("SELECT count(*) FROM logs").fetchone()[0]))

    def _read(self, query: Callable[[StoreReader], T]) -> T:
        """Run ``query`` in one read transaction (a consistent snapshot while writers go on)."""
        with self._read_lock:
            try:
                reader = self._reader_side()
                reader.conn.execute("BEGIN")
                try:
                    return query(reader)
                finally:
                    reader.conn.execute("COMMIT")
            except FileNotFoundError:
                raise BackendError(f"no tracekit store at {self.path}") from None
            except OSError as error:  # another account's private folder or file
                raise BackendError(f"store {self.path}: {error.strerror or error}") from None
            except (sqlite3.Error, ValueError) as error:
                raise BackendError(f"store {self.path}: {one_line(error)}") from error

    def _reader_side(self) -> StoreReader:
        if self._reader is None:
            conn = open_reader(self.path)
            if holds_other_tables(conn):
                conn.close()
                raise BackendError(f"{self.path} is not a tracekit store (another database)")
            version = schema_version(conn)
            if version > SCHEMA_VERSION:
                conn.close()
                raise BackendError(f"store {self.path} was written by a newer tracekit")
            if version < OLDEST_READABLE:
                conn.close()
                raise BackendError(f"store {self.path} is empty or not initialised yet")
            # An older schema is read as it is: upgrading is a writer's business (a reader may
            # not write the file, and an older collector still writing it could not open it).
            self._reader = StoreReader(conn)
        return self._reader

    def close(self) -> None:
        """Close every connection (the store can be used again; they reopen)."""
        with self._write_lock, self._encode_lock, self._read_lock, self._encoder_lock:
            self._close_connections()

    def _close_connections(self) -> None:
        if self._writer is not None:
            self._writer.conn.close()
            self._writer = None
        if self._reader is not None:
            self._reader.conn.close()
            self._reader = None
        if self._encoder is not None:
            self._encoder.interner.close()

    # -- fork() ----------------------------------------------------------------------------------

    def _quiesce_for_fork(self) -> None:
        """Before ``fork()``: wait until no thread uses the store, close every connection, and
        keep it that way until ``_resume_after_fork`` (so no thread opens one in between)."""
        for lock in self._fork_locks():
            lock.acquire()
        if self._encoder is not None:  # which cannot change now: _encoder_lock is held
            self._encoder.interner.hold()
        # A connection that fails to close is dropped: the child must not inherit one.
        with contextlib.suppress(sqlite3.Error):
            self._close_connections()

    def _resume_after_fork(self) -> None:
        """After ``fork()``, in the parent and in the child: the connections reopen when used."""
        if self._encoder is not None:
            self._encoder.interner.release()
        for lock in reversed(self._fork_locks()):
            lock.release()

    def _fork_locks(self) -> list[threading.Lock | threading.RLock]:  # in the order used
        return [self._write_lock, self._encode_lock, self._read_lock, self._encoder_lock]


def _service_edges(reader: StoreReader, since: int) -> list[ServiceCallCount]:
    query = """
        SELECT ps.service_ref, cs.service_ref, count(*) FROM spans cs
        JOIN spans ps ON ps.trace_ref = cs.trace_ref AND ps.span_id = cs.parent_id
        WHERE cs.start_ns >= ? AND ps.service_ref != cs.service_ref
        GROUP BY 1, 2
        UNION ALL
        SELECT target.service_ref, source.service_ref, count(*) FROM links l
        JOIN spans source ON source.trace_ref = l.trace_ref AND source.span_id = l.span_id
        JOIN traces tt ON tt.trace_id = l.linked_trace_id
        JOIN spans target ON target.trace_ref = tt.id AND target.span_id = l.linked_span_id
        WHERE source.start_ns >= ? AND target.service_ref != source.service_ref
        GROUP BY 1, 2
    """
    rows = reader.conn.execute(query, (since, since)).fetchall()
    reader.strings.load(reader.conn, [r[0] for r in rows] + [r[1] for r in rows])
    totals: dict[tuple[str, str], int] = {}
    for source, target, count in rows:
        key = (reader.strings.get(source) or "", reader.strings.get(target) or "")
        totals[key] = totals.get(key, 0) + int(count)
    return [ServiceCallCount(a, b, n) for (a, b), n in sorted(totals.items())]


# SQLite keeps each file's lock state in process memory: a child of fork() that inherited an
# open connection believes it holds locks it does not. Its own connections then take no real
# lock, and when the parent closed its last connection it checkpointed and deleted the WAL
# under the child, whose commits after that were lost. So no connection crosses a fork():
# every store is quiesced and closed before it, and reopens on its next use on either side.
# (subprocess does not run these hooks; os.fork and multiprocessing's fork do.)
_stores: weakref.WeakSet[Store] = weakref.WeakSet()
_quiesced: list[Store] = []


def _before_fork() -> None:
    _quiesced[:] = list(_stores)
    for store in _quiesced:
        store._quiesce_for_fork()


def _after_fork() -> None:
    for store in reversed(_quiesced):
        store._resume_after_fork()
    _quiesced.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
