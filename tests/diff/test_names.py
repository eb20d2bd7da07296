"""What spans are matched by: route template, else destination, else the name without ids."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry import trace
from sdk_requests import Deployment

from tracekit.diff.names import node_name, strip_ids
from tracekit.records import SpanRecord
from tracekit_cli.main import cli


@pytest.mark.parametrize(
    ("name", "stripped"),
    [
        ("GET /orders/1042", "GET /orders/{id}"),
        ("GET /orders/1042/items/7?page=2", "GET /orders/{id}/items/{id}?page={id}"),
        ("charge 5f0c2e9a77b1", "charge {id}"),
        ("GET /carts/0b7f3a52-8d4e-4c61-9a0e-2f1d6c3b9e10", "GET /carts/{id}"),
        ("reserve sku-42 for order_1042", "reserve {id} for {id}"),
        ("GET /api/v1/oauth2/token", "GET /api/v1/oauth2/token"),  # versions are not ids
        ("send orders.created", "send orders.created"),
        ("GET /s/aZ3kQ9xLm2Pq8RtY7uWv", "GET /s/{id}"),  # an opaque token
        # a URL path's segments: other APIs' ids, not the words of span names
        ("POST /v1/customers/cus_NffrFeUfNV2Hib/sources", "POST /v1/customers/{id}/sources"),
        ("GET /orders/ORD-2024-000123", "GET /orders/{id}"),
        ("GET /api/keys/8f3Kd9sLq2", "GET /api/keys/{id}"),
        ("GET /dp/B07XJ8C8F5", "GET /dp/{id}"),
        ("computeSha256Hash ORD-2024-000123", "computeSha256Hash ORD-2024-000123"),
        ("GET /api/v2/user_profile/oauth2", "GET /api/v2/user_profile/oauth2"),
        # ... but a route's own words with a digit are not ids
        ("GET /users/list-v2", "GET /users/list-v2"),
        ("GET /buckets/S3Bucket", "GET /buckets/S3Bucket"),
        ("GET /metrics/p99Latency", "GET /metrics/p99Latency"),
        ("GET /v1/Ec2Instances/cus_NffrFeUfNV2Hib", "GET /v1/Ec2Instances/{id}"),
        ("GET /api/v2beta1/healthz", "GET /api/v2beta1/healthz"),
        # days and emails are values wherever they are; locales and versions are words
        ("GET /v1/rates/2024-01-31/EUR", "GET /v1/rates/{id}/EUR"),
        ("GET /logs/2024-01-31T10%3A00%3A00Z", "GET /logs/{id}"),
        ("GET /logs/2024-01-31T10:00:00.250+01:00/lines", "GET /logs/{id}/lines"),
        ("report 2024-01-31T23:59:59Z done", "report {id} done"),
        ("PUT /lists/members/alice.smith+shop@example.co.uk", "PUT /lists/members/{id}"),
        ("GET /users/bob%40example.com", "GET /users/{id}"),
        ("GET /docs/en-US/pt_BR/v1.2.3/i18n", "GET /docs/en-US/pt_BR/v1.2.3/i18n"),
    ],
)
def test_ids_are_stripped_and_names_kept(name: str, stripped: str) -> None:
    assert strip_ids(name) == stripped


def record(name: str, kind: str = "INTERNAL", **attributes: object) -> SpanRecord:
    return SpanRecord("a" * 32, "b" * 16, None, "svc", name, kind, 0, 1,
                      attributes=dict(attributes))  # type: ignore[arg-type]  # fmt: skip


def test_route_then_destination_then_name() -> None:
    route = {"http.route": "/orders/{id}", "http.request.method": "GET"}
    assert node_name(record("GET /orders/{id}", "SERVER", **route)) == "GET /orders/{id}"
    queue = {"messaging.destination.name": "orders.created"}
    assert node_name(record("process orders.created", "CONSUMER", **queue)) == "orders.created"
    task = {"messaging.destination.name": "celery", "tracekit.celery.task_name": "shop.charge"}
    assert node_name(record("run", "CONSUMER", **task)) == "celery shop.charge"
    client = {"url.full": "http://legacy:8080/orders/1042?x=1"}
    assert node_name(record("GET", "CLIENT", **client)) == "GET /orders/{id}"
    search = {"url.full": "http://catalog:8080/search/1042"}  # QUERY: the safe method with a body
    assert node_name(record("QUERY", "CLIENT", **search)) == "QUERY /search/{id}"
    assert node_name(record("x" * 500)) == "x" * 199 + "…"


def test_calls_to_one_route_with_other_ids_are_one_node(deployment: Deployment) -> None:
    """A caller's HTTP client span to a service that exports nothing: named by its URL path."""
    ids = []
    for order in ("123", "456"):
        req = deployment.request()
        entry = req.entry("shop", "/checkout", 0, 50)
        req.span("shop", "GET", "CLIENT", 5, 45, trace.set_span_in_context(entry),
                 attrs={"url.full": f"http://legacy:8080/orders/{order}",
                        "http.request.method": "GET"})  # fmt: skip
        ids.append(req.correlation_id)
    deployment.flush()

    result = CliRunner().invoke(
        cli, ["diff", *ids, "--store", str(deployment.store.path), "--format", "json"]
    )

    doc = json.loads(result.stdout)
    assert (result.exit_code, doc["changes"]) == (0, [])
    assert [n["label"] for n in doc["nodes"]] == ["shop: POST /checkout", "shop: GET /orders/{id}"]


def test_calls_to_another_api_with_its_own_ids_are_one_node(deployment: Deployment) -> None:
    """Two charges of two Stripe customers (ids like cus_NffrFeUfNV2Hib): one call, no
    difference (they were a node removed and one added, exit 1)."""
    urls = [f"https://api.stripe.com/v1/customers/{customer}/sources"
            for customer in ("cus_NffrFeUfNV2Hib", "cus_Pq81LmZx0aYtRw")]  # fmt: skip
    exit_code, doc = _diff_of_one_call_each(deployment, "billing", "/charge", "POST", urls)
    assert (exit_code, doc["changes"]) == (0, [])
    assert [n["label"] for n in doc["nodes"]] == [
        "billing: POST /charge",
        "billing: POST /v1/customers/{id}/sources",
    ]


def test_calls_to_two_routes_with_a_digit_in_their_words_are_two_nodes(
    deployment: Deployment,
) -> None:
    """A version calling /users/list-v3 where the other called /users/list-v2: a removed call
    and an added one (both were /users/{id}: one node, no difference, exit 0)."""
    urls = [f"http://accounts/users/{route}" for route in ("list-v2", "list-v3")]
    exit_code, doc = _diff_of_one_call_each(deployment, "shop", "/checkout", "GET", urls)
    assert exit_code == 1
    assert sorted(c["message"] for c in doc["changes"]) == [
        "added shop: GET /users/list-v3",
        "removed shop: GET /users/list-v2",
    ]


def test_calls_to_another_api_on_two_days_are_one_node(deployment: Deployment) -> None:
    """Yesterday's and today's exchange rates, fetched the same way: no difference (they were
    'removed ... GET /v1/rates/2024-01-30', 'added ... /2024-01-31', exit 1)."""
    urls = [f"https://rates.example/v1/rates/{day}" for day in ("2024-01-30", "2024-01-31")]
    exit_code, doc = _diff_of_one_call_each(deployment, "shop", "/quote", "GET", urls)
    assert (exit_code, doc["changes"]) == (0, [])
    assert [n["label"] for n in doc["nodes"]] == ["shop: POST /quote", "shop: GET /v1/rates/{id}"]


def test_calls_to_another_api_at_two_times_are_one_node(deployment: Deployment) -> None:
    """A time as HTTP clients send it in a path, its colons as they are (httpx and requests leave
    them): 'removed ... GET /v1/rates/{id}:{id}:00Z', 'added ... {id}:{id}:15Z', exit 1."""
    times = ("2024-01-30T10:00:00Z", "2024-01-31T11:30:15Z")
    urls = [f"https://rates.example/v1/rates/{time}" for time in times]
    exit_code, doc = _diff_of_one_call_each(deployment, "shop", "/quote", "GET", urls)
    assert (exit_code, doc["changes"]) == (0, [])
    assert [n["label"] for n in doc["nodes"]] == ["shop: POST /quote", "shop: GET /v1/rates/{id}"]


def test_older_conventions_tell_calls_apart(deployment: Deployment) -> None:
    """An SDK writing the older names (``http.method``, ``http.url``, clients named ``HTTP GET``):
    a GET that became a POST, and a call to another place, are differences."""
    ids = []
    for method, place in (("GET", "stock"), ("POST", "prices")):
        req = deployment.request()
        entry = trace.set_span_in_context(req.entry("shop", "/checkout", 0, 50))
        old = {"http.method": method}
        client = req.span("shop", f"HTTP {method}", "CLIENT", 5, 25, entry,
                          attrs={**old, "http.url": "http://orders/orders/7"})  # fmt: skip
        req.span("orders", f"HTTP {method}", "SERVER", 6, 24, trace.set_span_in_context(client),
                 attrs={**old, "http.route": "/orders/{id}"})  # fmt: skip
        legacy = {"http.method": "GET", "http.url": f"http://legacy/{place}/1042"}
        req.span("shop", "HTTP GET", "CLIENT", 30, 45, entry, attrs=legacy)
        ids.append(req.correlation_id)
    deployment.flush()

    result = CliRunner().invoke(
        cli, ["diff", *ids, "--store", str(deployment.store.path), "--format", "json"]
    )

    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    assert sorted(c["message"] for c in doc["changes"]) == [
        "added shop -> orders: POST /orders/{id}",
        "added shop: GET /prices/{id}",
        "removed shop -> orders: GET /orders/{id}",
        "removed shop: GET /stock/{id}",
    ]


def _diff_of_one_call_each(
    deployment: Deployment, service: str, route: str, method: str, urls: list[str]
) -> tuple[int, dict[str, Any]]:
    """``tracekit diff --format json`` of requests to ``service``'s ``route``, each making one
    ``method`` call to its URL of ``urls``: the exit code and the document."""
    ids = []
    for url in urls:
        req = deployment.request()
        entry = req.entry(service, route, 0, 100)
        req.span(service, method, "CLIENT", 10, 90, trace.set_span_in_context(entry),
                 attrs={"http.request.method": method, "url.full": url})  # fmt: skip
        ids.append(req.correlation_id)
    deployment.flush()
    result = CliRunner().invoke(
        cli, ["diff", *ids, "--store", str(deployment.store.path), "--format", "json"]
    )
    return result.exit_code, json.loads(result.stdout)
