"""What the store keeps: how long a stored string may be, and when a record may be dated.

Everything stored comes from a client nobody vetted.

A request body is bounded (16 MiB at the receiver), but one string in it was not: a 2-million-
character span name was stored whole, and shown whole by ``--format json``. Every string is cut
to its bound here, on the way into the store, whichever way it came (OTLP/JSON, OTLP/protobuf,
gRPC, the SDK's store exporter), the way OpenTelemetry's attribute value length limit cuts:
silently, at a character boundary. The bounds are far above what instrumentation writes (a URL,
a SQL statement, a stack trace fit).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from tracekit.records import (
    Attributes,
    AttributeValue,
    LogRecordData,
    SpanEvent,
    SpanLink,
    SpanRecord,
)
from tracekit.semconv import CLOCK_STEPPED_BACK_NS

MAX_NAME_CHARS = 1_024  # service, span, event and scope names, versions, log severity text
MAX_KEY_CHARS = 256  # an attribute key
# a string attribute value (each one inside an array or map), a status message
MAX_VALUE_CHARS = 16_384
MAX_BODY_CHARS = 65_536  # a log record's body

# A record dated before 2000 or more than a day ahead is refused: it could only be a broken
# clock or a hostile client, and it would escape age retention or fill every "latest" view. The
# bounds also keep every duration inside SQLite's signed 64 bits.
EARLIEST_NS = 946_684_800 * 10**9
AHEAD_NS = 86_400 * 10**9


def time_bounds() -> tuple[int, int]:
    """The earliest and latest timestamps a record may carry, as of now (unix ns)."""
    return EARLIEST_NS, time.time_ns() + AHEAD_NS


def span_time_problem(start: int, end: int, bounds: tuple[int, int]) -> str | None:
    """Why a span's start and end cannot be stored, or None when they can.

    An end before the start is no reason: see ``clock_step_mended``.
    """
    low, high = bounds
    if not low <= start <= high:
        return "span start time before 2000 or more than a day ahead"
    if not low <= end <= high:
        return "span end time before 2000 or more than a day ahead"
    return None


def clock_step_mended(record: SpanRecord) -> SpanRecord:
    """``record``; or, when it ends before it starts, the record ending when it starts, with how
    far its clock went back in ``tracekit.clock_stepped_back_ns``.

    SDKs time spans by the wall clock, which NTP may step back mid-span. Such a span is a real
    operation (often the parent of others): left out, its children lost their place in the path.
    """
    stepped_back = record.start_unix_nano - record.end_unix_nano
    if stepped_back <= 0:
        return record
    attributes = {**record.attributes, CLOCK_STEPPED_BACK_NS: stepped_back}
    return replace(record, end_unix_nano=record.start_unix_nano, attributes=attributes)


LOG_TIME_PROBLEM = "log time before 2000 or more than a day ahead"


def log_time_problem(time_ns: int, bounds: tuple[int, int]) -> str | None:
    """Why a log record's time cannot be stored, or None when it can."""
    low, high = bounds
    return None if low <= time_ns <= high else LOG_TIME_PROBLEM


def cut(text: str, limit: int) -> str:
    """``text``, at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


def bounded_value(value: AttributeValue) -> AttributeValue:
    """An attribute value with every string in it cut to its bound (the same object if none)."""
    if _value_fits(value):
        return value
    if isinstance(value, str):
        return cut(value, MAX_VALUE_CHARS)
    if isinstance(value, list):
        return [bounded_value(item) for item in value]
    return bounded_attributes(value)  # type: ignore[arg-type]  # a map, the only other kind


def _value_fits(value: AttributeValue) -> bool:
    # a str subclass too: the SDK keeps Jinja's Markup and Django's SafeString as they are
    if isinstance(value, str):
        return len(value) <= MAX_VALUE_CHARS
    if isinstance(value, list):
        return all(_value_fits(item) for item in value)
    if isinstance(value, Mapping):
        return _fits(value)
    return True


def bounded_attributes(attributes: Attributes) -> Attributes:
    """``attributes`` with keys and values cut to their bounds (the same dict if none was over)."""
    if _fits(attributes):
        return attributes
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        out.setdefault(cut(key, MAX_KEY_CHARS), bounded_value(value))  # a cut key may repeat
    return out


def bounded_span(record: SpanRecord) -> SpanRecord:
    """``record`` with every string cut to its bound (the same record if none was over)."""
    if (
        len(record.name) <= MAX_NAME_CHARS
        and len(record.service) <= MAX_NAME_CHARS
        and len(record.status_message) <= MAX_VALUE_CHARS
        and (record.scope is None or len(record.scope) <= MAX_NAME_CHARS)
        and (record.service_version is None or len(record.service_version) <= MAX_NAME_CHARS)
        and _fits(record.attributes)
        and _fits(record.resource)
        and (not record.events or all(_event(e) is e for e in record.events))
        and (not record.links or all(_fits(link.attributes) for link in record.links))
    ):
        return record  # nearly always: checked without building anything
    return replace(
        record,
        service=cut(record.service, MAX_NAME_CHARS),
        name=cut(record.name, MAX_NAME_CHARS),
        service_version=record.service_version and cut(record.service_version, MAX_NAME_CHARS),
        scope=record.scope and cut(record.scope, MAX_NAME_CHARS),
        status_message=cut(record.status_message, MAX_VALUE_CHARS),
        attributes=bounded_attributes(record.attributes),
        resource=bounded_attributes(record.resource),
        events=[_event(e) for e in record.events],
        links=[_link(link) for link in record.links],
    )


# Values that hold no string: asked first, since an isinstance against Mapping (an abstract
# class) costs more than the rest of the check, and every span's attributes are checked.
_SCALARS = frozenset((int, float, bool, type(None)))


def _fits(attributes: Attributes) -> bool:
    for key, value in attributes.items():
        if len(key) > MAX_KEY_CHARS:
            return False
        if type(value) is str:
            if len(value) > MAX_VALUE_CHARS:
                return False
        elif type(value) not in _SCALARS and not _value_fits(value):
            return False
    return True


def bounded_log(record: LogRecordData) -> LogRecordData:
    """``record`` with every string cut to its bound (the same record if none was over)."""
    attributes = bounded_attributes(record.attributes)
    resource = bounded_attributes(record.resource)
    if (
        len(record.body) <= MAX_BODY_CHARS
        and len(record.service) <= MAX_NAME_CHARS
        and len(record.severity_text) <= MAX_NAME_CHARS
        and attributes is record.attributes
        and resource is record.resource
    ):
        return record
    return replace(
        record,
        body=cut(record.body, MAX_BODY_CHARS),
        service=cut(record.service, MAX_NAME_CHARS),
        severity_text=cut(record.severity_text, MAX_NAME_CHARS),
        attributes=attributes,
        resource=resource,
    )


def _event(event: SpanEvent) -> SpanEvent:
    attributes = bounded_attributes(event.attributes)
    if len(event.name) <= MAX_NAME_CHARS and attributes is event.attributes:
        return event
    return replace(event, name=cut(event.name, MAX_NAME_CHARS), attributes=attributes)


def _link(link: SpanLink) -> SpanLink:
    attributes = bounded_attributes(link.attributes)
    return link if attributes is link.attributes else replace(link, attributes=attributes)
