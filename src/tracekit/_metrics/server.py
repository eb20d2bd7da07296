"""The metrics port's HTTP server: prometheus-client's WSGI app, with connections bounded.

prometheus-client's ``start_http_server`` gives every connection a thread of the host process
and waits for its request without a timeout: a client that connects and sends nothing (a port
scanner, a slow or hostile peer; the port binds every interface) held a thread for ever, and
a thousand such connections were a thousand threads in the application. Here a connection must
send its whole request within ``TIMEOUT_S`` (a client sending a byte every few seconds is cut
off too) and take each write of the answer within it, and at most ``MAX_CONNECTIONS`` are served
at once. One more takes the slot of the oldest connection still sending its request (Prometheus
sends its own as it connects): peers holding every slot open, and opening them again as they
were dropped, failed every scrape. Only when every slot is busy answering is one more closed at
once, without a thread.
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

__all__ = ["MAX_CONNECTIONS", "TIMEOUT_S", "Standby", "bind", "serve"]

MAX_CONNECTIONS = 16  # scrapes at once: Prometheus opens one per scrape, HA pairs two
TIMEOUT_S = 10.0  # Prometheus' default scrape_timeout


class _Handler(WSGIRequestHandler):
    """One scrape; gives up on a client silent for ``timeout`` seconds; logs nothing."""

    timeout = TIMEOUT_S

    def setup(self) -> None:
        """Read the request within ``timeout`` as a whole: the socket's timeout bounds each
        read only, and clients sending a byte at a time held every slot for as long as they
        liked (every scrape was closed unanswered)."""
        super().setup()
        self.server.waiting(self.connection)  # type: ignore[attr-defined]
        deadline = time.monotonic() + self.timeout
        self.rfile.close()  # the plain reader setup() made (the socket stays open)
        self.rfile = io.BufferedReader(_ReadsBefore(self.connection, deadline))

    def parse_request(self) -> bool:
        """Parse the request read, then give each write of the answer the whole timeout."""
        parsed = super().parse_request()
        self.server.answering(self.connection)  # type: ignore[attr-defined]
        self.connection.settimeout(self.timeout)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a scrape every few seconds is not news."""


class _ReadsBefore(socket.SocketIO):
    """A socket's reads, each given only the time left until ``deadline``."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__(connection, "rb")
        self._connection = connection
        self._deadline = deadline

    def readinto(self, buffer: Any) -> int | None:
        """Read as the socket does, raising ``TimeoutError`` once the deadline has passed."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not complete within the timeout")
        self._connection.settimeout(left)
        return super().readinto(buffer)


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them at once."""

    daemon_threads = True  # a scrape in progress never holds up the application's exit
    request_queue_size = 64  # listen backlog: a burst waits to be accepted (or closed), not refused

    EVICTION_WAIT_S = 1.0  # for the slot of a connection dropped to make room

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        # Connections still sending their request, oldest first (dicts keep insertion order).
        self._waiting: dict[socket.socket, None] = {}
        self._waiting_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def waiting(self, connection: socket.socket) -> None:
        """``connection`` is served and has yet to send its whole request."""
        with self._waiting_lock:
            self._waiting[connection] = None

    def answering(self, connection: socket.socket) -> None:
        """``connection`` sent its request (or is done): it keeps its slot."""
        with self._waiting_lock:
            self._waiting.pop(connection, None)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` on a thread of its own once a slot is free: one is made by dropping
        the oldest connection still sending its request; without one, ``request`` is closed."""
        if not self._slots.acquire(blocking=False) and not self._made_room():
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def _made_room(self) -> bool:
        """Drop the oldest connection still sending its request and take its slot as its thread
        ends (True), or find none to drop (False)."""
        with self._waiting_lock:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                return False
            del self._waiting[oldest]
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its read ends, and its thread with it
        return self._slots.acquire(timeout=self.EVICTION_WAIT_S)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went silent or away is no error of the application's: nothing is
        printed to its stderr (a port scan would fill it with tracebacks)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.answering(request)
            self._slots.release()


class _Server6(_Server):
    """The same on IPv6 (``::`` also takes IPv4 connections where the system allows it)."""

    address_family = socket.AF_INET6


def bind(port: int, registry: Collector, host: str = "0.0.0.0") -> WSGIServer:
    """A server of ``registry`` bound to ``host`` (default: every IPv4 interface) at ``port``,
    not serving yet. ``OSError`` if the port is taken or ``host`` is no address of this host."""
    return make_server(host, port, make_wsgi_app(registry), _server_class(host, port), _Handler)


def _server_class(host: str, port: int) -> type[_Server]:
    """The server of the address family ``host`` resolves to first (an IPv6 address: IPv6)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return _Server6 if family == socket.AF_INET6 else _Server


# How often the serving thread looks for a stop: ``shutdown`` waits up to that long, and a test
# suite calling ``tracekit.shutdown()`` per test waited the default 0.5 s each time.
POLL_INTERVAL_S = 0.05


def serve(
    port: int, registry: Collector, host: str = "0.0.0.0"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at ``host``:``port`` from a daemon thread (what prometheus-client's
    ``start_http_server(port, host, registry)`` does)."""
    httpd = bind(port, registry, host)
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": POLL_INTERVAL_S},
        name="tracekit-metrics",
        daemon=True,
    )
    thread.start()
    return httpd, thread


class Standby:
    """Serves ``port`` as soon as it is free, trying every ``RETRY_S`` seconds.

    In multiprocess mode one worker serves the port for all. When that worker goes while the
    others stay (gunicorn's reload starts the new workers before it stops the old ones; a worker
    restarted after ``max_requests``), one of the others takes the port over; outside it, the
    new worker of a reload takes it over from the old one. Looks like the
    ``WSGIServer`` it becomes to ``tracekit.metrics.MetricsServer``: ``thread`` waits, then
    serves; ``shutdown`` and ``server_close`` stop either.
    """

    RETRY_S = 0.5

    def __init__(self, port: int, registry: Collector, host: str = "0.0.0.0") -> None:
        self._port, self._registry, self._host = port, registry, host
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._httpd: WSGIServer | None = None
        self.thread = threading.Thread(target=self._run, name="tracekit-metrics", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._closed.wait(self.RETRY_S):
            with self._lock:
                if self._closed.is_set():
                    return
                try:
                    httpd = self._httpd = bind(self._port, self._registry, self._host)
                except OSError:
                    continue
            httpd.serve_forever(POLL_INTERVAL_S)
            return

    def shutdown(self) -> None:
        """Stop waiting for the port, or stop serving it."""
        with self._lock:
            self._closed.set()
            httpd = self._httpd
        if httpd is not None:
            httpd.shutdown()

    def server_close(self) -> None:
        """Release the port, if it was taken over."""
        if self._httpd is not None:
            self._httpd.server_close()
