"""The transport-neutral primitives: headers written, context restored, bad input survived."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from loopback import serve_in_thread
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tracekit
from tracekit import correlation, messaging
from tracekit._messaging import held as _held
from tracekit.config import default_service_name

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_SPAN = 0xB7AD6B7169203331


def _consumer(spans: Any) -> Any:
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    return span


def test_publish_writes_every_header_and_ends_after_the_broker_call(spans) -> None:
    headers: dict[str, Any] = {}
    token = correlation.set_correlation_id("order-1")
    try:
        with messaging.publish(headers, system="test", destination="orders") as sent:
            time.sleep(0.02)  # the broker call
            sent.set_message_id(b"id-9")
    finally:
        correlation.reset_correlation_id(token)
    (producer,) = spans.get_finished_spans()
    assert producer.kind == SpanKind.PRODUCER and producer.name == "send orders"
    assert headers["traceparent"].split("-")[2] == f"{producer.context.span_id:016x}"
    assert headers["x-correlation-id"] == "order-1"
    assert headers["baggage"] == "correlation.id=order-1"
    assert producer.start_time <= int(headers[messaging.PUBLISH_TIME_HEADER]) <= producer.end_time
    assert producer.end_time - producer.start_time >= 20_000_000
    assert producer.attributes["messaging.message.id"] == "id-9"
    assert producer.attributes["messaging.operation.type"] == "send"
    assert producer.attributes["correlation.id"] == "order-1"


def test_a_callers_bytes_or_capitalised_header_is_replaced_by_ours(spans) -> None:
    headers = {b"traceparent": b"00-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01",
               "X-Correlation-ID": "the-app's", "app": "kept"}  # fmt: skip
    token = correlation.set_correlation_id("order-2")
    try:
        messaging.inject(headers, system="test", destination="orders")
    finally:
        correlation.reset_correlation_id(token)
    assert b"traceparent" not in headers and "X-Correlation-ID" not in headers
    assert headers["x-correlation-id"] == "order-2" and headers["app"] == "kept"


def test_inject_is_one_shot_and_consume_continues_it(spans) -> None:
    headers = messaging.inject({}, system="test", destination="jobs")
    time.sleep(0.05)
    with messaging.consume(headers, system="test", destination="jobs") as message:
        inner = trace.get_current_span()
    producer = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER)
    consumer = _consumer(spans)
    assert inner.get_span_context().span_id == consumer.context.span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert 50 <= message.queue_wait_ms < 150
    assert message.correlation_id == consumer.attributes["correlation.id"]


def test_async_with_restores_the_correlation_id_for_the_handler(spans) -> None:
    headers = {b"x-correlation-id": b"async-1", b"traceparent": TRACEPARENT.encode()}

    async def handle() -> tuple[str | None, str | None]:
        async with messaging.consume(headers, system="test", destination="q"):
            await asyncio.sleep(0)
            inside = tracekit.correlation_id()
        return inside, tracekit.correlation_id()

    assert asyncio.run(handle()) == ("async-1", None)
    assert _consumer(spans).parent.span_id == PARENT_SPAN


def test_a_publish_settled_later_keeps_the_blocks_timing_and_ends_with_the_report(
    spans,
) -> None:
    """A client that reports delivery later: the span is recorded at ``end``, failed with the
    report's error, and still ends when the block did (queue wait starts there)."""
    publishing = messaging.publish({}, system="test", destination="orders")
    with publishing:
        publishing.settle_later()
    block_ended = time.time_ns()
    time.sleep(0.02)
    assert spans.get_finished_spans() == ()
    publishing.end(ConnectionError("broker gone"))
    publishing.end()  # a second report changes nothing
    (producer,) = spans.get_finished_spans()
    assert producer.end_time is not None and producer.end_time <= block_ended
    assert producer.status.is_ok is False
    assert producer.attributes["error.type"] == "ConnectionError"


def test_a_report_served_by_another_thread_inside_the_block_leaves_no_context(spans) -> None:
    """The report may come before the block ends (another thread polls): the block still
    restores the caller's context when it ends."""
    import threading

    publishing = messaging.publish({}, system="test", destination="orders")
    with publishing:
        publishing.settle_later()
        reporter = threading.Thread(target=publishing.end)
        reporter.start()
        reporter.join()
        assert len(spans.get_finished_spans()) == 1
    assert messaging.publishing() is False
    assert trace.get_current_span().get_span_context().is_valid is False


def test_handler_exception_propagates_unchanged_and_marks_the_span(spans) -> None:
    error = KeyError("missing sku")
    with pytest.raises(KeyError) as raised, messaging.consume({}, system="test", destination="q"):
        raise error
    assert raised.value is error
    consumer = _consumer(spans)
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "KeyError"


def test_a_handler_that_gives_its_message_back_ends_failed_saying_so(spans) -> None:
    """``note_rejected``: the span fails with ``MessageRejected``; a later exception wins."""
    with messaging.consume({}, system="test", destination="q") as message:
        message.note_rejected("nack", requeue=True)
    with pytest.raises(KeyError), messaging.consume({}, system="test", destination="q") as message:
        message.note_rejected("reject", requeue=False)
        raise KeyError("missing sku")
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    rejected, raised = sorted(consumers, key=lambda s: s.start_time or 0)
    assert rejected.status.description == "MessageRejected: nack, requeued"
    assert rejected.attributes["error.type"] == "MessageRejected"
    assert raised.attributes["error.type"] == "KeyError"


def test_nested_publish_makes_one_span(spans) -> None:
    outer: dict[str, Any] = {}
    inner: dict[str, Any] = {}
    with (
        messaging.publish(outer, system="test", destination="q"),
        messaging.publish(inner, system="test", destination="q"),
    ):
        pass
    assert len(spans.get_finished_spans()) == 1
    assert "traceparent" in outer and inner == {}


def test_metrics_count_and_measure_the_wait(spans) -> None:
    registry = CollectorRegistry()
    headers = messaging.inject({}, system="test", destination="m", registry=registry)
    time.sleep(0.1)
    with messaging.consume(headers, system="test", destination="m", registry=registry):
        pass
    labels = {"messaging_system": "test", "messaging_destination_name": "m"}
    value = registry.get_sample_value
    labels_with_service = {**labels, "service_name": default_service_name(), "service_version": ""}
    assert value("messaging_client_sent_messages_total", labels_with_service) == 1
    assert value("messaging_client_consumed_messages_total", labels_with_service) == 1
    wait = value("tracekit_messaging_queue_wait_seconds_sum", labels_with_service)
    assert 0.1 <= wait < 0.2


def test_queue_wait_counts_from_before_the_broker_call(spans) -> None:
    """The publish time is written into the message before the broker call: a message taken the
    moment its publish returned has waited the broker call's time, as /metrics' HELP says."""
    registry = CollectorRegistry()
    headers: dict[str, Any] = {}
    started = time.time()
    with messaging.publish(headers, system="test", destination="w", registry=registry):
        time.sleep(0.1)  # the broker call
    with messaging.consume(headers, system="test", destination="w", registry=registry):
        elapsed = time.time() - started  # the most it can have waited (a loaded machine: more)
    families = text_string_to_metric_families(generate_latest(registry).decode())
    wait = next(f for f in families if f.name == "tracekit_messaging_queue_wait_seconds")
    (waited,) = [s.value for s in wait.samples if s.name.endswith("_sum")]
    assert 0.1 <= waited <= elapsed
    assert "before the broker call" in wait.documentation


def test_a_batch_handler_is_measured_once_shared_by_its_messages(spans) -> None:
    """One handler call of 0.1 s for 10 messages: 10 messages handled, 0.1 s of handler time
    (each message's share 0.01 s), not 10 handlers of 0.1 s each."""
    registry = CollectorRegistry()
    batch = [messaging.inject({}, system="test", destination="b") for _ in range(10)]
    started = time.perf_counter()
    with messaging.consume_batch(batch, system="test", destination="b", registry=registry):
        time.sleep(0.1)
    handler_seconds = time.perf_counter() - started
    scraped = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.labels.get("messaging_destination_name") == "b"
    }
    process = "messaging_process_duration_seconds"
    assert scraped[(f"{process}_count", None)] == 10
    assert scraped[("messaging_client_consumed_messages_total", None)] == 10
    assert 0.1 <= scraped[(f"{process}_sum", None)] <= handler_seconds
    assert scraped[(f"{process}_bucket", "0.025")] == 10  # each message's share: ~0.01 s


def test_a_batch_given_as_a_generator_links_every_message(spans) -> None:
    """``consume_batch`` takes any iterable of headers, read once: before, a generator (as in
    ``(m.headers for m in messages)``) raised tracekit's ``TypeError: ... has no len()`` into
    the application's consumer."""
    sent = []
    for order in ("order-1", "order-2", "order-3"):
        token = correlation.set_correlation_id(order)
        try:
            sent.append(messaging.inject({}, system="test", destination="b"))
        finally:
            correlation.reset_correlation_id(token)
    batch = (headers for headers in sent)
    properties = iter([None, None, None])
    with messaging.consume_batch(
        batch, system="test", destination="b", correlation_properties=properties
    ):
        seen = correlation.correlation_id()
    consumer = _consumer(spans)
    assert seen == "order-1"
    assert consumer.attributes["messaging.batch.message_count"] == 3
    assert [link.attributes["correlation.id"] for link in consumer.links] == [
        "order-1",
        "order-2",
        "order-3",
    ]


def test_correlation_only_mode_moves_ids_without_spans(spans, monkeypatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")
    token = correlation.set_correlation_id("quiet-1")
    try:
        headers = messaging.inject({}, system="test", destination="q")
    finally:
        correlation.reset_correlation_id(token)
    assert headers["x-correlation-id"] == "quiet-1" and "traceparent" not in headers
    with messaging.consume(headers, system="test", destination="q") as message:
        assert tracekit.correlation_id() == "quiet-1"
    assert message.span is None and message.queue_wait_ms is not None
    assert spans.get_finished_spans() == ()


def test_broken_configuration_never_stops_the_handler(spans, monkeypatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "bogus")
    handled = []
    with messaging.publish({}, system="test", destination="q"):
        handled.append("published")
    with messaging.consume({}, system="test", destination="q"):
        handled.append("consumed")
    assert handled == ["published", "consumed"]
    assert spans.get_finished_spans() == ()


def test_metrics_that_cannot_be_registered_leave_nothing_behind(spans, caplog) -> None:
    """The application already registered a family of tracekit's name in the registry: the
    handler still runs with its correlation ID, the span still ends, and after the block the
    consumer's own correlation ID is back."""
    registry = CollectorRegistry()
    Histogram("messaging_process_duration_seconds", "the app's own", ["queue"], registry=registry)
    for cid in ("msg-A-0001", "msg-B-0002"):
        with messaging.consume(
            {"x-correlation-id": cid}, system="test", destination="q", registry=registry
        ):
            assert tracekit.correlation_id() == cid
        assert tracekit.correlation_id() is None
    assert [s.attributes["correlation.id"] for s in spans.get_finished_spans()] == [
        "msg-A-0001",
        "msg-B-0002",
    ]
    assert any("tracekit" in r.getMessage() for r in caplog.records)  # reported, not raised


BAD_HEADERS = {
    "non-UTF-8 traceparent": ({"traceparent": b"\xff\xfeEVIL"}, False),
    "oversized traceparent": ({"traceparent": "00-" + "EVIL" * 2000}, False),
    "malformed traceparent": ({"traceparent": "00-EVIL-01"}, False),
    "zero trace id": ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, False),
    "repeated traceparent": ([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)], False),
    "control characters": ({"traceparent": TRACEPARENT + "\nEVIL"}, False),
    "number value": ({"traceparent": 42, "x-correlation-id": 7}, False),
    "table value": ({"traceparent": {"EVIL": 1}}, False),
    "non-ASCII key": ({b"\xfftraceparent": TRACEPARENT}, False),
    "not a mapping": ("EVIL", False),
    "pairs that are not pairs": ([("traceparent",), "EVIL"], False),
    "log injection in correlation ID": (
        {"traceparent": TRACEPARENT, "x-correlation-id": "ok\r\nEVIL: forged"},
        True,
    ),
    "oversized correlation ID": ({"traceparent": TRACEPARENT, "X-Request-ID": "EVIL" * 5000}, True),
    "bad publish time": ({"traceparent": TRACEPARENT, "tracekit-publish-time": "EVIL"}, True),
    # 20 digits pass "a number" but no 64-bit time: the OTLP exporter logged a traceback per span
    "publish time past 2262": (
        {"traceparent": TRACEPARENT, "tracekit-publish-time": "99999999999999999999"},
        True,
    ),
    # a producer writing milliseconds (or seconds) would make every message wait 56 years
    "publish time in milliseconds": (
        {"traceparent": TRACEPARENT, "tracekit-publish-time": "1764758400000"},
        True,
    ),
    "publish time 1": ({"traceparent": TRACEPARENT, "tracekit-publish-time": "1"}, True),
    "oversized tracestate": ({"traceparent": TRACEPARENT, "tracestate": "a=EVIL" * 3000}, True),
    "non-ASCII baggage": ({"traceparent": TRACEPARENT, "baggage": "correlation.id=ÉVIL"}, True),
    "malformed baggage": ({"traceparent": TRACEPARENT, "baggage": "EVILnoequals,a=b"}, True),
    "baggage with a bad value": ({"traceparent": TRACEPARENT, "baggage": "k=EVIL\\x"}, True),
    "repeated baggage": (
        [("traceparent", TRACEPARENT), ("baggage", "a=1"), ("baggage", "a=2")],
        True,
    ),
}


@pytest.mark.parametrize(("headers", "keeps_parent"), BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_headers_are_ignored_safely(spans, caplog, headers, keeps_parent) -> None:
    caplog.set_level(logging.DEBUG)
    with messaging.consume(
        headers, system="test", destination="q", correlation_property="prop-id"
    ) as message:
        assert tracekit.correlation_id() == "prop-id"  # the headers' own ID was refused
    consumer = _consumer(spans)
    assert (consumer.parent is not None) is keeps_parent
    if keeps_parent:
        assert consumer.parent.span_id == PARENT_SPAN
    assert message.queue_wait_ms is None
    assert "tracekit.queue_wait_ms" not in consumer.attributes
    assert "EVIL" not in caplog.text and "ÉVIL" not in caplog.text


def test_bad_header_warnings_are_rate_limited_and_name_no_value() -> None:
    script = (
        "import logging; from tracekit import messaging\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "for _ in range(500):\n"
        "    with messaging.consume({'traceparent': b'\\xffEVIL'}, system='t', destination='q'):\n"
        "        pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in result.stderr.splitlines() if "tracekit" in line]
    assert lines == ["tracekit: ignored message header traceparent (not UTF-8)"]


def test_baggage_travels_and_supplies_the_correlation_id(spans) -> None:
    from opentelemetry import baggage

    headers = {
        "traceparent": TRACEPARENT,
        "baggage": "correlation.id=from-baggage, tenant=acme%20corp;p=1",
    }
    with messaging.consume(headers, system="test", destination="q"):
        assert tracekit.correlation_id() == "from-baggage"
        assert baggage.get_baggage("tenant") == "acme corp"


def test_a_consumer_collected_under_a_metrics_lock_never_deadlocks_its_thread(spans) -> None:
    """A consumer dropped with its message held is freed by a garbage collection, which any
    allocation can start: here while its thread holds the lock that counting a handled
    message takes. The collection must not count the message there, or the thread waits for
    itself forever; the span is recorded at the next release instead."""
    from tracekit._runtime import state
    from tracekit.metrics import MessagingMetrics

    registry = CollectorRegistry()
    held = messaging.HeldDeliveries()
    options = state.current_options()
    metrics = MessagingMetrics.get(options.service_name, options.service_version, registry)

    class Consumer:
        itself: Any

    consumer = Consumer()
    consumer.itself = consumer  # a cycle: only the garbage collector frees it
    held.hold(consumer, messaging.consume({}, system="test", destination="q", registry=registry))
    del consumer

    def collect_holding_the_lock() -> None:
        with metrics.process_duration._lock:
            gc.collect()

    collector = threading.Thread(target=collect_holding_the_lock, daemon=True)
    collector.start()
    collector.join(5)
    assert not collector.is_alive()
    held.release(object())
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]) == 1


def test_a_hold_that_races_release_all_is_ended_too(spans, monkeypatch) -> None:
    """``uninstrument()`` in one thread while a consumer in another is between ending its last
    message and storing the next: that next one must end too, not stay held for good. The
    interleaving is forced: release_all runs while the delivery starts."""
    held = messaging.HeldDeliveries()
    starting = _held.start_held

    def start_then_release_all(delivery: Any) -> None:
        starting(delivery)
        held.release_all()

    monkeypatch.setattr(_held, "start_held", start_then_release_all)

    class Consumer:
        pass

    consumer = Consumer()
    held.hold(
        consumer, messaging.consume({"x-correlation-id": "late-1"}, system="t", destination="q")
    )
    assert tracekit.correlation_id() is None
    assert [s.attributes["correlation.id"] for s in spans.get_finished_spans()] == ["late-1"]


def test_held_messages_in_a_task_of_a_handler_leave_the_parent_as_it_was(spans) -> None:
    """Handler X starts a task and fetches D (held); the task runs handler A, which fetches B.
    A's ending must not take over what X's own held message will restore: once X and then D
    have ended, nothing of them is current in the parent."""
    from opentelemetry import trace as otel_trace

    held = messaging.HeldDeliveries()

    class Consumer:
        pass

    parent_consumer, task_consumer = Consumer(), Consumer()

    def message(cid: str) -> messaging.Delivery:
        return messaging.consume({"x-correlation-id": cid}, system="t", destination="q")

    async def main() -> tuple[Any, Any]:
        go = asyncio.Event()

        async def child() -> None:
            await go.wait()
            with message("a-handler"):
                held.hold(task_consumer, message("b-held"))
            held.release(task_consumer)

        with message("x-handler"):
            task = asyncio.create_task(child())
            await asyncio.sleep(0)
            held.hold(parent_consumer, message("d-held"))
            go.set()
            await task
        held.release(parent_consumer)
        span = otel_trace.get_current_span()
        return tracekit.correlation_id(), span.get_span_context().is_valid

    assert asyncio.run(main()) == (None, False)


def test_a_reused_headers_dict_carries_no_trace_context_of_the_message_before(spans) -> None:
    """A producer that publishes every message with the same dict: the second message, sent
    outside any request, went out with the first one's tracestate beside its own traceparent.
    The correlation ID and baggage are where a caller may set its own: those stay."""
    headers: dict[str, Any] = {"x-app": "kept"}
    incoming = {"traceparent": TRACEPARENT, "tracestate": "congo=t61r"}
    with messaging.consume(incoming, system="test", destination="in"):
        messaging.inject(headers, system="test", destination="out")
    assert headers["tracestate"] == "congo=t61r"

    messaging.inject(headers, system="test", destination="out")  # a background job: no request

    second = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER][-1]
    assert headers["traceparent"].split("-")[1:3] == [
        f"{second.context.trace_id:032x}", f"{second.context.span_id:016x}"
    ]  # fmt: skip
    assert "tracestate" not in headers and headers["x-app"] == "kept"


def test_a_callers_own_correlation_id_and_baggage_are_kept_outside_a_request(spans) -> None:
    """A nightly job sets its own ``x-correlation-id`` and baggage on a message: tracekit, with
    no correlation ID of its own to write, leaves them (its trace headers replace any)."""
    headers: dict[str, Any] = {
        "x-correlation-id": "nightly-17", "baggage": "tenant=acme", "Traceparent": TRACEPARENT,
    }  # fmt: skip
    messaging.inject(headers, system="test", destination="out")
    assert (headers["x-correlation-id"], headers["baggage"]) == ("nightly-17", "tenant=acme")
    assert "Traceparent" not in headers and headers["traceparent"] != TRACEPARENT


def test_a_reused_headers_dict_carries_no_correlation_id_or_baggage_of_the_message_before(
    spans,
) -> None:
    """A producer that publishes every message with the same dict: the message sent after one
    published inside a request went out with that request's correlation ID and baggage, though
    it was no part of it (its consumer's logs and spans were filed under the wrong request)."""
    headers: dict[str, Any] = {"x-app": "kept"}
    incoming = {"traceparent": TRACEPARENT, "x-correlation-id": "order-1",
                "baggage": "tenant=acme"}  # fmt: skip
    with messaging.consume(incoming, system="test", destination="in"):
        messaging.inject(headers, system="test", destination="out")
    assert headers["x-correlation-id"] == "order-1" and "tenant=acme" in headers["baggage"]

    messaging.inject(headers, system="test", destination="out")  # a background job: no request

    # (a message of its own: a new correlation ID, and no baggage of the request's)
    new_id = headers["x-correlation-id"]
    assert new_id != "order-1" and correlation.is_valid(new_id)
    assert headers["baggage"] == f"correlation.id={new_id}"
    assert headers["x-app"] == "kept"


def test_a_value_set_again_on_a_reused_headers_dict_is_the_callers(spans) -> None:
    """What the caller writes into the dict between two publishes is its own, and stays."""
    headers: dict[str, Any] = {}
    incoming = {"traceparent": TRACEPARENT, "x-correlation-id": "order-1"}
    with messaging.consume(incoming, system="test", destination="in"):
        messaging.inject(headers, system="test", destination="out")

    headers["x-correlation-id"] = "nightly-18"
    messaging.inject(headers, system="test", destination="out")

    assert headers["x-correlation-id"] == "nightly-18"


def test_a_callers_own_correlation_id_on_a_reused_headers_dict_goes_with_every_message(
    redis_url, spans
) -> None:
    """A nightly job sends every message of a batch with one dict holding its own correlation
    ID and baggage, over a transport of its own (a Redis list): the second message went out
    without them, as if tracekit had written them, and its consumer began a new correlation."""
    import json

    import redis

    client = redis.Redis.from_url(redis_url)
    queue = f"jobs-{time.time_ns()}"
    headers: dict[str, Any] = {"x-correlation-id": "nightly-17", "baggage": "tenant=acme"}
    for number in range(3):
        messaging.inject(headers, system="redis-list", destination=queue)
        client.rpush(queue, json.dumps({"headers": headers, "body": number}))

    received = []
    for raw in client.lrange(queue, 0, -1):
        sent = json.loads(raw)["headers"]
        with messaging.consume(sent, system="redis-list", destination=queue):
            received.append((tracekit.correlation_id(), sent.get("baggage")))
    client.delete(queue)
    client.close()
    assert received == [("nightly-17", "tenant=acme")] * 3


@pytest.mark.parametrize("mapping", ["requests", "multidict"])
def test_a_callers_correlation_id_in_case_insensitive_headers_is_kept_outside_a_request(
    spans, mapping
) -> None:
    """A job posts its messages to a queue over HTTP, their headers kept in a case-insensitive
    mapping (requests' ``CaseInsensitiveDict``, what ``Session.headers`` is; aiohttp's
    ``CIMultiDict``) with its own ``X-Correlation-ID``. tracekit, with no ID of its own to
    write, asked the mapping for its own spelling, which answered with the caller's header:
    that was taken for tracekit's, and the caller's dropped as a second spelling. The message
    went out with no correlation ID at all, and its consumer began a new one."""
    import http.client
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from multidict import CIMultiDict
    from requests.structures import CaseInsensitiveDict

    queued: list[list[tuple[str, str]]] = []

    class Queue(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            queued.append(self.headers.items())
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    kind = CaseInsensitiveDict if mapping == "requests" else CIMultiDict
    headers = kind({"X-Correlation-ID": "nightly-17", "X-App": "kept"})
    messaging.inject(headers, system="http-queue", destination="jobs")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Queue)
    stop = serve_in_thread(server)
    try:
        connection = http.client.HTTPConnection(*server.server_address, timeout=5)
        connection.request("POST", "/jobs", b"{}", dict(headers))
        assert connection.getresponse().status == 202
        connection.close()
    finally:
        stop()

    (sent,) = queued
    with messaging.consume(sent, system="http-queue", destination="jobs") as message:
        pass
    assert message.correlation_id == "nightly-17"
    assert ("X-App", "kept") in sent
