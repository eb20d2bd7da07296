"""OTLP/JSON requests -> records, following the OTLP spec's JSON mapping.

The OTLP rules on top of proto3's JSON mapping: trace and span ids are hex (any case), not
base64; enums are integers (names are accepted too); 64-bit integers may be strings or numbers;
field names are lowerCamelCase (the proto names are accepted too); unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from tracekit.receiver._decoded import (
    MAX_SPAN_ELEMENTS,
    MAX_VALUE_DEPTH,
    Admit,
    Decoded,
    MalformedRequest,
    admit_any,
    check_id,
    kind_name,
    log_body_text,
    log_time,
    service_of,
    severity_number,
    status_name,
)
from tracekit.records import (
    MAX_SPAN_LINKS,
    Attributes,
    AttributeValue,
    LogRecordData,
    SpanEvent,
    SpanLink,
    SpanRecord,
)
from tracekit.semconv import DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS
from tracekit.store._limits import time_bounds

_KIND_BY_NAME = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
}  # fmt: skip
_STATUS_BY_NAME = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
# SEVERITY_NUMBER_TRACE = 1, TRACE2..TRACE4 = 2..4, then DEBUG, INFO, WARN, ERROR, FATAL alike
_SEVERITY_BY_NAME = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{level}{'' if step == 1 else step}": 4 * rank + step
    for rank, level in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"))
    for step in range(1, 5)
}
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# What a 64-bit integer or a double may be spelled as in a JSON string (proto3's JSON mapping)
_DECIMAL = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_HEX_DIGITS = "0123456789abcdefABCDEF"
_INT64 = (-(2**63), 2**64 - 1)  # signed and unsigned 64-bit fields share this decoder


class _TooManyDigits:
    """Stands for a JSON integer longer than Python converts (4,300 digits): no field takes it,
    so the record holding it is refused alone, and an unknown field holding it is ignored."""


_TOO_MANY_DIGITS = _TooManyDigits()


def _integer(text: str) -> int | _TooManyDigits:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        return _TOO_MANY_DIGITS


def load(body: bytes) -> dict[str, Any]:
    """Parse the body as a JSON object."""
    try:
        try:
            document = json.loads(body)
        except ValueError as error:
            if type(error) is not ValueError:  # a JSON syntax or UTF-8 error: no integer's
                raise
            # an integer too long to convert, which failed the whole request: parsed again,
            # integers one by one (slower, so only then)
            document = json.loads(body, parse_int=_integer)
    except RecursionError as error:  # past Python's recursion limit (about 1,000 levels)
        raise MalformedRequest("body is nested too deep (JSON objects and arrays)") from error
    except ValueError as error:
        raise MalformedRequest("body is not valid JSON (UTF-8)") from error
    if not isinstance(document, dict):
        raise MalformedRequest("body must be a JSON object")
    return document


def get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A field by its lowerCamelCase name, else its proto name (both are valid proto3 JSON)."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def as_object(value: Any, where: str) -> dict[str, Any]:
    """A JSON object (null or absent means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequest(f"{where} must be an object")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    """A JSON array (null or absent means empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedRequest(f"{where} must be an array")
    return value


def as_str(value: Any, where: str) -> str:
    """A JSON string (null or absent means empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedRequest(f"{where} must be a string")
    return value


def as_int(value: Any, where: str) -> int:
    """A 64-bit integer given as a number or a decimal string (proto3 JSON allows both)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise MalformedRequest(f"{where} must be an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and len(value) <= 21:
        if not _DECIMAL.fullmatch(value):  # Python's int() takes " 5", "+5" and "1_000" too
            raise MalformedRequest(f"{where} must be an integer")
        value = int(value)
    if not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise MalformedRequest(f"{where} must be a 64-bit integer")
    return value


def as_enum(value: Any, names: dict[str, int], where: str) -> int:
    """An enum as its integer (the OTLP rule) or, leniently, its proto name."""
    if isinstance(value, str) and value in names:
        return names[value]
    return as_int(value, where)


def as_id(value: Any, length: int, where: str) -> str | None:
    """A hex id of ``length`` bytes, any case; None when empty or all zero."""
    text = as_str(value, where)
    if text.strip(_HEX_DIGITS) or len(text) % 2:  # bytes.fromhex() skips white space
        raise MalformedRequest(f"{where} must be hex")
    return check_id(bytes.fromhex(text), length, where)


def any_value(value: Any, where: str, depth: int = 0) -> AttributeValue:
    """An AnyValue object as a JSON-compatible value (bytes become hex).

    A member that is null is not set (proto3's JSON mapping): OpenTelemetry JS writes a NaN or
    infinite number as ``{"doubleValue": null}``, and its span was refused for it."""
    obj = {name: member for name, member in as_object(value, where).items() if member is not None}
    for field, convert in _SCALARS:
        if field in obj:
            return convert(obj[field], where)
    if depth >= MAX_VALUE_DEPTH:
        raise MalformedRequest(f"attribute value nested deeper than {MAX_VALUE_DEPTH}")
    if "arrayValue" in obj or "array_value" in obj:
        array = as_object(get(obj, "arrayValue", "array_value"), where)
        return [any_value(v, where, depth + 1) for v in as_list(array.get("values"), where)]
    if "kvlistValue" in obj or "kvlist_value" in obj:
        kvlist = as_object(get(obj, "kvlistValue", "kvlist_value"), where)
        return attributes(kvlist.get("values"), where, depth + 1)
    if "bytesValue" in obj or "bytes_value" in obj:
        return _bytes(get(obj, "bytesValue", "bytes_value"), where)
    return None


def _string(value: Any, where: str) -> str:
    return as_str(value, where)


def _int_value(value: Any, where: str) -> int | float:
    """An attribute's intValue; a JSON number past 64 bits is kept as a double. OpenTelemetry
    JS sends every integral number as an intValue (1e21 as ``{"intValue": 1e+21}``), and its
    span was refused for one."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and not _INT64[0] <= value <= _INT64[1]:
        return _double(value, where)  # past a double's range too: infinite, as 1e400 reads
    return as_int(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedRequest(f"{where} boolValue must be true or false")
    return value


def _double(value: Any, where: str) -> float:
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    if isinstance(value, str) and not _NUMBER.fullmatch(value):  # float() takes "nan", "1_0"
        raise MalformedRequest(f"{where} doubleValue must be a number")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedRequest(f"{where} doubleValue must be a number")
    try:
        return float(value)
    except ValueError:
        raise MalformedRequest(f"{where} doubleValue must be a number") from None
    except OverflowError:  # an integer past a double's range: what 1e400 reads as
        return math.inf if int(value) > 0 else -math.inf


def _bytes(value: Any, where: str) -> str:
    text = as_str(value, where)
    try:  # proto3 JSON accepts standard and URL-safe base64, padded or not
        standard = text.replace("-", "+").replace("_", "/").rstrip("=")
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest(f"{where} bytesValue must be base64") from None
    return raw.hex()


_SCALARS = (
    ("stringValue", _string), ("string_value", _string),
    ("intValue", _int_value), ("int_value", _int_value),
    ("boolValue", _bool), ("bool_value", _bool),
    ("doubleValue", _double), ("double_value", _double),
)  # fmt: skip


def attributes(value: Any, where: str, depth: int = 0) -> Attributes:
    """A KeyValue array as a dict."""
    out: Attributes = {}
    for item in as_list(value, where):
        kv = as_object(item, where)
        out[as_str(kv.get("key"), where)] = any_value(kv.get("value"), where, depth)
    return out


def count_records(document: dict[str, Any], path: tuple[tuple[str, str], ...]) -> int:
    """Records in a request, counted leniently (what is malformed is refused while decoding)."""
    level: list[Any] = [document]
    for camel, snake in path:
        level = [
            item for parent in level if isinstance(parent, dict)
            for item in _list_or_empty(get(parent, camel, snake))
        ]  # fmt: skip
    return len(level)


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_SPANS = (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans"))
_LOGS = (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"),
         ("logRecords", "log_records"))  # fmt: skip


def decode_traces(body: bytes, admit: Admit = admit_any) -> Decoded:
    """Spans of an ExportTraceServiceRequest in JSON."""
    out = Decoded()
    bounds = time_bounds()
    document = load(body)
    admit(count_records(document, _SPANS))
    for resource_spans in as_list(
        get(document, "resourceSpans", "resource_spans"), "resourceSpans"
    ):
        rs = as_object(resource_spans, "resourceSpans[]")
        resource = _resource_or_refuse(rs, _SPANS[1:], out)
        if resource is None:
            continue
        for scope_spans in as_list(get(rs, "scopeSpans", "scope_spans"), "scopeSpans"):
            ss = as_object(scope_spans, "scopeSpans[]")
            scope = _scope_name(ss)
            for span in as_list(ss.get("spans"), "spans"):
                with out.refusing_alone():  # an id not hex, an integer that is not one...
                    out.add_span(_span(as_object(span, "spans[]"), resource, scope), bounds)
    return out


def _resource(container: dict[str, Any]) -> Attributes:
    resource = as_object(container.get("resource"), "resource")
    return attributes(resource.get("attributes"), "resource.attributes")


def _resource_or_refuse(
    container: dict[str, Any], records: tuple[tuple[str, str], ...], out: Decoded
) -> Attributes | None:
    """The container's resource; None when it cannot be read, and then each of its records is
    refused (the other resources' records are stored, as over protobuf)."""
    try:
        return _resource(container)
    except MalformedRequest as error:
        out.refuse(str(error), count_records(container, records))
        return None


def _scope_name(scope_spans: dict[str, Any]) -> str | None:
    """The scope's name; None when there is none or it cannot be read (its spans are kept,
    unscoped, as over protobuf)."""
    try:
        scope = as_object(scope_spans.get("scope"), "scope")
        return as_str(scope.get("name"), "scope.name") or None
    except MalformedRequest:
        return None


def _span(span: dict[str, Any], resource: Attributes, scope: str | None) -> SpanRecord | None:
    trace_id = as_id(get(span, "traceId", "trace_id"), 16, "span.traceId")
    span_id = as_id(get(span, "spanId", "span_id"), 8, "span.spanId")
    parent = as_id(get(span, "parentSpanId", "parent_span_id"), 8, "span.parentSpanId")
    status = as_object(span.get("status"), "span.status")
    service, version = service_of(resource)
    kept = _kept_attributes(span, "span.attributes")
    events = as_list(span.get("events"), "events")
    links = as_list(span.get("links"), "links")
    for key, found, bound in ((DROPPED_EVENTS, events, MAX_SPAN_ELEMENTS),
                              (DROPPED_LINKS, links, MAX_SPAN_LINKS)):  # fmt: skip
        if len(found) > bound:
            kept[key] = _reported(span, key) + len(found) - bound
    record = SpanRecord(
        trace_id=trace_id or "",
        span_id=span_id or "",
        parent_span_id=parent,
        service=service,
        name=as_str(span.get("name"), "span.name"),
        kind=kind_name(as_enum(span.get("kind"), _KIND_BY_NAME, "span.kind")),
        start_unix_nano=as_int(
            get(span, "startTimeUnixNano", "start_time_unix_nano"), "span.start"
        ),
        end_unix_nano=as_int(get(span, "endTimeUnixNano", "end_time_unix_nano"), "span.end"),
        status=status_name(as_enum(status.get("code"), _STATUS_BY_NAME, "status.code")),
        status_message=as_str(status.get("message"), "status.message"),
        attributes=kept,
        links=_links(links[:MAX_SPAN_LINKS]),
        events=[_event(as_object(e, "span.events[]")) for e in events[:MAX_SPAN_ELEMENTS]],
        resource=resource,
        service_version=version,
        scope=scope,
    )
    return record if trace_id and span_id else None


# the JSON names (camelCase, then the proto name) of the count OTLP sends with each list
_DROPPED_NAMES = {
    DROPPED_ATTRIBUTES: ("droppedAttributesCount", "dropped_attributes_count"),
    DROPPED_EVENTS: ("droppedEventsCount", "dropped_events_count"),
    DROPPED_LINKS: ("droppedLinksCount", "dropped_links_count"),
}


def _kept_attributes(container: dict[str, Any], where: str) -> Attributes:
    """The first ``MAX_SPAN_ELEMENTS`` attributes of a span, event, link or log record, and how
    many more it had when there were more."""
    found = as_list(container.get("attributes"), where)
    if len(found) <= MAX_SPAN_ELEMENTS:
        return attributes(found, where)
    kept = attributes(found[:MAX_SPAN_ELEMENTS], where)
    left_out = len(found) - MAX_SPAN_ELEMENTS
    kept[DROPPED_ATTRIBUTES] = _reported(container, DROPPED_ATTRIBUTES) + left_out
    return kept


def _reported(container: dict[str, Any], key: str) -> int:
    """What the sender counted as dropped of a list; 0 when it is not a count (it was not read
    before the collector cut lists, so it refuses no span)."""
    try:
        return max(as_int(get(container, *_DROPPED_NAMES[key]), key), 0)
    except MalformedRequest:
        return 0


def _links(links: list[Any]) -> list[SpanLink]:
    """The links but those to an empty context (see ``_protobuf._links``)."""
    found = [_link(as_object(link, "span.links[]")) for link in links]
    return [link for link in found if link is not None]


def _link(link: dict[str, Any]) -> SpanLink | None:
    trace_id = as_id(get(link, "traceId", "trace_id"), 16, "link.traceId")
    span_id = as_id(get(link, "spanId", "span_id"), 8, "link.spanId")
    if trace_id is None or span_id is None:
        return None
    return SpanLink(trace_id, span_id, _kept_attributes(link, "link.attributes"))


def _event(event: dict[str, Any]) -> SpanEvent:
    return SpanEvent(
        name=as_str(event.get("name"), "event.name"),
        time_unix_nano=as_int(get(event, "timeUnixNano", "time_unix_nano"), "event.time"),
        attributes=_kept_attributes(event, "event.attributes"),
    )


def decode_logs(body: bytes, admit: Admit = admit_any) -> Decoded:
    """Log records of an ExportLogsServiceRequest in JSON."""
    out = Decoded()
    bounds = time_bounds()
    document = load(body)
    admit(count_records(document, _LOGS))
    for resource_logs in as_list(get(document, "resourceLogs", "resource_logs"), "resourceLogs"):
        rl = as_object(resource_logs, "resourceLogs[]")
        resource = _resource_or_refuse(rl, _LOGS[1:], out)
        if resource is None:
            continue
        for scope_logs in as_list(get(rl, "scopeLogs", "scope_logs"), "scopeLogs"):
            sl = as_object(scope_logs, "scopeLogs[]")
            for record in as_list(get(sl, "logRecords", "log_records"), "logRecords"):
                with out.refusing_alone():
                    out.add_log(_log(as_object(record, "logRecords[]"), resource, bounds))
    return out


def _log(
    record: dict[str, Any], resource: Attributes, bounds: tuple[int, int]
) -> LogRecordData | None:
    time = log_time(
        as_int(get(record, "timeUnixNano", "time_unix_nano"), "log.timeUnixNano"),
        as_int(get(record, "observedTimeUnixNano", "observed_time_unix_nano"), "log.observed"),
        bounds,
    )
    if time is None:
        return None
    body = any_value(record.get("body"), "log.body") if record.get("body") is not None else None
    return LogRecordData(
        time_unix_nano=time,
        service=service_of(resource)[0],
        severity_text=as_str(get(record, "severityText", "severity_text"), "log.severityText"),
        severity_number=severity_number(
            as_enum(get(record, "severityNumber", "severity_number"), _SEVERITY_BY_NAME, "severity")
        ),
        body=log_body_text(body),
        trace_id=as_id(get(record, "traceId", "trace_id"), 16, "log.traceId"),
        span_id=as_id(get(record, "spanId", "span_id"), 8, "log.spanId"),
        attributes=_kept_attributes(record, "log.attributes"),
        resource=resource,
    )


def response(signal: str, decoded: Decoded) -> bytes:
    """The Export*ServiceResponse in JSON (int64 counts as strings, per proto3 JSON)."""
    if not decoded.rejected:
        return b"{}"
    field = "rejectedSpans" if signal == "traces" else "rejectedLogRecords"
    partial = {field: str(decoded.rejected), "errorMessage": decoded.reason}
    return json.dumps({"partialSuccess": partial}).encode()
