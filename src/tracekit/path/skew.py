"""Clock-skew adjustment between services.

Each host stamps its spans with its own clock, so only a relation that one clock could never
produce is evidence of skew:

- a child that *starts* before its parent starts (a call cannot be handled, nor a message
  consumed, before it was made; a pull consumer's "receive", a poll that may begin before the
  message is sent, by the start of the first "process" span below it that links to a message,
  which is then the span placed at the producer's end);
- for a synchronous CLIENT -> SERVER pair, a server that starts after its client already ended
  (or after the INTERNAL span between them ended: a client library's span for one attempt; or
  a proxy's own INTERNAL span over the server that starts after the client ended).

A child that merely *ends* later is no evidence: a WSGI server span ends when the server closes the
response iterable, after the client has read the body; an asynchronous child may outlive its
parent. Such spans keep their recorded times. A skewed synchronous child is centred in its caller
(the network time split evenly, as Jaeger's adjuster does) or, when it lasts longer than its caller
and cannot fit, made to start with it; a consumer that "started" before its producer is placed at
the producer's end. Work in another clock straight under a consumer (a call its handler made
through a client that records no span) is a synchronous call, not a message.

A span whose start falls on a whole millisecond was stamped by a millisecond clock: OpenTelemetry
JS takes a span's start from ``Date.now()`` and its end as that start plus a finer duration, so
both may read up to a millisecond early. Only a relation that holds however late within that
millisecond the span really began is evidence.

Spans that share a clock are never moved against each other: two spans whose resources both name
the same ``host.id`` (or ``host.name``), or, when the resources do not say, two spans of one
service, unless one was called or sent its message before the other began (two replicas of the
service: one consuming the service's own messages, or answering its own calls). They inherit
their parent's shift, as do orphans (placed by their host's recorded times), but for an orphan on
another clock that starts before its host (nothing enclosed it: a server behind a service that
exported nothing, on a clock behind), placed like a call into its host.
Consumers on one clock that consumed messages from one other clock move by one amount, the
largest any of them needed: each "started before its producer" only bounds the difference of the
two clocks from below, and the largest bound is the best estimate for all of them (a worker's two
jobs keep the gap its clock recorded between them). Where a synchronous call also enters that
clock, each is placed on its own.
Servers on one clock called from one other clock move by one amount too, when one of the calls
shows skew: each call bounds the difference of the clocks from both sides, and the middle of what
they all allow places them all.
"""

from __future__ import annotations

from collections.abc import Callable

from tracekit.path.hops import calling_span
from tracekit.path.model import ATTACHED_AS_ORPHAN, ATTACHED_BY_LINK, PathSpan
from tracekit.records import SpanRecord

__all__ = ["ASYNC_KINDS", "HOST_ATTRIBUTES", "adjust_clock_skew", "same_clock"]

ASYNC_KINDS = ("PRODUCER", "CONSUMER")
_MS = 1_000_000
HOST_ATTRIBUTES = ("host.id", "host.name")


def adjust_clock_skew(ordered: list[PathSpan], warnings: list[str]) -> None:
    """Shift spans in place (``ordered`` must list parents before children); warn per service."""
    shifts: dict[PathSpan, int] = {}  # each span moved for skew (not with its parent): by how much
    entries = _Entries()
    parent_of = _parent_lookup(ordered)
    for node in ordered:
        parent = node.parent
        if parent is None:
            continue
        if _keeps_recorded_relation(node, parent):
            _shift(node, parent.shift_ns)
            continue
        entries.add(node, parent)
        delta = _needed_shift(node, parent, parent_of)
        if delta:
            _shift(node, delta)
            shifts[node] = delta
    entries.unify_calls(shifts)
    entries.unify_consumers(shifts)
    _move_joined_traces(ordered)
    warnings.extend(_describe(service, deltas) for service, deltas in _by_service(shifts).items())


def _by_service(shifts: dict[PathSpan, int]) -> dict[str, list[int]]:
    by_service: dict[str, list[int]] = {}
    for node, delta in shifts.items():
        by_service.setdefault(node.service, []).append(delta)
    return by_service


class _Entries:
    """The spans entered from another clock, as the adjustment meets them (parents first)."""

    def __init__(self) -> None:
        # consumers by (their clock, their producer's clock); the clocks a synchronous call enters
        self.consumers: dict[tuple[tuple[str, object], tuple[str, object]], list[PathSpan]] = {}
        self.called: set[tuple[str, object]] = set()
        # SERVER spans straight under a CLIENT span, by (their clock, their caller's clock)
        self.calls: dict[tuple[tuple[str, object], tuple[str, object]], list[PathSpan]] = {}

    def add(self, node: PathSpan, parent: PathSpan) -> None:
        clock = _clock_of(node.record)
        pair = (clock, _clock_of(parent.record))
        if _sent_message(node.record, parent.record):
            self.consumers.setdefault(pair, []).append(node)
            return
        self.called.add(clock)
        if node.record.kind == "SERVER" and parent.record.kind == "CLIENT":
            self.calls.setdefault(pair, []).append(node)

    def unify_calls(self, shifts: dict[PathSpan, int]) -> None:
        """Place the servers on one clock called from one other clock by one amount, when there
        are several: each call bounds the difference of the two clocks, and together they pin
        it down. Placed one by one, a call whose server starts while its client is still
        waiting (the slow one of a scatter-gather) kept its recorded times while its siblings
        on the same clock moved 200 ms: it ended 200 ms after the request. Where no call shows
        skew, none is moved; where the calls disagree, each keeps its own placement."""
        for nodes in self.calls.values():
            if len(nodes) < 2:
                continue
            if not any(_impossible_unmoved(node) for node in nodes):
                for node in nodes:  # moved against a caller since placed elsewhere
                    _move(node, -node.shift_ns)
                    shifts.pop(node, None)
                continue
            offset = _common_offset(nodes)
            if offset is None:
                continue
            for node in nodes:  # parents first: a call below another is placed after it
                caller = node.parent
                assert caller is not None  # a call has its client
                _move(node, caller.shift_ns + offset - node.shift_ns)
                if node.shift_ns:
                    shifts[node] = node.shift_ns
                else:
                    shifts.pop(node, None)

    def unify_consumers(self, shifts: dict[PathSpan, int]) -> None:
        """Move the consumers on one clock of messages from one other clock, where no
        synchronous call enters their clock, by the largest shift any of them needed (with
        everything below them, rigidly). Messages from two clocks bound two differences: each
        keeps its own."""
        for (clock, _), nodes in self.consumers.items():
            largest = max(node.shift_ns for node in nodes)
            if clock in self.called or largest <= 0:
                continue
            for node in nodes:  # parents first: one moved with an ancestor is not moved twice
                if node.shift_ns < largest:
                    if not node.shift_ns:
                        shifts[node] = largest
                    _move(node, largest - node.shift_ns)


def _call_bounds(server: PathSpan) -> tuple[int, int, int]:
    """What one call says of its server's clock minus its client's, negated (the shift, on top
    of the client's, that puts the server inside the call): at least the client's start, at
    most its end (by the server's start), and, for a server shorter than its call, at most
    the end by the server's end: (lowest, highest by start, highest by both)."""
    client, record = server.parent, server.record
    assert client is not None  # a call has its client
    lowest = client.record.start_unix_nano - record.start_unix_nano - _early_by(record)
    by_start = client.record.end_unix_nano + _early_by(client.record) - record.start_unix_nano
    by_end = client.record.end_unix_nano - record.end_unix_nano
    fits = record.end_unix_nano - record.start_unix_nano <= (
        client.record.end_unix_nano - client.record.start_unix_nano
    )
    return lowest, by_start, min(by_start, by_end) if fits else by_start


def _impossible_unmoved(server: PathSpan) -> bool:
    """Whether the server, at its recorded times, starts outside its call as placed."""
    client = server.parent
    assert client is not None  # a call has its client
    lowest, by_start, _ = _call_bounds(server)
    return not lowest <= -client.shift_ns <= by_start


def _common_offset(servers: list[PathSpan]) -> int | None:
    """The shift on top of their clients' that places every server inside its call (centred
    in what all the calls allow, their ends too where that leaves any room); None if none."""
    bounds = [_call_bounds(server) for server in servers]
    lowest = max(low for low, _, _ in bounds)
    for highest in (min(both for _, _, both in bounds), min(high for _, high, _ in bounds)):
        if lowest <= highest:
            return (lowest + highest) // 2
    return None


def _keeps_recorded_relation(node: PathSpan, parent: PathSpan) -> bool:
    """Whether ``node`` keeps the place its recorded times give it against ``parent``: on one
    clock; or an orphan, placed by its host's recorded times, unless it is on another clock
    and starts before its host did (a server behind a service that exported nothing, on a
    clock behind: hung under the trace's root, nothing encloses it), which no clock records."""
    if node.attached_by != ATTACHED_AS_ORPHAN:
        return _one_clock(node.record, parent.record)
    before = node.record.start_unix_nano < parent.record.start_unix_nano
    return not before or same_clock(node.record, parent.record)


def _clock_of(record: SpanRecord) -> tuple[str, object]:
    """What ``same_clock`` compares: the host the resource names, else the service."""
    for name in HOST_ATTRIBUTES:
        host = _host(record, name)
        if host is not None:
            return name, host
    return "service", record.service


def _host(record: SpanRecord, name: str) -> str | None:
    """The host ``name`` gives, if a string: any other value (a list from an odd SDK or
    backend) names no host."""
    host = record.resource.get(name)
    return host if isinstance(host, str) else None


def _move_joined_traces(ordered: list[PathSpan]) -> None:
    """A trace joined through a link moves as one: its other roots on the clock of the span the
    link placed are moved by the same amount, with everything below them (rigidly, so nothing
    under them moves against anything else). Otherwise one clock's spans, recorded together,
    were torn apart: a worker's consumer moved next to the producer it links to, its sibling
    root left where its clock put it."""
    roots: dict[str, list[PathSpan]] = {}
    for node in ordered:
        if node.parent is None:
            roots.setdefault(node.record.trace_id, []).append(node)
    for node in ordered:
        parent = node.parent
        if node.attached_by != ATTACHED_BY_LINK or not node.shift_ns or parent is None:
            continue
        if node.record.trace_id == parent.record.trace_id:  # a link within one trace
            continue
        for root in roots.get(node.record.trace_id, ()):
            if not root.shift_ns and same_clock(root.record, node.record):
                _move(root, node.shift_ns)


def _move(top: PathSpan, delta: int) -> None:
    """Shift ``top`` and everything below it by ``delta`` (iteratively: paths run deep)."""
    if not delta:  # most calls are asked to move by nothing: a walk of each subtree is quadratic
        return
    stack = [top]
    while stack:
        node = stack.pop()
        _shift(node, node.shift_ns + delta)
        stack.extend(node.children)


def same_clock(a: SpanRecord, b: SpanRecord) -> bool:
    """True when both spans were timed by one clock.

    Decided by the hosts when both resources name one (``host.id``, else ``host.name``): two
    replicas of a service on different machines have two clocks. Without that, a service is
    assumed to keep one clock and two services two.
    """
    hosts = _named_hosts(a, b)
    return hosts[0] == hosts[1] if hosts is not None else a.service == b.service


def _one_clock(child: SpanRecord, parent: SpanRecord) -> bool:
    """``same_clock``, unless only the service name says so and the child was called or sent
    its message before its parent began: then two replicas of the service (one consuming the
    service's own messages, or answering its own calls) on two hosts the resources do not name."""
    hosts = _named_hosts(child, parent)
    if hosts is not None:
        return hosts[0] == hosts[1]
    return child.service == parent.service and not _received_before_sent(child, parent)


def _named_hosts(a: SpanRecord, b: SpanRecord) -> tuple[str, str] | None:
    """The hosts of ``a`` and ``b`` by the first attribute both resources name, if any."""
    for name in HOST_ATTRIBUTES:
        first, second = _host(a, name), _host(b, name)
        if first is not None and second is not None:
            return first, second
    return None


def _received_before_sent(child: SpanRecord, parent: SpanRecord) -> bool:
    """A SERVER or CONSUMER span that starts before the CLIENT or PRODUCER span it answers."""
    receives = child.kind in ("SERVER", "CONSUMER") and parent.kind in ("CLIENT", "PRODUCER")
    return receives and child.start_unix_nano < parent.start_unix_nano


def _shift(node: PathSpan, delta: int) -> None:
    node.shift_ns = delta
    node.start_unix_nano = node.record.start_unix_nano + delta
    node.end_unix_nano = node.record.end_unix_nano + delta


def _parent_lookup(ordered: list[PathSpan]) -> Callable[[SpanRecord], SpanRecord | None]:
    """A record's parent by its parent id, as ``calling_span`` asks for it."""
    by_key = {node.key: node.record for node in ordered}
    return lambda record: by_key.get((record.trace_id, record.parent_span_id or ""))


def _needed_shift(
    node: PathSpan, parent: PathSpan, parent_of: Callable[[SpanRecord], SpanRecord | None]
) -> int:
    """How far ``node`` must move to sit plausibly against ``parent`` (0 when it already does)."""
    start, end = node.record.start_unix_nano, node.record.end_unix_nano
    latest_start = start + _early_by(node.record)
    if _sent_message(node.record, parent.record):
        received = _received(node)
        early = received + _early_by(node.record) < parent.start_unix_nano
        return parent.end_unix_nano - received if early else 0
    if latest_start >= parent.start_unix_nano and not _served_after_call_ended(
        node, parent, parent_of
    ):
        return 0
    slack = (parent.end_unix_nano - parent.start_unix_nano) - (end - start)
    if slack < 0:
        # longer than its caller: it cannot fit, so its length says nothing about the clocks;
        # only an impossible early start is corrected (a late start is left as recorded)
        return parent.start_unix_nano - start if start < parent.start_unix_nano else 0
    return parent.start_unix_nano + slack // 2 - start


def _received(consumer: PathSpan) -> int:
    """When ``consumer`` had its message, as its clock recorded it: its start; for a pull
    consumer's "receive" placed by the "process" spans below it that link to the messages (it
    links to none itself), when the first of those began: a long poll waits for its message,
    so it may begin before the message was sent."""
    record = consumer.record
    if consumer.attached_by != ATTACHED_BY_LINK or record.links:
        return record.start_unix_nano
    linking = [child.record.start_unix_nano for child in consumer.children if child.record.links]
    return min(linking, default=record.start_unix_nano)


def _sent_message(child: SpanRecord, parent: SpanRecord) -> bool:
    """Whether ``child`` came from ``parent`` as a message: either is a PRODUCER or the child a
    CONSUMER. Other work under a CONSUMER is its handler's (a call through a client that records
    no span of its own), which the consumer waited for."""
    return child.kind in ASYNC_KINDS or parent.kind == "PRODUCER"


def _served_after_call_ended(
    node: PathSpan, parent: PathSpan, parent_of: Callable[[SpanRecord], SpanRecord | None]
) -> bool:
    """A span that answers a call and starts after the call ended (its CLIENT span, or the
    INTERNAL span of the attempt between them): no single clock shows that. The answer is
    the SERVER span, or a proxy's own span (INTERNAL) over it."""
    record = node.record
    if parent.record.kind == "CLIENT":
        is_call = record.kind == "SERVER" or (record.kind == "INTERNAL" and _over_server(node))
    elif record.kind == "INTERNAL":  # a proxy's span under a mesh sidecar's, over the server
        is_call = any(_answers_call(child.record, parent_of) for child in node.children)
    else:
        return _served_after_attempts_ended(node, parent, parent_of)
    return is_call and record.start_unix_nano > parent.end_unix_nano + _early_by(parent.record)


def _early_by(record: SpanRecord) -> int:
    """How much earlier than they happened ``record``'s times may read: up to a millisecond
    (less a nanosecond) for a start on a whole millisecond (see the module's docstring)."""
    return _MS - 1 if record.start_unix_nano % _MS == 0 else 0


def _answers_call(record: SpanRecord, parent_of: Callable[[SpanRecord], SpanRecord | None]) -> bool:
    """A SERVER span that answered a CLIENT span through INTERNAL spans between them."""
    return record.kind == "SERVER" and calling_span(record, parent_of) is not None


def _served_after_attempts_ended(
    node: PathSpan, parent: PathSpan, parent_of: Callable[[SpanRecord], SpanRecord | None]
) -> bool:
    """A SERVER span under the INTERNAL span of one attempt that starts after the whole call
    ended. One that starts after its attempt ended, while the client was still trying again,
    is no evidence: an overloaded server takes a timed-out attempt's request late."""
    record = node.record
    caller = calling_span(record, parent_of) if record.kind == "SERVER" else None
    if caller is None:
        return False
    call_end = caller.end_unix_nano + parent.shift_ns  # the attempt's clock is its client's
    return record.start_unix_nano > max(parent.end_unix_nano, call_end)


def _over_server(node: PathSpan) -> bool:
    """Whether ``node`` is a proxy's own span over the SERVER span it passes the call to (not
    a job begun under the call, or linking to it, after it returned)."""
    return any(child.record.kind == "SERVER" for child in node.children)


def _describe(service: str, deltas: list[int]) -> str:
    largest = max(deltas, key=abs)
    spans = "span" if len(deltas) == 1 else "spans"
    return (
        f"clock skew adjusted on {service}: shifted {largest / 1e6:+.1f} ms "
        f"({len(deltas)} {spans} and their children on the same clock)"
    )
