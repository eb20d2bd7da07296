"""Plain-text views: ASCII only, no colour, stable for pipes, grep and snapshots.

Nothing is cut to fit the width: the width sizes the waterfall and where footers wrap, and a
column grows to its longest value, so piped output keeps every name, ID and message whole.
Values are still flattened to one printable line and bounded at ``VALUE_LIMIT`` (longer than
anything tracekit's own exporters write), so a hostile span cannot flood a pipe.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracekit.path import Path, ServiceEdge
from tracekit.records import RequestSummary
from tracekit_cli.options import message_line, one_line
from tracekit_cli.render.columns import pack, text_width, wrap_keeping_units
from tracekit_cli.render.layout import (
    Row,
    bar_span,
    build_rows,
    depth_marker,
    format_ms,
    format_offset,
    format_time,
    hop_text,
    receivers,
    request_name,
    summary_line,
    unplaced_logs,
    unplaced_title,
)

TIMING_WIDTH = 22  # "   +offset  duration * " columns before the tree
VALUE_LIMIT = 16_384
LEGEND = ["* critical path", "# span", "! span in error", "~ queue wait"]


def _text(value: str) -> str:
    return one_line(value, VALUE_LIMIT)


def _message(value: str) -> str:
    return message_line(value, VALUE_LIMIT)


def render_path(path: Path, width: int, *, with_logs: bool = True) -> str:
    """The whole trace view as text: ``width`` columns unless a span's label needs more."""
    lane = max(10, width // 4)
    rows = build_rows(path, with_logs=with_logs, limit=VALUE_LIMIT)
    longest = max((text_width(_label(row)) for row in rows), default=0)
    label_width = max(20, width - TIMING_WIDTH - lane - 3, longest)  # " |" and "|" by the lane
    lines = [
        f"request {_text(path.correlation_id or path.query)}",
        *_wrap(summary_line(path), width),
        *_wrap("path: " + " -> ".join(_text(s) for s in path.services), width),
    ]
    if path.spans:
        lines += [
            "",
            f"{'offset':>9} {'duration':>9}   {'span':<{label_width}} |{'waterfall':^{lane}}|",
        ]
    for row in rows:
        lines.extend(_row_lines(row, path.duration_ms, label_width, lane))
    unplaced = unplaced_logs(path) if with_logs else []
    if unplaced:
        lines += ["", unplaced_title(path)]
    for log in unplaced:
        clock = format_time(log.time_unix_nano)[11:23]
        service = one_line(log.service, 60)
        lines.append(f"  > {clock} {one_line(log.severity, 10)} {service}: {_message(log.body)}")
    if path.spans:
        lines += ["", *pack(LEGEND, width)]
    for line in _footer(path):
        lines.extend(_wrap(line, width))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _pad(text: str, width: int) -> str:
    """``text`` padded to ``width`` columns (``str.ljust`` counts a wide character as one)."""
    return text + " " * (width - text_width(text))


def _label(row: Row) -> str:
    return f"{_prefix(row)}{row.service}: {row.name}"


def _wrap(line: str, width: int) -> list[str]:
    """Header and footer lines wrap instead of running past the terminal's edge or being cut:
    a warning's end is often its point."""
    if len(line) <= width:
        return [line]
    # words stay whole: a route or an ID split across lines would defeat grep
    return wrap_keeping_units(
        line, width, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
    )


def _prefix(row: Row) -> str:
    guides = "".join("|  " if more else "   " for more in row.guides)
    connector = "" if row.span.parent is None else ("`- " if row.last else "+- ")
    return guides + connector + depth_marker(row)


def _row_lines(row: Row, total_ms: float, label_width: int, lane: int) -> list[str]:
    label = _label(row)
    start, length = bar_span(row, total_ms, lane)
    bar = " " * start + ("!" if row.error else "#") * length
    mark = "*" if row.critical else " "
    lines = [
        f"{format_offset(row.offset_ms):>9} {format_ms(row.duration_ms):>9} {mark} "
        f"{_pad(label, label_width)} |{bar:<{lane}}|"
    ]
    pad = " " * TIMING_WIDTH + _continuation(row)
    if row.queue is not None:
        wait = row.queue.queue_wait_ms or 0.0
        lines.append(f"{pad}~ waited {format_ms(wait)} in queue {hop_text(row.queue, VALUE_LIMIT)}")
    lines += [f"{pad}~ {note}" for note in row.queue_notes]
    if row.measured_wait is not None:
        lines.append(f"{pad}~ waited {row.measured_wait}")
    lines += [f"{pad}~ {note}" for note in row.consumed]
    if row.ends_request:
        lines.append(f"{pad}* {row.ends_request}")
    if row.error:
        lines.append(f"{pad}! ERROR {row.error}")
    for log in row.logs:
        clock = format_time(log.time_unix_nano)[11:23]
        lines.append(f"{pad}> {clock} {one_line(log.severity, 10)} {_message(log.body)}")
    return lines


def _continuation(row: Row) -> str:
    guides = "".join("|  " if more else "   " for more in row.guides)
    below = "" if row.span.parent is None else ("   " if row.last else "|  ")
    return guides + below + ("|  " if row.span.children else "   ")


def _footer(path: Path) -> list[str]:
    lines: list[str] = []
    if path.hops:
        lines += ["", "hops:"]
        received_by = receivers(path)
        for hop in path.hops:
            wait = (
                "" if hop.queue_wait_ms is None else f", queue wait {format_ms(hop.queue_wait_ms)}"
            )
            what = hop_text(hop, VALUE_LIMIT, received_by.get(hop.receiver_key))
            lines.append(
                f"  {_text(hop.from_service)} -> {_text(hop.to_service)}  "
                f"{what}  latency {format_ms(hop.latency_ms)}{wait}"
            )
    if path.errors:
        lines += ["", "errors:"]
        lines += [f"  {_text(e.service)} ({e.span_id}): {_message(e.message)}" for e in path.errors]
    if path.warnings:
        lines += ["", "warnings:"] + [f"  {_text(w)}" for w in path.warnings]
    return lines


def render_requests(requests: Sequence[RequestSummary], width: int) -> str:
    """``tracekit search`` as a text table (``-`` where a request has no correlation ID)."""
    ids = [_text(r.correlation_id) if r.correlation_id else "-" for r in requests]
    id_width = max([len("correlation id"), *map(text_width, ids)])
    lines = [
        f"{'start (UTC)':<23}  {'duration':>9}  {'spans':>5}  {'err':<3}  "
        f"{'correlation id':<{id_width}}  {'trace id':<32}  root"
    ]
    for r, cid in zip(requests, ids, strict=True):
        lines.append(
            f"{format_time(r.start_unix_nano)[:23]:<23}  {format_ms(r.duration_ms):>9}  "
            f"{r.span_count:>5}  {'yes' if r.error else '':<3}  {_pad(cid, id_width)}  "
            f"{r.trace_id:<32}  {_text(r.root_service)}: {request_name(r, VALUE_LIMIT)}"
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_services(seen: Sequence[tuple[str, int]], width: int) -> str:
    """``tracekit services`` with no calls between services: each service seen, its requests."""
    names = [_text(name) for name, _ in seen]
    first = max([20, *map(text_width, names)])
    lines = [f"{'service':<{first}} {'requests':>9}"]
    lines += [f"{_pad(name, first)} {n:>9}" for name, (_, n) in zip(names, seen, strict=True)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_edges(edges: Sequence[ServiceEdge], width: int) -> str:
    """``tracekit services`` as a text table."""
    ends = [(_text(e.from_service), _text(e.to_service)) for e in edges]
    first = max([20, *(text_width(caller) for caller, _ in ends)])
    second = max([20, *(text_width(callee) for _, callee in ends)])
    lines = [
        f"{'from':<{first}} {'to':<{second}} {'type':<9} {'calls':>7} {'errors':>7} "
        f"{'p50':>10} {'p95':>10}"
    ]
    for e, (caller, callee) in zip(edges, ends, strict=True):
        lines.append(
            f"{_pad(caller, first)} {_pad(callee, second)} {e.type:<9} {e.calls:>7} "
            f"{e.error_rate:>7.1%} {format_ms(e.p50_ms):>10} {format_ms(e.p95_ms):>10}"
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"
