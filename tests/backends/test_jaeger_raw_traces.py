"""A request read from Jaeger is the request the services sent, as the store shows it.

From Jaeger 1.65 and 2.2 on, api_v3 runs its adjusters on every trace it answers unless asked
for the raw trace (jaegertracing/jaeger#6423). Its clock-skew adjuster measures each span
against its parent as if it were a synchronous call: a consumer quicker than its publish (a
publish waiting for the broker's confirm) does not fit in it, so Jaeger either warns in a span
attribute of its own (the default) or, with ``max_clock_skew_adjust`` set, moves the consumer
into the publish, and the queue wait read from Jaeger was negative. A span whose parent was
never exported gets a warning attribute too. The server here is ``jaeger_fake`` on loopback,
with ``jaeger_adjusters`` doing what Jaeger's adjuster does (no Jaeger can run here).
"""

from __future__ import annotations

from typing import Any

import pytest
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import MemorySource, Topology

from tracekit.backends.jaeger import JaegerSource
from tracekit.path import reconstruct
from tracekit.records import SpanRecord

SECOND = 10**9


def quick_consumer() -> list[SpanRecord]:
    """shop publishes to RabbitMQ for 10 ms (until the confirm); mailer handles the message in
    3 ms, 10 ms after the publish ended; audit's span lost its parent (never exported)."""
    t = Topology("req-quick-consumer")
    root = t.span("shop", "POST /orders", "SERVER", 0, 30)
    producer = t.publish(root, "orders", 5, 15, system="rabbitmq")
    t.consume("mailer", "orders", 25, 28, producer, system="rabbitmq")
    t.span(
        "audit", "POST /audit", "SERVER", 12, 20, parent_span_id="ab" * 8, trace_id=root.trace_id
    )
    return recent(t.spans)


@pytest.mark.parametrize("max_clock_skew_adjust", [0, SECOND])
def test_a_trace_from_jaeger_is_the_one_the_store_shows(
    serve: Any, max_clock_skew_adjust: int
) -> None:
    spans = quick_consumer()
    backend = serve(FakeJaeger(spans, max_clock_skew_adjust=max_clock_skew_adjust))
    for query in ("req-quick-consumer", spans[0].trace_id):
        path = reconstruct(JaegerSource(backend.url), query)
        expected = reconstruct(MemorySource(spans), query, with_logs=False)
        assert path is not None and expected is not None
        assert [hop.queue_wait_ms for hop in path.hops] == [10.0]
        assert path.to_json() == expected.to_json()


def test_a_search_lists_the_request_as_the_services_sent_it(serve: Any) -> None:
    spans = quick_consumer()
    backend = serve(FakeJaeger(spans, max_clock_skew_adjust=SECOND))
    found = JaegerSource(backend.url).recent_requests(service="shop", since_unix_nano=1)
    expected = MemorySource(spans).recent_requests(service="shop", since_unix_nano=1)
    assert [(r.trace_id, r.duration_ms, r.span_count) for r in found] == [
        (r.trace_id, r.duration_ms, r.span_count) for r in expected
    ]
    assert all(r.args["query.raw_traces"] == "true" for r in backend.requests if r.args)


def test_a_span_the_storage_holds_twice_is_one_span(serve: Any) -> None:
    """A collector that retried an export can leave a span twice in Jaeger's storage (Elasticsearch,
    Cassandra). Jaeger's adjusters dropped the copy; a raw trace keeps it, and the store, whose
    (trace, span id) is unique, holds one: search counts it once, as the store does."""
    spans = quick_consumer()
    backend = serve(FakeJaeger([*spans, spans[2]]))
    found = JaegerSource(backend.url).recent_requests(service="shop", since_unix_nano=1)
    assert [r.span_count for r in found] == [len(spans)]
