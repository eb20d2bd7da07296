"""Changed resource attributes: a service that runs another version, on another host, in B.

Compared per service both requests passed through, over every resource attribute except those
that name a process rather than what runs (``process.pid``, a random ``service.instance.id``):
two requests served by two workers of one deployment are not different deployments.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from tracekit.path import Path

from .model import Change
from .settings import RESOURCES

__all__ = [
    "IGNORED",
    "MAX_KEYS",
    "MAX_LISTED",
    "MAX_VALUE_CHARS",
    "Resources",
    "resource_changes",
    "resources_by_service",
]

IGNORED = frozenset({"process.pid", "process.parent_pid", "service.instance.id"})
MAX_KEYS = 64  # per service: a resource is small; a hostile one is cut here
MAX_VALUE_CHARS = 120
MAX_LISTED = 3  # values named per side of a change; the others counted

Resources = dict[str, dict[str, set[str]]]  # service -> attribute -> values seen


def resources_by_service(path: Path) -> Resources:
    """Every resource attribute value each service's spans carried."""
    out: Resources = {}
    for span in path.spans:
        record = span.record
        attributes = out.setdefault(record.service, {})
        resource = dict(record.resource)
        if record.service_version is not None:
            resource.setdefault("service.version", record.service_version)
        for key, value in resource.items():
            if key in IGNORED or (key not in attributes and len(attributes) >= MAX_KEYS):
                continue
            attributes.setdefault(key, set()).add(_text(value))
    return out


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def resource_changes(a: Path, b: Path) -> Iterator[Change]:
    """One change per service and attribute whose values differ between the requests."""
    before, after = resources_by_service(a), resources_by_service(b)
    for service in sorted(before.keys() & after.keys()):
        old, new = before[service], after[service]
        for key in sorted(old.keys() | new.keys()):
            before_values, after_values = old.get(key, set()), new.get(key, set())
            if before_values != after_values:
                message = f"{service}: {key} {_moved(before_values, after_values)}"
                yield Change("resource", RESOURCES, None, message)


def _moved(before: set[str], after: set[str]) -> str:
    """``1.0 -> 1.5``; where a service ran on many hosts, only the values that changed, so that
    the pod replaced in a fan-out over 40 is named, not lost in two lists of 40."""
    both = before & after
    moved = f"{_listed(before - after)} -> {_listed(after - before)}"
    return f"{moved} (also in both: {_listed(both)})" if both else moved


def _listed(values: set[str]) -> str:
    if not values:
        return "(none)"
    ordered = sorted(values)
    more = len(ordered) - MAX_LISTED
    shown = ", ".join(ordered[:MAX_LISTED])
    return f"{shown} and {more} more" if more > 0 else shown
