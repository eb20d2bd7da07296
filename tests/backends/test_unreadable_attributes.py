"""One attribute no OTLP/JSON encoder writes (an ``intValue`` that is no int64, a ``doubleValue``
object, bytes that are not base64, a key that is no string) is left out with one warning; its
span keeps its other attributes and its trace is shown. Before, the whole trace failed: ``tracekit
trace`` exited 2 with "unreadable trace in backend answer (ValueError)".

Real servers on loopback answer as Tempo and Jaeger do, with one such attribute on one span.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from go_answers import with_traces_edited
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout
from tracekit_process import tracekit
from werkzeug.wrappers import Response

from tracekit.backends._otlp_json import (
    ATTRIBUTE_UNREADABLE,
    SPAN_TIME_OUT_OF_RANGE,
    spans_from_batches,
)

HOSTILE = "\x1b[31mEVIL"  # a terminal escape: never to be printed raw

UNREADABLE_VALUES = {
    "int that is not a number": {"intValue": "12abc"},
    "int of 5000 digits": {"intValue": "9" * 5000},
    "int past int64": {"intValue": "9223372036854775808"},
    "int past any number": {"intValue": 1e400},  # json.loads reads 1e400 as infinity
    "int as a list": {"intValue": [1]},
    "double that is not a number": {"doubleValue": HOSTILE},
    "double as an object": {"doubleValue": {}},
    "bool as a string": {"boolValue": "yes"},
    "string as an object": {"stringValue": {"text": HOSTILE}},
    "bytes not base64": {"bytesValue": HOSTILE},
    "array as a list": {"arrayValue": [{"intValue": "1"}]},
    "array values as a number": {"arrayValue": {"values": 5}},
    "map as a string": {"kvlistValue": HOSTILE},
    "map with a bad value": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "x"}}]}},
}
UNREADABLE_KEYS = {"number key": 5, "object key": {"k": HOSTILE}, "null key": None}


def nested(depth: int) -> dict[str, Any]:
    """An array value holding an array value ... ``depth`` arrays deep."""
    value: dict[str, Any] = {"intValue": "1"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


def one_span(**fields: Any) -> list[dict[str, Any]]:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "settle",
            "startTimeUnixNano": "1764680000000000000", "endTimeUnixNano": "1764680000000001000",
            **fields}  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]}
    return [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]


def good_and(bad: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": "good", "value": {"intValue": "7"}}, bad]


@pytest.mark.parametrize("case", sorted(UNREADABLE_VALUES))
def test_an_unreadable_value_is_left_out_and_said(case: str) -> None:
    told: list[str] = []
    bad = {"key": "bad", "value": UNREADABLE_VALUES[case]}
    (span,) = spans_from_batches(one_span(attributes=good_and(bad)), told.append)
    assert (span.name, span.attributes) == ("settle", {"good": 7})
    assert told == [ATTRIBUTE_UNREADABLE]


@pytest.mark.parametrize("case", sorted(UNREADABLE_KEYS))
def test_a_key_that_is_no_string_is_left_out_and_said(case: str) -> None:
    """Read as ``str(key)`` before: a key ``"{'k': '\\x1b[31mEVIL'}"`` no SDK wrote."""
    told: list[str] = []
    bad = {"key": UNREADABLE_KEYS[case], "value": {"stringValue": "v"}}
    (span,) = spans_from_batches(one_span(attributes=good_and(bad)), told.append)
    assert span.attributes == {"good": 7}
    assert told == [ATTRIBUTE_UNREADABLE]


def test_values_nested_past_the_receivers_bound_are_left_out() -> None:
    told: list[str] = []
    deep = {"key": "deep", "value": nested(33)}
    ok = {"key": "ok", "value": nested(32)}
    (span,) = spans_from_batches(one_span(attributes=[ok, deep]), told.append)
    assert list(span.attributes) == ["ok"] and told == [ATTRIBUTE_UNREADABLE]


def test_resource_event_and_link_attributes_are_left_out_alone() -> None:
    told: list[str] = []
    bad = {"key": "bad", "value": {"intValue": "x"}}
    batches = one_span(
        events=[{"name": "retry", "timeUnixNano": "1764680000000000500",
                 "attributes": good_and(bad)}],
        links=[{"traceId": "ef" * 16, "spanId": "01" * 8, "attributes": good_and(bad)}],
    )  # fmt: skip
    batches[0]["resource"]["attributes"].append(bad)
    (span,) = spans_from_batches(batches, told.append)
    assert (span.service, span.resource) == ("billing", {"service.name": "billing"})
    assert [(e.name, e.attributes) for e in span.events] == [("retry", {"good": 7})]
    assert [(ln.trace_id, ln.attributes) for ln in span.links] == [("ef" * 16, {"good": 7})]
    assert told == [ATTRIBUTE_UNREADABLE] * 3


@pytest.mark.parametrize(
    ("value", "read"),
    [({"intValue": "-9223372036854775808"}, -(2**63)), ({"intValue": 42}, 42),
     ({"intValue": 3.0}, 3), ({"doubleValue": "2.5"}, 2.5), ({"doubleValue": 1}, 1.0),
     ({"doubleValue": "-Infinity"}, float("-inf")), ({"bytesValue": "AAAwOQ=="}, "00003039"),
     ({"arrayValue": {}}, []), ({"kvlistValue": {}}, {}), ({}, None), ({"newValue": 1}, None)],
)  # fmt: skip
def test_every_value_an_encoder_writes_is_still_read(value: dict[str, Any], read: Any) -> None:
    """proto3 JSON allows a number or a string for an int64 and a double; an empty value and a
    field this reader does not know are an empty (null) value, as the receiver reads them."""
    told: list[str] = []
    (span,) = spans_from_batches(one_span(attributes=[{"key": "v", "value": value}]), told.append)
    assert span.attributes == {"v": read} and told == []


def with_a_bad_attribute(fake: Any, name: str) -> Any:
    """``fake``'s answers, with one unreadable attribute added to the span called ``name``."""

    def add_one(batches: list[Any]) -> None:
        for span in (s for rs in batches for ss in rs["scopeSpans"] for s in ss["spans"]
                     if s["name"] == name):  # fmt: skip
            span["attributes"].append({"key": HOSTILE, "value": {"intValue": HOSTILE}})

    return with_traces_edited(fake, add_one)


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
@pytest.mark.parametrize("output", ["text", "json"])
def test_the_cli_shows_the_trace_and_warns_once(serve: Any, fake: Any, output: str) -> None:
    good = recent(checkout().spans)
    url = serve(with_a_bad_attribute(fake(good), "POST /checkout")).url
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    done = tracekit("trace", "req-checkout-1", backend, url, "--format", output)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stderr == (
        f"tracekit: warning: {backend[2:].capitalize()} at {url} answered "
        f"{ATTRIBUTE_UNREADABLE}: it is left out\n"
    )
    assert "POST /checkout" in done.stdout and "EVIL" not in done.stdout
    if output == "json":
        spans = json.loads(done.stdout)["spans"]
        root = next(s for s in spans if s["name"] == "POST /checkout")
        assert len(spans) == len(good) and root["attributes"]["http.route"] == "/checkout"


def test_a_number_of_5000_digits_costs_only_its_field(serve: Any) -> None:
    """Python reads no integer of over 4,300 digits: one in an attribute made the whole answer
    "something not JSON" (exit 2). Now the attribute is left out, and a span timed so is left
    out as any span timed past 2262."""
    huge = "9" * 5000  # written by hand: json.dumps cannot write it either

    def span(span_id: str, start: str, value: str) -> str:
        return (
            '{"traceId":"' + "ab" * 16 + '","spanId":"' + span_id + '","name":"settle",'
            '"startTimeUnixNano":' + start + ',"endTimeUnixNano":"1764680000000001000",'
            '"attributes":[{"key":"good","value":{"intValue":"7"}},'
            '{"key":"other","value":{"intValue":' + value + "}}]}"
        )

    good = span("cd" * 8, '"1764680000000000000"', huge)
    late = span("ef" * 8, huge, '"1"')
    body = '{"result":{"resourceSpans":[{"scopeSpans":[{"spans":[' + good + "," + late + "]}]}]}}"
    url = serve(lambda request: Response(body, 200, mimetype="application/json")).url
    done = tracekit("trace", "ab" * 16, "--jaeger", url, "--format", "json")
    assert done.returncode == 0, done.stderr[-800:]
    (shown,) = json.loads(done.stdout)["spans"]
    assert (shown["span_id"], shown["attributes"]) == ("cd" * 8, {"good": 7})
    assert sorted(done.stderr.splitlines()) == [
        f"tracekit: warning: Jaeger at {url} answered {reason}: it is left out"
        for reason in (SPAN_TIME_OUT_OF_RANGE, ATTRIBUTE_UNREADABLE)
    ]


@pytest.mark.parametrize(
    "name", [{"intValue": "5"}, {"arrayValue": {"values": [{"stringValue": "\x1b[31mEVIL"}]}}]
)
def test_a_service_name_that_is_no_string_is_the_default_as_the_collector_reads_it(
    name: dict[str, Any],
) -> None:
    """Read as Python's ``str()`` of it before: a service ``5``, or ``['\\x1b[31mEVIL']``."""
    batches = one_span()
    batches[0]["resource"]["attributes"] = [{"key": "service.name", "value": name}]
    (span,) = spans_from_batches(batches)
    assert span.service == "unknown_service"
