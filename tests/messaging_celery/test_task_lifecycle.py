"""A task's run from its start to its end, whatever happens to tracekit meanwhile, and the name
its CONSUMER span gets wherever it runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from celery import Celery
from celery_worker import running_worker
from conditions import wait_for
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import tracekit
from tracekit import instrumentation, semconv

pytestmark = pytest.mark.usefixtures("instrumented")


def consumers(spans: InMemorySpanExporter) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]


def test_uninstrumenting_while_a_task_runs_ends_its_span_and_clears_its_id(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    """Uninstrumented while a task ran (a reload, a test's teardown): the task's span never
    ended, and its correlation ID stayed current in the worker's thread, so the next task's
    log lines carried the earlier task's ID."""
    app = Celery("drain", broker=redis_url, backend=None, set_as_current=False)
    app.conf.update(task_default_queue="drain", broker_connection_retry_on_startup=True)
    started, release = threading.Event(), threading.Event()
    ids_seen_later: list[str | None] = []

    @app.task(shared=False, name="drain.slow")
    def slow() -> None:
        started.set()
        release.wait(10)

    @app.task(shared=False, name="drain.whoami")
    def whoami() -> None:
        ids_seen_later.append(tracekit.correlation_id())

    with running_worker(app):
        slow.apply_async(headers={"x-correlation-id": "slow-1"})
        assert started.wait(10)
        instrumentation.uninstrument()
        release.set()
        whoami.apply_async()
        wait_for(lambda: ids_seen_later, what="the next task")

    assert ids_seen_later == [None]
    [run] = consumers(spans)
    assert run.attributes is not None
    assert run.attributes[semconv.CORRELATION_ID] == "slow-1"
    assert not tracekit_receivers()  # disconnected once the run had ended


def tracekit_receivers() -> list[object]:
    """The dispatch uids of tracekit's receivers still connected to Celery's run signals."""
    from celery import signals

    run_signals = (signals.task_prerun, signals.task_failure, signals.task_postrun)
    return [key[0] for s in run_signals for key, _ in s.receivers if "tracekit" in str(key[0])]


@pytest.mark.parametrize("how", ["task_always_eager", "apply"])
def test_a_task_run_eagerly_is_named_by_the_queue_it_would_be_sent_to(
    spans: InMemorySpanExporter, how: str
) -> None:
    """A worker names a task's span by its queue (``process orders``); run eagerly, every task
    was ``process celery``, whatever its routes, so tests and dev runs named spans unlike
    production."""
    app = Celery("eager-queues", broker="memory://", set_as_current=False)
    app.conf.update(task_default_queue="orders", task_always_eager=how == "task_always_eager")
    app.conf.task_routes = {"eager.bill": {"queue": "billing"}}

    @app.task(name="eager.pack", shared=False)
    def pack() -> None:
        pass

    @app.task(name="eager.bill", shared=False)
    def bill() -> None:
        pass

    @app.task(name="eager.ship", queue="shipping", shared=False)
    def ship() -> None:
        pass

    for task in (pack, bill, ship):
        task.delay() if how == "task_always_eager" else task.apply()
    names = [span.name for span in consumers(spans)]
    assert names == ["process orders", "process billing", "process shipping"]


def test_a_task_sees_the_same_correlation_id_eagerly_as_on_a_worker(redis_url: str) -> None:
    """A caller inside a request (its correlation ID current) that also passes a correlation
    header of its own: on a worker the task ran with the request's ID, as every tracekit
    transport carries the current one, but run eagerly (tests, dev) with the header's."""
    app = Celery("same-id", broker=redis_url, backend=None, set_as_current=False)
    app.conf.update(task_default_queue="same-id", broker_connection_retry_on_startup=True)
    seen: list[str | None] = []

    @app.task(shared=False, name="same.whoami")
    def whoami() -> None:
        seen.append(tracekit.correlation_id())

    own = {"X-Correlation-ID": "job-9"}
    token = tracekit.correlation.set_correlation_id("request-42")
    try:
        with running_worker(app):
            whoami.apply_async(headers=own)
            wait_for(lambda: seen, what="the task on the worker")
        whoami.apply(headers=own)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert seen == ["request-42", "request-42"]
