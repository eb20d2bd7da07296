"""OpenTelemetry's contrib pika instrumentation consuming where tracekit's own is not applied (a
service that instruments its channel with contrib's ``PikaInstrumentor.instrument_channel``):
contrib extracts the message headers with the global propagator, tracekit's, so its CONSUMER
span and the user's callback carry the producer's correlation ID. Real RabbitMQ on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from opentelemetry import propagate
from opentelemetry.instrumentation.pika import PikaInstrumentor as ContribPikaInstrumentor
from opentelemetry.trace import SpanKind
from reference_propagators import B3_SPELLINGS

import tracekit
from tracekit import propagation


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


@pytest.mark.parametrize("names", list(B3_SPELLINGS.values()), ids=list(B3_SPELLINGS))
def test_contrib_consumer_continues_a_java_producers_b3_trace(
    amqp_url: str, queue_name: str, spans: Any, names: tuple[str, str, str]
) -> None:
    """Under ``b3multi`` a Java producer writes ``X-B3-TraceId`` and its kin into the AMQP
    headers table, a case-sensitive map that contrib's getter looks names up in exactly: the
    global propagator asked only for ``x-b3-traceid``, and the consumer started a new trace."""
    trace_id, span_id = "463ac35c9f6413ad48485a3953bb6124", "0020000000000001"
    headers = dict(zip(names, (trace_id, span_id, "1"), strict=True))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_publish("", queue_name, b"{}", pika.BasicProperties(headers=headers))
    ContribPikaInstrumentor.instrument_channel(channel)
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(propagation.TracekitPropagator(propagators=["b3multi"]))

    def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.stop_consuming()

    channel.basic_consume(queue_name, handle, auto_ack=True)
    try:
        channel.start_consuming()
    finally:
        propagate.set_global_textmap(previous)
        ContribPikaInstrumentor.uninstrument_channel(channel)
        connection.close()

    (consumer,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.context.trace_id == int(trace_id, 16)
    assert consumer.parent is not None and consumer.parent.span_id == int(span_id, 16)
