"""What a Celery publish records: its PRODUCER span and the messaging metrics cover the broker
call, so a publish the broker never took is a failed span, no message sent and a duration with
its ``error_type``; one it took is counted sent. Real Celery clients: the shared RabbitMQ, and a
loopback port nothing listens on for a broker that is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from loopback import free_port
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from tracekit._runtime.state import current_options

pytestmark = pytest.mark.usefixtures("instrumented")


def _value(name: str, queue: str, **labels: str) -> float:
    opts = current_options()
    found = REGISTRY.get_sample_value(name, {
        "messaging_system": "celery", "messaging_destination_name": queue,
        "service_name": opts.service_name, "service_version": opts.service_version or "",
        **labels,
    })  # fmt: skip
    return found or 0.0


def _app(broker: str, queue: str) -> Celery:
    app = Celery("shop", broker=broker, backend=None, set_as_current=False)
    app.conf.update(
        task_default_queue=queue, broker_connection_retry=False, broker_connection_timeout=2
    )

    @app.task(shared=False, name="publish.charge")
    def charge(order: str) -> None:
        pass

    return app


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "charges-" + str(free_port())
    # A service of its own: the destinations a service's metrics name are capped, and the
    # whole suite's queues would fill the shared service's cap before this one is counted.
    monkeypatch.setenv("OTEL_SERVICE_NAME", f"celery-{name}")
    yield name


def test_a_publish_the_broker_never_took_is_failed_and_not_sent(
    queue: str, spans: InMemorySpanExporter
) -> None:
    """The span ended before the broker call (a zero duration) and the message was counted
    sent: a broker outage looked like normal traffic and a growing backlog."""
    app = _app(f"amqp://guest:guest@127.0.0.1:{free_port()}//", queue)
    for order in range(3):
        with pytest.raises(Exception) as raised:
            app.tasks["publish.charge"].apply_async((order,), retry=False)
    error_type = type(raised.value).__qualname__

    producers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert [s.status.status_code for s in producers] == [StatusCode.ERROR] * 3
    assert {(s.attributes or {}).get("error.type") for s in producers} == {error_type}
    assert _value("messaging_client_sent_messages_total", queue) == 0.0
    failed = _value(
        "messaging_client_operation_duration_seconds_count", queue, error_type=error_type
    )
    assert failed == 3.0


def test_a_publish_the_broker_took_is_sent_once_its_call_returns(
    queue: str, amqp_url: str, spans: InMemorySpanExporter, leave_no_names: object
) -> None:
    app = _app(amqp_url, queue)
    leave_no_names(amqp_url, {"task_default_queue": queue})  # type: ignore[operator]
    app.tasks["publish.charge"].apply_async(("o-1",), retry=False)

    (producer,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert producer.status.status_code is StatusCode.UNSET
    assert _value("messaging_client_sent_messages_total", queue) == 1.0
    took = _value("messaging_client_operation_duration_seconds_sum", queue, error_type="")
    assert producer.end_time is not None and producer.start_time is not None
    # the span and the duration cover the broker call: the same span of time
    assert took == pytest.approx((producer.end_time - producer.start_time) / 1e9, abs=0.002)
