"""Requests (``tracekit search`` rows) from the spans of Jaeger's search answers.

Jaeger's api_v3 answers whole traces, not summaries, so the root, duration, span count and
error flag are worked out here.
"""

from __future__ import annotations

from tracekit.records import RequestSummary, SpanRecord


def summaries(spans: list[SpanRecord]) -> list[RequestSummary]:
    """One request per trace found, except traces that continue another one found.

    A trace whose root links to a span of the answer (a consumer that started a new trace) is
    part of that request, as ``tracekit trace`` shows it; a link to a context not in the answer
    (a public endpoint's caller) leaves the trace an entry point.
    """
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    known = {(s.trace_id, s.span_id) for s in spans}
    found = []
    for trace in by_trace.values():
        root = _root(trace)
        if not any((link.trace_id, link.span_id) in known for link in root.links):
            found.append(_summary(trace, root))
    return found


def _root(trace: list[SpanRecord]) -> SpanRecord:
    """The true root, else the earliest span whose parent is missing, else the earliest span."""
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if not s.parent_span_id or s.parent_span_id not in ids]
    return min(roots or trace, key=lambda s: (s.parent_span_id is not None, s.start_unix_nano))


def _summary(trace: list[SpanRecord], root: SpanRecord) -> RequestSummary:
    end = max(s.end_unix_nano for s in trace)
    return RequestSummary(
        root.correlation_id, root.trace_id, root.service, root.name, root.start_unix_nano,
        (end - root.start_unix_nano) / 1e6, len(trace), any(s.status == "ERROR" for s in trace),
    )  # fmt: skip
