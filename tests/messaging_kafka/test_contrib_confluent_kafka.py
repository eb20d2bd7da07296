"""tracekit's confluent-kafka instrumentation next to OpenTelemetry's contrib one, through
librdkafka's mock cluster: in either order contrib's is the one that traces (tracekit leaves
classes another instrumentation swapped in), each message goes with one ``traceparent`` and the
correlation ID (tracekit's propagator is the global one), and the consumer's span links to the
message's send, as contrib's does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from contrib_order import ORDERS
from contrib_order import both_instrumented as instrumented_in_order
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor
from opentelemetry.trace import SpanKind
from tests.messaging_kafka.test_confluent_kafka_hop import consumer, poll_one, produce_as


@pytest.fixture(params=ORDERS)
def both_instrumented(request: pytest.FixtureRequest) -> Iterator[None]:
    with instrumented_in_order(ConfluentKafkaInstrumentor(), ["confluent_kafka"], request.param):
        yield


def test_one_traceparent_and_the_id_reach_the_consumer(
    both_instrumented: None, kafka_bootstrap: str, topic: str, spans: Any
) -> None:
    """With contrib applied first, tracekit's class was built on contrib's: each message went
    out with two ``traceparent`` headers (and two of each of tracekit's), and a tracekit consumer
    followed neither ('ignored message header traceparent (repeated)')."""
    produce_as("kafka-both-7", kafka_bootstrap, topic)
    polling = consumer(kafka_bootstrap, topic)
    message = poll_one(polling)
    polling.close()

    names = [name for name, _ in message.headers() or []]
    assert names.count("traceparent") == 1
    assert dict(message.headers() or [])["x-correlation-id"] == b"kafka-both-7"
    (send,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    (process,) = [s for s in spans.get_finished_spans() if s.name.endswith(" process")]
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert send.attributes is not None and send.attributes["correlation.id"] == "kafka-both-7"
