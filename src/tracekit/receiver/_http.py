"""The OTLP/HTTP request handler: routing, body limits, gzip, content types, status codes."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.rpc import code_pb2, status_pb2

from tracekit.receiver import _json, _protobuf
from tracekit.receiver._decoded import Decoded, MalformedRequest
from tracekit.receiver._ingest import IngestQueue, QueueFull
from tracekit.receiver._protobuf_spans import SpanRowDecoder

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_SIGNALS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
_DECODERS: dict[tuple[str, str], Callable[[bytes], Decoded]] = {
    (PROTOBUF, "traces"): _protobuf.decode_traces,
    (PROTOBUF, "logs"): _protobuf.decode_logs,
    (PROTOBUF, "metrics"): _protobuf.decode_metrics,
    (JSON, "traces"): _json.decode_traces,
    (JSON, "logs"): _json.decode_logs,
    (JSON, "metrics"): _json.decode_metrics,
}
_RPC_CODES = {400: code_pb2.INVALID_ARGUMENT, 413: code_pb2.RESOURCE_EXHAUSTED,
              415: code_pb2.INVALID_ARGUMENT, 503: code_pb2.UNAVAILABLE}  # fmt: skip
_DRAIN_LIMIT = 256 * 1024 * 1024  # read and drop at most this much of a refused body


class HttpError(Exception):
    """An answer other than 200, with a short message safe to send back."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ReceiverHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server that knows its ingest queue and limits, and can drain on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], queue: IngestQueue, max_body: int) -> None:
        self.queue = queue
        self.span_decoder = SpanRowDecoder(queue.store.encoder)
        # One request decodes at a time. Decoding is pure Python, so threads could only take turns
        # with the GIL anyway; doing so every 5 ms, eight requests used to finish together, late,
        # and reach the writer in a clump. In turn, each is written while the next decodes (about
        # 15% more spans a second with eight exporters, and less CPU per span: docs/store.md).
        self.decode_lock = threading.Lock()
        self.max_body = max_body
        self.commit_timeout = 30.0
        self.stopping = False
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, OtlpHandler)

    def close_connections(self, wait: float) -> None:
        """Wake idle keep-alive handlers and wait (up to ``wait`` s) for every handler to end."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.connections_lock:
                open_connections = list(self.connections)
            if not open_connections:
                return
            for sock in open_connections:
                shutdown_socket(sock)
            time.sleep(0.02)


class OtlpHandler(BaseHTTPRequestHandler):
    """Answers ``POST /v1/{traces,logs,metrics}`` and ``GET /health``."""

    server: ReceiverHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "tracekit-collector"
    sys_version = ""
    timeout = 30  # seconds a client may stay silent mid-request or idle between requests

    def setup(self) -> None:
        """Register the connection so a stopping server can wake it."""
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs stay off: a collector at full rate would drown its terminal."""

    def do_GET(self) -> None:
        """Health check, or 405 on the OTLP paths."""
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz", "/"):
            body = {
                "status": "stopping" if self.server.stopping else "ok",
                "queued": self.server.queue.depth,
                "written": self.server.queue.committed,
            }
            status = 503 if self.server.stopping else 200
            self._send(status, JSON, json.dumps(body).encode())
        else:
            self._refuse_method()

    def do_POST(self) -> None:
        """One OTLP export request."""
        path = self.path.split("?", 1)[0]
        signal = _SIGNALS.get(path)
        content_type = JSON
        try:
            if signal is None:
                raise HttpError(404, "unknown path: use /v1/traces, /v1/logs or /v1/metrics")
            content_type = self._content_type()
            body = self._body()
            decoded = self._decode(content_type, signal, body)
            self._store(decoded)
        except HttpError as error:
            self._send_error(error, content_type)
            return
        encode = _protobuf.response if content_type == PROTOBUF else _json.response
        self._send(200, content_type, encode(signal, decoded))

    def do_PUT(self) -> None:
        """Only POST is accepted."""
        self._refuse_method()

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

    def _refuse_method(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in _SIGNALS:
            error = HttpError(405, "use POST")
            self._send_error(error, JSON, extra={"Allow": "POST"})
        else:
            self._send_error(HttpError(404, "not found"), JSON)

    def _content_type(self) -> str:
        raw = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        content_type = _CONTENT_TYPES.get(raw)
        if content_type is None:
            self.close_connection = True  # the body was not read
            raise HttpError(415, "Content-Type must be application/x-protobuf or application/json")
        return content_type

    def _body(self) -> bytes:
        """The request body, decompressed, never larger than the server's limit."""
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("gzip", "identity"):
            self.close_connection = True
            raise HttpError(415, "Content-Encoding must be gzip or identity")
        raw = self._read_raw()
        return _gunzip(raw, self.server.max_body) if encoding == "gzip" else raw

    def _read_raw(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(411, "send a Content-Length (chunked bodies are not accepted)")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            raise HttpError(411, "Content-Length is required") from None
        if length < 0:
            self.close_connection = True
            raise HttpError(400, "bad Content-Length")
        if length > self.server.max_body:
            self._drain(length)
            raise HttpError(413, f"body larger than {self.server.max_body} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise HttpError(400, "body shorter than Content-Length")
        return body

    def _drain(self, length: int) -> None:
        """Read and drop a refused body so the client can read our 413 before we close."""
        self.close_connection = True
        remaining = min(length, _DRAIN_LIMIT)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    return
                remaining -= len(chunk)
        except OSError:
            return

    def _decode(self, content_type: str, signal: str, body: bytes) -> Decoded:
        decode = _DECODERS[content_type, signal]
        if decode is _protobuf.decode_traces:  # the hot path: straight into rows
            decode = self.server.span_decoder.decode
        try:
            with self.server.decode_lock:
                decoded = decode(body)
        except MalformedRequest as error:
            raise HttpError(400, str(error)) from None
        except sqlite3.Error:  # interning new strings failed (store locked too long, disk full)
            raise HttpError(503, "store unavailable, retry later", retry_after=5) from None
        if decoded.total and decoded.rejected == decoded.total:
            raise HttpError(400, f"every record was rejected: {decoded.reason}")
        return decoded

    def _store(self, decoded: Decoded) -> None:
        if not decoded.rows.spans and not decoded.spans and not decoded.logs:
            return
        if self.server.stopping:
            raise HttpError(503, "collector is shutting down", retry_after=5)
        rows = decoded.rows
        if decoded.spans:  # JSON decodes into records
            try:
                rows.extend(self.server.queue.store.encoder.encode(decoded.spans))
            except sqlite3.Error:
                raise HttpError(503, "store unavailable, retry later", retry_after=5) from None
        try:
            ticket = self.server.queue.submit(rows, decoded.logs)
        except QueueFull:
            raise HttpError(503, "write queue is full, retry later", retry_after=1) from None
        if not ticket.done.wait(self.server.commit_timeout):
            raise HttpError(503, "store is too slow, retry later", retry_after=5)
        if ticket.error is not None:
            raise HttpError(503, "store write failed, retry later", retry_after=5)

    def _send_error(
        self, error: HttpError, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        status = status_pb2.Status(
            code=_RPC_CODES.get(error.status, code_pb2.UNKNOWN), message=error.message
        )
        headers = dict(extra or {})
        if error.retry_after is not None:
            headers["Retry-After"] = str(error.retry_after)
        if content_type == PROTOBUF:
            body = status.SerializeToString()
        else:
            body = json.dumps({"code": status.code, "message": error.message}).encode()
        self._send(error.status, content_type, body, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection or self.server.stopping:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress gzip, refusing (413) output beyond ``limit``: a gzip bomb stops at the limit."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise HttpError(400, "body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HttpError(413, f"decompressed body larger than {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, "gzip body is truncated")
    return out


def shutdown_socket(sock: socket.socket) -> None:
    """Wake a handler blocked reading from ``sock`` (used when stopping)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
