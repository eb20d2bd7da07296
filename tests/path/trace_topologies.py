"""Hand-written span records for the synthetic topologies the path engine must reconstruct.

Each builder returns the spans (and logs) a real deployment would have exported, with times in
milliseconds from a fixed instant so expected numbers can be worked out by hand in the tests.
``MemorySource`` is a minimal in-memory read backend (the SpanSource protocol) for engine tests.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tracekit.records import (
    LogRecordData,
    RequestSummary,
    SpanLink,
    SpanRecord,
)

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
MS = 1_000_000


class Topology:
    """Builds spans with readable, deterministic ids: trace 1, 2... and span 1, 2... in hex."""

    def __init__(self, correlation_id: str | None = "req-7f3a") -> None:
        self.correlation_id = correlation_id
        self.spans: list[SpanRecord] = []
        self.logs: list[LogRecordData] = []
        self._span_ids = itertools.count(1)
        self._trace_ids = itertools.count(1)
        self.trace = self.new_trace()

    def new_trace(self) -> str:
        """Start a new trace id and make it current for spans without a parent.

        Ids start with a hash of the correlation ID so topologies can share one store.
        """
        prefix = zlib.crc32((self.correlation_id or "").encode())
        self.trace = f"{prefix:08x}{next(self._trace_ids):024x}"
        return self.trace

    def span(
        self,
        service: str,
        name: str,
        kind: str,
        start_ms: float,
        end_ms: float,
        parent: SpanRecord | None = None,
        *,
        links: Sequence[SpanRecord] = (),
        status: str = "UNSET",
        message: str = "",
        correlated: bool = True,
        parent_span_id: str | None = None,
        trace_id: str | None = None,
        attrs: dict[str, object] | None = None,
    ) -> SpanRecord:
        """Add one span; a parent puts it in the parent's trace."""
        attrs = dict(attrs or {})
        if correlated and self.correlation_id:
            attrs["correlation.id"] = self.correlation_id
        record = SpanRecord(
            trace_id=trace_id or (parent.trace_id if parent else self.trace),
            span_id=f"{next(self._span_ids):016x}",
            parent_span_id=parent.span_id if parent else parent_span_id,
            service=service,
            name=name,
            kind=kind,
            start_unix_nano=T0 + int(start_ms * MS),
            end_unix_nano=T0 + int(end_ms * MS),
            status=status,
            status_message=message,
            attributes=attrs,  # type: ignore[arg-type]
            links=[SpanLink(s.trace_id, s.span_id) for s in links],
        )
        self.spans.append(record)
        return record

    def log(self, span: SpanRecord, at_ms: float, body: str, severity: str = "INFO") -> None:
        """Add a log line emitted inside ``span``."""
        self.logs.append(
            LogRecordData(
                T0 + int(at_ms * MS), span.service, severity, 9, body,
                trace_id=span.trace_id, span_id=span.span_id,
                attributes={"correlation.id": self.correlation_id} if self.correlation_id else {},
            )
        )  # fmt: skip

    def http(
        self, caller: SpanRecord, service: str, route: str, start_ms: float, end_ms: float,
        *, method: str = "GET", lag_ms: float = 2, status_code: int = 200,
    ) -> tuple[SpanRecord, SpanRecord]:  # fmt: skip
        """A CLIENT span in the caller's service and the SERVER span it reached."""
        error = "ERROR" if status_code >= 500 else "UNSET"
        client = self.span(
            caller.service, f"{method} {route}", "CLIENT", start_ms, end_ms, caller,
            status=error, attrs={"http.request.method": method, "url.path": route,
                                 "http.response.status_code": status_code},
        )  # fmt: skip
        server = self.span(
            service, f"{method} {route}", "SERVER", start_ms + lag_ms, end_ms - lag_ms, client,
            status=error, attrs={"http.request.method": method, "http.route": route,
                                 "http.response.status_code": status_code},
        )  # fmt: skip
        return client, server

    def publish(
        self, caller: SpanRecord, queue: str, start_ms: float, end_ms: float, system: str = "kafka"
    ) -> SpanRecord:
        """A PRODUCER span publishing one message to ``queue``."""
        return self.span(
            caller.service, f"publish {queue}", "PRODUCER", start_ms, end_ms, caller,
            attrs={"messaging.system": system, "messaging.destination.name": queue,
                   "messaging.operation.type": "publish"},
        )  # fmt: skip

    def consume(
        self, service: str, queue: str, start_ms: float, end_ms: float,
        parent: SpanRecord | None = None, *, links: Sequence[SpanRecord] = (),
        correlated: bool = True, system: str = "kafka",
    ) -> SpanRecord:  # fmt: skip
        """A CONSUMER span: child of the producer, or (new trace) linking to producers."""
        return self.span(
            service, f"process {queue}", "CONSUMER", start_ms, end_ms, parent, links=links,
            correlated=correlated,
            attrs={"messaging.system": system, "messaging.destination.name": queue,
                   "messaging.operation.type": "process"},
        )  # fmt: skip


@dataclass
class MemorySource:
    """An in-memory read backend holding a list of spans and logs (the SpanSource protocol)."""

    spans: list[SpanRecord]
    logs: list[LogRecordData] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        self.calls.append("spans_by_correlation_id")
        return [s for s in self.spans if s.correlation_id == correlation_id]

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        wanted = set(trace_ids)
        self.calls.append("spans_by_trace_ids")
        return [s for s in self.spans if s.trace_id in wanted]

    def trace_ids_linking_to(self, trace_ids: Iterable[str]) -> set[str]:
        wanted = set(trace_ids)
        return {s.trace_id for s in self.spans for ln in s.links if ln.trace_id in wanted}

    def logs_by_trace_ids(self, trace_ids: Iterable[str]) -> list[LogRecordData]:
        wanted = set(trace_ids)
        return [log for log in self.logs if log.trace_id in wanted]

    def recent_requests(
        self,
        *,
        service: str | None = None,
        since_unix_nano: int | None = None,
        min_duration_ms: float | None = None,
        errors_only: bool = False,
        limit: int = 20,
    ) -> Sequence[RequestSummary]:
        roots = [s for s in self.spans if s.parent_span_id is None]
        found = [
            RequestSummary(
                r.correlation_id, r.trace_id, r.service, r.name, r.start_unix_nano,
                r.duration_ms, sum(1 for s in self.spans if s.trace_id == r.trace_id),
                any(s.status == "ERROR" for s in self.spans if s.trace_id == r.trace_id),
            )
            for r in roots
            if (service is None or r.service == service)
            and (since_unix_nano is None or r.start_unix_nano >= since_unix_nano)
            and (min_duration_ms is None or r.duration_ms >= min_duration_ms)
        ]  # fmt: skip
        found = [r for r in found if r.error or not errors_only]
        return sorted(found, key=lambda r: -r.start_unix_nano)[:limit]

    def spans_since(self, since_unix_nano: int, *, limit: int = 100_000) -> list[SpanRecord]:
        return [s for s in self.spans if s.start_unix_nano >= since_unix_nano][:limit]


# --- the topologies -------------------------------------------------------------------------


def checkout() -> Topology:
    """gateway -> orders (HTTP) -> kafka "orders.created" -> payments -> bank (HTTP), with logs."""
    t = Topology("req-checkout-1")
    root = t.span("gateway", "POST /checkout", "SERVER", 0, 120,
                  attrs={"http.route": "/checkout", "http.request.method": "POST",
                         "http.response.status_code": 202})  # fmt: skip
    _, orders = t.http(root, "orders", "/orders", 5, 100, method="POST")
    t.log(orders, 20, "order 1042 created")
    t.span("orders", "INSERT orders", "CLIENT", 10, 30, orders, attrs={"db.system": "sqlite"})
    producer = t.publish(orders, "orders.created", 40, 45)
    payments = t.consume("payments", "orders.created", 60, 200, producer)
    t.log(payments, 70, "charging card for order 1042")
    _, bank = t.http(payments, "bank", "/charge", 80, 190, method="POST")
    t.log(bank, 150, "charge approved")
    return t


def incident() -> Topology:
    """A failing request: retry, a queue hop into a new trace, clock skew, a silent service.

    web -> api (HTTP, first attempt 503, retried) -> kafka "jobs" -> worker (new trace, linked;
    its clock runs 200 ms behind) -> a span whose parent (a service that exported nothing) is
    missing, and a deep error in "ledger".
    """
    t = Topology("req-incident-9")
    root = t.span("web", "POST /jobs", "SERVER", 0, 90, status="ERROR",
                  message="job failed downstream")  # fmt: skip
    t.http(root, "api", "/jobs", 5, 25, method="POST", status_code=503)
    _, api = t.http(root, "api", "/jobs", 30, 80, method="POST")
    t.log(api, 40, "queued job 77", "INFO")
    producer = t.publish(api, "jobs", 50, 55)
    t.new_trace()
    worker = t.consume("worker", "jobs", -100, 60, links=[producer], correlated=False)
    t.log(worker, -90, "starting job 77", "INFO")
    orphan = t.span("ledger", "POST /entries", "SERVER", -80, -20, correlated=False,
                    parent_span_id="cd" * 8, trace_id=worker.trace_id,
                    status="ERROR", message="duplicate entry for job 77")  # fmt: skip
    t.log(orphan, -30, "rejecting duplicate entry", "ERROR")
    return t


def write_store(path: Path, *topologies: Topology) -> Path:
    """A store at ``path`` holding the spans and logs of ``topologies`` (default: the checkout
    and the incident)."""
    from tracekit.store import Store

    with Store(path) as store:
        for t in topologies or (checkout(), incident()):
            store.write_spans(t.spans)
            store.write_logs(t.logs)
    return path
