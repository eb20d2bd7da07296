"""A WSGI app that answers like Tempo's query frontend, for a real server on loopback.

No Tempo can run on these machines. What this app does is what Tempo's code does (read from
grafana/tempo: ``modules/frontend``, ``pkg/api``, ``pkg/traceql``), for the requests tracekit
sends:

- ``GET /api/v2/traces/<id>`` (Tempo >= 2.6): ``{"trace", "metrics"}``; a trace over
  ``max_bytes_per_trace`` comes back cut with ``"status": "PARTIAL"`` (Tempo >= 2.7), and before
  2.7 is refused, ``422 trace exceeds max size (max bytes: N)``; an unknown trace is ``404``
  with no body. Before 2.6 the route does not exist: ``404 page not found``.
  From 3.0.1, where the operator made span pruning the default (``span_pruning_enabled`` and
  ``span_pruning_enabled_by_default``), a trace is pruned as it is served unless the request says
  ``span_pruning=false`` (``modules/frontend/traceid_handlers.go``, ``pkg/spanpruning``): each
  group of 5 or more leaf spans of one parent with the same name, kind and status is one summary
  span (``aggregation.is_summary``), and ``"status": "PARTIAL"`` says so.
- ``GET /api/traces/<id>``: ``{"batches"}``; ``422 trace exceeds max size`` over the limit.
- ``GET /api/search?q=&start=&end=&limit=``: a trace is found when it overlaps the window (it starts
  before ``end`` and ends after ``start``: ``tempodb/encoding/vparquet4``'s trace iterator), not
  only when it starts in it; ``400 http parameter start must be before end`` unless it does
  (``pkg/api/http.go``); ``400 range specified by start and end exceeds 168h0m0s. received start=..
  end=..`` over ``search.max_duration``; ``400 limit N exceeds max limit M`` over
  ``search.max_result_limit`` (Tempo >= 2.4; before, the limit was lowered to it, and 0, the default
  before 3.0, is no limit: ``modules/frontend``'s ``adjustLimit``); TraceQL limited to the forms
  tracekit writes (anything else is refused as ``invalid TraceQL query``, as is what a version
  lacks: ``select()`` and the intrinsics ``rootServiceName`` and ``traceDuration`` before 2.2, a
  query hint ``with (...)`` before 2.4, their scoped names ``trace:rootService`` and
  ``trace:duration`` and the intrinsic ``trace:id`` before 2.5, ``link:traceID`` before 2.6);
  ``serviceStats`` from 2.5. ``trace:id`` values joined by ``||`` are compared as text with the
  trace's hex without leading zeros (Tempo before 2.10).
  ``by(span.correlation.id)`` (2.2) answers a span set per correlation ID among the matched
  spans and one for those with none (``pkg/traceql/ast_execute.go``'s ``GroupOperation``), and
  ``{ ... } && { }`` matches every span of a trace the filter matched; ``||`` joins
  correlation IDs. ``=~`` on the root service or ``resource.service.name`` is Go's regexp, found
  anywhere in the name before 3.0 and matching the whole name from 3.0 (Prometheus' fast regexp,
  grafana/tempo#4329). A string literal's escapes are decoded as ``strconv.Unquote`` decodes them,
  and one holding a raw newline or NUL is refused, as ``text/scanner`` refuses it
  (``pkg/traceql/lexer.go``).
  Tempo answers the first ``limit`` traces its parallel search finds; this fake, the first in
  trace-id order (the order of a block's rows). With ``with (most_recent=true)``, from 2.8, the
  newest ``limit``, newest first.
- multi-tenancy: no ``X-Scope-OrgID`` is ``401 no org id``; another tenant sees no data.
- an optional path prefix (Grafana Cloud serves Tempo under ``/tempo``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from go_answers import PAGE_NOT_FOUND, json_answer, text_answer
from go_time import parse_duration
from otlp_fixtures import tempo_search_hit, tempo_v1, tempo_v2
from werkzeug.wrappers import Request, Response

from tracekit.records import SpanRecord

BYTES_PER_SPAN = 300  # this fake's measure of a trace's size against max_bytes_per_trace
# the first Tempo whose TraceQL knows each name tracekit writes (pkg/traceql/lexer.go and expr.y
# at each release tag); the unscoped intrinsics are still in Tempo's grammar today
FIRST_TEMPO_WITH = {
    "span.correlation.id": (2, 0),
    "resource.service.name": (2, 0),
    "status": (2, 0),
    "rootServiceName": (2, 2),
    "traceDuration": (2, 2),
    "trace:rootService": (2, 5),
    "trace:duration": (2, 5),
    "link:traceID": (2, 6),
    "trace:id": (2, 5),
    "nestedSetParent": (2, 2),  # the nested set columns behind structural operators (2.2)
    "span.tracekit.celery.task_name": (2, 0),
}
# `` | select(span.a, span.b)``: a hit's spans carry each by its unscoped name
_SELECT = re.compile(r" \| select\((span\.[\w.]+(?:, span\.[\w.]+)*)\)$")
SpanTest = Callable[[SpanRecord], bool]
TraceTest = Callable[[list[SpanRecord]], bool]
_GO_REGEX_PART = re.compile(r"\\(x\{[0-9a-fA-F]{1,6}\}|.)|\$$")  # an escape, or the final $
_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[abfnrtv\\"])')


class FakeTempo:
    """Serves ``spans`` as one Tempo (of ``version``) would."""

    def __init__(
        self,
        spans: list[SpanRecord],
        *,
        version: tuple[int, int] = (2, 9),
        max_search: str = "168h0m0s",
        max_bytes_per_trace: int | None = None,
        tenant: str | None = None,
        prefix: str = "",
        link_search_status: int | None = None,
        max_result_limit: int = 0,
        prunes_by_default: bool = False,
    ) -> None:
        self.traces: dict[str, list[SpanRecord]] = {}
        for span in spans:
            self.traces.setdefault(span.trace_id, []).append(span)
        self.version = version
        self.max_search = max_search
        self.max_bytes = max_bytes_per_trace
        self.tenant = tenant
        self.prefix = prefix
        self.link_search_status = link_search_status
        self.max_result_limit = max_result_limit
        self.prunes_by_default = prunes_by_default

    def __call__(self, request: Request) -> Response:
        path = request.path
        if not path.startswith(self.prefix + "/api/"):
            return text_answer(PAGE_NOT_FOUND, 404)
        path = path.removeprefix(self.prefix)
        if self.tenant and not request.headers.get("X-Scope-OrgID"):
            return text_answer("no org id\n", 401)
        visible = not self.tenant or request.headers.get("X-Scope-OrgID") == self.tenant
        traces = self.traces if visible else {}
        if (m := re.fullmatch(r"/api/v2/traces/([0-9a-f]{1,32})", path)) and self.version >= (2, 6):
            trace = traces.get(m.group(1).rjust(32, "0"))
            if trace and self.prunes_by_default and request.args.get("span_pruning") != "false":
                served = pruned(trace)
                return json_answer(tempo_v2(served, pruned_on_read=len(served) < len(trace)))
            return self.trace_v2(trace)
        if m := re.fullmatch(r"/api/traces/([0-9a-f]{1,32})", path):
            return self.trace_v1(traces.get(m.group(1).rjust(32, "0")))
        if path == "/api/search":
            return self.search(traces, request.args)
        return text_answer(PAGE_NOT_FOUND, 404)

    def too_large(self, trace: list[SpanRecord]) -> bool:
        return self.max_bytes is not None and len(trace) * BYTES_PER_SPAN > self.max_bytes

    def trace_v2(self, trace: list[SpanRecord] | None) -> Response:
        if not trace:
            return Response(b"", 404)
        if self.too_large(trace) and self.max_bytes is not None and self.version < (2, 7):
            return text_answer(f"trace exceeds max size (max bytes: {self.max_bytes})", 422)
        if self.too_large(trace) and self.max_bytes is not None:
            kept = trace[: self.max_bytes // BYTES_PER_SPAN]
            return json_answer(tempo_v2(kept, partial_of_bytes=self.max_bytes))
        return json_answer(tempo_v2(trace))

    def trace_v1(self, trace: list[SpanRecord] | None) -> Response:
        if not trace:
            return Response(b"", 404)
        if self.too_large(trace):
            return text_answer("trace exceeds max size", 422)
        return json_answer(tempo_v1(trace))

    def search(self, traces: dict[str, list[SpanRecord]], args: Any) -> Response:
        for name in ("start", "end"):  # Tempo: strconv.ParseUint(s, 10, 32)
            value = args[name]
            if not value.isdigit() or int(value) >= 2**32:
                refusal = f'invalid {name}: strconv.ParseUint: parsing "{value}": invalid syntax'
                return text_answer(refusal, 400)
        start, end = int(args["start"]), int(args["end"])
        if end <= start:
            refusal = f"http parameter start must be before end. received start={start} end={end}"
            return text_answer(refusal, 400)
        if (end - start) * 10**9 > parse_duration(self.max_search):
            return text_answer(
                f"range specified by start and end exceeds {self.max_search}. "
                f"received start={start} end={end}",
                400,
            )
        limit = int(args["limit"])
        if self.max_result_limit and limit > self.max_result_limit:
            if self.version < (2, 4):
                limit = self.max_result_limit
            else:  # http.go's NewBadRequest(err): the error's text alone
                refusal = f"limit {limit} exceeds max limit {self.max_result_limit}"
                return Response(refusal, 400, content_type="text/plain; charset=utf-8")
        parsed = self.parse(args["q"])
        if parsed is None:
            return text_answer(
                "invalid TraceQL query: parse error at line 1, col 3: syntax error: "
                "unexpected IDENTIFIER",
                400,
            )
        if "link:traceID" in args["q"] and self.link_search_status:
            body = {500: "internal error", 504: "context deadline exceeded"}
            return text_answer(body[self.link_search_status], self.link_search_status)
        hits = [h for t in traces.values() if (h := self.hit(t, parsed, start, end))]
        if parsed.most_recent and self.version >= (2, 8):
            hits.sort(key=lambda h: -int(h["startTimeUnixNano"]))
        else:
            hits.sort(key=lambda h: h["traceID"].rjust(32, "0"))
        metrics = {"inspectedTraces": len(traces), "completedJobs": 1, "totalJobs": 1}
        return json_answer({"traces": hits[:limit], "metrics": metrics})

    def hit(self, trace: list[SpanRecord], parsed: Query, start: int, end: int) -> Any:
        first, last = min(s.start_unix_nano for s in trace), max(s.end_unix_nano for s in trace)
        overlaps = first <= end * 10**9 and last >= start * 10**9
        if not overlaps or not all(test(trace) for test in parsed.trace_tests):
            return None
        matched = [s for s in trace if all(test(s) for test in parsed.span_tests)]
        if not matched:
            return None
        matched = trace if parsed.whole else matched
        stats = self.version >= (2, 5)
        return tempo_search_hit(
            trace, matched, service_stats=stats, selected=parsed.selected, grouped=parsed.grouped
        )

    def parse(self, query: str) -> Query | None:
        """The TraceQL forms tracekit writes; None for anything this Tempo would refuse."""
        selected: tuple[str, ...] = ()
        if "\n" in query or "\x00" in query:  # Go's text/scanner: a literal not terminated, NUL
            return None
        most_recent = query.endswith(" with (most_recent=true)")
        if most_recent and self.version < (2, 4):
            return None
        query = query.removesuffix(" with (most_recent=true)")
        if (chosen := _SELECT.search(query)) and self.version >= (2, 2):
            query = query[: chosen.start()]
            selected = tuple(name.removeprefix("span.") for name in chosen.group(1).split(", "))
        grouped = query.endswith(" | by(span.correlation.id)") and self.version >= (2, 2)
        query = query.removesuffix(" | by(span.correlation.id)") if grouped else query
        whole = query.endswith(" && { }")  # every span of a trace the filter matched
        query = query.removesuffix(" && { }")
        if not (query.startswith("{ ") or query == "{ }") or not query.endswith(" }"):
            return None
        parsed = Query(selected, most_recent, grouped=grouped, whole=whole)
        inner = query[2:-2].strip()
        try:
            added = [parsed.add(c, self.version) for c in inner.split(" && ")]
        except ValueError:  # a duration Go cannot parse
            return None
        return parsed if not inner or all(added) else None


class Query:
    """A parsed TraceQL spanset filter: trace-level tests, span-level tests, selected names,
    and whether the newest traces were asked for."""

    def __init__(
        self, selected: tuple[str, ...], most_recent: bool, *, grouped: bool, whole: bool
    ) -> None:
        self.selected = selected
        self.most_recent = most_recent  # with (most_recent=true)
        self.grouped = grouped  # | by(span.correlation.id)
        self.whole = whole  # && { }
        self.trace_tests: list[TraceTest] = []
        self.span_tests: list[SpanTest] = []

    def add(self, condition: str, version: tuple[int, int]) -> bool:
        """Add one condition; False for one this version of Tempo refuses."""
        if condition.startswith("(") and condition.endswith(")"):  # only trace:id terms
            condition = condition[1:-1]
        if version < FIRST_TEMPO_WITH.get(condition.partition(" ")[0], (99, 0)):
            return False
        if condition.startswith("trace:id = "):  # one trace or several, by id
            ids = [re.fullmatch(r'trace:id = "([0-9a-f]{1,32})"', c)
                   for c in condition.split(" || ")]  # fmt: skip
            # an || is compared as text with the hex of hits, which has no leading zeros
            wanted_traces = {m.group(1) for m in ids if m}
            self.span_tests.append(lambda s: s.trace_id.lstrip("0") in wanted_traces)
            return all(ids)
        if condition.startswith("link:traceID = "):  # links into one trace or several
            links = [re.fullmatch(r'link:traceID = "([0-9a-f]{32})"', c)
                     for c in condition.split(" || ")]  # fmt: skip
            linked = {m.group(1) for m in links if m}
            self.span_tests.append(lambda s: any(ln.trace_id in linked for ln in s.links))
            return all(links)
        if " || " in condition:  # one of several correlation IDs
            alternatives = [re.fullmatch(r'span\.correlation\.id = "((?:[^"\\]|\\.)*)"', c)
                            for c in condition.split(" || ")]  # fmt: skip
            wanted_ids = {_unquote(m.group(1)) for m in alternatives if m}
            self.span_tests.append(lambda s: s.correlation_id in wanted_ids)
            return all(alternatives)
        if m := re.fullmatch(r'span\.correlation\.id = "((?:[^"\\]|\\.)*)"', condition):
            wanted = _unquote(m.group(1))
            self.span_tests.append(lambda s: s.correlation_id == wanted)
        elif m := re.fullmatch(r'resource\.service\.name =~ "((?:[^"\\]|\\.)*)"', condition):
            matches = _go_regex(_unquote(m.group(1)), anchored=version >= (3, 0))
            self.span_tests.append(lambda s: matches(s.service))
        elif m := re.fullmatch(r'(?:rootServiceName|trace:rootService) =~ "((?:[^"\\]|\\.)*)"',
                               condition):  # fmt: skip
            root_matches = _go_regex(_unquote(m.group(1)), anchored=version >= (3, 0))
            self.trace_tests.append(
                lambda t: any(not s.parent_span_id and root_matches(s.service) for s in t)
            )
        elif m := re.fullmatch(r'resource\.service\.name = "((?:[^"\\]|\\.)*)"', condition):
            named = _unquote(m.group(1))
            self.span_tests.append(lambda s: s.service == named)
        elif m := re.fullmatch(r'(?:rootServiceName|trace:rootService) = "((?:[^"\\]|\\.)*)"',
                               condition):  # fmt: skip
            service = _unquote(m.group(1))
            self.trace_tests.append(
                lambda t: any(not s.parent_span_id and s.service == service for s in t)
            )
        elif m := re.fullmatch(r"(?:traceDuration|trace:duration) >= (\S+)", condition):
            least = parse_duration(m.group(1))  # the lexer refuses what Go cannot parse
            self.trace_tests.append(lambda t: _trace_nanos(t) >= least)
        elif condition == "status = error":
            self.span_tests.append(lambda s: s.status == "ERROR")
        elif condition == "nestedSetParent < 0":  # a root span
            self.span_tests.append(lambda s: not s.parent_span_id)
        elif condition == "span.tracekit.celery.task_name != nil":
            self.span_tests.append(lambda s: "tracekit.celery.task_name" in s.attributes)
        else:
            return False
        return True


def pruned(trace: list[SpanRecord]) -> list[SpanRecord]:
    """``trace`` as Tempo's span pruning serves it (its defaults: ``min_spans_to_aggregate`` 5,
    leaf spans only here): each group of similar leaf spans of one parent is one summary span."""
    parents = {s.parent_span_id for s in trace}
    groups: dict[tuple[object, ...], list[SpanRecord]] = {}
    for span in trace:
        if span.span_id not in parents:
            key = (span.parent_span_id, span.name, span.kind, span.status)
            groups.setdefault(key, []).append(span)
    kept = [s for s in trace if s.span_id in parents]
    for group in groups.values():
        if len(group) < 5:
            kept += group
            continue
        summary = {"aggregation.is_summary": True, "aggregation.span_count": len(group)}
        kept.append(dataclasses.replace(
            group[0], end_unix_nano=max(s.end_unix_nano for s in group),
            attributes={**group[0].attributes, **summary},
        ))  # fmt: skip
    return kept


def _trace_nanos(trace: list[SpanRecord]) -> int:
    return max(s.end_unix_nano for s in trace) - min(s.start_unix_nano for s in trace)


def _go_regex(pattern: str, *, anchored: bool) -> Callable[[str], bool]:
    """A TraceQL ``=~`` as Tempo matches it: Go's regexp, found anywhere in the value before
    3.0, and from 3.0 (Prometheus' fast regexp) the whole value. Go's ``$`` (no multi-line
    flag) is the end of the text, where Python's also matches before a final newline; Go's
    ``\\s`` is ``[\\t\\n\\f\\r ]``, where Python's is any white space Unicode names."""
    compiled = re.compile(_GO_REGEX_PART.sub(_as_python, pattern))
    if anchored:
        return lambda value: compiled.fullmatch(value) is not None
    return lambda value: compiled.search(value) is not None


def _as_python(part: re.Match[str]) -> str:
    """One escape of a Go regular expression (or its final ``$``) as Python's ``re`` reads it."""
    escape = part.group(1)
    if escape is None:
        return r"\Z"
    if escape == "s":
        return r"[\t\n\f\r ]"
    if escape.startswith("x{"):
        return f"\\U{int(escape[2:-1], 16):08x}"
    return "\\" + escape


def _unquote(literal: str) -> str:
    """A string literal's value, its escapes decoded as Go's ``strconv.Unquote`` does (those
    of one character, ``\\xHH`` and ``\\uHHHH``)."""
    return _GO_ESCAPE.sub(lambda m: _go_escaped(m.group(1)), literal)


def _go_escaped(escape: str) -> str:
    if escape[0] in "xu":
        return chr(int(escape[1:], 16))
    return {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}.get(
        escape, escape
    )
