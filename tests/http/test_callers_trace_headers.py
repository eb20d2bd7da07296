"""Trace headers and baggage the application set itself on an outgoing request, against a real
echo server, through every client tracekit patches:

- inside a trace, the caller's headers of a format tracekit writes give way to tracekit's as a
  set, so no header of another trace is left beside tracekit's own on the wire;
- outside any trace, they name the parent of tracekit's span, so the call stays in that trace;
- the caller's baggage members go on inside tracekit's baggage header;
- header values given as bytes are read as text.
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
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tracekit import correlation

Headers = dict[str, str]


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


async def _aiohttp_get(url: str, headers: Headers) -> Headers:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return json.loads(await response.read())


async def _httpx_async_get(url: str, headers: Headers) -> Headers:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, headers=headers, timeout=10)).json()


SENDERS: dict[str, Callable[[str, Headers], Headers]] = {
    "requests": lambda url, headers: requests.get(url, headers=headers, timeout=10).json(),
    "httpx": lambda url, headers: httpx.get(url, headers=headers, timeout=10).json(),
    "httpx-async": lambda url, headers: asyncio.run(_httpx_async_get(url, headers)),
    "urllib3": lambda url, headers: json.loads(urllib3.request("GET", url, headers=headers).data),
    "aiohttp": lambda url, headers: asyncio.run(_aiohttp_get(url, headers)),
}
OTHER_TRACE = f"{1:032x}"
REQUEST_TRACE = 0xABC


@pytest.fixture
def in_a_request() -> Iterator[None]:
    """A request under way: its correlation ID and its remote parent (no tracestate)."""
    parent = SpanContext(REQUEST_TRACE, 0xDEF, True, TraceFlags(1))
    token = correlation.set_correlation_id("request-a")
    ctx_token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    yield
    context.detach(ctx_token)
    correlation.reset_correlation_id(token)


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_a_callers_tracestate_does_not_ride_on_tracekits_traceparent(
    name: str, serve_wsgi: Any, http_clients: None, in_a_request: None, wait_for_spans: Any
) -> None:
    """OpenTelemetry's ``ot=rv:…`` is the randomness of the caller's trace: beside tracekit's
    traceparent of another trace, it would make the next service sample by the wrong value."""
    callers = {"Traceparent": f"00-{OTHER_TRACE}-{1:016x}-01", "TraceState": "ot=rv:00000000000001"}
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)

    (span,) = wait_for_spans(1)
    assert seen["traceparent"] == f"00-{REQUEST_TRACE:032x}-{span.context.span_id:016x}-03"
    assert "tracestate" not in seen


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_in_correlation_only_mode_the_callers_tracestate_gives_way_too(
    name: str,
    serve_wsgi: Any,
    http_clients: None,
    in_a_request: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span of tracekit's, but the request's remote parent is passed on: the caller's
    tracestate of another trace must not ride on it."""
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")
    callers = {"traceparent": f"00-{OTHER_TRACE}-{1:016x}-01", "tracestate": "ot=rv:00000000000001"}
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)

    assert seen["traceparent"].startswith(f"00-{REQUEST_TRACE:032x}-{0xDEF:016x}-")
    assert "tracestate" not in seen
    assert seen["x-correlation-id"] == "request-a"


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_b3_headers_of_another_trace_give_way_to_tracekits(
    name: str,
    serve_wsgi: Any,
    http_clients: None,
    in_a_request: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A B3 reader takes the single ``b3`` header before ``x-b3-*``: left beside tracekit's
    multi-header B3, the caller's would make the next service join the caller's trace."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    callers = {"B3": f"{OTHER_TRACE}-{1:016x}-1", "X-B3-Flags": "1"}
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)

    (span,) = wait_for_spans(1)
    assert "b3" not in seen and "x-b3-flags" not in seen
    assert seen["x-b3-traceid"] == f"{REQUEST_TRACE:032x}"
    assert seen["x-b3-spanid"] == f"{span.context.span_id:016x}"


@pytest.mark.parametrize("propagators", ["b3multi", "b3"])
@pytest.mark.parametrize("name", sorted(SENDERS))
def test_a_forwarded_b3_parent_span_id_gives_way_with_the_rest_of_the_set(
    name: str,
    propagators: str,
    serve_wsgi: Any,
    http_clients: None,
    in_a_request: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An application forwarding the incoming ``x-b3-*`` headers, as Istio asks: tracekit's ids
    replaced the caller's but the caller's ``X-B3-ParentSpanId`` went on beside them, naming
    the parent of another span as the parent of tracekit's; a Zipkin reader joining that span
    hung it under the wrong one."""
    monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    callers = {
        "X-B3-TraceId": f"{REQUEST_TRACE:032x}",
        "X-B3-SpanId": f"{0xDEF:016x}",
        "X-B3-ParentSpanId": f"{0x123:016x}",
        "X-B3-Sampled": "1",
    }
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)

    (span,) = wait_for_spans(1)
    assert "x-b3-parentspanid" not in seen
    ids = f"{REQUEST_TRACE:032x}-{span.context.span_id:016x}"
    if propagators == "b3":
        assert seen["b3"] == f"{ids}-1"
    else:
        assert f"{seen['x-b3-traceid']}-{seen['x-b3-spanid']}" == ids


CALLERS_PARENT = (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
TRACEPARENT = "00-%032x-%016x-01"


@pytest.mark.parametrize(
    ("propagators", "header", "value"),
    [
        ("tracecontext", "traceparent", TRACEPARENT),
        ("b3multi", "b3", "%032x-%016x-1"),
    ],
)
@pytest.mark.parametrize("name", sorted(SENDERS))
def test_a_call_outside_any_trace_stays_in_the_trace_its_headers_name(
    name: str,
    propagators: str,
    header: str,
    value: str,
    serve_wsgi: Any,
    http_clients: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker passing a job's traceparent on by hand: without tracekit the next service
    joined the job's trace; tracekit's span replaced it with a trace of its own, cutting the
    job from everything downstream. Its span is now a child of the parent the headers name."""
    monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    callers = {header: value % CALLERS_PARENT, "tracestate": "ot=rv:00000000000001"}
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)

    (span,) = wait_for_spans(1)
    assert span.context.trace_id == CALLERS_PARENT[0]
    assert span.parent is not None and span.parent.span_id == CALLERS_PARENT[1]
    if propagators == "tracecontext":
        assert seen["traceparent"] == f"00-{CALLERS_PARENT[0]:032x}-{span.context.span_id:016x}-01"
        assert seen["tracestate"] == "ot=rv:00000000000001"  # the caller's trace: it goes on
    else:
        assert seen["x-b3-traceid"] == f"{CALLERS_PARENT[0]:032x}" and "b3" not in seen


@pytest.mark.parametrize(
    ("propagators", "header", "value"),
    [
        ("xray", "X-Amzn-Trace-Id", "Root=1-%08x-%024x;Parent=%016x;Sampled=1;Lineage=a87bd80c:1"),
        ("b3", "b3", "%032x-%016x-d"),
    ],
    ids=["xray-lineage", "b3-debug"],
)
@pytest.mark.parametrize("name", sorted(SENDERS))
def test_outside_any_trace_what_the_callers_headers_forward_goes_on(
    name: str,
    propagators: str,
    header: str,
    value: str,
    serve_wsgi: Any,
    http_clients: None,
    wait_for_spans: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker passing a job's X-Ray header on by hand: its span became the parent of
    tracekit's, but its ``Lineage`` (Lambda's recursion count) was dropped from the header sent,
    and a B3 debug trace went on as merely sampled; without tracekit both went on, as they do
    from a request tracekit's middleware continued."""
    monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    trace_id, parent_id = CALLERS_PARENT
    ids = (trace_id >> 96, trace_id & (1 << 96) - 1) if propagators == "xray" else (trace_id,)
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", {header: value % (*ids, parent_id)})

    (span,) = wait_for_spans(1)
    assert span.parent is not None and span.parent.span_id == parent_id
    assert seen[header.lower()] == value % (*ids, span.context.span_id)


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_trace_headers_of_a_format_tracekit_does_not_write_are_left_alone(
    name: str, serve_wsgi: Any, http_clients: None, wait_for_spans: Any
) -> None:
    """An X-Ray header the application writes for AWS, tracekit writing W3C only: still sent."""
    xray = f"Root=1-00000000-{1:024x};Parent={1:016x};Sampled=1"
    seen = SENDERS[name](serve_wsgi(echo_app) + "/x", {"X-Amzn-Trace-Id": xray})

    wait_for_spans(1)
    assert seen["x-amzn-trace-id"] == xray
    assert "traceparent" in seen


@pytest.mark.parametrize("mode", ["full", "correlation"])
@pytest.mark.parametrize("name", sorted(SENDERS))
def test_baggage_the_caller_sends_goes_on_beside_the_requests_own(
    name: str,
    mode: str,
    serve_wsgi: Any,
    http_clients: None,
    monkeypatch: pytest.MonkeyPatch,
    spans: Any,
) -> None:
    """Inside a request, tracekit writes its baggage (the correlation ID, the context's
    members): the members the application put in its own ``baggage`` header are sent too,
    not dropped; its ``correlation.id`` gives way to the request's."""
    monkeypatch.setenv("TRACEKIT_MODE", mode)
    callers = {"Baggage": "user.id=alice,correlation.id=stale"}
    token = correlation.set_correlation_id("request-a")
    ctx_token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        seen = SENDERS[name](serve_wsgi(echo_app) + "/x", callers)
    finally:
        context.detach(ctx_token)
        correlation.reset_correlation_id(token)

    assert len(spans.get_finished_spans()) == (1 if mode == "full" else 0)
    members = sorted(seen["baggage"].split(","))
    assert members == ["correlation.id=request-a", "tenant=acme", "user.id=alice"]


BYTES_SENDERS: dict[str, Callable[[str, dict[str, bytes]], Headers]] = {
    "requests": lambda url, headers: requests.get(url, headers=headers, timeout=10).json(),
    "urllib3": lambda url, headers: json.loads(urllib3.request("GET", url, headers=headers).data),
}


@pytest.mark.parametrize("name", sorted(BYTES_SENDERS))
def test_header_values_given_as_bytes_are_read_as_text(
    name: str, serve_wsgi: Any, http_clients: None, wait_for_spans: Any
) -> None:
    """requests and urllib3 send bytes header values as they are: tracekit reads them too
    (urllib3's header dict raised on them, and the call went untraced, tracekit's warning in
    the application's log)."""
    callers = {"traceparent": (TRACEPARENT % CALLERS_PARENT).encode(), "baggage": b"user.id=alice"}
    token = correlation.set_correlation_id("request-b")
    try:
        seen = BYTES_SENDERS[name](serve_wsgi(echo_app) + "/x", callers)
    finally:
        correlation.reset_correlation_id(token)

    (span,) = wait_for_spans(1)
    assert span.context.trace_id == CALLERS_PARENT[0]
    assert seen["traceparent"] == f"00-{CALLERS_PARENT[0]:032x}-{span.context.span_id:016x}-01"
    assert sorted(seen["baggage"].split(",")) == ["correlation.id=request-b", "user.id=alice"]


def test_bytes_trace_headers_inside_the_applications_own_client_span(
    serve_wsgi: Any, http_clients: None, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside a CLIENT span of the application's own, tracekit compares the call's trace
    headers with that span's: a bytes value made urllib3's header dict raise, and the call went
    untraced, with tracekit's warning in the log and the stale header on the wire."""
    stale = (TRACEPARENT % CALLERS_PARENT).encode()
    tracer = trace.get_tracer("the-application")
    with tracer.start_as_current_span("call the shop", kind=trace.SpanKind.CLIENT):
        seen = BYTES_SENDERS["urllib3"](serve_wsgi(echo_app) + "/x", {"traceparent": stale})

    assert "tracekit" not in caplog.text
    ours = [s for s in wait_for_spans(2) if s.name == "GET"]
    assert [seen["traceparent"].split("-")[2]] == [f"{s.context.span_id:016x}" for s in ours]
