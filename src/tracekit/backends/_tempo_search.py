"""Tempo's search API, ``GET /api/search?q=<TraceQL>&limit=&start=&end=``: queries, time
windows, and the hits it answers.

A hit (``TraceSearchMetadata``) carries ``traceID`` as hex without leading zeros, the root's
service and name, start and duration, up to three matched spans per span set (``spanSets``, and
the deprecated ``spanSet``) with ``matched`` -- the number of spans the *query* matched, not the
trace's size -- and, from Tempo 2.5 on vParquet4 blocks, ``serviceStats`` ``{service: {spanCount,
errorCount}}`` for the whole trace.

``tracekit search`` groups a hit's spans by correlation ID (TraceQL ``by()``): Tempo then
answers a span set per ID the trace carries (and one for spans with none, valued ``nil``), each
with its ``matched`` count, so the hit names the trace's request by itself. Ungrouped, the three
spans a set shows may all be a proxy's that carries no ID, and the trace had to be read.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tracekit import semconv
from tracekit.backends._duration import go_duration, parse_go_duration
from tracekit.backends._http import HTTPStatusError, of_another_api
from tracekit.backends._otlp_json import MALFORMED, Dropped, TimeOutOfRange, unix_nano
from tracekit.backends._remote import CLOCK_SLACK_SECONDS
from tracekit.records import Attributes, BackendError, service_name
from tracekit.store._limits import MAX_NAME_CHARS, MAX_VALUE_CHARS, cut

DEFAULT_WINDOW_SECONDS = 168 * 3600  # Tempo's default query_frontend.search.max_duration
NO_ROOT = "<root span not yet received>"  # what Tempo itself says when the root is missing
HIT_TIME_OUT_OF_RANGE = "a search hit whose start is no time from 1970 to 2262"
HIT_UNREADABLE = "a search hit whose trace id or fields are unreadable"
BY_CORRELATION_ID = "by(span.correlation.id)"  # also the key of each group's span set attribute
_IDS_PER_SEARCH = 20
# What a listing reads of a root span that a search hit does not carry: the Celery task it
# names (``root_task``), and the URL path a root named only by its method (``GET``) is listed by
ROOT_SELECTED = (semconv.CELERY_TASK_NAME, semconv.URL_PATH, "http.target")
_SEARCH_KEYS = frozenset({"traces", "metrics"})  # SearchResponse's fields
_QUERY_CHARS = 2_000  # past this, no more IDs join a search (proxies refuse URLs over 8 KiB)
_TOO_LONG = re.compile(r"^range specified by start and end exceeds (\S+?)\. received ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOO_MANY = re.compile(r"^limit [0-9]+ exceeds max limit ([0-9]{1,9})$")
_GO_REGEX_META = re.compile(r"[\\.+*?()|\[\]{}^$]")  # what Go's regexp.QuoteMeta escapes
# The white space str.strip removes, as the store trims a name (records.service_name): Go's \s
# is only space, tab, newline, carriage return and form feed, and left "checkout\v" or
# "checkout\u00a0" unfound over Tempo where the store and Jaeger find them
_SPACES = (
    r"[\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]*"
)


def traceql_string(value: str) -> str:
    """``value`` as a TraceQL string literal: quotes and backslashes escaped, and control
    characters written as ``\\xHH``, which Tempo reads back as them (its lexer, Go's
    ``text/scanner``, refuses the whole query for a raw newline or NUL in a literal)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", escaped) + '"'


def service_is(field: str, service: str, *, trimmed: bool = False) -> str:
    """The TraceQL condition that ``field`` (``rootServiceName``, ``resource.service.name``)
    is ``service``; ``trimmed``: or is it with white space around it, as an SDK that read
    ``OTEL_SERVICE_NAME`` from a file sends it (``"checkout\\n"``), which Tempo keeps as sent and
    the store keeps as ``checkout``. The regular expression is anchored at both ends: Tempo
    before 3.0 finds it anywhere in the name, and from 3.0 anchors it itself."""
    if not trimmed:
        return f"{field} = {traceql_string(service)}"
    literal = _GO_REGEX_META.sub(lambda c: "\\" + c.group(), service)
    return f"{field} =~ {traceql_string('^' + _SPACES + literal + _SPACES + '$')}"


def search_query(
    service: str | None, min_duration_ms: float | None, errors: bool, *, trimmed: bool = False
) -> str:
    """The TraceQL for ``tracekit search``: trace-level filters, error spans, correlation ids.

    The trace intrinsics by their first names, which every Tempo from 2.2 knows (with
    ``select()`` and ``by()``); ``trace:rootService`` and ``trace:duration`` came in 2.5, and
    Tempo keeps the old names beside them with no plan to remove them. The spans are grouped by
    correlation ID (``BY_CORRELATION_ID``); with ``errors``, ``&& { }`` makes every span of a
    trace with an error part of its groups, not only its error spans, which may carry no ID.
    ``trimmed``: the root service is ``service`` with white space around it too (``service_is``).
    """
    conditions = []
    if service:
        conditions.append(service_is("rootServiceName", service, trimmed=trimmed))
    if min_duration_ms is not None:
        conditions.append(f"traceDuration >= {go_duration(round(min_duration_ms * 1e6))}")
    if errors:
        conditions.append("status = error")
    selector = "{ " + " && ".join(conditions) + " }" if conditions else "{ }"
    whole = " && { }" if errors else ""
    return f"{selector}{whole} | {BY_CORRELATION_ID} | select(span.correlation.id)"


def window(
    since: float | None, max_seconds: float | None, until: float | None = None
) -> tuple[int, int, bool]:
    """Unix seconds (start, end) to search, and whether ``max_seconds`` cut the window short.

    From ``since`` (default: as far back as a default Tempo allows) to ``until`` (default: a
    minute from now), never longer than ``max_seconds`` when that is known.
    """
    now = time.time()
    end = now + CLOCK_SLACK_SECONDS if until is None else until
    # Tempo reads start as unsigned: before 1970 is 1970, then narrowed like any long window
    start = end - DEFAULT_WINDOW_SECONDS if since is None else max(since, 0)
    if end - start > DEFAULT_WINDOW_SECONDS:  # spend the slack only where a default Tempo allows
        end = max(now, start + DEFAULT_WINDOW_SECONDS)
    cut = max_seconds is not None and end - start > max_seconds
    if max_seconds is not None and cut:
        start = end - max_seconds
    return math.ceil(start), math.floor(end), cut


def carrying_any(correlation_ids: list[str]) -> list[str]:
    """TraceQL searches for the traces carrying any of ``correlation_ids``, grouped by ID, a
    few IDs each (the query travels in the URL)."""
    terms = list(_searchable(correlation_ids).values())
    grouped = f" }} | {BY_CORRELATION_ID} | select(span.correlation.id)"
    return ["{ " + " || ".join(each) + grouped for each in _a_few_at_a_time(terms)]


def few_at_a_time(correlation_ids: list[str]) -> list[list[str]]:
    """``correlation_ids`` as ``carrying_any`` groups them, one search each."""
    searchable = _searchable(correlation_ids)
    values = iter(searchable)
    return [[next(values) for _ in group] for group in _a_few_at_a_time(list(searchable.values()))]


def _searchable(correlation_ids: list[str]) -> dict[str, str]:
    """The TraceQL term finding each of ``correlation_ids``, in their order, but those too long
    for a search's URL alone: a service that is not tracekit's may set any value, up to the
    16,384 characters one is kept to, and the search holding it was refused (414), leaving the
    other IDs in it unsearched too."""
    terms = {value: "span.correlation.id = " + traceql_string(value) for value in correlation_ids}
    return {value: term for value, term in terms.items() if len(term) <= _QUERY_CHARS}


def linking_to_any(trace_ids: list[str]) -> list[tuple[list[str], str]]:
    """TraceQL searches for the traces with a span linking into any of ``trace_ids``
    (``link:traceID``, Tempo >= 2.6), a few IDs each, with the IDs each searches for: one
    search a trace sent a request of 60 traces' 60 searches over Tempo's whole window."""
    terms = ["link:traceID = " + traceql_string(t) for t in trace_ids]
    ids = iter(trace_ids)
    return [([next(ids) for _ in g], "{ " + " || ".join(g) + " }") for g in _a_few_at_a_time(terms)]


def with_trace_ids(trace_ids: list[str], *, grouped: bool = False) -> list[str]:
    """TraceQL searches for the traces of ``trace_ids`` (``trace:id``, Tempo >= 2.5), a few
    each (``_trace_id_terms``). ``grouped``: their spans grouped by correlation ID, so that
    each hit names its request."""
    end = f" }} | {BY_CORRELATION_ID} | select(span.correlation.id)" if grouped else " }"
    return ["{ " + " || ".join(each) + end for each in _trace_id_terms(trace_ids)]


def roots_of(trace_ids: list[str]) -> list[str]:
    """TraceQL searches for the root spans of ``trace_ids`` with what ``ROOT_SELECTED`` names
    of them selected (``Hit.root_attributes``; Tempo fills in those a span has), a few traces
    each: ``nestedSetParent < 0`` is a span whose parent is not in its trace, as Tempo's nested
    set model holds it (Grafana's Traces Drilldown finds roots so), and ``trace:id`` needs
    Tempo >= 2.5. No ``!= nil`` test: an ``||`` of them would be one more form a Tempo may
    evaluate wrongly where an attribute is missing (grafana/tempo#7957), for no fewer
    requests."""
    selected = ", ".join("span." + name for name in ROOT_SELECTED)
    roots = f") && nestedSetParent < 0 }} | select({selected})"
    return ["{ (" + " || ".join(each) + roots for each in _trace_id_terms(trace_ids)]


def _trace_id_terms(trace_ids: list[str]) -> list[list[str]]:
    """``trace:id`` terms for ``trace_ids``, grouped a search each. An ID is written without
    its leading zeros, as Tempo's hits write it: a Tempo before 2.10 compares it so where it
    cannot look the trace up by its bytes (in an ``||``)."""
    terms = ["trace:id = " + traceql_string(t.lstrip("0") or "0") for t in trace_ids]
    return _a_few_at_a_time(terms)


def _a_few_at_a_time(terms: list[str]) -> list[list[str]]:
    """``terms`` in groups small enough for one search's URL."""
    groups, group = [], []
    for term in terms:
        group.append(term)
        if len(group) == _IDS_PER_SEARCH or sum(map(len, group)) > _QUERY_CHARS:
            groups.append(group)
            group = []
    return groups + ([group] if group else [])


def window_limit(error: BackendError) -> tuple[float, str] | None:
    """Tempo's longest search (seconds, and as Tempo wrote it) when ``error`` is its refusal of
    a longer one: ``400 range specified by start and end exceeds 168h0m0s. received ...``."""
    if not isinstance(error, HTTPStatusError) or error.status != 400:
        return None
    match = _TOO_LONG.match(error.detail)
    seconds = parse_go_duration(match.group(1)) if match else None
    return (seconds, match.group(1)) if match and seconds else None


def result_limit(error: BackendError) -> int | None:
    """Tempo's most traces a search answers when ``error`` is its refusal of a larger
    ``limit`` (Tempo >= 2.4, over ``search.max_result_limit``): ``400 limit 101 exceeds max
    limit 100``."""
    if not isinstance(error, HTTPStatusError) or error.status != 400:
        return None
    match = _TOO_MANY.match(error.detail)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def refused_traceql(error: BackendError) -> bool:
    """True when Tempo refused the query itself (a version that lacks part of TraceQL)."""
    return (
        isinstance(error, HTTPStatusError)
        and error.status == 400
        and error.detail.startswith("invalid TraceQL query")
    )


@dataclass(frozen=True, slots=True)
class Hit:
    """One trace a search found, as far as the hit itself tells."""

    trace_id: str
    root_service: str
    root_name: str
    start_unix_nano: int
    duration_ms: float
    correlation_id: str | None
    names_its_request: bool  # spans grouped by correlation ID: correlation_id is the trace's
    span_count: int | None  # None: this Tempo sent no serviceStats
    error_count: int | None
    # the attributes its earliest span shown has of ROOT_SELECTED (roots_of): its root's
    root_attributes: Attributes = field(default_factory=dict)


def read_hits(answer: Any, dropped: Dropped = lambda reason: None) -> list[Hit]:
    """The hits of one search answer; BackendError if it is malformed. A hit timed out of range
    or unreadable is left out, and ``dropped`` told (``HIT_TIME_OUT_OF_RANGE``,
    ``HIT_UNREADABLE``); an answer of unreadable hits only, or no JSON object at all, is a
    BackendError, not "none found"."""
    if not isinstance(answer, dict):  # Grafana's own /api/search (dashboards) answers a list
        raise BackendError("unreadable search answer from Tempo (not a JSON object: is the URL "
                           "Tempo's API?)")  # fmt: skip
    if of_another_api(answer, _SEARCH_KEYS):
        raise BackendError("unreadable search answer from Tempo (neither traces nor metrics in "
                           "it: is the URL Tempo's API?)")  # fmt: skip
    traces = answer.get("traces")
    if not isinstance(traces, list | None):
        raise BackendError("unreadable search answer from Tempo (traces is not a list)")
    hits, unreadable = [], []
    for trace in traces or []:
        if isinstance(trace, dict) and trace.get("traceID"):
            try:
                hits.append(_hit(trace))
            except TimeOutOfRange:
                dropped(HIT_TIME_OUT_OF_RANGE)
            except MALFORMED as error:
                unreadable.append(type(error).__name__)
    if unreadable and not hits:
        raise BackendError(f"unreadable search answer from Tempo ({unreadable[0]})")
    if unreadable:
        dropped(HIT_UNREADABLE)
    return hits


def _hit(hit: dict[str, Any]) -> Hit:
    stats = hit.get("serviceStats") or {}
    correlation_id, grouped = _correlation_id(hit)
    return Hit(
        trace_id=hit_trace_id(hit["traceID"]),
        root_service=cut(_root_service(hit.get("rootServiceName")), MAX_NAME_CHARS),
        root_name=cut(str(hit.get("rootTraceName") or ""), MAX_NAME_CHARS),
        start_unix_nano=unix_nano(hit.get("startTimeUnixNano")),
        duration_ms=float(hit.get("durationMs") or 0),
        correlation_id=correlation_id,
        names_its_request=grouped,
        span_count=sum(int(s.get("spanCount") or 0) for s in stats.values()) if stats else None,
        error_count=sum(int(s.get("errorCount") or 0) for s in stats.values()) if stats else None,
        root_attributes=_selected_root(hit),
    )


def _root_service(name: object) -> str:
    """The hit's root service as the trace read from Tempo names it (``service_name``: without
    the white space an SDK sent around it), or Tempo's words for a root it has not received."""
    return service_name(name) if name else NO_ROOT


def hit_trace_id(value: Any) -> str:
    """A search hit's ``traceID`` (hex; Tempo drops leading zeros here) as 32 hex digits."""
    text = str(value).lower()
    if not 0 < len(text) <= 32 or not re.fullmatch(r"[0-9a-f]+", text):
        raise ValueError("trace id")
    return text.rjust(32, "0")


def _correlation_id(hit: dict[str, Any]) -> tuple[str | None, bool]:
    """The correlation ID most of the hit's spans carry (as ``trace`` names a trace's request),
    and whether the spans were grouped by it: then a hit showing none has none."""
    counts: Counter[str] = Counter()
    grouped = False
    for span_set in hit.get("spanSets") or ([hit["spanSet"]] if hit.get("spanSet") else []):
        keys = [attribute.get("key") for attribute in span_set.get("attributes") or []]
        grouped = grouped or BY_CORRELATION_ID in keys
        if (value := _selected_id(span_set)) is not None:
            counts[value] += max(1, int(span_set.get("matched") or 1))
    found = counts.most_common(1)[0][0] if counts else None
    return found, grouped


def _selected_root(hit: dict[str, Any]) -> Attributes:
    """What the earliest span the hit shows has of ``ROOT_SELECTED`` (a trace may have more
    than one span without a parent in it: the earliest is its root), each value a string."""
    shown = [span for span_set in hit.get("spanSets") or [] for span in span_set.get("spans") or []]
    if not shown:
        return {}
    earliest = min(shown, key=_start)
    selected: Attributes = {}
    for attribute in earliest.get("attributes") or []:
        value = (attribute.get("value") or {}).get("stringValue")
        if attribute.get("key") in ROOT_SELECTED and isinstance(value, str) and value:
            selected[attribute["key"]] = cut(value, MAX_VALUE_CHARS)  # the store's bound
    return selected


def _start(span: dict[str, Any]) -> float:
    start = str(span.get("startTimeUnixNano"))
    return int(start) if start.isdigit() else math.inf  # unread where it is no number


def _selected_id(span_set: dict[str, Any]) -> str | None:
    """The selected ``span.correlation.id`` (keyed by its unscoped name) of a span shown."""
    for span in span_set.get("spans") or []:
        for attribute in span.get("attributes") or []:
            value = (attribute.get("value") or {}).get("stringValue")
            if attribute.get("key") == semconv.CORRELATION_ID and isinstance(value, str):
                return cut(value, MAX_VALUE_CHARS)  # the store's bound, as the trace's
    return None
