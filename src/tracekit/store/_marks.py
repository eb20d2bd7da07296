"""Batch marks (``store._writer.BatchMark``): one ``meta`` row per running collector, named for it.

A collector removes its row when it stops, or its writer process does as it ends; a collector
killed together with its writer process (SIGKILL to the group at the end of a Kubernetes grace
period, the OOM killer, ``docker kill``) cannot, and its row stayed for good, one more each time.
So a row's key names its owner: the kernel's boot id, the PID namespace, the collector's process
id and when that process started. A writer process starting removes the rows whose owner is
known to be gone: same boot and namespace, and no process of that id, or one started at another
time (the id was reused). A row it cannot judge (another machine or container, written by a
tracekit before this, a process it may not look at) is kept: one row costs nothing, and another
collector's row, removed while it runs, may make it write a batch twice.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterable
from contextlib import closing, suppress
from pathlib import Path

from tracekit.store._connection import connect
from tracekit.store._locking import exclusive

PREFIX = "written_batch "
_PID_MAX = 4_194_304  # Linux's highest (pid_max's limit)


def new_mark() -> str:
    """A key for this process's batch mark, naming it as its owner when it can be named."""
    owner = _owner(os.getpid())
    return f"{PREFIX}{secrets.token_hex(8)}" + (f" {owner}" if owner else "")


def delete_marks(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
    """Delete the marks ``keys`` on ``conn``, a write under the store's lock."""
    with exclusive(conn):
        conn.executemany("DELETE FROM meta WHERE key = ?", [(key,) for key in keys])


def delete_mark(path: str, key: str) -> None:
    """Delete the mark ``key`` from the store at ``path`` (one try; a store locked past the busy
    timeout, damaged, or whose lock file cannot be opened keeps a row of no harm)."""
    with suppress(sqlite3.Error, OSError), closing(connect(path)) as conn:
        delete_marks(conn, [key])


def forget_marks_of_the_gone(path: str) -> None:
    """Delete the marks in the store at ``path`` whose owner is known to be gone (one try)."""
    with suppress(sqlite3.Error, OSError), closing(connect(path)) as conn:
        keys = conn.execute("SELECT key FROM meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall()
        delete_marks(conn, [str(key) for (key,) in keys if _gone(str(key))])


def _owner(pid: int) -> str | None:
    """``boot-id pid:[namespace] pid start-ticks`` of process ``pid``, or None."""
    started = _start_ticks(pid)
    here = _here()
    return None if started is None or here is None else f"{here} {pid} {started}"


def _here() -> str | None:
    """This boot of the kernel and this PID namespace, or None where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot} {namespace}"


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command's name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _gone(key: str) -> bool:
    """Whether the owner named in ``key`` is known to have ended."""
    parts = key.split(" ")
    if len(parts) != 6 or f"{parts[2]} {parts[3]}" != _here() or not parts[4].isdigit():
        return False
    pid = int(parts[4][:8])
    if not 1 < pid <= _PID_MAX:
        return False
    try:
        os.kill(pid, 0)  # asks, sends nothing
    except ProcessLookupError:
        return True
    except OSError:  # another user's: alive
        return False
    started = _start_ticks(pid)
    return started is not None and started != parts[5]
