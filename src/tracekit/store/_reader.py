"""Reading records back out of the store (the SpanSource side)."""

# ruff: noqa: S608 - queries are built from constant fragments and "?" placeholders only

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from tracekit.records import (
    CORRELATION_ATTRIBUTE,
    SPAN_KINDS,
    STATUS_CODES,
    Attributes,
    LogRecordData,
    RequestSummary,
    SpanEvent,
    SpanLink,
    SpanRecord,
    task_name,
)
from tracekit.store._encoding import StringResolver, attribute_refs, stored_text
from tracekit.store._schema import has_table, trace_tables_filled

_SPAN_SELECT = (
    "SELECT s.trace_ref, t.trace_id, s.span_id, s.parent_id, s.service_ref, s.name_ref, s.kind,"
    " s.start_ns, s.duration_ns, s.status, s.status_message, c.value, s.resource_ref,"
    " s.scope_ref, s.attributes, s.events, s.has_links"
    " FROM spans s JOIN traces t ON t.id = s.trace_ref"
    " LEFT JOIN correlations c ON c.id = s.correlation_ref"
)
_LOG_SELECT = (
    "SELECT l.time_ns, l.service_ref, l.severity_ref, l.severity_number, l.body, t.trace_id,"
    " l.span_id, c.value, l.resource_ref, l.attributes"
    " FROM logs l LEFT JOIN traces t ON t.id = l.trace_ref"
    " LEFT JOIN correlations c ON c.id = l.correlation_ref"
)


def _in_traces(count: int) -> str:
    """The condition on ``l`` of a log record of one of ``count`` traces (their ids bound)."""
    return f"l.trace_ref IN (SELECT id FROM traces WHERE trace_id IN ({marks(count)}))"


# A root is a span without a parent, or whose parent this store does not hold.
_IS_ROOT = (
    "(s.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM spans p"
    " WHERE p.trace_ref = s.trace_ref AND p.span_id = s.parent_id))"
)
# A trace whose parent ids all lead into a loop (A's parent is B and B's is A, or a span is its own
# parent) holds no root: its earliest span stands for it (`tracekit trace` cuts a loop at its
# earliest span), so that search lists every trace stored. Asked of every span that is not a
# root, so the span's parent is asked first: it is stored (else the span were a root) and has
# mostly started before it, which answers in one look-up what a walk of the trace answers.
_OPENS_A_ROOTLESS_TRACE = (
    "(s.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spans b WHERE b.trace_ref = s.trace_ref"
    " AND b.span_id = s.parent_id AND (b.start_ns < s.start_ns OR (b.start_ns = s.start_ns"
    " AND b.id < s.id)))"
    " AND NOT EXISTS (SELECT 1 FROM spans e WHERE e.trace_ref = s.trace_ref"
    " AND (e.start_ns < s.start_ns OR (e.start_ns = s.start_ns AND e.id < s.id)))"
    " AND NOT EXISTS (SELECT 1 FROM spans o WHERE o.trace_ref = s.trace_ref"
    " AND (o.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM spans q"
    " WHERE q.trace_ref = o.trace_ref AND q.span_id = o.parent_id))))"
)
# A request is an entry point. Only one per trace: a true root before spans whose parent is
# missing (a silent service in the middle), then the earliest of them.
_FIRST_ROOT_OF_TRACE = (
    "NOT EXISTS (SELECT 1 FROM spans o WHERE o.trace_ref = s.trace_ref AND o.id != s.id"
    " AND (o.parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM spans q"
    " WHERE q.trace_ref = o.trace_ref AND q.span_id = o.parent_id))"
    " AND ((o.parent_id IS NULL) > (s.parent_id IS NULL) OR ((o.parent_id IS NULL) ="
    " (s.parent_id IS NULL) AND (o.start_ns, o.id) < (s.start_ns, s.id))))"
)
# A root linking to a stored span continues that request (a consumer that started a new trace);
# links to contexts not stored (a public endpoint's untrusted caller) do not.
_CONTINUES_STORED_REQUEST = (
    "coalesce(s.has_links, 0) != 0 AND EXISTS (SELECT 1 FROM links l"
    " JOIN traces lt ON lt.trace_id = l.linked_trace_id"
    " JOIN spans ls ON ls.trace_ref = lt.id AND ls.span_id = l.linked_span_id"
    " WHERE l.trace_ref = s.trace_ref AND l.span_id = s.span_id)"
)
# checked after the filters: SQLite evaluates the terms in order, and these are the costliest
_IS_ENTRY = f"{_FIRST_ROOT_OF_TRACE} AND NOT ({_CONTINUES_STORED_REQUEST})"
# The correlation ID most of the entry's trace carries: what `tracekit trace <trace-id>` follows.
_DOMINANT_CORRELATION = (
    "coalesce(s.correlation_ref, (SELECT d.correlation_ref FROM spans d"
    " WHERE d.trace_ref = s.trace_ref AND d.correlation_ref IS NOT NULL"
    " GROUP BY d.correlation_ref ORDER BY count(*) DESC, min(d.start_ns) LIMIT 1))"
)
ENTRY_PAGE = 200  # most entries measured per page: pages start at ``limit`` and double
MAX_JOINED_TRACES = 500  # per request, as path.collect: a link storm cannot read the whole store
# Every trace `tracekit trace` joins to an entry (path/collect.py): its own, those carrying its
# correlation ID, and, transitively, those linked to them, and those a span links to when all its
# links lead into one trace (a batch linking into several joins several requests: not followed
# out, but from an entry without a correlation ID, which is opened by its trace ID, as
# `trace` follows a typed trace's batch). Then the request's measures over all their spans.
# UNION drops pairs already found.
_REQUEST_TRACES = (
    "WITH RECURSIVE page(entry, trace_ref, correlation_ref) AS (VALUES (?, ?, ?)),"
    " joined(entry, trace_ref) AS ("
    " SELECT entry, trace_ref FROM page"
    " UNION SELECT p.entry, c.trace_ref FROM page p"
    " JOIN spans c ON c.correlation_ref = p.correlation_ref"
    " UNION SELECT p.entry, lt.id FROM page p JOIN links l ON l.trace_ref = p.trace_ref"
    " JOIN traces lt ON lt.trace_id = l.linked_trace_id WHERE p.correlation_ref IS NULL"
    " UNION SELECT j.entry, lt.id FROM joined j JOIN links l ON l.trace_ref = j.trace_ref"
    " AND NOT EXISTS (SELECT 1 FROM links m WHERE m.trace_ref = l.trace_ref"
    " AND m.span_id = l.span_id AND m.linked_trace_id != l.linked_trace_id)"
    " JOIN traces lt ON lt.trace_id = l.linked_trace_id"
    " UNION SELECT j.entry, l.trace_ref FROM joined j JOIN traces t ON t.id = j.trace_ref"
    " JOIN links l ON l.linked_trace_id = t.trace_id"
    " LIMIT ?)"
)
_REQUEST_EXTENT = (
    f"{_REQUEST_TRACES} SELECT j.entry, min(s.start_ns), max(s.start_ns + s.duration_ns),"
    " count(*), max(s.status = 2) FROM joined j JOIN spans s ON s.trace_ref = j.trace_ref"
    " GROUP BY j.entry"
)
# The same, only of a request lasting at least ``?``, told first from the extents of the traces
# it joins (no span read): a request that cannot match costs the walk of its traces alone.
_REQUEST_EXTENT_LASTING = (
    f"{_REQUEST_TRACES}, bounds(lasts) AS (SELECT (max(e.end_ns) - min(e.start_ns)) / 1e6"
    " FROM joined j JOIN trace_extents e ON e.trace_ref = j.trace_ref)"
    " SELECT j.entry, min(s.start_ns), max(s.start_ns + s.duration_ns), count(*),"
    " max(s.status = 2) FROM joined j JOIN spans s ON s.trace_ref = j.trace_ref"
    " WHERE (SELECT lasts FROM bounds) >= ? GROUP BY j.entry"
)


# The duration and error filters apply to whole requests, so only the measure can tell; only
# entries whose request could pass are measured. A request of one trace is that trace; one
# joining others (_REQUEST_EXTENT) joins them through links either way and correlation IDs.
# An error: traces holding an error span, the traces linked to them either way (transitively),
# and those sharing a correlation ID with any of these: every entry whose request can join an
# error span, and more (a batch's links, the cap on joined traces: its measure decides).
_MAY_HOLD_AN_ERROR = (
    "WITH RECURSIVE linked(trace_ref) AS (SELECT trace_ref FROM spans WHERE status = 2"
    " UNION SELECT l.trace_ref FROM linked j JOIN traces t ON t.id = j.trace_ref"
    " JOIN links l ON l.linked_trace_id = t.trace_id"
    " UNION SELECT lt.id FROM linked j JOIN links l ON l.trace_ref = j.trace_ref"
    " JOIN traces lt ON lt.trace_id = l.linked_trace_id)"
    " SELECT trace_ref FROM linked UNION SELECT c.trace_ref FROM linked j"
    " JOIN spans e ON e.trace_ref = j.trace_ref"
    " JOIN spans c ON c.correlation_ref = e.correlation_ref"
)
# A duration, asked of each root read (an aggregate would read every span): its trace lasts
# that long, or it can join another trace: through a link either way, or through its
# correlation ID carried by another trace.
_MAY_LAST = (
    "({lasts} / 1e6 >= ?"
    " OR EXISTS (SELECT 1 FROM links l WHERE l.trace_ref = s.trace_ref)"
    " OR EXISTS (SELECT 1 FROM links l WHERE l.linked_trace_id = t.trace_id)"
    " OR EXISTS (SELECT 1 FROM spans c WHERE c.correlation_ref = {correlation}"
    " AND c.trace_ref != s.trace_ref))"
)
_TRACE_LASTS = (
    "(SELECT max(d.start_ns + d.duration_ns) - min(d.start_ns) FROM spans d"
    " WHERE d.trace_ref = s.trace_ref)"
)
_TRACE_LASTS_BY_EXTENT = (
    "(SELECT e.end_ns - e.start_ns FROM trace_extents e WHERE e.trace_ref = s.trace_ref)"
)
# _MAY_LAST read from the per-trace tables (trace_extents, trace_correlations): the traces
# whose roots it can pass, found without reading a span.
_TRACES_LASTING = "SELECT trace_ref FROM trace_extents WHERE (end_ns - start_ns) / 1e6 >= ?"
_MAY_LAST_TRACES = (
    f"{_TRACES_LASTING} UNION SELECT trace_ref FROM links"
    " UNION SELECT t.id FROM links l JOIN traces t ON t.trace_id = l.linked_trace_id"
    " UNION SELECT a.trace_ref FROM trace_correlations a WHERE EXISTS (SELECT 1"
    " FROM trace_correlations b WHERE b.correlation_ref = a.correlation_ref"
    " AND b.trace_ref != a.trace_ref)"
)


# An entry another tool's edit left without an id or a time to read is not listed (_is_span_row).
_ENTRY_TYPES = (
    "typeof(t.trace_id) = 'blob' AND length(t.trace_id) = 16 AND typeof(s.span_id) = 'blob'"
    " AND typeof(s.start_ns) = 'integer'"
)
# What _is_span_row keeps, as SQL over ``s`` and ``t``.
_READABLE_SPAN = (
    "(typeof(t.trace_id) = 'blob' AND length(t.trace_id) = 16 AND typeof(s.span_id) = 'blob'"
    " AND length(s.span_id) = 8 AND (s.parent_id IS NULL OR typeof(s.parent_id) = 'blob')"
    " AND typeof(s.start_ns) = 'integer' AND typeof(s.duration_ns) = 'integer')"
)
_CORRELATED = "s.correlation_ref = (SELECT id FROM correlations WHERE value = ?)"


def marks(count: int) -> str:
    """``?,?,...`` for an IN list of ``count`` values."""
    return ",".join("?" * count)


def hex_ids(values: Iterable[str], length: int) -> list[bytes]:
    """Valid ids among ``values`` as bytes; anything else cannot match and is dropped."""
    out = []
    for value in values:
        try:
            raw = bytes.fromhex(value)
        except (ValueError, TypeError):
            continue
        if len(raw) == length:
            out.append(raw)
    return out


class StoreReader:
    """Queries over one read connection, decoding rows into records."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.strings = StringResolver()
        self._resources: dict[int, tuple[Attributes, str | None]] = {}
        self._by_extents = False  # whether the search under way reads the per-trace tables

    def spans_where(
        self, condition: str, params: Sequence[object], limit: int = -1
    ) -> list[SpanRecord]:
        """Spans matching a SQL condition over ``s``, oldest first (the first ``limit``)."""
        query = f"{_SPAN_SELECT} WHERE {condition} ORDER BY s.start_ns, s.id LIMIT ?"
        rows = self.conn.execute(query, (*params, limit)).fetchall()
        return self._spans(rows)

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Every span tagged with ``correlation_id``."""
        return self.spans_where(_CORRELATED, (correlation_id,))

    def trace_starts_by_correlation_id(
        self, correlation_id: str, limit: int
    ) -> list[tuple[str, int]]:
        """The first ``limit`` traces holding spans tagged ``correlation_id``, with the earliest
        such span's start, earliest first (no span is decoded)."""
        query = (
            "SELECT t.trace_id, min(s.start_ns) FROM spans s JOIN traces t ON t.id = s.trace_ref"
            f" WHERE {_CORRELATED} GROUP BY s.trace_ref ORDER BY min(s.start_ns), min(s.id)"
            " LIMIT ?"
        )
        rows = self.conn.execute(query, (correlation_id, limit))
        return [(trace_id.hex(), start) for trace_id, start in rows if _is_id(trace_id, 16)]

    def spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int = -1) -> list[SpanRecord]:
        """Every span of the given traces (the first ``limit``, oldest first)."""
        ids = hex_ids(trace_ids, 16)
        if not ids:
            return []
        return self.spans_where(
            f"s.trace_ref IN (SELECT id FROM traces WHERE trace_id IN ({marks(len(ids))}))",
            ids,
            limit,
        )

    def spans_since(self, since_unix_nano: int, limit: int) -> list[SpanRecord]:
        """Spans that started at or after ``since_unix_nano``, oldest first."""
        query = f"{_SPAN_SELECT} WHERE s.start_ns >= ? ORDER BY s.start_ns LIMIT ?"
        return self._spans(self.conn.execute(query, (since_unix_nano, limit)).fetchall())

    def newest_spans_since(self, since_unix_nano: int, limit: int) -> list[SpanRecord]:
        """The ``limit`` spans that started last, at or after ``since_unix_nano``, oldest first
        (``spans_since`` keeps the first ``limit``); of spans starting together, the last
        stored."""
        query = f"{_SPAN_SELECT} WHERE s.start_ns >= ? ORDER BY s.start_ns DESC, s.id DESC LIMIT ?"
        return self._spans(self.conn.execute(query, (since_unix_nano, limit)).fetchall()[::-1])

    def newest_spans_entering(
        self, services: Sequence[str], kinds: Sequence[int], since_unix_nano: int, limit: int
    ) -> tuple[list[SpanRecord], bool]:
        """Of the ``limit`` spans ``newest_spans_since`` reads (after leaving out the rows it
        cannot read), those of the traces in which one of ``services`` has a span of one of
        ``kinds``, oldest first; and whether the window holds more than ``limit`` spans. Only
        those are decoded: a window of 200,000 spans holds a few thousand of one service's."""
        window = (
            "WITH w AS (SELECT s.id, s.start_ns, s.trace_ref, s.service_ref, s.kind,"
            f" {_READABLE_SPAN} AS ok FROM spans s JOIN traces t ON t.id = s.trace_ref"
            " WHERE s.start_ns >= ? ORDER BY s.start_ns DESC, s.id DESC LIMIT ?),"
            " v AS (SELECT * FROM w WHERE ok ORDER BY start_ns DESC, id DESC LIMIT ?)"
        )
        params: list[object] = [since_unix_nano, limit + 1, limit]
        readable = self.conn.execute(f"{window} SELECT count(*) FROM w WHERE ok", params)
        more = int(readable.fetchone()[0]) > limit
        entering = (
            f"s.id IN (SELECT id FROM v WHERE trace_ref IN (SELECT trace_ref FROM v"
            f" WHERE kind IN ({marks(len(kinds))}) AND service_ref IN"
            f" (SELECT id FROM strings WHERE value IN ({marks(len(services))}))))"
        )
        query = f"{window} {_SPAN_SELECT} WHERE {entering} ORDER BY s.start_ns, s.id"
        rows = self.conn.execute(query, [*params, *kinds, *services]).fetchall()
        return self._spans(rows), more

    def span_id_clashes(self, trace_ids: Iterable[str], limit: int) -> list[tuple[str, str]]:
        """(trace id, span id) of the first ``limit`` span ids of these traces that were also
        sent for another span, which the store did not keep (a store no writer of this tracekit
        has opened lacks the table, and noted none)."""
        ids = hex_ids(trace_ids, 16)
        if not ids or not has_table(self.conn, "span_id_clashes"):
            return []
        query = (
            "SELECT t.trace_id, c.span_id FROM span_id_clashes c JOIN traces t"
            f" ON t.id = c.trace_ref WHERE t.trace_id IN ({marks(len(ids))})"
            " ORDER BY t.trace_id, c.span_id LIMIT ?"
        )
        rows = self.conn.execute(query, (*ids, limit)).fetchall()
        return [
            (trace.hex(), span.hex())
            for trace, span in rows
            if _is_id(trace, 16) and _is_id(span, 8)
        ]

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Traces holding a span whose link points into any of ``trace_ids``."""
        ids = hex_ids(trace_ids, 16)
        if not ids:
            return set()
        query = (
            "SELECT DISTINCT t.trace_id FROM links l JOIN traces t ON t.id = l.trace_ref"
            f" WHERE l.linked_trace_id IN ({marks(len(ids))})"
        )
        return {row[0].hex() for row in self.conn.execute(query, ids) if _is_id(row[0], 16)}

    def spans_linking_to(self, trace_id: str, span_id: str) -> list[SpanRecord]:
        """Spans with a link pointing at exactly this span (follow a link backwards)."""
        trace, span = hex_ids([trace_id], 16), hex_ids([span_id], 8)
        if not trace or not span:
            return []
        return self.spans_where(
            "EXISTS (SELECT 1 FROM links l WHERE l.linked_trace_id = ? AND l.linked_span_id = ?"
            " AND l.trace_ref = s.trace_ref AND l.span_id = s.span_id)",
            (trace[0], span[0]),
        )

    def logs_where(
        self, condition: str, params: Sequence[object], limit: int = -1
    ) -> list[LogRecordData]:
        """Log records matching a SQL condition over ``l``, oldest first (the first ``limit``;
        -1: all)."""
        query = f"{_LOG_SELECT} WHERE {condition} ORDER BY l.time_ns, l.id LIMIT ?"
        return self._logs(self.conn.execute(query, (*params, limit)).fetchall())

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Log records emitted inside spans of the given traces."""
        ids = hex_ids(trace_ids, 16)
        return self.logs_where(_in_traces(len(ids)), ids) if ids else []

    def first_logs_by_trace_ids(
        self, trace_ids: Iterable[str], limit: int
    ) -> tuple[list[LogRecordData], int]:
        """The ``limit`` earliest log records of the given traces, and how many they hold (only
        counted when there are ``limit``: a trace of millions of lines is not read whole)."""
        ids = hex_ids(trace_ids, 16)
        if not ids:
            return [], 0
        logs = self.logs_where(_in_traces(len(ids)), ids, limit)
        if len(logs) < limit:
            return logs, len(logs)
        query = f"SELECT count(*) FROM logs l WHERE {_in_traces(len(ids))}"
        return logs, int(self.conn.execute(query, ids).fetchone()[0])

    def recent_requests(
        self,
        service: str | None,
        since_unix_nano: int | None,
        min_duration_ms: float | None,
        errors_only: bool,
        limit: int,
    ) -> list[RequestSummary]:
        """The ``limit`` requests that started last, each measured over every trace ``tracekit
        trace`` joins to it.

        A request starts when the earliest span of those traces does: that start orders the
        listing and is what ``since_unix_nano`` and the duration and error filters apply to.
        Entry points are read newest root first by one query (filtered by root service and
        start, and by the duration and error filters' candidates, below), a page at a time, and
        each request is measured on its own (``_REQUEST_EXTENT``). Entries sharing a
        correlation ID are one request, listed once (named by its earliest entry, but with
        ``min_duration_ms`` or ``errors_only``: by its newest). No request starts
        after its entry's root, so the pages stop once no older root can start a request newer
        than the ``limit`` found.
        """
        service_ref = None if service is None else self.string_ref(service)
        if service is not None and service_ref is None:
            return []  # never stored (a typo): no need to walk every entry of the time index
        found: list[RequestSummary] = []
        seen: dict[str, RequestSummary] = {}
        # --min-duration and --errors match a trace on Tempo, which names the request by it;
        # here they match the request whole, and its newest entry names it, as before
        filtered = min_duration_ms is not None or errors_only
        size = max(1, limit)
        self._by_extents = min_duration_ms is not None and trace_tables_filled(self.conn)
        entries = self._entries(service_ref, since_unix_nano, min_duration_ms, errors_only)
        try:
            while limit > 0:
                page = entries.fetchmany(size)
                if not page:
                    break
                size = min(2 * size, ENTRY_PAGE)
                for summary in self._measured(page, min_duration_ms):
                    key = summary.correlation_id or summary.trace_id
                    if key in seen:
                        if not filtered:
                            _name_by_earlier_entry(seen[key], summary)
                        continue
                    if not _matches(summary, since_unix_nano, min_duration_ms, errors_only):
                        continue
                    seen[key] = summary
                    found.append(summary)
                # a stable sort: a tie goes to the entry read first, as it would with no limit
                found = sorted(found, key=lambda s: s.start_unix_nano, reverse=True)[:limit]
                if len(found) == limit and found[-1].start_unix_nano >= page[-1][4]:
                    break
        finally:
            entries.close()
        return found

    def string_ref(self, value: str) -> int | None:
        """The id of ``value`` in ``strings`` (None: no record ever held it)."""
        row = self.conn.execute("SELECT id FROM strings WHERE value = ?", (value,)).fetchone()
        return None if row is None else int(row[0])

    def _entries(
        self,
        service_ref: int | None,
        since_unix_nano: int | None,
        min_duration_ms: float | None,
        errors_only: bool,
    ) -> sqlite3.Cursor:
        """Entry points, newest root first (start, span row id), read as the cursor is; of the
        service whose name is ``service_ref`` (``string_ref``) if given."""
        conditions: list[str] = [_ENTRY_TYPES, f"({_IS_ROOT} OR {_OPENS_A_ROOTLESS_TRACE})"]
        params: list[object] = []
        if service_ref is not None:
            conditions.append("s.service_ref = ?")
            params.append(service_ref)
        if since_unix_nano is not None:
            conditions.append("s.start_ns >= ?")
            params.append(since_unix_nano)
        if errors_only:
            conditions.append(f"s.trace_ref IN ({_MAY_HOLD_AN_ERROR})")
        if min_duration_ms is not None:
            conditions.append(self._may_last_condition(min_duration_ms))
            params.append(min_duration_ms)
        conditions.append(_IS_ENTRY)
        query = (
            f"SELECT s.id, s.trace_ref, {_DOMINANT_CORRELATION}, t.trace_id, s.start_ns,"
            " s.service_ref, s.name_ref, s.attributes"
            " FROM spans s JOIN traces t ON t.id = s.trace_ref"
            f" WHERE {' AND '.join(conditions)} ORDER BY s.start_ns DESC, s.id DESC"
        )
        return self.conn.execute(query, params)

    def _may_last_condition(self, min_duration_ms: float) -> str:
        """What a root whose request may last ``min_duration_ms`` passes. Where few traces can
        (a quarter at most), they are read by their ids; else roots are read newest first,
        where the matches, many, come soon."""
        if not self._by_extents:
            return _MAY_LAST.format(lasts=_TRACE_LASTS, correlation=_DOMINANT_CORRELATION)
        quarter = self.conn.execute("SELECT count(*) FROM trace_extents").fetchone()[0] // 4
        if self._count(_TRACES_LASTING, min_duration_ms, quarter) < quarter and (
            self._count(_MAY_LAST_TRACES, min_duration_ms, quarter) < quarter
        ):
            return f"s.trace_ref IN ({_MAY_LAST_TRACES})"
        return _MAY_LAST.format(lasts=_TRACE_LASTS_BY_EXTENT, correlation=_DOMINANT_CORRELATION)

    def _count(self, query: str, min_duration_ms: float, most: int) -> int:
        """How many rows ``query`` gives, counted up to ``most``."""
        counting = f"SELECT count(*) FROM (SELECT 1 FROM ({query}) LIMIT ?)"
        return int(self.conn.execute(counting, [min_duration_ms, most]).fetchone()[0])

    def _measured(self, page: list[Any], min_duration_ms: float | None) -> list[RequestSummary]:
        """Each entry of ``page`` with its request's start, duration, span count and errors
        (with ``min_duration_ms``, where the traces' extents are kept: only those lasting it)."""
        # One query per entry: the cap on joined traces is each request's own, so a request
        # joined to many traces (a busy correlation ID) cannot use up the others' share.
        query, params = _REQUEST_EXTENT, [MAX_JOINED_TRACES]  # type: str, list[object]
        if min_duration_ms is not None and self._by_extents:
            query, params = _REQUEST_EXTENT_LASTING, [MAX_JOINED_TRACES, min_duration_ms]
        extents = {}
        for row in page:
            for entry, *extent in self.conn.execute(query, [*row[:3], *params]):
                extents[entry] = extent
        correlations = self._correlation_values([row[2] for row in page if row[2] is not None])
        roots = [loads_list(row[7]) for row in page]
        refs = [ref for attributes in roots for ref in attribute_refs(attributes)]
        self.strings.load(self.conn, [r[5] for r in page] + [r[6] for r in page] + refs)
        decoded = [self.strings.decode(attributes) for attributes in roots]
        return [
            self._summary(row, correlations.get(row[2]), extents[row[0]], attributes)
            for row, attributes in zip(page, decoded, strict=True)
            if row[0] in extents
        ]

    def _correlation_values(self, refs: list[int]) -> dict[int, str]:
        if not refs:
            return {}
        query = f"SELECT id, value FROM correlations WHERE id IN ({marks(len(refs))})"
        return {ref: stored_text(value) for ref, value in self.conn.execute(query, refs)}

    def _summary(
        self, row: Sequence[Any], correlation: str | None, extent: Sequence[Any], root: Attributes
    ) -> RequestSummary:
        start, end, count, error = extent
        return RequestSummary(
            correlation_id=correlation,
            trace_id=row[3].hex(),
            root_service=self.strings.get(row[5]) or "",
            root_name=self.strings.get(row[6]) or "",
            start_unix_nano=start,
            duration_ms=(end - start) / 1e6,
            span_count=count,
            error=bool(error),
            root_task=task_name(root),
            root_attributes=root,
        )

    def _spans(self, rows: list[Any]) -> list[SpanRecord]:
        rows = [row for row in rows if _is_span_row(row)]
        decoded = [(row, loads_list(row[14]), _stored_events(row[15])) for row in rows]
        refs: list[int] = []
        for row, attributes, events in decoded:
            refs.extend(r for r in (row[4], row[5], row[13]) if r is not None)
            refs.extend(attribute_refs(attributes))
            for event in events:
                refs.extend(attribute_refs(event[2]))
        links = self._links([row for row in rows if row[16]])
        for span_links in links.values():
            for link in span_links:
                refs.extend(attribute_refs(link[2]))
        self.strings.load(self.conn, refs)
        self._load_resources({row[12] for row in rows})
        # A span's links are those stored with it (has_links): a copy sent again after it was
        # stored is skipped, but its link rows were kept beside it (INSERT OR IGNORE).
        return [
            self._span(row, a, e, links.get((row[0], row[2]), []) if row[16] else [])
            for row, a, e in decoded
        ]

    def _links(
        self, rows: list[Any]
    ) -> dict[tuple[int, bytes], list[tuple[bytes, bytes, list[object]]]]:
        out: dict[tuple[int, bytes], list[tuple[bytes, bytes, list[object]]]] = {}
        trace_refs = sorted({row[0] for row in rows})
        if not trace_refs:
            return out
        query = (
            "SELECT trace_ref, span_id, linked_trace_id, linked_span_id, attributes FROM links"
            f" WHERE trace_ref IN ({marks(len(trace_refs))}) ORDER BY trace_ref, span_id, position"
        )
        for trace_ref, span_id, linked_trace, linked_span, attributes in self.conn.execute(
            query, trace_refs
        ):
            if not (_is_id(linked_trace, 16) and _is_id(linked_span, 8)):
                continue
            out.setdefault((trace_ref, span_id), []).append(
                (linked_trace, linked_span, loads_list(attributes))
            )
        return out

    def _load_resources(self, refs: Iterable[int]) -> None:
        missing = [r for r in refs if r not in self._resources]
        if not missing:
            return
        query = f"SELECT id, attributes FROM resources WHERE id IN ({marks(len(missing))})"
        for ref, text in self.conn.execute(query, missing):
            parts = loads_list(text)
            resource = parts[0] if parts and isinstance(parts[0], dict) else {}
            version = parts[1] if len(parts) > 1 and isinstance(parts[1], str) else None
            self._resources[ref] = (resource, version)

    def _span(
        self, row: Sequence[Any], attributes: list[object], events: list[Any], links: list[Any]
    ) -> SpanRecord:
        decode = self.strings.decode
        attrs = decode(attributes)
        if row[11] is not None:
            attrs[CORRELATION_ATTRIBUTE] = stored_text(row[11])
        resource, version = self._resources.get(row[12], ({}, None))
        return SpanRecord(
            trace_id=row[1].hex(),
            span_id=row[2].hex(),
            parent_span_id=row[3].hex() if row[3] is not None else None,
            service=self.strings.get(row[4]) or "",
            name=self.strings.get(row[5]) or "",
            kind=_named(SPAN_KINDS, row[6], "INTERNAL"),
            start_unix_nano=row[7],
            end_unix_nano=row[7] + row[8],
            status=_named(STATUS_CODES, row[9], "UNSET"),
            status_message=stored_text(row[10]),
            attributes=attrs,
            links=[SpanLink(t.hex(), s.hex(), decode(a)) for t, s, a in links],
            events=[SpanEvent(e[1], e[0], decode(e[2])) for e in events],
            resource=dict(resource),
            service_version=version,
            scope=self.strings.get(row[13]),
        )

    def _logs(self, rows: list[Any]) -> list[LogRecordData]:
        rows = [row for row in rows if _is_log_row(row)]
        decoded = [(row, loads_list(row[9])) for row in rows]
        refs: list[int] = []
        for row, attributes in decoded:
            refs.extend(r for r in (row[1], row[2]) if r is not None)
            refs.extend(attribute_refs(attributes))
        self.strings.load(self.conn, refs)
        self._load_resources({row[8] for row in rows})
        return [self._log(row, attributes) for row, attributes in decoded]

    def _log(self, row: Sequence[Any], attributes: list[object]) -> LogRecordData:
        attrs = self.strings.decode(attributes)
        if row[7] is not None:
            attrs[CORRELATION_ATTRIBUTE] = stored_text(row[7])
        resource, _ = self._resources.get(row[8], ({}, None))
        return LogRecordData(
            time_unix_nano=row[0],
            service=self.strings.get(row[1]) or "",
            severity_text=self.strings.get(row[2]) or "",
            severity_number=row[3] if type(row[3]) is int else 0,
            body=stored_text(row[4]),
            trace_id=row[5].hex() if row[5] is not None else None,
            span_id=row[6].hex() if row[6] is not None else None,
            attributes=attrs,
            resource=dict(resource),
        )


def _is_id(value: object, length: int) -> bool:
    """Whether ``value`` is an id of ``length`` bytes, as the store writes ids."""
    return isinstance(value, bytes) and len(value) == length


def _is_span_row(row: Sequence[Any]) -> bool:
    """Whether a span row holds its ids and times as the store writes them. Another tool's (or a
    hand's) edit may have put text or a number there; such a row is left out, so that it does
    not end the read of every other span of the request."""
    parent = row[3]
    return (
        _is_id(row[1], 16)
        and _is_id(row[2], 8)
        and (parent is None or isinstance(parent, bytes))
        and type(row[7]) is int
        and type(row[8]) is int
    )


def _is_log_row(row: Sequence[Any]) -> bool:
    """Whether a log row holds its time and ids as the store writes them (see _is_span_row)."""
    trace, span = row[5], row[6]
    return (
        type(row[0]) is int
        and (trace is None or _is_id(trace, 16))
        and (span is None or _is_id(span, 8))
    )


def _named(names: Sequence[str], code: object, default: str) -> str:
    """The name of an enum code (a span's kind or status), ``default`` for any other value."""
    return names[code] if type(code) is int and 0 <= code < len(names) else default


def _name_by_earlier_entry(listed: RequestSummary, earlier: RequestSummary) -> None:
    """Name a request of several entries (read newest root first) by its earliest: where it
    entered, as ``trace`` shows it, not a later trace carrying its ID (a retry, or the call of
    a worker in correlation-only mode, which starts a trace of its own)."""
    listed.trace_id = earlier.trace_id
    listed.root_service, listed.root_name = earlier.root_service, earlier.root_name
    listed.root_task, listed.root_attributes = earlier.root_task, earlier.root_attributes


def _matches(
    summary: RequestSummary,
    since_unix_nano: int | None,
    min_duration_ms: float | None,
    errors_only: bool,
) -> bool:
    if errors_only and not summary.error:
        return False
    if since_unix_nano is not None and summary.start_unix_nano < since_unix_nano:
        return False
    return min_duration_ms is None or summary.duration_ms >= min_duration_ms


def loads_list(text: str | None) -> list[Any]:
    """A row's encoded attributes or events; [] for what no writer of the store wrote (a damaged
    row, or another tool's nesting deeper than the decoder goes), so that one bad record does
    not sink the request or the map around it."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    return value if isinstance(value, list) else []


def _stored_events(text: str | None) -> list[Any]:
    """A row's events, each ``[time, name, attributes]`` as the store writes them; any other
    shape (a damaged row, another tool's write) is left out, as a row that is not JSON is."""
    return [event for event in loads_list(text) if _is_event(event)]


def _is_event(event: object) -> bool:
    return (
        isinstance(event, list)
        and len(event) == 3
        and type(event[0]) is int
        and isinstance(event[1], str)
        and isinstance(event[2], list)
    )
