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
from tracekit_cli.options import one_line

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


# Names real people give services and operations, drawn with characters str.isprintable()
# refuses or that draw nothing alone: emoji ZWJ sequences (with a skin tone, a rainbow flag's
# variation selector), a keycap, England's flag (tags), Persian's non-joiner, Hindi's and
# Sinhala's joiner after a virama. Each showed U+FFFD (or a blank, in an error message).
DRAWN = [
    "\U0001f469\U0001f3fd\u200d\U0001f4bb-deploys",
    "\U0001f3f3\ufe0f\u200d\U0001f308-pride",
    "step-1\ufe0f\u20e3",
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f-fans",
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "\u0915\u094d\u200d\u0937\u0947\u0924\u094d\u0930",
    "\u0dc1\u0dca\u200d\u0dbb\u0dd3-lanka",
]


@pytest.fixture(scope="module")
def drawn_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = "cd" * 16

    def span(number: int, name: str, parent: int | None) -> dict[str, Any]:
        return {
            "traceId": trace, "spanId": f"{number + 1:016x}", "name": name,
            "parentSpanId": "" if parent is None else f"{parent + 1:016x}",
            "kind": 2, "startTimeUnixNano": str(NOW + number * 10**6),
            "endTimeUnixNano": str(NOW + (number + 1) * 10**6 + 30 * 10**6),
            "attributes": [kv("correlation.id", "drawn-1")],
            "status": {"code": 2, "message": f"failed in {name}"} if parent is not None else {},
        }  # fmt: skip

    resources = [resource("gateway", [span(0, "GET /", None)])]
    for i, name in enumerate(DRAWN):
        resources.append(resource(name, [span(i + 1, f"POST /{name}", 0)]))
    path = tmp_path_factory.mktemp("drawn") / "tracekit.db"
    return received_store(path, [{"resourceSpans": resources}])


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_emoji_sequences_and_joined_scripts_show_as_written(drawn_store: Path, fmt: str) -> None:
    out = shown(drawn_store, "trace", "drawn-1", fmt=fmt)
    assert MARK not in out
    for name in DRAWN:
        assert f"POST /{name}" in out
        assert f"failed in POST /{name}" in out
    listed = shown(drawn_store, "services")
    assert MARK not in listed
    assert all(name in listed for name in DRAWN)


def test_a_joiner_after_ascii_or_at_a_names_end_is_still_marked() -> None:
    """Kept only where it joins what is drawn: after ASCII, or with nothing after, a joiner
    draws nothing, and "orders\u200d" would pass for "orders"."""
    assert one_line("orders\u200d") == f"orders{MARK}"
    assert one_line("orders\u200cx") == f"orders{MARK}x"
    assert one_line("\u6ce8\u6587\u200c") == f"\u6ce8\u6587{MARK}"
    assert one_line("\U0001f3f4\U000e0041\U000e007f") == f"\U0001f3f4{MARK}{MARK}"
