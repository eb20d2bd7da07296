"""A real Celery worker in this process (``start_worker``), with the root logger put back after:
Celery's logging setup leaves root at ERROR, which would silence later tests' log checks. Or one
in a process of its own (``worker_process``): the ``celery worker`` command as users run it."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from celery import Celery
from celery.contrib.testing.worker import start_worker
from conditions import wait_for


@contextmanager
def running_worker(app: Celery, pool: str = "solo", concurrency: int = 1) -> Iterator[Celery]:
    """A worker (solo pool unless told) consuming for ``app`` while the block runs."""
    root_level, root_handlers = logging.root.level, logging.root.handlers[:]
    try:
        with start_worker(
            app, pool=pool, concurrency=concurrency, perform_ping_check=False, shutdown_timeout=10
        ):
            yield app
    finally:
        logging.root.setLevel(root_level)
        logging.root.handlers[:] = root_handlers


@contextmanager
def worker_process(
    command: Sequence[str], cwd: Path, env: dict[str, str], log: Path, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` (a ``celery worker``) run in ``cwd``, its output in ``log``, once it says it is
    ready; after the block, SIGTERM (a warm shutdown) and SIGKILL if it has not ended in 30 s."""
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out)

    def ready_or_ended() -> bool:
        return " ready." in log.read_text(errors="replace") or process.poll() is not None

    try:
        wait_for(ready_or_ended, timeout, "ready")
        assert process.poll() is None, log.read_text(errors="replace")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
