"""HTTP clients against a real echo server: one CLIENT span each and the injected headers seen by
the server; ``tracekit.uninstrument()`` puts the original functions back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

import tracekit
from tracekit import correlation

PARENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def call_requests(url: str) -> dict[str, str]:
    return requests.get(url, timeout=10).json()


def call_httpx(url: str) -> dict[str, str]:
    with httpx.Client() as client:
        return client.get(url, timeout=10).json()


def call_httpx_async(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=10)).json()

    return _run(go())


def call_urllib3(url: str) -> dict[str, str]:
    with urllib3.PoolManager() as pool:
        return json.loads(pool.request("GET", url, headers={"Accept": "x/y"}).data)


def call_aiohttp(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return json.loads(await response.read())

    return _run(go())


def _run(coroutine: Any) -> Any:
    """Run in a copy of this context, as an application's event loop would see it."""
    return asyncio.run(coroutine)


CLIENTS: dict[str, Callable[[str], dict[str, str]]] = {
    "requests": call_requests,
    "httpx": call_httpx,
    "httpx-async": call_httpx_async,
    "urllib3": call_urllib3,
    "aiohttp": call_aiohttp,
}


@pytest.fixture
def echo_url(serve_wsgi: Any) -> str:
    return serve_wsgi(echo_app) + "/echo/path?token=secret"


@pytest.fixture
def in_request() -> Iterator[None]:
    """A request context: correlation ID, a remote parent with tracestate, and baggage."""
    parent = SpanContext(
        PARENT_TRACE, 0xB7AD6B7169203331, True, TraceFlags(1), TraceState([("congo", "t61r")])
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    ctx = baggage.set_baggage("tenant", "acme", ctx)
    cid_token = correlation.set_correlation_id("client-test-1")
    token = context.attach(ctx)
    yield
    context.detach(token)
    correlation.reset_correlation_id(cid_token)


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_one_client_span_and_headers_on_the_wire(
    name: str, echo_url: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    seen = CLIENTS[name](echo_url)

    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"
    assert span.context.trace_id == PARENT_TRACE
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["correlation.id"] == "client-test-1"
    assert span.attributes["url.full"].endswith("/echo/path")  # query (tokens) dropped
    assert seen["traceparent"] == f"00-{PARENT_TRACE:032x}-{span.context.span_id:016x}-03"
    assert seen["tracestate"] == "congo=t61r"
    assert seen["x-correlation-id"] == "client-test-1"
    assert "tenant=acme" in seen["baggage"]
    assert "correlation.id=client-test-1" in seen["baggage"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_errors_are_recorded_and_raised(name: str, http_clients: None, wait_for_spans):
    with pytest.raises(Exception) as raised:
        CLIENTS[name]("http://127.0.0.1:9/closed")  # port 9 (discard): nothing listens

    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in span.events)
    assert span.attributes["error.type"] in {type(e).__qualname__ for e in _chain(raised.value)}


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


ORIGINALS = {
    "requests": (requests.sessions.Session, "send"),
    "httpx": (httpx.Client, "send"),
    "httpx-async": (httpx.AsyncClient, "send"),
    "urllib3": (urllib3.connectionpool.HTTPConnectionPool, "urlopen"),
    "aiohttp": (aiohttp.ClientSession, "__init__"),
}


def test_uninstrument_restores_the_original_functions(echo_url: str, spans: Any) -> None:
    before = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}
    tracekit.instrumentation.instrument(["aiohttp", "httpx", "requests", "urllib3"])
    patched = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}

    tracekit.uninstrument()

    after = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}
    assert all(patched[name] is not before[name] for name in ORIGINALS)
    assert after == before
    for call in CLIENTS.values():
        assert "traceparent" not in call(echo_url)
    assert spans.get_finished_spans() == ()


def test_instrument_twice_wraps_once(http_clients: None) -> None:
    first = httpx.Client.__dict__["send"]
    tracekit.instrumentation.instrument(["httpx"])
    assert httpx.Client.__dict__["send"] is first
