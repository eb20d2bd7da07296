"""Every commit and checkpoint tracekit makes on a store holds the store's lock file.

SQLite before 3.51.3 (Debian 12 has 3.40.1) can corrupt a WAL database when a checkpoint starts
as another connection's commit starts the WAL over (sqlite.org/wal.html#walresetbug). A stress of
a writer, two checkpointers and retention in separate processes (``tools/store_wal_stress.py``)
corrupted the file in about half of its 4-minute runs on 3.40.1. The lock keeps tracekit's own
commits and checkpoints apart; these tests check that each one takes it, and that it waits for
a holder in another process and gives up as SQLite's busy timeout does.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conditions import wait_for
from tests.store.test_wal_bound import BOUND, batch

from tracekit.store import Store
from tracekit.store import _connection as connection_module
from tracekit.store._locking import StoreConnection, StoreLock
from tracekit.store._marks import delete_mark, forget_marks_of_the_gone
from tracekit.store._process import WalCopier
from tracekit.store._retention import Retention

# What writes the file or its WAL: a transaction, a change, a checkpoint, a vacuum, the schema
_WRITES = re.compile(
    r"\s*(BEGIN IMMEDIATE|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|VACUUM"
    r"|PRAGMA\s+(wal_checkpoint|incremental_vacuum|user_version\s*=|journal_mode\s*=))",
    re.IGNORECASE,
)


def _is_temporary(statement: str) -> bool:
    """A statement on the connection's own temp tables (never in the file or the WAL)."""
    return bool(re.search(r"\bTEMP\b|\btemp\.", statement))


@pytest.fixture
def unlocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The writing statements tracekit's connections run without the store's lock held."""
    found: list[str] = []
    open_connection = connection_module._connect

    def watched(target: str, *, uri: bool) -> sqlite3.Connection:
        conn = open_connection(target, uri=uri)
        assert isinstance(conn, StoreConnection)

        def check(statement: str) -> None:
            lock = conn.store_lock
            held = lock is not None and lock._depth > 0
            if _WRITES.match(statement) and not _is_temporary(statement) and not held:
                found.append(statement.strip().splitlines()[0][:80])

        conn.set_trace_callback(check)
        return conn

    monkeypatch.setattr(connection_module, "_connect", watched)
    yield found


def test_every_write_and_checkpoint_of_a_store_holds_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unlocked: list[str]
) -> None:
    """Creating a store, writing spans (their strings interned on a connection of their own),
    bounding the WAL, the collector's WAL copier, retention by age and by size (deletes, a
    reclaim of strings, the vacuum and its checkpoint) and batch marks: each was a commit or a
    checkpoint another connection's could meet."""
    monkeypatch.setattr("tracekit.store._writer.WAL_BOUND_BYTES", BOUND, raising=False)
    monkeypatch.setattr("tracekit.store._process.COPY_EVERY", 0.01)
    path = tmp_path / "s.db"
    copier: WalCopier | None = None
    with Store(path) as store:
        for number in range(40):
            store.write_spans(batch(number))
        copier = WalCopier(str(path))
        wait_for(lambda: _wal_frames_copied(path), timeout=10)
        store.forget_mark("tracekit-mark-gone")
        deleted = store.apply_retention(Retention(max_bytes=200_000))
        assert deleted > 0 and store.count_spans() < 40 * 200
        assert store.apply_retention(Retention(max_age_ns=0)) > 0
    copier.close()
    delete_mark(str(path), "tracekit-mark-1")
    forget_marks_of_the_gone(str(path))
    assert unlocked == []


def _wal_frames_copied(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return busy == 0 and frames == copied


def test_the_check_itself_finds_a_write_made_without_the_lock(
    tmp_path: Path, unlocked: list[str]
) -> None:
    """The check above can fail: a store connection's own write outside the lock is named."""
    with Store(tmp_path / "s.db") as store:
        store.write_spans(batch(0))
        store._writer_side().conn.execute("DELETE FROM meta WHERE key = 'nothing'")
    assert unlocked == ["DELETE FROM meta WHERE key = 'nothing'"]


def _hold_in_another_process(lock_file: str) -> subprocess.Popen[str]:
    """A process holding ``lock_file``'s flock until its standard input closes."""
    script = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, lock_file],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _waiting_in_lock(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "_take" and frame.f_code.co_filename.endswith("_locking.py"):
            return True
        frame = frame.f_back
    return False


def _in_thread(action: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(action()), daemon=True)
    thread.start()
    return thread, done


def test_a_commit_waits_while_another_process_holds_the_lock_then_lands(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.write_spans(batch(0))
        _second_batch_waits_for_a_holder(store)


def test_a_lock_file_removed_while_open_is_taken_where_other_writers_take_it(
    tmp_path: Path,
) -> None:
    """An empty file never written to looks stale, and a clean-up may remove it while a service
    writes. Writers that start after create it again: a connection that kept locking the file
    it opened first, gone from the folder, committed beside them (in 9 ms, while the new file
    was held)."""
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.write_spans(batch(0))
        os.remove(f"{path}-lock")
        _second_batch_waits_for_a_holder(store)


def test_a_lock_file_replaced_by_what_cannot_be_opened_keeps_the_one_held(
    tmp_path: Path,
) -> None:
    """A folder where the removed lock file was: no writer can start, and those running keep
    locking the file they hold. Taking the lock failed every write instead, and the checkpoints
    of the WAL's bound after a batch's commit (a committed batch said to have failed)."""
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.write_spans(batch(0))
        os.remove(f"{path}-lock")
        os.mkdir(f"{path}-lock")
        store.write_spans(batch(1))
        assert store.count_spans() == 400


def _second_batch_waits_for_a_holder(store: Store) -> None:
    """Another process takes the store's lock file: a batch written meanwhile waits for it to
    let go, then lands."""
    holder = _hold_in_another_process(f"{store.path}-lock")
    try:
        thread, done = _in_thread(lambda: store.write_spans(batch(1)))
        wait_for(lambda: _waiting_in_lock(thread), timeout=10)
        assert done == [] and Store(store.path).count_spans() == 200
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    thread.join(10)
    assert done == [None] and store.count_spans() == 400


def test_a_lock_held_past_the_wait_is_a_busy_error_not_a_hang(tmp_path: Path) -> None:
    """flock itself never gives up: a holder stopped with SIGSTOP would hang every writer for
    good. Past its wait a taker gets SQLite's own busy error, which callers already retry or
    report."""
    path = tmp_path / "s.db"
    Store(path).create()
    holder = _hold_in_another_process(f"{path}-lock")
    try:
        with (
            pytest.raises(sqlite3.OperationalError, match="database is locked"),
            StoreLock(str(path)).held(0.05),
        ):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    with StoreLock(str(path)).held(0.05):
        pass


def test_two_connections_of_one_process_keep_each_other_out(tmp_path: Path) -> None:
    """flock belongs to the open file description: each connection opens the lock file itself,
    so a second connection in the same process waits too (the collector's writer and its WAL
    copier are two threads of one process)."""
    path = tmp_path / "s.db"
    Store(path).create()
    first, second = StoreLock(str(path)), StoreLock(str(path))
    with first.held(1.0):
        with (
            pytest.raises(sqlite3.OperationalError, match="database is locked"),
            second.held(0.05),
        ):
            pass
        with first.held(0.05):  # reentrant on its own connection
            pass
    with second.held(0.05):
        pass


def test_a_store_dropped_unclosed_leaves_no_descriptor_of_the_lock_file(tmp_path: Path) -> None:
    """sqlite3 closes a connection nothing refers to, without calling its ``close``: each Store
    written to and dropped unclosed (``Store(path).write_spans(...)`` in a script's loop) left two
    descriptors of the lock file open, 200 after 100 of them, until the process ran out."""
    path = tmp_path / "s.db"
    for start in range(3):
        Store(path).write_spans(batch(start))
    gc.collect()
    lock_file = f"{path}-lock"
    assert [fd for fd in os.listdir("/proc/self/fd") if _names(fd, lock_file)] == []
    assert Store(path).count_spans() == 600


def _names(fd: str, file: str) -> bool:
    with contextlib.suppress(OSError):  # closed since the listing
        return os.readlink(f"/proc/self/fd/{fd}") == file
    return False


def test_the_lock_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "s.db"
        with Store(path) as store:
            store.write_spans(batch(0))
        assert oct(os.stat(f"{path}-lock").st_mode & 0o777) == "0o600"
    finally:
        os.umask(old)
    fd = os.open(f"{path}-lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one holds it once writes are done
    finally:
        os.close(fd)
