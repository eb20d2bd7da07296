"""`tracekit demo`'s canary step: two real versions of a service, the canary slower on /search.

The step starts both versions as processes (Starlette under uvicorn, tracekit writing spans into
a store), sends them real HTTP traffic, and prints the verdict with its reasons; the command it
suggests must reach the same verdict from the same store.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import socket
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from tracekit.canary import to_json
from tracekit_cli.demo import canary as canary_module
from tracekit_cli.demo.canary import (
    BASELINE,
    CANARY,
    REQUESTS_PER_ROUTE,
    SERVICE,
    _show_command,
    canary_store,
    deployed,
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
    assert "The same from the command line (exit status 1: fail):" in out
    assert "  - latency of /search: typical request " in out
    assert not demo_store.exists(), "the demo's own store keeps only the checkouts"

    # the suggested command, pasted as printed (one line, however narrow the terminal)
    command = suggested_command(out)
    argv = shlex.split(command)
    assert argv[0].endswith("tracekit") and argv[1:] == [
        "canary", "--service", SERVICE, "--baseline", BASELINE, "--canary", CANARY,
        "--start", argv[9], "--end", argv[11], "--store", str(canary_store(demo_store)),
    ]  # fmt: skip
    window = (verdict.subject.start_unix_nano, verdict.subject.end_unix_nano)
    assert (unix_nano(argv[9]), unix_nano(argv[11])) == window, "the window the demo judged"
    assert pasted(command)["verdict"] == "fail"


@pytest.mark.parametrize(("verdict", "code"), [("pass", 0), ("marginal", 3), ("inconclusive", 4)])
def test_the_printed_exit_status_is_the_verdicts(tmp_path: Path, verdict: str, code: int) -> None:
    """On a slow or busy machine the demo's canary can come out other than failed: the line
    above the command said "exit status 1: fail" whatever the verdict was."""
    screen = io.StringIO()
    console = Console(file=screen, width=200, no_color=True)

    _show_command(console, tmp_path / "tracekit.db", 0, 10**9, verdict)

    assert f"The same from the command line (exit status {code}: {verdict}):" in screen.getvalue()


def test_the_printed_command_judges_only_this_demos_traffic(tmp_path: Path) -> None:
    """It said ``--since 10m``: after a second demo (or beside a concurrent one) it counted
    both demos' requests, baseline 1,200 where the demo had judged 600."""
    demo_store = tmp_path / "tracekit.db"
    run_canary_step(Console(file=io.StringIO()), demo_store)  # an earlier demo, same stores
    screen = io.StringIO()

    verdict = run_canary_step(Console(file=screen, width=200, no_color=True), demo_store)

    assert "requests: baseline 600, canary 600" in screen.getvalue()
    assert pasted(suggested_command(screen.getvalue())) == json.loads(json.dumps(to_json(verdict)))


def test_two_demos_at_once_on_one_store_each_judge_their_own_traffic(tmp_path: Path) -> None:
    """Two demos sharing a store whose canary steps overlapped each counted the other's requests
    in their window: "sent 1200 requests, half to each version", then "baseline 1,200"."""
    demo_store = tmp_path / "tracekit.db"
    screens = [io.StringIO(), io.StringIO()]

    def one_demo(screen: io.StringIO) -> Any:
        return run_canary_step(Console(file=screen, width=200, no_color=True), demo_store)

    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(one_demo, screens))

    assert [(v.baseline_requests, v.canary_requests) for v in verdicts] == [(600, 600)] * 2
    assert all("requests: baseline 600, canary 600" in s.getvalue() for s in screens)
    assert sum("waiting for another demo's canary step" in s.getvalue() for s in screens) == 1


def test_a_port_another_process_takes_before_a_version_starts_stays_the_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step chose each version's port free, then the version bound it as it started: in
    between any process could take it (an outgoing connection, another test's server), and the
    version exited, and ``tracekit demo`` with it ("the demo's catalog service exited before it
    answered"). Here another process tries to take each port right before its version starts."""
    start = subprocess.Popen
    thieves: list[socket.socket] = []

    def taken_first(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        thief = socket.socket()
        thieves.append(thief)
        with contextlib.suppress(OSError):  # held by the step: nothing to take
            thief.bind(("127.0.0.1", int(argv[-1])))
            thief.listen()
        return start(argv, **options)

    monkeypatch.setattr(canary_module.subprocess, "Popen", taken_first)
    try:
        with deployed(tmp_path / "canary.db") as ports:
            answers = {version: _get_json(f"http://127.0.0.1:{port}/search?q=x")["version"]
                       for version, port in ports.items()}  # fmt: skip
    finally:
        for thief in thieves:
            thief.close()
    assert answers == {BASELINE: BASELINE, CANARY: CANARY}


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def suggested_command(out: str) -> str:
    (command,) = [line.strip() for line in out.splitlines() if " canary --service " in line]
    return command


def pasted(command: str) -> dict[str, Any]:
    """What the command prints with ``--format json``, run by the shell as the user pastes it;
    it exits 1: the canary fails."""
    result = subprocess.run(
        ["bash", "-c", f"{command} --format json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def unix_nano(printed: str) -> int:
    """A printed ``--start`` or ``--end``: an ISO 8601 time with its offset, to the microsecond."""
    moment = datetime.fromisoformat(printed)
    assert moment.utcoffset() is not None, printed
    return int(moment.replace(microsecond=0).timestamp()) * 10**9 + moment.microsecond * 1000


def test_the_demo_can_skip_the_step() -> None:
    result = CliRunner().invoke(cli, ["demo", "--help"])

    assert "--canary / --no-canary" in result.output
