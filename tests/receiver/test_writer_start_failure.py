"""A writer process that never says it is ready: the receiver says why, and stays not ready."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conditions import wait_for
from tests.receiver._collector_process import _children

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store, _process

ENTRY = [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector"]
# Imported first by every interpreter on PYTHONPATH; the spawned writer process alone has
# --multiprocessing-fork in its arguments.
_IN_THE_WRITER = 'import sys\nif "--multiprocessing-fork" in sys.argv:\n    {}\n'


def _writer_that(tmp_path: Path, does: str) -> dict[str, str]:
    """An environment whose writer processes run ``does`` as their interpreter starts."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(_IN_THE_WRITER.format(does))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


def _health(receiver: Receiver) -> tuple[int, str]:
    conn = http.client.HTTPConnection(*receiver.address, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read())["status"]
    finally:
        conn.close()


def test_a_collector_whose_writer_process_dies_at_its_start_exits_2(tmp_path: Path) -> None:
    """The writer process ended before it opened the store: the collector said one warning
    line, with no reason in it, and then waited for ever, neither listening nor ending. It ends
    now, with one line saying why, and exit status 2."""
    store = tmp_path / "t.db"
    result = subprocess.run(
        [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(store)],
        capture_output=True, text=True, timeout=60,
        env=_writer_that(tmp_path, "import os; os._exit(3)"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""  # never said it listened
    assert result.stderr == (
        f"tracekit collector: cannot store in {store}: the writer process did not start:"
        " it ended (exit status 3) before it opened the store\n"
    )


def test_wait_ready_returns_as_soon_as_the_writer_process_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedding program that waits for its receiver learns at once that it cannot store:
    ``wait_ready`` waited its whole timeout after the writer process had ended (for ever with
    none; pytest-timeout ends this test then)."""
    monkeypatch.setenv("PYTHONPATH", _writer_that(tmp_path, "import os; os._exit(3)")["PYTHONPATH"])
    config = ReceiverConfig(port=0, grpc_port=None, stop_timeout=5)
    receiver = Receiver(Store(tmp_path / "t.db"), config).start()
    try:
        assert receiver.wait_ready() is False
        assert receiver.start_failure == "it ended (exit status 3) before it opened the store"
        assert _health(receiver) == (503, "starting")
    finally:
        receiver.stop()


def test_a_writer_process_that_hangs_at_its_start_is_told_after_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import stuck (or a store on a hung file system): after the greeting's timeout (60 s,
    3 s here) the receiver names the failure, which ``tracekit collector`` exits 2 with, and
    ``/health`` still says it is starting: it can store nothing."""
    monkeypatch.setattr(_process, "ANSWER_TIMEOUT", 3.0)
    hanging = _writer_that(tmp_path, "import time; time.sleep(600)")
    monkeypatch.setenv("PYTHONPATH", hanging["PYTHONPATH"])
    config = ReceiverConfig(port=0, grpc_port=None, stop_timeout=5)
    receiver = Receiver(Store(tmp_path / "t.db"), config).start()
    try:
        wait_for(lambda: receiver.start_failure is not None, 30, "the start's failure told")
        assert receiver.start_failure == "it did not open the store in 3 s"
        assert not receiver.ready
        assert _health(receiver) == (503, "starting")
    finally:
        receiver.stop()


def test_a_stop_asked_while_the_writer_process_starts_is_no_failure(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM while the writer process is still starting (here, never will): the
    stop waited its whole 35 s for it, though nothing was queued, then said the writer did not
    start (killed by the stop itself) and exited 2. It stops at once now, as asked: exit 0."""
    store = tmp_path / "t.db"
    collector = subprocess.Popen(
        [*ENTRY, "--port", "0", "--grpc-port", "0", "--store", str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_writer_that(tmp_path, "import time; time.sleep(600)"),
    )  # fmt: skip
    try:
        wait_for(lambda: _writer_started(collector.pid), 30, "the writer process spawned")
        collector.send_signal(signal.SIGTERM)
        out, err = collector.communicate(timeout=20)  # was 35 s
    finally:
        collector.kill()
    assert (collector.returncode, out, err) == (0, "", "")


def _writer_started(pid: int) -> bool:
    return any("--multiprocessing-fork" in _command(child) for child in _children(pid))


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""
