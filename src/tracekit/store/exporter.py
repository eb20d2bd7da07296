"""OpenTelemetry SDK exporters that write straight into the embedded store.

Chosen with ``TRACEKIT_EXPORTER=store``: the demo and local setups then need no collector. Several
service processes may export into one file at once; SQLite's WAL lock, the busy timeout and the
store's retry loop serialise their short transactions.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from tracekit._runtime.guard import suppressing_instrumentation
from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit.records import (
    Attributes,
    AttributeValue,
    LogRecordData,
    SpanEvent,
    SpanLink,
    SpanRecord,
    finite_json,
    service_name,
)
from tracekit.store._connection import one_line
from tracekit.store._limits import log_time_problem, span_time_problem, time_bounds
from tracekit.store._store import Store

__all__ = [
    "StoreLogExporter",
    "StoreSpanExporter",
    "log_record",
    "plain_attributes",
    "plain_value",
    "span_record",
]

_log = logging.getLogger("tracekit")
_LEFT_OUT = (
    "tracekit: a %s the store cannot keep was left out: %s (a clock that stepped back, or set"
    " before 2000 or a day ahead)"
)
_FAILED = "tracekit: writing %ss to the store failed: %s"


class _StoreWriter:
    """What both exporters share: the store, untraced writes, rate-limited warnings."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, store: Store | None = None):
        self.store = store if store is not None else Store(path)
        self._failed = RateLimitedWarning(60.0, _FAILED)
        self._left_out = RateLimitedWarning(60.0, _LEFT_OUT)

    def _write(self, write: Callable[[], None], signal: str) -> bool:
        """Run ``write`` with instrumentation suppressed; False (and a warning at most once a
        minute) if it failed."""
        try:
            with suppressing_instrumentation():
                write()
            return True
        except Exception as error:
            self._failed.warn(signal, f"{_why(error)} (store {_shown(self.store.path)})")
            return False

    def shutdown(self) -> None:
        """Close the store's connections."""
        self.store.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export commits before returning."""
        return True


class StoreSpanExporter(_StoreWriter, SpanExporter):
    """Writes finished spans into the store at ``path`` (default: ``default_store_path()``)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Store ``spans``; never raises (a failure is logged at most once a minute and reported
        to the SDK).

        A span the store cannot keep (dated before 2000 or a day ahead: what the collector
        refuses too) is left out, with a rate-limited warning. One that ends before it starts
        is kept, with no duration (see ``clock_step_mended``), as the collector keeps it.
        """
        if self._write(lambda: self.store.write_spans(self._keepable(spans)), "span"):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def _keepable(self, spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
        records, bounds = _span_records(spans), time_bounds()
        kept = []
        for record in records:
            problem = span_time_problem(record.start_unix_nano, record.end_unix_nano, bounds)
            if problem is None:
                kept.append(record)
            else:
                self._left_out.warn("span", problem)
        return kept


class StoreLogExporter(_StoreWriter, LogRecordExporter):
    """Writes log records into the store at ``path`` (default: ``default_store_path()``)."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Store ``batch``; never raises.

        A record dated before 2000 or more than a day ahead (what the collector refuses too) is
        left out, with a rate-limited warning; the others are stored.
        """
        if self._write(lambda: self.store.write_logs(self._keepable(batch)), "log"):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE

    def _keepable(self, batch: Sequence[ReadableLogRecord]) -> list[LogRecordData]:
        records, bounds = [log_record(r) for r in batch], time_bounds()
        kept = []
        for record in records:
            problem = log_time_problem(record.time_unix_nano, bounds)
            if problem is None:
                kept.append(record)
            else:
                self._left_out.warn("log record", problem)
        return kept


def _span_records(spans: Sequence[ReadableSpan]) -> list[SpanRecord]:
    """``SpanRecord``s of a batch whose spans of one resource share one plain copy of it.

    A provider gives every span it makes the same ``Resource``: converted once per batch, and
    shared, the store also encodes and digests it once per batch (it caches by the dict's
    identity), where a copy per span cost more than the span's own attributes.
    """
    plain: dict[int, Attributes] = {}  # by id(): the spans hold their resources meanwhile
    records = []
    for span in spans:
        resource = plain.get(id(span.resource))
        if resource is None:
            resource = plain[id(span.resource)] = plain_attributes(span.resource.attributes)
        records.append(span_record(span, resource))
    return records


def span_record(span: ReadableSpan, resource: Attributes | None = None) -> SpanRecord:
    """A ``SpanRecord`` from an SDK span (``resource``: its resource's attributes, already made
    plain; converted here when not given)."""
    context = span.get_span_context()
    assert context is not None  # the SDK always sets it on a finished span
    if resource is None:
        resource = plain_attributes(span.resource.attributes)
    return SpanRecord(
        trace_id=format_trace_id(context.trace_id),
        span_id=format_span_id(context.span_id),
        parent_span_id=format_span_id(span.parent.span_id) if span.parent else None,
        service=_service(span.resource),
        name=span.name,
        kind=span.kind.name,
        start_unix_nano=span.start_time or 0,
        end_unix_nano=span.end_time or span.start_time or 0,
        status=span.status.status_code.name,
        status_message=span.status.description or "",
        attributes=plain_attributes(span.attributes),
        links=[
            SpanLink(
                format_trace_id(link.context.trace_id),
                format_span_id(link.context.span_id),
                plain_attributes(link.attributes),
            )
            for link in span.links
            if link.context.is_valid  # an empty context names no target (see receiver._protobuf)
        ],
        events=[
            SpanEvent(e.name, e.timestamp, plain_attributes(e.attributes)) for e in span.events
        ],
        resource=resource,
        service_version=_version(span.resource),
        scope=span.instrumentation_scope.name if span.instrumentation_scope else None,
    )


def log_record(readable: ReadableLogRecord) -> LogRecordData:
    """A ``LogRecordData`` from an SDK log record (one with no time at all is stamped now, as
    the collector stamps its arrival)."""
    record = readable.log_record
    trace_id = record.trace_id or 0
    span_id = record.span_id or 0
    severity = record.severity_number
    return LogRecordData(
        time_unix_nano=record.timestamp or record.observed_timestamp or time.time_ns(),
        service=_service(readable.resource),
        severity_text=record.severity_text or "",
        severity_number=severity.value if severity is not None else 0,
        body=record.body if isinstance(record.body, str) else _body_text(record.body),
        trace_id=format_trace_id(trace_id) if trace_id else None,
        span_id=format_span_id(span_id) if span_id else None,
        attributes=plain_attributes(record.attributes),
        resource=plain_attributes(readable.resource.attributes),
    )


def plain_attributes(attributes: Mapping[str, object] | None) -> Attributes:
    """SDK attributes as JSON-compatible values (tuples become lists, bytes become hex)."""
    if not attributes:
        return {}
    return {str(k): plain_value(v) for k, v in attributes.items()}


def plain_value(value: object) -> AttributeValue:
    """One SDK attribute value as a JSON-compatible value."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return str(value)


def _why(error: Exception) -> str:
    """The error's type, and SQLite's or the system's own words for it ("database is locked",
    "Not a directory"): never a message that may quote what was being written."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorname", None)  # SQLITE_IOERR_SHORT_READ, say
        return f"{type(error).__name__}: {one_line(error)}" + (f" ({code})" if code else "")
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


def _shown(path: os.PathLike[str]) -> str:
    """The store's path for a log line: quoted, control characters escaped, bounded."""
    text = repr(os.fspath(path))
    return text if len(text) <= 300 else text[:299] + "…"


def _body_text(body: object) -> str:
    import json

    return "" if body is None else json.dumps(finite_json(plain_value(body)), ensure_ascii=False)


def _service(resource: Resource) -> str:
    return service_name(resource.attributes.get("service.name"))


def _version(resource: Resource) -> str | None:
    value = resource.attributes.get("service.version")
    return value if isinstance(value, str) else None
