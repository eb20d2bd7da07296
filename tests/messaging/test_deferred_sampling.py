"""A decision the producer left to this hop (B3 without a sampling state, X-Ray's
``Sampled=?``) is the consumer's sampler's, taken for its span: with its name and attributes,
through the tracer provider the consumer was given (as the HTTP middleware does)."""

from __future__ import annotations

import pytest
from deferred_sampling import DEFERRED, PARENT, TRACE, DropsWhere
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from tracekit import messaging


@pytest.mark.parametrize("producer", sorted(DEFERRED))
def test_a_decision_left_to_the_consumer_follows_its_samplers_rules(
    producer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both deliveries were recorded under the producer's trace: the decision was asked of the
    global provider's sampler as the headers were read, with no span name or attributes."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3,xray")
    recorded = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBased(DropsWhere("messaging.destination.name", "audit"))
    )
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
