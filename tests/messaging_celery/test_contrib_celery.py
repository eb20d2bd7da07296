"""OpenTelemetry's contrib Celery instrumentation where tracekit's own is not applied: contrib
injects and extracts with the global propagator, tracekit's, so the correlation ID set where a
task is sent reaches the task, its CONSUMER span and its log lines. A real worker on a real
redis-server broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery import _state as celery_state
from celery_worker import running_worker
from conditions import wait_for
from contrib_order import ORDERS
from contrib_order import both_instrumented as instrumented_in_order
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.trace import SpanKind

import tracekit
from tracekit import correlation

seen: dict[str, Any] = {}


@pytest.fixture
def contrib_celery() -> Iterator[None]:
    CeleryInstrumentor().instrument()
    yield
    CeleryInstrumentor().uninstrument()


def test_the_id_set_at_send_reaches_the_task_and_its_span(
    redis_url: str, spans: Any, contrib_celery: None
) -> None:
    seen.clear()
    app = Celery("contrib_shop", broker=redis_url, backend=None, set_as_current=False)
    app.conf.update(task_default_queue="contrib-orders", broker_connection_retry_on_startup=True)

    @app.task(shared=False, name="contrib_shop.fulfil")
    def fulfil() -> None:
        seen["correlation_id"] = tracekit.correlation_id()

    with running_worker(app):
        token = correlation.set_correlation_id("celery-9")
        try:
            fulfil.delay()
        finally:
            correlation.reset_correlation_id(token)
        wait_for(lambda: "correlation_id" in seen, 10, "the task ran")
        wait_for(
            lambda: any(s.kind is SpanKind.CONSUMER for s in spans.get_finished_spans()),
            10,
            "the task's span ended",
        )

    assert seen["correlation_id"] == "celery-9"
    (run,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert run.attributes["correlation.id"] == "celery-9"


@pytest.fixture(params=ORDERS)
def both_instrumented(request: pytest.FixtureRequest) -> Iterator[None]:
    with instrumented_in_order(CeleryInstrumentor(), ["celery"], request.param):
        yield


def test_a_publish_beside_contrib_leaves_the_callers_context_as_it_was(
    redis_url: str, spans: Any, both_instrumented: None
) -> None:
    """contrib's span, made current by its ``before_task_publish`` receiver and put back by its
    ``after_task_publish`` one, stayed current after ``delay()`` where contrib was instrumented
    first: tracekit's publish block, begun inside contrib's and ended after it, put back what it
    had found, contrib's ended span. Every later span of the thread (the next task sent)
    joined that trace."""
    app = Celery("contrib_both", broker=redis_url, backend=None)  # the current app, as usual
    app.conf.update(task_default_queue="contrib-both", broker_connection_retry_on_startup=True)

    @app.task(shared=False, name="contrib_both.ship")
    def ship() -> None:
        pass

    previous = celery_state._tls.current_app
    try:
        ship.delay()
        after_first = trace.get_current_span()
        ship.delay()
    finally:
        celery_state._set_current_app(previous)

    assert after_first is trace.INVALID_SPAN
    producers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert len(producers) == 4  # contrib's and tracekit's for each task
    assert len({span.context.trace_id for span in producers}) == 2  # one trace per task sent
