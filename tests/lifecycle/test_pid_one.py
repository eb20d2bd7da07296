"""A worker that runs as a container's PID 1 with no init in front of it (``CMD ["python",
"worker.py"]``), stopped the way Docker and Kubernetes stop it: SIGTERM from outside its PID
namespace, then, the grace period over, SIGKILL.

SIGTERM's default action does nothing to such a process: after tracekit's flush it goes on
handling messages until the SIGKILL, which nothing hears. What it handles meanwhile must reach
the store before that, not wait in a batch that dies with it (the batch delays here are a
minute: whatever is stored was exported as it ended).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conditions import need, wait_for
from stopping import Service, pid_namespace_prefix

BIN = Path(sys.executable).parent
AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
WARNING = "tracekit: this process goes on after SIGTERM (PID 1 with no init in front of it)"

# The scripts' lines share one log with tracekit's warning, which its export thread writes as
# the first span or log record ends after SIGTERM: meanwhile the script prints "done job-2".
# print("done", job) is four write()s under PYTHONUNBUFFERED (make test's environment), and the
# warning landed between them ("donetracekit: ..."); one write() per line keeps each line whole.
SAY = """
    import sys

    def say(line):
        sys.stdout.write(f"{line}\\n")
        sys.stdout.flush()
"""

LOOP_WORKER = """
    import logging, sys
    import tracekit
    from tracekit.messaging import consume

    tracekit.init("worker")
    log = logging.getLogger("worker")
    print("ready", flush=True)
    for line in sys.stdin:  # a worker's `while True` loop, fed one job a line
        job = line.strip()
        with consume({"X-Correlation-ID": job}, system="stdin", destination="jobs"):
            log.warning("handled %s", job)
        say(f"done {job}")
"""

PIKA_CONSUMER = """
    import logging, sys
    import pika, tracekit

    tracekit.init("worker")
    log = logging.getLogger("worker")
    connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    channel = connection.channel()

    def on_message(channel, method, properties, body):
        log.warning("handled %s", body.decode())
        channel.basic_ack(method.delivery_tag)
        say(f"done {body.decode()}")

    channel.basic_consume(sys.argv[2], on_message)
    print("ready", flush=True)
    channel.start_consuming()
"""


def _start_as_pid_one(service: Service, source: str, *args: str) -> int:
    """Run ``source`` as PID 1 of a new PID namespace; its PID as seen from outside."""
    unshare, *options = pid_namespace_prefix()
    script = service.write("worker.py", SAY + source)
    with service.log.open("ab") as out:
        service.process = subprocess.Popen(
            [unshare, "--kill-child", *options, sys.executable, str(script), *args],
            env=service.env(), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    service.wait_output("ready")
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
    return int(children.read_text().split()[0])


def _path(service: Service, query: str) -> dict[str, Any] | None:
    """``tracekit trace QUERY --format json``, once the job's CONSUMER span is stored."""
    result = subprocess.run(
        [str(BIN / "tracekit"), "trace", query, "--store", str(service.store), "--format", "json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        return None
    path: dict[str, Any] = json.loads(result.stdout)
    return path if any(s["kind"] == "CONSUMER" for s in path["spans"]) else None


def _handled_after_sigterm(service: Service, pid_one: int, send: Any) -> None:
    """One job before SIGTERM, one after; then the platform's SIGKILL, once the second is
    stored (within seconds, where its batch waits a minute)."""
    send("job-1")
    service.wait_output("done job-1")
    os.kill(pid_one, signal.SIGTERM)  # as `docker stop` sends it, from outside
    wait_for(lambda: _path(service, "job-1"), 20, "job-1 flushed at SIGTERM")
    send("job-2")
    service.wait_output("done job-2")
    path = wait_for(lambda: _path(service, "job-2"), 20, "job-2 stored before the SIGKILL")
    os.kill(pid_one, signal.SIGKILL)
    assert service.process is not None
    service.process.wait(30)

    assert [log["body"] for log in path["logs"]] == ["handled job-2"]
    output = service.output()
    assert output.count(WARNING) == 1, output
    assert "Traceback" not in output


def _write_line(stdin: IO[bytes] | None, line: str) -> None:
    assert stdin is not None
    stdin.write(f"{line}\n".encode())
    stdin.flush()


def test_a_loop_worker_as_pid_one_exports_what_it_handles_after_sigterm(
    service: Service,
) -> None:
    pid_one = _start_as_pid_one(service, LOOP_WORKER)
    assert service.process is not None
    stdin = service.process.stdin
    _handled_after_sigterm(service, pid_one, lambda job: _write_line(stdin, job))


@pytest.fixture
def queue() -> Iterator[str]:
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    name = f"tracekit-test-{uuid.uuid4().hex[:10]}"
    channel = connection.channel()
    channel.queue_declare(name)
    yield name
    channel.queue_delete(name)
    connection.close()


def test_a_pika_consumer_as_pid_one_exports_what_it_handles_after_sigterm(
    service: Service, queue: str
) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()

    def publish(job: str) -> None:
        headers = {"X-Correlation-ID": job}
        channel.basic_publish("", queue, job.encode(), pika.BasicProperties(headers=headers))

    try:
        pid_one = _start_as_pid_one(service, PIKA_CONSUMER, AMQP_URL, queue)
        _handled_after_sigterm(service, pid_one, publish)
    finally:
        connection.close()
