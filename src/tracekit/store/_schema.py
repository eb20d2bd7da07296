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
from collections.abc import Sequence

from tracekit.store._locking import write_transaction

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
    # What `search --min-duration` filters on, per trace: its first start and last end, and the
    # correlation ids its spans carry. The writer keeps them as it stores spans, retention as
    # it deletes them; see docs/design-notes.md for how spans stored by an older tracekit, which
    # keeps neither, are counted in (THROUGH_ROW, and meta's trace_tables_fill).
    """
    CREATE TABLE IF NOT EXISTS trace_extents (
        trace_ref INTEGER PRIMARY KEY, start_ns INTEGER, end_ns INTEGER
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS trace_correlations (
        correlation_ref INTEGER NOT NULL, trace_ref INTEGER NOT NULL,
        PRIMARY KEY (correlation_ref, trace_ref)
    ) WITHOUT ROWID
    """,
)
_ADDITION_NAMES = ("span_id_clashes", "trace_extents", "trace_correlations")
# The spans counted in trace_extents are those up to the span id in its row THROUGH_ROW (in
# start_ns; no trace has that ref, and its end_ns is NULL, so no search finds it). It sits last
# in the table, on the page new traces are written to: keeping it writes no page of its own.
THROUGH_ROW = 1 << 62
# The row after it holds that span's start: an id is handed out again once the spans from it up
# are deleted (by an older tracekit, which leaves THROUGH_ROW as it was: the newest spans, old
# by their times, as a host whose clock is behind sends them). A span then stored under an id
# already counted in was never counted: its trace was too short for `search --min-duration`.
# Its start, not the one counted, tells.
THROUGH_SPAN_ROW = THROUGH_ROW + 1
# Marks the spans up to id ?3 counted in (?1: THROUGH_ROW, ?2: THROUGH_SPAN_ROW).
MARK_COUNTED = (
    "INSERT OR REPLACE INTO trace_extents VALUES (?1, ?3, NULL),"
    " (?2, (SELECT start_ns FROM spans WHERE id = ?3), NULL)"
)
# The last span id counted in, and whether the span of that id is still the one counted.
_COUNTED_THROUGH = (
    "SELECT c.start_ns, (SELECT s.start_ns FROM spans s WHERE s.id = c.start_ns)"
    " IS (SELECT e.start_ns FROM trace_extents e WHERE e.trace_ref = ?2)"
    " FROM trace_extents c WHERE c.trace_ref = ?1"
)
# Made with the tables (then MARK_COUNTED): the spans already stored are to be counted in a
# chunk at a time, those stored from now on by the writer.
_START_TRACE_TABLES = (
    "INSERT OR REPLACE INTO meta SELECT 'trace_tables_fill', 0 WHERE EXISTS (SELECT 1 FROM spans)"
)
# The per-trace tables of a store made before them are filled from its spans a chunk of traces
# per transaction, one after each batch a writer stores (a 2.2-million-span store in 22 chunks
# of about 0.2 s): the writer starts at once, and other writers wait no longer than for a batch.
# Until the last chunk, meta holds the next trace ref to fill and readers do without the
# tables. A row a writer made meanwhile is merged, not replaced.
FILL_CHUNK_TRACES = 10_000
# The spans a condition on ``spans`` selects ({spans}: "spans WHERE ..."), merged into the
# per-trace tables: a row per trace, not per span, merged with the trace's row counted before.
_MERGE_EXTENTS = (
    "INSERT INTO trace_extents SELECT trace_ref, min(start_ns), max(start_ns + duration_ns)"
    " FROM {spans} GROUP BY trace_ref"
    " ON CONFLICT (trace_ref) DO UPDATE SET start_ns = min(start_ns, excluded.start_ns),"
    " end_ns = max(end_ns, excluded.end_ns)"
)
_MERGE_CORRELATIONS = (
    "INSERT OR IGNORE INTO trace_correlations SELECT DISTINCT correlation_ref, trace_ref"
    " FROM {spans} AND correlation_ref IS NOT NULL"
)


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
    with write_transaction(conn):
        current = schema_version(conn)  # re-read under the write lock: another process may have won
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(f"store schema {current} is newer than {SCHEMA_VERSION}")
        for number in range(current, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
        start_trace_tables = not has_table(conn, "trace_extents")
        for statement in ADDITIONS:
            conn.execute(statement)
        if start_trace_tables:
            conn.execute(_START_TRACE_TABLES)
            conn.execute(MARK_COUNTED, (THROUGH_ROW, THROUGH_SPAN_ROW, last_span_id(conn)))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return current


def trace_tables_filled(conn: sqlite3.Connection) -> bool:
    """Whether the per-trace tables count in every stored span (readers may use them): not
    while being filled, nor after a tracekit that does not keep them stored spans."""
    if not has_table(conn, "trace_extents"):
        return False
    return counted_through(conn) == (last_span_id(conn), True) and not _fill_pending(conn)


def counted_through(conn: sqlite3.Connection) -> tuple[int, bool] | None:
    """The last span id the per-trace tables count in, and whether the span of that id is still
    the one counted (None: no such mark)."""
    row = conn.execute(_COUNTED_THROUGH, (THROUGH_ROW, THROUGH_SPAN_ROW)).fetchone()
    return None if row is None else (int(row[0]), bool(row[1]))


def last_span_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM spans").fetchone()[0])


def count_in(conn: sqlite3.Connection, spans: str, params: Sequence[object]) -> None:
    """Merge the spans ``spans`` selects (``"spans WHERE ..."`` with ``params``) into the
    per-trace tables: the writer's batch, or a chunk of an upgraded store's traces."""
    conn.execute(_MERGE_EXTENTS.format(spans=spans), params)
    conn.execute(_MERGE_CORRELATIONS.format(spans=spans), params)


def fill_trace_tables_step(conn: sqlite3.Connection) -> None:
    """Fill the next chunk of the per-trace tables of an upgraded store, if one is pending, in
    one transaction (autocommit connection)."""
    if not _fill_pending(conn):  # every store but one just upgraded: no write lock asked
        return
    with write_transaction(conn):
        _fill_next_chunk(conn)


def _fill_pending(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM meta WHERE key = 'trace_tables_fill'").fetchone() is not None


def _fill_next_chunk(conn: sqlite3.Connection) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'trace_tables_fill'").fetchone()
    if row is None:  # another writer filled the last chunk meanwhile
        return
    start, end = row[0], row[0] + FILL_CHUNK_TRACES
    count_in(conn, "spans WHERE trace_ref >= ?1 AND trace_ref < ?2", (start, end))
    # traces numbered from here on were stored by writers that count their batches in
    if end > conn.execute("SELECT coalesce(max(id), 0) FROM traces").fetchone()[0]:
        conn.execute("DELETE FROM meta WHERE key = 'trace_tables_fill'")
    else:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'trace_tables_fill'", (end,))


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
