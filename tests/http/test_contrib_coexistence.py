"""tracekit next to opentelemetry-instrumentation-requests: one CLIENT span per call, whichever
patched first, and the correlation header still on the wire (tracekit's propagator is global).
Spans made by the contrib instrumentation carry ``correlation.id`` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor as ContribInstrumentor
from opentelemetry.trace import SpanKind

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
