"""Requests (``tracekit search`` rows) from the spans of Jaeger's search answers.

Jaeger's api_v3 answers whole traces, not summaries, so the root, duration, span count and
error flag are worked out here, over every trace of the answer that ``tracekit trace`` joins
into the request.
"""

from __future__ import annotations

from tracekit.backends._requests import (
    carried_correlation_id,
    joined,
    root_span,
    with_continuations,
)
from tracekit.records import RequestSummary, SpanRecord, task_name


def summaries(spans: list[SpanRecord]) -> list[RequestSummary]:
    """One request per entry trace found, measured over the traces joined into it.

    A trace whose root links to a span of another trace of the answer (a consumer that started
    a new trace) continues that request, as ``tracekit trace`` shows it, and is measured in it
    (a batch's, in each request it links into); a link to a context not in the answer (a public
    endpoint's caller) leaves the trace an entry point. Entry points sharing a correlation ID (a
    retry) are one request, named by the earliest of them, as the store names it.
    """
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    rows = {trace_id: _summary(trace, root_span(trace)) for trace_id, trace in by_trace.items()}
    continues = _continued_traces(by_trace, {(s.trace_id, s.span_id) for s in spans})
    requests: dict[str, list[str]] = {}
    for trace_id in sorted(rows, key=lambda t: rows[t].start_unix_nano):
        if trace_id not in continues:
            requests.setdefault(_request_key(rows[trace_id]), []).append(trace_id)
    return [
        joined([rows[t] for t in with_continuations(entries, continues)], rows[entries[0]])
        for entries in requests.values()
    ]


def _continued_traces(
    by_trace: dict[str, list[SpanRecord]], known: set[tuple[str, str]]
) -> dict[str, set[str]]:
    """Each trace whose root links into other traces of the answer, with those traces."""
    continues = {}
    for trace_id, trace in by_trace.items():
        linked = {
            link.trace_id
            for link in root_span(trace).links
            if (link.trace_id, link.span_id) in known and link.trace_id != trace_id
        }
        if linked:
            continues[trace_id] = linked
    return continues


def _request_key(row: RequestSummary) -> str:
    return row.correlation_id if row.correlation_id else "\0" + row.trace_id


def _summary(trace: list[SpanRecord], root: SpanRecord) -> RequestSummary:
    """One trace's row, named by the correlation ID its spans carry, as ``tracekit trace``
    names it (a proxy's root span may carry none)."""
    end = max(s.end_unix_nano for s in trace)
    return RequestSummary(
        carried_correlation_id(trace), root.trace_id, root.service, root.name,
        root.start_unix_nano, (end - root.start_unix_nano) / 1e6, len(trace),
        any(s.status == "ERROR" for s in trace), task_name(root.attributes), root.attributes,
    )  # fmt: skip
