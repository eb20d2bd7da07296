"""Trace context over the wire, the way the W3C test harness checks it: raw request headers in,
the headers the service would send downstream out, for ASGI and WSGI servers on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from loopback import start_traced
from opentelemetry import propagate
from rawhttp import send
from starlette.requests import Request
from starlette.responses import JSONResponse

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
