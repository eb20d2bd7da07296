"""Clock skew: what is evidence of two clocks disagreeing, and what one clock produces anyway.

One machine's spans must come out as recorded, with no warning: a WSGI server span that ends after
its client read the body, a consumer that outlives its producer, two services on one host. Spans
from different hosts that no single clock could produce are moved and reported.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from trace_topologies import MS, T0, MemorySource, Topology

from tracekit.path import Path, load_schema, reconstruct
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli


def run(t: Topology, **options: bool) -> Path:
    path = reconstruct(MemorySource(t.spans, t.logs), t.correlation_id or "", **options)
    assert path is not None
    return path


def on_host(host: str, *spans: SpanRecord, attribute: str = "host.name") -> None:
    for span in spans:
        span.resource = {"service.name": span.service, attribute: host}


def placed_start_ms(path: Path, span: SpanRecord) -> float:
    node = next(s for s in path.spans if s.record is span)
    return (node.start_unix_nano - T0) / MS


def late_ending_call(t: Topology) -> tuple[SpanRecord, SpanRecord, SpanRecord]:
    """gateway calls orders; orders' WSGI span ends 70 ms after the client read the response."""
    root = t.span("gateway", "POST /checkout", "SERVER", 0, 100)
    client = t.span("gateway", "POST /orders", "CLIENT", 10, 60, root)
    server = t.span("orders", "POST /orders", "SERVER", 12, 130, client)
    return root, client, server


def test_server_ending_after_its_client_on_one_host_is_left_alone() -> None:
    t = Topology()
    root, client, server = late_ending_call(t)
    on_host("node-1", root, client, server)
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, server) == 12.0
    assert path.to_json()["duration_ms"] == 130.0


def test_server_ending_after_its_client_without_host_attributes_is_no_skew() -> None:
    """The demo's case: processes on one machine whose resources do not name the host."""
    t = Topology()
    _, _, server = late_ending_call(t)
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, server) == 12.0


def test_services_on_one_host_are_never_shifted_even_when_a_child_starts_first() -> None:
    t = Topology()
    root = t.span("web", "GET /a", "SERVER", 0, 100)
    client = t.span("web", "GET /a", "CLIENT", 10, 90, root)
    server = t.span("api", "GET /a", "SERVER", 5, 80, client)  # odd, but one clock measured it
    on_host("i-0abc", root, client, server, attribute="host.id")
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, server) == 5.0


@pytest.mark.parametrize("skew_ms", [200, -200])
def test_skew_of_200_ms_across_hosts_is_adjusted(skew_ms: int) -> None:
    t = Topology()
    root = t.span("gateway", "GET /cart", "SERVER", 0, 300)
    client = t.span("gateway", "GET /cart", "CLIENT", 100, 300, root)
    server = t.span("cart", "GET /cart", "SERVER", 110 + skew_ms, 280 + skew_ms, client)
    db = t.span("cart-db", "SELECT", "SERVER", 130 + skew_ms, 150 + skew_ms, server)
    on_host("edge-1", root, client)
    on_host("app-7", server, db)  # cart-db runs on cart's host: it moves with cart
    path = run(t)
    assert placed_start_ms(path, server) == 115.0  # centred: 15 ms of network each side
    assert placed_start_ms(path, db) == 135.0
    assert path.warnings == [
        f"clock skew adjusted on cart: shifted {5 - skew_ms:+.1f} ms "
        "(1 span and their children on the same clock)"
    ]


def test_node_spans_stamped_in_whole_milliseconds_are_no_skew() -> None:
    """OpenTelemetry JS stamps a span's start with ``Date.now()`` (whole milliseconds) and its
    end as that start plus a finer duration. On one machine, a Node server read as starting
    0.1 ms before the Python client that called it, and a Python server as starting 0.1 ms after
    the Node client it answered had ended: 3 of 70 requests through a real Node service said
    'clock skew adjusted on ...', one Python server moved 1.5 ms ahead of where it ran."""
    t = Topology()
    root = t.span("gateway", "GET /checkout", "SERVER", 0.395, 7.509)
    call = t.span("gateway", "GET", "CLIENT", 1.098, 5.803, root)
    node = t.span("pricing-node", "GET", "SERVER", 1, 5.412, call)  # began in 1.000-1.999
    node_call = t.span("pricing-node", "GET", "CLIENT", 2, 2.051, node)  # ended by 3.050
    inventory = t.span("inventory", "GET /stock", "SERVER", 2.144, 2.852, node_call)
    path = run(t)
    assert path.warnings == []
    assert [placed_start_ms(path, s) for s in (node, inventory)] == [1.0, 2.144]


def test_node_server_a_whole_millisecond_before_its_caller_is_skew() -> None:
    t = Topology()
    root = t.span("gateway", "GET /checkout", "SERVER", 0, 10)
    call = t.span("gateway", "GET", "CLIENT", 2, 8, root)
    node = t.span("pricing-node", "GET", "SERVER", 1, 5, call)  # began by 1.999: before 2
    path = run(t)
    assert placed_start_ms(path, node) == 3.0
    assert path.warnings[0].startswith("clock skew adjusted on pricing-node: shifted +2.0 ms")


def test_replicas_of_one_service_on_two_hosts_have_two_clocks() -> None:
    t = Topology()
    root = t.span("orders", "GET /o", "SERVER", 300, 400)
    client = t.span("orders", "GET /o/1", "CLIENT", 310, 390, root)
    server = t.span("orders", "GET /o/1", "SERVER", 110, 170, client)  # 200 ms behind
    on_host("a", root, client)
    on_host("b", server)
    path = run(t)
    assert placed_start_ms(path, server) == 320.0
    assert path.warnings[0].startswith("clock skew adjusted on orders: shifted +210.0 ms")


def test_child_longer_than_its_caller_is_left_where_it_started() -> None:
    """A server that outlasts its client cannot be fitted inside it: no evidence of skew."""
    t = Topology()
    root = t.span("gateway", "GET /report", "SERVER", 0, 50)
    client = t.span("gateway", "GET /report", "CLIENT", 5, 30, root)  # client gave up early
    server = t.span("reports", "GET /report", "SERVER", 8, 400, client)
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, server) == 8.0


def test_longer_child_that_starts_before_its_caller_is_made_to_start_with_it() -> None:
    t = Topology()
    root = t.span("gateway", "GET /report", "SERVER", 500, 600)
    client = t.span("gateway", "GET /report", "CLIENT", 505, 530, root)
    server = t.span("reports", "GET /report", "SERVER", 300, 400, client)  # 100 ms > 25 ms
    path = run(t)
    assert placed_start_ms(path, server) == 505.0
    assert path.warnings[0].startswith("clock skew adjusted on reports: shifted +205.0 ms")


def test_server_that_starts_after_its_client_ended_is_moved_into_it() -> None:
    t = Topology()
    root = t.span("gateway", "GET /a", "SERVER", 0, 100)
    client = t.span("gateway", "GET /a", "CLIENT", 10, 90, root)
    server = t.span("a", "GET /a", "SERVER", 300, 340, client)
    path = run(t)
    assert placed_start_ms(path, server) == 30.0
    assert path.warnings[0].startswith("clock skew adjusted on a: shifted -270.0 ms")


def test_consumer_outliving_its_producer_keeps_its_times() -> None:
    t = Topology()
    root = t.span("shop", "POST /pay", "SERVER", 0, 20)
    producer = t.publish(root, "payments", 5, 10)
    consumer = t.consume("ledger", "payments", 15, 900, producer)
    t.span("ledger", "INSERT", "CLIENT", 20, 880, consumer)
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, consumer) == 15.0
    assert path.hops[0].queue_wait_ms == 5.0


def test_a_trace_joined_through_a_link_moves_as_one_clock() -> None:
    """A joined trace holds two roots of one service on one clock, recorded together. The one
    attached under the producer it links to was moved to follow it and the other was not:
    1,000 s apart (249.9 days in the Tempo fixture that showed it)."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 100)
    producer = t.span("shop", "publish orders", "PRODUCER", 10, 20, root)
    t.new_trace()
    long_ago = -1_000_000.0  # ms: the worker's recorded times, on its own clock
    first = t.span("worker", "poll", "INTERNAL", long_ago, long_ago + 5, correlated=False)
    below = t.span("worker", "fetch", "INTERNAL", long_ago + 1, long_ago + 2, first,
                   correlated=False)  # fmt: skip
    linked = t.span("worker", "process orders", "CONSUMER", long_ago, long_ago + 5,
                    links=[producer], correlated=False)  # fmt: skip

    path = run(t)

    assert placed_start_ms(path, linked) >= 20.0  # after its producer ended
    assert placed_start_ms(path, first) == placed_start_ms(path, linked)  # as recorded
    assert placed_start_ms(path, below) == placed_start_ms(path, first) + 1.0
    assert placed_start_ms(path, root) == 0.0 and placed_start_ms(path, producer) == 10.0


def test_messages_consumed_in_turn_on_one_clock_move_together() -> None:
    """A worker 200 ms behind consumes two messages of one request in turn. The first "started"
    before its producer and was moved; the second, late enough on its own, was not: the 200 ms
    the worker spent between them became 3 ms, and the request lost its last 200 ms."""
    t = Topology()
    api = t.span("api", "POST /jobs", "SERVER", 0, 50)
    first = t.publish(api, "jobs", 10, 12)
    second = t.publish(api, "jobs", 20, 22)
    done_first = t.consume("worker", "jobs", 15 - 200, 100 - 200, first)
    done_second = t.consume("worker", "jobs", 300 - 200, 400 - 200, second)
    t.span("worker", "UPDATE jobs", "CLIENT", 310 - 200, 390 - 200, done_second)
    on_host("api-host", api, first, second)
    on_host("worker-host", *t.spans[3:])
    path = run(t)
    first_at, second_at = placed_start_ms(path, done_first), placed_start_ms(path, done_second)
    assert first_at == 12.0  # at its producer's end, as before
    assert second_at - first_at == 285.0  # what the worker's own clock says: 100 - (-185)
    assert placed_start_ms(path, t.spans[-1]) - second_at == 10.0
    assert path.to_json()["duration_ms"] == 397.0
    assert path.warnings == [
        "clock skew adjusted on worker: shifted +197.0 ms (2 spans and their children on the "
        "same clock)"
    ]


def test_messages_from_two_clocks_bound_two_differences() -> None:
    """The worker keeps true time; service b runs 150 ms ahead (its server span starts inside
    the call, so nothing shows it). Only the consumer of b's message "started" before its
    producer: moving the worker's other consumer with it pushed a correct span 142 ms late."""
    t = Topology()
    api = t.span("api", "POST /x", "SERVER", 0, 500)
    first = t.publish(api, "jobs", 20, 22)
    call = t.span("api", "GET /b", "CLIENT", 10, 300, api)
    b = t.span("b", "GET /b", "SERVER", 200, 290, call)
    second = t.publish(b, "jobs", 250, 252)
    done_first = t.consume("worker", "jobs", 30, 40, first)
    done_second = t.consume("worker", "jobs", 110, 120, second)
    on_host("a", api, first, call)
    on_host("b", b, second)
    on_host("w", done_first, done_second)
    path = run(t)
    assert placed_start_ms(path, done_first) == 30.0  # as recorded: nothing says otherwise
    assert placed_start_ms(path, done_second) == 252.0  # at its producer's end


def test_a_worker_reached_again_through_another_host_is_not_moved_twice() -> None:
    """worker (50 ms behind) -> relay (30 ms ahead) -> worker again: the worker's two consumers
    take messages from two clocks, so each is placed against its own producer, and the relay,
    whose consumer needed no shift, stays where it was recorded."""
    t = Topology()
    api = t.span("api", "POST /x", "SERVER", 0, 1000)
    first = t.publish(api, "jobs", 10, 12)
    worker_first = t.consume("worker", "jobs", -40, -20, first)
    onward = t.publish(worker_first, "more", -30, -29)
    relay = t.consume("relay", "more", 60, 90, onward)
    back = t.publish(relay, "back", 70, 72)
    worker_again = t.consume("worker", "back", 0, 20, back)
    on_host("a", api, first)
    on_host("w", worker_first, onward, worker_again)
    on_host("v", relay, back)
    path = run(t)
    assert placed_start_ms(path, worker_first) == 12.0
    assert placed_start_ms(path, relay) == 60.0
    assert placed_start_ms(path, worker_again) == 72.0


def test_a_host_attribute_that_is_not_a_string_is_no_host() -> None:
    """A resource's host.name stored as a list (an SDK or backend that sent an array) made
    `trace` and `diff` exit 2 with "unhashable type: 'list'"; such a value names no host."""
    t = Topology()
    root = t.span("gateway", "POST /orders", "SERVER", 0, 50)
    send = t.span("gateway", "publish orders", "PRODUCER", 10, 12, root)
    work = t.span("worker", "process orders", "CONSUMER", 30, 40, send)
    for span, host in ((root, ["edge-1", "edge-2"]), (send, ["edge-1", "edge-2"]), (work, [1])):
        span.resource = {"service.name": span.service, "host.name": host}
    path = run(t)
    assert [node.record for node in path.spans] == [root, send, work]
    assert placed_start_ms(path, work) == 30.0


@pytest.mark.parametrize(
    ("consumed_ms", "early", "latency"),
    [((-495, -400), "500.0", "-405.0"),  # handled before it was published: negative latency
     ((-145, 60), "150.0", "55.0")],  # started before: a latency that looks right, no wait
)  # fmt: skip
def test_raw_times_say_why_a_message_was_received_before_it_was_sent(
    consumed_ms: tuple[int, int], early: str, latency: str
) -> None:
    """The worker's clock runs behind: recorded, it took the message before it was published.
    ``--raw-times`` shows the numbers as recorded, and a warning says what they mean."""
    t = Topology()
    root = t.span("shop", "POST /pay", "SERVER", 0, 20)
    producer = t.publish(root, "payments", 5, 10)
    t.consume("ledger", "payments", *consumed_ms, producer)
    raw = run(t, adjust_skew=False)
    assert raw.hops[0].latency_ms == float(latency)
    assert raw.hops[0].queue_wait_ms == 0.0
    assert raw.warnings == [
        f"hop shop -> ledger (kafka payments): received {early} ms before it was sent (latency "
        f"{latency} ms) in recorded times: their clocks disagree (--raw-times skips clock-skew "
        "correction)"
    ]
    adjusted = run(t)
    assert adjusted.hops[0].latency_ms > 0
    assert not any("recorded times" in w for w in adjusted.warnings)


def test_a_service_consuming_its_own_message_on_a_clock_behind_is_moved(
    tmp_path: FilePath,
) -> None:
    """An SDK that names no host (the default of most): orders publishes a message its own
    worker replica, 50 ms behind, consumes. One clock cannot show a message consumed before it
    was published, yet `trace` kept the times: the request began 40 ms before its entry span,
    the hop took -15 ms, and the critical path covered 20 of the 60 ms shown."""
    t = Topology()
    root = t.span("orders", "POST /orders", "SERVER", 0, 20)
    producer = t.publish(root, "orders.created", 5, 8)
    consumer = t.consume("orders", "orders.created", 10 - 50, 40 - 50, producer)
    update = t.span("orders", "UPDATE orders", "CLIENT", 12 - 50, 38 - 50, consumer)
    doc = trace_json(tmp_path, t)
    spans = {s["span_id"]: s for s in doc["spans"]}
    assert (spans[consumer.span_id]["start_unix_nano"] - T0) / MS == 8.0  # at its producer's end
    assert (spans[update.span_id]["start_unix_nano"] - T0) / MS == 10.0  # and its work with it
    assert doc["hops"][0]["latency_ms"] == 33.0  # publish start to handler end
    assert doc["duration_ms"] == 38.0
    assert sum(s["critical_ms"] + s["critical_wait_ms"] for s in doc["spans"]) == 38.0
    assert doc["warnings"] == [
        "clock skew adjusted on orders: shifted +48.0 ms (1 span and their children on the "
        "same clock)"
    ]


def test_a_service_answering_its_own_call_on_a_clock_behind_is_centred(tmp_path: FilePath) -> None:
    t = Topology()
    root = t.span("orders", "GET /orders/7", "SERVER", 0, 100)
    client = t.span("orders", "GET /prices/7", "CLIENT", 10, 90, root)
    server = t.span("orders", "GET /prices/7", "SERVER", 12 - 100, 82 - 100, client)
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == server.span_id)
    assert (start - T0) / MS == 15.0  # 5 ms of network each side
    assert doc["duration_ms"] == 100.0
    assert doc["warnings"][0].startswith("clock skew adjusted on orders: shifted +103.0 ms")


def test_a_service_consuming_its_own_message_in_time_is_left_alone(tmp_path: FilePath) -> None:
    t = Topology()
    root = t.span("orders", "POST /orders", "SERVER", 0, 20)
    producer = t.publish(root, "orders.created", 5, 8)
    consumer = t.consume("orders", "orders.created", 7, 40, producer)  # took it mid-publish
    doc = trace_json(tmp_path, t)
    assert doc["warnings"] == []
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == consumer.span_id)
    assert (start - T0) / MS == 7.0


def test_a_call_a_consumer_made_on_a_clock_behind_is_centred_in_it(tmp_path: FilePath) -> None:
    """fulfilment's handler calls inventory (200 ms behind) through a client that carries the
    trace context but records no span: the SERVER span hangs straight under the CONSUMER. It
    was placed at the consumer's end, as a message would be, so the request seemed to end
    60 ms after the handler had returned, waiting on a call that was over by then."""
    t = Topology()
    root = t.span("orders", "POST /orders", "SERVER", 0, 20)
    producer = t.publish(root, "orders.created", 5, 8)
    consumer = t.consume("fulfilment", "orders.created", 10, 110, producer)
    server = t.span("inventory", "GET /stock/{sku}", "SERVER", 30 - 200, 90 - 200, consumer)
    on_host("node-1", root, producer)
    on_host("node-2", consumer)
    on_host("node-3", server)
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == server.span_id)
    assert (start - T0) / MS == 30.0  # centred: 20 ms each side inside the handler
    assert doc["duration_ms"] == 110.0
    assert doc["critical_path"][-1] == server.span_id
    assert doc["warnings"] == [
        "clock skew adjusted on inventory: shifted +200.0 ms (1 span and their children on the "
        "same clock)"
    ]


def test_a_server_ahead_called_through_an_attempt_span_is_centred_in_it(
    tmp_path: FilePath,
) -> None:
    """gateway's HTTP client records the call (CLIENT) and each attempt (INTERNAL); orders, on
    a clock 1 s ahead, answered inside the attempt. Its span started after the attempt had
    ended, as no single clock records a call: it was left there, with no warning, so the
    100 ms request lasted 1.08 s and its critical path waited 932 ms on nothing."""
    t = Topology()
    root = t.span("gateway", "GET /orders/7", "SERVER", 0, 100)
    client = t.span("gateway", "GET /orders/7", "CLIENT", 10, 90, root)
    attempt = t.span("gateway", "attempt 1", "INTERNAL", 12, 88, client)
    server = t.span("orders", "GET /orders/{id}", "SERVER", 1020, 1080, attempt)
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == server.span_id)
    assert (start - T0) / MS == 20.0  # centred: 8 ms of network each side of the attempt
    assert doc["duration_ms"] == 100.0
    assert [s["critical_wait_ms"] for s in doc["spans"]] == [0.0, 0.0, 0.0, 0.0]
    assert doc["warnings"] == [
        "clock skew adjusted on orders: shifted -1000.0 ms (1 span and their children on the "
        "same clock)"
    ]


def test_a_proxy_ahead_answering_a_call_is_centred_in_it(tmp_path: FilePath) -> None:
    """orders' proxy records its own span (INTERNAL) over the SERVER span of the call, on a
    clock 1 s ahead of gateway's: the proxy's span started after the CLIENT span had ended.
    It was left there, with no warning (1 s behind, it was centred), so the 100 ms request
    lasted 1.09 s, 922 ms of it a wait on nothing."""
    t = Topology()
    root = t.span("gateway", "GET /orders/7", "SERVER", 0, 100)
    client = t.span("gateway", "GET /orders/7", "CLIENT", 10, 90, root)
    proxy = t.span("orders", "proxy", "INTERNAL", 1012, 1088, client)
    t.span("orders", "GET /orders/{id}", "SERVER", 1020, 1080, proxy)
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == proxy.span_id)
    assert (start - T0) / MS == 12.0  # centred: 2 ms of network each side
    assert doc["duration_ms"] == 100.0
    assert [s["critical_wait_ms"] for s in doc["spans"]] == [0.0, 0.0, 0.0, 0.0]
    assert doc["warnings"] == [
        "clock skew adjusted on orders: shifted -1000.0 ms (1 span and their children on the "
        "same clock)"
    ]


def test_a_proxy_ahead_behind_a_mesh_sidecar_is_centred_in_the_sidecar(tmp_path: FilePath) -> None:
    """The call leaves through a mesh sidecar (its own INTERNAL span under the CLIENT span)
    and reaches orders' proxy (INTERNAL, over the SERVER span) on a clock 1 s ahead. The
    proxy, not directly under the CLIENT span, was left 1 s late with no warning: the 100 ms
    request read 1058 ms, 953 ms of it a wait on nothing."""
    t = Topology()
    root = t.span("api", "GET /x", "SERVER", 0, 100)
    client = t.span("api", "GET /orders", "CLIENT", 10, 60, root)
    sidecar = t.span("sidecar", "egress", "INTERNAL", 11, 59, client)
    proxy = t.span("edge", "proxy /orders", "INTERNAL", 1012, 1058, sidecar)
    server = t.span("orders", "GET /orders", "SERVER", 1013, 1057, proxy)
    doc = trace_json(tmp_path, t)
    starts = {s["span_id"]: (s["start_unix_nano"] - T0) / MS for s in doc["spans"]}
    assert (starts[proxy.span_id], starts[server.span_id]) == (12.0, 13.0)
    assert doc["duration_ms"] == 100.0
    assert [s["critical_wait_ms"] for s in doc["spans"]] == [0.0] * 5
    assert doc["warnings"][0] == (
        "clock skew adjusted on edge: shifted -1000.0 ms (1 span and their children on the "
        "same clock)"
    )


def test_a_server_taking_a_timed_out_attempt_late_is_no_clock_skew(tmp_path: FilePath) -> None:
    """gateway's first attempt timed out at 510 ms and it tried again; orders, overloaded, on
    a clock that agrees, took the abandoned request at 600 ms, while the call was still on.
    Its span was centred in the timed-out attempt, -390 ms, with a skew warning on orders."""
    t = Topology()
    root = t.span("gateway", "GET /x", "SERVER", 0, 1200)
    client = t.span("gateway", "GET /orders", "CLIENT", 10, 1100, root)
    first = t.span("gateway", "attempt 1", "INTERNAL", 10, 510, client, status="ERROR",
                   message="timed out")  # fmt: skip
    late = t.span("orders", "GET /orders", "SERVER", 600, 700, first)
    second = t.span("gateway", "attempt 2", "INTERNAL", 520, 1100, client)
    t.span("orders", "GET /orders", "SERVER", 800, 1090, second)
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == late.span_id)
    assert (start - T0) / MS == 600.0
    assert doc["warnings"] == []
    assert late.span_id not in doc["critical_path"]


def test_each_attempt_of_a_retried_call_is_a_hop_of_its_own_length(tmp_path: FilePath) -> None:
    """A call of 1090 ms made two attempts, the first timing out after 500 ms. Both hops to
    orders read the whole call's 1090 ms; each now reads its own attempt's."""
    t = Topology()
    root = t.span("gateway", "GET /x", "SERVER", 0, 1200)
    client = t.span("gateway", "GET /orders", "CLIENT", 10, 1100, root)
    first = t.span("gateway", "attempt 1", "INTERNAL", 10, 510, client, status="ERROR")
    late = t.span("orders", "GET /orders", "SERVER", 600, 700, first)
    second = t.span("gateway", "attempt 2", "INTERNAL", 520, 1100, client)
    answer = t.span("orders", "GET /orders", "SERVER", 800, 1090, second)
    doc = trace_json(tmp_path, t)
    latencies = {h["to_span_id"]: h["latency_ms"] for h in doc["hops"]}
    assert latencies == {late.span_id: 500.0, answer.span_id: 580.0}


def test_a_long_poll_begun_before_its_message_was_sent_is_no_skew(tmp_path: FilePath) -> None:
    """A pull consumer's "receive" span is its long poll (SQS, Kafka): it began 100 ms
    before the message it returned with was published, as one clock records it, and its
    "process" span, which links to the message, began 7 ms after the publish ended. Taking
    the poll's start for the message's arrival moved the worker 105 ms later with a skew
    warning: the queue wait read 112 ms and the 150 ms request 255 ms."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 120)
    producer = t.publish(root, "orders", 100, 105)
    t.new_trace()
    receive = t.span("worker", "receive orders", "CONSUMER", 0, 112, correlated=False)
    process = t.consume("worker", "orders", 112, 150, receive, links=[producer])
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == process.span_id)
    assert (start - T0) / MS == 112.0
    assert [(h["to_span_id"], h["queue_wait_ms"]) for h in doc["hops"]] == [(process.span_id, 7.0)]
    assert doc["duration_ms"] == 150.0
    assert doc["warnings"] == []


def test_a_long_poll_on_a_clock_behind_places_its_process_span_after_the_publish(
    tmp_path: FilePath,
) -> None:
    """The same long poll on a worker whose clock runs 500 ms behind: its "process" span
    recorded 388 ms before the publish began. The worker was moved by what its poll's start
    needed, 605 ms, so the message seemed queued 112 ms (the poll's wait before the publish)
    where it was taken as soon as it was sent. The process span, which took the message, is
    now what is placed at the publish's end."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 120)
    producer = t.publish(root, "orders", 100, 105)
    t.new_trace()
    receive = t.span("worker", "receive orders", "CONSUMER", -500, -388, correlated=False)
    process = t.consume("worker", "orders", -388, -350, receive, links=[producer])
    doc = trace_json(tmp_path, t)
    start = next(s["start_unix_nano"] for s in doc["spans"] if s["span_id"] == process.span_id)
    assert (start - T0) / MS == 105.0
    assert [(h["to_span_id"], h["queue_wait_ms"]) for h in doc["hops"]] == [(process.span_id, 0.0)]
    assert doc["warnings"] == [
        "clock skew adjusted on worker: shifted +493.0 ms (1 span and their children on the "
        "same clock)"
    ]


def test_a_long_poll_begun_before_the_request_does_not_stretch_it(tmp_path: FilePath) -> None:
    """A pull consumer's long poll began 400 ms before the request did (one clock, no skew):
    the 150 ms request read 550 ms from the poll's start, the worker came first in its
    services, and the poll's 512 ms stood on the critical path, the request's 100 ms entry
    span credited nothing. The poll counts from its message's arrival."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 120)
    producer = t.publish(root, "orders", 100, 105)
    t.new_trace()
    receive = t.span("worker", "receive orders", "CONSUMER", -400, 112, correlated=False)
    t.consume("worker", "orders", 112, 150, receive, links=[producer])
    doc = trace_json(tmp_path, t)
    assert (doc["start_unix_nano"] - T0) / MS == 0.0
    assert doc["duration_ms"] == 150.0
    assert doc["services"] == ["shop", "worker"]
    assert [s["critical_ms"] for s in doc["spans"]] == [100.0, 5.0, 7.0, 38.0]
    poll = next(s for s in doc["spans"] if s["span_id"] == receive.span_id)
    assert (poll["start_unix_nano"] - T0) / MS == -400.0  # the span keeps its own times
    assert doc["warnings"] == []
    text = CliRunner().invoke(
        cli, ["trace", t.correlation_id or "", "--store", str(tmp_path / "tracekit.db"),
              "--format", "text"], env={"COLUMNS": "160"},
    ).stdout  # fmt: skip
    assert "-400.0 ms  512.0 ms *    `- worker: receive orders" in text


def test_work_under_a_call_that_begins_after_it_ended_is_no_clock_skew() -> None:
    """A job another service begins after the call that asked for it returned (202 Accepted),
    in a span of its own (INTERNAL) under the CLIENT span or linking to it, is no proxy over
    the call's server: since proxies' spans were centred in the call, such a job, begun 2 s
    later, was pulled back into the call with a skew warning on the worker (-1980 ms)."""
    t = Topology()
    root = t.span("api", "POST /reports", "SERVER", 0, 100)
    client = t.span("api", "POST /jobs", "CLIENT", 10, 60, root)
    child = t.span("worker", "build report", "INTERNAL", 2000, 2030, client)
    t.new_trace()
    linked = t.span("worker", "build report", "INTERNAL", 3000, 3030, links=[client],
                    correlated=False)  # fmt: skip
    path = run(t)
    assert path.warnings == []
    assert placed_start_ms(path, child) == 2000.0
    assert placed_start_ms(path, linked) == 3000.0


def trace_json(tmp_path: FilePath, t: Topology) -> dict[str, Any]:
    """What ``tracekit trace --format json`` prints for the topology, from a real store."""
    store_file = tmp_path / "tracekit.db"
    with Store(store_file) as store:
        store.write_spans(t.spans)
    result = CliRunner().invoke(
        cli, ["trace", t.correlation_id or "", "--store", str(store_file), "--format", "json"]
    )
    assert (result.exit_code, result.stderr) == (0, "")
    doc: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(doc, load_schema())
    return doc


def scatter_gather(t: Topology, skew_ms: int) -> tuple[SpanRecord, list[SpanRecord]]:
    """gateway gathers five calls to backend, whose clock is ``skew_ms`` ahead; one call is
    slow (times as measured with uvicorn + httpx -> gunicorn + Flask on two hosts)."""
    root = t.span("gateway", "GET /scatter", "SERVER", 0, 583.4)
    calls = [(135.9, 295.8, 265.2, 286.3), (254.1, 303.7, 270.5, 293.7),
             (254.9, 304.0, 271.2, 294.1), (255.6, 582.2, 272.3, 573.0),
             (263.7, 304.4, 272.8, 294.3)]  # fmt: skip
    servers = []
    for client_start, client_end, start, end in calls:
        client = t.span("gateway", "GET", "CLIENT", client_start, client_end, root)
        servers.append(t.span("backend", "GET /item/{i}", "SERVER", start + skew_ms,
                              end + skew_ms, client))  # fmt: skip
        on_host("host-a", client)
    on_host("host-a", root)
    on_host("host-b", *servers)
    return root, servers


def test_calls_into_one_clock_ahead_move_together_in_a_scatter_gather() -> None:
    """The slow call's server starts while its client waits, so alone it shows no skew; its
    four siblings on the same clock do. All five move by one amount, and the request ends
    when its entry span does (it read 780.7 ms, ending in the slow server 197 ms after the
    entry span, the only backend span not moved)."""
    t = Topology()
    root, servers = scatter_gather(t, 200)
    path = run(t)
    doc = path.to_json()
    assert doc["duration_ms"] == 583.4
    shifts = {node.shift_ns for node in path.spans if node.record in servers}
    assert len(shifts) == 1
    (shift,) = shifts
    assert -210 * MS < shift < -190 * MS
    assert path.request_end() is not None and path.request_end().record is root
    assert path.warnings == [
        f"clock skew adjusted on backend: shifted {shift / MS:+.1f} ms "
        "(5 spans and their children on the same clock)"
    ]


def test_calls_on_the_callers_clock_below_a_moved_call_stay_where_recorded() -> None:
    """Nested fan-out: gateway -> backend (200 ms ahead) -> leaf (gateway's clock). Once the
    slow call's backend span is moved with its sibling, leaf's spans under it need no move
    (before, they were moved +199 ms to fit the backend span left 200 ms late)."""
    t = Topology()
    root = t.span("gateway", "GET /nested", "SERVER", 0, 393.2)
    leaves = []
    fans = []
    for client_start, client_end, fan_start, fan_end, slow in (
        (42.0, 105.8, 49.1, 98.7, False), (43.0, 391.5, 66.7, 384.4, True),
    ):  # fmt: skip
        client = t.span("gateway", "GET", "CLIENT", client_start, client_end, root)
        fan = t.span("backend", "GET /fan/{i}", "SERVER", fan_start + 200, fan_end + 200, client)
        fans.append(fan)
        on_host("host-a", client)
        for i in range(3):  # backend's three calls, the slow fan's last one slow
            lasts = 303.9 if slow and i == 2 else 24.0
            begins = fan_start + 11 + i
            call = t.span("backend", "GET", "CLIENT", begins + 200, begins + lasts + 200, fan)
            on_host("host-b", call)
            leaves.append(
                t.span("leaf", "GET /item/{i}", "SERVER", begins + 1, begins + lasts - 2, call)
            )
    on_host("host-a", root, *leaves)
    on_host("host-b", *fans)
    path = run(t)
    assert [placed_start_ms(path, leaf) for leaf in leaves] == [
        pytest.approx((leaf.start_unix_nano - T0) / MS) for leaf in leaves
    ]
    assert path.to_json()["duration_ms"] == 393.2
    assert [w.split(":")[0] for w in path.warnings] == ["clock skew adjusted on backend"]


def test_a_server_behind_a_service_that_exported_nothing_on_a_clock_behind_is_moved() -> None:
    """gateway calls middle (instrumented, exporting nothing), which calls backend on a host
    200 ms behind. backend's span hangs under gateway's root, nothing enclosing it; it
    started 160 ms before the request, which read 255 ms and began in backend (times as
    measured: uvicorn + requests -> gunicorn -> gunicorn)."""
    t = Topology()
    root = t.span("gateway", "GET /viamiddle", "SERVER", 0, 95.5)
    client = t.span("gateway", "GET", "CLIENT", 1.1, 94.1, root)
    server = t.span("backend", "GET /item/{i}", "SERVER", -159.8, -138.4,
                    parent_span_id="00000000000000ff")  # fmt: skip
    on_host("host-a", root, client)
    on_host("host-b", server)
    path = run(t)
    assert 0 <= placed_start_ms(path, server) <= 95.5 - 21.4
    assert path.services == ["gateway", "backend"]
    assert path.to_json()["duration_ms"] == 95.5
    assert path.warnings[-1].startswith("clock skew adjusted on backend: shifted +")


def test_a_moved_span_is_drawn_in_the_order_of_its_placed_start(tmp_path: FilePath) -> None:
    """The server behind the silent service, moved +197 ms into the request, was still drawn
    above gateway's call (which starts at +1.1 ms), where its recorded start had put it."""
    t = Topology()
    root = t.span("gateway", "GET /viamiddle", "SERVER", 0, 95.5)
    client = t.span("gateway", "GET", "CLIENT", 1.1, 94.1, root)
    server = t.span("backend", "GET /item/{i}", "SERVER", -159.8, -138.4,
                    parent_span_id="00000000000000ff")  # fmt: skip
    on_host("host-a", root, client)
    on_host("host-b", server)
    doc = trace_json(tmp_path, t)
    assert [(s["service"], s["kind"]) for s in doc["spans"]] == [
        ("gateway", "SERVER"),
        ("gateway", "CLIENT"),
        ("backend", "SERVER"),
    ]
    starts = [s["start_unix_nano"] for s in doc["spans"]]
    assert starts == sorted(starts)
