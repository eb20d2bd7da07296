"""Every ``--format json`` document is standard JSON, even when spans carry NaN or infinities.

OTLP lets a double attribute be NaN or infinite (OTLP/JSON writes ``"NaN"``, ``"Infinity"``,
``"-Infinity"``); standard JSON has no such numbers (``JSON.parse`` refuses a bare ``NaN``).
tracekit writes them as those same strings. The store is filled through the real receiver (OTLP/JSON
over HTTP) and through the store API, and each document is read with a parser that refuses the
non-standard constants.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

import tracekit.canary
import tracekit.diff
import tracekit.path
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

NOW = time.time_ns()
SPECIAL = {"nan": "NaN", "inf": "Infinity", "minus_inf": "-Infinity"}


def strict_loads(text: str) -> Any:
    """``json.loads`` as a standard parser reads: no NaN, Infinity or -Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def otlp_request(version: str, number: int) -> dict[str, Any]:
    """A gateway -> orders request whose spans carry every special double, as OTLP/JSON does."""
    trace, start = f"{number:032x}", NOW - 60 * 10**9 + number * 10**6
    specials = [kv(k, {"doubleValue": v}) for k, v in SPECIAL.items()]
    specials.append(kv("list", {"arrayValue": {"values": [{"doubleValue": "NaN"}]}}))
    specials.append(
        kv("map", {"kvlistValue": {"values": [kv("in", {"doubleValue": "-Infinity"})]}})
    )
    correlation = kv("correlation.id", {"stringValue": f"nan-{number}"})

    def span(offset: int, parent: int | None, name: str, kind: int) -> dict[str, Any]:
        return {
            "traceId": trace, "spanId": f"{number + offset:016x}",
            "parentSpanId": "" if parent is None else f"{number + parent:016x}",
            "name": name, "kind": kind, "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 5_000_000), "attributes": [correlation, *specials],
        }  # fmt: skip

    def resource(service: str, spans: list[Any]) -> dict[str, Any]:
        attributes = [kv("service.name", {"stringValue": service}),
                      kv("service.version", {"stringValue": version}),
                      kv("host.load", {"doubleValue": "Infinity"})]  # fmt: skip
        return {"resource": {"attributes": attributes}, "scopeSpans": [{"spans": spans}]}

    root = span(0, None, "POST /checkout", 2)
    root["attributes"] += [kv("http.route", {"stringValue": "/checkout"}),
                           kv("http.response.status_code", {"intValue": "200"})]  # fmt: skip
    gateway = resource("gateway", [root, span(1, 0, "POST", 3)])
    return {"resourceSpans": [gateway, resource("orders", [span(2, 1, "POST /o", 2)])]}


def post_json(receiver: Receiver, document: dict[str, Any]) -> int:
    connection = http.client.HTTPConnection(*receiver.address, timeout=30)
    try:
        body = json.dumps(document)
        connection.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def record(number: int, version: str) -> SpanRecord:
    """A request written with the store API, its attributes Python's own NaN and infinities."""
    start = NOW - 120 * 10**9 + number * 10**6
    attributes = {"correlation.id": f"nan-{number}", "http.route": "/checkout",
                  "http.response.status_code": 200, "nan": float("nan"), "inf": float("inf"),
                  "minus_inf": float("-inf"), "list": [float("nan")],
                  "map": {"in": float("-inf")}}  # fmt: skip
    return SpanRecord(
        f"{number:032x}", f"{number:016x}", None, "gateway", "POST /checkout", "SERVER",
        start, start + 4_000_000, attributes=attributes,
        resource={"service.name": "gateway", "service.version": version, "host.load": float("inf")},
        service_version=version,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("strict") / "tracekit.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0))
    receiver.start()
    try:
        assert {post_json(receiver, otlp_request("1.0", n)) for n in range(1, 60, 3)} == {200}
    finally:
        receiver.stop()
    with Store(path) as writer:
        writer.write_spans(record(n, "1.1") for n in range(1000, 1020))
    yield path


def run(store: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, [*args, "--store", str(store), "--format", "json"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, strict_loads(result.stdout)


@pytest.mark.parametrize("query", ["nan-1", "nan-1000"])
def test_trace_writes_nan_and_infinities_as_otlp_json_strings(store: Path, query: str) -> None:
    code, document = run(store, "trace", query)
    root = document["spans"][0]["attributes"]
    assert code == 0
    assert {k: root[k] for k in SPECIAL} == {"nan": "NaN", "inf": "Infinity",
                                             "minus_inf": "-Infinity"}  # fmt: skip
    assert root["list"] == ["NaN"] and root["map"] == {"in": "-Infinity"}
    jsonschema.validate(document, tracekit.path.load_schema())


DIFF_SETS = ["--service", "gateway", "--a", "service.version=1.0", "--b", "service.version=1.1"]
CANARY = ["--service", "gateway", "--baseline", "1.0", "--canary", "1.1"]


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        (["search"], {0}),
        (["services"], {0}),
        (["diff", "nan-1", "nan-1000"], {0, 1}),
        (["diff", *DIFF_SETS], {0, 1}),
        (["canary", *CANARY], {0, 1, 3, 4}),
    ],
)
def test_every_other_json_document_is_standard_json(
    store: Path, args: list[str], codes: set[int]
) -> None:
    code, document = run(store, *args)
    assert code in codes and document
    if args[0] in ("diff", "canary"):
        jsonschema.validate(document, getattr(tracekit, args[0]).load_schema())
