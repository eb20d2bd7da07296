"""Celery beat as users run it next to a worker (``celery -A tasks worker -B``, ``tracekit.init``
at the top of the tasks module) on a real redis-server, writing into the embedded store that
``tracekit trace`` reads: what each run of a periodic task is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from celery_worker import worker_process
from conditions import wait_for

TASKS_MODULE = """\
import os

import tracekit
from celery import Celery

tracekit.init("beat-worker")
app = Celery("beat", broker=os.environ["BROKER_URL"])
app.conf.update(
    task_default_queue="beat",
    broker_connection_retry_on_startup=True,
    beat_schedule={"tick": {"task": "beat.tick", "schedule": 0.5}},
)


@app.task(name="beat.tick")
def tick():
    return tracekit.correlation_id()
"""

BIN = Path(sys.executable).parent


def test_each_run_of_a_periodic_task_is_a_request_of_its_own(
    redis_url: str, tmp_path: Path
) -> None:
    """Beat publishes each run from one long-lived loop, outside any request: each run must be
    its own trace with its own correlation ID, nothing current in the loop leaking from one
    run into the next (a run that was the child of the one before would make `tracekit trace`
    show every run of the day as one request)."""
    (tmp_path / "tasks.py").write_text(TASKS_MODULE)
    store = tmp_path / "tracekit.db"
    env = {
        "PATH": str(BIN),
        "HOME": str(tmp_path),
        "BROKER_URL": redis_url,
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(store),
        "TRACEKIT_METRICS_PORT": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    command = [str(BIN / "celery"), "-A", "tasks", "worker", "-B", "--pool=solo"]
    command += ["-s", str(tmp_path / "schedule"), "--without-mingle", "--without-gossip"]
    command += ["--without-heartbeat", "-l", "INFO"]
    with worker_process(command, tmp_path, env, tmp_path / "worker.log", 30):
        runs = wait_for(lambda: _runs(store, 3), 20, "three runs of the periodic task")

    correlation_ids = set()
    for path in runs:
        [sent] = [s for s in path["spans"] if s["kind"] == "PRODUCER"]
        [ran] = [s for s in path["spans"] if s["kind"] == "CONSUMER"]
        assert sent["parent_span_id"] is None  # no run is a child of anything the loop had
        assert ran["parent_span_id"] == sent["span_id"]
        assert len(path["trace_ids"]) == 1 and path["warnings"] == []
        assert sent["attributes"]["correlation.id"] == ran["attributes"]["correlation.id"]
        correlation_ids.add(path["correlation_id"])
    assert len(correlation_ids) == len(runs)


def _runs(store: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` periodic runs as ``tracekit trace --format json`` shows them, once
    that many have their CONSUMER span stored; else []."""
    listed = _cli("search", "--store", str(store), "--format", "json", "--limit", "50")
    if listed is None:
        return []
    trace_ids = sorted(r["trace_id"] for r in listed["requests"])
    paths = [_cli("trace", trace_id, "--store", str(store), "--format", "json")
             for trace_id in trace_ids]  # fmt: skip
    done = [p for p in paths if p and any(s["kind"] == "CONSUMER" for s in p["spans"])]
    return done[:count] if len(done) >= count else []


def _cli(*args: str) -> Any:
    """``tracekit ARGS`` as JSON, or None when it found nothing."""
    result = subprocess.run(
        [str(BIN / "tracekit"), *args], capture_output=True, text=True, timeout=30
    )
    return json.loads(result.stdout) if result.returncode == 0 else None
