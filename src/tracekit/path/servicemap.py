"""The service map: who calls whom, how often, how often it fails, how long it takes.

Edges come from the same pairs the path engine calls hops (HTTP client -> server child in another
service, or a descendant through INTERNAL spans; producer -> consumer by parent or link),
aggregated over a window of spans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tracekit.path.hops import calling_span, hop_type
from tracekit.records import HopSample, SpanRecord

__all__ = [
    "ServiceEdge",
    "edges_from_samples",
    "hop_samples",
    "percentile",
    "requests_by_service",
    "service_map",
]


@dataclass(slots=True, frozen=True)
class ServiceEdge:
    """Calls from one service to another over one transport type."""

    from_service: str
    to_service: str
    type: str  # "http" | "messaging"
    calls: int
    errors: int
    p50_ms: float
    p95_ms: float

    @property
    def error_rate(self) -> float:
        """Fraction of calls where either side recorded an error."""
        return self.errors / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON object for ``tracekit services --format json``."""
        return {
            "from": self.from_service,
            "to": self.to_service,
            "type": self.type,
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def service_map(spans: Iterable[SpanRecord]) -> list[ServiceEdge]:
    """Edges between services, busiest first."""
    return edges_from_samples(hop_samples(spans))


def hop_samples(spans: Iterable[SpanRecord]) -> list[HopSample]:
    """Every call between services among ``spans`` (a sender or receiver not among them is no
    call), one sample each."""
    records = list(spans)
    by_key = {(s.trace_id, s.span_id): s for s in records}
    samples: list[HopSample] = []
    for receiver in records:
        for sender in _senders(receiver, by_key):
            kind = hop_type(sender, receiver)
            if kind is not None:
                latency_ms, error = _sample(kind, sender, receiver)
                samples.append(HopSample(sender.service, receiver.service, kind, latency_ms, error))
    return samples


def requests_by_service(spans: Iterable[SpanRecord]) -> dict[str, int]:
    """How many requests each service of ``spans`` took in: its SERVER and CONSUMER spans and
    its roots (a scheduler's send, a batch job's run). A service with none is there with 0."""
    counts: dict[str, int] = {}
    for span in spans:
        entered = span.kind in ("SERVER", "CONSUMER") or not span.parent_span_id
        counts[span.service] = counts.get(span.service, 0) + entered
    return counts


def edges_from_samples(samples: Iterable[HopSample]) -> list[ServiceEdge]:
    """The edges the calls add up to, busiest first."""
    grouped: dict[tuple[str, str, str], list[tuple[float, bool]]] = {}
    for sample in samples:
        key = (sample.from_service, sample.to_service, sample.type)
        grouped.setdefault(key, []).append((sample.latency_ms, sample.error))
    edges = [_edge(key, values) for key, values in grouped.items()]
    return sorted(edges, key=lambda e: (-e.calls, e.from_service, e.to_service, e.type))


def _senders(receiver: SpanRecord, by_key: dict[tuple[str, str], SpanRecord]) -> list[SpanRecord]:
    keys = [(link.trace_id, link.span_id) for link in receiver.links]
    if receiver.parent_span_id:
        keys.insert(0, (receiver.trace_id, receiver.parent_span_id))
    found = [by_key[k] for k in dict.fromkeys(keys) if k in by_key]
    caller = calling_span(receiver, lambda r: by_key.get((r.trace_id, r.parent_span_id or "")))
    return found if caller is None else [caller, *found]


def _sample(kind: str, sender: SpanRecord, receiver: SpanRecord) -> tuple[float, bool]:
    if kind == "http":
        latency_ms = sender.duration_ms
    else:
        latency_ms = _publish_to_handled_ns(sender, receiver) / 1e6
    return latency_ms, sender.status == "ERROR" or receiver.status == "ERROR"


def _publish_to_handled_ns(sender: SpanRecord, receiver: SpanRecord) -> int:
    """Publish start to handler end. A consumer that "started" before its message was published
    ran on a clock behind the producer's: it is placed at the publish's end, as the path engine
    places it (``skew``), so the hop is never shorter than its two spans, nor negative."""
    if receiver.start_unix_nano >= sender.start_unix_nano:
        return receiver.end_unix_nano - sender.start_unix_nano
    handled = receiver.end_unix_nano - receiver.start_unix_nano
    return sender.end_unix_nano - sender.start_unix_nano + handled


def _edge(key: tuple[str, str, str], values: list[tuple[float, bool]]) -> ServiceEdge:
    latencies = sorted(v[0] for v in values)
    errors = sum(1 for v in values if v[1])
    return ServiceEdge(
        key[0], key[1], key[2], len(values), errors,
        round(percentile(latencies, 0.5), 3), round(percentile(latencies, 0.95), 3),
    )  # fmt: skip
