"""Span records encoded the way Tempo and Jaeger really answer (learnt from their own code and
golden bodies; no Tempo or Jaeger can run on these machines).

- Tempo (gogo ``jsonpb.Marshaler{}``): ids base64, enums by name (``SPAN_KIND_SERVER``,
  ``STATUS_CODE_ERROR``), 64-bit numbers as strings, zero values left out (an unset status is
  ``{}``; an unspecified kind has no ``kind``). ``/api/v2/traces/<id>`` wraps the trace as
  ``{"trace": {"resourceSpans"}, "metrics": {...}}`` plus ``"status": "PARTIAL"`` and a
  ``"message"`` when Tempo cut it at its size limit; ``/api/traces/<id>`` answers ``{"batches"}``.
- Jaeger api_v3 (pdata's JSON marshaler): ids lower-case hex, enums as numbers, 64-bit numbers
  as strings, zero values left out, the traces under ``{"result": {"resourceSpans"}}``.
- Tempo's search hit (``TraceSearchMetadata``): ``traceID`` hex without leading zeros, up to three
  matched spans per span set with ``matched``, both ``spanSet`` and ``spanSets``, and
  ``serviceStats`` (Tempo >= 2.5) counting the whole trace.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from tracekit.records import SpanRecord

KIND_NUMBERS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS_NUMBERS = {"UNSET": 0, "OK": 1, "ERROR": 2}


@dataclass(frozen=True)
class Encoding:
    """How one server writes ids and enums."""

    base64_ids: bool
    enum_names: bool

    def id(self, hex_id: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_id)).decode() if self.base64_ids else hex_id

    def kind(self, kind: str) -> str | int:
        return f"SPAN_KIND_{kind}" if self.enum_names else KIND_NUMBERS[kind]

    def status(self, status: str, message: str) -> dict[str, Any]:
        encoded: dict[str, Any] = {}
        if status != "UNSET":
            encoded["code"] = f"STATUS_CODE_{status}" if self.enum_names else STATUS_NUMBERS[status]
        if message:
            encoded["message"] = message
        return encoded


TEMPO = Encoding(base64_ids=True, enum_names=True)
JAEGER = Encoding(base64_ids=False, enum_names=False)


def any_value(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 as a string, as both marshalers write it
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": str(value)}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def otlp_span(span: SpanRecord, encoding: Encoding) -> dict[str, Any]:
    document: dict[str, Any] = {
        "traceId": encoding.id(span.trace_id),
        "spanId": encoding.id(span.span_id),
        "name": span.name,
        "kind": encoding.kind(span.kind),
        "startTimeUnixNano": str(span.start_unix_nano),
        "endTimeUnixNano": str(span.end_unix_nano),
        "status": encoding.status(span.status, span.status_message),
    }
    if span.parent_span_id:
        document["parentSpanId"] = encoding.id(span.parent_span_id)
    if span.attributes:
        document["attributes"] = key_values(span.attributes)
    if span.events:
        document["events"] = [_event(e.name, e.time_unix_nano, e.attributes) for e in span.events]
    if span.links:
        document["links"] = [_link(ln, encoding) for ln in span.links]
    return document


def _link(link: Any, encoding: Any) -> dict[str, Any]:
    document = {"traceId": encoding.id(link.trace_id), "spanId": encoding.id(link.span_id)}
    if link.attributes:
        document["attributes"] = key_values(link.attributes)
    return document


def _event(name: str, time_unix_nano: int, attributes: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"timeUnixNano": str(time_unix_nano)}
    if name:
        event["name"] = name
    if attributes:
        event["attributes"] = key_values(attributes)
    return event


def resource_spans(spans: list[SpanRecord], encoding: Encoding) -> list[dict[str, Any]]:
    """One resource spans per resource (``service.version``, ``host.name``... kept)."""
    by_resource: dict[str, list[SpanRecord]] = {}
    for span in spans:
        resource = {**span.resource, "service.name": span.service}
        if span.service_version is not None:
            resource["service.version"] = span.service_version
        by_resource.setdefault(json.dumps(resource, sort_keys=True), []).append(span)
    return [
        {
            "resource": {"attributes": key_values(json.loads(resource))},
            "scopeSpans": [
                {"scope": {"name": "tracekit"}, "spans": [otlp_span(s, encoding) for s in group]}
            ],
        }
        for resource, group in by_resource.items()
    ]


def tempo_v2(
    spans: list[SpanRecord], *, partial_of_bytes: int | None = None, pruned_on_read: bool = False
) -> dict[str, Any]:
    """``/api/v2/traces/<id>``; ``partial_of_bytes``: Tempo's size limit cut the trace;
    ``pruned_on_read``: Tempo's span pruning collapsed similar spans as it served it."""
    document: dict[str, Any] = {
        "trace": {"resourceSpans": resource_spans(spans, TEMPO)},
        "metrics": {"inspectedBytes": str(300 * len(spans))},
    }
    if partial_of_bytes is not None:
        document["status"] = "PARTIAL"
        document["message"] = (
            f"Trace exceeds maximum size of {partial_of_bytes} bytes, a partial trace is returned"
        )
    if pruned_on_read:  # combiner/trace_by_id_v2.go's words
        document["status"] = "PARTIAL"
        document["message"] = (
            "Trace was pruned by Tempo while serving this request; the original spans remain in "
            "storage and can be retrieved by querying again with span pruning disabled"
        )
    return document


def tempo_v1(spans: list[SpanRecord]) -> dict[str, Any]:
    return {"batches": resource_spans(spans, TEMPO)}


def jaeger_v3(spans: list[SpanRecord]) -> dict[str, Any]:
    return {"result": {"resourceSpans": resource_spans(spans, JAEGER)}}


def tempo_search_hit(
    trace: list[SpanRecord],
    matched: list[SpanRecord],
    *,
    service_stats: bool = True,
    selected: tuple[str, ...] = (),
    grouped: bool = False,
) -> dict[str, Any]:
    """One ``TraceSearchMetadata``: the trace's root and size, the spans the query matched
    (``grouped``: a span set per correlation ID, as ``by(span.correlation.id)`` answers)."""
    root = next((s for s in trace if not s.parent_span_id), None)
    start = min(s.start_unix_nano for s in trace)
    groups: dict[str | None, list[SpanRecord]] = {}
    for span in matched:
        groups.setdefault(span.correlation_id if grouped else None, []).append(span)
    span_sets = [_span_set(spans, selected) for spans in groups.values()]
    if grouped:  # Tempo's value for the spans that carry no ID is the text "nil"
        for span_set, value in zip(span_sets, groups, strict=True):
            span_set["attributes"] = key_values({"by(span.correlation.id)": value or "nil"})
    hit: dict[str, Any] = {
        "traceID": trace[0].trace_id.lstrip("0"),
        "rootServiceName": root.service if root else "<root span not yet received>",
        "startTimeUnixNano": str(root.start_unix_nano if root else start),
        "spanSet": span_sets[0],
        "spanSets": span_sets,
    }
    if root:
        hit["rootTraceName"] = root.name
    if duration_ms := (max(s.end_unix_nano for s in trace) - start) // 1_000_000:
        hit["durationMs"] = duration_ms
    if service_stats:
        hit["serviceStats"] = _service_stats(trace)
    return hit


def _span_set(matched: list[SpanRecord], selected: tuple[str, ...]) -> dict[str, Any]:
    return {
        "spans": [_hit_span(s, selected) for s in matched[:3]],  # the default spss is 3
        "matched": len(matched),
    }


def _hit_span(span: SpanRecord, selected: tuple[str, ...]) -> dict[str, Any]:
    attributes = {k: span.attributes[k] for k in selected if k in span.attributes}
    document: dict[str, Any] = {
        "spanID": span.span_id,
        "startTimeUnixNano": str(span.start_unix_nano),
        "durationNanos": str(span.end_unix_nano - span.start_unix_nano),
    }
    if attributes:
        document["attributes"] = key_values(attributes)
    return document


def _service_stats(trace: list[SpanRecord]) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    for span in trace:
        entry = stats.setdefault(span.service, {"spanCount": 0})
        entry["spanCount"] += 1
        if span.status == "ERROR":
            entry["errorCount"] = entry.get("errorCount", 0) + 1  # a zero count is left out
    return stats


def recent(spans: list[SpanRecord], seconds_ago: float = 600) -> list[SpanRecord]:
    """The same spans, moved so the earliest starts ``seconds_ago`` before now (a backend
    searches recent traces; the topologies are dated 2023)."""
    shift = int((time.time() - seconds_ago) * 1e9) - min(s.start_unix_nano for s in spans)
    return [
        dataclasses.replace(
            s, start_unix_nano=s.start_unix_nano + shift, end_unix_nano=s.end_unix_nano + shift
        )
        for s in spans
    ]
