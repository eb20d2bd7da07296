"""`tracekit trace --max-spans`: a huge request shows its first part and says so, quickly.

A request of more spans than the limit (default 50,000) is cut to the earliest spans by start
time; the store is asked for no more than that, so the cost follows the limit, not the request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology

from tracekit.path import MAX_SPANS, reconstruct
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

SPANS = 300


def wide_request(correlation_id: str = "req-wide") -> Topology:
    t = Topology(correlation_id)
    root = t.span("gateway", "POST /bulk", "SERVER", 0, 10_000)
    for i in range(SPANS - 1):
        t.span(f"svc-{i % 7}", f"step {i}", "INTERNAL", 1 + 10 * i, 5 + 10 * i, root)
    return t


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wide") / "tracekit.db"
    with Store(path) as s:
        s.write_spans(wide_request().spans)
    return path


def trace(store: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["trace", "req-wide", "--store", str(store), *args])
    return result.exit_code, result.stdout, result.stderr


def test_over_the_limit_shows_the_earliest_spans_and_a_note(store: Path) -> None:
    code, out, err = trace(store, "--max-spans", "100", "--format", "json")
    doc = json.loads(out)
    assert (code, err) == (0, "")
    assert len(doc["spans"]) == 100
    starts = sorted(s["start_unix_nano"] for s in doc["spans"])
    assert starts[-1] < min(s.start_unix_nano for s in wide_request().spans[100:])
    assert doc["warnings"] == ["more than 100 spans: showing the first 100 by start time"]
    code, out, _ = trace(store, "--max-spans", "100", "--format", "text")
    assert code == 0 and "more than 100 spans: showing the first 100 by start time" in out


def test_at_or_under_the_limit_nothing_is_cut(store: Path) -> None:
    for args in (["--max-spans", str(SPANS)], []):
        code, out, _ = trace(store, *args, "--format", "json")
        doc = json.loads(out)
        assert code == 0 and len(doc["spans"]) == SPANS and doc["warnings"] == []
    assert MAX_SPANS == 50_000


def test_a_bad_limit_is_a_usage_error(store: Path) -> None:
    code, _, err = trace(store, "--max-spans", "0")
    assert code == 2 and "--max-spans" in err


@pytest.mark.parametrize("limit", ["9223372036854775807", "100000000000000000000000"])
def test_a_huge_limit_is_a_usage_error_not_an_internal_one(store: Path, limit: str) -> None:
    """`--max-spans 99999999999999999999999` (meaning "all of them") reached SQLite's LIMIT and
    ended in `internal error (OverflowError: Python int too large to convert to SQLite
    INTEGER)`; it is now refused as out of range, like `--limit` of search."""
    code, out, err = trace(store, "--max-spans", limit)
    assert (code, out) == (2, "")
    assert f"Invalid value for '--max-spans': {limit} is not in the range 1<=x<=10000000" in err


class CountingStore(Store):
    """The real store, counting the span records its reads return."""

    read: list[int]

    def first_spans_by_trace_ids(self, trace_ids: Iterable[str], limit: int) -> list[SpanRecord]:
        spans = super().first_spans_by_trace_ids(trace_ids, limit)
        self.read.append(len(spans))
        return spans

    def spans_by_trace_ids(self, trace_ids: Iterable[str]) -> list[SpanRecord]:
        raise AssertionError("the engine read a whole trace from a store that can stop early")

    def spans_by_correlation_id(self, correlation_id: str) -> list[SpanRecord]:
        raise AssertionError("the engine decoded spans only to find their traces")


@pytest.mark.parametrize("query", ["req-wide", "trace id"])
def test_the_store_read_is_bounded_not_only_the_rendering(store: Path, query: str) -> None:
    source = CountingStore(store)
    source.read = []
    if query == "trace id":
        query = wide_request().spans[0].trace_id
    path = reconstruct(source, query, max_spans=50)
    assert path is not None and len(path.spans) == 50
    assert source.read and max(source.read) <= 51
