"""The decoder on documents written by hand in each server's real encoding (not produced by
``otlp_fixtures``, so an encoder and the decoder cannot share a mistake).

Tempo's (gogo jsonpb): base64 ids, enum names, an unspecified kind and an unset status left out,
unnamed events, typed attribute values. Jaeger's (pdata JSON): hex ids, enum numbers.
"""

from __future__ import annotations

import math

import pytest

from tracekit.backends._otlp_json import spans_from_batches
from tracekit.records import BackendError

TEMPO_V2_RESOURCE_SPANS = [
    {
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "billing"}},
            {"key": "service.version", "value": {"stringValue": "4.2.0"}},
        ]},
        "scopeSpans": [{"scope": {"name": "billing.worker", "version": "1"}, "spans": [
            {
                "traceId": "AAECAwQFBgcICQoLDA0ODw==",
                "spanId": "EBESExQVFhc=",
                "name": "settle",
                "startTimeUnixNano": "1764680000000000000",
                "endTimeUnixNano": "1764680000250000000",
                "attributes": [
                    {"key": "retries", "value": {"intValue": "3"}},
                    {"key": "ratio", "value": {"doubleValue": "NaN"}},
                    {"key": "digest", "value": {"bytesValue": "3q2+7w=="}},
                    {"key": "delays", "value": {"arrayValue": {"values": [
                        {"intValue": "10"}, {"intValue": "20"}]}}},
                    {"key": "peer", "value": {"kvlistValue": {"values": [
                        {"key": "up", "value": {"boolValue": True}}]}}},
                ],
                "events": [{"timeUnixNano": "1764680000100000000", "attributes": [
                    {"key": "note", "value": {"stringValue": "unnamed event"}}]}],
                "links": [{"traceId": "//79/Pv6+fj39vX08/Lx8A==", "spanId": "AQIDBAUGBwg="}],
                "status": {},
            },
            {
                "traceId": "AAECAwQFBgcICQoLDA0ODw==",
                "spanId": "ICEiIyQlJic=",
                "parentSpanId": "EBESExQVFhc=",
                "name": "POST /ledger",
                "kind": "SPAN_KIND_CLIENT",
                "startTimeUnixNano": "1764680000010000000",
                "endTimeUnixNano": "1764680000200000000",
                "status": {"code": "STATUS_CODE_ERROR", "message": "ledger refused"},
            },
        ]}],
    }
]  # fmt: skip

JAEGER_RESOURCE_SPANS = [
    {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ledger"}}]},
        "scopeSpans": [{"scope": {}, "spans": [
            {
                "traceId": "000102030405060708090a0b0c0d0e0f",
                "spanId": "3031323334353637",
                "parentSpanId": "2021222324252627",
                "name": "POST /ledger",
                "kind": 2,
                "startTimeUnixNano": "1764680000020000000",
                "endTimeUnixNano": "1764680000190000000",
                "status": {"code": 2},
            },
            {
                "traceId": "000102030405060708090a0b0c0d0e0f",
                "spanId": "4041424344454647",
                "parentSpanId": "3031323334353637",
                "name": "insert",
                "startTimeUnixNano": "1764680000030000000",
                "endTimeUnixNano": "1764680000040000000",
                "status": {"code": 1},
            },
        ]}],
    }
]  # fmt: skip


def test_tempo_encoding() -> None:
    settle, call = spans_from_batches(TEMPO_V2_RESOURCE_SPANS)
    assert (settle.trace_id, settle.span_id, settle.parent_span_id) == (
        "000102030405060708090a0b0c0d0e0f", "1011121314151617", None)  # fmt: skip
    assert (settle.kind, settle.status, settle.service, settle.service_version, settle.scope) == (
        "INTERNAL", "UNSET", "billing", "4.2.0", "billing.worker")  # fmt: skip
    assert settle.attributes["retries"] == 3 and math.isnan(settle.attributes["ratio"])  # type: ignore[arg-type]
    assert settle.attributes["digest"] == "deadbeef"
    assert settle.attributes["delays"] == [10, 20] and settle.attributes["peer"] == {"up": True}
    assert [(e.name, e.attributes) for e in settle.events] == [("", {"note": "unnamed event"})]
    assert [(ln.trace_id, ln.span_id) for ln in settle.links] == [
        ("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "0102030405060708")]  # fmt: skip
    assert (call.kind, call.status, call.status_message, call.parent_span_id) == (
        "CLIENT", "ERROR", "ledger refused", "1011121314151617")  # fmt: skip
    assert call.duration_ms == 190.0


def test_jaeger_encoding() -> None:
    server, insert = spans_from_batches(JAEGER_RESOURCE_SPANS)
    assert (server.trace_id, server.span_id, server.kind, server.status) == (
        "000102030405060708090a0b0c0d0e0f", "3031323334353637", "SERVER", "ERROR")  # fmt: skip
    assert (insert.kind, insert.status, insert.scope) == ("INTERNAL", "OK", None)


@pytest.mark.parametrize("trace_id", ["00010203", "!!", "000102030405060708090a0b0c0d0e0\n"])
def test_ids_no_server_writes_are_refused(trace_id: str) -> None:
    """A short id (Tempo writes those only in search hits), junk, 31 hex digits and a newline
    (taken as an id, newline and all: ``$`` matches before a final newline)."""
    span = {"traceId": trace_id, "spanId": "3031323334353637", "name": "x"}
    with pytest.raises(BackendError, match="unreadable id"):
        spans_from_batches([{"scopeSpans": [{"spans": [span]}]}])


def test_upper_case_hex_ids_and_an_all_zero_parent_read_as_otlp_json_means_them() -> None:
    """OTLP/JSON hex ids are case-insensitive: an upper-case one failed the whole command. An
    all-zero parent is the invalid span id, no parent (the receiver reads it so): it was a
    parent "missing" from the trace."""
    span = {"traceId": "000102030405060708090A0B0C0D0E0F", "spanId": "3031323334353637",
            "parentSpanId": "0000000000000000", "name": "x"}  # fmt: skip
    (record,) = spans_from_batches([{"scopeSpans": [{"spans": [span]}]}])
    assert record.trace_id == "000102030405060708090a0b0c0d0e0f"
    assert record.parent_span_id is None


def test_a_document_that_is_not_a_list_of_resource_spans_is_refused() -> None:
    with pytest.raises(BackendError, match="no resource spans list"):
        spans_from_batches({"resourceSpans": []})
