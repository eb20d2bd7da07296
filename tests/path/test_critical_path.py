"""The critical path is what the request's end waited for: shapes real services produce.

Each topology is the span records a deployment exports (times in ms from a fixed instant, worked
out by hand), written into a real store and read back through the engine. The scatter-gather is
the one ``tracekit demo`` produces, with the times of a run where the old path went wrong: the
inventory call ended 1 ms after fulfilment's client span, and a quick pricing replica answered
while fulfilment was still publishing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from trace_topologies import MS, T0, MemorySource, Topology

from tracekit.path import Path, PathSpan, reconstruct
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

ROW = re.compile(r"^ *\+\d")  # a span row starts with its offset; notes are indented


@pytest.fixture
def store_file(tmp_path: FilePath) -> FilePath:
    return tmp_path / "tracekit.db"


def stored_path(store_file: FilePath, t: Topology) -> Path:
    """Write the topology into a real store and reconstruct its request from there."""
    with Store(store_file) as store:
        store.write_spans(t.spans)
        store.write_logs(t.logs)
        path = reconstruct(store, t.correlation_id or "")
    assert path is not None
    return path


def text_view(store_file: FilePath, query: str) -> str:
    """What ``tracekit trace QUERY --format text`` prints, 160 columns wide."""
    result = CliRunner().invoke(
        cli, ["trace", query, "--store", str(store_file), "--format", "text"],
        env={"COLUMNS": "160"},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    return result.stdout


def mark_and_notes(view: str, label: str) -> tuple[str, list[str]]:
    """The critical-path mark of the row labelled ``label``, and the note lines under it."""
    lines = view.splitlines()
    at = next(i for i, line in enumerate(lines) if ROW.match(line) and f" {label} " in line)
    notes = []
    for line in lines[at + 1 :]:
        if ROW.match(line) or not line.strip():
            break
        notes.append(line.strip(" |`"))
    return lines[at].split()[4], notes  # after "+offset ms duration ms"


def on_path(path: Path) -> list[str]:
    by_id = {s.record.span_id: f"{s.service}:{s.record.name}" for s in path.spans}
    return [by_id[span_id] for span_id in path.critical_path]


def node(path: Path, record: SpanRecord) -> PathSpan:
    """The placed span of ``record`` (read back from the store: a different object)."""
    return next(s for s in path.spans if s.key == (record.trace_id, record.span_id))


def critical_ms(path: Path, record: SpanRecord) -> float:
    return node(path, record).critical_ns / MS


def wait_ms(path: Path, record: SpanRecord) -> float:
    return node(path, record).critical_wait_ns / MS


def path_total_ms(path: Path) -> float:
    return sum(s.critical_ns + s.critical_wait_ns for s in path.spans) / MS


def messaging(queue: str, operation: str) -> dict[str, object]:
    return {"messaging.system": "redis", "messaging.destination.name": queue,
            "messaging.operation.type": operation}  # fmt: skip


def send(t: Topology, caller: SpanRecord, queue: str, start: float, end: float) -> SpanRecord:
    return t.span(caller.service, f"send {queue}", "PRODUCER", start, end, caller,
                  attrs=messaging(queue, "send"))  # fmt: skip


def process(
    t: Topology, service: str, queue: str, start: float, end: float,
    parent: SpanRecord | None = None, links: tuple[SpanRecord, ...] = (),
) -> SpanRecord:  # fmt: skip
    return t.span(service, f"process {queue}", "CONSUMER", start, end, parent, links=links,
                  correlated=parent is not None, attrs=messaging(queue, "process"))  # fmt: skip


def call(
    t: Topology, caller: SpanRecord, service: str, route: str,
    client: tuple[float, float], server: tuple[float, float],
) -> tuple[SpanRecord, SpanRecord]:  # fmt: skip
    """An HTTP call whose server span may end after the client's (WSGI closes late)."""
    out = t.span(caller.service, "GET", "CLIENT", *client, caller, attrs={"url.path": route})
    return out, t.span(service, f"GET {route}", "SERVER", *server, out,
                       attrs={"http.route": route})  # fmt: skip


class ScatterGather:
    """The demo's checkout: gateway -> orders -> fulfilment -> inventory, then pricing.1..3
    scattered to replicas and gathered by an aggregator's batch span (a new trace)."""

    def __init__(self, slow: int = 3, link_order: tuple[int, ...] = (1, 2, 3)) -> None:
        t = self.t = Topology("req-scatter-1")
        root = self.root = t.span("gateway", "POST /checkout", "SERVER", 0, 22)
        client = t.span("gateway", "POST", "CLIENT", 0.5, 21.5, root)
        orders = t.span("orders", "POST /orders", "SERVER", 7.6, 22.3, client)
        created = send(t, orders, "orders.created", 8, 19)
        # the worker took the message before the producer's broker call had returned
        fulfil = self.fulfil = process(t, "fulfilment", "orders.created", 12.5, 63.5, created)
        self.get, self.inventory = call(t, fulfil, "inventory", "/stock/{sku}",
                                        (13.5, 40.5), (14.5, 41.5))  # fmt: skip
        self.sends: list[SpanRecord] = []
        self.pricing: list[SpanRecord] = []
        self.replies: list[SpanRecord] = []
        for i, (start, end) in enumerate([(40.8, 44), (44.2, 48.5), (48.7, 52.1)], start=1):
            self.sends.append(send(t, fulfil, f"pricing.{i}", start, end))
            took = end + 0.3
            done = took + (600 if i == slow else 2.5)
            self.pricing.append(process(t, "pricing", f"pricing.{i}", took, done, self.sends[-1]))
            self.replies.append(send(t, self.pricing[-1], "pricing.replies", done - 1, done - 0.4))
        t.new_trace()
        # the gather starts once the last reply is in, before that reply's publish call returned
        gather_start = max(r.end_unix_nano - T0 for r in self.replies) / MS - 0.2
        links = tuple(self.replies[i - 1] for i in link_order)
        agg = self.aggregator = process(t, "aggregator", "pricing.replies", gather_start,
                                        gather_start + 13, links=links)  # fmt: skip
        self.put, self.priced = call(t, agg, "orders", "/orders/{order_id}/price",
                                     (gather_start + 0.3, gather_start + 11.8),
                                     (gather_start + 0.8, gather_start + 14.3))  # fmt: skip


def test_scatter_gather_path_is_the_inventory_call_and_the_slow_replica(
    store_file: FilePath,
) -> None:
    shape = ScatterGather()
    path = stored_path(store_file, shape.t)
    assert on_path(path) == [
        "gateway:POST /checkout", "gateway:POST", "orders:POST /orders",
        "orders:send orders.created", "fulfilment:process orders.created",
        "fulfilment:GET", "inventory:GET /stock/{sku}",
        "fulfilment:send pricing.1", "fulfilment:send pricing.2", "fulfilment:send pricing.3",
        "pricing:process pricing.3", "pricing:send pricing.replies",
        "aggregator:process pricing.replies", "aggregator:GET",
        "orders:GET /orders/{order_id}/price",
    ]  # fmt: skip
    # the quick replicas answered while fulfilment was still publishing: nobody waited for them
    for quick in (*shape.pricing[:2], *shape.replies[:2]):
        assert quick.span_id not in path.critical_path
    # inventory ended 1 ms after its client: on the path up to the client's end
    assert critical_ms(path, shape.inventory) == pytest.approx(26.0)
    assert critical_ms(path, shape.get) == pytest.approx(1.0)
    assert wait_ms(path, shape.pricing[2]) == pytest.approx(0.3)
    # the orders service's price update ended last: it is where the request ends
    assert path.spans[-1].record.span_id == shape.priced.span_id
    assert critical_ms(path, shape.priced) == pytest.approx(13.5)
    assert path_total_ms(path) == pytest.approx(path.duration_ms)


def test_server_ending_after_its_client_stays_on_the_path_before_the_next_call(
    store_file: FilePath,
) -> None:
    t = Topology()
    root = t.span("fulfilment", "process orders.created", "CONSUMER", 0, 100)
    # werkzeug closes the response after the client has read it: the server ends 1 ms later
    client, server = call(t, root, "inventory", "/stock/{sku}", (2, 40), (3, 41))
    db = t.span("inventory", "SELECT stock", "CLIENT", 5, 35, server)
    second, _ = call(t, root, "inventory", "/reserve", (40.5, 90), (41, 89))
    path = stored_path(store_file, t)
    assert {client.span_id, server.span_id, db.span_id, second.span_id} <= set(path.critical_path)
    assert critical_ms(path, server) == pytest.approx(2 + 5)  # 3..5 and 35..40, not 40..41
    assert path_total_ms(path) == pytest.approx(100)


def test_queue_wait_of_a_consumer_started_long_after_its_producer_is_on_the_path(
    store_file: FilePath,
) -> None:
    t = Topology()
    root = t.span("orders", "POST /orders", "SERVER", 0, 20)
    producer = send(t, root, "orders.created", 5, 8)
    consumer = process(t, "payments", "orders.created", 408, 430, producer)
    charge = t.span("payments", "POST /charge", "CLIENT", 410, 425, consumer)
    path = stored_path(store_file, t)
    assert on_path(path) == [
        "orders:POST /orders", "orders:send orders.created",
        "payments:process orders.created", "payments:POST /charge",
    ]  # fmt: skip
    assert wait_ms(path, consumer) == pytest.approx(400)
    assert critical_ms(path, charge) == pytest.approx(15)
    assert critical_ms(path, root) == pytest.approx(5)  # its work after publishing waited for none
    assert path_total_ms(path) == pytest.approx(path.duration_ms) == pytest.approx(430)


def test_work_a_server_went_on_with_after_its_caller_timed_out_is_on_the_path(
    store_file: FilePath,
) -> None:
    """The gateway gave up on orders at 100 ms (a read timeout); orders went on: stock for
    220 ms, then a publish, taken by mailer 40 ms later. The path counted mailer's wait from the
    moment the gateway gave up (190 ms, of a 40 ms queue wait) and gave stock's 216 ms of work
    78 ms: every span under the timed-out call was cut off at its caller's end, the publish too."""
    t = Topology()
    root = t.span("gateway", "POST /orders", "SERVER", 0, 100, status="ERROR")
    client = t.span("gateway", "POST", "CLIENT", 10, 100, root, status="ERROR",
                    message="ReadTimeout")  # fmt: skip
    orders = t.span("orders", "POST /orders", "SERVER", 12, 260, client)
    _, stock = call(t, orders, "stock", "/reserve", (20, 240), (22, 238))
    created = send(t, orders, "orders.created", 245, 250)
    mailer = process(t, "mailer", "orders.created", 290, 300, created)
    path = stored_path(store_file, t)
    assert wait_ms(path, mailer) == pytest.approx(40)
    assert critical_ms(path, stock) == pytest.approx(216)
    assert critical_ms(path, created) == pytest.approx(5)
    assert critical_ms(path, orders) == pytest.approx(8 + 5)  # 12..20 and 240..245
    assert path_total_ms(path) == pytest.approx(path.duration_ms) == pytest.approx(300)


def test_aggregator_waits_for_the_slow_middle_reply(store_file: FilePath) -> None:
    shape = ScatterGather(slow=2)
    path = stored_path(store_file, shape.t)
    aggregator = node(path, shape.aggregator)
    assert aggregator.parent is not None
    assert aggregator.parent.record.span_id == shape.replies[1].span_id
    critical = set(path.critical_path)
    assert {shape.pricing[1].span_id, shape.replies[1].span_id} <= critical
    assert not {s.span_id for s in (*shape.pricing[::2], *shape.replies[::2])} & critical
    # fulfilment's third publish came after the slow request was sent: nobody waited for it
    assert shape.sends[2].span_id not in critical and shape.sends[1].span_id in critical
    assert path_total_ms(path) == pytest.approx(path.duration_ms)
    # the view: the wait under the batch is the slow reply's, then the two it also consumed
    # (links in send order: the last link is the quick pricing.3 reply)
    view = text_view(store_file, "req-scatter-1")
    assert mark_and_notes(view, "aggregator: process pricing.replies") == ("*", [
        "~ waited 0.0 ms in queue redis pricing.replies",
        "~ also consumed pricing.replies from pricing: waited 601.8 ms, sent +46.4 ms",
        "~ also consumed pricing.replies from pricing: waited 593.7 ms, sent +54.5 ms",
        "* request ends here, 639.2 ms after the entry span ended",
    ])  # fmt: skip
    # (not under the price update's server span, which closed after the batch had its answer)
    assert mark_and_notes(view, "orders: GET /orders/{order_id}/price") == ("*", [])


def test_fire_and_forget_consumer_that_ends_last_is_the_request_end(store_file: FilePath) -> None:
    t = Topology()
    root = t.span("web", "POST /signup", "SERVER", 0, 20)
    producer = send(t, root, "emails", 5, 8)
    t.span("web", "INSERT users", "CLIENT", 9, 18, root)
    t.new_trace()
    mailer = process(t, "mailer", "emails", 30, 90, links=(producer,))
    t.span("mailer", "smtp send", "CLIENT", 32, 88, mailer, correlated=False)
    path = stored_path(store_file, t)
    assert on_path(path) == [
        "web:POST /signup", "web:send emails", "mailer:process emails", "mailer:smtp send",
    ]  # fmt: skip
    assert wait_ms(path, mailer) == pytest.approx(22)
    assert path_total_ms(path) == pytest.approx(90)
    view = text_view(store_file, "req-7f3a")
    assert mark_and_notes(view, "mailer: process emails") == ("*", [
        "~ waited 22.0 ms in queue redis emails",
        "* request ends here, 70.0 ms after the entry span ended",
    ])  # fmt: skip


def test_fire_and_forget_consumer_that_ends_early_is_off_the_path(store_file: FilePath) -> None:
    t = Topology()
    root = t.span("web", "POST /signup", "SERVER", 0, 100)
    producer = send(t, root, "emails", 5, 8)
    insert = t.span("web", "INSERT users", "CLIENT", 9, 95, root)
    mailer = process(t, "mailer", "emails", 10, 60, producer)
    path = stored_path(store_file, t)
    assert mailer.span_id not in path.critical_path
    assert {producer.span_id, insert.span_id} <= set(path.critical_path)
    assert path_total_ms(path) == pytest.approx(100)
    assert "request ends here" not in text_view(store_file, "req-7f3a")


def test_a_server_span_closing_after_the_entry_answered_is_not_noted_as_the_end(
    store_file: FilePath,
) -> None:
    """A 502 measured on a real estate: orders (Flask under gunicorn) answered 500, the gateway
    answered 502 at once, and orders' WSGI span closed 0.3 ms after the gateway's entry span.
    The view said "request ends here, 0.3 ms after the entry span ended" under orders, as if
    orders had worked on after the request; the gateway waited for that call."""
    t = Topology()
    root = t.span("gateway", "GET /checkout/{n}", "SERVER", 0, 123.4)
    call(t, root, "users", "/users/{n}/", (34.2, 64.6), (47.2, 53.2))
    call(t, root, "orders", "/orders/{n}", (67.2, 122.9), (68.5, 123.7))
    path = stored_path(store_file, t)
    assert path_total_ms(path) == pytest.approx(123.7)
    view = text_view(store_file, "req-7f3a")
    assert "request ends here" not in view, view


def test_the_request_end_is_noted_under_the_consumer_not_a_server_closing_late(
    store_file: FilePath,
) -> None:
    """The consumer's call to inventory returned at 89.9 ms and the consumer ended at 90;
    inventory's WSGI span closed at 90.2. The note went under inventory's row; the request
    ends with the consumer's work, which waited for that call."""
    t = Topology()
    root = t.span("web", "POST /orders", "SERVER", 0, 20)
    producer = send(t, root, "orders", 5, 8)
    consumer = process(t, "fulfilment", "orders", 30, 90, producer)
    call(t, consumer, "inventory", "/stock/{sku}", (40, 89.9), (41, 90.2))
    stored_path(store_file, t)
    view = text_view(store_file, "req-7f3a")
    assert mark_and_notes(view, "fulfilment: process orders") == ("*", [
        "~ waited 22.0 ms in queue redis orders",
        "* request ends here, 70.0 ms after the entry span ended",
    ])  # fmt: skip
    assert mark_and_notes(view, "inventory: GET /stock/{sku}") == ("*", [])


def test_the_request_end_is_noted_only_under_a_span_on_the_critical_path(
    store_file: FilePath,
) -> None:
    """A consumer ended 0.3 ms after the entry span, inside the tail of a server span closing
    after its client had the answer: the walk starts at that server span (it ended last), so
    the consumer is off the path and no "request ends here" may sit under it."""
    t = Topology()
    root = t.span("web", "POST /orders", "SERVER", 0, 100)
    producer = send(t, root, "orders", 5, 8)
    consumer = process(t, "fulfilment", "orders", 30, 100.3, producer)
    call(t, root, "inventory", "/stock/{sku}", (10, 99.9), (11, 100.5))
    path = stored_path(store_file, t)
    assert consumer.span_id not in path.critical_path
    view = text_view(store_file, "req-7f3a")
    _, notes = mark_and_notes(view, "fulfilment: process orders")
    assert notes == ["~ waited 22.0 ms in queue redis orders"]
    assert "request ends here" not in view, view


def test_self_time_leaves_out_synchronous_children_only(store_file: FilePath) -> None:
    shape = ScatterGather()
    path = stored_path(store_file, shape.t)
    # 51 ms long; the call (13.5..40.5) and three publishes (10.9 ms) ran inside it
    assert node(path, shape.fulfil).self_ns / MS == pytest.approx(51 - 27 - 3.2 - 4.3 - 3.4)
    # the late-closing inventory span counts inside its client only: the client has none left
    assert node(path, shape.get).self_ns / MS == pytest.approx(1.0)
    assert node(path, shape.sends[2]).self_ns / MS == pytest.approx(3.4)  # not its consumer's


@st.composite
def request_trees(draw: st.DrawFn) -> Topology:
    """Random requests: calls, late-closing servers, background work, queue hops and a batch."""
    t = Topology("req-random")
    spans = [t.span("s0", "root", "SERVER", 0, draw(st.integers(1, 500)))]
    for i in range(draw(st.integers(0, 25))):
        parent = spans[draw(st.integers(0, len(spans) - 1))]
        p_start, p_end = (
            int((at - T0) // MS) for at in (parent.start_unix_nano, parent.end_unix_nano)
        )
        kind = draw(st.sampled_from(["INTERNAL", "CLIENT", "PRODUCER", "CONSUMER"]))
        # consumers of a producer start after it; other spans start inside their parent, or
        # (background work) a little after it ended
        late = kind == "CONSUMER" and parent.kind == "PRODUCER"
        start = draw(st.integers(p_end if late else p_start, p_end + (300 if late else 20)))
        end = start + draw(st.integers(0, 300))
        spans.append(t.span(f"s{i % 4}", f"op{i}", kind, start, end, parent))
    producers = [s for s in spans if s.kind == "PRODUCER"]
    if producers and draw(st.booleans()):
        picked = st.lists(
            st.sampled_from(range(len(producers))), min_size=1, max_size=3, unique=True
        )
        links = [producers[i] for i in draw(picked)]
        arrived = max(int((s.end_unix_nano - T0) // MS) for s in links)
        start = draw(st.integers(arrived - 5, arrived + 200))
        t.new_trace()
        t.span("batch", "process", "CONSUMER", start, start + draw(st.integers(0, 100)),
               links=links, correlated=False)  # fmt: skip
    return t


@settings(max_examples=150, deadline=None)
@given(request_trees())
def test_time_on_the_path_adds_up_to_the_request_duration(t: Topology) -> None:
    path = reconstruct(MemorySource(t.spans), "req-random")
    assert path is not None
    assert path_total_ms(path) == pytest.approx(path.duration_ms, abs=1e-6)
    for span in path.spans:
        assert 0 <= span.self_ns <= span.end_unix_nano - span.start_unix_nano
        assert span.critical_ns <= span.end_unix_nano - span.start_unix_nano
        if span.critical_ns or span.critical_wait_ns:
            assert span.record.span_id in path.critical_path


def test_a_redelivered_message_waits_from_the_failed_delivery_not_the_publish(
    store_file: FilePath,
) -> None:
    """A handler failed (15-40 ms) and the broker delivered the message again 1 s later. The
    redelivery's queue wait read 1028 ms, the failed handler's 25 ms counted as time queued,
    and the failed delivery, which the redelivery waited for, was off the critical path. The
    redelivery now waits from the failed delivery's end, with that delivery on the path."""
    t = Topology()
    root = t.span("shop", "POST /order", "SERVER", 0, 20)
    producer = send(t, root, "orders", 10, 12)
    failed = t.span("worker", "process orders", "CONSUMER", 15, 40, producer, status="ERROR",
                    message="boom", attrs=messaging("orders", "process"))  # fmt: skip
    again = process(t, "worker", "orders", 1040, 1060, producer)
    with Store(store_file) as store:
        store.write_spans(t.spans)
    result = CliRunner().invoke(
        cli, ["trace", t.correlation_id or "", "--store", str(store_file), "--format", "json"]
    )
    doc = json.loads(result.stdout)
    waits = {h["to_span_id"]: h["queue_wait_ms"] for h in doc["hops"]}
    assert waits == {failed.span_id: 3.0, again.span_id: 1000.0}
    assert doc["critical_path"] == [root.span_id, producer.span_id, failed.span_id, again.span_id]
    spans = {s["span_id"]: (s["critical_ms"], s["critical_wait_ms"]) for s in doc["spans"]}
    assert spans[failed.span_id] == (25.0, 3.0)
    assert spans[again.span_id] == (20.0, 1000.0)


def test_a_reply_over_a_queue_puts_the_replier_on_the_critical_path(
    store_file: FilePath,
) -> None:
    """web asks pricing over a queue and waits for the reply on a queue of its own (request/
    reply). The path credited web's entry span with 98 of the 100 ms and left pricing's 35 ms
    of work, and both queue waits, off the critical path: the reply is now awaited like a
    synchronous child, and the path runs through the replier."""
    t = Topology()
    root = t.span("web", "POST /quote", "SERVER", 0, 100)
    ask = send(t, root, "rpc", 10, 12)
    work = process(t, "pricing", "rpc", 15, 60, ask)
    answer = send(t, work, "reply-q", 50, 52)
    reply = process(t, "web", "reply-q", 55, 58, answer)
    path = stored_path(store_file, t)
    assert on_path(path) == [
        "web:POST /quote", "web:send rpc", "pricing:process rpc", "pricing:send reply-q",
        "web:process reply-q",
    ]  # fmt: skip
    assert critical_ms(path, root) == 52.0
    assert (critical_ms(path, work), wait_ms(path, work)) == (35.0, 3.0)
    assert (critical_ms(path, reply), wait_ms(path, reply)) == (3.0, 3.0)
    assert path_total_ms(path) == 100.0
