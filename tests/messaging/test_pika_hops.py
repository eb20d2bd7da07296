"""RabbitMQ via pika (real broker): HTTP entry -> publish -> consume -> the consumer's HTTP call."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from types import MappingProxyType
from typing import Any

import pika
import pytest
import requests
from loopback import CuttableLink
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

DELAY_S = 0.4
SLACK_MS = 150.0  # consumer registration and delivery on loopback


def _connection(amqp_url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(amqp_url))


def _publish_in_request(
    channel: Any, queue: str, body: bytes, correlation_id: str, properties: Any = None
) -> None:
    """Publish to ``queue`` as the request ``correlation_id`` names does (an instrumented app)."""
    from tracekit import correlation

    token = correlation.set_correlation_id(correlation_id)
    try:
        channel.basic_publish("", queue, body, properties)
    finally:
        correlation.reset_correlation_id(token)


class _Publisher:
    """An entry-service handler that publishes ``count`` messages with pika (instrumented)."""

    def __init__(self, amqp_url: str, queue: str, count: int = 1) -> None:
        self.amqp_url, self.queue, self.count = amqp_url, queue, count
        self.published_at = 0.0  # time.monotonic() when the last publish returned

    def __call__(self, request: Any) -> None:
        connection = _connection(self.amqp_url)
        channel = connection.channel()
        for n in range(self.count):
            channel.basic_publish("", self.queue, f"job {n}".encode())
        self.published_at = time.monotonic()
        connection.close()


_publisher = _Publisher


def _one(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind and s.name == name]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def _assert_covers(outer: ReadableSpan, inner: ReadableSpan) -> None:
    assert outer.start_time is not None and outer.end_time is not None
    assert inner.start_time is not None and inner.end_time is not None
    assert outer.start_time <= inner.start_time and inner.end_time <= outer.end_time
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


def test_basic_consume_callback_continues_the_request(
    amqp_url, queue_name, spans, downstream, entry_service
) -> None:
    publisher = _Publisher(amqp_url, queue_name)
    connection = _connection(amqp_url)
    channel = connection.channel()
    with entry_service(publisher) as entry:
        response = requests.post(f"{entry}/orders", headers={"X-Correlation-ID": "order-4711"})
    assert response.headers["X-Correlation-ID"] == "order-4711"
    # The message waits in the queue for DELAY_S after its publish returned.
    time.sleep(max(0.0, publisher.published_at + DELAY_S - time.monotonic()))
    seen: list[str | None] = []

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        import tracekit

        seen.append(tracekit.correlation_id())
        requests.get(f"{downstream.url}/stock")
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue_name, handler)
    channel.start_consuming()
    connection.close()

    finished = spans.get_finished_spans()
    server = _one(finished, SpanKind.SERVER, "POST")
    producer = _one(finished, SpanKind.PRODUCER, f"send {queue_name}")
    consumer = _one(finished, SpanKind.CONSUMER, f"process {queue_name}")
    call = [
        s for s in finished if s.kind == SpanKind.CLIENT and "/stock" in s.attributes["url.full"]
    ]
    assert seen == ["order-4711"]
    # one correlation ID from the HTTP entry to the consumer's own outgoing call, on the wire
    assert downstream.requests[0]["x-correlation-id"] == "order-4711"
    assert downstream.requests[0]["traceparent"].split("-")[2] == f"{call[0].context.span_id:016x}"
    assert producer.parent.span_id == server.context.span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == server.context.trace_id
    _assert_covers(consumer, call[0])
    wait_ms = consumer.attributes["tracekit.queue_wait_ms"]
    assert DELAY_S * 1000 <= wait_ms <= DELAY_S * 1000 + SLACK_MS
    actual_ms = (consumer.start_time - producer.end_time) / 1e6
    assert abs(wait_ms - actual_ms) < 50  # the header's publish time is taken just before the send
    for span in (server, producer, consumer, call[0]):
        assert span.attributes["correlation.id"] == "order-4711"
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert producer.attributes["messaging.operation.type"] == "send"


def test_consume_generator_span_lasts_until_the_next_message(
    amqp_url, queue_name, spans, downstream, entry_service
) -> None:
    with entry_service(_publisher(amqp_url, queue_name, count=2)) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "batch-7"})
    connection = _connection(amqp_url)
    channel = connection.channel()
    messages = channel.consume(queue_name, inactivity_timeout=5)
    for handled, (method, _properties, _body) in enumerate(messages, start=1):
        assert method is not None
        requests.get(f"{downstream.url}/item/{handled}")
        channel.basic_ack(method.delivery_tag)
        if handled == 2:
            break
    channel.cancel()
    connection.close()

    finished = spans.get_finished_spans()
    consumers = sorted(
        (s for s in finished if s.kind == SpanKind.CONSUMER), key=lambda s: s.start_time
    )
    calls = sorted(
        (s for s in finished if s.kind == SpanKind.CLIENT and "/item/" in s.attributes["url.full"]),
        key=lambda s: s.start_time,
    )
    producers = {s.context.span_id for s in finished if s.kind == SpanKind.PRODUCER}
    assert len(consumers) == 2 and len(calls) == 2
    for consumer, call in zip(consumers, calls, strict=True):
        _assert_covers(consumer, call)  # the loop body's work is inside the message's span
        assert consumer.parent.span_id in producers
        assert consumer.attributes["correlation.id"] == "batch-7"
    assert consumers[0].end_time <= consumers[1].start_time  # ended when the next was fetched
    assert [r["x-correlation-id"] for r in downstream.requests] == ["batch-7", "batch-7"]


def test_basic_get_and_producer_without_tracekit(
    amqp_url, queue_name, spans, downstream, instrumented
) -> None:
    """A message from a producer without tracekit: new trace, correlation ID from the property."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    instrumented["PikaInstrumentor"].uninstrument()  # the producer runs without tracekit
    try:
        channel.basic_publish(
            "", queue_name, b"legacy", pika.BasicProperties(correlation_id="legacy-42")
        )
    finally:
        instrumented["PikaInstrumentor"].instrument()
    method, _, _ = channel.basic_get(queue_name, auto_ack=True)
    assert method is not None
    import tracekit

    assert tracekit.correlation_id() == "legacy-42"
    requests.get(downstream.url)
    channel.close()  # ends the basic_get span
    connection.close()
    assert tracekit.correlation_id() is None

    finished = spans.get_finished_spans()
    consumer = _one(finished, SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.parent is None  # a new trace
    assert consumer.attributes["correlation.id"] == "legacy-42"
    assert "tracekit.queue_wait_ms" not in consumer.attributes  # no publish time to measure from
    assert downstream.requests[0]["x-correlation-id"] == "legacy-42"
    assert not [s for s in finished if s.kind == SpanKind.PRODUCER]


def test_handler_error_marks_the_span_and_propagates(amqp_url, queue_name, spans) -> None:
    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"poison")

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        raise ValueError("cannot parse order")

    channel.basic_consume(queue_name, handler, auto_ack=True)
    with pytest.raises(ValueError, match="cannot parse order"):
        channel.start_consuming()
    connection.close()
    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "ValueError"


def test_scatter_gather_every_span_reachable_from_the_correlation_id(
    amqp_url, spans, downstream, entry_service, reachable
) -> None:
    """One request fans out N jobs, N workers reply, an aggregator takes the replies as a batch."""
    workers = 3
    work, replies = _declare(amqp_url, "work"), _declare(amqp_url, "replies")
    with entry_service(_publisher(amqp_url, work, count=workers)) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "quote-99"})
    threads = [
        threading.Thread(target=_worker, args=(amqp_url, work, replies, downstream.url))
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    headers = _gather(amqp_url, replies, workers)
    from tracekit import messaging

    with messaging.consume_batch(headers, system="rabbitmq", destination=replies) as batch:
        requests.post(f"{downstream.url}/quote")
    assert batch.correlation_id == "quote-99"
    _delete(amqp_url, work, replies)

    finished = spans.get_finished_spans()
    batch = [s for s in finished if s.kind == SpanKind.CONSUMER and s.links]
    assert len(batch) == 1 and len(batch[0].links) == workers
    reply_producers = {s.context.span_id for s in finished if s.name == f"send {replies}"}
    assert {link.context.span_id for link in batch[0].links} == reply_producers
    assert len([s for s in finished if s.name == f"process {work}"]) == workers
    assert len([s for s in finished if s.name == f"process {replies}" and not s.links]) == workers
    assert len(downstream.requests) == workers + 1
    assert {r["x-correlation-id"] for r in downstream.requests} == {"quote-99"}
    assert reachable("quote-99", finished) == {s.context.span_id for s in finished}


def _declare(amqp_url: str, prefix: str) -> str:
    import uuid

    name = f"tracekit-{prefix}-{uuid.uuid4().hex[:8]}"
    connection = _connection(amqp_url)
    connection.channel().queue_declare(name)
    connection.close()
    return name


def _delete(amqp_url: str, *queues: str) -> None:
    connection = _connection(amqp_url)
    for queue in queues:
        connection.channel().queue_delete(queue)
    connection.close()


def _worker(amqp_url: str, work: str, replies: str, downstream_url: str) -> None:
    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)

    def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        requests.get(f"{downstream_url}/price")
        ch.basic_publish("", replies, b"price")
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(work, handle)
    channel.start_consuming()
    connection.close()


def _gather(amqp_url: str, replies: str, count: int) -> list[dict[str, Any]]:
    """Fetch the replies (each basic_get is a CONSUMER span of its own) and keep their headers."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    gathered: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(gathered) < count and time.monotonic() < deadline:
        method, properties, _ = channel.basic_get(replies, auto_ack=True)
        if method is None:
            time.sleep(0.02)
            continue
        gathered.append(properties.headers)
    connection.close()
    return gathered


def test_uninstrument_restores_plain_pika(amqp_url, queue_name, spans, instrumented) -> None:
    pika_instrumentor = instrumented["PikaInstrumentor"]
    blocking = pika.adapters.blocking_connection.BlockingChannel
    traced = blocking.__dict__["basic_publish"]
    pika_instrumentor.uninstrument()
    try:
        assert blocking.__dict__["basic_publish"] is traced.__wrapped__
        connection = _connection(amqp_url)
        channel = connection.channel()
        channel.basic_publish("", queue_name, b"plain", pika.BasicProperties(headers={}))
        _, properties, _ = channel.basic_get(queue_name, auto_ack=True)
        connection.close()
    finally:
        pika_instrumentor.instrument()
    assert properties.headers == {}  # nothing injected, no span
    assert spans.get_finished_spans() == ()
    assert blocking.__dict__["basic_publish"] is not traced  # instrumenting again wraps anew


def test_a_consumer_registered_before_instrumenting_anew_is_traced_again(
    amqp_url, queue_name, spans, instrumented
) -> None:
    """``tracekit.shutdown()`` then ``init()`` (a reload) uninstrument, then instrument with new
    instrumentors. A consumer registered at startup ran bare for good after that: its handler
    had no correlation ID, and its messages no CONSUMER span, though they carried both."""
    import tracekit
    from tracekit.instrumentation.pika import PikaInstrumentor

    connection = _connection(amqp_url)
    channel = connection.channel()
    seen: list[str | None] = []

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        seen.append(tracekit.correlation_id())
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue_name, handler)
    first, anew = instrumented["PikaInstrumentor"], PikaInstrumentor()
    first.uninstrument()
    anew.instrument()
    try:
        _publish_in_request(channel, queue_name, b"{}", "order-reloaded")
        channel.start_consuming()
    finally:
        anew.uninstrument()
        first.instrument()
        connection.close()
    assert seen == ["order-reloaded"]
    consumer = _one(list(spans.get_finished_spans()), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.attributes["correlation.id"] == "order-reloaded"


def test_break_then_cancel_ends_the_span_while_the_generator_lives(
    amqp_url, queue_name, spans
) -> None:
    """The documented way out of ``consume()``: ``break``, then ``channel.cancel()``. The loop's
    generator is still referenced, so only the cancel can end the message's span."""
    import tracekit

    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"x", pika.BasicProperties(correlation_id="msg-1"))
    messages = channel.consume(queue_name, inactivity_timeout=5)
    for _method, _properties, _body in messages:
        assert tracekit.correlation_id() == "msg-1"
        break
    channel.cancel()
    after_cancel = tracekit.correlation_id()
    ended = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    connection.close()
    assert after_cancel is None
    assert [s.attributes["correlation.id"] for s in ended] == ["msg-1"]


def test_uninstrument_ends_a_held_message_and_traces_no_more(
    amqp_url, queue_name, spans, instrumented
) -> None:
    """A message a pull API handed out is held until the next fetch; uninstrumenting ends it
    (its ID was current for good), and a ``consume()`` generator made before goes on bare."""
    import tracekit

    pika_instrumentor = instrumented["PikaInstrumentor"]
    connection = _connection(amqp_url)
    channel = connection.channel()
    for n in range(3):
        channel.basic_publish("", queue_name, b"x", pika.BasicProperties(correlation_id=f"m-{n}"))
    messages = channel.consume(queue_name, inactivity_timeout=5)
    next(messages)
    try:
        pika_instrumentor.uninstrument()
        after = tracekit.correlation_id()
        traced_before = len(spans.get_finished_spans())
        method, _properties, _body = next(messages)
        during = tracekit.correlation_id()
    finally:
        pika_instrumentor.instrument()
    channel.cancel()
    connection.close()
    assert after is None and during is None and method is not None
    assert len(spans.get_finished_spans()) == traced_before  # the next message made no span
    assert [s.attributes["correlation.id"] for s in spans.get_finished_spans()
            if s.kind == SpanKind.CONSUMER][:1] == ["m-0"]  # fmt: skip


def test_a_lookup_with_basic_get_inside_a_callback_leaves_nothing_current_after(
    amqp_url, queue_name, spans
) -> None:
    """The callback for A fetches B with ``basic_get`` on another channel (a side lookup). B is
    held until that channel closes; then what was current before A is back: not A's ID and
    ended span, which every later publish of the process would have carried."""
    from opentelemetry import trace

    import tracekit

    connection = _connection(amqp_url)
    channel, side_channel = connection.channel(), connection.channel()
    side = _declare(amqp_url, "side")
    channel.basic_publish("", queue_name, b"a", pika.BasicProperties(correlation_id="msg-a"))
    channel.basic_publish("", side, b"b", pika.BasicProperties(correlation_id="msg-b"))
    seen: list[Any] = []

    def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        side_channel.basic_get(side, auto_ack=True)
        seen.append(tracekit.correlation_id())
        ch.stop_consuming()

    channel.basic_consume(queue_name, handle, auto_ack=True)
    channel.start_consuming()
    held = tracekit.correlation_id()  # B is still held: the last message fetched
    side_channel.close()
    after = (tracekit.correlation_id(), trace.get_current_span().get_span_context().is_valid)
    connection.close()
    _delete(amqp_url, side)
    assert (seen, held) == (["msg-b"], "msg-b")
    assert after == (None, False)


def test_a_held_message_fetched_two_handlers_deep_restores_what_was_before_both(
    amqp_url, queue_name, spans
) -> None:
    """Handler X runs handler A (``messaging.consume`` blocks), which fetches B with
    ``basic_get``. A ends, then X, while B is held: once B ends, nothing of X, A or B is left."""
    from opentelemetry import trace

    import tracekit
    from tracekit import messaging

    connection = _connection(amqp_url)
    side_channel = connection.channel()
    side = _declare(amqp_url, "side")
    side_channel.basic_publish("", side, b"b", pika.BasicProperties(correlation_id="msg-b"))
    with (
        messaging.consume({"x-correlation-id": "msg-x"}, system="test", destination="x"),
        messaging.consume({"x-correlation-id": "msg-a"}, system="test", destination="a"),
    ):
        side_channel.basic_get(side, auto_ack=True)
    held = tracekit.correlation_id()
    side_channel.close()
    after = (tracekit.correlation_id(), trace.get_current_span().get_span_context().is_valid)
    connection.close()
    _delete(amqp_url, side)
    assert held == "msg-b"
    assert after == (None, False)


def test_a_reused_properties_object_is_left_as_it_was(amqp_url, queue_name, spans) -> None:
    """Applications reuse one BasicProperties (delivery mode, their own headers) for every
    message: each message gets its own trace headers, and the object is never written to."""
    shared = pika.BasicProperties(delivery_mode=2, headers={"app": "orders"})
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"first", "request-A", shared)
    channel.basic_publish("", queue_name, b"second", shared)
    received = []
    for _ in range(2):
        _, properties, body = channel.basic_get(queue_name, auto_ack=True)
        received.append((body, properties.delivery_mode, properties.headers))
    channel.close()
    connection.close()

    assert shared.headers == {"app": "orders"}
    (first, mode1, headers1), (second, mode2, headers2) = received
    assert (first, second, mode1, mode2) == (b"first", b"second", 2, 2)
    assert headers1["app"] == headers2["app"] == "orders"
    assert headers1["x-correlation-id"] == "request-A"
    assert "request-A" not in str(headers2)  # not the previous message's ID or baggage
    assert headers1["traceparent"] != headers2["traceparent"]


def test_a_callers_headers_in_other_capitals_are_replaced_not_doubled(
    amqp_url, queue_name, spans
) -> None:
    """``Traceparent`` and ``X-Correlation-ID`` set by the app: tracekit's own values replace
    them. Sent beside tracekit's, the consumer read two and trusted neither: a new trace."""
    stale = {"Traceparent": f"00-{1:032x}-{1:016x}-01", "X-Correlation-ID": "from-the-app",
             "app": "orders"}  # fmt: skip
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"x", "request-B", pika.BasicProperties(headers=stale))
    got: list[Any] = []
    channel.basic_consume(queue_name, lambda ch, m, p, b: got.append(p.headers), auto_ack=True)
    connection.process_data_events(time_limit=2)
    connection.close()

    (headers,) = got
    assert sorted(k.lower() for k in headers) == sorted(set(k.lower() for k in headers))
    assert headers["x-correlation-id"] == "request-B" and headers["app"] == "orders"
    producer = _one(list(spans.get_finished_spans()), SpanKind.PRODUCER, f"send {queue_name}")
    consumer = _one(list(spans.get_finished_spans()), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


def test_basic_get_on_two_channels_in_turn_keeps_the_latest_message_current(
    amqp_url, spans
) -> None:
    """A worker polls two queues in turn with basic_get: the message it fetched last is the
    current one, an ended message's correlation ID never comes back, and once every channel is
    closed the worker's own context is back."""
    from opentelemetry import trace

    import tracekit

    a, b = _declare(amqp_url, "turn-a"), _declare(amqp_url, "turn-b")
    connection = _connection(amqp_url)
    publisher = connection.channel()
    for queue, ids in ((a, ("a1", "a2", "a3")), (b, ("b1", "b2"))):
        for cid in ids:
            _publish_in_request(publisher, queue, cid.encode(), cid)
    channels = {a: connection.channel(), b: connection.channel()}
    seen = []
    for _ in range(3):
        for queue, channel in channels.items():
            _, _, body = channel.basic_get(queue, auto_ack=True)
            seen.append((body, tracekit.correlation_id()))
    for channel in channels.values():
        channel.close()
    after = (tracekit.correlation_id(), trace.get_current_span().is_recording())
    connection.close()
    _delete(amqp_url, a, b)

    fetched = [(body, cid) for body, cid in seen if body is not None]
    assert fetched == [(c.encode(), c) for c in ("a1", "b1", "a2", "b2", "a3")]
    # b's third get found nothing: the latest message fetched, a3, is still the current one
    assert seen[-1] == (None, "a3")
    assert after == (None, False)
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert sorted(s.attributes["correlation.id"] for s in consumers) == [
        "a1", "a2", "a3", "b1", "b2",
    ]  # fmt: skip


def test_a_broken_setting_without_init_never_stops_a_pika_consumer() -> None:
    """pika instrumented without ``init()`` (the options come from the environment at each
    message) and ``TRACEKIT_MODE=bogus``: the callback and ``basic_get`` still get their
    messages; tracekit says once what it could not read."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import uuid, pika
        from tracekit import instrumentation
        instrumentation.instrument(["pika"])
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        channel = connection.channel()
        queue = "broken-setting-" + uuid.uuid4().hex[:8]
        channel.queue_declare(queue, auto_delete=True)
        channel.basic_publish("", queue, b"first")
        channel.basic_publish("", queue, b"second")
        _, _, body = channel.basic_get(queue, auto_ack=True)
        got = [body]
        channel.basic_consume(queue, lambda ch, m, p, b: got.append(b), auto_ack=True)
        connection.process_data_events(time_limit=2)
        connection.close()
        print(got)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TRACEKIT_MODE": "bogus"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[b'first', b'second']\n"
    said = [line for line in done.stderr.splitlines() if line.startswith("tracekit:")]
    assert (
        "tracekit: messaging correlation property failed (ConfigError); continuing without it"
        in said
    )
    assert len(said) == len(set(said))  # each place says it once, not once per message


def test_select_connection_hop_carries_the_context(amqp_url, queue_name, spans) -> None:
    """SelectConnection (and every callback-style adapter) publishes and consumes through
    ``pika.channel.Channel``: the hop is traced as on a BlockingConnection, once."""
    import tracekit

    properties = pika.BasicProperties(correlation_id="rpc-7", reply_to="replies")
    handled: list[tuple[Any, ...]] = []

    def on_message(channel: Any, method: Any, got: Any, body: bytes) -> None:
        handled.append((body, got.headers, got.correlation_id, tracekit.correlation_id()))
        channel.connection.close()

    def on_channel(channel: Any) -> None:
        _publish_in_request(channel, queue_name, b"hello", "order-sel-1", properties)
        channel.basic_consume(queue_name, on_message, auto_ack=True)

    _run_select_connection(amqp_url, on_channel)

    [(body, headers, amqp_correlation_id, in_handler)] = handled
    assert body == b"hello" and amqp_correlation_id == "rpc-7"  # the application's own property
    assert headers["x-correlation-id"] == "order-sel-1" and "traceparent" in headers
    assert in_handler == "order-sel-1"
    assert properties.headers is None  # the caller's properties were not written to
    finished = spans.get_finished_spans()
    producer = _one(finished, SpanKind.PRODUCER, f"send {queue_name}")
    consumer = _one(finished, SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert tracekit.correlation_id() is None
    port = pika.URLParameters(amqp_url).port
    assert producer.attributes["server.port"] == consumer.attributes["server.port"] == port


class _OutOfStock(Exception):
    """What the test's handler raises."""


@pytest.mark.parametrize("block", ["connection", "channel"])
def test_an_exception_leaving_the_with_block_fails_the_held_message(
    amqp_url, queue_name, spans, block
) -> None:
    """``basic_get`` hands the message back; the handler's failure leaves the ``with`` block,
    which closes the channel: the message's span ends failed, with the app's exception."""
    with pytest.raises(_OutOfStock, match="sku A-1"), _connection(amqp_url) as connection:
        channel = connection.channel()
        channel.basic_publish("", queue_name, b"A-1")
        with channel if block == "channel" else contextlib.nullcontext():
            method, _, body = channel.basic_get(queue_name, auto_ack=True)
            assert method is not None
            raise _OutOfStock(f"sku {body.decode()}")
    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.status.status_code.name == "ERROR"
    [event] = [e for e in consumer.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "sku A-1"


def test_a_channel_the_broker_closes_ends_the_message_it_held(amqp_url, queue_name, spans) -> None:
    """A handler's passive declare of a queue that is not there (a reply queue gone): the broker
    closes the channel, pika raises, and the app goes on with a new channel. The message that
    channel held can no longer be acked (the broker requeues it): its span ends there, failed
    with the broker's reason, and its correlation ID is no longer current."""
    import tracekit

    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"needs a reply", "reply-77")
    method, _, _ = channel.basic_get(queue_name)
    assert method is not None and tracekit.correlation_id() == "reply-77"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare(f"{queue_name}-gone", passive=True)
    assert tracekit.correlation_id() is None
    fresh = connection.channel()  # the app carries on; the message is back in the queue
    assert fresh.queue_declare(queue_name, passive=True).method.message_count == 1
    connection.close()

    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.attributes["correlation.id"] == "reply-77"
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "ChannelClosedByBroker"
    assert "NOT_FOUND" in (consumer.status.description or "")


def test_a_lost_connection_ends_the_message_its_channel_held(amqp_url, queue_name, spans) -> None:
    """The connection drops while the app handles a ``basic_get`` message; it catches pika's
    error and reconnects. The message (requeued by the broker) ends failed with the loss, and
    its correlation ID is no longer current."""
    import tracekit

    link = CuttableLink(amqp_url)
    connection = pika.BlockingConnection(pika.URLParameters(link.url))
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"in flight", "lost-5")
    method, _, _ = channel.basic_get(queue_name)
    assert method is not None and tracekit.correlation_id() == "lost-5"
    link.cut()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        channel.basic_ack(method.delivery_tag)
        connection.process_data_events(time_limit=5)
    assert tracekit.correlation_id() is None

    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.attributes["correlation.id"] == "lost-5"
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "StreamLostError"


@pytest.mark.parametrize("closed_by", ["broker", "lost connection"])
def test_a_channel_closed_under_a_callback_fails_its_message(
    amqp_url, queue_name, spans, closed_by
) -> None:
    """A consume callback's channel closes while it handles its message: the broker closes it
    (a passive declare of a reply queue that is gone) or the connection drops before its ack.
    The callback catches pika's error and returns; the message was never acked and the broker
    delivers it again, so its span ends failed with the reason, as a ``basic_get`` one does."""
    link = CuttableLink(amqp_url)
    connection = pika.BlockingConnection(pika.URLParameters(link.url))
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"needs a reply", "reply-78")
    caught: list[Exception] = []

    def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            if closed_by == "broker":
                ch.queue_declare(f"{queue_name}-gone", passive=True)
            else:
                link.cut()
                ch.basic_ack(method.delivery_tag)
                connection.process_data_events(time_limit=5)
        except pika.exceptions.AMQPError as error:
            caught.append(error)

    channel.basic_consume(queue_name, handle)
    with contextlib.suppress(pika.exceptions.AMQPError):  # no channel left to consume on
        channel.start_consuming()
    assert len(caught) == 1
    with contextlib.suppress(pika.exceptions.AMQPError):
        connection.close()

    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.attributes["correlation.id"] == "reply-78"
    assert consumer.status.status_code.name == "ERROR"
    expected = "ChannelClosedByBroker" if closed_by == "broker" else "StreamLostError"
    assert consumer.attributes["error.type"] == expected
    with _connection(amqp_url) as fresh:  # the message is back in the queue
        assert fresh.channel().queue_declare(queue_name, passive=True).method.message_count == 1


def test_rpc_replies_to_broker_named_queues_share_one_name(
    amqp_url, queue_name, spans, monkeypatch
) -> None:
    """RabbitMQ's RPC pattern: each client consumes its replies from a queue the broker names
    (``amq.gen-...``) and the server publishes to it on the default exchange. Named after those
    queues, every client would add a span name and metric series of its own to the server's
    (and, past the cap, push real queues into ``_other``): they are ``(anonymous)``, the name
    stays in the routing key attribute."""
    from prometheus_client import REGISTRY, generate_latest

    monkeypatch.setenv("OTEL_SERVICE_NAME", f"rpc-{queue_name}")
    connection = _connection(amqp_url)
    channel = connection.channel()
    replies = [channel.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for reply_to in replies:  # the server answers each client
        channel.basic_publish("", reply_to, b"42")
    for reply_to in replies:  # each client takes its answer
        method, _, _ = channel.basic_get(reply_to, auto_ack=True)
        assert method is not None
    connection.close()

    finished = spans.get_finished_spans()
    sent = [s for s in finished if s.kind == SpanKind.PRODUCER]
    taken = [s for s in finished if s.kind == SpanKind.CONSUMER]
    assert [s.name for s in sent] == ["send (anonymous)"] * 3
    assert [s.name for s in taken] == ["process (anonymous)"] * 3
    for span, reply_to in [*zip(sent, replies, strict=True), *zip(taken, replies, strict=True)]:
        assert span.attributes["messaging.destination.name"] == "(anonymous)"
        assert span.attributes["messaging.destination.anonymous"] is True
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == reply_to
    scrape = generate_latest(REGISTRY).decode()
    ours = [line for line in scrape.splitlines() if f'"rpc-{queue_name}"' in line]
    assert any('messaging_destination_name="(anonymous)"' in line for line in ours)
    assert not [line for line in ours if "amq.gen-" in line]


def test_a_header_table_that_is_a_read_only_mapping_is_traced(amqp_url, queue_name, spans) -> None:
    """pika sends any mapping as the header table (it reads ``items()``): an app's read-only
    table (``MappingProxyType``) of its own headers. The message carries tracekit's headers
    beside the app's, which is left as it was."""
    shared = MappingProxyType({"app": "orders"})
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(
        channel, queue_name, b"x", "request-C", pika.BasicProperties(headers=shared)
    )
    _, properties, _ = channel.basic_get(queue_name, auto_ack=True)
    connection.close()

    assert dict(shared) == {"app": "orders"}
    assert properties.headers["app"] == "orders"
    assert properties.headers["x-correlation-id"] == "request-C"
    producer = _one(list(spans.get_finished_spans()), SpanKind.PRODUCER, f"send {queue_name}")
    assert properties.headers["traceparent"].split("-")[2] == f"{producer.context.span_id:016x}"


def test_the_empty_queue_name_is_the_channels_anonymous_queue(amqp_url, spans) -> None:
    """AMQP's empty queue name means the queue the channel declared last (the usual way to
    consume from a queue the broker named): the span is ``process (anonymous)``, not a
    ``process `` with a blank destination."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    declared = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", declared, b"42")
    method, _, _ = channel.basic_get("", auto_ack=True)
    assert method is not None
    connection.close()

    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, "process (anonymous)")
    assert consumer.attributes["messaging.destination.name"] == "(anonymous)"
    assert consumer.attributes["messaging.rabbitmq.destination.routing_key"] == declared


def test_a_request_finding_the_queue_empty_keeps_its_own_ids(amqp_url, queue_name, spans) -> None:
    """A web endpoint pops a job with ``basic_get`` on the app's long-lived channel, and one
    thread serves request after request (a thread pool). The next poll ends the message the
    previous request took; finding the queue empty, it leaves this request's correlation ID and
    trace context current, not the previous request's."""
    from opentelemetry import trace
    from werkzeug.test import Client

    import tracekit
    from tracekit.wsgi import TracekitMiddleware

    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"job-1", "job-1")
    seen: list[tuple[str | None, int]] = []

    def next_job(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        channel.basic_get(queue_name, auto_ack=True)
        current_span = trace.get_current_span().get_span_context().span_id
        seen.append((tracekit.correlation_id(), current_span))
        start_response("200 OK", [])
        return [b"ok"]

    client = Client(TracekitMiddleware(next_job))
    for request in ("request-1", "request-2"):
        client.get("/next", headers={"X-Correlation-ID": request})
    connection.close()

    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.attributes.get("correlation.id") == "request-2"]
    second = _one(servers, SpanKind.SERVER, "GET")
    assert [cid for cid, _ in seen] == ["job-1", "request-2"]
    assert seen[1][1] == second.context.span_id  # its calls are the second request's children


def test_a_consume_generator_message_ends_before_the_wait_for_the_next(
    amqp_url, queue_name, spans
) -> None:
    """A worker on a quiet queue: ``for ... in channel.consume(queue)``. Its message's span
    covers the loop body and ends when the loop asks for the next message, not when the next
    one arrives: the idle wait is not the message's processing time, and the span is exported
    meanwhile."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"the only job")
    handled_at = 0
    for method, _, _ in channel.consume(queue_name, auto_ack=True, inactivity_timeout=1.0):
        if method is None:  # a second of silence
            assert spans.get_finished_spans()[-1].kind == SpanKind.CONSUMER
            break
        handled_at = time.time_ns()
    channel.cancel()
    connection.close()

    consumer = _one(spans.get_finished_spans(), SpanKind.CONSUMER, f"process {queue_name}")
    assert consumer.end_time is not None
    assert consumer.end_time - handled_at < 200_000_000  # not the second waited after it


def test_a_poll_inside_a_span_of_its_own_finding_nothing_keeps_both_ids_right(
    amqp_url, queue_name, spans
) -> None:
    """A poller that opens a span per cycle around ``basic_get``: the span's end takes the
    message's trace context away, not its correlation ID. The next cycle's poll finds the
    queue empty: its code runs in its own cycle's span, without the previous message's ID."""
    from opentelemetry import trace

    import tracekit

    tracer = trace.get_tracer("poller")
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_in_request(channel, queue_name, b"job-2", "job-2")
    seen: list[tuple[str | None, bool]] = []
    for cycle in ("first", "second"):
        with tracer.start_as_current_span(f"cycle {cycle}") as span:
            channel.basic_get(queue_name, auto_ack=True)
            seen.append((tracekit.correlation_id(), trace.get_current_span() is span))
    connection.close()

    assert seen[0][0] == "job-2"
    assert seen[1] == (None, True)


def test_a_worker_whose_message_was_ended_from_another_thread_is_clean_at_its_next(
    amqp_url, queue_name, spans, instrumented
) -> None:
    """``tracekit.uninstrument()`` (a reload, a shutdown and init) from the main thread ends
    the message a worker thread holds, but only the worker can put its own IDs back: it does
    so at its next delivery through tracekit. Once that one ends, nothing of either message is
    current (the first's ID stayed for good)."""
    import tracekit

    pika_instrumentor = instrumented["PikaInstrumentor"]
    for n in range(2):
        properties = pika.BasicProperties(correlation_id=f"job-{n}")
        _connection(amqp_url).channel().basic_publish("", queue_name, b"x", properties)
    took, go_on, seen = threading.Event(), threading.Event(), []

    def worker() -> None:
        connection = _connection(amqp_url)
        channel = connection.channel()
        channel.basic_get(queue_name, auto_ack=True)
        took.set()
        go_on.wait(10)
        seen.append(tracekit.correlation_id())  # still job-0: ended elsewhere
        channel.basic_get(queue_name, auto_ack=True)
        seen.append(tracekit.correlation_id())
        channel.basic_get(queue_name, auto_ack=True)  # the queue is empty: job-1 ends here
        seen.append(tracekit.correlation_id())
        connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    took.wait(10)
    pika_instrumentor.uninstrument()
    pika_instrumentor.instrument()
    go_on.set()
    thread.join(10)
    assert seen == ["job-0", "job-1", None]


def _by_message_id(spans: Any) -> dict[str, ReadableSpan]:
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    return {s.attributes["messaging.message.id"]: s for s in consumers}


def _publish_ids(channel: Any, queue: str, *message_ids: str) -> None:
    for message_id in message_ids:
        channel.basic_publish("", queue, b"order", pika.BasicProperties(message_id=message_id))


def _messages_left(amqp_url: str, queue: str) -> int:
    with _connection(amqp_url) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)


def test_a_message_the_callback_nacks_or_rejects_ends_failed_saying_so(
    amqp_url, queue_name, spans
) -> None:
    """A callback that gives its message back (nack, reject): the trace shows it was refused,
    and whether the broker requeued it; a message acked stays a success."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_ids(channel, queue_name, "acked", "dead-lettered", "requeued")

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        if properties.message_id == "acked":
            ch.basic_ack(method.delivery_tag)
        elif properties.message_id == "dead-lettered":
            ch.basic_nack(method.delivery_tag, requeue=False)
        else:
            ch.basic_reject(method.delivery_tag)  # requeue=True is pika's default
            ch.stop_consuming()

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue_name, handler)
    channel.start_consuming()
    connection.close()

    consumers = _by_message_id(spans)
    assert consumers["acked"].status.status_code.name == "UNSET"
    refused = consumers["dead-lettered"]
    assert refused.status.status_code.name == "ERROR"
    assert refused.status.description == "MessageRejected: basic_nack, not requeued"
    assert refused.attributes["error.type"] == "MessageRejected"
    assert consumers["requeued"].status.description == "MessageRejected: basic_reject, requeued"
    assert _messages_left(amqp_url, queue_name) == 1  # the broker has the requeued one back


def test_a_held_message_nacked_in_the_loop_ends_failed(amqp_url, queue_name, spans) -> None:
    """``basic_get`` and the consume generator: a nack of the message held (``multiple``
    covering it) fails its span; the next message, acked, stays a success."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    _publish_ids(channel, queue_name, "got", "iterated", "acked")
    method, _, _ = channel.basic_get(queue_name)
    channel.basic_nack(method.delivery_tag, requeue=False)
    channel.basic_qos(prefetch_count=1)  # tag 3 arrives after tag 2 is settled
    for method, _, _ in channel.consume(queue_name, inactivity_timeout=5):
        if method.delivery_tag == 2:
            channel.basic_nack(0, multiple=True, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)
            break
    channel.cancel()
    connection.close()

    consumers = _by_message_id(spans)
    assert consumers["got"].status.description == "MessageRejected: basic_nack, not requeued"
    assert consumers["iterated"].status.description == "MessageRejected: basic_nack, not requeued"
    assert consumers["acked"].status.status_code.name == "UNSET"


def test_a_nack_a_worker_thread_hands_back_to_the_connection_is_a_failed_settle_span(
    amqp_url, queue_name, spans
) -> None:
    """pika's way to settle from a worker thread: the callback hands the message to a thread
    (started in its context, as docs/logs.md shows, so the worker's logs carry the message's
    ID) and returns; once the callback's span is recorded, the worker nacks through
    ``add_callback_threadsafe``, which runs the nack in the consuming thread. The span cannot
    change any more: the nack is a failed span of its own under it, with the message's ID."""
    from conditions import wait_for

    from tracekit import correlation

    connection = _connection(amqp_url)
    channel = connection.channel()
    token = correlation.set_correlation_id("order-threaded")
    _publish_ids(channel, queue_name, "handed-over")
    correlation.reset_correlation_id(token)
    workers: list[threading.Thread] = []

    def work(ch: Any, tag: int) -> None:
        wait_for(lambda: _by_message_id(spans), 5, "the callback's span recorded")
        connection.add_callback_threadsafe(lambda: ch.basic_nack(tag, requeue=False))
        connection.add_callback_threadsafe(ch.stop_consuming)

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        run_in_context = contextvars.copy_context().run
        worker = threading.Thread(target=run_in_context, args=(work, ch, method.delivery_tag))
        workers.append(worker)
        worker.start()

    channel.basic_consume(queue_name, handler)
    channel.start_consuming()
    workers[0].join()
    assert correlation.correlation_id() is None  # the consuming thread's context is its own
    connection.close()

    consumer = _by_message_id(spans)["handed-over"]
    (settle,) = [s for s in spans.get_finished_spans() if s.name == f"basic_nack {queue_name}"]
    assert consumer.status.status_code.name == "UNSET"
    assert settle.kind == SpanKind.CLIENT
    assert settle.parent is not None and settle.parent.span_id == consumer.context.span_id
    assert settle.status.description == "MessageRejected: basic_nack, not requeued"
    assert settle.attributes["messaging.operation.type"] == "settle"
    assert settle.attributes["correlation.id"] == "order-threaded"
    assert _messages_left(amqp_url, queue_name) == 0  # the broker took the nack


def test_a_select_connection_callback_that_rejects_ends_failed(amqp_url, queue_name, spans) -> None:
    """The callback-style adapters' ``Channel``: a reject in the callback fails its span."""

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        channel.basic_reject(method.delivery_tag, requeue=False)
        channel.connection.close()

    def on_channel(channel: Any) -> None:
        _publish_ids(channel, queue_name, "rejected")
        channel.basic_consume(queue_name, on_message)

    _run_select_connection(amqp_url, on_channel)
    rejected = _by_message_id(spans)["rejected"]
    assert rejected.status.description == "MessageRejected: basic_reject, not requeued"


def test_a_select_connection_worker_thread_reject_is_a_failed_settle_span(
    amqp_url, queue_name, spans
) -> None:
    """The callback-style adapters: a worker thread started in the callback's context rejects
    through the ioloop's ``add_callback_threadsafe`` once the callback's span is recorded."""
    from conditions import wait_for

    workers: list[threading.Thread] = []

    def work(channel: Any, tag: int) -> None:
        wait_for(lambda: _by_message_id(spans), 5, "the callback's span recorded")
        ioloop = channel.connection.ioloop
        ioloop.add_callback_threadsafe(lambda: channel.basic_reject(tag, requeue=False))
        ioloop.add_callback_threadsafe(channel.connection.close)

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        run_in_context = contextvars.copy_context().run
        worker = threading.Thread(target=run_in_context, args=(work, channel, method.delivery_tag))
        workers.append(worker)
        worker.start()

    def on_channel(channel: Any) -> None:
        _publish_ids(channel, queue_name, "rejected-later")
        channel.basic_consume(queue_name, on_message)

    _run_select_connection(amqp_url, on_channel)
    workers[0].join()
    consumer = _by_message_id(spans)["rejected-later"]
    (settle,) = [s for s in spans.get_finished_spans() if s.name == f"basic_reject {queue_name}"]
    assert consumer.status.status_code.name == "UNSET"
    assert settle.parent is not None and settle.parent.span_id == consumer.context.span_id
    assert settle.status.description == "MessageRejected: basic_reject, not requeued"
    assert _messages_left(amqp_url, queue_name) == 0


def _run_select_connection(amqp_url: str, on_channel: Any) -> None:
    """Run an asynchronous (``SelectConnection``) consumer until it closes, or 5 s at most."""
    connection = pika.SelectConnection(
        pika.URLParameters(amqp_url),
        on_open_callback=lambda opened: opened.channel(on_open_callback=on_channel),
        on_close_callback=lambda closed, reason: closed.ioloop.stop(),
    )
    connection.ioloop.call_later(5, connection.ioloop.stop)
    connection.ioloop.start()


def test_spans_name_the_broker_and_the_consumers_delivery_tags(amqp_url, queue_name, spans) -> None:
    """OpenTelemetry's RabbitMQ conventions: ``server.address`` and ``server.port`` (the broker
    the connection was opened to) on both sides, and each consumed message's delivery tag
    (conditionally required: pika always has it) on its CONSUMER span, however it was fetched."""
    params = pika.URLParameters(amqp_url)
    connection = _connection(amqp_url)
    channel = connection.channel()
    for n in range(3):
        channel.basic_publish("", queue_name, f"job {n}".encode())

    tags: list[int] = []  # as the app saw them

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        tags.append(method.delivery_tag)
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue_name, on_message)
    channel.start_consuming()
    tags.append(channel.basic_get(queue_name, auto_ack=True)[0].delivery_tag)
    for method, _, _ in channel.consume(queue_name, auto_ack=True, inactivity_timeout=5):
        tags.append(method.delivery_tag)
        break
    channel.cancel()
    connection.close()
    finished = spans.get_finished_spans()
    producers = [s.attributes for s in finished if s.kind == SpanKind.PRODUCER]
    consumers = [s.attributes for s in finished if s.kind == SpanKind.CONSUMER]
    assert len(producers) == 3 and len(consumers) == 3
    for attributes in producers + consumers:
        assert (attributes["server.address"], attributes["server.port"]) == (
            params.host,
            params.port,
        )
    assert [a["messaging.rabbitmq.message.delivery_tag"] for a in consumers] == tags
    assert all("messaging.rabbitmq.message.delivery_tag" not in a for a in producers)


def test_spans_carry_the_messages_own_correlation_id_as_its_conversation(
    amqp_url, queue_name, spans
) -> None:
    """OpenTelemetry's RabbitMQ conventions recommend the message's ``correlation_id`` property
    (an RPC's request and reply share it) as ``messaging.message.conversation_id``, on both
    sides; a message without one has none."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"ask", pika.BasicProperties(correlation_id="rpc-7"))
    channel.basic_publish("", queue_name, b"tell")
    for _ in range(2):
        channel.basic_get(queue_name, auto_ack=True)
    channel.close()
    connection.close()
    finished = spans.get_finished_spans()
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        conversations = [
            s.attributes.get("messaging.message.conversation_id")
            for s in finished
            if s.kind == kind
        ]
        assert conversations == ["rpc-7", None]


class _UnprintableId:
    def __str__(self) -> str:
        raise RuntimeError("the application's own __str__")


@pytest.mark.parametrize(
    "correlation_id", [_UnprintableId(), 10**5000], ids=["an object", "5001 digits"]
)
def test_a_correlation_id_pika_refuses_is_refused_as_without_tracekit(
    amqp_url, queue_name, spans, correlation_id
) -> None:
    """pika refuses a correlation_id that is not text with its AssertionError; tracekit made
    text of it first, so the caller got the RuntimeError of the object's own ``__str__`` or
    the ValueError of ``str`` of a 5,001-digit int in its place."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    properties = pika.BasicProperties(correlation_id=correlation_id)
    with pytest.raises(AssertionError, match="non-string value"):
        channel.basic_publish("", queue_name, b"ask", properties)
    connection.close()
    for span in spans.get_finished_spans():
        assert "messaging.message.conversation_id" not in (span.attributes or {})


@pytest.mark.parametrize(
    "routing_key", [_UnprintableId(), 10**5000], ids=["an object", "5001 digits"]
)
def test_a_routing_key_or_exchange_pika_refuses_is_refused_as_without_tracekit(
    amqp_url, spans, routing_key
) -> None:
    """pika refuses a routing key that is not text with its AssertionError; tracekit made text
    of it for the span first, and the caller got that object's ``__str__`` error, or
    ValueError for a 5,001-digit int, in its place."""
    connection = _connection(amqp_url)
    channel = connection.channel()
    with pytest.raises(AssertionError, match="non-string value"):
        channel.basic_publish("", routing_key, b"ask")
    with pytest.raises(AssertionError, match="non-string value"):  # an exchange alike
        channel.basic_publish(routing_key, "orders", b"ask")
    connection.close()
    for span in spans.get_finished_spans():
        routed = (span.attributes or {}).get("messaging.rabbitmq.destination.routing_key")
        assert routed in (None, "orders")


def test_a_message_published_outside_a_request_keeps_one_id_when_redelivered(
    amqp_url, queue_name, spans
) -> None:
    """A script publishes with no correlation ID current; its worker nacks the message once
    and gets it again. Each delivery made an ID of its own, so ``tracekit trace`` showed one
    of the two; now both, and the PRODUCER span, carry the message's own ID."""
    import tracekit

    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"job")
    assert tracekit.correlation_id() is None
    ids = []
    for _ in range(2):
        method, _, _ = channel.basic_get(queue_name)
        ids.append(tracekit.correlation_id())
        channel.basic_nack(method.delivery_tag, requeue=True)
    channel.close()
    connection.close()

    (sent,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert ids[0] is not None and ids == [ids[0], ids[0]]
    assert sent.attributes["correlation.id"] == ids[0]


def test_a_correlation_property_outside_a_request_stays_the_messages_id(
    amqp_url, queue_name, spans
) -> None:
    """An RPC client sets AMQP's ``correlation_id`` outside any request: that is the message's
    ID; no new one is made over it."""
    import tracekit

    connection = _connection(amqp_url)
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"x", pika.BasicProperties(correlation_id="rpc-5"))
    _, properties, _ = channel.basic_get(queue_name, auto_ack=True)
    handled = tracekit.correlation_id()
    channel.close()
    connection.close()

    assert handled == "rpc-5" and "x-correlation-id" not in properties.headers
    (sent,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert sent.attributes["correlation.id"] == "rpc-5"
