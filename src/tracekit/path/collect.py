"""Find every trace that belongs to one request.

Start from the correlation ID (or the trace ID the user typed), then follow span links in both
directions until nothing new turns up: a consumer's trace may carry no correlation ID at all and be
reachable only because its spans link to a producer's context. Only traces the source holds join
this way: two requests linking to one context it does not hold stay two requests. Nor does a
batch: a span linking into several traces (a batch consumer) belongs to every request it links
to, but its links lead out only from a trace the user typed, so the requests of one batch stay
apart. The walk is bounded so a link storm cannot make one query read the whole store, and so is
the number of spans read: past ``max_spans`` the path holds the earliest spans and says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tracekit.records import LimitedSpanSource, SpanRecord, SpanSource, WarningSource

__all__ = [
    "MAX_LINK_ROUNDS",
    "MAX_SPANS",
    "MAX_TRACES",
    "TRACE_ID_PATTERN",
    "Collected",
    "collect",
    "dominant_correlation_id",
    "looks_like_trace_id",
    "trace_id_of",
]

TRACE_ID_PATTERN = re.compile(r"[0-9a-fA-F]{32}")  # fullmatch: "$" would let a final newline in
MAX_TRACES = 500
MAX_LINK_ROUNDS = 16
MAX_SPANS = 50_000


@dataclass(slots=True)
class Collected:
    """The spans of one request and how they were found."""

    correlation_id: str | None
    spans: list[SpanRecord] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)  # in the order they were found
    warnings: list[str] = field(default_factory=list)


def looks_like_trace_id(query: str) -> bool:
    """Whether ``query`` can be a trace ID (see ``trace_id_of``)."""
    return trace_id_of(query) is not None


def trace_id_of(query: str) -> str | None:
    """The 32 lower-case hex digits of the trace ``query`` names: 32 hex digits (W3C trace
    context), or 16 to 31 (a 64-bit ID as Jaeger and B3 write it, an ID whose leading zeros a
    UI dropped), padded with zeros in front as OpenTelemetry pads them. None for anything
    else, a final newline included ("$" would let it in)."""
    if not _SHORT_TRACE_ID.fullmatch(query):
        return None
    return query.lower().rjust(32, "0")


_SHORT_TRACE_ID = re.compile(r"[0-9a-fA-F]{16,32}")


def collect(
    source: SpanSource, query: str, *, max_spans: int = MAX_SPANS, by_correlation: bool = True
) -> Collected:
    """Every span of every trace joined to ``query`` (a correlation ID or a trace ID).

    At most ``max_spans`` spans, the earliest, with a warning when there were more. With
    ``by_correlation=False``, a trace ID the source holds joins only the traces linked to it,
    not every trace that shares its correlation ID.
    """
    starts: list[tuple[str, int]] = []
    correlation_id: str | None = query
    named: set[str] = set()  # the trace typed, when the source holds it
    trace_id = trace_id_of(query)
    if trace_id is not None:
        typed = _first_spans_of_traces(source, [trace_id], max_spans + 1)
        starts = _trace_starts(typed)
        correlation_id = _entry_correlation_id(typed) if typed else query
        named = {trace_id} if typed else set()
    if correlation_id is not None and (by_correlation or not named):
        starts += _correlated_trace_starts(source, correlation_id)
    found = Collected(correlation_id if starts else None)
    if starts:
        ordered = sorted(starts, key=lambda pair: pair[1])
        _expand(source, found, list(dict.fromkeys(t for t, _ in ordered)), max_spans, named)
        # a trace id typed for a consumer's trace: the ID may only live on linked traces
        found.correlation_id = found.correlation_id or dominant_correlation_id(found.spans)
    if isinstance(source, WarningSource):
        found.warnings.extend(source.warnings_for(found.trace_ids))
    return found


def dominant_correlation_id(spans: list[SpanRecord]) -> str | None:
    """The correlation ID most spans carry (None when none carries one)."""
    counts = Counter(s.correlation_id for s in spans if s.correlation_id)
    return counts.most_common(1)[0][0] if counts else None


def _entry_correlation_id(spans: list[SpanRecord]) -> str | None:
    """The correlation ID the request entered with: its earliest root span's (a span whose
    parent is not among ``spans``), else the one most spans carry, as ``search`` names it.

    Past a hop that does not carry the ID (a Node.js service sending no baggage), the next
    tracekit service makes up one of its own, and its spans may outnumber the caller's.
    """
    held = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_span_id not in held]
    first = min(roots, key=lambda span: span.start_unix_nano, default=None)
    return (first.correlation_id if first else None) or dominant_correlation_id(spans)


def _trace_starts(spans: list[SpanRecord]) -> list[tuple[str, int]]:
    """Each trace of ``spans`` with its earliest start, earliest first."""
    first: dict[str, int] = {}
    for span in sorted(spans, key=lambda s: s.start_unix_nano):
        first.setdefault(span.trace_id, span.start_unix_nano)
    return list(first.items())


def _correlated_trace_starts(source: SpanSource, correlation_id: str) -> list[tuple[str, int]]:
    if isinstance(source, LimitedSpanSource):  # one more than followed, so the cap is reported
        return source.trace_starts_by_correlation_id(correlation_id, MAX_TRACES + 1)
    return _trace_starts(source.spans_by_correlation_id(correlation_id))


def _first_spans_of_traces(
    source: SpanSource, trace_ids: list[str], limit: int
) -> list[SpanRecord]:
    if isinstance(source, LimitedSpanSource):
        return source.first_spans_by_trace_ids(trace_ids, limit)
    return _earliest(source.spans_by_trace_ids(trace_ids), limit)


def _earliest(spans: list[SpanRecord], limit: int) -> list[SpanRecord]:
    if len(spans) <= limit:
        return spans
    return sorted(spans, key=lambda s: s.start_unix_nano)[:limit]


def _expand(
    source: SpanSource, found: Collected, frontier: list[str], max_spans: int, named: set[str]
) -> None:
    """Read whole traces, then follow links out of them and into them, round by round
    (``named``: the trace the user typed, whose batch links lead out too)."""
    known: set[str] = set()
    for _ in range(MAX_LINK_ROUNDS):
        frontier = [t for t in dict.fromkeys(frontier) if t not in known]
        room = MAX_TRACES - len(known)
        if len(frontier) > room:
            left = len(frontier) - room
            found.warnings.append(
                f"more than {MAX_TRACES} traces: showing {MAX_TRACES}; {left} more found, not read"
            )
            frontier = frontier[:room]
        if not frontier:
            return
        known.update(frontier)
        found.trace_ids.extend(frontier)
        spans = _read_traces(source, found, frontier, max_spans)
        if spans is None:
            return
        held = _held(frontier, spans)
        frontier = _linked_out(spans, named) + sorted(source.trace_ids_linking_to(held))
    found.warnings.append(f"stopped following links after {MAX_LINK_ROUNDS} rounds")


def _held(trace_ids: list[str], spans: list[SpanRecord]) -> list[str]:
    """The traces of ``trace_ids`` the source holds spans of.

    Only these are asked for the traces linking into them: a link out to a context the source
    does not hold (a public endpoint's untrusted caller) leads nowhere, and must not join every
    other request that links to the same context (the store's rule for requests, too).
    """
    held = {span.trace_id.lower() for span in spans}
    return [t for t in trace_ids if t in held]


def _read_traces(
    source: SpanSource, found: Collected, trace_ids: list[str], max_spans: int
) -> list[SpanRecord] | None:
    """Add the spans of ``trace_ids`` to ``found``; None once ``max_spans`` cut them short."""
    room = max_spans - len(found.spans)
    spans = _first_spans_of_traces(source, trace_ids, room + 1)
    if len(spans) <= room:
        found.spans.extend(spans)
        return spans
    found.spans.extend(spans[:room])
    found.warnings.append(
        f"more than {max_spans} spans: showing the first {max_spans} by start time"
    )
    return None


def _linked_out(spans: list[SpanRecord], named: set[str]) -> list[str]:
    """The traces ``spans`` link to: those of a span whose links lead into one trace (a
    consumer that began a trace of its own, a batch of one request's messages), not those of a
    batch linking into several, which joins several requests, but in a trace typed by id."""
    out: list[str] = []
    for span in spans:
        linked = {link.trace_id.lower() for link in span.links}
        if len(linked) == 1 or (linked and span.trace_id.lower() in named):
            out.extend(linked)
    return out
