"""`search` and `services` print documents their shipped JSON Schemas describe, as `trace`,
`diff` and `canary` do: with requests and edges, with none (exit 1, the document still printed),
and with the names any client can send (controls, bidi overrides, invisible characters)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology, checkout, incident, write_store

from tracekit_cli.main import cli
from tracekit_cli.schemas import load_schema

SINCE = "2023-11-14T22:00:00+00:00"
HOSTILE = "\x1b]0;owned\x07\x9b31m\u202e\n\u2028\u200b\U000e0041"


def uncorrelated_hostile() -> Topology:
    """A request without a correlation ID, its services and route named as a hostile client
    names them, one of its calls in error."""
    t = Topology(None)
    root = t.span(f"edge{HOSTILE}", f"GET /{HOSTILE}", "SERVER", 500, 600)
    t.http(root, f"auth{HOSTILE}", "/login", 510, 590, status_code=503)
    return t


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schemas") / "tracekit.db"
    return write_store(path, checkout(), incident(), uncorrelated_hostile())


def document(store: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, [*args, "--store", str(store), "--format", "json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("command", ["search", "services"])
def test_the_schema_is_a_valid_draft_2020_12_schema(command: str) -> None:
    schema = load_schema(command)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == f"tracekit.{command}/v1"


def test_search_lists_what_its_schema_describes(store: Path) -> None:
    code, found = document(store, "search", "--since", SINCE)
    jsonschema.validate(found, load_schema("search"))
    requests = {r["correlation_id"]: r for r in found["requests"]}
    assert code == 0 and set(requests) == {"req-checkout-1", "req-incident-9", None}
    hostile = requests[None]
    assert hostile["root_service"] == f"edge{HOSTILE}" and hostile["error"] is True


def test_services_maps_what_its_schema_describes(store: Path) -> None:
    code, mapped = document(store, "services", "--since", SINCE)
    jsonschema.validate(mapped, load_schema("services"))
    edges = {(e["from"], e["to"]): e for e in mapped["edges"]}
    assert code == 0 and edges[(f"edge{HOSTILE}", f"auth{HOSTILE}")]["error_rate"] == 1.0
    assert {e["type"] for e in mapped["edges"]} == {"http", "messaging"}


@pytest.mark.parametrize("command", ["search", "services"])
def test_nothing_found_is_a_document_of_the_schema_too(store: Path, command: str) -> None:
    code, empty = document(store, command, "--since", "1m")
    jsonschema.validate(empty, load_schema(command))
    assert code == 1 and not empty.get("requests") and not empty.get("edges")


def test_a_command_without_a_schema_of_its_own_is_named() -> None:
    with pytest.raises(ValueError, match="no schema for 'trace': one of search, services"):
        load_schema("trace")
