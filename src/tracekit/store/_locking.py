"""One commit or checkpoint at a time on a store, across every connection and process.

SQLite from 3.7.0 to 3.51.2 (Debian 12 ships 3.40.1) has the WAL-reset bug
(sqlite.org/wal.html#walresetbug): a checkpoint that starts just as another connection's commit
starts the WAL over can miss that, and a later checkpoint then skips part of a transaction; the
file is corrupt ("database disk image is malformed"). A store is written by several connections
at once (the collector's writer process, its WAL copier and retention; services exporting to it
directly, whose commits checkpoint too), so tracekit takes an exclusive ``flock`` on a file
beside the store, ``<store>-lock``, around each of its write transactions (and the automatic
checkpoint SQLite runs in the commit) and each checkpoint it asks for. Readers take nothing.

``flock`` belongs to the open file description: each connection opens the file itself, so its
lock also keeps out the other connections of its own process, each thread in turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tracekit._utf8 import escaped

LOCK_SUFFIX = "-lock"
BUSY_TIMEOUT_MS = 5000  # as long as a connection waits for SQLite's own locks
_FIRST_PAUSE_S = 0.0002
_LONGEST_PAUSE_S = 0.005


class StoreLock:
    """The exclusive ``flock`` on ``<file>-lock`` one connection takes; reentrant, and held by
    one thread at a time (threads sharing the connection wait for each other)."""

    def __init__(self, file: str) -> None:
        self.path = file + LOCK_SUFFIX
        self._threads = threading.RLock()
        self._depth = 0
        self._fd = -1
        self._pid = 0

    @contextmanager
    def held(self, wait_s: float) -> Iterator[None]:
        """Hold the lock in the block; ``sqlite3.OperationalError`` ("database is locked", as
        SQLite's own busy error, which callers retry) when it is not free within ``wait_s``."""
        if not self._threads.acquire(timeout=max(wait_s, 0.0)):
            raise self._busy()
        try:
            if self._depth == 0:
                self._take(time.monotonic() + wait_s)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _take(self, deadline: float) -> None:
        pause = _FIRST_PAUSE_S
        while True:
            fd = self._descriptor()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # flock has no timeout: a holder that stopped (SIGSTOP, a debugger) must cost a
                # busy error, as SQLite's own lock would, not a writer hung for good
                now = time.monotonic()
                if now >= deadline:
                    raise self._busy() from None
                time.sleep(min(pause, deadline - now))
                pause = min(2 * pause, _LONGEST_PAUSE_S)
                continue
            if self._still_at_path(fd) or not self._reopened():
                return

    def _still_at_path(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``path``: one removed (a clean-up of lock files
        that look stale) or replaced is one no connection opened since locks, so holding it
        keeps none of them out."""
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _reopened(self) -> bool:
        """Open the file at ``path`` in place of the one held (letting that go); False, holding
        it still, when that fails (a folder in its place, the store's folder gone): no writer
        can start then, and an error here would fail a checkpoint after its batch's commit."""
        try:
            fd = self._open()
        except OSError:
            return False
        self.close()
        self._fd, self._pid = fd, os.getpid()
        return True

    def _descriptor(self) -> int:
        """This process's descriptor of the lock file: one a fork() inherited shares the
        parent's open file description, and so its lock, so a child opens its own."""
        if self._fd < 0 or self._pid != os.getpid():
            self._fd, self._pid = self._open(), os.getpid()
        return self._fd

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        store = _status(self.path.removesuffix(LOCK_SUFFIX))
        mode = _lock_mode(store)
        try:
            fd = os.open(self.path, flags, mode)  # beside the store: see _connection
        except OSError as error:  # said of the store, "Is a directory" would name the wrong file
            name = escaped(os.path.basename(self.path))
            raise OSError(
                error.errno, f"its lock file {name}: {error.strerror}", self.path
            ) from None
        _made_like_the_store(fd, mode, store)
        return fd

    def _busy(self) -> sqlite3.OperationalError:
        return sqlite3.OperationalError(
            f"database is locked: another writer held {self.path} too long"
        )

    def close(self) -> None:
        """Close this process's descriptor (its lock, if held, goes with it)."""
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    # A connection dropped unclosed (a Store never closed) is closed by sqlite3, which does not
    # call StoreConnection.close: its lock's descriptor goes with the lock.
    __del__ = close


def _status(file: str) -> os.stat_result | None:
    try:
        return os.stat(file)
    except OSError:
        return None


def _lock_mode(store: os.stat_result | None) -> int:
    """Read and write for the owner, and for the group and for others where they may write the
    store: SQLite gives its ``-wal`` and ``-shm`` the store's mode, so the members of a group its
    owner shares it with (0660) write it, and take this lock. Who may only read the store may
    not hold its writers back."""
    if store is None:
        return 0o600
    group = 0o060 if store.st_mode & stat.S_IWGRP else 0
    others = 0o006 if store.st_mode & stat.S_IWOTH else 0
    return 0o600 | group | others


def _made_like_the_store(fd: int, mode: int, store: os.stat_result | None) -> None:
    """Give a lock file this user owns ``mode``, whatever the umask (and a store shared since
    the file was made); and, as root, the store's owner and group, as SQLite gives its ``-wal``
    and ``-shm``: a lock file root made beside a user's store refused the user's own writers."""
    status = os.fstat(fd)
    if status.st_uid != os.geteuid():
        return
    # a file system without modes or owners (vfat, some network mounts) refuses: the lock
    # works all the same
    with contextlib.suppress(OSError):
        if stat.S_IMODE(status.st_mode) != mode:
            os.fchmod(fd, mode)
        owner = None if store is None else (store.st_uid, store.st_gid)
        if status.st_uid == 0 and owner is not None and owner != (status.st_uid, status.st_gid):
            os.fchown(fd, *owner)


class StoreConnection(sqlite3.Connection):
    """A connection that carries its ``StoreLock`` (made at its first write)."""

    store_lock: StoreLock | None = None

    def close(self) -> None:
        if self.store_lock is not None:
            self.store_lock.close()
        super().close()


_making = threading.Lock()


def _lock_of(conn: StoreConnection) -> StoreLock:
    with _making:
        if conn.store_lock is None:
            conn.store_lock = StoreLock(file_of(conn))
        return conn.store_lock


def file_of(conn: sqlite3.Connection) -> str:
    """The file of ``conn``'s store, where SQLite keeps it: beside the file a symbolic link to
    the store names, not beside the link (its ``-wal``, ``-shm`` and ``-lock`` are there)."""
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


@contextmanager
def exclusive(
    conn: sqlite3.Connection, wait_ms: int = BUSY_TIMEOUT_MS
) -> Iterator[sqlite3.Connection]:
    """Hold the store's lock for a write or checkpoint on ``conn``, waiting at most
    ``wait_ms`` for it (a connection not opened by tracekit opens the lock file for the block)."""
    if isinstance(conn, StoreConnection):
        with _lock_of(conn).held(wait_ms / 1000):
            yield conn
        return
    lock = StoreLock(file_of(conn))
    try:
        with lock.held(wait_ms / 1000):
            yield conn
    finally:
        lock.close()


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock, rolled back if the block
    raises (``conn`` in autocommit mode)."""
    with exclusive(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
