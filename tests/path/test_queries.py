"""What ``tracekit.path`` takes a query for: a trace ID is 16 to 32 hex digits, padded to 32."""

from __future__ import annotations

from pathlib import Path

import pytest
from trace_topologies import Topology, write_store

from tracekit.path import looks_like_trace_id, reconstruct, trace_id_of
from tracekit.store import Store

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("query", "is_trace_id"),
    [(TRACE, True), (TRACE.upper(), True), (TRACE + "\n", False), (TRACE[:16] + "\n", False),
     (TRACE + "0", False), (" " + TRACE, False), ("req-" + TRACE[4:], False)],
)  # fmt: skip
def test_a_trace_id_is_hex_digits_and_nothing_else(query: str, is_trace_id: bool) -> None:
    """A final newline (a line read from a file or a pipe) passed for a trace ID: "$" matches
    before it. It is a correlation ID to look up as typed, not a trace ID."""
    assert looks_like_trace_id(query) is is_trace_id


@pytest.mark.parametrize(
    ("query", "trace_id"),
    [(TRACE.upper(), TRACE), ("4BF92F3577B34DA6", "0000000000000000" + "4bf92f3577b34da6"),
     (TRACE[1:], TRACE), ("a" * 15, None), ("a" * 33, None)],
)  # fmt: skip
def test_a_short_trace_id_is_padded_with_zeros_in_front(query: str, trace_id: str | None) -> None:
    """A 64-bit ID (Jaeger's UI, B3's X-B3-TraceId) or one whose leading zeros Tempo dropped
    names the trace OpenTelemetry stores under the 32-digit form."""
    assert trace_id_of(query) == trace_id


@pytest.mark.parametrize("typed", ["4bf92f3577b34da6", "00004bf92f3577b34da6"])
def test_a_trace_found_by_its_64_bit_id(tmp_path: Path, typed: str) -> None:
    """`tracekit trace 4bf92f3577b34da6` said "no request found" for a trace stored as
    00000000000000004bf92f3577b34da6 (a B3 or Jaeger client's 64-bit trace)."""
    t = Topology("req-64")
    root = t.span("gateway", "GET /", "SERVER", 0, 10)
    t.span("api", "GET /", "SERVER", 2, 8, root)
    for span in t.spans:
        span.trace_id = "0" * 16 + "4bf92f3577b34da6"
    store = Store(write_store(tmp_path / "t.db", t))

    path = reconstruct(store, typed)

    assert path is not None and path.trace_ids == ["0" * 16 + "4bf92f3577b34da6"]
    assert [s.record.service for s in path.spans] == ["gateway", "api"]
