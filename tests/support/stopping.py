"""Real processes stopped the way a platform stops them (SIGTERM), then counted (tests/lifecycle).

Every process exports into a temporary SQLite store (``TRACEKIT_EXPORTER=store``) with batch
delays of a minute (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BLRP_SCHEDULE_DELAY``): whatever reaches
the store was flushed on the way out, not by the batch schedule.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from hopscene import need

from tracekit.records import SpanRecord
from tracekit.store import Store

BATCH_DELAY_MS = "60000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """One child process tree started from a directory of source files, stopped with a signal."""

    def __init__(self, workdir: Path, store: Path) -> None:
        self.workdir = workdir
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "output.log"

    def write(self, name: str, source: str) -> Path:
        path = self.workdir / name
        path.write_text(textwrap.dedent(source))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
        env.update(
            TRACEKIT_EXPORTER="store",
            TRACEKIT_STORE=str(self.store),
            TRACEKIT_METRICS_PORT="0",
            OTEL_BSP_SCHEDULE_DELAY=BATCH_DELAY_MS,
            OTEL_BLRP_SCHEDULE_DELAY=BATCH_DELAY_MS,
            PYTHONPATH=str(self.workdir),
        )
        env.update(extra)
        return env

    def start(self, *argv: str, **env: str) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                cwd=self.workdir,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.output()
            try:
                httpx.get(url, timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{url} never answered:\n{self.output()}")

    def wait_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process is not None and self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"{text!r} never printed:\n{self.output()}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as Kubernetes, ECS and systemd send it; the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def spans(self) -> list[SpanRecord]:
        if not self.store.exists():
            return []
        with Store(self.store) as store:
            return store.spans_since(0)

    def log_bodies(self) -> list[str]:
        """The bodies of the stored log records that belong to stored traces."""
        trace_ids = {span.trace_id for span in self.spans()}
        if not trace_ids:
            return []
        with Store(self.store) as store:
            return [str(log.body) for log in store.logs_by_trace_ids(trace_ids)]


def server_spans(spans: list[SpanRecord]) -> list[SpanRecord]:
    return [s for s in spans if s.kind == "SERVER"]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    assert binary is not None
    return binary


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Wait until something accepts connections on loopback ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)
