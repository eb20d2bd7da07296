"""Assemble the path model from span and log records."""

from __future__ import annotations

from collections.abc import Iterable

from tracekit import semconv
from tracekit.path.collect import TRACE_ID_PATTERN as TRACE_ID
from tracekit.path.conventions import attribute
from tracekit.path.critical import critical_path, request_start
from tracekit.path.hops import (
    MAX_MEASURED_WAIT_MS,
    find_hops,
    mark_redeliveries,
    mark_resends,
    measured_queue_wait_ms,
    published_after_start_ms,
)
from tracekit.path.model import Hop, Path, PathError, PathLog, PathSpan
from tracekit.path.skew import adjust_clock_skew
from tracekit.path.tree import build_tree, index_spans, preorder
from tracekit.records import LogRecordData, SpanRecord

__all__ = [
    "MAX_LOG_BODY_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_WAIT_NOTES",
    "build_log_path",
    "build_path",
    "error_message",
    "severity_name",
]

MAX_MESSAGE_CHARS = 1_000
MAX_LOG_BODY_CHARS = 4_000
MAX_QUERY_CHARS = 256
MAX_WAIT_NOTES = 20  # one per consumer whose producer's span is missing, then a count


def build_path(
    query: str,
    spans: Iterable[SpanRecord],
    logs: Iterable[LogRecordData] = (),
    *,
    correlation_id: str | None = None,
    trace_ids: Iterable[str] = (),
    warnings: Iterable[str] = (),
    adjust_skew: bool = True,
) -> Path | None:
    """The path through ``spans`` (None if empty); ``adjust_skew=False`` keeps raw times."""
    notes = list(warnings)
    nodes = index_spans(spans, notes)
    if not nodes:
        return None
    roots = build_tree(nodes, notes)
    ordered = preorder(roots)
    if adjust_skew:
        adjust_clock_skew(ordered, notes)
        ordered = preorder(roots)  # siblings by their placed starts: a moved span kept its row
    mark_redeliveries(ordered)
    mark_resends(ordered)
    start = min(request_start(n) for n in ordered)
    end = max(n.end_unix_nano for n in ordered)
    hops = _hops_by_start(ordered, nodes)
    if not adjust_skew:
        notes.extend(_received_before_sent(hops, ordered))
    notes.extend(_waits_without_producer(hops, ordered))
    return Path(
        query=query[:MAX_QUERY_CHARS],
        correlation_id=correlation_id,
        trace_ids=_trace_ids(trace_ids, ordered),
        services=_services_by_first_start(ordered),
        start_unix_nano=start,
        duration_ms=(end - start) / 1e6,
        spans=ordered,
        hops=hops,
        critical_path=critical_path(ordered, roots),
        errors=[_error(n) for n in ordered if n.record.status == "ERROR"],
        logs=_place_logs(logs, nodes),
        warnings=notes,
    )


def build_log_path(
    correlation_id: str | None,
    logs: list[LogRecordData],
    warnings: list[str],
    *,
    query: str | None = None,
) -> Path:
    """The path of a request only log lines carry: no span tree, the lines in time order.
    ``query``: what the user typed, when not the correlation ID (a trace ID of the lines)."""
    placed = _place_logs(logs, {})
    start = placed[0].time_unix_nano
    by_time = sorted(logs, key=lambda log: log.time_unix_nano)
    traced = [
        log.trace_id.lower() for log in by_time if log.trace_id and TRACE_ID.fullmatch(log.trace_id)
    ]
    typed = query if query is not None else correlation_id or ""
    return Path(
        query=typed[:MAX_QUERY_CHARS],
        correlation_id=correlation_id,
        trace_ids=list(dict.fromkeys(traced)),
        services=list(dict.fromkeys(log.service for log in placed)),
        start_unix_nano=start,
        duration_ms=(placed[-1].time_unix_nano - start) / 1e6,
        spans=[],
        hops=[],
        critical_path=[],
        errors=[],
        logs=placed,
        warnings=[*warnings, "no span carries this request: showing its log lines alone"],
    )


def _trace_ids(requested: Iterable[str], ordered: list[PathSpan]) -> list[str]:
    present = {n.record.trace_id for n in ordered}
    in_order = [t for t in requested if t in present]
    by_start = sorted(ordered, key=lambda n: n.start_unix_nano)
    return list(dict.fromkeys([*in_order, *(n.record.trace_id for n in by_start)]))


def _services_by_first_start(ordered: list[PathSpan]) -> list[str]:
    by_start = sorted(ordered, key=lambda n: (request_start(n), n.depth))
    return list(dict.fromkeys(n.service for n in by_start))


def _hops_by_start(ordered: list[PathSpan], nodes: dict[tuple[str, str], PathSpan]) -> list[Hop]:
    starts = {n.key: n.start_unix_nano for n in ordered}
    return sorted(find_hops(ordered, nodes), key=lambda hop: starts.get(hop.receiver_key, 0))


def _received_before_sent(hops: list[Hop], ordered: list[PathSpan]) -> list[str]:
    """A note per queue hop whose consumer started before its producer did, as only two hosts'
    clocks disagreeing can record it: raw times leave it so, and the hop's numbers, which mix
    the two clocks, mislead (a latency that may be negative, a queue wait of 0); corrected times
    (the default) put the clocks on one line. An HTTP hop's latency is its client's own span:
    one clock, true either way."""
    starts = {n.key: n.start_unix_nano for n in ordered}
    notes = []
    for hop in hops:
        early_ns = starts[hop.sender_key] - starts[hop.receiver_key]
        if hop.type == "messaging" and early_ns > 0:
            what = " ".join(part for part in (hop.system, hop.destination) if part) or hop.type
            notes.append(
                f"hop {hop.from_service[:80]} -> {hop.to_service[:80]} ({what[:160]}): received "
                f"{early_ns / 1e6:.1f} ms before it was sent (latency {hop.latency_ms} ms) in "
                "recorded times: their clocks disagree (--raw-times skips clock-skew correction)"
            )
    return notes


def _waits_without_producer(hops: list[Hop], ordered: list[PathSpan]) -> list[str]:
    """A note per consumer that measured its message's queue wait but has no queue hop to
    show it on: its producer's span is not on the path (left out by its sampler, or not
    exported), so the wait the consumer measured from the publish time is all there is."""
    received = {hop.receiver_key for hop in hops if hop.type == "messaging"}
    notes = []
    for node in ordered:
        if node.key in received or semconv.QUEUE_WAIT_MS not in node.record.attributes:
            continue
        wait = measured_queue_wait_ms(node.record)
        ahead = published_after_start_ms(node.record)
        if wait is not None:
            notes.append(
                f"{node.label()[:200]} waited {wait} ms in queue, as the consumer measured it:"
                " the producer's span is not here (left out by its sampler, not exported, or"
                " never made: a producer in correlation-only mode)"
            )
        elif ahead is not None and ahead <= MAX_MEASURED_WAIT_MS:
            notes.append(
                f"{node.label()[:200]} measured no queue wait: its message's publish time is"
                f" {ahead} ms after it began (its clock is behind the publisher's), and the"
                " producer's span is not here to place it"
            )
    if len(notes) <= MAX_WAIT_NOTES:
        return notes
    more = len(notes) - MAX_WAIT_NOTES
    return [
        *notes[:MAX_WAIT_NOTES],
        f"{more} more consumers measured a queue wait with no producer span here",
    ]


def _error(node: PathSpan) -> PathError:
    record = node.record
    return PathError(record.span_id, node.service, error_message(record), record.trace_id)


def error_message(record: SpanRecord) -> str:
    """The most telling reason a span failed: status message, exception, HTTP status, or the
    class of error alone (``error.type``: FastAPI's own spans, others' SDKs)."""
    if record.status_message:
        return record.status_message[:MAX_MESSAGE_CHARS]
    for event in record.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type")
            text = event.attributes.get("exception.message")
            parts = [str(p) for p in (kind, text) if p]
            if parts:
                return ": ".join(parts)[:MAX_MESSAGE_CHARS]
    status = attribute(record, semconv.HTTP_RESPONSE_STATUS_CODE)
    if status is not None:
        return f"HTTP {status}"
    kind = attribute(record, semconv.ERROR_TYPE)
    # "_OTHER" is the conventions' "no better name known": it says no more than "error"
    return str(kind)[:MAX_MESSAGE_CHARS] if kind not in (None, "", "_OTHER") else "error"


# OpenTelemetry's log data model: numbers 1-24 in six ranges of four, each range's first number
# named by its short name alone (INFO), the next ones numbered (INFO2, INFO3, INFO4)
_SEVERITY_RANGES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def severity_name(number: int) -> str:
    """The short name of a severity number, for a record that carries no severity text (a
    number outside 1-24, unspecified or unknown, stays a number)."""
    if not 1 <= number <= 24:
        return str(number)
    name, step = _SEVERITY_RANGES[(number - 1) // 4], (number - 1) % 4
    return f"{name}{step + 1}" if step else name


def _place_logs(
    logs: Iterable[LogRecordData], nodes: dict[tuple[str, str], PathSpan]
) -> list[PathLog]:
    placed: list[PathLog] = []
    for log in logs:
        node = nodes.get((log.trace_id or "", log.span_id or ""))
        shift = node.shift_ns if node is not None else 0
        span_id = node.record.span_id if node is not None else log.span_id
        trace_id = node.record.trace_id if node is not None else None
        placed.append(
            PathLog(
                log.time_unix_nano + shift,
                span_id,
                log.service,
                log.severity_text or severity_name(log.severity_number),
                log.body[:MAX_LOG_BODY_CHARS],
                trace_id,
            )
        )
    return sorted(placed, key=lambda log: log.time_unix_nano)
