"""What every queue benchmark shares: the stacks compared, their tracer providers and propagators,
and rounds that interleave the stacks and keep the median.

Four stacks per broker: the bare client, tracekit (spans and its Prometheus metrics), tracekit in
correlation-only mode, and OpenTelemetry's instrumentation of the same client. Each is set up the
way its users get it:

- tracekit: what ``tracekit.init()`` leaves behind, without init's other work: options resolved
  once, tracekit's propagator as the global one, and a global tracer provider whose one
  forwarding processor hands each span to the running runtime's: tracekit's correlation span
  processor, the one keeping open spans for a stop, and a batch processor (none in
  correlation-only mode).
- OpenTelemetry: its instrumentation with a tracer provider of its own (just the batch
  processor) and OpenTelemetry's default propagators (W3C trace context and baggage).

Both batch processors hand spans to an exporter that drops them, so the numbers are the
instrumentation's cost, not an exporter's. Time is the process's CPU time (``process_time``: every
thread, so the export thread counts, and on a shared machine far steadier than wall time).
"""

from __future__ import annotations

import gc
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import process_time
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracekit import config, propagation
from tracekit._runtime import state as _runtime
from tracekit._runtime import unfinished
from tracekit._runtime.setup import CorrelationSpanProcessor

BARE, FULL, CORRELATION, PEER = "bare", "tracekit", "tracekit correlation-only", "OpenTelemetry"
STACKS = (BARE, FULL, CORRELATION, PEER)
CORRELATION_ID = "bench-correlation-0001"
_OPTIONS = {
    FULL: config.resolve("queue-bench"),
    CORRELATION: config.resolve("queue-bench", mode="correlation"),
}


class DropExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Providers:
    """tracekit's (global) and OpenTelemetry's tracer providers, tracekit's runtime's span
    processors, and both propagators."""

    tracekit: TracerProvider
    peer: TracerProvider
    tracekit_processors: tuple[SpanProcessor, ...]
    tracekit_propagator: Any
    peer_propagator: Any

    def flush(self) -> None:
        for processor in self.tracekit_processors:  # (the runtime current may have none)
            processor.force_flush()
        self.peer.force_flush()


def providers() -> Providers:
    """Build both stacks' providers once per process; tracekit's becomes the global one."""
    ours = TracerProvider()
    _runtime.attach_to(ours)
    trace.set_tracer_provider(ours)
    processors = (CorrelationSpanProcessor(), unfinished.OpenSpanProcessor(), _batch())
    theirs = TracerProvider()
    theirs.add_span_processor(_batch())
    opentelemetry_default = CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    )
    return Providers(
        ours, theirs, processors, propagation.TracekitPropagator(), opentelemetry_default
    )


def activate(options: config.Options, shared: Providers) -> None:
    """Make a runtime of ``options`` the running one, with the span processors init gives it."""
    runtime = _runtime.Runtime(options)
    if not options.correlation_only:
        runtime.span_processors = shared.tracekit_processors
    _runtime.activate(runtime)


def _batch() -> BatchSpanProcessor:
    # A queue that holds a whole round: no span is dropped (and spared its export) when the
    # export thread falls behind a busy event loop.
    return BatchSpanProcessor(DropExporter(), max_queue_size=65536)


class Instrumentation(Protocol):
    """An instrumentor with OpenTelemetry's or tracekit's two calls."""

    def instrument(self, **kwargs: Any) -> None: ...

    def uninstrument(self, **kwargs: Any) -> None: ...


class Broker(Protocol):
    """One client library against its broker: how to instrument it and run one round."""

    name: str  # the client, as the tables name it
    peer: str  # OpenTelemetry's instrumentation, as the tables name it
    hop_peer: bool  # False when OpenTelemetry's instrumentation traces something else than hops

    def tracekit(self) -> Instrumentation: ...

    def opentelemetry(self) -> Instrumentation: ...

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        """Publish then consume ``messages`` under ``stack``; CPU seconds of (publishing,
        consuming)."""
        ...


class CpuClock:
    """CPU seconds of the process between ``start`` and ``stop`` (a collection first)."""

    def __init__(self) -> None:
        self._started = 0.0

    def start(self) -> None:
        gc.collect()
        self._started = process_time()

    def stop(self) -> float:
        return process_time() - self._started


def in_stack(
    stack: str, broker: Broker, shared: Providers
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(set up, tear down) of ``stack`` on ``broker``."""
    if stack in (FULL, CORRELATION):
        ours = broker.tracekit()

        def set_up() -> None:
            activate(_OPTIONS[stack], shared)
            propagate.set_global_textmap(shared.tracekit_propagator)
            ours.instrument()

        return set_up, ours.uninstrument
    theirs = broker.opentelemetry() if stack == PEER else None

    def set_up_peer() -> None:
        propagate.set_global_textmap(shared.peer_propagator)
        if theirs is not None:
            theirs.instrument(tracer_provider=shared.peer)

    return set_up_peer, (theirs.uninstrument if theirs is not None else lambda: None)


def one_round(stack: str, broker: Broker, shared: Providers, messages: int) -> tuple[float, float]:
    """CPU seconds per message of (publishing, consuming) under ``stack``."""
    set_up, tear_down = in_stack(stack, broker, shared)
    set_up()
    try:
        publish, consume = broker.run(stack, messages, CpuClock())
    finally:
        tear_down()
    shared.flush()
    return publish / messages, consume / messages


@dataclass
class Result:
    """Medians per stack, with every round kept for the record."""

    broker: str
    peer: str
    hop_peer: bool
    messages: int
    rounds: dict[str, list[tuple[float, float]]]
    load: tuple[float, float]  # 1-minute load average at the start and the end

    def median(self, stack: str, phase: int) -> float:
        return statistics.median(r[phase] for r in self.rounds[stack])

    def overhead(self, stack: str, phase: int) -> float:
        return self.median(stack, phase) - self.median(BARE, phase)

    def ratio(self, stack: str, phase: int) -> float:
        peer = self.overhead(PEER, phase)
        return self.overhead(stack, phase) / peer if peer > 0 else float("nan")

    def noise(self, phase: int) -> float:
        """Half the spread of the bare client's rounds: an overhead below it is not measured."""
        bare = [r[phase] for r in self.rounds[BARE]]
        return (max(bare) - min(bare)) / 2


def measure(broker: Broker, shared: Providers, rounds: int, messages: int) -> Result:
    """``rounds`` rounds of every stack, in an order that rotates each round."""
    started = os.getloadavg()[0]
    one_round(BARE, broker, shared, max(50, messages // 10))  # warm-up: imports, connections
    results: dict[str, list[tuple[float, float]]] = {stack: [] for stack in STACKS}
    for n in range(rounds):
        for stack in STACKS[n % len(STACKS) :] + STACKS[: n % len(STACKS)]:
            results[stack].append(one_round(stack, broker, shared, messages))
    load = (started, os.getloadavg()[0])
    return Result(broker.name, broker.peer, broker.hop_peer, messages, results, load)
