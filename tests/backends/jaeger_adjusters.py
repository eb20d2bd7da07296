"""What jaeger-query does to a trace before answering it, unless asked for the raw trace.

From Jaeger 1.65 and 2.2 on (jaegertracing/jaeger#6423), api_v3's ``GetTrace`` and ``FindTraces``
run the query service's standard adjusters on every trace unless the request says
``raw_traces=true`` (``query.raw_traces=true`` for a search). Of those, the one that changes
what OpenTelemetry spans say is the clock-skew adjuster
(``cmd/jaeger/internal/extension/jaegerquery/internal/adjuster/clockskew.go``), modelled here
rule for rule:

- spans are grouped by host (resource ``host.id``, else ``host.ip``, else ``host.name``; none
  is a host of its own for every span); a span whose parent is not in the trace is a root, and
  gets the warning ``parent span ID=<id> is not in the trace; skipping clock skew adjustment``;
- walking down from each root, a span on another host than the skew carried (or on no known
  host) is measured against its already adjusted parent: a child lasting longer than its parent
  only moves to start with it; one that does not fit inside it is centred in it;
- the delta is applied (with the warning ``This span's timestamps were adjusted by <delta>``)
  when it is within ``max_clock_skew_adjust``; otherwise, and always with the default of 0,
  only a warning says it was not applied. Warnings are the span attribute
  ``@jaeger@warnings``, a list of strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from go_time import format_duration

from tracekit.records import SpanEvent, SpanRecord

WARNINGS = "@jaeger@warnings"


def adjusted(trace: list[SpanRecord], max_delta_nanos: int) -> list[SpanRecord]:
    """``trace`` (one trace's spans) as Jaeger's clock-skew adjuster answers it."""
    by_id = {span.span_id: span for span in trace}
    warnings: dict[str, list[str]] = {span.span_id: [] for span in trace}
    children: dict[str, list[str]] = {}
    roots = []
    for span in trace:
        if span.parent_span_id is None:
            roots.append(span.span_id)
        elif span.parent_span_id in by_id:
            children.setdefault(span.parent_span_id, []).append(span.span_id)
        else:
            roots.append(span.span_id)
            warnings[span.span_id].append(
                f"parent span ID={span.parent_span_id} is not in the trace; "
                "skipping clock skew adjustment"
            )
    for root in roots:
        for span_id, delta in _walk(root, children, by_id):
            by_id[span_id] = _applied(by_id[span_id], delta, max_delta_nanos, warnings[span_id])
    return [_with_warnings(by_id[s.span_id], warnings[s.span_id]) for s in trace]


def _walk(
    root: str, children: dict[str, list[str]], by_id: dict[str, SpanRecord]
) -> Iterator[tuple[str, int]]:
    """Each span under ``root`` (root first, parents before children) with the skew delta it
    gets; ``by_id`` holds each parent adjusted by the time its children are measured."""
    stack: list[tuple[str, str | None, tuple[str, int]]] = [(root, None, (_host(by_id[root]), 0))]
    while stack:
        span_id, parent_id, (host, delta) = stack.pop()
        span = by_id[span_id]
        if parent_id is not None and (_host(span) != host or not _host(span)):
            host, delta = _host(span), _skew(span, by_id[parent_id])
        yield span_id, delta
        stack += [(child, span_id, (host, delta)) for child in reversed(children.get(span_id, []))]


def _host(span: SpanRecord) -> str:
    for key in ("host.id", "host.ip", "host.name"):
        value = span.resource.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return str(value)
    return ""


def _skew(child: SpanRecord, parent: SpanRecord) -> int:
    parent_length = parent.end_unix_nano - parent.start_unix_nano
    child_length = child.end_unix_nano - child.start_unix_nano
    if child_length > parent_length:
        return max(0, parent.start_unix_nano - child.start_unix_nano)
    if (
        parent.start_unix_nano
        <= child.start_unix_nano
        <= child.end_unix_nano
        <= parent.end_unix_nano
    ):
        return 0
    latency = (parent_length - child_length) // 2
    return parent.start_unix_nano + latency - child.start_unix_nano


def _applied(span: SpanRecord, delta: int, most: int, warnings: list[str]) -> SpanRecord:
    if delta == 0:
        return span
    if abs(delta) > most:
        warnings.append(
            f"clock skew adjustment disabled; not applying calculated delta of "
            f"{format_duration(delta)}"
            if most == 0
            else f"max clock skew adjustment delta of {format_duration(most)} exceeded; "
            f"not applying calculated delta of {format_duration(delta)}"
        )
        return span
    warnings.append(f"This span's timestamps were adjusted by {format_duration(delta)}")
    events = [SpanEvent(e.name, e.time_unix_nano + delta, e.attributes) for e in span.events]
    return dataclasses.replace(
        span, start_unix_nano=span.start_unix_nano + delta,
        end_unix_nano=span.end_unix_nano + delta, events=events,
    )  # fmt: skip


def _with_warnings(span: SpanRecord, warnings: list[str]) -> SpanRecord:
    if not warnings:
        return span
    return dataclasses.replace(span, attributes={**span.attributes, WARNINGS: warnings})
