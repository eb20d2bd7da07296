"""`tracekit demo`'s canary step: two real versions of a service, the canary slower on /search.

The step starts both versions as processes (Starlette under uvicorn, tracekit writing spans into
a store), sends them real HTTP traffic, and prints the verdict with its reasons; the command it
suggests must reach the same verdict from the same store.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from tracekit_cli.demo.canary import (
    BASELINE,
    CANARY,
    REQUESTS_PER_ROUTE,
    SERVICE,
    canary_store,
    run_canary_step,
)
from tracekit_cli.main import cli


def test_the_slower_canary_fails_with_its_reasons(tmp_path: Path) -> None:
    demo_store = tmp_path / "tracekit.db"
    screen = io.StringIO()
    console = Console(file=screen, width=80, no_color=True, highlight=False)

    verdict = run_canary_step(console, demo_store)

    out = screen.getvalue()
    classes = {(r.check.metric, r.check.key.route): r.classification for r in verdict.metrics}
    assert verdict.verdict == "fail"
    assert verdict.baseline_requests == verdict.canary_requests == 2 * REQUESTS_PER_ROUTE
    assert classes[("latency", "/search")] == "fail"
    assert [classes[(m, "/products/{product_id}")] for m in ("latency", "error_rate")] == [
        "pass", "pass",
    ]  # fmt: skip
    assert ("latency", "/search") in {
        (r.check.metric, r.check.key.route) for r in verdict.decided_by
    }
    assert "verdict: FAIL" in out
    assert "  - latency of /search: typical request " in out
    assert not demo_store.exists(), "the demo's own store keeps only the checkouts"

    # the suggested command, pasted as printed (one line, however narrow the terminal)
    (command,) = [line.strip() for line in out.splitlines() if " canary --service " in line]
    assert command.endswith(
        f"tracekit canary --service {SERVICE} --baseline {BASELINE} --canary {CANARY}"
        f" --since 10m --store {canary_store(demo_store)}"
    )
    result = subprocess.run(
        ["bash", "-c", f"{command} --format json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["verdict"] == "fail"


def test_the_demo_can_skip_the_step() -> None:
    result = CliRunner().invoke(cli, ["demo", "--help"])

    assert "--canary / --no-canary" in result.output
