"""What a decoded OTLP request carries, independent of its wire format."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from tracekit.records import (
    MAX_SPAN_LINKS,
    AttributeValue,
    LogRecordData,
    SpanRecord,
    finite_json,
    service_name,
)
from tracekit.store._limits import (
    LOG_TIME_PROBLEM,
    MAX_NAME_CHARS,
    cut,
    log_time_problem,
    span_time_problem,
)
from tracekit.store._rows import SpanRows

# OTLP SpanKind and StatusCode numbers -> tracekit's names (unknown numbers: the safe default).
SPAN_KIND_NAMES = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
# Attribute values nest (arrays, key-value lists); deeper than this is refused, not recursed into.
MAX_VALUE_DEPTH = 32
# Attributes and events of one span kept, and attributes of one event, link or log record: the
# OpenTelemetry SDK's default span and log record limits, so a default SDK never sends more.
# Links: as many as tracekit's own tracer provider keeps (``records.MAX_SPAN_LINKS``), for a
# batch consumer's hops. The first ones are kept; on a record (or event, link) that had more,
# the attribute ``semconv.DROPPED_*`` says how many of that list went: what the sender counted
# as dropped (OTLP's dropped_*_count) plus what was cut here. Bounded only by the request's
# element count, one span of 300,000 links took 12 s and 380 MiB of the collector to store.
MAX_SPAN_ELEMENTS = 128
# the bound of each of a span's lists: attributes, events, links
SPAN_LIST_BOUNDS = (MAX_SPAN_ELEMENTS, MAX_SPAN_ELEMENTS, MAX_SPAN_LINKS)
# Records dated out of the store's bounds (store._limits.time_bounds) are refused: partial success.
_MAX_REASONS = 3


# Told how many records a request holds once it is parsed and before they are decoded; may raise
# (the receiver's memory budget answers 503 or 413 from there).
Admit = Callable[[int], None]


def admit_any(count: int) -> None:
    """No limit on records (decoders called outside the receiver, tests)."""


class MalformedRequest(ValueError):
    """The payload cannot be decoded; answered with 400 and a google.rpc.Status body."""


@dataclass(slots=True)
class Decoded:
    """Records decoded from one request, plus what was rejected (for partial success)."""

    spans: list[SpanRecord] = field(default_factory=list)  # JSON: records, encoded later
    rows: SpanRows = field(default_factory=SpanRows)  # protobuf: spans decoded into rows
    logs: list[LogRecordData] = field(default_factory=list)
    rejected: int = 0
    total: int = 0
    reasons: dict[str, None] = field(default_factory=dict)  # distinct, in order of first use

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` records refused while the rest of the request is accepted."""
        self.rejected += count
        if count and len(self.reasons) < _MAX_REASONS:
            self.reasons[reason] = None

    def refuse(self, reason: str, count: int = 1) -> None:
        """Count ``count`` records that could not even be decoded (refused with ``reason``)."""
        self.total += count
        self.reject(reason, count)

    @contextmanager
    def refusing_alone(self) -> Iterator[None]:
        """Around decoding and adding one record: a field that cannot be read (an id of the
        wrong length, a value nested too deep) refuses that record alone, as a 400 would lose
        the good ones sent with it."""
        try:
            yield
        except MalformedRequest as error:
            self.refuse(str(error))

    def add_span(self, record: SpanRecord | None, bounds: tuple[int, int]) -> None:
        """Count one decoded span: kept, or refused with its reason (``span_problem``)."""
        self.total += 1
        problem = span_problem(record, bounds)
        if problem is not None:
            self.reject(problem)
        elif record is not None:  # always, when there is no problem
            self.spans.append(record)

    def add_log(self, log: LogRecordData | None) -> None:
        """Count one decoded log record: kept, or refused for its time (None)."""
        self.total += 1
        if log is None:
            self.reject(LOG_TIME_PROBLEM)
        else:
            self.logs.append(log)

    @property
    def reason(self) -> str:
        """Why records were refused (the first few distinct reasons)."""
        return "; ".join(self.reasons)


def span_problem(record: SpanRecord | None, bounds: tuple[int, int]) -> str | None:
    """Why a decoded span is refused (None: it is stored)."""
    if record is None:
        return "span with an empty or all-zero trace id or span id"
    return span_time_problem(record.start_unix_nano, record.end_unix_nano, bounds)


def log_body_text(body: AttributeValue) -> str:
    """A log record's body as stored: a string as sent, a structured value as JSON, and no
    value at all (no body, or an AnyValue holding none, as OpenTelemetry JS sends for a record
    emitted without one) as the empty string, not ``null``. A NaN or infinite double in it is
    written as OTLP/JSON writes it (``"NaN"``), as in attributes: ``NaN`` is no JSON."""
    if body is None:
        return ""
    return body if isinstance(body, str) else json.dumps(finite_json(body), ensure_ascii=False)


def log_time(time_ns: int, observed_ns: int, bounds: tuple[int, int]) -> int | None:
    """A log record's time: its own, else when it was observed, else now; None if out of range.

    A record that carries neither time is stamped with the time it arrived rather than lost.
    """
    value = time_ns or observed_ns
    if not value:
        return time.time_ns()
    return value if log_time_problem(value, bounds) is None else None


def kind_name(number: int) -> str:
    """Span kind name for an OTLP SpanKind number."""
    return SPAN_KIND_NAMES[number] if 0 <= number < len(SPAN_KIND_NAMES) else "INTERNAL"


def status_name(number: int) -> str:
    """Status name for an OTLP StatusCode number."""
    return STATUS_NAMES[number] if 0 <= number < len(STATUS_NAMES) else "UNSET"


def severity_number(number: int) -> int:
    """A log's SeverityNumber as stored: outside the enum's 32 bits it is 0, unspecified.

    Only OTLP/JSON can say more (any 64-bit integer); SQLite could not even store 2**64 - 1, and
    the record's write would fail on every retry, with the good records of its request.
    """
    return number if -(2**31) <= number < 2**31 else 0


def check_id(raw: bytes, length: int, what: str) -> str | None:
    """Hex of a valid id; None for an empty or all-zero one; ``MalformedRequest`` otherwise."""
    if len(raw) != length:
        if not raw:
            return None
        raise MalformedRequest(f"{what} must be {length} bytes")
    if not any(raw):
        return None
    return raw.hex()


def service_of(resource: Mapping[str, object]) -> tuple[str, str | None]:
    """``service.name`` and ``service.version`` of a resource, with the OTel defaults."""
    name = resource.get("service.name")
    version = resource.get("service.version")
    return (
        cut(service_name(name), MAX_NAME_CHARS),
        cut(version, MAX_NAME_CHARS) if isinstance(version, str) else None,
    )
