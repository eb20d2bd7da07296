"""tracekit's aio-pika instrumentation next to OpenTelemetry's contrib one (real RabbitMQ): each
message consumed has one tracekit CONSUMER span, whichever of the two was instrumented first,
and contrib's own spans beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor as ContribInstrumentor
from opentelemetry.trace import SpanKind

ORDERS = ["contrib first", "tracekit first"]


@pytest.fixture(params=ORDERS)
def both_instrumented(
    request: pytest.FixtureRequest, instrumented: dict[str, Any]
) -> Iterator[None]:
    """contrib's and tracekit's (the package's fixture) in the order asked, undone in reverse."""
    ours, contrib = instrumented["AioPikaInstrumentor"], ContribInstrumentor()
    if request.param == "contrib first":
        ours.uninstrument()
        contrib.instrument()
        ours.instrument()
        yield
        ours.uninstrument()
        contrib.uninstrument()
        ours.instrument()
    else:
        contrib.instrument()
        yield
        contrib.uninstrument()


def _tracekit_consumer_spans(spans: Any) -> list[Any]:
    return [
        span
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.CONSUMER and span.instrumentation_scope.name.startswith("tracekit")
    ]


async def _publish(amqp_url: str, queue: str, count: int) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for _ in range(count):
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue)


def test_a_queue_iterator_has_one_tracekit_span_per_message(
    both_instrumented: None, amqp_url: str, queue_name: str, spans: Any
) -> None:
    """With contrib instrumented after tracekit, contrib's callback wrapper hid the iterator's
    own callback from tracekit, which traced it as a consume callback too: two CONSUMER spans
    (and two consumed samples) for every message an ``async for`` read."""

    async def run() -> None:
        await _publish(amqp_url, queue_name, 2)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            queue = await (await connection.channel()).get_queue(queue_name)
            seen = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        seen += 1
                    if seen == 2:
                        break

    asyncio.run(run())

    consumed = _tracekit_consumer_spans(spans)
    assert len(consumed) == 2
    assert len({span.context.trace_id for span in consumed}) == 2  # one per message


def test_a_consume_callback_has_one_tracekit_span_per_message(
    both_instrumented: None, amqp_url: str, queue_name: str, spans: Any
) -> None:
    async def run() -> None:
        await _publish(amqp_url, queue_name, 1)
        connection = await aio_pika.connect(amqp_url)
        done = asyncio.Event()

        async def handle(message: Any) -> None:
            async with message.process():
                done.set()

        async with connection:
            queue = await (await connection.channel()).get_queue(queue_name)
            await queue.consume(handle)
            await asyncio.wait_for(done.wait(), 10)

    asyncio.run(run())

    assert len(_tracekit_consumer_spans(spans)) == 1
