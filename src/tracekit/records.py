"""Plain span and log records: the common currency of the read side.

The embedded store, the Tempo client and the Jaeger client each produce these records; the path
reconstruction engine consumes them. They carry no OpenTelemetry SDK objects, so every reader can
build them from its own wire format, and tests can write them by hand.

Conventions: ids are lower-case hex strings (trace ids 32 characters, span ids 16); times are unix
nanoseconds; ``kind`` is one of ``SPAN_KINDS`` and ``status`` one of ``STATUS_CODES``; attribute
values are JSON-compatible (str, bool, int, float, or lists of those; bytes are hex-encoded),
except that a double may be NaN or infinite, as OTLP allows: ``finite_json`` makes such a value
standard JSON wherever one is written out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeAlias, runtime_checkable

from tracekit import semconv

__all__ = [
    "CORRELATION_ATTRIBUTE",
    "MAX_CORRELATION_ID_LENGTH",
    "MAX_SPAN_LINKS",
    "SPAN_KINDS",
    "STATUS_CODES",
    "AttributeValue",
    "Attributes",
    "BackendError",
    "CorrelatedLogSource",
    "EntrySpanSource",
    "HopSample",
    "HopSampleSource",
    "LimitedLogSource",
    "LimitedSpanSource",
    "LogRecordData",
    "RequestSummary",
    "SpanEvent",
    "SpanLink",
    "SpanRecord",
    "SpanSource",
    "WarningSource",
    "finite_json",
    "newest_spans",
    "request_correlation_id",
    "service_name",
    "task_name",
]

AttributeValue: TypeAlias = (
    "str | bool | int | float | list[AttributeValue] | dict[str, AttributeValue] | None"
)
Attributes: TypeAlias = dict[str, AttributeValue]

# What OTLP/JSON (protobuf's JSON mapping) writes for the doubles standard JSON has no number for.
_NON_FINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

SPAN_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")

CORRELATION_ATTRIBUTE = semconv.CORRELATION_ID
# The longest correlation ID a request is known by: the store indexes none longer, so no search
# lists a request by it and no `tracekit trace` finds one. Longer text in ``correlation.id`` (a
# hostile client's, another SDK's) is an attribute like any other, never a request's name.
MAX_CORRELATION_ID_LENGTH = 256
_UNKNOWN_SERVICE = "unknown_service"  # OpenTelemetry's name for a service that gave none

# The links one span holds: tracekit's tracer provider keeps this many (the SDK's default is
# 128) and the collector stores as many. A batch consumer's span links to every message's
# producer, and kafka-python's poll() returns up to 500 records by default: at 128 the earlier
# records' hops would silently drop out of their paths (the SDK keeps a span's last links).
# Consumers tuned for throughput poll thousands (max_poll_records, consume(num_messages=...));
# a link costs about 600 bytes (its context, correlation ID and queue wait), so a batch of
# 10,000 holds 6 MB of links, next to the 10,000 messages it holds anyway.
MAX_SPAN_LINKS = 10_000


@dataclass(slots=True)
class SpanLink:
    """A link from one span to another span's context (possibly in another trace)."""

    trace_id: str
    span_id: str
    attributes: Attributes = field(default_factory=dict)


@dataclass(slots=True)
class SpanEvent:
    """A timestamped annotation on a span (exceptions are events named ``exception``)."""

    name: str
    time_unix_nano: int
    attributes: Attributes = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One finished span, as any backend can describe it."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str
    start_unix_nano: int
    end_unix_nano: int
    status: str = "UNSET"
    status_message: str = ""
    attributes: Attributes = field(default_factory=dict)
    links: list[SpanLink] = field(default_factory=list)
    events: list[SpanEvent] = field(default_factory=list)
    resource: Attributes = field(default_factory=dict)
    service_version: str | None = None
    scope: str | None = None

    @property
    def correlation_id(self) -> str | None:
        """The request's correlation ID (span attribute ``correlation.id``), if any: none
        longer than ``MAX_CORRELATION_ID_LENGTH``, which no request can be found by."""
        return request_correlation_id(self.attributes.get(CORRELATION_ATTRIBUTE))

    @property
    def duration_ms(self) -> float:
        """Span duration in milliseconds."""
        return (self.end_unix_nano - self.start_unix_nano) / 1e6


@dataclass(slots=True)
class LogRecordData:
    """One log record, tied to a span when it was emitted inside one."""

    time_unix_nano: int
    service: str
    severity_text: str
    severity_number: int
    body: str
    trace_id: str | None = None
    span_id: str | None = None
    attributes: Attributes = field(default_factory=dict)
    resource: Attributes = field(default_factory=dict)

    @property
    def correlation_id(self) -> str | None:
        """The correlation ID stamped on the record (attribute ``correlation.id``), if any: none
        longer than ``MAX_CORRELATION_ID_LENGTH``."""
        return request_correlation_id(self.attributes.get(CORRELATION_ATTRIBUTE))


@dataclass(slots=True)
class RequestSummary:
    """One request in a listing (``tracekit search``): a root span and what hangs below it."""

    correlation_id: str | None
    trace_id: str
    root_service: str
    root_name: str
    start_unix_nano: int
    duration_ms: float
    span_count: int
    error: bool
    # the Celery task the root span sent or ran: one queue carries many tasks, and its spans
    # are named by the queue ("send celery"), so ``trace`` names the task beside it
    root_task: str | None = None
    # the root span's attributes, where the backend read them: a root named only by its
    # method (``GET``, another SDK's span without a route) is listed by its URL path
    root_attributes: Attributes = field(default_factory=dict, repr=False)


def request_correlation_id(value: object) -> str | None:
    """``value`` (a ``correlation.id`` attribute's) as a request's correlation ID: text of 1 to
    ``MAX_CORRELATION_ID_LENGTH`` characters, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_CORRELATION_ID_LENGTH:
        return value
    return None


def task_name(attributes: Attributes) -> str | None:
    """The Celery task a span with ``attributes`` sent or ran, if it names one."""
    task = attributes.get(semconv.CELERY_TASK_NAME)
    return task if isinstance(task, str) and task else None


def service_name(value: object) -> str:
    """The service a resource's ``service.name`` value names, without the white space around it
    (an SDK that read ``OTEL_SERVICE_NAME`` from a file keeps its newline: ``"checkout\\n"`` is
    the ``checkout`` typed after ``--service``); OpenTelemetry's default when it names none."""
    name = value.strip() if isinstance(value, str) else ""
    return name or _UNKNOWN_SERVICE


def finite_json(value: object) -> object:
    """``value`` (a JSON-compatible document) with each NaN or infinity, at any depth, replaced
    by the string OTLP/JSON writes for it: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE_NAMES[repr(value)]
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


class BackendError(Exception):
    """A read backend is unreachable or answered something unusable."""


class SpanSource(Protocol):
    """What the reconstruction engine and the CLI need from a read backend.

    Implemented by the embedded store, the Tempo client and the Jaeger client. Methods raise
    ``BackendError`` when the backend cannot answer; an empty result means "not found".
    """

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Every span whose ``correlation.id`` attribute equals ``correlation_id``."""
        ...

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces."""
        ...

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Traces that hold a span with a link pointing into any of ``trace_ids``."""
        ...

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Log records emitted inside spans of the given traces."""
        ...

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        """The requests that started last (root spans), newest first, filtered."""
        ...

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans that started at or after ``since_unix_nano`` (for the service map)."""
        ...


class HopSample(NamedTuple):
    """One call between two services, as the service map counts it
    (``tracekit.path.service_map``): who called whom, over what, how long, and whether either
    side failed."""

    from_service: str
    to_service: str
    type: str  # "http" | "messaging"
    latency_ms: float
    error: bool


@runtime_checkable
class HopSampleSource(Protocol):
    """A read backend that finds the service map's calls itself, without handing over every
    span of the window (the embedded store: ``tracekit services`` over 200,000 spans)."""

    def newest_hop_samples(
        self, since_unix_nano: int, *, limit: int
    ) -> tuple[list[HopSample], bool]:
        """The calls ``service_map`` finds among the ``limit`` spans that started last, at or
        after ``since_unix_nano``; and whether the window holds more spans than that."""
        ...

    def newest_requests_by_service(self, since_unix_nano: int, *, limit: int) -> dict[str, int]:
        """``tracekit.path.requests_by_service`` of those same spans."""
        ...


@runtime_checkable
class EntrySpanSource(Protocol):
    """A read backend that picks a window's requests of one service itself, without handing
    over every span of the window (the embedded store: ``tracekit diff``'s sets over 200,000
    spans)."""

    def newest_spans_entering(
        self, services: Sequence[str], kinds: Sequence[str], since_unix_nano: int, *, limit: int
    ) -> tuple[list[SpanRecord], bool]:
        """Of the spans ``newest_spans(self, since_unix_nano, limit)`` returns, those of the
        traces in which one of ``services`` has a span of one of ``kinds``, earliest first; and
        whether the window holds more than ``limit`` spans."""
        ...


@runtime_checkable
class LimitedSpanSource(Protocol):
    """A read backend that can stop after the first spans.

    The engine reads at most as many spans as it will show from such a source; from any other
    it reads what the backend returns and keeps the earliest. The embedded store reads just
    those; Tempo and Jaeger, which answer whole traces, read traces in the order asked and no
    more once the spans are held, so the earliest are those of the traces read.
    """

    def trace_starts_by_correlation_id(
        self, correlation_id: str, limit: int
    ) -> list[tuple[str, int]]:
        """Traces holding spans that carry ``correlation_id``, each with the earliest such span's
        start, earliest first, the first ``limit`` of them."""
        ...

    def first_spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """The ``limit`` earliest spans of the given traces, earliest first."""
        ...

    def newest_spans_since(self, since_unix_nano: int, *, limit: int) -> list[SpanRecord]:
        """The ``limit`` spans that started last, at or after ``since_unix_nano``, earliest
        first."""
        ...


def newest_spans(source: SpanSource, since_unix_nano: int, limit: int) -> list[SpanRecord]:
    """The newest ``limit`` spans of a window, earliest first: what a window over a busy backend
    means (``services``, ``diff``'s sets). The store reads just those; Tempo and Jaeger answer
    with the spans of their newest traces, read until ``limit`` are held."""
    if isinstance(source, LimitedSpanSource):
        return source.newest_spans_since(since_unix_nano, limit=limit)
    spans = sorted(
        source.spans_since(since_unix_nano, limit=limit), key=lambda s: s.start_unix_nano
    )
    return spans[-limit:]


@runtime_checkable
class CorrelatedLogSource(Protocol):
    """A read backend that holds log records by correlation ID, spans or not.

    The embedded store does: a service in correlation-only mode (``TRACEKIT_MODE=correlation``),
    or a line logged outside any span, exports records that carry the request's correlation ID
    and no trace, and the path shows them with the request's other lines.
    """

    def logs_by_correlation_id(
        self, correlation_id: str, limit: int | None = None
    ) -> list[LogRecordData]:
        """Log records stamped with ``correlation_id``, oldest first (the first ``limit``)."""
        ...


@runtime_checkable
class LimitedLogSource(Protocol):
    """A read backend that can stop after the first log records of traces (the embedded store);
    from any other the engine reads them all and keeps the earliest."""

    def first_logs_by_trace_ids(
        self, trace_ids: Iterable[str], limit: int
    ) -> tuple[list[LogRecordData], int]:
        """The ``limit`` earliest log records of the given traces, oldest first, and how many
        those traces hold in all."""
        ...


@runtime_checkable
class WarningSource(Protocol):
    """A read backend that can say what a path built from its traces should warn about.

    Remote backends implement it (Tempo returned a trace partially, a link search failed); the
    reconstruction engine adds these warnings to the path's own.
    """

    def warnings_for(self, trace_ids: Iterable[str]) -> list[str]:
        """Warnings about the given traces, each once."""
        ...
