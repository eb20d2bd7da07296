"""Headers of a caller leaving the sampling decision to the next hop (B3 without a sampling
state, single and multiple headers; X-Ray's ``Sampled=?``), and a sampler with a rule."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
DEFERRED = {
    "b3": {"b3": f"{TRACE}-{PARENT}"},
    "b3multi": {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT},
    "xray": {"X-Amzn-Trace-Id": f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={PARENT};Sampled=?"},
}


class DropsWhere(Sampler):
    """Records every new trace but those whose span has ``attribute`` set to ``value`` (a
    health check's ``url.path``, an audit queue's ``messaging.destination.name``)."""

    def __init__(self, attribute: str, value: str) -> None:
        self.attribute, self.value = attribute, value

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
        if (attributes or {}).get(self.attribute) == self.value:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return f"DropsWhere({self.attribute}={self.value})"
