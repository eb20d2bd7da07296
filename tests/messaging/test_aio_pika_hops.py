"""RabbitMQ via aio-pika (real broker): publish, consume callbacks, queue iterators, process()."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import pytest
import requests
import yarl
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import tracekit
from tracekit import config, logs
from tracekit.instrumentation import aio_pika as traced_aio_pika

DELAY_S = 0.5
SLACK_MS = 150.0


class _AsyncPublisher:
    """An entry-service handler that publishes with aio-pika (instrumented) on its own loop."""

    def __init__(self, amqp_url: str, queue: str, count: int = 1) -> None:
        self.amqp_url, self.queue, self.count = amqp_url, queue, count
        self.published_at = 0.0

    def __call__(self, request: Any) -> None:
        asyncio.run(self._publish())

    async def _publish(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for n in range(self.count):
                message = aio_pika.Message(f"job {n}".encode(), message_id=f"m-{n}")
                await channel.default_exchange.publish(message, routing_key=self.queue)
            self.published_at = time.monotonic()


def _kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_time or 0)


def _calls(spans: list[ReadableSpan], path: str) -> list[ReadableSpan]:
    return [s for s in _kind(spans, SpanKind.CLIENT) if path in str(s.attributes["url.full"])]


def _covers(outer: ReadableSpan, inner: ReadableSpan) -> bool:
    assert outer.start_time and outer.end_time and inner.start_time and inner.end_time
    return (
        outer.start_time <= inner.start_time
        and inner.end_time <= outer.end_time
        and inner.parent is not None
        and inner.parent.span_id == outer.context.span_id
    )


def test_consume_callback_continues_the_request(
    amqp_url, queue_name, spans, downstream, entry_service
) -> None:
    publisher = _AsyncPublisher(amqp_url, queue_name)
    with entry_service(publisher) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "aio-1"})
    seen: list[str | None] = []

    async def consume() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            queue = await (await connection.channel()).declare_queue(queue_name)
            done = asyncio.Event()
            # The message waits in the queue for DELAY_S after its publish returned.
            await asyncio.sleep(max(0.0, publisher.published_at + DELAY_S - time.monotonic()))

            async def on_message(message: Any) -> None:
                seen.append(tracekit.correlation_id())
                requests.get(f"{downstream.url}/stock")
                await message.ack()
                done.set()

            await queue.consume(on_message)
            await asyncio.wait_for(done.wait(), 10)

    asyncio.run(consume())
    finished = spans.get_finished_spans()
    (server,) = _kind(finished, SpanKind.SERVER)
    (producer,) = _kind(finished, SpanKind.PRODUCER)
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    (call,) = _calls(finished, "/stock")
    assert seen == ["aio-1"]
    assert downstream.requests[0]["x-correlation-id"] == "aio-1"
    assert producer.parent.span_id == server.context.span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes["messaging.message.id"] == "m-0"
    assert _covers(consumer, call)
    wait_ms = consumer.attributes["tracekit.queue_wait_ms"]
    assert DELAY_S * 1000 <= wait_ms <= DELAY_S * 1000 + SLACK_MS


@pytest.mark.parametrize("connect", ["connect", "connect_robust"])
def test_iterator_spans_cover_the_loop_body_and_process_adds_none(
    amqp_url, queue_name, spans, downstream, entry_service, connect
) -> None:
    """Also through ``connect_robust``, whose queue iterator has an ``__anext__`` of its own."""
    with entry_service(_AsyncPublisher(amqp_url, queue_name, count=2)) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "aio-iter"})
    seen: list[str | None] = []

    async def consume() -> None:
        connection = await getattr(aio_pika, connect)(amqp_url)
        async with connection:
            queue = await (await connection.channel()).declare_queue(queue_name)
            handled = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    seen.append(tracekit.correlation_id())
                    async with message.process():
                        requests.get(f"{downstream.url}/item")
                    handled += 1
                    if handled == 2:
                        break

    asyncio.run(consume())
    finished = spans.get_finished_spans()
    consumers = _kind(finished, SpanKind.CONSUMER)
    calls = _calls(finished, "/item")
    assert seen == ["aio-iter", "aio-iter"]
    assert len(consumers) == 2 and len(calls) == 2  # process() inside the loop adds no span
    for consumer, call in zip(consumers, calls, strict=True):
        assert _covers(consumer, call)
        assert consumer.attributes["correlation.id"] == "aio-iter"
        assert consumer.name == f"process {queue_name}"
    assert consumers[0].end_time <= consumers[1].start_time
    assert {r["x-correlation-id"] for r in downstream.requests} == {"aio-iter"}


def test_get_then_process_block_is_the_consumer_span(amqp_url, queue_name, spans) -> None:
    """A message from a producer without tracekit: new trace, ID from ``correlation_id``."""

    async def run() -> tuple[str | None, str | None]:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            legacy = aio_pika.Message(b"legacy", correlation_id="legacy-aio")
            # aiormq's own publish: what a producer without tracekit sends.
            underlay = await channel.get_underlay_channel()
            await underlay.basic_publish(
                legacy.body, routing_key=queue_name, properties=legacy.properties
            )
            queue = await channel.declare_queue(queue_name)
            message = await queue.get(timeout=5)
            async with message.process():
                inside = tracekit.correlation_id()
            return inside, tracekit.correlation_id()

    inside, after = asyncio.run(run())
    assert (inside, after) == ("legacy-aio", None)
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.parent is None
    assert consumer.attributes["correlation.id"] == "legacy-aio"
    assert not _kind(spans.get_finished_spans(), SpanKind.PRODUCER)


def test_process_block_names_the_queue_not_the_routing_key(amqp_url, queue_name, spans) -> None:
    """A queue bound to a topic exchange: the message's routing key is the binding's, the
    destination is still the queue the message was fetched from."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                f"{queue_name}-ex", aio_pika.ExchangeType.TOPIC, auto_delete=True
            )
            queue = await channel.declare_queue(queue_name)
            await queue.bind(exchange, "order.created")
            await exchange.publish(aio_pika.Message(b"order"), routing_key="order.created")
            message = await queue.get(timeout=5)
            async with message.process():
                pass
            await queue.unbind(exchange, "order.created")
            await exchange.delete()

    asyncio.run(run())
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.name == f"process {queue_name}"
    assert consumer.attributes["messaging.destination.name"] == queue_name
    assert consumer.attributes["messaging.rabbitmq.destination.routing_key"] == "order.created"


def test_messages_handled_outside_their_own_span_name_their_queue_not_routing_keys(
    amqp_url, queue_name, spans
) -> None:
    """A queue bound to a topic exchange, whose messages each have a routing key of their own:
    messages a loop collected from an iterator, and one a consume callback handed to a task,
    were each named by their routing key (``process order.created.1``...): a span name and a
    metric series per key."""
    handed: list[asyncio.Task[None]] = []

    async def process(message: Any) -> None:
        async with message.process():
            pass

    async def hand_to_a_task(message: Any) -> None:
        handed.append(asyncio.create_task(process(message)))

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                f"{queue_name}-ex", aio_pika.ExchangeType.TOPIC, auto_delete=True
            )
            queue = await channel.declare_queue(queue_name)
            await queue.bind(exchange, "order.created.*")
            for n in (1, 2, 3):
                await exchange.publish(aio_pika.Message(b"order"), f"order.created.{n}")
            batch: list[Any] = []
            async with queue.iterator() as messages:
                async for message in messages:
                    batch.append(message)
                    if len(batch) == 2:
                        break
            for message in batch:
                await process(message)
            await queue.consume(hand_to_a_task)
            while not handed:
                await asyncio.sleep(0.01)
            await handed[0]
            await exchange.delete()

    asyncio.run(run())
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert {c.name for c in consumers} == {f"process {queue_name}"}
    assert sorted(
        c.attributes["messaging.rabbitmq.destination.routing_key"] for c in consumers
    ) == ["order.created.1", "order.created.1", "order.created.2", "order.created.2",
          "order.created.3", "order.created.3"]  # fmt: skip


def test_a_plain_function_callback_is_called_as_aio_pika_calls_it(
    amqp_url, queue_name, spans
) -> None:
    """aio-pika still accepts a callback that is not a coroutine function (deprecated): its
    result is not awaited. With tracekit it must run the same, inside its CONSUMER span."""
    seen: list[tuple[bytes, str | None]] = []

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)

            def on_message(message: Any) -> None:
                seen.append((message.body, tracekit.correlation_id()))

            await queue.consume(on_message, no_ack=True)
            message = aio_pika.Message(b"plain", correlation_id="plain-aio")
            await channel.default_exchange.publish(message, routing_key=queue_name)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(run())
    assert seen == [(b"plain", "plain-aio")]
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.status.is_ok
    assert consumer.attributes["correlation.id"] == "plain-aio"


def test_a_consumer_registered_before_instrumenting_anew_is_traced_again(
    amqp_url, queue_name, spans, instrumented
) -> None:
    """``tracekit.shutdown()`` then ``init()`` (a reload) uninstrument, then instrument with new
    instrumentors. A consumer registered at startup ran bare for good after that: its handler
    had no correlation ID, and its messages no CONSUMER span, though they carried both."""
    from tracekit.instrumentation.aio_pika import AioPikaInstrumentor

    seen: list[str | None] = []
    first, anew = instrumented["AioPikaInstrumentor"], AioPikaInstrumentor()

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            done = asyncio.Event()

            async def on_message(message: Any) -> None:
                seen.append(tracekit.correlation_id())
                await message.ack()
                done.set()

            await queue.consume(on_message)
            first.uninstrument()
            anew.instrument()
            token = tracekit.correlation.set_correlation_id("order-reloaded")
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), queue_name)
            tracekit.correlation.reset_correlation_id(token)
            await asyncio.wait_for(done.wait(), 10)

    try:
        asyncio.run(run())
    finally:
        anew.uninstrument()
        first.instrument()
    assert seen == ["order-reloaded"]
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.attributes["correlation.id"] == "order-reloaded"


def test_a_message_published_twice_is_left_as_it_was(amqp_url, queue_name, spans) -> None:
    """One Message object published twice (fan-out by hand, a retry): each publish carries its
    own trace headers, and the caller's message is never written to."""
    from tracekit import correlation

    async def run() -> list[dict[str, Any]]:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            message = aio_pika.Message(b"again", headers={"app": "orders"})
            token = correlation.set_correlation_id("request-B")
            await channel.default_exchange.publish(message, routing_key=queue_name)
            correlation.reset_correlation_id(token)
            await channel.default_exchange.publish(message, routing_key=queue_name)
            assert message.headers == {"app": "orders"}
            received = []
            for _ in range(2):
                incoming = await queue.get(timeout=5)
                async with incoming.process():
                    received.append(dict(incoming.headers))
            return received

    first, second = asyncio.run(run())
    assert first["app"] == second["app"] == "orders"
    assert first["x-correlation-id"] == "request-B"
    assert "request-B" not in str(second)
    assert first["traceparent"] != second["traceparent"]


class OutOfStock(Exception):
    """What the test's handler raises."""


def test_a_failing_handler_in_an_iterator_loop_fails_its_span(amqp_url, queue_name, spans) -> None:
    """The documented loop (``async with queue.iterator()``, ``async with message.process()``):
    a handler's exception is on the message's span, whether the loop catches it (the message
    was rejected) or it leaves the iterator's block. The app sees its exception unchanged."""

    caught: list[str] = []

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for body in (b"caught", b"escapes"):
                await channel.default_exchange.publish(aio_pika.Message(body), queue_name)
            queue = await channel.declare_queue(queue_name)
            async with queue.iterator() as messages:
                async for message in messages:
                    try:
                        async with message.process():
                            raise OutOfStock(message.body.decode())
                    except OutOfStock as error:
                        if str(error) == "escapes":
                            raise
                        caught.append(str(error))

    with pytest.raises(OutOfStock, match="escapes"):
        asyncio.run(run())
    assert caught == ["caught"]
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert [c.status.status_code.name for c in consumers] == ["ERROR", "ERROR"]
    for consumer, body in zip(consumers, ("caught", "escapes"), strict=True):
        events = [e for e in consumer.events if e.name == "exception"]
        assert len(events) == 1  # once, though the second left process() and the iterator
        assert events[0].attributes["exception.message"] == body
        assert consumer.attributes["error.type"].endswith("OutOfStock")


def test_a_message_the_broker_returns_unroutable_fails_its_send_span(amqp_url, spans) -> None:
    """aio-pika publishes ``mandatory`` with publisher confirms by default: a message no queue
    is bound for comes back as a Basic.Return, which ``publish`` hands back instead of raising.
    The PRODUCER span says the message went nowhere (as pika's ``UnroutableError`` does), and
    the caller gets aio-pika's own result."""
    nowhere = f"tracekit-unbound-{time.monotonic_ns()}"

    async def run() -> Any:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            return await channel.default_exchange.publish(aio_pika.Message(b"lost"), nowhere)

    result = asyncio.run(run())
    assert type(result).__name__ == "DeliveredMessage"  # what aio-pika returns for a Return
    (producer,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert producer.name == f"send {nowhere}"
    assert producer.status.status_code.name == "ERROR"
    assert producer.attributes["error.type"] == "PublishError"
    assert "NO_ROUTE" in (producer.status.description or "")


@pytest.mark.parametrize(
    ("connect", "named"),
    [
        ("connect", "amq.gen-"),  # by the broker
        # by aio-pika: over connect_robust it names an unnamed queue itself, new for every
        # client, and its replies were named after it, "send amq_8373b6...": a span name and
        # metric series per client
        ("connect_robust", "amq_"),
    ],
)
def test_a_reply_to_a_queue_named_for_the_client_is_anonymous(
    amqp_url, spans, connect: str, named: str
) -> None:
    """An RPC reply: published on the default exchange to the queue named for the client, and
    taken from it. Both spans name the destination ``(anonymous)`` (one name for every client),
    the queue's own name stays in the routing key attribute."""

    async def run() -> str:
        connection = await getattr(aio_pika, connect)(amqp_url)
        async with connection:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"42"), replies.name)
            async with replies.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        return str(replies.name)
        raise AssertionError("no reply")

    reply_to = asyncio.run(run())
    assert reply_to.startswith(named)
    finished = spans.get_finished_spans()
    (sent,), (taken,) = _kind(finished, SpanKind.PRODUCER), _kind(finished, SpanKind.CONSUMER)
    assert (sent.name, taken.name) == ("send (anonymous)", "process (anonymous)")
    for span in (sent, taken):
        assert span.attributes["messaging.destination.name"] == "(anonymous)"
        assert span.attributes["messaging.destination.anonymous"] is True
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == reply_to


@pytest.mark.parametrize("fetch", ["get", "iterator"])
def test_a_message_whose_ack_fails_ends_failed(amqp_url, queue_name, spans, fetch) -> None:
    """The channel goes away while a message is handled: leaving ``message.process()`` cannot
    ack it, and aio-pika raises (the broker will deliver the message again). Its span says so
    instead of reporting the message processed, though the app catches the error (in the
    iterator's loop) or lets it go (``Queue.get``)."""

    async def handle(message: Any, channel: Any) -> None:
        async with message.process():
            await channel.close()  # (the connection dropped, the app closed it...)

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            await channel.default_exchange.publish(aio_pika.Message(b"order"), queue_name)
            if fetch == "get":
                await handle(await queue.get(timeout=5), channel)
            async with queue.iterator() as messages:
                async for message in messages:
                    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
                        await handle(message, channel)
                    break

    if fetch == "get":
        with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
            asyncio.run(run())
    else:
        asyncio.run(run())
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "ChannelInvalidStateError"


def test_an_iterator_closed_with_its_channel_leaves_the_message_to_its_handler(
    amqp_url, queue_name, spans, instrumented, monkeypatch
) -> None:
    """aio-pika 9.4 (which tracekit's ``rabbitmq`` extra allows) closes a queue iterator
    through its public ``close(queue, exc)`` when the channel closes, which ended the span of
    the message being handled as a success: the ack then failed (the broker delivers the
    message again), and the trace still said processed. As on later versions, the span ends
    with its handler, failed."""
    from aio_pika.queue import QueueIterator

    close, init = QueueIterator.close, QueueIterator.__init__

    async def close_as_in_9_4(self: Any, *_: Any) -> None:
        await close(self)

    def init_as_in_9_4(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._amqp_queue.close_callbacks.add(self.close)

    aio_pika_instrumentor = instrumented["AioPikaInstrumentor"]
    aio_pika_instrumentor.uninstrument()
    monkeypatch.setattr(QueueIterator, "close", close_as_in_9_4)
    monkeypatch.setattr(QueueIterator, "__init__", init_as_in_9_4)
    aio_pika_instrumentor.instrument()

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            await channel.default_exchange.publish(aio_pika.Message(b"order"), queue_name)
            async with queue.iterator() as messages:
                async for message in messages:
                    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
                        async with message.process():
                            await channel.close()  # (the connection dropped...)
                    break

    try:
        asyncio.run(run())
    finally:
        aio_pika_instrumentor.uninstrument()
        monkeypatch.undo()
        aio_pika_instrumentor.instrument()
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.status.status_code.name == "ERROR"
    assert consumer.attributes["error.type"] == "ChannelInvalidStateError"


def test_messages_prefetched_before_the_broker_closed_the_channel_still_reach_the_loop(
    amqp_url, queue_name, spans
) -> None:
    """The broker closes a robust connection's channel (here for an ack of an unknown delivery
    tag; a dropped connection does the same): aio-pika reopens it, and its queue iterator still
    hands over the messages it had prefetched, whose ``channel`` now raises (their acks fail,
    the broker delivers them again). Reading it for the span's broker address raised
    ``ChannelInvalidStateError`` out of the app's ``async for``, ending its consumer."""
    bodies: list[bytes] = []

    async def run() -> None:
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            for n in range(3):
                await channel.default_exchange.publish(aio_pika.Message(b"%d" % n), queue_name)
            async with queue.iterator() as messages:
                async for message in messages:
                    bodies.append(message.body)
                    if len(bodies) == 1:
                        await message.ack()
                        await message.channel.basic_ack(9999)  # the broker closes the channel
                        await asyncio.sleep(0.5)
                    elif len(bodies) == 3:
                        break

    asyncio.run(asyncio.wait_for(run(), 20))
    assert bodies == [b"0", b"1", b"2"]
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert [span.name for span in consumers] == [f"process {queue_name}"] * 3


def test_a_message_got_before_the_broker_closed_the_channel_is_still_processed(
    amqp_url, queue_name, spans
) -> None:
    """``message.process()`` of a message whose channel has closed since ``Queue.get``: its
    block runs, and the ack that cannot be sent raises as it leaves (as without tracekit).
    Reading the closed channel for the span raised at ``process()``, and the block never ran."""
    ran: list[bool] = []

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            await channel.default_exchange.publish(aio_pika.Message(b"order"), queue_name)
            message = await queue.get(timeout=5)
            await message.channel.basic_ack(9999)  # the broker closes the channel
            await asyncio.sleep(0.5)
            with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
                async with message.process():
                    ran.append(True)

    asyncio.run(asyncio.wait_for(run(), 20))
    assert ran == [True]
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.name == f"process {queue_name}"
    assert consumer.attributes["error.type"] == "ChannelInvalidStateError"


@pytest.mark.parametrize("settle", ["ack", "nack"])
def test_an_ack_that_fails_fails_the_attempt_the_broker_delivers_again(
    amqp_url, queue_name, spans, settle
) -> None:
    """A robust connection's channel closes while the loop handles a message (the broker closed
    it; a dropped connection does the same): its ack (or nack) raises, the app logs that and
    carries on, aio-pika reopens the channel and the broker delivers the message again. The
    first attempt's span said processed, as if the message had been acked: it ends failed with
    the error, and the redelivery continues the same trace with the same correlation ID."""
    redelivered: list[bool] = []

    async def run() -> None:
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            await _publish_orders(channel, queue_name, "order-9")
            async with queue.iterator() as messages:
                async for message in messages:
                    redelivered.append(bool(message.redelivered))
                    if len(redelivered) > 1:
                        await message.ack()
                        break
                    await message.channel.basic_ack(9999)  # the broker closes the channel
                    await asyncio.sleep(0.5)
                    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
                        await (message.ack() if settle == "ack" else message.nack())

    asyncio.run(asyncio.wait_for(run(), 20))
    assert redelivered == [False, True]
    finished = spans.get_finished_spans()
    (producer,) = _kind(finished, SpanKind.PRODUCER)
    failed, redelivery = _kind(finished, SpanKind.CONSUMER)
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes["error.type"] == "ChannelInvalidStateError"
    assert redelivery.status.status_code.name == "UNSET"
    for attempt in (failed, redelivery):
        assert attempt.attributes["correlation.id"] == "order-9"
        assert attempt.parent is not None and attempt.parent.span_id == producer.context.span_id


def test_messages_collected_from_an_iterator_are_handled_as_their_own(
    amqp_url, queue_name, spans
) -> None:
    """A loop that collects messages and handles them together: each ``process()`` block runs
    with its own message's correlation ID, and a failure lands on that message, not on the one
    the iterator fetched last."""

    seen: list[str | None] = []

    async def flush(batch: list[Any]) -> None:
        for message in batch:
            with contextlib.suppress(OutOfStock):
                async with message.process():
                    seen.append(tracekit.correlation_id())
                    if message.body == b"order-1":
                        raise OutOfStock("order-1")

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await _publish_orders(channel, queue_name, "order-1", "order-2")
            queue = await channel.declare_queue(queue_name)
            batch: list[Any] = []
            async with queue.iterator() as messages:
                async for message in messages:
                    batch.append(message)
                    if len(batch) == 2:
                        await flush(batch)
                        break

    asyncio.run(run())
    assert seen == ["order-1", "order-2"]
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    failed = [c for c in consumers if c.status.status_code.name == "ERROR"]
    assert [c.attributes["correlation.id"] for c in failed] == ["order-1"]
    assert failed[0].attributes["error.type"].endswith("OutOfStock")
    assert {c.attributes["correlation.id"] for c in consumers} == {"order-1", "order-2"}


def test_a_message_nacked_or_rejected_by_its_handler_ends_failed_saying_so(
    amqp_url, queue_name, spans
) -> None:
    """``message.nack()`` / ``message.reject()`` in a consume callback or an iterator's loop:
    the trace shows the message was given back, and whether the broker requeued it."""

    async def on_message(message: Any) -> None:
        if message.message_id == "callback-nack":
            await message.nack(requeue=False)
        else:
            await message.ack()

    async def publish(channel: Any, *message_ids: str) -> None:
        for message_id in message_ids:
            message = aio_pika.Message(b"order", message_id=message_id)
            await channel.default_exchange.publish(message, queue_name)

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await publish(channel, "callback-nack", "callback-ack")
            queue = await channel.declare_queue(queue_name)
            tag = await queue.consume(on_message)
            while len(_kind(spans.get_finished_spans(), SpanKind.CONSUMER)) < 2:
                await asyncio.sleep(0.01)
            await queue.cancel(tag)
            await publish(channel, "loop-reject", "loop-nack")
            async with queue.iterator() as messages:
                async for message in messages:
                    if message.message_id == "loop-reject":
                        await message.reject()  # aio-pika's default: not requeued
                    else:
                        await message.nack()  # requeued
                        break

    asyncio.run(run())
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    status = {c.attributes["messaging.message.id"]: c.status for c in consumers}
    assert status["callback-ack"].status_code.name == "UNSET"
    assert status["callback-nack"].description == "MessageRejected: nack, not requeued"
    assert status["loop-reject"].description == "MessageRejected: reject, not requeued"
    assert status["loop-nack"].description == "MessageRejected: nack, requeued"


@pytest.mark.parametrize("pattern", ["RPC", "JsonRPC"])
def test_an_rpc_whose_function_raises_ends_failed_though_aio_pika_answers_it(
    amqp_url, spans, pattern: str
) -> None:
    """aio-pika's RPC pattern catches a registered function's exception, sends it to the caller
    as the answer and acks the call: the call's span was reported handled (status UNSET) where
    the caller got an error. It ends failed with that exception; a call that succeeds does not."""
    from aio_pika import patterns

    method = f"tracekit_stock_{time.monotonic_ns()}"

    async def reserve(*, item: str) -> str:
        if item == "out":
            raise OutOfStock(item)
        return item

    async def run() -> list[str]:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            rpc = await getattr(patterns, pattern).create(await connection.channel())
            await rpc.register(method, reserve, auto_delete=True)
            answers = [await rpc.call(method, kwargs={"item": "in"})]
            with pytest.raises(Exception) as failed:
                await rpc.call(method, kwargs={"item": "out"})
            answers.append(type(failed.value).__name__)
            return answers

    assert asyncio.run(run()) == ["in", "OutOfStock" if pattern == "RPC" else "JsonRPCError"]
    calls = [c for c in _kind(spans.get_finished_spans(), SpanKind.CONSUMER) if method in c.name]
    assert [c.status.status_code.name for c in calls] == ["UNSET", "ERROR"]
    assert calls[1].attributes["error.type"].endswith("OutOfStock")
    assert calls[1].status.description == "OutOfStock: out"


def test_workers_sharing_one_iterator_each_keep_their_own_message_span(
    amqp_url, queue_name, spans
) -> None:
    """Two tasks taking messages from one iterator: the second task's fetch does not end the
    first task's span, whose failure, raised later, is on its own message."""
    seen: dict[str, list[str | None]] = {}

    async def worker(messages: Any) -> None:
        async for message in messages:
            body = message.body.decode()
            with contextlib.suppress(OutOfStock):
                async with message.process():
                    if body == "slow":
                        await asyncio.sleep(0.3)
                        seen[body] = [tracekit.correlation_id()]
                        raise OutOfStock(body)
                    seen[body] = [tracekit.correlation_id()]
            return

    async def run() -> None:
        from tracekit import correlation

        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for body in ("slow", "fast"):
                token = correlation.set_correlation_id(f"order-{body}")
                await channel.default_exchange.publish(aio_pika.Message(body.encode()), queue_name)
                correlation.reset_correlation_id(token)
            queue = await channel.declare_queue(queue_name)
            async with queue.iterator() as messages:
                await asyncio.gather(worker(messages), worker(messages))

    asyncio.run(run())
    assert seen == {"slow": ["order-slow"], "fast": ["order-fast"]}
    consumers = {
        c.attributes["correlation.id"]: c
        for c in _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    }
    slow, fast = consumers["order-slow"], consumers["order-fast"]
    assert slow.status.status_code.name == "ERROR"
    assert slow.attributes["error.type"].endswith("OutOfStock")
    assert slow.end_time - slow.start_time >= 300_000_000  # its whole handling
    assert fast.status.status_code.name == "UNSET"


def test_a_task_that_leaves_a_bare_iterator_loop_ends_its_span_when_it_ends(
    amqp_url, queue_name, spans
) -> None:
    """``async for message in queue.iterator(): ... break`` (no ``async with``) in a task of
    its own: nothing tells the iterator the loop is left, but once the task is over and
    collected its message's span is recorded (at the app's next fetch), not lost."""

    async def take_one(queue: Any) -> None:
        async for message in queue.iterator():
            await message.ack()
            break

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(aio_pika.Message(b"first"), queue_name)
            queue = await channel.declare_queue(queue_name)
            await asyncio.create_task(take_one(queue))
            await asyncio.sleep(0)  # the loop lets go of the finished task
            gc.collect()
            # (the task's iterator still consumes queue_name: the next job comes from another)
            other = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"next"), other.name)
            async with other.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    break

    asyncio.run(run())
    assert len(_kind(spans.get_finished_spans(), SpanKind.CONSUMER)) == 2


def test_a_batch_processed_after_its_iterator_closed_inside_another_handler_is_its_own(
    amqp_url, queue_name, spans
) -> None:
    """A handler (here a custom transport's) drains a batch with an iterator, leaves it, then
    processes each message: every ``process()`` block is its message's own span, and a
    failure lands there, not on the handler's span."""
    from tracekit import messaging

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await _publish_orders(channel, queue_name, "order-1", "order-2")
            queue = await channel.declare_queue(queue_name)
            trigger = {"x-correlation-id": "nightly-run"}
            async with messaging.consume(trigger, system="cron", destination="nightly"):
                batch: list[Any] = []
                async with queue.iterator() as messages:
                    async for message in messages:
                        batch.append(message)
                        if len(batch) == 2:
                            break
                for message in batch:
                    with contextlib.suppress(OutOfStock):
                        async with message.process():
                            raise OutOfStock(message.body.decode())

    asyncio.run(run())
    finished = spans.get_finished_spans()
    (handler,) = [s for s in finished if s.name == "process nightly"]
    assert handler.status.status_code.name == "UNSET"
    processed = [s for s in _kind(finished, SpanKind.CONSUMER) if s.name == f"process {queue_name}"]
    failed = [
        s.attributes["correlation.id"] for s in processed if s.status.status_code.name == "ERROR"
    ]
    assert sorted(failed) == ["order-1", "order-2"]


def test_a_message_a_callback_hands_to_a_task_is_processed_in_a_span_of_its_own(
    amqp_url, queue_name, spans
) -> None:
    """A callback that hands its message to a background task and returns: the task's
    ``process()`` block, after the callback's span has ended, is a span of its own, with the
    message's failure on it (not lost on the ended one)."""

    async def handle(message: Any) -> None:
        await asyncio.sleep(0.05)  # the callback has returned by now
        with contextlib.suppress(OutOfStock):
            async with message.process():
                raise OutOfStock(message.body.decode())

    _hand_to_a_task(amqp_url, queue_name, "order-bg", handle)
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    failed = [c for c in consumers if c.status.status_code.name == "ERROR"]
    assert [c.attributes["correlation.id"] for c in failed] == ["order-bg"]
    assert failed[0].attributes["error.type"].endswith("OutOfStock")


def test_a_nack_after_the_callback_returned_is_a_failed_settle_span_of_its_own(
    amqp_url, queue_name, spans
) -> None:
    """A callback hands its message to a task and returns; the task rejects the message once
    the callback's span is recorded. That span cannot change any more: the rejection is a
    span of its own under it, failed, so the message's path still shows it was given back."""

    def consumer_spans() -> list[ReadableSpan]:
        return _kind(list(spans.get_finished_spans()), SpanKind.CONSUMER)

    async def handle(message: Any) -> None:
        while not consumer_spans():  # the callback's span has ended
            await asyncio.sleep(0.01)
        await message.nack(requeue=False)

    assert _hand_to_a_task(amqp_url, queue_name, "order-late", handle) is None
    finished = list(spans.get_finished_spans())
    (consumer,) = consumer_spans()
    (settle,) = [s for s in finished if s.name == f"nack {queue_name}"]
    assert consumer.status.status_code.name == "UNSET"
    assert settle.kind == SpanKind.CLIENT
    assert settle.parent is not None and settle.parent.span_id == consumer.context.span_id
    assert settle.status.description == "MessageRejected: nack, not requeued"
    assert settle.attributes["messaging.operation.type"] == "settle"
    assert settle.attributes["messaging.destination.name"] == queue_name
    assert settle.attributes["correlation.id"] == "order-late"


def _hand_to_a_task(
    amqp_url: str, queue_name: str, order: str, handle: Callable[[Any], Awaitable[None]]
) -> str | None:
    """Publish ``order`` (its correlation ID current) and consume it with a callback that hands
    the message to a task running ``handle`` and returns. Once that task is done: the
    correlation ID current in the consumer's own task."""
    handled: list[asyncio.Task[None]] = []

    async def on_message(message: Any) -> None:
        handled.append(asyncio.create_task(handle(message)))

    async def run() -> str | None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await _publish_orders(channel, queue_name, order)
            queue = await channel.declare_queue(queue_name)
            await queue.consume(on_message)
            while not handled:
                await asyncio.sleep(0.01)
            await handled[0]
            return tracekit.correlation_id()

    return asyncio.run(run())


async def _publish_orders(channel: Any, queue_name: str, *orders: str) -> None:
    """Publish each order as its own request would: with its correlation ID current."""
    from tracekit import correlation

    for order in orders:
        token = correlation.set_correlation_id(order)
        await channel.default_exchange.publish(aio_pika.Message(order.encode()), queue_name)
        correlation.reset_correlation_id(token)


def test_spans_name_the_broker_and_the_consumers_delivery_tag(amqp_url, queue_name, spans) -> None:
    """OpenTelemetry's RabbitMQ conventions: ``server.address`` and ``server.port`` (the broker
    the connection was opened to) on both sides, and the consumed message's delivery tag
    (conditionally required: aio-pika always has it) on its CONSUMER span."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue_name)
            queue = await channel.declare_queue(queue_name)
            message = await queue.get(timeout=5)
            async with message.process():
                pass

    asyncio.run(run())
    url = yarl.URL(amqp_url)
    (producer,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    for span in (producer, consumer):
        assert span.attributes["server.address"] == url.host
        assert span.attributes["server.port"] == (url.port or 5672)
    assert consumer.attributes["messaging.rabbitmq.message.delivery_tag"] == 1
    assert "messaging.rabbitmq.message.delivery_tag" not in producer.attributes


def test_spans_carry_the_messages_own_correlation_id_as_its_conversation(
    amqp_url, queue_name, spans
) -> None:
    """OpenTelemetry's RabbitMQ conventions recommend the message's ``correlation_id`` property
    as ``messaging.message.conversation_id``, on both sides; a message without one has none."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = channel.default_exchange
            await exchange.publish(aio_pika.Message(b"ask", correlation_id="rpc-7"), queue_name)
            await exchange.publish(aio_pika.Message(b"tell"), queue_name)
            queue = await channel.declare_queue(queue_name)
            for _ in range(2):
                message = await queue.get(timeout=5)
                async with message.process():
                    pass

    asyncio.run(run())
    finished = spans.get_finished_spans()
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        conversations = [
            s.attributes.get("messaging.message.conversation_id") for s in _kind(finished, kind)
        ]
        assert conversations == ["rpc-7", None]


class _UnprintableKey:
    def __str__(self) -> str:
        raise RuntimeError("the application's own __str__")


@pytest.mark.parametrize("routing_key", [_UnprintableKey(), 10**5000], ids=["object", "digits"])
def test_a_routing_key_aio_pika_refuses_is_refused_as_without_tracekit(
    amqp_url, spans, routing_key
) -> None:
    """aio-pika refuses a routing key that is not text with TypeError (it takes its len());
    tracekit made text of it to name the span first, and the caller got that object's
    ``__str__`` error, or ValueError for an int of 5,001 digits, in its place."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            with pytest.raises(TypeError, match="has no len"):
                await channel.default_exchange.publish(aio_pika.Message(b"ask"), routing_key)

    asyncio.run(run())


@pytest.fixture
def stamping() -> Iterator[None]:
    """tracekit's log record fields (``correlation_id``…), export off, as ``init`` installs them."""
    original = logging.getLogRecordFactory()
    logs.install(config.resolve("orders", environ={}, export_logs=False))
    yield
    logs.uninstall()
    logging.setLogRecordFactory(original)


@pytest.mark.usefixtures("stamping")
def test_the_lines_on_a_callback_that_raised_name_its_message(amqp_url, queue_name, caplog) -> None:
    """aiormq logs "Consumer callback failed" (and asyncio "Exception in callback") once the
    callback's task is over, outside the message's context: in a worker whose format shows
    ``%(correlation_id)s`` they read '[-]', beside the handler's own lines naming the message."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            failed = asyncio.Event()

            async def on_message(message: Any) -> None:
                async with message.process(requeue=False):
                    failed.set()
                    raise OutOfStock(message.body.decode())

            token = tracekit.correlation.set_correlation_id("order-failed-7")
            await channel.default_exchange.publish(aio_pika.Message(b"sku-7"), queue_name)
            tracekit.correlation.reset_correlation_id(token)
            await queue.consume(on_message)
            await asyncio.wait_for(failed.wait(), 10)
            await asyncio.sleep(0.2)  # the task's done callbacks log

    with caplog.at_level(logging.ERROR):
        asyncio.run(run())
    failed = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], OutOfStock)]
    assert "Consumer callback failed" in [r.getMessage() for r in failed]
    assert [r.correlation_id for r in failed] == ["order-failed-7"] * len(failed)  # type: ignore[attr-defined]


def test_a_batch_past_what_is_remembered_is_named_by_its_exchange_not_each_key(
    amqp_url, queue_name, spans, monkeypatch
) -> None:
    """A loop collecting a large batch from a topic exchange (each message routed by a key of
    its own, ``orders.eu.<n>``), then processing it: tracekit remembers the queue of the last
    1,024 messages fetched, and a ``process()`` block of one fetched before them was named by
    its routing key, a span name and metric series per key. It is named by the exchange, as
    OpenTelemetry's RabbitMQ conventions name a destination. (Remembering 8 here: the same
    path with fewer messages.)"""
    monkeypatch.setattr(traced_aio_pika, "_FETCHED_MAX", 8)
    count = 12
    exchange_name = f"{queue_name}-topic"

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC)
            queue = await channel.declare_queue(queue_name)
            await queue.bind(exchange, "orders.#")
            for n in range(count):
                await exchange.publish(aio_pika.Message(b"order"), routing_key=f"orders.eu.{n}")
            batch: list[Any] = []
            async with queue.iterator() as messages:
                async for message in messages:
                    batch.append(message)
                    if len(batch) == count:
                        break
            for message in batch:
                async with message.process():
                    pass
            await exchange.delete()

    asyncio.run(run())
    names = {span.name for span in _kind(spans.get_finished_spans(), SpanKind.CONSUMER)}
    assert names <= {f"process {queue_name}", f"process {exchange_name}"}
