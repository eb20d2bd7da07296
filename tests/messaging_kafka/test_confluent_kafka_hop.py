"""confluent-kafka through librdkafka's mock cluster: a real Kafka wire protocol on loopback.

Stated gap: the broker is librdkafka's in-process mock, not Apache Kafka.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import confluent_kafka
import prometheus_client
import pytest
from conditions import wait_for
from hopscene import (
    check_batch,
    check_failure_past_the_bound,
    check_hop,
    check_wait_within,
    one,
    start_scene,
)
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit import correlation, instrumentation, semconv
from tracekit._messaging import headers as _message_headers
from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit.instrumentation import confluent_kafka as traced_confluent
from tracekit.instrumentation._kafka import SpansAwaitingDelivery
from tracekit.path import reconstruct
from tracekit.store import Store

pytestmark = pytest.mark.usefixtures("instrumented")

DELAY_S = 0.4


def consumer(bootstrap: str, topic: str, partitions: int = 4) -> Any:
    """A consumer assigned every partition from the beginning (no group join to wait for)."""
    cc = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "workers", "enable.auto.commit": False}
    )
    cc.assign(
        [
            confluent_kafka.TopicPartition(topic, n, confluent_kafka.OFFSET_BEGINNING)
            for n in range(partitions)
        ]
    )
    return cc


def produce_as(correlation_id: str, bootstrap: str, topic: str) -> None:
    """Produce one record to partition 0 with ``correlation_id`` current, and flush."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    token = correlation.set_correlation_id(correlation_id)
    try:
        producer.produce(topic, b"order-1", partition=0)
    finally:
        correlation.reset_correlation_id(token)
    producer.flush(10)


def poll_one(cc: Any, timeout: float = 10.0) -> Any:
    """The next message the consumer polls (the broker may need a moment to assign partitions)."""

    def polled() -> Any:
        message = cc.poll(0.1)
        return message if message is not None and message.error() is None else None

    return wait_for(polled, timeout, "a message")


def test_polled_message_continues_the_request(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})

    def publish() -> None:
        producer.produce(topic, b"order-1", headers={"app": "1"})
        producer.flush(10)

    with start_scene(publish) as scene:
        cid = scene.call_entry("order-" + uuid.uuid4().hex)
        time.sleep(DELAY_S)
        cc = consumer(kafka_bootstrap, topic)
        message = poll_one(cc)
        inside = tracekit.correlation_id()
        scene.call_downstream()
        cc.close()
        assert tracekit.correlation_id() is None
    finished = list(spans.get_finished_spans())
    consumer_span = one(finished, SpanKind.CONSUMER, f"process {topic}")
    assert inside == cid
    names = [name for name, _ in message.headers()]
    assert names[0] == "app" and "traceparent" in names and "tracekit-publish-time" in names
    assert consumer_span.attributes is not None
    assert consumer_span.attributes["messaging.consumer.group.name"] == "workers"
    check_hop(finished, scene, cid, consumer_span, DELAY_S)


def test_consume_batch_links_every_message(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    for n in range(3):
        producer.produce(topic, f"m{n}".encode(), partition=0)
    producer.flush(10)
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    time.sleep(DELAY_S)
    cc = consumer(kafka_bootstrap, topic)
    messages: list[Any] = []
    deadline = time.monotonic() + 10
    while len(messages) < 3 and time.monotonic() < deadline:
        messages += cc.consume(num_messages=3, timeout=0.5)
    cc.close()
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(messages) == 3 and len(producers) == 3
    assert len(consumers) == 1, "the three messages arrived in one consume() call"
    check_batch(consumers[0], producers, DELAY_S)


def test_a_consume_of_two_topics_counts_each_message_under_its_own_topic(
    kafka_bootstrap: str, mock_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """consume(num_messages=N) returns messages of every assigned topic at once: they were
    counted consumed under "orders-a,orders-b", a name no producer sent to, so neither topic
    showed a message consumed and the dashboard's publish-minus-process backlog of each grew
    for ever."""
    service = f"two-topics-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    topics = [f"orders-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    for name in topics:
        mock_cluster.list_topics(name, timeout=10)
        producer.produce(name, b"order", partition=0)
    producer.flush(10)
    cc = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "workers"})
    cc.assign(
        [confluent_kafka.TopicPartition(n, 0, confluent_kafka.OFFSET_BEGINNING) for n in topics]
    )
    batches: list[int] = []
    deadline = time.monotonic() + 10
    while sum(batches) < 2 and time.monotonic() < deadline:
        messages = [m for m in cc.consume(num_messages=2, timeout=5) if m.error() is None]
        if messages:
            batches.append(len(messages))
    cc.close()

    def counted(*labels: str) -> float:
        value = prometheus_client.REGISTRY.get_sample_value(
            "messaging_client_consumed_messages_total",
            {"messaging_system": "kafka", "messaging_destination_name": ",".join(labels),
             "service_name": service, "service_version": ""},
        )  # fmt: skip
        return value or 0.0

    assert batches == [2], "the mock handed both topics' messages over in one consume()"
    assert [counted(name) for name in topics] == [1.0, 1.0]
    assert counted(*sorted(topics)) == 0.0


def test_a_tombstone_says_so_on_its_producer_and_consumer_spans(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A record without a value deletes its key from a compacted topic; an empty value does
    not. OpenTelemetry's Kafka conventions require the tombstone marked."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, None, b"deleted", partition=0)
    producer.produce(topic, b"", b"emptied", partition=0)
    producer.flush(10)
    cc = consumer(kafka_bootstrap, topic)
    keys: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(keys) < 2 and time.monotonic() < deadline:
        message = cc.poll(0.1)  # (no poll_one: a message of no or empty value is falsy)
        if message is not None and message.error() is None:
            keys.append(message.key())
    cc.close()
    assert keys == [b"deleted", b"emptied"]
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    received = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    for tombstone, other in (sent, received):
        assert (tombstone.attributes or {}).get(semconv.MESSAGING_KAFKA_MESSAGE_TOMBSTONE) is True
        assert semconv.MESSAGING_KAFKA_MESSAGE_TOMBSTONE not in (other.attributes or {})


def test_keys_and_partitions_are_on_the_producer_and_consumer_spans(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """OpenTelemetry's Kafka conventions recommend the record key (as text) and the partition
    on both sides: the partition the caller chose, else the one the delivery report names. A
    key without a text form (binary) is left out; a long one is cut to 256 characters."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"chosen", b"user-42", 2)
    producer.produce(topic, b"binary", key=b"\xff\xfe\x00", partition=2)
    producer.produce(topic, b"long", key=("\u00e9" * 300).encode(), partition=2)
    producer.produce(topic, b"partitioned", key="user-7")
    producer.flush(10)
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    # (in the order of the sends: each span ends with its delivery report, in any order)
    sent = [s.attributes or {} for s in sorted(producers, key=lambda s: s.start_time or 0)]
    cc = consumer(kafka_bootstrap, topic)
    for _ in range(4):
        poll_one(cc)
    cc.close()
    received = {
        (s.attributes or {})[semconv.MESSAGING_KAFKA_OFFSET]: s.attributes or {}
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.CONSUMER
        and (s.attributes or {}).get(semconv.MESSAGING_DESTINATION_PARTITION_ID) == "2"
    }
    key, partition = semconv.MESSAGING_KAFKA_MESSAGE_KEY, semconv.MESSAGING_DESTINATION_PARTITION_ID
    assert [a.get(key) for a in sent] == ["user-42", None, "\u00e9" * 256, "user-7"]
    assert [a.get(partition) for a in sent[:3]] == ["2", "2", "2"]
    assert sent[3][partition] in {"0", "1", "2", "3"}  # the partitioner's choice, reported
    assert [a.get(semconv.MESSAGING_KAFKA_OFFSET) for a in sent[:3]] == [0, 1, 2]
    assert [received[n].get(key) for n in range(3)] == ["user-42", None, "\u00e9" * 256]


def keys_on_both_sides(
    bootstrap: str, topic: str, spans: InMemorySpanExporter, count: int
) -> dict[SpanKind, list[object]]:
    """Consume the ``count`` records sent, then give the record key of each PRODUCER and each
    CONSUMER span, in the order the spans started."""
    cc = consumer(bootstrap, topic)
    for _ in range(count):
        poll_one(cc)
    cc.close()
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    return {
        kind: [
            (s.attributes or {}).get(semconv.MESSAGING_KAFKA_MESSAGE_KEY)
            for s in finished
            if s.kind == kind
        ]
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER)
    }


def test_a_text_key_with_control_characters_is_on_neither_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A ``str`` key reaches its consumer as bytes, where control characters mark a binary
    key: the producer's span carried such a key (a terminal escape, a tab) and the consumer's
    did not, so a search by key found half the hop. Now neither does, and a text key without
    them is on both."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    for key in ("\x1b[31mred\x1b[0m", "order\t42", "order-42"):
        producer.produce(topic, b"order", key=key, partition=3)
    producer.flush(10)
    keys = keys_on_both_sides(kafka_bootstrap, topic, spans, 3)
    assert keys[SpanKind.PRODUCER] == keys[SpanKind.CONSUMER] == [None, None, "order-42"]


def test_a_key_its_serializer_made_binary_is_left_off_the_spans(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """SerializingProducer hands produce() the key's bytes: an IntegerSerializer's 7 is
    00 00 00 07, which is UTF-8, and both spans said the key was "\\x00\\x00\\x00\\x07" (a
    Schema Registry key starts with such bytes too). Bytes with control characters are not
    text: left out, as the docs say of a key a serializer makes; a text key stays."""
    from confluent_kafka.serialization import IntegerSerializer, StringSerializer

    for serializer, key in ((IntegerSerializer(), 7), (StringSerializer(), "user-7")):
        producer = confluent_kafka.SerializingProducer(
            {"bootstrap.servers": kafka_bootstrap, "key.serializer": serializer}
        )
        producer.produce(topic, key=key, value=b"order", partition=1)
        producer.flush(10)
    keys = keys_on_both_sides(kafka_bootstrap, topic, spans, 2)
    assert keys[SpanKind.PRODUCER] == keys[SpanKind.CONSUMER] == [None, "user-7"]


@pytest.mark.parametrize("partition", [2**40, 10**5000], ids=["40 bits", "5001 digits"])
def test_a_partition_the_client_refuses_is_refused_as_without_tracekit(
    kafka_bootstrap: str, spans: InMemorySpanExporter, partition: int
) -> None:
    """A partition number past Kafka's 32 bits is confluent-kafka's OverflowError to raise; one
    past 4,300 digits raised tracekit's ValueError (``str`` of it) instead, and a failed send's
    span named a partition no topic has."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    with pytest.raises(OverflowError):
        producer.produce("orders", b"x", b"user-42", partition)
    (failed,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert (failed.attributes or {})[semconv.ERROR_TYPE] == "OverflowError"
    assert semconv.MESSAGING_DESTINATION_PARTITION_ID not in (failed.attributes or {})


def test_handler_error_in_with_block_fails_the_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"boom")
    producer.flush(10)
    with pytest.raises(ValueError, match="handler failed"), consumer(kafka_bootstrap, topic) as cc:
        poll_one(cc)
        raise ValueError("handler failed")
    span = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert span.status.is_ok is False
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_handler_error_in_a_deserializing_consumers_with_block_fails_the_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """DeserializingConsumer's own ``__exit__`` closes the consumer without Consumer's: the
    span of a handler that raised ended unfailed."""
    from confluent_kafka.serialization import StringDeserializer

    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"boom", partition=0)
    producer.flush(10)
    config = {"bootstrap.servers": kafka_bootstrap, "group.id": "workers"}
    with (
        pytest.raises(ValueError, match="handler failed"),
        confluent_kafka.DeserializingConsumer(
            {**config, "value.deserializer": StringDeserializer()}
        ) as cc,
    ):
        cc.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        poll_one(cc)
        raise ValueError("handler failed")
    span = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert span.status.is_ok is False
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_a_message_its_deserializer_refuses_fails_its_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """DeserializingConsumer.poll raises for a message its deserializer refuses (a poison
    message): the message never reached the handler, and its span says so."""

    def deserialize(value: bytes | None, ctx: Any) -> str:
        if value == b"poison":
            raise ValueError("not an order")
        return (value or b"").decode()

    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"poison", partition=0)
    producer.produce(topic, b"order-2", partition=0)
    producer.flush(10)
    cc = confluent_kafka.DeserializingConsumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": "workers",
            "value.deserializer": deserialize,
        }
    )
    cc.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    refused: list[Exception] = []
    handled: list[str] = []
    deadline = time.monotonic() + 10
    while not handled and time.monotonic() < deadline:
        try:
            message = cc.poll(0.1)
        except confluent_kafka.error.ValueDeserializationError as error:
            refused.append(error)
            continue
        if message is not None:
            handled.append(message.value())
    cc.close()
    assert (len(refused), handled) == (1, ["order-2"])
    poison, good = sorted(
        [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER],
        key=lambda s: s.start_time or 0,
    )
    assert poison.status.status_code is StatusCode.ERROR
    assert (poison.attributes or {})[semconv.ERROR_TYPE] == "ValueDeserializationError"
    assert good.status.status_code is StatusCode.UNSET


def test_a_consumer_closed_from_another_thread_leaves_the_polling_thread_clean(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A shutdown closes the consumer from another thread while the polling thread handles a
    message: its span ends there, and the polling thread, back for more (its poll now raising,
    the consumer closed), no longer runs with that message's correlation ID."""
    produce_as("order-closed-elsewhere", kafka_bootstrap, topic)
    cc = consumer(kafka_bootstrap, topic)
    handling, closed = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def poll_loop() -> None:
        poll_one(cc)
        seen["handling"] = tracekit.correlation_id()
        handling.set()
        closed.wait(10)
        with pytest.raises(RuntimeError, match="Consumer closed"):
            cc.poll(0.1)
        seen["after"] = tracekit.correlation_id()

    worker = threading.Thread(target=poll_loop)
    worker.start()
    assert handling.wait(15)
    cc.close()
    closed.set()
    worker.join(15)
    assert seen == {"handling": "order-closed-elsewhere", "after": None}
    one(list(spans.get_finished_spans()), SpanKind.CONSUMER)


def test_uninstrument_restores_the_classes(kafka_bootstrap: str, topic: str) -> None:
    traced = confluent_kafka.Producer
    assert traced.__base__ is confluent_kafka.cimpl.Producer
    instrumentation.uninstrument()
    assert confluent_kafka.Producer is confluent_kafka.cimpl.Producer
    assert confluent_kafka.Consumer is confluent_kafka.cimpl.Consumer
    already_built = traced({"bootstrap.servers": kafka_bootstrap})
    already_built.produce(topic, b"plain", partition=1)  # a pass-through now
    already_built.flush(10)
    cc = consumer(kafka_bootstrap, topic)
    message = poll_one(cc)
    cc.close()
    assert message.headers() is None


def test_clients_built_before_instrumenting_anew_are_traced_again(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """``tracekit.shutdown()`` then ``init()`` (a reload) uninstrument, then instrument again. A
    producer and a consumer built at startup stayed pass-throughs for good after that: records
    went out without headers (their consumers started new traces under new IDs), and polled
    messages had no CONSUMER span nor their correlation ID."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    cc = consumer(kafka_bootstrap, topic)
    instrumentation.uninstrument(["confluent_kafka"])
    instrumentation.instrument(["confluent_kafka"])
    token = tracekit.correlation.set_correlation_id("order-reloaded")
    try:
        producer.produce(topic, b"order-1", partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    producer.flush(10)
    message = poll_one(cc)
    inside = tracekit.correlation_id()
    cc.close()
    assert inside == "order-reloaded"
    assert dict(message.headers())["x-correlation-id"] == b"order-reloaded"
    finished = list(spans.get_finished_spans())
    sent = one(finished, SpanKind.PRODUCER, f"send {topic}")
    taken = one(finished, SpanKind.CONSUMER, f"process {topic}")
    assert taken.parent is not None and taken.parent.span_id == sent.context.span_id


def test_the_serializing_wrappers_continue_the_request(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """SerializingProducer and DeserializingConsumer (the Schema Registry path) bind the C
    classes when confluent-kafka is imported: their messages went out with no headers and no
    span, and the consumer never saw the correlation ID. Now they trace as Producer and Consumer
    do, and uninstrumenting puts the library's wrappers back."""
    message = _serialized_round_trip(
        kafka_bootstrap, topic, spans, "order-serialized-1",
        confluent_kafka.SerializingProducer, confluent_kafka.DeserializingConsumer,
    )  # fmt: skip
    assert dict(message.headers())["x-correlation-id"] == b"order-serialized-1"
    instrumentation.uninstrument()
    assert confluent_kafka.SerializingProducer is (
        confluent_kafka.serializing_producer.SerializingProducer
    )
    assert confluent_kafka.DeserializingConsumer is (
        confluent_kafka.deserializing_consumer.DeserializingConsumer
    )


def test_the_serializing_wrappers_stay_generic(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """confluent-kafka's wrappers are generic in their key and value types: an application
    writing ``DeserializingConsumer[str, str](config)`` (or such an annotation, evaluated at
    import) was told 'TypeError: <class ...> is not a generic class' once tracekit had swapped
    them. They take their types again, and what they build traces."""
    _serialized_round_trip(
        kafka_bootstrap,
        topic,
        spans,
        "order-generic-1",
        confluent_kafka.SerializingProducer[str, str],
        confluent_kafka.DeserializingConsumer[str, str],
    )


def _serialized_round_trip(
    bootstrap: str,
    topic: str,
    spans: InMemorySpanExporter,
    correlation_id: str,
    producer_class: Any,
    consumer_class: Any,
) -> Any:
    """Send one string value with ``producer_class`` inside ``correlation_id``, and take it with
    ``consumer_class``: the consumer saw the ID, and its span is the producer's child. The
    message taken."""
    from confluent_kafka.serialization import StringDeserializer, StringSerializer

    config = {"bootstrap.servers": bootstrap}
    producer = producer_class({**config, "value.serializer": StringSerializer()})
    token = tracekit.correlation.set_correlation_id(correlation_id)
    try:
        producer.produce(topic, value="order-1", partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert producer.flush(10) == 0
    cc = consumer_class(
        {**config, "group.id": "workers", "value.deserializer": StringDeserializer()}
    )
    cc.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    message = poll_one(cc)
    inside = tracekit.correlation_id()
    cc.close()
    assert message.value() == "order-1" and inside == correlation_id
    finished = list(spans.get_finished_spans())
    sent = one(finished, SpanKind.PRODUCER, f"send {topic}")
    taken = one(finished, SpanKind.CONSUMER, f"process {topic}")
    assert taken.parent is not None and taken.parent.span_id == sent.context.span_id
    return message


def test_isinstance_against_the_swapped_classes_holds_both_ways(kafka_bootstrap: str) -> None:
    """Objects of the library's own classes (built before instrumenting, and the Serializing/
    Deserializing wrappers, subclasses of the originals) are still ``confluent_kafka.Producer``
    and ``Consumer`` instances; tracekit's objects are instances of the originals."""
    config = {"bootstrap.servers": kafka_bootstrap}
    instrumentation.uninstrument()
    built_before = confluent_kafka.Producer(config)
    instrumentation.instrument(["confluent_kafka"])
    assert confluent_kafka.Producer is not confluent_kafka.cimpl.Producer  # swapped in
    traced = confluent_kafka.Producer(config)
    serializing = confluent_kafka.SerializingProducer(config)
    deserializing = confluent_kafka.DeserializingConsumer({**config, "group.id": "workers"})

    class AppProducer(confluent_kafka.Producer):
        pass

    assert isinstance(built_before, confluent_kafka.Producer)
    assert isinstance(serializing, confluent_kafka.Producer)
    assert isinstance(deserializing, confluent_kafka.Consumer)
    assert issubclass(confluent_kafka.SerializingProducer, confluent_kafka.Producer)
    assert isinstance(traced, confluent_kafka.cimpl.Producer)
    assert not isinstance(traced, confluent_kafka.Consumer)
    assert not isinstance(built_before, AppProducer)  # the app's own subclass checks as usual
    assert isinstance(AppProducer(config), confluent_kafka.Producer)
    deserializing.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda p, topic: p.produce(topic, b"v", None, 0, None, None, 0, [("app", b"1")]),
        lambda p, topic: p.produce(topic, b"v", None, 0, None, None, 0, headers=[("app", b"1")]),
    ],
    ids=["headers positional", "timestamp positional, headers by keyword"],
)
def test_positional_arguments_keep_their_meaning_and_carry_the_context(
    kafka_bootstrap: str, topic: str, call: Any
) -> None:
    """produce's positions are (topic, value, key, partition, on_delivery, callback, timestamp,
    headers): on_delivery's alias ``callback`` has a position of its own."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    token = tracekit.correlation.set_correlation_id("order-positional-1")
    try:
        call(producer, topic)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    producer.flush(10)

    cc = consumer(kafka_bootstrap, topic)
    headers = dict(poll_one(cc).headers())
    cc.close()
    assert headers["app"] == b"1"
    assert headers["x-correlation-id"] == b"order-positional-1" and "traceparent" in headers


@pytest.mark.parametrize(
    "produce",
    [
        lambda p, topic, cb: p.produce(topic, b"v", on_delivery=cb),
        lambda p, topic, cb: p.produce(topic, b"v", callback=cb),
        lambda p, topic, cb: p.produce(topic, b"v", None, -1, cb),
    ],
    ids=["on_delivery", "callback", "positional"],
)
def test_a_delivery_report_runs_in_the_context_of_its_produce(
    kafka_bootstrap: str, topic: str, produce: Any
) -> None:
    """librdkafka calls the delivery callback from a later poll()/flush(), maybe while another
    request is current: the callback's logs belong to the request that produced."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    seen: list[tuple[str | None, bool]] = []

    def delivered(error: Any, message: Any) -> None:
        seen.append((tracekit.correlation_id(), error is None and message.topic() == topic))

    token = tracekit.correlation.set_correlation_id("order-produced-1")
    try:
        produce(producer, topic, delivered)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    token = tracekit.correlation.set_correlation_id("another-request-2")
    try:
        assert producer.flush(10) == 0
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert seen == [("order-produced-1", True)]


def test_headers_the_client_refuses_are_refused_as_without_tracekit(kafka_bootstrap: str) -> None:
    """confluent-kafka takes a dict or a list of pairs: a tuple stays the caller's error."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    with pytest.raises(TypeError, match="expected headers to be dict or list"):
        producer.produce("orders", b"x", headers=(("app", b"1"),))


def test_the_asyncio_consumer_stays_untraced_and_leaves_its_pool_clean(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """confluent_kafka.aio.AIOConsumer builds a Consumer (tracekit's class) and polls it in
    executor threads: a span held until the next poll would stay current there, for whatever
    else the pool runs. It is documented as untraced, and must be."""
    from concurrent.futures import ThreadPoolExecutor

    from confluent_kafka.aio import AIOConsumer
    from opentelemetry import trace

    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    token = tracekit.correlation.set_correlation_id("order-aio-1")
    try:
        producer.produce(topic, b"v", partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    producer.flush(10)
    pool = ThreadPoolExecutor(max_workers=1)  # the app's pool: one thread sees it all

    def probe() -> tuple[str | None, bool]:
        return tracekit.correlation_id(), trace.get_current_span().get_span_context().is_valid

    async def main() -> tuple[Any, tuple[str | None, bool]]:
        loop = asyncio.get_running_loop()
        conf = {"bootstrap.servers": kafka_bootstrap, "group.id": "aio"}
        aio = AIOConsumer(conf, executor=pool)
        await aio.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        message = None
        for _ in range(100):
            message = await aio.poll(0.1)
            if message is not None and message.error() is None:
                break
        seen = await loop.run_in_executor(pool, probe)
        await aio.close()
        return message, seen

    message, seen_in_pool = asyncio.run(main())
    pool.shutdown()

    assert message is not None and message.value() == b"v"
    assert seen_in_pool == (None, False)
    assert [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER] == []


def test_a_message_near_message_max_bytes_goes_without_headers(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """900 bytes fit librdkafka's message.max.bytes of 1000; with tracekit's headers they would
    not (produce raised MSG_SIZE_TOO_LARGE): the message goes out bare, with its span."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1000}
    )
    errors: list[Any] = []
    producer.produce(topic, b"x" * 900, partition=0, on_delivery=lambda e, m: errors.append(e))
    producer.produce(topic, b"small", partition=0, on_delivery=lambda e, m: errors.append(e))
    producer.flush(10)
    assert errors == [None, None]
    cc = consumer(kafka_bootstrap, topic)
    big, small = poll_one(cc), poll_one(cc)
    cc.close()
    assert (big.value(), big.headers()) == (b"x" * 900, None)
    assert "traceparent" in dict(small.headers())
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 2


def test_a_message_too_large_on_its_own_is_refused_without_a_warning_about_context(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    """1100 bytes pass message.max.bytes of 1000 without tracekit's headers too: produce()
    raises MSG_SIZE_TOO_LARGE as without tracekit. The log said "sent a Kafka record without
    trace context" just before, of a record never sent (and, once a minute, in place of a
    record really sent bare); it now warns of the 900 bytes alone, which do go out bare."""
    fresh = RateLimitedWarning(60, "tracekit: sent a %s without trace context (%s)")
    monkeypatch.setattr(_message_headers, "context_left_out", fresh)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1000}
    )
    with pytest.raises(confluent_kafka.KafkaException, match="MSG_SIZE_TOO_LARGE"):
        producer.produce(topic, b"x" * 1100, partition=0, headers={"app": "1"})
    assert "without trace context" not in caplog.text
    producer.produce(topic, b"x" * 900, partition=0)
    producer.flush(10)
    assert caplog.text.count("without trace context") == 1


def _unreachable_producer(**config: Any) -> Any:
    """A producer whose broker never answers: librdkafka reports every message failed once
    ``message.timeout.ms`` passes (after produce() itself succeeded)."""
    return confluent_kafka.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300, "log_level": 0, **config}
    )


def test_a_failed_delivery_fails_the_producer_span(spans: InMemorySpanExporter) -> None:
    """produce() only queues the message; the delivery report says it never reached Kafka. The
    span keeps produce()'s timing and is failed; the caller's callback gets the report, once."""
    producer = _unreachable_producer()
    reports: list[tuple[Any, Any]] = []
    producer.produce("orders", b"lost", on_delivery=lambda *report: reports.append(report))
    produced_at = time.time_ns()
    assert producer.flush(10) == 0
    ((error, message),) = reports
    assert error.code() == confluent_kafka.KafkaError._MSG_TIMED_OUT
    assert message.value() == b"lost" and message.error() == error
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert span.end_time is not None and span.end_time <= produced_at
    assert span.status.is_ok is False
    # librdkafka's error name, as OpenTelemetry's Kafka conventions give error.type
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "_MSG_TIMED_OUT"
    assert "KafkaException: " in (span.status.description or "")  # the class, still
    assert "Message timed out" in (span.status.description or "")
    scraped = prometheus_client.generate_latest().decode()
    failed_sends = [line for line in scraped.splitlines() if 'error_type="_MSG_TIMED_OUT"' in line]
    assert any(
        line.startswith("messaging_client_operation_duration_seconds_count")
        for line in failed_sends
    )


def test_a_delivered_message_keeps_a_successful_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"kept", partition=0)
    produced_at = time.time_ns()
    assert producer.flush(10) == 0
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None and span.end_time <= produced_at


@pytest.mark.parametrize("as_keyword", [False, True], ids=["in the dict", "as a keyword"])
def test_the_configured_delivery_callback_still_gets_every_report(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter, as_keyword: bool
) -> None:
    """A Producer's ``on_delivery`` setting (in its dict, or a keyword beside it) serves messages
    produced without a callback of their own; one given to produce() replaces it for that
    message, as without tracekit."""
    by_default: list[bytes] = []
    setting = {"on_delivery": lambda error, message: by_default.append(message.value())}
    if as_keyword:
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap}, **setting)
    else:
        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, **setting})
    own: list[bytes] = []
    producer.produce(topic, b"default", partition=0)
    producer.produce(topic, b"own", partition=0, callback=lambda e, m: own.append(m.value()))
    assert producer.flush(10) == 0
    assert (by_default, own) == ([b"default"], [b"own"])
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 2


def test_reports_of_errors_only_leave_successful_spans_ended(spans: InMemorySpanExporter) -> None:
    """With ``delivery.report.only.error`` librdkafka reports no success: a span waiting for
    one would never end. The spans end at produce(), as before delivery reports were read."""
    producer = _unreachable_producer(**{"delivery.report.only.error": True})
    producer.produce("orders", b"v")
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 1
    producer.flush(10)


def test_a_failure_reported_after_suppressed_successes_is_a_failed_span_under_its_send(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """With ``delivery.report.only.error`` the spans are recorded at produce(); a failure report
    that comes later for one of them (its partition does not exist: librdkafka learns so after
    produce() queued it) is a failed span of its own under that send, so the trace shows the
    message never reached Kafka. The message that was delivered gets none; the callback still
    gets the failure report, once."""
    reports: list[tuple[Any, Any]] = []
    for _ in range(5):
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": kafka_bootstrap, "delivery.report.only.error": True}
        )
        token = tracekit.correlation.set_correlation_id("order-lost-1")
        try:
            producer.produce(topic, b"kept", partition=0)
            producer.produce(topic, b"lost", partition=99, on_delivery=lambda *r: reports.append(r))
            break
        except confluent_kafka.KafkaException as error:
            # The topic's partitions arrived between the two calls (a loaded machine): produce()
            # refused at once, which is not the case under test; again with a new producer.
            assert error.args[0].code() == confluent_kafka.KafkaError._UNKNOWN_PARTITION
            producer.flush(10)
            spans.clear()
        finally:
            tracekit.correlation.reset_correlation_id(token)
    sends = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len(sends) == 2  # recorded at produce(), before any report
    assert producer.flush(10) == 0
    ((error, message),) = reports
    assert error.code() == confluent_kafka.KafkaError._UNKNOWN_PARTITION
    assert message.value() == b"lost"
    finished = list(spans.get_finished_spans())
    assert [s for s in finished if s.kind == SpanKind.PRODUCER] == sends
    assert all(s.status.status_code is StatusCode.UNSET for s in sends)
    (failed,) = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert failed.name == f"delivery_report {topic}"
    assert failed.parent is not None and failed.parent.span_id == sends[1].context.span_id
    assert failed.status.status_code is StatusCode.ERROR
    assert "Unknown partition" in (failed.status.description or "")
    assert failed.attributes is not None
    assert failed.attributes[semconv.ERROR_TYPE] == "_UNKNOWN_PARTITION"
    assert failed.attributes[semconv.MESSAGING_DESTINATION_NAME] == topic
    assert failed.attributes[semconv.CORRELATION_ID] == "order-lost-1"
    assert failed.start_time == failed.end_time


@pytest.mark.skipif(
    not hasattr(confluent_kafka.cimpl.Producer, "produce_batch"), reason="no produce_batch"
)
def test_produce_batch_is_traced_as_one_send_of_the_request(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """produce_batch sends no headers (librdkafka's batch API has none), so no context can
    travel; the send is in the request's trace all the same, and says why it goes bare."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    batch = [{"value": f"m{n}".encode()} for n in range(3)]
    token = tracekit.correlation.set_correlation_id("order-batch-1")
    try:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            queued = producer.produce_batch(topic, batch, partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert producer.flush(10) == 0
    cc = consumer(kafka_bootstrap, topic)
    received = [poll_one(cc) for _ in batch]
    cc.close()
    assert queued == 3
    assert [(m.value(), m.headers()) for m in received] == [
        (b"m0", None),
        (b"m1", None),
        (b"m2", None),
    ]
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert span.name == f"send {topic}" and span.attributes is not None
    assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    assert span.attributes[semconv.MESSAGING_BATCH_MESSAGE_COUNT] == 3
    assert span.attributes[semconv.CORRELATION_ID] == "order-batch-1"
    assert "without trace context" in caplog.text and "produce_batch" in caplog.text


@pytest.mark.skipif(
    not hasattr(confluent_kafka.cimpl.Producer, "produce_batch"), reason="no produce_batch"
)
@pytest.mark.parametrize("batch_callback", ["on_delivery", "setting"])
def test_delivery_callbacks_of_a_batch_run_in_the_callers_context(
    kafka_bootstrap: str, topic: str, batch_callback: str
) -> None:
    """As produce()'s do: a message's own callback and the batch's (given, or the producer's
    setting) run in the context produce_batch was called in, not in flush()'s; the caller's
    message dicts keep their own callbacks."""
    seen: list[tuple[str, str | None]] = []

    def reported(name: str) -> Any:
        return lambda error, message: seen.append((name, tracekit.correlation_id()))

    setting = {"on_delivery": reported("batch")} if batch_callback == "setting" else {}
    given = {"on_delivery": reported("batch")} if batch_callback == "on_delivery" else {}
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, **setting})
    own = reported("own")
    batch = [{"value": b"m0", "callback": own}, {"value": b"m1"}]
    token = tracekit.correlation.set_correlation_id("order-batch-2")
    try:
        queued = producer.produce_batch(topic, batch, partition=0, **given)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert producer.flush(10) == 0
    assert queued == 2
    assert sorted(seen) == [("batch", "order-batch-2"), ("own", "order-batch-2")]
    assert batch == [{"value": b"m0", "callback": own}, {"value": b"m1"}]


def test_a_group_given_as_a_keyword_names_the_consumer_group(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"v", partition=0)
    producer.flush(10)
    cc = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap}, **{"group.id": "billing"})
    cc.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    poll_one(cc)
    cc.close()
    span = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert span.attributes is not None
    assert span.attributes["messaging.consumer.group.name"] == "billing"


def test_the_configured_delivery_callback_runs_in_the_callers_context(
    kafka_bootstrap: str, topic: str
) -> None:
    """Like a message's own callback, the producer's ``on_delivery`` setting runs in the context
    produce() was called in: not inside the PRODUCER span's publish (where a retry it produces
    would go out untraced, without headers)."""
    seen: list[tuple[str | None, bool]] = []

    def delivered(error: Any, message: Any) -> None:
        seen.append((tracekit.correlation_id(), tracekit.messaging.publishing()))

    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "on_delivery": delivered}
    )
    token = tracekit.correlation.set_correlation_id("order-default-1")
    try:
        producer.produce(topic, b"v", partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert producer.flush(10) == 0
    assert seen == [("order-default-1", False)]


@pytest.mark.parametrize(
    ("produce", "called"),
    [
        (
            lambda p, topic, cb: p.produce(
                topic, b"v", callback=cb("callback"), on_delivery=cb("on_delivery")
            ),
            ["callback"],
        ),
        (
            lambda p, topic, cb: p.produce(topic, b"v", None, -1, cb("callback"), cb("on_del")),
            ["callback"],
        ),
        (
            lambda p, topic, cb: p.produce(topic, b"v", callback=None, on_delivery=cb("on_del")),
            ["setting"],
        ),
    ],
    ids=["both by keyword", "both positional", "callback None"],
)
def test_of_two_callbacks_the_one_confluent_kafka_calls_gets_the_report(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter, produce: Any, called: list[str]
) -> None:
    """confluent-kafka takes ``callback`` whenever it is given (None: the producer's setting)
    and ignores ``on_delivery`` then; the span still ends with the report."""
    calls: list[str] = []
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "on_delivery": lambda e, m: calls.append("setting")}
    )

    def named(name: str) -> Any:
        return lambda error, message: calls.append(name)

    produce(producer, topic, named)
    assert producer.flush(10) == 0
    assert calls == called
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 1


_EXITS_HOLDING = """
import sys
import tracekit
tracekit.init("billing")
from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, cid = sys.argv[1:]
producer = Producer({"bootstrap.servers": bootstrap})
with tracekit.messaging.consume({"x-correlation-id": cid}, system="t", destination="t"):
    producer.produce(topic, b"order", partition=0)
producer.flush(10)
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "billing"})
consumer.assign([TopicPartition(topic, 0, 0)])
message = None
for _ in range(100):
    message = consumer.poll(0.1)
    if message is not None and message.error() is None:
        break
print(message.value().decode())  # the process ends handling it: its span is still open
"""


def test_a_consumer_span_open_at_exit_is_stored(
    kafka_bootstrap: str, topic: str, tmp_path: Any
) -> None:
    """A process that ends while its consumer holds a message (no close()): at exit (tracekit's
    shutdown) the CONSUMER span is ended and stored with the rest."""
    store, cid = tmp_path / "tracekit.db", f"held-{uuid.uuid4().hex[:8]}"
    run = _run_script(_EXITS_HOLDING, store, kafka_bootstrap, topic, cid)
    assert run.stdout == "order\n"
    with Store(store) as source:
        path = reconstruct(source, cid)
    assert path is not None
    kinds = sorted(s["kind"] for s in path.to_json()["spans"] if s["name"].endswith(topic))
    assert kinds == ["CONSUMER", "PRODUCER"]


_TWO_GROUPS = """
import sys, time
import tracekit
tracekit.init("billing")
from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, cid = sys.argv[1:]
producer = Producer({"bootstrap.servers": bootstrap})
with tracekit.messaging.consume({"x-correlation-id": cid}, system="t", destination="t"):
    producer.produce(topic, b"order", partition=0)
producer.flush(10)
for group in ("indexer", "auditor"):  # each group of the service reads the record once
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.assign([TopicPartition(topic, 0, 0)])
    message = None
    while message is None or message.error() is not None:
        message = consumer.poll(0.1)
    time.sleep(0.3)  # the handler
    consumer.close()
"""


def test_two_consumer_groups_of_one_service_each_wait_from_the_publish(
    kafka_bootstrap: str, topic: str, tmp_path: Any
) -> None:
    """Two consumer groups of one service read the same record: the path took the second
    group's delivery for a redelivery of the first's, and showed its queue wait from the first
    handler's end (1.01 s of a real 2.04 s wait, in a run against the mock cluster). Each
    group's delivery now waits from the publish."""
    store, cid = tmp_path / "tracekit.db", f"groups-{uuid.uuid4().hex[:8]}"
    _run_script(_TWO_GROUPS, store, kafka_bootstrap, topic, cid)
    with Store(store) as source:
        path = reconstruct(source, cid)
    assert path is not None
    doc = path.to_json()
    spans = {s["span_id"]: s for s in doc["spans"]}
    (sent,) = [s for s in doc["spans"] if s["kind"] == "PRODUCER"]
    groups = {}
    for hop in doc["hops"]:
        taken = spans[hop["to_span_id"]]
        since_publish = (taken["start_unix_nano"] - sent["end_unix_nano"]) / 1e6
        groups[taken["attributes"]["messaging.consumer.group.name"]] = (
            hop["queue_wait_ms"],
            round(since_publish, 3),
        )
    assert set(groups) == {"indexer", "auditor"}
    assert groups["auditor"][1] > 300, "the auditor read the record after the indexer's handler"
    assert groups["indexer"][0] == pytest.approx(groups["indexer"][1], abs=0.01)
    assert groups["auditor"][0] == pytest.approx(groups["auditor"][1], abs=0.01)


def _run_script(script: str, store: Any, *argv: str) -> Any:
    """Run ``script`` in a new process with ``tracekit.init`` exporting to ``store``."""
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store),
           "TRACEKIT_METRICS_PORT": "0"}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", script, *argv], env=env, timeout=60,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run


_NEVER_POLLS = """
import sys
import tracekit
tracekit.init("orders")
from confluent_kafka import Producer

producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
with tracekit.messaging.consume({"x-correlation-id": sys.argv[1]}, system="t", destination="t"):
    producer.produce("orders", b"never-polled")
"""


def test_spans_of_a_producer_that_never_polls_are_stored_at_exit(tmp_path: Any) -> None:
    """A producer that never calls poll() or flush() never gets its delivery reports: at exit
    (tracekit's shutdown) its PRODUCER spans are recorded, their outcome marked unknown."""
    store, cid = tmp_path / "tracekit.db", f"never-{uuid.uuid4().hex[:8]}"
    _run_script(_NEVER_POLLS, store, cid)
    with Store(store) as source:
        path = reconstruct(source, cid)
    assert path is not None
    (span,) = [s for s in path.to_json()["spans"] if s["kind"] == "PRODUCER"]
    assert span["name"] == "send orders"
    assert span["status"] == "UNSET"
    assert span["attributes"][semconv.DELIVERY_OUTCOME] == "unknown"


def test_past_the_bound_the_oldest_span_awaiting_its_report_is_recorded(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that does not poll keeps spans waiting for delivery reports: past the bound
    the oldest is recorded, outcome unknown; the others still end with their own reports."""
    monkeypatch.setattr(traced_confluent, "_awaiting_reports", SpansAwaitingDelivery(limit=2))
    producer = _unreachable_producer()
    for n in range(3):
        producer.produce("orders", b"%d" % n)
    (oldest,) = spans.get_finished_spans()
    assert oldest.attributes is not None
    assert oldest.attributes[semconv.DELIVERY_OUTCOME] == "unknown"
    assert oldest.status.status_code is StatusCode.UNSET
    assert producer.flush(10) == 0
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    first, *reported = sorted(sent, key=lambda s: s.start_time or 0)
    assert first.context.span_id == oldest.context.span_id
    assert [s.status.status_code for s in reported] == [StatusCode.ERROR] * 2
    assert all(semconv.DELIVERY_OUTCOME not in (s.attributes or {}) for s in reported)


def test_a_failure_reported_past_the_bound_is_a_failed_span_under_its_send(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an outage more messages wait for their reports than the bound: the oldest span is
    recorded, outcome unknown, and the failure reported for it later is not lost but a failed
    span of its own under it."""
    monkeypatch.setattr(traced_confluent, "_awaiting_reports", SpansAwaitingDelivery(limit=1))
    producer = _unreachable_producer()
    producer.produce("orders", b"first")
    producer.produce("orders", b"second")
    assert producer.flush(10) == 0
    late = check_failure_past_the_bound(list(spans.get_finished_spans()), "orders")
    assert "Message timed out" in (late.status.description or "")


def test_a_consumer_dropped_without_close_ends_its_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A function that polls one message and returns without ``close()``: once the consumer is
    gone the message's correlation ID is no longer current for whatever the thread does next,
    and its CONSUMER span is recorded at the next fetch (not inside the collection, which may
    run under a lock that ending a span takes)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    with tracekit.messaging.consume({"x-correlation-id": "dropped-1"}, system="t", destination="t"):
        producer.produce(topic, b"order", partition=0)
    assert producer.flush(10) == 0

    def handle_one() -> bytes:
        cc = consumer(kafka_bootstrap, topic)
        return bytes(poll_one(cc).value())

    assert handle_one() == b"order"
    gc.collect()
    assert tracekit.correlation_id() is None
    idle = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "idle"})
    assert idle.poll(0) is None  # the worker's next fetch (assigned nothing: no message)
    idle.close()
    one(list(spans.get_finished_spans()), SpanKind.CONSUMER, f"process {topic}")


def test_a_record_produced_outside_a_request_keeps_one_id_when_read_again(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A script produces with no correlation ID current, and the record is read twice (a
    consumer restarted before committing): each read made an ID of its own. Now both, and the
    PRODUCER span, carry the record's own ID; the script still has none current."""
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"job", partition=0)
    producer.produce(topic, b"job", partition=0, headers=[("X-Correlation-ID", b"nightly-3")])
    producer.flush(10)
    assert tracekit.correlation_id() is None
    ids = []
    for _ in range(2):
        cc = consumer(kafka_bootstrap, topic)
        poll_one(cc)
        ids.append(tracekit.correlation_id())
        poll_one(cc)
        ids.append(tracekit.correlation_id())
        cc.close()
    sent = sorted(
        (s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER),
        key=lambda s: s.start_time or 0,
    )
    assert ids[0] is not None and ids == [ids[0], "nightly-3", ids[0], "nightly-3"]
    assert [s.attributes["correlation.id"] for s in sent] == [ids[0], "nightly-3"]


def test_a_record_from_a_producer_without_tracekit_waits_from_its_timestamp(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A producer without tracekit (another language) sends no publish-time header: the
    consumer span had no queue wait, though the record carries its CreateTime. Now that time
    is the publish time; one in the future is a wait of 0, one before 2001 is no time."""
    instrumentation.uninstrument()
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    before_ns = time.time_ns()
    producer.produce(topic, b"plain", partition=0)
    after_ns = time.time_ns()
    producer.produce(topic, b"ahead", partition=0, timestamp=before_ns // 10**6 + 3_600_000)
    producer.produce(topic, b"ancient", partition=0, timestamp=1_000)
    producer.flush(10)
    instrumentation.instrument(["confluent_kafka"])
    time.sleep(DELAY_S)
    cc = consumer(kafka_bootstrap, topic)
    polled = [poll_one(cc) for _ in range(3)]
    cc.close()

    assert [m.headers() for m in polled] == [None, None, None]
    plain, ahead, ancient = sorted(
        (s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER),
        key=lambda s: s.start_time or 0,
    )
    check_wait_within(plain, before_ns - 1_000_000, after_ns, DELAY_S)  # (whole milliseconds)
    assert ahead.attributes is not None and ahead.attributes[semconv.QUEUE_WAIT_MS] == 0.0
    assert ancient.attributes is not None and semconv.QUEUE_WAIT_MS not in ancient.attributes
