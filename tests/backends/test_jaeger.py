"""JaegerSource against a loopback server answering in Jaeger's documented api_v3 HTTP format.

No real Jaeger can run here: the server below answers /api/v3/services, /api/v3/traces/<id> and
/api/v3/traces?query.* (OTLP/JSON under "result"), refusing searches without a service name as
most Jaeger storages do, plus not-found and streamed (one JSON object per line) answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from otlp_fixtures import jaeger_v3
from trace_topologies import MemorySource, checkout, incident
from werkzeug.wrappers import Request, Response

from tracekit.backends.jaeger import JaegerSource
from tracekit.path import reconstruct
from tracekit.records import BackendError, SpanRecord

JSON = "application/json"


def jaeger_app(spans: list[SpanRecord], *, stream: bool = False) -> Callable[[Request], Response]:
    traces: dict[str, list[SpanRecord]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)

    def not_found() -> Response:
        body = {"error": {"httpCode": 404, "message": "trace not found"}}
        return Response(json.dumps(body), 404, mimetype=JSON)

    def handle(request: Request) -> Response:
        if request.path == "/api/v3/services":
            return Response(json.dumps({"services": sorted({s.service for s in spans})}), 200)
        if match := re.fullmatch(r"/api/v3/traces/([0-9a-f]{32})", request.path):
            found = traces.get(match.group(1))
            return Response(json.dumps(jaeger_v3(found)), 200) if found else not_found()
        if request.path == "/api/v3/traces":
            return find(request.args)
        return Response("404 page not found", 404)

    def find(args: Any) -> Response:
        service = args.get("query.service_name")
        if not service or not args.get("query.start_time_min"):
            return Response(
                json.dumps(
                    {
                        "error": {
                            "httpCode": 400,
                            "message": "service_name and start_time_min are required",
                        }
                    }
                ),
                400,
            )
        wanted = json.loads(args.get("query.attributes") or "{}")

        def matches(s: SpanRecord) -> bool:
            return s.service == service and all(s.attributes.get(k) == v for k, v in wanted.items())

        hits = [t for t, group in traces.items() if any(matches(s) for s in group)]
        if not hits:
            return not_found()
        if stream:  # one chunk per trace, newline-delimited, as a streaming gateway sends them
            return Response("\n".join(json.dumps(jaeger_v3(traces[t])) for t in hits), 200)
        return Response(json.dumps(jaeger_v3([s for t in hits for s in traces[t]])), 200)

    return handle


def test_correlation_search_discovers_services(serve: Any) -> None:
    spans = checkout().spans + incident().spans
    backend = serve(jaeger_app(spans))
    path = reconstruct(JaegerSource(backend.url), "req-checkout-1")
    expected = reconstruct(MemorySource(spans), "req-checkout-1", with_logs=False)
    assert path is not None and expected is not None
    assert path.to_json() == expected.to_json()
    assert "/api/v3/services" in backend.paths()
    searched = [r.args for r in backend.requests if r.path == "/api/v3/traces"]
    assert json.loads(searched[0]["query.attributes"]) == {"correlation.id": "req-checkout-1"}


def test_given_service_skips_discovery_and_streamed_answers_are_read(serve: Any) -> None:
    backend = serve(jaeger_app(checkout().spans, stream=True))
    path = reconstruct(JaegerSource(backend.url, service="gateway"), "req-checkout-1")
    assert path is not None and path.services == ["gateway", "orders", "payments", "bank"]
    assert "/api/v3/services" not in backend.paths()


def test_trace_by_id_and_not_found(serve: Any) -> None:
    spans = checkout().spans
    backend = serve(jaeger_app(spans))
    source = JaegerSource(backend.url)
    assert len(source.spans_by_trace_ids([spans[0].trace_id.upper()])) == len(spans)
    assert reconstruct(source, "0" * 31 + "1") is None
    assert reconstruct(source, "req-nobody") is None


def test_recent_requests_grouped_by_trace(serve: Any) -> None:
    backend = serve(jaeger_app(checkout().spans + incident().spans))
    found = JaegerSource(backend.url).recent_requests(service="web", since_unix_nano=1, limit=5)
    assert [(r.root_service, r.correlation_id, r.error) for r in found] == [
        ("web", "req-incident-9", True)
    ]


def test_backend_refusal_is_a_backend_error(serve: Any) -> None:
    backend = serve(lambda request: Response("upstream connect error", 502))
    with pytest.raises(BackendError) as caught:
        JaegerSource(backend.url, retries=0).spans_by_correlation_id("x")
    assert str(caught.value) == f"Jaeger at {backend.url}: HTTP 502: upstream connect error"


def test_a_linked_consumer_trace_is_not_a_request_of_its_own(serve: Any) -> None:
    """incident(): worker's trace starts with a consumer linked to api's producer."""
    backend = serve(jaeger_app(incident().spans))
    found = JaegerSource(backend.url).recent_requests(since_unix_nano=1, limit=5)
    assert [(r.root_service, r.root_name) for r in found] == [("web", "POST /jobs")]
