"""Which requests make up a set: ``--service S --a service.version=1.4 [--route R] [--since 1h]``.

A request belongs to a set when one of its entry spans in service ``S`` (SERVER or CONSUMER: how
work enters a service) carries every ``KEY=VALUE`` asked for, as a resource attribute (where
``service.version`` and ``host.name`` live) or a span attribute, and, with a route, has that
route (HTTP route template, messaging destination or the node name ``tracekit diff`` shows).
A value that is not a string matches as JSON writes it: ``feature.on=true``, ``retries=3``.
Any read backend will do: the candidates come from ``spans_since``, each request's whole path
from ``reconstruct``. The newest requests are kept, up to ``limit`` per set. A request that
matches both sets (it passed through both versions) is in neither, unless the two selectors are
the same. A request is its correlation ID's path (the entry span's, else one its trace's spans
carry: a service whose SDK does not stamp it serves its caller's request), but one that enters
``S`` in several traces (a client's retry with the same ID, a session's ID) carries several
requests: each such trace is one, with the traces linked to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tracekit import semconv
from tracekit.correlation import MAX_LENGTH
from tracekit.path import Path, reconstruct
from tracekit.path.conventions import text
from tracekit.records import EntrySpanSource, SpanRecord, SpanSource, newest_spans

from .names import node_name

__all__ = ["ENTRY_KINDS", "MAX_SPANS", "Selector", "find_request_sets", "parse_match"]

ENTRY_KINDS = ("SERVER", "CONSUMER")
MAX_SPANS = 200_000  # read for candidates; a narrower --since reads fewer


@dataclass(frozen=True, slots=True)
class Selector:
    """One set: the service, the attribute values its entry spans carry, an optional route."""

    service: str
    match: tuple[tuple[str, str], ...]
    route: str | None = None

    def describe(self) -> str:
        """``service.version=1.4`` (with the route, when there is one)."""
        text = ",".join(f"{key}={value}" for key, value in self.match)
        return f"{text} {self.route}" if self.route else text

    def selects(self, record: SpanRecord) -> bool:
        """True when ``record`` is an entry span of this set."""
        if not _enters(record, self.service):
            return False
        if not all(value in _values(record, key) for key, value in self.match):
            return False
        return self.route is None or self.route in _routes(record)


def _values(record: SpanRecord, key: str) -> set[str]:
    """The attribute's value as typed on a command line: strings without the white space around
    them (which ``parse_match`` takes off what is typed: a version an SDK read from a file with
    its newline is the version typed), other values as JSON (``true``, ``3``, ``["a"]``), as
    every other view of tracekit shows them."""
    candidates: list[object] = [record.resource.get(key), record.attributes.get(key)]
    if key == "service.version":
        candidates.append(record.service_version)
    return {_as_typed(v) for v in candidates if v is not None}


def _as_typed(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, default=str)


def _routes(record: SpanRecord) -> set[str]:
    names = (semconv.HTTP_ROUTE, semconv.MESSAGING_DESTINATION_NAME)
    found = {value for value in (text(record, n) for n in names) if value is not None}
    return found | {node_name(record), record.name}


def parse_match(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``("service.version=1.4",)`` -> ``(("service.version", "1.4"),)``; ValueError if unusable."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value or not (key + value).isprintable():
            raise ValueError(f"{pair[:60]!r}: use KEY=VALUE, e.g. service.version=1.4")
        out.append((key, value))
    return tuple(out)


def find_request_sets(
    source: SpanSource, a: Selector, b: Selector, since_unix_nano: int, limit: int
) -> tuple[list[Path], list[Path], list[str]]:
    """The newest requests of each set (at most ``limit`` each), and warnings.

    Raises ``tracekit.records.BackendError`` when the source cannot answer.
    """
    spans, more = _window(source, (a.service, b.service), since_unix_nano)
    warnings = []
    if more:
        warnings.append(f"read only the newest {MAX_SPANS} spans of the window: narrow --since")
    newest_first = sorted(spans, key=lambda s: -s.start_unix_nano)
    entries_a = [span for span in newest_first if a.selects(span)]
    entries_b = [span for span in newest_first if b.selects(span)]
    correlation = _Correlation.of(newest_first, a.service)
    keys_a, keys_b = _request_keys(entries_a, correlation), _request_keys(entries_b, correlation)
    if a != b:
        both = keys_a.keys() & keys_b.keys()
        if both:
            warnings.append(f"{len(both)} requests matched both sets and were left out")
        keys_a = {k: v for k, v in keys_a.items() if k not in both}
        keys_b = {k: v for k, v in keys_b.items() if k not in both}
    return _paths(source, keys_a, limit), _paths(source, keys_b, limit), warnings


def _window(
    source: SpanSource, services: Sequence[str], since_unix_nano: int
) -> tuple[list[SpanRecord], bool]:
    """The newest ``MAX_SPANS`` spans of the window, earliest first, and whether it holds more.
    Only the traces that enter ``services`` matter (their entry spans, and the correlation IDs
    their other spans carry): a source that can pick those out hands over no others."""
    if isinstance(source, EntrySpanSource):
        return source.newest_spans_entering(
            sorted(set(services)), ENTRY_KINDS, since_unix_nano, limit=MAX_SPANS
        )
    spans = newest_spans(source, since_unix_nano, MAX_SPANS + 1)
    return spans[-MAX_SPANS:], len(spans) > MAX_SPANS


# what ``reconstruct`` is asked for a request: a correlation ID (or the trace ID of a request
# without one), or a trace ID with only the traces linked to it (False: not by correlation)
_RequestKey = tuple[str, bool]


def _enters(record: SpanRecord, service: str) -> bool:
    return record.service == service and record.kind in ENTRY_KINDS


class _Correlation:
    """The correlation ID of each trace of the window, and those that enter the service in more
    than one trace (a client's retry with the same ID, a session's ID): each such trace is a
    request, whatever set each is in (a first attempt on a version neither set has)."""

    def __init__(self, by_trace: dict[str, str], entries: Iterable[SpanRecord]) -> None:
        self.by_trace = by_trace
        traces: dict[str, set[str]] = {}
        for span in entries:
            cid = self.of_span(span)
            if cid:
                traces.setdefault(cid, set()).add(span.trace_id)
        self.shared = {cid for cid, found in traces.items() if len(found) > 1}

    @classmethod
    def of(cls, spans: Sequence[SpanRecord], service: str) -> _Correlation:
        """Read from the window's spans: any span of a trace may carry its correlation ID."""
        by_trace: dict[str, str] = {}
        for span in spans:
            if span.correlation_id:
                by_trace.setdefault(span.trace_id, span.correlation_id)
        return cls(by_trace, (span for span in spans if _enters(span, service)))

    def of_span(self, span: SpanRecord) -> str | None:
        """The span's correlation ID, else its trace's: a service whose SDK does not stamp it
        (no tracekit there) serves its caller's request."""
        return span.correlation_id or self.by_trace.get(span.trace_id)


def _request_keys(
    entries: Sequence[SpanRecord], correlation: _Correlation
) -> dict[_RequestKey, None]:
    """The request of each entry span, newest first: its correlation ID; its trace ID when it
    has none, when that ID carries several requests through the service, or when it is longer
    than tracekit takes one."""
    keys: dict[_RequestKey, None] = {}
    for span in entries:
        cid = correlation.of_span(span)
        if cid and (cid in correlation.shared or len(cid) > MAX_LENGTH):
            # a value no tracekit service takes (a foreign one, up to the store's 16,384
            # characters): a search for it is a URL a backend refuses (414), failing the diff
            keys.setdefault((span.trace_id, False), None)
        else:
            keys.setdefault((cid or span.trace_id, True), None)
    return keys


def _paths(source: SpanSource, keys: dict[_RequestKey, None], limit: int) -> list[Path]:
    paths: list[Path] = []
    seen: set[tuple[str, ...]] = set()
    for query, by_correlation in keys:
        if len(paths) >= limit:
            break
        path = reconstruct(source, query, with_logs=False, by_correlation=by_correlation)
        if path is not None and tuple(sorted(path.trace_ids)) not in seen:
            seen.add(tuple(sorted(path.trace_ids)))
            paths.append(path)
    return paths
