"""Grafana Tempo as a read backend (HTTP API).

- trace by id: ``GET /api/v2/traces/<id>`` (``{"trace": {"resourceSpans": [...]}}``), falling back
  to ``GET /api/traces/<id>`` (``{"batches": [...]}``) on Tempo versions without v2;
- search: ``GET /api/search?q=<TraceQL>&limit=&start=&end=`` answering
  ``{"traces": [{"traceID", "rootServiceName", "rootTraceName", "startTimeUnixNano",
  "durationMs", "spanSets": [...]}]}``;
- spans linking into a trace: TraceQL ``{ link:traceID = "..." }`` (newer Tempo); when the server
  refuses that query the link walk simply finds nothing more.
Tempo stores no logs, so ``logs_by_trace_ids`` is empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from tracekit.backends._http import JsonClient, NotFound
from tracekit.backends._otlp_json import decode_id, spans_from_document
from tracekit.records import BackendError, LogRecordData, RequestSummary, SpanRecord

LOOKBACK_SECONDS = 7 * 24 * 3600
MAX_TRACES_PER_SEARCH = 100
MAX_TRACES_FOR_MAP = 200


def traceql_string(value: str) -> str:
    """``value`` as a TraceQL string literal (quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TempoSource:
    """Reads spans from Tempo's HTTP API; implements ``tracekit.records.SpanSource``."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, retries: int = 2) -> None:
        self.client = JsonClient(base_url, name="Tempo", timeout=timeout, retries=retries)
        self._traces: dict[str, list[SpanRecord]] = {}
        self._use_v2 = True

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        """Every span of the given traces (unknown ids contribute nothing)."""
        return [span for trace_id in trace_ids for span in self._trace(trace_id.lower())]

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        """Spans carrying ``correlation.id``, found with a TraceQL search."""
        query = "{ span.correlation.id = " + traceql_string(correlation_id) + " }"
        trace_ids = [t["trace_id"] for t in self._search(query, MAX_TRACES_PER_SEARCH)]
        spans = self.spans_by_trace_ids(trace_ids)
        return [s for s in spans if s.correlation_id == correlation_id]

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        """Traces with a span linking into ``trace_ids`` (empty where Tempo cannot search links)."""
        found: set[str] = set()
        for trace_id in trace_ids:
            query = "{ link:traceID = " + traceql_string(trace_id) + " }"
            try:
                found.update(t["trace_id"] for t in self._search(query, MAX_TRACES_PER_SEARCH))
            except BackendError:
                return found  # older Tempo: no link intrinsics; nothing more can be found
        return found - set(trace_ids)

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        """Tempo holds no logs."""
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
        """Newest traces matching the filters, from one TraceQL search."""
        query = _search_query(service, min_duration_ms, errors_only)
        start = since_unix_nano // 10**9 if since_unix_nano else None
        found = [_summary(t, errors_only) for t in self._search(query, limit, start)]
        return sorted(found, key=lambda r: -r.start_unix_nano)[:limit]

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        """Spans of the newest traces since then (at most a few hundred traces are read)."""
        found = self._search("{ }", MAX_TRACES_FOR_MAP, since_unix_nano // 10**9)
        spans = self.spans_by_trace_ids(t["trace_id"] for t in found)
        return [s for s in spans if s.start_unix_nano >= since_unix_nano][:limit]

    def _trace(self, trace_id: str) -> list[SpanRecord]:
        if trace_id not in self._traces:
            self._traces[trace_id] = spans_from_document(self._fetch_trace(trace_id))
        return self._traces[trace_id]

    def _fetch_trace(self, trace_id: str) -> Any:
        if self._use_v2:
            try:
                return self.client.get(f"/api/v2/traces/{trace_id}")
            except NotFound:
                pass  # not there, or a Tempo without the v2 endpoint: v1 tells which
        try:
            document = self.client.get(f"/api/traces/{trace_id}")
        except NotFound:
            return {}
        self._use_v2 = False
        return document

    def _search(self, query: str, limit: int, start: int | None = None) -> list[dict[str, Any]]:
        now = int(time.time())
        params = {"q": query, "limit": str(limit), "start": str(start or now - LOOKBACK_SECONDS),
                  "end": str(now + 60)}  # fmt: skip
        try:
            answer = self.client.get("/api/search", params)
        except NotFound:
            raise BackendError(f"Tempo at {self.client.base_url} has no /api/search") from None
        traces = answer.get("traces") if isinstance(answer, dict) else None
        return [_trace_hit(t) for t in traces or [] if isinstance(t, dict) and t.get("traceID")]


def _search_query(service: str | None, min_duration_ms: float | None, errors: bool) -> str:
    conditions = []
    if service:
        conditions.append("trace:rootService = " + traceql_string(service))
    if min_duration_ms is not None:
        conditions.append(f"trace:duration >= {min_duration_ms:g}ms")
    if errors:
        conditions.append("status = error")
    selector = "{ " + " && ".join(conditions) + " }" if conditions else "{ }"
    return selector + " | select(span.correlation.id)"


def _trace_hit(hit: dict[str, Any]) -> dict[str, Any]:
    """One search hit, normalised (Tempo drops leading zeros of trace ids in search results)."""
    return {**hit, "trace_id": decode_id(str(hit["traceID"]), 16)}


def _summary(hit: dict[str, Any], error: bool) -> RequestSummary:
    matched = 0
    correlation_id: str | None = None
    for span_set in hit.get("spanSets") or ([hit["spanSet"]] if hit.get("spanSet") else []):
        matched += int(span_set.get("matched") or 0)
        for span in span_set.get("spans") or []:
            for attribute in span.get("attributes") or []:
                if attribute.get("key") in ("correlation.id", "span.correlation.id"):
                    value = (attribute.get("value") or {}).get("stringValue")
                    correlation_id = correlation_id or value
    root_service = str(hit.get("rootServiceName") or "<root span not yet received>")
    return RequestSummary(
        correlation_id, hit["trace_id"], root_service,
        str(hit.get("rootTraceName") or ""), int(hit.get("startTimeUnixNano") or 0),
        float(hit.get("durationMs") or 0), matched, error,
    )  # fmt: skip
