"""A decision the producer left to this hop (B3 without a sampling state, X-Ray's
``Sampled=?``) is the consumer's sampler's, taken for its span: with its name and attributes,
through the tracer provider the consumer was given (as the HTTP middleware does)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from tracekit import messaging

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
DEFERRED = {
    "b3": {"b3": f"{TRACE}-{PARENT}"},
    "b3multi": {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT},
    "xray": {"X-Amzn-Trace-Id": f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={PARENT};Sampled=?"},
}


class NoAuditQueue(Sampler):
    """Records every new trace but one of the audit queue's, told by the span's attributes."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (attributes or {}).get("messaging.destination.name") == "audit":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoAuditQueue"


@pytest.mark.parametrize("producer", sorted(DEFERRED))
def test_a_decision_left_to_the_consumer_follows_its_samplers_rules(
    producer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both deliveries were recorded under the producer's trace: the decision was asked of the
    global provider's sampler as the headers were read, with no span name or attributes."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3,xray")
    recorded = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(NoAuditQueue()))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    for destination in ("audit", "orders"):
        headers = dict(DEFERRED[producer])
        with messaging.consume(
            headers, system="rabbitmq", destination=destination, tracer_provider=provider
        ):
            pass
    provider.shutdown()

    (span,) = recorded.get_finished_spans()
    assert (span.attributes or {})["messaging.destination.name"] == "orders"
    assert span.context.trace_id == int(TRACE, 16)
    assert span.parent is not None and span.parent.span_id == int(PARENT, 16)
