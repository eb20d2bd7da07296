"""The view model both trace renderers draw: one row per span, with what goes around it.

Everything here is computed from the engine's ``Path`` alone, so the rich and the text view show
the same thing and differ only in glyphs and colour. Untrusted strings (names, messages, log
bodies) are flattened to one printable line here, before any renderer sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tracekit import semconv
from tracekit.path import Hop, Path, PathLog, PathSpan
from tracekit.path.conventions import text as text_of
from tracekit.path.critical import request_end_in_callers_time
from tracekit.path.hops import measured_queue_wait_ms, resent_under_first_request
from tracekit.records import RequestSummary, SpanRecord
from tracekit_cli.options import message_line, one_line

# Deeper spans are drawn at this indentation with their depth written out, so a 10,000-deep
# chain still fits on a line.
MAX_GUIDES = 12
# A batch consumer may link to thousands of messages; the view names this many, JSON has all.
MAX_CONSUMED_NOTES = 5
# a scheduled delay past this (ten years, in ms) is a forged header: not shown
MAX_SCHEDULED_MS = 10 * 365 * 86_400_000.0


@dataclass(slots=True)
class Row:
    """One span as drawn: tree guides, timings, waterfall position and annotations."""

    span: PathSpan
    guides: tuple[bool, ...]  # per ancestor level shown: does a vertical line continue there?
    last: bool  # last child of its parent (corner instead of tee)
    offset_ms: float
    duration_ms: float
    critical: bool
    service: str
    name: str
    error: str | None = None
    queue: Hop | None = None  # the messaging hop of the message this span waited for
    # what else its consumer said of that wait: how much of it was asked for (a Celery
    # countdown or eta), a message delivered again
    queue_notes: list[str] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)  # a batch's other messages, described
    ends_request: str | None = None  # under the last span to end, if after the entry span
    logs: list[PathLog] = field(default_factory=list)
    # the wait a consumer measured itself, when no queue hop shows one (no producer span here)
    measured_wait: str | None = None

    @property
    def has_notes(self) -> bool:
        """Whether anything is written under the row."""
        return bool(
            self.queue or self.queue_notes or self.measured_wait or self.consumed
            or self.ends_request
            or self.error or self.logs
        )  # fmt: skip


def build_rows(path: Path, *, with_logs: bool = True, limit: int | None = None) -> list[Row]:
    """Rows in tree order for ``path``; ``limit`` bounds every name and message (the text view
    passes a generous one: piped output must not lose content)."""
    # by (trace id, span id): span ids are unique only within a trace, and a path joins several
    errors = {(e.trace_id, e.span_id): e.message for e in path.errors}
    arriving: dict[tuple[str, str], list[Hop]] = {}
    for hop in path.hops:
        if hop.type == "messaging":
            arriving.setdefault(hop.receiver_key, []).append(hop)
    logs = _logs_by_span(path.logs) if with_logs else {}
    senders = {s.key: s for s in path.spans} if arriving else {}
    rows = []
    for span, guides, last in _walk(path.spans):
        key = span.key
        waited, others = _arrivals(span, arriving.get(key, []))
        rows.append(
            Row(
                span, guides, last,
                (span.start_unix_nano - path.start_unix_nano) / 1e6, span.duration_ms,
                span.on_critical_path, one_line(span.service, limit or 60),
                one_line(_name(span.record), limit or 200),
                message_line(errors[key], limit or 300) if key in errors else None,
                waited, _queue_notes(span.record, waited),
                _consumed(others, senders, path.start_unix_nano, limit), None,
                logs.get(key, []),
                None if waited else _measured_wait(span.record, limit),
            )
        )  # fmt: skip
    _note_request_end(path, rows)
    return rows


def _name(record: SpanRecord) -> str:
    """The span's name, and a Celery task's name after it: one queue carries many tasks, and
    their spans are named by it ("process celery (shop.charge)"); a retry's attempt after that
    ("process celery (shop.charge, retry 2)"), or every attempt would read the same."""
    task = _task_name(record)
    retry = record.attributes.get(semconv.RETRY_COUNT)
    if task and type(retry) is int and retry > 0:
        task = f"{task}, retry {retry}"
    return f"{record.name} ({task})" if task else record.name


def request_name(request: RequestSummary, limit: int) -> str:
    """A listed request's root, named as ``trace`` names that span: the Celery task after it."""
    name = one_line(request.root_name, limit)
    return f"{name} ({one_line(request.root_task, limit)})" if request.root_task else name


def _task_name(record: SpanRecord | None) -> str:
    """The Celery task ``record`` ran or sent, or ``""``."""
    task = record.attributes.get(semconv.CELERY_TASK_NAME) if record is not None else None
    return task if isinstance(task, str) else ""


def _measured_wait(record: SpanRecord, limit: int | None) -> str | None:
    """``12.0ms in queue rabbitmq orders (measured by the consumer; ...)`` for a consumer
    whose producer's span is not on the path (its sampler left it out)."""
    wait = measured_queue_wait_ms(record)
    if wait is None:
        return None
    parts = [text_of(record, name) for name in (semconv.MESSAGING_SYSTEM,
                                                semconv.MESSAGING_DESTINATION_NAME)]  # fmt: skip
    queue = " ".join(one_line(part, limit or 80) for part in parts if part) or "messaging"
    return (
        f"{format_ms(wait)} in queue {queue} (measured by the consumer; "
        "the producer's span is not here)"
    )


def _queue_notes(record: SpanRecord, waited: Hop | None) -> list[str]:
    """What the consumer said of the wait shown above: how much of it was asked for, and
    whether the broker delivered the message again (which is why it waited so long)."""
    if waited is None:
        return []
    scheduled = _scheduled(record, waited)
    notes = [scheduled] if scheduled is not None else []
    if record.attributes.get(semconv.MESSAGING_REDELIVERED) is True:
        notes.append(REDELIVERED_NOTE)
    return notes


REDELIVERED_NOTE = (
    "redelivered: an earlier delivery was not acknowledged (its consumer stopped, was killed "
    "or gave it back)"
)


def _scheduled(record: SpanRecord, waited: Hop) -> str | None:
    """``15.00 s of it scheduled (not due before), 11.69 s past due`` under a queue wait whose
    consumer says its producer asked for a delay (``tracekit.scheduled_delay_ms``: a Celery
    countdown or eta): a task scheduled an hour ahead did not wait an hour for a worker."""
    asked = record.attributes.get(semconv.SCHEDULED_DELAY_MS)
    wait = waited.queue_wait_ms
    if wait is None or isinstance(asked, bool) or not isinstance(asked, int | float):
        return None
    if not 0 < asked <= MAX_SCHEDULED_MS:  # (NaN too)
        return None
    late = max(0.0, wait - asked)
    return f"{format_ms(asked)} of it scheduled (not due before), {format_ms(late)} past due"


def _arrivals(span: PathSpan, hops: list[Hop]) -> tuple[Hop | None, list[Hop]]:
    """The hop of the message the span waited for (it hangs under it), and the others."""
    if not hops:
        return None, []
    parent = span.parent.key if span.parent is not None else None
    waited = next((h for h in hops if h.sender_key == parent), hops[0])
    return waited, [h for h in hops if h is not waited]


def _consumed(
    hops: list[Hop], senders: dict[tuple[str, str], PathSpan], start: int, limit: int | None
) -> list[str]:
    """One line per other message a batch consumer took: where from, how long queued, when sent."""
    lines = []
    for hop in hops[:MAX_CONSUMED_NOTES]:
        sender = senders.get(hop.sender_key)
        sent = f", sent +{format_ms((sender.end_unix_nano - start) / 1e6)}" if sender else ""
        what = one_line(hop.destination or hop.type, limit or 80)
        wait = format_ms(hop.queue_wait_ms or 0.0)
        lines.append(
            f"also consumed {what} from {one_line(hop.from_service, limit or 40)}: "
            f"waited {wait}{sent}"
        )
    if len(hops) > MAX_CONSUMED_NOTES:
        hidden = len(hops) - MAX_CONSUMED_NOTES
        lines.append(f"also consumed {hidden} more messages (--format json lists every link)")
    return lines


def _note_request_end(path: Path, rows: list[Row]) -> None:
    """Say where the request ends when that is work its entry span did not wait for.

    The critical path starts at the span that ended last; when that span ended after the entry
    span it descends from (the tree's root: fire-and-forget work, a queue consumer), it is on the
    path because it is the request's end, and the reader is told so. A span of a call its caller
    waited for ends, here as on the path, when the caller had its answer.
    """
    end = request_end_in_callers_time(path.spans)
    if end is None or end.parent is None:
        return
    entry = end
    while entry.parent is not None:
        entry = entry.parent
    after = (end.end_unix_nano - _call_end(entry)) / 1e6
    if after <= 0:
        return
    row = next(r for r in rows if r.span is end)
    row.ends_request = f"request ends here, {format_ms(after)} after the entry span ended"


def _call_end(entry: PathSpan) -> int:
    """When the entry span's work ended: for an HTTP call that began the trace, its last
    request (a redirect followed, a retry: they hang under its first one, as resends)."""
    resends = [c.end_unix_nano for c in entry.children if resent_under_first_request(c)]
    return max([entry.end_unix_nano, *resends])


def unplaced_logs(path: Path) -> list[PathLog]:
    """Log lines of no span the path shows (a span never exported, as a worker that crashed
    mid-job leaves, one cut by ``--max-spans``, or none at all): drawn after the tree, so no
    view loses a line the JSON document has."""
    shown = {span.key for span in path.spans}
    return [log for log in path.logs if (log.trace_id, log.span_id) not in shown]


def unplaced_title(path: Path) -> str:
    """The title over ``unplaced_logs``: a path of log lines alone has no span to miss."""
    return "logs of spans not shown:" if path.spans else "log lines (no span):"


def _logs_by_span(logs: list[PathLog]) -> dict[tuple[str | None, str | None], list[PathLog]]:
    grouped: dict[tuple[str | None, str | None], list[PathLog]] = {}
    for log in logs:
        grouped.setdefault((log.trace_id, log.span_id), []).append(log)
    return grouped


def _walk(spans: list[PathSpan]) -> list[tuple[PathSpan, tuple[bool, ...], bool]]:
    """Each span with its guide flags, from the pre-order list and the parent links."""
    guides_of: dict[int, tuple[bool, ...]] = {}
    out = []
    for span in spans:
        parent = span.parent
        siblings = parent.children if parent is not None else []
        last = parent is None or siblings[-1] is span
        inherited = guides_of.get(id(parent), ()) if parent is not None else ()
        mine = (*inherited, not last)[-MAX_GUIDES:] if parent is not None else ()
        guides_of[id(span)] = mine
        out.append((span, inherited, last))
    return out


def bar_span(row: Row, total_ms: float, width: int) -> tuple[int, int]:
    """(first column, length) of the row's waterfall bar in a ``width``-column lane."""
    if total_ms <= 0:
        return 0, width
    start = int(row.offset_ms / total_ms * width)
    length = round(row.duration_ms / total_ms * width)
    if start < 0:  # a long poll begun before the request: the lane shows the request's part
        start, length = 0, length + start
    start = min(width - 1, start)
    return start, min(max(1, length), width - start)


def format_offset(value: float) -> str:
    """A row's offset from the request's start, signed: a long poll may begin before it."""
    return format_ms(value) if value < 0 else "+" + format_ms(value)


# (unit, its length in ms, the size from which the next unit takes over), smallest first
_UNITS = (("s", 1e3, 60.0), ("min", 6e4, 60.0), ("h", 3.6e6, 48.0), ("d", 8.64e7, 365.0))
_YEAR_MS = 3.15576e10


def format_ms(value: float) -> str:
    """Milliseconds for humans: 0.4 ms, 12.5 ms, 1.24 s, 2.5 min, 3.2 h, 4.1 d, 2.0 y.

    The unit grows with the value so that any duration a span can carry (up to 2^64 ns, 585
    years) fits the text view's nine-column timing fields.
    """
    size = abs(value)
    if size < 1000:
        return f"{value:.1f} ms"
    for unit, length, next_at in _UNITS:
        if size < length * next_at:
            return f"{value / length:.{2 if unit == 's' else 1}f} {unit}"
    return f"{value / _YEAR_MS:.1f} y"


def format_time(unix_nano: int) -> str:
    """UTC wall-clock time with milliseconds."""
    moment = datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def summary_line(path: Path, sep: str = ", ") -> str:
    """Start, duration and counts in one line."""
    parts = [
        f"start {format_time(path.start_unix_nano)}",
        format_ms(path.duration_ms),
        _count(len(path.spans), "span"),
        _count(len(path.services), "service"),
        _count(len(path.trace_ids), "trace"),
        _count(len(path.hops), "hop"),
        _count(len(path.errors), "error"),
    ]
    return sep.join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def hop_text(hop: Hop, limit: int = 80, receiver: SpanRecord | None = None) -> str:
    """``kafka orders.created`` / ``http POST /orders``; with the task the ``receiver`` span
    ran after it, as its row has: ``celery celery (shop.charge)``."""
    parts = [one_line(p, limit) for p in (hop.system, hop.destination) if p]
    text = " ".join(parts) or hop.type
    task = _task_name(receiver)
    return f"{text} ({one_line(task, limit)})" if task else text


def receivers(path: Path) -> dict[tuple[str, str], SpanRecord]:
    """Each span's record by its key, for ``hop_text``'s ``receiver``."""
    return {span.key: span.record for span in path.spans} if path.hops else {}


def depth_marker(row: Row) -> str:
    """For rows deeper than the drawn guides: their depth, so the nesting is still readable."""
    return f"[{row.span.depth}] " if row.span.depth > MAX_GUIDES else ""
