"""Calls cut short against a real server on loopback that answers late or not at all: an asyncio
task cancelled mid-request, a read timeout, a streamed body left unread or closed early.

The CLIENT span ends once, when the call returns or fails (a streamed body is read after it),
with the error the caller sees; tracekit logs nothing of the caller's own failure, and the next
call on the same task or thread is a call of its own: its span, its trace headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import trace

CHUNK = b"first"


class LateServer:
    """A server on loopback: ``/hang`` reads the request and never answers; ``/stream`` sends
    its headers and a first chunk, and the rest never; anything else gets the request's headers
    back as JSON. What never comes is released (the connection closed) when the test is over."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.over = threading.Event()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(65536) or b"\r\n\r\n"
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if " " in lines[0] else "/"
            if path == "/hang":
                self.over.wait(30)
            elif path == "/stream":
                chunk = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
                connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
                self.over.wait(30)
            else:
                pairs = [line.split(":", 1) for line in lines[1:] if ":" in line]
                body = json.dumps({k.strip().lower(): v.strip() for k, v in pairs}).encode()
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.over.set()
        self.listener.close()


@pytest.fixture
def late() -> Iterator[LateServer]:
    server = LateServer()
    yield server
    server.close()


def _only_span(wait_for_spans: Any) -> Any:
    (span,) = wait_for_spans(1)
    return span


def _left_nothing_behind(log_lines: list[str]) -> None:
    """Nothing of the call is current any more, and tracekit logged nothing of it."""
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert [line for line in log_lines if "tracekit" in line] == []


async def _httpx_async(url: str) -> dict[str, str]:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, timeout=30)).json()  # type: ignore[no-any-return]


async def _aiohttp(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return json.loads(await response.read())  # type: ignore[no-any-return]


ASYNC_CLIENTS: dict[str, Callable[[str], Any]] = {"httpx-async": _httpx_async, "aiohttp": _aiohttp}


@pytest.mark.parametrize("name", sorted(ASYNC_CLIENTS))
def test_a_call_cancelled_mid_request_ends_its_span_and_leaves_the_task_as_it_was(
    name: str, late: LateServer, http_clients: None, wait_for_spans: Any, log_lines: list[str]
) -> None:
    call = ASYNC_CLIENTS[name]

    async def cancelled_then_again() -> tuple[object, dict[str, str]]:
        with pytest.raises(TimeoutError):  # the caller's own cancellation, as without tracekit
            async with asyncio.timeout(0.3):
                await call(late.url + "/hang")
        after = trace.get_current_span()
        return after, await call(late.url + "/echo")

    after, seen = asyncio.run(cancelled_then_again())

    assert after is trace.INVALID_SPAN  # nothing of the cancelled call is current any more
    cancelled, then = sorted(wait_for_spans(2), key=lambda s: s.start_time)
    assert (cancelled.status.status_code.name, cancelled.attributes["error.type"]) == (
        "ERROR",
        "CancelledError",
    )
    assert then.status.status_code.name == "UNSET"
    assert then.attributes["http.response.status_code"] == 200
    # the next call on the task is one of its own, traced and sent with its own span's id
    assert seen["traceparent"].split("-")[2] == f"{then.context.span_id:016x}"
    assert then.context.trace_id != cancelled.context.trace_id
    _left_nothing_behind(log_lines)


def _requests_timeout(url: str) -> None:
    requests.get(url, timeout=0.3)


def _httpx_timeout(url: str) -> None:
    httpx.get(url, timeout=0.3)


def _urllib3_timeout(url: str) -> None:
    with urllib3.PoolManager(retries=False) as pool:
        pool.request("GET", url, timeout=0.3)


def _aiohttp_timeout(url: str) -> None:
    async def go() -> None:
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await session.get(url)

    asyncio.run(go())


@pytest.mark.parametrize(
    "call", [_requests_timeout, _httpx_timeout, _urllib3_timeout, _aiohttp_timeout]
)
def test_a_read_timeout_ends_the_span_with_the_callers_error_and_logs_nothing(
    call: Callable[[str], None],
    late: LateServer,
    http_clients: None,
    wait_for_spans: Any,
    log_lines: list[str],
) -> None:
    with pytest.raises(Exception) as raised:
        call(late.url + "/hang")

    span = _only_span(wait_for_spans)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == type(raised.value).__qualname__
    assert "http.response.status_code" not in span.attributes
    _left_nothing_behind(log_lines)


def _requests_unread(url: str) -> Callable[[], None]:
    response = requests.get(url, stream=True, timeout=30)
    return response.close


def _requests_closed_early(url: str) -> Callable[[], None]:
    with requests.get(url, stream=True, timeout=30) as response:
        assert next(response.iter_content(len(CHUNK))) == CHUNK
    return lambda: None


def _httpx_closed_early(url: str) -> Callable[[], None]:
    with httpx.stream("GET", url, timeout=30) as response:
        assert next(response.iter_raw()) == CHUNK
    return lambda: None


def _urllib3_unread(url: str) -> Callable[[], None]:
    pool = urllib3.PoolManager()
    response = pool.request("GET", url, preload_content=False, timeout=30)
    return lambda: (response.release_conn(), pool.clear())


def _aiohttp_closed_early(url: str) -> Callable[[], None]:
    async def go() -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert await response.content.read(len(CHUNK)) == CHUNK

    asyncio.run(go())
    return lambda: None


STREAMING: dict[str, Callable[[str], Callable[[], None]]] = {
    "requests unread": _requests_unread,
    "requests closed early": _requests_closed_early,
    "httpx closed early": _httpx_closed_early,
    "urllib3 unread": _urllib3_unread,
    "aiohttp closed early": _aiohttp_closed_early,
}


@pytest.mark.parametrize("name", sorted(STREAMING))
def test_a_streamed_body_left_unread_or_closed_early_leaves_one_ended_span(
    name: str, late: LateServer, http_clients: None, wait_for_spans: Any, log_lines: list[str]
) -> None:
    """The body never finishes: the span, ended as the call returned with the headers, says
    the status the server answered, and no other span stays open behind it."""
    release = STREAMING[name](late.url + "/stream")
    try:
        span = _only_span(wait_for_spans)
    finally:
        release()
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code.name == "UNSET"
    _left_nothing_behind(log_lines)
