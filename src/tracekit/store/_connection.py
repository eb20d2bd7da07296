"""Opening SQLite connections for one writer and many readers across processes."""

from __future__ import annotations

import errno
import logging
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tracekit._utf8 import escaped, escaped_line
from tracekit.store._locking import (
    BUSY_TIMEOUT_MS,
    LOCK_SUFFIX,
    StoreConnection,
    exclusive,
    file_of,
)
from tracekit.store._schema import (
    SCHEMA_VERSION,
    NotAStoreError,
    holds_other_tables,
    migrate,
    schema_version,
)

T = TypeVar("T")

_log = logging.getLogger("tracekit")

# Span attributes and log bodies are private: the file (and so SQLite's -wal and -shm, which it
# creates with the file's mode) is the owner's alone, and so is every folder tracekit creates.
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
INCREMENTAL = 2  # PRAGMA auto_vacuum's number for INCREMENTAL
GENERATION = "SELECT value FROM meta WHERE key = 'generation'"  # see _reclaim
# journal_size_limit keeps the WAL file from staying huge after a burst.
_WRITE_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",  # WAL + NORMAL: a commit survives a process crash (kill -9)
    "PRAGMA journal_size_limit = 67108864",
    "PRAGMA cache_size = -16000",
    "PRAGMA temp_store = MEMORY",
)

# POSIX drops every lock a process holds on a file when the process closes any descriptor of it.
# The descriptor ``create_private`` opens is closed again, so no SQLite connection of this
# process may open the file meanwhile: its locks would silently vanish (another process could
# then delete the WAL under it). Connections opened before cannot exist: the file is new.
_descriptors = threading.Lock()


def open_writer(path: Path) -> sqlite3.Connection:
    """A connection that may write: creates the file and schema, WAL, incremental auto-vacuum.

    On a full disk SQLite says ``disk I/O error`` (it cannot make the ``-shm`` file), which
    reads as failing hardware: that is ``OSError`` (ENOSPC) instead."""
    try:
        return _open_writer(path)
    except sqlite3.OperationalError as error:
        if _said_of_no_room(error) and _no_room_left(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
        raise


def _said_of_no_room(error: sqlite3.OperationalError) -> bool:
    name = getattr(error, "sqlite_errorname", None) or ""
    return name.startswith("SQLITE_IOERR") or name in ("SQLITE_FULL", "SQLITE_CANTOPEN")


def _no_room_left(path: Path) -> bool:
    """Whether the store's file system has no block (or, where it counts them, no inode) left
    for this user: the file system of the file a symbolic link names, where SQLite writes."""
    try:
        status = os.statvfs(path.resolve().parent)
    except OSError:
        return False
    return status.f_bavail == 0 or (status.f_files > 0 and status.f_favail == 0)


def _open_writer(path: Path) -> sqlite3.Connection:
    create_private(path)
    require_a_file(path)
    _refuse_read_only_file_system(path)
    conn = _connect(str(path), uri=False)
    try:
        with exclusive(conn):  # what follows may write (see _locking)
            _prepare_writer(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare_writer(conn: sqlite3.Connection, path: Path) -> None:
    # TRACEKIT_STORE pointed at the app's own database must not turn it into a store: vacuumed,
    # switched to WAL, tracekit's tables added to it.
    if retry_busy(lambda: holds_other_tables(conn)):
        raise NotAStoreError("not a tracekit store: the file holds another database's tables")
    if schema_version(conn) == 0:  # (on a store, it would only wait for another writer's lock)
        _vacuum_incrementally(conn)
    retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
    for pragma in _WRITE_PRAGMAS:
        conn.execute(pragma)
    _say_if_upgraded(path, retry_busy(lambda: migrate(conn)))
    retry_busy(lambda: _check_writable(conn))
    retry_busy(lambda: _number_generations_apart(conn))
    _refuse_files_left_meanwhile(path)


def _say_if_upgraded(path: Path, found: int) -> None:
    """Say, once, that this writer numbered an older store up: every tracekit of the older
    schema still writing it (a collector, a service's store exporter) fails its writes as
    "newer" (at once, or when it opens the store again), and its operator, looking at this
    newer collector, would otherwise see no cause."""
    if 0 < found < SCHEMA_VERSION:
        _log.warning(
            "tracekit: upgraded store %s from schema %d to %d: a tracekit of schema %d still"
            " writing it (a collector, a service's store exporter) cannot write it any more,"
            " at once or when it opens it again; upgrade it too",
            escaped(str(path)), found, SCHEMA_VERSION, found,
        )  # fmt: skip


def _refuse_files_left_meanwhile(path: Path) -> None:
    """``_refuse_foreign_files`` again, now that SQLite has opened its ``-wal`` and ``-shm``:
    one another user made in the moment since ``create_private`` looked gets no span."""
    _refuse_foreign_files(Path(os.path.realpath(path)))


def _refuse_read_only_file_system(path: Path) -> None:
    """Raise ``OSError`` (EROFS) for a store on a read-only file system (a volume mounted
    ``:ro``): SQLite said ``attempt to write a readonly database`` or ``unable to open database
    file``, as for a file whose mode forbids writing."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


def _number_generations_apart(conn: sqlite3.Connection) -> None:
    """Move a store whose ids were never reclaimed (generation 0) to a random generation.

    Writers cache string and resource ids with the generation they came from (``_reclaim``).
    A file replaced at the store's path (rotated, restored, deleted and created again) while a
    process had its connections closed (``Store.close``, a ``fork()``) is opened again by path;
    at the same generation, 0 for every new store, ids cached for the old file were written
    into the new one and read there as other strings. Apart, the new file's generation tells
    the writer that every cached id is stale. For a store already at 0 this costs its other
    writers one encoding again, as a reclaim would.
    """
    row = conn.execute(GENERATION).fetchone()
    if row is not None and row[0] == 0:
        conn.execute(
            "UPDATE meta SET value = (random() & 4611686018427387903) + 1"
            " WHERE key = 'generation' AND value = 0"
        )


def _vacuum_incrementally(conn: sqlite3.Connection) -> None:
    """Make a file that holds no store yet give freed pages back when asked (INCREMENTAL).

    Size retention needs the file to shrink again, which FULL would do on every commit.
    auto_vacuum takes effect at once only before the first table exists; a file that had one
    (created and dropped before tracekit came) is rewritten into the mode by VACUUM.
    """
    retry_busy(lambda: conn.execute("PRAGMA auto_vacuum = INCREMENTAL"))
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        retry_busy(lambda: conn.execute("VACUUM"))


def _check_writable(conn: sqlite3.Connection) -> None:
    """Raise ``sqlite3.OperationalError`` now if the file cannot be written.

    SQLite opens a file it may not write (mode 0400, a read-only mount) read-only without a
    word, and reads work: only the first write would fail, and every one after it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE meta SET value = value WHERE key = 'generation'")
    finally:
        conn.execute("ROLLBACK")


class StoreRemovedError(sqlite3.OperationalError):
    """The store file was removed, or replaced by another, while a writer had it open."""


def file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path`` (None when there is none)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def create_private(path: Path) -> None:
    """Create ``path`` (empty: SQLite makes it a database) 0600 and missing folders 0700.

    The modes are set explicitly after creation, so they hold whatever the umask; an existing
    file or folder keeps the mode its owner gave it. A symlink to a file not there yet has that
    file created so (SQLite would create it through the link with the umask's mode), unless
    another user left it in a shared folder (``PermissionError``, see ``_refuse_foreign_link``);
    so is a file another user left there in the store's place (``_refuse_foreign_files``).
    """
    _refuse_foreign_link(path)
    target = Path(os.path.realpath(path))
    _create_private_folders(target.parent)
    _refuse_foreign_files(target)
    with _descriptors:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:  # there already, or made since the look above
            _refuse_foreign_files(target)
            return
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        finally:
            os.close(fd)


_NOT_FILES = (
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def require_a_file(path: Path) -> None:
    """Raise ``OSError`` when ``path`` is a device, a named pipe or a socket
    (``FileNotFoundError`` when nothing is there; SQLite's own error names a folder).

    SQLite opens whatever is at the path. Run as root on a disk device whose first bytes are
    zero (an ext4 partition's are), it wrote a database header over the file system's
    superblock; beside /dev/null it created /dev/null-journal.
    """
    mode = os.stat(path).st_mode
    for test, kind in _NOT_FILES:
        if test(mode):
            raise OSError(errno.EINVAL, f"{kind}, not a file", str(path))


def _refuse_foreign_link(path: Path) -> None:
    """Raise ``PermissionError`` when ``path``, or a folder on the way to it, is a symlink
    another user left in a shared folder (sticky and writable by all, as /tmp) that is not
    theirs either; so too on the way to where this user's own links point.

    That is the link the kernel's ``fs.protected_symlinks`` does not follow, wherever it
    stands in the path; resolved here (realpath reads links without following them), it made
    this user create the file another user named, wherever this user may write.
    """
    # Not normalised: in "link/../tracekit.db" the kernel goes through the link, then up from
    # where it points, where abspath's "tracekit.db" would have seen no link at all.
    _refuse_foreign_links_on(path.absolute(), _MOST_LINKS_FOLLOWED)


# As many links as the kernel follows in one path before it gives up (ELOOP): a loop ends.
_MOST_LINKS_FOLLOWED = 40


def _refuse_foreign_links_on(absolute: Path, links_left: int) -> int:
    """``_refuse_foreign_link`` of ``absolute``, following at most ``links_left`` of this
    user's links; how many more may be followed after it."""
    for entry in [*reversed(absolute.parents[:-1]), absolute]:  # from the top down, no "/"
        try:
            link = os.lstat(entry)
        except OSError:
            return links_left  # nothing there yet, or unreadable: opening it says what is wrong
        if not stat.S_ISLNK(link.st_mode):
            continue
        if left_by_another_user(link, entry.parent):
            raise PermissionError(
                errno.EACCES,
                "a symlink another user left in a shared folder, not followed",
                str(entry),
            )
        links_left -= 1
        if links_left >= 0:  # this user's own link: the kernel goes on where it points
            links_left = _refuse_foreign_links_on(_pointed_at(entry), links_left)
    return links_left


def _pointed_at(link: Path) -> Path:
    """Where ``link`` points, as a path from the root (a relative link from its folder)."""
    try:
        return link.parent / os.readlink(link)
    except OSError:  # gone meanwhile: nothing there to check
        return link


# The store's file and SQLite's beside it: SQLite opens one it finds there as it is
_COMPANIONS = ("", "-wal", "-shm", "-journal", LOCK_SUFFIX)


def _refuse_foreign_files(target: Path) -> None:
    """Raise ``PermissionError`` when the store file at ``target``, or a ``-wal``, ``-shm`` or
    ``-journal`` file beside it, is one another user left in a shared folder.

    That is the file the kernel's ``fs.protected_regular`` keeps a writer from opening (off
    on many hosts and in containers, as ``fs.protected_symlinks`` is). SQLite writes into
    whatever it finds: spans and log bodies went into a file the other user reads (a ``-wal``
    of theirs, mode 0666, took every commit), and their ``-wal`` could bring in rows of theirs.
    """
    for suffix in _COMPANIONS:
        file = target.with_name(target.name + suffix)
        try:
            status = os.lstat(file)
        except OSError:
            continue  # nothing there: SQLite creates it with the store's mode and owner
        if left_by_another_user(status, target.parent):
            raise PermissionError(
                errno.EACCES, "a file another user left in a shared folder, not written", str(file)
            )


def left_by_another_user(status: os.stat_result, folder: Path, user: int | None = None) -> bool:
    """Whether an entry of ``folder`` is another user's than ``user`` (default: this process's)
    in a folder shared with every user (sticky and writable by all, as /tmp), whose owner is
    not that user either: the entries the kernel's ``fs.protected_*`` settings keep a process
    from following or writing."""
    try:
        shared_folder = os.stat(folder)
    except OSError:
        return False
    mode = shared_folder.st_mode
    shared = mode & stat.S_ISVTX and mode & stat.S_IWOTH
    owner = os.geteuid() if user is None else user
    return bool(shared) and status.st_uid not in (owner, shared_folder.st_uid)


def _refuse_companions_of_another_user(file: Path) -> None:
    """Raise ``PermissionError`` when a ``-wal``, ``-shm`` or ``-journal`` beside the store
    ``file`` in a shared folder is not the store owner's.

    SQLite reads one it finds there as the store's own: a ``-wal`` another user left beside a
    store in /tmp had ``tracekit search`` list their requests in place of the owner's, and the
    last connection to close writes it into the file. The store itself may be another user's
    (root reading it): what is read is that user's alone.
    """
    owner = os.stat(file).st_uid
    for suffix in _COMPANIONS[1:]:
        companion = file.with_name(file.name + suffix)
        try:
            status = os.lstat(companion)
        except OSError:
            continue  # nothing there
        if left_by_another_user(status, file.parent, owner):
            raise PermissionError(
                errno.EACCES,
                "a file another user left in a shared folder, not read",
                str(companion),
            )


def _create_private_folders(folder: Path) -> None:
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(PRIVATE_FOLDER_MODE)
        except FileExistsError:  # another process made it first: its mode is its business
            continue
        created.chmod(PRIVATE_FOLDER_MODE)


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection for reading only; never creates the file (``FileNotFoundError`` if absent).

    Reading needs no write access. In a folder this user may not write, on a read-only file
    system, or on a full disk, SQLite cannot create the WAL's index (``-shm``); when there is no
    ``-wal`` file either, no writer has the store open and every commit is in the file, read as
    immutable (without locks: a writer that starts meanwhile could only disturb that one read).
    A ``-wal`` file there without a ``-shm`` is a copy taken while a writer had the store open
    (see ``_open_wal_copy``). Opened ``rw`` otherwise (SQLite falls back to reading a file it
    may not write), so that the last connection to close removes the WAL files.
    """
    require_a_file(path)
    if path.is_dir():  # (the CLI names a folder before it gets here)
        raise FileNotFoundError(str(path))
    file = path.resolve()
    _refuse_companions_of_another_user(file)
    # SQLite says only "unable to open database file" for a file it may not read
    if not os.access(file, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    conn = _connect(f"{file.as_uri()}?mode=rw", uri=True)
    try:
        schema_version(conn)  # the first read opens the WAL
    except sqlite3.OperationalError as error:
        conn.close()
        if error.sqlite_errorname not in _NO_SHM_HERE:
            raise
        if _has_wal(file):
            conn = _open_wal_copy(file)
        else:
            conn = _connect(f"{file.as_uri()}?mode=ro&immutable=1", uri=True)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _open_wal_copy(file: Path) -> sqlite3.Connection:
    """Read a store whose last commits are in a ``-wal`` file, where no ``-shm`` can be made.

    immutable=1 would skip the WAL and lose those commits. In exclusive locking mode SQLite
    keeps the WAL's index in this process's memory instead of ``-shm``; the locks it would take
    for that need a writable descriptor, so the "unix-none" VFS takes none. A writer keeps a
    ``-shm`` beside its ``-wal`` while it runs, so none has this copy open (as for immutable,
    one that starts meanwhile could only disturb the reads of this connection).
    """
    conn = _connect(f"{file.as_uri()}?mode=ro&vfs=unix-none", uri=True)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # before the first read builds the index
    return conn


# SQLite's words for "cannot make the -shm file": in a folder this user may not write
# (EACCES), on a read-only file system (EROFS: a backup mounted read-only, a ':ro' volume), and
# on a full disk (ENOSPC: it cannot write the new file's first bytes or give it its size, and
# said "disk I/O error").
_NO_SHM_HERE = (
    "SQLITE_READONLY_DIRECTORY",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR_SHMOPEN",
    "SQLITE_IOERR_SHMSIZE",
)


def _has_wal(file: Path) -> bool:
    return file.with_name(f"{file.name}-wal").exists()


def connect(path: str) -> sqlite3.Connection:
    """A plain connection to an existing store (no schema check), with the busy timeout."""
    return _connect(path, uri=False)


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    with _descriptors:
        conn = sqlite3.connect(
            target,
            uri=uri,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            factory=StoreConnection,
        )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.text_factory = _text
    return conn


def _text(raw: bytes) -> str:
    """A TEXT value; bytes that are not UTF-8 (a damaged page, another tool's write) become
    U+FFFD instead of failing the whole query, as sqlite3's default does."""
    return raw.decode("utf-8", "replace")


def one_line(error: BaseException) -> str:
    """An error's message on one line, at most 200 characters, for a log line: what a terminal
    would act on in it (an escape sequence or a bell in the store's path) is escaped."""
    return escaped_line(error, 200)


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether an error means another connection holds the lock (worth retrying)."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


def retry_busy(action: Callable[[], T], attempts: int = 8) -> T:
    """Run ``action``, retrying with jittered backoff while the database is locked.

    busy_timeout already waits inside SQLite; this covers the cases it cannot (a lock held past
    the timeout by a long checkpoint, or SQLITE_BUSY returned without waiting to avoid deadlock).
    """
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or attempt == attempts - 1:
                raise
            time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def wal_path(conn: sqlite3.Connection) -> str:
    """The WAL file of ``conn``'s store, where SQLite keeps it: beside the file a symbolic link
    to the store names, not beside the link."""
    return file_of(conn) + "-wal"


# How long a checkpoint that waits for no one waits for the store's lock: the commit under way
LOCK_WAIT_FLOOR_MS = 250


def checkpoint(conn: sqlite3.Connection, mode: str = "PASSIVE") -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(mode)`` under the store's lock (see ``_locking``): its busy, log
    and checkpointed counts. Raises the lock's busy error when a commit holds it too long."""
    with exclusive(conn, LOCK_WAIT_FLOOR_MS):
        busy, log, checkpointed = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return busy, log, checkpointed


def truncate_checkpoint(conn: sqlite3.Connection, wait_ms: int) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` waiting at most ``wait_ms`` for the writer and the
    reads in flight (its busy, log and checkpointed counts); the busy timeout is restored."""
    with exclusive(conn, max(wait_ms, LOCK_WAIT_FLOOR_MS)):
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            return checkpoint(conn, "TRUNCATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
