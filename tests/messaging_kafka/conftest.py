"""A real Kafka wire protocol without a Kafka broker: librdkafka's in-process mock cluster.

No Kafka broker can be run on these machines. confluent-kafka's ``test.mock.num.brokers`` starts
librdkafka's mock cluster inside the test process: a real TCP listener on loopback that speaks the
Kafka protocol (produce, fetch, metadata, offsets, groups). Both client libraries talk to it over
the socket, so headers travel exactly as they would to a broker. The gap: it is not Apache Kafka
(no replication, no log retention, simplified group coordination), and kafka-python must pin
``api_version=(2, 3)`` because the mock answers ApiVersions v3 with an error kafka-python 3.0
cannot decode.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conditions import need

from tracekit import instrumentation


@pytest.fixture(scope="module")
def mock_cluster() -> Iterator[Any]:
    """A client of a one-broker librdkafka mock cluster (the cluster lives as long as it)."""
    try:
        import confluent_kafka
    except ImportError:
        need(False, "confluent-kafka (its librdkafka mock cluster stands in for Kafka)")
    anchor = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    yield anchor
    anchor.flush(5)


@pytest.fixture(scope="module")
def kafka_bootstrap(mock_cluster: Any) -> str:
    """The bootstrap address of the mock cluster."""
    metadata = mock_cluster.list_topics(timeout=10)
    brokers = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    need(bool(brokers), "the librdkafka mock cluster")
    return brokers


@pytest.fixture
def topic(mock_cluster: Any) -> str:
    """A fresh topic. The mock creates it on a metadata request, with 4 partitions; its
    CreateTopics handling does not answer, so tests assign every partition or pick one."""
    name = f"orders-{uuid.uuid4().hex[:8]}"
    metadata = mock_cluster.list_topics(name, timeout=10)
    assert metadata.topics[name].error is None
    return name


@pytest.fixture
def instrumented() -> Iterator[None]:
    """tracekit's Kafka and requests instrumentation, removed after the test."""
    instrumentation.instrument(["kafka", "confluent_kafka", "requests"])
    yield
    instrumentation.uninstrument()
