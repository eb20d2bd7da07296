"""Decoupling HTTP from SQLite: a bounded queue drained by one batching writer thread.

A request's records are acknowledged only after the transaction holding them commits: the
handler waits on its ``Ticket``. Many requests share one transaction, so waiting costs latency,
not throughput. When the queue is full a request waits in line for room, as long as its side
allows (see ``IngestService.export``), then the handler answers 503 with Retry-After.

Room is given in turn, not to whoever asks at the moment it frees: first to the client address
with the fewest records queued or being written, then to its connection with the fewest; among
equals, to a request that fits before one waiting for the queue to drain further, then first come
first served. A client sending call after call (gRPC calls wait for room up to
half their deadline), or many connections from one address, would otherwise take each place the
writer frees, and an exporter of another connection find few or none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit._utf8 import escaped
from tracekit.receiver._address import client_address
from tracekit.records import LogRecordData
from tracekit.store import Retention, Store
from tracekit.store._connection import one_line
from tracekit.store._process import (
    EXIT_TIMEOUT,
    WriterProcess,
    WriterProcessDied,
    WriterProcessError,
    is_damage,
)
from tracekit.store._rows import SpanRows
from tracekit.store._writer import SpanIdClashes

_log = logging.getLogger("tracekit.receiver")
_WRITE_FAILED = "tracekit receiver: write failed: %s: %s"
# Only the store's own hex of the ids is said, never the client's text.
_SPAN_ID_CLASH = (
    "tracekit receiver: %s was sent for two different spans (a client reusing span ids): only the"
    " first is stored (%s)"
)
# Batches handed to the writer process at once: while it commits one, the next is already in
# its pipe, so it never waits for this process (whose threads take turns with the GIL).
_IN_FLIGHT = 2
# Seconds between two looks at the store's size when it has a size limit: a store past it
# starts a retention pass then, not at the next of the passes run every retention interval.
_SIZE_CHECK_INTERVAL = 1.0


class QueueFull(Exception):
    """The write queue has no room; the client should retry later."""


class Ticket:
    """One request's records on their way into the store."""

    __slots__ = ("client", "done", "error", "gone", "logs", "spans")

    def __init__(
        self,
        spans: SpanRows,
        logs: list[LogRecordData],
        client: str = "",
        gone: threading.Event | None = None,
    ) -> None:
        self.spans = spans
        self.logs = logs
        self.client = client  # the connection it came on, as grpc names its peer (_address.peer)
        self.gone = gone  # set when its client stopped waiting for it (None: it never does)
        self.done = threading.Event()
        self.error: BaseException | None = None

    @property
    def size(self) -> int:
        """Records carried (what the queue bound counts)."""
        return len(self.spans.spans) + len(self.logs)

    def finish(self, error: BaseException | None = None) -> None:
        """Mark committed (or failed) and wake the waiting handler."""
        self.error = error
        self.done.set()


class IngestQueue:
    """Bounded queue of tickets plus the writer thread that commits them in batches."""

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 200_000,
        batch_size: int = 20_000,
        retention: Retention | None = None,
        retention_interval: float = 60.0,
        writer_process: bool = True,
    ) -> None:
        self.store = store
        self._process = WriterProcess(store.path) if writer_process else None
        self._store_errors: set[str] = set()
        self._write_failures = RateLimitedWarning(60.0, _WRITE_FAILED)
        self._span_id_clashes = RateLimitedWarning(60.0, _SPAN_ID_CLASH)
        self.capacity = capacity
        self.batch_size = batch_size
        self.retention = retention
        self.retention_interval = retention_interval
        self.committed = 0
        # Held while a request decodes (see IngestService): whoever holds it knows that no row
        # is being built from cached string ids.
        self.decode_lock = threading.RLock()
        self._items: deque[Ticket] = deque()
        self._queued = 0
        # records queued or being written, by connection and by address (until committed, so
        # that a client whose batch the writer just took does not count as having none)
        self._unwritten_by: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the writer waits here for tickets
        # tickets waiting for room, in arrival order, each on a condition of its own: only the
        # one whose turn it is can enter, and waking every waiter at each change cost 18 times
        # the CPU a record with 200 clients waiting (a third of the records written)
        self._line: dict[Ticket, threading.Condition] = {}
        self._turn: Ticket | None = None  # the one of them to be given room next
        self._closing = False
        # why the writer process did not start (it died, or said nothing in ANSWER_TIMEOUT)
        self.start_failure: str | None = None
        self._start_settled = threading.Event()  # the writer process's start went one way or other
        self._thread = threading.Thread(target=self._run, name="tracekit-writer", daemon=False)

    def start(self) -> None:
        """Start the writer process and the writer thread, which waits for it (see ``ready``)."""
        if self._process is not None:
            self._process.start()
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether a batch can be committed now: the writer process has opened the store."""
        return self._process is None or self._process.ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for ``ready``; returns it, False at once when the writer
        process's start failed (``start_failure`` says why)."""
        if self._process is None:
            return True
        self._start_settled.wait(timeout)
        return self.ready

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return self._queued

    def submit(
        self,
        spans: SpanRows,
        logs: list[LogRecordData],
        wait: float = 0.0,
        client: str = "",
        gone: threading.Event | None = None,
    ) -> Ticket:
        """Queue records from ``client``; ``QueueFull`` when neither room nor its turn came
        within ``wait`` seconds (an empty queue takes any size), or when ``gone`` is set
        meanwhile (see ``client_gone``)."""
        ticket = Ticket(spans, logs, client, gone)
        with self._cond:
            room = self._join_line(ticket)
            try:
                room.wait_for(lambda: self._leaving(ticket) or self._may_enter(ticket), wait)
                if self._closing:
                    raise QueueFull("receiver is shutting down")
                if self._leaving(ticket):
                    raise QueueFull("its client is gone")
                if not self._may_enter(ticket):
                    raise QueueFull("write queue is full")
            finally:
                self._leave_line(ticket)
            self._items.append(ticket)
            self._queued += ticket.size
            self._unwritten_by.update(_counted(ticket))
            self._choose_turn()
            self._cond.notify()
        return ticket

    def client_gone(self, gone: threading.Event) -> None:
        """The client of the request waiting with ``gone`` (now set) is no longer waiting for
        it: a cancelled gRPC call, whose records it will never hear of, leaves the line now
        rather than at the end of its wait (up to 30 s), with the worker thread it holds. One
        queued already is taken back while the writer has not taken it: its client, told
        CANCELLED, sends the records again, and they were stored twice."""
        with self._cond:
            for ticket, room in self._line.items():
                if ticket.gone is gone:
                    room.notify()
            queued = [ticket for ticket in self._items if ticket.gone is gone]
        for ticket in queued:
            if self.withdraw(ticket):
                ticket.finish(QueueFull("its client is gone"))

    def _leaving(self, ticket: Ticket) -> bool:
        return self._closing or (ticket.gone is not None and ticket.gone.is_set())

    def _may_enter(self, ticket: Ticket) -> bool:
        return self._turn is ticket and self._fits(ticket)

    def _fits(self, ticket: Ticket) -> bool:
        return not self._queued or self._queued + ticket.size <= self.capacity

    def _join_line(self, ticket: Ticket) -> threading.Condition:
        room = self._line[ticket] = threading.Condition(self._lock)
        self._choose_turn()
        return room

    def _leave_line(self, ticket: Ticket) -> None:
        del self._line[ticket]
        self._choose_turn()

    def _choose_turn(self) -> None:
        """Whose turn it is (after any change to the line or to what is queued): the first in
        line of the client addresses with the fewest records unwritten, of their connections
        with the fewest, and of those one that fits: a request as large as the queue, first in
        line, kept an exporter's 100 records waiting until the queue was empty (a 503 after its
        second, 160,000 places free). It looks again whether it may enter."""
        self._turn = min(self._line, key=self._place_in_line, default=None)
        if self._turn is not None:
            self._line[self._turn].notify()

    def _place_in_line(self, ticket: Ticket) -> tuple[int, int, bool]:
        connection, address = _connection_and_address(ticket.client)
        unwritten = self._unwritten_by
        return unwritten[address], unwritten[connection], not self._fits(ticket)

    def _written(self, tickets: list[Ticket]) -> None:
        """``tickets`` are committed, or failed: their clients' turns come sooner."""
        with self._cond:
            for ticket in tickets:
                for key, size in _counted(ticket).items():
                    self._unwritten_by[key] -= size
                    if not self._unwritten_by[key]:
                        del self._unwritten_by[key]  # a client gone leaves nothing behind
            self._choose_turn()

    @property
    def writing(self) -> bool:
        """Whether the writer thread runs (it finishes every ticket it takes while it does)."""
        return self._thread.is_alive()

    def withdraw(self, ticket: Ticket) -> bool:
        """Take ``ticket`` back if the writer has not taken it yet (then it is never written);
        False when it is being written or was."""
        with self._cond:
            if ticket.done.is_set() or ticket not in self._items:
                return False
            self._items.remove(ticket)
            self._queued -= ticket.size
        self._written([ticket])
        return True

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the writer thread and process, within ``timeout``
        s (None: however long the writes take). What the writer process has not committed by
        then is given up: it is killed, and the requests waiting for those records are told to
        retry. None of them was acknowledged: a handler answers only after the commit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify()
            for room in self._line.values():
                room.notify()
        # a writer process still starting, with nothing queued for it, has nothing to write
        self._thread.join(timeout if self.ready or self._items else 0.0)
        if self._process is None:
            self._thread.join()  # a write in this process cannot be cut short
            return
        if self._thread.is_alive():
            self._process.abandon()  # what waits for it fails now: the rest fails without it
            self._thread.join()
        left = EXIT_TIMEOUT if deadline is None else deadline - time.monotonic()
        self._process.stop(max(0.0, min(EXIT_TIMEOUT, left)))

    def _take(self, wait: float) -> list[Ticket]:
        with self._cond:
            if not self._items and not self._closing:
                self._cond.wait(wait)
            batch: list[Ticket] = []
            count = 0
            while self._items and (not batch or count + self._items[0].size <= self.batch_size):
                ticket = self._items.popleft()
                batch.append(ticket)
                count += ticket.size
            self._queued -= count
            if batch:
                self._choose_turn()
            return batch

    def _finished(self) -> bool:
        with self._cond:
            return self._closing and not self._items

    @contextmanager
    def _quiesced(self) -> Iterator[None]:
        """No request decodes, and every row decoded so far is written (strings are reclaimed)."""
        with self.decode_lock:
            while batch := self._take(wait=0.0):
                self._commit(batch)
            yield

    def _start_process(self) -> None:
        """Wait for the writer process here, not in ``start``: the receiver serves meanwhile.
        One that never says it is ready is told by ``start_failure`` (the first batch starts
        another one)."""
        if self._process is None:
            return
        try:
            self._process.await_ready()
        except WriterProcessDied as error:
            self.start_failure = one_line(error.__cause__ or error)
        finally:
            self._start_settled.set()

    def _run(self) -> None:
        self._start_process()
        retention = _RetentionRunner(
            self.store, self.retention, self.retention_interval, self._quiesced
        )
        sent: deque[list[Ticket]] = deque()  # batches the writer process holds, oldest first
        while sent or not self._finished():
            if retention.due:  # retention writes on our own connection: the child must be idle
                while sent:
                    self._settle(sent)
                retention.step()
            batch = self._take(wait=0.0 if sent or not retention.idle else 0.5)
            if batch:
                self._send(batch, sent)
            if sent and (len(sent) == _IN_FLIGHT or not batch):
                self._settle(sent)

    def _send(self, batch: list[Ticket], sent: deque[list[Ticket]]) -> None:
        """Start writing ``batch``; the writer process answers while we gather the next one."""
        if self._process is None:
            self._commit(batch)
            return
        try:
            self._process.send(*_merged(batch))
        except WriterProcessDied as died:
            self._recover([*sent, batch], sent, died.committed)
            return
        except Exception:  # not even handed over (cannot happen with rows the decoders build)
            self._isolate(batch, sent)
            return
        sent.append(batch)

    def _settle(self, sent: deque[list[Ticket]]) -> None:
        """Wait for the oldest batch sent, and answer its requests."""
        assert self._process is not None
        batch = sent.popleft()
        try:
            clashes = self._process.receive()
        except WriterProcessDied as died:
            self._recover([batch, *sent], sent, died.committed)
            return
        except WriterProcessError:  # this batch only: the child goes on with the next ones
            self._isolate(batch, sent)
            return
        self._acknowledge(batch, clashes)

    def _isolate(self, batch: list[Ticket], sent: deque[list[Ticket]]) -> None:
        """``batch`` failed: settle the batches after it, then write its requests one by one."""
        while sent:
            self._settle(sent)
        for ticket in batch:  # find the request that cannot be written; keep the others
            self._commit([ticket])

    def _recover(self, lost: list[list[Ticket]], sent: deque[list[Ticket]], committed: int) -> None:
        """The writer process died: the oldest ``committed`` batches it had were written (it died
        before answering them); write the others again, one at a time."""
        sent.clear()
        for batch in lost[:committed]:
            self._acknowledge(batch, None)
        for batch in lost[committed:]:
            self._commit(batch)

    def _commit(self, batch: list[Ticket]) -> None:
        """Write ``batch`` and wait for it (nothing else may be in flight)."""
        rows, logs = _merged(batch)
        try:
            if self._process is not None:
                clashes = self._process.write_rows(rows, logs)
            else:
                clashes = self.store.write_rows(rows, logs)
        except Exception as error:
            if isinstance(error, WriterProcessDied) and error.committed:
                self._acknowledge(batch, None)  # it died between its commit and its answer
                return
            if len(batch) == 1:
                self._failed(batch[0], error)
                return
            for ticket in batch:  # find the request that cannot be written; keep the others
                self._commit([ticket])
            return
        self._acknowledge(batch, clashes)

    def _failed(self, ticket: Ticket, error: Exception) -> None:
        if "StaleRows" in str(error) or type(error).__name__ == "StaleRows":
            # another process reclaimed strings: forget our ids; the client's retry re-encodes
            with self.decode_lock:
                self.store.encoder.interner.refresh()
        elif is_damage(error):  # every write fails alike until the file is replaced
            self.note_store_error(error)
        else:  # a full disk fails every request alike: said once a minute, not once each
            self._write_failures.warn(type(error).__name__, one_line(error))
        ticket.finish(error)
        self._written([ticket])

    def note_store_error(self, error: BaseException) -> None:
        """Say on the collector's log, once per kind, why the store refuses: an exporter only
        sees 503 or 500, and an operator would otherwise see nothing at all."""
        text = f"{type(error).__name__}: {one_line(error)}"
        if text not in self._store_errors and len(self._store_errors) < 32:
            self._store_errors.add(text)
            where = escaped(str(self.store.path))
            _log.error("tracekit receiver: the store at %s refuses: %s", where, text)

    def _acknowledge(self, batch: list[Ticket], clashes: SpanIdClashes | None) -> None:
        self.committed += sum(t.size for t in batch)
        for ticket in batch:
            ticket.finish()
        self._written(batch)
        if clashes is not None:  # the exporter was told OK: the operator is told what was lost
            ids = f"span id {clashes.span_id} of trace {clashes.trace_id}"
            count = f"{clashes.noted} such id{'s' if clashes.noted > 1 else ''} in this batch"
            self._span_id_clashes.warn(ids, count)


def _connection_and_address(client: str) -> tuple[str, str]:
    """``ipv4:10.0.0.7:51234`` and ``ipv4:10.0.0.7``."""
    return client, client_address(client)


def _counted(ticket: Ticket) -> dict[str, int]:
    """What ``ticket`` adds to the records queued by its connection and by its address (once,
    for a ticket of no known client)."""
    return dict.fromkeys(_connection_and_address(ticket.client), ticket.size)


def _merged(batch: list[Ticket]) -> tuple[SpanRows, list[LogRecordData]]:
    """One transaction's worth of rows from several requests."""
    rows = SpanRows()
    for ticket in batch:
        rows.extend(ticket.spans)
    return rows, [r for t in batch for r in t.logs]


class _RetentionRunner:
    """Runs retention one short chunk at a time between write batches."""

    def __init__(
        self,
        store: Store,
        retention: Retention | None,
        interval: float,
        quiesce: Callable[[], AbstractContextManager[object]],
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval
        self.quiesce = quiesce
        self._next = time.monotonic()
        self._size_checked = self._next  # when the store's size was last measured
        self._over_size = False
        self._steps: Iterator[int] | None = None
        self._reported = ""  # the last failure logged: each problem is said once

    @property
    def idle(self) -> bool:
        """No retention pass in progress."""
        return self._steps is None

    @property
    def due(self) -> bool:
        """A pass is in progress or should start now."""
        if self.retention is None:
            return False
        return self._steps is not None or time.monotonic() >= self._next or self._past_max_size()

    def _past_max_size(self) -> bool:
        """Whether the store has outgrown ``max_bytes``, measured once a second: waiting for the
        next pass, a busy collector took a 10 MB store to 66 MB in 20 s, and kept it there."""
        if self.retention is None or self.retention.max_bytes is None:
            return False
        now = time.monotonic()
        if now - self._size_checked >= _SIZE_CHECK_INTERVAL:
            self._size_checked = now
            try:
                self._over_size = self.store.used_bytes() > self.retention.max_bytes
            except Exception:  # the writer thread must go on writing; a pass says what failed
                self._over_size = False
        return self._over_size

    def step(self) -> None:
        """Advance the current pass by one chunk, or start a pass when one is due."""
        if self.retention is None or not self.due:
            return
        if self._steps is None:
            self._next = time.monotonic() + self.interval
            self._over_size = False
            self._steps = self.store.retention_steps(self.retention, quiesce=self.quiesce)
        try:
            next(self._steps)
        except StopIteration:
            self._steps = None
        except Exception as error:  # whatever it is, the writer thread must go on writing
            self._steps = None
            self._report(error)

    def _report(self, error: Exception) -> None:
        """Log a failed pass, once per distinct problem (passes run every minute)."""
        problem = f"{type(error).__name__}: {one_line(error)}"
        if problem != self._reported:
            self._reported = problem
            _log.warning("tracekit receiver: retention failed, ingest goes on: %s", problem)
