"""The path model: what the engine produces and what renderers and ``--format json`` consume.

``Path.to_json()`` is the ``tracekit.path/v1`` document described in docs/architecture.md and
pinned by ``schema.json`` next to this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracekit.records import SpanRecord

__all__ = [
    "ATTACHED_AS_ORPHAN",
    "ATTACHED_AS_ROOT",
    "ATTACHED_BY_LINK",
    "ATTACHED_BY_PARENT",
    "SCHEMA_ID",
    "Hop",
    "Path",
    "PathError",
    "PathLog",
    "PathSpan",
    "last_to_end",
]

SCHEMA_ID = "tracekit.path/v1"

# How a span came to hang where it does in the path tree.
ATTACHED_BY_PARENT = "parent"  # its own parent span id
ATTACHED_BY_LINK = "link"  # a span link (a queue hop that started a new trace)
ATTACHED_AS_ORPHAN = "orphan"  # parent missing: hung under the nearest enclosing known span
ATTACHED_AS_ROOT = "root"


@dataclass(slots=True, eq=False)
class PathSpan:
    """One span placed in the path tree, with times possibly shifted for clock skew."""

    record: SpanRecord
    start_unix_nano: int
    end_unix_nano: int
    parent: PathSpan | None = field(default=None, repr=False)
    children: list[PathSpan] = field(default_factory=list, repr=False)
    attached_by: str = ATTACHED_AS_ROOT
    depth: int = 0
    shift_ns: int = 0
    self_ns: int = 0  # duration minus the time its synchronous children covered
    critical_ns: int = 0  # its own time on the critical path
    critical_wait_ns: int = 0  # the wait before it on the critical path (a queue wait)
    on_critical_path: bool = False
    # the delivery of the same message before it, for a message delivered again
    redelivery_of: PathSpan | None = field(default=None, repr=False)
    # the request of the same call sent before it, for a request its HTTP client sent again
    resend_of: PathSpan | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """(trace id, span id): span ids are only unique within a trace."""
        return (self.record.trace_id, self.record.span_id)

    @property
    def service(self) -> str:
        """The service that exported this span."""
        return self.record.service

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds (shifting never changes it)."""
        return (self.end_unix_nano - self.start_unix_nano) / 1e6

    def label(self) -> str:
        """Short human label used in warnings: service, name and span id."""
        return f"{self.service} '{self.record.name}' ({self.record.span_id})"

    def to_json(self) -> dict[str, Any]:
        """The span object of the ``tracekit.path/v1`` document."""
        record = self.record
        return {
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "parent_span_id": record.parent_span_id,
            "service": record.service,
            "name": record.name,
            "kind": record.kind,
            "start_unix_nano": self.start_unix_nano,
            "end_unix_nano": self.end_unix_nano,
            "duration_ms": round(self.duration_ms, 3),
            "self_ms": round(self.self_ns / 1e6, 3),
            "critical_ms": round(self.critical_ns / 1e6, 3),
            "critical_wait_ms": round(self.critical_wait_ns / 1e6, 3),
            "status": record.status,
            "status_message": record.status_message,
            "attributes": dict(record.attributes),
            "links": [{"trace_id": ln.trace_id, "span_id": ln.span_id} for ln in record.links],
            "depth": self.depth,
            "on_critical_path": self.on_critical_path,
        }


@dataclass(slots=True, frozen=True)
class Hop:
    """A step between services: an HTTP call or a message through a queue."""

    from_service: str
    to_service: str
    type: str  # "http" | "messaging"
    system: str | None
    destination: str | None
    from_span_id: str
    to_span_id: str
    latency_ms: float
    queue_wait_ms: float | None
    # span ids are unique only within a trace: a path of several traces may repeat one
    from_trace_id: str = ""
    to_trace_id: str = ""

    @property
    def sender_key(self) -> tuple[str, str]:
        """(trace id, span id) of the sending span, as ``PathSpan.key``."""
        return (self.from_trace_id, self.from_span_id)

    @property
    def receiver_key(self) -> tuple[str, str]:
        """(trace id, span id) of the receiving span, as ``PathSpan.key``."""
        return (self.to_trace_id, self.to_span_id)

    def to_json(self) -> dict[str, Any]:
        """The hop object of the ``tracekit.path/v1`` document."""
        return {
            "from_service": self.from_service,
            "to_service": self.to_service,
            "type": self.type,
            "system": self.system,
            "destination": self.destination,
            "from_span_id": self.from_span_id,
            "to_span_id": self.to_span_id,
            "latency_ms": self.latency_ms,
            "queue_wait_ms": self.queue_wait_ms,
            "from_trace_id": self.from_trace_id,
            "to_trace_id": self.to_trace_id,
        }


@dataclass(slots=True, frozen=True)
class PathError:
    """A span that ended in error, with the most telling message found on it."""

    span_id: str
    service: str
    message: str
    trace_id: str = ""  # span ids are unique only within a trace

    def to_json(self) -> dict[str, Any]:
        """The error object of the ``tracekit.path/v1`` document."""
        return {"span_id": self.span_id, "service": self.service, "message": self.message,
                "trace_id": self.trace_id}  # fmt: skip


@dataclass(slots=True, frozen=True)
class PathLog:
    """A log record placed on the path (times shifted like its span's)."""

    time_unix_nano: int
    span_id: str | None
    service: str
    severity: str
    body: str
    trace_id: str | None = None  # of its span, when the path shows it

    def to_json(self) -> dict[str, Any]:
        """The log object of the ``tracekit.path/v1`` document."""
        return {
            "time_unix_nano": self.time_unix_nano,
            "span_id": self.span_id,
            "service": self.service,
            "severity": self.severity,
            "body": self.body,
            "trace_id": self.trace_id,
        }


@dataclass(slots=True, repr=False)
class Path:
    """One request's reconstructed path across services, traces and queues."""

    query: str
    correlation_id: str | None
    trace_ids: list[str]
    services: list[str]
    start_unix_nano: int
    duration_ms: float
    spans: list[PathSpan]  # tree pre-order: parents before children, siblings by start
    hops: list[Hop]
    critical_path: list[str]
    errors: list[PathError]
    logs: list[PathLog]
    warnings: list[str]

    def __repr__(self) -> str:
        return f"<Path {self.query!r}: {len(self.spans)} spans, {len(self.hops)} hops>"

    def critical_span_ids(self) -> set[str]:
        """The span ids on the critical path, for quick membership tests in renderers."""
        return set(self.critical_path)

    def request_end(self) -> PathSpan | None:
        """The span that ended last: where the request ends and the critical path starts."""
        return last_to_end(self.spans) if self.spans else None

    def to_json(self) -> dict[str, Any]:
        """The ``tracekit.path/v1`` document."""
        return {
            "schema": SCHEMA_ID,
            "query": self.query,
            "correlation_id": self.correlation_id,
            "trace_ids": list(self.trace_ids),
            "services": list(self.services),
            "start_unix_nano": self.start_unix_nano,
            "duration_ms": round(self.duration_ms, 3),
            "spans": [span.to_json() for span in self.spans],
            "hops": [hop.to_json() for hop in self.hops],
            "critical_path": list(self.critical_path),
            "errors": [error.to_json() for error in self.errors],
            "logs": [log.to_json() for log in self.logs],
            "warnings": list(self.warnings),
        }


def last_to_end(ordered: list[PathSpan]) -> PathSpan:
    """The span that ended last (on a tie, the last in tree order: the deepest)."""
    end = ordered[0]
    for node in ordered:
        if node.end_unix_nano >= end.end_unix_nano:
            end = node
    return end
