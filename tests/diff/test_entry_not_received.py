"""``tracekit diff A B`` run while B is still arriving: its entry span is not stored yet.

A gateway's entry span ends last, so the SDK's batch exporter sends it last, seconds after its
client spans and everything below them are stored. Diffed in between, B's trace begins at the
gateway's CLIENT spans, their parent not there. Built with the OpenTelemetry SDK into a real
store (the gateway's entry span from a provider with no exporter yet), compared by the real
command.
"""

from __future__ import annotations

from typing import Any

from diff_cli import diff_document
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from sdk_requests import Deployment, Request

NOTE = (
    "B has no span of gw: POST /checkout, where the request entered (not stored yet, or never "
    "exported)"
)


def checkout(deployment: Deployment, cid: str, *, arriving: bool, inventory_ms: float) -> None:
    """gw POST /checkout calls orders (which calls inventory), then pricing."""
    request = deployment.request(cid)
    entering = request
    if arriving:
        unsent = Deployment(deployment.store)
        resource = Resource.create({"service.name": "gw", "service.version": "1.0"})
        unsent.providers[("gw", "1.0", "gw-host")] = TracerProvider(resource=resource)
        entering = Request(unsent, cid, request.origin_ns, {}, {}, {})
    entry = entering.entry("gw", "/checkout", 0, 100 + inventory_ms)
    _, orders = request.call(entry, "orders", "/orders", 2, 60 + inventory_ms)
    request.call(orders, "inv", "/stock/{sku}", 10, 30 + inventory_ms)
    request.call(entry, "pricing", "/price", 62 + inventory_ms, 90 + inventory_ms)


def diff(deployment: Deployment, a: str, b: str) -> tuple[int, dict[str, Any]]:
    deployment.flush()
    return diff_document(deployment.store.path, a, b)


def test_a_request_whose_entry_span_is_not_stored_yet_is_not_another_shape(
    deployment: Deployment,
) -> None:
    """It read "removed gw: POST /checkout with 3 nodes below", "added gw -> orders", "added
    gw -> pricing" (exit 1) for the same request; now the calls match and nothing differs."""
    checkout(deployment, "done-1", arriving=False, inventory_ms=0)
    checkout(deployment, "arriving-1", arriving=True, inventory_ms=0)

    code, doc = diff(deployment, "done-1", "arriving-1")

    assert doc["headline"] == f"time not attributed: {NOTE}"
    assert f"{NOTE}: its nodes are not counted as added or removed" in doc["warnings"]
    assert [c["message"] for c in doc["changes"]] == []
    assert (code, doc["different"], doc["attribution"]) == (0, False, [])
    both = [n["label"] for n in doc["nodes"] if n["a"] and n["b"]]
    assert both == ["gw -> orders: GET /orders", "orders -> inv: GET /stock/{sku}",
                    "gw -> pricing: GET /price"]  # fmt: skip

    code, doc = diff(deployment, "arriving-1", "done-1")
    assert doc["headline"] == f"time not attributed: {NOTE.replace('B has', 'A has')}"
    assert (code, doc["changes"]) == (0, [])


def test_a_slower_call_below_is_still_reported(deployment: Deployment) -> None:
    """The work both stored is compared: inventory 80 ms slower is a timing change at its node,
    not a removed and an added subtree."""
    checkout(deployment, "done-2", arriving=False, inventory_ms=0)
    checkout(deployment, "arriving-2", arriving=True, inventory_ms=80)

    code, doc = diff(deployment, "done-2", "arriving-2")

    assert [c["message"] for c in doc["changes"]] == [
        "orders -> inv: GET /stock/{sku}: self time 20.0 ms -> 100.0 ms (+80.0 ms)"
    ]
    assert (code, doc["reasons"]) == (1, ["timing"])


def test_a_request_read_while_a_call_below_its_entry_still_ran(deployment: Deployment) -> None:
    """Read while orders still worked: stored were the gateway's auth call, done before, and
    inventory's call below orders; each is compared where it hangs in the other request."""
    unsent = Deployment(deployment.store)
    for service in ("gw", "orders"):
        resource = Resource.create({"service.name": service, "service.version": "1.0"})
        unsent.providers[(service, "1.0", f"{service}-host")] = TracerProvider(resource=resource)
    for cid, running, inventory_ms in (("done-3", False, 0), ("running-3", True, 80)):
        request = deployment.request(cid)
        entering = Request(unsent, cid, request.origin_ns, {}, {}, {}) if running else request
        entry = entering.entry("gw", "/checkout", 0, 100 + inventory_ms)
        request.call(entry, "auth", "/token", 1, 9)
        _, orders = entering.call(entry, "orders", "/orders", 10, 60 + inventory_ms)
        request.call(orders, "inv", "/stock/{sku}", 20, 40 + inventory_ms)

    code, doc = diff(deployment, "done-3", "running-3")

    assert doc["headline"] == f"time not attributed: {NOTE}"
    assert [c["message"] for c in doc["changes"]] == [
        "orders -> inv: GET /stock/{sku}: self time 20.0 ms -> 100.0 ms (+80.0 ms)"
    ]
    assert code == 1
