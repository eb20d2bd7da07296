"""Celery task messages carry the trace headers OTEL_PROPAGATORS names (a real worker, in process,
on a real redis-server broker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery_worker import running_worker
from conditions import wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import tracekit
from tracekit import correlation

pytestmark = pytest.mark.usefixtures("instrumented")
seen: dict[str, Any] = {}


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    celery_app = Celery("mesh", broker=redis_url, backend=None, set_as_current=False)
    celery_app.conf.update(task_default_queue="mesh", broker_connection_retry_on_startup=True)

    @celery_app.task(shared=False, name="mesh.work", bind=True)
    def work(self: Any) -> None:
        seen["carried"] = {n: getattr(self.request, n, None) for n in ("X-Amzn-Trace-Id", "b3")}
        seen["traceparent"] = getattr(self.request, "traceparent", None)
        seen["correlation_id"] = tracekit.correlation_id()

    with running_worker(celery_app):
        yield celery_app


@pytest.mark.parametrize(("name", "header"), [("xray", "X-Amzn-Trace-Id"), ("b3", "b3")])
def test_task_messages_carry_the_configured_trace_headers(
    app: Celery,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    header: str,
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", name)
    seen.clear()
    token = correlation.set_correlation_id("mesh-order-1")
    try:
        with trace.get_tracer("test").start_as_current_span("entry"):
            app.tasks["mesh.work"].apply_async()
    finally:
        correlation.reset_correlation_id(token)

    consumer = wait_for(
        lambda: [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER],
        what="the task's CONSUMER span",
    )[0]
    (producer,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert seen["correlation_id"] == "mesh-order-1"
    assert seen["carried"][header] is not None and seen["traceparent"] is None
