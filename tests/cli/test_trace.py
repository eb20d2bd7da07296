"""`tracekit trace` end to end: a real SQLite store written by tracekit.store, the real command.

Most tests call the click command in-process (CliRunner runs the real code, nothing replaced);
exit codes, stderr and the terminal default run the installed console script in a subprocess.
Snapshots in tests/cli/snapshots/ pin the text and rich views at 100 columns; regenerate them
with TRACEKIT_UPDATE_SNAPSHOTS=1 after an intended change and review the diff.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import T0, Topology, checkout, incident, write_store

from tracekit.path import load_schema
from tracekit.records import LogRecordData, SpanRecord
from tracekit_cli.main import cli

SNAPSHOTS = Path(__file__).parent / "snapshots"
TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("store") / "tracekit.db", checkout(), incident())


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    # colour asked for (the runner's output is no terminal): the rich view's escape codes are
    # pinned in snapshots
    result = CliRunner().invoke(
        cli, list(args), env={"COLUMNS": "100", "FORCE_COLOR": "1", **(env or {})}
    )
    return result.exit_code, result.stdout, result.stderr


def check_snapshot(name: str, actual: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("TRACEKIT_UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("request_id", ["req-checkout-1", "req-incident-9"])
def test_text_view_matches_snapshot(store: Path, request_id: str) -> None:
    code, out, err = run("trace", request_id, "--store", str(store), "--format", "text")
    assert (code, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= 100
    check_snapshot(f"trace_{request_id}.txt", out)


@pytest.mark.parametrize("request_id", ["req-checkout-1", "req-incident-9"])
def test_rich_view_matches_snapshot(store: Path, request_id: str) -> None:
    code, out, _ = run("trace", request_id, "--store", str(store), "--format", "rich")
    assert code == 0 and "\x1b[" in out  # coloured
    check_snapshot(f"trace_{request_id}.rich.ansi", out)


def test_a_narrow_terminal_wraps_queue_waits_and_errors_under_their_span(store: Path) -> None:
    """At 64 columns the rich view cut every note at the edge: "⏳ waited 15.0 ms in queue"
    and "◆ request ends here, 80.0 ms a". They now wrap, indented under the span's guides, so
    the tree stays whole; log lines (a preview, whole in JSON) are still cropped."""
    import re

    code, out, _ = run("trace", "req-checkout-1", "--store", str(store), "--format", "rich",
                       env={"COLUMNS": "64", "NO_COLOR": "1"})  # fmt: skip
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 64
    at = next(i for i, line in enumerate(lines) if "⏳ waited" in line)
    guides = " " * 32 + "│    "
    assert lines[at : at + 5] == [
        guides + "⏳ waited 15.0 ms in queue",  # ⏳ takes two cells
        guides + "  kafka orders.created",
        guides + "◆ request ends here,",  # a figure stays with its unit
        guides + "  80.0 ms after the entry",
        guides + "  span ended",
    ]
    assert lines[at + 5] == guides + "│ 22:13:20.070 INFO chargi…"  # cut, and says so


@pytest.mark.parametrize("columns", [30, 40, 64, 100])  # 30: laid out at 40 before, wrapping
def test_a_narrow_terminal_folds_long_words_instead_of_cutting_them(
    tmp_path: Path, columns: int
) -> None:
    """The rich view cut a word longer than the line at the edge: at 40 columns the request's
    correlation ID (what the user copies) lost its last 38 characters, an error's URL its
    path, a span name in wide characters its end. Such a word now folds onto the next lines,
    never mid-character, so every line fits and nothing is lost."""
    from rich.cells import cell_len

    correlation_id = "req-" + "7f3a9c" * 20
    url = "https://payments.internal.example.com/v1/charges/ch_1234567890abcdefghij"
    wide = "处理订单处理订单处理订单处理订单处理订单"
    t = Topology(correlation_id)
    root = t.span("gateway", "POST /pay", "SERVER", 0, 100, status="ERROR",
                  message=f"upstream {url} failed")  # fmt: skip
    t.span("支付服务", wide, "INTERNAL", 20, 30, parent_span_id="00000000deadbeef",
           trace_id=root.trace_id)  # fmt: skip
    db = write_store(tmp_path / "long-words.db", t)
    code, out, _ = run("trace", correlation_id, "--store", str(db), "--format", "rich",
                       env={"COLUMNS": str(columns), "NO_COLOR": "1"})  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and max(cell_len(line) for line in lines) <= columns
    # the words as they read, wherever the lines broke (and without the tree's guides)
    unfolded = "".join(out.replace("│", " ").split())
    assert f"request{correlation_id}" in unfolded
    assert f"upstream{url}failed" in unfolded  # the note under the span and the footer
    assert unfolded.count(url) == 2
    assert f"'{wide}'" in unfolded  # the warning naming the orphan's host


@pytest.mark.parametrize("columns", [20, 30, 39])
def test_under_40_columns_each_span_is_named_then_timed(store: Path, columns: int) -> None:
    """Under 40 columns a row kept its offset and duration and 20 cells or fewer for the rest:
    at 20 no span was named at all ('+5.0 ms   95.0 ms'), at 30 a name kept a letter or two
    ('└─ ◆ g'). Each span is now its guides, marker, service and name, folded over lines,
    then its offset and duration under them."""
    import re

    code, out, _ = run("trace", "req-incident-9", "--store", str(store), "--format", "rich",
                       env={"COLUMNS": str(columns), "NO_COLOR": "1"})  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= columns
    words = " ".join(re.sub("[│├└─…]", " ", out).split())
    for span, times in [
        ("◆ web POST /jobs", "+0.0 ms 90.0 ms"),
        ("◆ api POST /jobs", "+7.0 ms 16.0 ms"),
        ("◆ worker process jobs", "+55.0 ms 160.0 ms"),
        ("◆ ledger POST /entries", "+75.0 ms 60.0 ms"),
    ]:
        assert f"{span} {times}" in words
    assert "offset" not in out  # no heading over columns that are not drawn


@pytest.mark.parametrize("columns", [64, 100, 160])
def test_a_span_named_in_wide_characters_keeps_its_waterfall_bar(
    tmp_path: Path, columns: int
) -> None:
    """The rich view fitted a span's name to its column by counting characters: a name in
    Chinese, two cells a character, pushed the row past the terminal's edge and its waterfall
    bar was cropped away. The name is now fitted by cells, closed by '…', and the bar stands
    in its lane like every other row's."""
    from rich.cells import cell_len

    t = Topology("req-wide")
    root = t.span("gateway", "POST /pay", "SERVER", 0, 100)
    t.span("支付服务", "处理订单" * 12, "INTERNAL", 20, 30, root)
    db = write_store(tmp_path / "wide.db", t)
    code, out, _ = run("trace", "req-wide", "--store", str(db), "--format", "rich",
                       env={"COLUMNS": str(columns), "NO_COLOR": "1"})  # fmt: skip
    rows = [
        line
        for line in out.splitlines()
        if " ms " in line and ("gateway" in line or "支付服务" in line)
    ]
    assert code == 0 and len(rows) == 2
    # the waterfall gives way to the long name (down to 10 columns) before cutting it
    lane = {64: 10, 100: 10, 160: 28}[columns]
    bar_at = [cell_len(row[: row.index("█")]) for row in rows]
    assert bar_at == [columns - lane, columns - lane + lane // 5]  # it started at 20 of 100 ms
    assert ("…" in rows[1]) is (columns < 160)  # at 160 the name, given room, is whole
    assert max(cell_len(row) for row in rows) <= columns


def test_a_fan_out_under_a_parent_never_exported_is_one_warning_per_span_then_a_count(
    tmp_path: Path,
) -> None:
    """A batch job's root was never exported and its 2,000 children each said so: 2,000
    warnings after the tree in every view and in JSON. The first 20 are still named, then
    one line counts the rest; every span is still shown, with its parent id in JSON."""
    t = Topology("req-fan")
    for i in range(2000):
        t.span("worker", f"item {i}", "INTERNAL", i, i + 1, parent_span_id="00000000deadbeef")
    db = write_store(tmp_path / "fan.db", t)
    code, out, _ = run("trace", "req-fan", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and len(doc["spans"]) == 2000
    assert {s["parent_span_id"] for s in doc["spans"]} == {"00000000deadbeef"}
    missing = [w for w in doc["warnings"] if w.startswith("parent span missing")]
    assert len(missing) == 21
    assert missing[0].startswith("parent span missing for worker 'item 0' (")
    assert missing[-1] == "parent span missing for 1980 more spans"
    _, text, _ = run("trace", "req-fan", "--store", str(db), "--format", "text")
    footer = text[text.index("\nwarnings:\n") :].splitlines()
    assert footer[-1] == "  parent span missing for 1980 more spans"
    assert sum("parent span missing" in line for line in footer) == 21


@pytest.mark.parametrize("name", ["处理订单", "处理订单" * 20, "ที่นี่ดีที่สุด"])
def test_the_text_view_keeps_the_waterfall_aligned_past_wide_characters(
    tmp_path: Path, name: str
) -> None:
    """The text view padded the span column by characters: a span named in Chinese (two
    columns a character) pushed its waterfall 8 columns right of every other row's. One named
    in Thai pushed it right too: its vowel marks, drawn over the letter before them,
    were counted as a column each (their combining class is 0, which was taken for "spacing")."""
    from rich.cells import cell_len

    t = Topology("req-wide")
    root = t.span("gateway", "POST /pay", "SERVER", 0, 100)
    t.span("支付服务", name, "INTERNAL", 20, 30, root)
    t.span("orders", "x", "INTERNAL", 40, 50, root)
    db = write_store(tmp_path / "wide.db", t)
    code, out, _ = run("trace", "req-wide", "--store", str(db), "--format", "text")
    rows = [line for line in out.splitlines() if line.endswith("|") and " ms " in line]
    assert code == 0 and len(rows) == 3
    lanes = {cell_len(row[: row.rindex("|", 0, len(row) - 1)]) for row in rows}
    assert len(lanes) == 1  # every row's waterfall starts in the same column
    assert len({cell_len(row) for row in rows}) == 1


def test_text_view_shows_what_an_operator_needs(store: Path) -> None:
    _, out, _ = run("trace", "req-incident-9", "--store", str(store), "--format", "text")
    assert "path: web -> api -> worker -> ledger" in out
    assert "~ waited 0.0 ms in queue kafka jobs" in out  # skew-fixed consumer
    assert "! ERROR duplicate entry for job 77" in out
    assert "ERROR rejecting duplicate entry" in out
    assert "clock skew adjusted on worker: shifted +155.0 ms" in out
    assert "parent span missing for ledger 'POST /entries'" in out


def test_json_is_the_documented_schema(store: Path) -> None:
    code, out, _ = run("trace", "req-incident-9", "--store", str(store), "--format", "json")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert code == 0 and doc["schema"] == "tracekit.path/v1"
    assert len(doc["trace_ids"]) == 2
    assert [h["type"] for h in doc["hops"]] == ["http", "http", "messaging"]
    assert {e["service"] for e in doc["errors"]} == {"web", "api", "ledger"}


def test_trace_id_finds_the_same_path(store: Path) -> None:
    doc = json.loads(run("trace", "req-checkout-1", "--store", str(store), "--format", "json")[1])
    by_trace = json.loads(
        run("trace", doc["trace_ids"][0], "--store", str(store), "--format", "json")[1]
    )
    assert by_trace["correlation_id"] == "req-checkout-1"
    assert by_trace["spans"] == doc["spans"]


def test_requests_linking_to_one_context_the_store_lacks_stay_apart(tmp_path: Path) -> None:
    """Two public endpoints link to the same untrusted caller's context, which no stored trace
    holds: `trace` shows each request alone, as `search` lists them (two requests)."""
    caller = SpanRecord("ee" * 16, "ef" * 8, None, "internet", "GET", "CLIENT", 0, 0)  # not stored
    alpha, beta = Topology("req-alpha"), Topology("req-beta")
    alpha.span("svc-alpha", "GET /alpha", "SERVER", 0, 10, links=[caller])
    beta.span("svc-beta", "GET /beta", "SERVER", 5, 20, links=[caller])
    db = write_store(tmp_path / "links.db", alpha, beta)

    for t, service in ((alpha, "svc-alpha"), (beta, "svc-beta")):
        code, out, _ = run("trace", t.correlation_id or "", "--store", str(db), "--format", "json")
        doc = json.loads(out)
        assert code == 0
        assert (doc["trace_ids"], doc["services"]) == ([t.trace], [service])
    code, out, _ = run("search", "--store", str(db), "--since", "2023-11-14T22:00:00+00:00",
                       "--format", "json")  # fmt: skip
    assert code == 0
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == ["req-beta", "req-alpha"]


def test_logs_of_spans_not_in_the_path_are_in_every_view(tmp_path: Path) -> None:
    """A worker crashed mid-job: its CONSUMER span was never exported, its log lines were. JSON
    had them; the text and rich views printed nothing of them, the crash included."""
    t = Topology("req-crash")
    entry = t.span("api", "POST /jobs", "SERVER", 0, 20)
    t.log(entry, 5, "job 77 queued")
    lost = SpanRecord(t.trace, "77" * 8, entry.span_id, "worker", "process jobs", "CONSUMER",
                      entry.start_unix_nano, entry.end_unix_nano)  # fmt: skip
    t.log(lost, 30, "job 77 crashed: out of memory", severity="ERROR")
    db = write_store(tmp_path / "crash.db", t)

    code, out, _ = run("trace", "req-crash", "--store", str(db), "--format", "json")
    assert code == 0
    assert [log["body"] for log in json.loads(out)["logs"]] == [
        "job 77 queued", "job 77 crashed: out of memory"
    ]  # fmt: skip
    for view in ("text", "rich"):
        code, out, _ = run("trace", "req-crash", "--store", str(db), "--format", view)
        assert code == 0 and out.count("job 77 queued") == 1
        (line,) = [line for line in out.splitlines() if "crashed" in line]
        assert "ERROR" in line and "worker" in line and "job 77 crashed: out of memory" in line
        _, out, _ = run("trace", "req-crash", "--store", str(db), "--format", view, "--no-logs")
        assert "crashed" not in out


def test_no_logs_and_raw_times(store: Path) -> None:
    _, out, _ = run("trace", "req-incident-9", "--store", str(store), "--format", "text",
                    "--no-logs", "--raw-times")  # fmt: skip
    assert "starting job 77" not in out and "clock skew" not in out
    assert "-100.0 ms" in out or "+0.0 ms" in out


def test_no_color_keeps_rich_layout_without_escape_codes(store: Path) -> None:
    code, out, _ = run("trace", "req-checkout-1", "--store", str(store), "--format", "rich",
                       env={"NO_COLOR": "1"})  # fmt: skip
    assert code == 0 and "\x1b" not in out and "◆" in out


def test_hostile_span_names_cannot_reach_the_terminal(tmp_path: Path) -> None:
    """Names show U+FFFD where a terminal would act on them (a name cannot pass for another);
    an error message is free text, its terminal sequences taken out whole: it read "boom
    [31m red", the colour code's remnant in the line."""
    t = Topology("req-evil")
    t.span("web\x1b[2J", "GET /\x1b]0;pwned\x07\nnext", "SERVER", 0, 5, status="ERROR",
           message="boom\x1b[31m red\r\n")  # fmt: skip
    db = write_store(tmp_path / "evil.db", t)
    for fmt in ("text", "rich"):
        _, out, _ = run("trace", "req-evil", "--store", str(db), "--format", fmt,
                        env={"NO_COLOR": "1"})  # fmt: skip
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out
        assert "GET /\ufffd]0;pwned\ufffd next" in out and "web\ufffd[2J" in out
        assert "boom red" in out and "[31m" not in out


def test_stacked_combining_marks_are_cut_to_two_per_letter(tmp_path: Path) -> None:
    """A name or a log line of one letter under 60 accents ("Zalgo" text) was printed whole:
    a terminal stacks them above and below the row, over the rows around it. Each letter now
    keeps two marks (Vietnamese stacks two: "Việt" decomposed), a name a mark where the rest
    were, a message nothing."""
    t = Topology("req-stacked")
    server = t.span("shop", "GET /Z" + "\u0301" * 60, "SERVER", 0, 5)
    t.log(server, 1, "ok" + "\u0336" * 60 + " Vie\u0323\u0302t")
    db = write_store(tmp_path / "stacked.db", t)
    for fmt in ("text", "rich"):
        _, out, _ = run("trace", "req-stacked", "--store", str(db), "--format", fmt,
                        env={"NO_COLOR": "1", "COLUMNS": "200"})  # fmt: skip
        assert "GET /Z\u0301\u0301\ufffd" in out and "ok\u0336\u0336 Vie\u0323\u0302t" in out
        assert not re.search("[\u0300-\u036f]{3}", out)


def test_a_log_line_coloured_by_its_logger_reads_without_the_colour_codes(
    tmp_path: Path,
) -> None:
    # Flask's development server (werkzeug) colours its access line inside the message itself
    t = Topology("req-coloured")
    server = t.span("inventory", "GET /stock/{sku}", "SERVER", 0, 5, status="ERROR")
    t.log(server, 4, '127.0.0.1 - - [07/Dec/2026 07:21:59] "\x1b[35m\x1b[1mGET /stock/bad '
          'HTTP/1.1\x1b[0m" 500 -')  # fmt: skip
    # an OSC 8 hyperlink around "stock page", tput sgr0's ESC ( B, a colour behind a stray ESC
    t.log(server, 5, "see \x1b]8;;http://inventory/stock\x1b\\stock page\x1b]8;;\x1b\\"
          " now\x1b(B\x1b[m, \x1b\x1b[0m[31mred")  # fmt: skip
    db = write_store(tmp_path / "coloured.db", t)
    for fmt in ("text", "rich"):
        _, out, _ = run("trace", "req-coloured", "--store", str(db), "--format", fmt,
                        env={"NO_COLOR": "1", "COLUMNS": "200"})  # fmt: skip
        assert '"GET /stock/bad HTTP/1.1" 500 -' in out and "[35m" not in out
        assert "see stock page now, red" in out and "\x1b" not in out


def test_a_log_line_cut_at_the_edge_of_a_narrow_terminal_says_so(tmp_path: Path) -> None:
    """The rich view crops a log line to the terminal: "ERROR Exception on /stock/bad [" read
    as the whole message, nothing marking that the rest was cut. A cut line now ends in …"""
    t = Topology("req-long-log")
    server = t.span("inventory", "GET /stock/{sku}", "SERVER", 0, 5)
    t.log(server, 1, "Exception on /stock/bad [GET] while reading the stock of every warehouse")
    t.log(server, 2, "short line")
    db = write_store(tmp_path / "long.db", t)
    _, out, _ = run("trace", "req-long-log", "--store", str(db), "--format", "rich",
                    env={"NO_COLOR": "1", "COLUMNS": "60"})  # fmt: skip
    (cut,) = [line for line in out.splitlines() if "Exception on" in line]
    (whole,) = [line for line in out.splitlines() if "short line" in line]
    assert len(cut) == 60 and cut.endswith("…") and "warehouse" not in cut
    assert whole.endswith("short line")


def cli_process(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACEKIT, *args], capture_output=True, text=True, timeout=60,
                          env={**uncoloured_environ(), "COLUMNS": "100", **env})  # fmt: skip


def uncoloured_environ() -> dict[str, str]:
    """This environment without the variables that choose colour (a CI job's FORCE_COLOR)."""
    return {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}


def test_exit_status_and_one_line_errors(store: Path, tmp_path: Path) -> None:
    not_found = cli_process("trace", "req-unknown", "--store", str(store))
    assert not_found.returncode == 1 and not_found.stdout == ""
    assert not_found.stderr == (
        f"tracekit: no request found for 'req-unknown' in the store {store} ('tracekit search'"
        " lists its newest requests)\n"
    )
    missing = cli_process("trace", "x", "--store", str(tmp_path / "nothing.db"))
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"tracekit: no tracekit store at {tmp_path / 'nothing.db'} yet: "
    )
    assert missing.stderr.count("\n") == 1
    down = cli_process("trace", "x", "--tempo", "http://127.0.0.1:9", "--timeout", "0.5")
    assert down.returncode == 2 and len(down.stderr.splitlines()) == 1
    assert "Traceback" not in down.stderr and "Tempo at http://127.0.0.1:9" in down.stderr
    both = cli_process("trace", "x", "--tempo", "http://a", "--jaeger", "http://b")
    assert both.returncode == 2 and "choose one backend" in both.stderr
    usage = cli_process("trace", "x", "--format", "xml")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@pytest.mark.parametrize("user_version", [0, 3])
def test_another_applications_database_is_named_so(tmp_path: Path, user_version: int) -> None:
    """A path to some other SQLite file (a typo, the app's own database) is not 'empty'."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(f"CREATE TABLE users (name TEXT); PRAGMA user_version = {user_version};")
    for command in (["trace", "x"], ["search"], ["services"]):
        result = cli_process(*command, "--store", str(path))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == f"tracekit: {path} is not a tracekit store (another database)\n"


def test_counts_of_one_read_as_one(tmp_path: Path) -> None:
    lone = Topology("req-lone-1")
    lone.span("gateway", "GET /ping", "SERVER", 0, 5, status="ERROR", message="down")
    path = write_store(tmp_path / "lone.db", lone)

    code, out, _ = run("trace", "req-lone-1", "--store", str(path), "--format", "text")

    assert code == 0
    assert out.splitlines()[1].endswith(", 1 span, 1 service, 1 trace, 0 hops, 1 error")


def test_long_durations_keep_the_text_columns(tmp_path: Path) -> None:
    """A span of years (a clock gone wrong, or a job that ran long) keeps every bar in line."""
    year_ms = 365.25 * 24 * 3600 * 1000
    t = Topology("req-long-1")
    root = t.span("batch", "nightly", "SERVER", 0, 3 * year_ms)
    t.span("batch", "step", "INTERNAL", 2 * year_ms, 2 * year_ms + 90 * 60_000, root)
    t.span("batch", "quick", "INTERNAL", 5, 30_005, root)
    path = write_store(tmp_path / "long.db", t)

    code, out, _ = run("trace", "req-long-1", "--store", str(path), "--format", "text")

    assert code == 0
    rows = [line for line in out.splitlines() if line.endswith("|") and "batch:" in line]
    assert len(rows) == 3
    assert len({row.index("|") for row in rows}) == 1, out
    assert "3.0 y" in rows[0] and "+2.0 y" in rows[2] and "1.5 h" in rows[2]
    assert "+5.0 ms" in rows[1] and "30.00 s" in rows[1]


def test_piped_output_is_text_and_a_terminal_gets_rich(store: Path) -> None:
    piped = cli_process("trace", "req-checkout-1", "--store", str(store))
    assert piped.stdout.startswith("request req-checkout-1\n") and "\x1b" not in piped.stdout
    shown = on_a_terminal(["trace", "req-checkout-1", "--store", str(store)], term=COLOUR_TERM)
    assert "\x1b[" in shown and "◆" in shown and "│" in shown


@pytest.mark.parametrize(("command", "shows"), [
    (["trace", "req-checkout-1"], "◆ gateway POST /checkout"),
    (["search"], "req-checkout-1"),
    (["services"], "gateway │ orders"),
], ids=["trace", "search", "services"])  # fmt: skip
def test_a_dumb_terminal_gets_the_rich_view_without_escape_codes(
    store: Path, command: list[str], shows: str
) -> None:
    """TERM=dumb (Emacs' shell, some CI logs) shows escape codes as text: the rich views printed
    them all the same (51 lines of the demo's trace, 43 of search). It is now told as NO_COLOR
    is, the layout kept."""
    since = ["--since", "2023-11-14T22:00:00+00:00"] if command[0] != "trace" else []
    shown = on_a_terminal([*command, *since, "--store", str(store)], term="dumb")
    assert "\x1b" not in shown
    assert shows in " ".join(shown.split())  # the rich view's tree or table, not the text view


READ_VIEWS = pytest.mark.parametrize("command", [
    ["trace", "req-checkout-1"],
    ["search", "--since", "2023-11-14T22:00:00+00:00"],
    ["services", "--since", "2023-11-14T22:00:00+00:00"],
], ids=["trace", "search", "services"])  # fmt: skip


@READ_VIEWS
def test_force_color_colours_a_dumb_terminal_and_a_pipe(store: Path, command: list[str]) -> None:
    """FORCE_COLOR asks for colour wherever the output goes, as rich and click read it: on a
    dumb terminal the rich views had none; piped, they had colour whether it was asked for or
    not (the escape codes landed in a file)."""
    args = [*command, "--store", str(store)]
    assert "\x1b[" in on_a_terminal(args, term="dumb", FORCE_COLOR="1")
    piped = [*args, "--format", "rich"]
    assert "\x1b" not in cli_process(*piped).stdout
    assert "\x1b[" in cli_process(*piped, FORCE_COLOR="1").stdout
    assert "\x1b" not in cli_process(*piped, FORCE_COLOR="1", NO_COLOR="1").stdout
    assert "\x1b" not in on_a_terminal(args, term=COLOUR_TERM, FORCE_COLOR="1", NO_COLOR="1")


COLOUR_TERM = "xterm-256color"


def on_a_terminal(args: list[str], *, term: str, **env: str) -> str:
    """What the installed command writes on a real pseudo-terminal of 100 columns (in colour
    unless ``term`` or ``env`` ask for none)."""
    primary, replica = pty.openpty()
    command = [TRACEKIT, *args]
    env = {**uncoloured_environ(), "COLUMNS": "100", "TERM": term, **env}
    proc = subprocess.Popen(command, stdout=replica, stderr=replica, env=env)
    os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_text_and_json_never_import_rich_or_the_sdk(store: Path) -> None:
    probe = (
        "import sys\nfrom tracekit_cli.main import main\n"
        f"sys.argv = ['tracekit', 'trace', 'req-checkout-1', '--store', {str(store)!r}, "
        "'--format', 'text']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'opentelemetry', 'google', 'uvicorn') or m.startswith('tracekit.receiver'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60).stdout  # fmt: skip
    assert "HEAVY []" in out


def test_a_log_with_a_severity_number_only_reads_by_its_name(tmp_path: Path) -> None:
    """OTLP's severity text is optional: a record carrying only the number 17 printed '17' and
    was not marked as an error; it is ERROR, as OpenTelemetry's log data model names it."""
    t = Topology("req-numbered")
    entry = t.span("api", "POST /jobs", "SERVER", 0, 20)
    for number, body in ((17, "payment refused"), (10, "retrying"), (0, "no level")):
        at = entry.start_unix_nano + number * 100_000
        t.logs.append(LogRecordData(at, "api", "", number, body, trace_id=entry.trace_id,
                                    span_id=entry.span_id))  # fmt: skip
    db = write_store(tmp_path / "numbered.db", t)

    _, out, _ = run("trace", "req-numbered", "--store", str(db), "--format", "json")
    assert [log["severity"] for log in json.loads(out)["logs"]] == ["0", "INFO2", "ERROR"]
    _, out, _ = run("trace", "req-numbered", "--store", str(db), "--format", "text")
    assert any(line.endswith(" ERROR payment refused") for line in out.splitlines())
    _, out, _ = run("trace", "req-numbered", "--store", str(db), "--format", "rich")
    (line,) = [line for line in out.splitlines() if "payment refused" in line]
    assert "\x1b[1;31mERROR " in line  # bold red, as an ERROR text is


def test_a_span_that_ends_before_it_starts_lasts_no_time(tmp_path: Path) -> None:
    """Written into a store through its Python API: the JSON gave it self_ms -30.0, outside its
    own schema, and the views a -30.0 ms duration. The store keeps it ending when it starts,
    saying how far its clock went back (tests/path covers a source that keeps it as it came)."""
    t = Topology("req-backwards")
    entry = t.span("api", "POST /jobs", "SERVER", 0, 100)
    backwards = t.span("api", "enqueue", "INTERNAL", 50, 20, entry)
    db = write_store(tmp_path / "backwards.db", t)

    code, out, _ = run("trace", "req-backwards", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    span = next(s for s in doc["spans"] if s["span_id"] == backwards.span_id)
    assert code == 0
    assert (span["duration_ms"], span["self_ms"], span["end_unix_nano"]) == (
        0.0, 0.0, backwards.start_unix_nano
    )  # fmt: skip
    assert span["attributes"]["tracekit.clock_stepped_back_ns"] == 30_000_000
    _, out, _ = run("trace", "req-backwards", "--store", str(db), "--format", "text")
    assert "-30.0 ms" not in out


CORRELATION_ONLY_SERVICE = """
import logging
import tracekit
from tracekit import correlation

tracekit.init()
token = correlation.set_correlation_id("req-billing-7")
logging.getLogger("billing").warning("card declined for order 7")
correlation.reset_correlation_id(token)
tracekit.shutdown()
"""


def test_log_lines_of_a_correlation_only_service_are_in_the_path(tmp_path: Path) -> None:
    """billing runs with TRACEKIT_MODE=correlation: its lines reach the store with the request's
    correlation ID and no trace. The path read logs by trace only and never showed them."""
    db = tmp_path / "mixed.db"
    t = Topology("req-billing-7")
    entry = t.span("shop", "POST /pay", "SERVER", 0, 20)
    t.log(entry, 5, "paying order 7")
    write_store(db, t)
    env = {**os.environ, "TRACEKIT_MODE": "correlation", "TRACEKIT_EXPORTER": "store",
           "TRACEKIT_STORE": str(db), "OTEL_SERVICE_NAME": "billing"}  # fmt: skip
    service = subprocess.run([sys.executable, "-c", CORRELATION_ONLY_SERVICE], env=env,
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert service.stderr.strip() == "card declined for order 7"  # the host's own logging

    code, out, _ = run("trace", "req-billing-7", "--store", str(db), "--format", "json")
    logs = [(log["service"], log["span_id"], log["body"]) for log in json.loads(out)["logs"]]
    assert code == 0
    assert sorted(logs, key=str) == [
        ("billing", None, "card declined for order 7"), ("shop", entry.span_id, "paying order 7"),
    ]  # fmt: skip
    _, out, _ = run("trace", "req-billing-7", "--store", str(db), "--format", "text")
    assert "WARN billing: card declined for order 7" in out


def test_a_grpc_call_is_a_hop_named_by_its_method(tmp_path: Path) -> None:
    """A gRPC CLIENT and SERVER (rpc.* attributes, no HTTP ones) were listed as an 'http' hop
    with no destination."""
    t = Topology("req-grpc")
    entry = t.span("gateway", "POST /checkout", "SERVER", 0, 100)
    rpc = {"rpc.system": "grpc", "rpc.service": "orders.OrderService", "rpc.method": "Create"}
    client = t.span("gateway", "orders.OrderService/Create", "CLIENT", 10, 90, entry, attrs=rpc)
    t.span("orders", "orders.OrderService/Create", "SERVER", 12, 88, client, attrs=rpc)
    db = write_store(tmp_path / "grpc.db", t)

    _, out, _ = run("trace", "req-grpc", "--store", str(db), "--format", "json")
    (hop,) = json.loads(out)["hops"]
    assert (hop["type"], hop["system"], hop["destination"]) == (
        "http", "grpc", "orders.OrderService/Create"
    )  # fmt: skip
    _, out, _ = run("trace", "req-grpc", "--store", str(db), "--format", "text")
    assert "  gateway -> orders  grpc orders.OrderService/Create  latency 80.0 ms" in out


def test_correlated_log_lines_are_read_up_to_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correlation ID on every line of a busy service: the path reads the earliest lines of no
    trace of it, up to MAX_CORRELATED_LOGS (lowered here), and says so."""
    import tracekit.path

    monkeypatch.setattr(tracekit.path, "MAX_CORRELATED_LOGS", 3)
    t = Topology("req-chatty")
    entry = t.span("api", "GET /", "SERVER", 0, 20)
    for i in range(5):
        t.logs.append(LogRecordData(entry.start_unix_nano + i, "cron", "INFO", 9, f"line {i}",
                                    attributes={"correlation.id": "req-chatty"}))  # fmt: skip
    db = write_store(tmp_path / "chatty.db", t)

    code, out, _ = run("trace", "req-chatty", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert [log["body"] for log in doc["logs"]] == ["line 0", "line 1", "line 2"]
    assert doc["warnings"] == [
        "more than 3 log lines carry the correlation ID: reading the first 3"
    ]


def test_the_log_lines_of_the_requests_traces_are_read_up_to_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service logging in a loop inside the request (millions of lines in its trace): every
    line was read, and `trace` took gigabytes. It reads the earliest MAX_TRACE_LOGS (lowered
    here) and says how many it left out, by correlation ID and by trace ID."""
    import tracekit.path

    monkeypatch.setattr(tracekit.path, "MAX_TRACE_LOGS", 3, raising=False)
    t = Topology("req-loop")
    entry = t.span("api", "POST /bulk", "SERVER", 0, 20)
    for i in reversed(range(5)):  # stored out of time order
        t.logs.append(LogRecordData(entry.start_unix_nano + i, "api", "INFO", 9, f"item {i}",
                                    entry.trace_id, entry.span_id))  # fmt: skip
    db = write_store(tmp_path / "loop.db", t)

    for query in ("req-loop", entry.trace_id):
        code, out, _ = run("trace", query, "--store", str(db), "--format", "json")
        doc = json.loads(out)
        assert code == 0
        assert [log["body"] for log in doc["logs"]] == ["item 0", "item 1", "item 2"]
        assert doc["warnings"] == [
            "5 log lines in the request's traces: showing the first 3 by time, 2 left out"
        ]


def test_a_request_seen_only_in_log_lines_is_shown_from_its_logs(tmp_path: Path) -> None:
    """Every service on the request's way runs in correlation-only mode: its lines carry the
    correlation ID and no span exists. `trace` said "no request found" (exit 1) though the store
    held the request's lines; it now shows them, in time order, and says why there is no tree."""
    t = Topology("req-logs-only")
    start = 1_700_000_000_000_000_000
    lines = [(0, "shop", "paying order 7"), (12, "billing", "card declined\x1b[2J for order 7")]
    for offset_ms, service, body in lines:
        t.logs.append(LogRecordData(start + offset_ms * 1_000_000, service, "WARN", 13, body,
                                    attributes={"correlation.id": "req-logs-only"}))  # fmt: skip
    db = write_store(tmp_path / "logs-only.db", t)

    code, out, err = run("trace", "req-logs-only", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (code, err) == (0, "")
    assert (doc["correlation_id"], doc["services"], doc["spans"]) == (
        "req-logs-only", ["shop", "billing"], []
    )  # fmt: skip
    assert (doc["start_unix_nano"], doc["duration_ms"]) == (start, 12.0)
    assert [(log["service"], log["span_id"]) for log in doc["logs"]] == [
        ("shop", None), ("billing", None)
    ]  # fmt: skip
    assert doc["warnings"] == ["no span carries this request: showing its log lines alone"]

    for view in ("text", "rich"):
        args = ("trace", "req-logs-only", "--store", str(db), "--format", view)
        code, out, err = run(*args, env={"NO_COLOR": "1"})
        assert (code, err) == (0, ""), view
        assert "path: shop -> billing" in out or "path: shop → billing" in out, view
        assert "WARN billing: card declined for order 7" in out and "\x1b" not in out, view
        assert "log lines (no span):" in out and "waterfall" not in out, view
    code, _, err = run("trace", "req-logs-only", "--store", str(db), "--no-logs")
    assert code == 1 and "no request found" in err  # exit 1: not found


def test_a_request_the_sampler_left_out_is_found_by_its_log_lines_trace_id(
    tmp_path: Path,
) -> None:
    """A request the sampler left out exports no span, but its log lines carry its trace ID (in
    the JSON lines on stdout and in the store). `trace <that trace ID>` said "no request found"
    (exit 1) where `trace <its correlation ID>` showed the lines; both show them now, with the
    request's line logged outside the trace too."""
    trace_id, other = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
    t = Topology("req-unsampled")
    start = 1_700_000_000_000_000_000
    cid = {"correlation.id": "req-unsampled"}
    t.logs += [
        LogRecordData(start, "shop", "INFO", 9, "paying order 7", trace_id, "00f067aa0ba902b7",
                      attributes=cid),
        LogRecordData(start + 5_000_000, "shop", "WARN", 13, "retrying", attributes=cid),
        LogRecordData(start + 9_000_000, "shop", "INFO", 9, "another request's", other,
                      "b7ad6b7169203331"),
    ]  # fmt: skip
    db = write_store(tmp_path / "unsampled.db", t)

    for query in ("req-unsampled", trace_id, trace_id.upper()):
        code, out, err = run("trace", query, "--store", str(db), "--format", "json")
        assert (code, err) == (0, ""), query
        doc = json.loads(out)
        jsonschema.validate(doc, load_schema())
        assert (doc["query"], doc["correlation_id"], doc["trace_ids"]) == (
            query, "req-unsampled", [trace_id]
        ), query  # fmt: skip
        assert [log["body"] for log in doc["logs"]] == ["paying order 7", "retrying"], query
        assert doc["warnings"] == ["no span carries this request: showing its log lines alone"]

    code, out, err = run("trace", other, "--store", str(db), "--format", "text")
    assert (code, err) == (0, "")
    assert "another request's" in out and "paying order 7" not in out


def test_a_request_the_sampler_left_out_shows_the_lines_of_a_service_between(
    tmp_path: Path,
) -> None:
    """FastAPI -> Node.js (OpenTelemetry JS, its logs SDK) -> Flask, the sampler leaving the
    request out: Node's line carries the trace ID but no correlation ID. `trace <correlation
    ID>` showed the two Python lines alone, 'path: gateway -> inventory', where `trace <trace
    ID>` showed all three; both show all three now. A trace whose lines carry another request's
    ID too (a span left out around many requests) lends no line without one."""
    trace_id, shared = "2af7651916cd43dd8448eb211c80319c", "3bf92f3577b34da6a3ce929d0e0e4736"
    t = Topology("order-7")
    start = 1_700_000_000_000_000_000
    cid, other = {"correlation.id": "order-7"}, {"correlation.id": "order-8"}
    t.logs += [
        LogRecordData(start, "gateway", "WARN", 13, "checkout", trace_id, "00f067aa0ba902b7",
                      attributes=cid),
        LogRecordData(start + 3_000_000, "pricing-node", "INFO", 9, "pricing", trace_id,
                      "b7ad6b7169203331"),
        LogRecordData(start + 5_000_000, "inventory", "WARN", 13, "stock", trace_id,
                      "53995c3f42cd8ad8", attributes=cid),
        LogRecordData(start + 6_000_000, "worker", "INFO", 9, "batch of 7", shared,
                      "0000000000000001", attributes=cid),
        LogRecordData(start + 7_000_000, "worker", "INFO", 9, "batch of 8", shared,
                      "0000000000000001", attributes=other),
        LogRecordData(start + 8_000_000, "worker", "INFO", 9, "batch done", shared,
                      "0000000000000001"),
    ]  # fmt: skip
    db = write_store(tmp_path / "unsampled-node.db", t)

    for query in ("order-7", trace_id):
        code, out, err = run("trace", query, "--store", str(db), "--format", "json")
        assert (code, err) == (0, ""), query
        doc = json.loads(out)
        jsonschema.validate(doc, load_schema())
        assert doc["services"] == ["gateway", "pricing-node", "inventory", "worker"], query
        bodies = [log["body"] for log in doc["logs"]]
        assert bodies == ["checkout", "pricing", "stock", "batch of 7"], query


def test_a_trace_left_out_is_found_by_its_lines_whose_correlation_id_is_too_long_to_index(
    tmp_path: Path,
) -> None:
    """Lines of a trace none of whose spans was exported, carrying a correlation ID longer than
    the store indexes (another SDK's 300-character request id, sent to `tracekit collector`):
    `trace <their trace ID>` looked the lines up again by that ID, found none, and said "no
    request found" (exit 1) though the store held them."""
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    long_id = {"correlation.id": "sess-" + "x" * 295}
    t = Topology("long-id")
    start = 1_700_000_000_000_000_000
    t.logs += [
        LogRecordData(start, "billing", "INFO", 9, "charging card", trace_id, "00f067aa0ba902b7",
                      attributes=long_id),
        LogRecordData(start + 1_000, "billing", "INFO", 9, "charged", trace_id,
                      "00f067aa0ba902b7", attributes=long_id),
    ]  # fmt: skip
    db = write_store(tmp_path / "long-id.db", t)

    code, out, err = run("trace", trace_id, "--store", str(db), "--format", "json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (doc["query"], doc["trace_ids"]) == (trace_id, [trace_id])
    assert [log["body"] for log in doc["logs"]] == ["charging card", "charged"]


def test_a_trace_left_out_whose_request_has_spans_elsewhere_shows_those_spans(
    tmp_path: Path,
) -> None:
    """A producer's trace the sampler left out (its log line carries the trace ID), and the
    consumer's new trace, which its sampler kept. `trace <the producer's trace ID>` showed the
    lines alone, "0 spans" and "no span carries this request", where `trace <the correlation
    ID>` shows the consumer's span; it shows the same request now."""
    left_out = "4bf92f3577b34da6a3ce929d0e0e4736"
    t = Topology("req-mixed")
    consumer = t.span("consumer", "process orders", "CONSUMER", 50, 80)
    cid = {"correlation.id": "req-mixed"}
    t.logs += [
        LogRecordData(consumer.start_unix_nano - 50_000_000, "producer", "INFO", 9,
                      "publishing order 7", left_out, "00f067aa0ba902b7", attributes=cid),
    ]  # fmt: skip
    db = write_store(tmp_path / "mixed.db", t)

    code, out, err = run("trace", left_out, "--store", str(db), "--format", "json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (doc["query"], doc["correlation_id"]) == (left_out, "req-mixed")
    assert [span["name"] for span in doc["spans"]] == ["process orders"]
    assert [log["body"] for log in doc["logs"]] == ["publishing order 7"]
    by_id = json.loads(run("trace", "req-mixed", "--store", str(db), "--format", "json")[1])
    assert doc["spans"] == by_id["spans"] and doc["warnings"] == by_id["warnings"]


def test_a_trace_left_out_around_several_requests_is_no_one_requests(tmp_path: Path) -> None:
    """A span left out by the sampler around many requests (a server started inside it): each
    request's line carries the span's trace ID and its own correlation ID. `trace <that trace
    ID>` named the trace after the first line's request, and showed that request alone where it
    had spans elsewhere. It is no one request's: every line of it is shown, and that is said."""
    shared = "4bf92f3577b34da6a3ce929d0e0e4736"
    t = Topology("req-a")
    t.span("orders", "GET /orders", "SERVER", 0, 10)  # req-a's own trace, sampled
    start = t.spans[0].start_unix_nano
    t.logs += [
        LogRecordData(start + n * 1_000_000, "orders", "INFO", 9, f"{cid} served", shared,
                      "00f067aa0ba902b7", attributes={"correlation.id": cid})
        for n, cid in enumerate(("req-a", "req-b"))
    ]  # fmt: skip
    db = write_store(tmp_path / "shared.db", t)

    code, out, err = run("trace", shared, "--store", str(db), "--format", "json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (doc["correlation_id"], doc["spans"]) == (None, [])
    assert [log["body"] for log in doc["logs"]] == ["req-a served", "req-b served"]
    assert "the log lines of this trace carry 2 correlation IDs" in doc["warnings"][0]


def test_service_without_jaeger_is_a_usage_error(store: Path) -> None:
    """`tracekit trace req-checkout-1 --service nosuch` showed the request as if --service had
    narrowed the search: the store ignored it (only Jaeger searches per service)."""
    code, out, err = run("trace", "req-checkout-1", "--store", str(store), "--service", "nosuch")
    assert (code, out) == (2, "")
    assert err == "tracekit: --service is for --jaeger: the store and Tempo read every service\n"


def test_the_text_views_header_wraps_at_the_terminals_width(store: Path) -> None:
    """The summary line (95 characters) ran past an 80-column terminal, and at 30 columns the
    path too; they wrap between words now, as the footer does, every word whole."""
    code, out, _ = run("trace", "req-incident-9", "--store", str(store), "--format", "text",
                       env={"COLUMNS": "30"})  # fmt: skip
    lines = out.splitlines()
    header = lines[: lines.index("")]
    assert code == 0 and header[0] == "request req-incident-9"
    assert max(len(line) for line in header) <= 30
    assert " ".join(" ".join(header[1:]).split()) == (
        "start 2023-11-14 22:13:20.000 UTC, 215.0 ms, 8 spans, 4 services, 2 traces, 3 hops, "
        "4 errors path: web -> api -> worker -> ledger"
    )


def test_a_pasted_traceparent_is_answered_with_the_trace_id_in_it(store: Path) -> None:
    """A `traceparent` copied from a proxy's log or a request's headers is a valid correlation ID
    in form, and said only "no request found": the trace ID in it is what finds the request."""
    trace_id = "c303d9b3000000000000000000000001"  # the checkout request's
    typed = f"00-{trace_id.upper()}-00f067aa0ba902b7-01"

    code, out, err = run("trace", typed, "--store", str(store))

    assert (code, out) == (1, "")
    assert err == (
        f"tracekit: no request found for '{typed}': it is a traceparent header, whose trace ID"
        f" is {trace_id} (tracekit trace {trace_id})\n"
    )
    assert run("trace", trace_id, "--store", str(store), "--format", "json")[0] == 0


@pytest.mark.parametrize(
    ("typed", "hinted"),
    [
        # a later version may add fields after the flags: its trace ID is read as version 00's
        ("01-c303d9b3000000000000000000000001-00f067aa0ba902b7-01-future", True),
        # headers a W3C propagator refuses, starting a new trace: no request has their trace ID
        ("ff-c303d9b3000000000000000000000001-00f067aa0ba902b7-01", False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-c303d9b3000000000000000000000001-0000000000000000-01", False),
        ("00-c303d9b3000000000000000000000001-00f067aa0ba902b7-01-extra", False),
    ],
)
def test_only_a_traceparent_a_service_accepts_is_answered_with_its_trace_id(
    store: Path, typed: str, hinted: bool
) -> None:
    """The hint named the trace ID of a header no service takes (version ff, an all-zero trace
    or parent ID: the propagator starts a new trace) and told to type `tracekit trace 000...0`,
    which can find nothing; and it missed a later version's header, which carries more fields."""
    code, out, err = run("trace", typed, "--store", str(store))

    hint = (
        ": it is a traceparent header, whose trace ID is c303d9b3000000000000000000000001"
        " (tracekit trace c303d9b3000000000000000000000001)"
    )
    assert (code, out) == (1, "")
    in_store = f" in the store {store} ('tracekit search' lists its newest requests)"
    assert err == f"tracekit: no request found for '{typed}'{hint if hinted else in_store}\n"


def test_span_ids_repeated_across_traces_keep_each_span_its_own_notes(tmp_path: Path) -> None:
    """A worker whose SDK numbers span ids per process reuses, in its own trace, the ids of
    the caller's spans (ids are unique only within a trace). The text view hung the worker's
    error on the caller's "publish q" row and the queue wait on its entry span; each note now
    stays on its own span."""
    t = Topology("req-reused-ids")
    root = t.span("web", "POST /a", "SERVER", 0, 30)
    publish = t.publish(root, "q", 10, 12)
    t.new_trace()
    consumer = t.consume("worker", "q", 20, 80, links=[publish], correlated=False)
    charge = t.span("worker", "charge", "INTERNAL", 30, 70, consumer, status="ERROR",
                    message="card declined")  # fmt: skip
    t.log(charge, 40, "declined by the bank")
    reused = {consumer.span_id: root.span_id, charge.span_id: publish.span_id}
    t.spans = [replace(s, span_id=reused.get(s.span_id, s.span_id),
                       parent_span_id=reused.get(s.parent_span_id or "", s.parent_span_id))
               for s in t.spans]  # fmt: skip
    t.logs = [replace(log, span_id=reused[charge.span_id]) for log in t.logs]
    store_file = str(write_store(tmp_path / "t.db", t))
    code, out, err = run("trace", "req-reused-ids", "--store", store_file, "--format", "text")
    assert (code, err) == (0, "")
    rows = out.split("\n\n")[1].splitlines()[1:]  # the tree, below its header
    notes = {}
    for line in rows:
        if line.lstrip().startswith("+"):
            label = line.split(" *")[1].split("|")[0].strip(" `-") if " *" in line else line
            notes[label] = []
        else:
            notes[label].append(line.strip(" |`"))
    assert notes == {
        "web: POST /a": [],
        "web: publish q": [],
        "worker: process q": ["~ waited 8.0 ms in queue kafka q",
                              "* request ends here, 50.0 ms after the entry span ended"],
        "worker: charge": ["! ERROR card declined",
                           "> 22:13:20.040 INFO declined by the bank"],
    }  # fmt: skip


def test_a_consumer_whose_producer_was_sampled_out_shows_the_wait_it_measured(
    tmp_path: Path,
) -> None:
    """The API samples 30% of requests (parentbased_traceidratio), its consumer always_on: in
    most requests the consumer span is there, with the wait it measured from the message's
    publish time (tracekit.queue_wait_ms), but its producer span is not. `trace` showed no
    queue wait at all; every view shows the one the consumer measured now, saying why the
    producer's span is missing."""
    t = Topology("order-41")
    consumer = t.span(
        "worker", "orders process", "CONSUMER", 0, 30, parent_span_id="00f067aa0ba902b7",
        attrs={"messaging.system": "rabbitmq", "messaging.destination.name": "orders",
               "tracekit.queue_wait_ms": 412.5},
    )  # fmt: skip
    t.span("worker", "charge", "INTERNAL", 5, 25, consumer)
    db = write_store(tmp_path / "sampled.db", t)
    said = (
        "waited 412.5 ms in queue rabbitmq orders (measured by the consumer; the producer's "
        "span is not here)"
    )

    code, out, err = run("trace", "order-41", "--store", str(db), "--format", "text")
    assert (code, err) == (0, "")
    assert f"~ {said}" in out
    code, out, err = run(
        "trace", "order-41", "--store", str(db), "--format", "rich",
        env={"COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert f"⏳ {said}" in out
    code, out, err = run("trace", "order-41", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (code, doc["hops"]) == (0, [])
    assert (
        "worker 'orders process' (0000000000000001) waited 412.5 ms in queue, as the consumer "
        "measured it: the producer's span is not here (left out by its sampler, not exported, or"
        " never made: a producer in correlation-only mode)"
    ) in doc["warnings"]


def test_a_measured_wait_is_shown_only_where_no_queue_hop_shows_one(tmp_path: Path) -> None:
    """A consumer whose producer span is on the path shows the hop's wait, once; a wait that
    is not a plausible number (a bad clock, a forged header) is not shown."""
    t = Topology("order-42")
    api = t.span("api", "POST /orders", "SERVER", 0, 20)
    producer = t.publish(api, "orders", 5, 10, system="rabbitmq")
    consumer = t.consume("worker", "orders", 40, 60, producer, system="rabbitmq")
    consumer.attributes["tracekit.queue_wait_ms"] = 30.0
    t.span(
        "worker", "orders process", "CONSUMER", 70, 80, parent_span_id="00f067aa0ba902b7",
        attrs={"tracekit.queue_wait_ms": float("inf")},
    )  # fmt: skip
    db = write_store(tmp_path / "hop.db", t)

    code, out, err = run("trace", "order-42", "--store", str(db), "--format", "text")
    assert (code, err) == (0, "")
    assert out.count("~ waited") == 1 and "~ waited 30.0 ms in queue rabbitmq orders" in out
    assert "measured by the consumer" not in out


@pytest.mark.parametrize(
    ("attribute", "value", "forged", "said", "marker"),
    [
        ("tracekit.scheduled_delay_ms", 2500.0, ("2500", float("nan"), -1.0, 1e300, True),
         "2.50 s of it scheduled (not due before), 500.0 ms past due", "of it scheduled"),
        ("tracekit.messaging.redelivered", True, ("true", 1, "yes"),
         "redelivered: an earlier delivery was not acknowledged (its consumer stopped, was killed"
         " or gave it back)", "redelivered:"),
    ],
    ids=["scheduled", "redelivered"],
)  # fmt: skip
def test_what_a_consumer_said_of_its_wait_is_said_under_it(
    tmp_path: Path,
    attribute: str,
    value: object,
    forged: tuple[object, ...],
    said: str,
    marker: str,
) -> None:
    """A Celery task sent with a countdown waits until it is due; one whose worker was killed
    is delivered again: `trace` said only "waited 3.00 s in queue", as if no worker had been
    free. Their CONSUMER spans say how much of the wait was asked for
    (tracekit.scheduled_delay_ms), or that the broker delivered the message again
    (tracekit.messaging.redelivered): every view says it under the wait. A value no producer
    sends is not shown."""
    t = Topology("order-43")
    api = t.span("api", "POST /orders", "SERVER", 0, 20)
    producer = t.publish(api, "orders", 5, 10, system="celery")
    consumer = t.consume("worker", "orders", 3010, 3020, producer, system="celery")
    consumer.attributes[attribute] = value
    for bad in forged:
        t.consume("worker", "orders", 3030, 3040, producer, system="celery").attributes[
            attribute] = bad  # fmt: skip
    db = write_store(tmp_path / "notes.db", t)

    code, out, err = run("trace", "order-43", "--store", str(db), "--format", "text")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "~ waited 3.00 s in queue celery orders" in line)
    assert lines[at + 1].split("~ ", 1) == [lines[at].split("~ ", 1)[0], said]  # right under it
    assert out.count(marker) == 1  # none for a forged value
    code, out, err = run(
        "trace", "order-43", "--store", str(db), "--format", "rich",
        env={"COLUMNS": "300", "NO_COLOR": "1"},
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert f"⏳ {said}" in out and out.count(marker) == 1


def test_each_attempt_of_a_retried_task_says_which_it_is(tmp_path: Path) -> None:
    """A Celery task retried twice: three spans "process celery (shop.charge)", each attempt
    a descendant of the one before. Which was the first and which a retry was left to the
    JSON's tracekit.retry_count; every view names the retries now."""
    t = Topology("order-44")
    api = t.span("api", "POST /orders", "SERVER", 0, 20)
    sender = api
    for attempt, start in enumerate((30, 1030, 2030)):
        publish = t.publish(sender, "celery", start - 25, start - 20, system="celery")
        ran = t.consume("worker", "celery", start, start + 10, publish, system="celery")
        ran.attributes["tracekit.celery.task_name"] = "shop.charge"
        if attempt:
            ran.attributes["tracekit.retry_count"] = attempt
        sender = ran
    db = write_store(tmp_path / "retries.db", t)

    for view in ("text", "rich"):
        code, out, err = run(
            "trace", "order-44", "--store", str(db), "--format", view,
            env={"COLUMNS": "200", "NO_COLOR": "1"},
        )  # fmt: skip
        assert (code, err) == (0, "")
        names = re.findall(r"process celery \(shop\.charge[^)]*\)", out)
        assert names == [
            "process celery (shop.charge)",
            "process celery (shop.charge, retry 1)",
            "process celery (shop.charge, retry 2)",
        ], view


def test_a_consumer_whose_clock_is_behind_its_publisher_shows_no_measured_wait(
    tmp_path: Path,
) -> None:
    """The worker's clock is 250 ms behind the API's and the API's span was sampled out: the
    wait the worker measured from the publish time came out below 0, which it records as 0.
    `trace` read "~ waited 0.0 ms in queue" as a wait; it shows none now, and says why."""
    t = Topology("order-43")
    t.span(
        "worker", "orders process", "CONSUMER", 0, 30, parent_span_id="00f067aa0ba902b7",
        attrs={"messaging.system": "rabbitmq", "messaging.destination.name": "orders",
               "tracekit.queue_wait_ms": 0.0,
               "tracekit.publish_time_unix_nano": T0 + 250_000_000},
    )  # fmt: skip
    db = write_store(tmp_path / "behind.db", t)

    code, out, err = run("trace", "order-43", "--store", str(db), "--format", "text")
    assert (code, err) == (0, "")
    assert "~ waited" not in out
    code, out, err = run("trace", "order-43", "--store", str(db), "--format", "json")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert code == 0
    assert [w for w in doc["warnings"] if "queue" in w] == [
        "worker 'orders process' (0000000000000001) measured no queue wait: its message's publish"
        " time is 250.0 ms after it began (its clock is behind the publisher's), and the"
        " producer's span is not here to place it"
    ]


def test_a_correlation_id_too_long_to_find_does_not_name_the_request(tmp_path: Path) -> None:
    """Spans whose ``correlation.id`` is longer than any ID a request can be found by (another
    SDK's, or a hostile client's, 5,000 characters; the store indexes at most 256, search lists
    such a request under '-' and `tracekit trace` refuses so long an ID): `trace <trace ID>`
    named the request by it, a heading of 5,008 characters and the JSON's ``correlation_id``.
    It is named as search names it, by its trace ID."""
    long_id = "C" * 5000
    t = Topology(long_id)
    entry = t.span("gateway", "GET /checkout", "SERVER", 0, 120)
    t.span("gateway", "POST", "CLIENT", 10, 100, entry)
    db = write_store(tmp_path / "long-id.db", t)

    code, out, err = run("trace", t.trace, "--store", str(db), "--format", "json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    jsonschema.validate(doc, load_schema())
    assert (doc["correlation_id"], doc["trace_ids"]) == (None, [t.trace])
    assert [span["attributes"]["correlation.id"] for span in doc["spans"]] == [long_id] * 2
    code, out, err = run("trace", t.trace, "--store", str(db), "--format", "text")
    assert (code, err, out.splitlines()[0]) == (0, "", f"request {t.trace}")
    code, out, err = run("search", "--store", str(db), "--format", "json")
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == [None]
