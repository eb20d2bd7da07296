"""pika and aio-pika against the real RabbitMQ at ``TRACEKIT_TEST_AMQP_URL``.

A round declares a fresh auto-delete queue, publishes N messages to it through the default
exchange with a correlation ID current (no publisher confirms: a publish is a socket write), then
consumes them with a consume callback, the handler a span covers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from bench._queue_stacks import CORRELATION_ID, CpuClock, Instrumentation
from tracekit import correlation

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = b'{"order": 4711, "sku": "A-1"}'


def reachable() -> str | None:
    """None when RabbitMQ answers, else why not."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception as error:
        return f"RabbitMQ at {AMQP_URL} is not reachable ({type(error).__name__})"
    return None


class Pika:
    """pika's ``BlockingConnection``: ``basic_publish`` and a ``basic_consume`` callback."""

    name = "pika"
    peer = "OpenTelemetry pika"
    hop_peer = True

    def tracekit(self) -> Instrumentation:
        from tracekit.instrumentation.pika import PikaInstrumentor

        return PikaInstrumentor()

    def opentelemetry(self) -> Instrumentation:
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        return PikaInstrumentor()  # type: ignore[no-any-return]

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            queue = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
            channel.queue_declare(queue, auto_delete=True)
            publish = _publish(channel, queue, messages, cpu)
            return publish, _consume(connection, channel, queue, messages, cpu)
        finally:
            connection.close()


def _publish(channel: Any, queue: str, messages: int, cpu: CpuClock) -> float:
    token = correlation.set_correlation_id(CORRELATION_ID)
    cpu.start()
    for _ in range(messages):
        channel.basic_publish("", queue, BODY)
    elapsed = cpu.stop()
    correlation.reset_correlation_id(token)
    return elapsed


def _consume(connection: Any, channel: Any, queue: str, messages: int, cpu: CpuClock) -> float:
    received = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal received
        received += 1

    cpu.start()
    channel.basic_consume(queue, on_message, auto_ack=True)
    while received < messages:
        connection.process_data_events(time_limit=1)
    return cpu.stop()


class AioPika:
    """aio-pika: ``Exchange.publish`` and a ``Queue.consume`` callback, on one event loop."""

    name = "aio-pika"
    peer = "OpenTelemetry aio-pika"
    hop_peer = True

    def tracekit(self) -> Instrumentation:
        from tracekit.instrumentation.aio_pika import AioPikaInstrumentor

        return AioPikaInstrumentor()

    def opentelemetry(self) -> Instrumentation:
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

        return AioPikaInstrumentor()  # type: ignore[no-any-return]

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        return asyncio.run(_aio_round(messages, cpu))


async def _aio_round(messages: int, cpu: CpuClock) -> tuple[float, float]:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            f"tracekit-bench-{uuid.uuid4().hex[:8]}", auto_delete=True
        )
        publish = await _aio_publish(channel, queue.name, messages, cpu)
        return publish, await _aio_consume(queue, messages, cpu)
    finally:
        await connection.close()


async def _aio_publish(channel: Any, queue: str, messages: int, cpu: CpuClock) -> float:
    import aio_pika

    exchange = channel.default_exchange
    token = correlation.set_correlation_id(CORRELATION_ID)
    cpu.start()
    for _ in range(messages):
        await exchange.publish(aio_pika.Message(BODY), routing_key=queue)
    elapsed = cpu.stop()
    correlation.reset_correlation_id(token)
    return elapsed


async def _aio_consume(queue: Any, messages: int, cpu: CpuClock) -> float:
    done = asyncio.Event()
    received = 0

    async def on_message(message: Any) -> None:
        nonlocal received
        received += 1
        if received == messages:
            done.set()

    cpu.start()
    tag = await queue.consume(on_message, no_ack=True)
    await done.wait()
    elapsed = cpu.stop()
    await queue.cancel(tag)
    return elapsed
