"""The connections behind ``backends._http.JsonClient``: kept between requests, and noted so
that a request past its deadline can be cut off.

Each request runs in a thread of its own (``JsonClient._get_within_timeout``); the sockets that
thread connects, takes from the pool or starts a TLS handshake on are noted in ``connections``
(a thread-local ``Sockets``), so that the caller can shut them at the deadline: a server sending
its answer a byte at a time would otherwise hold the call for hours. ``KeepAlive`` keeps idle
connections for the next request. ``TrackedHTTPSHandler`` also refuses an ``SSL_CERT_FILE`` that
would make every connection wait (``CaFileThatWaits``).
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

# idle connections kept per backend: as many as trace reads run at once (``_read_ahead``)
MAX_KEPT_CONNECTIONS = 8


class Sockets(list[socket.socket]):
    """The sockets one request's thread connected or took from the pool, for its caller to shut
    at the deadline; ``abandoned`` once it has."""

    abandoned = False


class _Connections(threading.local):
    """The sockets a request thread opened, for the caller to shut at the deadline."""

    opened: Sockets | None = None


connections = _Connections()


class _TrackedHTTPConnection(http.client.HTTPConnection):
    """A connection whose socket is noted for the thread that opened it."""

    def connect(self) -> None:
        super().connect()
        if connections.opened is not None:
            connections.opened.append(self.sock)


class _TrackedHTTPSConnection(_TrackedHTTPConnection, http.client.HTTPSConnection):
    """The same over TLS (HTTPS's connect wraps the socket, then ours notes it)."""


class _KeptResponse(http.client.HTTPResponse):
    """A response that, once closed, hands its connection back (``release``): to be kept for
    the next request when its body was read to the end and the server keeps the connection
    open, else to be closed."""

    release: Callable[[bool], None] | None = None

    def close(self) -> None:
        whole = self.fp is None  # http.client lets go of the socket's file at the body's end
        super().close()
        release, self.release = self.release, None
        if release is not None:
            release(whole and not self.will_close)


_TrackedHTTPConnection.response_class = _KeptResponse


class KeepAlive:
    """Open connections kept between requests, for one client: without them every trace read
    was a new TCP connection (and TLS handshake), a round trip or three more per read. A
    connection found closed by the server once it sends (an idle one Go's server let go of) is
    replaced by a new one, once: every request here is a GET, safe to send again."""

    def __init__(self) -> None:
        self._idle: dict[tuple[object, ...], list[_TrackedHTTPConnection]] = {}
        self._lock = threading.Lock()

    def open(
        self, kind: type[_TrackedHTTPConnection], req: urllib.request.Request, **options: Any
    ) -> http.client.HTTPResponse:
        """The response to ``req`` over a kept connection, else a new one (``kind(**options)``)."""
        tunnel = getattr(req, "_tunnel_host", None)  # an https:// backend behind a proxy
        key = (kind, req.host, tunnel)
        kept = self._take(key)
        if kept is not None:
            try:
                return self._send(kept, key, req, timeout=req.timeout)
            except (ConnectionError, http.client.BadStatusLine):
                kept.close()
                if connections.opened is not None and connections.opened.abandoned:
                    raise
        connection = kind(req.host, timeout=req.timeout, **options)
        headers = _request_headers(req)
        if tunnel:  # the proxy's credentials go with the CONNECT, not to the backend
            proxy_auth = {k: headers.pop(k) for k in list(headers) if k == "Proxy-Authorization"}
            connection.set_tunnel(tunnel, headers=proxy_auth)
        try:
            return self._send(connection, key, req)
        except OSError as error:  # as urllib reports it: the caller reads its reason
            connection.close()
            raise urllib.error.URLError(error) from None

    def _send(
        self, connection: _TrackedHTTPConnection, key: tuple[object, ...],
        req: urllib.request.Request, timeout: float | None = None,
    ) -> http.client.HTTPResponse:  # fmt: skip
        if timeout is not None and connection.sock is not None:  # a kept one: this request's
            connection.sock.settimeout(timeout)
            if connections.opened is not None:
                connections.opened.append(connection.sock)
        headers = _request_headers(req)
        if key[2]:  # tunnelled: the proxy had its credentials with the CONNECT
            headers.pop("Proxy-Authorization", None)
        connection.request(req.get_method(), req.selector, req.data, headers)
        response = connection.getresponse()
        assert isinstance(response, _KeptResponse)
        response.release = lambda reusable: self._give_back(key, connection, reusable)
        response.url, response.msg = req.get_full_url(), response.reason  # type: ignore[assignment]
        return response

    def _take(self, key: tuple[object, ...]) -> _TrackedHTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give_back(
        self, key: tuple[object, ...], connection: _TrackedHTTPConnection, reusable: bool
    ) -> None:
        abandoned = connections.opened is not None and connections.opened.abandoned
        if not reusable or abandoned:
            connection.close()
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_KEPT_CONNECTIONS:
                idle.append(connection)
                return
        connection.close()


def _request_headers(req: urllib.request.Request) -> dict[str, str]:
    """What urllib would send of ``req``'s headers (those not passed on by a redirect too)."""
    headers = {k.title(): v for k, v in req.header_items()}
    headers["Connection"] = "keep-alive"
    return headers


class TrackedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, keep_alive: KeepAlive) -> None:
        super().__init__()
        self._keep_alive = keep_alive

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self._keep_alive.open(_TrackedHTTPConnection, req)


class TrackedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, keep_alive: KeepAlive) -> None:
        super().__init__()
        self._keep_alive = keep_alive

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        _refuse_a_ca_file_that_waits()
        return self._keep_alive.open(_TrackedHTTPSConnection, req, context=_tracked_tls_context())


class CaFileThatWaits(Exception):
    """SSL_CERT_FILE names what OpenSSL would wait on as it reads the CAs (a FIFO, a device)."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(path)
        self.path, self.kind = path, kind


_SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                  stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}  # fmt: skip


def _refuse_a_ca_file_that_waits() -> None:
    """Raise ``CaFileThatWaits`` when SSL_CERT_FILE names a FIFO or a device: opening a FIFO
    waits for a writer, and the TLS context read it before every try (three timeouts, then
    "unreachable"). A missing file or a folder OpenSSL passes over at once, as it did."""
    named = os.environ.get("SSL_CERT_FILE")
    if not named:
        return
    try:
        kind = _SPECIAL_FILES.get(stat.S_IFMT(os.stat(named).st_mode))
    except (OSError, ValueError):  # no such file; a NUL in the name
        return
    if kind is not None:
        raise CaFileThatWaits(named, kind)


class TrackedSSLSocket(ssl.SSLSocket):
    """A TLS socket noted as its handshake starts: a server that takes the connection and never
    answers the handshake is shut at the deadline too, and said to have been reached."""

    handshaken = False

    def do_handshake(self, block: bool = False) -> None:
        if connections.opened is not None:
            connections.opened.append(self)
        super().do_handshake(block)
        self.handshaken = True


def _tracked_tls_context() -> ssl.SSLContext:
    """The context http.client makes for a connection (the system's CAs, or SSL_CERT_FILE's),
    its sockets ``TrackedSSLSocket``."""
    context = ssl._create_default_https_context()  # what http.client uses (PYTHONHTTPSVERIFY)
    context.set_alpn_protocols(["http/1.1"])  # as http.client says it speaks, given no context
    # as http.client offers too: a server asking for a client certificate once it has read the
    # request (TLS 1.3) can then ask, and is refused in words, not left to answer 403
    context.post_handshake_auth = True
    context.sslsocket_class = TrackedSSLSocket
    return context
