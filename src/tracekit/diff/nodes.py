"""Nodes: the same call in different requests, and what each request measured there.

A node is identified by its chain of (service, normalised name, kind) ancestors, so a call
matches its counterpart in another request wherever both sit in the same place, and a node that
gains a child is the same node with one child more. Chains are interned as (parent node, key)
pairs: a 10,000-deep request costs 10,000 entries, not 10,000 chains.

Several calls of one node in one request (a loop, a retry) add up: ``calls`` counts them, the
times are their sums, and each call's interval is kept for the order and concurrency checks.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from tracekit.path import Path
from tracekit.path.conventions import clock_stepped_back

from .units import HTTP, MESSAGING, NodeKey, Unit, units_of

__all__ = [
    "MAX_INTERVALS",
    "MAX_MESSAGES",
    "RESEND",
    "Measure",
    "Node",
    "NodeIndex",
    "error_shape",
    "measure",
    "timed",
]

MAX_MESSAGES = 5  # distinct error messages kept per node
MAX_INTERVALS = 64  # calls per node whose intervals are kept (order and concurrency checks)
RESEND = "a resend (http.request.resend_count)"


@dataclass(frozen=True, slots=True)
class Node:
    """One place in the requests' merged tree."""

    id: int
    parent: int | None
    key: NodeKey
    depth: int
    sender: str | None  # the service that called or sent, for a hop

    def label(self, arrow: str = "->") -> str:
        """``fulfilment -> inventory: GET /stock/{sku}`` for a hop, ``gateway: POST /checkout``."""
        key = self.key
        if self.sender is not None and key.kind in (HTTP, MESSAGING):
            return f"{self.sender} {arrow} {key.service}: {key.name}"
        return f"{key.service}: {key.name}"


class NodeIndex:
    """Interns node identities across any number of requests."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._ids: dict[tuple[int | None, NodeKey], int] = {}

    def node_id(self, parent: int | None, key: NodeKey, sender: str | None) -> int:
        """The id of the node ``key`` under node ``parent`` (made on first sight)."""
        found = self._ids.get((parent, key))
        if found is None:
            depth = 0 if parent is None else self.nodes[parent].depth + 1
            found = len(self.nodes)
            self.nodes.append(Node(found, parent, key, depth, sender))
            self._ids[(parent, key)] = found
        return found

    def place(self, units: list[Unit], grafts: Mapping[NodeKey, int] | None = None) -> list[int]:
        """The node of each unit (``units`` parents first); a top unit whose key ``grafts``
        holds, at that node (the same work, below callers the request recorded nothing of)."""
        placed: dict[int, int] = {}
        out = []
        for unit in units:
            parent = placed[id(unit.parent)] if unit.parent is not None else None
            grafted = grafts.get(unit.key) if grafts and parent is None else None
            node = self.node_id(parent, unit.key, unit.sender) if grafted is None else grafted
            placed[id(unit)] = node
            out.append(node)
        return out


@dataclass(slots=True)
class Measure:
    """What one request measured at one node (nanoseconds; starts relative to the request)."""

    calls: int = 0
    errors: int = 0
    retries: int = 0
    duration_ns: int = 0
    self_ns: int = 0
    queue_wait_ns: int = 0
    critical_ns: int = 0  # on the critical path, queue wait included
    critical_wait_ns: int = 0  # the queue-wait part of critical_ns
    first_start_ns: int = 0
    error_messages: list[str] = field(default_factory=list)
    retried_after: list[str] = field(default_factory=list)  # what each retry followed
    intervals: list[tuple[int, int]] = field(default_factory=list)  # per call, caller's view
    redirects: int = 0  # calls an HTTP client made following a redirect...
    redirected_from: set[int] = field(default_factory=set)  # ... from calls of these nodes

    def add(self, unit: Unit, origin: int, error: str | None, retry_cause: str | None) -> None:
        """Count one call of this node."""
        start, end = unit.start_ns - origin, unit.end_ns - origin
        self.first_start_ns = start if self.calls == 0 else min(self.first_start_ns, start)
        self.calls += 1
        self.duration_ns += unit.duration_ns
        self.self_ns += unit.self_ns
        self.queue_wait_ns += unit.queue_wait_ns
        self.critical_ns += unit.critical_ns
        self.critical_wait_ns += unit.critical_wait_ns
        if len(self.intervals) < MAX_INTERVALS:
            self.intervals.append((start, end))
        if error is not None:
            self.errors += 1
            if len(self.error_messages) < MAX_MESSAGES and not any(
                error_shape(kept) == error_shape(error) for kept in self.error_messages
            ):
                self.error_messages.append(error)
        if retry_cause is not None:
            self.retries += 1
            if retry_cause not in self.retried_after and len(self.retried_after) < MAX_MESSAGES:
                self.retried_after.append(retry_cause)


# What tells one occurrence of an error from another rather than one error from another: a
# UUID, a hex id of 8 digits or more, a number of 4 digits or more, a decimal. Numbers of up to
# 3 digits (an HTTP status, a small count) stay part of the error.
_OCCURRENCE = re.compile(
    r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
    r"|\b(?=[0-9a-f]*[0-9])[0-9a-f]{8,}\b"
    r"|[0-9]*\.[0-9]+|[0-9]{4,}",
    re.IGNORECASE,
)


def error_shape(message: str) -> str:
    """``order 1042 not found`` and ``order 2077 not found`` are one error: the message with
    the ids and large numbers of one occurrence taken out."""
    return _OCCURRENCE.sub("#", message)


def measure(
    path: Path,
    index: NodeIndex,
    grafts: Mapping[NodeKey, int] | None = None,
    received_only: AbstractSet[int] = frozenset(),
) -> dict[int, Measure]:
    """Node id -> what ``path`` measured there (``grafts``: see ``NodeIndex.place``); at the
    nodes ``received_only`` names, what the calls' receiving side measured alone."""
    units = units_of(path)
    errors = {id(unit): unit.error() for unit in units}
    causes = _retry_causes(units, errors)
    out: dict[int, Measure] = {}
    node_of: dict[int, int] = {}  # id of a call's first span -> its node
    for unit, node in zip(units, index.place(units, grafts), strict=True):
        counted = unit.received() if node in received_only else unit
        error = errors[id(unit)] if counted is unit else counted.error()
        found = out.setdefault(node, Measure())
        found.add(counted, path.start_unix_nano, error, causes.get(id(unit)))
        node_of[id(unit.spans[0])] = node
        redirect = unit.redirect_of()
        if redirect is not None and id(redirect) in node_of:
            found.redirects += 1
            found.redirected_from.add(node_of[id(redirect)])
    return out


def timed(path: Path) -> bool:
    """No span of the request is kept lasting 0 ms because its clock stepped back while it ran:
    where one is, how long the request and its calls took is unknown, not what they show."""
    return bool(path.spans) and not any(clock_stepped_back(s.record) for s in path.spans)


def _retry_causes(units: list[Unit], errors: dict[int, str | None]) -> dict[int, str]:
    """id(unit) -> why it is a retry: the error of the attempt before, or a marked resend.

    Attempts are the calls of one key by one caller (one parent unit) for one target (URL
    path or message id): a loop over items that goes on after one item failed asks for other
    items, it does not retry the one that failed. The attempt before a call is the one that
    ended last before it began: calls made at once (a scatter to replicas) retry none of each
    other.
    """
    attempts: dict[tuple[int, NodeKey, str | None], list[Unit]] = {}
    for unit in units:
        attempts.setdefault((id(unit.parent), unit.key, unit.target()), []).append(unit)
    causes: dict[int, str] = {}
    for calls in attempts.values():
        calls.sort(key=lambda u: u.start_ns)
        running: list[tuple[int, int, Unit]] = []  # earlier attempts by end (a heap)
        before: Unit | None = None  # the one that ended last before the current call began
        for order, unit in enumerate(calls):
            while running and running[0][0] <= unit.start_ns:
                before = heapq.heappop(running)[2]
            previous = errors[id(before)] if before is not None else None
            if previous is not None:
                causes[id(unit)] = previous
            elif unit.resent():
                causes[id(unit)] = RESEND
            heapq.heappush(running, (_failed_at(unit), order, unit))
    return causes


def _failed_at(unit: Unit) -> int:
    """When the attempt was over, for the one who could retry it: its first span to end (the
    client, when its server's span closed after the response was read; the server, when a
    proxy retried inside one client span)."""
    return min(span.end_unix_nano for span in unit.spans)
