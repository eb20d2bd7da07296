"""Interned strings and resources, resolved outside the span-writing transaction.

Rows can then be built (by the receiver's request threads, or before a write) while the writer
commits earlier rows: the ids they carry are committed already. Retention may reclaim strings and
resources nothing refers to any more; it then bumps the store's generation, and an interner that
sees a new generation forgets every id it cached (see ``_reclaim``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from tracekit._utf8 import clean_value
from tracekit.records import Attributes
from tracekit.store._connection import open_writer, retry_busy
from tracekit.store._encoding import intern_resource, intern_string
from tracekit.store._locking import write_transaction
from tracekit.store._reclaim import StaleRows, generation

# Cached ids at most (a cache, not the table: past this it starts over, rows keep their ids).
MAX_CACHED = 200_000


class Interner:
    """Committed ids of strings and resources, with a connection of its own to add new ones.

    Lookups (``strings.get``, ``resources.get``) are plain dict reads, safe from any thread;
    ``add`` inserts what is missing in one short transaction.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.strings: dict[str, int] = {}
        self.resources: dict[bytes, int] = {}
        self.generation = -1  # of the ids cached; -1: not read yet
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()  # reentrant: held around a fork, which closes

    def add(self, strings: Iterable[str], resources: Iterable[str]) -> None:
        """Make sure every string and resource (canonical JSON text) has a committed id.

        ``StaleRows`` when ids were reclaimed since this interner last looked: it has forgotten
        every cached id, and the caller must start its encoding over.
        """
        texts = [s for s in dict.fromkeys(strings) if s not in self.strings]  # keeps the order
        docs = {resource_digest(r): r for r in resources}
        docs = {d: r for d, r in docs.items() if d not in self.resources}
        if texts or docs or self.generation < 0:
            with self._lock:
                retry_busy(lambda: self._add_once(texts, docs), attempts=2)

    def bound(self) -> None:
        """Start the caches over when they grew past their bound (call between encodings only:
        ids looked up before must stay in them until their rows are built)."""
        if len(self.strings) > MAX_CACHED or len(self.resources) > MAX_CACHED:
            self.strings.clear()  # in place: encoders share this dict
            self.resources.clear()

    def forget(self, new_generation: int) -> None:
        """Ids were reclaimed: drop every cached one (in place: encoders share these dicts)."""
        self.strings.clear()
        self.resources.clear()
        self.generation = new_generation

    def refresh(self) -> None:
        """Read the store's generation now, forgetting cached ids if it moved on."""
        with self._lock:
            conn = self._connection()
            current = generation(conn)
            if current != self.generation:
                self.forget(current)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_writer(self.path)
        return self._conn

    def _add_once(self, texts: list[str], docs: dict[bytes, str]) -> None:
        conn = self._connection()
        with write_transaction(conn):
            current = generation(conn)
            if current != self.generation:
                if self.generation >= 0:  # ids were reclaimed: trust none cached, start over
                    self.forget(current)
                    raise StaleRows("strings were reclaimed while encoding")
                self.generation = current  # the first look: nothing cached yet
            found = {text: intern_string(conn, text) for text in texts}
            found_docs = {d: intern_resource(conn, d, doc) for d, doc in docs.items()}
        self.strings.update(found)  # only now: a rolled-back id must never be cached
        self.resources.update(found_docs)

    def close(self) -> None:
        """Close the connection (caches stay valid; it reopens when needed)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def hold(self) -> None:
        """Keep every other thread out until ``release`` (around a ``fork()``; this thread may
        still ``close``)."""
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def resource_document(resource: Attributes, version: str | None) -> str:
    """The stored form of a resource: canonical JSON of ``[attributes, service.version]``."""
    document = [resource, version]
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if "\\ud" in text:  # maybe a lone surrogate: stored as U+FFFD (see _encoding.dumps)
        text = json.dumps(clean_value(document), sort_keys=True, separators=(",", ":"))
    return text


def resource_digest(document: str) -> bytes:
    """The key a resource is stored under."""
    return hashlib.blake2b(document.encode(), digest_size=12).digest()
