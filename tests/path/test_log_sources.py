"""Read backends of the ``tracekit.records`` protocols other than the store's: a source that holds
log records by correlation ID but cannot stop after the first lines of traces
(``CorrelatedLogSource`` without ``LimitedLogSource``) still has its lines shown."""

from __future__ import annotations

from dataclasses import dataclass

from trace_topologies import MS, T0, MemorySource, checkout

from tracekit.path import reconstruct
from tracekit.records import CorrelatedLogSource, LimitedLogSource, LogRecordData


@dataclass
class CorrelatedMemorySource(MemorySource):
    """A backend holding log records by correlation ID, as a log store another team wrote
    might (the protocol as it was before the store could bound trace logs)."""

    def logs_by_correlation_id(
        self, correlation_id: str, limit: int | None = None
    ) -> list[LogRecordData]:
        found = [log for log in self.logs if log.correlation_id == correlation_id]
        return found[:limit] if limit is not None else found


def test_a_correlated_log_source_without_the_bound_shows_its_lines() -> None:
    """The lines of the request's traces and a line stamped with its correlation ID alone (a
    worker in correlation-only mode): ``CorrelatedLogSource`` gained a method when the store
    began to bound trace logs, and such a source lost its correlated lines."""
    t = checkout()
    untraced = LogRecordData(
        T0 + 300 * MS, "mailer", "INFO", 9, "receipt mailed",
        attributes={"correlation.id": t.correlation_id},
    )  # fmt: skip
    source = CorrelatedMemorySource(t.spans, [*t.logs, untraced])
    assert isinstance(source, CorrelatedLogSource) and not isinstance(source, LimitedLogSource)

    path = reconstruct(source, t.correlation_id or "")

    assert path is not None
    bodies = [log.body for log in path.logs]
    assert bodies == [
        "order 1042 created",
        "charging card for order 1042",
        "charge approved",
        "receipt mailed",
    ]
