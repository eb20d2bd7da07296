"""Services one request recorded no spans for: left out by a sampler, or not exported.

A service sampling 30% of requests (``parentbased_traceidratio``) in front of a consumer that
keeps every message (``always_on``) leaves most requests with the consumer's spans alone: their
trace begins at a span whose parent is not there. Compared with a request the sampler kept, the
services of the kept one that the other has no span of did not go away (the request took no
other route): nothing recorded them. Their nodes are not a structure change, and no time is
attributed across the two requests, which cover different parts of the work. The work both
recorded is compared all the same: the other side's top spans are taken for the node where the
same work hangs in the kept request, below the services left out (``grafts_onto``).

The same holds where one request lacks only its entry span (``unreceived_entry``): the span that
ends last is exported last, so a request diffed seconds after it ran begins at its entry
service's calls (or those of a call still running), their parent not stored yet. Those calls
hang where the other request has them, below its entry span (``entry_grafts``).
"""

from __future__ import annotations

from collections.abc import Iterable

from tracekit.path import Path, PathSpan

from .model import ADDED, REMOVED, Change
from .names import node_name
from .nodes import Node
from .units import SPAN, NodeKey, top_key, units_of

__all__ = [
    "MAX_NAMED",
    "entry_grafts",
    "entry_note",
    "grafts_onto",
    "recorded_nothing_of",
    "unreceived_entry",
    "unrecorded_note",
    "without_unrecorded",
]

MAX_NAMED = 10  # services named in one note


def recorded_nothing_of(path: Path, other: Path) -> list[str]:
    """The services ``path`` has no span of that, in ``other``, stand above where ``path``'s
    spans begin: a trace of ``path`` begins at a span whose parent is not there (a consumer
    whose producer was left out), and in ``other`` a span of that service hangs under theirs.
    Those below it (a call one request made and the other did not) are not: they are removed."""
    entries = {span.service for span in path.spans
               if span.parent is None and span.record.parent_span_id}  # fmt: skip
    own = {span.service for span in path.spans}
    above: set[str] = set()
    seen: set[tuple[str, str]] = set()  # each ancestor walked once: a deep chain stays linear
    for span in other.spans if entries else []:
        node = span.parent if span.service in entries else None
        while node is not None and node.key not in seen:
            seen.add(node.key)
            above.add(node.service)
            node = node.parent
    return sorted(above - own)


def unrecorded_note(side: str, services: list[str]) -> str:
    """``B recorded no spans for api (left out by the sampler, or not exported)``: said instead
    of ``removed api: ...``."""
    named = ", ".join(name[:80] for name in services[:MAX_NAMED])
    more = f" and {len(services) - MAX_NAMED} more" if len(services) > MAX_NAMED else ""
    return f"{side} recorded no spans for {named}{more} (left out by the sampler, or not exported)"


def without_unrecorded(
    changes: Iterable[Change], nodes: list[Node], missing_in_a: list[str], missing_in_b: list[str],
    *, tops_unrecorded: bool = False,
) -> list[Change]:  # fmt: skip
    """``changes`` less the added and removed nodes that only the left-out spans explain: those
    of a service the other side recorded nothing of, and the top of the side that lost its
    caller's spans (its consumer, under no producer there), or of both sides where one lost
    its entry span (``tops_unrecorded``)."""
    kept = []
    for change in changes:
        node = nodes[change.node] if change.node is not None else None
        if node is None or change.kind not in (ADDED, REMOVED):
            kept.append(change)
            continue
        gone, partial = (missing_in_a, missing_in_b) if change.kind == ADDED else (
            missing_in_b, missing_in_a)  # fmt: skip
        if node.key.service in gone or ((partial or tops_unrecorded) and node.parent is None):
            continue
        kept.append(change)
    return kept


def grafts_onto(nodes: list[Node], partial: Path, left_out: list[str]) -> dict[NodeKey, int]:
    """Where the top spans of ``partial``, which recorded nothing of ``left_out``, hang in the
    request that did (``nodes``, its nodes, parents first): the key of such a top span -> the
    first node below ``left_out`` of that service and name (``api -> worker: orders``). A key
    two such nodes could take is left alone: which of them it is, nothing says."""
    tops = {top_key(span) for span in partial.spans if span.parent is None}
    missing = set(left_out)
    # per node: whether every node above it is of a service left out (one pass, parents first)
    below_left_out: list[bool] = []
    found: dict[NodeKey, int | None] = {}
    for node in nodes:
        parent = nodes[node.parent] if node.parent is not None else None
        below_left_out.append(
            parent is None or (below_left_out[parent.id] and parent.key.service in missing)
        )
        key = NodeKey(node.key.service, node.key.name, SPAN)
        if parent is not None and below_left_out[node.id] and key in tops:
            found[key] = node.id if key not in found else None
    return {key: node_id for key, node_id in found.items() if node_id is not None}


def unreceived_entry(partial: Path, kept: Path) -> PathSpan | None:
    """``kept``'s entry span where ``partial`` has none: ``kept`` began at one root span, and
    every top span of ``partial`` has a parent that is not there (not stored yet, or never
    exported)."""
    kept_tops = [span for span in kept.spans if span.parent is None]
    partial_tops = [span for span in partial.spans if span.parent is None]
    if len(kept_tops) != 1 or kept_tops[0].record.parent_span_id or not partial_tops:
        return None
    return kept_tops[0] if all(s.record.parent_span_id for s in partial_tops) else None


def entry_grafts(nodes: list[Node], partial: Path) -> dict[NodeKey, int]:
    """The top calls of ``partial`` -> the node of the same key below the other request's
    entry (``nodes``: its nodes): right below it, or deeper where a call still running when
    ``partial`` was read has not been stored either. A key two such nodes have is left alone."""
    below_entry: dict[NodeKey, int | None] = {}
    for node in nodes:
        if node.parent is not None:
            below_entry[node.key] = node.id if node.key not in below_entry else None
    tops = {unit.key for unit in units_of(partial) if unit.parent is None}
    return {key: n for key, n in below_entry.items() if key in tops and n is not None}


def entry_note(side: str, entry: PathSpan) -> str:
    """``B has no span of gw: POST /checkout, where the request entered (...)``."""
    label = f"{entry.service[:80]}: {node_name(entry.record)[:200]}"
    return (f"{side} has no span of {label}, where the request entered (not stored yet, or "
            "never exported)")  # fmt: skip
