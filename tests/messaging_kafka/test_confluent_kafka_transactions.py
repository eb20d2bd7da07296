"""confluent-kafka's transactional producer on librdkafka's mock cluster, which runs the
transaction protocol (InitProducerId, AddPartitionsToTxn, EndTxn) but does not hide aborted
records from ``read_committed`` consumers: what is checked is what the producer's side records."""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

import confluent_kafka
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit import semconv

pytestmark = pytest.mark.usefixtures("instrumented")


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


def of_kind(spans: InMemorySpanExporter, kind: SpanKind) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == kind]


def test_a_message_delivered_in_an_aborted_transaction_is_marked_aborted(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """The broker stored the record (its delivery report says so, and its send span ended
    successfully), then the producer aborted the transaction: no ``read_committed`` consumer
    will ever see it. The trace shows the send as it happened, and under it a failed
    ``abort_transaction`` span saying the message was aborted."""
    producer = transactional_producer(kafka_bootstrap)
    producer.begin_transaction()
    in_request = contextvars.copy_context()  # as a request handler sends it
    in_request.run(tracekit.correlation.set_correlation_id, "order-abort-1")
    in_request.run(producer.produce, topic, b"charge", partition=0)
    assert producer.flush(10) == 0
    (send,) = of_kind(spans, SpanKind.PRODUCER)
    assert send.status.status_code is StatusCode.UNSET  # delivered, as far as anyone knew
    producer.abort_transaction(10)

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


def test_a_committed_transaction_leaves_its_sends_successful(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """Aborted, then begun again and committed: only the aborted transaction's message is
    marked, and a transaction's messages are not carried into the next one."""
    producer = transactional_producer(kafka_bootstrap)
    producer.begin_transaction()
    producer.produce(topic, b"first", partition=0)
    producer.flush(10)
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, b"second", partition=0)
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.abort_transaction(10)  # an empty transaction: nothing of the committed one

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
