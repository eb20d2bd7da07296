"""Find every trace that belongs to one request.

Start from the correlation ID (or the trace ID the user typed), then follow span links in both
directions until nothing new turns up: a consumer's trace may carry no correlation ID at all and be
reachable only because its spans link to a producer's context. The walk is bounded so a link storm
cannot make one query read the whole store.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tracekit.records import SpanRecord, SpanSource, WarningSource

TRACE_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")
MAX_TRACES = 500
MAX_LINK_ROUNDS = 16


@dataclass(slots=True)
class Collected:
    """The spans of one request and how they were found."""

    correlation_id: str | None
    spans: list[SpanRecord] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)  # in the order they were found
    warnings: list[str] = field(default_factory=list)


def looks_like_trace_id(query: str) -> bool:
    """32 hex digits: what W3C trace context calls a trace id."""
    return bool(TRACE_ID_PATTERN.match(query))


def collect(source: SpanSource, query: str) -> Collected:
    """Every span of every trace joined to ``query`` (a correlation ID or a trace ID)."""
    seed: list[SpanRecord] = []
    if looks_like_trace_id(query):
        seed = source.spans_by_trace_ids([query.lower()])
    correlation_id = dominant_correlation_id(seed) if seed else query
    if correlation_id is not None:
        seed = seed + source.spans_by_correlation_id(correlation_id)
    found = Collected(correlation_id if seed else None)
    if seed:
        _expand(source, found, _ordered_trace_ids(seed))
        # a trace id typed for a consumer's trace: the ID may only live on linked traces
        found.correlation_id = found.correlation_id or dominant_correlation_id(found.spans)
    if isinstance(source, WarningSource):
        found.warnings.extend(source.warnings_for(found.trace_ids))
    return found


def dominant_correlation_id(spans: list[SpanRecord]) -> str | None:
    """The correlation ID most spans carry (None when none carries one)."""
    counts = Counter(s.correlation_id for s in spans if s.correlation_id)
    return counts.most_common(1)[0][0] if counts else None


def _ordered_trace_ids(spans: list[SpanRecord]) -> list[str]:
    return list(dict.fromkeys(s.trace_id for s in sorted(spans, key=lambda s: s.start_unix_nano)))


def _expand(source: SpanSource, found: Collected, frontier: list[str]) -> None:
    """Read whole traces, then follow links out of them and into them, round by round."""
    known: set[str] = set()
    for _ in range(MAX_LINK_ROUNDS):
        frontier = [t for t in dict.fromkeys(frontier) if t not in known]
        room = MAX_TRACES - len(known)
        if len(frontier) > room:
            found.warnings.append(f"stopped following links after {MAX_TRACES} traces")
            frontier = frontier[:room]
        if not frontier:
            return
        known.update(frontier)
        found.trace_ids.extend(frontier)
        spans = source.spans_by_trace_ids(frontier)
        found.spans.extend(spans)
        frontier = _linked_out(spans) + sorted(source.trace_ids_linking_to(frontier))
    found.warnings.append(f"stopped following links after {MAX_LINK_ROUNDS} rounds")


def _linked_out(spans: list[SpanRecord]) -> list[str]:
    return [link.trace_id.lower() for span in spans for link in span.links]
