"""``tracekit collector`` as a user runs it: one line saying where, SIGTERM stops it cleanly."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conditions import need, wait_for
from loopback import free_port, wait_for_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from ordinary_user import as_an_ordinary_user
from tests.receiver._collector_process import _children, start_collector
from tests.receiver.test_address import _link_local

from tracekit.store import Store
from tracekit.store._schema import MIGRATIONS, SCHEMA_VERSION
from tracekit_cli.main import cli

ENTRY = [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector"]


def _one_span() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "hello"
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()  # inside --retention
    return request.SerializeToString()


def test_collector_prints_where_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    store_path = tmp_path / "c.db"
    process, port = start_collector(store_path, "--retention", "7d", "--max-size", "2GB")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/traces", _one_span(), {"Content-Type": "application/x-protobuf"})
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read())["status"] == "ok"
    conn.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert [s.name for s in Store(store_path).spans_by_trace_ids(["01" * 16])] == ["hello"]


def test_collector_line_names_endpoint_and_store(tmp_path: Path) -> None:
    process, _ = start_collector(tmp_path / "line.db")
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(30) == 0
    assert store_exists(tmp_path / "line.db")


_STALLED_HEADERS = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
)


def test_a_second_ctrl_c_stops_at_once_and_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    store_path = tmp_path / "twice.db"
    process, port = start_collector(store_path)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/traces", _one_span(), {"Content-Type": "application/x-protobuf"})
    assert conn.getresponse().status == 200
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(_STALLED_HEADERS)
        # the collector's "100 Continue" says it is reading this request (it was once signalled
        # before it read the headers: an idle connection then, closed at once, and it stopped)
        assert stalled.recv(64).startswith(b"HTTP/1.1 100")
        stalled.sendall(b"0123456789")  # and the other 90 bytes never come
        process.send_signal(signal.SIGINT)  # waits for the stalled request (up to 30 s)
        time.sleep(0.5)
        assert process.poll() is None
        started = time.monotonic()
        process.send_signal(signal.SIGINT)  # Ctrl-C again: the user does not want to wait
        assert process.wait(10) == 130 and time.monotonic() - started < 5
    assert process.stderr is not None
    assert process.stderr.read() == (
        "tracekit collector: stopped without waiting for the requests in flight"
        " (none of them was acknowledged)\n"
    )
    assert Store(store_path).count_spans() == 1


def store_exists(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def test_collector_defaults_store_to_tracekit_store_env(tmp_path: Path) -> None:
    env = {**os.environ, "TRACEKIT_STORE": str(tmp_path / "env.db"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([*ENTRY, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert line.startswith("tracekit collector listening on http://127.0.0.1:")
    assert line.rstrip().endswith(f"storing in {tmp_path / 'env.db'}")


def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*ENTRY, "--port", str(port), "--store", str(tmp_path / "p.db")],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (  # said only what, not what to do: a second collector is typical
        f"tracekit collector: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (another collector? --port PORT for another port)\n"
    )


def test_bad_retention_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([*ENTRY, "--retention", "soon", "--store", str(tmp_path / "r.db")],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2 and "not a duration" in result.stderr


def test_retention_without_a_unit_is_refused(tmp_path: Path) -> None:
    """`--retention 7` (meant as the docs' 7d) was 7 seconds: the collector started, and its next
    retention pass deleted every record older than that."""
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "kept.db")]
    command += ["--retention", "7"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "tracekit: Invalid value for '--retention': give '7' a unit: 7d, 12h, 30m, 45s"
        " (see 'tracekit collector --help')\n"
    )


@pytest.mark.parametrize("age", ["1M", "90M"])
def test_retention_in_upper_case_minutes_is_refused(tmp_path: Path, age: str) -> None:
    """`--retention 1M`, a month as the user meant it, was a minute: the collector started, and
    its first retention pass deleted every record older than that. (Other units in upper case,
    `7D`, mean what they meant before: nothing else reads as a month.)"""
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "kept.db")]
    result = subprocess.run([*command, "--retention", age], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"tracekit: Invalid value for '--retention': write '{age}' in lower case: m is minutes,"
        " 30d a month (see 'tracekit collector --help')\n"
    )


@pytest.mark.parametrize("option", ["--retention", "--max-size"])
def test_an_empty_retention_or_size_is_refused(tmp_path: Path, option: str) -> None:
    """`--retention "$RETENTION"` with the variable unset started a collector that kept
    everything, the store growing until the disk was full, as if no limit had been asked for;
    it is refused, as an empty --host or --store is."""
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "e.db")]
    result = subprocess.run([*command, option, ""], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"tracekit: Invalid value for '{option}': empty")
    assert len(result.stderr.splitlines()) == 1


def test_a_small_max_size_without_a_unit_says_it_is_bytes(tmp_path: Path) -> None:
    """`--max-size 500`, meant as megabytes, was refused with "max size must be at least 1MB"
    alone, which 500 MB is."""
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "s.db")]
    command += ["--max-size", "500"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == (
        "tracekit: Invalid value for '--max-size': max size must be at least 1MB ('500' without"
        " a unit is bytes: 500MB, 2GB) (see 'tracekit collector --help')\n"
    )


def test_store_from_a_newer_tracekit_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    Store(path).create()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    result = subprocess.run([*ENTRY, "--port", "0", "--store", str(path)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"tracekit collector: cannot open store {path}: ")
    assert "newer" in result.stderr


def _schema_1_store(path: Path) -> None:
    """A store as the tracekit before migration 2 left it: its first migration's SQL alone."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")


def test_upgrading_an_older_store_says_so_once(tmp_path: Path) -> None:
    """Numbering a store up makes every older tracekit still writing it fail each write as
    "newer" (an older collector printed a traceback per request and lost its spans): the newer
    collector, where the operator looks, said nothing of it."""
    path = tmp_path / "v1.db"
    _schema_1_store(path)
    runs = []
    for _ in range(2):
        process, _port = start_collector(path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stderr is not None
        runs.append(process.stderr.read())
    assert runs == [
        f"tracekit: upgraded store {path} from schema 1 to {SCHEMA_VERSION}: a tracekit of"
        " schema 1 still writing it (a collector, a service's store exporter) cannot write it any"
        " more, at once or when it opens it again; upgrade it too\n",
        "",
    ]


def test_a_store_path_that_cannot_be_made_is_named_once(tmp_path: Path) -> None:
    """The line said the path twice: `cannot open store F/x.db: [Errno 20] Not a directory:
    'F/x.db'`."""
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "x.db"
    result = subprocess.run([*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(path)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"tracekit collector: cannot open store {path}: Not a directory\n"


def test_a_lock_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    """A folder (or a symbolic link) where the store's lock file goes: the line said `cannot
    open store F/x.db: Is a directory` of a store that is a file, or none yet."""
    path = tmp_path / "x.db"
    (tmp_path / "x.db-lock").mkdir()
    result = subprocess.run([*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(path)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"tracekit collector: cannot open store {path}: its lock file x.db-lock: Is a directory\n"
    )


def test_the_error_line_shows_no_control_characters_of_the_path(tmp_path: Path) -> None:
    """The store path is echoed in the error; an escape sequence in it is not sent to the
    terminal (it could clear the screen or rewrite the line)."""
    path = tmp_path / "junk\x1b[2J\x07.db"
    path.write_bytes(b"not a database at all" * 100)
    result = subprocess.run([*ENTRY, "--port", "0", "--store", str(path)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("tracekit collector: ")
    assert "junk" in result.stderr
    assert not any(ch in result.stderr for ch in "\x1b\x07")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--retention", "999999999999d", "at most 36500d"),
        ("--retention", "9" * 400, "at most 36500d"),
        ("--max-size", "999999999TB", "at most 1000TB"),
        ("--max-size", "9" * 400 + "GB", "at most 1000TB"),
    ],
)
def test_retention_or_size_beyond_reason_is_one_line_and_exit_2(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "big.db")]
    result = subprocess.run([*command, option, value], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr


def test_read_only_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    store = Store(path)
    store.create()
    store.close()
    path.chmod(0o400)
    command = [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(path)]
    result = subprocess.run(
        [*as_an_ordinary_user(), *command], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"tracekit collector: cannot open store {path}: attempt to write a readonly database\n"
    )


def test_an_ipv6_host_in_url_brackets_is_taken(tmp_path: Path) -> None:
    """The collector says `listening on http://[::1]:PORT`; `--host [::1]`, copied from there,
    failed: "cannot listen on [[::1]]:0: Name or service not known" (exit 2)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    line = _listening_line("[::1]", tmp_path / "v6.db")
    assert line.startswith("tracekit collector listening on http://[::1]:")


def _listening_line(host: str, store: Path) -> str:
    """The line ``tracekit collector --host host`` starts with; it then stops cleanly."""
    process = subprocess.Popen([*ENTRY, "--host", host, "--port", "0", "--grpc-port", "0",
                                "--store", str(store)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.communicate()[1]
    return line


def test_one_stop_delivered_twice_still_waits_for_the_requests_in_flight(tmp_path: Path) -> None:
    """`timeout 60 tracekit collector` sends SIGTERM to the collector and then to its process
    group: the collector saw two signals a moment apart, took the second for an impatient
    user's, and exited at once ("stopped without waiting for the requests in flight")."""
    process, port = start_collector(tmp_path / "timeout.db")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(_STALLED_HEADERS)
        assert stalled.recv(64).startswith(b"HTTP/1.1 100")  # a request in flight
        process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # the same stop, to the process group
        time.sleep(0.5)
        assert process.poll() is None  # still waiting for the request in flight
        process.send_signal(signal.SIGTERM)  # a second stop, asked for later: at once
        assert process.wait(10) == 128 + signal.SIGTERM


def test_the_grpc_endpoint_the_help_gives_reaches_the_collector(tmp_path: Path) -> None:
    """An SDK set up as ``tracekit collector --help`` says exports over gRPC into the store
    (``HOST:4317`` alone, as the help said before, made OpenTelemetry's gRPC exporter try TLS)."""
    shown = " ".join(CliRunner().invoke(cli, ["collector", "--help"]).stdout.split())
    match = re.search(r"\((?:\S+ )?or (\S*HOST:4317) ", shown)
    assert match, shown
    grpc_port = free_port()
    endpoint = match.group(1).replace("HOST:4317", f"127.0.0.1:{grpc_port}")
    store_path = tmp_path / "grpc.db"
    process, _ = start_collector(store_path, "--grpc-port", str(grpc_port))
    service = (
        "import tracekit; from opentelemetry import trace; tracekit.init('billing');"
        " trace.get_tracer('t').start_span('charge').end(); tracekit.shutdown()"
    )
    env = {
        **os.environ, "TRACEKIT_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_EXPORT_TIMEOUT": "3000",
        "TRACEKIT_EXPORT_LOGS": "false", "TRACEKIT_METRICS_PORT": "0",
    }  # fmt: skip
    try:
        subprocess.run([sys.executable, "-c", service], env=env, timeout=60, check=True)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0

    stored = Store(store_path).spans_since(0)
    assert [(s.service, s.name) for s in stored] == [("billing", "charge")]


@pytest.mark.parametrize("stdout", ["/dev/full", "closed pipe"])
def test_a_stdout_that_cannot_take_the_listening_line_does_not_stop_the_collector(
    tmp_path: Path, stdout: str
) -> None:
    """The listening line is news, not the collector's job: with stdout on a full disk, or a
    pipe whose reader has gone, it said "internal error" (exit 2) or just ended (exit 1), and
    exporters lost their collector. It now serves on, and stores what it is sent."""
    port = free_port()
    command = [*ENTRY, "--store", str(tmp_path / "s.db"), "--port", str(port), "--grpc-port", "0"]
    if stdout == "/dev/full":
        with open("/dev/full", "w") as full:
            process = subprocess.Popen(command, stdout=full, stderr=subprocess.PIPE)
    else:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None
        process.stdout.close()  # the reader left before the line was written
    try:
        wait_for_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/traces", _one_span(), {"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
        assert process.poll() is None, process.communicate()[1]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"Traceback" not in err and b"internal error" not in err
    assert [s.name for s in Store(tmp_path / "s.db").spans_by_trace_ids(["01" * 16])] == ["hello"]


def test_a_named_pipe_at_the_store_path_is_named_and_left_alone(tmp_path: Path) -> None:
    """Whatever is at the path that is not a file is refused before SQLite opens it. A pipe
    said 'disk I/O error'; a block device (run as root: /dev/loop0 holding ext4) had SQLite's
    header written over its first page, the file system's superblock, and /dev/null got a
    /dev/null-journal beside it."""
    path = tmp_path / "pipe.db"
    os.mkfifo(path)
    result = subprocess.run([*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(path)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr == f"tracekit collector: cannot open store {path}: a named pipe, not a file\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.db"]


def _writer_process(collector: int) -> int | None:
    """The collector's writer process (not multiprocessing's resource tracker), once started."""
    for pid in _children(collector):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def _interpreter_started(pid: int) -> bool:
    """Whether ``pid`` runs Python: it catches SIGINT (KeyboardInterrupt), or, past its
    start, ignores it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    sigint = 1 << (signal.SIGINT - 1)
    return bool((int(masks.get("SigCgt", "0"), 16) | int(masks.get("SigIgn", "0"), 16)) & sigint)


def test_ctrl_c_while_its_writer_process_starts_shows_no_traceback(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group. The writer process ignored it only once it
    had imported the store: Ctrl-C in the first moments of a collector printed the writer's
    KeyboardInterrupt traceback (two runs in five, signalled as soon as it said it listened)."""
    process = subprocess.Popen(
        [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(tmp_path / "c.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        writer = wait_for(lambda: _writer_process(process.pid), what="the writer process")
        wait_for(lambda: _interpreter_started(writer), what="the writer's interpreter to start")
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of it
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # a failed wait: the collector would outlive the test
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert (process.returncode, stderr) == (0, "")


def test_a_link_local_host_as_the_listening_line_writes_it_is_taken(tmp_path: Path) -> None:
    """The listening line writes a link-local address's interface as a URL does,
    ``http://[fe80::1%25eth0]:PORT``; ``--host [fe80::1%25eth0]``, copied from there, failed:
    "cannot listen on [fe80::1%25eth0]:PORT: Name or service not known" (exit 2)."""
    host = _link_local()
    need(bool(host), "a link-local IPv6 address on this machine")
    url_host = f"[{host.replace('%', '%25')}]"
    line = _listening_line(url_host, tmp_path / "v6.db")
    assert line.startswith(f"tracekit collector listening on http://{url_host}:")


@pytest.mark.parametrize("host", ["a\u202eb", "[::1%25\u202elo]", "\ufffd"])
def test_a_host_no_address_or_name_can_be_is_refused_in_one_line(tmp_path: Path, host: str) -> None:
    """A --host holding what no host name can (a bidi override pasted with an address, the
    U+FFFD of bytes the locale could not read) read 'tracekit: internal error (TypeError:
    encoding of hostname failed)' or '(UnicodeError: encoding with 'idna' codec failed ...)'."""
    result = subprocess.run([*ENTRY, "--host", host, "--port", "0", "--grpc-port", "0",
                             "--store", str(tmp_path / "h.db")],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
    assert "Invalid value for '--host': no address or host name can hold" in result.stderr
    assert "\u202e" not in result.stderr  # named by its escape, never written raw


@pytest.mark.parametrize(
    ("host", "instead"),
    [
        ("0.0.0.0:4318", "--host 0.0.0.0 --port 4318"),
        ("http://localhost:4318/v1/traces", "--host localhost --port 4318"),
        ("[::1]:4318", "--host [::1] --port 4318"),
        ("http://collector", "--host collector"),
        # the OpenTelemetry Collector's own spelling of every interface (``endpoint: :4318``),
        # which was told "give --host --port 4318": a --host without its address
        (":4318", "--host 0.0.0.0 --port 4318"),
        ("http://:4318", "--host 0.0.0.0 --port 4318"),
    ],
)
def test_a_host_written_as_an_endpoint_is_told_the_options_to_give(
    tmp_path: Path, host: str, instead: str
) -> None:
    """An address with its port, or an endpoint copied from OTEL_EXPORTER_OTLP_ENDPOINT, was
    looked up as a host name: "cannot listen on [0.0.0.0:4318]:4318: Name or service not
    known". The line now says what to type."""
    result = subprocess.run([*ENTRY, "--host", host, "--port", "0", "--grpc-port", "0",
                             "--store", str(tmp_path / "h.db")],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: Invalid value for '--host': {host!r} is more than an address: give"
        f" {instead} (see 'tracekit collector --help')\n"
    )
    assert not (tmp_path / "h.db").exists()


def test_an_ipv6_address_ending_in_digits_is_not_read_as_a_port(tmp_path: Path) -> None:
    line = _listening_line("::1", tmp_path / "alone.db")
    assert line.startswith("tracekit collector listening on http://[::1]:")


def test_the_listening_line_shows_no_control_characters_of_the_path(tmp_path: Path) -> None:
    """The listening line wrote the store path raw: an OSC 8 hyperlink and a bell in it went to
    the terminal (the error lines clean the path: see above). It is now quoted, escaped."""
    path = tmp_path / "a\x1b]8;;http://evil\x07b.db"
    line = _listening_line("127.0.0.1", path)
    assert line.startswith("tracekit collector listening on http://127.0.0.1:")
    assert line.rstrip().endswith(f"storing in {str(path)!r}")
    assert not any(ch in line for ch in "\x1b\x07")


def test_a_second_ctrl_c_while_a_batch_is_written_shows_no_traceback(tmp_path: Path) -> None:
    """Ctrl-C twice while the writer process committed a batch: the collector exited at once,
    the writer's answer then met a closed pipe, and its BrokenPipeError traceback (twice over)
    was printed on the terminal after the collector's own line."""
    store_path = tmp_path / "busy.db"
    process, port = start_collector(store_path)
    writer = wait_for(lambda: _writer_process(process.pid), what="the writer process")
    os.kill(writer, signal.SIGSTOP)  # a long commit: the batch waits in its pipe meanwhile
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            body = _one_span()
            client.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            time.sleep(1)  # decoded and queued by now
            wait_for(lambda: _health(port)["queued"] == 0, what="the batch handed to the writer")
            process.send_signal(signal.SIGINT)
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)  # the user does not want to wait
            assert process.wait(10) == 130
    finally:
        os.kill(writer, signal.SIGCONT)
    _, stderr = process.communicate(timeout=30)  # the writer holds stderr until it ends
    assert stderr == (
        "tracekit collector: stopped without waiting for the requests in flight"
        " (none of them was acknowledged)\n"
    )
    assert Store(store_path).count_spans() == 1  # written, though never acknowledged


def _health(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        answer: dict[str, Any] = json.loads(conn.getresponse().read())
        return answer
    finally:
        conn.close()
