"""The service map's calls, found by SQLite in the store (``tracekit services``).

``tracekit.path.service_map`` reads every span of the window as a ``SpanRecord``; over 200,000
spans that took about 5 s, mostly building records whose attributes the map never reads. Here
one query pairs each SERVER or CONSUMER span with its senders by the same rules
(``tracekit.path.hops``: the parent or a linked span, or the CLIENT a SERVER answered through at
most ``MAX_SPANS_BETWEEN`` INTERNAL spans; ``hop_type``; the samples of ``servicemap._sample``),
and only the samples come back. A test holds both to the same map on the same stores.
"""

# ruff: noqa: S608 - queries are built from constant fragments and "?" placeholders only

from __future__ import annotations

from tracekit import semconv
from tracekit.records import SPAN_KINDS, STATUS_CODES, HopSample
from tracekit.store._reader import StoreReader

_SERVER, _CLIENT, _PRODUCER, _CONSUMER = (
    SPAN_KINDS.index(kind) for kind in ("SERVER", "CLIENT", "PRODUCER", "CONSUMER")
)
_ERROR = STATUS_CODES.index("ERROR")
# tracekit.path.hops.MAX_SPANS_BETWEEN (the store does not import the path engine; a test holds
# the two equal)
MAX_SPANS_BETWEEN = 8
# A kind number outside SPAN_KINDS reads as INTERNAL (StoreReader._span).
_INTERNAL = f"NOT IN ({_SERVER}, {_CLIENT}, {_PRODUCER}, {_CONSUMER})"


def _in_window(alias: str) -> str:
    """The span ``alias`` is one of the window's: at or after its oldest (start, row id)."""
    return f"{alias}.start_ns >= :start AND ({alias}.start_ns > :start OR {alias}.id >= :first)"


def _parent(child: str, alias: str) -> str:
    return (
        f"JOIN spans {alias} ON {alias}.trace_ref = {child}.trace_ref"
        f" AND {alias}.span_id = {child}.parent_id AND {_in_window(alias)}"
    )


# A key that is messaging.system, as StringResolver.decode reads a flat attribute list: an integer
# at an even position with a value after it, negative when the value is interned too.
_HAS_MESSAGING_SYSTEM = (
    "(json_valid(x.attributes) AND json_type(x.attributes) = 'array' AND EXISTS (SELECT 1"
    " FROM json_each(x.attributes) a WHERE a.type = 'integer' AND a.key % 2 = 0"
    " AND a.key < json_array_length(x.attributes) - 1 AND abs(a.value) = :messaging_system))"
)
_HOP_TYPE = (  # hops.hop_type
    f"CASE WHEN r.kind = {_CONSUMER} AND (x.kind = {_PRODUCER}"
    f" OR (x.kind = {_CLIENT} AND {_HAS_MESSAGING_SYSTEM})) THEN 'messaging'"
    f" WHEN x.kind = {_CLIENT} AND r.kind = {_SERVER} THEN 'http' END"
)
_HOP_SAMPLES = f"""
    WITH RECURSIVE
    receivers AS MATERIALIZED (
        SELECT r.id, r.trace_ref, r.span_id, r.parent_id, r.kind, r.has_links FROM spans r
        WHERE {_in_window("r")} AND r.kind IN ({_SERVER}, {_CONSUMER})),
    found(receiver, sender) AS (
        SELECT r.id, p.id FROM receivers r {_parent("r", "p")}
        UNION ALL  -- each linked span once, and the parent not again (service_map's keys)
        SELECT DISTINCT r.id, x.id FROM receivers r
        JOIN links l ON l.trace_ref = r.trace_ref AND l.span_id = r.span_id
        JOIN traces lt ON lt.trace_id = l.linked_trace_id
        JOIN spans x ON x.trace_ref = lt.id AND x.span_id = l.linked_span_id
        WHERE coalesce(r.has_links, 0) != 0 AND {_in_window("x")}
        AND NOT (x.trace_ref = r.trace_ref AND x.span_id IS r.parent_id)),
    chain(receiver, step, trace_ref, parent_id, kind, depth) AS (
        SELECT r.id, p.id, p.trace_ref, p.parent_id, p.kind, 0 FROM receivers r {_parent("r", "p")}
        WHERE r.kind = {_SERVER} AND p.kind {_INTERNAL}
        UNION ALL
        SELECT c.receiver, q.id, q.trace_ref, q.parent_id, q.kind, c.depth + 1 FROM chain c
        {_parent("c", "q")} WHERE c.kind {_INTERNAL} AND c.depth < :between),
    pairs(receiver, sender) AS (
        SELECT receiver, sender FROM found
        UNION ALL
        SELECT receiver, step FROM chain WHERE depth > 0 AND kind = {_CLIENT})
    SELECT * FROM (
        SELECT x.service_ref, r.service_ref, {_HOP_TYPE} AS hop, CASE
            WHEN r.kind = {_SERVER} THEN x.duration_ns / 1e6
            WHEN r.start_ns >= x.start_ns THEN (r.start_ns + r.duration_ns - x.start_ns) / 1e6
            ELSE (x.duration_ns + r.duration_ns) / 1e6 END,
            x.status = {_ERROR} OR r.status = {_ERROR}
        FROM pairs JOIN spans r ON r.id = pairs.receiver JOIN spans x ON x.id = pairs.sender)
    WHERE hop IS NOT NULL
"""


def newest_hop_samples(
    reader: StoreReader, since_unix_nano: int, limit: int
) -> tuple[list[HopSample], bool]:
    """The calls among the ``limit`` spans that started last since ``since_unix_nano`` (as
    ``newest_spans_since`` reads them), and whether the window holds more spans."""
    start, first, more = _window(reader, since_unix_nano, limit)
    if limit < 1:
        return [], more
    params = {
        "start": start,
        "first": first,
        "between": MAX_SPANS_BETWEEN,
        "messaging_system": reader.string_ref(semconv.MESSAGING_SYSTEM),
    }
    rows = reader.conn.execute(_HOP_SAMPLES, params).fetchall()
    reader.strings.load(reader.conn, [r[0] for r in rows] + [r[1] for r in rows])
    service = reader.strings.get
    samples = [
        HopSample(service(a) or "", service(b) or "", hop, latency, bool(error))
        for a, b, hop, latency, error in rows
    ]
    return samples, more


def newest_requests_by_service(
    reader: StoreReader, since_unix_nano: int, limit: int
) -> dict[str, int]:
    """``tracekit.path.requests_by_service`` of the ``limit`` spans that started last since
    ``since_unix_nano``, counted by SQLite."""
    start, first, _ = _window(reader, since_unix_nano, limit)
    if limit < 1:
        return {}
    rows = reader.conn.execute(_REQUESTS_BY_SERVICE, {"start": start, "first": first}).fetchall()
    reader.strings.load(reader.conn, [row[0] for row in rows])
    counts: dict[str, int] = {}
    for ref, requests in rows:  # two refs may read as one name ("" for a lost string)
        name = reader.strings.get(ref) or ""
        counts[name] = counts.get(name, 0) + requests
    return counts


_REQUESTS_BY_SERVICE = (
    f"SELECT s.service_ref, sum(s.kind IN ({_SERVER}, {_CONSUMER}) OR s.parent_id IS NULL)"
    f" FROM spans s WHERE {_in_window('s')} GROUP BY s.service_ref"
)


def _window(reader: StoreReader, since_unix_nano: int, limit: int) -> tuple[int, int, bool]:
    """The (start, row id) of the oldest of the ``limit`` spans that started last, as
    ``newest_spans_since`` orders them; and whether more spans started since
    ``since_unix_nano``. (Ordering every span by both took 0.14 s at 200,000; the time index
    alone orders them, and only the spans starting with the oldest need their row ids.)"""
    conn = reader.conn
    since = (since_unix_nano,)
    query = "SELECT count(*) FROM (SELECT 1 FROM spans WHERE start_ns >= ? LIMIT ?)"
    if conn.execute(query, (*since, max(0, limit) + 1)).fetchone()[0] <= limit:
        return since_unix_nano, -(2**63), False  # all of them
    if limit < 1:
        return 0, 0, True
    query = "SELECT start_ns FROM spans WHERE start_ns >= ? ORDER BY start_ns DESC LIMIT 1 OFFSET ?"
    oldest = conn.execute(query, (*since, limit - 1)).fetchone()[0]
    newer = conn.execute("SELECT count(*) FROM spans WHERE start_ns > ?", (oldest,)).fetchone()[0]
    query = "SELECT id FROM spans WHERE start_ns = ? ORDER BY id DESC LIMIT 1 OFFSET ?"
    first = conn.execute(query, (oldest, limit - 1 - newer)).fetchone()[0]
    return oldest, first, True
