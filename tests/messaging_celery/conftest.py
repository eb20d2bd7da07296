"""Celery's brokers: a real redis-server on a free loopback port, and the shared RabbitMQ at
``TRACEKIT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hopscene import need

from tracekit import instrumentation

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away redis-server (no persistence) for this module's tests."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    assert binary is not None
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                need(False, "a running redis-server")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of the reachable RabbitMQ."""
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    return AMQP_URL


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> str:
    """Each broker in turn: the private Redis, then the shared RabbitMQ."""
    fixture = "redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def leave_no_names() -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """``leave_no_names(broker, conf)``: after the test, delete the task queue and exchanges that
    Celery configuration ``conf`` declared on the shared RabbitMQ (a private Redis just stops)."""
    registered: list[tuple[str, dict[str, Any]]] = []
    yield lambda broker, conf: registered.append((broker, conf))
    for broker, conf in registered:
        if broker.startswith("amqp"):
            _delete_names(broker, conf)


def _delete_names(broker: str, conf: dict[str, Any]) -> None:
    from kombu import Connection

    control = conf.get("control_exchange", "celery")
    with Connection(broker) as connection:
        channel = connection.channel()
        channel.queue_delete(conf["task_default_queue"])
        for exchange in (conf["task_default_queue"], conf.get("event_exchange", "celeryev")):
            channel.exchange_delete(exchange)
        channel.exchange_delete(f"{control}.pidbox")
        channel.exchange_delete(f"reply.{control}.pidbox")


@pytest.fixture
def instrumented() -> Iterator[None]:
    """tracekit's Celery and requests instrumentation, removed after the test."""
    instrumentation.instrument(["celery", "requests"])
    yield
    instrumentation.uninstrument()
