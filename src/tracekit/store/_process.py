"""The store's writer in a process of its own, for the receiver.

In one Python process, threads that decode requests and a thread that inserts rows fight over
the GIL: sqlite3 releases it for every row it steps, and gets it back only when a decoding thread
lets go (up to the 5 ms switch interval later), so inserts slowed to a few thousand rows a second
while requests were being decoded (measured; see docs/store.md). A child process with its own
interpreter does the SQLite work while the parent decodes, and the two use both cores.

Rows travel pickled with protocol 5, which writes a bytearray as raw bytes (the default
protocol 4 goes through ``__reduce__`` and costs five times as much). The child only ever writes
what it is sent, in order, and answers each batch when it has committed it; the parent may send
the next batch before that answer arrives, so the child need not wait for the parent between
batches. It exits when the parent closes the pipe, or dies (the pipe then reads end-of-file), so
it never outlives it.

The child's commits never copy the WAL back into the file themselves: a thread of its own, on a
connection of its own, does (``WalCopier``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import signal
import socket
import sqlite3
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NoReturn

from tracekit.records import LogRecordData
from tracekit.store._connection import (
    checkpoint,
    connect,
    one_line,
    truncate_checkpoint,
    wal_path,
)
from tracekit.store._heap import map_large_buffers, trim
from tracekit.store._marks import delete_mark, forget_marks_of_the_gone, new_mark
from tracekit.store._rows import SpanRows
from tracekit.store._store import Store
from tracekit.store._writer import WAL_BOUND_BYTES, BatchMark, SpanIdClashes

_LARGE_BATCH = 4 * 1024 * 1024  # pickled bytes past which the writer trims its heap after
COPY_EVERY = 0.1  # seconds between the WAL copier's looks for frames to copy back
# Seconds the writer process may read nothing of a batch, or take to answer it, before it is taken
# for dead (stopped, hung): killed, and its batches written again by a new one. A write on a
# locked file takes at most about 45 s (SQLite's busy timeout, 5 s, over ``retry_busy``'s
# attempts). A batch larger than the pipe holds, part of it handed over, waits twice that at most.
ANSWER_TIMEOUT = 60.0
# Seconds a writer process with nothing left to write may take to end (it closes the store) at
# a stop before it is killed: everything it was sent is committed by then, so killing it loses
# nothing; one stopped or hung held the collector's stop 30 s more.
EXIT_TIMEOUT = 5.0


class WriterProcessError(RuntimeError):
    """The writer process failed to write a batch (it goes on with the next one)."""


class WriterProcessDied(WriterProcessError):
    """The writer process died: of the batches sent and not yet answered, the oldest
    ``committed`` were written (it died before answering them), the others are lost."""

    def __init__(self, text: str, committed: int = 0) -> None:
        super().__init__(text)
        self.committed = committed


class WriterProcessDamaged(WriterProcessError):
    """The writer process found the store file damaged: no retry will write this batch."""


def is_damage(error: BaseException | None) -> bool:
    """SQLite's word that the file itself is broken (``database disk image is malformed``,
    ``file is not a database``: the base ``DatabaseError``), in this process or the writer's;
    a busy, full or read-only store (``OperationalError``) or a refused row is not."""
    return type(error) is sqlite3.DatabaseError or isinstance(error, WriterProcessDamaged)


class WriterProcess:
    """Writes rows into the store at ``path`` from a child process (started on first use).

    Not thread-safe: one thread (the receiver's batching writer) uses it. Each ``send`` is
    answered by one ``receive``, in order.

    Batches are numbered, and each one's transaction records its number (a ``BatchMark`` under
    a key of this object's): when a child dies, the last number it committed tells which of the
    batches it had not answered were written, so that they are not written twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.ready = threading.Event()  # set once a child has opened the store and said so
        self._mark = new_mark()  # this collector's, in meta
        self._numbers = itertools.count(1)
        self._unanswered: deque[int] = deque()  # numbers of the batches sent, oldest first
        self._greeted = False  # the child running now said it opened the store
        self._abandoned = False  # stopping past its deadline, or stopped: no new child
        self._mark_left = False  # the last child was killed: its batch mark is still in meta
        self._sent_any = False  # a batch was sent: there may be a mark (none opens the store)

    def start(self) -> None:
        """Start the child now rather than on the first write (it takes a moment to import)."""
        if self._conn is None:
            self._spawn()

    def await_ready(self) -> None:
        """Wait until the child has opened the store (``ready``); ``WriterProcessDied`` if it
        never does."""
        self._connection()

    def write_rows(self, spans: SpanRows, logs: list[LogRecordData]) -> SpanIdClashes | None:
        """Write in one transaction in the child; returns once it has committed (with the span
        id clashes it noted, if any)."""
        self.send(spans, logs)
        return self.receive()

    def send(self, spans: SpanRows, logs: list[LogRecordData]) -> None:
        """Hand the child one batch to write in one transaction; ``receive`` tells how it went."""
        number = next(self._numbers)
        payload = pickle.dumps((number, spans, logs), protocol=5)
        conn = self._connection()
        self._unanswered.append(number)  # from here on it may be written, whatever follows
        self._sent_any = True
        try:
            conn.send_bytes(payload)
        except OSError as lost:  # it died, or read nothing for ANSWER_TIMEOUT (_send_timeout)
            self._kill()
            self._lost(lost)

    def receive(self) -> SpanIdClashes | None:
        """Wait for the answer to the oldest batch sent and not yet answered; returns the span
        id clashes its write noted, if any."""
        if self._conn is None:
            raise WriterProcessDied("the writer process died")
        try:
            if not self._conn.poll(ANSWER_TIMEOUT):
                self._kill()
                raise EOFError(f"the writer process answered nothing in {ANSWER_TIMEOUT:g} s")
            error, clashes = self._conn.recv()
        except (EOFError, OSError) as lost:
            self._lost(lost)
        self._unanswered.popleft()
        if error is not None:
            damaged, text = error
            raise (WriterProcessDamaged if damaged else WriterProcessError)(text)
        return SpanIdClashes(*clashes) if clashes is not None else None

    def _lost(self, cause: BaseException) -> NoReturn:
        self._kill()  # dead for sure before its marks are read: it commits nothing more
        self.close()  # the next send starts a new child
        committed = self._committed()
        self._unanswered.clear()
        raise WriterProcessDied("the writer process died", committed) from cause

    def _committed(self) -> int:
        """How many of the batches not answered (the oldest) the dead child had committed: it
        wrote them in order, each with its number; none when the mark cannot be read."""
        if not self._unanswered:
            return 0
        try:
            conn = connect(str(self.path))
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (self._mark,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return 0  # written again: logs may be stored twice, nothing is lost
        last = row[0] if row else 0
        return sum(1 for number in self._unanswered if number <= last)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._spawn()
        if not self._greeted:
            self._await_greeting()
        assert self._conn is not None  # (_lost raised otherwise)
        return self._conn

    def _spawn(self) -> None:
        if self._abandoned:
            raise WriterProcessDied("the stop's deadline passed before the writer committed it")
        context = multiprocessing.get_context("spawn")  # fork would copy our threads' locks
        parent_end, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(str(self.path), child_end, self._mark),
            name="tracekit-writer",
            daemon=True,
        )
        with _stop_signals_blocked():  # inherited: the child starts with them blocked
            self._process.start()
        child_end.close()  # so that the child alone holds it, and sees our end close
        _send_timeout(parent_end, ANSWER_TIMEOUT)
        self._conn = parent_end
        self._greeted = False

    def _await_greeting(self) -> None:
        """Wait for the child's first word, sent once it has opened the store: a receiver is
        ready to store only then (a batch sent earlier would wait for it all the same)."""
        assert self._conn is not None
        try:
            if not self._conn.poll(ANSWER_TIMEOUT):
                self._kill()
                raise EOFError(f"it did not open the store in {ANSWER_TIMEOUT:g} s")
            self._conn.recv()
        except (EOFError, OSError) as lost:
            self._lost(lost if str(lost) else EOFError(self._how_it_ended()))
        self._greeted = True
        self.ready.set()

    def _how_it_ended(self) -> str:
        """Why a child closed its pipe before its greeting (it is ending: reaped first)."""
        assert self._process is not None
        self._process.join(EXIT_TIMEOUT)
        code = self._process.exitcode
        if code is None:
            return "it closed its pipe before it opened the store"
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return f"it ended ({how}) before it opened the store"

    def abandon(self) -> None:
        """Give up on what the child has not committed (a stop's deadline passed): kill it, and
        start none again, so that whatever waits for it fails at once."""
        self._abandoned = True
        self._kill()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child after the write in progress (nothing is queued inside it), or kill it
        after ``timeout`` s."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout)
            self._kill()  # one that ignored the end of its pipe (stopped, hung) leaves no orphan
            self._process.join()
            # a child forgets its mark as it ends; one killed cannot
            self._mark_left = self._sent_any and self._process.exitcode != 0
            self._process = None

    def stop(self, timeout: float) -> None:
        """The last close: the child is given ``timeout`` s to end. One killed left its batch
        mark in ``meta``, needed no more: removed from here (one try, busy timeout included)."""
        self._abandoned = True
        self.close(timeout)
        if self._mark_left:
            delete_mark(str(self.path), self._mark)

    def _kill(self) -> None:
        """Take the child for dead: its pipe then reads end-of-file."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()  # SIGKILL: a stopped process ends too; SQLite rolls back


def importing_main_again() -> bool:
    """Whether this process is a child that multiprocessing spawned and that is still importing
    its parent's main module (the test multiprocessing's own refusal to start a process then
    makes): code run there that starts a writer process would start one more of itself."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _send_timeout(conn: Connection, seconds: float) -> None:
    """Make a send that cannot go on for ``seconds`` (the child reads nothing) fail rather than
    wait: a batch larger than the pipe holds is otherwise handed over to a stopped child for
    ever. Set on the socket itself (a Pipe is a socket pair), so it costs no batch anything."""
    whole, part = divmod(seconds, 1)
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as end:  # a copy
        end.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(whole), int(part * 1e6))
        )


# A terminal's Ctrl-C reaches the whole process group, systemd's stop every process of the
# service; the parent alone decides when writing stops.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread meanwhile (the parent's handlers still run in
    its other threads, or when unblocked). A child inherits the mask through fork and exec,
    so one that arrives while the child's interpreter starts waits for ``_serve`` to ignore
    it; before, the child died of it there, printing its KeyboardInterrupt traceback."""
    # multiprocessing starts its resource tracker with these blocked, then unblocks them:
    # started first, it leaves the mask alone while the child is spawned
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _serve(path: str, conn: Connection, mark: str) -> None:
    """The child: say None once the store is open, then write each batch received, answer
    (None, its span id clashes or None) or ((damaged, error text), None), until end-of-file."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # which discards one pending since the start
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    map_large_buffers()
    store = Store(path)
    copier = _copier(store, path)
    with suppress(OSError):  # (a parent already gone: the first read below ends us)
        conn.send(None)  # the greeting: ready to write
    forget_marks_of_the_gone(path)  # killed with their collectors, they could not
    while True:
        try:
            payload = conn.recv_bytes()
            # S301: the bytes come from our own parent over a private pipe, never from outside
            number, spans, logs = pickle.loads(payload)  # noqa: S301
        except (EOFError, OSError):
            break
        answer = _written(store, spans, logs, BatchMark(mark, number))
        try:
            conn.send(answer)
        except OSError:  # the parent is gone (a second Ctrl-C, killed): no one to answer
            break
        if len(payload) > _LARGE_BATCH:
            del spans, logs, payload
            trim()  # a big batch's memory goes back rather than stay with the writer
    if copier is not None:
        copier.close()
    with suppress(Exception):  # a clean end: no batch of ours is to be told apart any more
        store.forget_mark(mark)
    store.close()


def _written(
    store: Store, spans: SpanRows, logs: list[LogRecordData], mark: BatchMark
) -> tuple[object, object]:
    """Write one batch: the answer to send, (None, its span id clashes or None) or
    ((damaged, error text), None)."""
    try:
        clashes = store.write_rows(spans, logs, mark)
    except Exception as error:
        return (is_damage(error), f"{type(error).__name__}: {one_line(error)}"), None
    return None, None if clashes is None else tuple(clashes)


def _copier(store: Store, path: str) -> WalCopier | None:
    """A copier, and commits that leave the WAL to it; None, and commits that copy it as SQLite's
    do, when the store cannot be opened now (each batch's write then says why)."""
    try:
        store.create()  # the file exists, private, before another connection opens it
        copier = WalCopier(path)
    except Exception:  # whatever it is, the writes that follow report it
        return None
    store.leave_checkpoints_to_others()
    return copier


class WalCopier:
    """Copies committed WAL frames back into the store file, from a thread and connection of
    its own, every ``COPY_EVERY`` s.

    SQLite's commits do it themselves (its automatic checkpoint, past 1,000 frames), and the
    batch after waits for them: when a long read ended, for the whole WAL the read had held
    back. With 300 MB of it, the first commit after took 745 ms, and OpenTelemetry SDK exporters,
    whose queues overflow meanwhile, dropped spans. A PASSIVE checkpoint takes no write lock and
    waits for no one; it copies every 0.1 s's commits between batches, while the writer waits
    for the next. It holds the store's lock file while it copies (SQLite's WAL-reset bug, see
    ``_locking``), so a commit that arrives meanwhile waits for the copy: after a long read, for
    the copy of all the read held back.

    A WAL past its bound (``WAL_BOUND_BYTES``) whose frames are all copied is emptied too:
    commits cut it back only when the WAL starts over, so after a burst that long reads held
    back, a collector receiving nothing kept it whole (473 MB beside a 686 MB store).
    """

    def __init__(self, path: str) -> None:
        self._conn = connect(path)
        self._wal = Path(wal_path(self._conn))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracekit-wal-copier", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(COPY_EVERY):
            with suppress(sqlite3.Error, OSError):  # busy, a full disk, no WAL: next time
                busy, frames, copied = checkpoint(self._conn)
                if busy == 0 and frames == copied and self._wal.stat().st_size > WAL_BOUND_BYTES:
                    # nothing left to copy: takes the write lock only to empty the file, and
                    # gives up at once if a commit or a read is under way
                    truncate_checkpoint(self._conn, wait_ms=0)

    def close(self) -> None:
        """Stop copying and close the connection."""
        self._stop.set()
        self._thread.join()
        self._conn.close()
