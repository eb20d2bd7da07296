"""Every example line of a command's ``--help`` runs as written. The help of trace, search,
services, diff and canary showed options only: a newcomer had to find the form of a first
command in docs/cli.md. The lines are run by the real ``tracekit`` command against the store of
the README's first service ("shop", real uvicorn, versions 1.4 and 1.5), which
``TRACEKIT_STORE`` names, as a reader's environment would after that walk-through."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from shop import start_shop
from stored import stored_path

from tracekit_cli.main import COMMANDS, cli

APP = Path(__file__).resolve().parent / "apps" / "first_shop.py"
TRACEKIT = str(Path(sys.executable).parent / "tracekit")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the one trace ID the examples name
# what each command's exit status may be when it ran: found, or a verdict or a difference
RAN = {"trace": {0}, "search": {0}, "services": {0}, "diff": {0, 1}, "canary": {0, 1, 3, 4}}
# the collector serves until stopped and the demo starts eight services: their help has none
WITHOUT_EXAMPLES = {"collector", "demo"}


def examples(name: str) -> list[str]:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    epilog = command.epilog or ""
    return [line.strip() for line in epilog.splitlines() if line.startswith("  tracekit ")]


def test_every_reading_command_shows_examples_of_its_own() -> None:
    shown = {name: examples(name) for name in COMMANDS}
    assert {name for name, lines in shown.items() if not lines} == WITHOUT_EXAMPLES
    assert all(line.startswith(f"tracekit {n} ") or line == f"tracekit {n}"
               for n, lines in shown.items() for line in lines)  # fmt: skip
    too_wide = [line for lines in shown.values() for line in lines if len(line) > 80 - 4]
    assert not too_wide, f"wider than an 80-column terminal, as --help indents them: {too_wide}"
    help_text = subprocess.run([TRACEKIT, "trace", "--help"], capture_output=True, text=True)
    assert "\n  Examples:\n    tracekit trace first-order-7\n" in help_text.stdout


@pytest.fixture(scope="module")
def first_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The store of two versions of the README's shop, about 25 requests each: first-order-7
    on 1.4, first-order-8 on 1.5, one in the trace TRACE_ID, one failed, one slow."""
    store = tmp_path_factory.mktemp("first") / "tracekit.db"
    with pytest.MonkeyPatch.context() as patch:  # the shops' environment, not this process's
        for name, value in {"TRACEKIT_STORE": str(store), "OTEL_BSP_SCHEDULE_DELAY": "100",
                            "OTEL_BLRP_SCHEDULE_DELAY": "100"}.items():  # fmt: skip
            patch.setenv(name, value)
        shops = [start_shop(APP, version) for version in ("1.4", "1.5")]
    try:
        for shop in shops:
            shop.wait_up()
        with httpx.Client(timeout=10) as client:
            old, new = (shop.url for shop in shops)
            client.get(f"{old}/orders/7", headers={"X-Correlation-ID": "first-order-7"})
            client.get(f"{new}/orders/8", headers={"X-Correlation-ID": "first-order-8"})
            client.get(f"{new}/orders/9",
                       headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})  # fmt: skip
            for order in [*range(20, 42), 13, 500]:
                for shop in shops:
                    client.get(f"{shop.url}/orders/{order}")
        for correlation_id in ("first-order-7", "first-order-8"):
            stored_path(store, correlation_id)
    finally:
        for shop in shops:
            shop.stop()
    yield store


@pytest.mark.parametrize(
    "line", [line for name in sorted(COMMANDS) for line in examples(name)]
)  # fmt: skip
def test_each_example_runs_as_written(first_store: Path, line: str) -> None:
    name = shlex.split(line)[1]
    done = subprocess.run(
        [TRACEKIT, *shlex.split(line)[1:]], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TRACEKIT_STORE": str(first_store), "COLUMNS": "100"},
    )  # fmt: skip
    assert done.returncode in RAN[name], (done.returncode, done.stderr)
    assert done.stdout.strip() and "Usage" not in done.stderr and "Invalid" not in done.stderr
    if name == "trace":  # the request itself, in the text view or the JSON document
        shown = json.loads(done.stdout)["services"] if "json" in line else done.stdout
        assert "shop" in shown and "GET /orders/{order_id}" in done.stdout
