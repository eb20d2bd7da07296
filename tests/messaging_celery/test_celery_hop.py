"""Celery with a real worker (in-process, ``start_worker``) on a real redis-server broker (the
shared RabbitMQ for quorum queues)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
import pytest
from celery import Celery, Task
from celery.exceptions import Reject
from celery_worker import running_worker
from conditions import wait_for
from hopscene import Scene, check_hop, one, start_scene
from kombu import Exchange, Queue
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit import semconv
from tracekit._runtime.guard import MAX_MESSAGE
from tracekit._runtime.state import current_options
from tracekit.instrumentation.celery import FIRST_ATTEMPT_HEADER, RETRY_COUNT, TASK_STATE

pytestmark = pytest.mark.usefixtures("instrumented")

DELAY_S = 0.5
QUORUM = {"x-queue-type": "quorum"}
seen: dict[str, Any] = {}
scene_of: dict[str, Scene] = {}


class GatewayTimeout(Exception):
    """What the warehouse client raises when the warehouse is slow."""


class CardDeclined(Exception):
    """A payment failure that retrying does not fix."""


def finished_of(spans: InMemorySpanExporter, kind: SpanKind) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == kind]


class RejectingAfterSuccess(Task):
    """A task whose ``on_success`` finds the outcome unusable and rejects the message."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        raise Reject(ValueError("carrier refused the label"), requeue=False)


def make_app(broker: str) -> Celery:
    app = Celery("shop", broker=broker, backend=None, set_as_current=False)
    app.conf.update(task_default_queue="orders", broker_connection_retry_on_startup=True)

    @app.task(shared=False, name="shop.fulfil", bind=True)
    def fulfil(self: Any, order: str) -> None:
        seen["correlation_id"] = tracekit.correlation_id()
        seen["eta"] = self.request.eta
        scene_of["scene"].call_downstream()

    @app.task(shared=False, name="shop.flaky", bind=True, max_retries=2)
    def flaky(self: Any) -> None:
        seen.setdefault("attempt_ids", []).append(tracekit.correlation_id())
        try:
            if self.request.retries < 2:
                raise GatewayTimeout("upstream took 30s")
        except GatewayTimeout:
            raise self.retry(countdown=0.1)  # noqa: B904 - written as Celery's docs write it

    @app.task(
        shared=False,
        name="shop.charge",
        autoretry_for=(CardDeclined,),
        max_retries=1,
        default_retry_delay=0.1,
        retry_jitter=False,
    )
    def charge() -> None:
        raise CardDeclined("card ending 4242 declined")

    @app.task(shared=False, name="shop.refuse", acks_late=True)
    def refuse() -> None:
        raise Reject(ValueError("malformed order payload"), requeue=False)

    @app.task(shared=False, name="shop.hand_back", acks_late=True)
    def hand_back() -> None:
        seen["deliveries"] = seen.get("deliveries", 0) + 1
        if seen["deliveries"] == 1:  # not now: back to the queue, for this or another worker
            raise Reject("busy", requeue=True)

    @app.task(shared=False, name="shop.ship", base=RejectingAfterSuccess, acks_late=True)
    def ship() -> str:
        return "label printed"

    @app.task(shared=False, name="shop.await_stock", bind=True, max_retries=3)
    def await_stock(self: Any) -> None:
        if self.request.retries < 1:  # not in stock yet: look again shortly
            raise self.retry(countdown=0.1)

    @app.task(shared=False, name="shop.whoami")
    def whoami() -> None:
        seen.setdefault("correlation_ids", []).append(tracekit.correlation_id())

    @app.task(shared=False, name="shop.broken")
    def broken() -> None:
        raise RuntimeError("out of stock\x1b[2J\n" + "x" * 1000)

    return app


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    seen.clear()
    with running_worker(make_app(redis_url)) as celery_app:
        yield celery_app


def test_task_continues_the_request(app: Celery, spans: InMemorySpanExporter) -> None:
    fulfil = app.tasks["shop.fulfil"]
    with start_scene(lambda: fulfil.apply_async(("o-1",), countdown=DELAY_S)) as scene:
        scene_of["scene"] = scene
        called_at = time.time_ns()
        cid = scene.call_entry("order-" + uuid.uuid4().hex)
        consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
        wait_for(lambda: finished_of(spans, SpanKind.SERVER), what="the entry's SERVER span")
    finished = list(spans.get_finished_spans())
    assert seen["correlation_id"] == cid
    assert consumer.name == "process orders"
    assert consumer.attributes is not None
    assert consumer.attributes["tracekit.celery.task_name"] == "shop.fulfil"
    producer = one(finished, SpanKind.PRODUCER)
    assert producer.start_time is not None and producer.end_time is not None
    eta_ns = _unix_ns(seen["eta"])
    # Celery reckons the eta (now + countdown) before the publish begins: on a loaded machine
    # the PRODUCER span starts hundreds of milliseconds later, and the task then waits in the
    # queue only from its publish to its eta, less than the countdown (a wait of 15-381 ms
    # against a bound of countdown - 100 ms made this test fail under load).
    assert called_at <= eta_ns - round(DELAY_S * 1e9) <= producer.start_time
    assert consumer.start_time is not None and consumer.start_time >= eta_ns  # never early
    check_hop(finished, scene, cid, consumer, (eta_ns - producer.end_time) / 1e9)


def _unix_ns(eta: datetime | str) -> int:
    """A task's eta (Celery hands it over as ISO 8601 text) in unix nanoseconds."""
    moment = eta if isinstance(eta, datetime) else datetime.fromisoformat(eta)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_a_countdown_is_a_scheduled_delay_not_a_backlog_on_the_dashboard(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A task sent with a countdown waits in the queue because it was asked to: its CONSUMER
    span says how much of its queue wait was asked for (``tracekit.scheduled_delay_ms``), and
    the queue-wait histogram that dashboards alert on counts only the wait past its eta. It
    counted the countdown: a task scheduled an hour ahead was an hour of backlog at p95."""
    options = current_options()
    labels = {"messaging_system": "celery", "messaging_destination_name": "orders",
              "service_name": options.service_name,
              "service_version": options.service_version or ""}  # fmt: skip
    count_before, sum_before = _queue_wait_metric(labels)
    app.tasks["shop.whoami"].apply_async(countdown=DELAY_S)
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    count_after, sum_after = _queue_wait_metric(labels)

    assert consumer.attributes is not None
    waited_ms = consumer.attributes[semconv.QUEUE_WAIT_MS]
    scheduled_ms = consumer.attributes[semconv.SCHEDULED_DELAY_MS]
    # Celery reckons the eta before the publish time is stamped: asked for a little less
    assert 0 < scheduled_ms <= DELAY_S * 1e3 and scheduled_ms <= waited_ms
    assert count_after - count_before == 1
    assert sum_after - sum_before == pytest.approx((waited_ms - scheduled_ms) / 1e3, abs=1e-5)


def test_an_eta_without_a_time_zone_is_read_as_the_worker_reads_it(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """``apply_async(eta=datetime.utcnow() + ...)``, as older code and docs write it, sends an
    eta without a time zone, which the worker reads as UTC: so is its scheduled delay."""
    eta = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=DELAY_S)
    app.tasks["shop.whoami"].apply_async(eta=eta)
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    assert consumer.attributes is not None
    scheduled_ms = consumer.attributes[semconv.SCHEDULED_DELAY_MS]
    assert 0 < scheduled_ms <= DELAY_S * 1e3
    assert scheduled_ms <= consumer.attributes[semconv.QUEUE_WAIT_MS]


def test_a_message_delivered_again_says_so(app: Celery, spans: InMemorySpanExporter) -> None:
    """A task message the broker delivers again (an ``acks_late`` task whose worker was killed,
    or that gave it back): the run's span looked like any other, its long queue wait and the
    run missing before it unexplained. It is marked ``tracekit.messaging.redelivered``."""
    app.tasks["shop.hand_back"].apply_async()
    runs = wait_for(lambda: _two(finished_of(spans, SpanKind.CONSUMER)), what="both deliveries")
    first, again = sorted(runs, key=lambda span: span.start_time or 0)
    assert first.attributes is not None and again.attributes is not None
    assert semconv.MESSAGING_REDELIVERED not in first.attributes
    assert again.attributes[semconv.MESSAGING_REDELIVERED] is True
    assert again.parent is not None and again.parent == first.parent  # the same publish


def _two(found: list[Any]) -> list[Any]:
    return found if len(found) == 2 else []


def _queue_wait_metric(labels: dict[str, str]) -> tuple[float, float]:
    """The queue-wait histogram's count and sum for ``labels`` in the global registry."""
    from prometheus_client import REGISTRY

    def value(suffix: str) -> float:
        found = REGISTRY.get_sample_value(f"tracekit_messaging_queue_wait_seconds_{suffix}", labels)
        return found or 0.0

    return value("count"), value("sum")


def test_a_correlation_header_in_any_spelling_is_the_tasks_id(app: Celery) -> None:
    """A producer without a current correlation ID (or without tracekit) that sets the header
    itself, spelt as tracekit documents it (``X-Correlation-ID``): the task runs with that ID,
    as a pika or Kafka consumer would (it got a new one)."""
    assert tracekit.correlation_id() is None
    app.tasks["shop.whoami"].apply_async(headers={"X-Correlation-ID": "legacy-7"})
    ids = wait_for(lambda: seen.get("correlation_ids"), what="the task")
    assert ids == ["legacy-7"]


def test_the_task_id_is_the_message_id_at_both_ends(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """The PRODUCER span had no messaging.message.id: a task id from a log line or Flower found
    the task's run but not where it was sent from."""
    task_id = app.tasks["shop.whoami"].apply_async().id
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    (producer,) = finished_of(spans, SpanKind.PRODUCER)
    assert producer.attributes is not None and consumer.attributes is not None
    assert producer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id


def test_a_task_that_expired_in_the_queue_ends_its_path_failed(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """The worker discards a task whose ``expires`` passed while it waited (the caller's
    ``result.get()`` raises TaskRevokedError): the path ended at the publish, with no sign of
    what became of the task."""
    expired = datetime.now(UTC) - timedelta(seconds=1)
    task_id = app.tasks["shop.whoami"].apply_async(expires=expired).id
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the discard")[0]
    (producer,) = finished_of(spans, SpanKind.PRODUCER)
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id
    assert consumer.attributes[TASK_STATE] == "REVOKED"
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.status.description == "TaskRevokedError: expired"
    assert "correlation_ids" not in seen  # the task did not run


def test_a_task_the_worker_does_not_know_ends_its_path_failed(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A task name the worker has not registered (a producer deployed before its workers): the
    worker logs "Received unregistered task" and drops the message, and the caller's
    ``result.get()`` raises NotRegistered. The path ended at the publish, with no error in it."""
    task_id = app.send_task("shop.gift_wrap", headers={"x-correlation-id": "gift-1"}).id
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the drop")[0]
    (producer,) = finished_of(spans, SpanKind.PRODUCER)
    assert consumer.name == "process orders"
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id
    assert consumer.attributes[semconv.CORRELATION_ID] == "gift-1"
    assert consumer.attributes["tracekit.celery.task_name"] == "shop.gift_wrap"
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.attributes[TASK_STATE] == "FAILURE"
    assert consumer.status.description == "NotRegistered: 'shop.gift_wrap'"
    assert tracekit.correlation_id() is None


def test_a_task_message_the_worker_refuses_ends_its_path_failed(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A task serialised with pickle for a worker that accepts only JSON (Celery's default): the
    worker logs the message as invalid and drops it, and the caller's ``result.get()`` never
    returns. The path ended at the publish, with no error in it."""
    task_id = app.send_task("shop.whoami", serializer="pickle").id
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the drop")[0]
    (producer,) = finished_of(spans, SpanKind.PRODUCER)
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id
    assert consumer.attributes["tracekit.celery.task_name"] == "shop.whoami"
    assert consumer.attributes[TASK_STATE] == "REJECTED"
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.attributes[semconv.ERROR_TYPE] == "ContentDisallowed"
    assert consumer.status.description is not None
    assert consumer.status.description.startswith(
        "ContentDisallowed: Refusing to deserialize untrusted content of type pickle"
    )
    assert "correlation_ids" not in seen  # the task did not run


def test_a_revoked_task_ends_its_path_revoked(app: Celery, spans: InMemorySpanExporter) -> None:
    """``control.revoke`` before the task runs: the worker discards it, on purpose."""
    # A revoke is broadcast on Redis pub/sub, which keeps nothing for a worker not yet
    # subscribed (it starts without a ping check): one answered ping first, or the revoke is
    # lost and the task runs a second later (seen once in a CI run).
    wait_for(lambda: app.control.ping(timeout=0.5), what="the worker's control channel")
    result = app.tasks["shop.whoami"].apply_async(countdown=1)
    app.control.revoke(result.id)
    consumer = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the discard")[0]
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == result.id
    assert consumer.attributes[TASK_STATE] == "REVOKED"
    assert consumer.status.status_code is StatusCode.UNSET
    assert "correlation_ids" not in seen


def test_retries_continue_the_trace_and_link_the_first_attempt(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    app.tasks["shop.flaky"].apply_async()

    def three_attempts() -> list[Any]:
        found = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
        return found if len(found) == 3 else []

    attempts = sorted(wait_for(three_attempts, what="three attempts"), key=lambda s: s.start_time)
    first = attempts[0]
    assert len(set(seen["attempt_ids"])) == 1  # one correlation ID across attempts
    assert {a.context.trace_id for a in attempts} == {first.context.trace_id}
    for n, attempt in enumerate(attempts[1:], start=1):
        assert attempt.attributes is not None and attempt.attributes[RETRY_COUNT] == n
        assert [link.context.span_id for link in attempt.links] == [first.context.span_id]
    producers = {s.context.span_id: s for s in finished_of(spans, SpanKind.PRODUCER)}
    assert attempts[1].parent is not None
    second_parent = producers[attempts[1].parent.span_id]  # published by the first attempt
    assert (
        second_parent.parent is not None and second_parent.parent.span_id == first.context.span_id
    )
    for failed in attempts[:2]:  # each failed attempt says why it was retried
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "GatewayTimeout: upstream took 30s"
        assert failed.attributes[semconv.ERROR_TYPE] == "GatewayTimeout"
        assert failed.attributes[TASK_STATE] == "RETRY"
        (event,) = failed.events
        assert event.name == "exception"
        assert event.attributes["exception.type"].endswith("GatewayTimeout")
        assert event.attributes["exception.message"] == "upstream took 30s"
    assert attempts[2].status.status_code is StatusCode.UNSET
    assert attempts[2].attributes[TASK_STATE] == "SUCCESS"


def test_task_protocol_1_names_the_task_and_links_its_retries(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    """Protocol 1 (``task_protocol = 1``) keeps the task id and retry count in the body, not in
    the headers: the PRODUCER spans had no messaging.message.id and the retries no link to the
    first attempt."""
    app = make_app(redis_url)
    app.conf.task_protocol = 1
    with running_worker(app):
        task_id = app.tasks["shop.flaky"].apply_async().id

        def three_attempts() -> list[Any]:
            found = finished_of(spans, SpanKind.CONSUMER)
            return found if len(found) == 3 else []

        attempts = wait_for(three_attempts, what="three attempts")
    first, *retries = sorted(attempts, key=lambda s: s.start_time)
    for attempt in retries:
        assert [link.context.span_id for link in attempt.links] == [first.context.span_id]
    for producer in finished_of(spans, SpanKind.PRODUCER):
        assert producer.attributes is not None
        assert producer.attributes[semconv.MESSAGING_MESSAGE_ID] == task_id


def test_a_foreign_first_attempt_header_does_not_unlink_the_retries(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A message that already carries a tracekit-first-attempt header (a producer's own, or
    garbage): the first run took it as the first attempt, so its retries linked to nothing (or
    to a span of someone else's choosing) and published the value again with every retry."""
    bogus = "Z" * 5000
    foreign = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    for value in (bogus, foreign):
        spans.clear()
        seen.clear()
        app.tasks["shop.flaky"].apply_async(headers={FIRST_ATTEMPT_HEADER: value})

        def three_attempts() -> list[Any]:
            found = finished_of(spans, SpanKind.CONSUMER)
            return found if len(found) == 3 else []

        first, *retries = sorted(
            wait_for(three_attempts, what="3 attempts"), key=lambda s: s.start_time
        )
        assert first.links == ()
        for attempt in retries:
            assert [link.context.span_id for link in attempt.links] == [first.context.span_id]


@pytest.mark.parametrize("retries", [2**64, True])
def test_a_foreign_retry_count_out_of_range_is_not_recorded(
    app: Celery, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, retries: object
) -> None:
    """A message from another producer whose ``retries`` no OTLP int64 holds (or is a bool):
    the span carried it as ``tracekit.retry_count``, and the OTLP exporter logged an error with
    a traceback (and the value) for every such message."""
    app.send_task("shop.whoami", retries=retries)
    (consumer,) = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")
    with caplog.at_level(logging.WARNING):
        encode_spans([consumer])  # what the OTLP exporter sends
    assert caplog.records == []
    assert consumer.attributes is not None
    assert RETRY_COUNT not in consumer.attributes


def test_a_task_polling_with_retry_does_not_fail(app: Celery, spans: InMemorySpanExporter) -> None:
    """``raise self.retry(countdown=...)`` with no exception (a task waiting for something, or
    Celery's own chord_unlock on a result backend without native chords): each poll was an
    ERROR span "Retry: Retry in 0.1s" and a failed message, so a chord that worked looked
    failed."""
    app.tasks["shop.await_stock"].apply_async()

    def two_attempts() -> list[Any]:
        found = finished_of(spans, SpanKind.CONSUMER)
        return found if len(found) == 2 else []

    polled, done = sorted(wait_for(two_attempts, what="two attempts"), key=lambda s: s.start_time)
    assert polled.attributes is not None and done.attributes is not None
    assert polled.attributes[TASK_STATE] == "RETRY"
    assert polled.status.status_code is StatusCode.UNSET
    assert semconv.ERROR_TYPE not in polled.attributes
    assert done.attributes[TASK_STATE] == "SUCCESS"


def test_autoretry_then_failure_records_both_attempts(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    app.tasks["shop.charge"].apply_async()

    def two_attempts() -> list[Any]:
        found = finished_of(spans, SpanKind.CONSUMER)
        return found if len(found) == 2 else []

    retried, failed = sorted(
        wait_for(two_attempts, what="two attempts"), key=lambda s: s.start_time
    )
    for attempt, state in ((retried, "RETRY"), (failed, "FAILURE")):
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.status.description == "CardDeclined: card ending 4242 declined"
        assert attempt.attributes[TASK_STATE] == state


def test_failing_task_marks_its_span(app: Celery, spans: InMemorySpanExporter) -> None:
    app.tasks["shop.broken"].apply_async()
    span = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    assert span.status.is_ok is False
    assert span.attributes is not None
    assert span.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert span.attributes[TASK_STATE] == "FAILURE"
    # The exception's own words, bounded, on one printable line (no escape codes, no newline).
    start = "out of stock [2J "  # ESC and the newline became spaces
    message = start + "x" * (MAX_MESSAGE - len(start)) + "…"
    assert span.status.description == f"RuntimeError: {message}"
    (event,) = span.events
    assert event.attributes["exception.message"] == message
    assert tracekit.correlation_id() is None  # the worker's context did not leak here


def test_two_runs_of_one_task_id_at_once_each_end_their_own_span(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    """Two messages with the same task id (a caller's own idempotency id, a redelivery) running
    at once in a threads pool: the run that ended first ended the other's span, from the wrong
    thread, and left its own open with its correlation ID current in its thread."""
    app = Celery("dupes", broker=redis_url, backend=None, set_as_current=False)
    app.conf.update(task_default_queue="dupes", broker_connection_retry_on_startup=True)

    @app.task(shared=False, name="dupes.nap")
    def nap(seconds: float) -> None:
        time.sleep(seconds)
        seen.setdefault("after", []).append(tracekit.correlation_id())

    with running_worker(app, pool="threads", concurrency=2):
        for seconds, cid in ((0.1, "quick"), (0.6, "slow")):
            nap.apply_async((seconds,), task_id="sync-user-7", headers={"x-correlation-id": cid})
        wait_for(lambda: len(seen.get("after", ())) == 2, what="both runs")

        def both() -> list[Any]:
            found = finished_of(spans, SpanKind.CONSUMER)
            return found if len(found) == 2 else []

        runs = wait_for(both, 3, what="both spans")
    assert sorted(seen["after"]) == ["quick", "slow"]
    by_cid = {s.attributes[semconv.CORRELATION_ID]: s for s in runs}
    assert set(by_cid) == {"quick", "slow"}
    assert (by_cid["slow"].end_time - by_cid["slow"].start_time) / 1e9 >= 0.6
    assert (by_cid["quick"].end_time - by_cid["quick"].start_time) / 1e9 < 0.5


def test_a_rejected_task_is_a_failed_span(app: Celery, spans: InMemorySpanExporter) -> None:
    """``raise Reject(exc, requeue=False)`` (Celery's way to drop a message it cannot process,
    to a dead-letter queue): the span said the task succeeded."""
    app.tasks["shop.refuse"].apply_async()
    span = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    assert span.attributes is not None
    assert span.attributes[TASK_STATE] == "REJECTED"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: malformed order payload"
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_a_task_rejected_by_its_on_success_is_a_failed_span(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """``Reject`` raised from ``on_success``: Celery sends ``task_postrun`` with state SUCCESS
    while the ``Reject`` goes through, and the span said the task succeeded."""
    app.tasks["shop.ship"].apply_async()
    span = wait_for(lambda: finished_of(spans, SpanKind.CONSUMER), what="the task")[0]
    assert span.attributes is not None
    assert span.attributes[TASK_STATE] == "REJECTED"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: carrier refused the label"


@pytest.mark.parametrize("how", ["task_always_eager", "apply"])
def test_a_task_run_eagerly_continues_the_caller(spans: InMemorySpanExporter, how: str) -> None:
    """Nothing is published when a task runs in the caller: the task sees the caller's
    correlation ID and trace, as a function call would, and its span is a child of the caller's."""
    app = Celery("eager", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = how == "task_always_eager"

    @app.task(shared=False, name="eager.look")
    def look() -> tuple[str | None, int]:
        span_context = trace.get_current_span().get_span_context()
        return tracekit.correlation_id(), span_context.trace_id

    tracer = trace.get_tracer("tests")
    token = tracekit.correlation.set_correlation_id("request-42")
    try:
        with tracer.start_as_current_span("request") as request:
            seen_inside = look.delay().get() if how == "task_always_eager" else look.apply().get()
            after = tracekit.correlation_id()
    finally:
        tracekit.correlation.reset_correlation_id(token)

    trace_id = request.get_span_context().trace_id
    assert tuple(seen_inside) == ("request-42", trace_id)
    assert after == "request-42"
    [consumer] = finished_of(spans, SpanKind.CONSUMER)
    assert consumer.parent is not None
    assert consumer.parent.span_id == request.get_span_context().span_id


@pytest.mark.parametrize("how", ["task_always_eager", "apply"])
def test_a_task_run_eagerly_with_its_own_correlation_header_continues_the_callers_trace(
    spans: InMemorySpanExporter, how: str
) -> None:
    """A caller that sets the correlation header itself (``headers={"X-Correlation-ID": ...}``)
    and runs the task eagerly: the task got that ID, but its span started a new trace instead
    of being a child of the caller's span, as it is without the header."""
    app = Celery("eager-own-id", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = how == "task_always_eager"

    @app.task(shared=False, name="eager.look")
    def look() -> str | None:
        return tracekit.correlation_id()

    own = {"X-Correlation-ID": "job-9"}
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        result = (
            look.apply_async(headers=own) if how == "task_always_eager" else look.apply(headers=own)
        )

    assert result.get() == "job-9"
    [consumer] = finished_of(spans, SpanKind.CONSUMER)
    assert consumer.parent is not None
    assert consumer.parent.span_id == request.get_span_context().span_id
    assert consumer.context.trace_id == request.get_span_context().trace_id


def test_an_eager_replace_ends_both_runs_and_leaves_the_caller_as_it_was(
    spans: InMemorySpanExporter,
) -> None:
    """Eagerly, Task.replace() runs the replacement inside the task it replaces, under the same
    task id: both runs end, and nothing of either stays current in the caller."""
    app = Celery("eager-replace", broker="memory://", backend="cache+memory://",
                 set_as_current=False)  # fmt: skip
    app.conf.task_always_eager = True

    @app.task(shared=False, name="eager.leaf")
    def leaf(x: int) -> int:
        return x + 1

    @app.task(shared=False, name="eager.outer", bind=True)
    def outer(self: Any, x: int) -> Any:
        return self.replace(leaf.s(x))

    result = outer.apply((1,))

    assert result.state == "SUCCESS"
    assert tracekit.correlation_id() is None
    assert not trace.get_current_span().get_span_context().is_valid
    assert len(finished_of(spans, SpanKind.CONSUMER)) == 2


def test_eager_retries_link_the_first_attempt(spans: InMemorySpanExporter) -> None:
    """Run eagerly, a retry is not published (Task.apply runs it after the failed attempt): each
    retry still links to the first attempt and counts its retries, as a published retry does."""
    app = Celery("eager-retry", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(shared=False, name="eager.flaky", bind=True, max_retries=2)
    def flaky(self: Any) -> str:
        if self.request.retries < 2:
            raise self.retry(countdown=0, exc=GatewayTimeout("upstream took 30s"))
        return "picked"

    token = tracekit.correlation.set_correlation_id("request-43")
    try:
        with trace.get_tracer("tests").start_as_current_span("request") as request:
            assert flaky.delay().get() == "picked"
    finally:
        tracekit.correlation.reset_correlation_id(token)

    first, *retries = sorted(finished_of(spans, SpanKind.CONSUMER), key=lambda s: s.start_time)
    assert len(retries) == 2
    assert first.attributes[TASK_STATE] == "RETRY"
    for n, attempt in enumerate(retries, start=1):
        assert attempt.context.trace_id == request.get_span_context().trace_id
        assert attempt.attributes[RETRY_COUNT] == n
        assert [link.context.span_id for link in attempt.links] == [first.context.span_id]
        assert attempt.attributes[semconv.CORRELATION_ID] == "request-43"
    assert retries[-1].attributes[TASK_STATE] == "SUCCESS"


def test_a_countdown_on_a_quorum_queue_is_named_by_its_queue(
    amqp_url: str, spans: InMemorySpanExporter, leave_no_names: Any
) -> None:
    """On RabbitMQ quorum queues Celery delays a countdown or eta through its native delayed
    delivery: the routing key is the delay in seconds, as 28 binary digits, then the queue's
    key. Each delay made its own span name and metric series ("send 0.0.[...].1.0.pay-xxx").
    The delay asked for is still the run's scheduled delay, not queue wait on the dashboard."""
    queue = "pay-" + uuid.uuid4().hex[:8]
    app = Celery("pay", broker=amqp_url, backend=None, set_as_current=False)
    exchange = Exchange(queue, type="topic")
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_exchange_type="topic",
        task_queues=[Queue(queue, exchange, routing_key=queue, queue_arguments=QUORUM)],
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        # The in-process worker stops when its loop next wakes: with AMQP, up to 10 s later
        # unless a timer is due (the heartbeat check, every broker_heartbeat / 2 s), and
        # remote control's reply may hang its stop.
        broker_heartbeat=4,
        worker_enable_remote_control=False,
    )
    leave_no_names(amqp_url, {"task_default_queue": queue})

    @app.task(shared=False, name="pay.settle")
    def settle() -> None:
        """A payment settled after a delay."""

    with running_worker(app):
        settle.apply_async(countdown=1)
        settle.apply_async(countdown=2)
        wait_for(lambda: len(finished_of(spans, SpanKind.CONSUMER)) == 2, 30, "both tasks")
    sent_and_run = finished_of(spans, SpanKind.PRODUCER) + finished_of(spans, SpanKind.CONSUMER)
    assert sorted(span.name for span in sent_and_run) == [
        f"process {queue}",
        f"process {queue}",
        f"send {queue}",
        f"send {queue}",
    ]
    for span in sent_and_run:
        assert span.attributes is not None
        assert span.attributes[semconv.MESSAGING_DESTINATION_NAME] == queue
    for span in finished_of(spans, SpanKind.CONSUMER):  # the eta is read as without them
        assert span.attributes is not None
        waited_ms = span.attributes[semconv.QUEUE_WAIT_MS]
        assert 0 < span.attributes[semconv.SCHEDULED_DELAY_MS] <= waited_ms


def test_tasks_routed_by_a_topic_exchange_make_one_name_however_many_keys(
    amqp_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic exchange routes each task by a key of its own (``orders.eu.<order>``) to a queue
    bound with a pattern (``orders.#``). Named by that routing key, every order made a span
    name and a metric series of its own ("send orders.eu.1234", "process orders.eu.1234").
    Named by the exchange, as OpenTelemetry's RabbitMQ conventions name a destination, they
    make one however many keys there are. (A service of its own: its series are below the cap
    of names per service, which earlier tests' queues may have reached.)"""
    queue = "orders-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("OTEL_SERVICE_NAME", f"shop-{queue}")
    exchange = Exchange(f"{queue}-topic", type="topic")
    app = Celery("shop", broker=amqp_url, backend=None, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue, exchange, routing_key="orders.#")],
        broker_connection_retry_on_startup=True,
        broker_heartbeat=4,  # (see the quorum-queue test: the in-process worker stops sooner)
        worker_enable_remote_control=False,
    )

    @app.task(shared=False, name="shop.route")
    def route() -> None:
        """An order routed by its region and number."""

    keys = [f"orders.eu.{n}" for n in range(20)]
    try:
        with running_worker(app):
            for key in keys:
                route.apply_async(exchange=exchange.name, routing_key=key)
            wait_for(lambda: len(finished_of(spans, SpanKind.CONSUMER)) == len(keys), 30, "all")
    finally:
        with app.connection_for_write() as connection:
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(exchange.name)
    sent_and_run = finished_of(spans, SpanKind.PRODUCER) + finished_of(spans, SpanKind.CONSUMER)
    assert {span.name for span in sent_and_run} == {
        f"send {exchange.name}",
        f"process {exchange.name}",
    }
    assert {span.attributes[semconv.MESSAGING_DESTINATION_NAME] for span in sent_and_run} == {
        exchange.name
    }
    scraped = prometheus_client.generate_latest().decode()
    ours = [line for line in scraped.splitlines() if f'service_name="shop-{queue}"' in line]
    assert not [line for line in ours if "orders.eu." in line]
    assert {re.search('messaging_destination_name="([^"]*)"', line)[1] for line in ours} == {
        exchange.name
    }
