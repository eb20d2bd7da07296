"""Traces a remote backend's reader fetches by id, within a budget of spans.

Tempo and Jaeger answer a trace whole (up to 64 MiB each), so a reader bounds what it holds by
not asking for more traces once a caller's budget is spent, nor more at once than the budget
left seems to need (``_read_ahead.still_needed``). Traces are kept for a second read
(the path engine reads a typed trace twice, ``diff`` reads the traces of its window again): the
last read, as many as hold ``MAX_KEPT_SPANS`` spans, and always the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from tracekit.backends._read_ahead import PARALLEL_READS, in_order, still_needed
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
        return next(self.each([trace_id]))

    def each(
        self, trace_ids: Iterable[str], width: Callable[[], int] = lambda: PARALLEL_READS
    ) -> Iterator[list[SpanRecord]]:
        """Every span of each trace in turn, the next few read while one is used, as many at
        once as ``width()`` says (``_read_ahead.in_order``)."""
        for trace_id, spans in in_order(self._kept_or_fetched, trace_ids, width):
            self._keep(trace_id, spans)
            yield spans

    def _kept_or_fetched(self, trace_id: str) -> list[SpanRecord]:
        kept = self._kept.get(trace_id)  # in a read's thread: a lookup, never a change
        return self._fetch(trace_id) if kept is None else kept

    def _keep(self, trace_id: str, spans: list[SpanRecord]) -> None:
        if trace_id in self._kept:
            return
        self._kept[trace_id] = spans
        self._kept_spans += len(spans)
        while self._kept_spans > MAX_KEPT_SPANS and len(self._kept) > 1:
            self._kept_spans -= len(self._kept.pop(next(iter(self._kept))))  # the first read

    def held(self) -> list[SpanRecord]:
        """Every span of the traces kept."""
        return [span for spans in self._kept.values() for span in spans]

    def first_spans(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """The ``limit`` earliest spans of the traces read in the order given until ``limit``
        spans are held: the traces after that are not fetched."""
        read: list[SpanRecord] = []
        traces = 0

        def needed() -> int:
            return still_needed(len(read), traces, limit)

        for spans in self.each((t.lower() for t in trace_ids), needed) if limit > 0 else ():
            read += spans
            traces += 1
            if len(read) >= limit:
                break
        return sorted(read, key=lambda s: s.start_unix_nano)[:limit]
