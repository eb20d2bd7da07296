"""TempoSource against a loopback server answering in Tempo's documented HTTP API format.

No real Tempo can run here: the server below answers /api/v2/traces/<id> (hex ids, integer
enums), /api/traces/<id> (v1: base64 ids, enum names) and /api/search (TraceQL), from documents
written from Tempo's API documentation, plus error, empty and slow answers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from otlp_fixtures import tempo_search_hit, tempo_v1, tempo_v2
from trace_topologies import MemorySource, checkout, incident
from werkzeug.wrappers import Request, Response

from tracekit.backends.tempo import TempoSource, traceql_string
from tracekit.path import reconstruct
from tracekit.records import BackendError, SpanRecord

JSON = "application/json"


def tempo_app(
    spans: list[SpanRecord], *, v2: bool = True, links: bool = True
) -> Callable[[Request], Response]:
    traces: dict[str, list[SpanRecord]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)

    def handle(request: Request) -> Response:
        if match := re.fullmatch(r"/api/v2/traces/([0-9a-f]+)", request.path):
            if not v2 or match.group(1) not in traces:
                return Response("trace not found", 404)
            return Response(json.dumps(tempo_v2(traces[match.group(1)])), 200, mimetype=JSON)
        if match := re.fullmatch(r"/api/traces/([0-9a-f]+)", request.path):
            if match.group(1) not in traces:
                return Response("trace not found", 404)
            return Response(json.dumps(tempo_v1(traces[match.group(1)])), 200, mimetype=JSON)
        if request.path == "/api/search":
            return search(request.args["q"])
        return Response("404 page not found", 404)

    def search(query: str) -> Response:
        hits = list(traces)
        if m := re.search(r'span\.correlation\.id = "([^"]*)"', query):
            hits = [t for t in hits if any(s.correlation_id == m.group(1) for s in traces[t])]
        if m := re.search(r'link:traceID = "([0-9a-f]+)"', query):
            if not links:
                return Response('parse error: unknown intrinsic "link:traceID"', 400)
            hits = [
                t
                for t in hits
                if any(ln.trace_id == m.group(1) for s in traces[t] for ln in s.links)
            ]
        if m := re.search(r'trace:rootService = "([^"]*)"', query):
            hits = [t for t in hits if tempo_search_hit(traces[t])["rootServiceName"] == m.group(1)]
        body = {
            "traces": [tempo_search_hit(traces[t]) for t in hits],
            "metrics": {"inspectedTraces": len(traces)},
        }
        return Response(json.dumps(body), 200, mimetype=JSON)

    return handle


def memory_path(spans: list[SpanRecord], query: str) -> dict[str, Any]:
    path = reconstruct(MemorySource(spans), query, with_logs=False)
    assert path is not None
    return path.to_json()


def test_linked_traces_joined_through_traceql_link_search(serve: Any) -> None:
    spans = checkout().spans + incident().spans
    backend = serve(tempo_app(spans))
    path = reconstruct(TempoSource(backend.url), "req-incident-9")
    assert path is not None
    assert path.to_json() == memory_path(spans, "req-incident-9")
    assert len(path.trace_ids) == 2
    queries = [r.args.get("q") for r in backend.requests if r.path == "/api/search"]
    assert queries[0] == '{ span.correlation.id = "req-incident-9" }'
    assert any(q and q.startswith("{ link:traceID = ") for q in queries)


def test_v1_fallback_with_base64_ids_and_enum_names(serve: Any) -> None:
    spans = checkout().spans
    backend = serve(tempo_app(spans, v2=False))
    source = TempoSource(backend.url)
    path = reconstruct(source, spans[0].trace_id)
    assert (
        path is not None
        and path.to_json()["spans"] == memory_path(spans, spans[0].trace_id)["spans"]
    )
    assert [s.kind for s in source.spans_by_trace_ids([spans[0].trace_id])][:2] == [
        "SERVER",
        "CLIENT",
    ]
    assert "/api/traces/" + spans[0].trace_id in backend.paths()


def test_older_tempo_without_link_search_still_finds_the_request(serve: Any) -> None:
    backend = serve(tempo_app(incident().spans, links=False))
    path = reconstruct(TempoSource(backend.url), "req-incident-9")
    assert path is not None and len(path.trace_ids) == 1  # the consumer trace stays unseen


def test_unknown_request_is_not_found(serve: Any) -> None:
    backend = serve(tempo_app(checkout().spans))
    assert reconstruct(TempoSource(backend.url), "req-nobody") is None
    assert reconstruct(TempoSource(backend.url), "f" * 32) is None


def test_server_error_is_one_clear_backend_error(serve: Any) -> None:
    backend = serve(lambda request: Response("internal error\nat line 3", 500))
    with pytest.raises(BackendError) as caught:
        TempoSource(backend.url, retries=0).spans_by_correlation_id("x")
    assert (
        str(caught.value) == f"Tempo at {backend.url} answered HTTP 500: internal error at line 3"
    )


def test_unavailable_is_retried_a_bounded_number_of_times(serve: Any) -> None:
    answers = iter([Response("busy", 503), Response(json.dumps({"traces": []}), 200)])
    backend = serve(lambda request: next(answers))
    assert TempoSource(backend.url, retries=1).spans_by_correlation_id("x") == []
    always = serve(lambda request: Response("busy", 503))
    with pytest.raises(BackendError, match="HTTP 503"):
        TempoSource(always.url, retries=2).spans_by_correlation_id("x")
    assert len(always.requests) == 3


def test_slow_server_times_out(serve: Any) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("{}", 200)

    backend = serve(slow)
    started = time.monotonic()
    with pytest.raises(BackendError, match="unreachable"):
        TempoSource(backend.url, timeout=0.3, retries=1).spans_by_trace_ids(["a" * 32])
    assert time.monotonic() - started < 1.5


def test_garbage_answers_are_backend_errors(serve: Any) -> None:
    backend = serve(lambda request: Response("<html>proxy login</html>", 200))
    with pytest.raises(BackendError, match="not JSON"):
        TempoSource(backend.url).spans_by_trace_ids(["a" * 32])
    broken = serve(lambda r: Response(json.dumps({"batches": [{"scopeSpans": [{"spans": [
        {"traceId": "!!", "spanId": "zz", "startTimeUnixNano": "soon"}]}]}]}), 200))  # fmt: skip
    with pytest.raises(BackendError):
        TempoSource(broken.url).spans_by_trace_ids(["a" * 32])
    with pytest.raises(BackendError, match="must be http"):
        TempoSource("file:///etc/passwd")


def test_search_summaries(serve: Any) -> None:
    spans = checkout().spans + incident().spans
    backend = serve(tempo_app(spans))
    found = TempoSource(backend.url).recent_requests(service="web", errors_only=True, limit=5)
    assert [(r.root_service, r.root_name, r.correlation_id) for r in found] == [
        ("web", "POST /jobs", "req-incident-9")
    ]
    assert found[0].trace_id == spans[-1].trace_id or len(found[0].trace_id) == 32
    query = backend.requests[-1].args["q"]
    assert query == '{ trace:rootService = "web" && status = error } | select(span.correlation.id)'


def test_traceql_strings_are_escaped() -> None:
    assert traceql_string('a"b\\c') == '"a\\"b\\\\c"'
