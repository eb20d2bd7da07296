"""A request that waits for a task's result (``AsyncResult.get()``, a group's ``get()``): the wait
is a span of the request's, on a real worker (in-process, solo pool) and a real redis-server as
broker and result backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, group
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import ResultSet
from celery_worker import running_worker
from conditions import wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tracekit.instrumentation.celery import TASK_ID, TASK_NAME, TASK_STATE

pytestmark = pytest.mark.usefixtures("instrumented")


def report(pages: int) -> int:
    return pages * 2


def broken() -> None:
    raise LookupError("no such report")


@pytest.fixture
def app(redis_url: str) -> Celery:
    """Tasks ``waits.report`` and ``waits.broken``; the Redis result backend."""
    app = Celery("waits", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_default_queue="waits", broker_connection_retry_on_startup=True)
    for task in (report, broken):
        app.task(shared=False, name=f"waits.{task.__name__}")(task)
    return app


@pytest.fixture
def worker(app: Celery) -> Iterator[Celery]:
    with running_worker(app):
        yield app


def in_request(call: Any) -> Any:
    with trace.get_tracer("test").start_as_current_span("GET /report", kind=SpanKind.SERVER):
        return call()


def waits(spans: InMemorySpanExporter) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.name == "celery wait"]


def request_span(spans: InMemorySpanExporter) -> Any:
    [request] = [s for s in spans.get_finished_spans() if s.name == "GET /report"]
    return request


def test_a_request_waiting_for_a_task_nobody_runs_shows_the_wait_and_its_timeout(
    app: Celery, spans: InMemorySpanExporter
) -> None:
    """No worker: the request spent its timeout in get(), and its trace showed a send of a few
    milliseconds under a span of the whole timeout, with no error, nothing of where it went."""

    def report_in_time() -> Any:
        result = app.tasks["waits.report"].apply_async((3,), queue="waits-unserved")
        with pytest.raises(CeleryTimeout):
            result.get(timeout=0.5)
        return result

    result = in_request(report_in_time)
    [waited] = waits(spans)
    assert waited.kind == SpanKind.INTERNAL
    assert waited.parent.span_id == request_span(spans).context.span_id
    assert waited.status.status_code == StatusCode.ERROR
    assert waited.status.description == "TimeoutError: The operation timed out."
    assert waited.attributes[TASK_NAME] == "waits.report"
    assert waited.attributes[TASK_ID] == result.id
    assert (waited.end_time - waited.start_time) / 1e9 >= 0.5
    result.forget()  # (pending, it would unsubscribe from the result backend once stopped)


def test_a_wait_for_a_task_that_ran_ends_with_its_state(
    worker: Celery, spans: InMemorySpanExporter
) -> None:
    """The wait begins after the send and ends after the run began. (Neither bound is the
    run's span: the in-process worker may start the task before ``get()`` is called, and it
    stores the result, which ends the wait, before it ends and exports its span.)"""
    report = worker.tasks["waits.report"]
    assert in_request(lambda: report.delay(3).get(timeout=10)) == 6
    [waited] = waits(spans)
    assert waited.status.status_code == StatusCode.UNSET
    assert waited.attributes[TASK_STATE] == "SUCCESS"
    assert waited.attributes[TASK_NAME] == "waits.report"
    [run] = wait_for(
        lambda: [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER],
        what="the task's run exported",
    )
    [sent] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert sent.end_time <= waited.start_time and run.start_time <= waited.end_time


def test_a_wait_for_a_task_that_failed_is_failed_with_what_get_raises(
    worker: Celery, spans: InMemorySpanExporter
) -> None:
    def wait() -> None:
        with pytest.raises(LookupError):
            worker.tasks["waits.broken"].delay().get(timeout=10)

    in_request(wait)
    [waited] = waits(spans)
    assert waited.status.description == "LookupError: no such report"
    assert waited.attributes[TASK_STATE] == "FAILURE"


def test_a_groups_wait_is_one_span(worker: Celery, spans: InMemorySpanExporter) -> None:
    report = worker.tasks["waits.report"]
    results = in_request(lambda: group(report.s(i) for i in range(3)).delay().get(timeout=10))
    assert results == [0, 2, 4]
    [waited] = waits(spans)
    assert waited.parent.span_id == request_span(spans).context.span_id
    assert TASK_ID not in waited.attributes


@pytest.mark.parametrize("join", ["join", "join_native"])
def test_a_groups_join_called_directly_is_one_wait_span(
    worker: Celery, spans: InMemorySpanExporter, join: str
) -> None:
    """``join()`` and ``join_native()`` are what a group's ``get()`` calls: called directly, as
    the Celery docs show for groups, the request's trace had no wait in it."""
    report = worker.tasks["waits.report"]
    joined = in_request(lambda: getattr(group(report.s(i) for i in range(3)).delay(), join)(10))
    assert joined == [0, 2, 4]
    [waited] = waits(spans)
    assert waited.parent.span_id == request_span(spans).context.span_id


def test_the_deprecated_wait_is_a_wait_span(worker: Celery, spans: InMemorySpanExporter) -> None:
    """``AsyncResult.wait()``, Celery's old name for ``get()``, had no span."""
    report = worker.tasks["waits.report"]
    assert in_request(lambda: report.delay(4).wait(timeout=10)) == 8
    [waited] = waits(spans)
    assert waited.parent.span_id == request_span(spans).context.span_id
    assert waited.attributes[TASK_NAME] == "waits.report"
    assert waited.attributes[TASK_STATE] == "SUCCESS"


def test_a_result_sets_wait_is_one_span(worker: Celery, spans: InMemorySpanExporter) -> None:
    """A ResultSet made of results (not a group's) cannot be hashed: its wait had no span, and
    tracekit logged that it failed."""
    report = worker.tasks["waits.report"]
    results = ResultSet([report.delay(1), report.delay(2)], app=worker)
    assert in_request(lambda: results.get(timeout=10)) == [2, 4]
    [waited] = waits(spans)
    assert waited.parent.span_id == request_span(spans).context.span_id


def test_no_wait_span_outside_a_request_or_for_a_result_already_read(
    worker: Celery, spans: InMemorySpanExporter
) -> None:
    """A script's wait outside any span would be a trace of its own; a result read twice was
    waited for once."""
    result = worker.tasks["waits.report"].delay(1)
    assert result.get(timeout=10) == 2
    assert in_request(lambda: result.get(timeout=10)) == 2
    assert waits(spans) == []


def test_no_wait_span_in_correlation_only_mode(
    worker: Celery, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tracekit makes no spans there: a wait under the host's own span is not one either."""
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")
    assert in_request(lambda: worker.tasks["waits.report"].delay(2).get(timeout=10)) == 4
    assert waits(spans) == []


def test_a_celery_without_the_deprecated_wait_keeps_its_other_waits_wrapped() -> None:
    """``AsyncResult.wait`` is a deprecated name: a Celery that drops it would have made
    wrapping it raise ``KeyError``, and the results module's waits (``get`` and the joins)
    go unwrapped with it."""
    from types import SimpleNamespace

    import wrapt

    from tracekit.instrumentation.celery import CeleryInstrumentor

    class AsyncResult:
        def get(self) -> None: ...

    class ResultSet:
        def get(self) -> None: ...
        def join(self) -> None: ...
        def join_native(self) -> None: ...

    instrumentor = CeleryInstrumentor()
    instrumentor._wrap_results(SimpleNamespace(AsyncResult=AsyncResult, ResultSet=ResultSet))
    try:
        assert isinstance(AsyncResult.__dict__["get"], wrapt.FunctionWrapper)
        assert "wait" not in vars(AsyncResult)
        for name in ("get", "join", "join_native"):
            assert isinstance(ResultSet.__dict__[name], wrapt.FunctionWrapper)
    finally:
        instrumentor.uninstrument()
