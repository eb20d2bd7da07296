"""A WSGI app that answers like jaeger-query's api_v3 HTTP gateway, for a real server on loopback.

No Jaeger can run on these machines. What this app does is what Jaeger's code does (read from
jaegertracing/jaeger: ``cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/http_gateway.go``
and ``query_parser.go``, ``internal/tenancy/http.go``, the query server's routes):

- success: ``{"result": {"resourceSpans": [...]}}`` (every trace found in one document);
- errors through Go's ``http.Error`` (``text/plain``, a trailing newline) as
  ``{"error":{"httpCode":N,"message":"..."}}``: ``404 No traces found`` for an empty answer,
  ``400 malformed parameter query.duration_min: time: unknown unit "e-" in duration "5e-05s"``
  for what Go's ``time.ParseDuration`` refuses;
- ``query.attributes`` applied from Jaeger 2.19 on, silently ignored before; from 2.19 too,
  ``400 query.startTimeMin must be before query.startTimeMax`` unless it is (``query_parser.go``);
- an unknown route under ``/api/`` (or every api_v3 route on a server without it) is a bare
  ``404 page not found``;
- multi-tenancy: ``401 missing tenant header`` without ``x-tenant``; an optional base path;
- from 1.65 and 2.2 on, every trace answered goes through the query service's adjusters
  (``jaeger_adjusters``: warnings as a span attribute, spans moved when ``max_clock_skew_adjust``
  is set) unless the request asks ``raw_traces=true`` (a search: ``query.raw_traces=true``),
  read as Go's ``strconv.ParseBool`` reads it.
- parameter names (``paramResolver``, ``query_parser.go``): before 2.19, the snake_case names
  alone (``query.service_name``, ``query.num_traces``, ``raw_traces``...); from 2.19
  (jaegertracing/jaeger#8625) the camelCase name first (``query.serviceName``,
  ``query.searchDepth``, ``rawTraces``...), the snake_case one as a deprecated alias, whose use
  sets ``Deprecation: true`` and is logged as a warning per request (``deprecated_params``
  keeps what this Jaeger would log); ``snake_case=False``: a Jaeger that removed the aliases, as
  its code says v2.20 would (``Sunset: Mon, 01 Nov 2026``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from go_answers import PAGE_NOT_FOUND, json_answer, text_answer
from go_time import parse_duration, quote
from jaeger_adjusters import adjusted
from otlp_fixtures import jaeger_v3
from werkzeug.wrappers import Request, Response

from tracekit.records import SpanRecord


def gateway_error(status: int, message: str) -> Response:
    """``http.Error(w, json(GRPCGatewayError), status)`` as the gateway writes it."""
    body = json.dumps({"error": {"httpCode": status, "message": message}}, separators=(",", ":"))
    return text_answer(body, status)


class FakeJaeger:
    """Serves ``spans`` as one jaeger-query (of ``version``) would."""

    def __init__(
        self,
        spans: list[SpanRecord],
        *,
        version: tuple[int, int] = (2, 20),
        api_v3: bool = True,
        tenant: str | None = None,
        base_path: str = "",
        max_clock_skew_adjust: int = 0,
        snake_case: bool = True,
    ) -> None:
        """``max_clock_skew_adjust``: nanoseconds, as ``query.max_clock_skew_adjust`` (0, the
        default, moves no span: the adjuster only warns); ``snake_case``: whether the
        deprecated snake_case parameter names are still read."""
        self.spans = spans
        self.traces: dict[str, list[SpanRecord]] = {}
        for span in spans:
            self.traces.setdefault(span.trace_id, []).append(span)
        self.version = version
        self.api_v3 = api_v3
        self.tenant = tenant
        self.base_path = base_path
        self.max_clock_skew_adjust = max_clock_skew_adjust
        self.snake_case = snake_case
        self.deprecated_params: list[str] = []  # what Jaeger's WARN lines name, request by request

    def __call__(self, request: Request) -> Response:
        params = Params(request.args, self.version >= (2, 19), self.snake_case)
        answer = self.answer(request, params)
        if params.deprecated:
            self.deprecated_params += params.deprecated
            answer.headers["Deprecation"] = "true"
            answer.headers["Deprecated-Params"] = ",".join(params.deprecated)
        return answer

    def answer(self, request: Request, params: Params) -> Response:
        if self.tenant and not request.headers.get("x-tenant"):
            return Response("missing tenant header", 401)  # written raw, no newline
        if self.tenant and request.headers.get("x-tenant") != self.tenant:
            return Response("unknown tenant", 401)
        path = request.path.removeprefix(self.base_path) if self.base_path else request.path
        if not request.path.startswith(self.base_path + "/api/") or not self.api_v3:
            return text_answer(PAGE_NOT_FOUND, 404)
        if path == "/api/v3/services":
            services = sorted({s.service for s in self.spans})
            return json_answer({"services": services})
        if m := re.fullmatch(r"/api/v3/traces/([0-9a-fA-F]{1,32})", path):
            found = self.traces.get(m.group(1).lower().rjust(32, "0"))
            if not found:
                return gateway_error(404, "No traces found")
            try:
                raw = _parse_bool(*params.get("rawTraces", "raw_traces", default="false"))
            except ValueError as error:
                return gateway_error(400, str(error))
            return json_answer(jaeger_v3(self.answered([found], raw)))
        if path == "/api/v3/traces":
            return self.find(params)
        return text_answer(PAGE_NOT_FOUND, 404)

    def answered(self, traces: list[list[SpanRecord]], raw: bool) -> list[SpanRecord]:
        """The spans of ``traces`` as this Jaeger answers them: adjusted, unless asked for
        ``raw`` traces or this Jaeger predates the adjusters."""
        if raw or self.version < (2, 2):
            return [span for trace in traces for span in trace]
        return [s for trace in traces for s in adjusted(trace, self.max_clock_skew_adjust)]

    def find(self, params: Params) -> Response:
        try:
            wanted = Search(params, checked=self.version >= (2, 19))
            raw = _parse_bool(*params.get("query.rawTraces", "query.raw_traces", default="false"))
        except ValueError as error:
            return gateway_error(400, str(error))
        if not wanted.service:
            return gateway_error(500, "service name must be set")  # what the storage says
        hits = [t for t in self.traces.values() if any(wanted.matches(s) for s in t)]
        hits.sort(key=lambda t: -min(s.start_unix_nano for s in t))
        if not hits[: wanted.depth]:
            return gateway_error(404, "No traces found")
        return json_answer(jaeger_v3(self.answered(hits[: wanted.depth], raw)))


class Params:
    """A request's query parameters as this Jaeger's gateway resolves them (see the module)."""

    def __init__(self, args: Any, camel_case: bool, snake_case: bool) -> None:
        self.args, self.camel_case, self.snake_case = args, camel_case, snake_case
        self.deprecated: list[str] = []

    def get(self, canonical: str, *aliases: str, default: str = "") -> tuple[str, str]:
        """The value and the name it was found under: the camelCase name first (from 2.19),
        else the first snake_case alias present (the only names before 2.19)."""
        if self.camel_case and self.args.get(canonical):
            return self.args[canonical], canonical
        for alias in aliases if self.snake_case or not self.camel_case else ():
            if self.args.get(alias):
                if self.camel_case:
                    self.deprecated.append(alias)
                return self.args[alias], alias
        return default, canonical if self.camel_case else aliases[0]


class Search:
    """The search parameters as ``parseFindTracesQuery`` reads them."""

    def __init__(self, params: Params, *, checked: bool) -> None:
        """``checked``: as Jaeger 2.19 and later read them (attributes, the order of times)."""
        self.service = params.get("query.serviceName", "query.service_name")[0]
        self.attributes: dict[str, str] = {}
        if checked and params.args.get("query.attributes"):
            try:
                self.attributes = json.loads(params.args["query.attributes"])
            except ValueError as error:
                raise ValueError(f"malformed parameter query.attributes: {error}") from None
        low = params.get("query.startTimeMin", "query.start_time_min")
        high = params.get("query.startTimeMax", "query.start_time_max")
        if not low[0] or not high[0]:
            raise ValueError("query.startTimeMin and query.startTimeMax are required")
        self.low, self.high = _time(*low), _time(*high)
        if checked and not self.low < self.high:
            raise ValueError("query.startTimeMin must be before query.startTimeMax")
        depth = params.get("query.searchDepth", "query.num_traces", "query.search_depth")[0]
        self.depth = int(depth or 100)
        self.min_nanos = _duration(*params.get("query.durationMin", "query.duration_min"))

    def matches(self, span: SpanRecord) -> bool:
        return (
            span.service == self.service
            and self.low <= span.start_unix_nano <= self.high
            and span.end_unix_nano - span.start_unix_nano >= self.min_nanos
            and all(span.attributes.get(k) == v for k, v in self.attributes.items())
        )


def _parse_bool(value: str, name: str) -> bool:
    """Go's ``strconv.ParseBool``, with the gateway's error for what it refuses."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(
        f"malformed parameter {name}: strconv.ParseBool: parsing {quote(value)}: invalid syntax"
    )


def _time(value: str, name: str) -> int:
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1e9)
    except ValueError:
        raise ValueError(f"malformed parameter {name}: cannot parse {value!r}") from None


def _duration(value: str | None, name: str) -> int:
    try:
        return parse_duration(value) if value else 0
    except ValueError as error:
        raise ValueError(f"malformed parameter {name}: {error}") from None
