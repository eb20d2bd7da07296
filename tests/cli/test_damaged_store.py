"""A store with a damaged row: the read commands show everything else (real store, real command).

The store writes each span's attributes and each resource as JSON text. A row that is not (a
damaged page, another tool's write) used to end `trace`, `services` and `canary` with exit 2,
"store PATH: Expecting value: line 1 column 5 (char 4)", for every request or window that held it.
A text that is not UTF-8 ended them with "Could not decode to UTF-8 column 'value' ...".
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import write_store

from tracekit_cli.main import cli

SINCE = "2023-11-14T22:00:00+00:00"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("damaged")
    whole = write_store(folder / "whole.db")
    damaged = write_store(folder / "damaged.db")
    with sqlite3.connect(damaged) as conn:
        conn.execute("UPDATE spans SET attributes = '[-3,' WHERE attributes IS NOT NULL")
        conn.execute("UPDATE resources SET attributes = '{bad'")
        conn.execute("UPDATE strings SET value = CAST(x'62616e6bff' AS TEXT) WHERE value = 'bank'")
    return whole, damaged


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--format", "json"], env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


def test_services_maps_every_call_of_the_window(stores: tuple[Path, Path]) -> None:
    whole, damaged = (run("services", "--store", str(s), "--since", SINCE) for s in stores)
    assert (damaged[0], damaged[2]) == (0, "")
    bank = "bank\N{REPLACEMENT CHARACTER}"
    assert json.loads(damaged[1])["edges"] == [
        {**edge, "to": bank} if edge["to"] == "bank" else edge
        for edge in json.loads(whole[1])["edges"]
    ]


def test_trace_shows_every_span_without_what_was_lost(stores: tuple[Path, Path]) -> None:
    whole, damaged = (run("trace", "req-checkout-1", "--store", str(s)) for s in stores)
    assert (damaged[0], damaged[2]) == (0, "")
    spans, expected = json.loads(damaged[1])["spans"], json.loads(whole[1])["spans"]
    bank = "bank\N{REPLACEMENT CHARACTER}"
    names = [(s["service"], s["name"], s["span_id"]) for s in spans]
    assert names == [
        (bank if s["service"] == "bank" else s["service"], s["name"], s["span_id"])
        for s in expected
    ]
    assert {s["attributes"].get("correlation.id") for s in spans} == {"req-checkout-1"}


@pytest.mark.parametrize(
    ("column", "text"),
    [
        ("attributes", "[" * 100_000 + "]" * 100_000),  # deeper than the JSON decoder goes
        ("events", "[" * 200 + "]" * 200),  # JSON, but no event list: no [time, name, attrs]
        ("attributes", f"[{2**70},1]"),  # a string id past SQLite's integers
    ],
    ids=["nested-attributes", "events-of-another-shape", "id-past-sqlite"],
)
def test_trace_shows_every_span_of_rows_another_tool_wrote(
    tmp_path: Path, column: str, text: str
) -> None:
    """Rows that are JSON the store never writes (a tool's or a hand's edit of a store shared
    from an incident): trace ended with 'internal error (RecursionError: maximum recursion
    depth exceeded while decoding a JSON array ...)', '(IndexError: list index out of range)'
    or '(OverflowError: Python int too large to convert to SQLite INTEGER)', exit 2, as did
    diff of the request. What such a row held is lost, as with a row that is not JSON."""
    path = write_store(tmp_path / "edited.db")
    whole = run("trace", "req-checkout-1", "--store", str(path))
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE spans SET {column} = ?", (text,))

    code, out, err = run("trace", "req-checkout-1", "--store", str(path))

    assert (code, err) == (0, "")
    ids = [s["span_id"] for s in json.loads(out)["spans"]]
    assert ids == [s["span_id"] for s in json.loads(whole[1])["spans"]]
    assert run("diff", "req-checkout-1", "req-checkout-1", "--store", str(path))[:1] == (0,)


# Each edit puts a value of another type in a column (hand-edited stores shared from an incident):
# `trace`, `search`, `services` and `diff` ended with "internal error (TypeError: '<=' not
# supported between instances of 'int' and 'str')", "(AttributeError: 'str' object has no
# attribute 'hex')" or "(TypeError: Object of type bytes is not JSON serializable)", exit 2. A
# row without an id or a time to read is left out; text held as a blob or a number is shown.
INCIDENT = "f70194e1000000000000000000000001"  # trace of req-incident-9: its worker links to it
WORKER = "x'f70194e1000000000000000000000002'"
CHECKOUT = "(SELECT id FROM traces WHERE trace_id = x'c303d9b3000000000000000000000001')"


def span(number: int) -> str:
    """The row of req-checkout-1's span ``number``."""
    return f"trace_ref = {CHECKOUT} AND span_id = x'{number:016x}'"


MISTYPED = {
    "kind-as-text": (f"UPDATE spans SET kind = 'client' WHERE {span(2)}", []),
    "status-as-text": (f"UPDATE spans SET status = 'failed' WHERE {span(2)}", []),
    "start-as-text": (f"UPDATE spans SET start_ns = 'yesterday' WHERE {span(2)}", [2]),
    "span-id-as-text": (f"UPDATE spans SET span_id = 'abc' WHERE {span(2)}", [2]),
    "parent-id-as-text": (f"UPDATE spans SET parent_id = 'abc' WHERE {span(3)}", [3]),
    "scope-ref-as-text": (f"UPDATE spans SET scope_ref = 'x' WHERE {span(2)}", []),
    "status-message-as-blob": (f"UPDATE spans SET status_message = x'41ff' WHERE {span(2)}", []),
    "name-as-blob": ("UPDATE strings SET value = CAST(value AS BLOB) WHERE value = 'orders'", []),
    "correlation-as-blob": (
        "UPDATE correlations SET value = CAST(value AS BLOB) WHERE value = 'req-incident-9'",
        [],
    ),
    "link-id-as-text": ("UPDATE links SET linked_span_id = 'x'", []),
    "log-as-text": ("UPDATE logs SET time_ns = 'x', span_id = 'x', body = x'41ff'", []),
    "trace-id-as-text": (f"UPDATE traces SET trace_id = 'abc' WHERE trace_id = {WORKER}", []),
}


@pytest.mark.parametrize(("edit", "lost"), MISTYPED.values(), ids=MISTYPED.keys())
def test_read_commands_show_the_rest_of_a_store_with_a_mistyped_column(
    tmp_path: Path, edit: str, lost: list[int]
) -> None:
    path = write_store(tmp_path / "edited.db")
    whole = run("trace", "req-checkout-1", "--store", str(path))
    with sqlite3.connect(path) as conn:
        conn.execute(edit)

    trace = run("trace", "req-checkout-1", "--store", str(path))
    others = [
        run("trace", INCIDENT, "--store", str(path)),
        run("search", "--store", str(path), "--since", SINCE),
        run("services", "--store", str(path), "--since", SINCE),
        run("diff", "req-checkout-1", INCIDENT, "--store", str(path)),
    ]

    assert (trace[0], trace[2]) == (0, "")
    ids = [s["span_id"] for s in json.loads(trace[1])["spans"]]
    gone = {f"{number:016x}" for number in lost}
    assert ids == [s["span_id"] for s in json.loads(whole[1])["spans"] if s["span_id"] not in gone]
    assert [(code, err) for code, _, err in others] == [(0, "")] * 3 + [(1, "")]
    assert "orders" in {s["service"] for s in json.loads(trace[1])["spans"]}
