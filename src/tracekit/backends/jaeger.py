"""Jaeger as a read backend (api_v3 over HTTP, as jaeger-query serves it on port 16686).

Jaeger 1.54 or later, or any 2.x (the base URL may carry Jaeger's ``--query.base-path``):

- trace by id: ``GET /api/v3/traces/<id>?raw_traces=true`` answering ``{"result":
  {"resourceSpans": [...]}}``; raw (``query.raw_traces=true`` in a search): the spans as the
  services sent them, as the store holds them, not as Jaeger's adjusters rewrite them;
- search: ``GET /api/v3/traces?query.service_name=&query.attributes=&query.start_time_min=
  &query.start_time_max=&query.num_traces=&query.duration_min=`` (RFC 3339 times, Go durations),
  each snake_case parameter also by its camelCase name, which Jaeger reads first from 2.19 on
  (``_CAMEL_CASE``).
  Most storages need a service name, so without one the client asks ``GET /api/v3/services`` and
  searches each service (a bounded number of them). Jaeger before 2.19 ignores
  ``query.attributes``: tracekit then filters the traces it gets client-side and says so once;
- Jaeger answers ``404 {"error": {"httpCode": 404, "message": "No traces found"}}`` for an empty
  search or an unknown trace; any other 404 (a bare ``404 page not found``: the server has no
  api_v3; a proxy's page: a wrong base path) is an error;
- Jaeger cannot search by span link and stores no logs: ``trace_ids_linking_to`` and
  ``logs_by_trace_ids`` find nothing (a consumer trace without the correlation ID is joined only
  when a span already found links to it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tracekit import semconv
from tracekit.backends._duration import go_duration
from tracekit.backends._http import AnswerTooLarge, HTTPStatusError, NotFound, of_another_api
from tracekit.backends._jaeger_summary import summaries
from tracekit.backends._notes import Notify
from tracekit.backends._otlp_json import Wanted, spans_from_batches
from tracekit.backends._read_ahead import PARALLEL_READS, in_order
from tracekit.backends._remote import CLOCK_SLACK_SECONDS, RemoteSource
from tracekit.backends._requests import carried_correlation_id, root_span
from tracekit.records import (
    CORRELATION_ATTRIBUTE,
    BackendError,
    LogRecordData,
    RequestSummary,
    SpanRecord,
    service_name,
)
from tracekit.store._limits import MAX_NAME_CHARS

__all__ = [
    "CLOCK_SLACK_SECONDS",
    "LOOKBACK_SECONDS",
    "MAX_PAGES",
    "MAX_SEARCH_SPANS",
    "MAX_SERVICES",
    "MAX_TRACES_PER_SEARCH",
    "JaegerSource",
    "rfc3339",
]

LOOKBACK_SECONDS = 2 * 24 * 3600
MAX_SERVICES = 200  # one search each: `--service` makes it one
_MAX_SPELLINGS = 10  # names Jaeger lists that trim to `--service`: one search each
MAX_TRACES_PER_SEARCH = 100
MAX_SEARCH_SPANS = 100_000  # what `search` holds of the traces Jaeger's searches answer
MAX_PAGES = 20  # searches of one service's window, MAX_TRACES_PER_SEARCH traces each
# The spans as the services sent them: from 1.65 and 2.2 on, Jaeger otherwise runs its adjusters
# (a consumer quicker than its publish is moved into it, warnings become span attributes); an
# earlier Jaeger adjusts nothing here and ignores the parameter, as every api_v3 release does
# a parameter it does not know
_RAW_TRACE = {"raw_traces": "true"}
_RAW_SEARCH = {"query.raw_traces": "true"}
# Each parameter also by its camelCase name: from Jaeger 2.19 (jaegertracing/jaeger#8625) that is
# the name read first, the snake_case one a deprecated alias whose every use Jaeger logs as a
# warning and answers with "Deprecation: true", to be removed; an earlier Jaeger reads the
# snake_case name and ignores the other, as it ignores any parameter it does not know
_CAMEL_CASE = {
    "raw_traces": "rawTraces", "query.raw_traces": "query.rawTraces",
    "query.service_name": "query.serviceName", "query.num_traces": "query.searchDepth",
    "query.start_time_min": "query.startTimeMin", "query.start_time_max": "query.startTimeMax",
    "query.duration_min": "query.durationMin",
}  # fmt: skip
_SERVICES_KEYS = frozenset({"services"})
_NOT_SENT = frozenset({"receive", "settle", "process"})  # messaging CLIENT spans, no publish
# told of a search answer holding as many traces as tracekit asks for: the service, the traces
# it answered, and the spans of those not answered before
_Capped = Callable[[str, set[str], list[SpanRecord]], None]


def rfc3339(unix_seconds: float) -> str:
    """A UTC timestamp as api_v3 wants it."""
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JaegerSource(RemoteSource):
    """Reads spans from Jaeger's api_v3; implements ``tracekit.records.SpanSource``.

    ``headers`` go with every request (a tenant header, ``Authorization``); ``notify`` hears
    notices such as a fallback to client-side filtering (default: a log warning).
    ``service``: the one service searched (``trace --service``, ``services --service``).
    ``newest_of``: ``newest_spans_since`` reads that service's traces (``diff``'s set form), while
    a correlation ID is still searched in every service, as ``trace`` searches it: a request's
    trace that has no span there (a pull consumer's) is part of it.
    """

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, retries: int = 2, service: str | None = None,
        headers: Mapping[str, str] | None = None, notify: Notify | None = None,
        total_timeout: float | None = None,
        newest_of: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            base_url, name="Jaeger", timeout=timeout, retries=retries, headers=headers,
            notify=notify, total_timeout=total_timeout,
        )  # fmt: skip
        self.service = service
        self.newest_of = newest_of or service
        self._listed: list[str] | None = None  # the services Jaeger lists, asked for once
        self._filters = False  # whether an answer showed query.attributes applied (2.19 on)

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Spans carrying ``correlation.id``, searched service by service."""
        capped: list[str] = []
        spans = list(self._correlated(correlation_id, capped))
        self._say_more_carry_it(list(dict.fromkeys(s.trace_id for s in spans)), capped)
        return spans

    def _trace_starts(self, correlation_id: str, limit: int) -> list[tuple[str, int]]:
        """Searched service by service, each trace's start its earliest span carrying the ID:
        no more than one search answer is held at a time."""
        starts: dict[str, int] = {}
        capped: list[str] = []
        for span in self._correlated(correlation_id, capped):
            first = starts.get(span.trace_id, span.start_unix_nano)
            starts[span.trace_id] = min(first, span.start_unix_nano)
        found = sorted(starts.items(), key=lambda t: t[1])[:limit]
        self._say_more_carry_it([trace_id for trace_id, _ in found], capped)
        return found

    def _say_more_carry_it(self, trace_ids: list[str], capped: list[str]) -> None:
        """A warning of the path of ``trace_ids`` when a service's search for the correlation
        ID answered as many traces as tracekit asks for (``capped`` names those services)."""
        for trace_id in trace_ids if capped else []:
            self.notes.warn(
                trace_id,
                f"more than {MAX_TRACES_PER_SEARCH} traces of {capped[0]!r:.80} carry this "
                f"correlation ID: showing the newest {MAX_TRACES_PER_SEARCH} Jaeger found",
            )

    def searched_back(self) -> str:
        """How far back a search for a correlation ID looks (``LOOKBACK_SECONDS``)."""
        return f"{LOOKBACK_SECONDS // 86400} days"

    def warnings_for(self, trace_ids: Iterable[str]) -> list[str]:
        """What a path built from these traces should warn about (a correlation ID on more
        traces than a search answers)."""
        return self.notes.warnings_for(trace_ids)

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Jaeger cannot search by link: none are found, and the path of a trace that published
        a message no span read consumes says so (a pull consumer that began a trace of its own
        without the correlation ID is not shown: the path ended at the publish, without a word)."""
        held = self._traces.held()
        consumed = {s.parent_span_id for s in held if s.kind == "CONSUMER"}
        consumed |= {link.span_id for s in held for link in s.links}
        wanted = set(trace_ids)
        unconsumed = {s.trace_id for s in held if s.trace_id in wanted and _publishes(s)
                      and s.span_id not in consumed}  # fmt: skip
        for trace_id in sorted(unconsumed):
            self.notes.warn(trace_id, self._unconsumed())
        return set()

    def _unconsumed(self) -> str:
        return (
            f"{self.client.where} cannot search span links: a message published in this request "
            "has no consumer here, and a consumer that began a trace of its own without the "
            "correlation ID is not shown (tracekit trace <its trace id> shows it with this "
            "request)"
        )

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Jaeger holds no logs."""
        return []

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        """Newest traces of the service(s), summarised by their root span."""
        # without --since, as far back as `trace` looks here: two days
        since = time.time() - LOOKBACK_SECONDS if since_unix_nano is None else since_unix_nano / 1e9
        if service:
            spans = self._until_found(service, since, limit, min_duration_ms, errors_only)
        else:
            spans = self._search_within_budget(self._services(), since, limit, min_duration_ms)
        if errors_only:
            read = f"the traces of {service!r:.80} it reads"
            if not service:
                read = f"the newest {limit} it reads per service"
            self.notes.once(
                f"Jaeger's api_v3 cannot search by status: tracekit keeps the traces "
                f"in error among {read}"
            )
        found = _matching(summaries(spans), service, min_duration_ms, errors_only)
        if since_unix_nano is not None:
            begun = self._begun_before(spans, since_unix_nano)
            found = [r for r in found if not {r.trace_id, r.correlation_id} & begun]
        return sorted(found, key=lambda r: -r.start_unix_nano)[:limit]

    def _until_found(
        self, service: str, since: float, limit: int, min_duration_ms: float | None,
        errors_only: bool,
    ) -> list[SpanRecord]:  # fmt: skip
        """The spans of ``service``'s traces in the window, newest first, read page by page
        until they hold ``limit`` requests that match, or more than ``MAX_SEARCH_SPANS`` spans.
        Jaeger finds a trace by any of its spans: the requests whose root is in a service
        mostly called by others can be older than its newest hundred traces."""
        held: list[SpanRecord] = []
        for page in self._pages_of(since, service, min_duration_ms):
            held += page
            found = _matching(summaries(held), service, min_duration_ms, errors_only)
            if len(found) >= limit:
                break
            if len(held) > MAX_SEARCH_SPANS:
                self.notes.once(
                    f"{self.client.where}: the newest traces of {service!r:.80} read hold "
                    f"more than {MAX_SEARCH_SPANS} spans: older ones in the window are not "
                    "read (narrow --since)"
                )
                break
        return held

    def _begun_before(self, spans: list[SpanRecord], since_unix_nano: int) -> set[str | None]:
        """The trace and correlation IDs of the traces of ``spans`` whose root links into a
        trace that started before ``since_unix_nano``: a pull consumer's trace found since then,
        its producer's started before, outside the search's window. As in the store and
        ``trace``, that request starts with its producer's trace and is not listed. Those
        traces are read by id (one that Jaeger does not hold, a caller's from outside, leaves
        the trace an entry); a failed read is said once, and the requests are listed as found."""
        by_trace: dict[str, list[SpanRecord]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        begun: set[str | None] = set()
        for trace_id, trace in by_trace.items():
            outside = _joined_through_links(trace) - by_trace.keys()
            try:
                linked = self.spans_by_trace_ids(sorted(outside))
            except BackendError as error:
                self.notes.once(
                    f"{self.client.where} failed to answer a trace linked from a request "
                    f"listed ({error}): a request whose first trace started before --since "
                    "may be listed from its later traces"
                )
                return begun
            if any(s.start_unix_nano < since_unix_nano for s in linked):
                begun |= {trace_id, carried_correlation_id(trace)}
        return begun - {None}

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans of the newest traces of every service since then."""
        return self.newest_spans_since(since_unix_nano, limit=limit)

    def newest_spans_since(self, since_unix_nano: int, *, limit: int) -> list[SpanRecord]:
        """The ``limit`` spans that started last since then, earliest first, of the newest
        traces of every service: each answer added to those held, which are cut back to the
        newest ``limit`` before the next is read (``LimitedSpanSource``)."""
        since = since_unix_nano / 1e9
        answers = (
            self._pages_of(since, self.newest_of)
            if self.newest_of
            else self._searches(self._services(), {}, since, capped=self._say_capped)
        )
        kept: list[SpanRecord] = []
        for spans in answers:
            kept += [s for s in spans if s.start_unix_nano >= since_unix_nano]
            kept = sorted(kept, key=lambda s: s.start_unix_nano)[-limit:]
            if self.newest_of and len(kept) >= limit:
                break  # one service's next page is older than every span held
        return kept

    def _pages_of(
        self, since: float, service: str, min_duration_ms: float | None = None
    ) -> Iterator[list[SpanRecord]]:
        """``_pages`` of ``service`` as typed; where they hold no trace, those of each name
        Jaeger lists that is ``service`` once trimmed (``_trimmed_to``)."""
        found = False
        for page in self._pages(since, service, min_duration_ms):
            found = found or bool(page)
            yield page
        for name in [] if found else self._trimmed_to(service):
            yield from self._pages(since, name, min_duration_ms)

    def _trimmed_to(self, service: str) -> list[str]:
        """The names other than ``service`` that Jaeger lists and that are ``service`` without
        the white space around them, as the store keeps a name: an SDK that read
        ``OTEL_SERVICE_NAME`` from a file sends ``"checkout\\n"``, which Jaeger keeps as sent
        and finds only for that name. At most ``_MAX_SPELLINGS`` of them, one search each (a
        sender writing a new spelling every time would make each command hundreds), said once."""
        names = [n for n in self._listed_names() if n != service and service_name(n) == service]
        if len(names) > _MAX_SPELLINGS:
            self.notes.once(
                f"{self.client.where} lists {len(names)} names that are {service!r:.80} with white"
                f" space around them: searching the first {_MAX_SPELLINGS}"
            )
        return names[:_MAX_SPELLINGS]

    def _pages(
        self, since: float, service: str, min_duration_ms: float | None = None
    ) -> Iterator[list[SpanRecord]]:
        """The traces of the one service (``--service``) in the window, newest first, one search
        answer at a time (up to ``MAX_PAGES``): api_v3 has no paging, so each next search ends
        where the traces of the last answer began. One search of 100 traces held too few of a
        canary's requests to compare (10 in 100 at 10% of the traffic), however long the window."""
        high, answered = time.time() + CLOCK_SLACK_SECONDS, set[str]()
        for _ in range(MAX_PAGES):
            if since >= high:
                return
            window = (since, high)
            params = _search_params(service, {}, window, MAX_TRACES_PER_SEARCH, min_duration_ms)
            found, _, asked = self._search(params)
            yield [s for s in found if s.trace_id not in answered]
            answered.update(s.trace_id for s in found)
            full = len({s.trace_id for s in found}) >= asked
            # api_v3 times are whole microseconds: the next page keeps the boundary's microsecond
            boundary = _page_end(found, service_name(service), since, high) + 1e-6
            if not full or boundary >= high:
                return
            high = boundary
        self.notes.once(
            f"{self.client.where}: read the newest "
            f"{len(answered)} traces of {service!r:.80}: older ones in "
            "the window are not read (narrow --since)"
        )

    def _services(self) -> list[str]:
        if self.service:
            return [self.service]
        names = self._listed_names()
        if self.newest_of:  # the set form's requests enter there: first, never past the cap
            names = [self.newest_of, *(n for n in names if n != self.newest_of)]
        if len(names) > MAX_SERVICES:
            self.notes.once(
                f"{self.client.where} lists {len(names)} services: {self._searched_of_too_many()}"
            )
        return names[:MAX_SERVICES]

    def _listed_names(self) -> list[str]:
        """The services Jaeger lists, asked for once (the set form searches every service per
        request)."""
        if self._listed is None:
            self._listed = self._service_names(self._get("/api/v3/services"))
        return self._listed

    def _searched_of_too_many(self) -> str:
        """Which services a correlation ID is searched in when Jaeger lists too many."""
        if not self.newest_of:
            return (
                f"tracekit searches the first {MAX_SERVICES} by name, so a request only in the "
                "others is not found (name one of its services with --service)"
            )
        return (
            f"tracekit searches each request in {self.newest_of!r:.80} and the first "
            f"{MAX_SERVICES - 1} others by name, so a request's traces only in the others are "
            "left out"
        )

    def _service_names(self, answer: Any) -> list[str]:
        """The names in a ``GetServices`` answer (``{"services": [...]}``), each once, sorted; a
        name that is no string or longer than the store keeps one is left out, and said."""
        if answer is None:  # Jaeger's own "not found"
            return []
        listed = (answer.get("services") or []) if isinstance(answer, dict) else None
        if not isinstance(listed, list) or of_another_api(answer, _SERVICES_KEYS):
            raise BackendError("Jaeger answered something that is not an api_v3 services document")
        if not all(_is_name(s) for s in listed):
            self._left_out("a service name that is no name")
        return sorted({s for s in listed if _is_name(s)})

    def _fetch_trace(self, trace_id: str) -> list[SpanRecord]:
        return self._spans(self._get(f"/api/v3/traces/{trace_id}", _RAW_TRACE))

    def _search_within_budget(
        self, services: list[str], since: float, limit: int, min_duration_ms: float | None
    ) -> list[SpanRecord]:
        """The newest ``limit`` traces of each service, searched no further once they hold more
        than ``MAX_SEARCH_SPANS`` spans (and that said)."""
        held: list[SpanRecord] = []
        answers = self._searches(services, {}, since, limit=limit, min_duration_ms=min_duration_ms)
        for searched, spans in enumerate(answers, 1):
            held += spans
            if len(held) > MAX_SEARCH_SPANS and searched < len(services):
                self.notes.once(
                    f"{self.client.where}: the newest traces of {searched} of "
                    f"{len(services)} services hold more than {MAX_SEARCH_SPANS} spans: the "
                    "other services are not searched (name one with --service)"
                )
                break
        return held

    def _searches(
        self, services: list[str], attributes: dict[str, str], since: float, *,
        limit: int = MAX_TRACES_PER_SEARCH, min_duration_ms: float | None = None,
        capped: _Capped | None = None, ahead: Callable[[], int] = lambda: 1,
    ) -> Iterator[list[SpanRecord]]:  # fmt: skip
        """The spans of each service's search answer, one answer at a time, less the traces an
        earlier answer held (Jaeger answers whole traces, whichever service found them).
        ``ahead()``: how many searches are sent at once, their answers read in turn (more than
        one only for searches answering few traces: each answer waiting is held whole).

        ``capped`` hears of an answer that reaches ``limit`` (the service and its spans) where
        ``limit`` is tracekit's own bound, not the reader's: that service's older traces in the
        window are not read.
        """
        until = time.time() + CLOCK_SLACK_SECONDS
        if since >= until:  # nothing to find, and Jaeger 2.19 and later refuse such a window
            return
        answered: set[str] = set()
        failed: dict[str, HTTPStatusError] = {}
        planned = [
            (service, _search_params(service, attributes, (since, until), limit, min_duration_ms))
            for service in services
        ]
        sent = in_order(self._sent_ahead, planned, ahead)
        try:
            for (service, params), first in sent:
                searched = self._search_answer(service, params, failed, answered, first)
                if searched is None:
                    continue
                found, traces = searched
                self._check_attributes_applied(found, attributes, limit)
                if capped and len(traces) >= limit:
                    capped(service, traces, found)
                yield found
                answered |= traces
        finally:  # also when the reader stops early: what failed until then is said
            if 0 < len(failed) < len(set(services)):
                self._say_search_failed(*next(iter(failed.items())))
        if failed and len(failed) == len(set(services)):
            raise next(iter(failed.values()))  # nothing else to show: the error is the answer

    def _searches_ahead(self) -> int:
        """Searches for a correlation ID sent at once: several where Jaeger answers only the
        traces carrying it (2.19 on); one at a time until an answer shows it does (before, it
        answers 100 whole traces a search, which would wait in memory)."""
        return PARALLEL_READS if self._filters else 1

    def _sent_ahead(self, planned: tuple[str, dict[str, str]]) -> _Answered:
        """One service's search, sent while the answers before it are read."""
        return _Answered(lambda: self._get("/api/v3/traces", planned[1]))

    def _search_answer(
        self, service: str, params: dict[str, str], failed: dict[str, HTTPStatusError],
        answered: set[str], first: _Answered | None = None,
    ) -> tuple[list[SpanRecord], set[str]] | None:  # fmt: skip
        """The spans of one service's search answer but those of the traces ``answered``
        before, and every trace it answered; None when Jaeger's storage failed it (HTTP 500),
        which ``failed`` keeps: the other services' answers still tell (Jaeger answers whole
        traces)."""
        try:
            found, traces, _ = self._search(params, answered, first)
            return found, traces
        except HTTPStatusError as error:
            if error.status != 500:  # a refusal of the query itself: every search would fail
                raise
            failed[service] = error
            return None

    def _search(
        self, params: dict[str, str], held: Container[str] = frozenset(),
        first: _Answered | None = None,
    ) -> tuple[list[SpanRecord], set[str], int]:  # fmt: skip
        """The spans a search answers but those of the traces ``held`` (read before: a request
        over ten services was answered, and read, ten times whole), every trace it answered,
        and how many traces it asked for: fewer than ``query.num_traces`` when that many whole
        traces are more than any answer may hold (a quarter as many each time, said once),
        rather than no answer at all. ``first``: the answer to ``params``, sent already."""
        asked = int(params["query.num_traces"])
        while True:
            try:
                return *self._answer(params, asked, held, first), asked
            except AnswerTooLarge:
                if asked == 1:
                    raise
                asked, first = max(1, asked // 4), None
                self.notes.once(
                    f"{self.client.where}: a search's whole traces are more than "
                    "an answer may hold (64 MiB of JSON): asking for a quarter as many at a "
                    "time, so older traces in the window may not be read (narrow --since)",
                    key="fewer traces",
                )

    def _answer(
        self, params: dict[str, str], asked: int, held: Container[str], first: _Answered | None
    ) -> tuple[list[SpanRecord], set[str]]:
        """One search for ``asked`` traces (``first``: its answer, sent already): the spans of
        those not ``held``, and every trace."""
        traces: set[str] = set()

        def unread(trace_id: str) -> bool:
            traces.add(trace_id)
            return trace_id not in held

        if first is None:
            answer = self._get("/api/v3/traces", {**params, "query.num_traces": str(asked)})
        else:
            answer = first.answer()
        return self._spans(answer, unread), traces

    def _say_capped(self, service: str, traces: set[str], found: list[SpanRecord]) -> None:
        self.notes.once(
            f"{self.client.where}: a service's search answered {MAX_TRACES_PER_SEARCH} "
            "traces, the most tracekit asks for: that service's older traces in the "
            "window are not read (narrow --since)"
        )

    def _say_search_failed(self, service: str, error: HTTPStatusError) -> None:
        self.notes.once(
            f"{self.client.where}: the search of service {service!r:.80} failed "
            f"(HTTP 500: {error.detail}): traces found only there are missing (and so for any "
            "other service whose search fails)"
        )

    def _correlated(self, correlation_id: str, capped: list[str]) -> Iterator[SpanRecord]:
        """The spans carrying ``correlation_id``, searched service by service; ``capped`` gets
        the services whose answer held as many traces carrying it as tracekit asks for (not
        those of a Jaeger that ignored the filter: its traces need not carry the ID)."""

        carried: set[str] = set()  # the traces read so far that carry it

        def full(service: str, traces: set[str], found: list[SpanRecord]) -> None:
            carrying = {s.trace_id for s in found if s.correlation_id == correlation_id}
            if len(carrying | (traces & carried)) >= MAX_TRACES_PER_SEARCH:
                capped.append(service)

        attributes = {CORRELATION_ATTRIBUTE: correlation_id}
        since = time.time() - LOOKBACK_SECONDS
        ahead = self._searches_ahead
        for spans in self._searches(self._services(), attributes, since, capped=full, ahead=ahead):
            carrying = [s for s in spans if s.correlation_id == correlation_id]
            carried.update(s.trace_id for s in carrying)
            yield from carrying
        others = [] if carried or not self.service else self._trimmed_to(self.service)
        for spans in (
            self._searches(others, attributes, since, capped=full, ahead=ahead) if others else []
        ):
            yield from (s for s in spans if s.correlation_id == correlation_id)

    def _check_attributes_applied(
        self, spans: list[SpanRecord], attributes: dict[str, str], limit: int
    ) -> None:
        """Jaeger before 2.19 ignores ``query.attributes``: a trace without them gives it away."""
        by_trace: dict[str, bool] = {}
        for span in spans:
            matches = all(span.attributes.get(k) == v for k, v in attributes.items())
            by_trace[span.trace_id] = by_trace.get(span.trace_id, False) or matches
        self._filters = self._filters or bool(attributes and by_trace and all(by_trace.values()))
        if attributes and not all(by_trace.values()):
            self.notes.once(
                f"{self.client.where} ignores query.attributes (it needs "
                "Jaeger 2.19 or later): tracekit filters client-side among the newest "
                f"{limit} traces of each service, so older requests can be missed"
            )

    def _spans(self, answer: Any, wanted: Wanted = lambda trace_id: True) -> list[SpanRecord]:
        """The spans of one api_v3 answer (``{"result": {"resourceSpans": [...]}}``), but those
        of the traces ``wanted`` refuses."""
        if answer is None:
            return []
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise BackendError("Jaeger answered something that is not an api_v3 traces document")
        batches = result.get("resourceSpans") or []
        return _once_each(spans_from_batches(batches, self._left_out, wanted))

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The answer at ``path``; None for Jaeger's own "not found", an error for any other
        404 (a route Jaeger does not have, a proxy's page for a path it does not serve) and for
        a JSON null, which no api_v3 release answers."""
        try:
            answer = self.client.get(path, params and _both_names(params))
        except NotFound as missing:
            if _not_found_by_jaeger(missing.document):
                return None
            answered = missing.body
            if not missing.no_such_endpoint:
                answered = "HTTP 404" + (f": {missing.body}" if missing.body else "")
            raise BackendError(
                f"{self.client.where} has no api_v3 ({path} answered {answered}): "
                "tracekit needs Jaeger 1.54 or later, and the URL with Jaeger's base path"
            ) from None
        if answer is None:  # JSON null: Jaeger's "nothing found" is its 404 document, never this
            raise BackendError(
                f"{self.client.where} answered null at {path}, not an api_v3 document: is the "
                "URL Jaeger's, with its base path?"
            )
        return answer


class _Answered:
    """What a search sent ahead answered, or the error it raised, given back in its turn."""

    def __init__(self, send: Callable[[], Any]) -> None:
        self._answer: Any = None
        self._error: BackendError | None = None
        try:
            self._answer = send()
        except BackendError as error:
            self._error = error

    def answer(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._answer


def _matching(
    rows: list[RequestSummary], service: str | None, min_duration_ms: float | None,
    errors_only: bool,
) -> list[RequestSummary]:  # fmt: skip
    """The requests of ``rows`` that ``search``'s filters keep."""
    return [
        r
        for r in rows
        if (r.error or not errors_only)
        and (service is None or r.root_service == service)  # a root, not any span, there
        and (min_duration_ms is None or r.duration_ms >= min_duration_ms)
    ]


def _publishes(span: SpanRecord) -> bool:
    """A PRODUCER span, or a messaging CLIENT span that is a send, as a queue hop starts: not
    a pull's "receive" nor a "settle" (an ack, a nack), CLIENT spans of the system too."""
    if span.kind != "CLIENT" or semconv.MESSAGING_SYSTEM not in span.attributes:
        return span.kind == "PRODUCER"
    operation = span.attributes.get(semconv.MESSAGING_OPERATION_TYPE)
    if operation is None:
        operation = span.attributes.get("messaging.operation")  # the older name
    return operation not in _NOT_SENT


def _both_names(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with each also under its camelCase name (``_CAMEL_CASE``)."""
    return {**params, **{_CAMEL_CASE[k]: v for k, v in params.items() if k in _CAMEL_CASE}}


def _once_each(spans: list[SpanRecord]) -> list[SpanRecord]:
    """The first of each (trace, span id): a raw trace keeps a span that a retried export left
    twice in the storage (Jaeger's adjusters dropped it), where the store keeps one."""
    first: dict[tuple[str, str], SpanRecord] = {}
    for span in spans:
        first.setdefault((span.trace_id, span.span_id), span)
    return list(first.values())


def _is_name(value: Any) -> bool:
    """A service name as the store would keep one: a string, not empty, not over its bound."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS


def _not_found_by_jaeger(document: Any) -> bool:
    """Jaeger's own 404, from every api_v3 release: its error document ``{"error": {"httpCode":
    404, "message": ...}}`` (``trace not found``; ``No traces found`` from 2.x, for a search)."""
    error = document.get("error") if isinstance(document, dict) else None
    return isinstance(error, dict) and error.get("httpCode") == 404


def _page_end(found: list[SpanRecord], service: str, since: float, high: float) -> float:
    """Where the next page ends: the oldest of the answer's traces, each dated by its newest span
    of ``service`` in the window (the span that made Jaeger find it); ``high`` when none is."""
    newest: dict[str, float] = {}
    for span in found:
        start = span.start_unix_nano / 1e9
        if span.service == service and since <= start <= high:
            newest[span.trace_id] = max(newest.get(span.trace_id, start), start)
    return min(newest.values(), default=high)


def _search_params(
    service: str, attributes: dict[str, str], window: tuple[float, float], limit: int,
    min_ms: float | None,
) -> dict[str, str]:  # fmt: skip
    """api_v3 search parameters (the snake_case names every api_v3 release accepts)."""
    params = {"query.service_name": service, "query.start_time_min": rfc3339(window[0]),
              "query.start_time_max": rfc3339(window[1]),
              "query.num_traces": str(limit), **_RAW_SEARCH}  # fmt: skip
    if attributes:
        params["query.attributes"] = json.dumps(attributes)
    if min_ms is not None:
        params["query.duration_min"] = go_duration(round(min_ms * 1e6))
    return params


def _joined_through_links(trace: list[SpanRecord]) -> set[str]:
    """The traces the root of ``trace`` links into that the store and ``trace`` join to its
    request: all of them for a trace carrying no correlation ID, or linking into one trace (a
    pull consumer continuing its message); a batch's, only those of the messages that carry its
    own ID (the others are other requests: reading each of them cost a read per message)."""
    links = root_span(trace).links
    targets = {link.trace_id for link in links}
    carried = carried_correlation_id(trace)
    if carried is None or len(targets) <= 1:
        return targets
    return {ln.trace_id for ln in links if ln.attributes.get(CORRELATION_ATTRIBUTE) == carried}
