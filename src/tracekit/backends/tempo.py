"""Grafana Tempo as a read backend (HTTP API, Tempo 2.x; the base URL may carry a path prefix).

- trace by id: ``GET /api/v2/traces/<id>?span_pruning=false`` (Tempo >= 2.6: ``{"trace":
  {"resourceSpans"}, "metrics", "status", "message"}``; ``"status": "PARTIAL"`` when Tempo cut
  the trace at its size limit, which becomes a warning of the path), else ``GET
  /api/traces/<id>`` (``{"batches"}``);
- search: TraceQL on ``GET /api/search`` (see ``_tempo_search``), over at most Tempo's
  ``search.max_duration`` (168h by default; a shorter limit is read from Tempo's refusal, the
  window narrowed and the reader told once); a search for the newest traces asks with
  ``with (most_recent=true)`` (Tempo >= 2.8; without it Tempo answers the first traces it finds),
  and without the hint where Tempo refuses hints (before 2.4), saying so once;
- the newest spans of one service (``service``, for ``diff``'s set form): TraceQL
  ``{ resource.service.name = "..." }``, up to 2,000 traces in one search; without a service,
  ``{ }``, up to 200 (the service map);
- spans linking into a trace: TraceQL ``{ link:traceID = "..." }`` (Tempo >= 2.6). Where Tempo
  cannot search links, or the search fails, the path says so in its warnings.
Tempo stores no logs, so ``logs_by_trace_ids`` is empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tracekit.backends._http import AnswerTooLarge, HTTPStatusError, NotFound, of_another_api
from tracekit.backends._notes import Notify
from tracekit.backends._otlp_json import spans_from_batches
from tracekit.backends._read_ahead import PARALLEL_READS, still_needed
from tracekit.backends._remote import RemoteSource
from tracekit.backends._requests import by_correlation_id, carried_correlation_id, root_span
from tracekit.backends._tempo_search import (
    DEFAULT_WINDOW_SECONDS,
    NO_ROOT,
    Hit,
    carrying_any,
    few_at_a_time,
    linking_to_any,
    read_hits,
    refused_traceql,
    result_limit,
    roots_of,
    search_query,
    service_is,
    traceql_string,
    window,
    window_limit,
    with_trace_ids,
)
from tracekit.records import (
    Attributes,
    BackendError,
    LogRecordData,
    RequestSummary,
    SpanRecord,
    task_name,
)

__all__ = [
    "HITS_PER_REQUEST",
    "MAX_TRACES_FOR_MAP",
    "MAX_TRACES_OF_A_SERVICE",
    "MAX_TRACES_PER_SEARCH",
    "TempoSource",
    "traceql_string",
]

MAX_TRACES_PER_SEARCH = 100
MAX_TRACES_FOR_MAP = 200
# diff's set form (one service named): as many as Jaeger's pages read. Tempo answers up to
# `limit` traces in one search; over its query_frontend.search.max_result_limit (0, none, by
# default before 3.0) it refuses the search from 2.4 on, and is then asked for that many
MAX_TRACES_OF_A_SERVICE = 2_000
# `search` asks for this many traces per request listed: a request is often two (a pull
# consumer's trace beside its producer's), and one cut at the answer's edge would be listed as
# part of itself (its consumer's trace alone), or not fill the listing
HITS_PER_REQUEST = 2
_MOST_RECENT = " with (most_recent=true)"  # the newest traces, ordered by start (Tempo >= 2.8)
# Every span Tempo stores: from 3.0.1 its operator may make span pruning the default, when a
# trace is served with each group of similar leaf spans (a request's publishes, its queries)
# collapsed into one summary span, and the consumers linking to the others lead nowhere. An
# earlier Tempo, or one without pruning enabled, ignores the parameter.
_UNPRUNED = {"span_pruning": "false"}
_V1_KEYS = frozenset({"batches"})  # /api/traces/<id>: Tempo renames resourceSpans so
_V2_KEYS = frozenset({"trace", "metrics", "status", "message"})  # TraceByIDResponse's fields


class TempoSource(RemoteSource):
    """Reads spans from Tempo's HTTP API; implements ``tracekit.records.SpanSource``.

    ``headers`` go with every request (``X-Scope-OrgID`` for a multi-tenant Tempo,
    ``Authorization``); ``notify`` hears notices about the search (default: a log warning).
    ``service``: ``newest_spans_since`` reads the traces of that service (``diff``'s set form).
    """

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, retries: int = 2, service: str | None = None,
        headers: Mapping[str, str] | None = None, notify: Notify | None = None,
        total_timeout: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            base_url, name="Tempo", timeout=timeout, retries=retries, headers=headers,
            notify=notify, total_timeout=total_timeout,
        )  # fmt: skip
        self.service = service
        self._use_v2 = True
        self._max_window: tuple[float, str] | None = None  # learnt from Tempo's refusal
        self._max_results: int | None = None  # its max_result_limit, learnt likewise
        self._can_search_links = True
        self._link_search_failed: BackendError | None = None  # not tried again: said instead
        self._takes_hints = True  # TraceQL query hints: Tempo >= 2.4
        self._unreadable: dict[str, str] = {}  # trace id -> what Tempo did instead of answering
        self._read_by_id = False  # whether a trace asked for by id has been read yet
        self._unnamed_unreadable = False  # a search hit's trace could not be read
        self._counted_by_reading: set[str] = set()  # hits without serviceStats: traces read

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Spans carrying ``correlation.id``, found with a TraceQL search."""
        starts = self.trace_starts_by_correlation_id(correlation_id, MAX_TRACES_PER_SEARCH)
        spans = self.spans_by_trace_ids(trace_id for trace_id, _ in starts)
        return [s for s in spans if s.correlation_id == correlation_id]

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces; BackendError when Tempo would answer none of the
        first traces asked for (see ``_read_or_refused``)."""
        wanted = [t.lower() for t in trace_ids]
        return self._read_or_refused(wanted, super().spans_by_trace_ids(wanted))

    def first_spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        """As ``RemoteSource``'s, with ``spans_by_trace_ids``' error."""
        wanted = [t.lower() for t in trace_ids]
        return self._read_or_refused(wanted, super().first_spans_by_trace_ids(wanted, limit))

    def _read_or_refused(self, wanted: list[str], spans: list[SpanRecord]) -> list[SpanRecord]:
        """``spans``; or, when a command's first traces could none of them be read because
        Tempo would not answer them, Tempo's refusal: that is the answer (exit 2), not "not
        found". A trace left out later (one a link joins) is only a warning of the path."""
        unreadable = [self._unreadable[t] for t in wanted if t in self._unreadable]
        if unreadable and not spans and not self._read_by_id:
            raise BackendError(unreadable[0])
        self._read_by_id = self._read_by_id or bool(spans)
        return spans

    def _trace_starts(self, correlation_id: str, limit: int) -> list[tuple[str, int]]:
        """From a TraceQL search, without reading the traces."""
        query = "{ span.correlation.id = " + traceql_string(correlation_id) + " }"
        hits, more = self._search_at_most(query, MAX_TRACES_PER_SEARCH)
        if more:
            self.notes.warn(
                hits[0].trace_id,
                f"more than {MAX_TRACES_PER_SEARCH} traces carry this correlation ID: showing "
                f"the {MAX_TRACES_PER_SEARCH} Tempo found first",
            )
        return sorted(((h.trace_id, h.start_unix_nano) for h in hits), key=lambda t: t[1])[:limit]

    def searched_back(self) -> str:
        """How far back a search for a correlation ID looks: a default Tempo's longest search,
        or the shorter one this Tempo refused a search for."""
        return self._max_window[1] if self._max_window else "168h"

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Traces with a span linking into ``trace_ids`` (what cannot be searched is warned)."""
        wanted = list(trace_ids)
        found = {f for ids, query in linking_to_any(wanted) for f in self._linking_to(ids, query)}
        return found - set(wanted)

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Tempo holds no logs."""
        return []

    def warnings_for(self, trace_ids: Iterable[str]) -> list[str]:
        """What a path built from these traces should warn about (partial traces, failed or
        impossible link searches)."""
        return self.notes.warnings_for(trace_ids)

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        """Newest requests matching the filters that started since then, from one TraceQL search
        of ``HITS_PER_REQUEST`` traces a request (Tempo finds the traces that overlap its
        window: those that started before are left, and so are the requests one of whose
        traces did, see ``_begun_before``). Traces sharing a correlation ID are one request,
        and so is a trace without one with the traces its root links into
        (``_requests.by_correlation_id``)."""
        query = search_query(service, min_duration_ms, errors_only)
        since = None if since_unix_nano is None else since_unix_nano / 1e9
        hits = self._search(query, limit * HITS_PER_REQUEST, since, newest=True)
        if service and not hits:  # a root service Tempo holds as sent: "checkout\n"
            query = search_query(service, min_duration_ms, errors_only, trimmed=True)
            hits = self._search(query, limit * HITS_PER_REQUEST, since, newest=True)
        started = [h for h in hits if h.start_unix_nano >= (since_unix_nano or 0)]
        rows = [self._row(hit) for hit in started]
        matched = {row.trace_id for row in rows}
        if service or min_duration_ms is not None or errors_only:
            rows += self._linked_entries(rows, since_unix_nano)
            rows += self._other_traces(rows, since_unix_nano)
        found = by_correlation_id(rows, self._continued(rows), named_by=matched)
        if since_unix_nano is not None:
            begun_before = self._begun_before(found, since_unix_nano)
            early = {h.trace_id for h in hits if h.start_unix_nano < since_unix_nano}
            continuing = self._continuing_before(found, early, since_unix_nano)
            found = [
                r
                for r in found
                if r.correlation_id not in begun_before and r.trace_id not in continuing
            ]
        return self._with_roots(sorted(found, key=lambda r: -r.start_unix_nano)[:limit], since)

    def _with_roots(self, rows: list[RequestSummary], since: float | None) -> list[RequestSummary]:
        """``rows`` with what their roots name that a search hit does not carry, as the store
        lists them: the Celery task each root sent or ran (``root_task``), and the URL path of
        a root named only by its method (``GET /reserve/{id}``). The roots of the listed traces
        that name either are searched for, 20 traces a search (``roots_of``), in the search's
        window; but for the traces read to count their spans (no serviceStats: Tempo before
        2.5, whose TraceQL has no trace:id), whose roots are known. A failed search is said
        once, and the rows are listed without what it did not find."""
        unread = [row.trace_id for row in rows if row.trace_id not in self._counted_by_reading]
        roots: dict[str, Attributes] = {}
        try:
            for query in roots_of(unread):
                hits = self._search_once(query, MAX_TRACES_PER_SEARCH, since)
                roots.update({hit.trace_id: hit.root_attributes for hit in hits})
        except BackendError as error:
            why = "it needs Tempo 2.5 or later" if refused_traceql(error) else error
            self.notes.once(
                f"{self.client.where} failed to search the roots of the traces listed for the "
                f"Celery task and URL path they name ({why}): root_task is null, and a root "
                "named only by its method is listed so"
            )
        return [_with_root_attributes(row, roots.get(row.trace_id, {})) for row in rows]

    def _row(self, hit: Hit) -> RequestSummary:
        """The search row of one hit, named by its correlation ID and root."""
        return self._with_root(self._with_correlation_id(self._summary(hit), hit), hit)

    def _linked_entries(
        self, rows: list[RequestSummary], since_unix_nano: int | None
    ) -> list[RequestSummary]:
        """The traces started since then that the roots of listed traces carrying no
        correlation ID link into, but that are not among them: a filter matches traces, so a
        pull consumer's trace in error is a hit of ``--errors`` and its producer's trace is not,
        and the consumer was listed on its own, where the store (and ``trace``) list the
        producer's request with the consumer's error in it. Searched by TraceQL ``trace:id``
        (Tempo >= 2.5), 20 a search, grouped by correlation ID: a hit that named none would be
        read whole to find it, one read per trace linked into (a batch consumer's root links to
        each message's). A failed search is said once, and the traces are listed as found."""
        held = {row.trace_id for row in rows}
        linked: set[str] = set()
        for row in rows:
            spans = [] if row.correlation_id else self._unnamed_trace(row.trace_id)
            linked |= {link.trace_id for link in root_span(spans).links} if spans else set()
        since = None if since_unix_nano is None else since_unix_nano / 1e9
        more: dict[str, RequestSummary] = {}
        try:
            for query in with_trace_ids(sorted(linked - held), grouped=True):
                for hit in self._search_once(query, MAX_TRACES_PER_SEARCH, since):
                    if hit.trace_id not in held and hit.start_unix_nano >= (since_unix_nano or 0):
                        more[hit.trace_id] = self._row(hit)
        except BackendError as error:
            why = "TraceQL trace:id needs Tempo 2.5 or later" if refused_traceql(error) else error
            self.notes.once(
                f"{self.client.where} failed to search traces by id ({why}): a trace carrying "
                "no correlation ID that the filter matched is listed on its own, not in the "
                "request it links into"
            )
        return list(more.values())

    def _other_traces(
        self, rows: list[RequestSummary], since_unix_nano: int | None
    ) -> list[RequestSummary]:
        """The traces started since then that carry the correlation IDs of ``rows`` but are
        not among them: a filter (an error, the root's service, a duration) matches traces, so a
        pull consumer's trace of a request it found is no hit, and the request would be listed
        without it. Searched for 20 IDs at a time; a failed search is said once, and the
        requests are measured over the traces found."""
        ids = list(dict.fromkeys(r.correlation_id for r in rows if r.correlation_id))
        held = {r.trace_id for r in rows}
        since = None if since_unix_nano is None else since_unix_nano / 1e9
        more: dict[str, RequestSummary] = {}
        for hits in self._carrying(ids, since):
            for hit in hits:
                if hit.trace_id not in held and hit.start_unix_nano >= (since_unix_nano or 0):
                    more[hit.trace_id] = self._summary(hit)
        return list(more.values())

    def _carrying(self, ids: list[str], since: float | None) -> Iterator[list[Hit]]:
        """The hits of the traces carrying ``ids``, a few IDs a search, asking for as many
        traces as each ID alone would (requests of a few traces each, 20 to a search, filled
        100: each ID was searched again); each ID alone where a search answered as many as it
        asks for: one ID on many traces (a session's) filled it, leaving out the other IDs'
        traces. A failed search is said once, and ends the searches."""
        try:
            for group in few_at_a_time(ids):
                asked = self._traces_for(group)
                hits = self._search_once(carrying_any(group)[0], asked, since, capped_said=False)
                yield hits
                if len(hits) < min(asked, self._max_results or asked) or len(group) == 1:
                    continue
                for one in group:
                    yield self._search_once(carrying_any([one])[0], MAX_TRACES_PER_SEARCH, since)
        except BackendError as error:
            self.notes.once(
                f"{self.client.where} failed to search for the other traces of the "
                f"requests listed ({error}): a request is measured over the traces the "
                "filter matched"
            )

    def _traces_for(self, ids: list[str]) -> int:
        """The traces to ask for in one search for the traces carrying ``ids``. A Tempo before
        2.4 lowers a limit over its max_result_limit without a word: an answer there is known
        to be full only at what one ID asks for."""
        return MAX_TRACES_PER_SEARCH * (len(ids) if self._takes_hints else 1)

    def _begun_before(self, found: list[RequestSummary], since_unix_nano: int) -> set[str]:
        """The correlation IDs of ``found`` that a trace started before ``since_unix_nano``
        carries: a pull consumer's trace started since then, its producer's before (and may
        have ended before, out of the search's window). As in the store and ``trace``, such a
        request starts with its earliest trace, before ``--since``, and is not listed. Searched
        for in the longest window a default Tempo allows, up to then; a failed search is said
        once, and the requests are listed as found."""
        ids = [r.correlation_id for r in found if r.correlation_id]

        def failed(error: BackendError, since: str) -> str:
            return (
                f"{self.client.where} failed to search for the traces of the requests "
                f"listed before {since} ({error}): a request whose first trace "
                "started before --since may be listed from its later traces"
            )

        hits = self._started_before(carrying_any(ids), since_unix_nano, failed)
        return {h.correlation_id for h in hits if h.correlation_id is not None}

    def _continuing_before(
        self, found: list[RequestSummary], early: set[str], since_unix_nano: int
    ) -> set[str]:
        """The listed traces carrying no correlation ID whose root links into a trace Tempo
        holds that started before ``since_unix_nano`` (a pull consumer's trace, its producer's
        begun before): as in the store, their request began then, and is not listed. Such a
        trace is one the search found (``early``: it overlapped the window), or one searched
        for by id (TraceQL ``trace:id``) in the longest window a default Tempo allows, up to
        then. Only the listed traces are read, once each, as ``_continued`` reads them."""
        listed = {row.trace_id for row in found}
        links = {}
        for row in found:
            spans = [] if row.correlation_id else self._unnamed_trace(row.trace_id)
            if spans:
                links[row.trace_id] = {link.trace_id for link in root_span(spans).links} - listed
        unknown = sorted(set().union(*links.values()) - early)

        def failed(error: BackendError, since: str) -> str:
            # a Tempo before 2.5 cannot search by trace id
            why = "TraceQL trace:id needs Tempo 2.5 or later" if refused_traceql(error) else error
            return (
                f"{self.client.where} failed to search traces by id before {since} ({why}): a "
                "trace carrying no correlation ID that links into a request begun before "
                "--since is listed on its own"
            )

        hits = self._started_before(with_trace_ids(unknown), since_unix_nano, failed)
        begun = early | {h.trace_id for h in hits}
        return {trace_id for trace_id, into in links.items() if into & begun}

    def _started_before(
        self,
        queries: list[str],
        since_unix_nano: int,
        failed: Callable[[BackendError, str], str],
    ) -> list[Hit]:
        """The hits of ``queries`` that started before ``since_unix_nano``, searched for in the
        longest window a default Tempo allows, up to then. A failed search is said once
        (``failed`` words it), and what was found so far is the answer."""
        since = since_unix_nano / 1e9
        started: list[Hit] = []
        for query in queries:
            try:
                hits = self._search_once(
                    query, MAX_TRACES_PER_SEARCH, since - DEFAULT_WINDOW_SECONDS, until=since
                )
            except BackendError as error:
                self.notes.once(failed(error, _moment(since)))
                break
            started += [h for h in hits if h.start_unix_nano < since_unix_nano]
        return started

    def _with_correlation_id(self, row: RequestSummary, hit: Hit) -> RequestSummary:
        """``row`` with the correlation ID its trace carries when its hit showed none and its
        spans were not grouped by it: Tempo then selects it from the first three spans the
        search matched, which may all be a proxy's that does not carry it. The trace is read
        (and kept for ``_continued``)."""
        if row.correlation_id or hit.names_its_request:
            return row
        carried = carried_correlation_id(self._unnamed_trace(row.trace_id))
        return dataclasses.replace(row, correlation_id=carried) if carried else row

    def _with_root(self, row: RequestSummary, hit: Hit) -> RequestSummary:
        """``row`` named, as the store and Jaeger name it, by the earliest span whose parent is
        missing when Tempo names no root (``NO_ROOT``): a trace whose root it has not received,
        such as one continuing a caller's ``traceparent`` whose span is exported elsewhere. The
        trace is read (and kept for ``_continued``)."""
        if hit.root_service != NO_ROOT:
            return row
        spans = self._unnamed_trace(row.trace_id, "whose search hit names no root")
        if not spans:
            return row
        root = root_span(spans)
        return dataclasses.replace(
            row, root_service=root.service, root_name=root.name, root_attributes=root.attributes
        )

    def _unnamed_trace(
        self, trace_id: str, unnamed: str = "whose search hit shows no correlation ID"
    ) -> list[SpanRecord]:
        """The trace of a hit that does not name its request (``unnamed`` says how); none once
        a read has failed: the hits still list the traces, so a failing read (each taking up to
        the timeout and its retries) is said once and not tried again."""
        if self._unnamed_unreadable:
            return []
        try:
            return self._listed_trace(trace_id)
        except BackendError as error:
            self._unnamed_unreadable = True
            self.notes.once(
                f"{self.client.where} failed to answer trace {trace_id} ({error}): search "
                f"lists the traces {unnamed} as Tempo found them, unread"
            )
            return []

    def _continued(self, rows: list[RequestSummary]) -> dict[str, set[str]]:
        """Each listed trace without a correlation ID whose root links into other listed traces
        (a consumer that began a trace of its own), with those: ``trace`` joins it to their
        request. Tempo's hits carry no links, so these traces alone are read."""
        listed = {row.trace_id for row in rows}
        continues = {}
        for row in rows:
            others = listed - {row.trace_id}
            if row.correlation_id or not others:
                continue
            spans = self._unnamed_trace(row.trace_id)
            into = {link.trace_id for link in root_span(spans).links} & others if spans else set()
            if into:
                continues[row.trace_id] = into
        return continues

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans of the newest traces since then (at most a few hundred traces are read)."""
        return self.newest_spans_since(since_unix_nano, limit=limit)

    def newest_spans_since(self, since_unix_nano: int, *, limit: int) -> list[SpanRecord]:
        """The ``limit`` spans that started last since then, earliest first, of the newest
        traces: read newest first until ``limit`` are held (``LimitedSpanSource``)."""
        since = since_unix_nano / 1e9
        query, most, of = self._newest_traces_query()
        found = self._search(query, most + 1, since, newest=True)
        if self.service is not None and not found:  # a name Tempo holds as sent: "checkout\n"
            query, most, of = self._newest_traces_query(trimmed=True)
            found = self._search(query, most + 1, since, newest=True)
        if len(found) > most:
            self.notes.once(
                f"{self.client.where}: more than {most} traces{of} since "
                f"{_moment(since)}: the newest {most} Tempo found are read (narrow --since)"
            )
        kept: list[SpanRecord] = []
        traces = 0

        def needed() -> int:
            return still_needed(len(kept), traces, limit)

        newest_first = [h.trace_id for h in sorted(found, key=lambda h: -h.start_unix_nano)[:most]]
        for spans in self._listed_traces(newest_first, needed) if limit > 0 else ():
            kept += [s for s in spans if s.start_unix_nano >= since_unix_nano]
            traces += 1
            if len(kept) >= limit:
                break
        return sorted(kept, key=lambda s: s.start_unix_nano)[-limit:]

    def _newest_traces_query(self, *, trimmed: bool = False) -> tuple[str, int, str]:
        """The TraceQL for the newest traces, how many to read, and whose they are (said in a
        notice): every service's for the map; the service's own for ``diff``'s set form, more
        of them, as a canary on a few percent of the traffic is a few percent of the traces
        (``trimmed``: its name with white space around it too, see ``service_is``)."""
        if self.service is None:
            return "{ }", MAX_TRACES_FOR_MAP, ""
        query = "{ " + service_is("resource.service.name", self.service, trimmed=trimmed) + " }"
        return query, MAX_TRACES_OF_A_SERVICE, f" of {self.service!r:.80}"

    def _linking_to(self, trace_ids: list[str], query: str) -> list[str]:
        """The traces ``query`` finds linking into ``trace_ids``; where it answers as many as it
        asks for (100 a trace), each trace alone, so the one with more is named. Once a link
        search has failed (after its retries), the others are not sent: each would wait as long
        to fail, a timing-out Tempo three timeouts a search; their traces are warned alike."""
        if self._link_search_failed is not None:
            return self._unsearched(trace_ids, self._link_search_failed)
        if not self._can_search_links:
            for trace_id in trace_ids:
                self.notes.warn(trace_id, self._no_link_search())
            return []
        try:
            hits, more = self._search_at_most(query, MAX_TRACES_PER_SEARCH * len(trace_ids))
        except BackendError as error:
            if refused_traceql(error) and len(trace_ids) > 1:  # the || too: each alone tells
                return self._linking_to_each(trace_ids)
            if refused_traceql(error):
                self._can_search_links = False
                return self._linking_to(trace_ids, query)
            self._link_search_failed = error
            return self._unsearched(trace_ids, error)
        full = more or len(hits) >= (self._max_results or len(hits) + 1)
        if full and len(trace_ids) > 1:
            return self._linking_to_each(trace_ids)
        if more:
            self.notes.warn(
                trace_ids[0],
                f"more than {MAX_TRACES_PER_SEARCH} traces link to trace {trace_ids[0]}: joining "
                f"the {MAX_TRACES_PER_SEARCH} Tempo found first",
            )
        return [hit.trace_id for hit in hits]

    def _unsearched(self, trace_ids: list[str], error: BackendError) -> list[str]:
        """None found: a warning of each trace's path that its links could not be searched."""
        for trace_id in trace_ids:
            self.notes.warn(
                trace_id,
                f"traces linking to {trace_id} could not be searched "
                f"({error}); a trace joined only by such a link may be missing",
            )
        return []

    def _linking_to_each(self, trace_ids: list[str]) -> list[str]:
        """``_linking_to`` one trace a search."""
        alone = [linking_to_any([trace_id])[0] for trace_id in trace_ids]
        return [found for ids, query in alone for found in self._linking_to(ids, query)]

    def _no_link_search(self) -> str:
        return (
            f"{self.client.where} cannot search span links (TraceQL link:traceID "
            "needs Tempo 2.6 or later): traces that only link into this request are not shown"
        )

    def _summary(self, hit: Hit) -> RequestSummary:
        spans, errors = hit.span_count, hit.error_count
        root: Attributes = {}  # the root's attributes, where the trace is read
        if spans is None or errors is None:  # no serviceStats: count the trace itself
            self.notes.once(
                f"{self.client.where} sent no serviceStats (Tempo before "
                "2.5, or blocks older than vParquet4): reading each trace found to "
                "count its spans and errors"
            )
            trace = self._listed_trace(hit.trace_id)
            spans, errors = len(trace), sum(1 for s in trace if s.status == "ERROR")
            self._counted_by_reading.add(hit.trace_id)
            root = root_span(trace).attributes if trace else {}
        return RequestSummary(
            hit.correlation_id, hit.trace_id, hit.root_service, hit.root_name,
            hit.start_unix_nano, hit.duration_ms, spans, errors > 0,
            task_name(root), root,
        )  # fmt: skip

    def _fetch_trace(self, trace_id: str) -> list[SpanRecord]:
        try:
            return self._fetch_whole_trace(trace_id)
        except AnswerTooLarge as error:  # this trace alone: the others may still be read
            self._leave_out(trace_id, f"answered trace {trace_id} with {error.what}")
        except HTTPStatusError as error:
            if error.status != 422:  # Tempo's "not this one trace": the others may still be read
                raise
            self._leave_out(trace_id, f"refused trace {trace_id} (HTTP 422: {error.detail})")
        return []

    def _leave_out(self, trace_id: str, what_tempo_did: str) -> None:
        """One trace that cannot be read (a Tempo before 2.7 refuses one over its
        ``max_bytes_per_trace`` where a later one returns it in part; one too large to read):
        a warning of the path it belongs to (``_listed_trace`` says it for the others)."""
        self._unreadable[trace_id] = f"{self.client.where} {what_tempo_did}"
        self.notes.warn(trace_id, f"{self._unreadable[trace_id]}: it is left out")

    def _listed_trace(self, trace_id: str) -> list[SpanRecord]:
        """One trace a search found, for a command that shows no path (search, services,
        diff's set form): one left out is said on stderr, once."""
        return next(self._listed_traces([trace_id]))

    def _listed_traces(
        self, trace_ids: list[str], width: Callable[[], int] = lambda: PARALLEL_READS
    ) -> Iterator[list[SpanRecord]]:
        """``_listed_trace`` of each in turn, a few read at once (``Traces.each``)."""
        read = self._traces.each(trace_ids, width)
        for trace_id, spans in zip(trace_ids, read, strict=False):
            if trace_id in self._unreadable:
                said = f"{self._unreadable[trace_id]}: it is left out"
                self.notes.once(said, key="left out a trace")
            yield spans

    def _fetch_whole_trace(self, trace_id: str) -> list[SpanRecord]:
        if self._use_v2:
            try:
                document = self.client.get(f"/api/v2/traces/{trace_id}", _UNPRUNED)
                return self._read_v2(trace_id, document)
            except NotFound as missing:
                if not missing.no_such_endpoint:
                    return []
                self._use_v2 = False  # a Tempo before 2.6: the v1 endpoint it is
        try:
            document = self.client.get(f"/api/traces/{trace_id}")
        except NotFound as missing:
            if missing.no_such_endpoint:
                raise BackendError(
                    f"{self.client.where} has no /api/traces: is "
                    "this Tempo's HTTP API (with its path prefix)?"
                ) from None
            return []
        return spans_from_batches(_field(document, "batches", _V1_KEYS), self._left_out)

    def _read_v2(self, trace_id: str, document: Any) -> list[SpanRecord]:
        trace = _field(document, "trace", _V2_KEYS, {})
        batches = _field(trace, "resourceSpans", frozenset({"resourceSpans"}))
        spans = spans_from_batches(batches, self._left_out)
        if isinstance(document, dict) and document.get("status") == "PARTIAL":
            message = document.get("message")
            said = self.client.printable(message) if isinstance(message, str) else ""
            reason = said or "no reason given"
            self.notes.warn(trace_id, f"Tempo returned trace {trace_id} only in part: {reason}")
        return spans

    def _search_at_most(self, query: str, most: int) -> tuple[list[Hit], bool]:
        """The first ``most`` hits of ``query`` Tempo finds, and whether it holds more."""
        hits = self._search(query, most + 1)
        return hits[:most], len(hits) > most

    def _search(
        self, query: str, limit: int, since: float | None = None, *, newest: bool = False
    ) -> list[Hit]:
        """Hits of ``query``; ``newest``: the newest ``limit`` (Tempo otherwise answers the
        first it finds, which in a busy window need not be the newest)."""
        if not (newest and self._takes_hints):
            return self._search_once(query, limit, since)
        try:
            return self._search_once(query + _MOST_RECENT, limit, since)
        except BackendError as error:
            if not refused_traceql(error):
                raise
        # a Tempo before 2.4 refuses the hint: the query without it tells if that was all
        hits = self._search_once(query, limit, since)
        self._takes_hints = False
        self.notes.once(
            f"{self.client.where} takes no TraceQL query hints (Tempo "
            "before 2.4): a search lists the first traces Tempo finds, which in a busy "
            "window may not be the newest"
        )
        return hits

    def _search_once(
        self,
        query: str,
        limit: int,
        since: float | None,
        until: float | None = None,
        *,
        capped_said: bool = True,
    ) -> list[Hit]:
        """One search from ``since`` to ``until`` (default: now), in the window Tempo allows;
        narrowed, a search up to now says so once, and one cut by Tempo's max_result_limit
        too, unless ``capped_said`` is False (the caller searches again for what was cut)."""
        most = self._max_window[0] if self._max_window else None
        start, end, cut = window(since, most, until)
        if start >= end:  # since after now: nothing to find, and Tempo refuses such a window
            return []
        asked = min(limit, self._max_results or limit)
        params = {"q": query, "limit": str(asked), "start": str(start), "end": str(end)}
        try:
            answer = self.client.get("/api/search", params)
        except NotFound:
            raise BackendError(
                f"{self.client.where} has no /api/search: is "
                "this Tempo's HTTP API (with its path prefix)?"
            ) from None
        except BackendError as error:
            most_results = result_limit(error)
            if most_results is not None and most_results < asked:
                self._max_results = most_results
                return self._search_once(query, limit, since, until, capped_said=capped_said)
            learnt = window_limit(error)
            if learnt is None or learnt[0] >= end - start:
                raise
            self._max_window = learnt
            return self._search_once(query, limit, since, until, capped_said=capped_said)
        if cut and until is None:
            self._say_window_narrowed(start)
        hits = read_hits(answer, self._left_out)[:asked]  # a server ignoring limit: no more
        if capped_said and asked < limit and len(hits) >= asked:
            self.notes.once(
                f"{self.client.where} answers at most {asked} traces a search (its "
                "max_result_limit): more traces than that in the window are not read",
                key="results capped",
            )
        return hits

    def _say_window_narrowed(self, start: int) -> None:
        assert self._max_window is not None
        self.notes.once(
            f"{self.client.where} searches at most {self._max_window[1]} "
            f"at a time: searching only since {_moment(start)}",
            key="window narrowed",  # one notice, though each search starts a moment later
        )


def _with_root_attributes(row: RequestSummary, selected: Attributes) -> RequestSummary:
    """``row`` with the task its root names and the attributes a search selected of it
    (``roots_of``), where the row does not hold its root's attributes already (read)."""
    if not selected:
        return row
    return dataclasses.replace(
        row,
        root_task=task_name(selected) or row.root_task,
        root_attributes=row.root_attributes or selected,
    )


def _moment(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _field(document: Any, name: str, keys: frozenset[str], default: Any = None) -> Any:
    """``document[name]``; BackendError when the document is not a JSON object, or one of
    another API (none of ``keys``, the fields of Tempo's answer, in it)."""
    if not isinstance(document, dict):
        raise BackendError("Tempo answered a trace that is not a JSON object")
    if of_another_api(document, keys):
        raise BackendError("Tempo answered a trace that is not a Tempo trace document (is the "
                           "URL Tempo's API?)")  # fmt: skip
    return document.get(name, [] if default is None else default)
