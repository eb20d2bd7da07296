"""Search rows as ``tracekit trace`` groups them: the traces of one request are one row.

A remote backend's search answers traces. ``trace <correlation-id>`` joins every trace that
carries the ID (a pull consumer that began a trace of its own, a retry), so a listing that showed
each trace as a row would show one request twice, each row measured over part of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracekit.records import RequestSummary

__all__ = ["by_correlation_id", "joined"]


def by_correlation_id(rows: Sequence[RequestSummary]) -> list[RequestSummary]:
    """Rows sharing a correlation ID as one, listed as the earliest of them (the producer's
    trace starts before its consumer's); a row without one stays its own request."""
    groups: dict[str, list[RequestSummary]] = {}
    for row in sorted(rows, key=lambda r: r.start_unix_nano):
        key = row.correlation_id if row.correlation_id else "\0" + row.trace_id
        groups.setdefault(key, []).append(row)
    return [joined(group, group[0]) for group in groups.values()]


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
        any(part.error for part in parts),
    )  # fmt: skip
