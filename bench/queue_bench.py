"""Per-message cost of publishing and consuming with pika against a real RabbitMQ.

Three stacks in one run: bare pika, pika with tracekit's instrumentation, and pika with
OpenTelemetry's (opentelemetry-instrumentation-pika). Both instrumented stacks export through the
same SDK tracer provider, whose batch processor hands spans to an exporter that drops them, so
the numbers are the instrumentation's cost, not an exporter's. Each round publishes N messages
(no publisher confirms: ``basic_publish`` is a socket write) with a correlation ID current, then
consumes them with a ``basic_consume`` callback. Time is the process's CPU time per message
(all threads, so the span processor's export thread counts); rounds rotate the stacks' order and
the table shows the median round. The overhead columns subtract bare pika's cost.

    python -m bench.queue_bench            # full run; rewrites docs/benchmarks.md's section
    python -m bench.queue_bench --quick    # a smoke run; prints only

The broker is ``TRACEKIT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import uuid
from collections.abc import Callable, Sequence
from time import process_time
from typing import Any

import pika
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench._report import machine, markdown_table, replace_section, text_table
from tracekit import config, correlation, propagation
from tracekit._runtime import state
from tracekit._runtime.setup import CorrelationSpanProcessor

SECTION = "Queue hops"
_OPTIONS = {
    "full": config.resolve("queue-bench"),
    "correlation": config.resolve("queue-bench", mode="correlation"),
}
AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
STACKS = ("bare pika", "tracekit", "tracekit correlation-only", "OpenTelemetry pika")


class _DropExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _provider() -> TracerProvider:
    # What tracekit.init() leaves behind, without init's other work (metrics endpoint,
    # instrumenting every library): options resolved once, not re-read per message.
    state.activate(state.Runtime(_OPTIONS["full"]))
    provider = TracerProvider()
    provider.add_span_processor(CorrelationSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(_DropExporter()))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(propagation.TracekitPropagator())
    return provider


def _instrumentation(stack: str, provider: TracerProvider) -> tuple[Callable[[], None], Any]:
    """(instrument, uninstrument handle) for ``stack``."""
    if stack.startswith("tracekit"):
        from tracekit.instrumentation.pika import PikaInstrumentor

        ours = PikaInstrumentor()
        mode = "correlation" if stack.endswith("correlation-only") else "full"

        def instrument() -> None:
            state.activate(state.Runtime(_OPTIONS[mode]))
            ours.instrument()

        return instrument, ours.uninstrument
    if stack == "OpenTelemetry pika":
        from opentelemetry.instrumentation.pika import PikaInstrumentor as OtelPika

        theirs = OtelPika()
        return lambda: theirs.instrument(tracer_provider=provider), theirs.uninstrument
    return (lambda: None), (lambda: None)


def _round(stack: str, provider: TracerProvider, messages: int) -> tuple[float, float]:
    """CPU seconds per message for (publish, consume) of one round of ``stack``."""
    instrument, uninstrument = _instrumentation(stack, provider)
    instrument()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        queue = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, auto_delete=True)
        publish = _publish(channel, queue, messages)
        consume = _consume(connection, channel, queue, messages)
        connection.close()
    finally:
        uninstrument()
    provider.force_flush()
    return publish / messages, consume / messages


def _publish(channel: Any, queue: str, messages: int) -> float:
    body = b'{"order": 4711, "sku": "A-1"}'
    token = correlation.set_correlation_id("bench-correlation-0001")
    gc.collect()
    started = process_time()
    for _ in range(messages):
        channel.basic_publish("", queue, body)
    elapsed = process_time() - started
    correlation.reset_correlation_id(token)
    return elapsed


def _consume(connection: Any, channel: Any, queue: str, messages: int) -> float:
    received = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal received
        received += 1

    gc.collect()
    started = process_time()
    channel.basic_consume(queue, on_message, auto_ack=True)
    while received < messages:
        connection.process_data_events(time_limit=1)
    return process_time() - started


def _measure(rounds: int, messages: int) -> dict[str, tuple[float, float]]:
    provider = _provider()
    results: dict[str, list[tuple[float, float]]] = {stack: [] for stack in STACKS}
    _round("bare pika", provider, min(messages, 200))  # warm-up: imports, broker connection
    for n in range(rounds):
        order = STACKS[n % len(STACKS) :] + STACKS[: n % len(STACKS)]
        for stack in order:
            results[stack].append(_round(stack, provider, messages))
    return {
        stack: (
            statistics.median(p for p, _ in rounds_of),
            statistics.median(c for _, c in rounds_of),
        )
        for stack, rounds_of in results.items()
    }


def _rows(medians: dict[str, tuple[float, float]]) -> list[list[str]]:
    bare_publish, bare_consume = medians["bare pika"]
    rows = []
    for stack in STACKS:
        publish, consume = medians[stack]
        rows.append(
            [
                stack,
                f"{publish * 1e6:.1f}",
                f"{(publish - bare_publish) * 1e6:+.1f}",
                f"{consume * 1e6:.1f}",
                f"{(consume - bare_consume) * 1e6:+.1f}",
            ]
        )
    return rows


def _ratios(medians: dict[str, tuple[float, float]]) -> list[str]:
    bare = medians["bare pika"]
    ours, theirs = medians["tracekit"], medians["OpenTelemetry pika"]
    lines = []
    for index, phase in enumerate(("publish", "consume")):
        our_overhead = ours[index] - bare[index]
        their_overhead = theirs[index] - bare[index]
        ratio = our_overhead / their_overhead if their_overhead > 0 else float("nan")
        lines.append(
            f"{phase}: tracekit / bare = {ours[index] / bare[index]:.2f}x, "
            f"OpenTelemetry / bare = {theirs[index] / bare[index]:.2f}x, "
            f"tracekit overhead / OpenTelemetry overhead = {ratio:.2f}"
        )
    return lines


HEADER = ["stack", "publish µs/msg", "overhead", "consume µs/msg", "overhead"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; prints only")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    messages = args.messages or (300 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 5)
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception as error:
        print(f"queue_bench: RabbitMQ at {AMQP_URL} is not reachable ({type(error).__name__})",
              file=sys.stderr)  # fmt: skip
        return 2
    medians = _measure(rounds, messages)
    rows = _rows(medians)
    print(text_table(HEADER, rows))
    print("\n".join(_ratios(medians)))
    if not args.quick:
        _write_docs(rows, _ratios(medians), rounds, messages)
    return 0


def _write_docs(rows: list[list[str]], ratios: list[str], rounds: int, messages: int) -> None:
    body = (
        "`python -m bench.queue_bench`: CPU time per message of publishing (`basic_publish`) and\n"
        "consuming (`basic_consume` callback) with pika against a real RabbitMQ on loopback;\n"
        f"median of {rounds} rounds of {messages} messages, stacks in rotating order; spans go\n"
        "through a batch processor to an exporter that drops them. The overhead columns\n"
        "subtract bare pika. tracekit writes five headers per message (trace context, baggage,\n"
        "correlation ID, publish time) where OpenTelemetry writes the propagator's fields, and\n"
        "its consumer span additionally restores the correlation ID and records the queue wait.\n"
        "tracekit's full rows also pay for its Prometheus metrics, which OpenTelemetry's pika\n"
        "instrumentation does not record: per message published one histogram observation and\n"
        "one counter, per message consumed two histogram observations (process duration, queue\n"
        "wait) and one counter, each with an exemplar.\n\n"
        + markdown_table(HEADER, rows)
        + "\n\n"
        + "\n".join(f"- {line}" for line in ratios)
        + f"\n\nMeasured on {machine()}.\n"
    )
    replace_section(SECTION, body)


if __name__ == "__main__":
    sys.exit(main())
