"""The demo runs its real topology (eight processes, real HTTP, a real queue) into a real store,
and the stored telemetry reconstructs to the topology the demo is known to have."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conditions import need, wait_for
from redis_server import answers_ping

from tracekit.path import reconstruct
from tracekit.store import Store
from tracekit_cli.demo.services import BULK_QUANTITY, FAILING_SKU
from tracekit_cli.demo.topology import HTTP_ROLES, SentRequest, Topology, checkout_for

REQUESTS = 9  # covers plain, bulk (slow) and discontinued (failing) orders

HTTP_HOPS = {("gateway", "orders"), ("fulfilment", "inventory"), ("aggregator", "orders")}
QUEUE_HOPS = {
    ("orders", "fulfilment", "orders.created"),
    ("fulfilment", "pricing", "pricing.1"),
    ("fulfilment", "pricing", "pricing.2"),
    ("fulfilment", "pricing", "pricing.3"),
    ("pricing", "aggregator", "pricing.replies"),
}


def run_demo(tmp_path: Path, queue: str) -> tuple[list[SentRequest], Store, str]:
    store_path = tmp_path / "demo.db"
    with Topology(store_path, queue=queue) as topology:
        topology.start()
        sent = []
        for number in range(REQUESTS):
            sent.append(topology.send(number))
            time.sleep(0.05)
        assert topology.wait_until_idle(timeout=30)
        description = topology.queue_description
    return sent, Store(store_path), description


def path_of(store: Store, request: SentRequest) -> dict[str, Any]:
    """The ``tracekit.path/v1`` document, as ``tracekit trace --format json`` prints it."""
    assert request.correlation_id, "the gateway echoes X-Correlation-ID"
    path = reconstruct(store, request.correlation_id)
    assert path is not None, f"request {request.number} left no spans"
    return path.to_json()


def check_topology(sent: list[SentRequest], store: Store) -> None:
    assert [r.status for r in sent] == [202] * REQUESTS
    for request in sent:
        path = path_of(store, request)
        http = {(h["from_service"], h["to_service"]) for h in path["hops"] if h["type"] == "http"}
        queued = {
            (h["from_service"], h["to_service"], h["destination"])
            for h in path["hops"]
            if h["type"] == "messaging"
        }
        assert all(
            h["queue_wait_ms"] is not None and h["queue_wait_ms"] >= 0
            for h in path["hops"]
            if h["type"] == "messaging"
        )
        if request.should_fail:
            check_failed(path, http, queued)
        else:
            assert http == HTTP_HOPS, request
            assert queued == QUEUE_HOPS, request
            assert len(path["trace_ids"]) == 2, "the gather's batch span starts a linked trace"
            assert not path["errors"]
        if request.should_be_slow and not request.should_fail:
            check_slow_hop_on_critical_path(path)


def check_failed(
    path: dict[str, Any], http: set[tuple[str, str]], queued: set[tuple[str, str, str]]
) -> None:
    assert http == {("gateway", "orders"), ("fulfilment", "inventory")}
    assert queued == {("orders", "fulfilment", "orders.created")}
    by_id = {s["span_id"]: s for s in path["spans"]}
    failed = [by_id[e["span_id"]] for e in path["errors"]]
    servers = [s for s in failed if s["service"] == "inventory" and s["kind"] == "SERVER"]
    assert servers, "the error is located in the inventory service"
    assert servers[0]["attributes"]["http.response.status_code"] == 500
    assert any(
        log["service"] == "inventory" and "no stock record" in log["body"] for log in path["logs"]
    )


def check_slow_hop_on_critical_path(path: dict[str, Any]) -> None:
    by_id = {s["span_id"]: s for s in path["spans"]}
    critical = [by_id[span_id] for span_id in path["critical_path"]]
    slow = [s for s in critical if s["service"] == "pricing" and s["duration_ms"] >= 550]
    assert slow, "the slow pricing replica's work is on the critical path"
    assert slow[0]["attributes"]["messaging.destination.name"] == "pricing.3"


def test_demo_on_the_embedded_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A shell set up for OpenTelemetry elsewhere: the demo's services still export to its store.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    # ... and for a test run or a quiet laptop, where each of these left the demo with no spans
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")
    monkeypatch.setenv("TRACEKIT_INSTRUMENT", "requests")
    # ... and behind a proxy that does not list loopback: the demo never reached its gateway
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    sent, store, description = run_demo(tmp_path, "embedded")
    assert description.startswith("embedded SQLite queue")
    check_topology(sent, store)


def test_the_shells_metrics_directory_gets_nothing_of_the_demos_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus-client honours its variable's former name, ``prometheus_multiproc_dir``, too:
    the demo left out only ``PROMETHEUS_MULTIPROC_DIR``, and its services wrote their counters
    (10 files for 2 checkouts) into the directory another server of this shell sums."""
    shells = {name: tmp_path / name for name in ("PROMETHEUS_MULTIPROC_DIR",
                                                 "prometheus_multiproc_dir")}  # fmt: skip
    for name, directory in shells.items():
        directory.mkdir()
        monkeypatch.setenv(name, str(directory))
    sent, _, _ = run_demo(tmp_path, "embedded")
    assert [r.status for r in sent] == [202] * REQUESTS
    assert {name: sorted(d.iterdir()) for name, d in shells.items()} == {n: [] for n in shells}


def test_a_port_taken_before_its_service_binds_it_gets_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port is chosen free, then bound by its service; in between another process may take it
    (a CI run saw the orders service exit with "Address already in use", and the demo with it).
    The services start again on new ports."""
    from tracekit_cli.demo import topology as topology_module

    choose_free = topology_module._free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        chosen = iter([taken_port])  # the gateway's, the first chosen
        monkeypatch.setattr(topology_module, "_free_port", lambda: next(chosen, 0) or choose_free())
        with Topology(tmp_path / "demo.db", queue="embedded") as topology:
            topology.start()
            sent = topology.send(0)
            assert topology.ports["gateway"] != taken_port
    assert (sent.status, bool(sent.correlation_id)) == (202, True)


def test_a_service_that_does_not_start_in_time_names_its_kept_log(tmp_path: Path) -> None:
    """A service that did not answer in time (a slow or stuck machine) said only "demo service
    gateway did not start", and the work folder with the log that tells why was removed."""
    with (
        pytest.raises(TimeoutError) as raised,
        Topology(tmp_path / "demo.db", queue="embedded") as topology,
    ):
        topology.start(timeout=0.01)
    message = str(raised.value)
    log = topology.workdir / "gateway.log"
    try:
        assert message == f"demo service gateway did not start in time; see {log}"
        assert log.is_file()
    finally:
        shutil.rmtree(topology.workdir, ignore_errors=True)


def test_a_redis_port_taken_by_another_redis_server_gets_a_new_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port chosen for the demo's redis-server was taken by another one (a CI run: another
    test's) before it bound it: the demo's exited ("Address already in use"), the checkouts were
    queued in the other, and when that one stopped the demo died of "internal error
    (ConnectionError ... Connection refused)". The demo's own server starts on a new port, and
    nothing is read from or written into the other."""
    from tracekit_cli.demo import topology as topology_module

    need(shutil.which("redis-server") is not None, "redis-server")
    choose_free = topology_module._free_port
    foreign_port = choose_free()
    foreign = subprocess.Popen(
        ["redis-server", "--port", str(foreign_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: answers_ping(foreign_port), 10, "the other redis-server")
        calls = iter(range(1000))  # the HTTP services' ports are chosen first, then Redis's
        monkeypatch.setattr(topology_module, "_free_port", lambda: foreign_port
                            if next(calls) == len(HTTP_ROLES) else choose_free())  # fmt: skip
        with Topology(tmp_path / "demo.db", queue="redis") as topology:
            assert f":{foreign_port}" not in topology.queue_description
            topology.start()
            sent = [topology.send(number) for number in range(3)]
            assert topology.wait_until_idle()
        assert [r.status for r in sent] == [202] * 3
        with socket.create_connection(("127.0.0.1", foreign_port), timeout=5) as sock:
            sock.sendall(b"DBSIZE\r\n")
            assert sock.recv(64) == b":0\r\n"  # nothing queued in the other server
    finally:
        foreign.terminate()
        foreign.wait(10)


@pytest.mark.parametrize("queue", ["embedded", "redis"])
def test_a_handler_still_running_when_the_queues_are_empty_is_waited_for(
    tmp_path: Path, queue: str
) -> None:
    """The demo took its queues being empty for a second for its work being done, and stopped
    its services: a pricing replica held back that long (a loaded machine) still had a bulk
    order's reply to send, which no aggregator was left to take, and the checkout's path ended
    at pricing. Here the slow replica is held back for 3 s once it has taken the order."""
    if queue == "redis":
        need(shutil.which("redis-server") is not None, "redis-server")
    bulk = next(n for n in range(10) if checkout_for(n)[1] >= BULK_QUANTITY)
    with Topology(tmp_path / "demo.db", queue=queue) as topology:
        topology.start()
        replica = topology.processes["pricing-3"]
        sent = topology.send(bulk)
        log = topology.workdir / "pricing-3.log"
        wait_for(lambda: b"recomputing volume discounts" in log.read_bytes(), 20, "the order")
        os.kill(replica.pid, signal.SIGSTOP)
        resume = threading.Timer(3.0, os.kill, (replica.pid, signal.SIGCONT))
        resume.start()  # whatever happens meanwhile: the stop waits for the replica to exit
        assert topology.wait_until_idle(timeout=30)
    resume.join()
    path = path_of(Store(tmp_path / "demo.db"), sent)
    assert ("pricing", "aggregator", "pricing.replies") in {
        (h["from_service"], h["to_service"], h["destination"]) for h in path["hops"]
    }, path["hops"]


def test_the_embedded_queue_is_made_before_its_services_open_it(tmp_path: Path) -> None:
    """Eight services opening a new SQLite queue at once each set it to WAL mode: one found it
    locked and exited ("demo service fulfilment exited", sqlite3 "database is locked", seen in
    CI). The demo makes it, in WAL mode, before it starts them."""
    with Topology(tmp_path / "demo.db", queue="embedded") as topology:
        path = topology.queue_url.removeprefix("sqlite:")
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


def test_demo_on_redis(tmp_path: Path) -> None:
    """Where redis-server is installed (CI installs it), the demo uses it as its broker."""
    sent, store, description = run_demo(tmp_path, "redis")
    assert description.startswith("Redis")
    check_topology(sent, store)


def test_tracekit_demo_command_shows_the_summary_and_two_paths(tmp_path: Path) -> None:
    store = tmp_path / "cli.db"
    scratch = tmp_path / "tmp"  # the demo's TMPDIR: its work folder must be gone afterwards
    scratch.mkdir()
    started = time.monotonic()
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)
    env = {**os.environ, "COLUMNS": "140", "NO_COLOR": "1", "TMPDIR": str(scratch), "PATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "8", "--store", str(store)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    out = result.stdout
    assert "8 checkouts" in out
    assert "slowest request" in out and "a failed request" in out
    assert "gateway → orders → fulfilment → inventory" in out
    assert "tracekit trace " in out and f"--store {store}" in out
    # it ends by diffing its fastest and slowest checkout: the slow pricing replica explains it
    diffed = out.split("fastest against slowest checkout", 1)[1].splitlines()
    assert diffed[1].startswith("$ ") and diffed[1].endswith(f"--store {store}")
    assert diffed[1].split()[1].endswith("bin/tracekit"), diffed[1]  # as typed: not on PATH
    assert diffed[1].split()[2] == "diff"
    assert " end to end (+" in diffed[4] and "pricing.3" in diffed[4], "\n".join(diffed[:6])
    assert "result: different" in out
    assert list(scratch.iterdir()) == []
    check_the_hints_work(out, store)
    # `tracekit` is not on this PATH (as after `make demo`): the hints work as typed all the same
    hint = next(line.strip() for line in out.splitlines() if "search --min-duration 500" in line)
    assert hint.split()[0].endswith("bin/tracekit"), hint
    typed = subprocess.run(["bash", "-c", hint], capture_output=True, text=True, env=env,
                           timeout=60)  # fmt: skip
    assert typed.returncode == 0 and "POST /checkout" in typed.stdout, typed.stderr


def check_the_hints_work(out: str, store: Path) -> None:
    """The demo's closing hints find what they promise; its /health probes are no requests."""
    rows = [line.split("│") for line in out.splitlines() if line.count("│") == 8]
    ids = {int(cells[1]): cells[2].strip() for cells in rows if cells[1].strip().isdigit()}
    assert sorted(ids) == list(range(8)), out
    slow_numbers = [n for n in ids if checkout_for(n)[1] >= BULK_QUANTITY]
    failing = [n for n in ids if checkout_for(n)[0] == FAILING_SKU]
    bulk = {ids[n] for n in slow_numbers if n not in failing}  # a failing order ends early
    assert bulk, "the demo sends bulk orders that pricing replica 3 answers slowly"

    def search(*args: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [sys.executable, "-m", "tracekit_cli", "search", "--store", str(store),
             "--format", "json", "--limit", "100", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)["requests"]
        return found

    slow = {r["correlation_id"] for r in search("--min-duration", "500")}
    assert bulk <= slow, (bulk, slow)
    everything = search()
    assert {r["root_name"] for r in everything} == {"POST /checkout"}
    assert len(everything) == 8
    assert {r["correlation_id"] for r in search("--errors")} <= {
        r["correlation_id"] for r in everything
    }


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> None:
    """Each demo run stops every process it started (the Topology context manager)."""


def _demo_services(parent: int | None = None) -> set[int]:
    """PIDs of demo service processes running now (children of ``parent`` when given).

    Other demos may run on the same machine; the parent filter counts only this test's.
    """
    only_children = ["-P", str(parent)] if parent is not None else []
    found = subprocess.run(
        ["pgrep", *only_children, "-f", "tracekit_cli.demo.services"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {int(pid) for pid in found.stdout.split()}


def _demo_in(scratch: Path, *args: str) -> subprocess.Popen[str]:
    """``tracekit demo *args`` started with its scratch folder in ``scratch``, its output (both
    streams, plain, 120 columns) read line by line, as from a terminal: a hangup is not ignored
    (a test run under ``nohup`` ignores it, and the demo keeps an ignored hangup ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tracekit_cli", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TMPDIR": str(scratch)},
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "status"),
    [
        (signal.SIGINT, 130),
        (signal.SIGTERM, 143),
        # the terminal closed: the services, in sessions of their own, were left running
        (signal.SIGHUP, 129),
    ],
)
def test_ctrl_c_or_sigterm_stops_every_process_the_demo_started(
    tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # --no-canary: the canary step's versions are stopped before the prompt the signal waits
    # for (a Ctrl-C amid them: test_a_second_ctrl_c_while_the_canary_versions_stop...), and its
    # 1,200 requests took over half of each run
    demo = _demo_in(
        scratch, "--requests", "2", "--no-canary", "--keep-running",
        "--store", str(tmp_path / "keep.db"),
    )  # fmt: skip
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if "press Ctrl-C" in line:
            break
    running = _demo_services(parent=demo.pid)
    assert len(running) == 8, "".join(lines)

    demo.send_signal(stop)
    rest, _ = demo.communicate(timeout=60)

    assert demo.returncode == status
    assert "stopped: every demo process was shut down" in rest
    assert not (_demo_services() & running)
    assert list(scratch.iterdir()) == [], "the demo's work folder is removed on Ctrl-C too"


def test_a_second_ctrl_c_while_the_services_stop_leaves_none_running(tmp_path: Path) -> None:
    """A second Ctrl-C while the services flushed interrupted the wait for them: the demo said
    'every demo process was shut down' and exited 130, leaving redis-server and a service that
    had not yet exited running in sessions of their own, with nothing left to stop them."""
    demo = _demo_in(tmp_path, "--requests", "1", "--no-canary", "--keep-running",
                    "--store", str(tmp_path / "twice.db"))  # fmt: skip
    assert demo.stdout is not None
    for line in demo.stdout:
        if "press Ctrl-C" in line:
            break
    children = _live_children(demo.pid)
    slow = min(_demo_services(parent=demo.pid))  # a service slow to flush: it cannot exit
    # (left running besides it: the queue's, if Redis)
    _ctrl_c_twice_while_one_is_frozen(demo, slow, left=2)
    assert [pid for pid in children if _alive(pid)] == []


def test_a_second_ctrl_c_while_the_canary_versions_stop_leaves_none_running(
    tmp_path: Path,
) -> None:
    """The same in the canary step: its two versions were left running when a second Ctrl-C
    came while they flushed."""
    demo = _demo_in(tmp_path, "--requests", "1", "--queue", "embedded",
                    "--store", str(tmp_path / "canary.db"))  # fmt: skip
    assert demo.stdout is not None
    for line in demo.stdout:
        if "side by side" in line:
            break
    while len(versions := _canary_versions(demo.pid)) < 2:
        time.sleep(0.05)
    for port in versions.values():  # serving the step's traffic: the Ctrl-C comes amid it
        assert wait_for_health(port), port
    _ctrl_c_twice_while_one_is_frozen(demo, min(versions), left=1)  # one slow to flush
    assert [pid for pid in versions if _alive(pid)] == []


def _ctrl_c_twice_while_one_is_frozen(demo: subprocess.Popen[str], frozen: int, left: int) -> None:
    """Freeze child ``frozen`` (it cannot exit), press Ctrl-C, and press it again once only
    ``left`` children run: the user does not want to wait. The demo says it stopped all."""
    os.kill(frozen, signal.SIGSTOP)
    try:
        demo.send_signal(signal.SIGINT)
        while len(_live_children(demo.pid)) > left:
            time.sleep(0.05)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed and reaped: the fix
            os.kill(frozen, signal.SIGCONT)
    assert demo.returncode == 130
    assert "stopped: every demo process was shut down" in rest


def wait_for_health(port: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return True
        time.sleep(0.05)
    return False


def _live_children(parent: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True,
                           check=False)  # fmt: skip
    return {int(pid) for pid in found.stdout.split() if _alive(int(pid))}


def _canary_versions(parent: int) -> dict[int, int]:
    """The canary step's catalog versions among ``parent``'s children, with their ports: a
    child forked to start the second one holds the demo's own command line until it execs."""
    versions = {}
    for pid in _live_children(parent):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue  # exited meanwhile
        if "tracekit_cli.demo.canary" in args:
            versions[pid] = int(args[-2])  # (... VERSION PORT, each ended by a NUL)
    return versions


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody reaped yet is a zombie: 'Z')."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_keep_running_shows_how_to_send_one_more_checkout(tmp_path: Path) -> None:
    """``--keep-running`` listed the services' URLs and nothing on what they take: a reader
    could not send the gateway a checkout of their own to trace."""
    store = tmp_path / "more.db"
    demo = subprocess.Popen(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
         "--keep-running", "--queue", "embedded", "--store", str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"},
    )  # fmt: skip
    assert demo.stdout is not None
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        curl = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curl) == 1, "".join(lines)
        sent = subprocess.run(["bash", "-c", curl[0]], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        correlation_id = json.loads(sent.stdout)["correlation_id"]
        assert traced_within(15, store, correlation_id), "the checkout reached the store"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    assert demo.returncode == 130


def traced_within(seconds: float, store: Path, correlation_id: str) -> bool:
    """Whether the request's gateway span is in the store within ``seconds`` (the services
    export every 200 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        path = reconstruct(Store(store), correlation_id)
        if path is not None and "gateway" in path.services:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    ("args", "path", "says"),
    [
        (["--store", "/etc/passwd"], None, "cannot open store /etc/passwd: file is not a database"),
        (
            ["--store", "/etc/passwd/d.db"],
            None,
            "cannot open store /etc/passwd/d.db: Not a directory\n",
        ),
        (["--queue", "redis"], "/nonexistent", "--queue redis needs redis-server on PATH"),
    ],
)
def test_a_demo_that_cannot_run_says_why_in_one_line_and_leaves_nothing(
    tmp_path: Path, args: list[str], path: str | None, says: str
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PATH": path or os.environ["PATH"]}
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
         "--store", str(tmp_path / "d.db"), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("tracekit: ") and says in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(scratch.iterdir()) == []


def test_a_redis_server_that_cannot_start_is_named_at_once(tmp_path: Path) -> None:
    """An installed redis-server that exits at start (a broken install, a config it refuses):
    the demo waited 30 s, then said "internal error (ConnectionError: ...)"."""
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
         "--store", str(tmp_path / "d.db")],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and time.monotonic() - started < 15
    (line,) = result.stderr.splitlines()
    assert line.startswith("tracekit: demo: redis-server exited as it started (see "), line
    assert line.endswith("); --queue embedded runs the demo without it"), line
    log = Path(line.split("(see ", 1)[1].split(")", 1)[0])
    assert "FATAL CONFIG FILE ERROR" in log.read_text()


def test_a_demo_without_its_packages_names_them_in_one_line(tmp_path: Path) -> None:
    """`pip install 'tracekit[cli]'` alone: the demo's services need the demo extra."""
    for missing in ("requests", "uvicorn"):
        (tmp_path / missing).mkdir()
        (tmp_path / missing / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {missing!r}'!r}, name={missing!r})\n"
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--store", str(tmp_path / "d.db")],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "tracekit: tracekit demo needs uvicorn, requests: pip install 'tracekit[demo]'\n"
    )
    assert not (tmp_path / "d.db").exists()


def test_the_demo_makes_its_store_and_folders_private_whatever_the_umask(tmp_path: Path) -> None:
    store = tmp_path / "made" / "by" / "demo.db"
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
         "--queue", "embedded", "--store", str(store)],
        capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modes = [oct(p.stat().st_mode & 0o777) for p in (store.parent.parent, store.parent, store)]
    assert modes == ["0o700", "0o700", "0o600"]


def test_a_store_path_with_brackets_and_spaces_is_shown_as_it_is_and_pastes(
    tmp_path: Path,
) -> None:
    """rich reads ``[...]`` as markup: such a path crashed the demo with a traceback (or lost
    its brackets), and the commands it suggests split a path with spaces in two."""
    store = tmp_path / "my [/b] stores" / "demo [x].db"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "2", "--no-canary",
         "--queue", "embedded", "--store", str(store)],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"→ store {store}\n" in result.stdout
    hints = [line.strip() for line in result.stdout.splitlines() if " trace " in line]
    assert hints, result.stdout
    argv = shlex.split(hints[0])
    assert argv[-2:] == ["--store", str(store)]
    pasted = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", *argv[1:], "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    assert json.loads(pasted.stdout)["correlation_id"] == argv[2]


@pytest.mark.parametrize(
    ("requests", "title", "searches"),
    [
        ("1", "1 checkout", []),  # neither failed nor slow
        ("2", "2 checkouts", ["search --min-duration 500"]),  # the second is a bulk order
        ("6", "6 checkouts", ["search --errors", "search --min-duration 500"]),
    ],
)
def test_every_hint_the_demo_prints_shows_something(
    tmp_path: Path, requests: str, title: str, searches: list[str]
) -> None:
    """With fewer than 6 checkouts none fails, yet the demo suggested ``search --errors``,
    which found nothing (exit 1); and its table was titled "1 checkouts"."""
    store = tmp_path / "hints.db"
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", requests, "--no-canary",
         "--queue", "embedded", "--store", str(store)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert title in [line.strip() for line in out.splitlines()]  # the table's title
    hints = [line.strip() for line in out.split("Explore further:\n", 1)[1].splitlines()[:5]]
    hints = [hint for hint in hints if hint.endswith(f"--store {store}")]
    assert [" ".join(shlex.split(h)[1:-2]) for h in hints if " search " in h] == searches
    assert len(hints) == 3 + len(searches)
    for hint in hints:
        pasted = subprocess.run(["bash", "-c", hint], capture_output=True, text=True, timeout=60)
        assert pasted.returncode == 0 and pasted.stdout, (hint, pasted.stderr)


def test_a_reader_that_leaves_early_changes_no_exit_status(tmp_path: Path) -> None:
    """`tracekit demo | head -3` under `set -o pipefail` failed with status 1 and no word why:
    rich exits 1 itself when its pipe closes. The demo now runs to its end, unseen, and exits
    0 like a demo that was read whole, with every service stopped."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "2", "--no-canary",
             "--queue", "embedded", "--store", str(tmp_path / "d.db")],
            stdout=write_end, stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (0, b"")
    search = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "search", "--store", str(tmp_path / "d.db"),
         "--format", "json"], capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(json.loads(search.stdout)["requests"]) == 2  # every checkout traced


def test_output_that_cannot_be_written_is_the_one_line_every_command_says(tmp_path: Path) -> None:
    """`tracekit demo > report.txt` on a full disk said `demo: [Errno 28] No space left on
    device`, where every other command says `cannot write the output: ...`; it still stops
    every process it started and removes its scratch folder."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with open("/dev/full", "wb") as full:
        demo = subprocess.Popen(
            [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
             "--queue", "embedded", "--store", str(tmp_path / "d.db")],
            stdout=full, stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "100", "TMPDIR": str(scratch)},
        )  # fmt: skip
        _, stderr = demo.communicate(timeout=120)

    assert (demo.returncode, stderr) == (
        2,
        b"tracekit: cannot write the output: No space left on device\n",
    )
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("width", [40, 60, 80])
def test_the_checkouts_table_loses_nothing_on_a_narrow_terminal(tmp_path: Path, width: int) -> None:
    """At 80 columns the demo's table of checkouts showed 'sku-…', 'serv…' and 'fulf…'; at 60
    every column but the ID was '…'; at 40 they had no width at all, gone without a sign. Where
    the table cannot hold each column's longest word, each checkout is a block of lines instead;
    every value is whole either way."""
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "6", "--no-canary",
         "--queue", "embedded", "--store", str(tmp_path / "d.db")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": str(width), "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("6 checkouts", 1)[1].split("slowest request", 1)[0].splitlines()
    assert max(len(line) for line in lines) <= width, lines
    assert "…" not in "".join(lines), lines
    words = " ".join(lines).replace("│", " ").split()
    for number in range(6):
        sku, quantity = checkout_for(number)
        assert {sku, f"x{quantity}"} <= set(words), (sku, lines)
    assert {"fulfilment,", "inventory", "services", "spans"} <= set(words), lines


def test_a_canary_store_another_user_left_in_a_shared_folder_is_refused_before_the_demo(
    tmp_path: Path,
) -> None:
    """Another user's empty ``tracekit-canary.db`` (mode 0666) beside ``--store`` in a shared
    folder: the demo ran its whole topology and the canary step's 1,200 requests (its services
    refused the file), then said 'internal error (BackendError: store ... is empty or not
    initialised yet)'. The file is now refused before anything starts, in one line."""
    import pwd

    from conditions import need

    need(os.geteuid() == 0, "root, to leave a file another user owns")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    left = shared / "tracekit-canary.db"
    left.touch()
    left.chmod(0o666)
    os.chown(left, pwd.getpwnam("nobody").pw_uid, -1)
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1",
         "--queue", "embedded", "--store", str(shared / "tracekit.db")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "another user" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and result.stdout == ""
    assert left.stat().st_size == 0


def test_a_canary_store_replaced_during_the_step_is_one_line(tmp_path: Path) -> None:
    """The canary step's store replaced by a file that is no store (or removed) while its
    services ran: reading the verdict said 'internal error (BackendError: store ...: file is not
    a database)'. It is now one line naming the store and why, exit 2."""
    canary_store = tmp_path / "tracekit-canary.db"
    demo = subprocess.Popen(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1",
         "--queue", "embedded", "--store", str(tmp_path / "tracekit.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "(canary)" in line:  # the step has begun; its verdict is read after its traffic
                canary_store.unlink()
                canary_store.write_text("not a database\n" * 100)
        _, stderr = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 2, stderr
    assert stderr.count("\n") == 1, stderr
    assert "internal error" not in stderr, stderr
    assert f"demo: store {canary_store}: file is not a database" in stderr, stderr


def test_a_store_path_its_services_cannot_take_is_refused_before_they_start(
    tmp_path: Path,
) -> None:
    """'tracekit demo → store PATH' wrote such a path raw (an ESC[2J in it cleared the terminal,
    a U+202E turned the rest of the line around), then started the eight services, which
    exited at once: tracekit.init refuses it in TRACEKIT_STORE ("demo service gateway
    exited"). It is refused before anything starts, shown with its escapes."""
    store = tmp_path / "a\x1b[2Jb\u202ec.db"
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "demo", "--requests", "1", "--no-canary",
         "--queue", "embedded", "--store", str(store)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: cannot use store {str(store)!r}: the demo's services take it in "
        "TRACEKIT_STORE, which holds at most 4096 printable characters, no surrounding spaces\n"
    )
    assert not store.exists()
