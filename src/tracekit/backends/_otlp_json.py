"""OTLP/JSON traces (as Tempo and Jaeger's api_v3 return them) -> SpanRecords.

Tolerant on purpose, because the backends differ from the OTLP/JSON spec and from each other:
ids may be hex or base64, enums integers or names (``2`` or ``SPAN_KIND_SERVER``), 64-bit numbers
strings or numbers, and the resource spans may sit under ``resourceSpans`` or ``batches`` with the
scope list under ``scopeSpans`` or ``instrumentationLibrarySpans``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from tracekit.records import AttributeValue, BackendError, SpanEvent, SpanLink, SpanRecord

HEX = re.compile(r"^[0-9a-fA-F]+$")
KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def decode_id(value: Any, size: int) -> str:
    """A trace id (16 bytes) or span id (8 bytes) from hex or base64, as lower-case hex."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) == size * 2 and HEX.match(value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return raw.hex()
    if HEX.match(value) and len(value) <= size * 2:
        return value.lower().rjust(size * 2, "0")  # Tempo drops leading zeros in places
    raise BackendError(f"unreadable id {value[:40]!r} in backend answer")


def decode_enum(value: Any, names: dict[int, str], prefix: str) -> str:
    """``2``, ``"2"``, ``"SPAN_KIND_SERVER"`` or ``"SERVER"`` -> ``"SERVER"``."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return names.get(int(value), names[0])
    if isinstance(value, str):
        name = value.upper().removeprefix(prefix)
        if name in names.values():
            return name
        if name == "UNSPECIFIED":
            return names[0]
    return names[0]


def decode_value(value: Any) -> AttributeValue:
    """An OTLP AnyValue object -> a plain JSON value."""
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [decode_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return decode_attributes((inner or {}).get("values", []))
    if kind == "bytesValue":
        return base64.b64decode(inner).hex() if isinstance(inner, str) else None
    return inner if isinstance(inner, (str, bool)) else str(inner)


def decode_attributes(items: Any) -> dict[str, AttributeValue]:
    """A list of OTLP KeyValue objects -> a dict."""
    if not isinstance(items, list):
        return {}
    return {
        str(i["key"]): decode_value(i.get("value"))
        for i in items
        if isinstance(i, dict) and "key" in i
    }


def resource_spans(document: Any) -> list[Any]:
    """The resource-spans list of a Tempo (v1 or v2) or Jaeger (api_v3) trace document."""
    if not isinstance(document, dict):
        raise BackendError("backend answered a trace that is not a JSON object")
    for container in (document.get("trace"), document.get("result"), document):
        if isinstance(container, dict):
            found = container.get("resourceSpans", container.get("batches"))
            if isinstance(found, list):
                return found
    return []


def spans_from_document(document: Any) -> list[SpanRecord]:
    """Every span in one OTLP/JSON traces document; BackendError if it is malformed."""
    try:
        return [
            span
            for batch in resource_spans(document)
            if isinstance(batch, dict)
            for span in _spans_of_batch(batch)
        ]
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise BackendError(f"unreadable trace in backend answer ({type(error).__name__})") from None


def _spans_of_batch(batch: dict[str, Any]) -> Iterator[SpanRecord]:
    resource = decode_attributes((batch.get("resource") or {}).get("attributes"))
    service = str(resource.get("service.name") or "unknown_service")
    scopes = batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
    for scope_spans in scopes:
        scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
        for span in scope_spans.get("spans") or []:
            yield _span(span, service, resource, scope.get("name"))


def _span(span: dict[str, Any], service: str, resource: dict[str, AttributeValue],
          scope: str | None) -> SpanRecord:  # fmt: skip
    status = span.get("status") or {}
    version = resource.get("service.version")
    return SpanRecord(
        trace_id=decode_id(span.get("traceId"), 16),
        span_id=decode_id(span.get("spanId"), 8),
        parent_span_id=decode_id(span.get("parentSpanId"), 8) or None,
        service=service,
        name=str(span.get("name", "")),
        kind=decode_enum(span.get("kind"), KINDS, "SPAN_KIND_"),
        start_unix_nano=int(span.get("startTimeUnixNano") or 0),
        end_unix_nano=int(span.get("endTimeUnixNano") or 0),
        status=decode_enum(status.get("code"), STATUSES, "STATUS_CODE_"),
        status_message=str(status.get("message") or ""),
        attributes=decode_attributes(span.get("attributes")),
        links=[_link(link) for link in span.get("links") or []],
        events=[_event(event) for event in span.get("events") or []],
        resource=resource,
        service_version=version if isinstance(version, str) else None,
        scope=scope,
    )


def _link(link: dict[str, Any]) -> SpanLink:
    return SpanLink(decode_id(link.get("traceId"), 16), decode_id(link.get("spanId"), 8),
                    decode_attributes(link.get("attributes")))  # fmt: skip


def _event(event: dict[str, Any]) -> SpanEvent:
    return SpanEvent(str(event.get("name", "")), int(event.get("timeUnixNano") or 0),
                     decode_attributes(event.get("attributes")))  # fmt: skip
