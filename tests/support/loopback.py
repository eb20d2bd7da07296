"""uvicorn (ASGI) and werkzeug (WSGI) servers in threads on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from werkzeug.serving import make_server


def start_uvicorn(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with uvicorn; returns its base URL and a function that stops it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def start_werkzeug(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with werkzeug's threaded server; returns its base URL and a stop function."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


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
