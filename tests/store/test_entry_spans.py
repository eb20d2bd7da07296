"""The store picks a window's traces entering a service itself (``tracekit diff``'s sets): the
same spans, and the same sets, as from every span of the window, without decoding the others."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.diff.select import ENTRY_KINDS, Selector, find_request_sets
from tracekit.records import SPAN_KINDS, SpanRecord
from tracekit.store import Store
from tracekit.store._reader import StoreReader

BASE = 1_700_000_000_000_000_000
SERVICES = ("web", "api", "worker")


def span_id(n: int) -> str:
    return f"{n + 1:016x}"


def trace_id(n: int) -> str:
    return f"{n + 1:032x}"


def engine_window(store: Store, services: list[str], since: int, limit: int) -> list[SpanRecord]:
    """The window ``diff`` read before, narrowed to the traces entering ``services``."""
    spans = store.newest_spans_since(since, limit=limit + 1)[-limit:] if limit else []
    entering = {s.trace_id for s in spans if s.service in services and s.kind in ENTRY_KINDS}
    return [s for s in spans if s.trace_id in entering]


@st.composite
def stores(draw: st.DrawFn) -> list[SpanRecord]:
    """Spans of a few traces: any service and kind, starts that often tie, correlation IDs on
    some spans only."""
    count = draw(st.integers(1, 30))
    spans = []
    for n in range(count):
        start = BASE + draw(st.integers(0, 20)) * 1_000_000
        cid = draw(st.sampled_from((None, "c1", "c2")))
        spans.append(SpanRecord(
            trace_id=trace_id(draw(st.integers(0, 4))), span_id=span_id(n), parent_span_id=None,
            service=draw(st.sampled_from(SERVICES)), name="op",
            kind=draw(st.sampled_from(SPAN_KINDS)), start_unix_nano=start,
            end_unix_nano=start + 1_000_000,
            attributes={"service.version": draw(st.sampled_from(("1", "2")))}
            | ({"correlation.id": cid} if cid else {}),
        ))  # fmt: skip
    return spans


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(), st.integers(0, 35), st.integers(0, 12), st.sampled_from(SERVICES))
def test_the_store_picks_the_spans_of_the_traces_entering_the_service(
    spans: list[SpanRecord], limit: int, since_ms: int, service: str
) -> None:
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "s.db") as store:
        store.write_spans(spans)
        since = BASE + since_ms * 1_000_000
        found, more = store.newest_spans_entering([service], ENTRY_KINDS, since, limit=limit)
        assert found == engine_window(store, [service], since, limit)
        assert more == (len(store.newest_spans_since(since, limit=limit + 1)) > limit)


def test_a_row_another_tool_damaged_counts_as_the_window_read_it(tmp_path: Path) -> None:
    """A span row holding text for its start is left out of the window, as the reader that
    decodes every span leaves it out, and the window is as many of the others."""
    spans = [
        SpanRecord(trace_id(n), span_id(n), None, "api", "op", "SERVER", BASE + n, BASE + n + 5)
        for n in range(6)
    ]
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.write_spans(spans)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE spans SET start_ns = 'x' WHERE start_ns = ?", (BASE + 4,))
    with Store(path) as store:
        for limit in range(7):
            found, more = store.newest_spans_entering(["api"], ENTRY_KINDS, BASE, limit=limit)
            assert found == engine_window(store, ["api"], BASE, limit)
            assert more == (len(store.newest_spans_since(BASE, limit=limit + 1)) > limit)


def request(n: int, service: str, version: str) -> list[SpanRecord]:
    """A request entering ``service``: its SERVER span and a CLIENT span under it."""
    trace, start = trace_id(n), BASE + n * 1_000_000
    attributes = {"correlation.id": f"req-{n}"}
    return [
        SpanRecord(trace, span_id(2 * n), None, service, "GET /x", "SERVER", start,
                   start + 500_000, attributes=attributes, service_version=version),
        SpanRecord(trace, span_id(2 * n + 1), span_id(2 * n), service, "GET", "CLIENT",
                   start + 1, start + 400_000, attributes=attributes, service_version=version),
    ]  # fmt: skip


def test_a_set_decodes_the_requests_of_its_service_not_the_whole_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the sets were picked from every span of the window decoded (200,000 spans: 5.2 s
    and 441 MB); now only the traces entering the service are, and the sets are the same."""
    spans = [s for n in range(2_000) for s in request(n, "web", "1")]
    spans += [s for n in range(2_000, 2_006) for s in request(n, "api", "1" if n % 2 else "2")]
    a = Selector("api", (("service.version", "1"),))
    b = Selector("api", (("service.version", "2"),))
    with Store(tmp_path / "s.db") as store:
        store.write_spans(spans)
        decoded = []
        read_spans = StoreReader._spans

        def counting(reader: StoreReader, rows: list[object]) -> list[SpanRecord]:
            found = read_spans(reader, rows)  # type: ignore[arg-type]
            decoded.extend(found)
            return found

        monkeypatch.setattr(StoreReader, "_spans", counting)
        sets_a, sets_b, warnings = find_request_sets(store, a, b, BASE, 100)
    assert [p.correlation_id for p in sets_a] == ["req-2005", "req-2003", "req-2001"]
    assert [p.correlation_id for p in sets_b] == ["req-2004", "req-2002", "req-2000"]
    assert warnings == []
    assert len(decoded) <= 2 * 12  # the window's api spans, then the six requests' paths
