"""confluent-kafka against librdkafka's mock cluster (no Kafka broker can run on this machine).

The mock cluster (``test.mock.num.brokers``) runs inside this process and speaks the Kafka
protocol over loopback TCP, so headers travel as they would to a broker; its own CPU is counted
with the clients' (the same for every stack, plus what larger messages cost it). A round
produces N messages to a fresh topic (a correlation ID current) and flushes, then a consumer
assigned to every partition from the beginning polls them one at a time.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench._queue_stacks import CORRELATION_ID, CpuClock, Instrumentation
from tracekit import correlation

BODY = b'{"order": 4711, "sku": "A-1"}'


class ConfluentKafka:
    """``Producer.produce`` and ``Consumer.poll``."""

    name = "confluent-kafka (mock cluster)"
    peer = "OpenTelemetry confluent-kafka"
    hop_peer = True

    def __init__(self) -> None:
        import confluent_kafka

        # The cluster lives as long as this producer.
        self._anchor = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
        metadata = self._anchor.list_topics(timeout=10)
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())

    def tracekit(self) -> Instrumentation:
        from tracekit.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

        return ConfluentKafkaInstrumentor()

    def opentelemetry(self) -> Instrumentation:
        from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

        return ConfluentKafkaInstrumentor()  # type: ignore[no-any-return]

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        topic = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
        partitions = self._anchor.list_topics(topic, timeout=10).topics[topic].partitions
        publish = self._produce(topic, messages, cpu)
        return publish, self._consume(topic, list(partitions), messages, cpu)

    def _produce(self, topic: str, messages: int, cpu: CpuClock) -> float:
        import confluent_kafka  # the instrumented class, when a stack swapped it in

        producer = confluent_kafka.Producer({"bootstrap.servers": self.bootstrap, "log_level": 0})
        token = correlation.set_correlation_id(CORRELATION_ID)
        cpu.start()
        for n in range(messages):
            producer.produce(topic, BODY)
            if n % 1000 == 999:
                producer.poll(0)  # serve delivery reports, as a real producer loop does
        producer.flush(30)
        elapsed = cpu.stop()
        correlation.reset_correlation_id(token)
        return elapsed

    def _consume(self, topic: str, partitions: list[int], messages: int, cpu: CpuClock) -> float:
        import confluent_kafka

        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": topic, "log_level": 0}
        )
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
             for p in partitions]
        )  # fmt: skip
        received = 0
        cpu.start()
        while received < messages:
            message: Any = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received += 1
        elapsed = cpu.stop()
        consumer.close()
        return elapsed
