"""A Celery app whose module calls ``tracekit.init`` at the top, as docs/queues/celery.md shows.

Run by test_framework_logging.py as ``celery -A celery_tasks worker``: Celery then sets up its
logging (``worker_hijack_root_logger``) after tracekit's init. Broker: ``CELERY_BROKER_URL``.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.utils.log import get_task_logger

import tracekit

tracekit.init("celery-worker", metrics_port=0)
app = Celery("celery_tasks", broker=os.environ["CELERY_BROKER_URL"])
log = logging.getLogger("shop.tasks")
task_log = get_task_logger(__name__)


@app.task
def charge(order: int) -> None:
    """Log through a module logger and Celery's task logger."""
    log.info("module logger: charging order %s", order)
    task_log.info("task logger: charged order %s", order)
