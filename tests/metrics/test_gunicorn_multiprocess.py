"""gunicorn with several workers: prometheus-client's multiprocess mode sums every worker.

Requests are spread over three sync workers (each request holds its worker for 0.2 s and twelve
arrive at once); whichever worker answers the scrape — the ``/metrics`` mount, or the metrics port
that the first worker bound — reports the whole server's count.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE, free_port, serve_in_thread
from prometheus_client.parser import text_string_to_metric_families

from tracekit.metrics import MAX_CLIENT_DESTINATIONS, MAX_CLIENT_STATUS_CODES

APPS = Path(__file__).parent / "apps"
REQUESTS = 12
GUNICORN_CONF = """
from tracekit.metrics import mark_process_dead

def child_exit(server, worker):
    mark_process_dead(worker.pid)
"""


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "gunicorn exited"
    return bool(httpx.get(url, timeout=2))


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@contextmanager
def _gunicorn(
    tmp_path: Path,
    *options: str,
    multiproc: Path | None = None,
    metrics_port: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, Path]]:
    """gunicorn serving apps/gunicorn_app.py on loopback with ``options``, multiprocess mode in
    ``multiproc`` (none without); yields its URL once it answers, and its log."""
    port = free_port()
    env = {
        **os.environ,
        "TRACEKIT_EXPORTER": "none",
        "TRACEKIT_EXPORT_LOGS": "false",
        "TRACEKIT_METRICS_PORT": str(metrics_port),
        **(extra_env or {}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiproc is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *options,
             "-b", f"127.0.0.1:{port}", "--chdir", str(APPS), "gunicorn_app:app"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # /metrics: answered by every worker, and no request the tests count
        wait_for(lambda: _answers(f"{url}/metrics", process), 30, "gunicorn", ignoring=UNREACHABLE)
        yield url, log
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(params=["mount", "port"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(app URL, metrics URL) of a 3-worker gunicorn in multiprocess mode."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    metrics_port = free_port() if request.param == "port" else 0
    options = ("-w", "3", "-c", str(conf))
    with _gunicorn(tmp_path, *options, multiproc=multiproc, metrics_port=metrics_port) as (url, _):
        yield url, f"http://127.0.0.1:{metrics_port}/" if metrics_port else f"{url}/metrics"


def test_metrics_are_summed_over_workers(server: tuple[str, str]) -> None:
    app_url, metrics_url = server
    with ThreadPoolExecutor(REQUESTS) as pool:
        # A new connection per request, so gunicorn hands them to whichever worker is free.
        responses = list(pool.map(lambda _: httpx.get(f"{app_url}/hello"), range(REQUESTS)))
    pids = {r.text for r in responses}
    assert len(pids) >= 2, "the requests must have been served by several workers"

    for _ in range(4):  # successive scrapes may be answered by different workers
        text = httpx.get(metrics_url).text
        counts = _samples(text, "http_server_request_duration_seconds_count")
        assert sum(counts.values()) == REQUESTS
        (labels,) = counts
        assert ("http_route", "/hello") in labels and ("service_name", "gunisvc") in labels
        active = _samples(text, "http_server_active_requests")
        assert sum(active.values()) == 0  # livesum over the live workers, none in flight


def test_the_former_lower_case_variable_name_is_summed_over_workers(tmp_path: Path) -> None:
    """prometheus-client still honours ``prometheus_multiproc_dir``, its variable's former name
    (with a deprecation warning): the workers wrote their values into the directory, yet the
    mount and the port each served one worker's requests (4 of 12), and the port's warning said
    to set the variable. Both now sum the directory, as prometheus-client's own collector does."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    metrics_port = free_port()
    env = {"prometheus_multiproc_dir": str(multiproc)}
    with _gunicorn(tmp_path, "-w", "3", metrics_port=metrics_port, extra_env=env) as (url, log):
        with ThreadPoolExecutor(REQUESTS) as pool:
            responses = list(pool.map(lambda _: httpx.get(f"{url}/hello"), range(REQUESTS)))
        assert len({r.text for r in responses}) >= 2, "served by several workers"
        for metrics_url in (f"{url}/metrics", f"http://127.0.0.1:{metrics_port}/"):
            counts = _samples(
                httpx.get(metrics_url).text, "http_server_request_duration_seconds_count"
            )
            assert sum(counts.values()) == REQUESTS, metrics_url
    assert "its scrapes miss this worker's metrics" not in log.read_text()


def test_the_created_samples_docs_metrics_md_promises_are_the_ones_scraped(
    tmp_path: Path,
) -> None:
    """docs/metrics.md said every counter exposes a ``_created`` sample; prometheus-client's
    multiprocess mode keeps no creation time in its files, and a 2-worker gunicorn's scrape has
    none, of a counter or a histogram. The doc says where they are and where they are not."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    with _gunicorn(tmp_path, "-w", "2", multiproc=multiproc) as (url, _):
        assert httpx.get(f"{url}/hello").status_code == 200
        assert httpx.get(f"{url}/consume?orders").status_code == 200  # a counter too
        text = httpx.get(f"{url}/metrics").text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"messaging_client_consumed_messages_total",
            "http_server_request_duration_seconds_count"} <= names  # fmt: skip
    assert not [name for name in names if name.endswith("_created")]
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    (said,) = [" ".join(part.split()) for part in doc.split("\n\n")
               if part.startswith("Counters and histograms")]  # fmt: skip
    assert "in multiprocess mode" in said and "they have none" in said, said


def test_an_unreadable_worker_file_costs_only_its_own_values(
    server: tuple[str, str], tmp_path: Path
) -> None:
    """prometheus-client creates a worker's file empty, then sizes it: a worker killed in
    between leaves an empty file for good, and every scrape of the server answered 500 (the
    whole merge failed on it). The scrape now leaves that file out and counts the others."""
    app_url, metrics_url = server
    for _ in range(3):
        assert httpx.get(f"{app_url}/hello").status_code == 200
    (tmp_path / "multiproc" / "histogram_4194304.db").touch()  # a pid that never returns
    scrape = httpx.get(metrics_url)
    assert scrape.status_code == 200
    counts = _samples(scrape.text, "http_server_request_duration_seconds_count")
    assert sum(counts.values()) == 3


def test_a_multiprocess_directory_named_with_brackets_is_scraped(tmp_path: Path) -> None:
    """A directory whose name holds glob characters (a deployment's colour, ``metrics[blue]``):
    the scrape looked for the files with the name as a pattern, found none, and showed no
    request at all."""
    multiproc = tmp_path / "metrics[blue]"
    multiproc.mkdir()
    with _gunicorn(tmp_path, "-w", "2", multiproc=multiproc) as (url, _):
        for _ in range(3):
            assert httpx.get(f"{url}/hello").status_code == 200
        scrape = httpx.get(f"{url}/metrics").text
    counts = _samples(scrape, "http_server_request_duration_seconds_count")
    assert sum(counts.values()) == 3, scrape


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_preloaded_workers_without_multiprocess_mode_are_said_unserved_once(
    tmp_path: Path, multiprocess: bool
) -> None:
    """``--preload``: init runs in the master, which serves the metrics port; the workers it
    forks count requests nobody serves. Without multiprocess mode a scrape said 0 requests and
    nothing said why; the master now says so once, naming the remedy."""
    multiproc = tmp_path / "multiproc" if multiprocess else None
    if multiproc is not None:
        multiproc.mkdir()
    options = ("--preload", "-w", "3")
    with _gunicorn(tmp_path, *options, multiproc=multiproc, metrics_port=free_port()) as gunicorn:
        url, log = gunicorn
        for _ in range(3):
            httpx.get(f"{url}/hello")
    said = log.read_text().count("the child's metrics are not served")
    assert said == (0 if multiprocess else 1), log.read_text()
    if not multiprocess:
        assert "set PROMETHEUS_MULTIPROC_DIR" in log.read_text()


def test_workers_without_multiprocess_mode_say_their_metrics_are_not_served(
    tmp_path: Path,
) -> None:
    """Three workers, no ``PROMETHEUS_MULTIPROC_DIR``: the first to start serves the metrics
    port with its own counts only, and a scrape showed about a third of the traffic. The others
    said only that the port was unavailable; each now names the remedy."""
    with _gunicorn(tmp_path, "-w", "3", metrics_port=free_port()) as (_, log):
        wait_for(
            lambda: log.read_text().count("unavailable (Address already in use)") == 2,
            10, "the two workers that found the port taken to say so",
        )  # fmt: skip
    assert (
        log.read_text().count(
            "if a worker of this server holds it, its scrapes miss this worker's metrics: "
            "set PROMETHEUS_MULTIPROC_DIR"
        )
        == 2
    ), log.read_text()


def test_after_a_reload_the_new_worker_serves_the_metrics_port(tmp_path: Path) -> None:
    """One worker, no multiprocess mode, and gunicorn's reload (``kill -HUP``), which starts the
    new worker before it stops the old one: the new worker found the port taken and gave up for
    good, and once the old one had gone nobody served the metrics until the next restart."""
    metrics_port = free_port()
    with _gunicorn(tmp_path, "-w", "1", metrics_port=metrics_port) as (url, log):
        old = httpx.get(f"{url}/hello").text
        master = int(log.read_text().split("Listening at: ")[1].split("(")[1].split(")")[0])
        os.kill(master, signal.SIGHUP)
        wait_for(lambda: httpx.get(f"{url}/hello").text != old, 20, "the new worker")
        scrape = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=2), 10,
            "the metrics port served again", ignoring=UNREACHABLE,
        )  # fmt: skip
        assert 'http_route="/hello"' in scrape.text


def test_a_worker_recycled_by_max_requests_frees_the_metrics_port_as_it_starts_exiting(
    tmp_path: Path,
) -> None:
    """The worker serving the metrics port for all kept it through its whole exit (the flush at
    exit, the interpreter's finalization): scrapes in that time were taken and then reset as the
    process ended, and its siblings could take the port over only once it had gone (measured:
    2.0-2.6 s without a served scrape at each such recycle). It frees the port as its exit
    begins: the application's own exit hooks already find it free."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    probe = tmp_path / "probe"
    options = ("-w", "1", "--max-requests", "2")
    env = {"GUNISVC_EXIT_PROBE": str(probe)}
    with _gunicorn(
        tmp_path, *options, multiproc=multiproc, metrics_port=free_port(), extra_env=env
    ) as (url, _):
        for _ in range(2):
            httpx.get(f"{url}/hello").raise_for_status()
        wait_for(probe.exists, 20, "a worker's exit")
    assert probe.read_text().splitlines()[0] == "bound"


def test_a_missing_multiprocess_directory_does_not_stop_the_workers_booting(
    tmp_path: Path,
) -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` naming a directory nobody created: the middleware and the
    ``/metrics`` mount raised while the app module was imported, and gunicorn stopped with
    "Worker failed to boot". The app now serves its requests, traced, and says why it has no
    metrics."""
    missing = tmp_path / "never-created"
    with _gunicorn(tmp_path, "-w", "2", multiproc=missing) as (url, log):
        hello = httpx.get(f"{url}/hello")
        assert hello.status_code == 200 and hello.headers["X-Correlation-ID"]
        scrape = httpx.get(f"{url}/metrics")
        assert scrape.status_code == 200
    text = log.read_text()
    assert "Worker failed to boot" not in text
    assert "tracekit: HTTP server metrics failed (FileNotFoundError)" in text
    assert "PROMETHEUS_MULTIPROC_DIR is not set or not a directory" in text


def test_a_multiprocess_directory_set_too_late_is_said(tmp_path: Path) -> None:
    """prometheus-client decides where values live when it is imported. gunicorn.conf.py
    importing tracekit.metrics (for ``child_exit``) and then setting PROMETHEUS_MULTIPROC_DIR
    left every worker counting in its own memory while the scrape read the empty directory:
    requests served, no HTTP samples, no word why. Each worker now says so, naming the remedy."""
    (tmp_path / "multiproc").mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        GUNICORN_CONF + f"\nimport os\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = "
        f"{str(tmp_path / 'multiproc')!r}\n"
    )
    with _gunicorn(tmp_path, "-w", "2", "-c", str(conf)) as (_, log):
        wait_for(
            lambda: log.read_text().count("was set after prometheus_client was imported") == 2,
            10, "both workers to say so",
        )  # fmt: skip
    assert "set PROMETHEUS_MULTIPROC_DIR in the environment the server starts with" in (
        log.read_text()
    )


def _recorded_after_recycling(
    tmp_path: Path,
    paths: list[str],
    family: str,
    label: str,
    *options: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[set[str], float]:
    """GET each of ``paths`` from one gunicorn worker recycled every 30 requests
    (``--max-requests``), then scrape: the values of ``label`` in ``family``'s series, and
    their count summed."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir(exist_ok=True)  # (a test may have put files of its own in it)
    options = ("-w", "1", "--max-requests", "30", *options)
    # One client for every request: httpx.get() builds a client, and its SSL context, per call
    # (50-80 ms of CPU, most of the test's time). Gunicorn's sync worker closes every
    # connection, so each request still arrives on a connection of its own.
    with (
        _gunicorn(tmp_path, *options, multiproc=multiproc, extra_env=extra_env) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        for path in paths:
            assert client.get(path).status_code == 200
        text = client.get("/metrics").text
    counts = _samples(text, family)
    return {dict(labels)[label] for labels in counts}, sum(counts.values())


CLIENT_DESTINATIONS = MAX_CLIENT_DESTINATIONS + 50  # each worker's calls, a new one each


def _client_ports_after_recycling(
    tmp_path: Path, *gunicorn_args: str, extra_env: dict[str, str] | None = None
) -> tuple[set[str], float]:
    """``_recorded_after_recycling`` of calls to ``CLIENT_DESTINATIONS`` ports: the
    ``server_port`` values of the client histogram and its count of calls."""
    ports = range(40_000, 40_000 + CLIENT_DESTINATIONS)
    return _recorded_after_recycling(
        tmp_path, [f"/call?{port}" for port in ports],
        "http_client_request_duration_seconds_count", "server_port",
        *gunicorn_args, extra_env=extra_env,
    )  # fmt: skip


def test_workers_recycled_by_max_requests_keep_the_client_destinations_capped(
    tmp_path: Path,
) -> None:
    """Each worker capped the destinations of its own calls: one recycled every 30 requests
    (``--max-requests``) admitted 100 new ones each time, and every exited worker's series
    stay in the directory. The cap is now the server's, however often workers restart."""
    ports, total = _client_ports_after_recycling(tmp_path)
    assert len(ports) == MAX_CLIENT_DESTINATIONS + 1, sorted(ports)  # and "_other"
    assert total == CLIENT_DESTINATIONS


def test_preloaded_workers_recycled_by_max_requests_keep_the_client_destinations_capped(
    tmp_path: Path,
) -> None:
    """``--preload`` with an app that calls out as it starts (its settings): the master made
    the client metrics, and every worker forked from it counted only the master's destinations
    against the cap, never those its recycled predecessors recorded."""
    ports, total = _client_ports_after_recycling(
        tmp_path, "--preload", extra_env={"GUNISVC_CALL_AT_START": "39999"}
    )
    assert len(ports) == MAX_CLIENT_DESTINATIONS + 1, sorted(ports)  # and "_other"
    assert total == CLIENT_DESTINATIONS + 1  # and the master's call


def test_recycled_workers_count_the_destinations_beside_files_of_other_kinds(
    tmp_path: Path,
) -> None:
    """A worker counts the destinations its predecessors recorded from their histogram files
    alone: the directory also holds a killed worker's empty files, a counter file and another
    program's database, none of which may stop it counting or booting."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (multiproc / "histogram_4194304.db").touch()  # killed before prometheus-client sized it
    (multiproc / "counter_4194305.db").touch()
    with sqlite3.connect(multiproc / "other-program.db") as other:
        other.execute("CREATE TABLE notes (body TEXT)")
    ports, total = _client_ports_after_recycling(tmp_path)
    assert len(ports) == MAX_CLIENT_DESTINATIONS + 1, sorted(ports)  # and "_other"
    assert total == CLIENT_DESTINATIONS


MAX_MESSAGING_DESTINATIONS = 200  # per service (docs/metrics.md)


def test_workers_recycled_by_max_requests_keep_the_messaging_destinations_capped(
    tmp_path: Path,
) -> None:
    """Each worker capped the queue and topic names of its own messages: one recycled every 30
    requests admitted 200 new ones each time (250 streams through one worker: 250 series). The
    cap is now the server's, however often workers restart."""
    destinations = MAX_MESSAGING_DESTINATIONS + 50
    paths = [f"/consume?stream-{number}" for number in range(destinations)]  # a new one each
    names, total = _recorded_after_recycling(
        tmp_path, paths, "messaging_process_duration_seconds_count", "messaging_destination_name"
    )
    assert len(names) == MAX_MESSAGING_DESTINATIONS + 1, sorted(names)  # and "_other"
    assert total == destinations


class _AnswerWithThePath(BaseHTTPRequestHandler):
    """Answers ``GET /404`` with a 404: a peer choosing its status codes."""

    def do_GET(self) -> None:
        self.send_response(int(self.path.lstrip("/")))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[int]:
    """The port of a loopback HTTP server answering each path's status code."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnswerWithThePath)
    stop = serve_in_thread(server)
    yield server.server_address[1]
    stop()


def test_workers_recycled_by_max_requests_keep_a_destinations_status_codes_capped(
    tmp_path: Path, peer: int
) -> None:
    """Each worker capped the status codes of a destination's answers in its own memory: one
    recycled every 30 requests admitted 20 new codes each time (60 codes from one peer: 41
    series). The cap is now the server's."""
    codes = range(400, 460)
    statuses, total = _recorded_after_recycling(
        tmp_path, [f"/call?{peer}/{code}" for code in codes],
        "http_client_request_duration_seconds_count", "http_response_status_code",
    )  # fmt: skip
    assert len(statuses) == MAX_CLIENT_STATUS_CODES + 1, sorted(statuses)  # and "_other"
    assert total == len(codes)


def test_workers_recycled_many_times_keep_exact_totals_in_few_files(tmp_path: Path) -> None:
    """Every worker gunicorn's ``--max-requests`` recycled left its files in the directory, and
    every scrape read them all: a server recycling its workers all day gathered thousands, and
    its scrapes took longer than Prometheus waits (1,000 exited workers: 20 s a scrape). A
    scrape of the metrics port now folds the exited workers' files into one per kind (and so
    does ``mark_process_dead`` in the master as it reaps one): the count stays that of the
    requests served, and the directory holds the files of a few workers at most."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/"
    options = ("-w", "2", "--max-requests", "5", "-c", str(conf))
    nobody = free_port()  # each request calls it out, refused at once
    served = 0
    workers: set[str] = set()
    with (
        _gunicorn(tmp_path, *options, multiproc=multiproc, metrics_port=metrics_port) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        for _ in range(8):
            for _ in range(10):
                workers.add(client.get(f"/call?{nobody}").text)
                served += 1
            # the worker serving the port may be recycled: another takes it within half a second
            scrape = wait_for(lambda: httpx.get(metrics_url, timeout=5), 10, "a scrape",
                              ignoring=UNREACHABLE)  # fmt: skip
            server = _samples(scrape.text, "http_server_request_duration_seconds_count")
            client_calls = _samples(scrape.text, "http_client_request_duration_seconds_count")
            assert sum(server.values()) == sum(client_calls.values()) == served
            files = os.listdir(multiproc)
            pids = {found[1] for name in files if (found := re.fullmatch(r"\D+_(\d+)\.db", name))}
            assert len(pids) <= 4, sorted(files)  # 2 workers, 2 being replaced
    assert len(workers) >= 12  # (80 requests and 8 scrapes, 5 requests a worker)
    assert sorted(os.listdir(multiproc)) == [
        "histogram_folded.db", "tracekit-fold.lock"
    ]  # fmt: skip
