"""The critical path: the chain of work the request's end waited for.

The walk starts at the span that ended last, across every joined trace, and goes back in time:

- inside a span, the synchronous child that ended last before the current moment is on the path,
  then the one that ended last before that child started, and so on; a synchronous child's time
  counts only inside its parent's (a WSGI server span that closes after its client read the
  response ends, for the path, when the client did), but up to where the walk comes back to it
  from work it started later (a server that went on after its caller timed out, then published
  the message the request ended with); children that overlap a chosen one ran in parallel and
  are not on the path;
- at a span's start the walk moves to what started it: its caller for a synchronous span; for a
  consumer, the message it waited for (its producer, or for a batch consumer the linked message
  that arrived last, the one it hangs under in the tree), with the queue wait on the path; for
  a request an HTTP client sent again under its call's first request (the call began the
  trace), the request it sent before.

Asynchronous work (a consumer under its producer, a linked trace, work started after its parent
ended) is never a "child the parent waited for"; it is on the path only where the walk reaches it
from the request's end. Each span gets ``critical_ns``, its own time on the path, and
``critical_wait_ns``, the wait before it on the path; together they add up to the path's length.
``self_ns`` is a span's duration minus the time its synchronous children covered.
"""

from __future__ import annotations

from tracekit.path.hops import hop_type, resent_under_first_request
from tracekit.path.model import ATTACHED_BY_LINK, PathSpan, last_to_end

__all__ = [
    "MAX_REPLY_DEPTH",
    "Window",
    "critical_path",
    "is_async_child",
    "replies_awaited",
    "request_end_in_callers_time",
    "request_start",
    "set_self_times",
    "windows",
]

Window = tuple[int, int]


def is_async_child(node: PathSpan) -> bool:
    """True when ``node``'s parent did not wait for it: a queue hop, a link, or a later start."""
    parent = node.parent
    if parent is None:
        return False
    if node.attached_by == ATTACHED_BY_LINK or hop_type(parent.record, node.record) == "messaging":
        return True
    return node.start_unix_nano > parent.end_unix_nano


def request_end_in_callers_time(ordered: list[PathSpan]) -> PathSpan | None:
    """Of the spans on the critical path, the one that ended last, a synchronous span counted
    only inside its caller's time, as the walk counts it (``ordered``: parents first): a WSGI
    server span that closes just after its client read the answer is not where the request
    ends. On a tie, a span that ended in its own time, then the last in tree order."""
    ends: dict[PathSpan, int] = {}
    last: PathSpan | None = None
    for node in ordered:
        end = node.end_unix_nano
        if node.parent is not None and not is_async_child(node):
            end = min(end, ends[node.parent])
        ends[node] = end
        if node.on_critical_path and (
            last is None
            or (end, end == node.end_unix_nano) >= (ends[last], ends[last] == last.end_unix_nano)
        ):
            last = node
    return last


def request_start(node: PathSpan) -> int:
    """When the request's work in ``node`` began: its start; for a pull consumer's "receive"
    (a long poll placed by the "process" spans below it that link to the messages), when its
    message arrived: the poll may have waited long before the request even began, and that
    wait was not the request's."""
    parent = node.parent
    if parent is None or node.attached_by != ATTACHED_BY_LINK or node.record.links:
        return node.start_unix_nano
    taken = [child.start_unix_nano for child in node.children if child.record.links]
    if not taken:
        return node.start_unix_nano
    return max(node.start_unix_nano, min(parent.end_unix_nano, *taken))


def set_self_times(
    ordered: list[PathSpan],
    detached: set[PathSpan],
    replies: dict[PathSpan, list[PathSpan]] | None = None,
) -> None:
    """``self_ns`` of every span: its duration minus the union of its synchronous children
    and, for each reply it awaited (``replies_awaited``), the time from the request it sent
    to the reply's end.

    ``detached`` holds the asynchronous children (``is_async_child``).
    """
    for node in ordered:
        lo, hi = request_start(node), node.end_unix_nano  # a long poll's wait is not the request's
        busy = [(c.start_unix_nano, c.end_unix_nano) for c in node.children if c not in detached]
        busy += [
            (_sent_from(node, r).start_unix_nano, r.end_unix_nano)
            for r in (replies or {}).get(node, [])
        ]
        covered, reach = 0, lo
        for first, last in sorted(busy):
            start, end = max(first, reach), min(last, hi)
            if end > start:
                covered, reach = covered + end - start, end
        node.self_ns = hi - lo - covered


def _sent_from(waiter: PathSpan, reply: PathSpan) -> PathSpan:
    """The child of ``waiter`` that ``reply`` descends from: where the request left it."""
    node = reply
    while node.parent is not None and node.parent is not waiter:
        node = node.parent
    return node


def windows(
    ordered: list[PathSpan],
    end: PathSpan,
    detached: set[PathSpan],
    reopened: dict[PathSpan, int] | None = None,
) -> dict[PathSpan, Window]:
    """Each span -> the part of its time that can be on the path (``ordered``: parents first).

    A synchronous child is clamped into its parent's window, or up to the moment ``reopened``
    gives it, if later; the request's end and asynchronous spans keep their own times.
    """
    out: dict[PathSpan, Window] = {}
    for node in ordered:
        out[node] = _window(node, out, end, detached, reopened or {})
    return out


def _window(
    node: PathSpan,
    out: dict[PathSpan, Window],
    end: PathSpan,
    detached: set[PathSpan],
    reopened: dict[PathSpan, int],
) -> Window:
    """``node``'s window, its parent's being in ``out`` (see ``windows``)."""
    own = (request_start(node), node.end_unix_nano)
    parent = node.parent
    if parent is None or node is end or node in detached:
        return own
    lo, hi = out[parent]
    hi = max(hi, reopened.get(node, hi))
    return (min(max(own[0], lo), hi), min(max(own[1], lo), hi))


# ancestors looked through, from a consumer, for the span of its own service awaiting it
MAX_REPLY_DEPTH = 32


def replies_awaited(ordered: list[PathSpan]) -> dict[PathSpan, list[PathSpan]]:
    """Span -> the reply messages it waited for (request/reply over a queue): a consumer of
    the span's own service, below it past another service, that ran within it. The caller
    went on when the reply came back, so the reply is on the path like a synchronous child."""
    replies: dict[PathSpan, list[PathSpan]] = {}
    for node in ordered:
        if node.record.kind == "CONSUMER":
            waiter = _awaiting(node)
            if waiter is not None:
                replies.setdefault(waiter, []).append(node)
    return replies


def _awaiting(reply: PathSpan) -> PathSpan | None:
    """The span of ``reply``'s service that sent the request out of it and was running all
    the while the reply was handled (the caller, above its own "publish"), if any."""
    node, depth = reply.parent, 0
    while node is not None and node.service == reply.service and depth < MAX_REPLY_DEPTH:
        node, depth = node.parent, depth + 1  # a publish to itself is not a request out
    while node is not None and node.service != reply.service and depth < MAX_REPLY_DEPTH:
        node, depth = node.parent, depth + 1
    while node is not None and depth < MAX_REPLY_DEPTH and node.service == reply.service:
        if (
            node.start_unix_nano
            <= reply.start_unix_nano
            <= reply.end_unix_nano
            <= node.end_unix_nano
        ):
            return node
        node, depth = node.parent, depth + 1
    return None


class _Walk:
    """The backward walk's state: each span's window, its untried synchronous children (and
    the replies it awaited), latest end last."""

    def __init__(
        self,
        ordered: list[PathSpan],
        roots: list[PathSpan],
        end: PathSpan,
        replies: dict[PathSpan, list[PathSpan]],
    ) -> None:
        self.ordered = ordered
        self.roots = roots
        self.end = end
        self.detached = {n for n in ordered if is_async_child(n)}
        self.spans = windows(ordered, end, self.detached)
        self.replies = replies
        self.reopened: dict[PathSpan, int] = {}
        self.untried: dict[PathSpan | None, list[PathSpan]] = {}
        self.on_path: set[PathSpan] = set()

    def reopen(self, cause: PathSpan, moment: int) -> None:
        """Widen the windows of ``cause`` and the spans around it to ``moment`` (at most their
        own ends), where the walk came back to it from work started then: a server that went on
        after its caller timed out and then published a message ran until that publish, and the
        consumer's wait begins there, not where the caller gave up."""
        node: PathSpan | None = cause
        top: PathSpan | None = None
        while node is not None and self.spans[node][1] < min(node.end_unix_nano, moment):
            self.reopened[node] = min(node.end_unix_nano, moment)
            node, top = node.parent, node
        if top is None:
            return
        below = [top]  # the windows clamped under the widest span reopened, parents first
        while below:
            span = below.pop()
            self.spans[span] = _window(span, self.spans, self.end, self.detached, self.reopened)
            below.extend(c for c in span.children if c not in self.detached and c is not self.end)
        self.untried.clear()  # sorted by the old windows: a child tried again still ends too late

    def latest_child_before(self, node: PathSpan | None, moment: int) -> PathSpan | None:
        """The untried synchronous child of ``node`` (None: the roots), or reply it awaited,
        that ended last by then."""
        children = self.roots if node is None else node.children
        replies = self.replies.get(node, []) if node is not None else []
        if not children and not replies:
            return None
        untried = self.untried.get(node)
        if untried is None:
            spans = self.spans
            untried = [c for c in children if c not in self.detached] + replies
            # by end, and on a tie the earlier start (the longer span) is tried first
            untried.sort(key=lambda c: (spans[c][1], -spans[c][0]))
            self.untried[node] = untried
        while untried:
            child = untried.pop()
            # a child still running at ``moment`` ran in parallel; the walk only goes back
            if self.spans[child][1] <= moment and child not in self.on_path:
                return child
        return None


def critical_path(ordered: list[PathSpan], roots: list[PathSpan]) -> list[str]:
    """Span ids on the critical path, in tree order; sets each span's time fields."""
    if not ordered:
        return []
    replies = replies_awaited(ordered)
    end = last_to_end(ordered)
    walk = _Walk(ordered, roots, end, replies)
    set_self_times(ordered, walk.detached, replies)
    node: PathSpan | None = end
    moment = end.end_unix_nano
    while True:
        if node is not None:
            walk.on_path.add(node)
        child = walk.latest_child_before(node, moment)
        if child is not None:
            child_end = walk.spans[child][1]
            _credit(node, child_end, moment)
            node, moment = child, child_end
        elif node is None:
            break
        else:
            node, moment = _cause(node, walk, moment)
    for node in walk.on_path:
        node.on_critical_path = True
    return [n.record.span_id for n in ordered if n in walk.on_path]


def _credit(node: PathSpan | None, start: int, end: int) -> None:
    """``node`` itself was the work on the path from ``start`` to ``end``."""
    if node is not None and end > start:
        node.critical_ns += end - start


def _cause(node: PathSpan, walk: _Walk, moment: int) -> tuple[PathSpan | None, int]:
    """Past ``node``'s start: what started it and when; the wait in between is on the path.

    A span's cause is its parent in the tree: the caller, the producer of a consumer's message,
    or the linked message a batch consumer waited for; for a redelivered message, the delivery
    before it, whose end sent the message back to the queue. The roots hang under a virtual
    span covering the whole request (None).
    """
    start = min(walk.spans[node][0], moment)  # never forward, even on raw (unadjusted) times
    _credit(node, start, moment)
    # A request sent again under its call's first request (the call began the trace): the
    # call waited for each request in turn, and the walk goes back through them; the time
    # between two is the client's own (a backoff), also where a clock stepped back between
    # them and the request sent before is not known (the first request is the cause then).
    resent = resent_under_first_request(node)
    cause = node.redelivery_of or (node.resend_of if resent else None) or node.parent
    if cause is None:
        return None, start
    walk.reopen(cause, start)
    lo, hi = walk.spans[cause]
    resumed = min(max(lo, min(hi, start)), start)
    if resent:
        _credit(node, resumed, start)
    else:
        node.critical_wait_ns += start - resumed
    return cause, resumed
