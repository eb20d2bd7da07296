"""A real HTTP server on loopback (werkzeug, in a thread) for the backend tests.

No Tempo or Jaeger can run on these machines; ``tempo_fake`` and ``jaeger_fake`` are WSGI apps
that answer as those servers do (their encodings from ``otlp_fixtures``, their status codes and
error bodies), and tests serve them, or a one-off handler, with ``serve`` (``serve_tls``: over
HTTPS, with the test certificate of ``tls/``, which a client trusts when ``SSL_CERT_FILE`` names
``tls/ca.pem``; ``serve_keep_alive``: with uvicorn, which keeps connections open between
requests as Go's server behind Tempo and Jaeger does, and werkzeug's does not). ``serve_raw``
answers every connection with fixed bytes, for answers no WSGI server would send (a status line
that is not HTTP, a chunked body cut short).
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conditions import wait_for
from loopback import start_werkzeug
from uvicorn.middleware.wsgi import WSGIMiddleware
from werkzeug.wrappers import Request, Response

_HERE = Path(__file__).resolve().parent
for directory in (_HERE, _HERE.parent / "path"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

Handler = Callable[[Request], Response]


TLS = _HERE / "tls"  # a test CA (ca.pem) and the server certificate it signed for 127.0.0.1


class FakeBackend:
    """Serves ``handler`` on 127.0.0.1 and records every request path with its query string."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.url, self._stop = start_werkzeug(self._app, ssl_context)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(request)
        return self.handler(request)(environ, start_response)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        self._stop()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], FakeBackend]]:
    started: list[FakeBackend] = []

    def start(handler: Handler) -> FakeBackend:
        started.append(FakeBackend(handler))
        return started[-1]

    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def serve_tls() -> Iterator[Callable[[Handler], FakeBackend]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    started: list[FakeBackend] = []

    def start(handler: Handler) -> FakeBackend:
        started.append(FakeBackend(handler, context))
        return started[-1]

    yield start
    for backend in started:
        backend.close()


class KeepAliveBackend:
    """Serves ``handler`` on 127.0.0.1 as Go's HTTP server does, keeping connections open between
    requests (werkzeug's dev server closes each), with uvicorn; records every request and the
    client end of every connection made (``connections``). ``latency``: seconds each request is
    held before it is answered, as a backend across a network would hold it."""

    def __init__(self, handler: Handler, latency: float = 0.0) -> None:
        self.handler, self.latency = handler, latency
        self.requests: list[Request] = []
        self.connections: set[tuple[str, int]] = set()
        with warnings.catch_warnings():  # deprecated for a2wsgi, which is not installed here
            warnings.simplefilter("ignore", DeprecationWarning)
            self._wsgi = WSGIMiddleware(self._app, workers=16)
        self.url, self._stop = _serve_with_uvicorn(self._asgi)

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.connections.add(tuple(scope["client"]))  # type: ignore[arg-type]
        await self._wsgi(scope, receive, send)  # type: ignore[arg-type]

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(request)
        time.sleep(self.latency)
        return self.handler(request)(environ, start_response)

    def close(self) -> None:
        self._stop()


def _serve_with_uvicorn(app: Any) -> tuple[str, Callable[[], None]]:
    """``app`` (ASGI) served by uvicorn on a port the system picks; its URL and a stop function.
    uvicorn binds the port itself, so asyncio sets TCP_NODELAY on each connection, as Go's server
    does: given a socket made without naming TCP (``start_uvicorn``'s), it did not, and each
    request on a kept connection waited 40 ms for the client's delayed ACK (Nagle's algorithm
    holding the body behind the head)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", interface="asgi3"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def serve_keep_alive() -> Iterator[Callable[..., KeepAliveBackend]]:
    started: list[KeepAliveBackend] = []

    def start(handler: Handler, latency: float = 0.0) -> KeepAliveBackend:
        started.append(KeepAliveBackend(handler, latency))
        return started[-1]

    yield start
    for backend in started:
        backend.close()


class RawBackend:
    """Answers every connection on 127.0.0.1 with ``answer`` once it has read the request head."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0  # how many it has answered
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            with connection:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := connection.recv(65536)):
                    head += chunk
                connection.sendall(self.answer)

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        self._listener.close()


@pytest.fixture
def serve_raw() -> Iterator[Callable[[bytes], RawBackend]]:
    started: list[RawBackend] = []

    def start(answer: bytes) -> RawBackend:
        started.append(RawBackend(answer))
        return started[-1]

    yield start
    for backend in started:
        backend.close()
