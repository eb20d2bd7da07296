"""Encoding span records into rows (``Store.write``, the store exporter behind
``TRACEKIT_EXPORTER=store``): what it stores. What it costs is measured in
``bench/store_write_bench.py``.
"""

from __future__ import annotations

from pathlib import Path

from tracekit.records import SpanEvent, SpanLink, SpanRecord
from tracekit.store import Store

T1 = "a" * 32


class Text(str):
    """A str subclass: stored as the text it is."""


class Number(int):
    """An int subclass: stored as the number it is."""


def _span(number: int, attributes: dict[str, object]) -> SpanRecord:
    return SpanRecord(
        trace_id=T1, span_id=f"{number + 1:016x}", parent_span_id=None, service="gateway",
        name="GET /", kind="SERVER", start_unix_nano=1_000 + number, end_unix_nano=3_000,
        attributes=attributes,  # type: ignore[arg-type]
        events=[SpanEvent("e", 2_000, attributes)],  # type: ignore[arg-type]
        links=[SpanLink("b" * 32, "2" * 16, attributes)],  # type: ignore[arg-type]
    )  # fmt: skip


def test_values_that_hash_alike_are_stored_apart(tmp_path: Path) -> None:
    """Fragments are cached by key, type and value: 1, 1.0 and True hash alike and 0.0 equals
    -0.0, yet each is stored as itself, on the span that carries it first and on every span
    after it (served from the cache), in span, event and link attributes alike."""
    store = Store(tmp_path / "s.db")
    values: list[object] = [
        1, 1.0, True, 0, 0.0, -0.0, False, None, "1", Text("1"), Number(1), "x" * 65,
        ["1", 1], {"k": 1},
    ]  # fmt: skip
    first = [_span(n, {"v": value}) for n, value in enumerate(values)]
    again = [_span(n + 100, {"v": value}) for n, value in enumerate(values)]
    for record in first:  # one at a time: each value meets a cache without it
        store.write_spans([record])
    store.write_spans(again)
    stored = {r.start_unix_nano - 1_000: r for r in store.spans_by_trace_ids([T1])}
    expected = [1, 1.0, True, 0, 0.0, -0.0, False, None, "1", "1", 1, "x" * 65, ["1", 1], {"k": 1}]
    for n, value in enumerate(expected):
        for record in (stored[n], stored[n + 100]):
            for attributes in (
                record.attributes,
                record.events[0].attributes,
                record.links[0].attributes,
            ):
                assert (repr(attributes["v"]), type(attributes["v"])) == (repr(value), type(value))
