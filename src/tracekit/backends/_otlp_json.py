"""OTLP/JSON resource spans, as Tempo and Jaeger's api_v3 really encode them -> SpanRecords.

Two encodings reach this module, and only these:

- Tempo (gogo ``jsonpb``): ids base64, enums by name (``SPAN_KIND_SERVER``,
  ``STATUS_CODE_ERROR``), 64-bit numbers as strings, zero values (an unspecified kind, an unset
  status code) left out.
- Jaeger api_v3 (pdata's JSON marshaler): ids lower-case hex, enums as numbers, 64-bit numbers as
  strings, zero values left out.

Each backend takes the resource-spans list out of its own envelope (Tempo v2 ``{"trace":
{"resourceSpans"}}``, Tempo v1 ``{"batches"}``, Jaeger ``{"result": {"resourceSpans"}}``).

Every string is cut to the bounds the embedded store keeps (``tracekit.store._limits``), so a
span read from Tempo or Jaeger shows as the same span read from the store, and a 2-million-
character name from a backend is not printed whole.

A malformed answer (not a list of resource spans) is one ``BackendError``. One bad record is
left out, and the caller told, so it does not sink the rest: a span timed where no span can be
(before 1970, after 2262: the limit of 64-bit nanoseconds) or with an unreadable id, time or
field; the spans of a resource spans entry whose resource or scopes are unreadable (the other
entries' spans kept); an unreadable event or link (its span kept); an attribute whose key is
no string or whose value no encoder writes (an ``intValue`` that is no int64, a ``doubleValue``
object, bytes that are not base64, maps nested past the receiver's bound), its span keeping the
others.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tracekit.records import (
    AttributeValue,
    BackendError,
    SpanEvent,
    SpanLink,
    SpanRecord,
    service_name,
)
from tracekit.store._limits import bounded_span, clock_step_mended

HEX = re.compile(r"[0-9a-f]+")
# OTLP numbers; an unspecified kind (0) reads as INTERNAL, as OpenTelemetry's SDKs treat it
KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}
KIND_NAMES = {"SPAN_KIND_UNSPECIFIED": "INTERNAL"} | {f"SPAN_KIND_{k}": k for k in KINDS.values()}
STATUS_NAMES = {f"STATUS_CODE_{s}": s for s in STATUSES.values()}
UNIX_NANO_LIMIT = 2**63  # OTLP times are unsigned; tracekit's (the store's) are 64-bit signed
SPAN_TIME_OUT_OF_RANGE = "a span whose start or end is no time from 1970 to 2262"
SPAN_WITHOUT_ID = "a span without a trace or span id"  # refused by the collector too
ATTRIBUTE_UNREADABLE = "an attribute whose key or value is unreadable"
SPAN_UNREADABLE = "a span whose id, time or fields are unreadable"
EVENT_UNREADABLE = "a span event whose time or fields are unreadable"
LINK_UNREADABLE = "a span link whose ids are unreadable"
INT64 = (-(2**63), 2**63 - 1)  # an OTLP intValue
INTEGER = re.compile(r"-?[0-9]+")
DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
SPECIAL_FLOATS = ("NaN", "Infinity", "-Infinity")
MAX_VALUE_DEPTH = 32  # arrays and maps nested deeper are refused, as the receiver refuses them
# What reading a malformed answer raises (binascii.Error, for bytes not base64, is a ValueError)
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, OverflowError)
T = TypeVar("T")
# Told why a record was left out of an answer (one of the reasons above), to say once.
Dropped = Callable[[str], None]
# Asked of each span's trace id whether its spans are read: no for a trace read before, which
# another answer holds again (Jaeger answers whole traces, whichever service's search found them)
Wanted = Callable[[str], bool]


class UnreadableAttribute(ValueError):
    """An attribute value (or key) that no OTLP/JSON encoder writes."""


class TimeOutOfRange(ValueError):
    """An OTLP time beyond what tracekit can hold (``unix_nano``)."""


class WithoutId(ValueError):
    """A span whose trace or span id is left out or all zeros: nothing can name it."""


def unix_nano(value: Any) -> int:
    """An OTLP time (a decimal string or a number; left out is 0) as unix nanoseconds.

    ValueError when it is not a number at all; TimeOutOfRange when it is one no clock gives.
    """
    try:
        nanos = int(value or 0)
    except OverflowError:  # 1e400, which JSON decodes to infinity
        raise TimeOutOfRange(str(value)[:30]) from None
    if not 0 <= nanos < UNIX_NANO_LIMIT:
        raise TimeOutOfRange(str(value)[:30])
    return nanos


def decode_id(value: Any, size: int) -> str:
    """A trace id (16 bytes) or span id (8 bytes), hex (Jaeger) or base64 (Tempo), as hex."""
    if value is None or value == "":
        return ""
    # hex of this length is never base64 of ``size`` bytes (24 or 12 characters); any case
    if isinstance(value, str) and len(value) == size * 2 and HEX.fullmatch(value.lower()):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if len(raw) != size:
        raise BackendError(f"unreadable id {str(value)[:40]!r} in backend answer")
    return raw.hex()


def _parent(span_id: str) -> str | None:
    """No parent: left out, empty, or all zeros (the invalid span id, as the receiver reads it)."""
    return span_id if _names_one(span_id) else None


def _names_one(hex_id: str) -> bool:
    """False for an empty or all-zero id (OpenTelemetry's invalid id)."""
    return bool(hex_id.strip("0"))


def decode_enum(value: Any, numbers: dict[int, str], names: dict[str, str]) -> str:
    """A kind or status code by number (Jaeger) or name (Tempo); left out means the zero value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return numbers.get(value, numbers[0])
    return names.get(value, numbers[0]) if isinstance(value, str) else numbers[0]


def decode_value(value: Any, depth: int = 0) -> AttributeValue:
    """An OTLP AnyValue object -> a plain JSON value (bytes as hex); an empty or unknown one is
    None. ``UnreadableAttribute`` for a value no OTLP/JSON encoder writes."""
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind in ("arrayValue", "kvlistValue"):
        if depth >= MAX_VALUE_DEPTH:
            raise UnreadableAttribute("nested too deep")
        values = _values_of(inner)
        if kind == "kvlistValue":
            return _strict_attributes(values, depth + 1)
        return [decode_value(v, depth + 1) for v in values]
    decode = _SCALARS.get(kind)
    return decode(inner) if decode else None  # an unknown field: ignored, as proto3 JSON says


def _values_of(inner: Any) -> list[Any]:
    """The ``values`` of an ArrayValue or KeyValueList (an empty one: none)."""
    if inner is None:
        return []
    if not isinstance(inner, dict) or not isinstance(inner.get("values") or [], list):
        raise UnreadableAttribute("values")
    return inner.get("values") or []


def _string(inner: Any) -> str:
    if not isinstance(inner, str):
        raise UnreadableAttribute("stringValue")
    return inner


def _bool(inner: Any) -> bool:
    if not isinstance(inner, bool):
        raise UnreadableAttribute("boolValue")
    return inner


def _int(inner: Any) -> int:
    """An int64 as both servers write it (a decimal string), or as a JSON number."""
    if isinstance(inner, float) and inner.is_integer():
        inner = int(inner)
    if isinstance(inner, str) and len(inner) <= 21 and INTEGER.fullmatch(inner):
        inner = int(inner)
    if type(inner) is not int or not INT64[0] <= inner <= INT64[1]:
        raise UnreadableAttribute("intValue")
    return inner


def _double(inner: Any) -> float:
    """A double; jsonpb writes NaN and the infinities as strings."""
    if isinstance(inner, str) and (inner in SPECIAL_FLOATS or DECIMAL.fullmatch(inner)):
        return float(inner)
    if isinstance(inner, bool) or not isinstance(inner, int | float):
        raise UnreadableAttribute("doubleValue")
    return float(inner)


def _bytes(inner: Any) -> str:
    """Bytes, which both servers write as standard base64, as hex."""
    try:
        return base64.b64decode(inner, validate=True).hex()
    except (binascii.Error, ValueError, TypeError):
        raise UnreadableAttribute("bytesValue") from None


_SCALARS: dict[str, Callable[[Any], AttributeValue]] = {
    "stringValue": _string, "boolValue": _bool, "intValue": _int, "doubleValue": _double,
    "bytesValue": _bytes,
}  # fmt: skip


def decode_attributes(
    items: Any, dropped: Dropped = lambda reason: None
) -> dict[str, AttributeValue]:
    """A list of OTLP KeyValue objects -> a dict. One whose key is no string or whose value is
    unreadable is left out, and ``dropped`` told (``ATTRIBUTE_UNREADABLE``): one bad attribute
    does not cost its span, nor the span its trace."""
    decoded: dict[str, AttributeValue] = {}
    for item in items if isinstance(items, list) else []:
        try:
            key, value = _key_value(item, 0)
        except UnreadableAttribute:
            dropped(ATTRIBUTE_UNREADABLE)
            continue
        decoded[key] = value
    return decoded


def _strict_attributes(items: list[Any], depth: int) -> dict[str, AttributeValue]:
    """A KeyValueList's entries; ``UnreadableAttribute`` when one is unreadable."""
    return dict(_key_value(item, depth) for item in items)


def _key_value(item: Any, depth: int) -> tuple[str, AttributeValue]:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise UnreadableAttribute("key")
    return item["key"], decode_value(item.get("value"), depth)


def spans_from_batches(
    batches: Any, dropped: Dropped = lambda reason: None, wanted: Wanted = lambda trace_id: True
) -> list[SpanRecord]:
    """Every span in a list of OTLP/JSON resource spans but those of the traces ``wanted``
    refuses, which are not read; BackendError if it is malformed. A span
    timed out of range, without ids or unreadable (so too the spans of a resource spans entry
    whose resource or scopes are unreadable) is left out, and ``dropped`` told
    (``SPAN_TIME_OUT_OF_RANGE``, ``SPAN_WITHOUT_ID``, ``SPAN_UNREADABLE``); an answer of
    unreadable spans only is a BackendError, not "no trace". One that ends before it starts
    is kept, lasting 0 ms (``clock_step_mended``)."""
    if not isinstance(batches, list):
        raise BackendError("unreadable trace in backend answer (no resource spans list)")
    unreadable: list[BackendError] = []
    spans: list[SpanRecord] = []
    for batch in (batch for batch in batches if isinstance(batch, dict)):
        try:  # read whole first: an unreadable resource or scope costs only its own spans
            spans += list(_spans_of_batch(batch, dropped, unreadable.append, wanted))
        except MALFORMED as error:
            unreadable.append(_unreadable_trace(error))
    if unreadable and not spans:
        raise unreadable[0]
    if unreadable:
        dropped(SPAN_UNREADABLE)
    return spans


def _unreadable_trace(error: Exception) -> BackendError:
    """``error`` as the one line a reader is shown (a BackendError already says what it is)."""
    if isinstance(error, BackendError):
        return error
    return BackendError(f"unreadable trace in backend answer ({type(error).__name__})")


def _spans_of_batch(
    batch: dict[str, Any], dropped: Dropped,
    unreadable: Callable[[BackendError], None], wanted: Wanted,
) -> Iterator[SpanRecord]:  # fmt: skip
    resource = decode_attributes((batch.get("resource") or {}).get("attributes"), dropped)
    service = service_name(resource.get("service.name"))  # no string: the collector's default too
    for scope_spans in batch.get("scopeSpans") or []:
        scope = scope_spans.get("scope") or {}
        for span in scope_spans.get("spans") or []:
            try:
                if wanted(decode_id(span.get("traceId"), 16)):
                    yield _span(span, service, resource, scope.get("name"), dropped)
            except TimeOutOfRange:
                dropped(SPAN_TIME_OUT_OF_RANGE)
            except WithoutId:
                dropped(SPAN_WITHOUT_ID)
            except (*MALFORMED, BackendError) as error:  # an unreadable id, time or field
                unreadable(_unreadable_trace(error))


def _span(span: dict[str, Any], service: str, resource: dict[str, AttributeValue],
          scope: str | None, dropped: Dropped) -> SpanRecord:  # fmt: skip
    status = span.get("status") or {}
    version = resource.get("service.version")
    record = SpanRecord(
        trace_id=decode_id(span.get("traceId"), 16),
        span_id=decode_id(span.get("spanId"), 8),
        parent_span_id=_parent(decode_id(span.get("parentSpanId"), 8)),
        service=service,
        name=_string(span.get("name", "")),
        kind=decode_enum(span.get("kind"), KINDS, KIND_NAMES),
        start_unix_nano=unix_nano(span.get("startTimeUnixNano")),
        end_unix_nano=unix_nano(span.get("endTimeUnixNano")),
        status=decode_enum(status.get("code"), STATUSES, STATUS_NAMES),
        status_message=_string(status.get("message", "")),
        attributes=decode_attributes(span.get("attributes"), dropped),
        links=_links(span.get("links") or [], dropped),
        events=_events(span.get("events") or [], dropped),
        resource=resource,
        service_version=version if isinstance(version, str) else None,
        scope=None if scope is None else _string(scope),
    )
    if not (_names_one(record.trace_id) and _names_one(record.span_id)):
        raise WithoutId
    # a span whose wall clock stepped back mid-span lasts 0 ms, as the collector stores it
    return bounded_span(clock_step_mended(record))


def _links(links: list[Any], dropped: Dropped) -> list[SpanLink]:
    """The links but those to an empty context (no trace or span id, or all zeros), left out as
    the receiver leaves them out: an SDK records one when it carries attributes, and Tempo and
    Jaeger keep it, but it names nothing to join or show (and no id the path schema allows)."""
    found = (_readable(_link, link, dropped, LINK_UNREADABLE) for link in links)
    return [
        ln for ln in found if ln is not None and _names_one(ln.trace_id) and _names_one(ln.span_id)
    ]


def _events(events: list[Any], dropped: Dropped) -> list[SpanEvent]:
    found = (_readable(_event, event, dropped, EVENT_UNREADABLE) for event in events)
    return [event for event in found if event is not None]


def _readable(
    decode: Callable[[Any, Dropped], T], item: Any, dropped: Dropped, unreadable: str
) -> T | None:
    """``decode(item)``; None when ``item`` is unreadable, and ``dropped`` told: one bad event
    or link costs only itself, not its span."""
    try:
        return decode(item, dropped)
    except (*MALFORMED, BackendError):
        dropped(unreadable)
        return None


def _link(link: dict[str, Any], dropped: Dropped) -> SpanLink:
    return SpanLink(decode_id(link.get("traceId"), 16), decode_id(link.get("spanId"), 8),
                    decode_attributes(link.get("attributes"), dropped))  # fmt: skip


def _event(event: dict[str, Any], dropped: Dropped) -> SpanEvent:
    return SpanEvent(_string(event.get("name", "")), unix_nano(event.get("timeUnixNano")),
                     decode_attributes(event.get("attributes"), dropped))  # fmt: skip
