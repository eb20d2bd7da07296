"""OTLP/JSON written by hand to the spec, with its quirks; property tests for the JSON decoder."""

from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.receiver._decoded import MalformedRequest
from tracekit.receiver._json import decode_traces
from tracekit.records import SpanEvent, SpanLink, SpanRecord
from tracekit.store import Store
from tracekit.store._limits import EARLIEST_NS

PAYLOAD = base64.b64encode(b"\x01\xff").decode()
JSON = {"Content-Type": "application/json; charset=utf-8"}
NOW = time.time_ns()
WHEN = {"startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"}

# Spec quirks on purpose: upper-case hex ids, int64 as string and as number, integer enums,
# an enum by name, proto field names next to lowerCamelCase, unknown fields at every level.
HAND_WRITTEN = {
    "resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "service.version", "value": {"stringValue": "9.9"}},
        ], "droppedAttributesCount": 0, "futureField": {"x": 1}},
        "scopeSpans": [{
            "scope": {"name": "hand.written", "version": "1"},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "parent_span_id": "eee19b7ec3c1b173",
                "name": "POST /checkout",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "attributes": [
                    {"key": "http.response.status_code", "value": {"intValue": "201"}},
                    {"key": "retries", "value": {"intValue": 2}},
                    {"key": "ratio", "value": {"doubleValue": 0.25}},
                    {"key": "cached", "value": {"boolValue": False}},
                    {"key": "payload", "value": {"bytesValue": PAYLOAD}},
                    {"key": "tags", "value": {"arrayValue": {"values": [
                        {"stringValue": "a"}, {"intValue": "-3"}]}}},
                    {"key": "map", "value": {"kvlistValue": {"values": [
                        {"key": "k", "value": {"stringValue": "v"}}]}}},
                    {"key": "correlation.id", "value": {"stringValue": "json-corr-1"}},
                ],
                "events": [{"timeUnixNano": "1544712660500000000", "name": "retry",
                            "attributes": [{"key": "n", "value": {"intValue": "1"}}]}],
                "links": [{"traceId": "00000000000000000000000000000ABC",
                           "spanId": "0000000000000DEF", "attributes": []}],
                "status": {"code": "STATUS_CODE_ERROR", "message": "card declined"},
                "flags": 257,
                "unknownSpanField": [1, 2, 3],
            }],
        }],
    }],
    "unknownTopLevel": True,
}  # fmt: skip

EXPECTED = SpanRecord(
    trace_id="5b8efff798038103d269b633813fc60c",
    span_id="eee19b7ec3c1b174",
    parent_span_id="eee19b7ec3c1b173",
    service="checkout",
    name="POST /checkout",
    kind="SERVER",
    start_unix_nano=1544712660000000000,
    end_unix_nano=1544712661000000000,
    status="ERROR",
    status_message="card declined",
    attributes={
        "http.response.status_code": 201,
        "retries": 2,
        "ratio": 0.25,
        "cached": False,
        "payload": "01ff",
        "tags": ["a", -3],
        "map": {"k": "v"},
        "correlation.id": "json-corr-1",
    },
    links=[SpanLink("00000000000000000000000000000abc", "0000000000000def", {})],
    events=[SpanEvent("retry", 1544712660500000000, {"n": 1})],
    resource={"service.name": "checkout", "service.version": "9.9"},
    service_version="9.9",
    scope="hand.written",
)


def test_hand_written_json_reads_back_the_same(receiver: Receiver, reader: Store) -> None:
    reply = post(receiver, "/v1/traces", json.dumps(HAND_WRITTEN).encode(), JSON)
    assert reply.status == 200 and json.loads(reply.body) == {}
    assert reader.spans_by_correlation_id("json-corr-1") == [EXPECTED]


def test_json_logs_with_quirks(receiver: Receiver, reader: Store) -> None:
    body = {"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "worker"}}]},
        "scopeLogs": [{"logRecords": [{
            "observedTimeUnixNano": "1700000000000000001", "severityNumber": 17,
            "severityText": "ERROR", "body": {"kvlistValue": {"values": [
                {"key": "msg", "value": {"stringValue": "boom"}}]}},
            "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
            "someNewField": 1}]}]}]}  # fmt: skip
    assert post(receiver, "/v1/logs", json.dumps(body).encode(), JSON).status == 200
    (log,) = reader.logs_by_trace_ids(["5b8efff798038103d269b633813fc60c"])
    assert log.time_unix_nano == 1700000000000000001 and log.severity_number == 17
    assert json.loads(log.body) == {"msg": "boom"} and log.service == "worker"


@pytest.mark.parametrize(
    ("given", "number"),
    [("SEVERITY_NUMBER_INFO", 9), ("SEVERITY_NUMBER_WARN2", 14), ("SEVERITY_NUMBER_FATAL4", 24),
     ("SEVERITY_NUMBER_UNSPECIFIED", 0), (9, 9)],
)  # fmt: skip
def test_json_log_severity_as_its_enum_name(
    receiver: Receiver, reader: Store, given: object, number: int
) -> None:
    """The proto3 JSON mapping lets an enum be its name or its number (as span kinds are)."""
    trace_id = f"{number + 1:032x}"  # (never all zero)
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1700000000000000001", "severityNumber": given,
        "body": {"stringValue": "ok"}, "traceId": trace_id,
        "spanId": "EEE19B7EC3C1B174"}]}]}]}  # fmt: skip
    assert post(receiver, "/v1/logs", json.dumps(body).encode(), JSON).status == 200
    (log,) = reader.logs_by_trace_ids([trace_id])
    assert log.severity_number == number and log.body == "ok"


def test_a_lone_surrogate_is_stored_as_a_replacement_character(
    receiver: Receiver, reader: Store
) -> None:
    """JSON may escape half a surrogate pair ("\\ud800"); stored as it was, it made every
    `tracekit trace --format json` of the trace fail to encode its output."""
    lone = "\\ud800"
    body = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":'
        f'{{"stringValue":"svc{lone}"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{"0d" * 16}",'
        f'"spanId":"{"0e" * 8}","name":"n{lone}","startTimeUnixNano":"1700000000000000000",'
        '"endTimeUnixNano":"1700000000000000001","attributes":[{"key":"q","value":'
        f'{{"stringValue":"{"y" * 70}{lone}"}}}}]}}]}}]}}]}}'
    )
    assert post(receiver, "/v1/traces", body.encode(), JSON).status == 200
    (span,) = reader.spans_by_trace_ids(["0d" * 16])
    assert span.attributes["q"] == "y" * 70 + "\ufffd" and span.name == "n\ufffd"
    assert span.service == "svc\ufffd"
    json.dumps(span.attributes, ensure_ascii=False).encode("utf-8")  # printable as UTF-8


@pytest.mark.parametrize("first", [0.0, -0.0])
def test_zero_and_negative_zero_are_stored_as_sent(
    first: float, receiver: Receiver, reader: Store
) -> None:
    """The store's cache of encoded attributes took 0.0 and -0.0 (equal in Python) for one
    value: whichever came first was stored for both."""
    for n, value in enumerate((first, -first)):
        span = {"traceId": f"{n + 1:032x}", "spanId": f"{n + 1:016x}", "name": "z", **WHEN,
                "attributes": [{"key": "d", "value": {"doubleValue": value}}]}  # fmt: skip
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
        assert post(receiver, "/v1/traces", body, JSON).status == 200
    stored = [reader.spans_by_trace_ids([f"{n + 1:032x}"])[0].attributes["d"] for n in range(2)]
    assert [str(d) for d in stored] == [str(first), str(-first)]


def test_partial_success_in_json(receiver: Receiver, reader: Store) -> None:
    spans = [
        {"traceId": "01" * 16, "spanId": "02" * 8, "name": "kept", **WHEN},
        {"traceId": "00" * 16, "spanId": "03" * 8, "name": "zero trace id", **WHEN},
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    reply = post(receiver, "/v1/traces", json.dumps(body).encode(), JSON)
    assert reply.status == 200
    partial = json.loads(reply.body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "zero" in partial["errorMessage"]
    assert [s.name for s in reader.spans_by_trace_ids(["01" * 16])] == ["kept"]


# Longer than Python's int-from-string limit (4,300 digits): json.loads refused the whole body
TOO_MANY_DIGITS = "1" + "0" * 5000


def _span_json(span_id: str, name: str, value: str) -> str:
    return (f'{{"traceId": "{"ab" * 16}", "spanId": "{span_id}", "name": "{name}", '
            f'"startTimeUnixNano": {NOW}, "endTimeUnixNano": {NOW}, '
            f'"attributes": [{{"key": "n", "value": {value}}}]}}')  # fmt: skip


def test_an_integer_too_long_for_python_refuses_its_span_alone(
    receiver: Receiver, reader: Store
) -> None:
    spans = [_span_json("01" * 8, "kept", '{"intValue": 7}'),
             _span_json("02" * 8, "huge", f'{{"intValue": {TOO_MANY_DIGITS}}}'),
             _span_json("03" * 8, "ignored",
                        f'{{"intValue": 8}}, "unknownField": -{TOO_MANY_DIGITS}')]  # fmt: skip
    body = f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{", ".join(spans)}]}}]}}]}}'
    reply = post(receiver, "/v1/traces", body.encode(), JSON)
    assert reply.status == 200
    partial = json.loads(reply.body)["partialSuccess"]
    assert partial == {
        "rejectedSpans": "1",
        "errorMessage": "span.attributes must be a 64-bit integer",
    }
    stored = {s.name: s.attributes for s in reader.spans_by_trace_ids(["ab" * 16])}
    assert stored == {"kept": {"n": 7}, "ignored": {"n": 8}}


def test_an_integer_too_long_for_python_refuses_its_log_record_alone(
    receiver: Receiver, reader: Store
) -> None:
    records = [{"timeUnixNano": NOW, "traceId": "cd" * 16, "body": {"stringValue": "kept"}},
               {"timeUnixNano": NOW, "traceId": "cd" * 16, "body": {"intValue": 0}}]  # fmt: skip
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    body = body.replace('"intValue": 0', f'"intValue": {TOO_MANY_DIGITS}')
    reply = post(receiver, "/v1/logs", body.encode(), JSON)
    assert reply.status == 200
    assert json.loads(reply.body)["partialSuccess"]["rejectedLogRecords"] == "1"
    assert [r.body for r in reader.logs_by_trace_ids(["cd" * 16])] == ["kept"]


def test_an_integer_past_a_doubles_range_is_infinite_as_1e400_is(
    receiver: Receiver, reader: Store
) -> None:
    spans = [_span_json("01" * 8, "digits", '{"doubleValue": -1' + "0" * 400 + "}"),
             _span_json("02" * 8, "exponent", '{"doubleValue": -1e400}')]  # fmt: skip
    body = f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{", ".join(spans)}]}}]}}]}}'
    reply = post(receiver, "/v1/traces", body.encode(), JSON)  # was: connection closed, no answer
    assert (reply.status, reply.body) == (200, b"{}")
    stored = {s.name: s.attributes for s in reader.spans_by_trace_ids(["ab" * 16])}
    assert stored["digits"] == stored["exponent"] == {"n": "-Infinity"}  # as the store reads -inf


# -- property tests -------------------------------------------------------------------------------

hex_id = lambda n: st.binary(min_size=n, max_size=n).filter(any).map(bytes.hex)  # noqa: E731
int64 = st.integers(-(2**63), 2**63 - 1)
scalar = st.one_of(st.text(max_size=20), int64, st.booleans(), st.floats(allow_nan=False, width=64))
values = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
attributes = st.dictionaries(st.text(max_size=12), values, max_size=5)


def _any_json(value: object, draw: st.DrawFn) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": draw(st.sampled_from([str(value), value]))}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {draw(st.sampled_from(["stringValue", "string_value"])): value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_json(v, draw) for v in value]}}
    assert isinstance(value, dict)
    return {"kvlistValue": {"values": _kv_json(value, draw)}}


def _kv_json(attrs: dict[str, object], draw: st.DrawFn) -> list[dict[str, object]]:
    return [{"key": k, "value": _any_json(v, draw)} for k, v in attrs.items()]


@st.composite
def span_documents(draw: st.DrawFn) -> tuple[dict[str, object], dict[str, object]]:
    """An OTLP/JSON document with random spec-allowed spellings, and what it must decode to."""
    trace_id, span_id = draw(hex_id(16)), draw(hex_id(8))
    start = draw(st.integers(EARLIEST_NS, NOW))  # the range a record may be dated in
    attrs = draw(attributes)
    kind = draw(st.integers(0, 5))
    status = draw(st.integers(0, 2))
    case = draw(st.sampled_from([str.upper, str.lower]))
    span = {
        "traceId": case(trace_id), "spanId": case(span_id), "name": draw(st.text(max_size=10)),
        "kind": kind, "startTimeUnixNano": draw(st.sampled_from([str(start), start])),
        "endTimeUnixNano": str(start), "attributes": _kv_json(attrs, draw),
        "status": {"code": status}, draw(st.sampled_from(["zzUnknown", "extra"])): {"a": [1]},
    }  # fmt: skip
    expected = {"trace_id": trace_id, "span_id": span_id, "start": start, "attributes": attrs,
                "kind": ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")[kind],
                "status": ("UNSET", "OK", "ERROR")[status]}  # fmt: skip
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}, expected


@settings(max_examples=150, deadline=None)
@given(span_documents())
def test_json_decoder_accepts_every_spec_spelling(
    case: tuple[dict[str, object], dict[str, object]],
) -> None:
    document, expected = case
    (span,) = decode_traces(json.dumps(document).encode()).spans
    assert span.trace_id == expected["trace_id"] and span.span_id == expected["span_id"]
    assert span.start_unix_nano == expected["start"] and span.attributes == expected["attributes"]
    assert span.kind == expected["kind"] and span.status == expected["status"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "attributes", "value",
         "key", "intValue", "arrayValue", "values", "kind", "status", "code", "links"]), inner,
        max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_decoder_only_ever_raises_malformed_request(document: object) -> None:
    try:
        decoded = decode_traces(json.dumps(document).encode())
    except MalformedRequest:
        return
    for span in decoded.spans:
        assert len(span.trace_id) == 32 and len(span.span_id) == 16


@pytest.mark.parametrize("bad", ["1.5", "abc", "99999999999999999999999", True, [1]])
def test_int64_fields_refuse_non_integers(bad: object) -> None:
    span = {"traceId": "01" * 16, "spanId": "02" * 8, "startTimeUnixNano": bad}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    decoded = decode_traces(json.dumps(document).encode())
    assert (decoded.spans, decoded.rejected) == ([], 1)
    assert "span.start must be a" in decoded.reason  # an integer, a 64-bit integer


def test_first_request_with_many_distinct_values_per_key(receiver: Receiver, reader: Store) -> None:
    """Past 512 distinct values a key's values are stored inline: the encoder must decide that
    the same way while interning and while building rows, on the very first request too."""
    spans = [
        {"traceId": "0c" * 16, "spanId": f"{n + 1:016x}", "name": "op", **WHEN,
         "attributes": [{"key": "order.id", "value": {"stringValue": f"order-{n}"}}]}
        for n in range(1500)
    ]  # fmt: skip
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    assert post(receiver, "/v1/traces", json.dumps(body).encode(), JSON).status == 200
    stored = reader.spans_by_trace_ids(["0c" * 16])
    assert sorted(s.attributes["order.id"] for s in stored) == sorted(
        f"order-{n}" for n in range(1500)
    )


def test_a_log_record_without_a_body_has_an_empty_body_whatever_the_encoding(
    receiver: Receiver, reader: Store
) -> None:
    """OpenTelemetry JS sends a record emitted without a body (an event: a name and attributes)
    with an empty AnyValue as its body: over OTLP/JSON its body was stored, and shown by
    ``tracekit trace``, as ``null``, where protobuf and gRPC gave an empty body."""
    trace_id = "ab" * 16
    records = [{"timeUnixNano": "1700000000000000001", "traceId": trace_id, "body": {}},
               {"timeUnixNano": "1700000000000000002", "traceId": trace_id}]  # fmt: skip
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    assert post(receiver, "/v1/logs", json.dumps(body).encode(), JSON).status == 200
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano, record.trace_id = 1700000000000000003, bytes.fromhex(trace_id)
    record.body.SetInParent()  # set, and holding no value
    assert post(receiver, "/v1/logs", request.SerializeToString()).status == 200
    assert [r.body for r in reader.logs_by_trace_ids([trace_id])] == ["", "", ""]


@pytest.mark.parametrize(
    ("field", "spelling"),
    [
        ("traceId", "5b 8e ff f7 98 03 81 03 d2 69 b6 33 81 3f c6 0c"),
        ("startTimeUnixNano", f" {NOW}"),
        ("startTimeUnixNano", f"+{NOW}"),
        ("startTimeUnixNano", "1_700_000_000_000_000_000"),
        ("doubleValue", "nan"),
        ("doubleValue", "inf"),
        ("doubleValue", "infinity"),
        ("doubleValue", "1_0"),
        ("doubleValue", " 2.5"),
    ],
    ids=["spaced id", "spaced time", "signed time", "grouped time", "nan", "inf", "infinity",
         "grouped double", "spaced double"],
)  # fmt: skip
def test_python_spellings_that_are_no_json_are_refused(
    field: str, spelling: str, receiver: Receiver
) -> None:
    """Python's readers took them (``bytes.fromhex`` skips white space, ``int()`` and ``float()``
    take signs, spaces and digit separators, ``float()`` reads ``inf`` and ``nan``): a double of
    ``"1_0"`` was stored as 10.0 and an id with spaces as a valid id. The spec's JSON takes hex
    digits, decimal digits and ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` only: the span is
    refused alone, its neighbour stored."""
    good = {"traceId": "01" * 16, "spanId": "02" * 8, **WHEN}
    bad = {"traceId": "03" * 16, "spanId": "04" * 8, **WHEN}
    if field == "doubleValue":
        bad["attributes"] = [{"key": "ratio", "value": {"doubleValue": spelling}}]
    else:
        bad[field] = spelling
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [good, bad]}]}]}
    reply = post(receiver, "/v1/traces", json.dumps(document).encode(), JSON)
    assert reply.status == 200
    assert json.loads(reply.body)["partialSuccess"]["rejectedSpans"] == "1"


@pytest.mark.parametrize("spelling", ["2.5", "-0.5", "1e3", "1.5E-3", "7", "NaN", "-Infinity"])
def test_json_number_spellings_of_a_double_are_read(spelling: str) -> None:
    span = {"traceId": "01" * 16, "spanId": "02" * 8, **WHEN,
            "attributes": [{"key": "d", "value": {"doubleValue": spelling}}]}  # fmt: skip
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    (decoded,) = decode_traces(json.dumps(document).encode()).spans
    assert repr(decoded.attributes["d"]) == repr(float(spelling))
