"""Compact encodings shared by the writer and the reader: ids, enums, interned attributes.

Attributes are stored as a JSON list ``[k1, v1, k2, v2, ...]``. ``k`` is the id of the interned
key in ``strings``; a negative ``-k`` says the value is itself an interned string and ``v`` is its
id. Keys and low-cardinality string values (methods, routes, host names) thereby cost a few bytes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from tracekit._utf8 import clean_text, clean_value
from tracekit.records import SPAN_KINDS, STATUS_CODES, Attributes, AttributeValue, finite_json

KIND_CODES = {name: code for code, name in enumerate(SPAN_KINDS)}
STATUS_CODE_OF = {name: code for code, name in enumerate(STATUS_CODES)}

# A string value is interned when it is short and its key has not yet shown itself to be
# high-cardinality in this process (url.path with ids, message ids, timestamps...).
INTERN_MAX_LENGTH = 64
INTERN_MAX_VALUES_PER_KEY = 512
_MAX_KEYS_COUNTED = 100_000

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def id_bytes(hex_id: str, length: int, what: str) -> bytes:
    """Parse a hex id of ``length`` bytes (case-insensitive), or raise ``ValueError``."""
    try:
        raw = bytes.fromhex(hex_id)
    except (ValueError, TypeError):
        raise ValueError(f"{what} is not hex") from None
    if len(raw) != length:
        raise ValueError(f"{what} must be {length} bytes")
    return raw


def dumps(value: object) -> str:
    """Compact JSON (ASCII-escaped, so any Python string survives the round trip). Standard JSON,
    which SQLite's JSON functions read: NaN and infinities are written as OTLP/JSON's strings.
    Lone surrogates, which UTF-8 cannot hold, are stored as U+FFFD (``clean_text``)."""
    text = _finite_dumps(value)
    if "\\ud" in text:  # a character beyond the BMP, a lone surrogate or a "\\ud" as it is
        text = _finite_dumps(clean_value(value))
    return text


def _finite_dumps(value: object) -> str:
    try:
        return _dumps(value)
    except ValueError:  # a NaN or an infinity, which standard JSON has no number for
        return _dumps(finite_json(value))


def intern_string(conn: sqlite3.Connection, text: str) -> int:
    """The id of ``text`` in ``strings``, inserted if new (inside the caller's transaction)."""
    value = clean_text(text)
    row = conn.execute("SELECT id FROM strings WHERE value = ?", (value,)).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO strings (value) VALUES (?) RETURNING id", (value,)
        ).fetchone()
    return int(row[0])


def intern_resource(conn: sqlite3.Connection, digest: bytes, document: str) -> int:
    """The id of a resource document in ``resources``, inserted if new (caller's transaction)."""
    row = conn.execute("SELECT id FROM resources WHERE digest = ?", (digest,)).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO resources (digest, attributes) VALUES (?, ?) RETURNING id",
            (digest, document),
        ).fetchone()
    return int(row[0])


class StringTable:
    """Interns strings into the ``strings`` table for one writer connection.

    Ids learned inside a transaction stay ``pending`` until it commits, so a rolled-back id is
    never reused from the cache (another process may hand it to a different string).
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._values_per_key: dict[int, int] = {}
        self.conn: sqlite3.Connection | None = None

    def begin(self, conn: sqlite3.Connection) -> None:
        """Start resolving inside ``conn``'s open write transaction."""
        self.conn = conn
        self._pending = {}

    def commit(self) -> None:
        """The transaction committed: pending ids are now safe to cache."""
        self._ids.update(self._pending)
        self._pending = {}

    def rollback(self) -> None:
        """The transaction rolled back: forget ids learned in it."""
        self._pending = {}

    def ref(self, value: str) -> int:
        """The id of ``value``, inserting it if new."""
        known = self._ids.get(value)
        if known is not None:
            return known
        known = self._pending.get(value)
        if known is None:
            assert self.conn is not None, "StringTable.ref outside a transaction"
            known = intern_string(self.conn, value)
            self._pending[value] = known
        return known

    def encode(
        self, attributes: Mapping[str, AttributeValue], skip: str | None = None
    ) -> list[object]:
        """The flat ``[key-ref, value, ...]`` list for ``attributes`` (``skip`` left out)."""
        items: list[object] = []
        for key, value in attributes.items():
            if key == skip:
                continue
            key_ref = self.ref(key)
            if type(value) is str and self._should_intern(key_ref, value):
                items.append(-key_ref)
                items.append(self.ref(value))
            else:
                items.append(key_ref)
                items.append(value)
        return items

    def _should_intern(self, key_ref: int, value: str) -> bool:
        if value in self._ids or value in self._pending:
            return True
        if len(value) > INTERN_MAX_LENGTH:
            return False
        seen = self._values_per_key.get(key_ref, 0)
        if seen >= INTERN_MAX_VALUES_PER_KEY:
            return False
        if len(self._values_per_key) >= _MAX_KEYS_COUNTED:  # unique keys: start counting over
            self._values_per_key = {}
        self._values_per_key[key_ref] = seen + 1
        return True


def encoded_attributes(
    table: StringTable, attributes: Attributes, skip: str | None = None
) -> str | None:
    """Attributes as stored in a row (None when there are none)."""
    items = table.encode(attributes, skip)
    return dumps(items) if items else None


class StringResolver:
    """Read side of ``strings``: id -> value, cached (strings are never rewritten or deleted)."""

    def __init__(self) -> None:
        self._values: dict[int, str] = {}

    def load(self, conn: sqlite3.Connection, ids: Iterable[object]) -> None:
        """Fetch every id in ``ids`` not yet cached (ids that are not integers, from a row
        another tool wrote, name no string)."""
        missing = sorted({i for i in ids if type(i) is int and i not in self._values})
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, value FROM strings WHERE id IN ({marks})"  # noqa: S608 - only '?'
            self._values.update((i, stored_text(v)) for i, v in conn.execute(query, chunk))

    def get(self, ref: int | None) -> str | None:
        """The string for ``ref`` (None for None or an id the table does not hold)."""
        return None if ref is None else self._values.get(ref)

    def decode(self, items: list[object]) -> Attributes:
        """Attributes from a flat list whose refs were already ``load``-ed."""
        values = self._values
        out: Attributes = {}
        for index in range(0, len(items) - 1, 2):
            key_ref = items[index]
            value = items[index + 1]
            if not isinstance(key_ref, int):
                continue
            if key_ref < 0:
                out[values.get(-key_ref, "")] = (
                    values.get(value, "") if isinstance(value, int) else ""
                )
            else:
                out[values.get(key_ref, "")] = value  # type: ignore[assignment]
        return out


def stored_text(value: object) -> str:
    """A column meant to hold text, as text: another tool may have written a blob (read as
    UTF-8, U+FFFD for what is not) or a number there, which readers would fail on."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def attribute_refs(items: list[object]) -> Iterable[int]:
    """Every string id a flat attribute list refers to (none past SQLite's: another tool's
    write could hold any number, which the query for the strings would refuse)."""
    for index in range(0, len(items) - 1, 2):
        key_ref = items[index]
        if isinstance(key_ref, int) and abs(key_ref) <= _MAX_ROWID:
            yield abs(key_ref)
            value = items[index + 1]
            if key_ref < 0 and isinstance(value, int) and 0 <= value <= _MAX_ROWID:
                yield value


_MAX_ROWID = 2**63 - 1
