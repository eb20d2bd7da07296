"""The canary's store data: one sample per SERVER or CONSUMER span of each version in the window.

Spans are written into a real SQLite store by the store's own writer; the attribute text is then
read back by the bulk picker, including the layouts a naive text search would get wrong.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tracekit.canary.samples import HTTP, MESSAGING, UNMATCHED_ROUTE, RouteKey
from tracekit.canary.sources import samples_from_store
from tracekit.records import Attributes, SpanRecord
from tracekit.store import Store

STATUS = "http.response.status_code"
T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000
_ids = itertools.count(1)


def span(
    version: str | None,
    *,
    kind: str = "SERVER",
    service: str = "orders",
    start: int = T0,
    ms: float = 10.0,
    status: str = "UNSET",
    attributes: Attributes | None = None,
) -> SpanRecord:
    n = next(_ids)
    resource: Attributes = {"service.name": service}
    return SpanRecord(
        f"{n:032x}", f"{n:016x}", None, service, "op", kind, start, start + int(ms * 1e6),
        status=status, attributes=attributes or {}, resource=resource, service_version=version,
    )  # fmt: skip


def http(route: str | None, code: int | str | None = 200, **extra: object) -> Attributes:
    attributes: Attributes = {"http.request.method": "GET", "url.path": "/x/1"}
    attributes.update(extra)  # type: ignore[arg-type]
    if route is not None:
        attributes["http.route"] = route
    if code is not None:
        attributes["http.response.status_code"] = code
    return attributes


CONSUMED: Attributes = {
    "messaging.system": "rabbitmq",
    "messaging.destination.name": "orders.created",
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "canary.db")


def read(store: Store, start: int = T0, end: int = T0 + 60 * SECOND) -> tuple[dict, dict]:
    return samples_from_store(store, "orders", ("1.0", "1.1"), start, end)


def test_one_sample_per_server_or_consumer_span_of_each_version_in_the_window(
    store: Store,
) -> None:
    store.write_spans([
        span("1.0", ms=10, attributes=http("/orders/{id}")),
        span("1.0", ms=30, attributes=http("/orders/{id}")),
        span("1.1", ms=20, attributes=http("/orders/{id}")),
        span("1.1", kind="CONSUMER", ms=5, attributes=CONSUMED),
        span("1.1", kind="CLIENT", attributes=http("/orders/{id}")),  # a call out: not a request
        span("1.1", kind="INTERNAL", attributes=http("/orders/{id}")),
        span("1.2", attributes=http("/orders/{id}")),  # another version
        span("1.0", service="payments", attributes=http("/orders/{id}")),  # another service
        span("1.0", start=T0 - 1, attributes=http("/orders/{id}")),  # before the window
        span("1.1", start=T0 + 60 * SECOND, attributes=http("/orders/{id}")),  # at its end
        span(None, attributes=http("/orders/{id}")),  # no version at all
    ])  # fmt: skip

    baseline, canary = read(store)

    orders = RouteKey(HTTP, "/orders/{id}")
    assert set(baseline) == {orders}
    assert list(baseline[orders].durations) == [0.01, 0.03]
    assert set(canary) == {orders, RouteKey(MESSAGING, "orders.created")}
    assert list(canary[orders].durations) == [0.02]
    assert canary[RouteKey(MESSAGING, "orders.created")].requests == 1


def test_errors_are_status_error_or_a_5xx_response(store: Store) -> None:
    store.write_spans([
        span("1.1", attributes=http("/r", 200)),
        span("1.1", attributes=http("/r", 404)),  # the client's fault: not an error
        span("1.1", attributes=http("/r", 500)),
        span("1.1", attributes=http("/r", "503")),  # some SDKs send the code as a string
        span("1.1", status="ERROR", attributes=http("/r", None)),  # raised before responding
        span("1.1", status="ERROR", attributes=http("/r", 502)),  # counted once
        span("1.1", attributes=http("/r", 600)),
    ])  # fmt: skip

    _, canary = read(store)

    assert canary[RouteKey(HTTP, "/r")].errors == 4


def test_only_the_succeeded_requests_are_timed(store: Store) -> None:
    """A failure's duration says how it failed: the latency checks compare successes only."""
    store.write_spans([
        span("1.1", ms=60, attributes=http("/r", 200)),
        span("1.1", ms=1, attributes=http("/r", 503)),
        span("1.1", ms=2, status="ERROR", attributes=CONSUMED, kind="CONSUMER"),
        span("1.1", ms=70, attributes=CONSUMED, kind="CONSUMER"),
    ])  # fmt: skip

    _, canary = read(store)

    served, consumed = canary[RouteKey(HTTP, "/r")], canary[RouteKey(MESSAGING, "orders.created")]
    assert (served.requests, served.errors, list(served.durations)) == (2, 1, [0.06])
    assert (consumed.requests, consumed.errors, list(consumed.durations)) == (2, 1, [0.07])


def test_routes_interned_or_not_and_missing(store: Store) -> None:
    long_route = "/" + "segment/" * 12 + "{id}"  # over 64 characters: stored as plain text
    store.write_spans([
        span("1.0", attributes=http("/short")),
        span("1.0", attributes=http(long_route)),
        span("1.0", attributes=http(long_route)),
        span("1.0", attributes=http(None)),  # matched no route
        span("1.0", kind="CONSUMER", attributes={"messaging.system": "kafka"}),
    ])  # fmt: skip

    baseline, _ = read(store)

    assert {key: s.requests for key, s in baseline.items()} == {
        RouteKey(HTTP, "/short"): 1,
        RouteKey(HTTP, long_route): 2,
        RouteKey(HTTP, UNMATCHED_ROUTE): 1,
        RouteKey(MESSAGING, UNMATCHED_ROUTE): 1,
    }


def _string_id(store: Store, value: str) -> int:
    import sqlite3

    with sqlite3.connect(store.path) as conn:
        return int(conn.execute("SELECT id FROM strings WHERE value = ?", (value,)).fetchone()[0])


def test_values_that_look_like_keys_are_not_taken_for_keys(store: Store) -> None:
    """Attribute text is ``[key, value, ...]`` of ids: values equal to a key's id, strings holding
    ``,id,`` and nested lists before the key must not mislead the picker."""
    store.write_spans([span("1.0", attributes=http("/first", 200))])
    route_id = _string_id(store, "http.route")
    status_id = _string_id(store, "http.response.status_code")
    traps: list[Attributes] = [
        {"retry.count": route_id, "attempt": -route_id, "http.route": "/trap-1"},
        {"note": f"[{route_id},5,-{route_id},7]", "http.route": "/trap-2"},
        {"tags": ["a", route_id, {"k": -route_id}], "http.route": "/trap-3"},
        {"count": status_id, "size": 503, "http.route": "/trap-4", STATUS: 200},
        {"body": f",{status_id},500,", "http.route": "/trap-5", STATUS: 201},
        {"tags": [1, 2], STATUS: 504, "http.route": "/trap-6"},
    ]  # fmt: skip
    store.write_spans([span("1.0", attributes=attributes) for attributes in traps])

    baseline, _ = read(store)

    found = {key.route: samples.errors for key, samples in baseline.items()}
    assert found == {
        "/first": 0, "/trap-1": 0, "/trap-2": 0, "/trap-3": 0, "/trap-4": 0, "/trap-5": 0,
        "/trap-6": 1,
    }  # fmt: skip


def test_a_store_without_the_service_gives_no_samples(store: Store) -> None:
    store.write_spans([span("1.0", service="payments", attributes=http("/r"))])

    assert read(store) == ({}, {})


def test_requests_without_a_route_and_with_an_empty_one_are_all_unmatched(store: Store) -> None:
    """Some SDKs send ``http.route`` empty where others leave it out; both, and the name itself,
    are requests that matched no route: every one of them counts, failures included."""
    store.write_spans([
        *(span("1.1", attributes=http(None, 500)) for _ in range(3)),
        *(span("1.1", attributes=http("", 500)) for _ in range(2)),
        span("1.1", attributes=http(UNMATCHED_ROUTE, 200)),
    ])  # fmt: skip

    _, canary = read(store)

    unmatched = canary[RouteKey(HTTP, UNMATCHED_ROUTE)]
    assert (unmatched.requests, unmatched.errors) == (6, 5)
