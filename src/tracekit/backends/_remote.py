"""What the Tempo and Jaeger readers share: the HTTP client, the notes for the reader, and the
traces they fetch whole by id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tracekit.backends._http import JsonClient
from tracekit.backends._notes import Notes, Notify
from tracekit.backends._traces import Traces
from tracekit.records import BackendError, SpanRecord

CLOCK_SLACK_SECONDS = 60  # a search ends this far ahead: spans from a host whose clock runs ahead


class RemoteSource:
    """The by-id half of ``tracekit.records.SpanSource`` for a backend that answers whole traces;
    a subclass fetches one trace (``_fetch_trace``) and searches."""

    def __init__(
        self, base_url: str, *, name: str, timeout: float, retries: int,
        headers: Mapping[str, str] | None, notify: Notify | None, total_timeout: float | None,
    ) -> None:  # fmt: skip
        self.client = JsonClient(
            base_url, name=name, timeout=timeout, retries=retries, headers=headers,
            total_timeout=total_timeout,
        )  # fmt: skip
        self.notes = Notes(notify)
        self._traces = Traces(self._fetch_trace)

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces (unknown ids contribute nothing)."""
        wanted = (trace_id.lower() for trace_id in trace_ids)
        return [span for spans in self._traces.each(wanted) for span in spans]

    def first_spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """The ``limit`` earliest spans of the traces read in the order given until ``limit``
        are held; the traces after that are not read (``LimitedSpanSource``)."""
        return self._traces.first_spans(trace_ids, limit)

    def trace_starts_by_correlation_id(
        self, correlation_id: str, limit: int
    ) -> list[tuple[str, int]]:
        """Traces with spans carrying ``correlation_id``, each with its start, earliest first,
        the first ``limit`` (``LimitedSpanSource``), as the backend's search finds them
        (``_trace_starts``). Where the search fails once a trace was read by its id (``trace
        <trace id>``, whose request's ID is then searched), none, and a warning of that trace's
        path: a Tempo whose searches time out (a busy week of traces) or a search tier
        answering 503 made the trace typed, read whole, exit 2."""
        try:
            return self._trace_starts(correlation_id, limit)
        except BackendError as error:
            read = sorted({span.trace_id for span in self._traces.held()})
            if not read:
                raise
            for trace_id in read:
                self.notes.warn(
                    trace_id,
                    f"the other traces of request {correlation_id!r:.80} could not be searched "
                    f"({error}): the path shows trace {trace_id} and the traces linked to it",
                )
            return []

    def _fetch_trace(self, trace_id: str) -> list[SpanRecord]:
        """Every span of one trace (lower-case hex id); none when the backend lacks it."""
        raise NotImplementedError

    def _trace_starts(self, correlation_id: str, limit: int) -> list[tuple[str, int]]:
        """``trace_starts_by_correlation_id`` as the backend's search answers it."""
        raise NotImplementedError

    def _left_out(self, what: str) -> None:
        """Say once that an answer held something unreadable, which was left out."""
        self.notes.once(f"{self.client.where} answered {what}: it is left out")
