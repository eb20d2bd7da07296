"""Real processes stopped the way a platform stops them (SIGTERM), then counted (tests/lifecycle).

Every process exports into a temporary SQLite store (``TRACEKIT_EXPORTER=store``) with batch
delays of a minute (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BLRP_SCHEDULE_DELAY``): whatever reaches
the store was flushed on the way out, not by the batch schedule. Its ``PYTHONPATH`` is its own
folder, then this one, so a script can use the process-side helpers here (``lazy_rows``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from loopback import POLLING, UNREACHABLE

from tracekit.records import SpanRecord
from tracekit.store import Store

BATCH_DELAY_MS = "60000"
SUPPORT = Path(__file__).resolve().parent


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
            PYTHONPATH=os.pathsep.join([str(self.workdir), str(SUPPORT)]),
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

    def seconds_since(self, marker: str) -> float:
        """Seconds from the ``time.monotonic()`` the process printed after ``marker`` (one
        clock for every process here) until now: an interval that leaves out its start-up,
        seconds long on a loaded machine."""
        assert marker in self.output(), self.output()
        return time.monotonic() - float(self.output().split(marker, 1)[1].split()[0])

    def running(self) -> bool:
        """True, or fail with the process's output when it has exited."""
        assert self.process is not None and self.process.poll() is None, self.output()
        return True

    def wait_http(self, url: str, timeout: float = 30) -> None:
        # Retry only while nothing listens: a request the server took is waited for, however
        # slow a loaded machine makes its first answer, so no abandoned request is left in flight
        # (its span and log record would then race the stop the test is about).
        patient = httpx.Timeout(timeout, connect=2)
        self._wait(lambda: self.running() and bool(POLLING.get(url, timeout=patient)), timeout, url)

    def wait_output(self, text: str, timeout: float = 60) -> None:
        self._wait(lambda: self.running() and text in self.output(), timeout, f"{text!r} printed")

    def _wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        try:
            wait_for(condition, timeout, what, ignoring=UNREACHABLE)
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{self.output()}") from None

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


_NEW_PID_NAMESPACE = (
    ("unshare", "--pid", "--fork"),
    ("unshare", "--user", "--map-root-user", "--pid", "--fork"),
)
_NEW_MOUNT_NAMESPACE = (
    ("unshare", "--mount"),
    ("unshare", "--user", "--map-root-user", "--mount"),
)


def pid_namespace_prefix() -> tuple[str, ...]:
    """The command that runs its arguments as PID 1 of a new PID namespace (a container's first
    process without an init: the kernel ignores SIGTERM's default action there)."""
    return _first_that_runs(_NEW_PID_NAMESPACE, "PID")


def mount_namespace_prefix() -> tuple[str, ...]:
    """The command that runs its arguments in a new mount namespace, where they may mount a
    file system of their own (a small ``tmpfs``: a full disk) that no other process sees."""
    return _first_that_runs(_NEW_MOUNT_NAMESPACE, "mount")


def _first_that_runs(prefixes: tuple[tuple[str, ...], ...], namespace: str) -> tuple[str, ...]:
    for prefix in prefixes:
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    pytest.skip(f"no {namespace} namespace can be made here (unshare)")
