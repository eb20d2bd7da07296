"""Where a queue hop's CPU goes, measured in process (no broker): each part of tracekit's publish
and consume on its own, in a loop, next to the whole of ``messaging.publish``/``consume``.

Parts: the headers (written by the producer: trace context, baggage, correlation ID, publish
time; read by the consumer: bounded and checked, trace context and baggage extracted), the span
(the SDK's start and end with tracekit's attributes, through the global provider's processors,
with the consumer's context made current and restored), the metrics (one histogram observation
with its exemplar per publish; queue wait and process duration per message consumed). "The
rest" is the whole minus those parts: the correlation ID made current and restored, the
publishing flag, the clocks, and the calls in between.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from time import process_time, time_ns
from types import SimpleNamespace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from bench._queue_stacks import CORRELATION_ID, Providers, activate
from tracekit import config, correlation, messaging, propagation
from tracekit._messaging import consumer as _consumer
from tracekit._messaging import producer, spans
from tracekit._messaging.received import Received
from tracekit.metrics import MessagingMetrics

ROUTING = {"messaging.rabbitmq.destination.routing_key": "orders"}
HOP: dict[str, Any] = {"system": "rabbitmq", "destination": "orders", "attributes": ROUTING}


def cpu_us(action: Callable[[], object], n: int, rounds: int) -> float:
    """Median over ``rounds`` of the CPU microseconds one call of ``action`` takes."""
    samples = []
    for _ in range(rounds):
        started = process_time()
        for _ in range(n):
            action()
        samples.append((process_time() - started) / n * 1e6)
    return statistics.median(samples)


def parts(shared: Providers, n: int = 20_000, rounds: int = 5) -> dict[str, dict[str, float]]:
    """CPU µs per message of each part and of the whole, per mode (tracekit's provider is the
    global one), and of OpenTelemetry pika's wrappers, for comparison."""
    token = correlation.set_correlation_id(CORRELATION_ID)
    try:
        measured = {
            mode: _Parts(config.resolve("queue-bench", mode=mode), shared, n, rounds).measure()
            for mode in ("full", "correlation")
        }
    finally:
        correlation.reset_correlation_id(token)
    measured["opentelemetry"] = _opentelemetry_pika(shared, n, rounds)
    return measured


def _opentelemetry_pika(shared: Providers, n: int, rounds: int) -> dict[str, float]:
    """OpenTelemetry pika's publish wrapper (one of the two a publish goes through) and consume
    callback around calls that do nothing, with its provider and its default propagators."""
    from opentelemetry.instrumentation.pika.utils import _decorate_basic_publish, _decorate_callback
    from pika.spec import BasicProperties

    tracer = shared.peer.get_tracer("bench.opentelemetry")
    params = SimpleNamespace(host="127.0.0.1", port=5672)
    channel = SimpleNamespace(connection=SimpleNamespace(params=params))
    method = SimpleNamespace(exchange="", routing_key="orders")
    publish = _decorate_basic_publish(lambda *args: None, channel, tracer)
    consume = _decorate_callback(lambda *args: None, tracer, "orders")
    headers: dict[str, str] = {}
    propagate.set_global_textmap(shared.peer_propagator)
    try:
        with trace.use_span(tracer.start_span("send orders"), end_on_exit=True):
            propagate.inject(headers)
        return {
            "publish": cpu_us(
                lambda: publish("", "orders", b"", BasicProperties(headers={})), n, rounds
            ),
            "consume": cpu_us(
                lambda: consume(channel, method, BasicProperties(headers=dict(headers)), b""),
                n,
                rounds,
            ),
        }
    finally:
        propagate.set_global_textmap(shared.tracekit_propagator)


class _Parts:
    def __init__(self, options: config.Options, shared: Providers, n: int, rounds: int) -> None:
        activate(options, shared)
        self.options, self.n, self.rounds = options, n, rounds
        self.registry = CollectorRegistry()
        self.tracer = trace.get_tracer("tracekit.messaging")
        self.span = self.tracer.start_span("send orders")
        self.headers = messaging.inject({}, registry=self.registry, **HOP)
        # What a consumer span is built from: one message read, its target, its delivery.
        self.received = Received.parse(self.headers, None, None, options)
        self.target = _consumer.Target("rabbitmq", "orders", "process", ROUTING, None, None)
        self.delivery = _consumer.Delivery([self.received], self.target, batch=False)
        self.delivery.correlation_id, self.delivery.queue_wait_ms = CORRELATION_ID, 1.5

    def time(self, action: Callable[[], object]) -> float:
        return cpu_us(action, self.n, self.rounds)

    def measure(self) -> dict[str, float]:
        options, headers = self.options, self.headers
        result = {
            "publish": self.time(self.publish),
            "publish headers": self.time(self.write_headers),
            "consume": self.time(self.consume),
            "consume headers": self.time(lambda: Received.parse(headers, None, None, options)),
        }
        if not options.correlation_only:
            result.update(self.spans_and_metrics())
        return result

    def publish(self) -> None:
        with messaging.publish({}, registry=self.registry, **HOP):
            pass

    def consume(self) -> None:
        with messaging.consume(self.headers, registry=self.registry, **HOP):
            pass

    def write_headers(self) -> None:
        context = otel_context.Context({propagation.CURRENT_SPAN_KEY: self.span})
        producer.write_headers({}, context, self.options)

    def spans_and_metrics(self) -> dict[str, float]:
        options, span = self.options, self.span
        metrics = MessagingMetrics.get(options.service_name, options.service_version, self.registry)
        return {
            "publish span": self.time(self.producer_span),
            "publish metrics": self.time(
                lambda: metrics.published("rabbitmq", "orders", 0.0001, span)
            ),
            "consume span": self.time(self.consumer_span),
            "consume metrics": self.time(lambda: _consumer_metrics(metrics, span)),
        }

    def producer_span(self) -> None:
        attributes = spans.base_attributes("rabbitmq", "orders", "send", "send", None, ROUTING)
        attributes["correlation.id"] = CORRELATION_ID
        self.tracer.start_span("send orders", None, SpanKind.PRODUCER, attributes).end()

    def consumer_span(self) -> None:
        received, delivery, target = self.received, self.delivery, self.target
        span = self.tracer.start_span(
            "process orders",
            received.context,
            SpanKind.CONSUMER,
            delivery._attributes(target, time_ns()),
        )
        context = otel_context.Context({**received.context, propagation.CURRENT_SPAN_KEY: span})
        otel_context.detach(otel_context.attach(context))
        span.end()


def _consumer_metrics(metrics: MessagingMetrics, span: Any) -> None:
    metrics.waited("rabbitmq", "orders", 0.0015, span)
    metrics.processed("rabbitmq", "orders", 0.0002, span)
