"""Servers on loopback: uvicorn (ASGI) and werkzeug (WSGI) in threads, a free port, waiting for a
port to accept connections, stopping a served app with Ctrl-C, a link to a server a test can cut."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from conditions import wait_for
from werkzeug.serving import make_server


def start_uvicorn(
    app: Any, *, inside: Callable[[], AbstractContextManager[Any]] | None = None, **settings: Any
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with uvicorn (``settings``: more of its Config, ``root_path="/api"``;
    ``inside``: what the server runs within, e.g. a span made current, which every request's
    task then starts in a copy of); returns its base URL and a function that stops it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="auto", ws="websockets-sansio", **settings
    )
    server = uvicorn.Server(config)

    def run() -> None:
        with inside() if inside is not None else nullcontext():
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


# What asking a server that is not up (yet) raises: wait_for(..., ignoring=UNREACHABLE).
UNREACHABLE = (OSError, httpx.HTTPError)

# For polling a server until it answers: httpx.get() builds a client, and an SSL context, per
# call (30-80 ms of CPU per poll). Without keep-alive each poll is a connection of its own, as
# httpx.get()'s was, and none is left open when the server is stopped.
POLLING = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


# Ports free_port hands out: below Linux's ephemeral range (32768-60999), from which the system
# picks every port asked for as 0 and every client connection's own port. A port the system
# picked and freed for a test could be a client's of another test process a moment later (a
# server told it then failed "Address already in use"); each pytest-xdist process has its own
# slice of these, handed out in turn.
_PORTS = range(20000, 32768)


def _own_ports() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    size = len(_PORTS) // max(count, 1)
    mine = _PORTS[index * size : (index + 1) * size]
    start = random.randrange(len(mine))  # another run's servers may still hold the first ones
    return itertools.cycle([*mine[start:], *mine[:start]])


_next_port = _own_ports()
_port_lock = threading.Lock()


def free_port() -> int:
    """A port nobody listens on right now, on any interface (for servers that must be told
    one): from this test process's own slice, outside the range the system picks ports from."""
    with _port_lock:
        for _ in range(len(_PORTS)):
            port = next(_next_port)
            with socket.socket() as sock:
                try:
                    sock.bind(("", port))  # taken on any interface, loopback included
                except OSError:
                    continue
                return port
    raise AssertionError("no free port in this test process's slice")


def wait_for_port(
    port: int, process: subprocess.Popen[Any] | None = None, timeout: float = 10.0
) -> None:
    """Wait until something accepts connections on loopback ``port`` (and ``process``, the
    server, is still running)."""

    def accepts() -> bool:
        if process is not None and process.poll() is not None:
            said = process.stderr.read()[-2000:] if process.stderr else ""
            raise AssertionError(f"the server exited with {process.returncode}: {said!r}")
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True

    wait_for(accepts, timeout, f"a server on port {port}", ignoring=(OSError,))


def start_werkzeug(
    app: Any, ssl_context: ssl.SSLContext | None = None
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with werkzeug's threaded server (over TLS with ``ssl_context``); returns its
    base URL and a stop function."""
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    scheme = "https" if ssl_context else "http"
    return f"{scheme}://127.0.0.1:{server.server_port}", serve_in_thread(server)


def serve_in_thread(server: socketserver.BaseServer) -> Callable[[], None]:
    """Run ``server`` (http.server, wsgiref, werkzeug) in a thread; returns a function that
    stops it and closes its socket.

    Stopping waits for the serving loop to look at its flag again: every 10 ms here, where
    ``serve_forever()``'s default of 0.5 s made each stop wait 0.25 s on average.
    """
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)
        server.server_close()

    return stop


@contextmanager
def serving_werkzeug(app: Any) -> Iterator[str]:
    """``start_werkzeug`` as a ``with`` block: yields the base URL, stops at the end."""
    url, stop = start_werkzeug(app)
    try:
        yield url
    finally:
        stop()


def start_traced(kind: str, asgi_endpoint: Any, wsgi_app: Any) -> tuple[str, Callable[[], None]]:
    """``asgi_endpoint`` (a Starlette endpoint at ``/``) or ``wsgi_app`` behind tracekit's
    middleware, by ``kind`` ("asgi" or "wsgi"), served on loopback."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from tracekit import asgi, wsgi

    if kind == "asgi":
        middleware = [Middleware(asgi.TracekitMiddleware)]
        return start_uvicorn(Starlette(routes=[Route("/", asgi_endpoint)], middleware=middleware))
    return start_werkzeug(wsgi.TracekitMiddleware(wsgi_app))


def interrupt(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Ctrl-C a served app (uvicorn then runs its shutdown, which flushes telemetry); kill it if
    it does not exit within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


class CuttableLink:
    """A TCP relay on loopback between one client and the server ``url`` names, which the test
    can cut: the connection is lost as when the network or the server goes away. ``self.url``
    is ``url`` through the relay."""

    def __init__(self, url: str) -> None:
        server = urlsplit(url)
        assert server.hostname is not None and server.port is not None, url
        self._server = (server.hostname, server.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = url.replace(f":{server.port}/", f":{self._listener.getsockname()[1]}/", 1)
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(self._server)
        self._sockets += [client, upstream]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def cut(self) -> None:
        for end in self._sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self._listener.close()
