"""One span, event or link that no OTLP/JSON encoder writes (an id that is no id, a time that is
no number, a span that is no object) is left out with one warning; the rest of its trace is
shown. Before, the whole trace failed: ``tracekit trace`` exited 2 with "unreadable id ..." or
"unreadable trace in backend answer (ValueError)". An answer holding nothing readable is still
one backend error, not "not found".

Real servers on loopback answer as Tempo and Jaeger do, with one such record among good ones.
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

from tracekit.backends._otlp_json import LINK_UNREADABLE, SPAN_UNREADABLE, spans_from_batches
from tracekit.records import BackendError

GOOD = {
    "traceId": "ab" * 16, "spanId": "ef" * 8, "name": "good",
    "startTimeUnixNano": "1764680000000000000", "endTimeUnixNano": "1764680000000001000",
}  # fmt: skip
UNREADABLE_SPANS = {
    "span id not hex": {**GOOD, "spanId": "\x1b[31mEVIL"},
    "trace id of 31 hex digits": {**GOOD, "traceId": "ab" * 15 + "a"},
    "parent id junk": {**GOOD, "parentSpanId": "!!"},
    "start not a number": {**GOOD, "startTimeUnixNano": "soon"},
    "end an object": {**GOOD, "endTimeUnixNano": {"at": 1}},
    "status a string": {**GOOD, "status": "ERROR"},
    "name an object": {**GOOD, "name": {"text": "\x1b[31mEVIL"}},
    "status message a number": {**GOOD, "status": {"message": 5}},
    "span a string": "\x1b[31mEVIL",
}


def batches_of(*spans: Any) -> list[dict[str, Any]]:
    return [{"scopeSpans": [{"spans": list(spans)}]}]


@pytest.mark.parametrize("case", sorted(UNREADABLE_SPANS))
def test_an_unreadable_span_is_left_out_and_said(case: str) -> None:
    told: list[str] = []
    spans = spans_from_batches(batches_of(UNREADABLE_SPANS[case], GOOD), told.append)
    assert [s.name for s in spans] == ["good"]
    assert told == [SPAN_UNREADABLE]


@pytest.mark.parametrize("case", ["span id not hex", "start not a number", "span a string"])
def test_an_answer_of_unreadable_spans_only_is_a_backend_error(case: str) -> None:
    with pytest.raises(BackendError, match=r"^unreadable (id|trace) ") as caught:
        spans_from_batches(batches_of(UNREADABLE_SPANS[case]))
    assert "\x1b" not in str(caught.value)


@pytest.mark.parametrize(
    "link", [{"traceId": "!!", "spanId": "01" * 8}, {"traceId": "cd" * 16, "spanId": 5}, "link"]
)
def test_an_unreadable_link_is_left_out_and_its_span_kept(link: Any) -> None:
    told: list[str] = []
    good_link = {"traceId": "cd" * 16, "spanId": "01" * 8}
    (span,) = spans_from_batches(batches_of({**GOOD, "links": [link, good_link]}), told.append)
    assert [(ln.trace_id, ln.span_id) for ln in span.links] == [("cd" * 16, "01" * 8)]
    assert told == [LINK_UNREADABLE]


OTHER = {**GOOD, "spanId": "01" * 8, "name": "other"}
UNREADABLE_BATCHES = {
    "resource a string": {"resource": "\x1b[31mEVIL", "scopeSpans": [{"spans": [OTHER]}]},
    "scopeSpans a string": {"scopeSpans": "\x1b[31mEVIL"},
    "a scope spans entry a string": {"scopeSpans": ["\x1b[31mEVIL"]},
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_BATCHES))
def test_an_unreadable_resource_or_scope_costs_only_its_own_spans(case: str) -> None:
    """A resource spans entry whose resource or scopes are unreadable sank the whole trace
    ("unreadable trace in backend answer (AttributeError)"); the other entries' spans stand."""
    told: list[str] = []
    spans = spans_from_batches([*batches_of(GOOD), UNREADABLE_BATCHES[case]], told.append)
    assert [s.name for s in spans] == ["good"]
    assert told == [SPAN_UNREADABLE]


def add_a_span_whose_id_is_no_id(batches: list[Any]) -> None:
    spans = batches[0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "\x1b[31mEVIL", "name": "unreadable"})


def add_a_resource_that_is_no_object(batches: list[Any]) -> None:
    batches.append({**batches[0], "resource": "\x1b[31mEVIL"})


@pytest.mark.parametrize("edit", [add_a_span_whose_id_is_no_id, add_a_resource_that_is_no_object])
@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_the_cli_shows_the_trace_and_warns_once(serve: Any, fake: Any, edit: Any) -> None:
    good = recent(checkout().spans)
    url = serve(with_traces_edited(fake(good), edit)).url
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    done = tracekit("trace", "req-checkout-1", backend, url, "--format", "json")
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stderr == (
        f"tracekit: warning: {backend[2:].capitalize()} at {url} answered "
        f"{SPAN_UNREADABLE}: it is left out\n"
    )
    assert sorted(s["span_id"] for s in json.loads(done.stdout)["spans"]) == sorted(
        s.span_id for s in good
    )
