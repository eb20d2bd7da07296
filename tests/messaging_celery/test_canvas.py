"""Celery's canvas (groups, chords) on a real worker (in-process, ``start_worker``) on a real
redis-server broker, with the Redis result backend (native chords) and the filesystem one
(chords joined by Celery's ``chord_unlock`` task)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chord, group
from celery_worker import running_worker
from conditions import wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tracekit import correlation, semconv
from tracekit.instrumentation.celery import TASK_NAME

pytestmark = pytest.mark.usefixtures("instrumented")


@pytest.fixture(params=["redis", "filesystem"])
def app(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Celery]:
    backend = redis_url if request.param == "redis" else f"file://{tmp_path}"
    app = Celery("canvas", broker=redis_url, backend=backend, set_as_current=False)
    app.conf.update(task_default_queue="canvas", broker_connection_retry_on_startup=True)

    @app.task(shared=False, name="canvas.price")
    def price(item: int) -> int:
        return item * 10

    @app.task(shared=False, name="canvas.total")
    def total(prices: list[int]) -> int:
        return sum(prices)

    with running_worker(app):
        yield app


def consumers(spans: InMemorySpanExporter, count: int) -> list[Any]:
    """The runs of the test's tasks (not Celery's chord_unlock), once ``count`` have ended."""

    def finished() -> list[Any]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.kind == SpanKind.CONSUMER and s.attributes[TASK_NAME].startswith("canvas.")
        ]

    wait_for(lambda: len(finished()) >= count, 10, f"{count} CONSUMER spans")
    return finished()


def applied_by_a_job(apply: Any) -> Any:
    """What a script or scheduled job does: a correlation ID of its own, no span current."""
    token = correlation.set_correlation_id("nightly-reprice-7")
    try:
        return apply()
    finally:
        correlation.reset_correlation_id(token)


def test_a_chord_applied_outside_a_span_is_one_trace_with_its_callback(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    price, total = app.tasks["canvas.price"], app.tasks["canvas.total"]
    result = applied_by_a_job(lambda: chord(price.s(i) for i in range(4))(total.s()))
    assert result.get(timeout=20) == 60
    runs = consumers(spans, 5)
    callback = one_named(runs, "canvas.total")
    assert len(runs) == 5
    assert {s.context.trace_id for s in runs} == {callback.context.trace_id}
    assert {s.attributes[semconv.CORRELATION_ID] for s in runs} == {"nightly-reprice-7"}
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    assert [(s.name, s.kind) for s in roots] == [("celery chord", SpanKind.INTERNAL)]
    assert roots[0].attributes[semconv.CORRELATION_ID] == "nightly-reprice-7"


def test_a_group_applied_outside_a_span_is_one_trace(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    price = app.tasks["canvas.price"]
    result = applied_by_a_job(lambda: group(price.s(i) for i in range(3)).delay())
    assert result.get(timeout=20) == [0, 10, 20]
    runs = consumers(spans, 3)
    assert len({s.context.trace_id for s in runs}) == 1
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    assert [s.name for s in roots] == ["celery group"]


def one_named(runs: list[Any], task: str) -> Any:
    named = [s for s in runs if s.attributes[TASK_NAME] == task]
    assert len(named) == 1, named
    return named[0]


def test_a_chord_applied_with_no_correlation_id_gives_all_its_tasks_one(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A script applies a chord with no correlation ID current: each task's publish would give
    its message an ID of its own, and the callback the last header task's. The chord now gets
    one new ID for all its tasks, its callback's included, current only while it is applied."""
    price, total = app.tasks["canvas.price"], app.tasks["canvas.total"]
    result = chord(price.s(i) for i in range(4))(total.s())
    assert correlation.correlation_id() is None
    assert result.get(timeout=20) == 60
    runs = consumers(spans, 5)
    (cid,) = {s.attributes[semconv.CORRELATION_ID] for s in runs}
    assert correlation.is_valid(cid)
    (root,) = [s for s in spans.get_finished_spans() if s.parent is None]
    assert root.name == "celery chord" and root.attributes[semconv.CORRELATION_ID] == cid


def test_two_groups_applied_with_no_correlation_id_get_one_each(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    price = app.tasks["canvas.price"]
    first = group(price.s(i) for i in range(2)).delay()
    second = group(price.s(i) for i in range(2)).delay()
    assert (first.get(timeout=20), second.get(timeout=20)) == ([0, 10], [0, 10])
    runs = consumers(spans, 4)
    by_trace: dict[int, set[Any]] = {}
    for s in runs:
        by_trace.setdefault(s.context.trace_id, set()).add(s.attributes[semconv.CORRELATION_ID])
    ids = [next(iter(found)) for found in by_trace.values() if len(found) == 1]
    assert len(by_trace) == 2 and len(ids) == 2 and ids[0] != ids[1]


def test_a_group_applied_with_a_correlation_id_in_its_headers_keeps_it(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """A script puts its job's ID in the headers of a group it applies, as it may for one task:
    the canvas's own new ID was written over it, so `tracekit trace job-…` found nothing. Now
    every task keeps the ID the caller gave."""
    price = app.tasks["canvas.price"]
    result = group(price.s(i) for i in range(3)).apply_async(
        headers={"X-Correlation-ID": "nightly-reprice-8"}
    )
    assert result.get(timeout=20) == [0, 10, 20]
    runs = consumers(spans, 3)
    assert {s.attributes[semconv.CORRELATION_ID] for s in runs} == {"nightly-reprice-8"}


@pytest.mark.parametrize("app", ["filesystem"], indirect=True)
def test_celerys_own_chord_unlock_joins_the_header_in_no_wait_span(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """Without native chords (the filesystem backend) Celery's ``chord_unlock`` task joins the
    header, once it is ready, inside its own run: that wait is instant and Celery's business,
    and a header task's failure there is the chord's error already. No wait span, and the
    unlock's run is not failed by one."""
    price, total = app.tasks["canvas.price"], app.tasks["canvas.total"]
    with trace.get_tracer("test").start_as_current_span("POST /reprice", kind=SpanKind.SERVER):
        result = chord(price.s(i) for i in range(3))(total.s())
    assert result.get(timeout=20) == 30  # (outside the request: no wait span of its own)
    consumers(spans, 4)
    finished = spans.get_finished_spans()
    unlocks = [s for s in finished if s.attributes.get(TASK_NAME) == "celery.chord_unlock"]
    assert unlocks
    assert [s.name for s in finished if s.name == "celery wait"] == []
    assert all(s.status.status_code == StatusCode.UNSET for s in unlocks)
