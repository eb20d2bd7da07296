"""A span that ends before it starts, from a source that keeps one as it came (the store does
not: it stores such a span ending when it starts). The engine shows it lasting no time."""

from __future__ import annotations

from trace_topologies import MemorySource, Topology

from tracekit.path import reconstruct


def test_a_span_that_ends_before_it_starts_is_shown_lasting_no_time_with_a_warning() -> None:
    t = Topology("req-backwards")
    entry = t.span("api", "POST /jobs", "SERVER", 0, 100)
    backwards = t.span("api", "enqueue", "INTERNAL", 50, 20, entry)

    path = reconstruct(MemorySource(t.spans, t.logs), "req-backwards")

    assert path is not None
    span = next(s for s in path.spans if s.record.span_id == backwards.span_id)
    assert (span.duration_ms, span.self_ns, span.end_unix_nano) == (
        0.0, 0, backwards.start_unix_nano
    )  # fmt: skip
    assert path.warnings == [
        f"api 'enqueue' ({backwards.span_id}) ends before it starts: shown as lasting 0 ms"
    ]
