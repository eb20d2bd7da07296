"""OpenTelemetry's contrib Celery instrumentation where tracekit's own is not applied: contrib
injects and extracts with the global propagator, tracekit's, so the correlation ID set where a
task is sent reaches the task, its CONSUMER span and its log lines. A real worker on a real
redis-server broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery_worker import running_worker
from conditions import wait_for
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
