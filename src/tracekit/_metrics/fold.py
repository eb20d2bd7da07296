"""Exited processes' multiprocess files folded into one file per kind.

prometheus-client's multiprocess mode gives each process files of its own
(``counter_<pid>.db``, ``histogram_<pid>.db``...) in ``PROMETHEUS_MULTIPROC_DIR``, and every
scrape reads them all. An exited process's counters and histograms are part of the totals, so
its files stayed: a server whose workers are recycled (gunicorn's ``--max-requests``) gathered
thousands, and a scrape of 1,000 took 20 s, past Prometheus' scrape timeout.

Here the values of the files of processes that have exited are added into ``<kind>_folded.db``
(a name prometheus-client's reader takes for one more process of that kind), and those files are
removed. Live gauges of exited processes (``livesum``, ``liveall``...) are removed, as
prometheus-client's ``mark_process_dead`` does; ``sum``, ``max`` and ``min`` gauges are folded
with their own arithmetic; ``all`` and ``mostrecent`` gauges are left as they are.

A fold holds an exclusive ``flock`` on ``tracekit-fold.lock`` in the directory, and tracekit's
readers a shared one, so no reader sees a fold half done. A fold is committed by one rename, of
its journal, which names the files it replaces and those it removes: a process killed before it
left the old files as they were (its new files, not named ``*.db``, are removed by the next
fold); one killed after left a journal that the next fold, or scrape, carries out before it reads
anything. Every value is counted once either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import operator
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from prometheus_client import mmap_dict
from prometheus_client.mmap_dict import MmapedDict

from tracekit._runtime.guard import report_once

__all__ = ["LOCK_FILE", "fold_exited", "fold_reused", "process_exited", "reading"]

LOCK_FILE = "tracekit-fold.lock"
_JOURNAL = "tracekit-fold.journal"
_NEW = ".new"  # a folded file being written: no reader globs it
_TAKEN = ".folding"  # a process's file a fold has taken: no process opens it, no reader globs it

# How the values of one key in several processes' files make one: as prometheus-client's
# reader combines them at a scrape.
_COMBINE: dict[str, Callable[[float, float], float]] = {
    "counter": operator.add,
    "histogram": operator.add,  # each bucket's own count (not cumulative) and the sum
    "summary": operator.add,
    "gauge_sum": operator.add,
    "gauge_max": max,
    "gauge_min": min,
}
_USED = struct.Struct("i")  # how much of a prometheus-client file is in use: its first field
_PROCESS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db((?:\.folding)?)")
_LIVE_GAUGE = re.compile(r"gauge_live[a-z]*")
_FOLDED_FILE = re.compile(r"(counter|histogram|summary|gauge_(?:sum|max|min))_folded\.db")

# Lock files held open in this process: a child forked meanwhile closes its copies, or it would
# hold the lock (flock's belongs to the open file, which the child shares) for its whole life,
# and wait for it forever as it folds at its start (``fold_reused``). ``_holding`` is held
# across a fork, so that no lock file is open then but not yet, or no longer, in ``_held``.
_held: set[int] = set()
_holding = threading.Lock()


def process_exited(pid: int) -> bool:
    """Whether no process ``pid`` exists (in this PID namespace). Another user's process exists;
    a number no process can have (``counter_99999999999999999999.db``) is no exited process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's; a number too large for a process
        return False
    return False


@contextlib.contextmanager
def reading(directory: str, fold: bool = False) -> Iterator[None]:
    """Hold ``directory`` shared while the block reads its files: no fold changes them
    meanwhile. ``fold``: first fold the exited processes' files, waiting for the readers and
    folds under way.

    A directory where the lock file cannot be made (read-only) is read without it; no process
    can fold there either."""
    with _lock_file(directory) as lock:
        try:
            if lock is not None and fold:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _fold_locked(directory)
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_SH)
        except OSError as error:  # (a file system without locks)
            report_once(f"locking {LOCK_FILE}", error)
        yield


def fold_exited(directory: str) -> None:
    """Fold the files of ``directory``'s exited processes now, unless a reader or another fold
    holds the directory: the next scrape folds them then (gunicorn's master, which calls this
    as it reaps a worker, must not wait for a scrape)."""
    with _lock_file(directory) as lock:
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _fold_locked(directory)
        except OSError:  # held (BlockingIOError), or a file system without locks
            pass


def fold_reused(directory: str, forked: bool) -> None:
    """Fold the files named with this process's ID that it has not opened, as it starts to
    record: they are an exited process's that had the same ID. Opened, prometheus-client would
    carry their values on in this process: counters and histograms rightly (a sum), but the
    exited one's live gauges (``http_server_active_requests``) for this one's whole life.
    Waits for the readers and folds under way: a fold of those files that began as the exited
    process went is over before this process makes any.

    ``forked``: the process has just been forked, and opened none; else the files it has
    opened are those it maps (``/proc/self/maps``, read only if a file has its ID; where it
    cannot be read, none is folded)."""
    pid = os.getpid()
    mapped = functools.cache(_mapped_inodes)

    def reused(file_pid: int, path: str) -> bool:
        if file_pid != pid:
            return False
        if forked:
            return True
        held = mapped()
        return held is not None and _inode(path) not in held

    with _lock_file(directory) as lock:
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _fold_locked(directory, reused)
        except OSError as error:  # (a file system without locks)
            report_once(f"locking {LOCK_FILE}", error)


def _mapped_inodes() -> frozenset[int] | None:
    """The inodes of the files this process maps (prometheus-client maps each file it opens);
    None where ``/proc/self/maps`` cannot be read (not Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            return frozenset(int(line.split(maxsplit=5)[4]) for line in maps)
    except (OSError, ValueError, IndexError):
        return None


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _of_exited_process(pid: int, _path: str) -> bool:
    return process_exited(pid)


@contextlib.contextmanager
def _lock_file(directory: str) -> Iterator[int | None]:
    """The directory's lock file, open for the block (None, said once, where it cannot be)."""
    try:
        # (read-only: flock needs no more, and another user's lock file can still be opened;
        # not through a symlink, which would create a file wherever it points)
        path = os.path.join(directory, LOCK_FILE)
        flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with _holding:
            lock = os.open(path, flags, 0o666)
            _held.add(lock)
    except OSError as error:
        report_once(f"locking {LOCK_FILE}", error)
        yield None
        return
    try:
        yield lock
    finally:
        with _holding:
            _held.discard(lock)
            os.close(lock)


def _fold_locked(directory: str, foldable: Callable[[int, str], bool] = _of_exited_process) -> None:
    try:
        _finish_interrupted(directory)
        _fold(directory, foldable)
    except Exception as error:
        report_once("folding exited processes' metrics files", error)


def _fold(directory: str, foldable: Callable[[int, str], bool]) -> None:
    """Write each kind's new folded file, take the files folded into them (``_taken``), then
    commit with the journal. ``foldable``: of a process ID and a file's path, whether to fold
    the file."""
    replace: dict[str, str] = {}
    remove: list[str] = []
    read: dict[str, bytes] = {}  # of each file folded, a digest of what was read
    for kind, names in _foldable_files(directory, foldable).items():
        if _LIVE_GAUGE.fullmatch(kind):
            remove += names
            continue
        folded = _write_folded(directory, kind, names, read)
        if folded:
            replace[f"{_folded(kind)}{_NEW}"] = _folded(kind)
            remove += folded
    taken = _taken(directory, remove, read, foldable) if remove else None
    if taken is None:
        return  # (the new folded files are removed by the next fold, first thing)
    journal = os.path.join(directory, _JOURNAL)
    try:
        with _created(journal + _NEW, "w") as out:
            json.dump({"replace": replace, "remove": taken}, out)
    except OSError:
        _give_back(directory, taken)
        raise
    os.replace(journal + _NEW, journal)  # the commit
    _carry_out(directory, replace, taken)


def _foldable_files(directory: str, foldable: Callable[[int, str], bool]) -> dict[str, list[str]]:
    """The names of the processes' files to fold, by kind (``counter``, ``gauge_max``...), with
    those a killed fold left taken that cannot be given back."""
    found: dict[str, list[str]] = {}
    left_taken = [
        name for name in _process_files(directory, _TAKEN) if not _given_back(directory, name)
    ]
    for name in _process_files(directory, ""):
        kind, pid = _kind_and_pid(name)
        path = os.path.join(directory, name)
        if foldable(pid, path) and not os.path.exists(path + _TAKEN):
            found.setdefault(kind, []).append(name)
    for name in left_taken:
        found.setdefault(_kind_and_pid(name)[0], []).append(name)
    return found


def _taken(
    directory: str, names: list[str], read: dict[str, bytes], foldable: Callable[[int, str], bool]
) -> list[str] | None:
    """Take the files ``names``: rename each ``<name>.folding``, a name no process opens. Their
    taken names; None, every one given back, if a process given an exited one's ID (between the
    check and the rename) opened one: it is alive, or wrote into it since it was read. A file a
    killed fold left taken, that could not be given back, is no live process's whatever its ID
    (``_given_back``): a new process with that ID made a file of its own. A file that cannot
    be taken (another user's, in a shared directory with the sticky bit) fails the fold, every
    one given back: taken, they were left out of every scrape until the next fold."""
    taken: dict[str, str] = {}
    try:
        for name in names:
            taken[name] = _take(directory, name)
    except OSError:
        _give_back(directory, taken.values())
        raise
    if all(
        (
            name.endswith(_TAKEN)
            or foldable(_kind_and_pid(name)[1], os.path.join(directory, as_taken))
        )
        and (name not in read or _digest_of(os.path.join(directory, as_taken)) == read[name])
        for name, as_taken in taken.items()
    ):
        return list(taken.values())
    _give_back(directory, taken.values())
    return None


def _give_back(directory: str, taken: Iterable[str]) -> None:
    for name in taken:
        _given_back(directory, name)


def _take(directory: str, name: str) -> str:
    """Rename the file ``name`` to its taken name, and return that."""
    if name.endswith(_TAKEN):  # (left taken by a killed fold)
        return name
    with contextlib.suppress(FileNotFoundError):  # (a live gauge's mark_process_dead removed)
        os.rename(os.path.join(directory, name), os.path.join(directory, name + _TAKEN))
    return name + _TAKEN


def _given_back(directory: str, taken: str) -> bool:
    """Give the file ``taken`` its name back; False if another file has it since (a process's
    new file: each process opens one file of a kind, once, so the taken one is no live one's)."""
    path = os.path.join(directory, taken)
    original = path.removesuffix(_TAKEN)
    try:
        os.link(path, original)
    except FileNotFoundError:  # (a live gauge's file mark_process_dead removed before the take)
        return True
    except FileExistsError:
        if not os.path.samefile(path, original):
            return False  # (else given back by a fold killed before it removed the taken name)
    os.unlink(path)
    return True


def _process_files(directory: str, suffix: str) -> list[str]:
    """The names of the processes' files that a fold folds or removes, ending in ``suffix``
    (``""``: ``.db``, or ``_TAKEN``)."""
    return [
        name
        for name in sorted(os.listdir(directory))
        if (match := _PROCESS_FILE.fullmatch(name)) is not None
        and match[3] == suffix
        and (match[1] in _COMBINE or _LIVE_GAUGE.fullmatch(match[1]))
    ]


def _kind_and_pid(name: str) -> tuple[str, int]:
    """The kind (``counter``, ``gauge_max``...) and process ID of a name ``_process_files``
    gave."""
    match = _PROCESS_FILE.fullmatch(name)
    assert match is not None
    return match[1], int(match[2])


def _folded(kind: str) -> str:
    """The name of the file of ``kind`` (``counter``, ``gauge_max``...) exited processes'
    values are folded into: one prometheus-client's reader takes for one more process."""
    return f"{kind}_folded.db"


def _write_folded(directory: str, kind: str, names: list[str], read: dict[str, bytes]) -> list[str]:
    """Write ``<kind>_folded.db.new``: the kind's folded file with the values of ``names``
    added. Returns the names added (a file that cannot be read is left as it is), each with a
    digest of what was read in ``read``."""
    totals: dict[str, float] = {}
    combine = _COMBINE[kind]
    target = os.path.join(directory, _folded(kind))
    if os.path.exists(target) and not _added(target, totals, combine):
        return []  # (its values must not be lost: scrapes leave such a file out anyway)
    added = [name for name in names if _added(os.path.join(directory, name), totals, combine, read)]
    if added:
        _reserve(target + _NEW, totals)
        values = MmapedDict(target + _NEW)  # type: ignore[no-untyped-call]
        try:
            for key, value in totals.items():
                values.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        finally:
            values.close()  # type: ignore[no-untyped-call]
    return added


def _reserve(path: str, keys: Iterable[str]) -> None:
    """Make the file at ``path`` with room for ``keys`` written: as large as prometheus-client
    makes it (64 KiB, doubled as needed), all of it written. prometheus-client writes through
    ``mmap``, and a write into a page a full file system has no room for kills the process
    (SIGBUS: gunicorn's master, reaping a worker); a write here fails (``OSError``) instead."""
    # (an entry: its key's length, the key padded to 8 bytes, its value and timestamp)
    needed = _USED.size * 2 + sum(len(key.encode()) + 32 for key in keys)
    size = 64 * 1024
    while size < needed:
        size *= 2
    with _created(path, "wb") as out:
        out.write(bytes(size))


def _created(path: str, mode: str) -> IO[Any]:
    """The file ``path``, made new for writing (``FileExistsError`` if anything is there, a
    symlink too). The directory may be one others write: a link named as a file the fold
    writes, made after the fold removed what its last run left, would have it write over the
    file the link points to."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), mode)


def _added(
    path: str,
    totals: dict[str, float],
    combine: Callable[[float, float], float],
    read: dict[str, bytes] | None = None,
) -> bool:
    """Combine the values of the file at ``path`` into ``totals`` (and a digest of what was read
    into ``read``); False (said once) if it cannot be read: a process killed as it made it,
    another program's."""
    try:
        contents = _contents(path)
        values = [(key, value) for key, value, _, _ in _entries(path, contents)]
    except Exception as error:
        report_once(f"reading metrics file {os.path.basename(path)!r}", error)
        return False
    for key, value in values:
        totals[key] = value if key not in totals else combine(totals[key], value)
    if read is not None:
        read[os.path.basename(path)] = _digest(contents)
    return True


def _entries(path: str, contents: bytes) -> Iterable[tuple[str, float, float, int]]:
    """The entries of the prometheus-client file at ``path`` whose ``contents`` were read: from
    those bytes, so that their digest is of what was folded, through prometheus-client's
    private ``_read_all_values``; where a later prometheus-client has no such function, from
    the file read again (a write between the two reads would then go unseen by the digest)."""
    parse = getattr(mmap_dict, "_read_all_values", None)
    if parse is None:
        return MmapedDict.read_all_values_from_file(path)  # type: ignore[no-any-return,no-untyped-call]
    return parse(contents)  # type: ignore[no-any-return]


def _digest(contents: bytes) -> bytes:
    return hashlib.blake2b(contents, digest_size=16).digest()


def _digest_of(path: str) -> bytes | None:
    """A digest of the file's contents, None if it cannot be read."""
    try:
        return _digest(_contents(path))
    except (OSError, struct.error):
        return None


def _contents(path: str) -> bytes:
    """The part of a prometheus-client file in use, which its first 4 bytes give (the rest of
    the 64 KiB it makes a file is empty)."""
    with open(path, "rb") as source:
        contents = source.read(4096)
        used = _USED.unpack_from(contents)[0]
        return contents + source.read(max(0, used - len(contents)))


def _finish_interrupted(directory: str) -> None:
    """Carry out the fold a killed process committed, or drop the files of one it did not."""
    journal = os.path.join(directory, _JOURNAL)
    replace: dict[str, str] = {}
    remove: list[str] = []
    try:
        with open(journal) as source:
            replace, remove = _journal_entries(json.load(source))
    except FileNotFoundError:
        pass
    except (ValueError, RecursionError) as error:  # no fold wrote it (a fold's is whole): dropped
        report_once(f"reading {_JOURNAL}", error)
    _carry_out(directory, replace, remove)
    for name in os.listdir(directory):
        if name.endswith(_NEW) and name.startswith((*_COMBINE, "tracekit-fold")):
            os.unlink(os.path.join(directory, name))


def _journal_entries(document: object) -> tuple[dict[str, str], list[str]]:
    """The files a journal replaces and removes: only names a fold writes, in the directory
    itself (the journal lies in a directory others write: its names are checked)."""
    if not isinstance(document, dict):
        raise ValueError(f"{_JOURNAL} is not a fold's journal")
    replace = document.get("replace")
    remove = document.get("remove")
    if not isinstance(replace, dict) or not isinstance(remove, list):
        raise ValueError(f"{_JOURNAL} is not a fold's journal")
    if not all(
        isinstance(target, str) and new == f"{target}{_NEW}" and _FOLDED_FILE.fullmatch(target)
        for new, target in replace.items()
    ) or not all(isinstance(name, str) and _PROCESS_FILE.fullmatch(name) for name in remove):
        raise ValueError(f"{_JOURNAL} names files no fold writes")
    return replace, remove


def _carry_out(directory: str, replace: dict[str, str], remove: list[str]) -> None:
    """Put the new folded files in place, remove the files folded into them, then the journal
    (each step again after a kill: a file already moved or removed is skipped)."""
    for new, target in replace.items():
        with contextlib.suppress(FileNotFoundError):
            os.replace(os.path.join(directory, new), os.path.join(directory, target))
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, _JOURNAL))


def _close_held_in_child() -> None:
    for lock in _held:
        os.close(lock)
    _held.clear()
    _holding.release()


os.register_at_fork(
    before=_holding.acquire, after_in_parent=_holding.release, after_in_child=_close_held_in_child
)
