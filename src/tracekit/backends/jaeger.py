"""Jaeger as a read backend (api_v3 over HTTP, as served by jaeger-query on port 16686).

- trace by id: ``GET /api/v3/traces/<id>`` answering ``{"result": {"resourceSpans": [...]}}``
  (OTLP/JSON; a streamed answer is several such objects, one per line);
- search: ``GET /api/v3/traces?query.service_name=&query.attributes=&query.start_time_min=
  &query.start_time_max=&query.num_traces=`` (RFC 3339 times). Most storages need a service
  name to search, so without ``--service`` the client asks ``GET /api/v3/services`` and searches
  each service (a bounded number of them);
- Jaeger cannot search by span link and stores no logs: ``trace_ids_linking_to`` and
  ``logs_by_trace_ids`` find nothing (a consumer trace without the correlation ID is joined only
  when a span already found links to it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tracekit.backends._http import JsonClient, NotFound
from tracekit.backends._otlp_json import spans_from_document
from tracekit.records import (
    CORRELATION_ATTRIBUTE,
    BackendError,
    LogRecordData,
    RequestSummary,
    SpanRecord,
)

LOOKBACK_SECONDS = 2 * 24 * 3600
MAX_SERVICES = 25
MAX_TRACES_PER_SEARCH = 100


def rfc3339(unix_seconds: float) -> str:
    """A UTC timestamp as api_v3 wants it."""
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JaegerSource:
    """Reads spans from Jaeger's api_v3; implements ``tracekit.records.SpanSource``."""

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, retries: int = 2, service: str | None = None
    ) -> None:
        self.client = JsonClient(base_url, name="Jaeger", timeout=timeout, retries=retries)
        self.service = service
        self._traces: dict[str, list[SpanRecord]] = {}

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces (unknown ids contribute nothing)."""
        return [span for trace_id in trace_ids for span in self._trace(trace_id.lower())]

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Spans carrying ``correlation.id``, searched service by service."""
        attributes = {CORRELATION_ATTRIBUTE: correlation_id}
        spans = self._find(self._services(), attributes, time.time() - LOOKBACK_SECONDS)
        return [s for s in spans if s.correlation_id == correlation_id]

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Jaeger cannot search by link."""
        return set()

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Jaeger holds no logs."""
        return []

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        """Newest traces of the service(s), summarised by their root span."""
        since = since_unix_nano / 1e9 if since_unix_nano else time.time() - 3600
        services = [service] if service else self._services()
        spans = self._find(services, {}, since, limit=limit, min_duration_ms=min_duration_ms)
        found = [s for s in _summaries(spans) if s.error or not errors_only]
        if service:
            found = [s for s in found if s.root_service == service]
        return sorted(found, key=lambda r: -r.start_unix_nano)[:limit]

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans of the newest traces of every service since then."""
        spans = self._find(self._services(), {}, since_unix_nano / 1e9)
        return [s for s in spans if s.start_unix_nano >= since_unix_nano][:limit]

    def _services(self) -> list[str]:
        if self.service:
            return [self.service]
        try:
            answer = self.client.get("/api/v3/services")
        except NotFound:
            raise BackendError(f"Jaeger at {self.client.base_url} has no api_v3") from None
        services = answer.get("services") if isinstance(answer, dict) else None
        return sorted(str(s) for s in services or [])[:MAX_SERVICES]

    def _trace(self, trace_id: str) -> list[SpanRecord]:
        if trace_id not in self._traces:
            try:
                answer = self.client.get(f"/api/v3/traces/{trace_id}")
            except NotFound:
                answer = {}
            self._traces[trace_id] = _spans(answer)
        return self._traces[trace_id]

    def _find(
        self, services: list[str], attributes: dict[str, str], since: float, *,
        limit: int = MAX_TRACES_PER_SEARCH, min_duration_ms: float | None = None,
    ) -> list[SpanRecord]:  # fmt: skip
        seen: dict[tuple[str, str], SpanRecord] = {}
        for service in services:
            params = {"query.service_name": service, "query.start_time_min": rfc3339(since),
                      "query.start_time_max": rfc3339(time.time() + 60),
                      "query.num_traces": str(limit)}  # fmt: skip
            if attributes:
                params["query.attributes"] = json.dumps(attributes)
            if min_duration_ms is not None:
                params["query.duration_min"] = f"{min_duration_ms / 1000:g}s"
            try:
                answer = self.client.get("/api/v3/traces", params)
            except NotFound:
                continue  # Jaeger answers 404 when a search finds no trace
            for span in _spans(answer):
                seen.setdefault((span.trace_id, span.span_id), span)
        return list(seen.values())


def _spans(answer: Any) -> list[SpanRecord]:
    """Spans from one answer, or from each chunk of a streamed one."""
    chunks = answer if isinstance(answer, list) else [answer]
    return [span for chunk in chunks for span in spans_from_document(chunk)]


def _summaries(spans: list[SpanRecord]) -> list[RequestSummary]:
    """One request per trace found, except traces that continue another one found.

    A trace whose root links to a span of the answer (a consumer that started a new trace) is
    part of that request, as ``tracekit trace`` shows it; a link to a context not in the answer
    (a public endpoint's caller) leaves the trace an entry point.
    """
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    known = {(s.trace_id, s.span_id) for s in spans}
    found = []
    for trace in by_trace.values():
        root = _root(trace)
        if not any((link.trace_id, link.span_id) in known for link in root.links):
            found.append(_summary(trace, root))
    return found


def _root(trace: list[SpanRecord]) -> SpanRecord:
    """The true root, else the earliest span whose parent is missing, else the earliest span."""
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if not s.parent_span_id or s.parent_span_id not in ids]
    return min(roots or trace, key=lambda s: (s.parent_span_id is not None, s.start_unix_nano))


def _summary(trace: list[SpanRecord], root: SpanRecord) -> RequestSummary:
    end = max(s.end_unix_nano for s in trace)
    return RequestSummary(
        root.correlation_id, root.trace_id, root.service, root.name, root.start_unix_nano,
        (end - root.start_unix_nano) / 1e6, len(trace), any(s.status == "ERROR" for s in trace),
    )  # fmt: skip
