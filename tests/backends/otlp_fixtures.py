"""Encoders for the answers Tempo and Jaeger give, written from their API documentation.

No Tempo or Jaeger server can run on these machines, so the tests serve these documents from a
real HTTP server on loopback. The encoders deliberately use the variants the backends are known
to emit: Tempo v1 (``{"batches": ...}``) with base64 ids, enum names and 64-bit ints as strings;
Tempo v2 (``{"trace": {"resourceSpans": ...}}``) and Jaeger api_v3 (``{"result": ...}``) with hex
ids and integer enums.
"""

from __future__ import annotations

import base64
from typing import Any

from tracekit.records import SpanRecord

KIND_NUMBERS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS_NUMBERS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def any_value(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # OTLP/JSON: 64-bit ints are strings
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def encode_id(hex_id: str, style: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode() if style == "base64" else hex_id


def otlp_span(span: SpanRecord, style: str) -> dict[str, Any]:
    named = style == "base64"  # Tempo v1 style also uses enum names
    document: dict[str, Any] = {
        "traceId": encode_id(span.trace_id, style),
        "spanId": encode_id(span.span_id, style),
        "name": span.name,
        "kind": f"SPAN_KIND_{span.kind}" if named else KIND_NUMBERS[span.kind],
        "startTimeUnixNano": str(span.start_unix_nano),
        "endTimeUnixNano": str(span.end_unix_nano),
        "attributes": key_values(span.attributes),
        "status": {"code": f"STATUS_CODE_{span.status}" if named else STATUS_NUMBERS[span.status]},
    }
    if span.status_message:
        document["status"]["message"] = span.status_message
    if span.parent_span_id:
        document["parentSpanId"] = encode_id(span.parent_span_id, style)
    if span.links:
        document["links"] = [
            {"traceId": encode_id(ln.trace_id, style), "spanId": encode_id(ln.span_id, style)}
            for ln in span.links
        ]
    return document


def resource_spans(spans: list[SpanRecord], style: str) -> list[dict[str, Any]]:
    by_service: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span)
    return [
        {
            "resource": {"attributes": key_values({"service.name": service})},
            "scopeSpans": [
                {"scope": {"name": "tracekit"}, "spans": [otlp_span(s, style) for s in group]}
            ],
        }
        for service, group in by_service.items()
    ]


def tempo_v1(spans: list[SpanRecord]) -> dict[str, Any]:
    return {"batches": resource_spans(spans, "base64")}


def tempo_v2(spans: list[SpanRecord]) -> dict[str, Any]:
    return {"trace": {"resourceSpans": resource_spans(spans, "hex")}}


def jaeger_v3(spans: list[SpanRecord]) -> dict[str, Any]:
    return {"result": {"resourceSpans": resource_spans(spans, "hex")}}


def tempo_search_hit(spans: list[SpanRecord]) -> dict[str, Any]:
    root = min(spans, key=lambda s: (s.parent_span_id is not None, s.start_unix_nano))
    end = max(s.end_unix_nano for s in spans)
    cid = next((s.correlation_id for s in spans if s.correlation_id), None)
    matched = [{"spanID": s.span_id, "startTimeUnixNano": str(s.start_unix_nano),
                "durationNanos": str(s.end_unix_nano - s.start_unix_nano),
                "attributes": key_values({"correlation.id": cid} if cid else {})}
               for s in spans[:3]]  # fmt: skip
    return {
        "traceID": root.trace_id.lstrip("0"),  # Tempo drops leading zeros here
        "rootServiceName": root.service,
        "rootTraceName": root.name,
        "startTimeUnixNano": str(root.start_unix_nano),
        "durationMs": (end - root.start_unix_nano) // 1_000_000,
        "spanSets": [{"spans": matched, "matched": len(spans)}],
    }
