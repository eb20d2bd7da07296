"""Writing span and log records into the store: one short transaction per batch."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from tracekit.records import CORRELATION_ATTRIBUTE, Attributes, LogRecordData, SpanRecord
from tracekit.store._connection import retry_busy
from tracekit.store._encoding import (
    KIND_CODES,
    STATUS_CODE_OF,
    StringTable,
    clean_text,
    dumps,
    encoded_attributes,
    id_bytes,
)

# Longer correlation ids are kept as plain attributes: the index is for real request ids.
MAX_INDEXED_CORRELATION_ID = 256

_INSERT_SPAN = (
    "INSERT OR IGNORE INTO spans (trace_ref, span_id, parent_id, service_ref, name_ref, kind,"
    " start_ns, duration_ns, status, status_message, correlation_ref, resource_ref, scope_ref,"
    " attributes, events, has_links) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_LINK = (
    "INSERT OR IGNORE INTO links (trace_ref, span_id, position, linked_trace_id, linked_span_id,"
    " attributes) VALUES (?,?,?,?,?,?)"
)
_INSERT_LOG = (
    "INSERT INTO logs (time_ns, service_ref, severity_number, severity_ref, body, trace_ref,"
    " span_id, correlation_ref, resource_ref, attributes) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def indexed_correlation(value: object) -> str | None:
    """The correlation id to index, or None when absent or unreasonably long."""
    if isinstance(value, str) and 0 < len(value) <= MAX_INDEXED_CORRELATION_ID:
        return value
    return None


class StoreWriter:
    """Turns records into rows on one write connection; not thread-safe (the Store locks)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.strings = StringTable()
        self._resources: dict[bytes, int] = {}
        self._pending_resources: dict[bytes, int] = {}
        self._batch_resources: dict[tuple[int, str | None], int] = {}

    def write(self, spans: Sequence[SpanRecord], logs: Sequence[LogRecordData]) -> None:
        """Insert ``spans`` and ``logs`` in one transaction (spans already stored are skipped)."""
        if spans or logs:
            retry_busy(lambda: self._write_once(spans, logs))

    def _write_once(self, spans: Sequence[SpanRecord], logs: Sequence[LogRecordData]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.strings.begin(self.conn)
        self._pending_resources = {}
        self._batch_resources = {}
        try:
            self._insert(spans, logs)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.strings.rollback()
            raise
        self.strings.commit()
        self._resources.update(self._pending_resources)

    def _insert(self, spans: Sequence[SpanRecord], logs: Sequence[LogRecordData]) -> None:
        trace_hex = {s.trace_id for s in spans} | {r.trace_id for r in logs if r.trace_id}
        traces = self._refs(
            "traces", "trace_id", {h: id_bytes(h, 16, "trace id") for h in trace_hex}
        )
        correlations = self._refs("correlations", "value", self._correlations(spans, logs))
        span_rows, link_rows = [], []
        for span in spans:
            span_rows.append(self._span_row(span, traces, correlations))
            link_rows.extend(self._link_rows(span, traces[span.trace_id]))
        self.conn.executemany(_INSERT_SPAN, span_rows)
        self.conn.executemany(_INSERT_LINK, link_rows)
        self.conn.executemany(_INSERT_LOG, [self._log_row(r, traces, correlations) for r in logs])

    @staticmethod
    def _correlations(spans: Iterable[SpanRecord], logs: Iterable[LogRecordData]) -> dict[str, str]:
        values = {indexed_correlation(s.attributes.get(CORRELATION_ATTRIBUTE)) for s in spans}
        values |= {indexed_correlation(r.attributes.get(CORRELATION_ATTRIBUTE)) for r in logs}
        return {v: clean_text(v) for v in values if v is not None}

    def _refs(self, table: str, column: str, keys: Mapping[str, object]) -> dict[str, int]:
        """Ids of ``keys`` (caller's key -> stored value) in an interning table, adding new ones."""
        by_value = {value: key for key, value in keys.items()}
        found: dict[str, int] = {}
        values = list(by_value)
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {column}, id FROM {table} WHERE {column} IN ({marks})"  # noqa: S608
            found.update((by_value[v], i) for v, i in self.conn.execute(query, chunk))
        insert = f"INSERT INTO {table} ({column}) VALUES (?) RETURNING id"  # noqa: S608
        for key, value in keys.items():
            if key not in found:
                found[key] = self.conn.execute(insert, (value,)).fetchone()[0]
        return found

    def _span_row(
        self, span: SpanRecord, traces: dict[str, int], correlations: dict[str, int]
    ) -> tuple[object, ...]:
        ref = self.strings.ref
        correlation = indexed_correlation(span.attributes.get(CORRELATION_ATTRIBUTE))
        correlation_ref = correlations[correlation] if correlation is not None else None
        skip = CORRELATION_ATTRIBUTE if correlation_ref is not None else None
        parent = span.parent_span_id
        return (
            traces[span.trace_id],
            id_bytes(span.span_id, 8, "span id"),
            id_bytes(parent, 8, "parent span id") if parent else None,
            ref(span.service),
            ref(span.name),
            KIND_CODES.get(span.kind, 0),
            span.start_unix_nano,
            span.end_unix_nano - span.start_unix_nano,
            STATUS_CODE_OF.get(span.status, 0),
            clean_text(span.status_message) if span.status_message else None,
            correlation_ref,
            self._resource_ref(span.resource, span.service_version),
            ref(span.scope) if span.scope else None,
            encoded_attributes(self.strings, span.attributes, skip),
            self._events(span),
            1 if span.links else None,
        )

    def _events(self, span: SpanRecord) -> str | None:
        if not span.events:
            return None
        encode = self.strings.encode
        return dumps([[e.time_unix_nano, e.name, encode(e.attributes)] for e in span.events])

    def _link_rows(self, span: SpanRecord, trace_ref: int) -> list[tuple[object, ...]]:
        span_id = id_bytes(span.span_id, 8, "span id")
        return [
            (
                trace_ref,
                span_id,
                position,
                id_bytes(link.trace_id, 16, "linked trace id"),
                id_bytes(link.span_id, 8, "linked span id"),
                encoded_attributes(self.strings, link.attributes),
            )
            for position, link in enumerate(span.links)
        ]

    def _log_row(
        self, record: LogRecordData, traces: dict[str, int], correlations: dict[str, int]
    ) -> tuple[object, ...]:
        ref = self.strings.ref
        correlation = indexed_correlation(record.attributes.get(CORRELATION_ATTRIBUTE))
        correlation_ref = correlations[correlation] if correlation is not None else None
        skip = CORRELATION_ATTRIBUTE if correlation_ref is not None else None
        return (
            record.time_unix_nano,
            ref(record.service),
            record.severity_number,
            ref(record.severity_text) if record.severity_text else None,
            clean_text(record.body),
            traces[record.trace_id] if record.trace_id else None,
            id_bytes(record.span_id, 8, "log span id") if record.span_id else None,
            correlation_ref,
            self._resource_ref(record.resource, None),
            encoded_attributes(self.strings, record.attributes, skip),
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
        text = _canonical([resource, version])
        digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
        known = self._resources.get(digest) or self._pending_resources.get(digest)
        if known is None:
            row = self.conn.execute(
                "SELECT id FROM resources WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None:
                row = self.conn.execute(
                    "INSERT INTO resources (digest, attributes) VALUES (?, ?) RETURNING id",
                    (digest, text),
                ).fetchone()
            known = int(row[0])
            self._pending_resources[digest] = known
        return known


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
