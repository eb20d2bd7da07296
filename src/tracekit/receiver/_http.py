"""The OTLP/HTTP side: routing, body framing and limits, content types, status codes.

One thread per connection, at most ``ConnectionTable.cap`` of them; a connection over the cap is
answered 503 by the accepting thread and closed at once (see ``_admission``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from google.rpc import code_pb2, status_pb2

from tracekit.receiver._address import family, peer, socket_address
from tracekit.receiver._admission import BUSY, ClientStream, ConnectionTable, MemoryBudget
from tracekit.receiver._body import ENCODINGS, PIECE, BodySink, body_length, raw_pieces
from tracekit.receiver._errors import RequestError
from tracekit.receiver._service import JSON, PROTOBUF, IngestService

_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_SIGNALS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
_RPC_CODES = {400: code_pb2.INVALID_ARGUMENT, 404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED,
              413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT,
              500: code_pb2.INTERNAL, 501: code_pb2.UNIMPLEMENTED,
              503: code_pb2.UNAVAILABLE}  # fmt: skip
_DRAIN_LIMIT = 256 * 1024 * 1024  # read and drop at most this much of a refused body
_WRITE_TIMEOUT = 10.0
# How long a request waits in line for room in a full write queue before its 503. HTTP exporters
# retry a 503 themselves, but one told 503 at once was never in line when room freed: gRPC calls
# waiting for it took every place (0 of 5 batches stored beside a gRPC client filling the queue).
# A second is many of the writer's commits, and holds a connection's thread no longer.
_WAIT_FOR_ROOM = 1.0
# After refusing a request whose client may or may not have sent its body despite expecting
# 100 Continue: how long what it sends is read and dropped, so that closing does not reset the
# connection under the answer (Go's net/http waits half a second likewise).
_EXPECT_LINGER = 0.5
_log = logging.getLogger("tracekit.receiver")
# A body that outlasts the request deadline: 503, not 408, because OTLP exporters retry only 429,
# 502, 503 and 504 and would drop the batch of a merely slow link. The connection still closes at
# the deadline, so a client trickling bytes on purpose holds it no longer.
_TOO_SLOW = RequestError(503, "request body too slow, retry later", retry_after=1, close=True)
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 61\r\nConnection: close\r\n\r\n"
    b'{"code": 14, "message": "too many connections, retry later"}\n'
)


class ReceiverHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server with a connection cap, a memory budget and a drain on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        service: IngestService,
        *,
        max_body: int,
        budget: MemoryBudget,
        connections: ConnectionTable,
    ) -> None:
        self.service = service
        self.max_body = max_body
        self.budget = budget
        self.connections = connections
        self._spare: int | None = _spare_descriptor()
        try:
            self.address_family = family(address[0])
            super().__init__(socket_address(*address), OtlpHandler)
        except BaseException:  # not listening (an address in use): no handler will ever read
            connections.close()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a handler thread, or answer 503 at once when no connection can make room."""
        if self.connections.admit(request):
            super().process_request(request, client_address)
        else:
            _refuse(request)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; out of file descriptors, shed one waiting client instead of spinning."""
        try:
            return self.socket.accept()
        except OSError as error:
            if error.errno in _OUT_OF_DESCRIPTORS:
                self._shed_one()
            raise

    def _shed_one(self) -> None:
        """Free the spare descriptor to accept and refuse one client, then take it back.

        The listening socket stays readable while clients wait, so without this the accept loop
        would retry as fast as it can; a short pause bounds it when even that fails.
        """
        if self._spare is not None:
            os.close(self._spare)
            with contextlib.suppress(OSError):
                _refuse(self.socket.accept()[0])
            self._spare = _spare_descriptor()
        time.sleep(0.05)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A handler failed unexpectedly: one line in the log, never a traceback on stderr."""
        _log.warning("tracekit collector: request failed: %s", type(sys.exc_info()[1]).__name__)

    def server_close(self) -> None:
        """Close the listening socket (and the spare descriptor)."""
        super().server_close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def close_connections(self, wait: float) -> None:
        """End idle keep-alive connections and wait (up to ``wait`` s) for every handler to end.

        A request whose body is still arriving is let finish (within its own deadline): cut
        off, its exporter would be told 400, which it does not retry, and lose the batch. So is
        one whose first bytes wait unread, its handler not yet run (a loaded machine).
        """
        self.connections.stop_waiting()
        deadline = time.monotonic() + wait
        while self.connections.sockets() and time.monotonic() <= deadline:
            time.sleep(0.02)
        self.connections.close()  # (or, if a handler still reads, once the last one ends)


class OtlpHandler(BaseHTTPRequestHandler):
    """Answers ``POST /v1/{traces,logs,metrics}`` and ``GET /health``."""

    server: ReceiverHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "tracekit-collector"

    def version_string(self) -> str:
        """``Server:`` names the collector alone: no Python version, no trailing space."""
        return self.server_version

    def setup(self) -> None:
        """Read the socket through a deadline-keeping stream."""
        self.stream: ClientStream = self.server.connections.stream(self.request)
        self.connection = self.request
        self.rfile = io.BufferedReader(self.stream, PIECE)
        self.wfile = _SocketWriter(self.connection)  # type: ignore[assignment]
        # headers and body go out in two writes: without this the second waits for an ACK
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pieces: Iterator[bytes] | None = None
        self._body_read = False
        self._answered = False

    def finish(self) -> None:
        """Forget the connection."""
        self.server.connections.forget(self.connection)
        with contextlib.suppress(OSError):
            self.rfile.close()

    def handle_one_request(self) -> None:
        """One request, under the connection's deadlines. An evicted connection gets 503 for
        the request it had begun; one evicted while it waited for its next request is closed
        unanswered, as at its idle timeout (an answer to no request is one its client never
        asked for, and would read as the answer to its next)."""
        self.stream.arm()
        self._answered = self._expect_continue = False
        self.raw_requestline = b""
        if not self.stream.evicted:  # (else evicted before this thread first ran: nothing read)
            try:
                super().handle_one_request()
            except ConnectionError:
                self.close_connection = True
        waited_idle = not self.raw_requestline  # woken by the eviction with nothing read
        if self.stream.evicted:
            if not (self._answered or waited_idle):
                self.send_error(503)
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        """A client waiting for ``100 Continue`` gets it only once its request is accepted,
        right before its body is read: a refusal comes instead, and the body is never sent."""
        self._expect_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the HTTP parser finds (bad request line, headers too long...), in JSON."""
        if self.request_version == "HTTP/0.9":  # never spoken here: always send a status line
            self.request_version = "HTTP/1.1"
        self._send_error(RequestError(code, message or HTTPStatus(code).phrase, close=True), JSON)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs stay off: a collector at full rate would drown its terminal."""

    def do_GET(self) -> None:
        """Health check, or 405 on the OTLP paths (and the same for HEAD, without bodies)."""
        path = self._route()
        if path in ("/health", "/healthz", "/"):
            status = self.server.service.health
            body = {
                "status": status,
                "queued": self.server.service.queue.depth,
                "written": self.server.service.queue.committed,
            }
            self._send(200 if status == "ok" else 503, JSON, json.dumps(body).encode())
        else:
            self._refuse_method()

    def do_POST(self) -> None:
        """One OTLP export request."""
        signal = _SIGNALS.get(self._route())
        declared = self._declared_type()
        content_type = declared or JSON  # what the answer is written in (``_answer_type``)
        self._pieces, self._body_read = None, False
        try:
            if signal is None:
                raise RequestError(404, "unknown path: use /v1/traces, /v1/logs or /v1/metrics")
            if declared is None:
                raise RequestError(
                    415,
                    "Content-Type must be application/x-protobuf or application/json",
                    close=True,
                )
            answer = self._export(signal, declared)
        except TimeoutError:  # the body did not arrive whole within the request's deadline
            self._pieces = None
            self._send_error(_TOO_SLOW, content_type)
            return
        except RequestError as error:
            self.close_connection = self.close_connection or not self._body_read
            self._send_error(error, content_type)
            self._drain()
            return
        self._send(200, content_type, answer)

    def do_PUT(self) -> None:
        """Only POST is accepted."""
        self._refuse_method()

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT
    do_HEAD = do_GET  # the same answers, their bodies left out (``_send``)

    def _route(self) -> str:
        """The request's path, without its query; from an absolute-form target too
        (``POST http://host:4318/v1/traces``, what a client sends to a proxy), which RFC 9112
        3.2.2 says a server must accept."""
        target = self.path
        if target[:8].lower().startswith(("http://", "https://")):
            try:
                target = urlsplit(target).path or "/"
            except ValueError:  # "http://[::1": a malformed authority is not found
                return ""
        return target.split("?", 1)[0]

    def _refuse_method(self) -> None:
        self.close_connection = True  # whatever body came with it was not read
        self._pieces = None
        path = self._route()
        if path in _SIGNALS:
            error = RequestError(405, "use POST")
            self._send_error(error, self._answer_type(), extra={"Allow": "POST"})
        else:
            self._send_error(RequestError(404, "not found"), self._answer_type())

    def _declared_type(self) -> str | None:
        """The request's Content-Type, when it is one OTLP speaks."""
        raw = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return _CONTENT_TYPES.get(raw)

    def _answer_type(self) -> str:
        """What an answer is written in: the request's own encoding (the OTLP spec; an SDK
        reads a protobuf request's failure as a google.rpc.Status), else JSON."""
        return self._declared_type() or JSON

    def _export(self, signal: str, content_type: str) -> bytes:
        """Read the body, store it. The memory budget is charged for the body bytes held as they
        arrive, then for what parsing the whole body costs; never for what Content-Length
        declares, or a client sending one byte of a declared 16 MiB would hold it all."""
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ENCODINGS:
            raise RequestError(415, "Content-Encoding must be gzip, deflate, zlib or identity")
        length = body_length(self.headers)
        limit = self.server.max_body
        self._pieces = raw_pieces(self.rfile, length, limit)
        if length is not None and length > limit:
            raise RequestError(413, f"body larger than {limit} bytes")
        with self.server.budget.reservation() as reservation:
            if length:  # a body that could not be covered now is refused before it is sent
                reservation.expect(length, content_type, signal)
            self._continue()
            sink = BodySink(limit, encoding, reservation)
            for piece in self._pieces:
                sink.write(piece)
            self._pieces, self._body_read = None, True  # the connection may serve another request
            body = sink.finish()
            reservation.cover(len(body), content_type, signal)
            self.stream.state = BUSY
            client = peer(*self.client_address)
            export = self.server.service.export
            return export(signal, content_type, body, reservation, _WAIT_FOR_ROOM, client)

    def _continue(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()

    def _drain(self) -> None:
        """After an error: read and drop the rest of the body so the client can read our answer.

        A body that was not read at all (unknown path, bad content type) or whose framing broke
        cannot be drained; the connection closes either way.
        """
        pieces, self._pieces = self._pieces, None
        if self._body_read:
            return  # the body was read whole: keep-alive goes on
        self.close_connection = True
        if self._expect_continue:  # told no 100 Continue, the client may well send no body:
            self.stream.hurry(_EXPECT_LINGER)  # what it sent anyway is read briefly, not waited for
        dropped = 0
        with contextlib.suppress(RequestError, OSError, TimeoutError):
            for piece in pieces or ():
                dropped += len(piece)
                if dropped > _DRAIN_LIMIT:
                    return

    def _send_error(
        self, error: RequestError, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        if self.stream.evicted:  # whatever broke, it broke because we made room for another
            error = RequestError(503, "too many connections, retry later", retry_after=1)
            self.close_connection = True
        status = status_pb2.Status(
            code=_RPC_CODES.get(error.status, code_pb2.UNKNOWN), message=error.message
        )
        headers = dict(extra or {})
        if error.retry_after is not None:
            headers["Retry-After"] = str(error.retry_after)
        if error.close:
            self.close_connection = True
        if content_type == PROTOBUF:
            body = status.SerializeToString()
        else:
            body = json.dumps({"code": status.code, "message": error.message}).encode()
        self._send(error.status, content_type, body, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.connection.settimeout(_WRITE_TIMEOUT)
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection or self.server.service.stopping:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._answered = True
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it


class _SocketWriter:
    """What ``BaseHTTPRequestHandler`` writes to: every write sent whole."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""


def _refuse(sock: socket.socket) -> None:
    """Answer 503 without reading the request, and close (never blocks)."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(_BUSY_ANSWER)
        sock.shutdown(socket.SHUT_WR)
    sock.close()


def _spare_descriptor() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
