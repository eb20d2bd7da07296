"""Reclaiming strings and resources that no record refers to any more.

Retention deletes spans and logs; the strings they named (span names, attribute keys, values)
and their resources would stay forever, so a store fed unique names would outgrow ``--max-size``
with no span left. ``reclaim`` marks every id still referred to and deletes the rest.

Writers cache string and resource ids, so a reclaim bumps the store's *generation*: a writer
that finds a new generation drops its caches, and rows encoded under an older one are refused
(``StaleRows``) instead of being written with ids that no longer exist. The highest id of each
table is never deleted, so SQLite never hands a deleted id out again and a reader's cache of
id -> string stays right for every row it can still meet.
"""

from __future__ import annotations

import sqlite3

from tracekit.store._connection import GENERATION
from tracekit.store._locking import write_transaction

# Integers in attribute, event and link lists: key ids, value ids and plain integer values. Any
# of them may be a string id; keeping a string some integer happens to equal is safe.
_JSON_COLUMNS = (
    ("spans", "attributes"), ("spans", "events"), ("links", "attributes"), ("logs", "attributes"),
)  # fmt: skip
_ID_COLUMNS = (
    ("spans", "service_ref"), ("spans", "name_ref"), ("spans", "scope_ref"),
    ("logs", "service_ref"), ("logs", "severity_ref"),
)  # fmt: skip
_MIN_STRINGS = 10_000  # below this, strings cost too little to be worth a pass


class StaleRows(RuntimeError):
    """Rows were encoded with ids from before a reclaim: encode them again."""


def generation(conn: sqlite3.Connection) -> int:
    """The store's current generation of string and resource ids."""
    row = conn.execute(GENERATION).fetchone()
    return int(row[0]) if row else 0


def string_heavy(conn: sqlite3.Connection) -> bool:
    """Whether strings are a large share of the store (high-cardinality names or keys).

    Rows are counted, not ids: ids count every string and record ever stored, so a store that
    once had unique names reclaimed on every pass, and one with many logs never did.
    """
    if _max_id(conn, "strings") < _MIN_STRINGS:  # never had that many: O(log n)
        return False
    strings = _count(conn, "strings")
    # more than a quarter of the records: spans and logs counted only as far as that needs
    enough = strings * 4
    return _count(conn, "spans", enough) + _count(conn, "logs", enough) < enough


def reclaim(conn: sqlite3.Connection) -> int:
    """Delete unreferenced strings and resources in one transaction; returns how many."""
    with write_transaction(conn):
        deleted = _sweep_strings(conn) + _sweep_resources(conn)
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
    return deleted


def _sweep_strings(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS live_strings (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.live_strings")
    top = _max_id(conn, "strings")
    for table, column in _ID_COLUMNS:
        conn.execute(
            f"INSERT OR IGNORE INTO temp.live_strings SELECT {column} FROM {table}"  # noqa: S608
            f" WHERE {column} IS NOT NULL"
        )
    for table, column in _JSON_COLUMNS:  # abs(): a negative key id marks an interned value
        conn.execute(
            f"INSERT OR IGNORE INTO temp.live_strings SELECT abs(j.value) FROM {table},"  # noqa: S608
            f" json_tree({table}.{column}) j WHERE {table}.{column} IS NOT NULL"
            " AND j.type = 'integer' AND j.value BETWEEN ? AND ?",
            (-top, top),
        )
    return conn.execute(
        "DELETE FROM strings WHERE id < ? AND id NOT IN (SELECT id FROM temp.live_strings)",
        (top,),
    ).rowcount


def _sweep_resources(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "DELETE FROM resources WHERE id < (SELECT max(id) FROM resources)"
        " AND id NOT IN (SELECT resource_ref FROM spans UNION SELECT resource_ref FROM logs)"
    ).rowcount


def _max_id(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f"SELECT max(id) FROM {table}").fetchone()  # noqa: S608
    return int(row[0] or 0)


def _count(conn: sqlite3.Connection, table: str, at_most: int = -1) -> int:
    query = f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT ?)"  # noqa: S608
    return int(conn.execute(query, (at_most,)).fetchone()[0])
