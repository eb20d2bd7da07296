"""A span or search hit timed where no clock can be (10**30 ns, past 2262, negative) is left out
with one warning, and the rest of the answer is shown; ``tracekit`` never prints a traceback for
it. Real servers on loopback answer as Tempo and Jaeger do, with one such span among good ones."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from go_answers import json_answer
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent, tempo_search_hit
from tempo_fake import FakeTempo
from trace_topologies import checkout
from tracekit_process import tracekit
from werkzeug.wrappers import Request, Response

from tracekit.backends._otlp_json import (
    EVENT_UNREADABLE,
    SPAN_TIME_OUT_OF_RANGE,
    SPAN_WITHOUT_ID,
    spans_from_batches,
)
from tracekit.backends.jaeger import JaegerSource
from tracekit.backends.tempo import TempoSource
from tracekit.path import reconstruct
from tracekit.records import SpanRecord

NEVER = 10**30  # what the review's server sent: OverflowError in the view before


def with_a_span_at(spans: list[SpanRecord], start: int) -> list[SpanRecord]:
    """``spans`` plus a child of their root that starts (and ends) at ``start``."""
    root = next(s for s in spans if s.parent_span_id is None)
    bad = dataclasses.replace(
        root, span_id="badbadbadbadbad0", parent_span_id=root.span_id, name="from the future",
        start_unix_nano=start, end_unix_nano=start + 1000,
    )  # fmt: skip
    return [*spans, bad]


def otlp(start: Any, end: Any = "1764680000000001000") -> list[dict[str, Any]]:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "n",
            "startTimeUnixNano": start, "endTimeUnixNano": end}  # fmt: skip
    good = {**span, "spanId": "ef" * 8, "startTimeUnixNano": "1764680000000000000",
            "endTimeUnixNano": "1764680000000001000"}  # fmt: skip
    return [{"scopeSpans": [{"spans": [good, span]}]}]


@pytest.mark.parametrize(
    "start", [str(NEVER), str(2**63), "-1", 1e400, 1e30, "1764680000000000000"]
)
def test_a_span_out_of_range_is_left_out_and_said(start: Any) -> None:
    told: list[str] = []
    end = str(NEVER) if start == "1764680000000000000" else "1764680000000001000"
    spans = spans_from_batches(otlp(start, end), told.append)
    assert [s.span_id for s in spans] == ["ef" * 8]
    assert told == [SPAN_TIME_OUT_OF_RANGE]


def test_a_span_that_ends_before_it_starts_lasts_zero_ms_as_the_collector_stores_it() -> None:
    """Its wall clock stepped back mid-span: a real operation, often the parent of others. Left
    out, its children lost their place in the path; kept as it came, it showed (and ``diff``
    compared it) as a negative duration (-20 ms, "-250%")."""
    told: list[str] = []
    spans = spans_from_batches(otlp("1764680000020000000", "1764680000000000000"), told.append)
    stepped = next(s for s in spans if s.span_id == "cd" * 8)
    assert stepped.end_unix_nano == stepped.start_unix_nano == 1764680000020000000
    assert stepped.attributes["tracekit.clock_stepped_back_ns"] == 20_000_000
    assert told == []


@pytest.mark.parametrize(
    "ids", [{"spanId": None}, {"spanId": ""}, {"spanId": "0" * 16}, {"traceId": "0" * 32}]
)
def test_a_span_without_ids_is_left_out_and_said(ids: dict[str, Any]) -> None:
    """The collector refuses such a span; read from a backend it showed as ``"span_id": ""``,
    which the path's own schema refuses, beside its trace's other spans."""
    batches = otlp("1764680000000000000")
    bad = batches[0]["scopeSpans"][0]["spans"][1]
    bad.update(ids)
    if ids.get("spanId") is None:
        del bad["spanId"]  # left out, as jsonpb and pdata write empty bytes
    told: list[str] = []
    spans = spans_from_batches(batches, told.append)
    assert [s.span_id for s in spans] == ["ef" * 8]
    assert told == [SPAN_WITHOUT_ID]


def test_an_event_timed_past_any_number_is_left_out_and_its_span_kept() -> None:
    """An event at 1e400 (which json.loads reads as infinity) failed the whole trace with
    "unreadable trace in backend answer (OverflowError)"; one at 10**30 would fail the view."""
    told: list[str] = []
    batches = otlp("1764680000000000000")
    good = {"name": "retry", "timeUnixNano": "1764680000000000500"}
    batches[0]["scopeSpans"][0]["spans"][0]["events"] = [
        {"timeUnixNano": 1e400}, {"timeUnixNano": str(NEVER)}, good]  # fmt: skip
    first, _ = spans_from_batches(batches, told.append)
    assert [(e.name, e.time_unix_nano) for e in first.events] == [("retry", 1764680000000000500)]
    assert told == [EVENT_UNREADABLE, EVENT_UNREADABLE]


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_the_path_shows_the_other_spans_and_the_reader_is_told_once(serve: Any, fake: Any) -> None:
    good = recent(checkout().spans)
    backend = serve(fake(with_a_span_at(good, NEVER)))
    told: list[str] = []
    source = (TempoSource if fake is FakeTempo else JaegerSource)(backend.url, notify=told.append)
    path = reconstruct(source, "req-checkout-1")
    assert path is not None
    assert sorted(s.record.span_id for s in path.spans) == sorted(s.span_id for s in good)
    name = "Tempo" if fake is FakeTempo else "Jaeger"
    assert told == [f"{name} at {backend.url} answered {SPAN_TIME_OUT_OF_RANGE}: it is left out"]


def test_a_search_hit_out_of_range_is_left_out(serve: Any) -> None:
    good = recent(checkout().spans)
    bad_hit = {**tempo_search_hit(good, good[:1]), "traceID": "ab" * 16}
    bad_hit["startTimeUnixNano"] = str(NEVER)
    hits = [bad_hit, tempo_search_hit(good, good[:1], selected=("correlation.id",))]

    def search(request: Request) -> Response:
        return json_answer({"traces": hits})

    told: list[str] = []
    found = TempoSource(serve(search).url, notify=told.append).recent_requests()
    assert [r.trace_id for r in found] == [good[0].trace_id]
    assert len(told) == 1 and "a search hit whose start is no time from 1970 to 2262" in told[0]


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
@pytest.mark.parametrize("output", ["text", "rich", "json"])
def test_the_cli_shows_the_trace_and_warns(serve: Any, fake: Any, output: str) -> None:
    good = recent(checkout().spans)
    url = serve(fake(with_a_span_at(good, NEVER))).url
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    done = tracekit("trace", "req-checkout-1", backend, url, "--format", output)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stderr == (
        f"tracekit: warning: {backend[2:].capitalize()} at {url} answered "
        f"{SPAN_TIME_OUT_OF_RANGE}: it is left out\n"
    )
    assert "POST /checkout" in done.stdout and "from the future" not in done.stdout
    if output == "json":
        assert len(json.loads(done.stdout)["spans"]) == len(good)
