"""A consumer stopped with SIGTERM while it handles a message (a pod's rollout in mid-work).

SIGTERM's default action ends the process in the middle of the handler: the message's CONSUMER
span never ends by itself. tracekit records it, failed, before the process goes, so the path
still shows the message reaching the consumer (and the log lines it wrote belong to a span).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from conditions import need
from stopping import Service

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

START_CONSUMING = """
    import logging, sys, time
    import pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")
    connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    channel = connection.channel()

    def on_message(channel, method, properties, body):
        log.warning("handling %s", body.decode())
        print("handling", flush=True)
        time.sleep(60)
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(sys.argv[2], on_message)
    channel.start_consuming()
"""

CONSUME_GENERATOR = """
    import logging, sys, time
    import pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")
    connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    channel = connection.channel()
    for method, properties, body in channel.consume(sys.argv[2]):
        log.warning("handling %s", body.decode())
        print("handling", flush=True)
        time.sleep(60)
        channel.basic_ack(method.delivery_tag)
"""

IN_A_THREAD = """
    import logging, sys, threading, time
    import pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")

    def on_message(channel, method, properties, body):
        log.warning("handling %s", body.decode())
        print("handling", flush=True)
        time.sleep(60)

    def consume():
        connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
        channel = connection.channel()
        channel.basic_consume(sys.argv[2], on_message)
        channel.start_consuming()

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join()
"""

AIO_PIKA = """
    import asyncio, logging, sys
    import aio_pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")

    async def on_message(message):
        async with message.process():
            log.warning("handling %s", message.body.decode())
            print("handling", flush=True)
            await asyncio.sleep(60)

    async def main():
        connection = await aio_pika.connect(sys.argv[1])
        queue = await (await connection.channel()).get_queue(sys.argv[2])
        await queue.consume(on_message)
        await asyncio.Future()

    asyncio.run(main())
"""


@pytest.fixture
def queue(service: Service) -> Iterator[str]:
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    name = f"tracekit-test-{uuid.uuid4().hex[:10]}"
    channel = connection.channel()
    channel.queue_declare(name)
    channel.basic_publish("", name, b"order-1")
    yield name
    service.kill()  # (its connection's unacked message back in the queue first)
    channel.queue_delete(name)
    connection.close()


@pytest.mark.parametrize(
    "consumer",
    [START_CONSUMING, CONSUME_GENERATOR, IN_A_THREAD, AIO_PIKA],
    ids=["callback", "consume", "thread", "aio"],
)
def test_a_message_handled_as_sigterm_lands_keeps_its_span(
    service: Service, queue: str, consumer: str
) -> None:
    service.write("consumer.py", consumer)
    service.start("consumer.py", AMQP_URL, queue)
    service.wait_output("handling")

    assert service.terminate() == -signal.SIGTERM, service.output()
    [span] = [s for s in service.spans() if s.kind == "CONSUMER"]
    assert span.name == f"process {queue}"
    assert span.status == "ERROR"
    assert span.status_message == (
        "HandlerInterrupted: SIGTERM ended the process before the handler returned"
    )
    assert service.log_bodies() == ["handling order-1"]


POOL_IN_A_HANDLER = """
    import multiprocessing, tracekit
    from tracekit import messaging

    tracekit.init("consumer")

    def square(x):
        return x * x

    with messaging.consume({}, system="rabbitmq", destination="orders"):
        # Leaving the block terminates the pool: SIGTERM to its idle workers, forked here.
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map(square, range(4)), flush=True)
"""


def test_a_pool_forked_in_a_handler_and_terminated_leaves_the_handlers_span_alone(
    service: Service,
) -> None:
    service.write("consumer.py", POOL_IN_A_HANDLER)
    service.start("consumer.py")

    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()
    [span] = service.spans()
    assert (span.name, span.status) == ("process orders", "UNSET")


DAEMON_THREAD = """
    import logging, sys, threading
    import pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")
    handling = threading.Event()

    def on_message(channel, method, properties, body):
        log.warning("handling %s", body.decode())
        handling.set()
        threading.Event().wait(60)

    def consume():
        connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
        channel = connection.channel()
        channel.basic_consume(sys.argv[2], on_message)
        channel.start_consuming()

    threading.Thread(target=consume, daemon=True).start()
    handling.wait(60)  # then the script ends, its consumer thread in the middle of a message
"""

# The message is held (its span open) by tracekit until the loop asks for the next one; the
# exit hook's undoing of the instrumentation ended it as handled, the thread still in it.
DAEMON_THREAD_CONSUME_GENERATOR = """
    import logging, sys, threading
    import pika, tracekit

    tracekit.init("consumer")
    log = logging.getLogger("consumer")
    handling = threading.Event()

    def consume():
        connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
        channel = connection.channel()
        for method, properties, body in channel.consume(sys.argv[2]):
            log.warning("handling %s", body.decode())
            handling.set()
            threading.Event().wait(60)

    threading.Thread(target=consume, daemon=True).start()
    handling.wait(60)  # then the script ends, its consumer thread in the middle of a message
"""


@pytest.mark.parametrize(
    "script",
    [DAEMON_THREAD, DAEMON_THREAD_CONSUME_GENERATOR],
    ids=["start_consuming", "consume-generator"],
)
def test_a_message_a_daemon_thread_handles_as_the_process_exits_keeps_its_span(
    service: Service, queue: str, script: str
) -> None:
    service.write("consumer.py", script)
    service.start("consumer.py", AMQP_URL, queue)

    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()
    [span] = [s for s in service.spans() if s.kind == "CONSUMER"]
    assert span.name == f"process {queue}"
    assert span.status == "ERROR"
    assert span.status_message == (
        "HandlerInterrupted: the process exited before the handler returned"
    )
    assert service.log_bodies() == ["handling order-1"]


DAEMON_THREAD_INSIDE_ITS_MESSAGES_SPAN_LOCK = """
    import sys, threading, time
    import pika, tracekit
    from lazy_rows import LazyRows
    from opentelemetry import trace

    tracekit.init("consumer")
    rows = LazyRows()

    def consume():
        connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
        for method, properties, body in connection.channel().consume(sys.argv[2]):
            trace.get_current_span().set_attribute("rows", rows)  # inside its lock

    threading.Thread(target=consume, daemon=True).start()
    rows.reading.wait(60)  # then the script ends, its consumer thread inside the span's lock
    print(f"ended at {time.monotonic()}", flush=True)
"""


def test_a_daemon_thread_inside_its_held_messages_span_lock_does_not_hold_the_exit(
    service: Service, queue: str
) -> None:
    """The exit hook ended the message a daemon thread held on the main thread, waiting for
    the span's lock that thread held: as long as it held it, for ever for one that never came
    back. That span is lost; the exit is not."""
    service.write("consumer.py", DAEMON_THREAD_INSIDE_ITS_MESSAGES_SPAN_LOCK)
    service.start("consumer.py", AMQP_URL, queue)
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert service.seconds_since("ended at ") < 15  # the exit, start-up and work left out
    assert "Traceback" not in service.output()


SHUTDOWN_WHILE_A_THREAD_IS_INSIDE_ITS_MESSAGES_SPAN_LOCK = (
    DAEMON_THREAD_INSIDE_ITS_MESSAGES_SPAN_LOCK
    + """
    tracekit.shutdown()
    print("shut down", flush=True)
"""
)


def test_shutdown_is_not_held_by_a_thread_inside_its_held_messages_span_lock(
    service: Service, queue: str
) -> None:
    """``tracekit.shutdown()`` (and a Celery prefork child's stop, which calls it) ends the
    messages pull APIs hold for other threads. It ended them in the calling thread, with no
    bound: a consumer thread parked inside its message's span lock held the stop for ever, and
    a Celery worker's warm shutdown with it. That span is lost; the stop is not."""
    service.write("consumer.py", SHUTDOWN_WHILE_A_THREAD_IS_INSIDE_ITS_MESSAGES_SPAN_LOCK)
    service.start("consumer.py", AMQP_URL, queue)
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert "shut down" in service.output()
    assert "Traceback" not in service.output()


# A Celery worker whose prefork child runs the consumer above beside its tasks.
TASKS_WITH_THAT_CONSUMER_IN_EACH_CHILD = """
    import os, sys
    from celery import Celery
    from celery.signals import worker_process_init

    app = Celery("tasks", broker=os.environ["BROKER"])

    @worker_process_init.connect
    def consume_beside_the_tasks(**_):
        sys.argv[1:] = [os.environ["AMQP_URL"], os.environ["QUEUE"]]
        import consumer  # returns once its thread is inside its message's span lock
        print("consumer inside the span's lock", flush=True)
"""


def test_a_celery_workers_warm_shutdown_is_not_held_by_a_childs_thread_inside_a_span_lock(
    service: Service, queue: str, redis_url: str
) -> None:
    """A prefork child stops through ``tracekit.shutdown()`` (``worker_process_shutdown``):
    with a thread of the child's inside its message's span lock, the worker's warm shutdown
    waited for that child for ever."""
    service.write("consumer.py", DAEMON_THREAD_INSIDE_ITS_MESSAGES_SPAN_LOCK)
    service.write("tasks.py", TASKS_WITH_THAT_CONSUMER_IN_EACH_CHILD)
    service.start(
        "-m", "celery", "-A", "tasks", "worker", "-l", "info", "--without-heartbeat",
        "--without-gossip", "--without-mingle", "--pool", "prefork", "-c", "1",
        BROKER=redis_url, AMQP_URL=AMQP_URL, QUEUE=queue,
    )  # fmt: skip
    service.wait_output("ready.")
    service.wait_output("consumer inside the span's lock")

    assert service.terminate() == 0, service.output()
    assert "worker: Warm shutdown" in service.output()


SHUTDOWN_IN_AN_EXIT_HOOK_WHERE_NO_THREAD_MAY_START = (
    DAEMON_THREAD_INSIDE_ITS_MESSAGES_SPAN_LOCK
    + """
    import atexit

    def no_thread_starts(thread):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    atexit.register(tracekit.shutdown)  # after init: runs before tracekit's own exit hook
    # What Python 3.12.0 and 3.12.1 do from the first exit hook on.
    atexit.register(lambda: setattr(threading.Thread, "start", no_thread_starts))
"""
)


def test_shutdown_in_an_exit_hook_where_no_thread_may_start_is_not_held_by_a_span_lock(
    service: Service, queue: str
) -> None:
    """Python 3.12.0 and 3.12.1 start no thread in an exit hook, so the stop ends the messages
    other threads hold in the hook's own thread, where no join bounds it. This machine's Python
    (3.11) is made to refuse threads from the first exit hook on, as those versions do, which
    forces that path: the exit waited for ever on the consumer thread inside its message's
    span lock (so did the real 3.12.1). That span is lost; the exit is not."""
    service.write("consumer.py", SHUTDOWN_IN_AN_EXIT_HOOK_WHERE_NO_THREAD_MAY_START)
    service.start("consumer.py", AMQP_URL, queue)
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert "Traceback" not in service.output()


# A publisher with confirms (SelectConnection): its connection's thread, once the message is sent
# and before the broker's confirm is read, parks inside that PRODUCER span's lock, which a span
# processor of the application's own kept.
PUBLISHER_INSIDE_ITS_AWAITING_SPANS_LOCK = """
    import sys, threading, time
    import pika, tracekit
    from lazy_rows import LazyRows
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    tracekit.init("publisher")
    rows = LazyRows()
    tracer = trace.get_tracer("app")
    published = []

    class KeepPublished(SpanProcessor):
        def on_start(self, span, parent_context=None):
            if span.kind == trace.SpanKind.PRODUCER:
                published.append(span)

    trace.get_tracer_provider().add_span_processor(KeepPublished())

    def on_confirming(channel):
        with tracer.start_as_current_span("send order"):
            channel.basic_publish("", sys.argv[2], b"order-2")
        published[0].set_attribute("rows", rows)  # inside its lock, its confirm not read

    def on_channel(channel):
        channel.confirm_delivery(lambda frame: None, callback=lambda _: on_confirming(channel))

    def publish():
        parameters = pika.URLParameters(sys.argv[1])
        on_open = lambda connection: connection.channel(on_open_callback=on_channel)
        pika.SelectConnection(parameters, on_open_callback=on_open).ioloop.start()

    threading.Thread(target=publish, daemon=True).start()
    rows.reading.wait(60)
    if sys.argv[3] == "shutdown":
        tracekit.shutdown()
        print("shut down", flush=True)
    else:
        print("parked", flush=True)
        time.sleep(60)
"""


def test_shutdown_is_not_held_by_a_thread_inside_a_span_awaiting_its_confirm(
    service: Service, queue: str
) -> None:
    """The stop records the publishes still awaiting the broker's confirm, outcome unknown. It
    ended them in the calling thread with no bound: the connection's thread parked inside such a
    span's lock held ``tracekit.shutdown()`` (and the exit) as long as it stayed there. That
    span is lost; the stop is not."""
    service.write("publisher.py", PUBLISHER_INSIDE_ITS_AWAITING_SPANS_LOCK)
    service.start("publisher.py", AMQP_URL, queue, "shutdown")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert "shut down" in service.output()
    assert "Traceback" not in service.output()


def test_sigterm_is_not_held_by_a_thread_inside_a_span_awaiting_its_confirm(
    service: Service, queue: str
) -> None:
    """SIGTERM's flush first records the publishes awaiting their confirm: with the connection's
    thread parked inside one's span lock it waited the whole export timeout, and the process
    died of SIGTERM having flushed nothing at all. Now the rest is stored."""
    service.write("publisher.py", PUBLISHER_INSIDE_ITS_AWAITING_SPANS_LOCK)
    # (a shorter export timeout than the default 30 s, which bounded that wait)
    service.start("publisher.py", AMQP_URL, queue, "sigterm", OTEL_BSP_EXPORT_TIMEOUT="5000")
    service.wait_output("parked")

    assert service.terminate(30) == -signal.SIGTERM, service.output()
    assert [span.name for span in service.spans()] == ["send order"]
