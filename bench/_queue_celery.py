"""Celery with the real RabbitMQ at ``TRACEKIT_TEST_AMQP_URL`` as its broker.

A round publishes N calls of a task that does nothing (``delay()``, a correlation ID current)
into a fresh queue (deleted after the round), then starts a solo-pool worker in this process
and lets it run them. Publishing is timed around the ``delay()`` loop. Consuming is timed from
inside the tasks, from the first task's body to the last one's, divided by N - 1: the worker's
own start is left out, and what each task costs between two bodies (receiving and decoding the
message, the signals, acknowledging) is in.

Celery's test worker (no mingle, no gossip) started with thousands of messages already queued
sometimes stops taking them, its prefetched ones unacknowledged, for seconds or for good (Celery
issues 1847 and 2519; seen here with OpenTelemetry's instrumentation and with none, as with
tracekit's). A round whose worker runs no task for 30 s is run again from a fresh queue, up to
four times; only rounds that ran every task are measured.
"""

from __future__ import annotations

import logging
import threading
import uuid
from time import process_time
from typing import Any

from bench._queue_pika import AMQP_URL
from bench._queue_stacks import CORRELATION_ID, CpuClock, Instrumentation
from tracekit import correlation


class Celery:
    """``Task.delay`` and a solo-pool worker."""

    name = "Celery (RabbitMQ broker)"
    peer = "OpenTelemetry Celery"
    hop_peer = True

    def tracekit(self) -> Instrumentation:
        from tracekit.instrumentation.celery import CeleryInstrumentor

        return CeleryInstrumentor()

    def opentelemetry(self) -> Instrumentation:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        return CeleryInstrumentor()  # type: ignore[no-any-return]

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        for _ in range(ATTEMPTS - 1):
            try:
                return _round(messages, cpu)
            except _Stalled:
                pass  # the worker hung (see above): the round again, from a fresh queue
        return _round(messages, cpu)


ATTEMPTS = 4
STALL_S = 30.0  # a worker that runs no task for this long has hung


class _Stalled(RuntimeError):
    pass


def _round(messages: int, cpu: CpuClock) -> tuple[float, float]:
    clock = _TaskClock(messages)
    app = _app(clock)
    try:
        publish = _publish(app, messages, cpu)
        return publish, _consume(app, clock) * messages
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(app.conf.task_default_queue)


def _app(clock: _TaskClock) -> Any:
    from celery import Celery as CeleryApp

    queue = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
    app = CeleryApp("queue-bench", broker=AMQP_URL, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=queue,  # declared once, as an application's queue is
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    def noop() -> None:
        clock.tick()

    app.task(name=f"{queue}.noop")(noop)  # names are process-wide: one per round
    return app


class _TaskClock:
    """Counts task runs; the process's CPU time at the first and at the last."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.done = threading.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = process_time()
        if self.count == self.expected:
            self.last = process_time()
            self.done.set()


def _publish(app: Any, messages: int, cpu: CpuClock) -> float:
    task = app.tasks[f"{app.conf.task_default_queue}.noop"]
    task.delay()  # the connection, the producer pool and the queue before the clock starts
    token = correlation.set_correlation_id(CORRELATION_ID)
    cpu.start()
    for _ in range(messages - 1):
        task.delay()
    elapsed = cpu.stop()
    correlation.reset_correlation_id(token)
    return elapsed * messages / (messages - 1)


def _consume(app: Any, clock: _TaskClock) -> float:
    from celery.contrib.testing.worker import start_worker

    root_level, root_handlers = logging.root.level, logging.root.handlers[:]
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
            _wait(clock)
    finally:
        logging.root.setLevel(root_level)
        logging.root.handlers[:] = root_handlers
    return (clock.last - clock.first) / (clock.expected - 1)


def _wait(clock: _TaskClock) -> None:
    """Until the worker has run every task; ``_Stalled`` when it runs none for ``STALL_S``."""
    seen = clock.count
    while not clock.done.wait(STALL_S):
        if clock.count == seen:
            raise _Stalled(f"the worker ran {clock.count} of {clock.expected} tasks")
        seen = clock.count
