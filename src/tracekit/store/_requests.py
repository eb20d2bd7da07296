"""Requests one service handled, grouped by version and route: what ``tracekit canary`` compares.

A request is one SERVER span (routed by ``http.route``) or one CONSUMER span (routed by
``messaging.destination.name``); it failed when its status is ERROR or its
``http.response.status_code`` is 5xx. A request whose clock stepped back mid-span (stored lasting
0 ms, ``tracekit.clock_stepped_back_ns``) has no duration to compare: it is counted, not timed.
Rows are read without decoding whole spans: the attributes are picked out of the stored attribute
text in bulk (``_attribute_text``), so a window of 100,000 requests a version reads in a fraction
of a second.
"""

# ruff: noqa: S608 - queries are built from constant fragments and "?" placeholders only

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracekit import semconv
from tracekit._digits import ascii_int
from tracekit.store._attribute_text import Picked, TextBatch, ValuePicker, value_of
from tracekit.store._encoding import KIND_CODES, STATUS_CODE_OF, stored_text
from tracekit.store._reader import StoreReader, loads_list, marks

__all__ = ["RequestGroup", "request_groups", "versions_served"]

_ROUTE_KEYS = {
    KIND_CODES["SERVER"]: semconv.HTTP_ROUTE,
    KIND_CODES["CONSUMER"]: semconv.MESSAGING_DESTINATION_NAME,
}
_KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
_STATUS_KEY = semconv.HTTP_RESPONSE_STATUS_CODE
_ERROR = STATUS_CODE_OF["ERROR"]
_Rows = list[tuple[Any, ...]]
_GroupKey = tuple[int, int, Picked | None]  # resource id, kind, route as picked


@dataclass(slots=True)
class RequestGroup:
    """The requests of one version on one route (``route`` None: the span named none): the
    durations of those that succeeded, and how many failed. Latency is compared over successes
    only; a failure's duration says how it failed, not how fast the service serves."""

    version: str
    kind: str  # "SERVER" or "CONSUMER"
    route: str | None
    durations_ns: list[int] = field(default_factory=list)  # of the requests that succeeded
    errors: int = 0
    untimed: int = 0  # succeeded, but the clock stepped back: how long they took is unknown


def request_groups(
    reader: StoreReader, service: str, versions: Sequence[str], start_ns: int, end_ns: int
) -> list[RequestGroup]:
    """The service's requests started in [start_ns, end_ns), a group per version and route."""
    service_ref = reader.string_ref(service)
    resources = _resources_of(reader, versions)
    if service_ref is None or not resources:
        return []
    query = (
        "SELECT resource_ref, kind, duration_ns, status, attributes FROM spans"
        " WHERE start_ns >= ? AND start_ns < ? AND service_ref = ? AND kind IN (?, ?)"
        f" AND resource_ref IN ({marks(len(resources))})"
    )
    params = [start_ns, end_ns, service_ref, *_ROUTE_KEYS, *resources]
    # A span whose duration is no integer (another tool's edit) is left out, as the store's
    # reader leaves it out of a trace: it cannot be timed, and would end the whole comparison.
    rows = [_as_stored(row) for row in reader.conn.execute(query, params) if type(row[2]) is int]
    status = _ServerErrors(reader)
    stepped = ValuePicker(reader.string_ref(semconv.CLOCK_STEPPED_BACK_NS))
    groups: dict[_GroupKey, RequestGroup] = {}
    for kind, key in _ROUTE_KEYS.items():
        of_kind = [row for row in rows if row[1] == kind]
        if of_kind:
            route = ValuePicker(reader.string_ref(key))
            _group(of_kind, (route, stepped), status, resources, groups)
    return _resolve_routes(reader, groups)


def versions_served(
    reader: StoreReader, service: str, start_ns: int, end_ns: int
) -> set[str | None]:
    """The versions (None: none recorded) of the service's requests started in the window."""
    service_ref = reader.string_ref(service)
    if service_ref is None:
        return set()
    query = (
        "SELECT DISTINCT resource_ref FROM spans"
        " WHERE start_ns >= ? AND start_ns < ? AND service_ref = ? AND kind IN (?, ?)"
    )
    params = [start_ns, end_ns, service_ref, *_ROUTE_KEYS]
    refs = {row[0] for row in reader.conn.execute(query, params) if type(row[0]) is int}
    return {version for ref, version in _resource_versions(reader) if ref in refs}


def _as_stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A request's row with its attributes as text: another tool's (or a hand's) edit may have
    left a blob there, which the bulk pickers cannot read."""
    attributes = row[4]
    if attributes is None or isinstance(attributes, str):
        return row
    return (*row[:4], stored_text(attributes))


def _group(
    rows: _Rows,
    pickers: tuple[ValuePicker, ValuePicker],
    status: _ServerErrors,
    resources: dict[int, str],
    groups: dict[_GroupKey, RequestGroup],
) -> None:
    """Add ``rows`` (all of one kind) to their groups: the succeeded requests' durations, how
    many failed (a failure's duration is not timed: see ``RequestGroup``), and how many
    succeeded with no duration to tell (``pickers``: the route's, the clock step's)."""
    route, stepped = pickers
    refs, kinds, durations, statuses, texts = zip(*rows, strict=True)
    batch = TextBatch(texts)
    keys = list(zip(refs, kinds, route.pick_all(batch), strict=True))
    failed = {index for index, code in enumerate(statuses) if code == _ERROR}
    failed.update(status.lines(batch))
    untimed = set(stepped.lines_where(batch, r"[0-9]+", _stepped_back)) - failed
    durations_of: defaultdict[_GroupKey, list[int]] = defaultdict(list)
    for index, (key, duration) in enumerate(zip(keys, durations, strict=True)):
        if index not in failed and index not in untimed:
            durations_of[key].append(duration)
    for key in dict.fromkeys(keys):
        groups.setdefault(key, RequestGroup(resources[key[0]], _KIND_NAMES[key[1]], None))
    for key, found in durations_of.items():
        groups[key].durations_ns.extend(found)
    for index in failed:
        groups[keys[index]].errors += 1
    for index in untimed:
        groups[keys[index]].untimed += 1


def _stepped_back(picked: Picked) -> bool:
    """Whether the clock step is the number the store wrote (a client's own attribute of that
    name, a string, leaves the span timed as it was sent)."""
    interned, _ = picked
    value = value_of(picked)
    return not interned and isinstance(value, int) and not isinstance(value, bool) and value > 0


class _ServerErrors:
    """Finds the texts whose ``http.response.status_code`` is 500-599: a number or a string
    (which the store may hold interned, as a string id)."""

    def __init__(self, reader: StoreReader) -> None:
        self.picker = ValuePicker(reader.string_ref(_STATUS_KEY))
        query = "SELECT id FROM strings WHERE value GLOB '5[0-9][0-9]'"
        self.interned = {str(row[0]) for row in reader.conn.execute(query)}
        ids = "".join(f"|{ref}" for ref in sorted(self.interned))
        self.pattern = rf'"?5[0-9][0-9]"?{ids}'

    def lines(self, batch: TextBatch) -> list[int]:
        """Indexes of the failed requests' texts in ``batch``."""
        return self.picker.lines_where(batch, self.pattern, self._accept)

    def _accept(self, picked: Picked) -> bool:
        interned, text = picked
        if interned:
            return text in self.interned
        value = _status_number(value_of(picked))
        return isinstance(value, int) and 500 <= value <= 599


def _status_number(value: object) -> object:
    """A status code some SDKs send as text ("503") as its number, when it is short ASCII
    digits; other values as they are.

    Stored text is whatever a client sent: "500" followed by superscript zeros is digits to
    ``str.isdigit`` and not to ``int``, which failed ``tracekit canary`` for the whole window
    (exit 2) over one such span, as would a number of thousands of digits.
    """
    number = ascii_int(value, 6)
    return value if number is None else number


def _resources_of(reader: StoreReader, versions: Sequence[str]) -> dict[int, str]:
    """Resource id -> the version asked for, for the resources of the versions asked for (both
    read without the white space around them, see ``_resource_versions``)."""
    wanted = {version.strip(): version for version in versions}
    return {ref: wanted[found] for ref, found in _resource_versions(reader) if found in wanted}


def _resource_versions(reader: StoreReader) -> Iterator[tuple[int, str | None]]:
    """Each resource's id and service.version (None: none recorded), without the white space
    around it: an SDK that read it from a file keeps its newline ("1.2.0\n"), which no one can
    type as a version, and which would show as the version typed beside it."""
    for ref, text in reader.conn.execute("SELECT id, attributes FROM resources"):
        document = loads_list(text)
        version = document[1] if len(document) > 1 else None
        yield int(ref), (version.strip() or None) if isinstance(version, str) else None


def _resolve_routes(
    reader: StoreReader, groups: dict[_GroupKey, RequestGroup]
) -> list[RequestGroup]:
    """Give each group its route's text, merging groups that name the same route."""
    values = {key[2]: value_of(key[2]) for key in groups if key[2] is not None}
    ids = [value for picked, value in values.items() if picked[0] and isinstance(value, int)]
    reader.strings.load(reader.conn, ids)
    merged: dict[tuple[str, str, str | None], RequestGroup] = {}
    for (_, _, picked), group in groups.items():
        text = None if picked is None else _route_text(reader, picked[0], values[picked])
        key = (group.version, group.kind, text)
        target = merged.setdefault(key, RequestGroup(group.version, group.kind, text))
        target.durations_ns.extend(group.durations_ns)
        target.errors += group.errors
        target.untimed += group.untimed
    return [merged[key] for key in sorted(merged, key=lambda k: (k[0], k[1], k[2] or ""))]


def _route_text(reader: StoreReader, interned: bool, value: Any) -> str | None:
    if interned:
        return reader.strings.get(value) if isinstance(value, int) else None
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
