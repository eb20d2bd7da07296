"""Stress a store the way a busy collector does, then check the file: SQLite's WAL-reset bug.

``python tools/store_wal_stress.py [--seconds 240] [--without-lock] [FILE]``

Each in a process of its own, through tracekit's own code: two services writing a few spans at a
time as the store exporter does (SQLite's automatic checkpoints in their commits), two
checkpointers as the collector's WAL copier and WAL bound run them (PASSIVE in a loop, every
50th a TRUNCATE that waits for no one), retention cutting the store back to a small
``max_bytes`` (deletes, incremental vacuum, its checkpoint) and a reader. At the end ``PRAGMA
integrity_check``; exit 1 when the file is damaged.

``--without-lock`` turns the store's lock file off (``tracekit.store._locking``), for a SQLite
without the fix (3.7.0 to 3.51.2, see docs/store.md). The race is rare: on Debian 12's 3.40.1,
3 of 6 four-minute runs of this load made with bare ``sqlite3`` calls ended in "database disk
image is malformed"; this script, without the lock, has not hit it in 9 such runs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit.store._connection import checkpoint, connect, truncate_checkpoint
from tracekit.store._locking import StoreLock
from tracekit.store._retention import Retention


def _spans(count: int) -> list[SpanRecord]:
    now = time.time_ns()
    trace = f"{random.getrandbits(128):032x}"
    return [
        SpanRecord(
            trace_id=trace,
            span_id=f"{random.getrandbits(64):016x}",
            parent_span_id=None,
            service="orders",
            name=f"GET /orders/{{id}} {random.randint(0, 40)}",
            kind="SERVER",
            start_unix_nano=now,
            end_unix_nano=now + 1_000_000,
            attributes={
                "correlation.id": f"c-{random.getrandbits(40)}",
                "body": random.randbytes(random.randint(25, 1500)).hex(),  # pages of their own
            },
        )
        for _ in range(count)
    ]


def _writer(path: str, stop: Event) -> None:
    with Store(path) as store:
        while not stop.is_set():
            store.write_spans(_spans(random.randint(1, 5)))


def _checkpointer(path: str, stop: Event) -> None:
    conn, turn = connect(path), 0
    while not stop.is_set():
        with contextlib.suppress(sqlite3.OperationalError):
            if turn % 50 == 0:
                truncate_checkpoint(conn, wait_ms=0)
            else:
                checkpoint(conn)
        turn += 1


def _retention(path: str, stop: Event) -> None:
    with Store(path) as store:
        while not stop.is_set():
            time.sleep(0.05)
            with contextlib.suppress(sqlite3.OperationalError):
                store.apply_retention(Retention(max_bytes=2_000_000))


def _reader(path: str, stop: Event) -> None:
    with Store(path) as store:
        while not stop.is_set():
            store.count_spans()
            time.sleep(0.01)


def _run(role: Callable[[str, Event], None], path: str, stop: Event, unlocked: bool) -> None:
    if unlocked:
        StoreLock.held = _no_lock  # type: ignore[method-assign,assignment]
    role(path, stop)


@contextlib.contextmanager
def _no_lock(_lock: StoreLock, _wait_s: float) -> Iterator[None]:
    yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="the store to make (default: a temporary one)")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--without-lock", action="store_true")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tracekit-stress-")
    path = args.file or str(Path(folder) / "stress.db")
    Store(path).create()
    stop = mp.get_context("spawn").Event()
    roles = (_writer, _writer, _checkpointer, _checkpointer, _retention, _reader)
    processes = [
        mp.get_context("spawn").Process(target=_run, args=(r, path, stop, args.without_lock))
        for r in roles
    ]
    for process in processes:
        process.start()
    time.sleep(args.seconds)
    stop.set()
    for process in processes:
        process.join(60)
    try:
        found = connect(path).execute("PRAGMA integrity_check").fetchall()[:5]
    except sqlite3.DatabaseError as error:
        found = [(str(error),)]
    print(f"SQLite {sqlite3.sqlite_version}, lock {'off' if args.without_lock else 'on'}: {found}")
    return 0 if found == [("ok",)] else 1


if __name__ == "__main__":
    sys.exit(main())
