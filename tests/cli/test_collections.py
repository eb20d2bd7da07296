"""``trace`` and ``diff`` of a large request run the garbage collector rarely: at Python's
default (a collection every 700 allocations) it ran 681 times, 5 of them over every object, for
a path of 20,000 spans, a fifth of the command's CPU. The output is the same either way."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_700_000_000_000_000_000
SPANS = 10_000


def _request(trace: str, correlation_id: str) -> list[SpanRecord]:
    """A root calling 2,000 services in turn, each doing 3 steps (a pair of spans per call)."""
    spans = [SpanRecord(trace, f"{1:016x}", None, "gateway", "POST /bulk", "SERVER", T0,
                        T0 + 10**12, attributes={"correlation.id": correlation_id})]  # fmt: skip
    for n in range(2, SPANS + 1):
        parent = 1 if n % 5 == 2 else n - 1 - (n - 2) % 5 + (n % 5 == 3)
        spans.append(SpanRecord(trace, f"{n:016x}", f"{parent:016x}", f"svc-{n % 7}",
                                f"step {n % 5}", "INTERNAL", T0 + n * 10**6,
                                T0 + n * 10**6 + 5 * 10**5))  # fmt: skip
    return spans


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "tracekit.db"
    with Store(path) as s:
        s.write_spans(_request("ab" * 16, "req-a"))
        s.write_spans(_request("cd" * 16, "req-b"))
    return path


@pytest.fixture
def collections() -> Iterator[Counter[int]]:
    """How many collections of each generation run while the test does."""
    counted: Counter[int] = Counter()

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counted[info["generation"]] += 1

    gc.collect()  # every generation's count from 0: the same start whatever ran before
    gc.callbacks.append(count)
    yield counted
    gc.callbacks.remove(count)


@pytest.mark.parametrize("command", [["trace", "req-a"], ["diff", "req-a", "req-b"]])
@pytest.mark.parametrize("output_format", ["text", "json", "rich"])
def test_a_large_request_is_shown_with_few_collections(
    store: Path, collections: Counter[int], command: list[str], output_format: str
) -> None:
    thresholds = gc.get_threshold()
    args = [*command, "--store", str(store), "--format", output_format]
    result = CliRunner().invoke(cli, args)

    assert result.exit_code in (0, 1), result.output
    assert "step 4" in result.output or command[0] == "diff"
    assert collections[2] == 0, f"{collections[2]} full collections"
    assert collections[0] < SPANS / 100, f"{collections[0]} collections"
    assert gc.get_threshold() == thresholds  # the process's own setting, back
