"""Search rows as ``tracekit trace`` groups them: the traces of one request are one row.

A remote backend's search answers traces. ``trace <correlation-id>`` joins every trace that
carries the ID (a pull consumer that began a trace of its own, a retry), so a listing that showed
each trace as a row would show one request twice, each row measured over part of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from tracekit.records import RequestSummary, SpanRecord

__all__ = [
    "MAX_CONTINUATIONS",
    "by_correlation_id",
    "carried_correlation_id",
    "joined",
    "root_span",
    "with_continuations",
]

# how far a chain of traces continuing one another is followed (a consumer's consumer...)
MAX_CONTINUATIONS = 16


def by_correlation_id(
    rows: Sequence[RequestSummary], continues: Mapping[str, set[str]] | None = None,
    named_by: set[str] | None = None,
) -> list[RequestSummary]:  # fmt: skip
    """Rows sharing a correlation ID as one, listed as the earliest of them (the producer's
    trace starts before its consumer's), or of those in ``named_by`` (the traces a search's
    filter matched: a request listed for ``--service S`` is named by a root in S); a row
    without one stays its own request, unless it ``continues`` others (a consumer's trace
    linking into them): it is then measured in their requests, not listed."""
    continues = continues or {}
    groups: dict[str, list[RequestSummary]] = {}
    for row in sorted(rows, key=lambda r: r.start_unix_nano):
        if row.trace_id not in continues:
            key = row.correlation_id if row.correlation_id else "\0" + row.trace_id
            groups.setdefault(key, []).append(row)
    by_trace = {row.trace_id: row for row in rows}
    return [_measured(group, continues, by_trace, named_by) for group in groups.values()]


def _measured(
    group: list[RequestSummary], continues: Mapping[str, set[str]],
    by_trace: Mapping[str, RequestSummary], named_by: set[str] | None,
) -> RequestSummary:  # fmt: skip
    """One request: ``group``'s rows and those continuing them, named by the earliest (of
    ``named_by``, when one is there)."""
    traces = with_continuations([row.trace_id for row in group], continues)
    named = [row for row in group if named_by is None or row.trace_id in named_by]
    return joined([by_trace[t] for t in traces], (named or group)[0])


def with_continuations(entries: list[str], continues: Mapping[str, set[str]]) -> list[str]:
    """``entries`` and, transitively, the traces continuing them."""
    found = dict.fromkeys(entries)
    for _ in range(MAX_CONTINUATIONS):
        more = [t for t, into in continues.items() if t not in found and into & found.keys()]
        if not more:
            break
        found.update(dict.fromkeys(more))
    return list(found)


def root_span(trace: list[SpanRecord]) -> SpanRecord:
    """The true root, else the earliest span whose parent is missing, else the earliest span."""
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if not s.parent_span_id or s.parent_span_id not in ids]
    return min(roots or trace, key=lambda s: (s.parent_span_id is not None, s.start_unix_nano))


def joined(parts: Sequence[RequestSummary], entry: RequestSummary) -> RequestSummary:
    """One request measured over the traces of ``parts``, named by ``entry``'s root: from the
    earliest start to the latest end, every span, in error if any part is."""
    if len(parts) == 1:
        return parts[0]
    start = min(part.start_unix_nano for part in parts)
    end = max(part.start_unix_nano + round(part.duration_ms * 1e6) for part in parts)
    return RequestSummary(
        entry.correlation_id, entry.trace_id, entry.root_service, entry.root_name, start,
        (end - start) / 1e6, sum(part.span_count for part in parts),
        any(part.error for part in parts), entry.root_task, entry.root_attributes,
    )  # fmt: skip


def carried_correlation_id(trace: list[SpanRecord]) -> str | None:
    """The correlation ID most spans of ``trace`` carry, as ``tracekit trace`` names a trace's
    request (None when none carries one)."""
    counts = Counter(span.correlation_id for span in trace if span.correlation_id)
    return counts.most_common(1)[0][0] if counts else None
