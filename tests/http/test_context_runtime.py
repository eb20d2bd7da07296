"""A host that installs its own OpenTelemetry context runtime after tracekit was imported."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from loopback import start_uvicorn, start_werkzeug
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracekit import asgi

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


class HostsRuntime(ContextVarsRuntimeContext):
    """A runtime a host installs at its own start-up (Sentry's OpenTelemetry integration sets
    ``opentelemetry.context._RUNTIME_CONTEXT`` so): its context variable is not the one the
    default runtime had."""


@pytest.fixture
def hosts_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", HostsRuntime())


def test_a_runtime_installed_after_import_sees_the_requests_span(
    hosts_runtime: None, spans: InMemorySpanExporter
) -> None:
    """Under real uvicorn, with the runtime replaced after tracekit was imported, the app saw
    no current span (trace 000…0) and its call went out in a new trace while tracekit attached
    the request's span to the default runtime's variable directly, which OpenTelemetry no
    longer read (96474ad). tracekit now goes through OpenTelemetry's context API."""
    downstream: list[str | None] = []

    def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        downstream.append(environ.get("HTTP_TRACEPARENT"))
        start_response("200 OK", [])
        return [b""]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen = trace.get_current_span().get_span_context().trace_id
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        httpx.get(echo_url, headers=carrier, timeout=10)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{seen:032x}".encode()})

    echo_url, stop_echo = start_werkzeug(echo)
    url, stop = start_uvicorn(asgi.TracekitMiddleware(app))
    try:
        answer = httpx.get(url + "/orders", headers={"traceparent": CALLER}, timeout=10)
    finally:
        stop()
        stop_echo()

    assert answer.text == CALLER_TRACE
    assert downstream[0] is not None and downstream[0].split("-")[1] == CALLER_TRACE
    (server,) = [span for span in spans.get_finished_spans() if span.name == "GET"]
    assert downstream[0].split("-")[2] == f"{server.context.span_id:016x}"
