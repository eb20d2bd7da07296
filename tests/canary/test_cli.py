"""`tracekit canary` over a real store: exit codes for gates, the views, the JSON document.

Spans are written with the store's own writer at fixed times, and every run names its window
with --start/--end, so the same command gives the same bytes.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from tracekit.canary import load_schema
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_700_000_000_000_000_000
WINDOW = ("--start", "2023-11-14T22:13:20+00:00", "--end", "2023-11-14T22:43:20+00:00")
_ids = iter(range(1, 10**9))


def requests(
    version: str | None, route: str | None, n: int, *, seed: int, scale: float = 1.0,
    errors: int = 0, ok: int = 200,
) -> list[SpanRecord]:  # fmt: skip
    """``n`` SERVER spans of ``route`` (None: matched no route), the first ``errors`` 500s."""
    rng = random.Random(seed)
    spans = []
    for i in range(n):
        number = next(_ids)
        start = T0 + rng.randrange(1_800 * 10**9)
        duration = int(0.05e9 * scale * rng.lognormvariate(0, 0.5))
        code = 500 if i < errors else ok
        routed = {} if route is None else {"http.route": route}
        spans.append(SpanRecord(
            f"{number:032x}", f"{number:016x}", None, "orders", f"GET {route or ''}".strip(),
            "SERVER", start, start + duration, status="ERROR" if code == 500 else "UNSET",
            attributes={**routed, "http.response.status_code": code},
            resource={"service.name": "orders"}, service_version=version,
        ))  # fmt: skip
    return spans


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Canaries of one baseline: same (1.1), slower (1.2), erroring (1.3), barely tried (1.4)."""
    path = tmp_path_factory.mktemp("canary") / "tracekit.db"
    spans = requests("1.0", "/orders/{id}", 400, seed=1)
    spans += requests("1.1", "/orders/{id}", 400, seed=2)
    spans += requests("1.2", "/orders/{id}", 400, seed=3, scale=1.5)
    spans += requests("1.3", "/orders/{id}", 400, seed=4, errors=12)
    spans += requests("1.4", "/orders/{id}", 30, seed=5)
    spans += requests("1.0", "/stock/\x1b[31m{sku}", 50, seed=6)  # a hostile route name
    spans += requests("1.5", "/stock/\x1b[31m{sku}", 50, seed=7, scale=1.05)
    with Store(path) as writer:
        writer.write_spans(spans)
    return path


def run(store: Path, canary: str, *args: str, baseline: str = "1.0") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["canary", "--service", "orders", "--baseline", baseline, "--canary", canary,
         "--store", str(store), *WINDOW, *args],
        env={"COLUMNS": "120"},
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "canary,verdict,code,strict",
    [("1.1", "pass", 0, 0), ("1.2", "fail", 1, 1), ("1.3", "fail", 1, 1),
     ("1.4", "inconclusive", 4, 1)],
)  # fmt: skip
def test_exit_status_follows_the_verdict_and_the_gate(
    store: Path, canary: str, verdict: str, code: int, strict: int
) -> None:
    normal = run(store, canary, "--route", "/orders/{id}", "--format", "json")
    gated = run(store, canary, "--route", "/orders/{id}", "--format", "json", "--gate", "strict")

    assert json.loads(normal[1])["verdict"] == verdict
    assert normal[0] == code
    assert gated[0] == strict


def test_a_marginal_canary_exits_3_and_1_under_a_strict_gate(store: Path) -> None:
    args = (
        "--route",
        "/orders/{id}",
        "--max-latency-increase",
        "70",
        "--max-tail-increase",
        "100",
        "--format",
        "json",
    )
    code, out, _ = run(store, "1.2", *args)
    strict, _, _ = run(store, "1.2", *args, "--gate", "strict")

    assert json.loads(out)["verdict"] == "marginal"  # 1.5x slower, 1.7x tolerated
    assert (code, strict) == (3, 1)


def test_the_json_document_follows_the_schema_and_repeats_byte_for_byte(store: Path) -> None:
    first = run(store, "1.3", "--format", "json")
    second = run(store, "1.3", "--format", "json")

    assert first == second
    document = json.loads(first[1])
    jsonschema.validate(document, load_schema())
    assert document["window"] == {
        "start_unix_nano": T0, "end_unix_nano": T0 + 1_800 * 10**9, "seconds": 1800.0,
    }  # fmt: skip
    assert document["baseline"] == {"version": "1.0", "requests": 450}
    assert document["canary"] == {"version": "1.3", "requests": 400}
    assert [(m["name"], m["class"]) for m in document["decided_by"]] == [("error_rate", "fail")]
    assert (
        "route '/stock/\\x1b[31m{sku}': only version 1.0 has requests (50)"
        in (document["warnings"])
    )


def test_text_view_gives_the_verdict_its_reasons_and_a_row_per_metric(store: Path) -> None:
    code, out, _ = run(store, "1.2", "--format", "text", "--route", "/orders/{id}")

    lines = out.splitlines()
    assert code == 1
    assert lines[:4] == [
        "canary orders: 1.2 against baseline 1.0 (store)",
        "window 2023-11-14 22:13:20 to 2023-11-14 22:43:20 UTC (30 min)",
        "requests: baseline 400, canary 400",
        "verdict: FAIL (score 33.3, exit 1)",
    ]
    assert lines[6].startswith("  - latency of /orders/{id}: typical request 1.4x (p50 ")
    header = next(i for i, line in enumerate(lines) if line.startswith("route "))
    metric, cls, values = (lines[header].index(name) for name in ("metric", "class", "baseline"))
    rows = lines[header + 1 : header + 4]
    assert [(row[:metric].strip(), row[metric:cls].strip(), row[cls:values].strip())
            for row in rows] == [
        ("/orders/{id}", "latency", "fail"), ("", "tail_latency", "fail"),
        ("", "error_rate*", "pass"),
    ]  # fmt: skip
    assert out.isascii()


def test_terminal_views_never_print_control_characters_from_route_names(store: Path) -> None:
    for view in ("text", "rich"):
        code, out, _ = run(store, "1.5", "--format", view, "--route", "/stock/\x1b[31m{sku}")

        assert code == 4  # 50 requests each: too few to decide
        assert "\x1b[31m{sku}" not in out
        assert "/stock/\ufffd[31m{sku}" in out


@pytest.mark.parametrize("view", ["text", "rich"])
def test_a_version_with_no_requests_draws_no_empty_table(store: Path, view: str) -> None:
    """``--canary 3.0`` that never ran: after the verdict and its reasons came the table's
    header with no row under it, and the legend of columns that were not there."""
    code, out, _ = run(store, "3.0", "--format", view)

    assert code == 4 and "INCONCLUSIVE" in out and "no requests of canary version 3.0" in out
    assert "effect (interval)" not in out and "Holm-corrected" not in out


def test_a_version_with_no_requests_names_the_versions_that_have_some(store: Path) -> None:
    """``--canary 1.1.0`` where the service's requests say ``1.1`` (or a misspelled service) only
    said "no requests of canary version 1.1.0 in the window", exit 4: nothing told the user
    which versions there are, nor that the service itself had no requests."""
    versions = "versions of orders with requests in the window: 1.0, 1.1, 1.2, 1.3, 1.4, 1.5"
    text = run(store, "1.1.0", "--format", "text")
    document = run(store, "1.1.0", "--format", "json")

    assert (text[0], document[0]) == (4, 4)
    assert f"warning: {versions}" in text[1]
    assert versions in json.loads(document[1])["warnings"]

    result = CliRunner().invoke(
        cli,
        ["canary", "--service", "order", "--baseline", "1.0", "--canary", "1.1",
         "--store", str(store), *WINDOW, "--format", "text"],
    )  # fmt: skip
    assert result.exit_code == 4
    assert "warning: no requests of service order in the window" in result.stdout

    # both versions have requests, on other routes: the route's own warning says so
    code, out, _ = run(store, "1.1", "--route", "/nowhere", "--format", "text")
    assert code == 4
    assert "warning: route '/nowhere': no requests of either version in the window" in out
    assert "versions of orders" not in out


def test_a_service_without_versions_is_told_to_set_them(tmp_path: Path) -> None:
    """Requests recorded without ``TRACEKIT_SERVICE_VERSION`` carry no version to compare."""
    path = tmp_path / "tracekit.db"
    with Store(path) as writer:
        writer.write_spans(requests(None, "/orders/{id}", 20, seed=1))

    code, out, _ = run(path, "1.1", "--format", "text")

    assert code == 4
    assert (
        "warning: versions of orders with requests in the window: (none: set"
        " TRACEKIT_SERVICE_VERSION)" in out
    )


def test_a_version_stored_with_a_newline_is_the_version_typed(tmp_path: Path) -> None:
    """Another SDK that reads its version from a VERSION file sends "1.1\\n". As found in
    review: ``--canary 1.1`` (a newline cannot be typed) said "no requests of canary version 1.1",
    exit 4, beside "versions of orders with requests in the window: 1.0, 1.1, 1.1"."""
    path = tmp_path / "tracekit.db"
    with Store(path) as writer:
        writer.write_spans(requests("1.0", "/orders/{id}", 400, seed=1))
        writer.write_spans(requests("1.1\n", "/orders/{id}", 200, seed=3, scale=1.5))
        writer.write_spans(requests(" 1.1", "/orders/{id}", 200, seed=4, scale=1.5))

    code, out, _ = run(path, "1.1", "--route", "/orders/{id}", "--format", "json")
    document = json.loads(out)

    assert (code, document["verdict"]) == (1, "fail")  # 1.5 times slower
    assert document["canary"] == {"version": "1.1", "requests": 400}
    versions = run(path, "2.0", "--format", "json")
    assert json.loads(versions[1])["warnings"][-1] == (
        "versions of orders with requests in the window: 1.0, 1.1"
    )


# One span of 1.2 edited by hand or by another tool (a store shared from an incident): each ended
# the canary with exit 2, "tracekit: could not convert string to float: 'x'", "internal error
# (TypeError: sequence item 274: expected str instance, bytes found)" or, listing the versions,
# "store ...: invalid literal for int() with base 10: 'x'". The span is left out (its duration is
# no integer, or it names no resource) or read as it is (its attributes decoded); the rest of the
# window is judged.
FIRST_OF_12 = (
    "id = (SELECT min(s.id) FROM spans s JOIN resources r ON r.id = s.resource_ref"
    " WHERE r.attributes LIKE '%\"1.2\"%')"
)
MISTYPED = {
    "duration-as-text": (f"UPDATE spans SET duration_ns = 'x' WHERE {FIRST_OF_12}", 399),
    "duration-as-blob": (f"UPDATE spans SET duration_ns = x'00' WHERE {FIRST_OF_12}", 399),
    "attributes-as-blob": (
        f"UPDATE spans SET attributes = CAST(attributes AS BLOB) WHERE {FIRST_OF_12}",
        400,
    ),
    "resource-ref-as-text": (f"UPDATE spans SET resource_ref = 'x' WHERE {FIRST_OF_12}", 399),
}


@pytest.mark.parametrize(("edit", "judged"), MISTYPED.values(), ids=MISTYPED.keys())
def test_a_mistyped_row_leaves_the_rest_of_the_window_judged(
    tmp_path: Path, store: Path, edit: str, judged: int
) -> None:
    path = tmp_path / "edited.db"
    path.write_bytes(store.read_bytes())
    with sqlite3.connect(path) as conn:
        assert conn.execute(edit).rowcount == 1

    code, out, err = run(path, "1.2", "--format", "json")
    versions = run(path, "2.0", "--format", "json")

    assert (code, err, json.loads(out)["verdict"]) == (1, "", "fail")  # 1.5 times slower
    assert json.loads(out)["canary"] == {"version": "1.2", "requests": judged}
    assert (versions[0], versions[2]) == (4, "")
    assert json.loads(versions[1])["warnings"][-1].startswith(
        "versions of orders with requests in the window: 1.0, 1.1, 1.2,"
    )


def test_usage_and_backend_errors_exit_2_with_one_line(tmp_path: Path, store: Path) -> None:
    versions = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    missing = CliRunner().invoke(cli, [*versions, "--store", str(tmp_path / "none.db")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith(f"tracekit: no tracekit store at {tmp_path / 'none.db'} yet: ")
    assert missing.stderr.count("\n") == 1

    both = run(store, "1.1", "--since", "30m")
    assert both[0] == 2 and "give --since or --start, not both" in both[2]

    backwards = CliRunner().invoke(cli, [*versions, "--start", "1h", "--end", "2h"])
    assert backwards.exit_code == 2 and "must start before it ends" in backwards.stderr

    # one version judged against itself would pass whatever it does
    itself = run(store, "1.0")
    assert itself[0] == 2 and "--baseline and --canary are the same version ('1.0')" in itself[2]


def test_a_since_after_the_end_says_what_to_type(store: Path) -> None:
    """``--since 30m --end 2h``: both count back from now, so the window would end before it
    starts; the line names the window meant (the 30 minutes before --end) as options that work.
    The installed command, whose usage errors are one line."""
    installed = str(Path(sys.executable).with_name("tracekit"))
    versions = [installed, "canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    versions += ["--store", str(store), "--format", "json"]

    def typing(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*versions, *args], capture_output=True, text=True, timeout=60)

    typed = typing("--since", "30m", "--end", "2h")
    assert (typed.returncode, typed.stdout, typed.stderr.count("\n")) == (2, "", 1)
    assert "--since 30m is not before --end 2h" in typed.stderr
    suggested = re.search(r"type (--start \S+ --end \S+)", typed.stderr)
    assert suggested is not None and suggested.group(1) == "--start 150m --end 2h"
    then = time.time()
    meant = typing(*suggested.group(1).split())
    window = json.loads(meant.stdout)["window"]
    assert meant.returncode == 4 and window["seconds"] == 1800  # no requests of that time
    assert abs(window["end_unix_nano"] / 1e9 - (then - 7200)) < 60


@pytest.mark.parametrize(
    ("since", "end", "meant", "seconds"),
    [
        ("1.5ms", "2ms", "for the 1.5ms before --end, type --start 3.5ms --end 2ms", 0.0015),
        ("0" * 300 + "30m", "2h", "for the 30m before --end, type --start 150m --end 2h", 1800),
    ],
)
def test_the_window_a_backwards_since_meant_is_named_exactly(
    store: Path, since: str, end: str, meant: str, seconds: float
) -> None:
    """The window suggested was named from the text typed: 1.5 ms before 2 ms was rounded to
    ``--start 4ms`` (a window of 2 ms), and a duration typed with 300 leading zeros was echoed
    whole, so the one-line error was cut before it said what to type."""
    installed = str(Path(sys.executable).with_name("tracekit"))
    versions = [installed, "canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    versions += ["--store", str(store), "--format", "json"]

    def typing(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*versions, *args], capture_output=True, text=True, timeout=60)

    typed = typing("--since", since, "--end", end)
    assert (typed.returncode, typed.stdout, typed.stderr.count("\n")) == (2, "", 1)
    assert meant in typed.stderr
    suggested = re.search(r"type (--start \S+ --end \S+)", typed.stderr)
    assert suggested is not None
    window = json.loads(typing(*suggested.group(1).split()).stdout)["window"]
    assert window["seconds"] == pytest.approx(seconds, abs=1e-6)  # (--since reads whole ns)


def test_a_since_of_no_length_is_not_given_a_window_to_type() -> None:
    """``--since 0s --end 1h``: a window of no length, read as the 0 seconds before --end, was
    suggested as ``--start 1h --end 1h``, which ends where it starts and is refused again."""
    versions = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    for typed in (["--since", "0s", "--end", "1h"], ["--since", "0.0ms", "--end", "2m"]):
        result = CliRunner().invoke(cli, [*versions, *typed])
        assert result.exit_code == 2
        assert f"--since {typed[1]} is not before --end {typed[3]}" in result.stderr
        assert "type --start" not in result.stderr


def test_a_start_after_the_end_says_to_type_them_the_other_way_round(store: Path) -> None:
    """``--start 2h --end 3h``: --start is a time, not a length. The line read it as one and
    said to type ``--start 5h --end 3h`` (two hours ending three hours ago); the window between
    the two times typed, ``--start 3h --end 2h``, is what it names now."""
    installed = str(Path(sys.executable).with_name("tracekit"))
    versions = [installed, "canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    versions += ["--store", str(store), "--format", "json"]
    typed = subprocess.run(
        [*versions, "--start", "2h", "--end", "3h"], capture_output=True, text=True, timeout=60
    )
    assert (typed.returncode, typed.stdout, typed.stderr.count("\n")) == (2, "", 1)
    suggested = re.search(r"type (--start \S+ --end \S+)", typed.stderr)
    assert suggested is not None and suggested.group(1) == "--start 3h --end 2h"


def test_an_empty_or_broken_source_is_one_line_not_the_default_store(store: Path) -> None:
    """``--prometheus "$PROM_URL"`` with the variable unset must not judge the default store."""
    versions = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    empty = "tracekit: --prometheus was given an empty value\n"
    for args, says in [
        (["--prometheus", ""], empty),
        (["--prometheus", " ", "--store", str(store)], empty),
        (["--store", ""], "tracekit: --store was given an empty value\n"),
        (["--prometheus", "http://[::1"],
         "tracekit: Prometheus URL is not valid: Invalid IPv6 URL\n"),
    ]:  # fmt: skip
        result = CliRunner().invoke(cli, [*versions, *args])
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", says)
    for backend in ("--tempo", "--jaeger", "--store"):
        result = CliRunner().invoke(cli, ["search", backend, ""])
        assert (result.exit_code, result.stderr) == (
            2,
            f"tracekit: {backend} was given an empty value\n",
        )


@pytest.mark.parametrize("route", ["", " "])
def test_an_empty_route_is_a_usage_error_not_an_inconclusive_verdict(
    store: Path, route: str
) -> None:
    """``--route "$ROUTE"`` with the variable unset judged a route named '': inconclusive, exit 4
    (1 under ``--gate strict``), "no route has requests of both versions in the window", for a
    canary 1.5 times slower on the 400 requests of each version; it is refused, exit 2."""
    code, out, err = run(store, "1.2", "--route", route, "--format", "json")

    assert (code, out) == (2, "")
    assert "Invalid value for '--route'" in err


def test_a_route_typed_with_white_space_around_it_is_the_route(store: Path) -> None:
    """As a version is: a value from an env file keeps its newline."""
    code, out, _ = run(store, "1.2", "--route", "/orders/{id}\n", "--format", "json")

    assert (code, json.loads(out)["verdict"]) == (1, "fail")


@pytest.fixture(scope="module")
def outside_routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both versions serve /orders/{id} alike. Canary 2.1 also fails 400 requests before any
    route matched them (middleware raising ahead of the router); canary 2.2 no longer serves the
    baseline's /pay: those requests now answer 404, matching no route."""
    path = tmp_path_factory.mktemp("canary-outside-routes") / "tracekit.db"
    spans = requests("2.0", "/orders/{id}", 400, seed=1) + requests("2.0", "/pay", 400, seed=2)
    spans += requests("2.1", "/orders/{id}", 400, seed=3) + requests("2.1", "/pay", 400, seed=4)
    spans += requests("2.1", None, 400, seed=5, errors=400)
    spans += requests("2.2", "/orders/{id}", 400, seed=6) + requests(
        "2.2", None, 400, seed=7, ok=404
    )
    with Store(path) as writer:
        writer.write_spans(spans)
    return path


def test_failures_outside_any_route_fail_the_canary(outside_routes: Path) -> None:
    code, out, _ = run(
        outside_routes, "2.1", "--gate", "strict", "--format", "json", baseline="2.0"
    )

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    (unrouted,) = [m for m in document["metrics"] if m["route"] == "_unmatched"]
    assert unrouted["name"] == "error_rate"  # their latencies are not compared
    assert unrouted["n"] == {"baseline": 800, "canary": 1200}  # among every request
    assert (unrouted["summary"]["baseline"]["errors"], unrouted["summary"]["canary"]["errors"]) == (
        0, 400,
    )  # fmt: skip
    assert unrouted["class"] == "fail"
    assert "failed outside any route" in unrouted["explanation"]
    assert (document["verdict"], code) == ("fail", 1)


def test_a_route_the_canary_stopped_serving_does_not_pass(outside_routes: Path) -> None:
    code, out, _ = run(outside_routes, "2.2", "--format", "json", baseline="2.0")
    strict, _, _ = run(
        outside_routes, "2.2", "--gate", "strict", "--format", "json", baseline="2.0"
    )

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    pay = [m for m in document["metrics"] if m["route"] == "/pay"]
    assert [m["class"] for m in pay] == ["inconclusive"] * 3
    assert all(m["n"] == {"baseline": 400, "canary": 0} for m in pay)
    assert all(m["more_requests_needed"] is None for m in pay)
    assert "a route the canary stopped serving cannot pass" in document["reasons"][0]
    assert (document["verdict"], code, strict) == ("inconclusive", 4, 1)


@pytest.fixture(scope="module")
def failing_routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both versions serve /orders/{id} alike. Baseline 3.0 fails every /checkout and canary
    3.1 serves them all (a fix); canary 3.2 fails every /pay."""
    path = tmp_path_factory.mktemp("canary-failing-routes") / "tracekit.db"
    spans = requests("3.0", "/orders/{id}", 400, seed=1)
    spans += requests("3.0", "/checkout", 100, seed=2, errors=100)
    spans += requests("3.0", "/pay", 400, seed=3)
    spans += requests("3.1", "/orders/{id}", 400, seed=4)
    spans += requests("3.1", "/checkout", 100, seed=5)
    spans += requests("3.1", "/pay", 400, seed=8)
    spans += requests("3.2", "/orders/{id}", 400, seed=6)
    spans += requests("3.2", "/pay", 100, seed=7, errors=100)
    with Store(path) as writer:
        writer.write_spans(spans)
    return path


def test_a_canary_that_fixes_a_route_the_baseline_always_failed_can_pass(
    failing_routes: Path,
) -> None:
    """No baseline request of /checkout succeeded: there is no latency to be slower than (as
    for a new endpoint), and "more requests" would never time one."""
    code, out, _ = run(failing_routes, "3.1", "--format", "json", baseline="3.0")

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    checkout = [m for m in document["metrics"] if m["route"] == "/checkout"]
    assert [(m["name"], m["class"]) for m in checkout] == [("error_rate", "pass")]
    assert document["warnings"] == [
        "route '/checkout': none of version 3.0's 100 requests succeeded; only its errors are"
        " compared"
    ]
    assert (document["verdict"], code) == ("pass", 0)


def test_a_route_the_canary_always_fails_promises_no_more_requests_to_time_it(
    failing_routes: Path,
) -> None:
    code, out, _ = run(failing_routes, "3.2", "--format", "json", baseline="3.0")

    document = json.loads(out)
    timed = [m for m in document["metrics"] if m["route"] == "/pay" and m["name"] != "error_rate"]
    assert [m["class"] for m in timed] == ["inconclusive"] * 2
    assert all(m["more_requests_needed"] is None for m in timed)
    assert all(
        m["explanation"] == "none of the canary's 100 requests succeeded: nothing to time"
        " (its failures are judged by the error rate)"
        for m in timed
    )
    assert (document["verdict"], code) == ("fail", 1)


def test_naming_a_critical_metric_keeps_error_rate_critical(tmp_path: Path) -> None:
    """Two routes; the canary fails 40 of /a's 400 requests: error rate fails the verdict."""
    path = tmp_path / "tracekit.db"
    spans = requests("3.0", "/a", 400, seed=1) + requests("3.0", "/b", 400, seed=2)
    spans += requests("3.1", "/a", 400, seed=3, errors=40) + requests("3.1", "/b", 400, seed=4)
    with Store(path) as writer:
        writer.write_spans(spans)

    default = run(path, "3.1", "--format", "json", baseline="3.0")
    named = run(path, "3.1", "--critical", "latency", "--format", "json", baseline="3.0")

    for code, out, _ in (default, named):
        document = json.loads(out)
        assert document["decided_by"] == [
            {"name": "error_rate", "route": "/a", "kind": "http", "class": "fail"}
        ]
        assert (document["verdict"], document["score"], code) == ("fail", 0.0, 1)
    assert json.loads(named[1])["settings"]["critical"] == ["error_rate", "latency"]


def test_end_alone_judges_the_thirty_minutes_before_it(store: Path) -> None:
    versions = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
    args = [*versions, "--store", str(store), "--end", WINDOW[3], "--format", "json"]
    alone = CliRunner().invoke(cli, args)
    assert alone.exit_code == 4, alone.stderr  # 1.1 serves no /stock: inconclusive, not a pass
    assert json.loads(alone.stdout) == json.loads(run(store, "1.1", "--format", "json")[1])


def test_the_installed_command_exits_with_the_verdict(store: Path) -> None:
    """The console script itself, as a pipeline step runs it."""
    command = [sys.executable, "-m", "tracekit_cli", "canary", "--service", "orders",
               "--baseline", "1.0", "--canary", "1.3", "--store", str(store), *WINDOW]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert finished.returncode == 1
    assert finished.stderr == ""
    assert "verdict: FAIL" in finished.stdout


def test_without_numpy_the_command_names_the_extra(store: Path) -> None:
    """Installed without the ``canary`` extra: one line naming it, exit 2, no traceback."""
    script = (
        "import sys; sys.modules['numpy'] = None\n"  # what a missing package looks like
        "from tracekit_cli.main import main\n"
        f"sys.argv = ['tracekit', 'canary', '--service', 'orders', '--baseline', '1.0',"
        f" '--canary', '1.1', '--store', {str(store)!r}]\n"
        "main()\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    assert finished.returncode == 2
    assert (
        finished.stderr == "tracekit: tracekit canary needs numpy: pip install 'tracekit[canary]'\n"
    )


def test_a_ratio_of_hundreds_reads_as_a_number(tmp_path: Path) -> None:
    path = tmp_path / "slow.db"
    with Store(path) as writer:
        writer.write_spans(requests("1.0", "/orders/{id}", 100, seed=8)
                           + requests("9.9", "/orders/{id}", 100, seed=9, scale=150))  # fmt: skip
    code, out, _ = run(path, "9.9", "--format", "text")
    row = next(line for line in out.splitlines() if line.lstrip().startswith("/orders"))
    assert code == 1
    assert re.search(r" 1\d\dx \(1\d\d\.\.1\d\d\)", row), row


@pytest.fixture(scope="module")
def two_routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's shape: /products/{product_id} alike in both versions, /search twice as slow."""
    path = tmp_path_factory.mktemp("routes") / "tracekit.db"
    spans = requests("1.0", "/products/{product_id}", 400, seed=10)
    spans += requests("1.1", "/products/{product_id}", 400, seed=11)
    spans += requests("1.0", "/search", 400, seed=12)
    spans += requests("1.1", "/search", 400, seed=13, scale=2)
    with Store(path) as writer:
        writer.write_spans(spans)
    return path


def view_at(store: Path, view: str, columns: int) -> str:
    args = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1",
            "--store", str(store), *WINDOW, "--format", view]  # fmt: skip
    result = CliRunner().invoke(cli, args, env={"COLUMNS": str(columns), "NO_COLOR": "1"})
    assert result.exit_code == 1, result.stderr
    return result.stdout


def words(view: str) -> list[str]:
    """What a reader reads, without the table's rules and borders."""
    return re.sub("[\u2500-\u257f]", " ", view).split()


@pytest.mark.parametrize("view", ["text", "rich"])
@pytest.mark.parametrize("columns", [80, 40])
def test_a_narrow_terminal_keeps_every_header_route_and_number_whole(
    two_routes: Path, view: str, columns: int
) -> None:
    """On 80 columns and down to 40 the views read as on a wide terminal, word for word in the
    same order (each route ahead of its rows, '7.9e-60' not '7'), on lines that fit."""
    wide = view_at(two_routes, view, 400)
    narrow = view_at(two_routes, view, columns)

    assert "adj. p" in wide and "/products/{product_id}" in wide and "e-" in wide
    assert max(len(line) for line in narrow.splitlines()) <= columns
    assert words(narrow) == words(wide)
    for route in ("/products/{product_id}", "/search"):
        assert sum(line.strip() == route for line in narrow.splitlines()) == 1, narrow


def test_the_rich_view_wraps_a_reason_under_itself_as_the_text_view_does(two_routes: Path) -> None:
    """At 40 columns the rich view continued a reason at the margin, where it read as the next
    reason (or a line of the header); the text view indents it under the reason."""

    def reasons(view: str) -> list[str]:
        lines = view.splitlines()
        start = lines.index("because:")
        return lines[start : lines.index("", start)]

    rich, text = reasons(view_at(two_routes, "rich", 40)), reasons(view_at(two_routes, "text", 40))
    assert rich == text
    assert all(line == "because:" or line.startswith(("  - ", "      ")) for line in rich)


def test_the_rich_table_folds_a_route_it_has_little_room_for(two_routes: Path) -> None:
    """At 100 columns (the demo's) the table is drawn with the route folded onto a second
    line, every character kept, the other columns whole."""
    out = view_at(two_routes, "rich", 100)
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("━"))
    body = lines[rule + 1 : next(i for i, line in enumerate(lines) if line.startswith("latency:"))]
    cells = [[cell.strip() for cell in line.split("│")] for line in body]

    assert [cell.strip() for cell in lines[rule - 1].split("┃")] == [
        "route", "metric", "class", "baseline -> canary", "effect (interval)", "adj. p",
    ]  # fmt: skip
    assert "".join(row[0] for row in cells[:2]) == "/products/{product_id}"
    assert [row[1] for row in cells] == ["latency", "", "tail_latency", "error_rate*",
                                         "latency", "tail_latency", "error_rate*"]  # fmt: skip
    assert max(len(line) for line in lines) <= 100
    wide = view_at(two_routes, "text", 400).splitlines()
    header = next(i for i, line in enumerate(wide) if line.startswith("route "))
    assert [row[1:] for row in cells if row[1]] == [
        re.split(r"\s{2,}", line.strip())[-5:] for line in wide[header + 1 : header + 7]
    ]


def test_a_route_asked_for_that_only_the_canary_serves_counts_as_its_metric_does(
    outside_routes: Path,
) -> None:
    """``--route _unmatched`` where only canary 2.1 has such requests: its one check counts its
    failures among every request of each version (its ``n``), and the header said 0 baseline
    requests and the canary's 400 unrouted ones, as if nothing else had been counted."""
    code, out, _ = run(
        outside_routes, "2.1", "--route", "_unmatched", "--format", "json", baseline="2.0"
    )

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    (unrouted,) = document["metrics"]
    assert unrouted["n"] == {"baseline": 800, "canary": 1200}
    assert (document["baseline"]["requests"], document["canary"]["requests"]) == (800, 1200)
    assert (document["verdict"], code) == ("fail", 1)


@pytest.mark.parametrize("view", ["text", "rich"])
@pytest.mark.parametrize("columns", [60, 40])
def test_a_route_in_wide_characters_keeps_to_the_terminal(
    tmp_path: Path, view: str, columns: int
) -> None:
    """A route in Japanese takes two columns a character: wrapped by counting characters, its
    reasons and rows ran past a 40-column terminal (the text view to 80 columns; rich broke
    them again itself, continuations at the margin), and the narrow table's columns drifted
    apart. Each line now keeps to the width, every word of the wide view kept, in order."""
    from rich.cells import cell_len

    path = tmp_path / "wide.db"
    route = "/注文/{注文番号}/明細/再計算"
    with Store(path) as writer:
        writer.write_spans(requests("1.0", route, 400, seed=20)
                           + requests("1.1", route, 400, seed=21, scale=2))  # fmt: skip
    wide, narrow = view_at(path, view, 400), view_at(path, view, columns)

    assert max(cell_len(line) for line in narrow.splitlines()) <= columns, narrow
    assert "".join(words(narrow)) == "".join(words(wide))
    lines = narrow.splitlines()
    reasons = lines[lines.index("because:") + 1 : lines.index("", lines.index("because:"))]
    assert all(line.startswith(("  - ", "      ")) for line in reasons), reasons


def legend(view: str) -> list[str]:
    lines = view.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("latency: p50")) :]


@pytest.mark.parametrize("view", ["text", "rich"])
def test_the_legend_wraps_between_its_items(two_routes: Path, view: str) -> None:
    """At 80 columns the legend broke "adj. p:" from what it means, and the rich view went on
    at the margin after a trailing space ("adj. p: " / "Holm-corrected, ..."); at 40 it left
    the "*" of "* critical" alone at a line's end. It now wraps between its items, indented."""
    assert legend(view_at(two_routes, view, 80)) == [
        "latency: p50, tail_latency: p95; * critical; intervals 90%;",
        "      adj. p: Holm-corrected, one-sided (canary worse)",
    ]
    narrow = legend(view_at(two_routes, view, 40))
    assert narrow == legend(view_at(two_routes, "text", 40))
    assert any("* critical;" in line for line in narrow), narrow
    assert all(line == line.rstrip() and len(line) <= 40 for line in narrow), narrow
    assert all(line.startswith("      ") for line in narrow[1:]), narrow


@pytest.mark.parametrize("view", ["text", "rich"])
@pytest.mark.parametrize("columns", [30, 20])
def test_under_40_columns_the_view_is_drawn_for_the_terminal(
    two_routes: Path, view: str, columns: int
) -> None:
    """Under 40 columns the view was drawn for 40 all the same, and the terminal broke each of
    its lines in two (`trace`, `search` and `services` lay out down to 20). Drawn for the
    width, a cell alone on its line wider than the line ('21.8 ms -> 43.6 ms', '2.00x
    (1.9..2.1)') wraps under itself; a route longer than the line folds. Every character of
    the wide view is there, in its order."""
    wide = view_at(two_routes, view, 400)
    narrow = view_at(two_routes, view, columns)

    assert max(len(line) for line in narrow.splitlines()) <= columns
    assert "".join(words(narrow)) == "".join(words(wide))
    lines = narrow.splitlines()
    at = lines.index("/search")
    block = lines[at + 1 : next(i for i in range(at, len(lines)) if "tail_latency" in lines[i])]
    assert " ".join(" ".join(block).split()).startswith("latency fail ")  # under its route
    assert all(line.startswith("  ") for line in block), block
    values = next(line for line in block if " ms ->" in line)
    assert values.startswith("    ") and len(values) - len(values.lstrip()) == 4, block


def test_a_new_route_failing_every_one_of_its_few_requests_fails_the_gate(tmp_path: Path) -> None:
    """Canary 4.1 fails all 3 requests of a new endpoint beside 3,000 healthy ones: 0.1% of its
    requests, within the 1 pp tolerance, and the command passed, exit 0, under --gate strict
    too. Judged on its own requests, against the baseline's none failed of 3,000, it fails."""
    path = tmp_path / "tracekit.db"
    spans = requests("4.0", "/orders/{id}", 3000, seed=1)
    spans += requests("4.1", "/orders/{id}", 3000, seed=2)
    spans += requests("4.1", "/refunds/{id}", 3, seed=3, errors=3)
    with Store(path) as writer:
        writer.write_spans(spans)

    code, out, _ = run(path, "4.1", "--format", "json", baseline="4.0")
    strict, text, _ = run(path, "4.1", "--gate", "strict", "--format", "text", baseline="4.0")

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    (refunds,) = [m for m in document["metrics"] if m["route"] == "/refunds/{id}"]
    assert (refunds["name"], refunds["class"], refunds["n"]) == (
        "error_rate", "fail", {"baseline": 3000, "canary": 3},
    )  # fmt: skip
    assert (document["verdict"], code, strict) == ("fail", 1, 1)
    assert "verdict: FAIL" in text
    assert "of its own requests: as a share of all requests they would hide under" in " ".join(
        text.split()
    )
