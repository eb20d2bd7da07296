"""The demo's message queues: Redis when a server is at hand, else a small queue in SQLite.

Both carry a JSON body and a header mapping, which is all ``tracekit.messaging`` needs to follow a
request across the hop. The SQLite queue lets the demo run with nothing installed: several processes
share one database file, and a consumer claims a message in one ``UPDATE … RETURNING`` statement.
A consumer says when it has handled a message (``done``): until then the message counts as
pending, so that the demo does not stop its services while a handler still runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Protocol

POLL_SECONDS = 0.01


@dataclass(slots=True)
class Message:
    """One message taken off a queue."""

    body: dict[str, Any]
    headers: dict[str, str]
    receipt: Any = None  # what ``Queue.done`` needs to find it


class Queue(Protocol):
    """What the demo's services need from a broker."""

    system: str

    def put(self, queue: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Append a message to ``queue``."""

    def get(self, queue: str, timeout: float) -> Message | None:
        """Take the oldest message of ``queue``, waiting up to ``timeout`` seconds."""

    def done(self, message: Message) -> None:
        """``message``, taken by ``get``, is handled."""

    def pending(self) -> int:
        """Messages not yet handled (waiting, or being handled), across all queues."""


class SqliteQueue:
    """A multi-process queue in one SQLite file (WAL mode)."""

    system = "sqlite"

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
            " payload TEXT NOT NULL, taken INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, taken, id)")

    def put(self, queue: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        payload = json.dumps({"body": body, "headers": headers})
        self._db.execute("INSERT INTO messages (queue, payload) VALUES (?, ?)", (queue, payload))

    def get(self, queue: str, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            row = self._db.execute(
                "UPDATE messages SET taken = 1 WHERE id = (SELECT id FROM messages"
                " WHERE queue = ? AND taken = 0 ORDER BY id LIMIT 1) RETURNING id, payload",
                (queue,),
            ).fetchone()
            if row is not None:
                return _decode(row[1], receipt=row[0])
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    def done(self, message: Message) -> None:
        self._db.execute("UPDATE messages SET taken = 2 WHERE id = ?", (message.receipt,))

    def pending(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM messages WHERE taken < 2").fetchone()[0])


class RedisQueue:
    """Redis lists as queues (LPUSH / BRPOP)."""

    system = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)

    def put(self, queue: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        self._client.lpush(_redis_key(queue), json.dumps({"body": body, "headers": headers}))

    def get(self, queue: str, timeout: float) -> Message | None:
        # moved, not popped: a message being handled is still pending (BRPOPLPUSH: Redis < 6.2)
        item = self._client.brpoplpush(_redis_key(queue), _HANDLING, timeout=max(timeout, 0.01))
        return None if item is None else _decode(item, receipt=item)

    def done(self, message: Message) -> None:
        self._client.lrem(_HANDLING, 1, message.receipt)

    def pending(self) -> int:
        keys = self._client.keys(_redis_key("*"))
        return sum(int(self._client.llen(key)) for key in keys)


def _redis_key(queue: str) -> str:
    return f"tracekit-demo:{queue}"


_HANDLING = _redis_key("(being handled)")  # counted by ``pending`` with the queues


def _decode(payload: str | bytes, receipt: Any) -> Message:
    data = json.loads(payload)
    return Message(body=data["body"], headers=data["headers"], receipt=receipt)


def open_queue(url: str) -> Queue:
    """``redis://…`` opens a Redis queue; ``sqlite:PATH`` the SQLite queue at PATH."""
    if url.startswith("redis://"):
        return RedisQueue(url)
    if url.startswith("sqlite:"):
        return SqliteQueue(url.removeprefix("sqlite:"))
    raise ValueError(f"unknown queue URL {url!r}: expected redis://… or sqlite:PATH")
