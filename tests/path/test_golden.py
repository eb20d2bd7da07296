"""Golden tests: synthetic topologies with paths worked out by hand.

Each test writes the spans a deployment would have exported, runs the whole engine through an
in-memory read backend, and checks what an operator would read: which traces were joined, the
hops with their waits, the critical path, errors and warnings. Every document is also validated
against the JSON Schema shipped in the package.
"""

from __future__ import annotations

import time

import jsonschema
import pytest
from trace_topologies import MS, T0, MemorySource, Topology, checkout

from tracekit.path import Path, build_path, load_schema, reconstruct, service_map


def run(t: Topology, query: str | None = None, **options: bool) -> Path:
    path = reconstruct(MemorySource(t.spans, t.logs), query or t.correlation_id or "", **options)
    assert path is not None
    doc = path.to_json()
    # jsonschema takes seconds on 10,000 spans; a sample of them checks the same shape
    doc["spans"] = doc["spans"][:200]
    jsonschema.validate(doc, load_schema())
    return path


def names(path: Path, span_ids: list[str]) -> list[str]:
    by_id = {s.record.span_id: f"{s.service}:{s.record.name}" for s in path.spans}
    return [by_id[i] for i in span_ids]


def hop_summary(path: Path) -> list[tuple[str, str, str, str | None, float | None]]:
    return [
        (h.from_service, h.to_service, h.type, h.destination, h.queue_wait_ms) for h in path.hops
    ]


def test_checkout_path_has_every_service_hop_log_and_the_critical_path() -> None:
    path = run(checkout())
    doc = path.to_json()
    assert doc["schema"] == "tracekit.path/v1"
    assert doc["correlation_id"] == "req-checkout-1"
    assert doc["services"] == ["gateway", "orders", "payments", "bank"]
    assert doc["duration_ms"] == 200.0
    assert hop_summary(path) == [
        ("gateway", "orders", "http", "POST /orders", None),
        ("orders", "payments", "messaging", "orders.created", 15.0),
        ("payments", "bank", "http", "POST /charge", None),
    ]
    assert path.hops[1].latency_ms == 160.0  # publish start 40 -> consumer end 200
    assert names(path, path.critical_path) == [
        "gateway:POST /checkout", "gateway:POST /orders", "orders:POST /orders",
        "orders:INSERT orders", "orders:publish orders.created", "payments:process orders.created",
        "payments:POST /charge", "bank:POST /charge",
    ]  # fmt: skip
    assert [(log["service"], log["body"]) for log in doc["logs"]] == [
        ("orders", "order 1042 created"),
        ("payments", "charging card for order 1042"),
        ("bank", "charge approved"),
    ]
    assert [s["depth"] for s in doc["spans"]] == [0, 1, 2, 3, 3, 4, 5, 6]
    # own time, and own time on the path: the gateway's last 20 ms, after orders answered, are not
    # on it (the request ends with payments' work); payments waited 15 ms in the queue
    assert [(s["self_ms"], s["critical_ms"], s["critical_wait_ms"]) for s in doc["spans"]] == [
        (25.0, 5.0, 0.0), (4.0, 2.0, 0.0), (66.0, 13.0, 0.0), (20.0, 20.0, 0.0),
        (5.0, 5.0, 0.0), (30.0, 30.0, 15.0), (4.0, 4.0, 0.0), (106.0, 106.0, 0.0),
    ]  # fmt: skip
    assert doc["errors"] == [] and doc["warnings"] == []


def test_fan_out_and_fan_in_across_queues() -> None:
    t = Topology()
    root = t.span("gateway", "POST /shipments", "SERVER", 0, 30)
    results = []
    for i, (service, end) in enumerate([("inventory", 80), ("billing", 150), ("shipping", 90)]):
        producer = t.publish(root, f"{service}.requests", 10 + 5 * i, 14 + 5 * i)
        worker = t.consume(service, f"{service}.requests", 30 + 5 * i, end, producer)
        results.append(t.publish(worker, "results", end - 5, end - 1))
    t.new_trace()
    aggregator = t.consume("aggregator", "results", 200, 260, links=results, correlated=False)
    path = run(t)
    assert path.trace_ids == [root.trace_id, aggregator.trace_id]
    assert len(path.hops) == 6
    fan_in = [h for h in path.hops if h.to_service == "aggregator"]
    assert sorted((h.from_service, h.queue_wait_ms) for h in fan_in) == [
        ("billing", 51.0), ("inventory", 121.0), ("shipping", 111.0),
    ]  # fmt: skip
    # the batch hangs under the last message it waited for, and that chain decides the end;
    # the gateway published inventory's request before billing's, one after the other
    placed = next(s for s in path.spans if s.record is aggregator)
    assert placed.parent is not None and placed.parent.service == "billing"
    assert names(path, path.critical_path) == [
        "gateway:POST /shipments", "gateway:publish inventory.requests",
        "gateway:publish billing.requests",
        "billing:process billing.requests", "billing:publish results",
        "aggregator:process results",
    ]  # fmt: skip


def test_retries_are_sequential_hops_and_both_attempts_are_on_the_critical_path() -> None:
    t = Topology()
    root = t.span("gateway", "GET /orders/7", "SERVER", 0, 100)
    first, first_server = t.http(root, "orders", "/orders/7", 5, 40, status_code=503)
    second, _ = t.http(root, "orders", "/orders/7", 50, 95)
    path = run(t)
    assert [h.from_span_id for h in path.hops] == [first.span_id, second.span_id]
    assert [(e.service, e.message) for e in path.errors] == [
        ("gateway", "HTTP 503"), ("orders", "HTTP 503"),
    ]  # fmt: skip
    assert first.span_id in path.critical_path and second.span_id in path.critical_path
    assert first_server.span_id in path.critical_path


def test_queue_hop_that_starts_a_new_trace_is_joined_through_its_link() -> None:
    t = Topology()
    root = t.span("web", "POST /signup", "SERVER", 0, 20)
    producer = t.publish(root, "emails", 5, 8, system="rabbitmq")
    t.new_trace()
    mailer = t.consume("mailer", "emails", 58, 90, links=[producer], correlated=False,
                       system="rabbitmq")  # fmt: skip
    t.span("mailer", "smtp send", "CLIENT", 60, 88, mailer, correlated=False)
    path = run(t)
    assert path.trace_ids == [root.trace_id, mailer.trace_id]
    assert hop_summary(path) == [("web", "mailer", "messaging", "emails", 50.0)]
    assert path.hops[0].system == "rabbitmq"
    assert [s.depth for s in path.spans] == [0, 1, 2, 3]
    assert path.duration_ms == 90.0


def test_batch_consumer_links_to_every_message() -> None:
    t = Topology()
    root = t.span("importer", "POST /import", "SERVER", 0, 40)
    producers = [t.publish(root, "rows", 5 + 10 * i, 7 + 10 * i) for i in range(3)]
    t.new_trace()
    batch = t.consume("loader", "rows", 100, 130, links=producers, correlated=False)
    path = run(t)
    assert [(h.from_span_id, h.to_span_id, h.queue_wait_ms) for h in path.hops] == [
        (producers[0].span_id, batch.span_id, 93.0),
        (producers[1].span_id, batch.span_id, 83.0),
        (producers[2].span_id, batch.span_id, 73.0),
    ]
    placed = next(s for s in path.spans if s.record is batch)
    assert placed.parent is not None and placed.parent.record is producers[2]


def test_traces_reachable_only_through_links_in_both_directions() -> None:
    t = Topology()
    root = t.span("api", "POST /report", "SERVER", 0, 10)
    producer = t.publish(root, "reports", 2, 4)
    t.new_trace()
    worker = t.consume("worker", "reports", 20, 50, links=[producer], correlated=False)
    second = t.publish(worker, "pdfs", 45, 48)
    t.new_trace()
    renderer = t.consume("renderer", "pdfs", 60, 90, links=[second], correlated=False)
    unrelated = Topology("someone-else")
    unrelated.span("api", "GET /health", "SERVER", 0, 1, trace_id=f"{99:032x}")
    source = MemorySource(t.spans + unrelated.spans)

    by_correlation = reconstruct(source, "req-7f3a")
    by_middle_trace = reconstruct(source, worker.trace_id.upper())
    assert by_correlation is not None and by_middle_trace is not None
    want = [root.trace_id, worker.trace_id, renderer.trace_id]
    assert by_correlation.trace_ids == want
    assert sorted(by_middle_trace.trace_ids) == sorted(want)
    assert by_middle_trace.correlation_id == "req-7f3a"
    assert [h.to_service for h in by_correlation.hops] == ["worker", "renderer"]


@pytest.mark.parametrize("skew_ms", [200, -200])
def test_clock_skew_of_200_ms_is_adjusted_and_reported(skew_ms: int) -> None:
    t = Topology()
    root = t.span("gateway", "GET /cart", "SERVER", 0, 300)
    client = t.span("gateway", "GET /cart", "CLIENT", 100, 300, root)
    server = t.span("cart", "GET /cart", "SERVER", 110 + skew_ms, 280 + skew_ms, client)
    query = t.span("cart", "SELECT cart", "CLIENT", 120 + skew_ms, 200 + skew_ms, server)
    path = run(t)
    placed = {s.record.span_id: s for s in path.spans}
    # centred in the 200 ms client span: 15 ms of network on each side
    assert placed[server.span_id].start_unix_nano == T0 + 115 * MS
    assert placed[query.span_id].start_unix_nano == T0 + 125 * MS  # same clock, same shift
    shift = 5 - skew_ms
    assert path.warnings == [
        f"clock skew adjusted on cart: shifted {shift:+.1f} ms "
        "(1 span and their children on the same clock)"
    ]
    raw = run(t, adjust_skew=False)
    raw_server = next(s for s in raw.spans if s.record is server)
    assert raw_server.start_unix_nano == server.start_unix_nano and raw.warnings == []


def test_consumer_that_starts_before_its_producer_is_moved_after_it() -> None:
    t = Topology()
    root = t.span("shop", "POST /pay", "SERVER", 300, 320)
    producer = t.publish(root, "payments", 305, 310)
    t.consume("ledger", "payments", 150, 170, producer)  # ledger's clock is ~200 ms behind
    path = run(t)
    assert path.hops[0].queue_wait_ms == 0.0
    assert path.warnings[0].startswith("clock skew adjusted on ledger: shifted +160.0 ms")


def test_service_in_the_middle_that_exported_nothing() -> None:
    t = Topology()
    root = t.span("gateway", "GET /orders", "SERVER", 0, 300)
    client = t.span("gateway", "GET /orders", "CLIENT", 10, 290, root)
    # orders (between gateway and payments) exported nothing: payments' parent id is unknown
    payments = t.span("payments", "POST /charge", "SERVER", 50, 150, parent_span_id="ab" * 8)
    path = run(t)
    placed = next(s for s in path.spans if s.record is payments)
    assert placed.parent is not None and placed.parent.record is client
    assert placed.depth == 2
    assert path.warnings == [
        f"parent span missing for payments 'POST /charge' ({payments.span_id}): parent "
        f"{'ab' * 8}; attached under gateway 'GET /orders' ({client.span_id})"
    ]
    assert path.hops == []  # the real hop went through orders, which we cannot see
    assert path.to_json()["spans"][2]["parent_span_id"] == "ab" * 8


def test_siblings_whose_parent_is_missing_are_not_hung_under_each_other() -> None:
    """The root was never exported: its two children are both orphans. Neither is the other's
    parent (the later one began after the earlier had ended): both stand as roots, each its own
    work on the critical path, which adds up to the request's duration less the gap between
    them (docs/cli.md)."""
    t = Topology()
    missing = "cd" * 8
    inventory = t.span("api", "GET /inventory", "SERVER", 0, 10, parent_span_id=missing)
    pricing = t.span("api", "GET /pricing", "SERVER", 12, 15, parent_span_id=missing)
    path = run(t)
    placed = {s.record.span_id: s for s in path.spans}
    assert placed[inventory.span_id].parent is None and placed[pricing.span_id].parent is None
    assert all("attached under" not in warning for warning in path.warnings)
    document = path.to_json()
    critical = {s["name"]: s["critical_ms"] for s in document["spans"]}
    assert critical == {"GET /inventory": pytest.approx(10.0), "GET /pricing": pytest.approx(3.0)}
    assert document["duration_ms"] == pytest.approx(10.0 + 2.0 + 3.0)


def test_a_request_entering_from_a_caller_whose_spans_are_elsewhere_is_said_as_such() -> None:
    """Behind an API gateway or a mesh proxy that traces, every request arrives with a
    traceparent whose span is kept elsewhere: the entry span's parent is never here. That is
    said as where the trace came from, not as a span missing in the middle of the request; a
    service inside the request that exported nothing still is."""
    t = Topology()
    gateway = t.span("gateway", "GET /checkout/{n}", "SERVER", 0, 300, parent_span_id="ab" * 8)
    client = t.span("gateway", "POST", "CLIENT", 10, 290, gateway)
    orders = t.span("orders", "POST /orders", "SERVER", 20, 280, parent_span_id="cd" * 8)
    path = run(t)
    assert path.warnings == [
        f"the trace began before gateway 'GET /checkout/{{n}}' ({gateway.span_id}): its parent"
        f" span {'ab' * 8} is not here (a caller that keeps its spans elsewhere, such as a"
        " gateway or mesh proxy, a span its sampler left out, or one not received yet)",
        f"parent span missing for orders 'POST /orders' ({orders.span_id}): parent {'cd' * 8};"
        f" attached under gateway 'POST' ({client.span_id})",
    ]
    assert [s.record for s in path.spans] == [gateway, client, orders]


def test_a_correlation_id_on_too_many_traces_says_how_many_were_left_out() -> None:
    t = Topology("busy")
    for n in range(700):
        t.new_trace()
        t.span("api", "GET /ping", "SERVER", n, n + 0.5)
    path = run(t)
    assert len(path.spans) == 500
    assert path.warnings == ["more than 500 traces: showing 500; 200 more found, not read"]


def test_error_deep_in_the_path_carries_the_exception_message() -> None:
    from tracekit.records import SpanEvent

    t = checkout()
    bank = next(s for s in t.spans if s.service == "bank")
    bank.status = "ERROR"
    bank.events.append(
        SpanEvent("exception", bank.end_unix_nano,
                  {"exception.type": "ConnectionResetError", "exception.message": "peer reset"})
    )  # fmt: skip
    payments = next(s for s in t.spans if s.service == "payments")
    payments.status, payments.status_message = "ERROR", "charge failed: upstream bank"
    path = run(t)
    assert [e.to_json() for e in path.errors] == [
        {"span_id": payments.span_id, "service": "payments",
         "message": "charge failed: upstream bank", "trace_id": payments.trace_id},
        {"span_id": bank.span_id, "service": "bank",
         "message": "ConnectionResetError: peer reset", "trace_id": bank.trace_id},
    ]  # fmt: skip


def test_ten_thousand_span_request() -> None:
    t = Topology()
    root = t.span("gateway", "POST /bulk", "SERVER", 0, 20_000)
    for i in range(1999):
        _, server = t.http(root, f"svc-{i % 20}", f"/items/{i}", 5 + 10 * i, 14 + 10 * i)
        for j in range(3):
            t.span(server.service, f"step {j}", "INTERNAL", 8 + 10 * i + j, 9 + 10 * i + j, server)
    parent = root
    for k in range(4):
        parent = t.span("gateway", f"flush {k}", "INTERNAL", 19_995 + k / 2, 19_999 - k / 2, parent)
    path = run(t)
    assert len(path.spans) == 10_000
    assert len(path.hops) == 1999
    assert len(path.services) == 21
    # sequential calls: every client and its server decide the end-to-end time
    assert len(path.critical_path) == 1 + 2 * 1999 + 3 * 1999 + 4
    assert max(s.depth for s in path.spans) == 4


def test_ten_thousand_deep_chain_does_not_recurse() -> None:
    t = Topology()
    parent = t.span("a", "root", "SERVER", 0, 20_000)
    for i in range(1, 10_000):
        parent = t.span("a", f"step {i}", "INTERNAL", i, 20_000 - i, parent)
    path = run(t)
    assert path.spans[-1].depth == 9_999
    assert len(path.critical_path) == 10_000


def test_orphans_inside_a_ten_thousand_deep_chain_are_placed_in_seconds() -> None:
    """Placing an orphan asked every enclosing span for its ancestors: in a recursion 10,000
    levels deep, 64 spans whose parent never arrived took about half a minute. Each now
    hangs under the deepest level that encloses it, at once."""
    t = Topology()
    parent = t.span("a", "root", "SERVER", 0, 20_000)
    for i in range(1, 10_000):
        parent = t.span("a", f"step {i}", "INTERNAL", i, 20_000 - i, parent)
    for k in range(64):
        at = 10_000 + k / 100  # apart: an orphan never encloses another
        t.span("a", f"lost {k}", "INTERNAL", at, at, parent_span_id=f"{0xDEAD00 + k:016x}")
    started = time.process_time()  # CPU: wall time waits on the machine's other processes
    path = run(t)
    assert time.process_time() - started < 5
    lost = [s for s in path.spans if s.record.name.startswith("lost")]
    assert len(lost) == 64
    assert {s.parent.record.span_id for s in lost if s.parent} == {parent.span_id}


def test_a_pull_consumer_whose_process_span_links_hangs_under_the_message() -> None:
    """A pull consumer (Kafka, SQS) starts a trace at its "receive" span; the "process" span
    below it links to the message. Only a trace root's own links placed a trace, so the
    worker's trace stood beside the request: on a clock 500 ms behind, the request seemed
    to start in the worker, no skew was fixed and the hop took -460 ms. The receive now
    hangs under the producer its process span links to."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 100)
    producer = t.publish(root, "orders", 10, 20)
    t.new_trace()
    receive = t.span("worker", "receive orders", "CONSUMER", -480, -440, correlated=False)
    process = t.consume("worker", "orders", -470, -450, receive, links=[producer],
                        correlated=False)  # fmt: skip
    path = run(t)
    placed = {s.record.span_id: s for s in path.spans}
    assert placed[receive.span_id].parent is placed[producer.span_id]
    assert path.services == ["shop", "worker"]
    assert (path.start_unix_nano - T0) / MS == 0.0 and path.duration_ms == 100.0
    assert [(s.record.name, s.depth) for s in path.spans] == [
        ("POST /order", 0), ("publish orders", 1), ("receive orders", 2), ("process orders", 3),
    ]  # fmt: skip
    assert [(h.from_span_id, h.to_span_id, h.latency_ms) for h in path.hops] == [
        (producer.span_id, process.span_id, 30.0)  # publish start 10 -> process end 40
    ]


def test_a_job_already_running_when_the_message_came_is_not_moved_after_it() -> None:
    """An import job's root (no messaging span) was running long before the message its
    "process" span links to was published. Placing every root by the links below it hung the
    job under the producer and moved it, as if skewed, 5 s later: the process span was shown
    at +5.05 s instead of the +30 ms recorded. Only a messaging root (a pull consumer's
    "receive") is placed by its children's links."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 100)
    producer = t.publish(root, "orders", 10, 20)
    t.new_trace()
    job = t.span("importer", "nightly import", "INTERNAL", -5000, 200, correlated=False)
    process = t.consume("importer", "orders", 30, 40, job, links=[producer], correlated=False)
    path = run(t)
    placed = {s.record.span_id: s for s in path.spans}
    assert placed[job.span_id].parent is None
    assert (placed[process.span_id].start_unix_nano - T0) / MS == 30.0
    assert not [w for w in path.warnings if "clock skew" in w]
    assert [(h.to_span_id, h.latency_ms) for h in path.hops] == [(process.span_id, 30.0)]


def test_a_consumer_under_a_polling_span_never_exported_hangs_under_its_message() -> None:
    """A worker's polling loop is a span that never ends, so it is never exported: the
    "receive" span below it is an orphan in a trace with no root, and stood beside the
    request (on a clock 500 ms behind: the request seemed to start in the worker, its hop
    took -460 ms). It now hangs under the message its trace links to, and says so."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 100)
    producer = t.publish(root, "orders", 10, 20)
    t.new_trace()
    receive = t.span("worker", "receive orders", "CONSUMER", -480, -440, correlated=False,
                     parent_span_id="00000000000000aa")  # fmt: skip
    process = t.consume("worker", "orders", -470, -450, receive, links=[producer],
                        correlated=False)  # fmt: skip
    path = run(t)
    assert [(s.record.name, s.depth) for s in path.spans] == [
        ("POST /order", 0), ("publish orders", 1), ("receive orders", 2), ("process orders", 3),
    ]  # fmt: skip
    assert path.services == ["shop", "worker"] and path.duration_ms == 100.0
    assert [(h.to_span_id, h.latency_ms) for h in path.hops] == [(process.span_id, 30.0)]
    assert path.warnings[0] == (
        f"parent span missing for worker 'receive orders' ({receive.span_id}): parent "
        f"00000000000000aa; attached under shop 'publish orders' ({producer.span_id}), "
        "the message it links to"
    )


def test_a_call_through_internal_spans_is_still_a_hop_and_a_service_map_edge() -> None:
    """A client library's span for one attempt, or a proxy's own span in the server, stands
    between the CLIENT span and the SERVER span it reached. Only a SERVER whose parent is the
    CLIENT counted: the path listed "api" with no hop into it and the service map had no
    gateway -> api edge. The hop now looks through INTERNAL spans to the client."""
    t = Topology()
    root = t.span("gateway", "GET /order", "SERVER", 0, 100)
    first = t.span("gateway", "GET /stock", "CLIENT", 10, 40, root)
    attempt = t.span("gateway", "attempt 1", "INTERNAL", 11, 39, first)
    stock = t.span("stock", "GET /stock", "SERVER", 12, 38, attempt)
    second = t.span("gateway", "GET /price", "CLIENT", 50, 90, root)
    ingress = t.span("price", "ingress", "INTERNAL", 52, 88, second)
    price = t.span("price", "GET /price", "SERVER", 53, 87, ingress)
    same = t.span("price", "INTERNAL call", "INTERNAL", 60, 70, price)
    t.span("price", "GET /self", "SERVER", 61, 69, same)  # one service: no hop
    path = run(t)
    assert [(h.from_span_id, h.to_span_id, h.type, h.latency_ms) for h in path.hops] == [
        (first.span_id, stock.span_id, "http", 30.0),
        (second.span_id, price.span_id, "http", 40.0),
    ]
    edges = {(e.from_service, e.to_service, e.type, e.calls) for e in service_map(t.spans)}
    assert edges == {("gateway", "stock", "http", 1), ("gateway", "price", "http", 1)}


def test_unknown_id_is_not_found_and_empty_records_build_nothing() -> None:
    assert reconstruct(MemorySource(checkout().spans), "no-such-request") is None
    assert reconstruct(MemorySource([]), "0" * 32) is None
    assert build_path("x", []) is None


def test_logs_follow_their_span_when_it_is_shifted_and_can_be_left_out() -> None:
    t = Topology()
    root = t.span("gateway", "GET /a", "SERVER", 0, 100)
    client = t.span("gateway", "GET /a", "CLIENT", 10, 90, root)
    server = t.span("a", "GET /a", "SERVER", 500, 560, client)  # 480 ms ahead
    t.log(server, 510, "handling")
    path = run(t)
    assert path.logs[0].time_unix_nano == T0 + 30 * MS
    assert run(t, with_logs=False).logs == []
