"""`tracekit services` over a real store: the service map computed from stored spans."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology, write_store

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

SINCE = "2023-11-14T22:00:00+00:00"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("services") / "tracekit.db"
    return write_store(path)


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


def test_an_empty_window_in_json_is_a_map_without_edges(store: Path) -> None:
    """As ``search``: a script reading ``--format json`` gets a document, not empty output."""
    code, out, err = run("--store", str(store), "--since", "1m", "--format", "json")
    doc = json.loads(out)
    assert (code, doc["edges"], err) == (1, [], "tracekit: no calls between services since 1m\n")
    assert doc["since_unix_nano"] > 0


def test_since_the_epoch_is_the_whole_store(store: Path) -> None:
    """1970-01-01T00:00:00Z is 0 nanoseconds: a time, not "no --since" (the last hour)."""
    code, out, err = run("--store", str(store), "--since", "1970-01-01T00:00:00+00:00",
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["since_unix_nano"] == 0
    assert len(json.loads(out)["edges"]) == 5


def calls(caller: str, callee: str, start_ms: float, count: int) -> Topology:
    t = Topology(caller)  # (its ids start with a hash of the name: no two calls share one)
    for n in range(count):
        t.new_trace()
        root = t.span(caller, "GET /", "SERVER", start_ms + n, start_ms + n + 1)
        t.http(root, callee, "/x", start_ms + n, start_ms + n + 1, lag_ms=0.1)
    return t


def test_a_window_over_the_span_cap_maps_its_newest_calls_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap keeps memory bounded; what it leaves out is the oldest, never the latest calls."""
    path = tmp_path / "busy.db"
    with Store(path) as s:
        s.write_spans(calls("old-a", "old-b", 0, 5).spans + calls("new-a", "new-b", 1000, 2).spans)
    monkeypatch.setattr("tracekit_cli.services.MAX_SPANS", 9)  # 3 spans a call: 3 calls

    code, out, err = run("--store", str(path), "--since", SINCE, "--format", "json")

    assert code == 0
    edges = {(e["from"], e["to"]): e["calls"] for e in json.loads(out)["edges"]}
    assert edges == {("new-a", "new-b"): 2, ("old-a", "old-b"): 1}
    assert err == ("tracekit: warning: more than 9 spans since "
                   f"{SINCE}: the map covers only the newest 9 (narrow --since)\n")  # fmt: skip


def test_a_window_under_the_span_cap_warns_of_nothing(store: Path) -> None:
    code, _, err = run("--store", str(store), "--since", SINCE, "--format", "json")
    assert (code, err) == (0, "")


def test_a_consumer_on_a_clock_behind_gets_the_latency_trace_shows(tmp_path: Path) -> None:
    """The worker's clock is a second behind: its consumer 'starts' before the publish. The map
    gave that hop -965 ms; it is publish (3 ms) then handler (30 ms), as `tracekit trace` says."""
    t = Topology("req-skewed-worker")
    root = t.span("web", "POST /jobs", "SERVER", 0, 20)
    producer = t.publish(root, "jobs", 5, 8)
    t.consume("worker", "jobs", 10 - 1000, 40 - 1000, producer)
    db = write_store(tmp_path / "skew.db", t)

    code, out, _ = run("--store", str(db), "--since", SINCE, "--format", "json")
    trace = CliRunner().invoke(cli, ["trace", "req-skewed-worker", "--store", str(db),
                                     "--format", "json"])  # fmt: skip

    (edge,) = json.loads(out)["edges"]
    (hop,) = json.loads(trace.stdout)["hops"]
    assert code == 0
    assert (edge["p50_ms"], edge["p95_ms"]) == (33.0, 33.0) == (hop["latency_ms"],) * 2


def test_the_text_table_keeps_its_columns_past_service_names_in_wide_characters(
    tmp_path: Path,
) -> None:
    """The text table padded names by characters: a service named in Chinese (two columns a
    character) pushed the rest of its row right of the header's columns."""
    from rich.cells import cell_len

    t = Topology("req-wide-services")
    root = t.span("web", "GET /pay", "SERVER", 0, 50)
    t.http(root, "支付服务", "/charge", 10, 40)
    client = next(s for s in t.spans if s.service == "支付服务")
    t.http(client, "银行网关服务", "/transfer", 15, 35)
    db = write_store(tmp_path / "wide.db", t)
    code, out, _ = run("--store", str(db), "--since", SINCE, "--format", "text")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    header = lines[0]
    for line in lines[1:]:  # "type" and "calls" start where the header says
        assert cell_len(line[: line.index("http")]) == header.index("type")
        assert cell_len(line) == len(header)


@pytest.mark.parametrize("width", [20, 30, 60])
def test_a_terminal_too_narrow_for_the_table_gets_a_block_per_edge(store: Path, width: int) -> None:
    """Under the table's width rich cut every cell ("ht…", "50…", "messa…") and at 30 columns
    laid the table out for 40. Each edge is now a block of lines that fit, nothing cut."""
    args = ["services", "--store", str(store), "--since", SINCE, "--format", "rich"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and max(len(line) for line in lines) <= width
    assert "…" not in result.stdout
    text = " ".join(result.stdout.split())
    assert "web → api http · 2 calls · 50.0% errors p50 20.0 ms · p95 50.0 ms" in text
    assert "api → worker messaging · 1 call · 0.0% errors p50 165.0 ms · p95 165.0 ms" in text


def test_service_without_jaeger_is_a_usage_error_not_the_whole_map(store: Path) -> None:
    """`tracekit services --service orders` drew every edge of the store, gateway's, web's and
    api's too, as if they were the map of orders: --service is Jaeger's (the service its search
    starts from), and the store ignored it. It is now refused, like --header without a remote
    backend."""
    code, out, err = run("--store", str(store), "--since", SINCE, "--service", "orders")
    assert (code, out) == (2, "")
    assert err == "tracekit: --service is for --jaeger: the store and Tempo read every service\n"


def test_a_service_name_longer_than_the_line_folds_in_a_block(tmp_path: Path) -> None:
    """A service named longer than a 30-column line stood whole in its edge's block, past the
    terminal's edge. It now folds onto the next line, every character kept."""
    t = Topology("req-long-name")
    root = t.span("storefront", "GET /", "SERVER", 0, 50)
    t.http(root, "inventory-reconciliation-worker", "/stock", 5, 30)
    with Store(tmp_path / "names.db") as s:
        s.write_spans(t.spans)

    args = ["services", "--store", str(tmp_path / "names.db"), "--since", SINCE,
            "--format", "rich"]  # fmt: skip
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "30", "NO_COLOR": "1"})

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 30, lines
    assert "".join(result.stdout.split()).startswith("storefront→inventory-reconciliation-worker")


def requests(count: int) -> list[SpanRecord]:
    """``count`` requests of three spans (web's SERVER, its CLIENT, api's SERVER), each span
    with the attributes an HTTP span carries."""
    attributes = {
        "http.request.method": "GET", "http.route": "/orders/{id}", "url.path": "/orders/77",
        "url.scheme": "http", "http.response.status_code": 200, "server.address": "api",
        "server.port": 8080, "user_agent.original": "python-httpx/0.27.0",
    }  # fmt: skip
    spans = []
    for n in range(count):
        trace, start = f"{n + 1:032x}", 1_700_000_000_000_000_000 + n * 1_000_000
        ids = [f"{3 * n + k + 1:016x}" for k in range(3)]
        spans += [
            SpanRecord(trace, ids[0], None, "web", "GET /", "SERVER", start, start + 900_000,
                       attributes=dict(attributes)),
            SpanRecord(trace, ids[1], ids[0], "web", "GET", "CLIENT", start + 1, start + 800_000,
                       attributes=dict(attributes)),
            SpanRecord(trace, ids[2], ids[1], "api", "GET /o", "SERVER", start + 2,
                       start + 700_000, attributes=dict(attributes)),
        ]  # fmt: skip
    return spans


def test_the_map_of_a_busy_window_holds_its_calls_not_its_spans(tmp_path: Path) -> None:
    """Over 200,000 spans the map took 5 s: it built a record of every span, with attributes it
    never reads (about 1.5 kB a span). The store now hands over the calls alone."""
    path = tmp_path / "busy.db"
    with Store(path) as s:
        s.write_spans(requests(10_000))
    tracemalloc.start()
    try:
        code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0
    assert [(e["from"], e["to"], e["calls"]) for e in json.loads(out)["edges"]] == [
        ("web", "api", 10_000)
    ]
    assert peak < 5_000_000  # 30,000 spans; 45 MB before


def services_that_never_call_each_other() -> Topology:
    """A web app that served three requests, and a nightly job (one root, one step under it)."""
    t = Topology("req-alone")
    for n in range(3):
        t.new_trace()
        t.span("shop web", "GET /items/{n}", "SERVER", 10 * n, 10 * n + 2)
    t.new_trace()
    job = t.span("nightly", "rebuild index", "INTERNAL", 50, 60)
    t.span("nightly", "scan", "INTERNAL", 51, 59, job)
    return t


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_services_that_never_called_each_other_are_named_with_their_requests(
    tmp_path: Path, fmt: str
) -> None:
    """A store of one web app (or of services that never called each other) drew only "no
    calls between services since 1h": nothing said which services were seen. They are now
    listed with the requests each took in, the map's absence is still said on stderr, and the
    exit status is 0: services were found."""
    path = write_store(tmp_path / "tracekit.db", services_that_never_call_each_other())
    result = CliRunner().invoke(
        cli, ["services", "--store", str(path), "--since", SINCE, "--format", fmt],
        env={"COLUMNS": "80", "NO_COLOR": "1"},
    )  # fmt: skip

    assert (result.exit_code, result.stderr) == (
        0,
        f"tracekit: no calls between services since {SINCE}\n",
    )
    listed = [re.split(r"\s{2,}| · ", line.strip()) for line in result.stdout.splitlines()]
    expected = {"text": [["service", "requests"], ["shop web", "3"], ["nightly", "1"]],
                "rich": [["shop web", "3 requests"], ["nightly", "1 request"]]}  # fmt: skip
    assert listed == expected[fmt]


def test_json_names_every_service_seen_whether_it_called_another_or_not(tmp_path: Path) -> None:
    t = services_that_never_call_each_other()
    root = t.span("gateway", "POST /checkout", "SERVER", 100, 150)
    t.http(root, "orders", "/orders", 110, 140, method="POST")
    path = write_store(tmp_path / "tracekit.db", t)
    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    assert code == 0
    assert json.loads(out)["services"] == [
        {"name": "shop web", "requests": 3}, {"name": "gateway", "requests": 1},
        {"name": "nightly", "requests": 1}, {"name": "orders", "requests": 1},
    ]  # fmt: skip


def test_a_pipeline_reading_the_services_of_a_window_without_calls_goes_on(
    tmp_path: Path,
) -> None:
    """`tracekit services --format json > map.json` under `set -e` over a web app alone: the
    document named the app, and the exit status 1 ("not found") stopped the script before it
    read it. Services found are found (exit 0); a window holding none is still exit 1."""
    path = write_store(tmp_path / "tracekit.db", services_that_never_call_each_other())
    tracekit = Path(sys.executable).with_name("tracekit")
    script = (
        "set -e\n"
        f"'{tracekit}' services --store '{path}' --since {SINCE} --format json > map.json\n"
        "echo read $(grep -c '\"name\"' map.json) services\n"
        f"'{tracekit}' services --store '{path}' --since 1m --format json > empty.json\n"
        "echo not reached\n"
    )
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip

    assert (done.returncode, done.stdout) == (1, "read 2 services\n")
    assert done.stderr == (f"tracekit: no calls between services since {SINCE}\n"
                           "tracekit: no calls between services since 1m\n")  # fmt: skip
