"""OTLP/protobuf requests -> records, using opentelemetry-proto's generated classes."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

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
    status_name,
)
from tracekit.receiver._lazy_proto import LazyMetricsRequest, TolerantLogsRequest
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

BAD_RESOURCE = "resource is not a valid OTLP Resource (a string that is not UTF-8?)"
BAD_LOG_RECORD = "log record is not a valid OTLP LogRecord (a string that is not UTF-8?)"
# protobuf's parsers (upb, and the pure-Python one) stop at 100 messages within each other
NESTED_TOO_DEEP = "nested too deep (over 100 messages within each other)"


class NestedTooDeep(MalformedRequest):
    """A message nests deeper than protobuf parses (values of arrays or lists within each
    other): told as such, not as the string that is not UTF-8 a parse error most often is."""


def parse(message: Any, body: bytes | bytearray) -> Any:
    """Parse ``body`` into ``message``; any protobuf error becomes ``MalformedRequest``.

    Through a memoryview (no copy): protobuf before 5.28 parses no bytearray, the type an
    HTTP body is read into."""
    try:
        message.ParseFromString(memoryview(body))
    except (DecodeError, RecursionError, ValueError) as error:
        if _too_deep(error):
            raise NestedTooDeep(f"body is {NESTED_TOO_DEEP}") from error
        raise MalformedRequest("body is not a valid OTLP protobuf message") from error
    return message


def _too_deep(error: Exception) -> bool:
    # upb says "Exceeded upb_DecodeOptions_MaxDepth", the pure-Python parser "too many levels
    # of nesting"; neither has an exception of its own
    text = str(error)
    return isinstance(error, RecursionError) or "MaxDepth" in text or "nesting" in text


def refusal(error: MalformedRequest, what: str, otherwise: str) -> str:
    """Why ``what`` (``"span"``) did not parse: nested too deep, else ``otherwise``."""
    return f"{what} is {NESTED_TOO_DEEP}" if isinstance(error, NestedTooDeep) else otherwise


def any_value(value: Any, depth: int = 0) -> AttributeValue:
    """An OTLP AnyValue as a JSON-compatible value (bytes become hex)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value" or kind == "bool_value" or kind == "double_value":
        return getattr(value, kind)  # type: ignore[no-any-return]
    if kind is None:
        return None
    if depth >= MAX_VALUE_DEPTH:
        raise MalformedRequest(f"attribute value nested deeper than {MAX_VALUE_DEPTH}")
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return bytes(value.bytes_value).hex()


def attributes(key_values: Any) -> Attributes:
    """A repeated KeyValue as a dict (a repeated key keeps its last value)."""
    return {kv.key: any_value(kv.value) for kv in key_values}


def span_count(request: Any) -> int:
    """Spans in a parsed ExportTraceServiceRequest (or its lazy view)."""
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def decode_traces(body: bytes, admit: Admit = admit_any) -> Decoded:
    """Spans of an ExportTraceServiceRequest."""
    request = parse(ExportTraceServiceRequest(), body)
    admit(span_count(request))
    out = Decoded()
    bounds = time_bounds()
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service, version = service_of(resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                with out.refusing_alone():
                    out.add_span(span_record(span, service, version, resource, scope), bounds)
    return out


def span_record(
    span: Any,
    service: str,
    version: str | None,
    resource: Attributes,
    scope: str | None,
    cut: tuple[int, int, int] = (0, 0, 0),
) -> SpanRecord | None:
    """One OTLP Span as a record (None when its trace or span id is empty or all zero): its
    first ``MAX_SPAN_ELEMENTS`` attributes and events, its first ``MAX_SPAN_LINKS`` links;
    ``cut``: how many of each were left out of ``span`` already (see ``_protobuf_spans``)."""
    trace_id = check_id(span.trace_id, 16, "trace_id")
    span_id = check_id(span.span_id, 8, "span_id")
    parent = check_id(span.parent_span_id, 8, "parent_span_id")
    if trace_id is None or span_id is None:
        return None
    attributes_kept = _kept_attributes(span, cut[0])
    for key, field, found, earlier, bound in (
        (DROPPED_EVENTS, "dropped_events_count", span.events, cut[1], MAX_SPAN_ELEMENTS),
        (DROPPED_LINKS, "dropped_links_count", span.links, cut[2], MAX_SPAN_LINKS),
    ):
        left_out = earlier + len(found) - bound
        if left_out > 0:
            attributes_kept[key] = getattr(span, field) + left_out
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service=service,
        name=span.name,
        kind=kind_name(span.kind),
        start_unix_nano=span.start_time_unix_nano,
        end_unix_nano=span.end_time_unix_nano,
        status=status_name(span.status.code),
        status_message=span.status.message,
        attributes=attributes_kept,
        links=_links(span.links[:MAX_SPAN_LINKS]),
        events=[
            SpanEvent(e.name, e.time_unix_nano, _kept_attributes(e))
            for e in span.events[:MAX_SPAN_ELEMENTS]
        ],
        resource=resource,
        service_version=version,
        scope=scope,
    )


def _kept_attributes(message: Any, cut: int = 0) -> Attributes:
    """The first ``MAX_SPAN_ELEMENTS`` attributes of a span, event, link or log record, and how
    many more it had when there were more (``cut``: left out of it already)."""
    found = message.attributes
    left_out = cut + len(found) - MAX_SPAN_ELEMENTS
    if left_out <= 0:
        return attributes(found)
    kept = attributes(found[:MAX_SPAN_ELEMENTS])
    kept[DROPPED_ATTRIBUTES] = message.dropped_attributes_count + left_out
    return kept


def _links(links: Any) -> list[SpanLink]:
    """The links but those to an empty context (an empty or all-zero trace or span id).

    SDKs record such a link when it carries attributes (the OpenTelemetry specification says
    they SHOULD), so it is no error; but it names no target, and a stored all-zero id would be
    followed as a trace. The link goes, its span stays.
    """
    found = [_link(link) for link in links]
    return [link for link in found if link is not None]


def _link(link: Any) -> SpanLink | None:
    trace_id = check_id(link.trace_id, 16, "link trace_id")
    span_id = check_id(link.span_id, 8, "link span_id")
    if trace_id is None or span_id is None:
        return None
    return SpanLink(trace_id, span_id, _kept_attributes(link))


def decode_logs(body: bytes, admit: Admit = admit_any) -> Decoded:
    """Log records of an ExportLogsServiceRequest."""
    try:
        request = parse(ExportLogsServiceRequest(), body)
    except MalformedRequest:  # perhaps only a string that is not UTF-8: see _logs_one_by_one
        return _logs_one_by_one(parse(TolerantLogsRequest(), body), admit)
    admit(sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs))
    out = Decoded()
    bounds = time_bounds()
    for resource_logs in request.resource_logs:
        records = [record for sl in resource_logs.scope_logs for record in sl.log_records]
        try:
            resource = attributes(resource_logs.resource.attributes)
        except MalformedRequest as error:  # nested too deep: its records alone are refused
            out.refuse(str(error), len(records))
            continue
        service, _ = service_of(resource)
        for record in records:
            with out.refusing_alone():
                out.add_log(_log(record, service, resource, bounds))
    return out


def _logs_one_by_one(request: Any, admit: Admit) -> Decoded:
    """Each resource and log record parsed on its own: one that does not parse (a string that
    is not UTF-8, which C++ and Go SDKs can send) is rejected alone, the others are stored."""
    admit(sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs))
    out = Decoded()
    bounds = time_bounds()
    for resource_logs in request.resource_logs:
        records = [raw for scope_logs in resource_logs.scope_logs for raw in scope_logs.log_records]
        try:
            resource = attributes(parse(Resource(), resource_logs.resource).attributes)
        except MalformedRequest as error:
            out.refuse(refusal(error, "resource", BAD_RESOURCE), len(records))
            continue
        service, _ = service_of(resource)
        for raw in records:
            try:
                record = parse(LogRecord(), raw)
            except MalformedRequest as error:
                out.refuse(refusal(error, "log record", BAD_LOG_RECORD))
                continue
            with out.refusing_alone():
                out.add_log(_log(record, service, resource, bounds))
    return out


def _log(
    record: Any, service: str, resource: Attributes, bounds: tuple[int, int]
) -> LogRecordData | None:
    time = log_time(record.time_unix_nano, record.observed_time_unix_nano, bounds)
    if time is None:
        return None
    body = any_value(record.body) if record.HasField("body") else None
    return LogRecordData(
        time_unix_nano=time,
        service=service,
        severity_text=record.severity_text,
        severity_number=record.severity_number,
        body=log_body_text(body),
        trace_id=check_id(record.trace_id, 16, "log trace_id"),
        span_id=check_id(record.span_id, 8, "log span_id"),
        attributes=_kept_attributes(record),
        resource=resource,
    )


def decode_metrics(body: bytes, admit: Admit = admit_any) -> Decoded:
    """Metrics are counted and acknowledged, never stored (they belong in Prometheus): their
    data points are not even parsed."""
    request = parse(LazyMetricsRequest(), body)
    out = Decoded()
    out.total = sum(
        len(scope.metrics) for rm in request.resource_metrics for scope in rm.scope_metrics
    )
    return out


def response(signal: str, decoded: Decoded) -> bytes:
    """The Export*ServiceResponse, with partial success filled in when records were refused."""
    if signal == "traces":
        message: Any = ExportTraceServiceResponse()
        if decoded.rejected:
            message.partial_success.rejected_spans = decoded.rejected
    elif signal == "logs":
        message = ExportLogsServiceResponse()
        if decoded.rejected:
            message.partial_success.rejected_log_records = decoded.rejected
    else:
        message = ExportMetricsServiceResponse()
    if decoded.rejected:
        message.partial_success.error_message = decoded.reason
    return bytes(message.SerializeToString())
