"""A plain WSGI app served by several gunicorn workers in test_gunicorn_multiprocess.py.

Each worker imports this module, so each calls tracekit.init() (TRACEKIT_* variables come from the
test). Responses carry the worker's pid; ``/metrics`` is mounted with ``wsgi_metrics_app``;
``/call?PORT`` or ``/call?PORT/PATH`` makes one outgoing HTTP call; ``/consume?NAME`` consumes one
message from the destination it names. With ``GUNISVC_CALL_AT_START=PORT`` it calls that port
as it is imported (in gunicorn's master under ``--preload``). With ``GUNISVC_EXIT_PROBE=FILE`` a
worker, as it exits, binds the metrics port as a sibling taking it over would, and writes to FILE
whether it could.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import tracekit
from tracekit.messaging import consume
from tracekit.metrics import wsgi_metrics_app
from tracekit.wsgi import ROUTE_KEY, TracekitMiddleware


def probe_the_metrics_port_at_exit() -> None:
    """Bind the metrics port as a sibling worker taking it over does (registered before init:
    runs after tracekit's exit hook), and write the outcome to GUNISVC_EXIT_PROBE."""
    outcome = "bound"
    with socket.socket() as sibling:
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sibling.bind(("0.0.0.0", int(os.environ["TRACEKIT_METRICS_PORT"])))
        except OSError as error:
            outcome = f"refused: {error.strerror}"
    with open(os.environ["GUNISVC_EXIT_PROBE"], "a") as probe:
        probe.write(f"{outcome}\n")


if os.environ.get("GUNISVC_EXIT_PROBE"):
    atexit.register(probe_the_metrics_port_at_exit)
tracekit.init("gunisvc")


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ[ROUTE_KEY] = "/hello"
    time.sleep(0.2)  # long enough that concurrent requests must spread over the workers
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Call the loopback port (and path) the query names (where nothing listens: refused at
    once)."""
    port, _, path = environ["QUERY_STRING"].partition("/")
    with contextlib.suppress(httpx.TransportError):
        _client.get(f"http://127.0.0.1:{int(port)}/{path}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def consume_one(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Handle one message from the Redis stream the query names."""
    with consume({}, system="redis", destination=environ["QUERY_STRING"]):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


_client = httpx.Client(timeout=2)
if os.environ.get("GUNISVC_CALL_AT_START"):  # as an app fetching its settings as it starts
    with contextlib.suppress(httpx.TransportError):
        _client.get(f"http://127.0.0.1:{int(os.environ['GUNISVC_CALL_AT_START'])}/settings")
app = DispatcherMiddleware(
    TracekitMiddleware(hello),
    {"/metrics": wsgi_metrics_app(), "/call": TracekitMiddleware(call), "/consume": consume_one},
)
