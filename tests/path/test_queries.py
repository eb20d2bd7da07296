"""What ``tracekit.path`` takes a query for: a trace ID is exactly 32 hex digits."""

from __future__ import annotations

import pytest

from tracekit.path import looks_like_trace_id

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("query", "is_trace_id"),
    [(TRACE, True), (TRACE.upper(), True), (TRACE + "\n", False), (TRACE[:-1], False),
     (TRACE + "0", False), (" " + TRACE, False), ("req-" + TRACE[4:], False)],
)  # fmt: skip
def test_a_trace_id_is_32_hex_digits_and_nothing_else(query: str, is_trace_id: bool) -> None:
    """A final newline (a line read from a file or a pipe) passed for a trace ID: "$" matches
    before it. It is a correlation ID to look up as typed, not a trace ID."""
    assert looks_like_trace_id(query) is is_trace_id
