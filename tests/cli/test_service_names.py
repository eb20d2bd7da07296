"""A service whose SDK read its name from a file (``OTEL_SERVICE_NAME`` with the file's newline)
is found by the name typed: ``--service checkout`` in search, diff and canary, one node in the
service map and in ``trace``, as a version with white space around it is. The spans reach the
store through the real OTLP/HTTP receiver, as another language's SDK sends them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from received import received_store

from tracekit_cli.main import cli

NOW = time.time_ns()
PER_VERSION = 30


def kv(key: str, value: str | int) -> dict[str, Any]:
    typed = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": typed}


def resource(service: str, version: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    attributes = [kv("service.name", service), kv("service.version", version)]
    return {"resource": {"attributes": attributes}, "scopeSpans": [{"spans": spans}]}


def request(number: int) -> dict[str, Any]:
    """gateway -> checkout; checkout's name always read with a newline, gateway's on every
    other request (one of two instances); version 1.1 of checkout twice as slow."""
    version, slow = ("1.0", 1) if number < PER_VERSION else ("1.1", 2)
    trace, start = f"{number + 1:032x}", NOW - 600 * 10**9 + number * 10**9
    took = (10 + number % 5) * slow * 10**6

    def span(offset: int, parent: int | None, name: str, kind: int, route: str = "") -> Any:
        attributes = [kv("correlation.id", f"spaced-{number}")]
        if route:
            attributes += [kv("http.route", route), kv("http.response.status_code", 200)]
        return {
            "traceId": trace, "spanId": f"{number * 3 + offset + 1:016x}",
            "parentSpanId": "" if parent is None else f"{number * 3 + parent + 1:016x}",
            "name": name, "kind": kind, "startTimeUnixNano": str(start + offset * 10**6),
            "endTimeUnixNano": str(start + took + (3 - offset) * 10**6), "attributes": attributes,
        }  # fmt: skip

    gateway = "gateway" if number % 2 else " gateway\n"
    spans = [span(0, None, "POST /buy", 2, "/buy"), span(1, 0, "POST", 3)]
    checkout = [span(2, 1, "POST /checkout", 2, "/checkout")]
    return {"resourceSpans": [resource(gateway, "7", spans),
                              resource("checkout\n", version, checkout)]}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spaced") / "tracekit.db"
    return received_store(path, (request(number) for number in range(2 * PER_VERSION)))


def run(store: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, [*args, "--store", str(store), "--format", "json"])
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


def test_search_finds_the_requests_of_either_gateway_instance(store: Path) -> None:
    code, found = run(store, "search", "--service", "gateway", "--limit", "100")
    assert code == 0 and len(found["requests"]) == 2 * PER_VERSION
    assert {r["root_service"] for r in found["requests"]} == {"gateway"}


def test_the_map_and_the_path_name_each_service_once(store: Path) -> None:
    code, mapped = run(store, "services")
    edges = [(e["from"], e["to"], e["calls"]) for e in mapped["edges"]]
    assert code == 0 and edges == [("gateway", "checkout", 2 * PER_VERSION)]
    code, path = run(store, "trace", "spaced-0")
    assert code == 0 and path["services"] == ["gateway", "checkout"]


def test_diff_and_canary_compare_the_versions_of_the_service_typed(store: Path) -> None:
    versions = ["--service", "checkout", "--a", "service.version=1.0", "--b", "service.version=1.1"]
    code, diffed = run(store, "diff", *versions)
    assert code == 1 and diffed["a"]["requests"] == diffed["b"]["requests"] == PER_VERSION
    assert "timing" in diffed["reasons"]
    code, judged = run(store, "canary", "--service", "checkout", "--baseline", "1.0",
                       "--canary", "1.1")  # fmt: skip
    assert (code, judged["verdict"]) == (1, "fail")  # twice as slow
    assert judged["baseline"]["requests"] == judged["canary"]["requests"] == PER_VERSION
