"""tracekit next to opentelemetry-instrumentation-requests (and -httpx, -aiohttp-client): one
CLIENT span per call, whichever patched first, and the correlation header still on the wire
(tracekit's propagator is global). Spans made by the contrib instrumentation carry
``correlation.id`` too.
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
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor as ContribInstrumentor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from prometheus_client import REGISTRY

from tracekit import correlation, instrumentation


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


ORDERS = ["contrib first", "tracekit first"]


def instrument_both(order: str) -> list[Callable[[], None]]:
    """Instrument requests with both, in ``order``; returns how to undo it, in the order to.

    Last in, first out: contrib's unwrap() follows __wrapped__, which on a wrapt wrapper lying
    over contrib's function unwraps tracekit's layer instead of its own.
    """
    contrib = ContribInstrumentor()
    steps = [
        (contrib.instrument, contrib.uninstrument),
        (lambda: instrumentation.instrument(["requests"]), instrumentation.uninstrument),
    ]
    if order == "tracekit first":
        steps.reverse()
    for instrument, _ in steps:
        instrument()
    return [uninstrument for _, uninstrument in reversed(steps)]


@pytest.fixture(params=ORDERS)
def both_instrumented(request: pytest.FixtureRequest) -> Iterator[str]:
    undo = instrument_both(request.param)
    yield request.param
    for uninstrument in undo:
        uninstrument()


def test_exactly_one_client_span_per_call(both_instrumented: str, serve_wsgi, wait_for_spans):
    url = serve_wsgi(echo_app) + "/coexist"
    token = correlation.set_correlation_id("coexist-42")
    try:
        seen = [requests.get(url, timeout=10).json() for _ in range(3)]
    finally:
        correlation.reset_correlation_id(token)

    finished = wait_for_spans(3)
    assert [span.kind for span in finished] == [SpanKind.CLIENT] * 3
    assert [span.attributes["correlation.id"] for span in finished] == ["coexist-42"] * 3
    for headers, span in zip(seen, finished, strict=True):
        assert headers["x-correlation-id"] == "coexist-42"
        assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


@pytest.mark.parametrize("order", ORDERS)
def test_nothing_left_behind_after_both_uninstrument(order: str, serve_wsgi, spans) -> None:
    original = requests.Session.__dict__["send"]
    for uninstrument in instrument_both(order):
        uninstrument()

    assert requests.Session.__dict__["send"] is original
    url = serve_wsgi(echo_app) + "/plain"
    token = correlation.set_correlation_id("left-behind")
    try:
        seen = requests.get(url, timeout=10).json()
    finally:
        correlation.reset_correlation_id(token)
    assert "traceparent" not in seen and "x-correlation-id" not in seen
    assert spans.get_finished_spans() == ()


def call_httpx(url: str) -> dict[str, str]:
    with httpx.Client() as client:
        return client.get(url, timeout=10).json()


def call_aiohttp(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return json.loads(await response.read())

    return asyncio.run(go())


ASYNC_AND_HTTPX = {
    "aiohttp": (AioHttpClientInstrumentor, "aiohttp", call_aiohttp),
    "httpx": (HTTPXClientInstrumentor, "httpx", call_httpx),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("client", sorted(ASYNC_AND_HTTPX))
def test_one_span_and_one_parent_beside_contribs_httpx_and_aiohttp(
    client: str, order: str, serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """contrib's aiohttp client opens its span in a ``TraceConfig`` that runs before tracekit's
    when it patched last, and does not raise OpenTelemetry's suppression flag: tracekit must
    still not add a second CLIENT span, nor send the server a parent other than the one span."""
    contrib_class, name, call = ASYNC_AND_HTTPX[client]
    contrib = contrib_class()
    steps = [
        (contrib.instrument, contrib.uninstrument),
        (lambda: instrumentation.instrument([name]), instrumentation.uninstrument),
    ]
    if order == "tracekit first":
        steps.reverse()
    for instrument, _ in steps:
        instrument()
    token = correlation.set_correlation_id("coexist-7")
    try:
        seen = call(serve_wsgi(echo_app) + "/coexist")
    finally:
        correlation.reset_correlation_id(token)
        for _, uninstrument in reversed(steps):
            uninstrument()

    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.CLIENT
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert seen["x-correlation-id"] == "coexist-7"


def _client_calls() -> tuple[float, set[str]]:
    """The calls tracekit's ``http_client_request_duration_seconds`` counted, and the trace ids
    of its exemplars."""
    (family,) = [m for m in REGISTRY.collect() if m.name == "http_client_request_duration_seconds"]
    counted = sum(s.value for s in family.samples if s.name.endswith("_count"))
    exemplars = {s.exemplar.labels["trace_id"] for s in family.samples if s.exemplar}
    return counted, exemplars


@pytest.mark.parametrize("order", ORDERS)
def test_aiohttp_calls_beside_contrib_are_counted_whether_sampled_or_not(
    order: str, serve_wsgi: Any, spans: Any
) -> None:
    """Where contrib's aiohttp span traced the call, tracekit's client metrics went without it:
    the calls the sampler kept were never counted (nor an exemplar), while those it left out
    were, under a span of tracekit's below contrib's. With parentbased_traceidratio 0.3, 20
    calls counted 13, the 7 kept missing. Each is counted once now, the kept one's exemplar
    naming contrib's span."""
    contrib = AioHttpClientInstrumentor()
    steps = [
        (contrib.instrument, contrib.uninstrument),
        (lambda: instrumentation.instrument(["aiohttp"]), instrumentation.uninstrument),
    ]
    if order == "tracekit first":
        steps.reverse()
    for instrument, _ in steps:
        instrument()
    url = serve_wsgi(echo_app) + "/counted"
    left_out = SpanContext(0xAB << 100, 0xCD << 40, False, TraceFlags(TraceFlags.DEFAULT))
    counted_before, _ = _client_calls()
    try:
        call_aiohttp(url)  # no parent: the session's sampler keeps it
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(left_out)))
        try:
            seen = call_aiohttp(url)
        finally:
            otel_context.detach(token)
    finally:
        for _, uninstrument in reversed(steps):
            uninstrument()

    counted, exemplars = _client_calls()
    assert counted - counted_before == 2
    (kept,) = spans.get_finished_spans()
    assert f"{kept.context.trace_id:032x}" in exemplars
    assert seen["traceparent"].split("-")[1] == f"{left_out.trace_id:032x}"
    assert seen["traceparent"].split("-")[3] in ("00", "02")  # left out downstream too
