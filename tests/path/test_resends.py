"""The path of a call its HTTP client sent again, where the call began the trace (a script, a
cron job: no request under way). Its resends are CLIENT spans under its first request (they
stay in its trace), started after that one ended; the call still waited for each of them in
turn.

A real script (requests or urllib3, a ``Retry`` on 503) calls a real Flask service that answers
503 twice, then 200, both exporting into a store (``TRACEKIT_EXPORTER=store``); the real CLI
reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conditions import wait_for
from resend_services import resend_services, run_script

from tracekit.store import Store
from tracekit_cli.main import cli


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The store, and ``back``'s base URL."""
    path = tmp_path_factory.mktemp("resends") / "tracekit.db"
    with resend_services(path) as urls:
        yield path, urls["back"]


def cli_output(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def retried_from_a_script(store: tuple[Path, str], client: str, key: str) -> str:
    """The trace id of a script's call answered 503, 503, then 200 (six spans)."""
    assert run_script(store[0], store[1], client, f"/flaky/{key}-{client}?fail=2") == "200"
    found = cli_output("search", "--service", "script", "--store", str(store[0]), "--limit", "1",
                       "--format", "json")  # fmt: skip
    trace_id = str(json.loads(found)["requests"][0]["trace_id"])

    def spans() -> int:
        with Store(store[0]) as reader:
            return len(reader.spans_by_trace_ids([trace_id]))

    wait_for(lambda: spans() >= 6, 20, "the script's six spans")
    return trace_id


def path_of(store: tuple[Path, str], trace_id: str, output: str = "json") -> Any:
    out = cli_output("trace", trace_id, "--store", str(store[0]), "--format", output, "--no-logs")
    return json.loads(out) if output == "json" else out


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_every_request_of_the_call_is_on_the_critical_path(
    store: tuple[Path, str], client: str
) -> None:
    trace_id = retried_from_a_script(store, client, "critical")

    doc = path_of(store, trace_id)

    clients = [s for s in doc["spans"] if s["kind"] == "CLIENT"]
    assert [s["attributes"].get("http.request.resend_count") for s in clients] == [None, 1, 2]
    assert [s["on_critical_path"] for s in clients] == [True, True, True]
    assert set(doc["critical_path"]) == {s["span_id"] for s in doc["spans"]}


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_the_view_does_not_say_the_request_ends_after_the_call(
    store: tuple[Path, str], client: str
) -> None:
    trace_id = retried_from_a_script(store, client, "view")

    text = path_of(store, trace_id, "text")

    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if "script: GET" in line]
    assert len(rows) == 3 and all(" ms * " in lines[i] for i in rows), text
    assert not [i for i in rows if "request ends here" in lines[i + 1]], text
