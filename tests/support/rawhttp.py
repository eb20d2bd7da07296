"""Send exact bytes over a socket: hostile and duplicated headers must really reach the server."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """A parsed HTTP/1.1 response, plus the exact bytes received."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def send(url: str, header_lines: list[bytes], method: str = "GET") -> RawResponse:
    """GET ``url`` with ``header_lines`` (raw ``b"Name: value"``) and read to EOF."""
    parts = urlsplit(url)
    request = b"%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (
        method.encode(),
        (parts.path or "/").encode(),
        parts.netloc.encode(),
    )
    request += b"".join(line + b"\r\n" for line in header_lines) + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            # A server that answers and closes before reading the whole request (a head too
            # large) makes its kernel reset the connection: what arrived first is the answer,
            # and with nothing arrived the caller learns the request was refused unread.
            if not chunks:
                raise
    return parse(b"".join(chunks))


def parse(raw: bytes) -> RawResponse:
    """Split status line, headers and body (chunked bodies are de-chunked)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line]
    pairs = [(h[0], h[1]) for h in headers if len(h) == 2]
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in pairs):
        body = _dechunk(body)
    return RawResponse(status, pairs, body, raw)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
