"""The store finds the service map's calls itself (``tracekit services``): the same calls that
``tracekit.path.service_map`` finds in the same window's spans, on real SQLite files."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.path import hop_samples
from tracekit.path.hops import MAX_SPANS_BETWEEN
from tracekit.records import SPAN_KINDS, HopSample, SpanLink, SpanRecord
from tracekit.store import Store
from tracekit.store._hops import MAX_SPANS_BETWEEN as STORE_MAX_SPANS_BETWEEN

BASE = 1_700_000_000_000_000_000
SERVICES = ("web", "api", "worker")
# callers and callees more often than the spans between them
KINDS = (*SPAN_KINDS, "SERVER", "CLIENT", "CONSUMER", "PRODUCER")


def span_id(n: int) -> str:
    return f"{n + 1:016x}"


def trace_id(n: int) -> str:
    return f"{n + 1:032x}"


def engine_samples(store: Store, since: int, limit: int) -> tuple[list[HopSample], bool]:
    """What ``service_map`` counts in the spans ``tracekit services`` read before."""
    spans = store.newest_spans_since(since, limit=limit + 1)
    return sorted(hop_samples(spans[-limit:] if limit else [])), len(spans) > limit


def store_samples(store: Store, since: int, limit: int) -> tuple[list[HopSample], bool]:
    samples, more = store.newest_hop_samples(since, limit=limit)
    return sorted(samples), more


@st.composite
def stores(draw: st.DrawFn) -> list[SpanRecord]:
    """Spans of a few traces: any kind, parents inside the trace (or missing), links to any
    span (or to none stored), starts that often tie, errors, CLIENTs naming a messaging
    system."""
    count = draw(st.integers(2, 30))
    traces = draw(st.lists(st.integers(0, 1), min_size=count, max_size=count))
    spans: list[SpanRecord] = []
    for n in range(count):
        parent = draw(st.one_of(st.integers(0, count + 2), st.none()))
        kind = draw(st.sampled_from(KINDS))
        start = BASE + draw(st.integers(0, 20)) * 1_000_000
        links = [
            SpanLink(trace_id(traces[t] if t < count else 9), span_id(t))
            for t in draw(st.lists(st.integers(0, count + 2), max_size=3))
        ]
        attributes: dict[str, object] = {"http.route": "/x"}
        if kind == "CLIENT" and draw(st.booleans()):
            attributes["messaging.system"] = "rabbitmq"
        spans.append(SpanRecord(
            trace_id=trace_id(traces[n]), span_id=span_id(n),
            parent_span_id=None if parent is None else span_id(parent),
            service=draw(st.sampled_from(SERVICES)), name="op", kind=kind,
            start_unix_nano=start, end_unix_nano=start + draw(st.integers(0, 50)) * 100_000,
            status=draw(st.sampled_from(("UNSET", "OK", "ERROR"))),
            attributes=attributes, links=links,  # type: ignore[arg-type]
        ))  # fmt: skip
    return spans


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(), st.integers(0, 40), st.integers(0, 12), st.data())
def test_the_store_finds_the_calls_the_engine_finds_in_the_same_window(
    spans: list[SpanRecord], limit: int, since_ms: int, data: st.DataObject
) -> None:
    # some spans are sent again (a retry, another process) with links of their own
    again = data.draw(st.lists(st.sampled_from(spans), max_size=4, unique_by=id))
    targets = data.draw(st.lists(st.sampled_from(spans), min_size=len(again), max_size=len(again)))
    resent = [
        replace(s, links=[*s.links, SpanLink(t.trace_id, t.span_id)])
        for s, t in zip(again, targets, strict=True)
    ]
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "s.db") as store:
        store.write_spans(spans)
        store.write_spans(resent)
        since = BASE + since_ms * 1_000_000
        assert store_samples(store, since, limit) == engine_samples(store, since, limit)


def chain(between: int) -> list[SpanRecord]:
    """web's CLIENT, then ``between`` INTERNAL spans of a proxy, then api's SERVER."""
    kinds = ["CLIENT", *["INTERNAL"] * between, "SERVER"]
    services = ["web", *["proxy"] * between, "api"]
    return [
        SpanRecord(trace_id(0), span_id(n), span_id(n - 1) if n else None, services[n], "op",
                   kind, BASE + n, BASE + 100 - n)
        for n, kind in enumerate(kinds)
    ]  # fmt: skip


def test_a_call_through_internal_spans_is_found_as_far_as_the_engine_looks(
    tmp_path: Path,
) -> None:
    assert STORE_MAX_SPANS_BETWEEN == MAX_SPANS_BETWEEN
    for between in range(MAX_SPANS_BETWEEN + 3):
        with Store(tmp_path / f"chain-{between}.db") as store:
            store.write_spans(chain(between))
            found, _ = store_samples(store, BASE, 100)
            assert found == engine_samples(store, BASE, 100)[0]
            assert [s[:3] for s in found] == (
                [("web", "api", "http")] if between <= MAX_SPANS_BETWEEN else []
            )


def test_links_sent_again_with_a_span_already_stored_are_not_the_span_s_links(
    tmp_path: Path,
) -> None:
    """A span sent again (an exporter's retry, another process) is skipped as stored, but the
    link rows of the copy were stored beside it. The span as first stored has no links: neither
    the map nor the span read back may count them, whether or not another span of its trace in
    the window has links of its own."""
    message = SpanLink(trace_id(0), span_id(0))
    producer = SpanRecord(trace_id(0), span_id(0), None, "web", "send", "PRODUCER", BASE, BASE + 10)

    def consumer(n: int, links: list[SpanLink]) -> SpanRecord:
        return SpanRecord(trace_id(0), span_id(n), None, "worker", "handle", "CONSUMER",
                          BASE + n, BASE + 20, links=links)  # fmt: skip

    with Store(tmp_path / "s.db") as store:
        store.write_spans([producer, consumer(1, []), consumer(2, [message])])
        store.write_spans([consumer(1, [message])])
        found, _ = store_samples(store, BASE, 100)
        assert found == engine_samples(store, BASE, 100)[0]
        assert [s[:3] for s in found] == [("web", "worker", "messaging")]
        spans = {s.span_id: s for s in store.newest_spans_since(BASE, limit=100)}
        assert spans[span_id(1)].links == []


def test_a_span_sent_again_with_links_joins_no_other_trace(tmp_path: Path) -> None:
    """The copy's links join nothing either: reading the request a consumer handled (by the
    traces linking to the producer's, as trace and search follow a message) finds only the
    consumer that was stored with the link, not the one whose copy brought it later."""
    message = SpanLink(trace_id(0), span_id(0))
    producer = SpanRecord(trace_id(0), span_id(0), None, "web", "send", "PRODUCER", BASE, BASE + 10)

    def consumer(n: int, links: list[SpanLink]) -> SpanRecord:
        return SpanRecord(trace_id(n), span_id(n), None, "worker", "handle", "CONSUMER",
                          BASE + n, BASE + 20, links=links)  # fmt: skip

    with Store(tmp_path / "s.db") as store:
        store.write_spans([producer, consumer(1, []), consumer(2, [message])])
        store.write_spans([consumer(1, [message]), consumer(3, [message])])
        assert store.trace_ids_linking_to([trace_id(0)]) == {trace_id(2), trace_id(3)}
        assert [s.span_id for s in store.spans_linking_to(trace_id(0), span_id(0))] == [
            span_id(2), span_id(3)
        ]  # fmt: skip
