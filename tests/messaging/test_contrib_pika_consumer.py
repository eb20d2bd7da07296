"""OpenTelemetry's contrib pika instrumentation consuming where tracekit's own is not applied (a
service that instruments its channel with contrib's ``PikaInstrumentor.instrument_channel``):
contrib extracts the message headers with the global propagator, tracekit's, so its CONSUMER
span and the user's callback carry the producer's correlation ID. Real RabbitMQ on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from opentelemetry.instrumentation.pika import PikaInstrumentor as ContribPikaInstrumentor
from opentelemetry.trace import SpanKind

import tracekit


@pytest.fixture(scope="module", autouse=True)
def instrumented() -> Iterator[None]:
    """Not tracekit's pika instrumentation (the package's fixture): contrib's alone."""
    yield


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-correlation-id": "order-31"}, "order-31"),
        ({"baggage": "correlation.id=order-32"}, "order-32"),
    ],
)
def test_contrib_consumer_span_and_callback_carry_the_producers_id(
    amqp_url: str, queue_name: str, spans: Any, headers: dict[str, str], expected: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"{}", pika.BasicProperties(headers=headers))
    ContribPikaInstrumentor.instrument_channel(channel)
    seen: list[str | None] = []

    def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        seen.append(tracekit.correlation_id())
        ch.stop_consuming()

    channel.basic_consume(queue_name, handle, auto_ack=True)
    try:
        channel.start_consuming()
    finally:
        ContribPikaInstrumentor.uninstrument_channel(channel)
        connection.close()

    assert seen == [expected]
    (consumer,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.attributes["correlation.id"] == expected
