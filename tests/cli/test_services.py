"""`tracekit services` over a real store: the service map computed from stored spans."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import checkout, incident

from tracekit.store import Store
from tracekit_cli.main import cli

SINCE = "2023-11-14T22:00:00+00:00"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("services") / "tracekit.db"
    with Store(path) as s:
        for t in (checkout(), incident()):
            s.write_spans(t.spans)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["services", *args], env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def test_edges_as_json(store: Path) -> None:
    code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "json")
    edges = {(e["from"], e["to"], e["type"]): e for e in json.loads(out)["edges"]}
    assert code == 0
    assert set(edges) == {
        ("gateway", "orders", "http"), ("orders", "payments", "messaging"),
        ("payments", "bank", "http"), ("web", "api", "http"), ("api", "worker", "messaging"),
    }  # fmt: skip
    web_api = edges[("web", "api", "http")]
    assert (web_api["calls"], web_api["errors"], web_api["error_rate"]) == (2, 1, 0.5)
    assert (web_api["p50_ms"], web_api["p95_ms"]) == (20.0, 50.0)
    assert edges[("orders", "payments", "messaging")]["p50_ms"] == 160.0


def test_text_table_and_empty_window(store: Path) -> None:
    code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "text")
    assert code == 0 and out.splitlines()[0].split() == [
        "from", "to", "type", "calls", "errors", "p50", "p95",
    ]  # fmt: skip
    assert any(line.split()[:4] == ["web", "api", "http", "2"] for line in out.splitlines())
    code, out, err = run("--store", str(store), "--since", "1m")
    assert code == 1 and "no calls between services since 1m" in err


def test_since_the_epoch_is_the_whole_store(store: Path) -> None:
    """1970-01-01T00:00:00Z is 0 nanoseconds: a time, not "no --since" (the last hour)."""
    code, out, err = run("--store", str(store), "--since", "1970-01-01T00:00:00+00:00",
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["since_unix_nano"] == 0
    assert len(json.loads(out)["edges"]) == 5
