"""Services whose names differ only in characters a terminal does not draw (a zero-width space,
a bell, a tag character, a Hangul filler, a variation selector, a bidi override at the end) are
other services, and every view shows them so: each such character is a visible mark, where the
views blanked it and stripped the blank, and the map listed "orders" twice. The spans reach the
store through the real OTLP/HTTP receiver, as a service anywhere can send them."""

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
MARK = "\ufffd"
# each draws nothing after "orders", so each read as "orders" on a terminal
LOOKALIKES = ["\u200b", "\x07", "\U000e0041", "\u3164", "\ufe0f", "\u202e", "\u034f"]
SERVICES = ["orders", *(f"orders{tail}" for tail in LOOKALIKES)]


def kv(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": {"attributes": [kv("service.name", service)]},
        "scopeSpans": [{"spans": spans}],
    }


def request() -> dict[str, Any]:
    """One request calling each look-alike service from the gateway."""
    trace = "ab" * 16

    def span(number: int, name: str, parent: int | None) -> dict[str, Any]:
        return {
            "traceId": trace, "spanId": f"{number + 1:016x}", "name": name,
            "parentSpanId": "" if parent is None else f"{parent + 1:016x}",
            "kind": 2 if parent is None or number % 2 == 0 else 3,
            "startTimeUnixNano": str(NOW + number * 10**6),
            "endTimeUnixNano": str(NOW + (number + 1) * 10**6 + 30 * 10**6),
            "attributes": [kv("correlation.id", "lookalike-1")],
        }  # fmt: skip

    calls = [span(0, "GET /buy", None)] + [span(2 * i + 1, "POST", 0) for i in range(len(SERVICES))]
    resources = [resource("gateway", calls)]
    for i, service in enumerate(SERVICES):
        resources.append(resource(service, [span(2 * i + 2, f"POST /{service}", 2 * i + 1)]))
    return {"resourceSpans": resources}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return received_store(tmp_path_factory.mktemp("lookalike") / "tracekit.db", [request()])


def shown(store: Path, *args: str, fmt: str = "text") -> str:
    result = CliRunner().invoke(
        cli, [*args, "--store", str(store), "--format", fmt], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_map_shows_each_lookalike_service_as_another(store: Path) -> None:
    lines = shown(store, "services").splitlines()
    callees = [line.split()[1] for line in lines if line.startswith("gateway ")]
    assert sorted(callees) == sorted(["orders"] + [f"orders{MARK}"] * (len(SERVICES) - 1))


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_the_path_marks_what_a_terminal_would_not_draw(store: Path, fmt: str) -> None:
    out = shown(store, "trace", "lookalike-1", fmt=fmt)
    arrow = " -> " if fmt == "text" else " → "
    route = next(line for line in out.splitlines() if line.startswith("path: "))
    assert route.split(arrow)[1:3] == ["orders", f"orders{MARK}"]
    assert out.count(f"POST /orders{MARK}") == len(LOOKALIKES)
    assert not any(tail in out for tail in LOOKALIKES)


def test_json_keeps_each_name_as_sent(store: Path) -> None:
    document = json.loads(shown(store, "trace", "lookalike-1", fmt="json"))
    assert document["services"] == ["gateway", *SERVICES]
