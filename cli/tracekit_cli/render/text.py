"""Plain-text views: ASCII only, no colour, stable for pipes, grep and snapshots."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from tracekit.path import Path, ServiceEdge
from tracekit.records import RequestSummary
from tracekit_cli.options import one_line
from tracekit_cli.render.layout import (
    Row,
    bar_span,
    build_rows,
    depth_marker,
    format_ms,
    format_time,
    hop_text,
    summary_line,
)

TIMING_WIDTH = 22  # "   +offset  duration * " columns before the tree


def render_path(path: Path, width: int, *, with_logs: bool = True) -> str:
    """The whole trace view as text, each line at most ``width`` columns."""
    lane = max(10, width // 4)
    label_width = max(20, width - TIMING_WIDTH - lane - 3)  # " |" and "|" around the lane
    lines = [
        f"request {one_line(path.correlation_id or path.query, 120)}",
        summary_line(path),
        "path: " + " -> ".join(one_line(s, 40) for s in path.services),
        "",
        f"{'offset':>9} {'duration':>9}   {'span':<{label_width}} |{'waterfall':^{lane}}|",
    ]
    for row in build_rows(path, with_logs=with_logs):
        lines.extend(_row_lines(row, path.duration_ms, label_width, lane))
    for line in _footer(path):
        lines.extend(_wrap(line, width))
    return "\n".join(line[:width].rstrip() for line in lines) + "\n"


def _wrap(line: str, width: int) -> list[str]:
    """Footer lines wrap instead of being cut: a warning's end is often its point."""
    if len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="    ")


def _prefix(row: Row) -> str:
    guides = "".join("|  " if more else "   " for more in row.guides)
    connector = "" if row.span.parent is None else ("`- " if row.last else "+- ")
    return guides + connector + depth_marker(row)


def _row_lines(row: Row, total_ms: float, label_width: int, lane: int) -> list[str]:
    label = f"{_prefix(row)}{row.service}: {row.name}"
    if len(label) > label_width:
        label = label[: label_width - 3] + "..."
    start, length = bar_span(row, total_ms, lane)
    bar = " " * start + ("!" if row.error else "#") * length
    mark = "*" if row.critical else " "
    lines = [
        f"{'+' + format_ms(row.offset_ms):>9} {format_ms(row.duration_ms):>9} {mark} "
        f"{label:<{label_width}} |{bar:<{lane}}|"
    ]
    pad = " " * TIMING_WIDTH + _continuation(row)
    if row.queue is not None:
        wait = row.queue.queue_wait_ms or 0.0
        lines.append(f"{pad}~ waited {format_ms(wait)} in queue {hop_text(row.queue)}")
    lines += [f"{pad}~ {note}" for note in row.consumed]
    if row.ends_request:
        lines.append(f"{pad}* {row.ends_request}")
    if row.error:
        lines.append(f"{pad}! ERROR {row.error}")
    for log in row.logs:
        clock = format_time(log.time_unix_nano)[11:23]
        lines.append(f"{pad}> {clock} {one_line(log.severity, 10)} {one_line(log.body)}")
    return lines


def _continuation(row: Row) -> str:
    guides = "".join("|  " if more else "   " for more in row.guides)
    below = "" if row.span.parent is None else ("   " if row.last else "|  ")
    return guides + below + ("|  " if row.span.children else "   ")


def _footer(path: Path) -> list[str]:
    lines = ["", "* critical path   # span   ! span in error   ~ queue wait"]
    if path.hops:
        lines += ["", "hops:"]
        for hop in path.hops:
            wait = (
                "" if hop.queue_wait_ms is None else f", queue wait {format_ms(hop.queue_wait_ms)}"
            )
            lines.append(
                f"  {one_line(hop.from_service, 40)} -> {one_line(hop.to_service, 40)}  "
                f"{hop_text(hop)}  latency {format_ms(hop.latency_ms)}{wait}"
            )
    if path.errors:
        lines += ["", "errors:"]
        lines += [f"  {one_line(e.service, 40)} ({e.span_id}): {one_line(e.message)}"
                  for e in path.errors]  # fmt: skip
    if path.warnings:
        lines += ["", "warnings:"] + [f"  {one_line(w)}" for w in path.warnings]
    return lines


def render_requests(requests: Sequence[RequestSummary], width: int) -> str:
    """``tracekit search`` as a text table."""
    lines = [
        f"{'start (UTC)':<23}  {'duration':>9}  {'spans':>5}  {'err':<3}  "
        f"{'correlation id':<36}  root"
    ]
    for r in requests:
        root = f"{one_line(r.root_service, 40)}: {one_line(r.root_name, 80)}"
        lines.append(
            f"{format_time(r.start_unix_nano)[:23]:<23}  {format_ms(r.duration_ms):>9}  "
            f"{r.span_count:>5}  {'yes' if r.error else '':<3}  "
            f"{one_line(r.correlation_id or r.trace_id, 36):<36}  {root}"
        )
    return "\n".join(line[:width].rstrip() for line in lines) + "\n"


def render_edges(edges: Sequence[ServiceEdge], width: int) -> str:
    """``tracekit services`` as a text table."""
    lines = [
        f"{'from':<20} {'to':<20} {'type':<9} {'calls':>7} {'errors':>7} {'p50':>10} {'p95':>10}"
    ]
    for e in edges:
        lines.append(
            f"{one_line(e.from_service, 20):<20} {one_line(e.to_service, 20):<20} {e.type:<9} "
            f"{e.calls:>7} {e.error_rate:>7.1%} {format_ms(e.p50_ms):>10} {format_ms(e.p95_ms):>10}"
        )
    return "\n".join(line[:width].rstrip() for line in lines) + "\n"
