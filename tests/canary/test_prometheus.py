"""`tracekit canary --prometheus`: a real Prometheus scrapes two versions of a real service.

Two versions of tests/canary/apps/canary_shop.py (tracekit.init(), Starlette under uvicorn,
tracekit.messaging around an in-process queue) run as subprocesses; the Debian ``prometheus``
binary (tests/support/prometheus_server.py) scrapes both every second, and both also export their
spans into one store. The canary is slower on one route and fails some payments and messages.
Prometheus mode must find the requests the store holds, per version and route, and reach the same
verdict. Outside CI a missing binary skips; with CI=true it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from conditions import wait_for
from doc_blocks import ROOT, blocks
from loopback import UNREACHABLE, free_port
from prometheus_server import (
    instant,
    prometheus_binary,
    prometheus_configured,
    running_prometheus,
)
from shop import Shop, shared_cpu, start_shop

from tracekit.canary import (
    HTTP,
    MESSAGING,
    RouteKey,
    Subject,
    judge,
    load_schema,
    samples_from_prometheus,
    samples_from_store,
)
from tracekit.store import Store
from tracekit_cli.main import cli

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
PER_ROUTE = 150  # requests per version and route
FAIL_EVERY = 10  # the canary fails 1 payment and 1 message in 10
PATHS = ("/fast/{n}", "/slow/{n}", "/pay/{n}", "/publish/{n}")
ROUTES = {
    RouteKey(HTTP, "/fast/{n}"): 0,
    RouteKey(HTTP, "/slow/{n}"): 0,
    RouteKey(HTTP, "/pay/{n}"): PER_ROUTE // FAIL_EVERY,
    RouteKey(HTTP, "/publish/{n}"): 0,
    RouteKey(MESSAGING, "orders.paid"): PER_ROUTE // FAIL_EVERY,
}  # route -> the canary's failures (the baseline has none)


@dataclass
class Run:
    prometheus: str
    store: Path
    start_ns: int
    end_ns: int


def _send(shops: list[Shop], numbers: range) -> list[int]:
    """One route at a time, both versions together: a route's requests share each process only
    with the same route's, so the canary's longer /slow requests and its failures do not slow its
    /fast ones on a loaded machine (a real effect of a busier event loop, not the route's)."""
    plan = [(shop.url, path.format(n=n)) for path in PATHS for n in numbers for shop in shops]
    with httpx.Client(timeout=20) as client, ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda item: client.get(item[0] + item[1]).status_code, plan))


def _seen(url: str) -> float:
    """Requests and handled messages Prometheus has scraped (health probes left out)."""
    total = 0.0
    for query in ('sum(http_server_request_duration_seconds_count{http_route!="/health"})',
                  "sum(messaging_process_duration_seconds_count)"):  # fmt: skip
        found = instant(url, query)
        total += float(found[0]["value"][1]) if found else 0.0
    return total


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Warm-up requests first, a success and a failure on every route (every series exists
    before the window, as in a rollout that has run for a while: increase() can only guess at
    the start of a series born inside the window), then the window's traffic, scraped every
    200 ms."""
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-prometheus")
    store = directory / "tracekit.db"
    cpu = shared_cpu()  # one process per version: the same CPU, the same competition for it
    shops = [
        start_shop(APP, BASELINE, store, 0.02, 0, cpu=cpu),
        start_shop(APP, CANARY, store, 0.06, FAIL_EVERY, cpu=cpu),
    ]
    per_round = len(shops) * (len(PATHS) + 1)  # each path, and the message /publish queued
    try:
        targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        with running_prometheus(binary, directory, "shop", targets, interval="200ms") as url:
            for shop in shops:  # while Prometheus waits for its first targets
                shop.wait_up()
            _send(shops, range(FAIL_EVERY, FAIL_EVERY + 2))  # on the canary n = 10 fails, 11 not
            wait_for(
                lambda: _seen(url) == 2 * per_round, 30, "warm-up scraped", ignoring=UNREACHABLE
            )
            start_ns = time.time_ns()
            time.sleep(0.6)  # idle at both ends: increase() assumes an even rate, not a burst
            statuses = _send(shops, range(1, PER_ROUTE + 1))
            assert statuses.count(500) == PER_ROUTE // FAIL_EVERY
            wait_for(
                lambda: _seen(url) == per_round * (PER_ROUTE + 2),
                60,
                "traffic scraped",
                ignoring=UNREACHABLE,
            )
            time.sleep(1.5)
            end_ns = time.time_ns()
            yield Run(url, store, start_ns, end_ns)
    finally:
        for shop in shops:
            shop.stop()  # flushes the last spans into the store


def _both(run: Run) -> dict[str, tuple[dict, dict]]:
    versions = (BASELINE, CANARY)
    window = (run.start_ns, run.end_ns)
    prometheus = samples_from_prometheus(run.prometheus, "shop", versions, *window)
    deadline = time.monotonic() + 60  # batches reach the store on their schedule; a loaded
    while True:  # machine can take a while, so wait for both versions' last batch
        stored = samples_from_store(Store(run.store), "shop", versions, *window)
        complete = all(
            sum(s.requests for s in side.values()) == len(ROUTES) * PER_ROUTE for side in stored
        )
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"prometheus": prometheus, "store": stored}


def test_prometheus_finds_the_requests_the_store_holds(run: Run) -> None:
    found = _both(run)
    store_baseline, store_canary = found["store"]
    prom_baseline, prom_canary = found["prometheus"]

    assert set(store_canary) == set(store_baseline) == set(ROUTES)
    assert set(prom_canary) == set(prom_baseline) == set(ROUTES)
    # increase() stretches the increase between the first and last scrape in the window toward
    # the window's edges, at each end by up to 1.1 scrape intervals (of 200 ms; at the start no
    # further back than where the counter would have been zero, which for a counter holding the
    # warm-up's 1 of 16 is about a fifteenth of the window: as far, in a 3-4 s window). Both
    # ends, then: a loaded run that had counted 15 failures reported 17.
    seconds = (run.end_ns - run.start_ns) / 1e9
    stretch = 1 + 2 * 0.22 / (seconds - 0.44)
    for key, failures in ROUTES.items():
        assert store_baseline[key].requests == store_canary[key].requests == PER_ROUTE
        assert (store_baseline[key].errors, store_canary[key].errors) == (0, failures)
        for samples in (prom_baseline[key], prom_canary[key]):
            assert PER_ROUTE <= samples.requests <= PER_ROUTE * stretch + 1, key
        assert prom_baseline[key].errors == 0
        assert failures <= prom_canary[key].errors <= failures * stretch + 1, key


def test_both_sources_fail_the_canary_for_the_same_reasons(run: Run) -> None:
    for source, (baseline, canary) in _both(run).items():
        subject = Subject("shop", BASELINE, CANARY, run.start_ns, run.end_ns, source)
        verdict = judge(subject, baseline, canary)
        classes = {(r.check.metric, r.check.key.route): r.classification for r in verdict.metrics}

        assert verdict.verdict == "fail", source
        assert verdict.score == 0, source  # a critical metric failed
        decided = {(r.check.metric, r.check.key.route) for r in verdict.decided_by}
        assert ("error_rate", "/pay/{n}") in decided, source
        assert ("error_rate", "orders.paid") in decided, source
        assert classes[("latency", "/slow/{n}")] == "fail", source  # 60 ms against 20 ms
        assert classes[("latency", "/fast/{n}")] != "fail", source


def _window_options(run: Run) -> list[str]:
    """``--start`` and ``--end`` of the run's window, as ISO 8601 times."""
    from datetime import UTC, datetime

    start, end = (datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat() for ns in
                  (run.start_ns, run.end_ns))  # fmt: skip
    return ["--start", start, "--end", end]


def test_the_command_reads_prometheus(run: Run) -> None:
    result = CliRunner().invoke(cli, [
        "canary", "--service", "shop", "--baseline", BASELINE, "--canary", CANARY,
        "--prometheus", run.prometheus, *_window_options(run), "--format", "json",
    ])  # fmt: skip

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    jsonschema.validate(document, load_schema())
    assert document["source"] == "prometheus"
    assert document["verdict"] == "fail"


def test_a_version_without_requests_names_the_versions_prometheus_has(run: Run) -> None:
    """``--canary 2.0`` where the services label ``2.0.0`` (or a misspelled service) only said
    "no requests of canary version 2.0 in the window", exit 4, naming no version there is."""

    def canary(service: str, version: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, [
            "canary", "--service", service, "--baseline", BASELINE, "--canary", version,
            "--prometheus", run.prometheus, *_window_options(run), "--format", "text",
        ])  # fmt: skip
        return result.exit_code, result.stdout

    code, out = canary("shop", "2.0")
    assert code == 4, out
    assert "warning: versions of shop with requests in the window: 1.0.0, 2.0.0\n" in out
    code, out = canary("shops", CANARY)
    assert code == 4, out
    assert "warning: no requests of service shops in the window\n" in out


def test_versions_whose_series_did_not_grow_in_the_window_are_not_named(run: Run) -> None:
    """After the traffic both versions' series are still scraped, unchanged: a window there
    holds no request of either version, and the warning named both as having requests in it,
    beside "no requests of canary version 2.0.0 in the window"."""
    quiet_end_ns = run.end_ns + 2 * 10**9  # scraped every 200 ms: a window of ten scrapes
    time.sleep(max(0.0, (quiet_end_ns - time.time_ns()) / 1e9))
    quiet = replace(run, start_ns=run.end_ns, end_ns=quiet_end_ns)
    result = CliRunner().invoke(cli, [
        "canary", "--service", "shop", "--baseline", BASELINE, "--canary", CANARY,
        "--prometheus", run.prometheus, *_window_options(quiet), "--format", "text",
    ])  # fmt: skip

    assert result.exit_code == 4, result.output
    assert f"no requests of canary version {CANARY} in the window" in result.stdout
    assert "warning: no requests of service shop in the window\n" in result.stdout, result.stdout


def test_an_unreachable_prometheus_is_a_one_line_error() -> None:
    result = CliRunner().invoke(cli, [
        "canary", "--service", "shop", "--baseline", BASELINE, "--canary", CANARY,
        "--prometheus", f"http://127.0.0.1:{free_port()}", "--timeout", "1",
    ])  # fmt: skip

    assert result.exit_code == 2
    assert result.stderr.startswith("tracekit: Prometheus at http://127.0.0.1:")
    assert result.stderr.count("\n") == 1


def test_a_prometheus_that_read_only_part_of_its_data_is_a_one_line_error(tmp_path: Path) -> None:
    """A remote-read store that cannot be reached (long-term storage, another cluster's
    Prometheus; Thanos' partial responses are the same): Prometheus answers "success" with what
    it holds and a warning. A verdict on part of the requests is no verdict."""
    dead = f"http://127.0.0.1:{free_port()}/api/v1/read"
    config = (
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"remote_read: [{{url: '{dead}', read_recent: true}}]\n"
    )
    with prometheus_configured(prometheus_binary(), tmp_path, config) as url:
        result = CliRunner().invoke(cli, [
            "canary", "--service", "shop", "--baseline", BASELINE, "--canary", CANARY,
            "--prometheus", url, "--timeout", "30",
        ])  # fmt: skip

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("tracekit: Prometheus answered only part of the data")
    assert "remote_read" in result.stderr
    assert result.stderr.count("\n") == 1


def _rollout_examples() -> list[dict[str, Any]]:
    """The Kubernetes resources of docs/cli.md's "Gating a rollout" section, parsed."""
    found = [
        document
        for block in blocks(ROOT / "docs" / "cli.md")
        if block.language == "yaml"
        for document in yaml.safe_load_all(block.text)
        if document["kind"] in ("Canary", "AnalysisTemplate", "Rollout")
    ]
    assert sorted(d["kind"] for d in found) == ["AnalysisTemplate", "Canary", "Rollout"]
    return found


def _for_this_run(command: str, run: Run) -> str:
    """The documented command pointed at this test's Prometheus and service (the only edits);
    ``--flag value`` or ``--flag=value``."""
    for documented, ours in (
        (r"(--prometheus[ =])http://prometheus\.monitoring:9090", run.prometheus),
        (r"(--service[ =])orders\b", "shop"),
    ):
        command, edits = re.subn(documented, lambda m, ours=ours: m.group(1) + ours, command)
        assert edits == 1, (documented, command)
    return command


def test_the_flagger_webhook_command_fails_this_canary(run: Run, tmp_path: Path) -> None:
    """Flagger's load tester runs the webhook's ``cmd`` with bash and fails the check when it
    exits non-zero. No Kubernetes runs here: the ``kubectl`` on PATH is a script that answers the
    two queries the command makes (each deployment's ``version`` label) as a cluster would."""
    (canary,) = [d for d in _rollout_examples() if d["kind"] == "Canary"]
    command = canary["spec"]["analysis"]["webhooks"][0]["metadata"]["cmd"]
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *'deploy orders-primary '*) printf %s '{BASELINE}' ;;\n"
        f"  *'deploy orders '*) printf %s '{CANARY}' ;;\n"
        '  *) echo "kubectl: unexpected: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    kubectl.chmod(0o700)
    path = f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        ["bash", "-c", _for_this_run(command, run)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path},
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"canary shop: {CANARY} against baseline {BASELINE} (prometheus)" in result.stdout
    assert "verdict: FAIL" in result.stdout


def test_the_argo_analysis_job_fails_this_canary(run: Run) -> None:
    """Argo Rollouts fills the AnalysisTemplate's ``{{args.*}}`` from the Rollout and counts a
    Job that exits non-zero as a failed measurement. No Kubernetes runs here: the Job's container
    command runs as a process, with this run's versions as the Rollout's arguments."""
    examples = _rollout_examples()
    (template,) = [d for d in examples if d["kind"] == "AnalysisTemplate"]
    (rollout,) = [d for d in examples if d["kind"] == "Rollout"]
    analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
    assert analysis["templates"] == [{"templateName": template["metadata"]["name"]}]
    declared = [arg["name"] for arg in template["spec"]["args"]]
    assert [arg["name"] for arg in analysis["args"]] == declared
    values = dict(zip(declared, ("orders", BASELINE, CANARY), strict=True))
    (metric,) = template["spec"]["metrics"]
    (container,) = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    command = []
    for part in container["command"]:
        for name, value in values.items():
            part = part.replace(f"{{{{args.{name}}}}}", value)
        assert "{{" not in part, part
        command.append(part)
    command = _for_this_run("\n".join(command), run).split("\n")
    assert command[:2] == ["tracekit", "canary"]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tracekit"), *command[1:]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    assert "verdict: FAIL" in result.stdout
