"""`tracekit search` over a real store written by tracekit.store (CliRunner, real command)."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import T0, Topology, checkout, incident, write_store

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("search") / "tracekit.db"
    return write_store(path)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["search", *args], env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


SINCE = "2023-11-14T22:00:00+00:00"


def test_lists_requests_newest_first_as_text(store: Path) -> None:
    code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "text")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("start (UTC)")
    assert "req-checkout-1" in out and "req-incident-9" in out
    checkout_line = next(line for line in lines if "req-checkout-1" in line)
    # the request's duration, as `tracekit trace` shows it (the entry root alone took 120 ms)
    assert "gateway: POST /checkout" in checkout_line and "200.0 ms" in checkout_line


def test_filters_and_json(store: Path) -> None:
    code, out, _ = run("--store", str(store), "--since", SINCE, "--errors", "--format", "json")
    found = json.loads(out)["requests"]
    assert code == 0 and found and all(r["error"] for r in found)
    assert "req-incident-9" in {r["correlation_id"] for r in found}
    assert "req-checkout-1" not in {r["correlation_id"] for r in found}
    code, out, _ = run("--store", str(store), "--since", SINCE, "--service", "gateway",
                       "--format", "json")  # fmt: skip
    assert [r["root_service"] for r in json.loads(out)["requests"]] == ["gateway"]
    assert json.loads(out)["requests"][0]["start_unix_nano"] == T0


def test_search_measures_what_trace_shows(store: Path) -> None:
    """Duration, span count and errors over every trace joined into the request: the incident's
    worker ran in a trace of its own (linked), 125 ms after the entry trace ended."""
    code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "json")
    assert code == 0
    for request in json.loads(out)["requests"]:
        shown = CliRunner().invoke(
            cli, ["trace", request["correlation_id"], "--store", str(store), "--format", "json",
                  "--raw-times"],
        )  # fmt: skip
        path = json.loads(shown.stdout)
        assert request["duration_ms"] == path["duration_ms"]
        assert request["span_count"] == len(path["spans"])
        assert request["error"] == bool(path["errors"])
        assert request["start_unix_nano"] == path["start_unix_nano"]


def test_min_duration_and_errors_filter_the_whole_request(store: Path) -> None:
    """Recorded times: checkout 200 ms, incident 190 ms (its worker's clock runs behind); their
    entry roots alone took 120 and 90 ms."""

    def found(*args: str) -> list[str]:
        code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "json", *args)
        assert code == 0
        return [r["correlation_id"] for r in json.loads(out)["requests"]]

    assert found("--min-duration", "195") == ["req-checkout-1"]
    assert sorted(found("--min-duration", "185")) == ["req-checkout-1", "req-incident-9"]
    assert found("--min-duration", "185", "--errors") == ["req-incident-9"]


def test_a_request_is_listed_once_with_every_trace_joined_into_it(tmp_path: Path) -> None:
    """A client retrying with the same correlation ID, and a batch consumer's uncorrelated trace
    reached only through its link: one row, measured over all of them, as `trace` shows it."""
    t = Topology("req-retried")
    first = t.span("edge", "POST /pay", "SERVER", 0, 30, status="ERROR", message="timeout")
    t.new_trace()
    second = t.span("edge", "POST /pay", "SERVER", 100, 140)
    publish = t.publish(second, "payments", 110, 112)
    t.new_trace()
    t.consume("batcher", "payments", 300, 900, links=[publish], correlated=False)
    path = tmp_path / "joined.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    assert code == 0
    assert json.loads(out)["requests"] == [{
        "correlation_id": "req-retried", "trace_id": first.trace_id, "root_service": "edge",
        "root_name": "POST /pay", "start_unix_nano": first.start_unix_nano,
        "duration_ms": 900.0, "span_count": 4, "error": True, "root_task": None,
    }]  # fmt: skip
    assert first.trace_id != second.trace_id


def test_a_request_is_named_by_where_it_entered(tmp_path: Path) -> None:
    """A worker in correlation-only mode makes no span: its call to inventory starts a trace of
    its own, carrying the request's ID. The row named that later trace's root, "inventory: GET
    /stock/{sku}", for every request that went through the worker, beside the start of the
    request's entry, "api: POST /order/{n}", where `trace` begins it."""
    t = Topology("df2-5")
    entry = t.span("api", "POST /order/{n}", "SERVER", 0, 120)
    t.publish(entry, "orders-stream", 30, 40)
    t.new_trace()
    t.span("inventory", "GET /stock/{sku}", "SERVER", 200, 210)
    path = tmp_path / "mixed-modes.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    assert code == 0
    [row] = json.loads(out)["requests"]
    assert (row["trace_id"], row["root_service"], row["root_name"]) == (
        entry.trace_id,
        "api",
        "POST /order/{n}",
    )
    assert row["start_unix_nano"] == entry.start_unix_nano


def listed(store: Path, *args: str) -> list[tuple[str, int]]:
    code, out, _ = run("--store", str(store), "--format", "json", *args)
    assert code == 0
    return [(r["correlation_id"], r["start_unix_nano"]) for r in json.loads(out)["requests"]]


def test_limit_keeps_the_first_rows_of_the_listing(store: Path) -> None:
    everything = listed(store, "--since", SINCE)
    assert [cid for cid, _ in everything] == ["req-checkout-1", "req-incident-9"]
    for n in range(1, len(everything) + 1):
        assert listed(store, "--since", SINCE, "--limit", str(n)) == everything[:n]


def test_text_columns_stay_aligned_past_a_wide_correlation_id(tmp_path: Path) -> None:
    """A correlation ID with CJK characters (two terminal columns each, from an SDK that is not
    tracekit's) was padded by its length in characters: its trace ID and root stood two columns
    to the right of every other row's."""
    tokyo = Topology("req-東京-1")
    tokyo.span("tokyo", "GET /menu", "SERVER", 0, 100)
    path = write_store(tmp_path / "wide.db", checkout(), tokyo)

    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "text")

    def trace_id_column(line: str) -> int:
        found = re.search(r"trace id|[0-9a-f]{32}", line)
        assert found is not None
        return sum(
            2 if unicodedata.east_asian_width(c) == "W" else 1 for c in line[: found.start()]
        )

    assert code == 0 and "req-東京-1" in out
    assert {trace_id_column(line) for line in out.splitlines()} == {64}


def test_order_limit_and_since_follow_the_start_shown(tmp_path: Path) -> None:
    """A client retried `retry` 10 s after its first attempt; `other` started in between. A
    request starts when the first of its traces did (the start shown): that orders the listing,
    `--limit` keeps its newest rows and `--since` the requests that started then or later."""
    retry, other = Topology("retry"), Topology("other")
    retry.span("gw", "GET /x", "SERVER", 0, 50)
    retry.new_trace()
    retry.span("gw", "GET /x", "SERVER", 10_000, 10_050)
    other.span("gw", "GET /y", "SERVER", 5_000, 5_050)
    path = tmp_path / "retry.db"
    with Store(path) as s:
        s.write_spans([*retry.spans, *other.spans])
    started = {"retry": T0, "other": T0 + 5 * 10**9}  # 22:13:20 and 22:13:25

    assert listed(path, "--since", SINCE) == [("other", started["other"]), ("retry", T0)]
    assert listed(path, "--since", SINCE, "--limit", "1") == [("other", started["other"])]
    assert listed(path, "--since", "2023-11-14T22:13:22+00:00") == [("other", started["other"])]
    code, out, err = run("--store", str(path), "--since", "2023-11-14T22:13:27+00:00")
    assert (code, out, err) == (1, "", "tracekit: no requests match\n")


def test_the_newest_request_is_found_past_many_retried_older_ones(tmp_path: Path) -> None:
    """300 requests retried a minute after their first attempt, all retries after `plain`
    started: `plain` is still the newest request, however many retries are read first."""
    t = Topology("plain")
    t.span("gw", "GET /plain", "SERVER", 500, 501)
    retried = []
    for n in range(300):
        r = Topology(f"retried-{n}")
        r.span("gw", "GET /r", "SERVER", n, n + 1)
        r.new_trace()
        r.span("gw", "GET /r", "SERVER", 60_000 + n, 60_001 + n)
        retried.extend(r.spans)
    path = tmp_path / "retried.db"
    with Store(path) as s:
        s.write_spans([*t.spans, *retried])

    assert listed(path, "--since", SINCE, "--limit", "1") == [("plain", T0 + 500 * 10**6)]


def test_nothing_matching_in_json_is_an_empty_list_for_the_script_reading_it(store: Path) -> None:
    """``--format json`` printed nothing when nothing matched: a script piping into jq got no
    document at all. It now gets the document with no requests, and still exit 1."""
    code, out, err = run("--store", str(store), "--since", "5m", "--format", "json")
    assert (code, json.loads(out), err) == (1, {"requests": []}, "tracekit: no requests match\n")


def test_nothing_matching_exits_1_and_bad_since_exits_2(store: Path) -> None:
    code, out, err = run("--store", str(store), "--since", "5m")  # the data is from 2023
    assert (code, out) == (1, "") and err == "tracekit: no requests match\n"
    code, _, err = run("--store", str(store), "--since", "yesterday-ish")
    assert code == 2 and "use a duration like 15m" in err


def test_rich_table(store: Path) -> None:
    code, out, _ = run("--store", str(store), "--since", SINCE, "--format", "rich")
    assert code == 0 and "correlation id" in out and "req-checkout-1" in out


def entry_point_topologies() -> list[Topology]:
    """Traces whose entry points are not simply "every span without a stored parent"."""
    silent = Topology("req-silent-middle")
    root = silent.span("gateway", "GET /orders", "SERVER", 0, 300)
    silent.span("gateway", "GET /orders", "CLIENT", 10, 290, root)
    silent.span("payments", "POST /charge", "SERVER", 50, 150, parent_span_id="ab" * 8)
    public = Topology("req-public")  # a public endpoint links to its untrusted caller's context
    caller = SpanRecord("ee" * 16, "ef" * 8, None, "internet", "GET", "CLIENT", 0, 0)  # not stored
    public.span("edge", "GET /home", "SERVER", 400, 420, links=[caller])
    rootless = Topology("req-rootless")  # the ingress exported nothing: its callees are orphans
    rootless.span("api", "GET /b", "SERVER", 520, 560, parent_span_id="cc" * 8)
    rootless.span("api", "GET /a", "SERVER", 500, 510, parent_span_id="cc" * 8)
    return [silent, public, rootless]


def test_only_entry_points_are_requests(tmp_path: Path) -> None:
    """A consumer root linked to a stored producer, and spans whose parent is missing in a trace
    that has its root, continue a request: they are not listed as requests of their own."""
    path = tmp_path / "entries.db"
    with Store(path) as s:
        for t in (checkout(), incident(), *entry_point_topologies()):
            s.write_spans(t.spans)
    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    found = [(r["correlation_id"], r["root_service"], r["root_name"])
             for r in json.loads(out)["requests"]]  # fmt: skip
    assert code == 0
    assert sorted(found, key=str) == sorted([
        ("req-checkout-1", "gateway", "POST /checkout"),
        ("req-incident-9", "web", "POST /jobs"),  # not worker's linked trace, not ledger
        ("req-silent-middle", "gateway", "GET /orders"),  # not the orphaned payments span
        ("req-public", "edge", "GET /home"),  # its link leads nowhere stored: an entry point
        ("req-rootless", "api", "GET /a"),  # the earliest orphan stands for the missing root
    ], key=str)  # fmt: skip


@pytest.mark.parametrize("limit", ["2", "1000"])
def test_a_busy_correlation_id_hides_no_other_request(tmp_path: Path, limit: str) -> None:
    """700 traces carrying one correlation ID (any service can send them) are one request, capped
    at the traces `tracekit trace` joins; the requests around it are still listed."""
    noisy, victim = Topology("noisy"), Topology("victim-1")
    for n in range(700):
        noisy.new_trace()
        noisy.span("noisy", "GET /ping", "SERVER", 1 + n, 1.01 + n)
    victim.span("checkout", "POST /checkout", "SERVER", 0, 50)
    path = tmp_path / "busy.db"
    with Store(path) as s:
        s.write_spans([*noisy.spans, *victim.spans])

    code, out, _ = run("--store", str(path), "--since", SINCE, "--limit", limit, "--format", "json")

    assert code == 0
    found = {r["correlation_id"]: r["span_count"] for r in json.loads(out)["requests"]}
    assert found == {"noisy": 500, "victim-1": 1}


def test_rich_table_keeps_every_field_readable_at_80_columns(tmp_path: Path) -> None:
    """32-hex correlation IDs (what the demo and most clients send) do not fit a table at 80
    columns: the table folded each ID over three lines, which no double-click could copy into
    `tracekit trace`. At 80 each request is now a block, its ID whole on a line of its own; where
    the table fits (120), every field of it is whole: start, duration, span count, error flag
    and the ID each on one line, the root in what is left."""
    request_id = "09236c50c9cb4727838000b25df48e57"
    t = Topology(request_id)
    root = t.span("gateway", "POST /checkout", "SERVER", 0, 884.4, status="ERROR", message="x")
    for n in range(18):
        t.span("gateway", f"step {n}", "INTERNAL", 1 + n, 2 + n, root)
    path = tmp_path / "ids.db"
    with Store(path) as s:
        s.write_spans(t.spans)

    def shown(width: int) -> list[str]:
        args = ["search", "--store", str(path), "--since", SINCE, "--format", "rich"]
        result = CliRunner().invoke(cli, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
        assert result.exit_code == 0
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= width
        return lines

    narrow = shown(80)
    assert narrow[0] == request_id  # whole, alone: a double-click copies it
    assert " ".join(" ".join(narrow[1:]).split()) == (
        "2023-11-14 22:13:20.000 UTC · 884.4 ms · 19 spans ✗ error gateway: POST /checkout "
        f"trace {t.spans[0].trace_id}"
    )
    lines = shown(120)
    rule = next(i for i, line in enumerate(lines) if line.startswith("━"))
    header = [" ".join(parts).split() for parts in columns(lines[:rule])]
    assert header == [["start", "(UTC)"], ["duration"], ["spans"], ["error"],
                      ["correlation", "id"], ["root"]]  # fmt: skip
    assert rule == 1  # every header on one line
    row = columns(lines[rule + 1 :])  # the one request
    assert [column[0] for column in row[:5]] == [
        "2023-11-14 22:13:20.000", "884.4 ms", "19", "✗", request_id
    ]  # fmt: skip
    assert " ".join(" ".join(row[5]).split()) == "gateway: POST /checkout"


def test_a_request_without_correlation_id_needs_no_wider_table(tmp_path: Path) -> None:
    """A request without a correlation ID is listed by its labelled trace ID, 'trace <32 hex>':
    that label made the table need 112 columns where 32-hex correlation IDs need 106, so from
    106 to 111 every request was a block. The label now stands above the trace ID in its cell
    where the table is narrower than both side by side; the ID stays whole on its line, and the
    JSON is as it was."""
    correlated = Topology("09236c50c9cb4727838000b25df48e57")
    correlated.span("gateway", "POST /checkout", "SERVER", 0, 884.4)
    uncorrelated = Topology(None)
    uncorrelated.span("gateway", "GET /health", "SERVER", 10, 12.5)
    trace_id = uncorrelated.spans[0].trace_id
    path = tmp_path / "ids.db"
    with Store(path) as s:
        s.write_spans([*correlated.spans, *uncorrelated.spans])
    args = ["search", "--store", str(path), "--since", SINCE]

    def shown(width: int) -> list[str]:
        env = {"COLUMNS": str(width), "NO_COLOR": "1"}
        result = CliRunner().invoke(cli, [*args, "--format", "rich"], env=env)
        assert result.exit_code == 0
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= width
        return lines

    assert shown(80)[:2] == [f"trace {trace_id}", "  2023-11-14 22:13:20.010 UTC · 2.5 ms · 1 span"]
    for width in (106, 108):
        lines = shown(width)
        assert lines[1].startswith("━")  # a table
        row = columns(lines[2:4])  # the newest request: label, then the ID whole on its line
        assert row[0] == ("2023-11-14 22:13:20.010", "") and row[1] == ("2.5 ms", "")
        assert row[4] == ("trace", trace_id)
    row = columns(shown(120)[2:3])
    assert row[4] == (f"trace {trace_id}",)  # room for both on one line
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert [r["correlation_id"] for r in json.loads(result.stdout)["requests"]] == [
        None,
        "09236c50c9cb4727838000b25df48e57",
    ]
    assert json.loads(result.stdout)["requests"][0]["trace_id"] == trace_id


@pytest.mark.parametrize("width", [20, 30, 60])
def test_a_terminal_too_narrow_for_the_table_gets_a_block_per_request(
    store: Path, width: int
) -> None:
    """Under 78 columns the table cut the start ("22:13:2…"), dropped the ID and root columns
    (40) or folded them a character a line (60), and at 30 the view was laid out for 40. Each
    request is now a block: its correlation ID on a line of its own, its numbers, root and trace
    ID wrapped between words; only an ID longer than the line stands past it, whole, alone."""
    args = ["search", "--store", str(store), "--since", SINCE, "--format", "rich"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
    lines = result.stdout.splitlines()
    assert result.exit_code == 0
    assert [line for line in lines if len(line) > width and " " in line.strip()] == []
    assert "req-checkout-1" in lines and "req-incident-9" in lines
    words = result.stdout.split()
    for trace_id in ("c303d9b3000000000000000000000001", "f70194e1000000000000000000000001"):
        assert trace_id in words
    assert " ".join(words).count("2023-11-14 22:13:20.000 UTC · 200.0 ms · 8 spans") == 1
    assert "…" not in result.stdout


def columns(lines: list[str]) -> list[tuple[str, ...]]:
    """The table's cells column by column, a column's parts top to bottom."""
    return list(zip(*([cell.strip() for cell in re.split("[┃│]", line)] for line in lines),
                    strict=True))  # fmt: skip


def test_a_service_name_the_locale_could_not_decode_is_a_usage_error(store: Path) -> None:
    """`tracekit search --service café` typed in a Latin-1 terminal (the byte 0xe9) blamed the
    store: "store PATH: 'utf-8' codec can't encode character '\\udce9' ...". The typed name is
    now refused as --service's, as `diff --service` and `canary --service` refuse it."""
    import subprocess

    tracekit = str(Path(sys.executable).with_name("tracekit"))
    result = subprocess.run([tracekit, "search", "--store", str(store), "--service", b"caf\xe9"],
                            capture_output=True, timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr == (
        b"tracekit: Invalid value for '--service': 1-256 printable characters, got 'caf\\udce9'"
        b" (see 'tracekit search --help')\n"
    )


def test_service_is_taken_without_surrounding_spaces_and_refused_empty(store: Path) -> None:
    """`--service "gateway "` (a pasted name) matched nothing (exit 1), and `--service "$SVC"`
    with SVC unset said "no requests match" rather than that the name was missing."""
    code, out, _ = run("--store", str(store), "--since", SINCE, "--service", " gateway ",
                       "--format", "json")  # fmt: skip
    assert code == 0
    assert {r["root_service"] for r in json.loads(out)["requests"]} == {"gateway"}
    code, out, err = run("--store", str(store), "--service", "")
    assert (code, out) == (2, "")
    assert "Invalid value for '--service': 1-256 printable characters, got ''" in err


def test_a_root_word_longer_than_the_line_folds_in_a_block(tmp_path: Path) -> None:
    """A route longer than a 40-column line stood whole in its block, running past the
    terminal's edge where the terminal broke it anywhere; only the IDs, which are copied, stand
    whole. The root now folds onto the next lines, as in the table, every character kept."""
    route = "POST /api/v1/organisations/{organisation_id}/members/{member_id}"
    t = Topology("req-long-route")
    t.span("accounts-service", route, "SERVER", 0, 12)
    with Store(tmp_path / "route.db") as s:
        s.write_spans(t.spans)

    args = ["search", "--store", str(tmp_path / "route.db"), "--since", SINCE, "--format", "rich"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "40", "NO_COLOR": "1"})

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 40, lines
    at = next(i for i, line in enumerate(lines) if "accounts-service:" in line)
    root = "".join(line.strip() for line in lines[at : at + 3])
    assert root.startswith("accounts-service: " + route.replace(" ", ""))


def test_an_empty_store_searched_without_filters_is_named_as_empty(tmp_path: Path) -> None:
    """A collector started, but nothing sent to it yet (an SDK pointed at another port): `search`
    with no filter said "no requests match", as if a filter had left everything out."""
    path = tmp_path / "fresh.db"
    Store(path).create()

    assert run("--store", str(path)) == (
        1, "", f"tracekit: no requests in the store {path} yet\n"
    )  # fmt: skip
    code, out, err = run("--store", str(path), "--format", "json")
    assert (code, json.loads(out)) == (1, {"requests": []})
    assert err == f"tracekit: no requests in the store {path} yet\n"
    assert run("--store", str(path), "--errors") == (1, "", "tracekit: no requests match\n")


def celery_rooted(correlation_id: str = "req-fhq") -> Topology:
    """A request that a scheduler began by sending a Celery task through the queue ``fhq``, as
    tracekit's Celery integration records it: both spans are named by the queue."""
    t = Topology(correlation_id)
    attrs = {"messaging.system": "celery", "messaging.destination.name": "fhq",
             "tracekit.celery.task_name": "tasks.explode"}  # fmt: skip
    sent = t.span("scheduler", "send fhq", "PRODUCER", 0, 4, attrs=attrs)
    t.span("worker", "process fhq", "CONSUMER", 7, 9, sent, attrs=attrs)
    return t


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_celery_rooted_request_is_named_by_its_task_as_trace_names_it(
    tmp_path: Path, fmt: str
) -> None:
    """`trace` names the root "scheduler: send fhq (tasks.explode)"; `search` listed it as
    "scheduler: send fhq", and every task sent through that queue read the same. Its row now
    names the task as `trace` does, and the JSON gives it as root_task beside root_name."""
    path = write_store(tmp_path / "tracekit.db", celery_rooted())
    shown = CliRunner().invoke(cli, ["trace", "req-fhq", "--store", str(path), "--format", fmt],
                               env={"COLUMNS": "120", "NO_COLOR": "1"})  # fmt: skip
    assert "send fhq (tasks.explode)" in shown.stdout

    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", fmt)
    assert code == 0
    assert "scheduler: send fhq (tasks.explode)" in out

    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    [row] = json.loads(out)["requests"]
    assert (row["root_name"], row["root_task"]) == ("send fhq", "tasks.explode")


def node_rooted(correlation_id: str, order: str) -> Topology:
    """A request whose root is an OpenTelemetry JS SDK's HTTP server span without a route: it
    names the span by the method alone, ``GET``, and the path is in ``url.path``."""
    t = Topology(correlation_id)
    attrs = {"http.request.method": "GET", "url.path": f"/reserve/{order}", "url.scheme": "http"}
    t.span("inventory-node", "GET", "SERVER", 0, 30, attrs=attrs)
    return t


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_root_without_a_route_is_listed_as_diff_names_it(tmp_path: Path, fmt: str) -> None:
    """Every such request was listed "inventory-node: GET", whatever it served, while `diff`
    names it "GET /reserve/{id}": search lists it so too, ids stripped as from a route."""
    path = write_store(
        tmp_path / "tracekit.db",
        node_rooted("req-a", "42"),
        node_rooted("req-b", "alice@example.com"),
    )
    compared = CliRunner().invoke(
        cli, ["diff", "req-a", "req-b", "--store", str(path), "--format", "text"]
    )
    assert "inventory-node: GET /reserve/{id}" in compared.stdout

    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", fmt)
    assert code == 0
    assert out.count("inventory-node: GET /reserve/{id}") == 2
    assert "alice" not in out

    code, out, _ = run("--store", str(path), "--since", SINCE, "--format", "json")
    names = [(row["root_service"], row["root_name"]) for row in json.loads(out)["requests"]]
    assert names == [("inventory-node", "GET /reserve/{id}")] * 2
