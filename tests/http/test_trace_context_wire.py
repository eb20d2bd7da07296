"""Trace context over the wire, the way the W3C test harness checks it: raw request headers in,
the headers the service would send downstream out, for ASGI and WSGI servers on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from loopback import free_port, start_traced
from opentelemetry import propagate
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from stopping import Service

from tracekit.asgi import TracekitMiddleware

TRACE = "12345678901234567890123456789012"
TP = f"00-{TRACE}-1234567890123456-01".encode()


def downstream_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


async def asgi_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(downstream_headers())


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(downstream_headers()).encode()]


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def server_url(request: pytest.FixtureRequest) -> Any:
    url, stop = start_traced(request.param, asgi_endpoint, wsgi_app)
    yield url + "/"
    stop()


LONG_MEMBERS = b",".join(b"k%02d=%s" % (i, b"v" * 256) for i in range(32))  # 260 each
LONG_MEMBERS_LINE = b"tracestate: " + LONG_MEMBERS
THIRTY_LONG_MEMBERS = LONG_MEMBERS[: 30 * 261 - 1]
SHORT_MEMBERS = b",".join(b"k%02d=%s" % (i, b"v" * 16) for i in range(32))  # 21 characters each

CASES = [
    ("continued", [b"traceparent: " + TP], True, None),
    ("header name upper case", [b"TRACEPARENT: " + TP, b"TraceState: foo=1"], True, "foo=1"),
    ("duplicated traceparent", [b"traceparent: " + TP, b"traceparent: " + TP], False, None),
    ("version 00 extra field", [b"traceparent: " + TP + b"-extra"], False, None),
    ("all-zero trace id", [b"traceparent: 00-" + b"0" * 32 + b"-1234567890123456-01"], False, None),
    ("OWS", [b"traceparent: \t" + TP + b" \t"], True, None),
    (
        "tracestate combined",
        [b"traceparent: " + TP, b"tracestate: a=1", b"tracestate: b=2"],
        True,
        "a=1,b=2",
    ),
    (
        "tracestate duplicate across headers: the first kept",
        [b"traceparent: " + TP, b"tracestate: a=1", b"tracestate: a=2"],
        True,
        "a=1",
    ),
    (
        "tracestate keys with @ anywhere after the first character",
        [b"traceparent: " + TP, b"tracestate: foo@=1,foo@bar@baz=2,1x=3"],
        True,
        "foo@=1,foo@bar@baz=2,1x=3",
    ),
    ("tracestate without traceparent", [b"tracestate: a=1"], False, None),
    # Over 512 characters, cut as the spec asks: members over 128 characters first, then the last.
    (
        "tracestate of 32 long members after 2 short ones",
        [b"traceparent: " + TP, b"tracestate: congo=t61rcWkgMzE,rojo=1," + THIRTY_LONG_MEMBERS],
        True,
        "congo=t61rcWkgMzE,rojo=1",
    ),
    (
        "tracestate of 32 short members over 512 characters",
        [b"traceparent: " + TP, b"tracestate: " + SHORT_MEMBERS],
        True,
        SHORT_MEMBERS[:503].decode(),  # the first 24 members
    ),
    ("tracestate of long members only", [b"traceparent: " + TP, LONG_MEMBERS_LINE], True, None),
]


@pytest.mark.parametrize(
    ("case", "lines", "continued", "tracestate"), CASES, ids=[c[0] for c in CASES]
)
def test_trace_context_on_the_wire(
    server_url: str, case: str, lines: list[bytes], continued: bool, tracestate: str | None
) -> None:
    sent = json.loads(send(server_url, lines).body)

    assert sent["traceparent"].startswith("00-")
    assert (sent["traceparent"][3:35] == TRACE) is continued, case
    assert sent["traceparent"][36:52] != "1234567890123456"
    assert sent.get("tracestate") == tracestate
    assert sent["x-correlation-id"] == sent["baggage"].split("correlation.id=")[1]


DOWNSTREAM = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ.get("HTTP_TRACESTATE", "").encode()]
"""


def test_a_callers_long_tracestate_does_not_get_the_next_call_refused(
    tmp_path: Path, serve_asgi: Callable[[Any], str], http_clients: None
) -> None:
    """A caller's 32 tracestate members of 256 characters were sent on whole (8,341 characters):
    gunicorn, behind, refuses a header line over 8,190 bytes, so every call the application made
    while serving that request failed with 431. The next hop gets 512 characters at most."""
    downstream = Service(tmp_path, tmp_path / "spans.db")
    downstream.write("downstream.py", DOWNSTREAM)
    port = free_port()
    downstream.start("-m", "gunicorn", "-b", f"127.0.0.1:{port}", "downstream:app")
    try:
        downstream.wait_http(f"http://127.0.0.1:{port}/")

        async def call(request: Request) -> PlainTextResponse:
            answer = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/", timeout=10)
            return PlainTextResponse(f"{answer.status_code} {answer.text}")

        app = TracekitMiddleware(Starlette(routes=[Route("/call", call)]))
        answer = send(serve_asgi(app) + "/call", [b"traceparent: " + TP, LONG_MEMBERS_LINE])
    finally:
        downstream.kill()

    assert answer.body == b"200 "  # every member over 128 characters: no tracestate at all
