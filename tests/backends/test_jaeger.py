"""JaegerSource against a real HTTP server on loopback answering as jaeger-query's api_v3 does
(``jaeger_fake``).

No Jaeger can run here; the fake answers with Jaeger's encoding and its error bodies: Go's
``time.ParseDuration`` refusals, ``404 No traces found``, a bare ``404 page not found`` on a
server without api_v3, ``query.attributes`` ignored before 2.19.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import MemorySource, Topology, checkout, incident
from werkzeug.wrappers import Response

from tracekit.backends.jaeger import JaegerSource, rfc3339
from tracekit.path import reconstruct
from tracekit.records import BackendError, SpanRecord


def searched(backend: Any) -> list[Any]:
    return [r.args for r in backend.requests if r.path.endswith("/api/v3/traces")]


def test_correlation_search_discovers_services(serve: Any) -> None:
    spans = recent(checkout().spans + incident().spans)
    backend = serve(FakeJaeger(spans))
    notices: list[str] = []
    path = reconstruct(JaegerSource(backend.url, notify=notices.append), "req-checkout-1")
    expected = reconstruct(MemorySource(spans), "req-checkout-1", with_logs=False)
    assert path is not None and expected is not None
    assert path.to_json() == expected.to_json()
    assert "/api/v3/services" in backend.paths()
    assert json.loads(searched(backend)[0]["query.attributes"]) == {
        "correlation.id": "req-checkout-1"
    }
    assert notices == []  # Jaeger 2.19+ filtered by the attribute itself


def test_older_jaeger_ignores_attributes_and_tracekit_says_it_filters_itself(serve: Any) -> None:
    spans = recent(checkout().spans + incident().spans)
    backend = serve(FakeJaeger(spans, version=(2, 18)))
    notices: list[str] = []
    source = JaegerSource(backend.url, notify=notices.append)
    path = reconstruct(source, "req-checkout-1")
    assert path is not None and path.services == ["gateway", "orders", "payments", "bank"]
    assert reconstruct(source, "req-incident-9") is not None
    assert notices == [
        f"Jaeger at {backend.url} ignores query.attributes (it needs Jaeger 2.19 or later): "
        "tracekit filters client-side among the newest 100 traces of each service, so older "
        "requests can be missed"
    ]


def test_given_service_skips_discovery(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans)))
    path = reconstruct(JaegerSource(backend.url, service="gateway"), "req-checkout-1")
    assert path is not None and path.services == ["gateway", "orders", "payments", "bank"]
    assert "/api/v3/services" not in backend.paths()


def test_trace_by_id_and_not_found(serve: Any) -> None:
    spans = recent(checkout().spans)
    backend = serve(FakeJaeger(spans))
    source = JaegerSource(backend.url)
    assert len(source.spans_by_trace_ids([spans[0].trace_id.upper()])) == len(spans)
    assert reconstruct(source, "0" * 31 + "1") is None
    assert reconstruct(source, "req-nobody") is None


@pytest.mark.parametrize(
    ("typed_ms", "sent"), [(0.05, "50us"), (1500, "1500ms"), (2000, "2s"), (0.0000015, "2ns")]
)
def test_min_duration_is_sent_as_go_parses_it(serve: Any, typed_ms: float, sent: str) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans)))
    JaegerSource(backend.url).recent_requests(service="gateway", min_duration_ms=typed_ms)
    assert [args["query.duration_min"] for args in searched(backend)] == [sent]


def test_the_fake_refuses_exponents_as_jaeger_does(serve: Any) -> None:
    """What tracekit used to send: the fake must answer it as Jaeger does, or the test above
    proves nothing."""
    backend = serve(FakeJaeger(recent(checkout().spans)))
    query = urllib.parse.urlencode(
        {
            "query.service_name": "gateway",
            "query.duration_min": "5e-05s",
            "query.start_time_min": "2026-01-01T00:00:00Z",
            "query.start_time_max": "2030-01-01T00:00:00Z",
        }
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{backend.url}/api/v3/traces?{query}")
    assert refused.value.code == 400
    assert json.loads(refused.value.read()) == {
        "error": {
            "httpCode": 400,
            "message": "malformed parameter query.duration_min: "
            'time: unknown unit "e-" in duration "5e-05s"',
        }
    }


def test_a_jaeger_without_api_v3_is_a_clear_error(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans), api_v3=False))
    for source in (JaegerSource(backend.url, service="gateway"), JaegerSource(backend.url)):
        with pytest.raises(BackendError) as refused:
            source.recent_requests(service=source.service)
        assert str(refused.value).startswith(f"Jaeger at {backend.url} has no api_v3 (")
        assert "answered 404 page not found): tracekit needs Jaeger 1.54 or later" in str(
            refused.value
        )
    with pytest.raises(BackendError, match="has no api_v3"):
        reconstruct(JaegerSource(backend.url, service="gateway"), "req-checkout-1")


def test_recent_requests_grouped_by_trace(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans + incident().spans)))
    found = JaegerSource(backend.url).recent_requests(service="web", since_unix_nano=1, limit=5)
    assert [(r.root_service, r.correlation_id, r.span_count, r.error) for r in found] == [
        ("web", "req-incident-9", 6, True)
    ]


def test_search_without_since_looks_back_as_far_as_trace(serve: Any) -> None:
    """A request from two hours ago, which ``trace`` finds, is in ``search`` too."""
    backend = serve(FakeJaeger(recent(checkout().spans + incident().spans, seconds_ago=7200)))
    found = JaegerSource(backend.url).recent_requests(service="web", limit=5)
    assert [r.correlation_id for r in found] == ["req-incident-9"]
    sent = searched(backend)[0]["query.start_time_min"]
    assert sent < rfc3339(time.time() - 2 * 24 * 3600 + 60)


def test_since_the_epoch_is_a_time_not_no_time(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans + incident().spans, seconds_ago=7200)))
    JaegerSource(backend.url).recent_requests(service="web", since_unix_nano=0, limit=5)
    assert searched(backend)[0]["query.start_time_min"].startswith("1970-01-01T00:00:00")


def test_errors_only_is_filtered_client_side_and_said_once(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans + incident().spans)))
    notices: list[str] = []
    source = JaegerSource(backend.url, notify=notices.append)
    for _ in range(2):
        found = source.recent_requests(errors_only=True, since_unix_nano=1)
        assert [r.correlation_id for r in found] == ["req-incident-9"]
    assert notices == [
        "Jaeger's api_v3 cannot search by status: tracekit keeps the traces in "
        "error among the newest 20 it reads per service"
    ]


def test_errors_only_with_a_service_says_its_traces_are_read(serve: Any) -> None:
    """With a service named, its traces are read page by page until the requests in error
    are found: the notice said "among the newest 20 it reads per service"."""
    backend = serve(FakeJaeger(recent(checkout().spans + incident().spans)))
    notices: list[str] = []
    source = JaegerSource(backend.url, service="web", notify=notices.append)
    found = source.recent_requests(service="web", errors_only=True, since_unix_nano=1)
    assert [r.correlation_id for r in found] == ["req-incident-9"]
    assert notices == [
        "Jaeger's api_v3 cannot search by status: tracekit keeps the traces in "
        "error among the traces of 'web' it reads"
    ]


def test_a_linked_consumer_trace_is_not_a_request_of_its_own(serve: Any) -> None:
    """incident(): worker's trace starts with a consumer linked to api's producer."""
    backend = serve(FakeJaeger(recent(incident().spans)))
    found = JaegerSource(backend.url).recent_requests(since_unix_nano=1, limit=5)
    assert [(r.root_service, r.root_name) for r in found] == [("web", "POST /jobs")]


def test_tenant_header_and_base_path(serve: Any) -> None:
    backend = serve(FakeJaeger(recent(checkout().spans), tenant="blue", base_path="/jaeger"))
    with pytest.raises(BackendError) as refused:
        JaegerSource(backend.url + "/jaeger", retries=0).recent_requests()
    assert str(refused.value) == (
        f"Jaeger at {backend.url}/jaeger answered HTTP 401: missing "
        "tenant header (check the tenant and credential headers)"
    )
    source = JaegerSource(backend.url + "/jaeger", headers={"x-tenant": "blue"})
    assert [r.correlation_id for r in source.recent_requests(since_unix_nano=1)] == [
        "req-checkout-1"
    ]


def test_backend_refusal_is_a_backend_error(serve: Any) -> None:
    backend = serve(lambda request: Response("upstream connect error", 502))
    with pytest.raises(BackendError) as caught:
        JaegerSource(backend.url, retries=0).spans_by_correlation_id("x")
    assert str(caught.value) == f"Jaeger at {backend.url}: HTTP 502: upstream connect error"


def test_an_answer_that_is_not_api_v3_is_a_backend_error(serve: Any) -> None:
    backend = serve(lambda request: Response(json.dumps({"data": []}), 200))
    with pytest.raises(BackendError, match="not an api_v3 traces document"):
        JaegerSource(backend.url).spans_by_trace_ids(["a" * 32])


def many_services(count: int, correlated_in: tuple[str, ...]) -> list[SpanRecord]:
    """A request in ``correlated_in``, among ``count`` services that each served another."""
    spans: list[SpanRecord] = []
    for n in range(count):
        t = Topology(f"req-other-{n}")
        t.span(f"svc-{n:02d}", "GET /other", "SERVER", 0, 10)
        spans += t.spans
    t = Topology("req-late")
    caller = t.span(correlated_in[0], "GET /x", "SERVER", 0, 10)
    for service in correlated_in[1:]:
        t.http(caller, service, "/x", 1, 9)
    return recent(spans + t.spans)


def test_a_request_in_a_service_after_the_first_25_is_found(serve: Any) -> None:
    """Only the first 25 services (by name) were searched: a request served by svc-27 and
    svc-29 alone was "not found"."""
    backend = serve(FakeJaeger(many_services(30, ("svc-27", "svc-29"))))
    notices: list[str] = []
    path = reconstruct(JaegerSource(backend.url, notify=notices.append), "req-late")
    assert path is not None and path.services == ["svc-27", "svc-29"]
    assert notices == []


def test_more_services_than_are_searched_is_said_once(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = serve(FakeJaeger(many_services(7, ("svc-06",))))
    monkeypatch.setattr("tracekit.backends.jaeger.MAX_SERVICES", 5)
    notices: list[str] = []
    source = JaegerSource(backend.url, notify=notices.append)
    assert reconstruct(source, "req-late") is None
    assert source.recent_requests(since_unix_nano=1) != []
    assert notices == [
        f"Jaeger at {backend.url} lists 7 services: tracekit searches the first 5 by name, so a "
        "request only in the others is not found (name one of its services with --service)"
    ]
    assert len(searched(backend)) == 10  # 5 services, twice
