"""Both clients' transactional producers on librdkafka's mock cluster (no Kafka broker can be run
here; the mock is the closest real thing). It runs the transaction protocol (InitProducerId,
AddPartitionsToTxn, EndTxn) that confluent-kafka and kafka-python speak over a real socket, but
does not hide aborted records from ``read_committed`` consumers: what is checked is what the
producer's side records."""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

import confluent_kafka
import kafka
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit import semconv

pytestmark = pytest.mark.usefixtures("instrumented")

# The mock answers ApiVersions v3 with an error kafka-python 3.0 cannot decode; 2.3 asks v2.
KAFKA_PYTHON_API_VERSION = (2, 3)


def transactional_producer(bootstrap: str, **config: Any) -> Any:
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"tx-{uuid.uuid4().hex[:8]}",
            "log_level": 0,
            **config,
        }
    )
    producer.init_transactions(10)
    return producer


def kafka_python_transactional_producer(bootstrap: str, linger_ms: int = 0) -> kafka.KafkaProducer:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        transactional_id=f"tx-{uuid.uuid4().hex[:8]}",
        linger_ms=linger_ms,
    )
    producer.init_transactions()
    return producer


def of_kind(spans: InMemorySpanExporter, kind: SpanKind) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == kind]


class Transactional:
    """One client's transactional producer, its calls made alike (confluent-kafka's take
    timeouts, and a flush to serve the delivery report; kafka-python's future is waited on)."""

    def __init__(self, client: str, bootstrap: str) -> None:
        self.confluent = client == "confluent-kafka"
        self.producer = (
            transactional_producer(bootstrap)
            if self.confluent
            else kafka_python_transactional_producer(bootstrap)
        )

    def send_delivered(self, topic: str, value: bytes) -> None:
        if self.confluent:
            self.producer.produce(topic, value, partition=0)
            assert self.producer.flush(10) == 0
        else:
            self.producer.send(topic, value, partition=0).get(timeout=10)

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self) -> None:
        self.producer.commit_transaction(*self._timeout())

    def abort(self) -> None:
        self.producer.abort_transaction(*self._timeout())

    def _timeout(self) -> tuple[int, ...]:
        return (10,) if self.confluent else ()


CLIENTS = pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])


@CLIENTS
def test_a_message_delivered_in_an_aborted_transaction_is_marked_aborted(
    client: str, kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """The broker stored the record (its delivery report says so, or kafka-python's future, and
    its send span ended successfully), then the producer aborted the transaction: no
    ``read_committed`` consumer will ever see it. The trace shows the send as it happened, and
    under it a failed ``abort_transaction`` span saying the message was aborted."""
    transactional = Transactional(client, kafka_bootstrap)
    transactional.begin()
    in_request = contextvars.copy_context()  # as a request handler sends it
    in_request.run(tracekit.correlation.set_correlation_id, "order-abort-1")
    in_request.run(transactional.send_delivered, topic, b"charge")
    (send,) = of_kind(spans, SpanKind.PRODUCER)
    assert send.status.status_code is StatusCode.UNSET  # delivered, as far as anyone knew
    transactional.abort()

    (aborted,) = of_kind(spans, SpanKind.CLIENT)
    assert aborted.name == f"abort_transaction {topic}"
    assert aborted.parent is not None and aborted.parent.span_id == send.context.span_id
    assert aborted.status.status_code is StatusCode.ERROR
    assert aborted.status.description == (
        "TransactionAborted: the producer aborted the transaction this message was sent in"
    )
    assert aborted.attributes is not None
    assert aborted.attributes[semconv.ERROR_TYPE] == "TransactionAborted"
    assert aborted.attributes[semconv.MESSAGING_DESTINATION_NAME] == topic
    assert aborted.attributes[semconv.CORRELATION_ID] == "order-abort-1"


@CLIENTS
def test_a_committed_transaction_leaves_its_sends_successful(
    client: str, kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """Aborted, then begun again and committed: only the aborted transaction's message is
    marked, and a transaction's messages are not carried into the next one."""
    transactional = Transactional(client, kafka_bootstrap)
    transactional.begin()
    transactional.send_delivered(topic, b"first")
    transactional.abort()
    transactional.begin()
    transactional.send_delivered(topic, b"second")
    transactional.commit()
    transactional.begin()
    transactional.abort()  # an empty transaction: nothing of the committed one

    first, second = of_kind(spans, SpanKind.PRODUCER)
    assert second.status.status_code is StatusCode.UNSET
    (aborted,) = of_kind(spans, SpanKind.CLIENT)
    assert aborted.parent is not None and aborted.parent.span_id == first.context.span_id


def test_a_message_the_abort_purged_is_one_failed_send(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A message still lingering in librdkafka's queue when the transaction is aborted is
    purged (its report, served inside ``abort_transaction``, says ``_PURGE_QUEUE``): its send
    span is failed by that report, and the abort adds nothing under it."""
    producer = transactional_producer(kafka_bootstrap, **{"linger.ms": 5000})
    reports: list[Any] = []
    producer.begin_transaction()
    producer.produce(topic, b"never sent", partition=0, on_delivery=lambda e, m: reports.append(e))
    producer.abort_transaction(10)

    assert [error.code() for error in reports] == [confluent_kafka.KafkaError._PURGE_QUEUE]
    (send,) = of_kind(spans, SpanKind.PRODUCER)
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes is not None and send.attributes[semconv.ERROR_TYPE] == "_PURGE_QUEUE"
    assert of_kind(spans, SpanKind.CLIENT) == []


def test_with_reports_of_errors_only_an_aborted_message_is_marked_too(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """``delivery.report.only.error``: sends end at produce(), and no success is reported; a
    message the abort did not fail is marked aborted all the same."""
    producer = transactional_producer(kafka_bootstrap, **{"delivery.report.only.error": True})
    producer.begin_transaction()
    producer.produce(topic, b"charge", partition=0)
    producer.flush(10)
    producer.abort_transaction(10)

    (send,) = of_kind(spans, SpanKind.PRODUCER)
    (aborted,) = of_kind(spans, SpanKind.CLIENT)
    assert aborted.name == f"abort_transaction {topic}"
    assert aborted.parent is not None and aborted.parent.span_id == send.context.span_id


def test_a_kafka_python_record_the_abort_caught_in_the_buffer_is_one_failed_send(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A record still lingering in kafka-python's buffer when the transaction is aborted is
    never sent: kafka-python fails its future with ``TransactionAbortedError`` inside
    ``abort_transaction``, which fails its send span, and the abort adds nothing under it."""
    producer = kafka_python_transactional_producer(kafka_bootstrap, linger_ms=5000)
    producer.begin_transaction()
    future = producer.send(topic, b"never sent", partition=0)
    producer.abort_transaction()
    producer.close(timeout=5)

    assert isinstance(future.exception, kafka.errors.TransactionAbortedError)
    (send,) = of_kind(spans, SpanKind.PRODUCER)
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes is not None
    assert send.attributes[semconv.ERROR_TYPE] == "TransactionAbortedError"
    assert of_kind(spans, SpanKind.CLIENT) == []


class ComparedProducer(kafka.KafkaProducer):  # type: ignore[misc]
    """An application's producer class defining ``__eq__``, which makes it unhashable."""

    def __eq__(self, other: object) -> bool:
        return self is other


def test_an_unhashable_kafka_python_producer_sends_in_its_transactions(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """Such a producer cannot be a weak key, where tracekit notes a producer's transaction: it
    sends and commits as without tracekit (its sends traced, its transactions not followed)."""
    producer = ComparedProducer(
        bootstrap_servers=kafka_bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        transactional_id=f"tx-{uuid.uuid4().hex[:8]}",
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"charge", partition=0).get(timeout=10)
    producer.commit_transaction()
    producer.close(timeout=5)

    (send,) = of_kind(spans, SpanKind.PRODUCER)
    assert send.status.status_code is StatusCode.UNSET
