"""Traces a remote backend's reader fetches by id, within a budget of spans.

Tempo and Jaeger answer a trace whole (up to 64 MiB each), so a reader bounds what it holds by
not asking for the next trace once a caller's budget is spent: at most the budget and one trace
more. Traces are kept for a second read (the path engine reads a typed trace twice, ``diff``
reads the traces of its window again): the last read, as many as hold ``MAX_KEPT_SPANS`` spans,
and always the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tracekit.records import SpanRecord

MAX_KEPT_SPANS = 100_000  # about 150 MB of span records


class Traces:
    """Fetches traces by id (lower-case hex), keeping the last read for a second read."""

    def __init__(self, fetch: Callable[[str], list[SpanRecord]]) -> None:
        self._fetch = fetch
        self._kept: dict[str, list[SpanRecord]] = {}
        self._kept_spans = 0

    def spans(self, trace_id: str) -> list[SpanRecord]:
        """Every span of one trace (none for a trace the backend does not hold)."""
        if trace_id in self._kept:
            return self._kept[trace_id]
        spans = self._fetch(trace_id)
        self._kept[trace_id] = spans
        self._kept_spans += len(spans)
        while self._kept_spans > MAX_KEPT_SPANS and len(self._kept) > 1:
            self._kept_spans -= len(self._kept.pop(next(iter(self._kept))))  # the first read
        return spans

    def held(self) -> list[SpanRecord]:
        """Every span of the traces kept."""
        return [span for spans in self._kept.values() for span in spans]

    def first_spans(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """The ``limit`` earliest spans of the traces read in the order given until ``limit``
        spans are held: the traces after that are not fetched."""
        read: list[SpanRecord] = []
        for trace_id in trace_ids:
            if len(read) >= limit:
                break
            read += self.spans(trace_id.lower())
        return sorted(read, key=lambda s: s.start_unix_nano)[:limit]
