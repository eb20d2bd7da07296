"""`tracekit search --service NAME` for a service the store never held (a typo, another
environment's name): the answer is "no requests match", and finding that out must not cost
a walk over every span stored."""

from __future__ import annotations

from pathlib import Path

from tracekit.records import SpanRecord
from tracekit.store import Store


def _requests(first: int, count: int) -> list[SpanRecord]:
    return [
        SpanRecord(
            trace_id=f"{n:032x}", span_id=f"{n:016x}", parent_span_id=None, service="gateway",
            name="GET /", kind="SERVER", start_unix_nano=n * 1_000_000,
            end_unix_nano=n * 1_000_000 + 500, attributes={"correlation.id": f"c{n}"},
        )
        for n in range(first, first + count)
    ]  # fmt: skip


def test_searching_a_service_never_stored_reads_no_spans(tmp_path: Path) -> None:
    """Each entry span of the store was looked at (0.22 s at 1M spans; 2 s at 10M), since
    the name matched no stored id only row by row; now the name is looked up first. SQLite's
    work (virtual machine steps) no longer grows with the store."""
    store = Store(tmp_path / "s.db")
    steps: list[int] = []

    def searched() -> int:
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0

        store._reader_side().conn.set_progress_handler(step, 100)
        try:
            assert store.recent_requests(service="gateway-typo") == []
            assert [r.correlation_id for r in store.recent_requests(service="gateway", limit=1)]
        finally:
            store._reader_side().conn.set_progress_handler(None, 0)
        return counted[0]

    store.write_spans(_requests(1, 100))
    steps.append(searched())
    store.write_spans(_requests(101, 2_000))
    steps.append(searched())
    store.close()
    assert steps[1] <= steps[0] + 50, steps
