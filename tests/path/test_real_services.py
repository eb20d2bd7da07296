"""Golden test from real instrumented services: what ``tracekit trace`` shows for a real request.

The deployment in ``real_services.py`` (ASGI -> WSGI over HTTP, two queue hops, one a batch
consumer in a new trace, a second HTTP hop, a log line) exports into a real store; the real
command reads it. Ids and times differ on every run, so they are replaced by placeholders: ids
by their order of first appearance (the same id gets the same placeholder everywhere, so parent
relations, links, hops and critical-path members still have to match), times and durations by
a type marker. Everything else — services, span names and kinds, attributes, tree depths,
hops, critical path, logs, warnings — must equal the golden files in ``golden/``.

After an intended change, regenerate with ``TRACEKIT_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from conditions import wait_for
from opentelemetry.sdk.trace import TracerProvider
from real_services import ClientSpanRouter, deployment

from tracekit.path import load_schema
from tracekit.store import Store
from tracekit_cli.main import cli

GOLDEN = Path(__file__).parent / "golden"
CORRELATION_ID = "golden-checkout-1"
EXPECTED_SPANS = 9
HEX_ID = re.compile(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b")
PORT = re.compile(r"127\.0\.0\.1:\d+")
# attributes whose values change from run to run (or with library versions) by nature
VOLATILE = {
    "server.port": "<port>", "client.port": "<port>", "network.peer.port": "<port>",
    "user_agent.original": "<user-agent>", "tracekit.queue_wait_ms": "<ms>",
    "messaging.message.id": "<message-id>", "tracekit.publish_time_unix_nano": "<unix-nano>",
}  # fmt: skip
TIME_KEYS = {"start_unix_nano", "end_unix_nano", "time_unix_nano"}
MS_KEYS = {
    "duration_ms",
    "latency_ms",
    "queue_wait_ms",
    "self_ms",
    "critical_ms",
    "critical_wait_ms",
}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run one checkout through the real services; the store they exported into."""
    from opentelemetry import trace

    path = tmp_path_factory.mktemp("golden") / "tracekit.db"
    global_provider = trace.get_tracer_provider()
    assert isinstance(global_provider, TracerProvider)  # tests/conftest.py installed it
    router = ClientSpanRouter()
    global_provider.add_span_processor(router)  # made inert when the deployment stops
    with Store(path) as store, deployment(store, router) as running:
        assert running.checkout(CORRELATION_ID) == 202
        # one clock, but a fixed order: the queue work runs after the front door has answered,
        # and the audit batch before fulfilment, so the critical path is the same on every run
        wait_for_export(store, lambda spans: {"storefront", "orders"} <= _server_services(spans))
        running.release["orders.audit"].set()
        wait_for_export(store, lambda spans: any(s.service == "audit" for s in spans))
        running.release["orders.created"].set()
        wait_for_export(store, lambda spans: len(spans) >= EXPECTED_SPANS)
    yield path


def _server_services(spans: list[Any]) -> set[str]:
    return {s.service for s in spans if s.kind == "SERVER"}


def wait_for_export(store: Store, done: Any, timeout: float = 20.0) -> None:
    try:
        wait_for(lambda: done(_exported(store)), timeout, "the services' spans")
    except AssertionError:
        seen = sorted(f"{s.service}:{s.kind}:{s.name}" for s in _exported(store))
        raise AssertionError(
            f"the services did not export the expected spans; got {seen}"
        ) from None


def _exported(store: Store) -> list[Any]:
    """The request's spans so far: its own traces and those linking to them."""
    traces = {s.trace_id for s in store.spans_by_correlation_id(CORRELATION_ID)}
    traces |= store.trace_ids_linking_to(traces) if traces else set()
    return store.spans_by_trace_ids(traces)


def trace_command(store_path: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["trace", CORRELATION_ID, "--store", str(store_path), *args], env={"COLUMNS": "110"}
    )
    assert (result.exit_code, result.stderr) == (0, "")
    return result.stdout


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TRACEKIT_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with TRACEKIT_UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text(encoding="utf-8")


class IdNames:
    """Each distinct id gets ``<span-N>`` / ``<trace-N>`` in order of first appearance."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        if value not in self.names:
            kind = "trace" if len(value) == 32 else "span"
            count = sum(1 for name in self.names.values() if name.startswith(f"<{kind}-"))
            self.names[value] = f"<{kind}-{count + 1}>"
        return self.names[value]

    def text(self, text: str) -> str:
        return HEX_ID.sub(lambda m: self(m.group(0)), text)


def normalize(value: Any, ids: IdNames, key: str = "") -> Any:
    """The document with ids, times and run-dependent values replaced, structure kept."""
    if isinstance(value, dict):
        return {k: normalize(v, ids, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v, ids, key) for v in value]
    if key in VOLATILE and value is not None:
        return VOLATILE[key]
    if key in TIME_KEYS:
        assert isinstance(value, int) and value > 0
        return "<unix-nano>"
    if key in MS_KEYS and value is not None:
        assert isinstance(value, float | int) and value >= 0
        return "<ms>"
    if isinstance(value, str):
        return PORT.sub("127.0.0.1:<port>", ids.text(value))
    return value


def test_json_of_a_real_request_matches_the_golden_file(store_path: Path) -> None:
    doc = json.loads(trace_command(store_path, "--format", "json"))
    jsonschema.validate(doc, load_schema())
    # what placeholders hide, checked here: one clock, so times nest and nothing was shifted
    assert doc["warnings"] == []
    spans = {s["span_id"]: s for s in doc["spans"]}
    for span in doc["spans"]:
        parent = spans.get(span["parent_span_id"] or "")
        if parent is not None and parent["kind"] in ("SERVER", "CLIENT"):
            assert span["start_unix_nano"] >= parent["start_unix_nano"]
    # time on the critical path: only its spans have any, and it adds up to the duration
    for span in doc["spans"]:
        if span["span_id"] not in doc["critical_path"]:
            assert span["critical_ms"] == span["critical_wait_ms"] == 0
    on_path = sum(s["critical_ms"] + s["critical_wait_ms"] for s in doc["spans"])
    assert on_path == pytest.approx(doc["duration_ms"], abs=0.01)
    ids = IdNames()
    normalized = normalize(doc, ids)
    check_golden("real_services.json", json.dumps(normalized, indent=2, sort_keys=True) + "\n")


def test_text_view_of_a_real_request_matches_the_golden_file(store_path: Path) -> None:
    out = trace_command(store_path, "--format", "text")
    ids = IdNames()
    doc = json.loads(trace_command(store_path, "--format", "json"))
    for span in doc["spans"]:  # name ids as the JSON golden does
        ids(span["trace_id"])
        ids(span["span_id"])
    check_golden("real_services.txt", without_end_note(normalize_text(out, ids)))


# Which of fulfilment's spans ends last (its consumer span, or inventory's server span closing
# after the client read the response) is a race of microseconds: the note says where.
END_NOTE = "* request ends here, <ms> after the entry span ended"
LAST_TO_END = ("fulfilment: process orders.created", "fulfilment: GET", "inventory: GET /stock/")


def without_end_note(text: str) -> str:
    """The view without its "request ends here" line, checked to sit under fulfilment's work."""
    lines = text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if END_NOTE in line]
    row = next(line for line in reversed(lines[:at]) if line.lstrip().startswith("+<ms>"))
    assert any(label in row for label in LAST_TO_END), row
    return "\n".join(lines[:at] + lines[at + 1 :]) + "\n"


ROW_TIMES = re.compile(r"^ *\+\d+\.\d+ m?s +\d+\.\d+ m?s ")
BAR = re.compile(r"\|[ ]*([#!])[#! ]*\|$")


def normalize_text(out: str, ids: IdNames) -> str:
    """Times, clocks and bar positions replaced; tree, names, marks and notes kept."""
    lines = []
    for line in out.splitlines():
        line = ids.text(line)
        line = ROW_TIMES.sub(f"{'+<ms>':>9} {'<ms>':>9} ", line)
        line = BAR.sub(lambda m: f"|<bar {m.group(1)}>|", line)  # "!" marks a span in error
        line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", "<time>", line)
        line = re.sub(r"\b\d\d:\d\d:\d\d\.\d{3}\b", "<clock>", line)
        line = re.sub(r"\d+\.\d+ m?s\b", "<ms>", line)
        lines.append(line)
    return "\n".join(lines) + "\n"
