"""Span rows ready for the writer, and the encoder that builds them with committed ids only.

A row is a tuple of ints, strs and one bytearray, in ``spans`` column order except that the
first value packs the ids (trace id, span id, parent span id or eight zero bytes: see
``span_ids``) and that the trace and the correlation id are carried by value (the writer resolves
them inside its transaction, where retention may also delete them). Absent values are ``''`` or
``0``, which the INSERT turns into NULL: binding None or bytes costs sqlite3 several times what an
int, a str or a bytearray costs (it consults its adapter registry), and rows are written tens
of thousands a second.

Attributes are stored as a JSON list ``[k1, v1, k2, v2, ...]`` (see ``_encoding``); each
``k, v`` pair is built once as a text fragment and reused, since keys and most values repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tracekit._utf8 import clean_text
from tracekit.records import (
    CORRELATION_ATTRIBUTE,
    Attributes,
    AttributeValue,
    SpanRecord,
    request_correlation_id,
)
from tracekit.store._encoding import (
    INTERN_MAX_LENGTH,
    INTERN_MAX_VALUES_PER_KEY,
    KIND_CODES,
    STATUS_CODE_OF,
    dumps,
    id_bytes,
)
from tracekit.store._interner import Interner, resource_digest, resource_document
from tracekit.store._limits import bounded_span, bounded_value, clock_step_mended
from tracekit.store._reclaim import StaleRows

_MAX_CACHED_PAIRS = 100_000
# The types of attribute values whose fragments are cached, besides short strings: a fragment is
# looked up by (key, type, value), so 1, 1.0 and True stay apart. 0.0 is not cached: it equals
# -0.0, and one entry would serve both.
_CACHED_KINDS = frozenset((int, bool, float, type(None)))
_NO_PARENT = bytes(8)

SpanRow = tuple[object, ...]
LinkRow = tuple[object, ...]


def span_ids(trace_id: bytes, span_id: bytes, parent: bytes) -> bytearray:
    """The packed ids of a row (``parent``: 8 bytes, or empty for a root span)."""
    return bytearray(trace_id + span_id + (parent or _NO_PARENT))


def indexed_correlation(value: object) -> str | None:
    """The correlation id to index, or None when absent or longer than a request's ID can be
    (``records.MAX_CORRELATION_ID_LENGTH``: such text stays a plain attribute)."""
    found = request_correlation_id(value)
    return None if found is None else clean_text(found)


@dataclass(slots=True)
class SpanRows:
    """Rows for one write: spans, their links, and the traces and correlations they name."""

    spans: list[SpanRow] = field(default_factory=list)
    links: list[LinkRow] = field(default_factory=list)
    trace_ids: set[bytes] = field(default_factory=set)
    correlations: set[str] = field(default_factory=set)
    # The store generation whose ids the rows carry (None: not known, not checked; see _reclaim)
    generation: int | None = None

    def add(self, trace_id: bytes, correlation: str, row: SpanRow) -> None:
        """Append one span row (``correlation``: its indexed correlation id, or ``''``)."""
        self.spans.append(row)
        self.trace_ids.add(trace_id)
        if correlation:
            self.correlations.add(correlation)

    def extend(self, other: SpanRows) -> None:
        """Append ``other``'s rows (several requests become one transaction)."""
        if other.spans:
            if not self.spans:
                self.generation = other.generation
            elif other.generation != self.generation:
                self.generation = -1  # mixed: some rows are stale, so the write is refused
        self.spans.extend(other.spans)
        self.links.extend(other.links)
        self.trace_ids |= other.trace_ids
        self.correlations |= other.correlations


class RowEncoder:
    """Builds rows from records (or, through ``pair``, from any decoder) with committed ids.

    Thread-safe enough for the receiver: caches are dicts that only grow or get replaced whole,
    and a lost update only costs a cache miss.
    """

    def __init__(self, interner: Interner) -> None:
        self.interner = interner
        self.strings = interner.strings
        self.generation = interner.generation
        self._values_per_key: dict[str, int] = {}
        self._pairs: dict[tuple[str, type, AttributeValue], str] = {}

    def sync(self) -> bool:
        """Drop cached fragments if ids were reclaimed since they were built; True if so.

        (Values counted per key stay: they measure cardinality, not ids.)
        """
        if self.generation == self.interner.generation:
            return False
        self.generation = self.interner.generation
        self._pairs = {}
        return True

    def pair(self, key: str, value: AttributeValue) -> str | None:
        """The ``k,v`` fragment of one attribute, or None when a string needs interning first."""
        key_ref = self.strings.get(key)
        if key_ref is None:
            return None
        if type(value) is str:
            value_ref = self.strings.get(value)
            if value_ref is not None:
                return f"{-key_ref},{value_ref}"
            if self._wants_interning(key, value):
                return None
        return f"{key_ref},{dumps(bounded_value(value))}"

    def _wants_interning(self, key: str, value: str) -> bool:
        # Short values of keys that have not (yet) shown many distinct values: methods, routes,
        # hosts. Ids, paths with ids and timestamps stop being interned after 512 values.
        return (
            len(value) <= INTERN_MAX_LENGTH
            and self._values_per_key.get(key, 0) < INTERN_MAX_VALUES_PER_KEY
        )

    def needed(self, key: str, value: AttributeValue, out: dict[str, None]) -> None:
        """Add the strings that ``pair(key, value)`` needs interned to ``out`` (an ordered set)."""
        if key not in self.strings:
            out[key] = None
        if type(value) is str and value not in self.strings and self._wants_interning(key, value):
            if value not in out:
                self._values_per_key[key] = self._values_per_key.get(key, 0) + 1
            out[value] = None

    def attributes(self, attributes: Attributes, skip: str | None = None) -> str:
        """The stored attribute list (``''`` when empty); every string must be interned."""
        parts = []
        for key, value in attributes.items():
            if key == skip:
                continue
            kind = type(value)  # in the loop, not a call per attribute: every span passes here
            if (type(value) is str and len(value) <= INTERN_MAX_LENGTH) or (
                kind in _CACHED_KINDS and (value or kind is not float)
            ):
                parts.append(self._pairs.get((key, kind, value)) or self._cached(key, value))
            else:
                parts.append(self._pair_now(key, value))  # long or nested values rarely repeat
        return f"[{','.join(parts)}]" if parts else ""

    def _cached(self, key: str, value: AttributeValue) -> str:
        found = self._pair_now(key, value)
        if len(self._pairs) >= _MAX_CACHED_PAIRS:
            self._pairs = {}
        self._pairs[key, type(value), value] = found
        return found

    def _pair_now(self, key: str, value: AttributeValue) -> str:
        found = self.pair(key, value)
        if found is None:  # interned concurrently by nobody: cannot happen after ``prepare``
            raise LookupError("attribute strings were not interned before encoding")
        return found

    # -- records -> rows -----------------------------------------------------------------------

    def encode(self, records: Sequence[SpanRecord]) -> SpanRows:
        """Rows for span records (interning what they need first, in one transaction).

        Caches are bounded here, between encodings: prepare() decides what the rows need from
        what the caches hold, and nothing may leave them until the rows are built.
        """
        if len(self._values_per_key) >= _MAX_CACHED_PAIRS:  # unique keys: count afresh
            self._values_per_key = {}
        self.interner.bound()
        records = [clock_step_mended(bounded_span(record)) for record in records]
        try:
            return self._encode(records)
        except StaleRows:  # strings were reclaimed meanwhile: every cache is empty now
            self.sync()
            return self._encode(records)

    def _encode(self, records: Sequence[SpanRecord]) -> SpanRows:
        documents = _ResourceDocuments()
        self.prepare(records, documents)
        self.sync()
        out = SpanRows(generation=self.interner.generation)
        for record in records:
            self.add_record(out, record, self.interner.resources[documents.digest(record)])
        return out

    def prepare(self, records: Iterable[SpanRecord], documents: _ResourceDocuments) -> None:
        """Intern every string and resource ``records`` need."""
        # In order of first appearance: keys and names (in every span) get the small ids, which
        # are the short ones in the stored attribute text.
        needed: dict[str, None] = {}
        for record in records:
            documents.digest(record)
            needed[record.service] = needed[record.name] = None
            if record.scope:
                needed[record.scope] = None
            # every attribute the record stores, but its correlation id (a table of its own)
            self._needed_in(record.attributes, needed, skip=CORRELATION_ATTRIBUTE)
            for event in record.events:
                self._needed_in(event.attributes, needed)
            for link in record.links:
                self._needed_in(link.attributes, needed)
            correlation = record.attributes.get(CORRELATION_ATTRIBUTE)
            if indexed_correlation(correlation) is None and correlation is not None:
                self.needed(CORRELATION_ATTRIBUTE, correlation, needed)
        self.interner.add(needed, documents.new(self.interner.resources))

    def _needed_in(
        self, attributes: Attributes, out: dict[str, None], skip: str | None = None
    ) -> None:
        """``needed`` for each of ``attributes`` but ``skip``; one loop, as every span's
        attributes pass here, and most of them are interned already."""
        strings = self.strings
        for key, value in attributes.items():
            if (key not in strings or (type(value) is str and value not in strings)) and (
                key != skip
            ):
                self.needed(key, value, out)

    def add_record(self, out: SpanRows, record: SpanRecord, resource_ref: int) -> None:
        """Append the row (and link rows) of one record whose strings are interned."""
        trace_id = id_bytes(record.trace_id, 16, "trace id")
        span_id = id_bytes(record.span_id, 8, "span id")
        parent = record.parent_span_id
        correlation = indexed_correlation(record.attributes.get(CORRELATION_ATTRIBUTE))
        out.add(trace_id, correlation or "", (
            span_ids(trace_id, span_id, id_bytes(parent, 8, "parent span id") if parent else b""),
            self.strings[record.service], self.strings[record.name],
            KIND_CODES.get(record.kind, 0), record.start_unix_nano,
            record.end_unix_nano - record.start_unix_nano, STATUS_CODE_OF.get(record.status, 0),
            clean_text(record.status_message), correlation or "", resource_ref,
            self.strings[record.scope] if record.scope else 0,
            self.attributes(record.attributes, CORRELATION_ATTRIBUTE if correlation else None),
            self.events(record), 1 if record.links else 0,
        ))  # fmt: skip
        out.links.extend(self._link_rows(record, trace_id, span_id))

    def _link_rows(self, record: SpanRecord, trace_id: bytes, span_id: bytes) -> list[LinkRow]:
        return [
            (
                bytearray(trace_id),
                bytearray(span_id),
                position,
                bytearray(id_bytes(link.trace_id, 16, "linked trace id")),
                bytearray(id_bytes(link.span_id, 8, "linked span id")),
                self.attributes(link.attributes),
            )
            for position, link in enumerate(record.links)
        ]

    def events(self, record: SpanRecord) -> str:
        """The stored event list ``[[time, name, [k, v, ...]], ...]`` (``''`` when none)."""
        if not record.events:
            return ""
        parts = [
            f"[{e.time_unix_nano},{dumps(e.name)},{self.attributes(e.attributes) or '[]'}]"
            for e in record.events
        ]
        return f"[{','.join(parts)}]"


class _ResourceDocuments:
    """Resource documents and digests of one batch (records of one request share a dict)."""

    def __init__(self) -> None:
        self._by_identity: dict[tuple[int, str | None], bytes] = {}
        self._documents: dict[bytes, str] = {}

    def digest(self, record: SpanRecord) -> bytes:
        key = (id(record.resource), record.service_version)
        found = self._by_identity.get(key)
        if found is None:
            document = resource_document(record.resource, record.service_version)
            found = resource_digest(document)
            self._by_identity[key] = found
            self._documents[found] = document
        return found

    def new(self, known: dict[bytes, int]) -> list[str]:
        return [doc for digest, doc in self._documents.items() if digest not in known]
