"""Bad records never sink good ones, in all four decoders (JSON and protobuf, spans and logs).

A record dated before 2000 or more than a day ahead, or timestamps whose difference would
overflow, is refused in ``partial_success`` (a count and a message); the rest of the request is
stored and the answer is 200. A span that ends before it starts is stored with no duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.store import Store

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
NOW = time.time_ns()
YEAR = 365 * 86_400 * 10**9
MAX_U64, MIN_I64 = 2**64 - 1, -(2**63)
TRACE = "0af7651916cd43dd8448eb211c80319c"
# (start, end) of spans that must be refused; protobuf times are unsigned, so no negatives there
BAD_SPANS = [
    (MAX_U64, MAX_U64), (NOW + 100 * YEAR, NOW + 100 * YEAR), (NOW - 1, MAX_U64),
    (631_152_000 * 10**9, NOW), (0, NOW), (NOW, MAX_U64), (1, MAX_U64),
]  # fmt: skip
BAD_JSON_SPANS = [*BAD_SPANS, (MIN_I64, NOW), (MIN_I64, MAX_U64)]
BAD_LOG_TIMES = [MAX_U64, NOW + 100 * YEAR, NOW + 2 * 86_400 * 10**9, 631_152_000 * 10**9]


def _json_spans(times: list[tuple[int, int]]) -> bytes:
    spans = [
        {"traceId": TRACE, "spanId": f"{n + 1:016x}", "name": f"s{n}",
         "startTimeUnixNano": str(start), "endTimeUnixNano": end}
        for n, (start, end) in enumerate(times)
    ]  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def _protobuf_spans(times: list[tuple[int, int]]) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, (start, end) in enumerate(times):
        span = scope.spans.add(name=f"s{n}", start_time_unix_nano=start, end_time_unix_nano=end)
        span.trace_id, span.span_id = bytes.fromhex(TRACE), (n + 1).to_bytes(8, "big")
    return request.SerializeToString()


def _json_logs(times: list[int]) -> bytes:
    records = [{"timeUnixNano": str(t), "body": {"stringValue": f"l{n}"}, "traceId": TRACE}
               for n, t in enumerate(times)]  # fmt: skip
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()


def _protobuf_logs(times: list[int]) -> bytes:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for n, t in enumerate(times):
        record = scope.log_records.add(time_unix_nano=t)
        record.body.string_value, record.trace_id = f"l{n}", bytes.fromhex(TRACE)
    return request.SerializeToString()


def _partial(reply_body: bytes, content_type: str, signal: str) -> tuple[int, str]:
    if content_type == "application/json":
        partial = json.loads(reply_body).get("partialSuccess", {})  # {}: nothing refused
        count = partial.get("rejectedSpans" if signal == "traces" else "rejectedLogRecords", 0)
        return int(count), partial.get("errorMessage", "")
    if signal == "traces":
        traces = ExportTraceServiceResponse.FromString(reply_body).partial_success
        return traces.rejected_spans, traces.error_message
    logs = ExportLogsServiceResponse.FromString(reply_body).partial_success
    return logs.rejected_log_records, logs.error_message


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_bad_spans_are_refused_and_good_ones_stored(
    encoding: str, receiver: Receiver, reader: Store
) -> None:
    bad = BAD_JSON_SPANS if encoding == "json" else BAD_SPANS
    times = [(NOW, NOW + 5), *bad, (NOW - 10, NOW)]
    content_type = f"application/{'json' if encoding == 'json' else 'x-protobuf'}"
    body = (_json_spans if encoding == "json" else _protobuf_spans)(times)
    reply = post(receiver, "/v1/traces", body, {"Content-Type": content_type})
    assert reply.status == 200
    count, message = _partial(reply.body, content_type, "traces")
    assert count == len(bad) and "before 2000 or more than a day ahead" in message
    stored = sorted(s.name for s in reader.spans_by_trace_ids([TRACE]))
    assert stored == ["s0", f"s{len(times) - 1}"]
    assert reader.recent_requests(since_unix_nano=NOW - 15 * 60 * 10**9)  # search --since 15m


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_bad_log_records_are_refused_and_good_ones_stored(
    encoding: str, receiver: Receiver, reader: Store
) -> None:
    times = [NOW, *BAD_LOG_TIMES, NOW - 1]
    content_type = f"application/{'json' if encoding == 'json' else 'x-protobuf'}"
    body = (_json_logs if encoding == "json" else _protobuf_logs)(times)
    reply = post(receiver, "/v1/logs", body, {"Content-Type": content_type})
    assert reply.status == 200
    count, message = _partial(reply.body, content_type, "logs")
    assert count == len(BAD_LOG_TIMES) and "log time before 2000" in message
    assert sorted(r.body for r in reader.logs_by_trace_ids([TRACE])) == ["l0", f"l{len(times) - 1}"]


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_a_span_whose_clock_stepped_back_is_stored_with_no_duration(
    encoding: str, receiver: Receiver, reader: Store
) -> None:
    """A wall clock stepped back mid-span: the SDK sent an end before the start. Before, the
    span was refused ('span ends before it starts'), and its children lost their parent."""
    content_type = f"application/{'json' if encoding == 'json' else 'x-protobuf'}"
    body = (_json_spans if encoding == "json" else _protobuf_spans)([(NOW, NOW - 20_000_000)])
    reply = post(receiver, "/v1/traces", body, {"Content-Type": content_type})
    assert reply.status == 200
    assert _partial(reply.body, content_type, "traces") == (0, "")
    (span,) = reader.spans_by_trace_ids([TRACE])
    assert (span.start_unix_nano, span.end_unix_nano) == (NOW, NOW)
    assert span.attributes["tracekit.clock_stepped_back_ns"] == 20_000_000


def test_a_log_without_any_time_is_stamped_on_arrival(receiver: Receiver, reader: Store) -> None:
    before = time.time_ns()
    assert post(receiver, "/v1/logs", _protobuf_logs([0])).status == 200
    (record,) = reader.logs_by_trace_ids([TRACE])
    assert before <= record.time_unix_nano <= time.time_ns()


def test_every_record_refused_is_400(receiver: Receiver, reader: Store) -> None:
    reply = post(receiver, "/v1/traces", _protobuf_spans([(MAX_U64, MAX_U64)]))
    assert reply.status == 400
    assert reader.count_spans() == 0


# Every integer field of spans and logs at the edge of what its wire type can carry: 64-bit
# times and attribute values, 32-bit counts and flags, enums far outside their range. Each
# request holds a good record beside the odd one, and both must be stored and shown.
CORRELATION = {"key": "correlation.id", "value": {"stringValue": "req-extremes"}}
INTS_JSON = [
    {"key": "big", "value": {"intValue": str(MAX_U64)}},
    {"key": "small", "value": {"intValue": str(MIN_I64)}},
    {"key": "both", "value": {"arrayValue": {"values": [{"intValue": MAX_U64},
                                                        {"intValue": MIN_I64}]}}},
]  # fmt: skip


def _json_extremes() -> tuple[bytes, bytes]:
    odd = {
        "traceId": TRACE,
        "spanId": "00f067aa0ba902b7",
        "name": "odd",
        "kind": str(MAX_U64),
        "startTimeUnixNano": str(NOW),
        "endTimeUnixNano": str(NOW + 5),
        "attributes": [*INTS_JSON, CORRELATION],
        "status": {"code": str(MAX_U64)},
        "droppedAttributesCount": str(MAX_U64),
        "droppedEventsCount": str(MAX_U64),
        "droppedLinksCount": str(MAX_U64),
        "flags": str(MAX_U64),
        "events": [
            {
                "name": "late",
                "timeUnixNano": str(MAX_U64),
                "attributes": INTS_JSON,
                "droppedAttributesCount": str(MAX_U64),
            },
            {"name": "early", "timeUnixNano": str(MIN_I64)},
        ],
        "links": [
            {
                "traceId": TRACE,
                "spanId": "00f067aa0ba902b8",
                "attributes": INTS_JSON,
                "flags": str(MAX_U64),
                "droppedAttributesCount": str(MAX_U64),
            }
        ],
    }
    good = {
        "traceId": TRACE,
        "spanId": "00f067aa0ba902b8",
        "name": "good",
        "startTimeUnixNano": str(NOW),
        "endTimeUnixNano": str(NOW + 5),
        "attributes": [CORRELATION],
    }
    logs = [
        {"timeUnixNano": str(NOW), "observedTimeUnixNano": str(MAX_U64), "traceId": TRACE,
         "severityNumber": str(MAX_U64), "body": {"stringValue": "odd"}, "attributes": INTS_JSON,
         "flags": str(MAX_U64), "droppedAttributesCount": str(MAX_U64)},
        {"timeUnixNano": str(NOW), "severityNumber": str(MIN_I64), "traceId": TRACE,
         "body": {"stringValue": "low"}},
        {"timeUnixNano": str(NOW), "severityNumber": 9, "body": {"stringValue": "good"},
         "traceId": TRACE},
    ]  # fmt: skip
    spans = {"resourceSpans": [{"scopeSpans": [{"spans": [odd, good]}]}]}
    resource = {"attributes": INTS_JSON}
    logs_request = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": logs}]}]}
    return json.dumps(spans).encode(), json.dumps(logs_request).encode()


def _protobuf_extremes() -> tuple[bytes, bytes]:
    spans = ExportTraceServiceRequest()
    scope = spans.resource_spans.add().scope_spans.add()
    odd = scope.spans.add(
        name="odd", kind=2**31 - 1, start_time_unix_nano=NOW, end_time_unix_nano=NOW + 5,
        dropped_attributes_count=2**32 - 1, dropped_events_count=2**32 - 1,
        dropped_links_count=2**32 - 1, flags=2**32 - 1,
    )  # fmt: skip
    odd.trace_id, odd.span_id, odd.status.code = bytes.fromhex(TRACE), b"\x01" * 8, 2**31 - 1
    odd.attributes.add(key="big").value.int_value = 2**63 - 1
    odd.attributes.add(key="small").value.int_value = MIN_I64
    odd.attributes.add(key="correlation.id").value.string_value = "req-extremes"
    event = odd.events.add(name="late", time_unix_nano=MAX_U64, dropped_attributes_count=2**32 - 1)
    event.attributes.add(key="small").value.int_value = MIN_I64
    link = odd.links.add(trace_id=bytes.fromhex(TRACE), span_id=b"\x02" * 8, flags=2**32 - 1)
    link.attributes.add(key="big").value.int_value = 2**63 - 1
    good = scope.spans.add(name="good", start_time_unix_nano=NOW, end_time_unix_nano=NOW + 5)
    good.trace_id, good.span_id = bytes.fromhex(TRACE), b"\x02" * 8
    good.attributes.add(key="correlation.id").value.string_value = "req-extremes"
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    for body, severity in (("odd", 2**31 - 1), ("low", -(2**31)), ("good", 9)):
        record = records.add(
            time_unix_nano=NOW, observed_time_unix_nano=MAX_U64, severity_number=severity,  # type: ignore[arg-type]
            flags=2**32 - 1, dropped_attributes_count=2**32 - 1, trace_id=bytes.fromhex(TRACE),
        )  # fmt: skip
        record.body.string_value = body
        record.attributes.add(key="small").value.int_value = MIN_I64
    return spans.SerializeToString(), logs.SerializeToString()


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_extreme_integers_in_every_field_never_sink_a_request(
    encoding: str, receiver: Receiver, reader: Store
) -> None:
    content_type = f"application/{'json' if encoding == 'json' else 'x-protobuf'}"
    spans, logs = (_json_extremes if encoding == "json" else _protobuf_extremes)()
    for path, body in (("/v1/traces", spans), ("/v1/logs", logs)):
        reply = post(receiver, path, body, {"Content-Type": content_type})
        assert (reply.status, reply.body) == (200, b"{}" if encoding == "json" else b"")
    stored = {s.name: s for s in reader.spans_by_trace_ids([TRACE])}
    assert sorted(stored) == ["good", "odd"]
    assert stored["odd"].attributes["small"] == MIN_I64 and stored["odd"].events[0].name == "late"
    severities = {r.body: r.severity_number for r in reader.logs_by_trace_ids([TRACE])}
    # A SeverityNumber is a 32-bit enum: beyond that (JSON only) it is 0, unspecified.
    expected = {"odd": 0, "low": 0} if encoding == "json" else {"odd": 2**31 - 1, "low": -(2**31)}
    assert severities == {**expected, "good": 9}
    shown = subprocess.run(
        [TRACEKIT, "trace", "req-extremes", "--store", str(reader.path), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    path = json.loads(shown.stdout)
    assert sorted(s["name"] for s in path["spans"]) == ["good", "odd"]
    assert sorted(log["body"] for log in path["logs"]) == ["good", "low", "odd"]


# A record whose ids are of the wrong length or not hex, or whose value cannot be read, is
# refused alone (partial success), like one dated out of range: the exporter does not retry a
# 400, so answering one would lose every good record sent with it.
def _odd_protobuf_spans() -> bytes:
    request = ExportTraceServiceRequest.FromString(_protobuf_spans([(NOW, NOW)] * 4))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = bytes.fromhex(TRACE)[:15]
    spans[2].links.add(trace_id=bytes.fromhex(TRACE), span_id=b"\x01\x02\x03")
    return request.SerializeToString()


def _odd_json_spans() -> bytes:
    document = json.loads(_json_spans([(NOW, NOW)] * 5))
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[1]["traceId"] = "not hex at all, not an id"
    spans[2]["parentSpanId"] = "0102"
    spans[3]["attributes"] = [{"key": "n", "value": {"intValue": "twelve"}}]
    return json.dumps(document).encode()


def _odd_protobuf_logs() -> bytes:
    request = ExportLogsServiceRequest.FromString(_protobuf_logs([NOW] * 3))
    request.resource_logs[0].scope_logs[0].log_records[1].span_id = b"\x01\x02"
    return request.SerializeToString()


def _odd_json_logs() -> bytes:
    document = json.loads(_json_logs([NOW] * 4))
    records = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records[1]["spanId"] = "zz" * 8
    records[2]["severityNumber"] = "SEVERITY_NUMBER_LOUD"
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("signal", "content_type", "body", "odd"),
    [
        ("traces", "application/x-protobuf", _odd_protobuf_spans(), 2),
        ("traces", "application/json", _odd_json_spans(), 3),
        ("logs", "application/x-protobuf", _odd_protobuf_logs(), 1),
        ("logs", "application/json", _odd_json_logs(), 2),
    ],
)
def test_a_record_with_an_id_or_value_that_cannot_be_read_is_refused_alone(
    signal: str, content_type: str, body: bytes, odd: int, receiver: Receiver, reader: Store
) -> None:
    reply = post(receiver, f"/v1/{signal}", body, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    count, message = _partial(reply.body, content_type, signal)
    assert count == odd and "must be" in message
    if signal == "traces":
        assert sorted(s.name for s in reader.spans_by_trace_ids([TRACE])) == ["s0", f"s{odd + 1}"]
    else:
        assert sorted(r.body for r in reader.logs_by_trace_ids([TRACE])) == ["l0", f"l{odd + 1}"]


@pytest.mark.parametrize(
    ("signal", "body", "keys"),
    [
        ("traces", _json_spans([(NOW, NOW)] * 3), ("resourceSpans", "scopeSpans", "spans")),
        ("logs", _json_logs([NOW] * 3), ("resourceLogs", "scopeLogs", "logRecords")),
    ],
)
def test_json_records_under_an_unreadable_resource_are_refused_and_others_stored(
    signal: str, body: bytes, keys: tuple[str, str, str], receiver: Receiver, reader: Store
) -> None:
    """As over protobuf (a resource holding a string that is not UTF-8): that resource's
    records are refused, the other resources' stored; a scope that cannot be read is left out."""
    resources, scopes, records = keys
    document = json.loads(body)
    (good,) = document[resources]
    bad = {"resource": {"attributes": [{"key": "n", "value": {"intValue": "twelve"}}]},
           scopes: [{records: good[scopes][0][records][:1]}]}  # fmt: skip
    good[scopes][0]["scope"] = {"name": 7}
    document[resources] = [bad, good]
    reply = post(receiver, f"/v1/{signal}", json.dumps(document).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
    assert reply.status == 200, reply.body
    count, message = _partial(reply.body, "application/json", signal)
    assert count == 1 and "resource.attributes must be" in message
    if signal == "traces":
        assert len(reader.spans_by_trace_ids([TRACE])) == 3
    else:
        assert len(reader.logs_by_trace_ids([TRACE])) == 3


def test_protobuf_logs_under_a_resource_nested_too_deep_are_refused_and_others_stored(
    receiver: Receiver, reader: Store
) -> None:
    """As spans under such a resource are: a 400 would lose the other resources' records."""
    request = ExportLogsServiceRequest.FromString(_protobuf_logs([NOW] * 2))
    deep = request.resource_logs.add()
    deep.scope_logs.add().log_records.add().CopyFrom(
        request.resource_logs[0].scope_logs[0].log_records[0]
    )
    value = deep.resource.attributes.add(key="deep").value
    for _ in range(40):
        value = value.array_value.values.add()
    value.string_value = "bottom"
    reply = post(receiver, "/v1/logs", request.SerializeToString())
    assert reply.status == 200, reply.body
    count, message = _partial(reply.body, "application/x-protobuf", "logs")
    assert count == 1 and "nested deeper than 32" in message
    assert sorted(r.body for r in reader.logs_by_trace_ids([TRACE])) == ["l0", "l1"]
