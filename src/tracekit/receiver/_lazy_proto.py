"""A wire-compatible view of ExportTraceServiceRequest whose repeating parts stay bytes.

The receiver's hot path reads spans through these message classes instead of
opentelemetry-proto's: a length-delimited field parses the same whether it is declared as a
message or as ``bytes``, so attributes, status, resource and scope arrive as the exact bytes of
their KeyValue/Status/Resource/InstrumentationScope messages. Those bytes repeat from span to span
and from request to request (keys, methods, routes, the resource), so they key caches, and only
a never-seen attribute is parsed into a KeyValue (which also validates it).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tracekit.lazy_otlp"

# (message, [(number, name, type, repeated, message type)]); numbers follow trace.proto
_MESSAGES: tuple[tuple[str, list[tuple[int, str, int, bool, str]]], ...] = (
    ("Request", [(1, "resource_spans", _F.TYPE_MESSAGE, True, "ResourceSpans")]),
    (
        "ResourceSpans",
        [
            (1, "resource", _F.TYPE_BYTES, False, ""),
            (2, "scope_spans", _F.TYPE_MESSAGE, True, "ScopeSpans"),
        ],
    ),
    (
        "ScopeSpans",
        [(1, "scope", _F.TYPE_BYTES, False, ""), (2, "spans", _F.TYPE_MESSAGE, True, "Span")],
    ),
    (
        "Span",
        [
            (1, "trace_id", _F.TYPE_BYTES, False, ""),
            (2, "span_id", _F.TYPE_BYTES, False, ""),
            (4, "parent_span_id", _F.TYPE_BYTES, False, ""),
            (5, "name", _F.TYPE_STRING, False, ""),  # string: parsing checks UTF-8 (_file)
            (6, "kind", _F.TYPE_INT32, False, ""),  # an enum on the wire is an int32 varint
            (7, "start_time_unix_nano", _F.TYPE_FIXED64, False, ""),
            (8, "end_time_unix_nano", _F.TYPE_FIXED64, False, ""),
            (9, "attributes", _F.TYPE_BYTES, True, ""),
            (11, "events", _F.TYPE_BYTES, True, ""),
            (13, "links", _F.TYPE_BYTES, True, ""),
            (15, "status", _F.TYPE_BYTES, False, ""),
        ],
    ),
)


# ExportLogsServiceRequest with each resource and log record left as its bytes (numbers follow
# logs.proto): what a request is read as when one of its strings is not UTF-8
_LOG_MESSAGES: tuple[tuple[str, list[tuple[int, str, int, bool, str]]], ...] = (
    ("Request", [(1, "resource_logs", _F.TYPE_MESSAGE, True, "ResourceLogs")]),
    (
        "ResourceLogs",
        [
            (1, "resource", _F.TYPE_BYTES, False, ""),
            (2, "scope_logs", _F.TYPE_MESSAGE, True, "ScopeLogs"),
        ],
    ),
    ("ScopeLogs", [(2, "log_records", _F.TYPE_BYTES, True, "")]),
)

# ExportMetricsServiceRequest down to each metric, left as its bytes: metrics are counted and
# dropped, so their data points are never parsed
_METRIC_MESSAGES: tuple[tuple[str, list[tuple[int, str, int, bool, str]]], ...] = (
    ("Request", [(1, "resource_metrics", _F.TYPE_MESSAGE, True, "ResourceMetrics")]),
    ("ResourceMetrics", [(2, "scope_metrics", _F.TYPE_MESSAGE, True, "ScopeMetrics")]),
    ("ScopeMetrics", [(2, "metrics", _F.TYPE_BYTES, True, "")]),
)


def _file(
    tolerant: bool, messages: tuple[tuple[str, list[tuple[int, str, int, bool, str]]], ...]
) -> descriptor_pb2.FileDescriptorProto:
    """The messages; ``tolerant``: with the span's name as bytes, so that a name that is not
    UTF-8 fails only its own span (parsed again on its own), not the whole request."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="tracekit_lazy_otlp.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in messages:
        message = proto.message_type.add(name=name)
        for number, field_name, kind, repeated, type_name in fields:
            if tolerant and kind == _F.TYPE_STRING:
                kind = _F.TYPE_BYTES
            field = message.field.add(name=field_name, number=number, type=kind)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    return proto


def _request_class(*, tolerant: bool = False, messages: Any = _MESSAGES) -> Any:
    pool = descriptor_pool.DescriptorPool()  # private pool: never clashes with the real protos
    pool.Add(_file(tolerant, messages))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Request"))


LazyTraceRequest: Any = _request_class()
TolerantTraceRequest: Any = _request_class(tolerant=True)
TolerantLogsRequest: Any = _request_class(messages=_LOG_MESSAGES)
LazyMetricsRequest: Any = _request_class(messages=_METRIC_MESSAGES)


def string_attribute(raw: bytes) -> tuple[str, str] | None:
    """Key and value of a KeyValue's bytes when its value is a short string, read off the wire.

    The common shape of an attribute, ``0A klen key 12 alen 0A slen value`` with every length
    under 128 (one varint byte each), costs a few byte reads here against a message parse.
    Anything else, including invalid UTF-8, gives None: the caller then parses a ``KeyValue``.
    """
    size = len(raw)
    if size < 6 or raw[0] != 0x0A:
        return None
    key_end = 2 + raw[1]
    if raw[1] > 127 or size < key_end + 4 or raw[key_end] != 0x12 or raw[key_end + 2] != 0x0A:
        return None
    value_size = raw[key_end + 3]
    if value_size > 127 or raw[key_end + 1] != value_size + 2 or size != key_end + 4 + value_size:
        return None
    try:
        return raw[2:key_end].decode(), raw[key_end + 4 :].decode()
    except UnicodeDecodeError:
        return None
