"""Path reconstruction: from span and log records to one request's journey across services.

Pure library code (no click, no rich): the CLI, tests and other tools call ``reconstruct`` with any
``SpanSource`` (the embedded store, Tempo, Jaeger) and render the ``Path`` it returns, or call
``build_path`` on records they already hold.
"""

from __future__ import annotations

from collections.abc import Callable

from tracekit.path.build import build_log_path, build_path, error_message
from tracekit.path.collect import (
    MAX_SPANS,
    Collected,
    collect,
    looks_like_trace_id,
    trace_id_of,
)
from tracekit.path.model import SCHEMA_ID, Hop, Path, PathError, PathLog, PathSpan
from tracekit.path.schema import load_schema
from tracekit.path.servicemap import (
    ServiceEdge,
    edges_from_samples,
    hop_samples,
    requests_by_service,
    service_map,
)
from tracekit.records import CorrelatedLogSource, LimitedLogSource, LogRecordData, SpanSource

__all__ = [
    "MAX_CORRELATED_LOGS",
    "MAX_SPANS",
    "MAX_TRACE_LOGS",
    "SCHEMA_ID",
    "Hop",
    "Path",
    "PathError",
    "PathLog",
    "PathSpan",
    "ServiceEdge",
    "build_path",
    "collect",
    "edges_from_samples",
    "error_message",
    "hop_samples",
    "load_schema",
    "looks_like_trace_id",
    "reconstruct",
    "requests_by_service",
    "service_map",
    "trace_id_of",
]


MAX_CORRELATED_LOGS = 10_000
# The log lines of the request's traces read at most, the earliest: as many as spans, so a
# trace whose service logs in a loop (millions of lines) does not take the memory they would.
MAX_TRACE_LOGS = MAX_SPANS


def reconstruct(
    source: SpanSource,
    query: str,
    *,
    with_logs: bool = True,
    adjust_skew: bool = True,
    max_spans: int = MAX_SPANS,
    by_correlation: bool = True,
) -> Path | None:
    """The path of the request ``query`` names (correlation ID or trace ID); None if not found.

    A request of more than ``max_spans`` spans is cut to the earliest, with a warning. A trace ID
    joins the traces that share its correlation ID, unless ``by_correlation`` is False (then
    only those linked to it). Raises ``tracekit.records.BackendError`` when the source cannot
    answer.
    """
    found = collect(source, query, max_spans=max_spans, by_correlation=by_correlation)
    if found.spans:
        return _built(source, query, found, with_logs=with_logs, adjust_skew=adjust_skew)
    if not with_logs:
        return None

    def spanned(correlation_id: str) -> Path | None:
        again = collect(source, correlation_id, max_spans=max_spans, by_correlation=by_correlation)
        return _built(source, query, again, adjust_skew=adjust_skew) if again.spans else None

    return _from_logs_alone(source, query, found.warnings, spanned)


def _built(
    source: SpanSource, query: str, found: Collected, *, with_logs: bool = True, adjust_skew: bool
) -> Path | None:
    """The path of the spans ``found``, with the request's log lines."""
    notes = list(found.warnings)
    logs = _logs(source, found.trace_ids, found.correlation_id, notes) if with_logs else []
    return build_path(
        query,
        found.spans,
        logs,
        correlation_id=found.correlation_id,
        trace_ids=found.trace_ids,
        warnings=notes,
        adjust_skew=adjust_skew,
    )


def _from_logs_alone(
    source: SpanSource,
    query: str,
    warnings: list[str],
    spanned: Callable[[str], Path | None],
) -> Path | None:
    """A request no span carries (every service on its way in correlation-only mode, or a
    request the sampler left out): its correlated log lines, when there are any, so the ID
    typed is not reported unknown. A trace ID of such lines whose correlation ID spans carry
    (an asynchronous hop's new trace, which its sampler kept): that request, by ``spanned``."""
    if not isinstance(source, CorrelatedLogSource):
        return None
    correlation_id: str | None = query
    logs = _correlated_logs(source, query, warnings)
    trace_id = trace_id_of(query)
    if not logs and trace_id is not None:
        in_trace = _trace_logs(source, [trace_id], warnings)
        correlation_id = _one_request_of(in_trace, warnings)
        path = spanned(correlation_id) if correlation_id is not None else None
        if path is not None:
            return path
        logs = _logs_of_unexported_trace(source, trace_id, correlation_id, in_trace, warnings)
    elif logs:
        logs += _uncorrelated_lines_of_their_traces(source, query, logs, warnings)
    return build_log_path(correlation_id, logs, warnings, query=query) if logs else None


def _uncorrelated_lines_of_their_traces(
    source: SpanSource,
    correlation_id: str,
    correlated: list[LogRecordData],
    warnings: list[str],
) -> list[LogRecordData]:
    """The lines that carry no correlation ID in the traces ``correlated`` carry: a service
    that passes the trace on but does not stamp the ID (a Node.js service with OpenTelemetry
    JS between two tracekit services) logged them in this request, as ``trace <trace ID>``
    shows. Not those of a trace whose lines carry another ID too (a span left out around many
    requests): they are no more this request's than another's."""
    traces = sorted({log.trace_id.lower() for log in correlated if log.trace_id})
    by_trace: dict[str, list[LogRecordData]] = {}
    for log in _trace_logs(source, traces, warnings) if traces else []:
        by_trace.setdefault((log.trace_id or "").lower(), []).append(log)
    return [
        log
        for lines in by_trace.values()
        if {line.correlation_id for line in lines} <= {None, correlation_id}
        for log in lines
        if log.correlation_id is None
    ]


def _one_request_of(in_trace: list[LogRecordData], warnings: list[str]) -> str | None:
    """The correlation ID the lines of a trace carry, when they carry one; None, said, when
    they carry several (a span left out around many requests: a server started inside one)."""
    carried = {log.correlation_id for log in in_trace if log.correlation_id}
    if len(carried) > 1:
        warnings.append(
            f"the log lines of this trace carry {len(carried)} correlation IDs: they are not "
            "one request's, and are all shown"
        )
    return carried.pop() if len(carried) == 1 else None


def _logs_of_unexported_trace(
    source: CorrelatedLogSource,
    trace_id: str,
    correlation_id: str | None,
    in_trace: list[LogRecordData],
    warnings: list[str],
) -> list[LogRecordData]:
    """The log lines of the request whose lines are ``in_trace``, those of trace ``trace_id``,
    none of whose spans was exported (the sampler left it out; its lines carry its ID all the
    same): those lines, and the request's lines outside the trace, by the ``correlation_id``
    they carry (which a store may not index: one too long to be)."""
    if correlation_id is None:
        return in_trace
    correlated = _correlated_logs(source, correlation_id, warnings)
    return in_trace + [log for log in correlated if (log.trace_id or "").lower() != trace_id]


def _logs(
    source: SpanSource, trace_ids: list[str], correlation_id: str | None, warnings: list[str]
) -> list[LogRecordData]:
    """The log lines of the request's traces, and those that carry its correlation ID in no
    trace of it (a service in correlation-only mode, a line logged outside any span): at most
    ``MAX_CORRELATED_LOGS`` of those, the earliest, so a correlation ID stamped on every line
    of a busy service does not make the path read them all."""
    logs = _trace_logs(source, trace_ids, warnings)
    if correlation_id is None or not isinstance(source, CorrelatedLogSource):
        return logs
    read = {trace_id.lower() for trace_id in trace_ids}
    correlated = _correlated_logs(source, correlation_id, warnings)
    return logs + [log for log in correlated if (log.trace_id or "").lower() not in read]


def _trace_logs(
    source: SpanSource, trace_ids: list[str], warnings: list[str]
) -> list[LogRecordData]:
    """The first ``MAX_TRACE_LOGS`` log lines of the traces, by time, and a warning naming how
    many were left out. A source that holds logs (the store) reads just those."""
    if isinstance(source, LimitedLogSource):
        logs, total = source.first_logs_by_trace_ids(trace_ids, MAX_TRACE_LOGS)
    else:
        logs = sorted(source.logs_by_trace_ids(trace_ids), key=lambda log: log.time_unix_nano)
        total = len(logs)
    if total > MAX_TRACE_LOGS:
        warnings.append(
            f"{total} log lines in the request's traces: showing the first {MAX_TRACE_LOGS} "
            f"by time, {total - MAX_TRACE_LOGS} left out"
        )
    return logs[:MAX_TRACE_LOGS]


def _correlated_logs(
    source: CorrelatedLogSource, correlation_id: str, warnings: list[str]
) -> list[LogRecordData]:
    """The first ``MAX_CORRELATED_LOGS`` log lines carrying ``correlation_id``, and a warning
    when there are more."""
    logs = source.logs_by_correlation_id(correlation_id, MAX_CORRELATED_LOGS + 1)
    if len(logs) > MAX_CORRELATED_LOGS:
        warnings.append(
            f"more than {MAX_CORRELATED_LOGS} log lines carry the correlation ID: "
            f"reading the first {MAX_CORRELATED_LOGS}"
        )
    return logs[:MAX_CORRELATED_LOGS]
