"""The worker's "Task ... received" line, logged by its main process as it takes a task message
and before the task runs, carries the message's correlation ID, as the task's own lines do.
Before, it showed ``-``: the ID was made current only when the task began (``task_prerun``)."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from celery_worker import worker_process
from conditions import wait_for

TASKS_MODULE = """\
import logging
import os

import tracekit
from celery import Celery

tracekit.init("received-lines", exporter="none", metrics_port=0)
app = Celery("received", broker=os.environ["BROKER_URL"])
line = "%(levelname)s %(name)s [%(correlation_id)s] %(message)s"
app.conf.update(
    task_default_queue=os.environ["QUEUE"],
    broker_connection_retry_on_startup=True,
    worker_log_format=line,
    worker_task_log_format=line,
)


@app.task(name="received.hello")
def hello():
    logging.getLogger("app").warning("inside")
"""

BIN = Path(sys.executable).parent


def test_the_received_line_carries_the_messages_correlation_id(
    broker: str, tmp_path: Path, leave_no_names: Callable[[str, dict[str, Any]], None]
) -> None:
    queue = "received-" + uuid.uuid4().hex[:8]
    leave_no_names(broker, {"task_default_queue": queue})
    (tmp_path / "tasks.py").write_text(TASKS_MODULE)
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "BROKER_URL": broker, "QUEUE": queue}
    command = [str(BIN / "celery"), "-A", "tasks", "worker", "--pool=prefork", "-c", "1"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]
    log = tmp_path / "worker.log"
    sender = Celery("sender", broker=broker, set_as_current=False)
    sender.conf.task_default_queue = queue
    with worker_process(command, tmp_path, env, log, 30):
        known = sender.send_task("received.hello", headers={"x-correlation-id": "order-77"}).id
        unknown = sender.send_task("received.nope", headers={"X-Correlation-ID": "order-78"}).id
        wait_for(lambda: "succeeded" in log.read_text(), 20, "the task to run")
        wait_for(lambda: "unregistered" in log.read_text(), 20, "the unknown task")

    lines = log.read_text()
    assert f"celery.worker.strategy [order-77] Task received.hello[{known}] received" in lines
    assert "app [order-77] inside" in lines
    assert re.search(r"\[order-78\] Received unregistered task of type 'received.nope'", lines)
    assert unknown in lines


def test_a_message_without_trace_state_is_taken_without_a_warning(
    broker: str, tmp_path: Path, leave_no_names: Callable[[str, dict[str, Any]], None]
) -> None:
    """A message carries no ``tracestate`` unless its trace has one (most do not): the worker
    warned "tracekit: ignored message header tracestate (not text)" as it took such a message,
    once a minute for as long as it ran."""
    queue = "received-" + uuid.uuid4().hex[:8]
    leave_no_names(broker, {"task_default_queue": queue})
    (tmp_path / "tasks.py").write_text(TASKS_MODULE)
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "BROKER_URL": broker, "QUEUE": queue}
    command = [str(BIN / "celery"), "-A", "tasks", "worker", "--pool=solo"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]
    log = tmp_path / "worker.log"
    sender = Celery("sender", broker=broker, set_as_current=False)
    sender.conf.task_default_queue = queue
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with worker_process(command, tmp_path, env, log, 30):
        sender.send_task("received.hello", headers={"traceparent": traceparent})
        wait_for(lambda: "succeeded" in log.read_text(), 20, "the task to run")

    lines = log.read_text()
    assert "app [" in lines and "] inside" in lines
    assert "ignored message header" not in lines
