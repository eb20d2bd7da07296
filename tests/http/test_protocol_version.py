"""CLIENT spans carry ``network.protocol.version``, the HTTP version the server answered in, as
OpenTelemetry's HTTP client conventions ask where it is known: every client tells it. Before,
no client span had it. Real clients against ``http.server`` on loopback, speaking HTTP/1.0 or
HTTP/1.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from loopback import serve_in_thread

VERSION = "network.protocol.version"


def _handler(version: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = version

        def do_GET(self) -> None:
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/here")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(params=["HTTP/1.0", "HTTP/1.1"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A server answering in the version asked for: its base URL and what the span says."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(request.param))
    stop = serve_in_thread(httpd)
    yield f"http://127.0.0.1:{httpd.server_port}", request.param.removeprefix("HTTP/")
    stop()


def _aiohttp(url: str) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            await answer.read()

    asyncio.run(go())


def _httpx_async(url: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            await client.get(url)

    asyncio.run(go())


CLIENTS: dict[str, Callable[[str], Any]] = {
    "requests": lambda url: requests.get(url, timeout=10),
    "httpx": lambda url: httpx.get(url, follow_redirects=True, timeout=10),
    "httpx-async": _httpx_async,
    "urllib3": lambda url: urllib3.PoolManager().request("GET", url),
    "aiohttp": _aiohttp,
}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_the_span_says_which_http_version_answered(
    name: str, server: tuple[str, str], http_clients: None, wait_for_spans: Any
) -> None:
    base, version = server

    CLIENTS[name](base + "/here")

    (span,) = wait_for_spans(1)
    assert span.attributes[VERSION] == version


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_redirect_and_its_resend_each_say_it(
    name: str, server: tuple[str, str], http_clients: None, wait_for_spans: Any
) -> None:
    base, version = server

    CLIENTS[name](base + "/moved")

    spans = wait_for_spans(2)
    assert [(s.attributes["http.response.status_code"], s.attributes[VERSION]) for s in spans] == [
        (302, version),
        (200, version),
    ]
