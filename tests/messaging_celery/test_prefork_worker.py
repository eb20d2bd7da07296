"""A prefork worker as users run it (``celery -A tasks worker``, ``tracekit.init`` at the top of
the tasks module) on a real redis-server, writing into the embedded store that ``tracekit trace``
reads: what is recorded for a task whose child process the worker stops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery_worker import worker_process
from conditions import wait_for

TASKS_MODULE = """\
import os
import time

import tracekit
from celery import Celery

tracekit.init("prefork-worker")
app = Celery("prefork", broker=os.environ["BROKER_URL"])
app.conf.update(task_default_queue="prefork", broker_connection_retry_on_startup=True)


@app.task(name="prefork.stuck", time_limit=0.5)
def stuck():
    time.sleep(30)


@app.task(name="prefork.crunch", time_limit=1)
def crunch():
    open("started", "w").close()
    return sum(range(10**12))  # one C call: no signal handler runs before it returns


@app.task(name="prefork.long")
def long():
    open("started", "w").close()
    time.sleep(30)


@app.task(name="prefork.quits")
def quits():
    raise SystemExit(3)


@app.task(name="prefork.doomed")
def doomed():
    with open("doomed.pid", "w") as pid:
        pid.write(str(os.getpid()))
    time.sleep(30)


@app.task(
    name="prefork.doomed_once", bind=True, retry_on_worker_lost=True, default_retry_delay=0
)
def doomed_once(self):
    if self.request.retries == 0:
        with open("doomed_once.pid", "w") as pid:
            pid.write(str(os.getpid()))
        time.sleep(30)


@app.task(name="prefork.doomed_twice", bind=True, acks_late=True, reject_on_worker_lost=True)
def doomed_twice(self):
    with open("doomed_twice.runs", "a+") as runs:
        runs.write("run\\n")
        runs.seek(0)
        if len(runs.readlines()) > 2:
            return
    with open("doomed_twice.pid", "w") as pid:
        pid.write(str(os.getpid()))
    time.sleep(30)


@app.task(name="prefork.doomed_requeued", bind=True, acks_late=True, reject_on_worker_lost=True)
def doomed_requeued(self):
    if not self.request.delivery_info.get("redelivered"):
        with open("doomed_requeued.pid", "w") as pid:
            pid.write(str(os.getpid()))
        time.sleep(30)
"""

BIN = Path(sys.executable).parent


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """A prefork worker consuming from ``redis_url`` (in ``tmp_path``); the store it writes to."""
    with _prefork_worker(redis_url, tmp_path) as written:
        yield written


@contextlib.contextmanager
def _prefork_worker(redis_url: str, tmp_path: Path, *options: str) -> Iterator[Path]:
    """``celery -A tasks worker --pool=prefork -c 1 [options]`` in ``tmp_path``; the store."""
    (tmp_path / "tasks.py").write_text(TASKS_MODULE)
    env = {
        "PATH": str(BIN),
        "HOME": str(tmp_path),
        "BROKER_URL": redis_url,
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(tmp_path / "tracekit.db"),
        "TRACEKIT_METRICS_PORT": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    command = [str(BIN / "celery"), "-A", "tasks", "worker", "--pool=prefork", "-c", "1"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]
    command += options
    with worker_process(command, tmp_path, env, tmp_path / "worker.log", 30):
        yield tmp_path / "tracekit.db"


def _path(store: Path, query: str) -> dict[str, Any] | None:
    """``tracekit trace QUERY --format json``, once the task's CONSUMER span is stored."""
    result = subprocess.run(
        [str(BIN / "tracekit"), "trace", query, "--store", str(store), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        return None
    path: dict[str, Any] = json.loads(result.stdout)
    return path if any(s["kind"] == "CONSUMER" for s in path["spans"]) else None


def test_a_task_killed_at_its_hard_time_limit_is_a_failed_span(store: Path, redis_url: str) -> None:
    """At the hard time limit billiard sends the child SIGTERM, which raises SystemExit in the
    task; Celery then sends task_postrun without a state. The span said the task succeeded,
    then ``SystemExit: -241``; it says what the result backend records and the caller's
    ``result.get()`` raises."""
    cid, task_id = _sent("stuck", redis_url)
    path, consumer = _run_of(store, cid)
    assert consumer["attributes"]["messaging.message.id"] == task_id
    assert consumer["status"] == "ERROR"
    assert consumer["attributes"]["error.type"] == "TimeLimitExceeded"
    assert consumer["status_message"] == "TimeLimitExceeded: TimeLimitExceeded(0.5,)"
    assert consumer["attributes"]["tracekit.celery.task_state"] == "FAILURE"
    assert path["errors"] == [
        {"span_id": consumer["span_id"], "service": "prefork-worker",
         "message": consumer["status_message"], "trace_id": consumer["trace_id"]}
    ]  # fmt: skip


def test_a_task_stopped_at_its_hard_time_limit_inside_a_c_call_is_a_failed_span(
    store: Path, redis_url: str
) -> None:
    """A task inside a long C call runs no signal handler before the call returns: billiard's
    SIGTERM at the hard time limit waits, and its SIGKILL 0.1 s later ends the child, which
    recorded nothing. The path showed the task's ``received`` log line and no span, ``0
    errors``. The worker's main process, which reports the time limit, records the run as a
    failed CONSUMER span once the child is gone without having ended it."""
    cid, task_id = _sent("crunch", redis_url)
    path, consumer = _run_of(store, cid)
    assert consumer["name"] == "process prefork"
    assert consumer["attributes"]["messaging.message.id"] == task_id
    assert consumer["attributes"]["correlation.id"] == cid
    assert consumer["status"] == "ERROR"
    assert consumer["attributes"]["error.type"] == "TimeLimitExceeded"
    assert consumer["status_message"] == "TimeLimitExceeded: TimeLimitExceeded(1,)"
    assert consumer["attributes"]["tracekit.celery.task_state"] == "FAILURE"
    assert [error["span_id"] for error in path["errors"]] == [consumer["span_id"]]


def test_a_task_that_ended_its_own_span_at_its_hard_time_limit_gets_no_second(
    store: Path, redis_url: str
) -> None:
    """The child that acts on the SIGTERM records its run itself: the main process, which
    cannot tell which case it is when it reports the time limit, adds nothing then."""
    cid, _ = _sent("stuck", redis_url)
    _run_of(store, cid)
    time.sleep(2)  # the main process looks 1 s after the limit: its span would be stored by now
    path = _path(store, cid)
    assert path is not None
    consumers = [s["status_message"] for s in path["spans"] if s["kind"] == "CONSUMER"]
    assert consumers == ["TimeLimitExceeded: TimeLimitExceeded(0.5,)"]


def test_the_workers_own_hard_time_limit_is_a_time_limit_too(
    redis_url: str, tmp_path: Path
) -> None:
    """``celery worker --time-limit`` is known only to the worker that forks the children: a
    task with no limit of its own stopped at it said ``SystemExit: -241`` too."""
    with _prefork_worker(redis_url, tmp_path, "--time-limit", "1") as store:
        sender = Celery("prefork", broker=redis_url, set_as_current=False)
        sender.conf.task_default_queue = "prefork"
        cid = "long-limited-" + uuid.uuid4().hex
        sender.send_task("prefork.long", headers={"x-correlation-id": cid})
        path = wait_for(lambda: _path(store, cid), 20, "the killed task's span")
    [consumer] = [s for s in path["spans"] if s["kind"] == "CONSUMER"]
    assert consumer["status_message"] == "TimeLimitExceeded: TimeLimitExceeded(1.0,)"
    assert consumer["attributes"]["tracekit.celery.task_state"] == "FAILURE"


def test_a_task_terminated_by_revoke_is_one_failed_span(
    store: Path, redis_url: str, tmp_path: Path
) -> None:
    """``revoke(terminate=True)`` sends the running task's child SIGTERM, as the hard time limit
    does: the run's span is failed, and the revoke adds no second span for the task."""
    sender = Celery("prefork", broker=redis_url, set_as_current=False)
    sender.conf.task_default_queue = "prefork"
    cid = "long-" + uuid.uuid4().hex
    task_id = sender.send_task("prefork.long", headers={"x-correlation-id": cid}).id
    wait_for((tmp_path / "started").exists, 20, "the task to start")
    sender.control.revoke(task_id, terminate=True)

    path = wait_for(lambda: _path(store, cid), 20, "the terminated task's span")
    [consumer] = [s for s in path["spans"] if s["kind"] == "CONSUMER"]
    assert consumer["status"] == "ERROR"
    assert consumer["attributes"]["error.type"] == "SystemExit"
    time.sleep(0.5)  # a second span, if any, would be written by now
    later = _path(store, cid)
    assert later is not None and later["spans"] == [consumer]


def test_a_task_whose_child_was_killed_outright_is_a_failed_span(
    store: Path, redis_url: str, tmp_path: Path
) -> None:
    """A prefork child killed with SIGKILL (the OOM killer) runs no more Python, and the worker
    reports WorkerLostError: the path ended at the publish, with no sign of the task. The
    worker's main process records the run as a failed CONSUMER span."""
    cid, task_id = _killed_while_running("doomed", redis_url, tmp_path)

    path = wait_for(lambda: _path(store, cid), 20, "the lost task's span")
    [consumer] = [s for s in path["spans"] if s["kind"] == "CONSUMER"]
    assert consumer["name"] == "process prefork"
    assert consumer["attributes"]["messaging.message.id"] == task_id
    assert consumer["attributes"]["correlation.id"] == cid
    assert consumer["attributes"]["tracekit.celery.task_state"] == "FAILURE"
    assert consumer["status"] == "ERROR"
    assert consumer["attributes"]["error.type"] == "WorkerLostError"
    assert consumer["status_message"].startswith(
        "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)"
    )


def test_a_task_retried_after_its_child_was_killed_shows_the_killed_attempt(
    store: Path, redis_url: str, tmp_path: Path
) -> None:
    """With ``retry_on_worker_lost`` the worker's main process publishes a retry for a task
    whose child was killed (the OOM killer) and sends task_retry, not task_failure: the path
    showed only the retry's run, as if the task had run once and succeeded."""
    cid, task_id = _killed_while_running("doomed_once", redis_url, tmp_path)

    runs = _runs(store, cid, 2, "the killed run and its retry")
    killed, retried = sorted(runs, key=lambda s: s["attributes"].get("tracekit.retry_count", 0))
    assert killed["name"] == retried["name"] == "process prefork"
    _assert_killed(killed, task_id, cid, "RETRY")
    assert retried["attributes"]["messaging.message.id"] == task_id
    assert retried["attributes"]["tracekit.retry_count"] == 1
    assert retried["attributes"]["tracekit.celery.task_state"] == "SUCCESS"
    assert retried["status"] == "UNSET"


def test_a_requeued_task_whose_child_was_killed_shows_the_killed_run(
    store: Path, redis_url: str, tmp_path: Path
) -> None:
    """With ``acks_late`` and ``reject_on_worker_lost`` the worker's main process gives the
    message of a task whose child was killed back to the broker and sends no signal: the path
    showed the redelivered run alone, which succeeded, and no error."""
    sent_in = "00-" + uuid.uuid4().hex + "-" + uuid.uuid4().hex[:16] + "-01"  # a caller's span
    cid, task_id = _killed_while_running("doomed_requeued", redis_url, tmp_path, sent_in)

    runs = _runs(store, cid, 2, "the killed run and its redelivery")
    killed, redelivered = sorted(runs, key=lambda s: s["start_unix_nano"])
    assert killed["name"] == redelivered["name"] == "process prefork"
    _assert_killed(killed, task_id, cid, "REJECTED")
    assert redelivered["attributes"]["messaging.message.id"] == task_id
    assert redelivered["attributes"]["tracekit.messaging.redelivered"] is True
    assert redelivered["attributes"]["tracekit.celery.task_state"] == "SUCCESS"
    assert redelivered["status"] == "UNSET"
    assert killed["trace_id"] == redelivered["trace_id"] == sent_in.split("-")[1]


def test_a_redelivered_task_whose_child_was_killed_again_says_it_was_redelivered(
    store: Path, redis_url: str, tmp_path: Path
) -> None:
    """A task that kills its child on every delivery (one that runs out of memory) is requeued
    each time: each killed run is recorded, and one of a delivery made again says so, as a
    redelivered run that ended does."""
    cid, task_id = _killed_while_running("doomed_twice", redis_url, tmp_path)
    pid_file = tmp_path / "doomed_twice.pid"
    first = pid_file.read_text()
    wait_for(lambda: pid_file.read_text() not in ("", first), 20, "the redelivered run")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    runs = _runs(store, cid, 3, "two killed runs and the last")
    killed, killed_again, last = sorted(runs, key=lambda s: s["start_unix_nano"])
    _assert_killed(killed, task_id, cid, "REJECTED")
    _assert_killed(killed_again, task_id, cid, "REJECTED")
    assert "tracekit.messaging.redelivered" not in killed["attributes"]
    assert killed_again["attributes"]["tracekit.messaging.redelivered"] is True
    assert last["attributes"]["tracekit.messaging.redelivered"] is True
    assert last["attributes"]["tracekit.celery.task_state"] == "SUCCESS"


def test_a_task_that_exits_its_child_is_one_failed_span(store: Path, redis_url: str) -> None:
    """A task that raises SystemExit ends its child after its own span is recorded; the worker
    then reports WorkerLostError (exitcode 3), which adds no second span for the task."""
    sender = Celery("prefork", broker=redis_url, set_as_current=False)
    sender.conf.task_default_queue = "prefork"
    cid = "quits-" + uuid.uuid4().hex
    sender.send_task("prefork.quits", headers={"x-correlation-id": cid})

    wait_for(lambda: _path(store, cid), 20, "the task's span")
    time.sleep(1)  # the worker's WorkerLostError comes just after: a span for it is stored by now
    path = _path(store, cid)
    assert path is not None
    consumers = [s["status_message"] for s in path["spans"] if s["kind"] == "CONSUMER"]
    assert consumers == ["SystemExit: 3"]


def _sent(task: str, redis_url: str) -> tuple[str, str]:
    """Send ``prefork.<task>`` with a correlation ID of its own; the ID and the task's id."""
    sender = Celery("prefork", broker=redis_url, set_as_current=False)
    sender.conf.task_default_queue = "prefork"
    cid = f"{task}-{uuid.uuid4().hex}"
    return cid, sender.send_task(f"prefork.{task}", headers={"x-correlation-id": cid}).id


def _run_of(store: Path, cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The path of ``cid`` once its run's span is stored, and that one CONSUMER span."""
    path = wait_for(lambda: _path(store, cid), 20, "the killed task's span")
    [consumer] = [s for s in path["spans"] if s["kind"] == "CONSUMER"]
    return path, consumer


def _runs(store: Path, cid: str, count: int, what: str) -> list[dict[str, Any]]:
    """The ``count`` CONSUMER spans of ``cid``'s path, once all are stored."""

    def all_runs() -> list[dict[str, Any]]:
        path = _path(store, cid)
        runs = [s for s in path["spans"] if s["kind"] == "CONSUMER"] if path else []
        return runs if len(runs) == count else []

    return wait_for(all_runs, 30, what)


def _assert_killed(killed: dict[str, Any], task_id: str, cid: str, state: str) -> None:
    """``killed`` is the span the worker's main process recorded for a run whose child was
    SIGKILLed: the task's, failed with WorkerLostError, Celery's ``state``."""
    assert killed["attributes"]["messaging.message.id"] == task_id
    assert killed["attributes"]["correlation.id"] == cid
    assert killed["attributes"]["tracekit.celery.task_state"] == state
    assert killed["status"] == "ERROR"
    assert killed["attributes"]["error.type"] == "WorkerLostError"
    assert killed["status_message"].startswith(
        "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)"
    )


def _killed_while_running(
    task: str, redis_url: str, tmp_path: Path, traceparent: str | None = None
) -> tuple[str, str]:
    """Send ``prefork.<task>`` with a correlation ID of its own (and ``traceparent``), and SIGKILL
    the child running it once it has written its pid (as the OOM killer would); returns the ID
    and the task's id."""
    sender = Celery("prefork", broker=redis_url, set_as_current=False)
    sender.conf.task_default_queue = "prefork"
    cid = f"{task.replace('_', '-')}-{uuid.uuid4().hex}"
    headers = {"x-correlation-id": cid} | ({"traceparent": traceparent} if traceparent else {})
    task_id = sender.send_task(f"prefork.{task}", headers=headers).id
    pid_file = tmp_path / f"{task}.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the task to start")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    return cid, task_id
