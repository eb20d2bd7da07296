"""HTTP request bodies: framed by Content-Length or chunked, compressed or not, never past a limit.

Both framings feed one sink, so a chunked body gets exactly the answers a Content-Length body
gets: 413 as soon as the raw or the decompressed size passes the limit (nothing past it is kept),
400 for a malformed or truncated body. Every byte kept is first reserved from the receiver's
memory budget; when the budget is spent the request gets 503 at once. gzip bodies may hold several
members (RFC 1952), as ``gzip.compress`` of concatenated files does: all are decoded. ``deflate``
is the zlib format (RFC 9110 8.4.1.2), what OpenTelemetry Python's ``deflate`` compression sends
(and the OpenTelemetry Collector's ``deflate``, and its ``zlib`` as ``Content-Encoding: zlib``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from email.message import Message
from io import BufferedIOBase

from tracekit._digits import ascii_int
from tracekit.receiver._admission import Reservation
from tracekit.receiver._errors import RequestError

PIECE = 64 * 1024  # bytes read from the socket at a time
_MAX_LINE = 4096  # a chunk-size line (with extensions) or a trailer line
_MAX_TRAILERS = 64
_MAX_LENGTH_DIGITS = 18
# A chunked body may hold FREE_CHUNKS chunks however small; past them its chunks must bring
# CHUNK_BYTES of body each on average. Reading a chunk costs about 6 us of Python (its size line,
# its data, the memory it is charged), so one-byte chunks cost a microsecond a byte where other
# bodies cost a hundredth of that: one client sending them as fast as it could took 42% of a core
# and held the GIL from the other requests (their median went from 9-12 ms to 62 ms; 18 ms now,
# as beside a client posting small junk bodies as fast as it can). No exporter sends chunks so
# small: OpenTelemetry JS writes a body in one or a few.
FREE_CHUNKS, CHUNK_BYTES = 128, 256
_GZIP_MAGIC = b"\x1f\x8b"
# Content-Encoding -> zlib's wbits for it (None: not compressed); x-gzip is gzip (RFC 9110 8.4.1.3),
# zlib is deflate: what the OpenTelemetry Collector's exporters send for ``compression: zlib``
ENCODINGS: dict[str, int | None] = {
    "identity": None, "gzip": 31, "x-gzip": 31, "deflate": 15, "zlib": 15,
}  # fmt: skip


def body_length(headers: Message) -> int | None:
    """The Content-Length, or None for a chunked body; ``RequestError`` when framing is unclear."""
    transfer = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if transfer:
        codings = [c.strip().lower() for value in transfer for c in value.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise RequestError(501, "Transfer-Encoding must be chunked", close=True)
        if lengths:  # RFC 9112 6.3: a sign of request smuggling; refuse rather than guess
            raise RequestError(400, "both Content-Length and Transfer-Encoding", close=True)
        return None
    values = {part.strip() for value in lengths for part in value.split(",")}
    if not values:
        raise RequestError(411, "send a Content-Length or a chunked body", close=True)
    if len(values) > 1:
        raise RequestError(400, "conflicting Content-Length headers", close=True)
    length = ascii_int(values.pop(), _MAX_LENGTH_DIGITS)
    if length is None:
        raise RequestError(400, "bad Content-Length", close=True)
    return length


def raw_pieces(rfile: BufferedIOBase, length: int | None, limit: int) -> Iterator[bytes]:
    """The body as it arrives (chunked framing removed).

    A chunked body raises 413 once it passes ``limit``, and 400 once its chunks are too many for
    its size (``FREE_CHUNKS``); a Content-Length over the limit is the caller's to refuse before
    reading (these pieces then serve to drain it).
    """
    if length is None:
        return _chunked(rfile, limit)
    return _sized(rfile, length)


def _sized(rfile: BufferedIOBase, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining:
        piece = rfile.read1(min(remaining, PIECE))
        if not piece:
            raise RequestError(400, "body shorter than Content-Length", close=True)
        remaining -= len(piece)
        yield piece


def _chunked(rfile: BufferedIOBase, limit: int) -> Iterator[bytes]:
    total = chunks = 0
    while size := _chunk_size(_line(rfile)):
        total, chunks = total + size, chunks + 1
        if total > limit:
            raise RequestError(413, f"body larger than {limit} bytes", close=True)
        if chunks > FREE_CHUNKS and total < chunks * CHUNK_BYTES:
            message = f"chunks too small: {chunks} chunks for {total} bytes (send larger ones)"
            raise RequestError(400, message, close=True)
        yield from _sized(rfile, size)
        if _line(rfile):
            raise RequestError(400, "chunk data not followed by CRLF", close=True)
    for _ in range(_MAX_TRAILERS):
        if not _line(rfile):
            return
    raise RequestError(400, "too many trailer fields", close=True)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not text or len(text) > 15 or text.strip(b"0123456789abcdefABCDEF"):
        raise RequestError(400, "bad chunk size", close=True)
    return int(text, 16)


def _line(rfile: BufferedIOBase) -> bytes:
    line = rfile.readline(_MAX_LINE + 1)
    if not line.endswith(b"\n"):
        too_long = len(line) > _MAX_LINE
        raise RequestError(400, "chunk line too long" if too_long else "truncated chunked body")
    return line.rstrip(b"\r\n")


class BodySink:
    """Collects a body (decompressing it as it arrives), never holding more than ``limit``."""

    def __init__(self, limit: int, encoding: str, reservation: Reservation) -> None:
        self.limit = limit
        self.data = bytearray()
        self._reservation = reservation
        wbits = ENCODINGS[encoding]
        self._inflater: _Inflater | None = None if wbits is None else _Inflater(wbits)

    def write(self, piece: bytes) -> None:
        """Add one piece of the raw body."""
        if self._inflater is None:
            self.keep(piece)
            return
        self._inflater.feed(piece, self)

    def room(self) -> int:
        """Bytes that may still be kept before the limit is passed."""
        return self.limit - len(self.data)

    def keep(self, data: bytes) -> None:
        """Keep decoded bytes (413 past the limit, 503 when the memory budget is spent)."""
        if len(data) > self.room():
            raise RequestError(413, f"decompressed body larger than {self.limit} bytes")
        self._reservation.grow(len(self.data) + len(data))
        self.data += data

    def finish(self) -> bytearray:
        """The whole body; 400 when a compressed stream is cut short."""
        if self._inflater is not None:
            self._inflater.finish()
        return self.data


class _Inflater:
    """Decoding of every gzip member in turn (or of one zlib stream), output bounded by the
    sink's room."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._name = "gzip" if wbits == 31 else "deflate"
        self._member = zlib.decompressobj(wbits=wbits)
        self._started = False  # a member has begun and not yet ended
        self._pending = b""  # bytes after a member's end that may begin the next one

    def feed(self, data: bytes, sink: BodySink) -> None:
        data = self._pending + data
        self._pending = b""
        while data:
            if not self._started:
                if self._member.eof and self._name == "deflate":  # one stream, nothing after it
                    raise RequestError(400, "body is not valid deflate (zlib) data")
                if len(data) < 2:
                    self._pending = data
                    return
                if self._name == "gzip" and data[:2] != _GZIP_MAGIC:
                    raise RequestError(400, "body is not valid gzip")
                self._member = zlib.decompressobj(wbits=self._wbits)
                self._started = True
            data = self._inflate(data, sink)

    def _inflate(self, data: bytes, sink: BodySink) -> bytes:
        """Decode what ``data`` holds of the current member; returns what follows its end."""
        try:
            out = self._member.decompress(data, sink.room() + 1)
        except zlib.error:
            what = "gzip" if self._name == "gzip" else "deflate (zlib) data"
            raise RequestError(400, f"body is not valid {what}") from None
        sink.keep(out)  # 413 when it passes the limit: room() + 1 bytes came out
        if self._member.unconsumed_tail:  # output stopped at the limit: more remains
            raise RequestError(413, f"decompressed body larger than {sink.limit} bytes")
        if not self._member.eof:
            return b""
        self._started = False
        return self._member.unused_data

    def finish(self) -> None:
        if self._started or self._pending or not self._member.eof:
            raise RequestError(400, f"{self._name} body is truncated")
