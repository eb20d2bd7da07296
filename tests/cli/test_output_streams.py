"""What the read commands do with a stdout that is not a UTF-8 terminal.

The installed ``tracekit`` runs in a subprocess: an encoding that lacks a character the view
draws (latin-1 has no arrow, ascii no accent), and a reader that has closed the pipe
(``tracekit trace ID | head -1``). Either way the command prints what it can, says nothing of it
on stderr, and exits with the status its result gives.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import functools
import json
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import click
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import T0, Topology, checkout, incident

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import COMMANDS

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
SINCE = "2023-11-14T22:00:00+00:00"
WINDOW = ("--start", "2023-11-14T22:13:20+00:00", "--end", "2023-11-14T22:43:20+00:00")


def versions(version: str, n: int, *, seed: int, scale: float = 1.0) -> list[SpanRecord]:
    """``n`` requests of one version of "orders", spread over the canary window."""
    rng = random.Random(seed)
    spans = []
    for i in range(n):
        start = T0 + rng.randrange(1_800 * 10**9)
        duration = int(0.05e9 * scale * rng.lognormvariate(0, 0.5))
        number = seed * 10_000 + i + 1
        spans.append(SpanRecord(
            f"{number:032x}", f"{number:016x}", None, "orders", "GET /orders", "SERVER",
            start, start + duration, attributes={"http.route": "/orders"},
            resource={"service.name": "orders"}, service_version=version,
        ))  # fmt: skip
    return spans


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    accented = Topology("req-café")
    root = accented.span("café", "GET /crème-brûlée", "SERVER", 500, 600)
    accented.http(root, "pâtisserie", "/gâteau", 510, 590)
    path = tmp_path_factory.mktemp("streams") / "tracekit.db"
    with Store(path) as s:
        for t in (checkout(), incident(), accented):
            s.write_spans(t.spans)
            s.write_logs(t.logs)
        s.write_spans(versions("1.0", 300, seed=1))
        s.write_spans(versions("1.1", 300, seed=2))  # the same: pass
        s.write_spans(versions("1.2", 300, seed=3, scale=2))  # twice as slow: fail
    return path


def commands(store: Path, fmt: str) -> dict[str, list[str]]:
    at = ["--store", str(store), "--format", fmt]
    canary = ["canary", "--service", "orders", "--baseline", "1.0", *WINDOW, *at]
    return {
        "trace": ["trace", "req-checkout-1", *at],
        "trace-accented": ["trace", "req-café", *at],
        "search": ["search", "--since", SINCE, *at],
        "services": ["services", "--since", SINCE, *at],
        "diff": ["diff", "req-checkout-1", "req-incident-9", *at],
        "canary-pass": [*canary, "--canary", "1.1"],
        "canary-fail": [*canary, "--canary", "1.2"],
    }


EXPECTED_STATUS = {"diff": 1, "canary-fail": 1}  # "different", "fail"; the others 0


def run(args: list[str], encoding: str = "utf-8") -> subprocess.CompletedProcess[bytes]:
    """``tracekit *args`` writing in ``encoding`` into a pipe. Several tests compare with the
    same command's output (in UTF-8, or on a terminal): it runs once per module, as the stores
    it reads are module fixtures nothing writes to after."""
    return _run(tuple(args), encoding)


@functools.cache
def _run(args: tuple[str, ...], encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "PYTHONIOENCODING": encoding}
    return subprocess.run([TRACEKIT, *args], capture_output=True, env=env, timeout=60)


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
@pytest.mark.parametrize("fmt", ["rich", "text"])
@pytest.mark.parametrize("name", list(commands(Path(), "text")))
def test_characters_the_stdout_encoding_lacks_are_replaced(
    store: Path, encoding: str, fmt: str, name: str
) -> None:
    args = commands(store, fmt)[name]

    result = run(args, encoding)

    assert result.stderr == b"" and result.returncode == EXPECTED_STATUS.get(name, 0)
    out = result.stdout.decode(encoding)  # every byte is the encoding's
    utf8 = run(args).stdout.decode()
    assert len(out.splitlines()) == len(utf8.splitlines())
    if name == "trace-accented":
        assert ("req-café" if encoding == "latin-1" else "req-caf?") in out
        assert "p?tisserie" in out if encoding == "ascii" else "pâtisserie" in out


@pytest.fixture(scope="module")
def unencodable_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A request whose ID and names have characters latin-1 lacks (an emoji, an arrow)."""
    request = Topology("req-☕-1")
    root = request.span("café", "GET /menü → ☕", "SERVER", 500, 600, attrs={"note": "😀"})
    request.http(root, "kitchen☕", "/brew", 510, 590)
    path = tmp_path_factory.mktemp("unencodable") / "tracekit.db"
    with Store(path) as s:
        for t in (checkout(), request):
            s.write_spans(t.spans)
    return path


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
@pytest.mark.parametrize("name", ["trace", "search", "services", "diff"])
def test_json_keeps_characters_the_stdout_encoding_lacks(
    unencodable_store: Path, encoding: str, name: str
) -> None:
    """`tracekit search --format json` under a latin-1 locale printed the root "GET /menü → ☕"
    as "GET /menü ? ?" and the correlation ID "req-☕-1" as "req-?-1", which `tracekit trace`
    then did not find; such characters are now JSON escapes, which decode to the same text."""
    at = ["--store", str(unencodable_store), "--format", "json"]
    args = {
        "trace": ["trace", "req-☕-1", *at],
        "search": ["search", "--since", SINCE, *at],
        "services": ["services", "--since", SINCE, *at],
        "diff": ["diff", "req-checkout-1", "req-☕-1", *at],
    }[name]

    result = run(args, encoding)

    assert result.stderr == b"" and result.returncode == (1 if name == "diff" else 0)
    document = json.loads(result.stdout.decode(encoding))  # every byte is the encoding's
    assert document == json.loads(run(args).stdout.decode())
    assert "☕" in json.dumps(document, ensure_ascii=False)


@pytest.mark.parametrize("fmt", ["rich", "text", "json"])
@pytest.mark.parametrize("name", list(commands(Path(), "text")))
def test_a_reader_that_closed_the_pipe_changes_no_exit_status(
    store: Path, fmt: str, name: str
) -> None:
    """`tracekit canary ... | head -1` under `set -o pipefail`: the verdict is the status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "COLUMNS": "100"}
    try:
        result = subprocess.run([TRACEKIT, *commands(store, fmt)[name]], stdout=write_end,
                                stderr=subprocess.PIPE, env=env, timeout=60)  # fmt: skip
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (EXPECTED_STATUS.get(name, 0), b"")


@pytest.mark.parametrize("fmt", ["rich", "text", "json"])
@pytest.mark.parametrize("name", list(commands(Path(), "text")))
def test_output_that_cannot_be_written_is_one_line_and_exit_2(
    store: Path, fmt: str, name: str
) -> None:
    """`tracekit trace ID > report.txt` on a full disk said `internal error (OSError: [Errno 28]
    No space left on device); TRACEKIT_DEBUG=1 shows the traceback`, as if tracekit had a bug;
    `search`, `services` and `canary` still said so with `--format rich`."""
    env = {**os.environ, "COLUMNS": "100"}
    with open("/dev/full", "wb") as full:
        result = subprocess.run([TRACEKIT, *commands(store, fmt)[name]], stdout=full,
                                stderr=subprocess.PIPE, env=env, timeout=60)  # fmt: skip

    assert result.returncode == 2
    assert result.stderr == b"tracekit: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("fmt", ["rich", "json"])
@pytest.mark.parametrize("name", list(commands(Path(), "text")))
def test_a_closed_stdout_changes_no_exit_status(store: Path, fmt: str, name: str) -> None:
    """`tracekit canary ... >&-` (nobody reads the output) ended in `internal error
    (AttributeError: 'NoneType' object has no attribute 'isatty')` and exit 2; like a reader
    that left, it now says nothing and exits with the result's status."""
    env = {**os.environ, "COLUMNS": "100"}
    result = subprocess.run([TRACEKIT, *commands(store, fmt)[name]], stderr=subprocess.PIPE,
                            env=env, timeout=60, preexec_fn=lambda: os.close(1))  # fmt: skip

    assert (result.returncode, result.stderr) == (EXPECTED_STATUS.get(name, 0), b"")


HELP_AND_VERSION = [["--version"], ["--help"], *([name, "--help"] for name in sorted(COMMANDS))]


@pytest.mark.parametrize("args", HELP_AND_VERSION, ids=" ".join)
def test_help_and_version_to_a_reader_that_closed_the_pipe_exit_0(args: list[str]) -> None:
    """`tracekit --version | true` and `tracekit trace --help | head -0` exited 1 (click's
    status for a closed pipe), failing a pipeline under `set -o pipefail`; like every other
    output, a reader that left changes nothing: exit 0, nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([TRACEKIT, *args], stdout=write_end, stderr=subprocess.PIPE,
                                timeout=60)  # fmt: skip
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (0, b"")


@pytest.mark.parametrize("args", HELP_AND_VERSION, ids=" ".join)
def test_help_and_version_that_cannot_be_written_are_one_line_and_exit_2(args: list[str]) -> None:
    """`tracekit --help > help.txt` on a full disk said `internal error (OSError: [Errno 28] No
    space left on device); TRACEKIT_DEBUG=1 shows the traceback`, as if tracekit had a bug."""
    with open("/dev/full", "wb") as full:
        result = subprocess.run([TRACEKIT, *args], stdout=full, stderr=subprocess.PIPE,
                                timeout=60)  # fmt: skip

    assert result.returncode == 2
    assert result.stderr == b"tracekit: cannot write the output: No space left on device\n"


def errors(store: Path) -> dict[str, tuple[list[str], int]]:
    """Commands that end with one line on stderr, and the status each documents."""
    at = ["--store", str(store)]
    return {
        "usage": (["trace", "--bogus"], 2),
        # the help: on stderr with status 2 as click 8.2 answers a bare `tracekit`, before on stdout
        "bare": ([], 2 if hasattr(click.exceptions, "NoArgsIsHelpError") else 0),
        "diff-missing": (["diff", "req-unknown", "req-checkout-1", *at], 3),
        "canary-usage": (
            ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.0", *at],
            2,
        ),
        "bad-since": (["search", "--since", "yesterday", *at], 2),
    }


@pytest.mark.parametrize("stderr", ["closed pipe", "full disk"])
@pytest.mark.parametrize("name", list(errors(Path())))
def test_a_stderr_that_cannot_be_written_changes_no_exit_status(
    store: Path, stderr: str, name: str
) -> None:
    """`tracekit diff A B 2>&1 | head -0` (or 2>> a log on a full disk) exited 1 whatever
    happened: a usage error (2) or a request not found by diff (3) read as "not found", diff's
    "different" or canary's "fail", for the write of its one line had failed."""
    args, status = errors(store)[name]
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open("/dev/full", "wb") as full:
        target = write_end if stderr == "closed pipe" else full.fileno()
        try:
            result = subprocess.run([TRACEKIT, *args], stdout=subprocess.DEVNULL, stderr=target,
                                    timeout=60)  # fmt: skip
        finally:
            os.close(write_end)

    assert result.returncode == status


@pytest.mark.parametrize("columns", ["²", "9" * 5000])
@pytest.mark.parametrize("name", list(commands(Path(), "text")))
def test_a_columns_value_that_is_no_number_is_ignored(store: Path, columns: str, name: str) -> None:
    """``COLUMNS=²`` (a digit to ``str.isdigit``, not to ``int``), or a number of more digits
    than ``int`` reads, made every command say ``internal error (ValueError ...)``; like any
    value that is no width, it is ignored."""
    env = {**os.environ, "COLUMNS": columns}
    result = subprocess.run([TRACEKIT, *commands(store, "text")[name]], capture_output=True,
                            env=env, timeout=60)  # fmt: skip

    assert (result.returncode, result.stderr) == (EXPECTED_STATUS.get(name, 0), b"")


@pytest.mark.parametrize("variable", ["COLUMNS", "LINES"])
@pytest.mark.parametrize("name", list(commands(Path(), "rich")))
def test_a_terminal_size_that_is_no_number_is_ignored_by_the_rich_views(
    store: Path, variable: str, name: str
) -> None:
    """The rich tables (search, services, canary: the default on a terminal) had rich read
    ``COLUMNS`` and ``LINES`` itself, and it takes any text ``str.isdigit`` accepts to ``int``:
    ``COLUMNS=²`` or ``LINES=²`` there was still ``internal error (ValueError ...)`` once the
    text views ignored it. Like any value that is no size, it is ignored."""
    for value in ("²", "9" * 5000):
        env = {**os.environ, variable: value}
        result = subprocess.run([TRACEKIT, *commands(store, "rich")[name]], capture_output=True,
                                env=env, timeout=60)  # fmt: skip

        assert (result.returncode, result.stderr) == (EXPECTED_STATUS.get(name, 0), b"")
        assert result.stdout


def on_a_terminal_of_no_size(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``tracekit`` on a new pseudo-terminal, whose size is 0x0 until someone sets it (as
    ``script``, ``docker exec -t`` and CI runners leave it); returns its status and output."""
    status, output = _on_a_pty(args, env)
    return status, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", output.decode())


def _on_a_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``tracekit`` with a new pseudo-terminal as its stdout and stderr: its status and what
    it wrote there."""
    primary, replica = pty.openpty()
    process = subprocess.Popen([TRACEKIT, *args], stdin=subprocess.DEVNULL, stdout=replica,
                               stderr=replica, env=env)  # fmt: skip
    os.close(replica)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the command has exited
        while chunk := os.read(primary, 65536):
            chunks.append(chunk)
    os.close(primary)
    return process.wait(timeout=60), b"".join(chunks)


@pytest.mark.parametrize("columns", [None, "0"])
@pytest.mark.parametrize("name", ["trace", "search", "services", "diff", "canary-fail"])
def test_a_terminal_that_reports_no_size_gets_the_default_width(
    store: Path, columns: str | None, name: str
) -> None:
    """A terminal that reports 0 columns (a size nobody set) was taken at its word: every view
    was drawn for the narrowest, 20 columns, a correlation ID folded over two lines. Like
    ``COLUMNS=0``, it says nothing of the width: the default, 100 columns, is used."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns

    status, shown = on_a_terminal_of_no_size(commands(store, "rich")[name], env)

    assert status == EXPECTED_STATUS.get(name, 0), shown
    # search draws a block per request at 100 columns (these requests' 38-column trace IDs
    # leave the table too little room): its widest line is a block's start, duration and span
    # count, 48 columns, which 20 columns would wrap
    narrowest_widest = 45 if name == "search" else 60
    assert narrowest_widest < max(len(line) for line in shown.splitlines()) <= 100, shown
    told = on_a_terminal_of_no_size(commands(store, "rich")[name], {**env, "COLUMNS": "100"})
    assert shown == told[1]  # laid out as for a terminal said to be 100 columns wide


def on_a_terminal(args: list[str], encoding: str) -> str:
    """What ``tracekit`` shows on a pseudo-terminal 100 columns wide whose encoding is
    ``encoding``, as its lines (the terminal ends each with CR LF)."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "PYTHONIOENCODING": encoding}
    status, output = _on_a_pty(args, env)
    assert status in (0, 1)
    return output.decode(encoding).replace("\r\n", "\n")


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
@pytest.mark.parametrize("name", ["trace", "search", "services", "diff"])
def test_a_terminal_whose_encoding_lacks_the_rich_views_characters_gets_the_text_view(
    store: Path, encoding: str, name: str
) -> None:
    """On a latin-1 or ascii terminal the default rich view drew every tree guide, critical-path
    and error marker and waterfall bar as '?' (`?? ? orders POST /orders  ???????`, a legend of
    `? critical path ? queue wait ? error`). The text view, which draws the same in ASCII, is
    the default there now, as in a pipe."""
    text = commands(store, "text")[name]

    shown = on_a_terminal(text[:-2], encoding)  # no --format: the default

    assert shown == run(text, encoding).stdout.decode(encoding)


@pytest.fixture(scope="module")
def large_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A request of 3,000 spans: each view of it is several times what a pipe holds (64 KiB)."""
    large = Topology("req-large")
    root = large.span("gateway", "POST /batch", "SERVER", 0, 4000)
    for i in range(3000):
        large.span(f"worker-{i % 7}", f"process item {i}", "INTERNAL", i, i + 1, root)
    path = tmp_path_factory.mktemp("large") / "tracekit.db"
    with Store(path) as s:
        s.write_spans(large.spans)
    return path


def read_once_full(read_end: int, process: subprocess.Popen[bytes]) -> bytes:
    """Everything from the pipe, read only once it is full (or the command done): a slow reader."""
    while process.poll() is None and _waiting(read_end) < 65536:
        time.sleep(0.01)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _waiting(read_end: int) -> int:
    return struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]


@pytest.mark.parametrize("fmt", ["text", "rich", "json"])
def test_a_non_blocking_stdout_gets_the_whole_output(large_store: Path, fmt: str) -> None:
    """ssh, or a Node.js tool sharing the pipe or terminal, can leave stdout non-blocking. Read
    slowly (`| less`), `tracekit trace ID` then delivered its first 64 KiB and exited 0, the
    rest gone without a word (`--format json` half a document): Python's text layer counts what
    a full pipe refuses as written. All of it arrives now, and the pipe is non-blocking again
    once the command is done, as its owner left it."""
    args = [TRACEKIT, "trace", "req-large", "--store", str(large_store), "--format", fmt]
    whole = subprocess.run(args, capture_output=True, timeout=60).stdout
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        process = subprocess.Popen(args, stdout=write_end, stderr=subprocess.PIPE)
        reader = concurrent.futures.ThreadPoolExecutor(1)
        received = reader.submit(read_once_full, read_end, process)
        _, stderr = process.communicate(timeout=60)
        still_non_blocking = not os.get_blocking(write_end)
    finally:
        os.close(write_end)
    assert (process.returncode, stderr) == (0, b"")
    assert received.result(timeout=60) == whole and len(whole) > 3 * 65536
    assert still_non_blocking
    os.close(read_end)
