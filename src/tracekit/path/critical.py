"""The critical path: the chain of spans that decides when the request finished.

Walk back from the end: in each span, the child whose subtree finished last is on the path; before
that child started, the child that finished last before that moment is, and so on. A subtree's end
includes asynchronous work below it (a consumer that ran after its producer returned), so the path
follows queue hops when they are what the request waited for. Spans that overlap an already chosen
sibling ran in parallel and are not on the path.
"""

from __future__ import annotations

from tracekit.path.model import PathSpan


def subtree_ends(ordered: list[PathSpan]) -> dict[int, int]:
    """id(node) -> latest end in its subtree (``ordered`` lists parents before children)."""
    ends: dict[int, int] = {}
    for node in reversed(ordered):
        ends[id(node)] = max([node.end_unix_nano, *(ends[id(c)] for c in node.children)])
    return ends


def critical_path(ordered: list[PathSpan], roots: list[PathSpan]) -> list[str]:
    """Span ids on the critical path, in tree order."""
    if not roots:
        return []
    ends = subtree_ends(ordered)
    chosen: set[int] = set()
    # the roots behave like children of one virtual span covering the whole request
    stack: list[tuple[list[PathSpan], int]] = [(roots, max(ends[id(r)] for r in roots))]
    while stack:
        candidates, until = stack.pop()
        for node in sorted(candidates, key=lambda n: ends[id(n)], reverse=True):
            if ends[id(node)] <= until:
                chosen.add(id(node))
                stack.append((node.children, ends[id(node)]))
                until = node.start_unix_nano
    return [node.record.span_id for node in ordered if id(node) in chosen]
