"""OTLP/protobuf trace requests straight into store rows: the receiver's hot path.

A span whose strings are all interned already becomes a row without any intermediate object:
its attribute bytes, status, resource and scope are looked up in caches (see ``_lazy_proto``).
A span that needs something new interned, or that carries events or links, takes the general
path (a ``SpanRecord``, then ``RowEncoder.encode``); after a few requests that is rare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracekit._utf8 import clean_text
from tracekit.receiver._decoded import (
    MAX_SPAN_ELEMENTS,
    SPAN_LIST_BOUNDS,
    Admit,
    Decoded,
    MalformedRequest,
    admit_any,
    service_of,
    span_problem,
)
from tracekit.receiver._lazy_proto import (
    LazyTraceRequest,
    TolerantTraceRequest,
    string_attribute,
)
from tracekit.receiver._protobuf import (
    BAD_RESOURCE,
    any_value,
    attributes,
    parse,
    refusal,
    span_count,
    span_record,
)
from tracekit.records import CORRELATION_ATTRIBUTE, Attributes, AttributeValue, SpanRecord
from tracekit.store._interner import resource_digest, resource_document
from tracekit.store._limits import (
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    bounded_attributes,
    cut,
    time_bounds,
)
from tracekit.store._rows import RowEncoder, indexed_correlation

BAD_SPAN = "span is not a valid OTLP Span (a string that is not UTF-8?)"

# OTLP SpanKind numbers -> stored kind codes (INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER)
_KIND_CODES = (0, 0, 1, 2, 3, 4)
_MAX_CACHED = 100_000
# Resources and scopes: each process that exports is one resource, kept with all its attributes
# (about 4 KB for a Kubernetes pod). Processes come and go (deploys, autoscaling, jobs), and at
# 100,000 entries those seen once cost hundreds of MB; the live ones are far fewer than this.
_MAX_CACHED_RESOURCES = 1024
_SLOW_CHUNK = 2000
# Attributes cached by their bytes at most this long: the cache is bounded in entries, and long
# values (SQL, payloads, stack traces) are the unique ones that would fill it for nothing.
_MAX_CACHED_BYTES = 160
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


@dataclass(frozen=True, slots=True)
class _Resource:
    ref: int
    service: str
    service_ref: int
    version: str | None
    attributes: Attributes


class SpanRowDecoder:
    """Decodes ExportTraceServiceRequest bodies into ``Decoded.rows``; shared by request threads."""

    def __init__(self, encoder: RowEncoder) -> None:
        self.encoder = encoder
        self._pairs: dict[bytes, str] = {}
        self._correlations: dict[bytes, str] = {}
        self._statuses: dict[bytes, tuple[int, str]] = {}
        self._resources: dict[bytes, _Resource] = {}
        self._scopes: dict[bytes, tuple[int, str | None]] = {}
        self._generation = -1

    def _sync(self) -> None:
        """Forget every cached id when strings were reclaimed since (see store ``_reclaim``)."""
        interner = self.encoder.interner
        if interner.generation < 0:
            interner.refresh()
        interner.bound()
        self.encoder.sync()
        if self._generation != interner.generation:
            self._generation = interner.generation
            for cache in (self._pairs, self._correlations, self._resources, self._scopes):
                cache.clear()

    def decode(self, body: bytes, admit: Admit = admit_any) -> Decoded:
        """Rows for every valid span of the request; spans without ids are counted as rejected."""
        try:
            request = parse(LazyTraceRequest(), body)
        except MalformedRequest:  # perhaps only a span name that is not UTF-8: see _slow
            request = parse(TolerantTraceRequest(), body)
        admit(span_count(request))
        self._sync()
        out = Decoded()
        out.rows.generation = self._generation
        slow: list[SpanRecord] = []
        bounds = time_bounds()
        for resource_spans in request.resource_spans:
            try:
                resource = self._resource(resource_spans.resource)
            except MalformedRequest as error:  # a string not UTF-8: its spans are rejected
                count = sum(len(ss.spans) for ss in resource_spans.scope_spans)
                out.refuse(refusal(error, "resource", BAD_RESOURCE), count)
                continue
            for scope_spans in resource_spans.scope_spans:
                scope_ref, scope = self._scope(scope_spans.scope)
                for span in scope_spans.spans:
                    out.total += 1
                    if not self._row(span, resource, scope_ref, out, bounds):
                        self._slow(span, resource, scope, out, slow, bounds)
                        if len(slow) >= _SLOW_CHUNK:  # records cost far more than rows
                            out.rows.extend(self.encoder.encode(slow))
                            slow.clear()
        if slow:
            out.rows.extend(self.encoder.encode(slow))
        return out

    def _row(
        self, span: Any, resource: _Resource, scope_ref: int, out: Decoded, bounds: tuple[int, int]
    ) -> bool:
        """Append the span's row if every part of it is cached; False means "take the slow path".

        This runs for every span received, so it is written for speed: one pass, no calls
        but dict lookups for the common case.
        """
        trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        name_ref = self.encoder.strings.get(span.name)
        status = self._statuses.get(span.status)
        if name_ref is None or status is None or not _plain(trace_id, span_id, parent):
            return False
        if not bounds[0] <= start <= end <= bounds[1]:
            return False
        if span.events or span.links or len(span.attributes) > MAX_SPAN_ELEMENTS:
            return False
        get = self._pairs.get
        parts: list[str] = []
        correlation = ""
        for raw in span.attributes:
            # each attribute's bytes map to its "k,v" fragment, or "" for the correlation id
            part = get(raw)
            if part is None:
                try:
                    part = self._pair(raw)
                except MalformedRequest:  # its span is rejected on the slow path
                    return False
                if part is None:
                    return False
            if part:
                parts.append(part)
            else:
                correlation = self._correlation(raw)
        kind = span.kind
        rows = out.rows
        rows.spans.append((
            bytearray(trace_id + span_id + (parent or _ZERO_SPAN)), resource.service_ref, name_ref,
            _KIND_CODES[kind] if 0 <= kind < 6 else 0, start, end - start, status[0], status[1],
            correlation, resource.ref, scope_ref, f"[{','.join(parts)}]" if parts else "", "", 0,
        ))  # fmt: skip
        rows.trace_ids.add(trace_id)
        if correlation:
            rows.correlations.add(correlation)
        return True

    def _pair(self, raw: bytes) -> str | None:
        """Encode one never-seen attribute (None when its strings are not interned yet).

        ``''`` stands for the correlation id, which is stored in a column of its own.
        """
        key, value = string_attribute(raw) or _key_value(raw)
        correlation = indexed_correlation(value) if key == CORRELATION_ATTRIBUTE else None
        if correlation:
            _remember(self._correlations, raw, correlation)
        found = "" if correlation else self.encoder.pair(key, value)
        if found is not None and len(raw) <= _MAX_CACHED_BYTES:  # long ones rarely repeat
            _remember(self._pairs, raw, found)
        return found

    def _correlation(self, raw: bytes) -> str:
        found = self._correlations.get(raw)
        if found is None:  # its cache was just cleared
            found = indexed_correlation(_key_value(raw)[1]) or ""
        return found

    def _slow(
        self,
        span: Any,
        resource: _Resource,
        scope: str | None,
        out: Decoded,
        slow: list[Any],
        bounds: tuple[int, int],
    ) -> None:
        """The general path: the span as a record (validating ids and every nested message).

        A span that does not parse on its own (a string that is not UTF-8, which C++ and Go
        SDKs can send, or a malformed attribute) is rejected alone: the others are stored.
        """
        cut = _cut(span)
        try:
            full = parse(Span(), span.SerializeToString())
        except MalformedRequest as error:
            out.reject(refusal(error, "span", BAD_SPAN))
            return
        try:  # an id of the wrong length, a value nested too deep: this span alone is refused
            record = span_record(
                full, resource.service, resource.version, resource.attributes, scope, cut
            )
        except MalformedRequest as error:
            out.reject(str(error))
            return
        problem = span_problem(record, bounds)
        if problem is None:
            slow.append(record)
            self._status(span.status, full.status)
        else:
            out.reject(problem)

    def _status(self, raw: bytes, status: Any) -> None:
        code = status.code if 0 <= status.code <= 2 else 0
        _remember(self._statuses, raw, (code, clean_text(cut(status.message, MAX_VALUE_CHARS))))

    def _resource(self, raw: bytes) -> _Resource:
        found = self._resources.get(raw)
        if found is None:
            resource = bounded_attributes(attributes(parse(Resource(), raw).attributes))
            service, version = service_of(resource)
            document = resource_document(resource, version)
            self.encoder.interner.add([service], [document])
            ref = self.encoder.interner.resources[resource_digest(document)]
            found = _Resource(ref, service, self.encoder.strings[service], version, resource)
            _remember(self._resources, raw, found, _MAX_CACHED_RESOURCES)
        return found

    def _scope(self, raw: bytes) -> tuple[int, str | None]:
        found = self._scopes.get(raw)
        if found is None:
            try:
                name = cut(parse(InstrumentationScope(), raw).name, MAX_NAME_CHARS) or None
            except MalformedRequest:  # a string not UTF-8: its spans are kept, unscoped
                name = None
            if name:
                self.encoder.interner.add([name], [])
            found = (self.encoder.strings[name] if name else 0, name)
            _remember(self._scopes, raw, found, _MAX_CACHED_RESOURCES)
        return found


def _cut(span: Any) -> tuple[int, int, int]:
    """Leave out of the lazy ``span`` its attributes, events and links past their bounds
    (``SPAN_LIST_BOUNDS``), still bytes, before it is parsed whole; how many of each went."""
    cut = []
    lists = (span.attributes, span.events, span.links)
    for found, bound in zip(lists, SPAN_LIST_BOUNDS, strict=True):
        over = len(found) - bound
        if over > 0:
            del found[bound:]
        cut.append(max(over, 0))
    return cut[0], cut[1], cut[2]


def _plain(trace_id: bytes, span_id: bytes, parent: bytes) -> bool:
    """Ids the fast path can store as they are (the rest: rejected or refused)."""
    if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return False
    return not parent or (len(parent) == 8 and parent != _ZERO_SPAN)


def _key_value(raw: bytes) -> tuple[str, AttributeValue]:
    pair = parse(KeyValue(), raw)
    return pair.key, any_value(pair.value)


def _remember(cache: dict[bytes, Any], key: bytes, value: Any, bound: int = _MAX_CACHED) -> None:
    """Cache ``value``; a cache that grew past its bound starts over (high-cardinality input)."""
    if len(cache) >= bound:
        cache.clear()
    cache[key] = value
