"""The Celery example of docs/queues/celery.md, run as written on a clean install.

A fresh virtual environment gets exactly what the page says (``tracekit[celery]`` and
``requests``); the page's two files run in it, the worker with the command in the file's first
line, against a real Redis and the shared RabbitMQ. The task calls a real HTTP service (werkzeug),
and ``tracekit trace`` (the operator's CLI, from the development environment) reads the path from
the embedded store both processes wrote to.

On the shared RabbitMQ the example's default queue name ``celery`` could meet another run's
workers, so there (only) the test gives the worker and the sender a queue of their own through
Celery's standard ``celeryconfig`` module (``CELERY_LOADER=default``), leaving the code as written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from loopback import start_werkzeug
from venvs import make_venv
from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "queues" / "celery.md"
CID = "order-4711"

pytestmark = pytest.mark.slow


def documented_files() -> dict[str, str]:
    """The page's Python blocks that start with a file name comment: {file name: code}."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    named = {}
    for block in blocks:
        match = re.match(r"# (\w+\.py) ", block)
        if match:
            named[match.group(1)] = block
    return named


def command_in_first_line(code: str) -> list[str]:
    """``# shop.py — run the worker with: celery -A shop worker`` -> the command's words."""
    first = code.splitlines()[0]
    return shlex.split(first.split("run the worker with:", 1)[1])


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory: pytest.TempPathFactory, tracekit_wheel: Path) -> Path:
    """A new virtual environment with ``tracekit[celery]`` and ``requests``; its bin directory."""
    where = tmp_path_factory.mktemp("clean") / "venv"
    return make_venv(where, f"{tracekit_wheel}[celery]", "requests")


class Warehouse:
    """The HTTP service the task calls: records the headers of every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.seen.append({k.lower(): v for k, v in request.headers.items()})
        return Response("picked")(environ, start_response)


@pytest.fixture
def warehouse() -> Iterator[tuple[str, Warehouse]]:
    service = Warehouse()
    url, stop = start_werkzeug(service)
    yield url, service
    stop()


def test_documented_example_runs_as_written(
    clean_install: Path,
    broker: str,
    warehouse: tuple[str, Warehouse],
    tmp_path: Path,
    leave_no_names: Any,
) -> None:
    files = documented_files()
    assert set(files) == {"shop.py", "web.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env, names = _environment(clean_install, broker, warehouse[0], tmp_path)
    leave_no_names(broker, names)
    queue = names["task_default_queue"]
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            command_in_first_line(files["shop.py"]), cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: " ready." in log.read_text() or worker.poll() is not None, 60, "ready")
        assert worker.poll() is None, log.read_text()
        web = subprocess.run(
            ["python", "web.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert web.returncode == 0, web.stderr
        # the one line docs/queues/celery.md tells web.py's reader to expect
        assert (
            "init() was called again while running, asking for other options (service_name)"
            in web.stderr
        )
        wait_for(lambda: warehouse[1].seen, 30, "the task's call to the warehouse")
        path = wait_for(lambda: _two_services(env), 30, "the path in the store")
    finally:
        worker.terminate()
        worker.wait(30)
    assert warehouse[1].seen[0]["x-correlation-id"] == CID
    assert f"correlation id: {CID}" in log.read_text()
    assert "Traceback" not in log.read_text()
    (hop,) = [h for h in path["hops"] if h["type"] == "messaging"]
    assert (hop["from_service"], hop["to_service"], hop["system"]) == (
        "shop-web",
        "shop-worker",
        "celery",
    )
    worker_spans = {s["name"] for s in path["spans"] if s["service"] == "shop-worker"}
    assert worker_spans == {f"process {queue}", "POST"}


def _environment(
    bin_dir: Path, broker: str, warehouse_url: str, directory: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """The variables a user would set, and the Celery names the example uses."""
    names = {"task_default_queue": "celery"}
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(directory),
        "CELERY_BROKER_URL": broker,
        "WAREHOUSE_URL": warehouse_url,
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(directory / "tracekit.db"),
        "TRACEKIT_METRICS_PORT": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    if broker.startswith("amqp"):
        queue = f"doc-example-{uuid.uuid4().hex[:10]}"
        names = {"task_default_queue": queue, "control_exchange": f"{queue}-ctl"}
        names["event_exchange"] = f"{queue}-ev"
        config = "".join(f"{key} = {value!r}\n" for key, value in names.items())
        (directory / "celeryconfig.py").write_text(config)
        env["CELERY_LOADER"] = "default"
    return env, names


def _two_services(env: dict[str, str]) -> dict[str, Any] | None:
    """``tracekit trace order-4711 --format json`` once both services' spans are stored."""
    cli = Path(sys.executable).parent / "tracekit"
    result = subprocess.run(
        [str(cli), "trace", CID, "--store", env["TRACEKIT_STORE"], "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        return None
    path: dict[str, Any] = json.loads(result.stdout)
    workers = [s for s in path["spans"] if s["service"] == "shop-worker"]
    return path if len(workers) >= 2 and "shop-web" in path["services"] else None
