"""The OTLP/gRPC side: the trace, logs and metrics services on one ``grpc.aio`` server.

Requests reach ``IngestService.export`` as the bytes of their protobuf message (no generated
stubs: the handlers neither deserialize nor serialize), so they take the same decoders, checks,
store path and memory budget as OTLP/HTTP. grpc decompresses gzip and refuses a message larger
than the body limit (``RESOURCE_EXHAUSTED``) before our handler runs. Imported only when a gRPC
port is asked for: ``grpcio`` comes with the ``cli`` extra.

Messages are received on an event loop, not in worker threads: a client that opens a call and
never sends its message (or sends it a byte at a time) holds a coroutine until the request
deadline, never one of the few threads that decode and store, so a handful of such clients cannot
starve the exporters. At the cap of open calls a newcomer displaces the call that has waited
longest for its message (as the HTTP side displaces its slowest connection), so neither can many
of them. A message is charged to the memory budget as soon as it is whole, before it waits for a
worker. Until then grpc holds what has arrived of it, out of our sight, and lets the client send
as much as the message declares; so fewer calls may be receiving at once than are open: the
budget's worth of messages of the size limit (10 at the defaults). Past that a newcomer first
displaces a call of the connection holding the most of them, so one client's flood of calls
cannot keep the others out; else it waits in line, unread, for a place to free or for the oldest
call to have waited a second (then displaced), so calls renewed faster than that cannot keep the
others out either. Client addresses are served fairly too: a call from an address with fewer
calls receiving goes first in line, and displaces a call of an address holding over half the
places, so many connections from one address cannot keep the others out. Past seven eighths of
the connection cap the longest-idle connections are closed (``_grpc_connections``), so that
connections left open cannot keep a new exporter out either.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from grpc import aio

from tracekit.receiver._address import client_address, family, host_port, socket_address
from tracekit.receiver._admission import MIN_AGE, MemoryBudget, Reservation
from tracekit.receiver._errors import RequestError
from tracekit.receiver._grpc_connections import IdleConnections
from tracekit.receiver._grpc_health import health_handler
from tracekit.receiver._service import PROTOBUF, IngestService

_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": "traces",
    "opentelemetry.proto.collector.logs.v1.LogsService": "logs",
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics",
}
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,  # not retried: the store is damaged
    503: grpc.StatusCode.UNAVAILABLE,  # OTLP exporters retry UNAVAILABLE
}
_WORKERS = 16  # messages decoded and stored at once; whole messages wait for a worker
# RPCs open at once, most of them still receiving: past this a newcomer displaces the call that
# has waited longest (over MIN_AGE) for its message, else it is told UNAVAILABLE; so is a
# displaced call, and OTLP exporters retry it. (grpc's own cap answers RESOURCE_EXHAUSTED without
# RetryInfo, which the OTLP specification tells exporters not to retry: the batch would be lost.
# It stays as a backstop, above ours, for calls arriving faster than ours are refused.)
MAX_CALLS = 4096
_SWEEP_EVERY = 0.5  # seconds between looks at grpc's connections (_displace_idle_connections)
_WINDOW = 65_535  # bytes HTTP/2 lets a client send on a call before the server reads from it
_T = TypeVar("_T")
_log = logging.getLogger("tracekit.receiver")
Export = Callable[[str, AsyncIterator[bytes], Any], Awaitable[bytes]]


class GrpcReceiver:
    """An OTLP/gRPC server on ``host:port`` (0: any free port) feeding ``service``.

    ``receive_timeout``: seconds a call may take to send its whole message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        service: IngestService,
        budget: MemoryBudget,
        max_body: int,
        receive_timeout: float = 30.0,
        max_calls: int = MAX_CALLS,
        max_connections: int = 512,
    ) -> None:
        self.service = service
        self.budget = budget
        self.receive_timeout = receive_timeout
        self.max_calls = max_calls
        # grpc buffers a message out of our sight until it is whole, up to the size it declares:
        # calls receiving at once may hold about the memory budget's worth of message limits
        self.max_receiving = max(1, budget.limit // max_body)
        self._open_calls = 0  # only ever changed on the event loop's thread
        self._calls_per_peer: Counter[str] = Counter()  # open calls of each connection (loop)
        # calls still waiting for their message, oldest first, with when each began and the
        # connection it came on (grpc's peer: address and port) (loop thread)
        self._receiving: dict[asyncio.Future[bytes], tuple[float, str]] = {}
        # calls waiting for a place among those, in arrival order, with their connection (loop
        # thread). Each place frees at least once a second (MIN_AGE) while calls wait, so the
        # line holds what the places serve in 10 s (OTLP exporters' default timeout), unless
        # what grpc may hold of those calls' messages would pass a tenth of the budget
        self._waiting: dict[asyncio.Event, str] = {}
        self.max_waiting = max(1, min(10 * self.max_receiving, budget.limit // 10 // _WINDOW))
        self._workers = ThreadPoolExecutor(_WORKERS, thread_name_prefix="tracekit-grpc")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tracekit-grpc-loop", daemon=True
        )
        self._thread.start()
        try:
            self.server, self.port = self._run(self._bind(host, port, max_body, max_connections))
        except BaseException:
            self._end_loop()
            raise
        # grpc closes a newcomer past max_connections: idle ones past 7/8 of it are shut first
        keep = max_connections - max(1, max_connections // 8)
        self._idle_connections = IdleConnections(self.port, keep, MIN_AGE)

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _bind(
        self, host: str, port: int, max_body: int, max_connections: int
    ) -> tuple[aio.Server, int]:
        server = aio.server(
            handlers=[
                *(_handler(name, signal, self._export) for name, signal in _SERVICES.items()),
                health_handler(_SERVICES, lambda: self.service.health == "ok"),
            ],
            options=[
                ("grpc.max_receive_message_length", max_body),
                # a call not reading (one waiting in line) keeps HTTP/2's window (_WINDOW): grpc's
                # bandwidth probe widened it up to 16 MiB, which grpc held beyond our sight
                ("grpc.http2.bdp_probe", 0),
                ("grpc.so_reuseport", 0),  # a second collector must fail to bind, not share
                # Each connection holds a file descriptor, which the HTTP side and the store need
                # too: 1,500 connections that sent HTTP/2's preface and then nothing took every
                # descriptor, and every OTLP/HTTP export was told 503 for as long as they stayed.
                # Past the cap grpc closes a newcomer; one that does not finish its handshake
                # within the request deadline is closed, as an HTTP request head is. (Idle ones
                # are closed past 7/8 of the cap, without grpc's idle timeout: each GOAWAY prints
                # a line on the stderr of the service whose exporter receives it.)
                ("grpc.max_allowed_incoming_connections", max_connections),
                ("grpc.server_handshake_timeout_ms", int(self.receive_timeout * 1000)),
            ],
            maximum_concurrent_rpcs=2 * self.max_calls,
        )
        target = host_port(host, port)
        try:
            bound = server.add_insecure_port(target)
        except RuntimeError:  # "Failed to bind to address ...; set GRPC_VERBOSITY=debug ..."
            bound = 0
        if not bound:
            raise OSError(f"cannot listen on {target}: {_why_not(host, port)}")
        return server, int(bound)

    def start(self) -> None:
        """Serve on the event loop's thread."""
        self._run(self.server.start())
        self._loop.call_soon_threadsafe(self._displace_idle_connections)

    def _displace_idle_connections(self) -> None:
        """Keep room under grpc's connection cap (see ``_grpc_connections``): the connections
        past seven eighths of the cap that have no call open and have sent nothing for
        ``MIN_AGE`` are shut down, longest idle first; again every ``_SWEEP_EVERY`` s."""
        try:
            self._idle_connections.displace(self._calls_per_peer.__contains__)
        except Exception as error:  # never the receiver's end: the cap still holds
            _log.warning("tracekit collector: idle gRPC connections not looked at: %r", error)
        else:
            self._loop.call_later(_SWEEP_EVERY, self._displace_idle_connections)

    def stop(self, grace: float) -> None:
        """Refuse new RPCs and let the ones in flight finish (up to ``grace`` s); once.

        A call cancelled at the end of ``grace`` may leave its worker waiting for a commit:
        ``close`` waits for it once the write queue has closed (and so answered every ticket)."""
        if not self._loop.is_closed():  # stopped already, as the HTTP side may be again
            self._run(self.server.stop(grace))

    def close(self) -> None:
        """Wait for the workers (after the write queue closed) and end the event loop; once."""
        if not self._loop.is_closed():
            self._workers.shutdown(wait=True)
            self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _export(self, signal: str, requests: AsyncIterator[bytes], context: Any) -> bytes:
        if self._open_calls >= self.max_calls and not self._make_room(context.peer()):
            await _abort(context, _too_many_calls())
        self._open_calls += 1
        self._calls_per_peer[context.peer()] += 1
        try:
            await self._wait_turn(context.peer())
            request = await self._receive(requests, context.peer())
            return await self._stored(signal, request, self._wait_for_room(context), context.peer())
        except RequestError as error:
            await _abort(context, error)
            raise  # abort raised already; this line only tells type checkers so
        finally:
            self._open_calls -= 1
            self._calls_per_peer[context.peer()] -= 1
            if not self._calls_per_peer[context.peer()]:
                del self._calls_per_peer[context.peer()]

    async def _wait_turn(self, peer: str) -> None:
        """Wait in line until a place among the calls receiving is free or may be made (see
        ``_victim``); UNAVAILABLE when the line is full, when this call is displaced from it, or
        when no place came within the request deadline. Nothing of the message is read meanwhile:
        grpc holds at most a stream's window of it (``_WINDOW``)."""
        if len(self._waiting) >= self.max_waiting and not self._shorten_line(peer):
            raise _too_many_calls()
        turn = asyncio.Event()
        self._waiting[turn] = peer
        deadline = time.monotonic() + self.receive_timeout
        try:
            while not (self._next_in_line() is turn and self._take_place(peer)):
                turn.clear()
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise _too_many_calls()
                if self._next_in_line() is turn:  # until the oldest call may be displaced
                    wait = min(wait, self._until_displaceable())
                else:  # woken, but the places taken since put another call first: its turn
                    self._wake_next()
                with suppress(TimeoutError):
                    await asyncio.wait_for(turn.wait(), wait)
                if turn not in self._waiting:  # displaced by a newcomer (_shorten_line)
                    raise _too_many_calls()
        finally:
            self._waiting.pop(turn, None)
            self._wake_next()

    def _next_in_line(self) -> asyncio.Event | None:
        """The call to be given the next place: the first in line of the client addresses
        with the fewest calls receiving, so that many connections from one address cannot make
        the others wait behind them; first come, first served among calls of one address."""
        receiving = Counter(client_address(peer) for _, peer in self._receiving.values())
        return min(
            self._waiting, key=lambda t: receiving[client_address(self._waiting[t])], default=None
        )

    def _shorten_line(self, newcomer: str) -> bool:
        """Make room in a full line: the last call of the connection with the most calls in it,
        when it has several, else of another client address with the most calls in it, when it
        has several, is told to retry. False when there is none."""
        peers = list(self._waiting.values())
        crowded = _crowding(peers)
        if crowded is not None:
            return self._drop_last(lambda p: p == crowded)
        address = _crowding(client_address(p) for p in peers)
        if address is None or address == client_address(newcomer):
            return False
        return self._drop_last(lambda p: client_address(p) == address)

    def _drop_last(self, chosen: Callable[[str], bool]) -> bool:
        last = next(t for t, p in reversed(self._waiting.items()) if chosen(p))
        del self._waiting[last]
        last.set()
        return True

    def _take_place(self, peer: str) -> bool:
        return len(self._receiving) < self.max_receiving or self._make_room(peer)

    def _until_displaceable(self) -> float:
        """Seconds until the call that has waited longest for its message may be displaced."""
        oldest = min((since for since, _ in self._receiving.values()), default=0.0)
        return max(0.0, oldest + MIN_AGE - time.monotonic())

    def _wake_next(self) -> None:
        """Let the next call in line look again for a place."""
        turn = self._next_in_line()
        if turn is not None:
            turn.set()

    def _make_room(self, newcomer: str) -> bool:
        """Cancel a call still waiting for its message to make room for ``newcomer`` (a peer);
        its client is told to retry. False when there is none to cancel."""
        victim = self._victim(newcomer)
        if victim is None:
            return False
        del self._receiving[victim]
        victim.cancel()
        return True

    def _victim(self, newcomer: str) -> asyncio.Future[bytes] | None:
        """The oldest call of the connection holding the most calls waiting, when it holds
        several: a client opening call after call keeps no other connection out, however young
        its calls. Else the oldest call of another client address holding over half the places
        (``_hogging``): nor do many connections from one address keep other addresses out.
        Else the call that has waited longest, when that is at least ``MIN_AGE``. Never by the
        first rule a call of the newcomer's own connection: displacing a sibling makes no room
        for anyone else, and OpenTelemetry JS, whose gRPC exporter sends its batches at once on
        one connection and retries nothing, lost each batch so displaced."""
        others = (peer for _, peer in self._receiving.values() if peer != newcomer)
        crowded = _crowding(others)
        if crowded is not None:
            return next(c for c, (_, peer) in self._receiving.items() if peer == crowded)
        hogging = self._hogging(newcomer)
        if hogging is not None:
            return next(c for c, (_, p) in self._receiving.items() if client_address(p) == hogging)
        oldest = next(iter(self._receiving), None)
        if oldest is None or time.monotonic() - self._receiving[oldest][0] < MIN_AGE:
            return None
        return oldest

    def _hogging(self, newcomer: str) -> str | None:
        """Another client address than ``newcomer``'s holding several places and over half."""
        held = Counter(client_address(peer) for _, peer in self._receiving.values())
        for address, count in held.most_common(1):
            if count > 1 and 2 * count > self.max_receiving and address != client_address(newcomer):
                return address
        return None

    async def _receive(self, requests: AsyncIterator[bytes], peer: str) -> bytes:
        # a task of the coroutine itself: one cancelled before it starts leaves nothing unawaited
        receiving = asyncio.ensure_future(_one_message(requests, self.receive_timeout))
        self._receiving[receiving] = (time.monotonic(), peer)
        try:
            return await receiving
        except TimeoutError:
            raise RequestError(408, "request message too slow") from None
        except asyncio.CancelledError:
            call = asyncio.current_task()
            if call is not None and call.cancelling():  # the call itself ends: its client left
                raise
            raise _too_many_calls() from None  # displaced by a newcomer (_make_room)
        finally:
            self._receiving.pop(receiving, None)
            self._wake_next()

    def _wait_for_room(self, context: Any) -> float:
        """How long a call may wait for room in a full write queue: half what is left of its
        deadline (the other half is for the commit), at most the commit timeout. Longer than over
        HTTP (1 s): OpenTelemetry JS's gRPC exporter retries nothing, and UNAVAILABLE loses its
        batch."""
        remaining = context.time_remaining()
        most = self.service.commit_timeout
        return most if remaining is None else max(0.0, min(most, remaining / 2))

    async def _stored(self, signal: str, request: bytes, wait_for_room: float, peer: str) -> bytes:
        reservation = Reservation(self.budget, waits_long=True)  # within the waiting share
        gone = threading.Event()
        try:
            reservation.cover(len(request), PROTOBUF, signal)  # 503 now, not after a wait
            work = self._loop.run_in_executor(
                self._workers, self._store, signal, request, reservation, wait_for_room, peer, gone
            )
        except BaseException:
            reservation.release()
            raise
        # shielded: when the call is cancelled meanwhile, the work still ends and releases (its
        # outcome then has no one to go to, and is not to be printed as if unexpected)
        work.add_done_callback(_outcome_seen)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:  # its client left: what it waits in line for goes to none
            gone.set()
            self.service.queue.client_gone(gone)
            raise

    def _store(
        self,
        signal: str,
        request: bytes,
        reservation: Reservation,
        wait_for_room: float,
        peer: str,
        gone: threading.Event,
    ) -> bytes:
        try:
            export = self.service.export
            return export(signal, PROTOBUF, request, reservation, wait_for_room, peer, gone)
        finally:
            reservation.release()


def _crowding(peers: Iterable[str]) -> str | None:
    """The connection holding the most of these calls, when it holds several."""
    for peer, count in Counter(peers).most_common(1):
        if count > 1:
            return peer
    return None


def _too_many_calls() -> RequestError:
    return RequestError(503, "too many calls at once, retry later", retry_after=1)


async def _abort(context: Any, error: RequestError) -> None:
    """End the call with ``error``'s code; a retryable one says when to retry, as RetryInfo."""
    code = _CODES.get(error.status, grpc.StatusCode.UNKNOWN)
    trailers = () if error.retry_after is None else _retry_info(code, error)
    await context.abort(code, error.message, trailers)


def _retry_info(code: grpc.StatusCode, error: RequestError) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo where each exporter looks for it: OpenTelemetry Python reads its own trailer,
    Go and Java (the Collector's exporters too) the details of the standard rich status."""
    retry = RetryInfo(retry_delay=Duration(seconds=error.retry_after))
    details = any_pb2.Any()
    details.Pack(retry)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=[details])
    return (
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        ("grpc-status-details-bin", status.SerializeToString()),
    )


def _outcome_seen(work: asyncio.Future[bytes]) -> None:
    if not work.cancelled():
        work.exception()


async def _one_message(requests: AsyncIterator[bytes], timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        async for request in requests:
            return request
    raise RequestError(400, "the call ended without a request message")


def _why_not(host: str, port: int) -> str:
    """What the system says to listening on ``host:port`` (``Address already in use``): grpc's
    own error never says why."""
    try:
        with socket.socket(family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc's socket does
            probe.bind(socket_address(host, port))
    except OSError as error:
        return error.strerror or str(error)
    return "grpc could not bind it"  # free a moment later: nothing more to say


def _handler(name: str, signal: str, export: Export) -> grpc.GenericRpcHandler:
    # stream-unary on our side (a unary call is a stream of one message on the wire), so that
    # receiving the message is ours to bound in time
    async def handle(requests: AsyncIterator[bytes], context: Any) -> bytes:
        return await export(signal, requests, context)

    return grpc.method_handlers_generic_handler(
        name, {"Export": grpc.stream_unary_rpc_method_handler(handle)}
    )
