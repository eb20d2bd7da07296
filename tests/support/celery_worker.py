"""A real Celery worker in this process (``start_worker``), with the root logger put back after:
Celery's logging setup leaves root at ERROR, which would silence later tests' log checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker


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
