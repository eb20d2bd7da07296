"""When a framework or OpenTelemetry's contrib middleware already opened the request's SERVER span
outside tracekit's middleware, tracekit stamps that span instead of adding a second one; in
public-endpoint mode it starts the request's new root trace itself. Real uvicorn on loopback."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from fastapi import FastAPI
from loopback import start_uvicorn
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi
from tracekit._http import server as http_server

CALLER_TRACE = "ab" * 16
CALLER_SPAN = "cd" * 8
UNTRUSTED = [
    b"traceparent: 00-" + CALLER_TRACE.encode() + b"-" + CALLER_SPAN.encode() + b"-01",
    b"baggage: correlation.id=from-baggage,tenant=evil",
]


def server_spans(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_fastapi_native_telemetry_gives_one_server_span_with_the_correlation_id(
    serve_asgi: Any, spans: Any
) -> None:
    app = FastAPI()  # native telemetry on: FastAPI opens the SERVER span itself

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        return {"correlation_id": tracekit.correlation_id()}

    app.add_middleware(asgi.TracekitMiddleware)
    response = send(serve_asgi(app) + "/orders/7", [b"X-Correlation-ID: fa-1"])

    assert response.status == 200
    assert response.header("X-Correlation-ID") == "fa-1"
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert server.name == "GET /orders/{order_id}"
    assert server.attributes["correlation.id"] == "fa-1"


def test_fastapi_native_telemetry_span_carries_the_exception_behind_a_500(
    serve_asgi: Any, spans: Any, caplog: Any
) -> None:
    """FastAPI marks its span failed with no message and no exception event (it reports
    exceptions as logs): ``tracekit trace`` showed only "ERROR HTTP 500", where plain Starlette
    shows the exception. tracekit, which sees the exception on its way out, records it there."""
    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception
    app = FastAPI()

    @app.get("/pay")
    async def pay() -> None:
        raise RuntimeError("card processor refused: kaboom")

    app.add_middleware(asgi.TracekitMiddleware)
    response = send(serve_asgi(app) + "/pay", [b"X-Correlation-ID: fa-boom"])

    assert response.status == 500
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert server.attributes["error.type"] == "RuntimeError"
    (event,) = [e for e in server.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "card processor refused: kaboom"


def test_contrib_asgi_middleware_span_carries_the_exception_once(
    serve_asgi: Any, spans: Any, caplog: Any
) -> None:
    """Contrib's span ends with Starlette's 500 page, before the exception reaches contrib's own
    recording: tracekit's middleware inside the app's error handling records it, once."""
    caplog.set_level(logging.CRITICAL)

    async def pay(request: Request) -> PlainTextResponse:
        raise RuntimeError("kaboom")

    inner = Starlette(routes=[Route("/pay", pay)])
    inner.add_middleware(asgi.TracekitMiddleware)
    app = OpenTelemetryMiddleware(inner)
    assert send(serve_asgi(app) + "/pay", []).status == 500
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert [e.attributes["exception.message"] for e in server.events] == ["kaboom"]


def test_contrib_asgi_middleware_outside_tracekit_gives_one_server_span(
    serve_asgi: Any, spans: Any
) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(tracekit.correlation_id() or "")

    inner = asgi.TracekitMiddleware(Starlette(routes=[Route("/hello", hello)]))
    response = send(serve_asgi(OpenTelemetryMiddleware(inner)) + "/hello", [b"X-Request-ID: r-9"])

    assert response.status == 200
    assert response.body == b"r-9"
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert server.attributes["correlation.id"] == "r-9"


def public_app(telemetry: dict[str, Any] | None = None) -> FastAPI:
    app = FastAPI(telemetry=telemetry)

    @app.get("/pay/{order_id}")
    async def pay(order_id: int) -> dict[str, Any]:
        current = trace.get_current_span().get_span_context()
        return {
            "trace_id": format(current.trace_id, "032x"),
            "baggage": dict(baggage.get_all()),
            "correlation_id": tracekit.correlation_id(),
        }

    app.add_middleware(asgi.TracekitMiddleware, public_endpoint=True)
    return app


def check_new_root(response: Any, spans: Any) -> Any:
    """The handler ran in a new trace, without the caller's baggage; tracekit's SERVER span is
    its root and links to the caller."""
    assert response.status == 200
    seen = json.loads(response.body)
    assert seen["trace_id"] != CALLER_TRACE
    assert seen["baggage"] == {}
    assert seen["correlation_id"] == "pub-1"
    assert response.header("X-Correlation-ID") == "pub-1"
    time.sleep(0.1)
    (root,) = [s for s in server_spans(spans) if s.attributes.get("correlation.id") == "pub-1"]
    assert root.parent is None and root.name == "GET /pay/{order_id}"
    assert format(root.context.trace_id, "032x") == seen["trace_id"]
    (link,) = root.links
    assert format(link.context.trace_id, "032x") == CALLER_TRACE
    assert format(link.context.span_id, "016x") == CALLER_SPAN
    return root


def test_public_endpoint_with_fastapi_native_telemetry_starts_the_new_root_itself(
    serve_asgi: Any, spans: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(http_server, "_warned_outer_span", False)
    caplog.set_level(logging.WARNING, logger="tracekit")
    url = serve_asgi(public_app())  # FastAPI opens a SERVER span of its own, outside tracekit
    response = send(url + "/pay/9", [*UNTRUSTED, b"X-Correlation-ID: pub-1"])
    send(url + "/pay/10", UNTRUSTED)

    root = check_new_root(response, spans)
    in_new_trace = [
        s for s in spans.get_finished_spans() if s.context.trace_id == root.context.trace_id
    ]
    assert "fastapi.endpoint" in {s.name for s in in_new_trace}  # FastAPI's work is inside
    assert [s.kind for s in in_new_trace].count(SpanKind.SERVER) == 1
    # FastAPI's own span still continued the caller's trace (documented), and says nothing more.
    fastapi_own = [
        s for s in server_spans(spans) if format(s.context.trace_id, "032x") == CALLER_TRACE
    ]
    assert len(fastapi_own) == 2 and all("correlation.id" not in s.attributes for s in fastapi_own)
    warnings = [r.getMessage() for r in caplog.records if "public_endpoint" in r.getMessage()]
    assert len(warnings) == 1 and "FastAPI(telemetry={'tracing': False})" in warnings[0]


def test_public_endpoint_with_fastapi_tracing_off_has_one_root(serve_asgi: Any, spans: Any) -> None:
    url = serve_asgi(public_app({"tracing": False}))
    response = send(url + "/pay/9", [*UNTRUSTED, b"X-Correlation-ID: pub-1"])
    check_new_root(response, spans)
    assert len(server_spans(spans)) == 1


class ScriptedIds(RandomIdGenerator):
    """Trace ids in the order given: which a ratio sampler keeps is known beforehand."""

    def __init__(self, *trace_ids: int) -> None:
        self.trace_ids = list(trace_ids)

    def generate_trace_id(self) -> int:
        return self.trace_ids.pop(0)


def _sampled_fastapi(recorded: InMemorySpanExporter, *trace_ids: int) -> FastAPI:
    """FastAPI with its own tracing under a ratio sampler of one half (``trace_ids``: the ids
    its new traces get, in turn) and tracekit's middleware; ``GET /orders/{id}`` answers the
    trace and correlation ID its handler saw."""
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(0.5)), id_generator=ScriptedIds(*trace_ids)
    )
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        current = trace.get_current_span().get_span_context()
        return {"trace_id": current.trace_id, "correlation_id": tracekit.correlation_id()}

    app.add_middleware(asgi.TracekitMiddleware, tracer_provider=provider)
    return app


def test_a_request_fastapis_span_left_out_of_the_sample_records_no_span_of_tracekits(
    serve_asgi: Any,
) -> None:
    """With a ratio sampler, tracekit's middleware found FastAPI's SERVER span left out and
    started a root of its own, in a new trace the sampler asked about again: 0.2 recorded
    about 36% of requests (uvicorn, 400 requests: 39%), each in a trace FastAPI's own spans
    were not in. The request follows the decision made for it once."""
    left_out, kept = 0xAB << 120 | (2**64 - 1), 0xCD << 120 | 1  # half: the low 64 bits decide
    recorded = InMemorySpanExporter()
    app = _sampled_fastapi(recorded, left_out, kept)
    response = send(serve_asgi(app) + "/orders/7", [b"X-Correlation-ID: out-1"])

    assert response.status == 200
    assert response.header("X-Correlation-ID") == "out-1"
    time.sleep(0.1)
    assert [s.name for s in recorded.get_finished_spans()] == []
    seen = json.loads(response.body)
    assert seen == {"trace_id": left_out, "correlation_id": "out-1"}  # FastAPI's trace, one


def test_a_server_started_inside_a_span_left_out_still_continues_its_callers_traces() -> None:
    """The program's startup span, left out by the sampler, is current in every request's task.
    tracekit took it for the request's own span: no request was traced, a caller's sampled
    trace ended at its CLIENT span, and every request's log lines named the startup's trace."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))  # follows callers, starts none
    provider.add_span_processor(SimpleSpanProcessor(recorded))

    async def hello(request: Request) -> JSONResponse:
        current = trace.get_current_span().get_span_context()
        return JSONResponse({"trace_id": f"{current.trace_id:032x}"})

    app = asgi.TracekitMiddleware(
        Starlette(routes=[Route("/hello", hello)]), tracer_provider=provider
    )
    url, stop = start_uvicorn(
        app, inside=lambda: provider.get_tracer("startup").start_as_current_span("startup")
    )
    try:
        response = send(url + "/hello", UNTRUSTED[:1])
    finally:
        stop()

    assert response.status == 200
    assert json.loads(response.body) == {"trace_id": CALLER_TRACE}
    (server,) = recorded.get_finished_spans()
    assert (server.name, server.kind) == ("GET /hello", SpanKind.SERVER)
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN


@pytest.mark.parametrize("denial", [b"b3: 0", b"X-B3-Sampled: 0"])
def test_a_callers_denial_without_ids_keeps_the_request_in_fastapis_trace(
    serve_asgi: Any, monkeypatch: pytest.MonkeyPatch, denial: bytes
) -> None:
    """A B3 caller's "do not sample" sent without ids makes up a new trace id each time the
    headers are read: tracekit compared FastAPI's left-out span with a trace made up again,
    took it for a span of the program's own and opened a second span, asking the sampler a
    second time, in yet another trace, which the handler's log lines and calls then named."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    left_out = 0xAB << 120 | (2**64 - 1)
    recorded = InMemorySpanExporter()
    app = _sampled_fastapi(recorded, left_out)
    response = send(serve_asgi(app) + "/orders/7", [denial, b"X-Correlation-ID: out-2"])

    assert response.status == 200
    time.sleep(0.1)
    assert [s.name for s in recorded.get_finished_spans()] == []
    assert json.loads(response.body) == {"trace_id": left_out, "correlation_id": "out-2"}
