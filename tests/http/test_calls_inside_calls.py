"""A call made from inside another client call (a requests response hook, an httpx event hook, an
aiohttp client middleware: fetching a token, reporting to an audit service) is a call of its own:
its span and its headers. What is the *same* call one layer down stays quiet: urllib3 under
requests. What the call sends again (a redirect followed, a urllib3 retry) is that call's resend:
a span of its own with ``http.request.resend_count``, in the call's trace, as OpenTelemetry's
HTTP conventions ask.

Real clients against werkzeug on loopback; the server records the headers each request carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry.trace import SpanKind

from tracekit import correlation

CID = "order-42"


class Recorder:
    """A WSGI app: ``/redirect`` answers 302 to ``/api``, ``/flaky`` 503 but every third time;
    everything else 200. Each request's path and its trace and correlation headers are kept."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        self.seen.append(
            (path, environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_X_CORRELATION_ID"))
        )
        if path == "/redirect":
            start_response("302 Found", [("Location", "/api"), ("Content-Length", "0")])
            return []
        if path == "/flaky" and len([p for p, _, _ in self.seen if p == path]) % 3:
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return []
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def carried(self, path: str) -> tuple[str | None, str | None]:
        (found,) = [(tp, cid) for p, tp, cid in self.seen if p == path]
        return found


@pytest.fixture
def recorder(serve_wsgi: Any) -> Iterator[tuple[Recorder, str]]:
    app = Recorder()
    yield app, serve_wsgi(app)


@pytest.fixture
def in_request() -> Iterator[None]:
    token = correlation.set_correlation_id(CID)
    yield
    correlation.reset_correlation_id(token)


def client_spans(wait_for_spans: Any, count: int) -> dict[str, Any]:
    found = [s for s in wait_for_spans(count) if s.kind is SpanKind.CLIENT]
    return {s.attributes["url.full"].rsplit("/", 1)[1]: s for s in found}


def traceparent_of(span: Any) -> str:
    """The traceparent ``span`` sends (sampled, with W3C level 2's random trace-id flag)."""
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-03"


def resends(wait_for_spans: Any, count: int) -> list[Any]:
    """The CLIENT spans of one call sent ``count`` times, in the order sent: the first without
    ``http.request.resend_count``, then 1, 2, ...; in one trace."""
    found = [s for s in wait_for_spans(count) if s.kind is SpanKind.CLIENT]
    found.sort(key=lambda s: s.attributes.get("http.request.resend_count", 0))
    assert [s.attributes.get("http.request.resend_count") for s in found] == [
        None,
        *range(1, count),
    ]
    assert len({s.context.trace_id for s in found}) == 1
    # siblings under the call's parent; under the first span where the call began the trace
    first = found[0]
    parent = first.parent.span_id if first.parent else first.context.span_id
    assert [s.parent.span_id for s in found[1:]] == [parent] * (count - 1)
    return found


def assert_own_call(recorder: Recorder, spans: dict[str, Any], outer: str, inner: str) -> None:
    """``inner`` was called inside ``outer``: each has its span and sent its own headers."""
    assert set(spans) == {outer, inner}
    assert recorder.carried(f"/{outer}") == (traceparent_of(spans[outer]), CID)
    assert recorder.carried(f"/{inner}") == (traceparent_of(spans[inner]), CID)
    assert spans[inner].parent.span_id == spans[outer].context.span_id
    assert spans[inner].context.trace_id == spans[outer].context.trace_id


def test_a_call_from_a_requests_response_hook(
    recorder: tuple[Recorder, str], http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    app, base = recorder

    def audit(response: Any, *args: Any, **kwargs: Any) -> None:
        requests.post(f"{base}/audit", data=b"x", timeout=10)

    requests.get(f"{base}/api", hooks={"response": audit}, timeout=10)

    assert_own_call(app, client_spans(wait_for_spans, 2), "api", "audit")


def test_a_call_from_an_httpx_event_hook(
    recorder: tuple[Recorder, str], http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    app, base = recorder

    def token(request: httpx.Request) -> None:
        httpx.post(f"{base}/token", content=b"x", timeout=10)

    with httpx.Client(event_hooks={"request": [token]}) as client:
        client.get(f"{base}/api", timeout=10)

    assert_own_call(app, client_spans(wait_for_spans, 2), "api", "token")


def test_a_call_from_an_aiohttp_client_middleware(
    recorder: tuple[Recorder, str], http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    app, base = recorder

    async def with_token(request: Any, handler: Any) -> Any:
        async with aiohttp.ClientSession() as auth, auth.post(f"{base}/token") as answer:
            await answer.read()
        return await handler(request)

    async def main() -> None:
        async with (
            aiohttp.ClientSession(middlewares=(with_token,)) as session,
            session.get(f"{base}/api") as answer,
        ):
            await answer.read()

    asyncio.run(main())

    assert_own_call(app, client_spans(wait_for_spans, 2), "api", "token")


def test_what_requests_does_below_one_call_is_that_call(
    recorder: tuple[Recorder, str], http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    """urllib3 under requests is the one call: no span of its own. The redirect requests
    follows is that call sent again: a span of its own (it shared the first one's, which ended
    with the final status), whose traceparent it carried."""
    app, base = recorder

    assert requests.get(f"{base}/redirect", timeout=10).status_code == 200

    first, hop = resends(wait_for_spans, 2)
    assert first.attributes["http.response.status_code"] == 302
    assert hop.attributes["http.response.status_code"] == 200
    assert hop.attributes["url.full"] == f"{base}/api"
    assert app.seen == [
        ("/redirect", traceparent_of(first), CID),
        ("/api", traceparent_of(hop), CID),
    ]


def test_a_urllib3_retry_is_the_same_call(
    recorder: tuple[Recorder, str], http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    app, base = recorder
    retry = urllib3.Retry(total=2, status_forcelist=[503], backoff_factor=0)
    with urllib3.PoolManager() as pool:
        assert pool.request("GET", f"{base}/flaky", retries=retry).status == 200

    attempts = resends(wait_for_spans, 3)
    statuses = [s.attributes["http.response.status_code"] for s in attempts]
    assert statuses == [503, 503, 200]
    assert [entry[1:] for entry in app.seen] == [(traceparent_of(s), CID) for s in attempts]


@pytest.mark.parametrize("correlated", [True, False], ids=["in-request", "no-request"])
def test_a_redirect_urllib3_follows_is_the_same_call(
    correlated: bool, recorder: tuple[Recorder, str], http_clients: None, wait_for_spans: Any
) -> None:
    """``PoolManager`` follows redirects above the connection pool: each hop was a span of its
    own, in a trace of its own outside a request. Now each is a span of the one call, in its
    trace, the second with ``http.request.resend_count`` 1; each hop carried its own span's
    traceparent."""
    app, base = recorder
    token = correlation.set_correlation_id(CID) if correlated else None
    try:
        with urllib3.PoolManager() as pool:
            assert pool.request("GET", f"{base}/redirect").status == 200
    finally:
        if token is not None:
            correlation.reset_correlation_id(token)

    first, hop = resends(wait_for_spans, 2)
    assert first.attributes["url.full"] == f"{base}/redirect"
    assert hop.attributes["url.full"] == f"{base}/api"
    assert first.attributes["http.response.status_code"] == 302
    assert hop.attributes["http.response.status_code"] == 200
    cid = CID if correlated else None
    assert app.seen == [
        ("/redirect", traceparent_of(first), cid),
        ("/api", traceparent_of(hop), cid),
    ]


@pytest.mark.parametrize("propagators", ["none", "baggage", "b3multi", "jaeger", "xray"])
def test_every_propagator_choice_tells_calls_apart(
    propagators: str,
    recorder: tuple[Recorder, str],
    http_clients: None,
    in_request: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no trace header to write (``none``, ``baggage``) every client span failed to start
    (IndexError on the first header name); with ``b3multi`` the call inside a hook was still
    taken for the outer one."""
    monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    app, base = recorder

    def audit(response: Any, *args: Any, **kwargs: Any) -> None:
        requests.post(f"{base}/audit", data=b"x", timeout=10)

    requests.get(f"{base}/api", hooks={"response": audit}, timeout=10)

    spans = client_spans(wait_for_spans, 2)
    assert sorted(spans) == ["api", "audit"]
    assert [(path, cid) for path, _, cid in app.seen] == [("/api", CID), ("/audit", CID)]


def test_a_call_in_a_hook_carrying_forwarded_b3_headers_is_a_call_of_its_own(
    serve_wsgi: Any,
    http_clients: None,
    in_request: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session that forwards the incoming ``x-b3-*`` headers on every call, as Istio asks:
    with ``b3multi`` a call from a response hook carried the outer call's ``x-b3-traceid`` (one
    trace) and was taken for that call: no span, no correlation header, and the forwarded
    ``x-b3-spanid`` sent as its parent."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    seen: list[tuple[str, str | None, str | None]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        carried = (environ.get("HTTP_X_B3_SPANID"), environ.get("HTTP_X_CORRELATION_ID"))
        seen.append((environ["PATH_INFO"], *carried))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    base = serve_wsgi(app)
    session = requests.Session()
    forwarded = {
        "X-B3-TraceId": f"{0xABC:032x}",
        "X-B3-SpanId": f"{0xDEF:016x}",
        "X-B3-Sampled": "1",
    }
    session.headers.update(forwarded)

    def audit(response: Any, *args: Any, **kwargs: Any) -> None:
        session.post(f"{base}/audit", data=b"x", timeout=10)

    session.get(f"{base}/api", hooks={"response": audit}, timeout=10)

    spans = client_spans(wait_for_spans, 2)
    assert sorted(spans) == ["api", "audit"]
    assert seen == [
        ("/api", f"{spans['api'].context.span_id:016x}", CID),
        ("/audit", f"{spans['audit'].context.span_id:016x}", CID),
    ]
    assert spans["audit"].parent.span_id == spans["api"].context.span_id
