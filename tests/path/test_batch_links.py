"""A batch consumer handles the messages of several requests in one span that links to each
producer. It belongs to each of those requests, but it must not join them into one: following
its links back out made ``trace req-A`` show req-B's failed checkout, its error and its critical
path, and ``search`` count req-B's spans and error under req-A.

Written to a real store, read by ``reconstruct`` and ``recent_requests`` as the CLI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path as FilePath

import pytest
from trace_topologies import MemorySource, Topology

from tracekit.path import reconstruct
from tracekit.records import SpanRecord
from tracekit.store import Store


def checkouts(batch_correlation: str | None) -> tuple[Topology, Topology, SpanRecord]:
    """req-A succeeds, req-B fails; each publishes one message; one batch consumes both (in a
    trace of its own, carrying the first message's correlation ID, or none)."""
    a, b = Topology("req-A"), Topology("req-B")
    entry_a = a.span("gateway", "POST /checkout", "SERVER", 0, 20)
    a.publish(entry_a, "orders", 5, 7)
    entry_b = b.span("gateway", "POST /checkout", "SERVER", 10, 900, status="ERROR")
    b.publish(entry_b, "orders", 15, 17)
    b.correlation_id = batch_correlation
    b.new_trace()
    producers = [s for s in a.spans + b.spans if s.kind == "PRODUCER"]
    batch = b.consume("billing", "orders", 950, 990, links=producers, correlated=True)
    return a, b, batch


@pytest.mark.parametrize("batch_correlation", ["req-B", None])
def test_a_batch_consumer_joins_each_request_but_not_the_requests_together(
    tmp_path: FilePath, batch_correlation: str | None
) -> None:
    a, b, batch = checkouts(batch_correlation)
    store = Store(tmp_path / "spans.db")
    store.write_spans(a.spans + b.spans)
    trace_a, trace_b = a.spans[0].trace_id, b.spans[0].trace_id

    for source in (store, MemorySource(a.spans + b.spans)):
        path_a = reconstruct(source, "req-A")
        path_b = reconstruct(source, "req-B")
        assert path_a is not None and path_b is not None
        assert sorted(path_a.trace_ids) == sorted([trace_a, batch.trace_id])
        assert sorted(path_b.trace_ids) == sorted([trace_b, batch.trace_id])
        assert not [s for s in path_a.spans if s.record.status == "ERROR"]

    summaries = {r.correlation_id: r for r in store.recent_requests()}
    assert (summaries["req-A"].span_count, summaries["req-A"].error) == (3, False)
    assert (summaries["req-B"].span_count, summaries["req-B"].error) == (3, True)


def test_the_batch_trace_typed_by_id_shows_every_request_it_handled(tmp_path: FilePath) -> None:
    a, b, batch = checkouts(None)
    store = Store(tmp_path / "spans.db")
    store.write_spans(a.spans + b.spans)
    path = reconstruct(store, batch.trace_id)
    assert path is not None
    assert sorted(path.trace_ids) == sorted(
        [a.spans[0].trace_id, b.spans[0].trace_id, batch.trace_id]
    )


def test_a_batch_of_one_requests_messages_still_joins_its_producer(tmp_path: FilePath) -> None:
    """One job published two messages (one trace, no correlation ID); one consumer took both.
    Its two links lead into one trace: that is no batch of several requests, and the
    producer's trace belongs to the consumer's request."""
    job = Topology(None)
    root = job.span("scheduler", "nightly", "INTERNAL", 0, 10)
    producers = [job.publish(root, "jobs", 2, 3), job.publish(root, "jobs", 5, 6)]
    worker = Topology("run-5")
    batch = worker.consume("worker", "jobs", 20, 40, links=producers)
    store = Store(tmp_path / "spans.db")
    store.write_spans(job.spans + worker.spans)

    for source in (store, MemorySource(job.spans + worker.spans)):
        path = reconstruct(source, "run-5")
        assert path is not None
        assert sorted(path.trace_ids) == sorted([root.trace_id, batch.trace_id])
    (summary,) = store.recent_requests()
    assert summary.span_count == 4


def test_search_counts_what_opening_each_row_shows(tmp_path: FilePath) -> None:
    """A nightly job (no correlation ID: listed, and opened, by its trace id) consumes one batch
    of req-A's and req-B's messages. ``trace <its id>`` follows the batch out to both requests,
    as a typed trace id does; ``search`` counted the job's own two spans."""
    a, b = Topology("req-A"), Topology("req-B")
    a.publish(a.span("gateway", "POST /checkout", "SERVER", 0, 20), "orders", 5, 7)
    b.publish(b.span("gateway", "POST /checkout", "SERVER", 10, 30), "orders", 15, 17)
    job = Topology(None)
    root = job.span("scheduler", "nightly", "INTERNAL", 100, 200)
    producers = [s for s in a.spans + b.spans if s.kind == "PRODUCER"]
    job.consume("billing", "orders", 110, 190, root, links=producers)
    store = Store(tmp_path / "spans.db")
    store.write_spans(a.spans + b.spans + job.spans)

    rows = store.recent_requests()
    assert sorted(r.correlation_id or r.trace_id for r in rows) == sorted(
        ["req-A", "req-B", root.trace_id]
    )
    for row in rows:
        path = reconstruct(store, row.correlation_id or row.trace_id)
        assert path is not None
        assert (row.span_count, row.duration_ms) == (len(path.spans), path.to_json()["duration_ms"])


BATCH_SCRIPT = """
import tracekit
from opentelemetry import trace
from tracekit import correlation, messaging

tracekit.init("shop")
tracer, batch = trace.get_tracer("shop"), []
for n in range({messages}):
    token = correlation.set_correlation_id(f"req-{{n}}")
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
        batch.append(messaging.inject({{}}, system="kafka", destination="orders"))
    correlation.reset_correlation_id(token)
with messaging.consume_batch(batch, system="kafka", destination="orders"):
    pass
tracekit.shutdown()
"""


def test_every_message_of_a_large_batch_reaches_the_consumer_in_its_path(
    tmp_path: FilePath,
) -> None:
    """A consumer polling 1,500 records at a time (``max_poll_records`` raised): the SDK keeps
    the span's last 1,000 links, so the first 500 requests' paths ended at their producer,
    without the hop to the batch that consumed their message."""
    store_path = tmp_path / "spans.db"
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store_path)}
    env.pop("OTEL_SPAN_LINK_COUNT_LIMIT", None)
    subprocess.run(
        [sys.executable, "-c", BATCH_SCRIPT.format(messages=1500)], env=env, check=True,
        timeout=120,
    )  # fmt: skip

    with Store(store_path) as store:
        for request in ("req-0", "req-1", "req-499", "req-500", "req-1499"):
            path = reconstruct(store, request)
            assert path is not None
            assert [(h.from_service, h.to_service, h.type) for h in path.hops] == [
                ("shop", "shop", "messaging")
            ], request
