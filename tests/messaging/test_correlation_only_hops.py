"""Correlation-only queue hops read only the correlation ID, like the HTTP server in that mode.

Headers arrive as they would from a producer in full mode (trace context, baggage, the
correlation header), so the consumer's choices are visible: which ID the handler sees, that no
span or trace context is made current, and what a publish from inside the handler carries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context

import tracekit
from tracekit import correlation, messaging

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def correlation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")


def _handled(headers: Any, **kwargs: Any) -> tuple[str | None, dict[str, Any], Any]:
    """The correlation ID the handler saw, what it published, and the current span inside."""
    republished: dict[str, Any] = {}
    with messaging.consume(headers, system="test", destination="q", **kwargs):
        cid = tracekit.correlation_id()
        inner = trace.get_current_span()
        messaging.inject(republished, system="test", destination="next")
    return cid, republished, inner


def test_the_header_wins_and_nothing_else_is_made_current(spans: Any) -> None:
    headers = {
        "traceparent": TRACEPARENT,
        "x-correlation-id": "from-header",
        "baggage": "correlation.id=from-baggage,tenant=acme",
    }
    cid, republished, inner = _handled(headers, correlation_property="from-property")
    assert cid == "from-header"
    assert not inner.get_span_context().is_valid
    assert baggage.get_baggage("tenant") is None
    assert republished["x-correlation-id"] == "from-header"
    assert "traceparent" not in republished
    assert republished["baggage"] == "correlation.id=from-header"
    assert spans.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"baggage": "tenant=acme, correlation.id=from-baggage"}, "from-baggage"),
        ({b"BAGGAGE": b"correlation.id=from-bytes"}, "from-bytes"),
        ({"x-correlation-id": "<bad>", "baggage": "correlation.id=behind-bad"}, "behind-bad"),
        ({"baggage": "correlation.id=%3Cbad%3E"}, "from-property"),
        ({"baggage": "tenant=acme"}, "from-property"),
        ({}, "from-property"),
    ],
)
def test_baggage_then_the_property_supply_a_missing_id(headers: Any, expected: str) -> None:
    cid, _, _ = _handled(headers, correlation_property="from-property")
    assert cid == expected


def test_baggage_is_not_read_when_the_propagators_leave_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    cid, republished, _ = _handled({"baggage": "correlation.id=from-baggage"})
    assert cid is not None and cid != "from-baggage"
    assert set(republished) == {"x-correlation-id", "tracekit-publish-time"}


def test_bad_values_are_still_refused_with_a_warning() -> None:
    script = (  # a process of its own: the warning is rate-limited per process
        "import logging, tracekit; from tracekit import messaging\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "headers = {'x-correlation-id': b'\\xffEVIL', 'traceparent': 'EVIL'}\n"
        "with messaging.consume(headers, system='t', destination='q', correlation_property='p'):\n"
        "    print(tracekit.correlation_id())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "TRACEKIT_MODE": "correlation", "TRACEKIT_EXPORTER": "none"},
    )
    assert result.stdout.strip() == "p"
    assert "ignored message header x-correlation-id (not UTF-8)" in result.stderr
    assert "EVIL" not in result.stderr


def test_queue_wait_is_measured_without_a_span() -> None:
    token = correlation.set_correlation_id("waited-1")
    try:
        headers = messaging.inject({}, system="test", destination="q")
    finally:
        correlation.reset_correlation_id(token)
    with messaging.consume(headers, system="test", destination="q") as message:
        assert message.correlation_id == "waited-1"
    assert message.span is None
    assert message.queue_wait_ms is not None and message.queue_wait_ms >= 0


def test_work_handed_to_a_pool_with_the_otel_context_sees_the_id() -> None:
    """What OpenTelemetry's threading instrumentation carries into a pool thread is
    OpenTelemetry's context alone: the message's ID rides in it, as in full mode."""

    def in_pool(carried: Context) -> str | None:
        token = otel_context.attach(carried)
        try:
            return tracekit.correlation_id()
        finally:
            otel_context.detach(token)

    with ThreadPoolExecutor(1) as pool:
        with messaging.consume({"x-correlation-id": "msg-8"}, system="test", destination="q"):
            seen = pool.submit(in_pool, otel_context.get_current()).result()
        after = pool.submit(in_pool, otel_context.get_current()).result()

    assert (seen, after) == ("msg-8", None)
    assert otel_context.get_value(correlation.CONTEXT_KEY) is None
