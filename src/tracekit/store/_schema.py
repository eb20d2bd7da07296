"""Schema of the embedded store, as numbered migrations.

``PRAGMA user_version`` records the last migration applied. Each migration runs inside one
``BEGIN IMMEDIATE`` transaction, so two processes opening a fresh file at once cannot both apply it.

Compactness choices (measured by ``python -m bench.store_size_bench``): ids are stored as
binary blobs; trace ids, correlation ids, resources and every repeated string (service, span name,
attribute keys, low-cardinality attribute values) are interned into side tables and referenced by
small integers; attributes are a compact JSON list of ``key-ref, value`` pairs; events live inline
in the span row.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE strings (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE);
    CREATE TABLE traces (id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE);
    CREATE TABLE correlations (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE);
    CREATE TABLE resources (
        id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, attributes TEXT NOT NULL
    );
    CREATE TABLE spans (
        id INTEGER PRIMARY KEY,
        trace_ref INTEGER NOT NULL,
        span_id BLOB NOT NULL,
        parent_id BLOB,
        service_ref INTEGER NOT NULL,
        name_ref INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        duration_ns INTEGER NOT NULL,
        status INTEGER NOT NULL,
        status_message TEXT,
        correlation_ref INTEGER,
        resource_ref INTEGER NOT NULL,
        scope_ref INTEGER,
        attributes TEXT,
        events TEXT,
        has_links INTEGER
    );
    CREATE UNIQUE INDEX spans_by_trace ON spans (trace_ref, span_id);
    CREATE INDEX spans_by_correlation ON spans (correlation_ref)
        WHERE correlation_ref IS NOT NULL;
    -- start first: retention, spans_since and recent_requests walk time, and service rides along so
    -- a service filter is answered from the index without touching rows.
    CREATE INDEX spans_by_time ON spans (start_ns, service_ref);
    CREATE TABLE links (
        trace_ref INTEGER NOT NULL,
        span_id BLOB NOT NULL,
        position INTEGER NOT NULL,
        linked_trace_id BLOB NOT NULL,
        linked_span_id BLOB NOT NULL,
        attributes TEXT,
        PRIMARY KEY (trace_ref, span_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX links_by_target ON links (linked_trace_id, linked_span_id);
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        service_ref INTEGER NOT NULL,
        severity_number INTEGER NOT NULL,
        severity_ref INTEGER,
        body TEXT NOT NULL,
        trace_ref INTEGER,
        span_id BLOB,
        correlation_ref INTEGER,
        resource_ref INTEGER NOT NULL,
        attributes TEXT
    );
    CREATE INDEX logs_by_trace ON logs (trace_ref) WHERE trace_ref IS NOT NULL;
    CREATE INDEX logs_by_correlation ON logs (correlation_ref) WHERE correlation_ref IS NOT NULL;
    CREATE INDEX logs_by_time ON logs (time_ns);
    """,
    # 2: the generation of string and resource ids, bumped when retention reclaims them
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('generation', 0);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
# The oldest schema the reader reads as it is: migration 2 only added the writers' generation
# table. A migration that changes what readers query must raise this.
OLDEST_READABLE = 1

# Tables a tracekit that predates them reads and writes beside without harm, so not numbered: a
# numbered migration makes every older tracekit refuse the store as newer (its CLI exits 2, its
# services' store exporters drop every span). Each writer creates them; a reader does without.
ADDITIONS: tuple[str, ...] = (
    # The span ids a trace was sent for two different spans (a client reusing ids): the store
    # keeps the first, and a read says so (the spans below the other one hang under it).
    """
    CREATE TABLE IF NOT EXISTS span_id_clashes (
        trace_ref INTEGER NOT NULL, span_id BLOB NOT NULL, PRIMARY KEY (trace_ref, span_id)
    ) WITHOUT ROWID
    """,
)
_ADDITION_NAMES = ("span_id_clashes",)


class SchemaTooNewError(RuntimeError):
    """The file was written by a newer tracekit than this one."""


class NotAStoreError(sqlite3.OperationalError):
    """The file is another application's database (it has tables, and no store schema)."""


def holds_other_tables(conn: sqlite3.Connection) -> bool:
    """Whether the database has tables but not the store's: another application's (whatever
    its user_version says). A store's first migration creates its tables in one transaction."""
    row = conn.execute(  # one statement: one snapshot, while another writer may be migrating
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema)"
        " AND NOT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'spans')"
    ).fetchone()
    return bool(row[0])


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations applied to the open database."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration and addition the database lacks (the connection must be in
    autocommit mode); returns the schema it found (0 for a new file)."""
    if schema_version(conn) == SCHEMA_VERSION and _has_additions(conn):
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)  # re-read under the write lock: another process may have won
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(f"store schema {current} is newer than {SCHEMA_VERSION}")
        for number in range(current, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
        for statement in ADDITIONS:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


def _has_additions(conn: sqlite3.Connection) -> bool:
    return all(has_table(conn, name) for name in _ADDITION_NAMES)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the database holds a table ``name`` (an addition an older writer never made)."""
    query = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    return [part.strip() for part in script.split(";") if part.strip() and not _only_comment(part)]


def _only_comment(part: str) -> bool:
    return all(line.strip().startswith("--") or not line.strip() for line in part.splitlines())
