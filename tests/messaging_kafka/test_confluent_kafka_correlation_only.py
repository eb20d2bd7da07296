"""confluent-kafka in correlation-only mode (librdkafka's mock cluster): the IDs travel,
nothing else is made or kept.

This mode produces on a path of its own (no span, no metrics): what a consumer receives, what
a delivery callback sees and what the handler sees must be what the full path gives, less the
trace.
"""

from __future__ import annotations

from typing import Any

import confluent_kafka
import pytest
from conditions import wait_for
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracekit

pytestmark = pytest.mark.usefixtures("instrumented")

STALE_TRACEPARENT = f"00-{1:032x}-{1:016x}-01"


@pytest.fixture(autouse=True)
def correlation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")


def consumer(bootstrap: str, topic: str) -> Any:
    """A consumer assigned partition 0 from the beginning (no group join to wait for)."""
    cc = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "workers", "enable.auto.commit": False}
    )
    cc.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    return cc


def poll_one(cc: Any) -> Any:
    def polled() -> Any:
        message = cc.poll(0.1)
        return message if message is not None and message.error() is None else None

    return wait_for(polled, 10.0, "a message")


def _produced_as(bootstrap: str, topic: str, cid: str | None, **produce: Any) -> list[Any]:
    """Produce one record (``cid`` current) and flush under another ID: the delivery
    callback's (ID, error)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    reported: list[Any] = []

    def delivered(error: Any, message: Any) -> None:
        reported.append((tracekit.correlation_id(), error))

    token = tracekit.correlation.set_correlation_id(cid) if cid is not None else None
    try:
        producer.produce(topic, b"order", partition=0, on_delivery=delivered, **produce)
    finally:
        if token is not None:
            tracekit.correlation.reset_correlation_id(token)
    token = tracekit.correlation.set_correlation_id("another-request")
    try:
        assert producer.flush(10) == 0
    finally:
        tracekit.correlation.reset_correlation_id(token)
    return reported


def _polled(bootstrap: str, topic: str) -> tuple[dict[str, bytes], str | None]:
    cc = consumer(bootstrap, topic)
    message = poll_one(cc)
    inside = tracekit.correlation_id()
    cc.close()
    return dict(message.headers() or ()), inside


@pytest.mark.parametrize(
    "given",
    [
        None,
        [("app", b"1"), ("X-Correlation-ID", b"from-the-app"), ("Traceparent", b"stale")],
        {"app": b"1", "X-Correlation-ID": b"from-the-app", "traceparent": STALE_TRACEPARENT},
    ],
    ids=["no headers", "pairs", "dict"],
)
def test_a_record_carries_the_id_once_with_the_callers_headers(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter, given: Any
) -> None:
    """The ID, baggage and publish time go with the record, in place of the caller's own ID
    (other capitals) and of a stale trace header; the caller's other headers stay, and the
    delivery callback runs with the ID of the request that produced."""
    produce = {} if given is None else {"headers": given}
    reported = _produced_as(kafka_bootstrap, topic, "order-c1", **produce)
    headers, inside = _polled(kafka_bootstrap, topic)

    ours = ["baggage", "tracekit-publish-time", "x-correlation-id"]
    assert sorted(headers) == (ours if given is None else sorted(["app", *ours]))
    assert headers["x-correlation-id"] == b"order-c1" == (inside or "").encode()
    assert headers["baggage"] == b"correlation.id=order-c1"
    assert headers["tracekit-publish-time"].isdigit()
    assert reported == [("order-c1", None)]
    assert spans.get_finished_spans() == ()


def test_a_record_produced_outside_a_request_starts_an_id_of_its_own(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    reported = _produced_as(kafka_bootstrap, topic, None)
    headers, inside = _polled(kafka_bootstrap, topic)

    assert sorted(headers) == ["baggage", "tracekit-publish-time", "x-correlation-id"]
    assert tracekit.correlation.is_valid(inside)
    assert headers["x-correlation-id"] == inside.encode()  # the record's own, not the poll's
    assert reported == [(None, None)]  # (nothing made current where it was produced)
    assert spans.get_finished_spans() == ()


def test_a_record_near_message_max_bytes_goes_without_headers(
    kafka_bootstrap: str, topic: str
) -> None:
    """900 bytes fit librdkafka's message.max.bytes of 1000; with tracekit's headers they
    would not: the record goes out as the caller made it."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1000}
    )
    token = tracekit.correlation.set_correlation_id("order-big")
    try:
        producer.produce(topic, b"x" * 900, partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert producer.flush(10) == 0
    cc = consumer(kafka_bootstrap, topic)
    big = poll_one(cc)
    cc.close()
    assert (big.value(), big.headers()) == (b"x" * 900, None)
