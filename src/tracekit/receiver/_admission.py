"""Admission control, like the OpenTelemetry Collector's memory limiter.

Two caps: open connections (each one costs a thread and a file descriptor) and request bytes held
in memory at once. Over either, a client is told 503 (HTTP, with Retry-After) or UNAVAILABLE
(gRPC) at once instead of waiting or growing a buffer.

A request is charged for what it has sent (the body bytes held so far) and, once its body is
whole, for what parsing it costs; never for what its Content-Length declares, so a client that
declares much and sends little holds little.

At the connection cap a newcomer first displaces the connection that has waited longest without
sending a whole request (a client trickling bytes, or an idle keep-alive connection), so a
handful of slow clients cannot starve the exporters that send whole requests. When every such
connection is too young, one of another client address holding over half the cap is displaced,
so that connections renewed faster than that from one address cannot keep the others out.
Every request must arrive whole within a deadline that trickling bytes cannot extend
(``ClientStream``).

Requests that may wait long for room in a full write queue (gRPC calls: up to half their
deadline, 30 s at most) hold at most half the budget from their wait to their commit; past that
such a request is let in only if there is room at once, else told to retry. Without that share a
few large calls waiting could hold the whole budget, and every other request be refused until
they left; counting them only while they waited, those queued and being written behind a slow
writer took most of the other half.
"""

from __future__ import annotations

import io
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tracekit.receiver._errors import RequestError

# States of a connection, in the order it is chosen to make room: a request arriving slowly
# first, then an idle keep-alive connection; one whose request is being handled never.
READING, IDLE, BUSY = 0, 1, 2
MIN_AGE = 1.0  # seconds a connection keeps its place before a newcomer may displace it
# A request whose reads bring fewer than CRUMB bytes each on average, after CRUMB_READS of them,
# is arriving in crumbs (a byte at a time, on purpose or not): its reader then sleeps CRUMB_PAUSE
# before each read while its bytes gather in the kernel. Woken for every byte, each such client
# cost the collector a thread wake-up, a read and a piece of body a byte (50 clients sending a
# byte every 2 ms: 40% of a core, and the other clients' requests waited for it).
CRUMB, CRUMB_READS, CRUMB_PAUSE = 512, 8, 0.5
# What a request costs in memory from its whole body to its commit, estimated from the body and,
# once parsed, its record count. Per byte of body: the body, what parsing builds (JSON: about 8x
# with json.loads), the rows that carry its strings, their pickled copy to the writer process
# and that process's copy. Per record: the objects around each one. Measured on 16 MiB bodies
# whose strings are all new (the dearest case): 33,700 spans of protobuf peaked at 175 MiB in the
# collector and 84 MiB in its writer; 26,900 of JSON at 143 and 73; 207,000 tiny spans at over
# 500 MiB, which is why a request may hold at most half the budget's worth of records.
BODY_COST = {"application/x-protobuf": 6, "application/json": 12}
# Metrics are dropped unbuilt, either encoding: the body, and protobuf's copy of each metric's bytes
METRICS_COST = 2
RECORD_COST = 1536
# What decoding one message of a request costs at most (an empty span event: 260 bytes measured,
# an empty attribute 100); a request may hold half the budget's worth (see _elements).
ELEMENT_COST = 256


class MemoryBudget:
    """Request bytes the receiver holds in memory at once, across every connection and RPC."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiting = 0  # bytes held by requests waiting long for room (at most half)
        self._lock = threading.Lock()

    def fits(self, size: int, held: int = 0) -> bool:
        """Whether ``take(size, held)`` would succeed now (nothing is reserved)."""
        with self._lock:
            return self._fits(size, held)

    def take(self, size: int, held: int = 0) -> bool:
        """Reserve ``size`` more bytes if they fit (``held``: what the asker holds already)."""
        with self._lock:
            if not self._fits(size, held):
                return False
            self.used += size
            return True

    def _fits(self, size: int, held: int) -> bool:
        # a request larger than the whole budget is let in alone: slow, not refused for ever
        return self.used + size <= self.limit or self.used <= held

    def give(self, size: int) -> None:
        """Return ``size`` reserved bytes."""
        with self._lock:
            self.used -= size

    @contextmanager
    def waiting_room(self, size: int) -> Iterator[bool]:
        """Whether a request holding ``size`` bytes may wait long for room in the write queue
        (counted as waiting until the block ends: its commit): while waiting requests hold half
        the budget or less with it. One larger than half may wait alone: slow, not refused for
        ever."""
        with self._lock:
            allowed = self.waiting + size <= self.limit // 2 or not self.waiting
            if allowed:
                self.waiting += size
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self.waiting -= size

    @contextmanager
    def reservation(self) -> Iterator[Reservation]:
        """A reservation that grows as a request's body arrives and is returned at the end."""
        held = Reservation(self)
        try:
            yield held
        finally:
            held.release()


class Reservation:
    """The bytes one request holds. ``waits_long``: the request may wait long for room in the
    write queue, within the budget's share for waiting (``MemoryBudget.waiting_room``)."""

    def __init__(self, budget: MemoryBudget, waits_long: bool = False) -> None:
        self._budget = budget
        self.waits_long = waits_long
        self.held = 0
        self.body_cost = 0

    def grow(self, total: int) -> None:
        """Hold ``total`` bytes in all; 503 at once when the budget has no room."""
        if total <= self.held:
            return
        if not self._budget.take(total - self.held, self.held):
            raise _memory_full()
        self.held = total

    def expect(self, body_bytes: int, content_type: str, signal: str) -> None:
        """503 at once when a body of ``body_bytes`` (declared, not yet sent) could not be
        covered now. Nothing is held: a client declaring much and sending little holds little."""
        cost = _body_cost(body_bytes, content_type, signal)
        if not self._budget.fits(cost - self.held, self.held):
            raise _memory_full()

    def cover(self, body_bytes: int, content_type: str, signal: str) -> None:
        """Hold what a whole body of ``body_bytes`` costs until its records are committed."""
        self.body_cost = _body_cost(body_bytes, content_type, signal)
        self.grow(self.body_cost)

    def cover_records(self, count: int) -> None:
        """Hold what decoding ``count`` records costs too; 413 for more than half the budget."""
        most = self._budget.limit // 2 // RECORD_COST
        if count > most:
            raise RequestError(
                413, f"{count} records in one request; this collector takes at most {most}"
            )
        self.grow(self.body_cost + count * RECORD_COST)

    @contextmanager
    def waiting(self, seconds: float) -> Iterator[float]:
        """Seconds this request may wait for room in the write queue: ``seconds``, or none when
        it waits long and the requests waiting long already hold half the budget."""
        if not self.waits_long or seconds <= 0:
            yield seconds
            return
        with self._budget.waiting_room(self.held) as allowed:
            yield seconds if allowed else 0.0

    @property
    def most_elements(self) -> int:
        """Messages (spans, attributes, events...) one request may hold."""
        return self._budget.limit // 2 // ELEMENT_COST

    def release(self) -> None:
        """Give everything back (idempotent)."""
        self._budget.give(self.held)
        self.held = 0


def _client_address(sock: socket.socket) -> str:
    """The address a connection comes from (its host, not its port); '' once it is gone."""
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


def _body_cost(body_bytes: int, content_type: str, signal: str) -> int:
    if signal == "metrics":
        return body_bytes * METRICS_COST
    return body_bytes * BODY_COST.get(content_type, 12)


def _memory_full() -> RequestError:
    return RequestError(503, "collector memory limit reached, retry later", retry_after=1)


class ClientStream(io.RawIOBase):
    """One client connection's socket, read under deadlines.

    ``arm`` starts a request: the client has ``idle`` seconds to send its first byte, and from
    that byte ``whole`` seconds to send the rest of the request (line, headers and body). Every
    read waits only for what is left of that time, so trickling bytes cannot extend it.
    """

    def __init__(self, sock: socket.socket, idle: float, whole: float, stop: int) -> None:
        super().__init__()
        self.sock = sock
        self._stop = stop  # a descriptor readable once the receiver stops
        self.address = _client_address(sock)
        self.idle = idle
        self.whole = whole
        self.state = IDLE
        self.since = time.monotonic()
        self.evicted = False
        self._deadline = self.since + idle
        self._reads = self._received = 0  # of the request begun

    def readable(self) -> bool:
        """A raw stream for ``io.BufferedReader``."""
        return True

    def arm(self) -> None:
        """Wait for the next request."""
        self.state, self.since = IDLE, time.monotonic()
        self._deadline = self.since + self.idle
        self._reads = self._received = 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Read what has arrived, waiting no longer than the request's deadline allows."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        if self.state == IDLE and not self._request_begins(remaining):
            return 0  # the receiver stops, and no next request has begun: the connection ends
        if self._reads >= CRUMB_READS and self._received < CRUMB * self._reads:
            time.sleep(min(CRUMB_PAUSE, remaining))  # (still within the request's deadline)
            remaining = self._deadline - time.monotonic()
        self.sock.settimeout(max(remaining, 0.001))
        count = self.sock.recv_into(buffer)
        self._reads, self._received = self._reads + 1, self._received + count
        if count and self.state == IDLE:
            self.state, self.since = READING, time.monotonic()
            self._deadline = self.since + self.whole
        return count

    def _request_begins(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) for the next request's first bytes, or its client's close;
        False when the receiver stops first. Decided here, by the thread that reads them: the
        stopping thread, looking from outside, found a connection idle whose handler had read
        a request's first bytes and not yet said so, shut it, and the body was cut off (400)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._stop, select.POLLIN)
        ready = dict(poller.poll(timeout * 1000))
        if not ready:
            raise TimeoutError("no request came")
        return self.sock.fileno() in ready

    def hurry(self, seconds: float) -> None:
        """Wait at most ``seconds`` from now for the rest of the request."""
        self._deadline = min(self._deadline, time.monotonic() + seconds)

    def waiting_idle(self) -> bool:
        """Waiting for its next request, none of which has arrived: not even its first bytes
        waiting unread for a handler thread not yet run (a loaded machine)."""
        return self.state == IDLE and not _bytes_waiting(self.sock)

    def evict(self) -> None:
        """Make room for a newcomer: wake this connection's reader, which then answers 503."""
        self.evicted = True
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)


class ConnectionTable:
    """Open connections, at most ``cap``; makes room for a newcomer by evicting a slow one."""

    def __init__(self, cap: int, idle: float, whole: float) -> None:
        self.cap = cap
        self.idle = idle
        self.whole = whole
        self.streams: dict[socket.socket, ClientStream] = {}
        self.lock = threading.Lock()
        # readable once the receiver stops (``_pipe``: both ends while open)
        self._stop_read, self._stop_write = os.pipe()
        self._pipe: tuple[int, ...] = (self._stop_read, self._stop_write)
        self._closing = False  # close() was called: the last handler to end releases them

    def admit(self, sock: socket.socket) -> bool:
        """Register ``sock``; False when it must be refused (full of busy or young connections)."""
        with self.lock:
            stream = ClientStream(sock, self.idle, self.whole, self._stop_read)
            if len(self.streams) >= self.cap:
                victim = self._victim() or self._hogging(stream.address)
                if victim is None:
                    return False
                victim.evict()
                del self.streams[victim.sock]
            self.streams[sock] = stream
            return True

    def _victim(self) -> ClientStream | None:
        oldest = time.monotonic() - MIN_AGE
        candidates = [s for s in self._displaceable() if s.since <= oldest]
        return min(candidates, key=lambda s: (s.state, s.since), default=None)

    def _displaceable(self) -> list[ClientStream]:
        """Connections not being answered, nor holding a request that waits unread: cut off,
        its exporter would be told 503 for a request that had arrived whole."""
        return [s for s in self.streams.values() if s.state == READING or s.waiting_idle()]

    def _hogging(self, newcomer: str) -> ClientStream | None:
        """The oldest connection not being answered of another client address than
        ``newcomer`` holding over half the cap, however young: an idle one first. One address
        may be many exporters (behind a NAT), and one of them may be sending a batch just now:
        closing a keep-alive connection loses nothing, cutting that batch off loses it."""
        held = Counter(s.address for s in self.streams.values())
        address, count = next(iter(held.most_common(1)), ("", 0))
        if address == newcomer or 2 * count <= self.cap:
            return None
        candidates = [s for s in self._displaceable() if s.address == address]
        return min(candidates, key=lambda s: (s.state != IDLE, s.since), default=None)

    def stream(self, sock: socket.socket) -> ClientStream:
        """The stream registered for ``sock`` (a fresh one if it was evicted meanwhile)."""
        with self.lock:
            found = self.streams.get(sock)
        if found is None:
            found = ClientStream(sock, self.idle, self.whole, self._stop_read)
            found.evicted = True
        return found

    def forget(self, sock: socket.socket) -> None:
        """The connection closed."""
        with self.lock:
            self.streams.pop(sock, None)
            last = self._closing and not self.streams
        if last:
            self.close()

    def sockets(self) -> list[socket.socket]:
        """Every open connection."""
        with self.lock:
            return list(self.streams)

    def stop_waiting(self) -> None:
        """End every connection waiting for its next request, now and from now on; one whose
        next request has begun (a byte of it has arrived) is answered first."""
        with self.lock:  # (not while the last handler to end closes it)
            if self._pipe:
                os.write(self._stop_write, b"s")  # one byte, never read: it stays readable

    def close(self) -> None:
        """Release the descriptors now if no handler reads, else once the last one ends."""
        with self.lock:
            self._closing = True
            if self.streams:
                return
            pipe, self._pipe = self._pipe, ()
        for descriptor in pipe:
            os.close(descriptor)


def _bytes_waiting(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (a request's first bytes, or its client's close),
    asked without waiting and without taking it from the handler that reads it."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile: nothing to wake
        return False
