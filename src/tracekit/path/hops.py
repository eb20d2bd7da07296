"""Hops between services: HTTP client -> server, and producer -> consumer through a queue.

An HTTP hop is a CLIENT span with a SERVER child, in another service or its own (an RPC such as
gRPC too, named by its ``rpc.system`` and method), or a SERVER descendant through INTERNAL spans
only. A queue hop is a PRODUCER (or a messaging CLIENT "send") span and a CONSUMER span that is
its child or links to it; a batch consumer makes one hop per message it links to. Latency is
what the sending side experienced for HTTP (the client span, or for a retried call the
attempt's, where the client library records one span per attempt) and publish start -> handler
end for messaging; queue wait is consumer start - producer end.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable

from tracekit import semconv
from tracekit.path.conventions import text, url_path
from tracekit.path.model import Hop, PathSpan
from tracekit.records import SpanRecord

__all__ = [
    "MAX_MEASURED_WAIT_MS",
    "MAX_SPANS_BETWEEN",
    "Key",
    "calling_span",
    "find_hops",
    "hop_type",
    "make_hop",
    "mark_redeliveries",
    "mark_resends",
    "measured_queue_wait_ms",
    "published_after_start_ms",
    "queue_wait_ns",
    "resend_count",
    "resent_under_first_request",
]

Key = tuple[str, str]

# INTERNAL spans looked through between a CLIENT span and the SERVER span that answered it
MAX_SPANS_BETWEEN = 8
# a queue wait a consumer measured past this (a day, in ms) is a bad clock or header: not shown
MAX_MEASURED_WAIT_MS = 86_400_000.0


def hop_type(sender: SpanRecord, receiver: SpanRecord) -> str | None:
    """``"http"``, ``"messaging"`` or None when the pair is not a hop between services (or
    from a service to itself: a call to its own endpoint crosses the network as any other)."""
    if receiver.kind == "CONSUMER" and _is_sender(sender):
        return "messaging"
    if sender.kind == "CLIENT" and receiver.kind == "SERVER":
        return "http"
    return None


def _is_sender(record: SpanRecord) -> bool:
    if record.kind == "PRODUCER":
        return True
    return record.kind == "CLIENT" and semconv.MESSAGING_SYSTEM in record.attributes


def make_hop(kind: str, sender: PathSpan, receiver: PathSpan) -> Hop:
    """Build the hop between two placed spans, using their (skew-adjusted) times."""
    s, r = sender.record, receiver.record
    system: str | None
    if kind == "http":
        timed = _attempt(sender, receiver) or sender
        latency_ns, wait = timed.end_unix_nano - timed.start_unix_nano, None
        system, destination = _call_target(s, r)
    else:
        system = text(r, semconv.MESSAGING_SYSTEM) or text(s, semconv.MESSAGING_SYSTEM)
        destination = text(s, semconv.MESSAGING_DESTINATION_NAME) or text(
            r, semconv.MESSAGING_DESTINATION_NAME
        )
        latency_ns = receiver.end_unix_nano - sender.start_unix_nano
        wait = round(queue_wait_ns(sender, receiver) / 1e6, 3)
    return Hop(
        s.service, r.service, kind, system, destination, s.span_id, r.span_id,
        round(latency_ns / 1e6, 3), wait, s.trace_id, r.trace_id,
    )  # fmt: skip


def queue_wait_ns(sender: PathSpan, receiver: PathSpan) -> int:
    """How long the message waited in the queue before ``receiver`` took it: since it was
    published, or for a redelivery since the delivery before it ended (the message was being
    handled until then)."""
    earlier = receiver.redelivery_of if receiver.parent is sender else None
    queued_at = max(sender.end_unix_nano, earlier.end_unix_nano if earlier else 0)
    # A fast consumer can take the message before the producer's broker call has returned
    # (and its span ended): no time was spent queued then, never a negative wait.
    return max(0, receiver.start_unix_nano - queued_at)


def measured_queue_wait_ms(record: SpanRecord) -> float | None:
    """The queue wait a CONSUMER span measured itself from the message's publish time
    (``tracekit.queue_wait_ms``): the only wait there is to show when the producer's span is
    not on the path (its sampler left it out). None when absent or not a plausible number."""
    wait = record.attributes.get(semconv.QUEUE_WAIT_MS)
    if record.kind != "CONSUMER" or isinstance(wait, bool) or not isinstance(wait, int | float):
        return None
    if published_after_start_ms(record) is not None:
        return None  # its clock is behind the publisher's: it measured 0, which is no wait
    return round(float(wait), 3) if 0 <= wait <= MAX_MEASURED_WAIT_MS else None


def published_after_start_ms(record: SpanRecord) -> float | None:
    """How long after a CONSUMER span began its message was published, by the times the span
    carries (``tracekit.publish_time_unix_nano``, on the publisher's or broker's clock; its
    start, on the consumer's): a consumer whose clock is behind theirs measures a wait below 0,
    which it records as 0. None when the publish time came first, or is not said."""
    published = record.attributes.get(semconv.PUBLISH_TIME)
    if record.kind != "CONSUMER" or type(published) is not int:
        return None
    ahead = published - record.start_unix_nano
    return round(ahead / 1e6, 3) if ahead > 0 else None


# A delivery's message: service, destination, message id and consumer group of its consumer
_Message = tuple[str, str | None, str | None, str | None]


def mark_redeliveries(ordered: list[PathSpan]) -> None:
    """Set ``redelivery_of`` on every consumer that took a message another delivery of it had
    taken first: a consumer of the same service, destination, message id and consumer group
    under the same producer, that ended before it began. Sorted once per message: a poison
    message delivered thousands of times must not make the engine quadratic."""
    for sender in ordered:
        deliveries: dict[_Message, list[PathSpan]] = {}
        for child in sender.children:
            if child.record.kind == "CONSUMER" and hop_type(sender.record, child.record):
                deliveries.setdefault(_message_of(child.record), []).append(child)
        for same in deliveries.values():
            if len(same) > 1:
                _mark_in_order(same)


def _message_of(consumer: SpanRecord) -> _Message:
    """A delivery's message, as its consumer's group took it: two Kafka consumer groups of one
    service each get every record once, and the second group's is no redelivery of the
    first's (its queue wait was shown from that one's end, and the path ran through both)."""
    return (consumer.service, text(consumer, semconv.MESSAGING_DESTINATION_NAME),
            text(consumer, semconv.MESSAGING_MESSAGE_ID),
            text(consumer, semconv.MESSAGING_CONSUMER_GROUP_NAME))  # fmt: skip


def _mark_in_order(deliveries: list[PathSpan]) -> None:
    """Each delivery's ``redelivery_of``: of those ended by its start, the one ended last."""
    by_end = sorted(deliveries, key=lambda d: d.end_unix_nano)
    ended, latest, before = 0, None, None
    for delivery in sorted(deliveries, key=lambda d: d.start_unix_nano):
        while ended < len(by_end) and by_end[ended].end_unix_nano <= delivery.start_unix_nano:
            before, latest = latest, by_end[ended]
            ended += 1
        # a delivery lasting no time has ended by its own start: the one before it, then
        delivery.redelivery_of = before if latest is delivery else latest


def _attempt(client: PathSpan, server: PathSpan) -> PathSpan | None:
    """The client library's span (INTERNAL, in the client's service, under its CLIENT span)
    for the attempt ``server`` answered, when the call was retried: a call retried after a
    timeout made two hops, and each took its own attempt's time, not the whole call's."""
    node = server.parent
    for _ in range(MAX_SPANS_BETWEEN):
        if node is None or node.record.kind != "INTERNAL":
            return None
        if node.parent is client:
            return node if node.service == client.service and _retried(client) else None
        node = node.parent
    return None


def _retried(client: PathSpan) -> bool:
    """Whether the client library recorded more than one attempt under ``client`` (for one
    attempt, the call's own span is the hop's time, as it always was)."""
    attempts = (c for c in client.children if c.record.kind == "INTERNAL")
    own = (c for c in attempts if c.service == client.service)
    return next(own, None) is not None and next(own, None) is not None  # stops at the second


def resend_count(record: SpanRecord) -> int:
    """``http.request.resend_count`` of a CLIENT span: 1, 2, ... for a request its client sent
    again (a redirect followed, a retry), 0 for the call's first request."""
    count = record.attributes.get(semconv.HTTP_REQUEST_RESEND_COUNT)
    if record.kind != "CLIENT" or not isinstance(count, int) or isinstance(count, bool):
        return 0
    return max(0, count)


def mark_resends(ordered: list[PathSpan]) -> None:
    """Set ``resend_of`` on every request its client sent again: the request of the same call
    sent just before it, a sibling (a span of the same service, resent one time fewer, ended by
    its start; of those, the one ended last), or its parent when the call began the trace (its
    resends hang under its first request). Sorted once per parent: a span making thousands of
    calls, each sent again, must not make the engine quadratic."""
    for parent in ordered:
        sent: dict[tuple[str, int], list[PathSpan]] = {}
        for span in (parent, *parent.children):
            if span.record.kind == "CLIENT":
                sent.setdefault((span.service, resend_count(span.record)), []).append(span)
        for (service, count), resends in sent.items():
            if count > 0:
                _mark_sent_before(resends, parent, sent.get((service, count - 1), []))


def _mark_sent_before(resends: list[PathSpan], parent: PathSpan, earlier: list[PathSpan]) -> None:
    by_end = sorted(earlier, key=lambda span: span.end_unix_nano)
    ends = [span.end_unix_nano for span in by_end]
    for span in resends:
        if span.parent is parent:  # (``parent`` itself is one of its own parent's children)
            ended = bisect_right(ends, span.start_unix_nano)
            span.resend_of = by_end[ended - 1] if ended else None


def resent_under_first_request(client: PathSpan) -> bool:
    """Whether ``client`` is a request its client sent again that hangs under its call's first
    request (the call began the trace): a CLIENT span of the same service, ended by its start.
    The requests an SDK makes inside a CLIENT span of its own start inside that span."""
    parent = client.parent
    return (
        resend_count(client.record) > 0
        and parent is not None
        and parent.record.kind == "CLIENT"
        and parent.service == client.service
        and parent.end_unix_nano <= client.start_unix_nano
    )


def _call_target(sender: SpanRecord, receiver: SpanRecord) -> tuple[str, str | None]:
    """(system, destination) of a call: ``http``, ``GET /orders/{id}``; for an RPC (gRPC...),
    its ``rpc.system`` and ``service/method``."""
    rpc = text(receiver, semconv.RPC_SYSTEM) or text(sender, semconv.RPC_SYSTEM)
    if rpc:
        return rpc, _rpc_method(receiver) or _rpc_method(sender)
    route = text(receiver, semconv.HTTP_ROUTE) or url_path(receiver) or url_path(sender)
    method = text(receiver, semconv.HTTP_REQUEST_METHOD) or text(
        sender, semconv.HTTP_REQUEST_METHOD
    )
    return "http", f"{method} {route}" if method and route else route


def _rpc_method(record: SpanRecord) -> str | None:
    """``orders.OrderService/Create``, as gRPC names a method."""
    parts = [text(record, name) for name in (semconv.RPC_SERVICE, semconv.RPC_METHOD)]
    return "/".join(part for part in parts if part) or None


def find_hops(ordered: list[PathSpan], nodes: dict[Key, PathSpan]) -> list[Hop]:
    """Every hop in the path, ordered by when the receiving side started."""
    found: dict[tuple[Key, Key], Hop] = {}
    for node in ordered:
        for sender in _senders(node, nodes):
            kind = hop_type(sender.record, node.record)
            if kind is not None and (sender.key, node.key) not in found:
                found[(sender.key, node.key)] = make_hop(kind, sender, node)
    return list(found.values())


def calling_span(
    server: SpanRecord, parent_of: Callable[[SpanRecord], SpanRecord | None]
) -> SpanRecord | None:
    """The CLIENT span a SERVER span answered through INTERNAL spans between them (a client
    library's span for one attempt, a proxy's own span), when its parent is one of those."""
    step = parent_of(server) if server.kind == "SERVER" else None
    if step is None or step.kind != "INTERNAL":
        return None  # no span between: the parent itself is the caller, if any
    for _ in range(MAX_SPANS_BETWEEN):
        step = parent_of(step)
        if step is None or step.kind != "INTERNAL":
            break
    return step if step is not None and hop_type(step, server) == "http" else None


def _senders(node: PathSpan, nodes: dict[Key, PathSpan]) -> Iterable[PathSpan]:
    """The span's real parent (or the client it answered through INTERNAL spans) and every
    known span it links to."""
    record = node.record
    if record.parent_span_id:
        parent = nodes.get((record.trace_id, record.parent_span_id))
        if parent is not None:
            yield parent
        caller = calling_span(record, lambda r: _parent_record(r, nodes))
        if caller is not None:
            yield nodes[(caller.trace_id, caller.span_id)]
    for link in record.links:
        target = nodes.get((link.trace_id, link.span_id))
        if target is not None:
            yield target


def _parent_record(record: SpanRecord, nodes: dict[Key, PathSpan]) -> SpanRecord | None:
    parent = nodes.get((record.trace_id, record.parent_span_id or ""))
    return parent.record if parent is not None else None
