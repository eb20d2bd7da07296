"""One OTLP export, whatever carried it: decode, check, queue for the writer, wait for the commit.

The HTTP and the gRPC side both call ``IngestService.export``; they differ only in framing and in
how a ``RequestError`` is told to the client.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit._utf8 import escaped
from tracekit.receiver import _json, _json_metrics, _protobuf
from tracekit.receiver._admission import Reservation
from tracekit.receiver._decoded import Admit, Decoded, MalformedRequest
from tracekit.receiver._elements import check_elements
from tracekit.receiver._errors import RequestError
from tracekit.receiver._ingest import IngestQueue, QueueFull, Ticket
from tracekit.receiver._protobuf_spans import SpanRowDecoder
from tracekit.store._heap import trim
from tracekit.store._process import is_damage
from tracekit.store._reclaim import StaleRows

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_log = logging.getLogger("tracekit.receiver")
_LARGE_BODY = 4 * 1024 * 1024
# OpenTelemetry SDKs say nothing of a partial success (Python's exporters read no answer to a
# 200), so records refused from a request are said here, or no one would know they are missing.
_REFUSED = "tracekit collector: refused %s: %s (told to the exporter, which may not log it)"
_RECORDS = {"traces": "span", "logs": "log record"}
_DECODERS: dict[tuple[str, str], Callable[[bytes, Admit], Decoded]] = {
    (PROTOBUF, "traces"): _protobuf.decode_traces,
    (PROTOBUF, "logs"): _protobuf.decode_logs,
    (PROTOBUF, "metrics"): _protobuf.decode_metrics,
    (JSON, "traces"): _json.decode_traces,
    (JSON, "logs"): _json.decode_logs,
    (JSON, "metrics"): _json_metrics.decode_metrics,
}


class IngestService:
    """Turns export requests into committed records (or a ``RequestError``)."""

    def __init__(self, queue: IngestQueue, commit_timeout: float) -> None:
        self.queue = queue
        self.commit_timeout = commit_timeout
        self.stopping = False
        self.span_decoder = SpanRowDecoder(queue.store.encoder)
        # One request decodes at a time. Decoding is pure Python, so threads could only take turns
        # with the GIL anyway; doing so every 5 ms, eight requests used to finish together, late,
        # and reach the writer in a clump. In turn, each is written while the next decodes (about
        # 15% more spans a second with eight exporters, and less CPU per span: docs/store.md).
        self.decode_lock = queue.decode_lock
        self._metrics_logged = threading.Event()
        self._refusals = RateLimitedWarning(60.0, _REFUSED)

    @property
    def health(self) -> str:
        """``ok`` once records sent can be committed; ``starting`` while the writer process opens
        the store (requests are taken and wait for it: an orchestrator's readiness probe should
        not send traffic yet); ``stopping`` once a stop began. ``/health`` and gRPC's health
        service both say it."""
        if self.stopping:
            return "stopping"
        return "ok" if self.queue.ready else "starting"

    def export(
        self,
        signal: str,
        content_type: str,
        body: bytes | bytearray,
        reservation: Reservation,
        wait_for_room: float = 0.0,
        client: str = "",
        gone: threading.Event | None = None,
    ) -> bytes:
        """Store one request's records; returns the encoded ``Export*ServiceResponse``.

        ``reservation`` holds the request's memory; it grows by what its records cost.
        ``wait_for_room``: seconds to wait for the write queue to make room before a 503.
        ``client``: the connection it came on (a full queue's room is given client by client).
        ``gone``: set when the client stops waiting (``IngestQueue.client_gone``).
        """
        try:
            decoded = self._decode(content_type, signal, body, reservation)
            self._note_refused(signal, decoded, client)
            if decoded.total and decoded.rejected == decoded.total:
                raise RequestError(400, f"every record was rejected: {decoded.reason}")
            if signal == "metrics":
                self._note_metrics()
            else:
                self._store(decoded, reservation, wait_for_room, client, gone)
            encode = _protobuf.response if content_type == PROTOBUF else _json.response
            return encode(signal, decoded)
        finally:
            if len(body) > _LARGE_BODY:
                trim()  # what decoding it built goes back to the system, not stays with us

    def _decode(
        self, content_type: str, signal: str, body: bytes | bytearray, reservation: Reservation
    ) -> Decoded:
        decode = _DECODERS[content_type, signal]
        if decode is _protobuf.decode_traces:  # the hot path: straight into rows
            decode = self.span_decoder.decode
        admit = reservation.cover_records
        try:
            # counted before decoding (and outside the lock): refused, it builds nothing
            check_elements(body, content_type == PROTOBUF, signal, reservation.most_elements)
            with self.decode_lock:
                try:
                    decoded = self._decode_locked(decode, body, admit)
                except StaleRows:  # another process reclaimed strings: caches are empty now
                    decoded = self._decode_locked(decode, body, admit)
        except MalformedRequest as error:
            raise RequestError(400, str(error)) from None
        except (sqlite3.Error, StaleRows) as error:  # interning failed (store locked too long,
            # disk full, strings reclaimed twice in a row by another process, a damaged file)
            self.queue.note_store_error(error)
            if is_damage(error):  # a retry cannot help
                raise RequestError(500, "store is damaged; see the collector's log") from None
            raise RequestError(503, "store unavailable, retry later", retry_after=5) from None
        return decoded

    def _decode_locked(
        self, decode: Callable[[bytes, Admit], Decoded], body: bytes | bytearray, admit: Admit
    ) -> Decoded:
        decoded = decode(body, admit)  # type: ignore[arg-type]
        if decoded.spans:  # JSON decodes into records: rows need interned strings
            decoded.rows.extend(self.queue.store.encoder.encode(decoded.spans))
            decoded.spans = []
        return decoded

    def _wait_for_commit(self, ticket: Ticket) -> None:
        """Wait for ``ticket``'s commit; 503 after ``commit_timeout`` only if it is withdrawn.

        A 503 makes the exporter send the records again, so it may only come for records that
        will not be written: logs have no id, and a batch both answered 503 and committed was
        stored twice. A ticket the writer already holds is waited for to the end (the writer
        finishes every one it takes: SQLite's busy timeout and retries bound a locked file),
        unless the writer thread itself is gone.
        """
        if ticket.done.wait(self.commit_timeout):
            return
        if self.queue.withdraw(ticket):
            raise RequestError(503, "store is too slow, retry later", retry_after=5)
        while not ticket.done.wait(self.commit_timeout):
            if not self.queue.writing:
                raise RequestError(503, "store writer stopped, retry later", retry_after=5)

    def _note_refused(self, signal: str, decoded: Decoded, client: str) -> None:
        """Say (at most once a minute) that records of a request were refused, and why."""
        if decoded.rejected:
            plural = "" if decoded.total == 1 else "s"
            what = f"{decoded.rejected} of {decoded.total} {_RECORDS.get(signal, 'metric')}{plural}"
            self._refusals.warn(f"{what} from {client or 'a client'}", escaped(decoded.reason))

    def _note_metrics(self) -> None:
        if not self._metrics_logged.is_set():
            self._metrics_logged.set()
            _log.warning(
                "tracekit collector: metrics received and dropped (tracekit stores traces and"
                " logs; send metrics to Prometheus). This is logged once."
            )

    def _store(
        self,
        decoded: Decoded,
        reservation: Reservation,
        wait_for_room: float,
        client: str,
        gone: threading.Event | None,
    ) -> None:
        if not decoded.rows.spans and not decoded.logs:
            return
        # a request that waited long holds its share until committed: queued or being written,
        # it still holds its memory, and under load the writer's backlog filled the other half
        with reservation.waiting(wait_for_room) as wait:
            try:
                ticket = self.queue.submit(decoded.rows, decoded.logs, wait, client, gone)
            except QueueFull:
                raise RequestError(503, "write queue is full, retry later", retry_after=1) from None
            self._wait_for_commit(ticket)
        if is_damage(ticket.error):
            raise RequestError(500, "store is damaged; see the collector's log")
        if ticket.error is not None:
            raise RequestError(503, "store write failed, retry later", retry_after=5)
