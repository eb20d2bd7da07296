"""Calls as a diff compares them: a CLIENT span and the SERVER it reached, a PRODUCER and the
CONSUMER of its message, or a span on its own.

A hop is one unit, named after the receiving side (``inventory GET /stock/{sku}``, ``fulfilment
orders.created``) and hung where the sending side hangs, so the client and the server, or the
producer and the consumer, never show up as two nodes. A second receiver of one sender (a proxy's
retry, a message fanned out to two consumer groups) is a unit of its own beside the first.

A request an HTTP client sent again hangs where its call's first request does, also when that
request began the trace (its resends are spans below it there): the same call, not one below it.

A batch consumer (linked to several messages) hangs under the closest span all of its messages
come from, not under the one it happened to wait for: which reply arrived last changes from
request to request, the batch's place in the request does not.

An HTTP call no server recorded (refused, reset, timed out before it arrived) is a CLIENT span
alone; when its caller made the same call again and a server answered that one, the two are
attempts of one call, and the lone one joins the answered one's node (``_join_unanswered``): a
retry after a refused connection is a retry, not a node added beside the call it retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tracekit import semconv
from tracekit.path import Path, PathSpan, error_message
from tracekit.path.conventions import attribute, text, url_path
from tracekit.path.hops import (
    hop_type,
    queue_wait_ns,
    resend_count,
    resent_under_first_request,
)
from tracekit.path.model import ATTACHED_BY_LINK
from tracekit.records import SpanRecord

from .names import node_name

__all__ = [
    "HTTP",
    "MESSAGING",
    "SPAN",
    "NodeKey",
    "Unit",
    "batch_anchors",
    "common_ancestor",
    "top_key",
    "units_of",
]

HTTP = "http"
MESSAGING = "messaging"
SPAN = "span"


@dataclass(frozen=True, slots=True, order=True)
class NodeKey:
    """What a call is matched by under its parent: service, normalised name and kind of unit."""

    service: str
    name: str
    kind: str  # HTTP, MESSAGING or SPAN


@dataclass(slots=True, eq=False)
class Unit:
    """One call in one request: its spans (sender first), where it hangs, and its timings."""

    key: NodeKey
    spans: list[PathSpan]
    parent: Unit | None
    sender: str | None = None  # the calling or publishing service of a hop
    queue_wait_ns: int = 0
    measured: PathSpan | None = field(default=None, repr=False)  # whose duration is the unit's
    waited: bool = True  # its queue wait counts (not in ``received``)

    @property
    def start_ns(self) -> int:
        """When the call started, as its sender saw it."""
        return self.spans[0].start_unix_nano

    @property
    def end_ns(self) -> int:
        """When the call ended for its sender."""
        return self.spans[0].end_unix_nano

    @property
    def duration_ns(self) -> int:
        """The caller's wait for an HTTP call; the handler's time for a message; else the span's."""
        span = self.measured or self.spans[0]
        return span.end_unix_nano - span.start_unix_nano

    @property
    def self_ns(self) -> int:
        """Time spent in the unit's own spans, not in the calls below them."""
        return sum(span.self_ns for span in self.spans)

    @property
    def critical_ns(self) -> int:
        """Time the unit is on the critical path, its queue wait included."""
        return sum(span.critical_ns for span in self.spans) + self.critical_wait_ns

    @property
    def critical_wait_ns(self) -> int:
        """The part of ``critical_ns`` spent waiting in a queue."""
        return sum(span.critical_wait_ns for span in self.spans) if self.waited else 0

    def received(self) -> Unit:
        """The call as its receiving side recorded it: without the caller's or producer's span
        and the queue wait, which a request whose sampler left them out has no part of."""
        spans = self.spans[1:] if len(self.spans) > 1 else self.spans
        return Unit(self.key, spans, self.parent, self.sender, waited=False)

    def error(self) -> str | None:
        """Why the call failed (the receiving side's reason first), or None."""
        for span in reversed(self.spans):
            if span.record.status == "ERROR":
                return error_message(span.record)
        return None

    def target(self) -> str | None:
        """What the call asked for: the URL path, else the message id (None when unsaid), as
        the receiving side saw it, like the unit's name: a proxy's second attempt has only that
        side, and must match the first through a path the proxy may have rewritten."""
        for span in reversed(self.spans):
            found = url_path(span.record) or text(span.record, semconv.MESSAGING_MESSAGE_ID)
            if found:
                return found
        return None

    def resent(self) -> bool:
        """An HTTP client sent the call again (``http.request.resend_count`` >= 1) after a
        request that was not redirected: a redirect followed is one more call, not a retry."""
        return resend_count(self.spans[0].record) > 0 and self.redirect_of() is None

    def redirect_of(self) -> PathSpan | None:
        """The client span of the request whose redirect (its 3xx answer) this call's HTTP
        client followed, or None."""
        client = self.spans[0]
        before = client.resend_of if resend_count(client.record) > 0 else None
        status = attribute(before.record, semconv.HTTP_RESPONSE_STATUS_CODE) if before else None
        return before if isinstance(status, int) and 300 <= status < 400 else None


def units_of(path: Path) -> list[Unit]:
    """The path's calls, parents before children (the path's tree order)."""
    anchors = batch_anchors(path.spans)
    unit_of: dict[int, Unit] = {}
    units: list[Unit] = []
    for span in path.spans:
        unit = _place(span, unit_of, anchors)
        unit_of[id(span)] = unit
        if unit.spans[0] is span:
            units.append(unit)
    _join_unanswered(units)
    return units


# an HTTP call as its caller made it: method, host and path
_Call = tuple[str, str | None, str]


def _join_unanswered(units: list[Unit]) -> None:
    """Give each HTTP call no server answered the node of the same call, by the same caller,
    that a server did answer (see the module's docstring)."""
    answered: dict[tuple[int, _Call], Unit] = {}
    for unit in units:
        call = _http_call(unit.spans[0].record)
        if unit.key.kind == HTTP and call is not None:
            answered.setdefault((id(unit.parent), call), unit)
    for unit in units:
        call = _http_call(unit.spans[0].record)
        if unit.key.kind != SPAN or len(unit.spans) != 1 or call is None:
            continue
        match = answered.get((id(unit.parent), call))
        if match is not None:
            unit.key, unit.sender = match.key, match.sender


def _http_call(record: SpanRecord) -> _Call | None:
    """The HTTP call a CLIENT span made (None: not one, or unsaid)."""
    if record.kind != "CLIENT" or semconv.MESSAGING_SYSTEM in record.attributes:
        return None
    method, path = text(record, semconv.HTTP_REQUEST_METHOD), url_path(record)
    if not method or not path:
        return None
    return method, _host(record), path


def _host(record: SpanRecord) -> str | None:
    """The server the call was made to: ``server.address``, else the full URL's host."""
    found = text(record, semconv.SERVER_ADDRESS)
    if found:
        return found
    full = text(record, semconv.URL_FULL)
    try:
        return urlsplit(full).hostname if full else None
    except ValueError:
        return None


def _place(span: PathSpan, unit_of: dict[int, Unit], anchors: dict[int, PathSpan | None]) -> Unit:
    """The unit ``span`` belongs to: its sender's (joined), a new hop unit, or its own."""
    parent = span.parent
    if parent is None:
        return Unit(top_key(span), [span], None)
    kind = hop_type(parent.record, span.record)
    anchor = anchors.get(id(span), parent)
    if anchor is not None and id(anchor) not in unit_of:
        anchor = parent  # linked to messages sent below it: it can only hang where it is
    if kind is None:
        owner: Unit | None = unit_of[id(parent)]
        if owner is not None and resent_under_first_request(span):
            owner = owner.parent  # under the first request of a call that began the trace
        return Unit(_span_key(span), [span], owner)
    sender_unit = unit_of[id(parent)]
    unit = Unit(_hop_key(kind, parent.record, span.record), [span], sender_unit.parent,
                parent.service, _queue_wait(kind, parent, span), span)  # fmt: skip
    if anchor is not parent:  # a batch consumer: under its messages' common origin
        unit.parent = unit_of[id(anchor)] if anchor is not None else None
    elif len(sender_unit.spans) == 1 and sender_unit.spans[0] is parent:
        sender_unit.key, sender_unit.sender = unit.key, unit.sender
        sender_unit.queue_wait_ns = unit.queue_wait_ns
        sender_unit.measured = span if kind == MESSAGING else parent
        sender_unit.spans.append(span)
        return sender_unit
    return unit


def top_key(span: PathSpan) -> NodeKey:
    """The key of the unit of a span at the top of its request's tree (a span alone)."""
    return _span_key(span)


def _span_key(span: PathSpan) -> NodeKey:
    return NodeKey(span.service, node_name(span.record), SPAN)


def _hop_key(kind: str, sender: SpanRecord, receiver: SpanRecord) -> NodeKey:
    name = node_name(receiver)
    if kind == MESSAGING and attribute(receiver, semconv.MESSAGING_DESTINATION_NAME) is None:
        name = node_name(sender)  # the producer knows the destination the consumer did not say
    return NodeKey(receiver.service, name, HTTP if kind == "http" else MESSAGING)


def _queue_wait(kind: str, sender: PathSpan, receiver: PathSpan) -> int:
    """The message's time in the queue (the path's hop's: ``queue_wait_ns``)."""
    if kind != MESSAGING:
        return 0
    return queue_wait_ns(sender, receiver)


def batch_anchors(spans: list[PathSpan]) -> dict[int, PathSpan | None]:
    """id(batch consumer) -> the closest span all of its linked messages descend from."""
    by_key = {span.key: span for span in spans}
    anchors: dict[int, PathSpan | None] = {}
    for span in spans:
        if span.attached_by != ATTACHED_BY_LINK or span.record.kind != "CONSUMER":
            continue
        known = [by_key.get((ln.trace_id, ln.span_id)) for ln in span.record.links]
        targets = list({id(t): t for t in known if t is not None}.values())
        if len(targets) >= 2:
            anchors[id(span)] = common_ancestor(targets)
    return anchors


def common_ancestor(spans: list[PathSpan]) -> PathSpan | None:
    """The deepest span that is (or is an ancestor of) every span given; None across roots."""
    chain: list[PathSpan] = []
    node: PathSpan | None = spans[0]
    while node is not None:
        chain.append(node)
        node = node.parent
    position = {id(n): i for i, n in enumerate(chain)}
    deepest = 0
    for other in spans[1:]:
        found: PathSpan | None = other
        while found is not None and id(found) not in position:
            found = found.parent
        if found is None:
            return None
        deepest = max(deepest, position[id(found)])
    return chain[deepest]
