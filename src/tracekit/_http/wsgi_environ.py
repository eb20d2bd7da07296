"""What a WSGI environ says about a request, read the same way by the WSGI and Django middleware.

Django's ``request.META`` is the server's WSGI environ under a WSGI server, and Django builds the
same keys under ASGI (without ``SERVER_PROTOCOL``: the ASGI scope's ``http_version`` says it).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from tracekit import semconv
from tracekit._digits import ascii_int
from tracekit._http.server import address_or_none

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

CACHE_LIMIT = 256  # entries per cache of values read from environs: bounded whatever clients send
ROUTE_KEY = "tracekit.route"  # frameworks' adapters leave the matched route template here
ERROR_KEY = "tracekit.error"  # ... and the view's exception they answered with a 500 page
# ... or that the application's own error handler answered (recorded if its answer is a 5xx)
HANDLED_ERROR_KEY = "tracekit.handled_error"
ROOT_KEY = "tracekit.wsgi_app"  # the app tracekit's WSGI middleware wraps: where mounts are
# The request's context (its correlation ID and span), for what the server logs about the request
# after the middleware put the context back: gunicorn's access line (``tracekit.logs``).
CONTEXT_KEY = "tracekit.context"


def server_answer(error: BaseException, environ: Mapping[str, Any]) -> int:
    """The status the server answers with when ``error`` leaves the application before any of
    its response went out: 500 for an exception (werkzeug's, gunicorn's, wsgiref's page), but
    0, not known, for an ``OSError``, which gunicorn takes for its socket failing and answers
    with nothing (werkzeug too, for a ``ConnectionError``), and for a ``BaseException`` that is
    no exception; but for gunicorn's ``SystemExit`` in the main thread: its sync worker stops a
    request past its ``--timeout`` with one (its signal handler raises it there, as a view's
    ``sys.exit()`` would) and answers it with its 500. A gthread worker's request threads
    answer no ``SystemExit``."""
    if isinstance(error, SystemExit) and _gunicorn(environ):
        return 500 if threading.current_thread() is threading.main_thread() else 0
    return 500 if isinstance(error, Exception) and not isinstance(error, OSError) else 0


def client_left(error: BaseException | None) -> bool:
    """Whether ``error`` is gunicorn's ``NoMoreData``: ``wsgi.input`` met the end of the
    connection before the end of the request's body (a chunked upload the client left; one with
    a ``Content-Length`` ends short without an error). gunicorn itself takes it for a client
    gone ("premature client disconnection") and answers nothing."""
    no_more_data = getattr(sys.modules.get("gunicorn.http.errors"), "NoMoreData", None)
    return isinstance(no_more_data, type) and isinstance(error, no_more_data)


def _gunicorn(environ: Mapping[str, Any]) -> bool:
    software = environ.get("SERVER_SOFTWARE")
    return isinstance(software, str) and software.startswith("gunicorn/")


def request_path(environ: Mapping[str, Any]) -> str:
    """``PATH_INFO`` as the client's text: PEP 3333 gives its bytes decoded as latin-1, while
    the path is UTF-8 (``/café``, as ASGI servers and Django decode it, not ``/cafÃ©``)."""
    return _client_text(environ.get("PATH_INFO", "") or "/")


def url_path(environ: Mapping[str, Any], path_info: str) -> str:
    """The whole path the client sent: the root a proxy strips (``SCRIPT_NAME``) in front of
    ``path_info`` (from ``request_path``), as ASGI's ``path`` and Django's ``request.path``."""
    root = environ.get("SCRIPT_NAME")
    if not root or not isinstance(root, str):
        return path_info
    # No PATH_INFO: the client asked for the root itself (/api), which request_path calls "/".
    return _client_text(root) + (path_info if environ.get("PATH_INFO") else "")


def _client_text(path: str) -> str:
    if path.isascii():
        return path
    try:
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that decoded it already
        return path


def header_keys(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(environ key, header name) for each header: ``X-Request-ID`` is ``HTTP_X_REQUEST_ID``."""
    return tuple(("HTTP_" + name.upper().replace("-", "_"), name) for name in sorted(names))


def headers_of(
    environ: Mapping[str, Any], keys: tuple[tuple[str, str], ...]
) -> dict[str, list[str]]:
    """The headers of ``keys`` (from ``header_keys``) that the request carries."""
    return {name: [environ[key]] for key, name in keys if key in environ}


class ServerAttributes:
    """The span attributes describing the server, built once per distinct server environ, and
    the client's address (``REMOTE_ADDR``: the peer's, or the one a proxy named where the
    application trusts it, through werkzeug's ``ProxyFix`` for example).

    They repeat on every request of a server. Some servers fill ``SERVER_NAME`` from the Host
    header, so the cache is bounded; past the bound each request builds its own.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[object, ...], dict[str, Any]] = {}

    def __call__(self, environ: Mapping[str, Any]) -> dict[str, Any]:
        name = environ.get("SERVER_NAME")
        key = (
            environ.get("wsgi.url_scheme"), name,
            environ.get("SERVER_PORT"), environ.get("SERVER_PROTOCOL"),
            environ.get("HTTP_HOST") if _cut_ipv6_literal(name) else None,
        )  # fmt: skip
        attributes = self._built.get(key)
        if attributes is None:
            attributes = server_attributes(environ)
            if len(self._built) < CACHE_LIMIT:
                self._built[key] = attributes
        attributes = attributes.copy()  # the span start adds per-request attributes to the copy
        client = address_or_none(environ.get("REMOTE_ADDR"))
        if client is not None:
            attributes[semconv.CLIENT_ADDRESS] = client
        return attributes


def server_attributes(environ: Mapping[str, Any]) -> dict[str, Any]:
    """``url.scheme``, ``server.address``, ``server.port`` and ``network.protocol.version``."""
    attributes: dict[str, Any] = {semconv.URL_SCHEME: environ.get("wsgi.url_scheme", "http")}
    host, port_text = _server_name_and_port(environ)
    if host is not None:
        attributes[semconv.SERVER_ADDRESS] = host
    port = _port_number(port_text)
    if port is not None:
        attributes[semconv.SERVER_PORT] = port
    protocol = environ.get("SERVER_PROTOCOL", "")
    if isinstance(protocol, str) and protocol.startswith("HTTP/"):
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol[5:]
    return attributes


# A Host header with an IPv6 literal, and a port or none: ``[::1]:8000``.
_BRACKETED_HOST = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\](?::([^:]*))?")


def _server_name_and_port(environ: Mapping[str, Any]) -> tuple[str | None, object]:
    """``SERVER_NAME`` (when it is a server's name) and ``SERVER_PORT``; from the Host header
    where gunicorn on a unix socket cut its IPv6 literal at the first colon (``[::1]:8000``
    gave ``SERVER_NAME`` ``[`` and no port): ``::1`` and 8000, without brackets, as the ASGI
    middleware and OpenTelemetry write an IPv6 address."""
    name, port = environ.get("SERVER_NAME"), environ.get("SERVER_PORT")
    if _cut_ipv6_literal(name):
        host = environ.get("HTTP_HOST")
        found = _BRACKETED_HOST.fullmatch(host) if isinstance(host, str) else None
        if found is None:
            return None, None
        return found.group(1), found.group(2)
    return address_or_none(name), port


def _cut_ipv6_literal(name: object) -> bool:
    return isinstance(name, str) and name.startswith("[")


def _port_number(value: object) -> int | None:
    """``SERVER_PORT`` as a TCP port number, else None.

    gunicorn on a unix socket fills it from the client's Host header: ``x:²`` (a digit to
    ``str.isdigit``, not to ``int``) failed the request's span, and a port past 64 bits failed
    the OTLP encoding of the span's attributes, with a traceback in the application's log on
    every export.
    """
    number = ascii_int(str(value) if value is not None else "", 5)
    return number if number is not None and number <= 65535 else None
