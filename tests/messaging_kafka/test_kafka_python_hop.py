"""kafka-python through a real Kafka wire protocol (librdkafka's mock cluster, see conftest).

Stated gap: the broker is librdkafka's in-process mock, not Apache Kafka; the records, headers and
fetch path are kafka-python's own.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka
import pytest
from hopscene import (
    check_batch,
    check_failure_past_the_bound,
    check_hop,
    check_wait_within,
    one,
    start_scene,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit import config, correlation, instrumentation, logs, semconv
from tracekit.instrumentation import kafka as traced_kafka
from tracekit.instrumentation._kafka import SpansAwaitingDelivery
from tracekit.instrumentation.kafka import finish
from tracekit.path import reconstruct
from tracekit.store import Store

pytestmark = pytest.mark.usefixtures("instrumented")

DELAY_S = 0.4
# The mock answers ApiVersions v3 with an error kafka-python 3.0 cannot decode; 2.3 asks v2.
KAFKA_PYTHON_API_VERSION = (2, 3)


def producer(bootstrap: str, linger_ms: int = 0) -> kafka.KafkaProducer:
    return kafka.KafkaProducer(
        bootstrap_servers=bootstrap, api_version=KAFKA_PYTHON_API_VERSION, linger_ms=linger_ms
    )


def _order_sent(kp: kafka.KafkaProducer, topic: str, prefix: str) -> str:
    """Send one order to partition 0 as a request of its own would (a new correlation ID
    current), and return that ID."""
    cid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    token = correlation.set_correlation_id(cid)
    try:
        kp.send(topic, b"order-1", partition=0).get(timeout=10)
    finally:
        correlation.reset_correlation_id(token)
    return cid


def consumer(bootstrap: str, topic: str) -> kafka.KafkaConsumer:
    """A consumer assigned every partition from the start (no group join to wait for)."""
    kc = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        group_id="workers",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    partitions = [kafka.TopicPartition(topic, n) for n in kc.partitions_for_topic(topic)]
    kc.assign(partitions)
    kc.seek_to_beginning(*partitions)
    return kc


def test_iterated_record_continues_the_request(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    kp = producer(kafka_bootstrap)
    with start_scene(lambda: kp.send(topic, b"order-1").get(timeout=10)) as scene:
        cid = scene.call_entry("order-" + uuid.uuid4().hex)
        time.sleep(DELAY_S)
        seen_inside: list[str | None] = []
        with consumer(kafka_bootstrap, topic) as kc:
            records = []
            for record in kc:
                records.append(record)
                seen_inside.append(tracekit.correlation_id())
                scene.call_downstream()
                break
        kp.close()
        assert tracekit.correlation_id() is None  # restored once the consumer closed
    finished = list(spans.get_finished_spans())
    consumer_span = one(finished, SpanKind.CONSUMER, f"process {topic}")
    assert seen_inside == [cid]
    headers = records[0].headers  # (str, bytes) pairs, as they crossed the wire
    assert headers[-1][0] == "tracekit-publish-time"
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in headers)
    assert consumer_span.attributes is not None
    assert consumer_span.attributes["messaging.kafka.offset"] == 0
    assert consumer_span.attributes["messaging.consumer.group.name"] == "workers"
    check_hop(finished, scene, cid, consumer_span, DELAY_S)


def test_span_of_record_n_ends_when_record_n_plus_1_is_fetched(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    kp = producer(kafka_bootstrap)
    kp.send(topic, b"m0", partition=0).get(timeout=10)
    kc = consumer(kafka_bootstrap, topic)
    next(kc)
    time.sleep(0.05)  # the handler's work on record 0
    handled = time.time_ns()
    # Record 1 arrives only 0.3 s later: waiting for it is not part of handling record 0.
    later = threading.Timer(0.3, lambda: kp.send(topic, b"m1", partition=0).get(timeout=10))
    later.start()
    next(kc)
    first_ended = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    finish(kc)
    later.join()
    kc.close()
    kp.close()
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(first_ended) == 1 and len(consumers) == 2
    end = first_ended[0].end_time
    assert end is not None and handled <= end < handled + 200_000_000


def test_poll_batch_links_every_record(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    kp = producer(kafka_bootstrap, linger_ms=100)  # one record batch on the wire
    for n in range(3):
        kp.send(topic, f"m{n}".encode(), partition=0)
    kp.flush(10)
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    time.sleep(DELAY_S)
    kc = consumer(kafka_bootstrap, topic)
    records: list[object] = []
    deadline = time.monotonic() + 10
    while len(records) < 3 and time.monotonic() < deadline:
        batch = kc.poll(timeout_ms=200, max_records=3)
        records += [r for rs in batch.values() for r in rs]
    kc.close()
    kp.close()
    batch_spans = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(records) == 3
    assert len(batch_spans) == 1, "the mock delivered the three records in one fetch"
    check_batch(batch_spans[0], producers, DELAY_S)


def test_a_poll_of_two_topics_counts_each_record_under_its_own_topic(
    kafka_bootstrap: str, mock_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll returns the records of every assigned topic at once: they were counted consumed
    under "orders-a,orders-b", a name no producer sent to, so neither topic showed a record
    consumed and the dashboard's publish-minus-process backlog of each grew for ever. A
    service of its own: the suite's other tests fill the default one's destinations."""
    from prometheus_client import REGISTRY

    service = f"two-topics-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    topics = [f"orders-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in topics:
        mock_cluster.list_topics(name, timeout=10)
    kp = producer(kafka_bootstrap)
    for name in topics:
        kp.send(name, b"order", partition=0).get(timeout=10)
    kc = kafka.KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, api_version=KAFKA_PYTHON_API_VERSION,
        group_id="workers", enable_auto_commit=False,
    )  # fmt: skip
    partitions = [kafka.TopicPartition(name, 0) for name in topics]
    kc.assign(partitions)
    kc.seek_to_beginning(*partitions)
    polls: list[int] = []
    deadline = time.monotonic() + 10
    while sum(polls) < 2 and time.monotonic() < deadline:
        batch = kc.poll(timeout_ms=500)
        if batch:
            polls.append(sum(map(len, batch.values())))
    kc.close()
    kp.close()

    def counted(*labels: str) -> float:
        value = REGISTRY.get_sample_value(
            "messaging_client_consumed_messages_total",
            {"messaging_system": "kafka", "messaging_destination_name": ",".join(labels),
             "service_name": service, "service_version": ""},
        )  # fmt: skip
        return value or 0.0

    assert polls == [2], "the mock handed both topics' records over in one poll"
    assert [counted(name) for name in topics] == [1.0, 1.0]
    assert counted(*sorted(topics)) == 0.0


def test_a_tombstone_says_so_on_its_producer_and_consumer_spans(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A record without a value deletes its key from a compacted topic; an empty value does
    not, nor does one a deserializer made of a missing one. OpenTelemetry's Kafka conventions
    require the tombstone marked."""
    kp = producer(kafka_bootstrap)
    kp.send(topic, None, b"deleted", partition=0).get(timeout=10)
    kp.send(topic, b"", b"emptied", partition=0).get(timeout=10)
    kp.close()
    kc = kafka.KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        value_deserializer=lambda value: b"{}" if value is None else value,
        consumer_timeout_ms=10_000,
    )
    kc.assign([kafka.TopicPartition(topic, 0)])
    kc.seek_to_beginning()
    records = [next(kc), next(kc)]
    kc.close()
    assert [(r.key, r.value) for r in records] == [(b"deleted", b"{}"), (b"emptied", b"")]
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    received = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    for tombstone, other in (sent, received):
        assert (tombstone.attributes or {}).get(semconv.MESSAGING_KAFKA_MESSAGE_TOMBSTONE) is True
        assert semconv.MESSAGING_KAFKA_MESSAGE_TOMBSTONE not in (other.attributes or {})


def test_keys_and_partitions_are_on_the_producer_and_consumer_spans(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """OpenTelemetry's Kafka conventions recommend the record key (as text) and the partition
    on both sides: the partition the caller chose, else the one the send's future names. A key
    without a text form (binary) is left out."""
    kp = producer(kafka_bootstrap)
    kp.send(topic, b"chosen", b"user-42", None, 1).get(timeout=10)
    kp.send(topic, b"binary", key=b"\xff\xfe\x00", partition=1).get(timeout=10)
    kp.send(topic, b"partitioned", key=b"user-7").get(timeout=10)
    kp.close()
    sent = [s.attributes or {} for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    with consumer(kafka_bootstrap, topic) as kc:
        records = [next(kc) for _ in range(3)]
    assert len(records) == 3
    received = [
        s.attributes or {}
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.CONSUMER
        and (s.attributes or {}).get(semconv.MESSAGING_DESTINATION_PARTITION_ID) == "1"
    ]
    key, partition = semconv.MESSAGING_KAFKA_MESSAGE_KEY, semconv.MESSAGING_DESTINATION_PARTITION_ID
    assert [a.get(key) for a in sent] == ["user-42", None, "user-7"]
    assert [a.get(partition) for a in sent[:2]] == ["1", "1"]
    assert sent[2][partition] in {"0", "1", "2", "3"}  # the partitioner's choice, reported
    assert [a.get(semconv.MESSAGING_KAFKA_OFFSET) for a in sent[:2]] == [0, 1]
    by_offset = {a[semconv.MESSAGING_KAFKA_OFFSET]: a.get(key) for a in received}
    assert [by_offset[0], by_offset[1]] == ["user-42", None]


def test_garbage_headers_start_a_new_trace(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    kp = producer(kafka_bootstrap)
    tracekit.uninstrument()  # a producer without tracekit, sending hostile headers
    garbage = [("traceparent", b"\xff\xfe" * 40), ("x-correlation-id", b"bad id\n")]
    kp.send(topic, b"x", headers=garbage).get(timeout=10)
    kp.close()
    from tracekit import instrumentation

    instrumentation.instrument(["kafka"])
    kc = consumer(kafka_bootstrap, topic)
    next(kc)
    cid = tracekit.correlation_id()
    kc.close()
    span = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert span.parent is None
    assert cid is not None and cid != "bad id\n"


def test_uninstrumented_send_adds_no_headers(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    tracekit.uninstrument()
    kp = producer(kafka_bootstrap)
    kp.send(topic, b"plain", headers=[("app", b"1")]).get(timeout=10)
    kp.close()
    kc = consumer(kafka_bootstrap, topic)
    record = next(kc)
    kc.close()
    assert record.headers == [("app", b"1")]
    assert spans.get_finished_spans() == ()


def test_callbacks_on_a_sends_future_run_in_the_senders_context(
    kafka_bootstrap: str, topic: str
) -> None:
    """kafka-python resolves the future in its sender thread: a callback (or errback) added by
    the request that sent still logs under that request's correlation ID."""
    kp = producer(kafka_bootstrap)
    seen: list[tuple[str, str | None]] = []
    done = threading.Event()

    def delivered(metadata: object) -> None:
        seen.append((type(metadata).__name__, tracekit.correlation_id()))
        done.set()

    token = tracekit.correlation.set_correlation_id("order-sent-1")
    try:
        future = kp.send(topic, b"v", partition=0)
        future.add_callback(delivered).add_errback(lambda error: seen.append(("error", None)))
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert done.wait(10)
    kp.close()
    assert seen == [("RecordMetadata", "order-sent-1")]


def test_headers_the_client_refuses_are_refused_as_without_tracekit(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """kafka-python takes headers as a list only: a tuple stays the caller's error."""
    kp = producer(kafka_bootstrap)
    with pytest.raises(TypeError, match="headers must be list-type"):
        kp.send(topic, b"plain", headers=(("app", b"1"),))
    kp.close()


def test_a_broker_api_before_headers_still_takes_the_send(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """Kafka before 0.11 (message format v0/v1) has no record headers: kafka-python refuses any
    header there. The send goes through, with its PRODUCER span and no headers."""
    kp = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, api_version=(0, 10, 2))
    token = tracekit.correlation.set_correlation_id("old-broker-1")
    try:
        kp.send(topic, b"plain").get(timeout=10)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    kp.close()
    tracekit.uninstrument()
    kc = consumer(kafka_bootstrap, topic)
    record = next(kc)
    kc.close()
    assert (record.value, record.headers) == (b"plain", [])
    sent = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    assert sent.attributes is not None and sent.attributes["correlation.id"] == "old-broker-1"


def test_a_record_near_max_request_size_goes_without_headers(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """900 bytes fit a producer's max_request_size of 1000; with tracekit's ~190 bytes of headers
    they would not: the record goes out bare, with its span. A small record keeps them."""
    kp = kafka.KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        max_request_size=1000,
    )
    token = tracekit.correlation.set_correlation_id("big-record-1")
    try:
        kp.send(topic, b"x" * 900, partition=0).get(timeout=10)
        kp.send(topic, b"small", partition=0).get(timeout=10)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    kp.close()
    kc = consumer(kafka_bootstrap, topic)
    big, small = next(kc), next(kc)
    kc.close()
    assert (big.value, big.headers) == (b"x" * 900, [])
    assert "traceparent" in dict(small.headers)
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len(sent) == 2
    assert all(s.attributes and s.attributes["correlation.id"] == "big-record-1" for s in sent)


def test_a_serialized_record_near_max_request_size_goes_without_headers(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """With a serializer the record's size is known only inside send(): 900 serialized bytes
    fit max_request_size=1000 and went out without tracekit, but with its headers send() raised
    MessageSizeTooLargeError (1028 bytes). The record goes out bare, with its span; one too
    large on its own is refused as without tracekit."""
    kp = kafka.KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        api_version=KAFKA_PYTHON_API_VERSION,
        max_request_size=1000,
        value_serializer=str.encode,
    )
    token = tracekit.correlation.set_correlation_id("big-record-2")
    try:
        kp.send(topic, "x" * 900, partition=0).get(timeout=10)
        kp.send(topic, "small", partition=0).get(timeout=10)
        with pytest.raises(kafka.errors.MessageSizeTooLargeError):
            kp.send(topic, "x" * 1000, partition=0)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    kp.close()
    kc = consumer(kafka_bootstrap, topic)
    big, small = next(kc), next(kc)
    kc.close()
    assert (big.value, big.headers) == (b"x" * 900, [])
    assert "traceparent" in dict(small.headers)
    sent = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert [s.status.status_code for s in sent] == [StatusCode.UNSET] * 2 + [StatusCode.ERROR]


def _producer_to_a_doomed_broker() -> tuple[Any, kafka.KafkaProducer]:
    """A mock cluster of one broker (the caller drops it to stop the broker) and a producer to
    it whose records expire within a second once the broker is gone."""
    import confluent_kafka

    cluster = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    brokers = cluster.list_topics("doomed", timeout=10).brokers.values()
    producer = kafka.KafkaProducer(
        bootstrap_servers=",".join(f"{b.host}:{b.port}" for b in brokers),
        api_version=KAFKA_PYTHON_API_VERSION,
        linger_ms=300,
        request_timeout_ms=300,
        delivery_timeout_ms=1000,
        retries=0,
    )
    return cluster, producer


def test_a_failed_delivery_fails_the_producer_span(spans: InMemorySpanExporter) -> None:
    """send() only buffers the record; when its broker goes away it expires in the buffer and
    the future fails. The span keeps send()'s timing and is failed; callbacks run once."""
    cluster, kp = _producer_to_a_doomed_broker()
    future = kp.send("doomed", b"lost", partition=0)
    sent_at = time.time_ns()
    errors: list[Exception] = []
    future.add_errback(errors.append)
    del cluster  # the broker stops before the record leaves the buffer
    with pytest.raises(kafka.errors.KafkaTimeoutError):
        future.get(timeout=10)
    kp.close(timeout=1)
    assert [type(error) for error in errors] == [kafka.errors.KafkaTimeoutError]
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert span.end_time is not None and span.end_time <= sent_at
    assert span.status.is_ok is False
    assert span.attributes is not None and span.attributes["error.type"] == "KafkaTimeoutError"


def test_a_failure_past_the_bound_is_a_failed_span_under_its_send(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an outage more records wait for their futures than the bound: the oldest span is
    recorded, outcome unknown, and the failure its future reports later is not lost but a
    failed span of its own under it."""
    monkeypatch.setattr(traced_kafka, "_awaiting_futures", SpansAwaitingDelivery(limit=1))
    cluster, kp = _producer_to_a_doomed_broker()
    futures = [kp.send("doomed", b"lost", partition=0) for _ in range(2)]
    del cluster  # the broker stops before the records leave the buffer
    for future in futures:
        with pytest.raises(kafka.errors.KafkaTimeoutError):
            future.get(timeout=10)
    kp.close(timeout=1)
    check_failure_past_the_bound(list(spans.get_finished_spans()), "doomed")


def test_a_delivered_record_keeps_a_successful_span(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    kp = producer(kafka_bootstrap)
    metadata = kp.send(topic, b"kept", partition=0).get(timeout=10)
    kp.close()
    (span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None and metadata.offset >= 0


def test_a_kafka_python_without_context_managers_is_traced(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python 2.0 (which tracekit's ``kafka`` extra allows) has no ``KafkaConsumer``
    ``__enter__``/``__exit__``: instrumenting it still traces both ends of the hop."""
    instrumentation.uninstrument(["kafka"])
    monkeypatch.delattr(kafka.KafkaConsumer, "__enter__")
    monkeypatch.delattr(kafka.KafkaConsumer, "__exit__")
    instrumentation.instrument(["kafka"])
    kp = producer(kafka_bootstrap)
    kp.send(topic, b"order-1").get(timeout=10)
    kp.close()
    kc = consumer(kafka_bootstrap, topic)
    record = next(kc)
    finish(kc)
    kc.close()
    assert "traceparent" in dict(record.headers)
    one(list(spans.get_finished_spans()), SpanKind.CONSUMER, f"process {topic}")


_SHUTS_DOWN_FIRST = """
import sys
import kafka
import tracekit

tracekit.init("orders")
bootstrap, topic, cid = sys.argv[1:]
producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, api_version=(2, 3), linger_ms=5000)
with tracekit.messaging.consume({"x-correlation-id": cid}, system="t", destination="t"):
    producer.send(topic, b"still-lingering")
tracekit.shutdown()  # before the producer sends (its own exit hook flushes it later)
"""


def test_a_send_still_lingering_at_shutdown_keeps_its_span(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """``tracekit.shutdown()`` while a record waits in the producer's buffer: its future is not
    resolved yet, so the PRODUCER span is recorded then, outcome unknown."""
    store, cid = tmp_path / "tracekit.db", f"linger-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store),
           "TRACEKIT_METRICS_PORT": "0"}  # fmt: skip
    command = [sys.executable, "-c", _SHUTS_DOWN_FIRST, kafka_bootstrap, topic, cid]
    run = subprocess.run(command, env=env, timeout=60, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with Store(store) as source:
        path = reconstruct(source, cid)
    assert path is not None
    (span,) = [s for s in path.to_json()["spans"] if s["kind"] == "PRODUCER"]
    assert span["name"] == f"send {topic}"
    assert span["attributes"][semconv.DELIVERY_OUTCOME] == "unknown"


@pytest.fixture
def worker_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A worker's logger whose lines show the correlation ID, as tracekit stamps them."""
    original = logging.getLogRecordFactory()
    logs.install(config.resolve("worker", environ={}, export_logs=False))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s"))
    logger = logging.getLogger("tests.kafka.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logs.uninstall()
    logging.setLogRecordFactory(original)


def test_a_consumer_dropped_without_close_leaves_its_id_behind_nowhere(
    kafka_bootstrap: str,
    topic: str,
    spans: InMemorySpanExporter,
    worker_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """A worker function that takes one record and returns without ``close()``: once the
    consumer is collected, the thread's next log line shows no correlation ID of that record,
    and the record's span is recorded when the worker takes its next record."""
    logger, stream = worker_log
    kp = producer(kafka_bootstrap)
    cid = _order_sent(kp, topic, "dropped")
    kp.close()

    def take_one() -> None:
        kc = consumer(kafka_bootstrap, topic)
        next(kc)
        logger.info("handling")

    recorded: list[int] = []

    def worker() -> None:
        take_one()
        gc.collect()
        logger.info("idle")
        with consumer(kafka_bootstrap, topic) as kc:
            next(kc)  # the worker's next job
            finished = spans.get_finished_spans()
            recorded.append(len([s for s in finished if s.kind == SpanKind.CONSUMER]))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert stream.getvalue().splitlines() == [f"{cid} handling", "- idle"]
    assert recorded == [1]  # the dropped consumer's record's span


def test_a_consumer_collected_in_another_thread_does_not_send_its_id_on(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A worker takes one record and returns without ``close()``. kafka-python's consumer sits
    in a reference cycle, so the cycle collector frees it, in whichever thread it runs: here
    another one, which cannot put back the worker's context. The worker's next publish is still
    not sent as part of that record's request (its correlation ID, its trace)."""
    kp = producer(kafka_bootstrap)
    cid = _order_sent(kp, topic, "elsewhere")
    taken, collected = threading.Event(), threading.Event()
    dropped: list[Any] = []
    after: list[str | None] = []

    def take_one() -> None:
        kc = consumer(kafka_bootstrap, topic)
        next(kc)
        dropped.append(weakref.ref(kc))

    def worker() -> None:
        take_one()
        taken.set()
        collected.wait(30)
        kp.send(topic, b"next job", partition=1).get(timeout=10)  # the worker's next job
        after.append(correlation.correlation_id())

    thread = threading.Thread(target=worker)
    gc.disable()  # only the collection below, in this thread, frees the consumer
    try:
        thread.start()
        assert taken.wait(30)
        gc.collect()
    finally:
        gc.enable()
        collected.set()
        thread.join(30)
    kp.close()
    assert dropped[0]() is None, "the cycle collector freed the consumer"
    assert after == [None]
    # (the record's CONSUMER span, a child of its producer's, is recorded at the next fetch)
    order, next_job = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert next_job.parent is None
    assert next_job.context.trace_id != order.context.trace_id
    assert (next_job.attributes or {}).get("correlation.id") != cid


def test_a_record_sent_outside_a_request_keeps_one_id_when_read_again(
    kafka_bootstrap: str, topic: str, spans: InMemorySpanExporter
) -> None:
    """A script sends with no correlation ID current, and the record is read twice (a consumer
    restarted before committing): each read made an ID of its own. Now both, and the PRODUCER
    span, carry the record's own ID; a caller's own ``X-Correlation-ID`` header is kept."""
    kp = producer(kafka_bootstrap)
    kp.send(topic, b"job", partition=0).get(timeout=10)
    kp.send(topic, b"job", partition=0, headers=[("X-Correlation-ID", b"nightly-3")]).get(10)
    kp.close()
    assert tracekit.correlation_id() is None
    ids = []
    for _ in range(2):
        kc = consumer(kafka_bootstrap, topic)
        for _ in range(2):
            next(kc)
            ids.append(tracekit.correlation_id())
        kc.close()
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
    kp = producer(kafka_bootstrap)
    before_ns = time.time_ns()
    kp.send(topic, b"plain", partition=0).get(timeout=10)
    after_ns = time.time_ns()
    ahead_ms = before_ns // 10**6 + 3_600_000
    kp.send(topic, b"ahead", partition=0, timestamp_ms=ahead_ms).get(timeout=10)
    kp.send(topic, b"ancient", partition=0, timestamp_ms=1_000).get(timeout=10)
    kp.close()
    instrumentation.instrument(["kafka"])
    time.sleep(DELAY_S)
    kc = consumer(kafka_bootstrap, topic)
    records = [next(kc) for _ in range(3)]
    kc.close()

    assert [r.headers for r in records] == [[], [], []]
    assert [r.timestamp_type for r in records] == [0, 0, 0]  # CreateTime
    plain, ahead, ancient = sorted(
        (s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER),
        key=lambda s: s.start_time or 0,
    )
    check_wait_within(plain, before_ns - 1_000_000, after_ns, DELAY_S)  # (whole milliseconds)
    assert ahead.attributes is not None and ahead.attributes[semconv.QUEUE_WAIT_MS] == 0.0
    assert ancient.attributes is not None and semconv.QUEUE_WAIT_MS not in ancient.attributes
