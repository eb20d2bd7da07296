"""Celery's own machinery with every tracekit instrumentation on: ``celery inspect ping`` (the real
CLI), ``control.ping()``, ``revoke`` and worker events, against a real worker (a subprocess, as
users run it, ``tracekit.init`` at the top of the tasks module) on Redis and on RabbitMQ.

Every Redis pub/sub channel is named for tracing (``TRACEKIT_REDIS_PUBSUB_CHANNELS=*``), the
setting that would put an envelope on kombu's fanout messages if anything could.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery_worker import worker_process
from conditions import wait_for

from tracekit import instrumentation

TASKS_MODULE = """\
import json
import os
import pathlib

import tracekit
from celery import Celery

tracekit.init("remote-worker")
app = Celery("remote", broker=os.environ["BROKER_URL"])
app.conf.update(json.loads(os.environ["CELERY_CONF"]))


@app.task(name="remote.touch")
def touch(path):
    pathlib.Path(path).write_text("ran")


@app.task(name="remote.add")
def add(x, y):
    return x + y
"""


@dataclass
class Worker:
    """A worker subprocess and what the test needs to talk to it."""

    nodename: str
    conf: dict[str, Any]
    env: dict[str, str]
    directory: Path
    log: Path

    def app(self, broker: str) -> Celery:
        """A client app in the test process, configured like the worker's."""
        app = Celery("remote", broker=broker, set_as_current=False)
        app.conf.update(self.conf)
        return app

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def every_instrumentation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """All of tracekit's instrumentations in the test process, every pub/sub channel named."""
    monkeypatch.setenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", "*")
    instrumentation.instrument(instrumentation.selected(["all"], []))
    yield
    instrumentation.uninstrument()


@pytest.fixture
def worker(broker: str, tmp_path: Path, leave_no_names: Any) -> Iterator[Worker]:
    uid = uuid.uuid4().hex[:10]
    (tmp_path / "remote_app.py").write_text(TASKS_MODULE)
    conf = {
        "task_default_queue": f"remote-{uid}",
        "control_exchange": f"remote-ctl-{uid}",  # names of our own on the shared RabbitMQ
        "event_exchange": f"remote-ev-{uid}",
        "broker_connection_retry_on_startup": True,
    }
    if broker.startswith("redis"):
        conf["result_backend"] = broker  # results travel over Redis pub/sub too
    env = {
        "PATH": str(Path(sys.executable).parent),
        "BROKER_URL": broker,
        "CELERY_CONF": json.dumps(conf),
        "TRACEKIT_REDIS_PUBSUB_CHANNELS": "*",
        "TRACEKIT_EXPORTER": "none",
        "TRACEKIT_METRICS_PORT": "0",
    }
    leave_no_names(broker, conf)
    nodename = f"remote-{uid}@{socket.gethostname()}"
    log = tmp_path / "worker.log"
    command = [celery_command(), "-A", "remote_app", "worker", "--pool=solo", "-E"]
    command += ["-n", nodename, "--loglevel=INFO"]
    with worker_process(command, tmp_path, env, log):
        yield Worker(nodename, conf, env, tmp_path, log)


def celery_command() -> str:
    return str(Path(sys.executable).parent / "celery")


def test_celery_inspect_ping_cli_gets_the_workers_pong(worker: Worker) -> None:
    command = [celery_command(), "-A", "remote_app", "inspect", "ping", "-t", "10"]
    result = subprocess.run(
        [*command, "-d", worker.nodename, "--json"],
        cwd=worker.directory,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {worker.nodename: {"ok": "pong"}}
    assert "Cannot process event" not in worker.log_text()


@pytest.mark.usefixtures("every_instrumentation")
def test_control_ping_revoke_and_events_from_an_instrumented_client(
    worker: Worker, broker: str, tmp_path: Path
) -> None:
    app = worker.app(broker)
    assert app.control.ping(destination=[worker.nodename], timeout=10) == [
        {worker.nodename: {"ok": "pong"}}
    ]
    revoked, kept = tmp_path / "revoked", tmp_path / "kept"
    doomed = app.send_task("remote.touch", (str(revoked),), countdown=2)
    app.send_task("remote.touch", (str(kept),), countdown=2)
    app.control.revoke(doomed.id)
    wait_for(kept.exists, 20, "the task that was not revoked")
    time.sleep(0.5)
    assert not revoked.exists()
    assert f"Discarding revoked task: remote.touch[{doomed.id}]" in worker.log_text()

    heartbeats = _worker_heartbeats(app)
    assert worker.nodename in heartbeats
    log = worker.log_text()
    assert "Cannot process event" not in log and "JSONDecodeError" not in log


def _worker_heartbeats(app: Celery) -> set[str]:
    """The hostnames of the worker-heartbeat events received within a few seconds."""
    seen: set[str] = set()
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"worker-heartbeat": lambda event: seen.add(event["hostname"])}
        )
        with contextlib.suppress(TimeoutError):
            receiver.capture(limit=3, timeout=10, wakeup=True)
    return seen


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.usefixtures("every_instrumentation")
def test_redis_result_backend_messages_travel_as_celery_sent_them(
    worker: Worker, broker: str
) -> None:
    import redis

    watcher = redis.Redis.from_url(broker).pubsub()
    watcher.psubscribe("celery-task-meta-*")
    watcher.parse_response(timeout=5)  # the subscription's confirmation
    result = worker.app(broker).send_task("remote.add", (2, 3))
    assert result.get(timeout=20) == 5
    published = watcher.parse_response(timeout=5)  # read raw, as a subscriber without tracekit
    watcher.close()
    assert json.loads(published[-1])["result"] == 5
