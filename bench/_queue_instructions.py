"""Instructions per message of a pika, aio-pika or confluent-kafka hop, counted by valgrind's
callgrind: a repeatable view.

CPU time on a shared machine moves with the neighbours; the number of instructions the process
executes does not. Each stack runs in a child process under ``valgrind --tool=callgrind``, once
publishing N messages and once publishing and consuming them, for two values of N: the
difference between the two N cancels the start-up, publishing is the first difference, and
consuming is the second minus the first. User-space instructions only (the kernel's work for the
sockets is not counted), so they weigh Python code more than CPU time does.

    python -m bench._queue_instructions aio-pika               # print one client's counts
    python -m bench._queue_instructions STACK N publish|hop [CLIENT]    # the child (one count)

CLIENT is ``pika`` (the default: ``BlockingConnection``'s ``basic_publish`` and a
``basic_consume`` callback), ``aio-pika`` (``Exchange.publish`` without publisher confirms
and a ``Queue.consume`` callback, as ``bench/_queue_pika.py`` runs them) or
``confluent-kafka`` (``produce`` and ``poll`` on librdkafka's mock cluster, as
``bench/_queue_kafka.py`` runs them). The mock cluster's threads run in the child, and what
they do waiting moves a count by a few thousand instructions per message from run to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

from bench import _queue_stacks
from bench._queue_kafka import ConfluentKafka
from bench._queue_pika import AMQP_URL, BODY, AioPika, Pika
from bench._queue_stacks import STACKS

SIZES = (400, 1200)
_COLLECTED = re.compile(r"Collected : (\d+)")


def available() -> bool:
    """True when valgrind is installed."""
    return shutil.which("valgrind") is not None


def per_message(
    client: str = "pika", stacks: tuple[str, ...] = STACKS
) -> dict[str, tuple[float, float]]:
    """Instructions per message of (publishing, consuming), per stack, on ``client``."""
    counts = {
        (stack, size, what): _count(stack, size, what, client)
        for stack in stacks
        for size in SIZES
        for what in ("publish", "hop")
    }
    span = SIZES[1] - SIZES[0]
    result = {}
    for stack in stacks:
        publish = (counts[stack, SIZES[1], "publish"] - counts[stack, SIZES[0], "publish"]) / span
        hop = (counts[stack, SIZES[1], "hop"] - counts[stack, SIZES[0], "hop"]) / span
        result[stack] = (publish, hop - publish)
    return result


def _count(stack: str, size: int, what: str, client: str) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out",
            sys.executable, "-m", "bench._queue_instructions", stack, str(size), what, client,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every child
        done = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=1800, env=env
        )
    match = _COLLECTED.search(done.stderr)
    if match is None:
        raise RuntimeError(f"callgrind counted nothing for {stack}: {done.stderr[-500:]}")
    return int(match.group(1))


def _pika_child(stack: str, size: int, what: str) -> None:
    import pika

    from tracekit import correlation

    shared = _queue_stacks.providers()
    set_up, tear_down = _queue_stacks.in_stack(stack, Pika(), shared)
    set_up()  # before the connection: OpenTelemetry instruments channels as they are opened
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    queue = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, auto_delete=True)
    token = correlation.set_correlation_id(_queue_stacks.CORRELATION_ID)
    for _ in range(size):
        channel.basic_publish("", queue, BODY)
    correlation.reset_correlation_id(token)
    if what == "hop":
        _consume(connection, channel, queue, size)
    else:
        channel.queue_purge(queue)
    connection.close()
    tear_down()
    shared.flush()


def _consume(connection: Any, channel: Any, queue: str, size: int) -> None:
    received = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal received
        received += 1

    channel.basic_consume(queue, on_message, auto_ack=True)
    while received < size:
        connection.process_data_events(time_limit=1)


def _aio_pika_child(stack: str, size: int, what: str) -> None:
    import asyncio

    shared = _queue_stacks.providers()
    set_up, tear_down = _queue_stacks.in_stack(stack, AioPika(), shared)
    set_up()
    asyncio.run(_aio_pika_round(size, what))
    tear_down()
    shared.flush()


async def _aio_pika_round(size: int, what: str) -> None:
    import aio_pika

    from tracekit import correlation

    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(f"tracekit-bench-{uuid.uuid4().hex[:8]}", auto_delete=True)
    token = correlation.set_correlation_id(_queue_stacks.CORRELATION_ID)
    for _ in range(size):
        await channel.default_exchange.publish(aio_pika.Message(BODY), routing_key=queue.name)
    correlation.reset_correlation_id(token)
    if what == "hop":
        await _aio_pika_consume(queue, size)
    else:
        await queue.purge()
    await connection.close()


async def _aio_pika_consume(queue: Any, size: int) -> None:
    import asyncio

    done = asyncio.Event()
    received = 0

    async def on_message(message: Any) -> None:
        nonlocal received
        received += 1
        if received == size:
            done.set()

    tag = await queue.consume(on_message, no_ack=True)
    await done.wait()
    await queue.cancel(tag)


def _confluent_kafka_child(stack: str, size: int, what: str) -> None:
    import confluent_kafka

    from tracekit import correlation

    broker = ConfluentKafka()
    shared = _queue_stacks.providers()
    set_up, tear_down = _queue_stacks.in_stack(stack, broker, shared)
    set_up()  # before the clients: the stacks swap in classes of their own
    topic = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
    partitions = list(broker._anchor.list_topics(topic, timeout=10).topics[topic].partitions)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    token = correlation.set_correlation_id(_queue_stacks.CORRELATION_ID)
    for _ in range(size):
        producer.produce(topic, BODY)
    producer.flush(30)
    correlation.reset_correlation_id(token)
    if what == "hop":
        _poll(broker.bootstrap, topic, partitions, size)
    tear_down()
    shared.flush()


def _poll(bootstrap: str, topic: str, partitions: list[int], size: int) -> None:
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "log_level": 0}
    )
    consumer.assign(
        [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
         for p in partitions]
    )  # fmt: skip
    received = 0
    while received < size:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received += 1
    consumer.close()


_CHILDREN: dict[str, Callable[[str, int, str], None]] = {
    "pika": _pika_child,
    "aio-pika": _aio_pika_child,
    "confluent-kafka": _confluent_kafka_child,
}


def _print_counts(client: str) -> None:
    counts = per_message(client)
    bare, peer = counts[STACKS[0]], counts[STACKS[-1]]
    for stack, (publish, consume) in counts.items():
        ratios = [
            (mine - base) / (theirs - base)
            for mine, base, theirs in ((publish, bare[0], peer[0]), (consume, bare[1], peer[1]))
        ]
        print(
            f"{stack:28} publish {publish / 1e3:7.1f}k ({publish - bare[0]:+9.0f}, "
            f"{ratios[0]:.3f})  consume {consume / 1e3:7.1f}k ({consume - bare[1]:+9.0f}, "
            f"{ratios[1]:.3f})"
        )


if __name__ == "__main__":
    if len(sys.argv) == 2:
        _print_counts(sys.argv[1])
    else:
        client = sys.argv[4] if len(sys.argv) > 4 else "pika"
        _CHILDREN[client](sys.argv[1], int(sys.argv[2]), sys.argv[3])
