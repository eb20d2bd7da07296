"""``--since``, ``--start`` and ``--end`` out of range, or in units tracekit does not take: a usage
error (exit 2, one line), never a traceback or the "not found" exit 1. The installed ``tracekit``
runs over a real store, empty or holding the requests of ``trace_topologies``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import write_store

from tracekit.store import Store
from tracekit_cli.options import parse_since

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
CANARY = ["canary", "--service", "s", "--baseline", "a", "--canary", "b"]
DIFF_SETS = ["diff", "--service", "s", "--a", "k=v", "--b", "k=w"]
# past 2262-04-11 (signed 64-bit nanoseconds), before 1677-09-22 (a canary's default start, 30
# minutes before such an --end, overflowed them), before year 1 in local time, and 274 million
# years ago (a duration within reach of float, not of the store's integers)
OUT_OF_RANGE = [
    "9999-12-31",
    "2262-04-12",
    "1677-09-21T00:20:00+00:00",
    "1677-09-21T23:59:59+00:00",
    "0001-01-01",
    "0001-01-01T00:00+00:00",
    "99999999999d",
    "9" * 400 + "d",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("times") / "tracekit.db"
    Store(path).create()
    return path


def tracekit(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TRACEKIT_STORE"} | {"TZ": "UTC"}
    return subprocess.run(
        [TRACEKIT, *args], capture_output=True, text=True, timeout=60, env=environ
    )


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["search"], "--since"),
        (["services"], "--since"),
        (DIFF_SETS, "--since"),
        (CANARY, "--since"),
        (CANARY, "--start"),
        (CANARY, "--end"),
    ],
)
def test_a_time_out_of_range_is_a_usage_error(
    store: Path, command: list[str], option: str, value: str
) -> None:
    done = tracekit(*command, "--store", str(store), option, value)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr[-500:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"tracekit: Invalid value for '{option}': ")
    assert "is out of range: times from 1677-09-22 to 2262-04-11" in done.stderr


@pytest.mark.parametrize("value", ["1800-01-01", "2262-04-10", "100000d"])
def test_times_inside_the_range_still_search(store: Path, value: str) -> None:
    done = tracekit("search", "--store", str(store), "--since", value)
    assert (done.returncode, done.stderr) == (1, "tracekit: no requests match\n")


def test_an_iso_window_is_exact_to_the_nanosecond(store: Path) -> None:
    """A float holds unix nanoseconds only to 256 ns: ``.003`` became ``...003000064``, so a
    request starting exactly at ``--start`` was left out of the window, and ``--end``'s
    exclusive bound let one in."""
    done = tracekit(
        *CANARY,
        "--store",
        str(store),
        "--format",
        "json",
        "--start",
        "2023-11-14T22:13:20.003+00:00",
        "--end",
        "2023-11-14T23:13:20.000001",
    )  # fmt: skip  (TZ=UTC: local is UTC)
    window = json.loads(done.stdout)["window"]
    assert window["start_unix_nano"] == 1_700_000_000_003_000_000
    assert window["end_unix_nano"] == 1_700_003_600_000_001_000
    before = tracekit(*CANARY, "--store", str(store), "--format", "json",
                      "--start", "1969-12-31T23:59:59.999999+00:00", "--end", "1h")  # fmt: skip
    assert json.loads(before.stdout)["window"]["start_unix_nano"] == -1_000


@pytest.fixture(scope="module")
def requests_of_2023(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("times") / "tracekit.db")


@pytest.mark.parametrize("value", ["520w", "10y"])
def test_durations_take_prometheus_weeks_and_years(requests_of_2023: Path, value: str) -> None:
    """``--since 1w`` was a usage error (exit 2): only ms, s, m, h and d were taken."""
    done = tracekit("search", "--store", str(requests_of_2023), "--since", value, "--format",
                    "json")  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    listed = [r["correlation_id"] for r in json.loads(done.stdout)["requests"]]
    assert listed == ["req-checkout-1", "req-incident-9"]


@pytest.mark.parametrize(("value", "seconds"), [("1w", 7 * 86400), ("2y", 2 * 365 * 86400)])
def test_a_week_and_a_year_are_prometheus_ones(value: str, seconds: int) -> None:
    assert parse_since(value, now=2_000_000_000) == (2_000_000_000 - seconds) * 10**9


@pytest.mark.parametrize("value", ["15min", "15M", "1W", "1mo", "now-15m"])
def test_an_ambiguous_duration_is_refused_naming_the_units(store: Path, value: str) -> None:
    """``15min`` and ``15M`` (minutes or months?) stay refused, and the line names the units."""
    done = tracekit("search", "--store", str(store), "--since", value)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: Invalid value for '--since': '{value}': use a duration like 15m, 2h, 7d"
        " (units ms, s, m, h, d, w, y; it counts back from now) or an ISO 8601 time"
        " (see 'tracekit search --help')\n"
    )
